//! Map-side buffers: one per worker thread, spilled as a sorted run when full.
//!
//! With a combiner the buffer is a hash table (ahash, fixed seeds) from key to value that
//! folds values as they are emitted ([`CombineBuffer`]); without one it is an append-only
//! arena plus an index ([`AppendBuffer`]). Keys live in one byte arena either way. Memory is
//! counted by capacity, growth is checked *before* it happens, and buffers keep their
//! allocations across spills, so a thread never holds more than its share of the budget and
//! never allocates per spill.

use hashbrown::HashTable;
use spillway_shuffle::merge::key_prefix;
use spillway_shuffle::{Partitioner, Value};

use spillway_shuffle::RunInfo;

use crate::error::Result;
use crate::job::{Combining, Job, MapBuffer};
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
const INLINE_KEY: usize = 16;

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
fn signature(key: &[u8]) -> (u64, u64) {
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
fn table_hash(state: &ahash::RandomState, key: &[u8], w0: u64, w1: u64) -> u64 {
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

struct Rec<V> {
    partition: u32,
    off: u32,
    len: u32,
    value: V,
}

/// The append buffer: every pair kept, sorted by (partition, key) at spill time.
pub(crate) struct AppendBuffer<'j, V: Value> {
    spilled: Spilled<'j>,
    partitioner: &'j dyn Partitioner,
    recs: Vec<Rec<V>>,
    arena: Vec<u8>,
    limit: usize,
    error: Option<crate::Error>,
}

impl<'j, V: Value> AppendBuffer<'j, V> {
    pub(crate) fn new(spiller: &'j Spiller<'j>, partitioner: &'j dyn Partitioner, limit: usize) -> Self {
        AppendBuffer {
            spilled: Spilled { spiller, runs: Vec::new() },
            partitioner,
            recs: Vec::new(),
            arena: Vec::new(),
            limit,
            error: None,
        }
    }
}

impl<V: Value> MapBuffer<V> for AppendBuffer<'_, V> {
    #[inline]
    fn insert(&mut self, key: &[u8], value: V) {
        if !self.recs.is_empty() {
            // Only growth counts: capacity kept from before the last spill is free to use.
            let mut growth = 0;
            if self.recs.len() == self.recs.capacity() {
                growth += grown(&self.recs, 1) - self.recs.capacity() * size_of::<Rec<V>>();
            }
            if self.arena.len() + key.len() > self.arena.capacity() {
                growth += grown(&self.arena, key.len()) - self.arena.capacity();
            }
            if ((growth > 0 && self.allocated() + growth > self.limit)
                || self.arena.len() + key.len() > u32::MAX as usize)
                && let Err(e) = self.spill()
            {
                self.error.get_or_insert(e);
                return;
            }
        }
        let partition = self.partitioner.partition(key);
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        self.recs.push(Rec { partition, off, len: key.len() as u32, value });
    }
}

impl<V: Value> SpillBuffer<V> for AppendBuffer<'_, V> {
    fn spill(&mut self) -> Result<()> {
        if self.recs.is_empty() {
            return Ok(());
        }
        let arena = &self.arena;
        let key = |r: &Rec<V>| &arena[r.off as usize..(r.off + r.len) as usize];
        // Stable: equal keys keep emit order.
        self.recs.sort_by(|a, b| a.partition.cmp(&b.partition).then_with(|| key(a).cmp(key(b))));
        let result = self.spilled.write(self.recs.iter().map(|r| (r.partition, key(r), &r.value)));
        self.recs.clear();
        self.arena.clear();
        result
    }

    fn take_runs(&mut self) -> Vec<RunInfo> {
        std::mem::take(&mut self.spilled.runs)
    }

    fn discard(&mut self) {
        self.recs.clear();
        self.arena.clear();
    }

    fn take_error(&mut self) -> Option<crate::Error> {
        self.error.take()
    }

    fn allocated(&self) -> usize {
        self.recs.capacity() * size_of::<Rec<V>>() + self.arena.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
