//! Outlier detection: owns one pool's run of consecutive backend failures
//! and its ejection state (ejected until when, how many times so far).
//! The decision to eject, which needs the group's view (at most a share of
//! its members out at once), is taken by [`super::Pools`]; the schedule
//! then leaves the member out until it returns.
//!
//! What counts as a failure: a connect refused or timed out, a connection
//! lost or closed right after connecting, a protocol violation, and the
//! app answering "not running" or "stopped". The app's own answers (any
//! HTTP status, other app errors) count as successes: the member works.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Outlier ejection settings (`[outlier]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierSettings {
    /// Failures in a row that eject a member; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// An ejection lasts this long times the number of ejections so far.
    pub base_ejection: Duration,
    /// At most this share of a group's members are ejected at once.
    pub max_ejection_share: f64,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection_share: 0.5,
        }
    }
}

impl OutlierSettings {
    /// How many of `members` may be ejected at once.
    pub fn max_ejected(&self, members: usize) -> usize {
        (members as f64 * self.max_ejection_share.clamp(0.0, 1.0)).floor() as usize
    }
}

/// One pool's health as outlier detection sees it. Failures are backend
/// failures: a connect refused or timed out, a connection lost or closed
/// right after connecting, a protocol violation, the app "not running" or
/// "stopped". The app's own answers count as successes.
#[derive(Debug, Default)]
pub struct Health {
    consecutive: AtomicU32,
    ejected: AtomicBool,
    ejections: AtomicU32,
    until: Mutex<Option<Instant>>,
}

impl Health {
    /// A request was answered: the run of failures ends. Reads first, so
    /// the common case writes nothing shared.
    pub fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// A backend failure; whether the run just reached `threshold` (and the
    /// member is not ejected already), so the caller should consider
    /// ejecting it.
    pub fn failure(&self, threshold: u32) -> bool {
        let run = self
            .consecutive
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        threshold > 0 && run >= threshold && !self.is_ejected()
    }

    /// Whether it is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Acquire)
    }

    /// How many times it was ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Acquire)
    }

    /// When the current ejection ends.
    pub fn ejected_until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ejects it from `now` for `base` times the ejections so far (this one
    /// included); returns how long.
    pub(crate) fn eject(&self, now: Instant, base: Duration) -> Duration {
        let count = self
            .ejections
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let length = base.saturating_mul(count);
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = Some(now + length);
        self.ejected.store(true, Ordering::Release);
        length
    }

    /// Ends the ejection if its time is up at `now`; whether it did. The
    /// run of failures starts again from zero.
    pub(crate) fn return_if_due(&self, now: Instant) -> bool {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        match *until {
            Some(at) if at <= now => {
                *until = None;
                self.consecutive.store(0, Ordering::Release);
                self.ejected.store(false, Ordering::Release);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_reaches_the_threshold_once_a_success_resets_it() {
        let health = Health::default();
        assert!(!health.failure(3));
        assert!(!health.failure(3));
        health.success();
        assert!(!health.failure(3));
        assert!(!health.failure(3));
        assert!(health.failure(3));
        assert_eq!(health.consecutive_failures(), 3);
        // Off when the threshold is 0.
        assert!(!Health::default().failure(0));
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_grow_with_their_count_and_end_when_due() {
        let health = Health::default();
        let base = Duration::from_secs(30);
        let now = Instant::now();
        assert_eq!(health.eject(now, base), base);
        assert!(health.is_ejected());
        assert!(!health.failure(1), "an ejected member is not ejected again");
        assert!(!health.return_if_due(now + base - Duration::from_millis(1)));
        assert!(health.return_if_due(now + base));
        assert!(!health.is_ejected());
        assert_eq!(health.consecutive_failures(), 0);
        assert_eq!(
            health.eject(now, base),
            base * 2,
            "the second lasts twice as long"
        );
        assert_eq!(health.ejections(), 2);
    }

    #[test]
    fn the_share_caps_how_many_members_go() {
        let s = OutlierSettings::default();
        assert_eq!(s.max_ejected(1), 0);
        assert_eq!(s.max_ejected(2), 1);
        assert_eq!(s.max_ejected(5), 2);
    }
}
