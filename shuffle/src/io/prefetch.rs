//! Software prefetch, for reads whose addresses the hardware cannot predict: the record sort's
//! output gather over byte slices (every record comes from a random place in the input), and
//! the run reader's column streams in a wide merge (`PartitionIter::prefetch_ahead`).
//!
//! Safe Rust has no prefetch instruction, and callers such as the engine forbid `unsafe`;
//! [`prefetch_line`] is the crate's one audited wrapper of it, and the slice functions are
//! built on it. A prefetch is only a hint, so all are safe for any arguments: an offset past
//! the end of a slice is clamped to its last byte.

/// Asks the CPU to bring the cache line holding `p` into the L1 cache, without waiting for it.
/// Any address is fine, even an unmapped one (the hint is dropped): `p` is never dereferenced.
/// Does nothing on targets other than x86_64.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the target's
        // baseline features). A prefetch is a hint: it never faults, whatever the address (even
        // unmapped), and reads or writes nothing the program can observe.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to bring the cache line holding `data[offset]` into the L1 cache, without
/// waiting for it. `offset` past the end asks for the slice's last byte; an empty slice asks
/// for nothing. Does nothing on targets other than x86_64.
#[inline(always)]
pub fn prefetch_read(data: &[u8], offset: usize) {
    if let Some(last) = data.len().checked_sub(1) {
        prefetch_line(data.as_ptr().wrapping_add(offset.min(last)));
    }
}

/// Asks the CPU to bring the cache line holding `data[index]` into the L1 cache, without
/// waiting for it: for a gather through an index array (a sorted permutation of records).
/// `index` past the end asks for the last element; an empty slice asks for nothing. Does
/// nothing on targets other than x86_64.
#[inline(always)]
pub fn prefetch_index<T>(data: &[T], index: usize) {
    if let Some(last) = data.len().checked_sub(1)
        && size_of::<T>() > 0
    {
        prefetch_line(data.as_ptr().wrapping_add(index.min(last)).cast());
    }
}

/// [`prefetch_read`] of every cache line of `data[offset..offset + len]` (clamped to the
/// slice). Meant for short ranges (a record): it issues one prefetch per 64 bytes.
#[inline(always)]
pub fn prefetch_range(data: &[u8], offset: usize, len: usize) {
    range_lines(offset, len, |at| prefetch_read(data, at));
}

/// Calls `f` with offsets 64 bytes apart from `offset` on, then with the range's last byte
/// (which the stride may have stepped over): one offset in every cache line of
/// `offset..offset + len`, whatever the alignment of the bytes. Nothing for an empty range;
/// saturates at `usize::MAX`.
#[inline(always)]
fn range_lines(offset: usize, len: usize, mut f: impl FnMut(usize)) {
    if len == 0 {
        return;
    }
    let last = offset.saturating_add(len - 1);
    let mut at = offset;
    while at < last {
        f(at);
        at = at.saturating_add(64);
    }
    f(last);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_arguments_are_fine() {
        // Nothing to observe but the absence of a panic (or an overflow in debug builds).
        let data = vec![7u8; 300];
        prefetch_read(&data, 0);
        prefetch_read(&data, 299);
        prefetch_read(&data, usize::MAX);
        prefetch_read(&[], 5);
        prefetch_range(&data, 250, 100);
        prefetch_range(&data, usize::MAX - 3, usize::MAX);
        prefetch_range(&[], 0, 10);
        prefetch_range(&data, 10, 0);
        prefetch_index(&[1u32, 2, 3], 7);
        prefetch_index::<u64>(&[], 0);
        prefetch_index(&[(); 4], 1);
    }

    /// A range's prefetches touch exactly the cache lines its bytes occupy, each about once,
    /// at every alignment of the bytes.
    #[test]
    fn a_range_requests_each_of_its_lines() {
        for offset in [0usize, 1, 63, 64, 65, 1000] {
            for len in 0..300 {
                let mut requested = Vec::new();
                range_lines(offset, len, |at| requested.push(at));
                assert!(requested.iter().all(|at| (offset..offset + len).contains(at)), "{offset}+{len}");
                for align in 0..64 {
                    let line = |at: usize| (align + at) / 64;
                    let mut got: Vec<usize> = requested.iter().map(|&at| line(at)).collect();
                    got.dedup();
                    let want: Vec<usize> =
                        if len == 0 { Vec::new() } else { (line(offset)..=line(offset + len - 1)).collect() };
                    assert_eq!(got, want, "offset {offset}, len {len}, alignment {align}");
                    assert!(requested.len() <= want.len() + 1, "offset {offset}, len {len}: {requested:?}");
                }
            }
        }
        let mut requested = Vec::new();
        range_lines(usize::MAX - 3, usize::MAX, |at| requested.push(at));
        assert_eq!(requested, [usize::MAX - 3, usize::MAX]);
    }
}
