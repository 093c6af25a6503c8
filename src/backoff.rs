//! Backoff: owns the one rule every retry loop in the crate follows (the
//! locator client's resubscribe, the app's publish, the pool's connect, the
//! cluster store's session, the dispatcher's retries): a first pause,
//! doubled per failure up to a longest pause, optionally jittered. Pure:
//! no clock and no sleeping; callers sleep on [`Backoff::pause`].

use std::time::Duration;

/// Doubling pauses: `first`, `2 × first`, `4 × first` … at most `max`,
/// each then spread by ± `jitter` (a share: 0.2 means 0.8 to 1.2 times).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The pause after the first failure.
    pub first: Duration,
    /// The longest pause (before jitter).
    pub max: Duration,
    /// The random spread around each pause, as a share of it (0 for none).
    pub jitter: f64,
}

impl Backoff {
    /// Pauses from `first`, doubling, at most `max`, without jitter.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            jitter: 0.0,
        }
    }

    /// The same pauses, each multiplied by a random factor in
    /// `1 - spread .. 1 + spread` (so that clients failing together do not
    /// retry together).
    pub const fn with_jitter(self, spread: f64) -> Self {
        Self {
            jitter: spread,
            ..self
        }
    }

    /// The pause before attempt `retry` (0 for the first retry):
    /// `first × 2^retry`, at most `max`, then jittered.
    pub fn pause(&self, retry: u32) -> Duration {
        let base = self.first.saturating_mul(1 << retry.min(31)).min(self.max);
        if self.jitter > 0.0 {
            base.mul_f64(rand::random_range(1.0 - self.jitter..1.0 + self.jitter))
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_first_to_max() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(64));
        let secs: Vec<_> = (0..9).map(|n| backoff.pause(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        let ms = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let ms: Vec<_> = [0, 1, 5, 6, 40, u32::MAX]
            .map(|n| ms.pause(n).as_millis())
            .to_vec();
        assert_eq!(ms, [100, 200, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_jitter(0.2);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let pause = backoff.pause(2);
            assert!(
                (Duration::from_millis(320)..Duration::from_millis(480)).contains(&pause),
                "{pause:?}"
            );
            seen.insert(pause);
        }
        assert!(seen.len() > 1, "the pauses are spread");
        // The longest pause is jittered too.
        let top = backoff.pause(30);
        assert!((Duration::from_secs(4)..Duration::from_secs(6)).contains(&top));
    }
}
