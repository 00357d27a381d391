//! k-way merging of sorted runs, and planning merges under the open-run bound F.
//!
//! [`Merge`] is a loser tree over up to F partition iterators: it yields records in key order
//! (ties in input order, so merges are deterministic), groups equal keys
//! ([`Merge::next_group`]) or folds them with an associative combine function
//! ([`Merge::next_combined`]). [`merge_runs`] folds whole runs into one run, every partition at
//! once; [`plan_merges`] decides which runs to fold so that no step opens more than F runs. The
//! design is explained in `merge/README.md`.

mod plan;

pub use plan::{MergePlan, MergeStep, plan_merges};

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

/// A loser tree merging sorted partition iterators.
pub struct Merge<'a, V: Value> {
    sources: Vec<PartitionIter<'a, V>>,
    heads: Vec<Option<Record<'a, V>>>,
    /// `tree[0]` is the current winner; `tree[1..k]` hold the loser of each match.
    tree: Vec<usize>,
}

impl<V: Value> std::fmt::Debug for Merge<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge").field("fan_in", &self.sources.len()).finish_non_exhaustive()
    }
}

impl<'a, V: Value> Merge<'a, V> {
    /// Merges `sources`, each sorted by key.
    pub fn new(mut sources: Vec<PartitionIter<'a, V>>) -> Self {
        let heads: Vec<_> = sources.iter_mut().map(Iterator::next).collect();
        let k = sources.len();
        let mut merge = Merge { sources, heads, tree: vec![0; k.max(1)] };
        if k > 0 {
            merge.tree[0] = merge.build(1);
        }
        merge
    }

    /// Number of merged sources.
    pub fn fan_in(&self) -> usize {
        self.sources.len()
    }

    /// Does source `a` come before source `b`? Exhausted sources come last; equal keys go in
    /// source order.
    #[inline]
    fn before(&self, a: usize, b: usize) -> bool {
        match (&self.heads[a], &self.heads[b]) {
            (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => a < b,
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => a < b,
        }
    }

    /// Plays the matches below `node`, storing losers; returns the winner.
    fn build(&mut self, node: usize) -> usize {
        let k = self.sources.len();
        if node >= k {
            return node - k;
        }
        let left = self.build(2 * node);
        let right = self.build(2 * node + 1);
        let (winner, loser) = if self.before(left, right) { (left, right) } else { (right, left) };
        self.tree[node] = loser;
        winner
    }

    /// The key of the next record, without consuming it.
    #[inline]
    pub fn peek_key(&self) -> Option<&'a [u8]> {
        if self.sources.is_empty() {
            return None;
        }
        self.heads[self.tree[0]].map(|(key, _)| key)
    }

    /// Takes the next record in key order.
    #[inline]
    pub fn next_record(&mut self) -> Option<Record<'a, V>> {
        if self.sources.is_empty() {
            return None;
        }
        let winner = self.tree[0];
        let record = self.heads[winner]?;
        self.heads[winner] = self.sources[winner].next();
        // Replay the winner's path to the root.
        let k = self.sources.len();
        let mut node = (winner + k) / 2;
        let mut champion = winner;
        while node > 0 {
            let rival = self.tree[node];
            if self.before(rival, champion) {
                self.tree[node] = champion;
                champion = rival;
            }
            node /= 2;
        }
        self.tree[0] = champion;
        Some(record)
    }

    /// Takes the next key with an iterator over all its values (in source order). Values not
    /// consumed from the group are skipped when the group is dropped.
    pub fn next_group(&mut self) -> Option<(&'a [u8], Group<'_, 'a, V>)> {
        let (key, first) = self.next_record()?;
        Some((key, Group { merge: self, key, first: Some(first) }))
    }

    /// Takes the next key with all its values folded by `combine` (which must be
    /// associative and commutative) into an owned value.
    pub fn next_combined(
        &mut self,
        mut combine: impl FnMut(&mut V, &ArchivedValue<V>),
    ) -> Option<(&'a [u8], V)> {
        let (key, first) = self.next_record()?;
        let mut acc = to_owned::<V>(first);
        while self.peek_key() == Some(key) {
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
        if self.merge.peek_key() == Some(self.key) { self.merge.next_record().map(|(_, v)| v) } else { None }
    }
}

impl<V: Value> Drop for Group<'_, '_, V> {
    fn drop(&mut self) {
        while self.merge.peek_key() == Some(self.key) {
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
