//! Map-side buffers: one per worker thread, spilled as a sorted run when full.
//!
//! With a combiner the buffer is a hash table (ahash, fixed seeds) from key to value that
//! folds values as they are emitted ([`CombineBuffer`]); without one it is an append-only
//! arena plus an index ([`AppendBuffer`]). Keys live in one byte arena either way. Memory is
//! counted by capacity, growth is checked *before* it happens, and buffers keep their
//! allocations across spills, so a thread never holds more than its share of the budget and
//! never allocates per spill.

use hashbrown::HashTable;
use spillway_shuffle::io::{prefetch_index, prefetch_range};
use spillway_shuffle::merge::key_prefix;
use spillway_shuffle::{Partitioner, Value};

use spillway_shuffle::RunInfo;

use crate::error::Result;
use crate::job::{Job, MapBuffer};
use crate::spill::Spiller;

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

fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x5157_11aa,
        0x9e37_79b9_7f4a_7c15,
        0xbf58_476d_1ce4_e5b9,
        0x94d0_49bb_1331_11eb,
    )
}

/// A slot of the combining table: the key's inline signature, where its bytes are in the
/// arena, and the value itself.
///
/// For keys of at most 16 bytes `(w0, w1, len)` *is* the key (see [`signature`]), so finding
/// a key compares three integers and touches neither the arena nor `memcmp`; longer keys
/// compare their bytes in the arena after the signature matches.
#[derive(Clone)]
struct Slot<V> {
    w0: u64,
    w1: u64,
    off: u32,
    len: u32,
    value: V,
}

/// A slot at spill time: its partition and its key's [`key_prefix`], the sort's first keys.
type Sorted<V> = (u32, u64, Slot<V>);

/// Keys up to this long are compared by signature alone.
pub(crate) const INLINE_KEY: usize = 16;

#[inline]
fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
fn read_u32(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")))
}

/// Two words that, together with the length, identify a key of at most 16 bytes exactly
/// (overlapping loads cover every byte); for longer keys, the first and last 8 bytes.
#[inline]
pub(crate) fn signature(key: &[u8]) -> (u64, u64) {
    let n = key.len();
    match n {
        0 => (0, 0),
        1..=3 => (u64::from(key[0]) | u64::from(key[n / 2]) << 8 | u64::from(key[n - 1]) << 16, 0),
        4..=8 => (read_u32(key, 0) | read_u32(key, n - 4) << 32, 0),
        _ => (read_u64(key, 0), read_u64(key, n - 8)),
    }
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The table hash: a folded multiply of the signature (mixing in the length), or ahash over
/// the bytes for long keys.
#[inline]
pub(crate) fn table_hash(state: &ahash::RandomState, key: &[u8], w0: u64, w1: u64) -> u64 {
    if key.len() > INLINE_KEY {
        return state.hash_one(key);
    }
    let h = fold(w0 ^ 0x243f_6a88_85a3_08d3, w1 ^ 0x1319_8a2e_0370_7344 ^ (key.len() as u64) << 56);
    fold(h ^ 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89)
}

/// The combining buffer: key -> value, folding with the job's combiner as pairs are emitted.
pub(crate) struct CombineBuffer<'j, J: Job> {
    job: &'j J,
    spilled: Spilled<'j>,
    partitioner: &'j dyn Partitioner,
    hasher: ahash::RandomState,
    table: HashTable<Slot<J::Value>>,
    arena: Vec<u8>,
    /// Reused at every spill: the slots with their partitions and key prefixes, sorted.
    sorted: Vec<Sorted<J::Value>>,
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
            hasher: hasher(),
            table: HashTable::new(),
            arena: Vec::new(),
            sorted: Vec::new(),
            limit,
            error: None,
        }
    }

    /// Would adding a new key of `key_len` bytes grow an allocation past the limit? Capacity
    /// that is already allocated (kept across spills) is free to use.
    fn must_spill_before_new(&self, key_len: usize) -> bool {
        if self.table.is_empty() {
            return false;
        }
        let mut growth = 0;
        if self.table.len() == self.table.capacity() {
            let slots = self.table.capacity().max(4);
            growth += slots * (size_of::<Slot<J::Value>>() + 1);
            growth += (2 * slots).saturating_sub(self.sorted.capacity()) * size_of::<Sorted<J::Value>>();
        }
        if self.arena.len() + key_len > self.arena.capacity() {
            growth += grown(&self.arena, key_len) - self.arena.capacity();
        }
        (growth > 0 && self.allocated() + growth > self.limit)
            || self.arena.len() + key_len > u32::MAX as usize
    }
}

impl<J: Job> MapBuffer<J::Value> for CombineBuffer<'_, J> {
    #[inline]
    fn insert(&mut self, key: &[u8], value: J::Value) {
        let (w0, w1) = signature(key);
        let hash = table_hash(&self.hasher, key, w0, w1);
        let len = key.len() as u32;
        let arena = &self.arena;
        let found = self.table.find_mut(hash, |s| {
            s.len == len
                && s.w0 == w0
                && s.w1 == w1
                && (key.len() <= INLINE_KEY || &arena[s.off as usize..s.off as usize + key.len()] == key)
        });
        if let Some(slot) = found {
            self.job.combine(&mut slot.value, value);
            return;
        }
        if self.must_spill_before_new(key.len())
            && let Err(e) = self.spill()
        {
            self.error.get_or_insert(e);
            return;
        }
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        let (hasher, arena) = (&self.hasher, &self.arena);
        self.table.insert_unique(hash, Slot { w0, w1, off, len, value }, |s| {
            let k = &arena[s.off as usize..(s.off + s.len) as usize];
            table_hash(hasher, k, s.w0, s.w1)
        });
    }
}

impl<J: Job> SpillBuffer<J::Value> for CombineBuffer<'_, J> {
    fn spill(&mut self) -> Result<()> {
        if self.table.is_empty() {
            return Ok(());
        }
        let arena = &self.arena;
        let key = |s: &Slot<J::Value>| &arena[s.off as usize..(s.off + s.len) as usize];
        let partitioner = self.partitioner;
        self.sorted.clear();
        self.sorted.extend(self.table.drain().map(|s| {
            let k = key(&s);
            (partitioner.partition(k), key_prefix(k), s)
        }));
        // Integers first; the key bytes only where partition and prefix are equal.
        self.sorted
            .sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| key(&a.2).cmp(key(&b.2))));
        let result = self.spilled.write(self.sorted.iter().map(|(p, _, s)| (*p, key(s), &s.value)));
        self.sorted.clear();
        self.arena.clear();
        result
    }

    fn take_runs(&mut self) -> Vec<RunInfo> {
        std::mem::take(&mut self.spilled.runs)
    }

    fn discard(&mut self) {
        self.table.clear();
        self.arena.clear();
    }

    fn take_error(&mut self) -> Option<crate::Error> {
        self.error.take()
    }

    fn allocated(&self) -> usize {
        self.table.capacity() * (size_of::<Slot<J::Value>>() + 1)
            + self.sorted.capacity() * size_of::<Sorted<J::Value>>()
            + self.arena.capacity()
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
    use proptest::prelude::*;

    use super::*;

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

    /// Equal signatures (with equal lengths) mean equal keys, for every key up to 16 bytes.
    #[test]
    fn signatures_identify_short_keys() {
        let mut seen = std::collections::HashMap::new();
        let alphabet = [0u8, 1, b'a', b'b', 0xff];
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=4 {
            let mut next = Vec::new();
            for k in keys.iter().filter(|k| k.len() == len - 1) {
                for &b in &alphabet {
                    let mut k = k.clone();
                    k.push(b);
                    next.push(k);
                }
            }
            keys.extend(next);
        }
        // Longer keys: vary each position of a 5..16-byte key.
        for len in 5..=16usize {
            for pos in 0..len {
                for &b in &alphabet {
                    let mut k = vec![b'x'; len];
                    k[pos] = b;
                    keys.push(k);
                }
            }
        }
        for k in keys {
            let sig = (signature(&k), k.len());
            if let Some(other) = seen.insert(sig, k.clone()) {
                assert_eq!(other, k, "two keys share a signature");
            }
        }
    }
}
