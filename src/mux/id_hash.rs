//! Channel-id hashing: owns how the per-connection tables (the mux's and
//! the session's) hash their `u64` channel ids.
//!
//! std's default SipHash showed in the load profile (several lookups per
//! request on each side). Ids are integers, so a keyed splitmix64
//! finalizer does: a few multiplications, spreading sequential ids over
//! every bit, and keyed per table with a random value so that a peer, which
//! chooses the ids it opens, cannot aim them at one bucket.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A map keyed by channel id.
pub(crate) type IdMap<V> = HashMap<u64, V, IdHashState>;

/// A set of channel ids.
pub(crate) type IdSet = HashSet<u64, IdHashState>;

/// The per-table key.
#[derive(Debug, Clone)]
pub(crate) struct IdHashState {
    key: u64,
}

impl Default for IdHashState {
    fn default() -> Self {
        Self {
            key: rand::random(),
        }
    }
}

impl BuildHasher for IdHashState {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.key,
            hash: 0,
        }
    }
}

/// Hashes the `u64` it is given (other input is folded in 8 bytes at a
/// time, for completeness).
#[derive(Debug)]
pub(crate) struct IdHasher {
    key: u64,
    hash: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.hash = mix(self.hash ^ n ^ self.key);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_the_low_and_high_bits() {
        let state = IdHashState::default();
        let hashes: Vec<u64> = (1..=4096u64).map(|id| state.hash_one(id)).collect();
        // hashbrown picks a bucket from the low bits and a tag from the top 7.
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 2500, "low 12 bits: {} distinct", low.len());
        assert_eq!(top.len(), 128, "every top-7-bit tag is used");
    }

    #[test]
    fn tables_are_keyed_differently() {
        let (a, b) = (IdHashState::default(), IdHashState::default());
        assert_ne!(a.hash_one(1u64), b.hash_one(1u64));
    }

    #[test]
    fn maps_work_as_maps() {
        let mut map: IdMap<&str> = IdMap::default();
        for id in 0..1000u64 {
            map.insert(id * 1024, "x");
        }
        assert_eq!(map.len(), 1000);
        assert!(map.contains_key(&(999 * 1024)));
        assert!(map.remove(&0).is_some());
        assert!(!map.contains_key(&0));
    }
}
