//! Sorting one chunk in memory: the first-byte histogram and scatter into buckets, the
//! parallel sort of the tasks, and gathering the sorted records into the output (one file,
//! part files, or a stream).

use std::cmp::Ordering as CmpOrdering;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;

use spillway_shuffle::RangePartitioner;
use spillway_shuffle::io::direct::DirectFile;
use spillway_shuffle::io::{prefetch_range, prefetch_read};

use super::radix::{ENTRY_KEY_BYTES, KeyEq, Order, entry_key, index, sort_entries, split_task, task_slices};
use super::records::Records;
use super::sink::{Dest, DrainOnExit, Piece, SharedWriter, Sink, write_part};
use super::{Plan, RECORD_SIZE};
use crate::error::{Error, Result};
use crate::metrics::Progress;
use crate::output::part_name;
use crate::pool::{self, FirstError};

/// How many records ahead the output gather prefetches.
const GATHER_AHEAD: usize = 16;

/// Sorts `records` (all of them, in memory) into `sink`, using `entries` (one slot per
/// record). Returns the pieces written, in output order.
pub(super) fn sort_chunk(
    plan: &Plan,
    records: &Records<'_>,
    entries: &mut [u128],
    sink: &Sink<'_>,
    progress: &Progress,
) -> Result<Vec<Piece>> {
    let n = records.len();
    debug_assert_eq!(entries.len(), n);
    let threads = plan.threads.min(n.div_ceil(4096)).max(1);
    let order = Order { records, held: plan.size.min(ENTRY_KEY_BYTES) };

    // 1. Histogram of the first byte, per thread.
    let ranges: Vec<Range<usize>> = (0..threads).map(|t| t * n / threads..(t + 1) * n / threads).collect();
    let histograms: Vec<[usize; 256]> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|range| {
                pool::spawn_or_run(scope, "spillway-sort".into(), move || {
                    let mut h = [0usize; 256];
                    records.for_each(range.clone(), |_, r| h[r[0] as usize] += 1);
                    h
                })
            })
            .collect();
        handles.into_iter().map(pool::Started::join).collect()
    });

    // 2. Every thread writes its entries straight into its slots of each bucket.
    let mut bucket_bounds = vec![0usize; 257];
    {
        let mut slots: Vec<Vec<&mut [u128]>> = (0..threads).map(|_| Vec::with_capacity(256)).collect();
        let mut rest: &mut [u128] = entries;
        for d in 0..256 {
            let mut total = 0;
            for (t, h) in histograms.iter().enumerate() {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(h[d]);
                slots[t].push(head);
                rest = tail;
                total += h[d];
            }
            bucket_bounds[d + 1] = bucket_bounds[d] + total;
        }
        std::thread::scope(|scope| {
            for (range, mut mine) in ranges.iter().zip(slots) {
                pool::spawn_or_run(scope, "spillway-sort".into(), move || {
                    let mut at = [0usize; 256];
                    records.for_each(range.clone(), |i, r| {
                        let d = r[0] as usize;
                        // A bucket can only overflow when the input changed since its
                        // histogram (a truncated input reads as zeros): the record is dropped
                        // here and the check of the inputs after this chunk fails the sort.
                        if let Some(slot) = mine[d].get_mut(at[d]) {
                            *slot = entry_key(r) | i as u128;
                            at[d] += 1;
                        }
                    });
                });
            }
        });
    }

    // 3. Sort tasks: the buckets, big ones split on their next bytes first.
    let mut tasks: Vec<(Range<usize>, usize)> = Vec::new();
    let threshold = (n / (plan.threads * 8)).max(1 << 16);
    for d in 0..256 {
        split_task(entries, bucket_bounds[d]..bucket_bounds[d + 1], 1, threshold, &order, &mut tasks);
    }

    let pieces = match sink {
        Sink::File(file, path) => {
            // The writer thread records its own write errors here; the sorters stop on them.
            let failure = FirstError::default();
            let sorted = SharedWriter::run(file, path, plan, &failure, |writer| {
                let dest = |offset| Dest::Shared { writer, offset };
                sort_and_write(
                    plan, records, entries, &tasks, &order, dest, None, &failure, progress, threads,
                )
            });
            failure.into_result()?; // a write error explains the sorters' cancellation
            sorted
        }
        Sink::Direct(file) => {
            let dest = |offset| Dest::Direct { file, offset };
            let failure = FirstError::default();
            sort_and_write(
                plan,
                records,
                entries,
                &tasks,
                &order,
                dest,
                Some(file),
                &failure,
                progress,
                threads,
            )
        }
        Sink::Parts { dir, partitioner, sync } => {
            sort_tasks(entries, &tasks, &order, threads)?;
            let bounds = part_bounds(entries, partitioner, &order);
            write_parts(plan, records, entries, &bounds, dir, *sync, progress, threads)
        }
        Sink::Stream(stream) => {
            sort_tasks(entries, &tasks, &order, threads)?;
            let mut buffer = Vec::with_capacity(plan.write_buffer);
            let piece =
                write_entries(plan, records, entries, &mut buffer, &mut Dest::Stream(stream), progress)?;
            Ok(vec![piece])
        }
    }?;
    // Every record of the chunk has been read: an input that changed meanwhile (truncated
    // ones read as zeros) fails the sort before anything is committed.
    records.inputs.check_unchanged()?;
    Ok(pieces)
}

/// Sorts every task, in parallel.
fn sort_tasks(
    entries: &mut [u128],
    tasks: &[(Range<usize>, usize)],
    order: &Order<'_, '_>,
    threads: usize,
) -> Result<()> {
    let items: Vec<_> = task_slices(entries, tasks).into_iter().zip(tasks).collect();
    pool::for_each_with("spillway-sort", threads, items, Vec::new, |scratch, (slice, (_, byte))| {
        sort_entries(slice, *byte, order, scratch);
        Ok(())
    })
    .map(drop)
}

/// Sorts the tasks and writes each at its offset (through the destination `dest` makes for
/// an offset) as soon as it is sorted, in parallel. The sorters stop when `failure` is set.
#[allow(clippy::too_many_arguments)]
fn sort_and_write<'d>(
    plan: &Plan,
    records: &Records<'_>,
    entries: &mut [u128],
    tasks: &[(Range<usize>, usize)],
    order: &Order<'_, '_>,
    dest: impl Fn(u64) -> Dest<'d> + Sync,
    direct: Option<&DirectFile>,
    failure: &FirstError,
    progress: &Progress,
    threads: usize,
) -> Result<Vec<Piece>> {
    let items: Vec<_> = task_slices(entries, tasks).into_iter().zip(tasks).enumerate().collect();
    let mut pieces = vec![Piece::default(); tasks.len()];
    // A direct file's writes must end before the thread that submitted them does.
    let buffers = || (Vec::with_capacity(plan.write_buffer + plan.size), Vec::new(), DrainOnExit(direct));
    let sorted =
        pool::for_each_with("spillway-sort", threads, items, buffers, |(buffer, scratch, _), item| {
            let (i, (slice, (range, byte))) = item;
            if failure.failed() || progress.cancelled() {
                return Err(Error::Cancelled);
            }
            sort_entries(slice, *byte, order, scratch);
            let mut dest = dest((range.start * plan.size) as u64);
            write_entries(plan, records, slice, buffer, &mut dest, progress).map(|piece| (i, piece))
        })?;
    for (i, piece) in sorted {
        pieces[i] = piece;
    }
    Ok(pieces)
}

/// The entry range of each partition of `partitioner` in the sorted `entries`.
fn part_bounds(entries: &[u128], partitioner: &RangePartitioner, order: &Order<'_, '_>) -> Vec<usize> {
    let mut bounds = vec![0];
    for b in partitioner.boundaries() {
        bounds.push(entries.partition_point(|&e| order.cmp_record(e, b) == CmpOrdering::Less));
    }
    bounds.push(entries.len());
    bounds
}

/// Writes the partitions of the sorted `entries` (cut at `bounds`) into part files.
#[allow(clippy::too_many_arguments)]
fn write_parts(
    plan: &Plan,
    records: &Records<'_>,
    entries: &[u128],
    bounds: &[usize],
    dir: &Path,
    sync: bool,
    progress: &Progress,
    threads: usize,
) -> Result<Vec<Piece>> {
    let parts = bounds.len() - 1;
    let mut pieces = vec![Piece::default(); parts];
    let buffer = || Vec::with_capacity(plan.write_buffer);
    let done = pool::for_each_with("spillway-sort", threads, (0..parts).collect(), buffer, |buffer, p| {
        if progress.cancelled() {
            return Err(Error::Cancelled);
        }
        let piece = write_part(&dir.join(part_name(p as u32)), sync, |file, path| {
            let mut dest = Dest::At { file, path, offset: 0 };
            write_entries(plan, records, &entries[bounds[p]..bounds[p + 1]], buffer, &mut dest, progress)
        })?;
        progress.partitions_done.fetch_add(1, Ordering::Relaxed);
        Ok((p, piece))
    })?;
    for (p, piece) in done {
        pieces[p] = piece;
    }
    Ok(pieces)
}

/// Gathers the records of the sorted `entries` into `buffer` and writes them to `dest`.
fn write_entries(
    plan: &Plan,
    records: &Records<'_>,
    entries: &[u128],
    buffer: &mut Vec<u8>,
    dest: &mut Dest<'_>,
    progress: &Progress,
) -> Result<Piece> {
    let size = plan.size;
    let per_write = (plan.write_buffer / size).max(1);
    for chunk in entries.chunks(per_write) {
        buffer.clear();
        gather(records, chunk, buffer);
        let len = buffer.len() as u64;
        dest.write(buffer)?;
        progress.bytes_mapped.fetch_add(len, Ordering::Relaxed);
    }
    let mut piece = Piece { records: entries.len() as u64, ..Piece::default() };
    if plan.count_duplicates
        && let (Some(&first), Some(&last)) = (entries.first(), entries.last())
    {
        let eq = KeyEq::new(plan.key_size);
        piece.duplicates =
            entries.windows(2).filter(|w| eq.entries_equal(w[0], w[1], records)).count() as u64;
        piece.first_key = records.get(index(first))[..plan.key_size].to_vec();
        piece.last_key = records.get(index(last))[..plan.key_size].to_vec();
    }
    Ok(piece)
}

/// Appends the records of `entries` to `buffer`, in order.
///
/// The records come from random places in the input, so every one is a cache miss (and, over
/// a large mapping, a TLB miss): the gather asks for the cache lines of the record
/// [`GATHER_AHEAD`] places further on before copying each one, so that many misses are in
/// flight at once instead of one.
#[inline]
fn gather(records: &Records<'_>, entries: &[u128], buffer: &mut Vec<u8>) {
    match records.segments.as_slice() {
        // The common case, with the record size known to the compiler.
        [segment] if records.size == RECORD_SIZE => {
            gather_fixed::<RECORD_SIZE>(segment.data, entries, buffer)
        }
        [segment] => {
            let (data, size) = (segment.data, records.size);
            for (i, &e) in entries.iter().enumerate() {
                if let Some(&ahead) = entries.get(i + GATHER_AHEAD) {
                    prefetch_range(data, index(ahead) * size, size);
                }
                let at = index(e) * size;
                buffer.extend_from_slice(&data[at..at + size]);
            }
        }
        _ => {
            for (i, &e) in entries.iter().enumerate() {
                if let Some(&ahead) = entries.get(i + GATHER_AHEAD) {
                    prefetch_range(records.get(index(ahead)), 0, records.size);
                }
                buffer.extend_from_slice(records.get(index(e)));
            }
        }
    }
}

/// [`gather`] from one mapped segment of `SIZE`-byte records.
#[inline]
fn gather_fixed<const SIZE: usize>(data: &[u8], entries: &[u128], buffer: &mut Vec<u8>) {
    buffer.reserve(entries.len() * SIZE);
    let fetch = |e: u128| {
        let at = index(e) * SIZE;
        let mut line = 0;
        while line < SIZE {
            prefetch_read(data, at + line);
            line += 64;
        }
        prefetch_read(data, at + SIZE - 1);
    };
    for &e in entries.iter().take(GATHER_AHEAD) {
        fetch(e);
    }
    for (i, &e) in entries.iter().enumerate() {
        if let Some(&ahead) = entries.get(i + GATHER_AHEAD) {
            fetch(ahead);
        }
        let at = index(e) * SIZE;
        let record: &[u8; SIZE] = data[at..at + SIZE].try_into().expect("one record");
        buffer.extend_from_slice(record);
    }
}
