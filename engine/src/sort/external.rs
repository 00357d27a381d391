//! Runs and the external merge: sorted runs in the spill directory, merged by the shuffle
//! layer's loser tree over buffered `pread` cursors ([`RecordCursor`]), in parallel pieces
//! ([`merge_runs`]); intermediate merges keep every merge within F ([`merge_until_fits`]).

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use spillway_shuffle::io::direct::{ALIGN, DirectFile, READ_DEPTH, ReadRing};
use spillway_shuffle::{LoserTree, RecordCursor, RecordRun, plan_merges};

use super::sink::{Dest, DrainOnExit, Piece, SharedWriter, Sink, write_part};
use super::{Plan, RECORD_SIZE};
use crate::error::{Error, Result};
use crate::merge_plan;
use crate::metrics::Progress;
use crate::output::part_name;
use crate::pool::{self, FirstError};

/// Largest read buffer of one run cursor in a merge.
const MAX_READ_BUFFER: usize = 4 << 20;

/// A sorted run: a plain file of records in the spill directory.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) path: PathBuf,
    pub(super) records: u64,
}

/// Merges the `ranges` of `runs` (one per run) into `dest`.
#[allow(clippy::too_many_arguments)]
fn merge_piece(
    plan: &Plan,
    runs: &[RecordRun],
    ranges: &[Range<u64>],
    read_buffer: usize,
    buffers: &mut Vec<Vec<u8>>,
    ring: Option<&ReadRing>,
    out: &mut Vec<u8>,
    dest: &mut Dest<'_>,
    count_duplicates: bool,
) -> Result<Piece> {
    let size = plan.size;
    let mut cursors = Vec::with_capacity(runs.len());
    for (r, (run, range)) in runs.iter().zip(ranges).enumerate() {
        if !range.is_empty() {
            match ring {
                // Stream slots r of the thread's ring: one per run.
                Some(ring) => cursors.push(run.direct_cursor(range.clone(), ring, r)?),
                None => {
                    let mut buffer = buffers.pop().unwrap_or_default();
                    buffer.resize(read_buffer, 0);
                    cursors.push(run.cursor(range.clone(), buffer)?);
                }
            }
        }
    }
    let mut piece = Piece::default();
    let ks = plan.key_size;
    // Keys of at most 16 bytes are compared through the tree's prefixes (a record's first 16
    // bytes).
    let short_keys = ks <= 16;
    let key_shift = 128 - 8 * ks.min(16) as u32;
    let mut last_head = 0u128;
    let mut last_key = vec![0u8; ks];
    let mut tree = LoserTree::new(cursors);
    if tree.fan_in() > 0 {
        let per_write = (plan.write_buffer / size).max(1) * size;
        out.clear();
        while let Some(cursor) = tree.peek() {
            let record = cursor.head();
            if count_duplicates {
                let head = tree.peek_prefix() >> key_shift;
                if piece.records == 0 {
                    piece.first_key = record[..ks].to_vec();
                } else if head == last_head && (short_keys || record[..ks] == last_key[..]) {
                    piece.duplicates += 1;
                }
                last_head = head;
                if !short_keys {
                    last_key.copy_from_slice(&record[..ks]);
                }
            }
            match <&[u8; RECORD_SIZE]>::try_from(record) {
                Ok(fixed) => out.extend_from_slice(fixed),
                Err(_) => out.extend_from_slice(record),
            }
            piece.records += 1;
            if out.len() >= per_write {
                dest.write(out)?;
                out.clear();
            }
            tree.advance()?;
        }
        if count_duplicates {
            piece.last_key =
                if short_keys { (last_head << key_shift).to_be_bytes()[..ks].to_vec() } else { last_key };
        }
        dest.write(out)?;
        out.clear();
    }
    buffers.extend(tree.into_sources().into_iter().map(RecordCursor::into_buffer).filter(|b| !b.is_empty()));
    Ok(piece)
}

/// Merges `runs` into `sink`, in pieces cut at `splitters` (whole records, sorted) for a
/// file, at the partition boundaries for part files; pieces run in parallel.
pub(super) fn merge_runs(
    plan: &Plan,
    runs: &[Run],
    sink: &Sink<'_>,
    splitters: &[Vec<u8>],
    count_duplicates: bool,
    progress: &Progress,
) -> Result<Vec<Piece>> {
    let size = plan.size;
    let open_run = |run: &Run| {
        if plan.direct { RecordRun::open_direct(&run.path, size) } else { RecordRun::open(&run.path, size) }
    };
    let open: Vec<RecordRun> = runs.iter().map(open_run).collect::<Result<_, _>>()?;
    let cuts: &[Vec<u8>] = match sink {
        Sink::File(..) | Sink::Direct(_) => splitters,
        Sink::Parts { partitioner, .. } => partitioner.boundaries(),
        Sink::Stream(_) => &[],
    };
    // bounds[r][j]: where piece j starts in run r.
    let mut bounds = Vec::with_capacity(open.len());
    for run in &open {
        let mut b = vec![0u64];
        for cut in cuts {
            b.push(run.lower_bound(cut)?);
        }
        b.push(run.records());
        bounds.push(b);
    }
    let pieces_total = cuts.len() + 1;
    let threads = match sink {
        Sink::Stream(_) => 1,
        _ => plan.threads.min(pieces_total),
    };
    let k = open.len().max(1);
    let share = (plan.budget / threads as u64) as usize;
    let read_buffer =
        ((share.saturating_sub(2 * plan.write_buffer) / k).min(MAX_READ_BUFFER) / size).max(1) * size;

    // Direct reads: READ_DEPTH reads of a third of a cursor's buffer each.
    let block = (read_buffer / READ_DEPTH / ALIGN).max(1) * ALIGN;

    let mut pieces = vec![Piece::default(); pieces_total];
    // A shared output's writer thread records its own write errors here; the mergers stop on
    // them.
    let failure = FirstError::default();
    let merge_all = |writer: Option<&SharedWriter>| {
        // A direct output's writes must end before the thread that submitted them does.
        let direct = match sink {
            Sink::Direct(file) => Some(*file),
            _ => None,
        };
        let buffers =
            || (Vec::new(), Vec::with_capacity(plan.write_buffer + size), None, DrainOnExit(direct));
        // In order: a stream sink (one thread) writes the pieces one after the other.
        let items: Vec<usize> = (0..pieces_total).collect();
        pool::for_each_with("spillway-merge", threads, items, buffers, |(buffers, out, ring, _), j| {
            if failure.failed() || progress.cancelled() {
                return Err(Error::Cancelled);
            }
            if plan.direct && ring.is_none() {
                // One ring per merging thread, for all its pieces, with slots for every run.
                *ring = Some(ReadRing::new(open.len(), block, size)?);
            }
            let ranges: Vec<Range<u64>> = bounds.iter().map(|b| b[j]..b[j + 1]).collect();
            let mut merge = |dest: &mut Dest<'_>| {
                merge_piece(
                    plan,
                    &open,
                    &ranges,
                    read_buffer,
                    buffers,
                    ring.as_ref(),
                    out,
                    dest,
                    count_duplicates,
                )
            };
            let piece = match sink {
                Sink::Direct(file) => {
                    let offset = bounds.iter().map(|b| b[j]).sum::<u64>() * size as u64;
                    merge(&mut Dest::Direct { file, offset })?
                }
                Sink::File(..) => {
                    let offset = bounds.iter().map(|b| b[j]).sum::<u64>() * size as u64;
                    let writer = writer.expect("a file sink has a writer");
                    merge(&mut Dest::Shared { writer, offset })?
                }
                Sink::Parts { dir, sync, .. } => {
                    let piece = write_part(&dir.join(part_name(j as u32)), *sync, |file, path| {
                        merge(&mut Dest::At { file, path, offset: 0 })
                    })?;
                    progress.partitions_done.fetch_add(1, Ordering::Relaxed);
                    piece
                }
                Sink::Stream(stream) => merge(&mut Dest::Stream(stream))?,
            };
            Ok((j, piece))
        })
    };
    let merged = match sink {
        Sink::File(file, path) => SharedWriter::run(file, path, plan, &failure, |w| merge_all(Some(w))),
        _ => merge_all(None),
    };
    failure.into_result()?; // a write error explains the mergers' cancellation
    for (j, piece) in merged? {
        pieces[j] = piece;
    }
    Ok(pieces)
}

#[derive(Debug, Default)]
pub(super) struct RunStats {
    pub(super) chunks: u64,
    pub(super) runs: u64,
    pub(super) run_bytes: u64,
    pub(super) merge_steps: u64,
    pub(super) merge_bytes: u64,
    pub(super) max_fan_in: usize,
}

/// Merges runs (smallest first, as [`plan_merges`] plans) until at most F remain. Steps run
/// one at a time ([`merge_plan::execute`] with a concurrency of 1): each one is already
/// merged by every thread, in pieces ([`merge_runs`]), and F (by default from the open-file
/// limit, for one merge at a time) bounds the runs open at once.
pub(super) fn merge_until_fits(
    plan: &Plan,
    runs: Vec<Run>,
    dir: &Path,
    splitters: &[Vec<u8>],
    stats: &mut RunStats,
    progress: &Progress,
) -> Result<Vec<Run>> {
    let sizes: Vec<u64> = runs.iter().map(|r| r.records).collect();
    let merge_plan = plan_merges(&sizes, plan.max_open_runs);
    let finals = merge_plan::execute(&merge_plan, runs, 1, |output, inputs| {
        let path = dir.join(format!("merge-{output:06}.rec"));
        if plan.direct {
            let file = DirectFile::create(&path, plan.direct_buffers(), plan.direct_capacity())?;
            merge_runs(plan, &inputs, &Sink::Direct(&file), splitters, false, progress)?;
            file.finish(false)?;
        } else {
            let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            merge_runs(plan, &inputs, &Sink::File(&file, &path), splitters, false, progress)?;
        }
        for input in &inputs {
            let _ = std::fs::remove_file(&input.path);
        }
        progress.merges.fetch_add(1, Ordering::Relaxed);
        Ok(Run { path, records: inputs.iter().map(|r| r.records).sum() })
    })?;
    // A step's output holds its inputs' records: the plan's count of rewritten records is
    // exact.
    stats.merge_steps += merge_plan.steps.len() as u64;
    stats.merge_bytes += merge_plan.bytes_rewritten(&sizes) * plan.size as u64;
    stats.max_fan_in = stats.max_fan_in.max(merge_plan.max_fan_in());
    Ok(finals)
}
