//! The combining buffer's table: open addressing with linear probing, keys of at most 16
//! bytes held inline, and a prefetch of a key's slot well before it is looked up.
//!
//! Word count spends most of its time here, and most of that waiting for cache misses on
//! rare keys: the table of a large corpus is far larger than the caches. So a lookup is
//! split in two. [`Table::locate`] computes a key's signature and hash and asks for its slot's
//! cache line; the caller looks it up ([`Table::find_mut`]) some tens of keys later, when
//! the line has arrived. `hashbrown` does not say where a key's bucket is, hence a table of
//! our own.
//!
//! A slot is `Option<Slot<V>>` without a tag: the key length is stored plus one in a
//! `NonZeroU32`, whose zero is the `None`.

use std::num::NonZeroU32;

use spillway_shuffle::io::{advise_huge_pages, prefetch_index};
use spillway_shuffle::merge::key_prefix;

/// Keys up to this long are compared by signature alone.
pub(crate) const INLINE_KEY: usize = 16;

/// A key's signature and hash, computed once: where to look and what to compare.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located {
    pub(crate) hash: u64,
    pub(crate) w0: u64,
    pub(crate) w1: u64,
    pub(crate) len: u32,
}

/// A key: its signature, where its bytes are in the arena, and its value.
///
/// For keys of at most 16 bytes `(w0, w1, len)` *is* the key (see [`signature`]), so finding
/// a key compares three integers and touches neither the arena nor `memcmp`; longer keys
/// compare their bytes in the arena after the signature matches.
#[derive(Clone)]
pub(crate) struct Slot<V> {
    w0: u64,
    w1: u64,
    pub(crate) off: u32,
    len_plus_one: NonZeroU32,
    pub(crate) value: V,
}

impl<V> Slot<V> {
    pub(crate) fn len(&self) -> u32 {
        self.len_plus_one.get() - 1
    }

    /// The key's bytes in `arena`.
    pub(crate) fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.off as usize..self.off as usize + self.len() as usize]
    }

    #[inline]
    fn holds(&self, at: &Located, key: &[u8], arena: &[u8]) -> bool {
        self.len_plus_one.get() == at.len.wrapping_add(1)
            && self.w0 == at.w0
            && self.w1 == at.w1
            && (at.len as usize <= INLINE_KEY || self.key(arena) == key)
    }
}

/// The table: a power-of-two number of slots, at most 3/4 of them used.
pub(crate) struct Table<V> {
    slots: Vec<Option<Slot<V>>>,
    len: usize,
    hasher: ahash::RandomState,
}

impl<V> Table<V> {
    pub(crate) fn new() -> Self {
        Table { slots: Vec::new(), len: 0, hasher: hasher() }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of one slot.
    pub(crate) const SLOT_BYTES: usize = size_of::<Option<Slot<V>>>();

    /// Bytes allocated.
    pub(crate) fn allocated(&self) -> usize {
        self.slots.capacity() * Self::SLOT_BYTES
    }

    /// The number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The number of slots after the next growth, if one more key takes the table past 3/4
    /// full (else `None`).
    pub(crate) fn growth_for_one_more(&self) -> Option<usize> {
        let slots = self.slots.len();
        ((self.len + 1) * 4 > slots * 3).then(|| (slots * 2).max(16))
    }

    /// True when one more key would take the table past 7/8 full: a table that may not grow
    /// takes keys up to there.
    pub(crate) fn is_full(&self) -> bool {
        (self.len + 1) * 8 > self.slots.len() * 7
    }

    /// The most keys a table of `slots` slots holds.
    pub(crate) fn max_len(slots: usize) -> usize {
        slots / 8 * 7
    }

    /// Signature and hash of `key`, and a prefetch of the cache line of its first probe.
    #[inline]
    pub(crate) fn locate(&self, key: &[u8]) -> Located {
        let (w0, w1) = signature(key);
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        let hash = table_hash(&self.hasher, key, w0, w1);
        let at = Located { hash, w0, w1, len };
        if !self.slots.is_empty() {
            // The slots are only 16-byte aligned, so half of them straddle two cache lines:
            // ask for the line where the next slot starts too (the rest of this one, and
            // where a probe goes next).
            let home = self.home(hash);
            prefetch_index(&self.slots, home);
            prefetch_index(&self.slots, home + 1);
        }
        at
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.slots.len() - 1)
    }

    /// The value of the key located by `at`, or `None` when it is not in the table. `key` is
    /// the key's bytes when it is longer than [`INLINE_KEY`] (a shorter key is its signature,
    /// and `key` is not read).
    #[inline]
    pub(crate) fn find_mut(&mut self, at: &Located, key: &[u8], arena: &[u8]) -> Option<&mut V> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(at.hash);
        loop {
            match &self.slots[i] {
                None => return None,
                Some(slot) if slot.holds(at, key, arena) => break,
                Some(_) => i = (i + 1) & mask,
            }
        }
        self.slots[i].as_mut().map(|slot| &mut slot.value)
    }

    /// Adds a key that is not in the table, its bytes at `off` in `arena`. The caller made
    /// room first ([`Table::growth_for_one_more`], [`Table::grow`]).
    pub(crate) fn insert_new(&mut self, at: &Located, off: u32, value: V) {
        debug_assert!(Self::max_len(self.slots.len()) > self.len, "room was made");
        let mask = self.slots.len() - 1;
        let mut i = self.home(at.hash);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        let len_plus_one = NonZeroU32::new(at.len.wrapping_add(1)).expect("keys are shorter than 4 GiB");
        self.slots[i] = Some(Slot { w0: at.w0, w1: at.w1, off, len_plus_one, value });
        self.len += 1;
    }

    /// Grows to `slots` slots (a power of two), moving every key.
    pub(crate) fn grow(&mut self, slots: usize, arena: &[u8]) {
        debug_assert!(slots.is_power_of_two() && Self::max_len(slots) > self.len);
        let old = std::mem::replace(&mut self.slots, Vec::with_capacity(slots));
        // Probes land on random slots: with 4 KiB pages nearly each one misses the TLB.
        advise_huge_pages(&self.slots);
        self.slots.resize_with(slots, || None);
        let mask = slots - 1;
        for slot in old.into_iter().flatten() {
            let key = slot.key(arena);
            let mut i = table_hash(&self.hasher, key, slot.w0, slot.w1) as usize & mask;
            while self.slots[i].is_some() {
                i = (i + 1) & mask;
            }
            self.slots[i] = Some(slot);
        }
    }

    /// Moves every key to the front, in slot order, and returns them (every one `Some`). The table cannot find
    /// them any more: [`Table::clear`] it next.
    pub(crate) fn compact(&mut self) -> &mut [Option<Slot<V>>] {
        let mut front = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                self.slots.swap(front, i);
                front += 1;
            }
        }
        &mut self.slots[..front]
    }

    /// Every key in (partition, key) order, for a spill, with its partition and its bytes in
    /// `arena`, sorted in place: no order vector beside the table, so that a table under a
    /// memory share holds more keys per byte. Each slot's signature, not needed any more,
    /// becomes its partition and [`key_prefix`], which decide nearly every comparison; equal
    /// ones compare the key bytes (the keys are distinct, so the order is total). The table
    /// cannot find its keys any more: [`Table::clear`] it next.
    pub(crate) fn sort_for_spill<'a>(
        &'a mut self,
        arena: &'a [u8],
        partition: impl Fn(&[u8]) -> u32,
    ) -> impl Iterator<Item = (u32, &'a [u8], &'a V)> {
        let keys = self.compact();
        for slot in keys.iter_mut().flatten() {
            let key = slot.key(arena);
            (slot.w0, slot.w1) = (u64::from(partition(key)), key_prefix(key));
        }
        keys.sort_unstable_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => {
                (a.w0, a.w1).cmp(&(b.w0, b.w1)).then_with(|| a.key(arena).cmp(b.key(arena)))
            }
            _ => unreachable!("compacted keys are all there"),
        });
        keys.iter().flatten().map(move |slot| (slot.w0 as u32, slot.key(arena), &slot.value))
    }

    /// Drops every key; the slots stay allocated.
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
        self.len = 0;
    }
}

#[cfg(test)]
impl<V: Clone> Table<V> {
    fn clone_for_test(&self) -> Self {
        Table { slots: self.slots.clone(), len: self.len, hasher: self.hasher.clone() }
    }
}

fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x5157_11aa,
        0x9e37_79b9_7f4a_7c15,
        0xbf58_476d_1ce4_e5b9,
        0x94d0_49bb_1331_11eb,
    )
}

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

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

    proptest! {
        /// The table counts like a `BTreeMap`, through growth, for short and long keys, keys
        /// with equal signatures' parts and empty keys; draining gives every key once.
        #[test]
        fn counts_like_a_btreemap(
            keys in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff)], 0..24),
                0..400,
            ),
        ) {
            let mut table = Table::<u64>::new();
            let mut arena = Vec::new();
            let mut model = BTreeMap::new();
            for key in &keys {
                *model.entry(key.clone()).or_insert(0) += 1;
                let at = table.locate(key);
                if let Some(count) = table.find_mut(&at, key, &arena) {
                    *count += 1;
                    continue;
                }
                if let Some(slots) = table.growth_for_one_more() {
                    table.grow(slots, &arena);
                }
                let off = arena.len() as u32;
                arena.extend_from_slice(key);
                table.insert_new(&at, off, 1);
            }
            prop_assert_eq!(table.len(), model.len());
            // The spill order is (partition, key), with each key's partition.
            let partition = |k: &[u8]| (k.len() % 3) as u32;
            let mut spilled: Vec<(u32, Vec<u8>, u64)> = Vec::new();
            let mut sorted = table.clone_for_test();
            spilled.extend(sorted.sort_for_spill(&arena, partition).map(|(p, k, &v)| (p, k.to_vec(), v)));
            let mut want: Vec<(u32, Vec<u8>, u64)> =
                model.iter().map(|(k, &v)| (partition(k), k.clone(), v)).collect();
            want.sort();
            prop_assert_eq!(spilled, want);
            let mut drained: Vec<(Vec<u8>, u64)> =
                table.compact().iter().flatten().map(|slot| (slot.key(&arena).to_vec(), slot.value)).collect();
            drained.sort();
            prop_assert_eq!(drained, model.into_iter().collect::<Vec<_>>());
            table.clear();
            prop_assert!(table.is_empty());
        }
    }
}
