//! k-way merging of sorted runs, and planning merges under the open-run bound F.
//!
//! [`LoserTree`] is the one k-way merge: a loser tree over up to F [`MergeSource`]s (cursors
//! on sorted streams), deterministic on ties. Two sources are built in. [`Merge`] runs it over
//! partition iterators of runs: it yields records in key order (ties in input order, so merges
//! are deterministic), groups equal keys ([`Merge::next_group`]) or folds them with an
//! associative combine function ([`Merge::next_combined`]). [`RecordCursor`] reads a range of
//! a plain run of fixed-size records ([`RecordRun`], the record sort's runs) through a buffer.
//! [`merge_runs`] folds whole runs into one run, every partition at once; [`plan_merges`]
//! decides which runs to fold so that no step opens more than F runs. The design is explained
//! in `merge/README.md`.

mod plan;
mod records;
mod tree;

pub use plan::{MergePlan, MergeStep, plan_merges};
pub use records::{RecordCursor, RecordRun};
pub use tree::{LoserTree, MergeSource, PREFETCH_MIN_FAN_IN};

use std::cmp::Ordering;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use crate::io::{IoBackend, ReadMode};
use crate::run::{OpenRunGauge, PartitionIter, RunInfo, RunReader, RunWriter};
use crate::value::{ArchivedValue, Value, to_owned};
use crate::{Error, Result};

/// A combine function: folds an archived value into an accumulator. It must be associative
/// and commutative.
pub type CombineFn<'f, V> = dyn Fn(&mut V, &ArchivedValue<V>) + Sync + 'f;

/// A record borrowed from a run: key bytes and archived value.
pub type Record<'a, V> = (&'a [u8], &'a ArchivedValue<V>);

/// The first 8 bytes of `key`, big-endian, zero-padded: `key_prefix(a) < key_prefix(b)`
/// implies `a < b`, and `a <= b` implies `key_prefix(a) <= key_prefix(b)`. Equal prefixes
/// decide nothing (`"ab"` and `"ab\0"`, or any two keys that share 8 bytes).
///
/// Keys shorter than 8 bytes are assembled from two overlapping loads (no `memcpy` call).
#[inline(always)]
pub fn key_prefix(key: &[u8]) -> u64 {
    let len = key.len();
    if let Some(head) = key.first_chunk::<8>() {
        return u64::from_be_bytes(*head);
    }
    // 0 < len < 8: the first and last 4 (or 2) bytes, each placed at its position in the
    // padded big-endian word; where they overlap they hold the same bytes.
    if let (Some(first), Some(last)) = (key.first_chunk::<4>(), key.last_chunk::<4>()) {
        let (first, last) = (u64::from(u32::from_be_bytes(*first)), u64::from(u32::from_be_bytes(*last)));
        return first << 32 | last << (8 * (8 - len));
    }
    if let (Some(first), Some(last)) = (key.first_chunk::<2>(), key.last_chunk::<2>()) {
        let (first, last) = (u64::from(u16::from_be_bytes(*first)), u64::from(u16::from_be_bytes(*last)));
        return first << 48 | last << (8 * (8 - len));
    }
    key.first().map_or(0, |&b| u64::from(b) << 56)
}

/// Compares two keys like `<[u8]>::cmp`, 8 bytes at a time through [`key_prefix`] for the
/// first few words (the keys the slow path sees share their first 8 bytes, and are usually
/// short: a call to `memcmp` would cost more than the comparison), then bytewise.
#[inline(always)]
pub(crate) fn cmp_keys(mut a: &[u8], mut b: &[u8]) -> Ordering {
    for _ in 0..4 {
        let (pa, pb) = (key_prefix(a), key_prefix(b));
        if pa != pb {
            return pa.cmp(&pb);
        }
        // Equal padded words: if either key ends within them, it is a prefix of the other
        // (whose remaining bytes there are zeros), so the shorter key comes first.
        match (a.get(8..), b.get(8..)) {
            (Some(ra), Some(rb)) if !ra.is_empty() && !rb.is_empty() => (a, b) = (ra, rb),
            _ => return a.len().cmp(&b.len()),
        }
    }
    a.cmp(b)
}

/// A partition iterator as a [`MergeSource`]: its head record, [`key_prefix`] prefixes, and
/// [`PartitionIter::prefetch_ahead`] at large fan-ins.
struct PartitionSource<'a, V: Value> {
    head: Option<Record<'a, V>>,
    iter: PartitionIter<'a, V>,
}

impl<'a, V: Value> PartitionSource<'a, V> {
    fn new(mut iter: PartitionIter<'a, V>) -> Self {
        PartitionSource { head: iter.next(), iter }
    }
}

impl<V: Value> MergeSource for PartitionSource<'_, V> {
    type Prefix = u64;
    type Error = Infallible;
    // A real key can have this prefix too (all `0xFF`): equal prefixes fall back to
    // `is_exhausted` and `cmp_heads`, so the sentinel is never mistaken for a key.
    const EXHAUSTED: u64 = u64::MAX;
    const PREFETCH: bool = true;

    #[inline(always)]
    fn prefix(&self) -> u64 {
        match self.head {
            Some((key, _)) => key_prefix(key),
            None => u64::MAX,
        }
    }

    #[inline(always)]
    fn is_exhausted(&self) -> bool {
        self.head.is_none()
    }

    #[inline(always)]
    fn cmp_heads(&self, other: &Self) -> Ordering {
        match (self.head, other.head) {
            (Some((a, _)), Some((b, _))) => cmp_keys(a, b),
            // Not asked of exhausted sources; they would come last.
            (a, b) => a.is_none().cmp(&b.is_none()),
        }
    }

    #[inline(always)]
    fn advance(&mut self) -> Result<(), Infallible> {
        self.head = self.iter.next();
        Ok(())
    }

    #[inline(always)]
    fn prefetch(&self) {
        self.iter.prefetch_ahead();
    }
}

/// A loser tree ([`LoserTree`]) merging sorted partition iterators.
pub struct Merge<'a, V: Value> {
    tree: LoserTree<PartitionSource<'a, V>>,
}

impl<V: Value> std::fmt::Debug for Merge<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge").field("fan_in", &self.fan_in()).finish_non_exhaustive()
    }
}

impl<'a, V: Value> Merge<'a, V> {
    /// Merges `sources`, each sorted by key.
    pub fn new(sources: Vec<PartitionIter<'a, V>>) -> Self {
        Merge { tree: LoserTree::new(sources.into_iter().map(PartitionSource::new).collect()) }
    }

    /// Number of merged sources.
    pub fn fan_in(&self) -> usize {
        self.tree.fan_in()
    }

    /// The key of the next record, without consuming it.
    #[inline]
    pub fn peek_key(&self) -> Option<&'a [u8]> {
        self.tree.peek().and_then(|source| source.head).map(|(key, _)| key)
    }

    /// Is the next record's key `key`, whose prefix is `prefix`? (`peek_key() ==
    /// Some(key)`, mostly without comparing bytes.)
    #[inline]
    fn next_is(&self, key: &[u8], prefix: u64) -> bool {
        self.tree.peek_prefix() == prefix
            && matches!(self.tree.peek(), Some(PartitionSource { head: Some((next, _)), .. }) if cmp_keys(next, key).is_eq())
    }

    /// Takes the next record in key order.
    // Always inlined into the caller's loop: left to itself LLVM calls it, and the call with
    // its 24-byte result returned through memory measured 15% slower at fan-in 2 (and 10%
    // slower for `next_combined`).
    #[inline(always)]
    pub fn next_record(&mut self) -> Option<Record<'a, V>> {
        let record = self.tree.peek()?.head?;
        let Ok(()) = self.tree.advance();
        Some(record)
    }

    /// Takes the next key with an iterator over all its values (in source order). Values not
    /// consumed from the group are skipped when the group is dropped.
    pub fn next_group(&mut self) -> Option<(&'a [u8], Group<'_, 'a, V>)> {
        let (key, first) = self.next_record()?;
        Some((key, Group { merge: self, key, prefix: key_prefix(key), first: Some(first) }))
    }

    /// Takes the next key with all its values folded by `combine` (which must be
    /// associative and commutative) into an owned value.
    pub fn next_combined(
        &mut self,
        mut combine: impl FnMut(&mut V, &ArchivedValue<V>),
    ) -> Option<(&'a [u8], V)> {
        let (key, first) = self.next_record()?;
        let prefix = key_prefix(key);
        let mut acc = to_owned::<V>(first);
        while self.next_is(key, prefix) {
            let (_, value) = self.next_record().expect("peeked");
            combine(&mut acc, value);
        }
        Some((key, acc))
    }
}

impl<'a, V: Value> Iterator for Merge<'a, V> {
    type Item = Record<'a, V>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// The values of one key during a merge.
pub struct Group<'m, 'a, V: Value> {
    merge: &'m mut Merge<'a, V>,
    key: &'a [u8],
    prefix: u64,
    first: Option<&'a ArchivedValue<V>>,
}

impl<V: Value> std::fmt::Debug for Group<'_, '_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("key", &String::from_utf8_lossy(self.key)).finish_non_exhaustive()
    }
}

impl<'a, V: Value> Iterator for Group<'_, 'a, V> {
    type Item = &'a ArchivedValue<V>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.merge.next_is(self.key, self.prefix) {
            self.merge.next_record().map(|(_, v)| v)
        } else {
            None
        }
    }
}

impl<V: Value> Drop for Group<'_, '_, V> {
    fn drop(&mut self) {
        while self.merge.next_is(self.key, self.prefix) {
            self.merge.next_record();
        }
    }
}

/// How [`merge_runs`] reads and writes.
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// How input runs are read.
    pub read: ReadMode,
    /// How the output run is written.
    pub io: IoBackend,
    /// `fsync` the output before renaming it into place.
    pub sync: bool,
    /// When set, every opened input is counted here.
    pub gauge: Option<Arc<OpenRunGauge>>,
}

/// Merges the runs at `inputs` into one run at `output`, every partition in turn. With
/// `combine`, the values of each key are folded into one; without it every record is kept.
///
/// # Errors
///
/// An input fails to open or validate, or the output cannot be written. Partition counts of
/// the inputs must agree.
pub fn merge_runs<V: Value>(
    inputs: &[&Path],
    output: &Path,
    combine: Option<&CombineFn<'_, V>>,
    options: &MergeOptions,
) -> Result<RunInfo> {
    let mut readers = Vec::with_capacity(inputs.len());
    for path in inputs {
        let reader = RunReader::<V>::open(path, options.read)?;
        readers.push(match &options.gauge {
            Some(gauge) => reader.track(gauge),
            None => reader,
        });
    }
    merge_readers(&readers, output, combine, options)
}

/// As [`merge_runs`], over runs that are already open.
///
/// # Errors
///
/// Partition counts disagree, or the output cannot be written.
pub fn merge_readers<V: Value>(
    readers: &[RunReader<V>],
    output: &Path,
    combine: Option<&CombineFn<'_, V>>,
    options: &MergeOptions,
) -> Result<RunInfo> {
    let partitions = readers.first().map_or(1, RunReader::partitions);
    if let Some(other) = readers.iter().find(|r| r.partitions() != partitions) {
        return Err(Error::Config(format!(
            "cannot merge {} ({} partitions) with runs of {partitions} partitions",
            other.path().display(),
            other.partitions()
        )));
    }
    let mut writer = RunWriter::<V>::create(output, partitions, options.io)?;
    for p in 0..partitions {
        let mut merge = Merge::new(readers.iter().map(|r| r.iter(p)).collect());
        match combine {
            Some(combine) => {
                while let Some((key, value)) = merge.next_combined(combine) {
                    writer.push(p, key, &value)?;
                }
            }
            None => {
                while let Some((key, value)) = merge.next_record() {
                    writer.push(p, key, &to_owned::<V>(value))?;
                }
            }
        }
    }
    writer.finish(options.sync)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Key material that defeats 8-byte prefixes: empty and short keys (zero padding makes
    /// `"a"` and `"a\0"` equal prefixes), keys that are prefixes of each other, keys sharing
    /// their first 8 bytes (or 16, or 32: past the word-wise comparison), and `0x00` / `0xFF`
    /// bytes (an all-`0xFF` prefix equals an exhausted source's sentinel).
    const STEMS: [&[u8]; 12] = [
        b"",
        b"\0",
        b"a",
        b"abcdefg",
        b"abcdefgh",
        b"abcdefgh\0\0\0\0\0\0\0\0",
        b"abcdefghabcdefghabcdefghabcdefgh",
        &[0; 3],
        &[0; 8],
        &[0xFF; 7],
        &[0xFF; 8],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE],
    ];
    const TAIL_BYTES: [u8; 5] = [0x00, 0x01, b'a', 0xFE, 0xFF];

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => (0..STEMS.len(), prop::collection::vec(0..TAIL_BYTES.len(), 0..4)).prop_map(|(stem, tail)| {
                let mut key = STEMS[stem].to_vec();
                key.extend(tail.into_iter().map(|b| TAIL_BYTES[b]));
                key
            }),
            1 => prop::collection::vec(prop::sample::select(&TAIL_BYTES[..]), 0..12),
        ]
    }

    /// Sources (fan-in 1..70), each a list of keys (sorted when written).
    fn sources_strategy() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
        prop::collection::vec(prop::collection::vec(key_strategy(), 0..24), 1..70)
    }

    /// Writes every source as one partition of a run (values `source << 32 | position`, keys
    /// sorted) and opens it.
    fn open_sources(dir: &Path, sources: &[Vec<Vec<u8>>], block: usize) -> RunReader<u64> {
        let path = dir.join("sources.run");
        let mut writer = RunWriter::<u64>::create(&path, sources.len() as u32, IoBackend::Std)
            .unwrap()
            .with_block_target(block);
        for (s, keys) in sources.iter().enumerate() {
            let mut keys = keys.clone();
            keys.sort();
            for (i, key) in keys.iter().enumerate() {
                writer.push(s as u32, key, &((s as u64) << 32 | i as u64)).unwrap();
            }
        }
        writer.finish(false).unwrap();
        RunReader::open(&path, ReadMode::Mmap).unwrap()
    }

    fn merge_of(reader: &RunReader<u64>) -> Merge<'_, u64> {
        Merge::new((0..reader.partitions()).map(|p| reader.iter(p)).collect())
    }

    /// The stable sort of the concatenated sorted sources: (key, value) in merge order.
    fn reference(sources: &[Vec<Vec<u8>>]) -> Vec<(Vec<u8>, u64)> {
        let mut all = Vec::new();
        for (s, keys) in sources.iter().enumerate() {
            let mut keys = keys.clone();
            keys.sort();
            all.extend(keys.into_iter().enumerate().map(|(i, key)| (key, (s as u64) << 32 | i as u64)));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0)); // stable: equal keys stay in source order
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// `Merge` yields the stable sort of its sources: keys in byte order, equal keys in
        /// source order, on keys whose 8-byte prefixes tie, pad or saturate.
        #[test]
        fn merge_equals_stable_sort_on_prefix_edge_cases(
            sources in sources_strategy(),
            block in prop::sample::select(vec![1usize, 64, 4096]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let reader = open_sources(dir.path(), &sources, block);
            let mut merge = merge_of(&reader);
            prop_assert_eq!(merge.fan_in(), sources.len());
            let mut got = Vec::new();
            loop {
                let peeked = merge.peek_key();
                let Some((key, value)) = merge.next_record() else {
                    prop_assert_eq!(peeked, None);
                    break;
                };
                prop_assert_eq!(peeked, Some(key));
                got.push((key.to_vec(), value.to_native()));
            }
            prop_assert_eq!(merge.next_record(), None);
            prop_assert_eq!(got, reference(&sources));
        }

        /// Groups and combined merges on the same keys: every distinct key once, in order, with
        /// its values in source order (groups, consumed or not) or summed (combined).
        #[test]
        fn groups_and_combine_on_prefix_edge_cases(sources in sources_strategy(), consume in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let reader = open_sources(dir.path(), &sources, 64);
            let mut expected: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
            for (key, value) in reference(&sources) {
                expected.entry(key).or_default().push(value);
            }

            let mut merge = merge_of(&reader);
            let mut groups = Vec::new();
            while let Some((key, group)) = merge.next_group() {
                let values: Vec<u64> =
                    if consume { group.map(|v| v.to_native()).collect() } else { Vec::new() };
                groups.push((key.to_vec(), values));
            }
            let want: Vec<(Vec<u8>, Vec<u64>)> = expected
                .iter()
                .map(|(k, vs)| (k.clone(), if consume { vs.clone() } else { Vec::new() }))
                .collect();
            prop_assert_eq!(groups, want);

            let mut merge = merge_of(&reader);
            let mut combined = Vec::new();
            while let Some((key, total)) = merge.next_combined(|acc, v| *acc = acc.wrapping_add(v.to_native())) {
                combined.push((key.to_vec(), total));
            }
            let want: Vec<(Vec<u8>, u64)> = expected
                .into_iter()
                .map(|(k, vs)| (k, vs.into_iter().fold(0u64, u64::wrapping_add)))
                .collect();
            prop_assert_eq!(combined, want);
        }
    }

    #[test]
    fn prefixes_follow_key_order() {
        let mut keys: Vec<Vec<u8>> = STEMS.iter().map(|s| s.to_vec()).collect();
        for stem in STEMS {
            for b in TAIL_BYTES {
                let mut key = stem.to_vec();
                key.push(b);
                keys.push(key);
            }
        }
        for a in &keys {
            for b in &keys {
                if a <= b {
                    assert!(key_prefix(a) <= key_prefix(b), "{a:?} <= {b:?}");
                }
                assert_eq!(cmp_keys(a, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
        assert_eq!(key_prefix(b"ab"), key_prefix(b"ab\0"));
        assert_eq!(key_prefix(&[0xFF; 9]), u64::MAX);
    }

    /// `key_prefix` equals the zero-padded big-endian reading of the first 8 bytes, at every
    /// length.
    #[test]
    fn prefix_matches_padded_reading() {
        let bytes: Vec<u8> = (0u8..12).map(|i| i.wrapping_mul(0x9D) ^ 0xA5).collect();
        for start in 0..3 {
            for len in 0..=9 {
                let key = &bytes[start..start + len];
                let mut padded = [0u8; 8];
                let n = len.min(8);
                padded[..n].copy_from_slice(&key[..n]);
                assert_eq!(key_prefix(key), u64::from_be_bytes(padded), "{key:?}");
            }
        }
    }

    #[test]
    fn empty_merge_yields_nothing() {
        let mut merge = Merge::<u64>::new(Vec::new());
        assert_eq!(merge.fan_in(), 0);
        assert_eq!(merge.peek_key(), None);
        assert!(merge.next_group().is_none());
        assert!(merge.next_combined(|_, _| ()).is_none());
        assert_eq!(merge.next_record(), None);
    }
}
