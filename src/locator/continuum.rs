//! The routing-group continuum: owns the exact Ketama ring of PROTOCOL.md
//! §3.4 (MD5, `steps = lround(weight / total × 64 × n)`, an 8-byte
//! little-endian step, four little-endian u32 points per digest) and its
//! upper-bound lookups. Pure: no I/O, no clock; randomness is passed in.

use std::collections::BTreeMap;

/// Why a group's weights cannot make a continuum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuumError {
    /// The group has no members.
    #[error("a routing group needs at least one member")]
    Empty,
    /// Every weight is zero.
    #[error("the weights of a routing group must not all be zero")]
    ZeroTotal,
}

/// A built ring: points sorted ascending, each naming a member.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Continuum {
    points: Vec<(u32, String)>,
}

impl Continuum {
    /// Builds the ring of a group from member weights. Members are walked in
    /// byte-wise name order (the runtime keeps groups in a `std::map`).
    pub fn new(weights: &BTreeMap<String, u32>) -> Result<Self, ContinuumError> {
        if weights.is_empty() {
            return Err(ContinuumError::Empty);
        }
        let total: f64 = weights.values().map(|w| f64::from(*w)).sum();
        if total <= 0.0 {
            return Err(ContinuumError::ZeroTotal);
        }
        let n = weights.len() as f64;
        let mut points = Vec::new();
        for (name, weight) in weights {
            let slice = f64::from(*weight) / total;
            // `f64::round` rounds half away from zero, as C's lround does.
            let steps = (slice * 64.0 * n).round() as u64;
            for step in 0..steps {
                let mut input = Vec::with_capacity(name.len() + 8);
                input.extend_from_slice(name.as_bytes());
                // `size_t` step: 8 bytes, native little-endian on x86-64.
                input.extend_from_slice(&step.to_le_bytes());
                for point in digest_words(&input) {
                    points.push((point, name.clone()));
                }
            }
        }
        // Equal points keep insertion order here; the runtime's std::sort
        // leaves their order unspecified.
        points.sort_by_key(|(point, _)| *point);
        Ok(Self { points })
    }

    /// Rebuilds a ring from points as a `routing` dump carries them.
    pub fn from_points(mut points: Vec<(u32, String)>) -> Self {
        points.sort_by_key(|(point, _)| *point);
        Self { points }
    }

    /// The sorted points.
    pub fn points(&self) -> &[(u32, String)] {
        &self.points
    }

    /// Whether the ring has no points (all weights rounded to zero steps).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The member owning `point`: the first ring point strictly greater
    /// than it, wrapping to the first point (the locator's upper bound).
    pub fn lookup(&self, point: u32) -> Option<&str> {
        let index = self.points.partition_point(|(p, _)| *p <= point);
        self.points
            .get(index)
            .or_else(|| self.points.first())
            .map(|(_, name)| name.as_str())
    }

    /// Members along the ring from the owner of `point` on, one per ring
    /// point, once around (so a member recurs): where a sticky pick goes
    /// when the owner cannot take it.
    pub fn walk(&self, point: u32) -> impl Iterator<Item = &str> {
        let start = self.points.partition_point(|(p, _)| *p <= point);
        let (tail, head) = self.points.split_at(start.min(self.points.len()));
        head.iter().chain(tail).map(|(_, name)| name.as_str())
    }

    /// The member for a seed: the lookup of [`seed_point`].
    pub fn lookup_seed(&self, seed: &[u8]) -> Option<&str> {
        self.lookup(seed_point(seed))
    }

    /// Each member's share of the u32 space, as the lookup rule assigns it.
    pub fn shares(&self) -> BTreeMap<String, f64> {
        let mut shares = BTreeMap::new();
        let space = f64::from(u32::MAX) + 1.0;
        let mut previous = 0u64;
        for (point, name) in &self.points {
            // Points in (previous, point] map to this point's member (for
            // the first point, also everything past the last point).
            let span = u64::from(*point) + 1 - previous;
            *shares.entry(name.clone()).or_insert(0.0) += span as f64 / space;
            previous = u64::from(*point) + 1;
        }
        if let Some((_, first)) = self.points.first() {
            let tail = (u64::from(u32::MAX) + 1 - previous) as f64 / space;
            *shares.entry(first.clone()).or_insert(0.0) += tail;
        }
        shares
    }
}

/// The point a seed maps to: the XOR of the four little-endian u32 words of
/// `md5(seed)` (also the tornado proxy's `X-Cocaine-Sticky` rule).
pub fn seed_point(seed: &[u8]) -> u32 {
    digest_words(seed).into_iter().fold(0, |acc, w| acc ^ w)
}

fn digest_words(input: &[u8]) -> [u32; 4] {
    let digest = md5::compute(input).0;
    let word =
        |i: usize| u32::from_le_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_group() -> Continuum {
        let weights = [("app_v1".to_owned(), 1), ("app_v2".to_owned(), 3)].into();
        Continuum::new(&weights).unwrap()
    }

    #[test]
    fn matches_the_spec_test_vectors() {
        let ring = spec_group();
        assert_eq!(ring.points().len(), 512);
        let count = |m: &str| ring.points().iter().filter(|(_, n)| n == m).count();
        assert_eq!((count("app_v1"), count("app_v2")), (128, 384));
        let first: Vec<_> = ring.points()[..4]
            .iter()
            .map(|(p, n)| (*p, n.as_str()))
            .collect();
        assert_eq!(
            first,
            [
                (10_939_163, "app_v2"),
                (16_345_443, "app_v2"),
                (16_578_313, "app_v2"),
                (18_838_917, "app_v1")
            ]
        );
        let last: Vec<_> = ring.points()[510..]
            .iter()
            .map(|(p, n)| (*p, n.as_str()))
            .collect();
        assert_eq!(last, [(4_286_865_993, "app_v1"), (4_288_951_102, "app_v2")]);
    }

    #[test]
    fn md5_of_step_zero_gives_the_listed_points() {
        let mut input = b"app_v1".to_vec();
        input.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            format!("{:x}", md5::compute(&input)),
            "6a2655c19416349405b667bf40429cf7"
        );
        assert_eq!(
            digest_words(&input),
            [0xc155_266a, 0x9434_1694, 0xbf67_b605, 0xf79c_4240]
        );
        let ring = spec_group();
        for p in digest_words(&input) {
            assert!(ring.points().contains(&(p, "app_v1".to_owned())));
        }
    }

    #[test]
    fn keyed_lookups_match_the_spec_table() {
        let ring = spec_group();
        assert!(format!("{:x}", md5::compute("user-42")).starts_with("7631bc07"));
        assert_eq!(seed_point(b"user-42"), 1_333_190_963);
        assert_eq!(seed_point(b"alice"), 2_005_837_138);
        assert_eq!(seed_point(b"bob"), 2_846_518_315);
        assert_eq!(ring.lookup_seed(b"user-42"), Some("app_v1"));
        assert_eq!(ring.lookup_seed(b"alice"), Some("app_v1"));
        assert_eq!(ring.lookup_seed(b"bob"), Some("app_v2"));
    }

    #[test]
    fn lookup_is_upper_bound_and_wraps() {
        let ring = Continuum::from_points(vec![(10, "a".into()), (20, "b".into())]);
        assert_eq!(ring.lookup(0), Some("a"));
        assert_eq!(
            ring.lookup(10),
            Some("b"),
            "strictly greater than the point"
        );
        assert_eq!(ring.lookup(19), Some("b"));
        assert_eq!(ring.lookup(20), Some("a"), "wraps to the first point");
        assert_eq!(ring.lookup(u32::MAX), Some("a"));
        assert_eq!(Continuum::default().lookup(5), None);
    }

    #[test]
    fn shares_cover_the_space_and_follow_weights() {
        let shares = spec_group().shares();
        let total: f64 = shares.values().sum();
        assert!((total - 1.0).abs() < 1e-9);
        // The spec's 200k-sample estimate: app_v1 ≈ 0.218, app_v2 ≈ 0.782.
        assert!((shares["app_v1"] - 0.218).abs() < 0.005, "{shares:?}");
    }

    #[test]
    fn zero_weights_get_no_points_and_bad_groups_are_refused() {
        let weights = [("v1".to_owned(), 0), ("v2".to_owned(), 1)].into();
        let ring = Continuum::new(&weights).unwrap();
        assert!(ring.points().iter().all(|(_, n)| n == "v2"));
        assert_eq!(ring.points().len(), 4 * 128);
        assert_eq!(Continuum::new(&BTreeMap::new()), Err(ContinuumError::Empty));
        let zero = [("v1".to_owned(), 0)].into();
        assert_eq!(Continuum::new(&zero), Err(ContinuumError::ZeroTotal));
    }
}
