//! Map-side buffers: one per worker thread, spilled as a sorted run when full.
//!
//! With a combiner the buffer is a hash table (ahash, fixed seeds) from key to value that
//! folds values as they are emitted ([`CombineBuffer`]); without one it is an append-only
//! arena plus an index ([`AppendBuffer`]). Keys live in one byte arena either way. Memory is
//! counted by capacity, growth is checked *before* it happens, and buffers keep their
//! allocations across spills, so a thread never holds more than its share of the budget and
//! never allocates per spill.

use hashbrown::HashTable;
use spillway_shuffle::{Partitioner, Value};

use crate::error::Result;
use crate::job::Job;
use crate::spill::Spiller;

/// What a map call emits into.
pub(crate) trait MapBuffer<V: Value> {
    /// Adds one pair, spilling first when the pair would not fit.
    fn insert(&mut self, key: &[u8], value: V);
}

/// Operations the worker needs besides inserting.
pub(crate) trait SpillBuffer<V: Value>: MapBuffer<V> {
    /// Writes everything buffered as one run (if anything is buffered).
    fn spill(&mut self) -> Result<()>;
    /// The first spill error, if any (emits after it are dropped).
    fn take_error(&mut self) -> Option<crate::Error>;
    /// Bytes currently allocated.
    fn allocated(&self) -> usize;
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

struct Entry<V> {
    hash: u64,
    off: u32,
    len: u32,
    value: V,
}

/// The combining buffer: key -> value, folding with the job's combiner.
pub(crate) struct CombineBuffer<'j, J: Job> {
    job: &'j J,
    spiller: &'j Spiller<'j>,
    partitioner: &'j dyn Partitioner,
    hasher: ahash::RandomState,
    table: HashTable<u32>,
    entries: Vec<Entry<J::Value>>,
    arena: Vec<u8>,
    order: Vec<(u32, u32)>,
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
            spiller,
            partitioner,
            hasher: hasher(),
            table: HashTable::new(),
            entries: Vec::new(),
            arena: Vec::new(),
            order: Vec::new(),
            limit,
            error: None,
        }
    }

    /// Would adding a new key of `key_len` bytes grow an allocation past the limit? Capacity
    /// that is already allocated (kept across spills) is free to use.
    fn must_spill_before_new(&self, key_len: usize) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let mut growth = 0;
        if self.entries.len() == self.entries.capacity() {
            growth += grown(&self.entries, 1) - self.entries.capacity() * size_of::<Entry<J::Value>>();
            growth += grown(&self.order, 1).saturating_sub(self.order.capacity() * size_of::<(u32, u32)>());
        }
        if self.arena.len() + key_len > self.arena.capacity() {
            growth += grown(&self.arena, key_len) - self.arena.capacity();
        }
        if self.table.len() == self.table.capacity() {
            growth += self.table.capacity().max(4) * (size_of::<u32>() + 1);
        }
        (growth > 0 && self.allocated() + growth > self.limit)
            || self.arena.len() + key_len > u32::MAX as usize
    }
}

impl<J: Job> MapBuffer<J::Value> for CombineBuffer<'_, J> {
    #[inline]
    fn insert(&mut self, key: &[u8], value: J::Value) {
        let hash = self.hasher.hash_one(key);
        let (entries, arena) = (&self.entries, &self.arena);
        let found = self.table.find(hash, |&i| {
            let e = &entries[i as usize];
            e.hash == hash && &arena[e.off as usize..(e.off + e.len) as usize] == key
        });
        if let Some(&i) = found {
            self.job.combine(&mut self.entries[i as usize].value, value);
            return;
        }
        if self.must_spill_before_new(key.len()) {
            if let Err(e) = self.spill() {
                self.error.get_or_insert(e);
                return;
            }
        }
        let index = self.entries.len() as u32;
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(key);
        self.entries.push(Entry { hash, off, len: key.len() as u32, value });
        let entries = &self.entries;
        self.table.insert_unique(hash, index, |&i| entries[i as usize].hash);
    }
}

impl<J: Job> SpillBuffer<J::Value> for CombineBuffer<'_, J> {
    fn spill(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let arena = &self.arena;
        let key = |e: &Entry<J::Value>| &arena[e.off as usize..(e.off + e.len) as usize];
        self.order.clear();
        self.order.extend(
            self.entries.iter().enumerate().map(|(i, e)| (self.partitioner.partition(key(e)), i as u32)),
        );
        let entries = &self.entries;
        self.order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| key(&entries[a.1 as usize]).cmp(key(&entries[b.1 as usize])))
        });
        let result = self.spiller.write_run(
            self.order.iter().map(|&(p, i)| (p, key(&entries[i as usize]), &entries[i as usize].value)),
        );
        self.table.clear();
        self.entries.clear();
        self.arena.clear();
        result
    }

    fn take_error(&mut self) -> Option<crate::Error> {
        self.error.take()
    }

    fn allocated(&self) -> usize {
        self.entries.capacity() * size_of::<Entry<J::Value>>()
            + self.order.capacity() * size_of::<(u32, u32)>()
            + self.arena.capacity()
            + self.table.capacity() * (size_of::<u32>() + 1)
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
    spiller: &'j Spiller<'j>,
    partitioner: &'j dyn Partitioner,
    recs: Vec<Rec<V>>,
    arena: Vec<u8>,
    limit: usize,
    error: Option<crate::Error>,
}

impl<'j, V: Value> AppendBuffer<'j, V> {
    pub(crate) fn new(spiller: &'j Spiller<'j>, partitioner: &'j dyn Partitioner, limit: usize) -> Self {
        AppendBuffer { spiller, partitioner, recs: Vec::new(), arena: Vec::new(), limit, error: None }
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
            if (growth > 0 && self.allocated() + growth > self.limit)
                || self.arena.len() + key.len() > u32::MAX as usize
            {
                if let Err(e) = self.spill() {
                    self.error.get_or_insert(e);
                    return;
                }
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
        let result = self.spiller.write_run(self.recs.iter().map(|r| (r.partition, key(r), &r.value)));
        self.recs.clear();
        self.arena.clear();
        result
    }

    fn take_error(&mut self) -> Option<crate::Error> {
        self.error.take()
    }

    fn allocated(&self) -> usize {
        self.recs.capacity() * size_of::<Rec<V>>() + self.arena.capacity()
    }
}
