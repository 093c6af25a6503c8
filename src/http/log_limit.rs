//! Rate-limited log lines: owns deciding whether a line that an attacker
//! can make the gateway repeat (one per hostile connection) may be written
//! now, and counting the ones held back. It writes nothing itself.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Lets one line through per `interval` and counts the others, which the
/// next line let through reports.
#[derive(Debug)]
pub(crate) struct LogLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the last line was let through.
    last: Option<Instant>,
    /// Lines held back since.
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `interval`.
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)`: write the line now, saying that `n` like it were held
    /// back since the last one written; `None`: hold this one back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed = state.suppressed.saturating_add(1);
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_held_back() {
        let limit = LogLimit::new(Duration::from_secs(1));
        assert_eq!(limit.allow(), Some(0), "the first line goes");
        for _ in 0..999 {
            assert_eq!(limit.allow(), None);
        }
        // Just short of the interval: still held back.
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(limit.allow(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.allow(), Some(1000), "the next line counts them");
        assert_eq!(limit.allow(), None);
        // After a quiet spell, the next line goes at once, with what was
        // held back meanwhile.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limit.allow(), Some(1));
        assert_eq!(limit.allow(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_writes_one_line_per_interval() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let (mut written, mut reported) = (0u64, 0u64);
        // 5,000 events over 20 s, evenly spread.
        for _ in 0..5_000 {
            if let Some(suppressed) = limit.allow() {
                written += 1;
                reported += suppressed;
            }
            tokio::time::advance(Duration::from_millis(4)).await;
        }
        assert_eq!(written, 20);
        // Every event is written or counted by a later line, but for those
        // after the last line written (the last second's, less one).
        assert_eq!(5_000 - written - reported, 249);
    }
}
