//! Runs and the external merge: sorted runs in the spill directory, merged by a loser tree
//! over buffered `pread` cursors, in parallel pieces ([`merge_runs`]); intermediate merges
//! keep every merge within F ([`merge_until_fits`]).

use std::cmp::Ordering as CmpOrdering;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use spillway_shuffle::plan_merges;

use super::sink::{Dest, Piece, SharedWriter, Sink, write_part};
use super::{Plan, RECORD_SIZE};
use crate::error::{Error, Result};
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

/// An open run being merged (shared by the merging threads: reads are `pread`s).
struct OpenRun<'r> {
    run: &'r Run,
    file: File,
}

/// Index of the first record of `run` that is not less than `key` (a whole record).
fn lower_bound(run: &OpenRun<'_>, size: usize, key: &[u8], scratch: &mut [u8]) -> Result<u64> {
    let (mut lo, mut hi) = (0u64, run.run.records);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        run.file
            .read_exact_at(&mut scratch[..size], mid * size as u64)
            .map_err(|e| Error::io("read", &run.run.path, e))?;
        if &scratch[..size] < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The first 16 bytes of a record, big-endian, zero-padded.
#[inline(always)]
fn head16(record: &[u8]) -> u128 {
    match record.first_chunk::<16>() {
        Some(head) => u128::from_be_bytes(*head),
        None => {
            let mut head = [0u8; 16];
            head[..record.len()].copy_from_slice(record);
            u128::from_be_bytes(head)
        }
    }
}

/// Reads a range of a run's records through a buffer.
struct Cursor<'r> {
    run: &'r OpenRun<'r>,
    size: usize,
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    pos: usize,
    len: usize,
    /// [`head16`] of the current record (`u128::MAX` when done).
    key: u128,
    done: bool,
}

impl<'r> Cursor<'r> {
    fn new(run: &'r OpenRun<'r>, size: usize, range: Range<u64>, buffer: Vec<u8>) -> Result<Self> {
        let mut c = Cursor {
            run,
            size,
            next: range.start,
            end: range.end,
            buffer,
            pos: 0,
            len: 0,
            key: u128::MAX,
            done: false,
        };
        c.refill()?;
        Ok(c)
    }

    #[cold]
    fn refill(&mut self) -> Result<()> {
        let capacity = (self.buffer.len() / self.size) as u64;
        let n = capacity.min(self.end - self.next) as usize;
        if n == 0 {
            self.done = true;
            self.key = u128::MAX;
            return Ok(());
        }
        let bytes = n * self.size;
        self.run
            .file
            .read_exact_at(&mut self.buffer[..bytes], self.next * self.size as u64)
            .map_err(|e| Error::io("read", &self.run.run.path, e))?;
        self.next += n as u64;
        self.pos = 0;
        self.len = bytes;
        self.key = head16(&self.buffer[..self.size]);
        Ok(())
    }

    #[inline(always)]
    fn current(&self) -> &[u8] {
        &self.buffer[self.pos..self.pos + self.size]
    }

    #[inline(always)]
    fn advance(&mut self) -> Result<()> {
        self.pos += self.size;
        if self.pos >= self.len {
            return self.refill();
        }
        self.key = head16(&self.buffer[self.pos..self.pos + self.size]);
        Ok(())
    }
}

/// Does cursor `a`'s record come before cursor `b`'s? Done cursors come last; equal records
/// in cursor order.
#[inline(always)]
fn before(cursors: &[Cursor<'_>], a: usize, b: usize) -> bool {
    let (x, y) = (&cursors[a], &cursors[b]);
    if x.key != y.key { x.key < y.key } else { before_slow(x, y, a < b) }
}

#[inline(never)]
fn before_slow(x: &Cursor<'_>, y: &Cursor<'_>, tie: bool) -> bool {
    match (x.done, y.done) {
        (true, true) => tie,
        (true, false) => false,
        (false, true) => true,
        (false, false) => match x.current()[16.min(x.size)..].cmp(&y.current()[16.min(y.size)..]) {
            CmpOrdering::Less => true,
            CmpOrdering::Greater => false,
            CmpOrdering::Equal => tie,
        },
    }
}

/// Plays the matches below `node` of a loser tree over `k` cursors; returns the winner.
fn build_tree(cursors: &[Cursor<'_>], tree: &mut [usize], node: usize) -> usize {
    let k = cursors.len();
    if node >= k {
        return node - k;
    }
    let left = build_tree(cursors, tree, 2 * node);
    let right = build_tree(cursors, tree, 2 * node + 1);
    if before(cursors, left, right) {
        tree[node] = right;
        left
    } else {
        tree[node] = left;
        right
    }
}

/// Merges the `ranges` of `runs` (one per run) into `dest`.
#[allow(clippy::too_many_arguments)]
fn merge_piece(
    plan: &Plan,
    runs: &[OpenRun<'_>],
    ranges: &[Range<u64>],
    read_buffer: usize,
    buffers: &mut Vec<Vec<u8>>,
    out: &mut Vec<u8>,
    dest: &mut Dest<'_>,
    count_duplicates: bool,
) -> Result<Piece> {
    let size = plan.size;
    let mut cursors = Vec::with_capacity(runs.len());
    for (run, range) in runs.iter().zip(ranges) {
        if !range.is_empty() {
            let mut buffer = buffers.pop().unwrap_or_default();
            buffer.resize(read_buffer, 0);
            cursors.push(Cursor::new(run, size, range.clone(), buffer)?);
        }
    }
    let mut piece = Piece::default();
    let ks = plan.key_size;
    // Keys of at most 16 bytes are compared through the cursors' `head16`.
    let short_keys = ks <= 16;
    let key_shift = 128 - 8 * ks.min(16) as u32;
    let mut last_head = 0u128;
    let mut last_key = vec![0u8; ks];
    let k = cursors.len();
    if k > 0 {
        let mut tree = vec![0usize; k];
        tree[0] = build_tree(&cursors, &mut tree, 1);
        let per_write = (plan.write_buffer / size).max(1) * size;
        out.clear();
        loop {
            let winner = tree[0];
            let c = &cursors[winner];
            if c.done {
                break;
            }
            let record = c.current();
            if count_duplicates {
                let head = c.key >> key_shift;
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
            cursors[winner].advance()?;
            // Replay the winner's path to the root.
            let mut champion = winner;
            let mut node = (winner + k) / 2;
            while node > 0 {
                let rival = tree[node];
                if before(&cursors, rival, champion) {
                    tree[node] = champion;
                    champion = rival;
                }
                node /= 2;
            }
            tree[0] = champion;
        }
        if count_duplicates {
            piece.last_key =
                if short_keys { (last_head << key_shift).to_be_bytes()[..ks].to_vec() } else { last_key };
        }
        dest.write(out)?;
        out.clear();
    }
    buffers.extend(cursors.into_iter().map(|c| c.buffer));
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
    let open: Vec<OpenRun<'_>> = runs
        .iter()
        .map(|run| {
            let file = File::open(&run.path).map_err(|e| Error::io("open", &run.path, e))?;
            Ok(OpenRun { run, file })
        })
        .collect::<Result<_>>()?;
    let cuts: &[Vec<u8>] = match sink {
        Sink::File(..) => splitters,
        Sink::Parts { partitioner, .. } => partitioner.boundaries(),
        Sink::Stream(_) => &[],
    };
    // bounds[r][j]: where piece j starts in run r.
    let mut scratch = vec![0u8; size];
    let mut bounds = Vec::with_capacity(open.len());
    for run in &open {
        let mut b = vec![0u64];
        for cut in cuts {
            b.push(lower_bound(run, size, cut, &mut scratch)?);
        }
        b.push(run.run.records);
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

    let mut pieces = vec![Piece::default(); pieces_total];
    // A shared output's writer thread records its own write errors here; the mergers stop on
    // them.
    let failure = FirstError::default();
    let merge_all = |writer: Option<&SharedWriter>| {
        let buffers = || (Vec::new(), Vec::with_capacity(plan.write_buffer + size));
        // In order: a stream sink (one thread) writes the pieces one after the other.
        let items: Vec<usize> = (0..pieces_total).collect();
        pool::for_each_with("spillway-merge", threads, items, buffers, |(buffers, out), j| {
            if failure.failed() || progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let ranges: Vec<Range<u64>> = bounds.iter().map(|b| b[j]..b[j + 1]).collect();
            let mut merge = |dest: &mut Dest<'_>| {
                merge_piece(plan, &open, &ranges, read_buffer, buffers, out, dest, count_duplicates)
            };
            let piece = match sink {
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

/// Merges runs (smallest first) until at most F remain.
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
    let mut slots: Vec<Option<Run>> = runs.into_iter().map(Some).collect();
    for step in &merge_plan.steps {
        let inputs: Vec<Run> = step.inputs.iter().map(|&i| slots[i].take().expect("planned run")).collect();
        let path = dir.join(format!("merge-{:06}.rec", step.output));
        let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        merge_runs(plan, &inputs, &Sink::File(&file, &path), splitters, false, progress)?;
        drop(file);
        let records: u64 = inputs.iter().map(|r| r.records).sum();
        for input in &inputs {
            let _ = std::fs::remove_file(&input.path);
        }
        stats.merge_steps += 1;
        stats.merge_bytes += records * plan.size as u64;
        stats.max_fan_in = stats.max_fan_in.max(inputs.len());
        progress.merges.fetch_add(1, Ordering::Relaxed);
        slots.resize_with(slots.len().max(step.output + 1), || None);
        slots[step.output] = Some(Run { path, records });
    }
    Ok(merge_plan.final_inputs.iter().map(|&i| slots[i].take().expect("final run")).collect())
}
