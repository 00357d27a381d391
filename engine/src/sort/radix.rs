//! Entries and the in-place radix sort: each record as one `u128` (its leading key bytes
//! above its index), the MSD radix sort of entries, and the cutting of a chunk's entries
//! into sort tasks.

use std::cmp::Ordering as CmpOrdering;
use std::ops::Range;

use super::records::Records;

/// Leading record bytes held in an entry.
pub(super) const ENTRY_KEY_BYTES: usize = 10;
/// Bits of an entry that hold the record index.
const INDEX_BITS: u32 = 48;
pub(super) const INDEX_MASK: u128 = (1 << INDEX_BITS) - 1;
/// Buckets up to this many entries are comparison-sorted.
const SMALL_SORT: usize = 48;

/// The entry key bits of a record: its first 10 bytes (zero-padded), big-endian, above the
/// index bits.
#[inline(always)]
pub(super) fn entry_key(record: &[u8]) -> u128 {
    let mut padded = [0u8; ENTRY_KEY_BYTES];
    let head = match record.first_chunk::<ENTRY_KEY_BYTES>() {
        Some(head) => head,
        None => {
            padded[..record.len()].copy_from_slice(record);
            &padded
        }
    };
    let hi = u64::from_be_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    let lo = u16::from_be_bytes([head[8], head[9]]);
    (u128::from(hi) << 64) | (u128::from(lo) << INDEX_BITS)
}

#[inline(always)]
pub(super) fn index(entry: u128) -> usize {
    (entry & INDEX_MASK) as usize
}

/// Byte `byte` (< 10) of an entry's key.
#[inline(always)]
fn digit(entry: u128, byte: usize) -> usize {
    (entry >> (120 - 8 * byte)) as u8 as usize
}

/// Compares entries as their records compare.
pub(super) struct Order<'r, 'a> {
    pub(super) records: &'r Records<'a>,
    /// Record bytes held in an entry: the rest is compared in place.
    pub(super) held: usize,
}

impl Order<'_, '_> {
    #[inline(never)]
    fn cmp_rest(&self, a: u128, b: u128) -> CmpOrdering {
        let (ra, rb) = (self.records.get(index(a)), self.records.get(index(b)));
        ra[self.held..].cmp(&rb[self.held..])
    }

    /// Compares an entry with a whole record.
    pub(super) fn cmp_record(&self, a: u128, record: &[u8]) -> CmpOrdering {
        self.records.get(index(a)).cmp(record)
    }
}

/// Sorts `v`, whose entries agree on their first `byte` key bytes: an MSD radix sort on the
/// following key bytes, each level a counting scatter into `scratch` (grown to `v.len()` and
/// reused) and a copy back, with [`small_sort`] for small groups.
pub(super) fn sort_entries(v: &mut [u128], byte: usize, order: &Order<'_, '_>, scratch: &mut Vec<u128>) {
    let n = v.len();
    if byte >= order.held {
        // Every entry holds the same key bytes: only the rest of the records can tell.
        v.sort_unstable_by(|&a, &b| order.cmp_rest(a, b));
        return;
    }
    if n <= SMALL_SORT {
        return small_sort(v, order);
    }
    let mut counts = [0usize; 256];
    for &e in v.iter() {
        counts[digit(e, byte)] += 1;
    }
    if counts[digit(v[0], byte)] == n {
        return sort_entries(v, byte + 1, order, scratch);
    }
    let mut next = [0usize; 256];
    let mut sum = 0;
    for (slot, &c) in next.iter_mut().zip(&counts) {
        *slot = sum;
        sum += c;
    }
    if scratch.len() < n {
        scratch.resize(n, 0);
    }
    let out = &mut scratch[..n];
    for &e in v.iter() {
        let d = digit(e, byte);
        out[next[d]] = e;
        next[d] += 1;
    }
    v.copy_from_slice(out);
    let mut start = 0;
    for &c in &counts {
        if c > 1 {
            sort_entries(&mut v[start..start + c], byte + 1, order, scratch);
        }
        start += c;
    }
}

/// Sorts a few entries: as plain integers (by key bits, then index, with no call per
/// comparison), then every run of entries with equal key bits by the rest of their records.
fn small_sort(v: &mut [u128], order: &Order<'_, '_>) {
    v.sort_unstable();
    let mut i = 0;
    while i + 1 < v.len() {
        let key = v[i] >> INDEX_BITS;
        let mut j = i + 1;
        while j < v.len() && v[j] >> INDEX_BITS == key {
            j += 1;
        }
        if j - i > 1 {
            v[i..j].sort_unstable_by(|&a, &b| order.cmp_rest(a, b));
        }
        i = j;
    }
}

/// Permutes `v` in place so that its entries are grouped by digit `byte`, in digit order
/// (American flag sort); returns the 257 group bounds, or `None` when every entry has the
/// same digit (nothing moved).
fn partition_by_digit(v: &mut [u128], byte: usize) -> Option<[usize; 257]> {
    let mut counts = [0usize; 256];
    for &e in v.iter() {
        counts[digit(e, byte)] += 1;
    }
    if counts[digit(v[0], byte)] == v.len() {
        return None;
    }
    let mut bounds = [0usize; 257];
    for d in 0..256 {
        bounds[d + 1] = bounds[d] + counts[d];
    }
    let mut heads = [0usize; 256];
    heads.copy_from_slice(&bounds[..256]);
    for d in 0..256 {
        let end = bounds[d + 1];
        while heads[d] < end {
            let mut e = v[heads[d]];
            let mut t = digit(e, byte);
            while t != d {
                std::mem::swap(&mut e, &mut v[heads[t]]);
                heads[t] += 1;
                t = digit(e, byte);
            }
            v[heads[d]] = e;
            heads[d] += 1;
        }
    }
    Some(bounds)
}

/// Equality of keys, for counting duplicates.
#[derive(Clone, Copy)]
pub(super) struct KeyEq {
    /// Mask of the key bits held in an entry.
    mask: u128,
    /// Key bytes beyond the entry's (compared in place).
    rest: (usize, usize),
}

impl KeyEq {
    pub(super) fn new(key_size: usize) -> Self {
        let held = key_size.min(ENTRY_KEY_BYTES);
        KeyEq { mask: !0u128 << (128 - 8 * held), rest: (held, key_size.max(held)) }
    }

    #[inline]
    pub(super) fn entries_equal(&self, a: u128, b: u128, records: &Records<'_>) -> bool {
        (a ^ b) & self.mask == 0
            && (self.rest.0 == self.rest.1 || {
                let (ra, rb) = (records.get(index(a)), records.get(index(b)));
                ra[self.rest.0..self.rest.1] == rb[self.rest.0..self.rest.1]
            })
    }
}

/// Adds `range` (entries agreeing on `byte` key bytes) as sort tasks, split on its next
/// bytes while it holds more than `threshold` entries.
pub(super) fn split_task(
    entries: &mut [u128],
    range: Range<usize>,
    byte: usize,
    threshold: usize,
    order: &Order<'_, '_>,
    tasks: &mut Vec<(Range<usize>, usize)>,
) {
    if range.is_empty() {
        return;
    }
    if range.len() <= threshold || byte >= order.held {
        tasks.push((range, byte));
        return;
    }
    match partition_by_digit(&mut entries[range.clone()], byte) {
        None => split_task(entries, range, byte + 1, threshold, order, tasks),
        Some(bounds) => {
            for d in 0..256 {
                let sub = range.start + bounds[d]..range.start + bounds[d + 1];
                split_task(entries, sub, byte + 1, threshold, order, tasks);
            }
        }
    }
}

/// Cuts `entries` into the (contiguous, ordered) task ranges.
pub(super) fn task_slices<'e>(
    mut entries: &'e mut [u128],
    tasks: &[(Range<usize>, usize)],
) -> Vec<&'e mut [u128]> {
    let mut at = 0;
    let mut out = Vec::with_capacity(tasks.len());
    for (range, _) in tasks {
        let (_, rest) = std::mem::take(&mut entries).split_at_mut(range.start - at);
        let (mine, rest) = rest.split_at_mut(range.len());
        out.push(mine);
        entries = rest;
        at = range.end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Inputs;
    use crate::sort::tests::{random_records, reference};

    #[test]
    fn radix_sort_matches_comparison_sort() {
        for (size, alphabet, n) in [
            (100, 255, 5000),
            (100, 2, 5000),
            (12, 2, 3000),
            (10, 3, 3000),
            (4, 2, 2000),
            (16, 200, 4000),
            (1, 255, 999),
        ] {
            let data = random_records(size as u64, n, size, alphabet);
            let inputs_dir = tempfile::tempdir().unwrap();
            let p = inputs_dir.path().join("in");
            std::fs::write(&p, &data).unwrap();
            let inputs = Inputs::new([&p]).unwrap();
            let records = Records::new(&inputs, size).unwrap();
            let order = Order { records: &records, held: size.min(ENTRY_KEY_BYTES) };
            let mut entries: Vec<u128> = (0..n).map(|i| entry_key(records.get(i)) | i as u128).collect();
            sort_entries(&mut entries, 0, &order, &mut Vec::new());
            let got: Vec<u8> = entries.iter().flat_map(|&e| records.get(index(e)).to_vec()).collect();
            assert_eq!(got, reference(&data, size), "size {size} alphabet {alphabet}");
        }
    }
}
