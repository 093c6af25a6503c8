//! The member schedule: owns turning a routing group's effective weights
//! into a fixed interleaving of member picks (nginx's smooth weighted round
//! robin, computed once per weight change), which requests walk with one
//! shared atomic counter. Pure: no I/O, no clock.
//!
//! Why a precomputed sequence and not independent random picks: over 10,000
//! requests a random pick at 3:1 drifts by about half a percentage point
//! (one standard deviation), and a 5% canary by more in relative terms;
//! the interleaving is exact over every full cycle and off by at most a
//! pick or two over any run of consecutive requests. Why not smooth round
//! robin run live: it updates every member's running weight on every pick,
//! which needs a lock shared by all worker threads; reading a sequence at
//! `counter % len` needs only the counter's `fetch_add`.

/// Each member's weight is scaled by this before rounding to whole picks,
/// so a slow-start factor or a ramp of 10% keeps its precision.
const SCALE: f64 = 16.0;

/// The longest schedule kept: weights are scaled down (keeping their
/// ratios to 1 in [`MAX_LEN`]) past it.
const MAX_LEN: u64 = 1 << 16;

/// Whole-number weights for `weights` (≥ 0, not all zero), reduced by
/// their greatest common divisor and bounded so their sum is at most
/// [`MAX_LEN`]. A positive weight never rounds to zero.
pub(crate) fn whole_weights(weights: &[f64]) -> Vec<u64> {
    let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    if total <= 0.0 {
        return vec![0; weights.len()];
    }
    let mut scale = SCALE;
    if total * scale > MAX_LEN as f64 {
        scale = MAX_LEN as f64 / total;
    }
    let mut whole: Vec<u64> = weights
        .iter()
        .map(|w| {
            if w.is_finite() && *w > 0.0 {
                ((w * scale).round() as u64).max(1)
            } else {
                0
            }
        })
        .collect();
    let divisor = whole.iter().copied().fold(0, gcd);
    if divisor > 1 {
        for w in &mut whole {
            *w /= divisor;
        }
    }
    whole
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smooth weighted round-robin sequence for `weights` (whole numbers):
/// one cycle, of length the sum of the weights, in which member `i`
/// appears exactly `weights[i]` times, spread as evenly as the rule
/// spreads them (nginx: each turn every member gains its weight; the
/// largest running weight is picked and loses the total).
pub(crate) fn interleave(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        sequence.push(best as u32);
    }
    sequence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sequence: &[u32], members: usize, from: usize, len: usize) -> Vec<usize> {
        let mut counts = vec![0; members];
        for k in from..from + len {
            counts[sequence[k % sequence.len()] as usize] += 1;
        }
        counts
    }

    #[test]
    fn every_cycle_is_exact_and_every_window_within_two_picks() {
        for weights in [
            vec![3u64, 1],
            vec![19, 1],
            vec![1, 1],
            vec![122, 6],
            vec![5, 3, 2],
            vec![1, 0, 7],
        ] {
            let sequence = interleave(&weights);
            let total: u64 = weights.iter().sum();
            assert_eq!(sequence.len() as u64, total);
            let cycle = counts(&sequence, weights.len(), 0, sequence.len());
            assert_eq!(
                cycle,
                weights.iter().map(|w| *w as usize).collect::<Vec<_>>()
            );
            // Any 10,000 consecutive picks, starting anywhere in the cycle.
            for from in 0..sequence.len() {
                let window = counts(&sequence, weights.len(), from, 10_000);
                for (i, w) in weights.iter().enumerate() {
                    let expected = 10_000.0 * *w as f64 / total as f64;
                    assert!(
                        (window[i] as f64 - expected).abs() <= 2.0,
                        "{weights:?} from {from}: member {i} got {} of 10000, expected {expected}",
                        window[i]
                    );
                }
            }
        }
    }

    #[test]
    fn a_light_member_is_spread_not_bunched() {
        let sequence = interleave(&[19, 1]);
        let at: Vec<_> = sequence
            .iter()
            .enumerate()
            .filter(|(_, m)| **m == 1)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1);
        let sequence = interleave(&[2, 2]);
        assert_eq!(sequence, [0, 1, 0, 1]);
    }

    #[test]
    fn whole_weights_keep_ratios_reduce_and_bound() {
        assert_eq!(whole_weights(&[96.0, 32.0]), [3, 1]);
        assert_eq!(whole_weights(&[1.0, 0.0]), [1, 0]);
        // A slow-start factor of 10% of a weight of 3 against 1.
        assert_eq!(whole_weights(&[0.3, 1.0]), [5, 16]);
        assert_eq!(whole_weights(&[0.0, 0.0]), [0, 0]);
        assert_eq!(whole_weights(&[f64::NAN, 2.0]), [0, 1]);
        // Tiny but positive never rounds to zero.
        assert_eq!(whole_weights(&[1e-9, 1.0]), [1, 16]);
        let huge = whole_weights(&[1e9, 3e9]);
        assert!(huge.iter().sum::<u64>() <= MAX_LEN, "{huge:?}");
        assert_eq!(huge[1] / huge[0], 3);
    }
}
