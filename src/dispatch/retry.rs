//! The retry budget: retries may be a share of the requests in flight
//! (with a floor), and each retry waits a jittered backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The retry policy and its budget.
#[derive(Debug)]
pub struct Retry {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Retries may be this share of requests in flight...
    pub budget_share: f64,
    /// ...with this floor.
    pub budget_floor: usize,
    /// The base of the jittered backoff.
    pub backoff: Duration,
    in_flight: AtomicUsize,
    retrying: AtomicUsize,
}

impl Retry {
    /// A policy.
    pub fn new(attempts: u32, budget_share: f64, budget_floor: usize, backoff: Duration) -> Self {
        Self {
            attempts,
            budget_share,
            budget_floor,
            backoff,
            in_flight: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
        }
    }

    pub(super) fn try_take(&self) -> Option<RetryToken<'_>> {
        let allowed = ((self.in_flight.load(Ordering::Relaxed) as f64 * self.budget_share)
            as usize)
            .max(self.budget_floor);
        let taken = self.retrying.fetch_add(1, Ordering::AcqRel);
        if taken >= allowed {
            self.retrying.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryToken(self))
    }

    /// The pause before retry `attempt` (0 for the first): the crate's one
    /// backoff rule, doubling from `backoff` for at most ten doublings,
    /// jittered ± 50%.
    pub(super) fn pause(&self, attempt: u32) -> Duration {
        crate::backoff::Backoff::new(self.backoff, self.backoff.saturating_mul(1 << 10))
            .with_jitter(0.5)
            .pause(attempt)
    }
}

pub(super) struct RetryToken<'a>(&'a Retry);

impl Drop for RetryToken<'_> {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request in flight counts toward the retry budget while it lives.
pub(super) struct InFlight<'a>(&'a Retry);

impl<'a> InFlight<'a> {
    pub(super) fn new(retry: &'a Retry) -> Self {
        retry.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(retry)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
