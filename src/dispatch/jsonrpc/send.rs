//! Sending one call: its plan from the method's graph, the attempt
//! through an app's pool, and the conversation on its channel (the chunks
//! after the first message, then the reply to its terminal state).

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::convert::{to_args, to_json_args};
use super::{Call, CallError};
use crate::dispatch::DispatchError;
use crate::dispatch::attempt::{Attempt, Sending};
use crate::mux::{ChannelError, ChannelReceiver, ChannelSender, Invocation, MuxHandle};
use crate::proto::graph::{Node, Transition};
use crate::proto::{Args, Graph, Message, MessageError, Protocol, RawArgs, RemoteError};

/// How a call of a method is sent, from its graph.
pub(super) struct Plan {
    pub(super) id: u64,
    pub(super) tx: Protocol,
    pub(super) rx: Protocol,
    /// The ids of the messages the call may send after the first.
    pub(super) chunk_ids: Node,
    /// The first message's args.
    pub(super) args: RawArgs,
}

/// What the attempts of a call through an app's pool send.
pub(super) struct PooledCall<'a> {
    pub(super) call: &'a Call,
    pub(super) plan: &'a Plan,
}

impl Sending for PooledCall<'_> {
    type Reply = Result<Json, CallError>;

    fn sent_timeout(&self) -> Option<Duration> {
        None
    }

    async fn attempt(
        &mut self,
        handle: &MuxHandle,
        _remaining: Option<Duration>,
    ) -> Result<Self::Reply, Attempt> {
        let open = Message::new(self.plan.id, Args::Raw(self.plan.args.clone()));
        let channel = handle
            .open(Invocation::new(open, self.plan.tx, self.plan.rx))
            .await
            .map_err(|e| {
                // Nothing reached the app: another member may take it.
                if e.is_retry_safe() {
                    Attempt::Retriable(DispatchError::Channel(e))
                } else {
                    Attempt::Failed(DispatchError::Channel(e))
                }
            })?;
        let (sender, receiver) = channel.split();
        match converse(sender, receiver, self.plan, self.call).await {
            // The connection failed under the call: the member's failure.
            Err(CallError::Channel(e)) => Err(Attempt::Failed(DispatchError::Channel(e))),
            other => Ok(other),
        }
    }
}

/// How `call` of the method `name` is sent, from `graph`: not found for a
/// name the graph lacks or a control message, unsupported for a shape
/// rpcgate cannot drive.
pub(super) fn plan(graph: &Graph, call: &Call, name: &str) -> Result<Plan, CallError> {
    let not_found = || CallError::MethodNotFound(call.method.clone());
    let id = graph.method_id(name).ok_or_else(not_found)?;
    // Control messages are never sent (PROTOCOL.md §1.5).
    if id >= crate::proto::graph::GOAWAY {
        return Err(not_found());
    }
    let method = &graph.methods[&id];
    let unsupported = || CallError::Unsupported(call.method.clone());
    let tx = method
        .dispatch
        .protocol(Protocol::Terminal)
        .ok_or_else(unsupported)?;
    let rx = match &method.upstream {
        Transition::Recursive => return Err(unsupported()),
        other => other.protocol(Protocol::Terminal).ok_or_else(unsupported)?,
    };
    let chunk_ids = match &method.dispatch {
        Transition::Node(node) => node.clone(),
        Transition::Recursive => Node::terminal(),
    };
    Ok(Plan {
        id,
        tx,
        rx,
        chunk_ids,
        args: to_args(&call.args)?,
    })
}

/// The rest of a call on its opened channel: its chunks sent, then its
/// reply collected to its terminal state.
pub(super) async fn converse(
    mut sender: ChannelSender,
    mut receiver: ChannelReceiver,
    plan: &Plan,
    call: &Call,
) -> Result<Json, CallError> {
    for (chunk_name, args) in &call.chunks {
        let Some((chunk_id, _)) = plan
            .chunk_ids
            .messages
            .iter()
            .find(|(_, (n, _))| n == chunk_name)
        else {
            return Err(CallError::InvalidParams(format!(
                "`{chunk_name}` is not a message of `{}`",
                call.method
            )));
        };
        sender
            .send(Message::new(*chunk_id, Args::Raw(to_args(args)?)))
            .await
            .map_err(|e| match e {
                ChannelError::NotAllowed { .. } => {
                    CallError::InvalidParams(format!("`{chunk_name}` is not allowed here"))
                }
                other => CallError::Channel(other),
            })?;
    }
    // A stream we were given no end for ends now.
    if sender.state() == Protocol::Streaming {
        sender.close_on_drop();
    }
    let rx = plan.rx;
    let mut chunks = Vec::new();
    loop {
        let Some(frame) = receiver.recv().await else {
            // Terminal: nothing (more) comes back.
            return Ok(match rx {
                Protocol::Streaming => json!({ "chunks": chunks }),
                _ => Json::Null,
            });
        };
        let frame = frame.map_err(CallError::Channel)?;
        let args = || to_json_args(&frame.args).map_err(CallError::BadReply);
        match (rx, frame.ty) {
            (Protocol::Primitive, 0) => return args(),
            (Protocol::Streaming, 0) => chunks.push(args()?),
            (Protocol::Streaming, 2) => return Ok(json!({ "chunks": chunks })),
            (_, 1) => {
                let error = RemoteError::decode_args(&frame.args)
                    .map_err(|e| CallError::BadReply(e.into()))?;
                return Err(CallError::Backend(error));
            }
            (_, other) => return Err(CallError::BadReply(MessageError::UnexpectedType(other))),
        }
    }
}
