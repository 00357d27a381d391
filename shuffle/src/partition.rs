//! Partitioners: which of R partitions a key belongs to.
//!
//! Every rank and every resumed job must route keys identically. [`HashPartitioner`] uses
//! ahash under fixed seeds, whose output can still differ between builds and CPU features
//! (AES-NI or not), so every partitioner exposes a [`Partitioner::fingerprint`] that ranks
//! compare at start-up and journals record.

use std::fmt::Debug;

use xxhash_rust::xxh3::Xxh3;

use crate::{Error, Result};

/// Routes keys to partitions `0..partitions()`.
pub trait Partitioner: Send + Sync + Debug {
    /// Number of partitions R.
    fn partitions(&self) -> u32;
    /// The partition of `key`, in `0..R`.
    fn partition(&self, key: &[u8]) -> u32;
    /// A value that differs, with overwhelming probability, between partitioners that route
    /// some key differently. Equal fingerprints mean equal routing.
    fn fingerprint(&self) -> u64;
    /// True when partition order is key order (partition `i` holds only keys below those of
    /// partition `i + 1`), so that concatenated partitions are sorted.
    fn total_order(&self) -> bool {
        false
    }
}

/// The fixed seeds of the hash partitioner (the digits of pi; any fixed value would do).
const SEEDS: [u64; 4] =
    [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89];

/// The key whose hash is the hash partitioner's fingerprint.
const PROBE_KEY: &[u8] = b"spillway partitioner probe: the quick brown fox jumps over the lazy dog";

/// `hash(key) % R` with ahash under fixed seeds.
#[derive(Clone, Debug)]
pub struct HashPartitioner {
    partitions: u32,
    state: ahash::RandomState,
}

impl HashPartitioner {
    /// A partitioner over `partitions` partitions.
    ///
    /// # Errors
    ///
    /// `partitions` is zero.
    pub fn new(partitions: u32) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::Config("the number of partitions must be at least 1".into()));
        }
        let [a, b, c, d] = SEEDS;
        Ok(HashPartitioner { partitions, state: ahash::RandomState::with_seeds(a, b, c, d) })
    }

    /// The 64-bit hash of `key` that routing is based on. Map-side hash tables can reuse it.
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.state.hash_one(key)
    }

    /// The partition of a key whose [`HashPartitioner::hash`] is `hash`.
    #[inline]
    pub fn partition_of_hash(&self, hash: u64) -> u32 {
        (hash % u64::from(self.partitions)) as u32
    }
}

impl Partitioner for HashPartitioner {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    #[inline]
    fn partition(&self, key: &[u8]) -> u32 {
        // One partition (one output file): no key needs hashing.
        if self.partitions == 1 {
            return 0;
        }
        self.partition_of_hash(self.hash(key))
    }

    fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(b"hash");
        h.update(&self.partitions.to_le_bytes());
        h.update(&self.hash(PROBE_KEY).to_le_bytes());
        h.update(&self.hash(b"").to_le_bytes());
        h.digest()
    }
}

/// Total-order partitioning by R-1 sorted boundary keys: partition `i` holds the keys `k`
/// with `boundary[i-1] <= k < boundary[i]`, so concatenating partitions in order gives keys
/// in byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePartitioner {
    boundaries: Vec<Vec<u8>>,
}

impl RangePartitioner {
    /// A partitioner from non-decreasing boundaries (R = boundaries + 1). Repeated boundaries
    /// leave empty partitions between them.
    ///
    /// # Errors
    ///
    /// The boundaries go down, or there are `u32::MAX` or more.
    pub fn new(boundaries: Vec<Vec<u8>>) -> Result<Self> {
        if boundaries.len() >= u32::MAX as usize {
            return Err(Error::Config("too many range boundaries".into()));
        }
        if let Some(i) = boundaries.windows(2).position(|w| w[0] > w[1]) {
            return Err(Error::Config(format!("range boundaries out of order at {}", i + 1)));
        }
        Ok(RangePartitioner { boundaries })
    }

    /// Picks R-1 boundaries at the quantiles of `sample` (which it sorts), for `partitions`
    /// partitions. An empty sample gives R-1 empty boundaries (everything in the last
    /// partition).
    ///
    /// # Errors
    ///
    /// `partitions` is zero.
    pub fn from_sample<K: AsRef<[u8]> + Ord>(sample: &mut [K], partitions: u32) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::Config("the number of partitions must be at least 1".into()));
        }
        sample.sort_unstable();
        let r = partitions as usize;
        let boundaries = (1..r)
            .map(|i| match sample.len() {
                0 => Vec::new(),
                n => sample[(i * n / r).min(n - 1)].as_ref().to_vec(),
            })
            .collect();
        Self::new(boundaries)
    }

    /// The boundaries.
    pub fn boundaries(&self) -> &[Vec<u8>] {
        &self.boundaries
    }
}

impl Partitioner for RangePartitioner {
    fn partitions(&self) -> u32 {
        self.boundaries.len() as u32 + 1
    }

    #[inline]
    fn partition(&self, key: &[u8]) -> u32 {
        self.boundaries.partition_point(|b| b.as_slice() <= key) as u32
    }

    fn total_order(&self) -> bool {
        true
    }

    fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        h.update(b"range");
        h.update(&(self.boundaries.len() as u64).to_le_bytes());
        for b in &self.boundaries {
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        h.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_partitions_are_in_range_and_stable() {
        let p = HashPartitioner::new(7).unwrap();
        let q = HashPartitioner::new(7).unwrap();
        for i in 0..10_000u32 {
            let key = i.to_string();
            let part = p.partition(key.as_bytes());
            assert!(part < 7);
            assert_eq!(part, q.partition(key.as_bytes()));
        }
        assert_eq!(p.fingerprint(), q.fingerprint());
        assert_ne!(p.fingerprint(), HashPartitioner::new(8).unwrap().fingerprint());
        assert!(HashPartitioner::new(0).is_err());
    }

    #[test]
    fn hash_partitions_spread_keys() {
        let p = HashPartitioner::new(16).unwrap();
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            counts[p.partition(format!("word{i}").as_bytes()) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }

    #[test]
    fn range_partitions_preserve_order() {
        let mut sample: Vec<Vec<u8>> =
            (0..1000u32).map(|i| format!("{:05}", i * 7 % 1000).into_bytes()).collect();
        let p = RangePartitioner::from_sample(&mut sample, 4).unwrap();
        assert_eq!(p.partitions(), 4);
        assert_eq!(p.boundaries(), [b"00250".to_vec(), b"00500".to_vec(), b"00750".to_vec()]);
        let mut keys: Vec<Vec<u8>> =
            (0..2000u32).map(|i| format!("{:05}", (i * 13) % 1500).into_bytes()).collect();
        keys.sort();
        let parts: Vec<u32> = keys.iter().map(|k| p.partition(k)).collect();
        assert!(parts.windows(2).all(|w| w[0] <= w[1]), "partition order follows key order");
        assert_eq!(p.partition(b""), 0);
        assert_eq!(p.partition(b"00250"), 1);
        assert_eq!(p.partition(b"zzz"), 3);
    }

    #[test]
    fn range_boundaries_must_not_go_down() {
        assert!(RangePartitioner::new(vec![b"b".to_vec(), b"a".to_vec()]).is_err());
        let p = RangePartitioner::new(vec![b"a".to_vec(), b"a".to_vec()]).unwrap();
        assert_eq!(p.partition(b"a"), 2);
        assert_eq!(p.partition(b"0"), 0);
        let fp = p.fingerprint();
        assert_ne!(fp, RangePartitioner::new(vec![b"a".to_vec(), b"b".to_vec()]).unwrap().fingerprint());
    }

    #[test]
    fn range_from_empty_or_skewed_sample() {
        let mut empty: Vec<Vec<u8>> = Vec::new();
        let p = RangePartitioner::from_sample(&mut empty, 3).unwrap();
        assert_eq!(p.partitions(), 3);
        let mut skewed: Vec<&[u8]> = vec![b"same"; 100];
        let p = RangePartitioner::from_sample(&mut skewed, 5).unwrap();
        assert_eq!(p.partitions(), 5);
    }
}
