//! The stateful target: a model-checked channel table.

use super::*;

/// What the model knows about one channel id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModelChannel {
    /// Cancelled before `open` saw it.
    Precancelled,
    /// Opened; whether our side is terminal, and whether it ever will be
    /// written again.
    Open { tx_done: bool, rx_done: bool },
    /// Gone from the table.
    Gone,
}

/// The model's side of `finish_rx`: an open channel's peer side is done.
pub(super) fn mark_rx_done(model: &mut std::collections::BTreeMap<u64, ModelChannel>, id: u64) {
    if let Some(ModelChannel::Open { tx_done, .. }) = model.get(&id).copied() {
        model.insert(
            id,
            ModelChannel::Open {
                tx_done,
                rx_done: true,
            },
        );
    }
}

/// Drives a [`ChannelTable`] with arbitrary open / send / cancel / reply /
/// close operations read from `data`, checking the mux invariants: ids open
/// strictly increasing; nothing is written after a terminal message or a
/// cancel; a channel cancelled before its opening frame is never written;
/// entries leave the table once both sides are done.
pub fn mux_ops(data: &[u8]) {
    let mut table: ChannelTable<()> = ChannelTable::new();
    let mut model: std::collections::BTreeMap<u64, ModelChannel> = Default::default();
    let mut highest_opened = 0u64;
    let mut live = 0usize;
    let mut removed = 0usize;
    for pair in data.chunks(2) {
        let op = pair[0];
        let arg = u64::from(pair.get(1).copied().unwrap_or(0));
        // Ids cluster near the frontier so operations hit real channels.
        let id = (highest_opened + arg % 8).saturating_sub(3).max(1);
        match op % 6 {
            0 => {
                let tx = [Protocol::Streaming, Protocol::Terminal, Protocol::Discard]
                    [(arg % 3) as usize];
                let action = table.open(id, tx, Protocol::Streaming, ());
                match action {
                    OpenAction::Write => {
                        assert!(id > highest_opened, "ids open strictly increasing");
                        assert_ne!(model.get(&id), Some(&ModelChannel::Precancelled));
                        model.insert(
                            id,
                            ModelChannel::Open {
                                tx_done: tx.is_terminal(),
                                rx_done: false,
                            },
                        );
                        live += 1;
                    }
                    OpenAction::Skip => {
                        assert_eq!(model.get(&id), Some(&ModelChannel::Precancelled));
                        model.insert(id, ModelChannel::Gone);
                    }
                    OpenAction::Reject => assert!(id <= highest_opened),
                }
                highest_opened = highest_opened.max(id);
            }
            1 => {
                if let SendAction::Write { terminal } = table.send(id, arg % 4) {
                    let Some(ModelChannel::Open { tx_done, rx_done }) = model.get(&id).copied()
                    else {
                        panic!(
                            "wrote on channel {id} that is not open: {:?}",
                            model.get(&id)
                        );
                    };
                    assert!(!tx_done, "wrote on channel {id} after its terminal message");
                    model.insert(
                        id,
                        ModelChannel::Open {
                            tx_done: terminal,
                            rx_done,
                        },
                    );
                }
            }
            2 => {
                let sent = table.cancel(id);
                match model.get(&id).copied() {
                    Some(ModelChannel::Open { tx_done, rx_done }) => {
                        assert_eq!(
                            sent.is_some(),
                            !tx_done,
                            "cancel writes iff our side was open"
                        );
                        model.insert(
                            id,
                            ModelChannel::Open {
                                tx_done: true,
                                rx_done,
                            },
                        );
                    }
                    None if id > highest_opened => {
                        assert!(sent.is_none());
                        model.insert(id, ModelChannel::Precancelled);
                    }
                    _ => assert!(
                        sent.is_none(),
                        "cancel of a finished channel writes nothing"
                    ),
                }
            }
            3 => {
                let action = table.receive(id, arg % 4);
                if let ReceiveAction::Deliver { last } = action {
                    let Some(ModelChannel::Open { rx_done, .. }) = model.get(&id).copied() else {
                        panic!("delivered to channel {id} that is not open");
                    };
                    assert!(!rx_done, "delivered after the peer's terminal message");
                    if last {
                        table.finish_rx(id);
                        mark_rx_done(&mut model, id);
                    }
                }
            }
            4 => {
                table.finish_rx(id);
                mark_rx_done(&mut model, id);
            }
            _ => table.mark_written(id, crate::mux::Delivery::Partial),
        }
        // Entries leave exactly when both sides are done.
        for (id, state) in model.iter_mut() {
            if let ModelChannel::Open {
                tx_done: true,
                rx_done: true,
            } = *state
            {
                *state = ModelChannel::Gone;
                live -= 1;
                assert!(
                    !table.contains(*id),
                    "finished channel {id} still in the table"
                );
            }
        }
        removed += table.take_removed();
        assert_eq!(table.len(), live, "table size matches the model");
        let opened = model
            .values()
            .filter(|s| !matches!(s, ModelChannel::Precancelled))
            .count();
        assert!(removed <= opened);
    }
    let drained = table.drain().count();
    assert_eq!(drained, live);
}
