//! Map-side buffers: one per worker thread, spilled as a sorted run when full.
//!
//! With a combiner the buffer is a hash table (ahash, fixed seeds) from key to value that
//! folds values as they are emitted ([`CombineBuffer`]); without one it is an append-only
//! arena plus an index ([`AppendBuffer`]). Keys live in one byte arena either way. Memory is
//! counted by capacity, growth is checked *before* it happens, and buffers keep their
//! allocations across spills, so a thread never holds more than its share of the budget and
//! never allocates per spill.

use spillway_shuffle::io::{prefetch_index, prefetch_range};
use spillway_shuffle::merge::key_prefix;
use spillway_shuffle::{Partitioner, Value};

use spillway_shuffle::RunInfo;

use crate::error::Result;
use crate::job::{Combining, Job, MapBuffer};
use crate::spill::Spiller;
use crate::table::{INLINE_KEY, Located, Table};

/// Operations the worker needs besides inserting.
///
/// The runs a buffer spills stay with it until the worker takes them ([`take_runs`]): until
/// then the splits whose records they hold may still be mapped again (a failed attempt drops
/// them; see the engine's map phase).
///
/// [`take_runs`]: SpillBuffer::take_runs
pub(crate) trait SpillBuffer<V: Value>: MapBuffer<V> {
    /// Writes everything buffered as one run (if anything is buffered).
    fn spill(&mut self) -> Result<()>;
    /// The runs spilled since the last call, oldest first.
    fn take_runs(&mut self) -> Vec<RunInfo>;
    /// Drops everything buffered and not yet spilled (allocations are kept).
    fn discard(&mut self);
    /// The first spill error, if any (emits after it are dropped).
    fn take_error(&mut self) -> Option<crate::Error>;
    /// Bytes currently allocated.
    fn allocated(&self) -> usize;
}

/// Where a buffer's spills go, and the runs written since the worker last took them.
struct Spilled<'j> {
    spiller: &'j Spiller<'j>,
    runs: Vec<RunInfo>,
}

impl Spilled<'_> {
    /// Writes records, in (partition, key) order, as a run kept until taken.
    fn write<'a, V: Value>(&mut self, records: impl Iterator<Item = (u32, &'a [u8], &'a V)>) -> Result<()> {
        self.runs.push(self.spiller.write_run(records)?);
        Ok(())
    }
}

/// Bytes a vector will hold after its next growth.
fn grown<T>(v: &Vec<T>, extra: usize) -> usize {
    let want = (v.len() + extra).max(v.capacity() * 2).max(8);
    want * size_of::<T>()
}

/// Keys of at most 16 bytes wait this many further keys between the prefetch of their slot
/// and their lookup (the line arrives meanwhile).
const AHEAD: usize = 32;

/// The combining buffer: key -> value, folding with the job's combiner as pairs are emitted.
///
/// A key of at most 16 bytes is looked up [`AHEAD`] keys after it was emitted (see
/// [`crate::table`]), at the latest when the split ends (`finish_inserts`, where a panic of
/// the combiner still fails the split); longer keys are looked up at once. Either way the values of one key are
/// combined in the order they were emitted, which is all an associative combiner needs.
pub(crate) struct CombineBuffer<'j, J: Job> {
    job: &'j J,
    spilled: Spilled<'j>,
    partitioner: &'j dyn Partitioner,
    table: Table<J::Value>,
    arena: Vec<u8>,
    /// Short keys whose slot was prefetched: a ring, oldest at `next` once it is full.
    ahead: Vec<(Located, J::Value)>,
    next: usize,
    limit: usize,
    error: Option<crate::Error>,
}

impl<'j, J: Job> CombineBuffer<'j, J> {
    pub(crate) fn new(
        job: &'j J,
        spiller: &'j Spiller<'j>,
        partitioner: &'j dyn Partitioner,
        limit: usize,
    ) -> Self {
        CombineBuffer {
            job,
            spilled: Spilled { spiller, runs: Vec::new() },
            partitioner,
            table: Table::new(),
            arena: Vec::new(),
            ahead: Vec::with_capacity(AHEAD),
            next: 0,
            limit,
            error: None,
        }
    }

    /// Would `growth` more bytes take the buffer past its limit? Capacity that is already
    /// allocated (kept across spills) is free to use.
    fn over_limit(&self, growth: usize) -> bool {
        growth > 0 && self.allocated() + growth > self.limit
    }

    /// Makes room for a new key of `key_len` bytes: grows the table while that fits under the
    /// limit; when it does not, fills the table up to 7/8 (longer probes, but more keys per
    /// run) and then spills it.
    fn make_room(&mut self, key_len: usize) -> Result<()> {
        let arena_growth = if self.arena.len() + key_len > self.arena.capacity() {
            grown(&self.arena, key_len) - self.arena.capacity()
        } else {
            0
        };
        if !self.table.is_empty()
            && (self.over_limit(arena_growth) || self.arena.len() + key_len > u32::MAX as usize)
        {
            self.spill_table()?;
        }
        let Some(slots) = self.table.growth_for_one_more() else { return Ok(()) };
        // The new table replaces the old one (freed once its keys moved). A spill sorts the
        // table in place: it needs no memory of its own.
        let growth = (slots - self.table.slots()) * Table::<J::Value>::SLOT_BYTES;
        if self.table.is_empty() || !self.over_limit(growth + arena_growth) {
            self.table.grow(slots, &self.arena);
        } else if self.table.is_full() {
            self.spill_table()?;
        }
        Ok(())
    }

    /// Looks the key located by `at` up and combines `value` into it, or adds it. `long_key`
    /// holds the bytes of a key longer than [`INLINE_KEY`]; a shorter one is its signature.
    #[inline]
    fn insert_located(&mut self, at: &Located, long_key: Option<&[u8]>, value: J::Value) {
        if let Some(acc) = self.table.find_mut(at, long_key.unwrap_or_default(), &self.arena) {
            self.job.combine(acc, value);
            return;
        }
        self.insert_new(at, long_key, value);
    }

    /// Adds a key that is not in the table (spilling the table first if it is full).
    #[inline(never)]
    fn insert_new(&mut self, at: &Located, long_key: Option<&[u8]>, value: J::Value) {
        let short;
        let key = match long_key {
            Some(key) => key,
            None => {
                short = short_key(at);
                &short.0[..short.1]
            }
        };
        if let Err(e) = self.make_room(key.len()) {
            self.error.get_or_insert(e);
            return;
        }
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        self.table.insert_new(at, off, value);
    }

    /// Looks up every key still waiting for its slot, oldest first.
    fn catch_up(&mut self) {
        let mut waiting = std::mem::take(&mut self.ahead);
        waiting.rotate_left(self.next);
        self.next = 0;
        for (at, value) in waiting.drain(..) {
            self.insert_located(&at, None, value);
        }
        self.ahead = waiting;
    }

    /// Writes the table as one run (if it holds anything); keys waiting for their slot stay.
    fn spill_table(&mut self) -> Result<()> {
        if self.table.is_empty() {
            return Ok(());
        }
        let partitioner = self.partitioner;
        let records = self.table.sort_for_spill(&self.arena, |key| partitioner.partition(key));
        let result = self.spilled.write(records);
        self.table.clear();
        self.arena.clear();
        result
    }
}

/// The bytes of a key of at most 16 bytes, from its signature.
fn short_key(at: &Located) -> ([u8; INLINE_KEY], usize) {
    let (w0, w1, n) = (at.w0.to_le_bytes(), at.w1.to_le_bytes(), at.len as usize);
    let mut key = [0u8; INLINE_KEY];
    match n {
        0 => {}
        1..=3 => {
            key[0] = w0[0];
            key[n / 2] = w0[1];
            key[n - 1] = w0[2];
        }
        4..=8 => {
            key[..4].copy_from_slice(&w0[..4]);
            key[n - 4..n].copy_from_slice(&w0[4..]);
        }
        _ => {
            key[..8].copy_from_slice(&w0);
            key[n - 8..n].copy_from_slice(&w1);
        }
    }
    (key, n)
}

impl<J: Job> MapBuffer<J::Value> for CombineBuffer<'_, J> {
    #[inline]
    fn insert(&mut self, key: &[u8], value: J::Value) {
        let at = self.table.locate(key);
        if key.len() > INLINE_KEY {
            self.insert_located(&at, Some(key), value);
        } else if self.ahead.len() < AHEAD {
            self.ahead.push((at, value));
        } else {
            let (old, old_value) = std::mem::replace(&mut self.ahead[self.next], (at, value));
            self.next = (self.next + 1) % AHEAD;
            self.insert_located(&old, None, old_value);
        }
    }

    fn finish_inserts(&mut self) {
        self.catch_up();
    }
}

impl<J: Job> SpillBuffer<J::Value> for CombineBuffer<'_, J> {
    fn spill(&mut self) -> Result<()> {
        self.catch_up();
        self.spill_table()
    }

    fn take_runs(&mut self) -> Vec<RunInfo> {
        std::mem::take(&mut self.spilled.runs)
    }

    fn discard(&mut self) {
        self.ahead.clear();
        self.next = 0;
        self.table.clear();
        self.arena.clear();
    }

    fn take_error(&mut self) -> Option<crate::Error> {
        self.error.take()
    }

    fn allocated(&self) -> usize {
        self.table.allocated()
            + self.arena.capacity()
            + self.ahead.capacity() * size_of::<(Located, J::Value)>()
    }
}

/// Records between the one being written and the one whose bytes the spill's gather asks
/// the CPU for (and twice as far for its bounds).
const GATHER_AHEAD: usize = 16;

/// An [`AppendBuffer`] record's sort entry: its partition, its key's [`key_prefix`] and its
/// index in emit order, from the high bits down. Entries sort as their records must be written
/// except among equal (partition, prefix) pairs, which only the key bytes decide; the index
/// keeps equal keys in emit order.
#[inline(always)]
fn entry(partition: u32, prefix: u64, index: u32) -> u128 {
    u128::from(partition) << 96 | u128::from(prefix) << 32 | u128::from(index)
}

#[inline(always)]
fn entry_index(entry: u128) -> usize {
    entry as u32 as usize
}

/// Sorts entries (see [`entry`]) into (partition, key, emit order): by their integer value,
/// then each group of equal (partition, prefix) stably by the key bytes, which `key` returns
/// for an index. Stable overall: equal keys keep emit order.
fn sort_entries<'k>(entries: &mut [u128], key: impl Fn(usize) -> &'k [u8]) {
    entries.sort_unstable();
    let mut at = 0;
    while at < entries.len() {
        let head = entries[at] >> 32;
        let len = entries[at..].iter().position(|&e| e >> 32 != head).unwrap_or(entries.len() - at);
        if len > 1 {
            // Already in emit order: a stable sort keeps it among equal keys.
            entries[at..at + len].sort_by(|&a, &b| key(entry_index(a)).cmp(key(entry_index(b))));
        }
        at += len;
    }
}

/// The append buffer: every pair kept, sorted by (partition, key) at spill time.
///
/// Columns in emit order: the key bytes (`arena`, key `i` at `bounds[i]..bounds[i + 1]`), the
/// values, and one sort [`entry`] per record, made as the pair is emitted (the key is in
/// cache then). A spill sorts the 16-byte entries, never the keys or values, and gathers the
/// records through them, prefetching ahead.
pub(crate) struct AppendBuffer<'j, V: Value> {
    spilled: Spilled<'j>,
    partitioner: &'j dyn Partitioner,
    entries: Vec<u128>,
    /// Key bounds in `arena`: one more than records, starting with 0.
    bounds: Vec<u32>,
    values: Vec<V>,
    arena: Vec<u8>,
    limit: usize,
    error: Option<crate::Error>,
}

/// Bytes `v` grows by if one more element does not fit.
fn growth_for_one<T>(v: &Vec<T>) -> usize {
    match v.len() == v.capacity() && size_of::<T>() > 0 {
        true => grown(v, 1) - v.capacity() * size_of::<T>(),
        false => 0,
    }
}

impl<'j, V: Value> AppendBuffer<'j, V> {
    pub(crate) fn new(spiller: &'j Spiller<'j>, partitioner: &'j dyn Partitioner, limit: usize) -> Self {
        AppendBuffer {
            spilled: Spilled { spiller, runs: Vec::new() },
            partitioner,
            entries: Vec::new(),
            bounds: vec![0],
            values: Vec::new(),
            arena: Vec::new(),
            limit,
            error: None,
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bounds.truncate(1);
        self.values.clear();
        self.arena.clear();
    }
}

impl<V: Value> MapBuffer<V> for AppendBuffer<'_, V> {
    #[inline]
    fn insert(&mut self, key: &[u8], value: V) {
        if !self.entries.is_empty() {
            // Only growth counts: capacity kept from before the last spill is free to use.
            let mut growth =
                growth_for_one(&self.entries) + growth_for_one(&self.bounds) + growth_for_one(&self.values);
            if self.arena.len() + key.len() > self.arena.capacity() {
                growth += grown(&self.arena, key.len()) - self.arena.capacity();
            }
            if ((growth > 0 && self.allocated() + growth > self.limit)
                || self.arena.len() + key.len() > u32::MAX as usize
                || self.entries.len() >= u32::MAX as usize)
                && let Err(e) = self.spill()
            {
                self.error.get_or_insert(e);
                return;
            }
        }
        let partition = self.partitioner.partition(key);
        self.entries.push(entry(partition, key_prefix(key), self.entries.len() as u32));
        self.arena.extend_from_slice(key);
        self.bounds.push(self.arena.len() as u32);
        self.values.push(value);
    }
}

impl<V: Value> SpillBuffer<V> for AppendBuffer<'_, V> {
    fn spill(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let (arena, bounds, values) = (&self.arena, &self.bounds, &self.values);
        let key = |i: usize| &arena[bounds[i] as usize..bounds[i + 1] as usize];
        sort_entries(&mut self.entries, key);
        let entries = &self.entries;
        let records = entries.iter().enumerate().map(|(at, &e)| {
            // A random gather: ask for the bounds, then the bytes and value, ahead of time.
            if let Some(&ahead) = entries.get(at + 2 * GATHER_AHEAD) {
                prefetch_index(bounds, entry_index(ahead) + 1);
            }
            if let Some(&ahead) = entries.get(at + GATHER_AHEAD) {
                let i = entry_index(ahead);
                let start = bounds[i] as usize;
                prefetch_range(arena, start, bounds[i + 1] as usize - start);
                prefetch_index(values, i);
            }
            let i = entry_index(e);
            ((e >> 96) as u32, key(i), &values[i])
        });
        let result = self.spilled.write(records);
        self.clear();
        result
    }

    fn take_runs(&mut self) -> Vec<RunInfo> {
        std::mem::take(&mut self.spilled.runs)
    }

    fn discard(&mut self) {
        self.clear();
    }

    fn take_error(&mut self) -> Option<crate::Error> {
        self.error.take()
    }

    fn allocated(&self) -> usize {
        self.entries.capacity() * size_of::<u128>()
            + self.bounds.capacity() * size_of::<u32>()
            + self.values.capacity() * size_of::<V>()
            + self.arena.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Keys whose order the 8-byte prefix does not decide: empty keys, keys shorter than 8
    /// bytes, equal 8-byte prefixes, keys that differ only in trailing zero bytes, `0xFF`.
    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        let stem = prop::sample::select(vec![
            Vec::new(),
            b"a".to_vec(),
            b"ab".to_vec(),
            b"abcdefgh".to_vec(),
            vec![0; 8],
            vec![0xFF; 8],
        ]);
        let tail = prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, b'c', 0xFF]), 0..4);
        (stem, tail).prop_map(|(mut stem, tail)| {
            stem.extend(tail);
            stem
        })
    }

    proptest! {
        /// The entry sort equals a stable sort by (partition, key): equal keys keep emit order.
        #[test]
        fn entry_sort_is_a_stable_sort_by_partition_and_key(
            records in prop::collection::vec((0u32..3, key_strategy()), 0..300),
        ) {
            let mut entries: Vec<u128> = records
                .iter()
                .enumerate()
                .map(|(i, (p, k))| entry(*p, key_prefix(k), i as u32))
                .collect();
            sort_entries(&mut entries, |i| &records[i].1);
            let got: Vec<usize> = entries.iter().map(|&e| entry_index(e)).collect();
            let mut want: Vec<usize> = (0..records.len()).collect();
            want.sort_by(|&a, &b| (records[a].0, &records[a].1).cmp(&(records[b].0, &records[b].1)));
            prop_assert_eq!(got, want);
            for &e in &entries {
                prop_assert_eq!((e >> 96) as u32, records[entry_index(e)].0);
            }
        }
    }

    proptest! {
        /// A key waiting for its slot keeps only its signature: its bytes come back from it.
        #[test]
        fn short_keys_come_back_from_their_signature(
            key in proptest::collection::vec(any::<u8>(), 0..=INLINE_KEY),
        ) {
            let at = Table::<u64>::new().locate(&key);
            let (bytes, len) = short_key(&at);
            prop_assert_eq!(&bytes[..len], &key[..]);
        }
    }
}
