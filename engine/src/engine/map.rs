//! The map phase: worker threads pull splits, map them into their buffers, spill, and run
//! background merges as soon as F runs wait.
//!
//! A failed attempt of the job's code on a split (an error or a panic) counts zero times. A
//! worker's buffer mixes the records of every split it mapped since it last spilled, and a
//! spill in the middle of a split writes some of that split's records into a run, so a worker
//! keeps the splits it mapped since its last *commit point* open, with the runs its buffer
//! spilled meanwhile, out of the pool. When a split fails, the worker drops its buffer and
//! those runs and maps the open splits again, then the failed one. At a commit point (a split
//! boundary after [`COMMIT_RUNS`] spills or [`COMMIT_BYTES`] of input, and the end of the
//! phase) it spills its buffer and hands the runs to the pool, where background merges may
//! take them. With retry off (one attempt) every split boundary is a commit point and nothing
//! is spilled early.
//!
//! The number of workers that map can change while the phase runs
//! ([`Progress::threads_wanted`]): at a split boundary (its redo queue empty), worker `t` with
//! `t >= wanted` reaches a commit point (its buffer spilled, its runs in the pool, its splits
//! done) and waits until it is wanted again or the splits run out. Every worker keeps its
//! share of the budget, so the buffers stay within it; what a worker maps does not decide the
//! output, which is the same whichever worker maps which split.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use spillway_shuffle::{Partitioner, RunInfo};

use super::Engine;
use crate::buffer::{AppendBuffer, CombineBuffer, SpillBuffer};
use crate::cleanup::{self, Notice};
use crate::cluster::SplitSource;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::input::{Inputs, SplitRange};
use crate::job::{self, Combining, Emitter, Job};
use crate::journal::Record;
use crate::metrics::Progress;
use crate::pool::{self, FirstError};
use crate::spill::{Spiller, run_ref};

/// With retry on, a worker commits at the first split boundary after its buffer spilled this
/// many runs since its last commit point (a commit spills the buffer early: at most one more,
/// smaller, run per this many).
const COMMIT_RUNS: usize = 4;
/// ... or after this many bytes of input since its last commit point: what one failure maps
/// again (a resumable job commits more often: see the engine's driver).
pub(super) const COMMIT_BYTES: u64 = 1 << 30;

/// What the map phase did.
#[derive(Debug, Default)]
pub(super) struct Mapped {
    /// Pairs emitted by committed attempts.
    pub(super) records: u64,
    /// Splits mapped.
    pub(super) splits: u64,
    /// Failed attempts that were tried again.
    pub(super) retries: u64,
}

impl Engine {
    /// Maps the splits `todo` (indices into `splits`) on the worker threads; background
    /// merges run on the same threads as soon as F runs wait. A worker commits at least every
    /// `commit_bytes` of input when retry is on or the job is resumable.
    pub(super) fn map_phase<J: Job>(
        &self,
        job: &J,
        inputs: &Inputs,
        (splits, todo): (&[SplitRange], &[usize]),
        partitioner: &dyn Partitioner,
        spiller: &Spiller<'_>,
        commit_bytes: u64,
    ) -> Result<Mapped> {
        let sizes: Vec<u64> = todo.iter().map(|&i| (splits[i].end - splits[i].start) as u64).collect();
        let source = self.cluster.split_source(&sizes, &self.progress);
        let source: &dyn SplitSource = &*source;
        let (records, mapped, retries) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let exhausted = AtomicBool::new(false);
        self.progress.threads_active.store(self.threads, Ordering::Relaxed);
        let failure = FirstError::default();
        let share = usize::try_from(self.memory_budget / self.threads as u64).unwrap_or(usize::MAX);
        std::thread::scope(|scope| {
            if pool::spawn(scope, "spillway-splits".into(), &failure, || source.serve()).is_none() {
                return;
            }
            for t in 0..self.threads {
                let (records, mapped, retries, failure) = (&records, &mapped, &retries, &failure);
                let exhausted = &exhausted;
                let worker = move || {
                    let buffer: Box<dyn SpillBuffer<J::Value>> = if job.combines() {
                        Box::new(CombineBuffer::new(job, spiller, partitioner, share))
                    } else {
                        Box::new(AppendBuffer::new(spiller, partitioner, share))
                    };
                    let mut worker = Worker {
                        index: t,
                        job,
                        inputs,
                        splits,
                        todo,
                        spiller,
                        progress: &self.progress,
                        max_attempts: self.max_attempts,
                        commit_bytes,
                        buffer,
                        open: Vec::new(),
                        open_bytes: 0,
                        open_records: 0,
                        runs: Vec::new(),
                        redo: VecDeque::new(),
                        failed: HashMap::new(),
                        done: Mapped::default(),
                    };
                    if let Err(e) = worker.run(source, failure, exhausted) {
                        failure.set(e);
                    }
                    self.progress.threads_active.fetch_sub(1, Ordering::Relaxed);
                    records.fetch_add(worker.done.records, Ordering::Relaxed);
                    mapped.fetch_add(worker.done.splits, Ordering::Relaxed);
                    retries.fetch_add(worker.done.retries, Ordering::Relaxed);
                };
                if pool::spawn(scope, format!("spillway-map-{t}"), failure, worker).is_none() {
                    break;
                }
            }
        });
        self.progress.threads_active.store(0, Ordering::Relaxed);
        if self.progress.cancelled() {
            failure.set(Error::Cancelled);
        }
        failure.into_result()?;
        source.finish()?;
        Ok(Mapped {
            records: records.into_inner(),
            splits: mapped.into_inner(),
            retries: retries.into_inner(),
        })
    }
}

/// One map worker thread: its buffer, its open splits and the runs spilled since its last
/// commit point (see the module docs).
struct Worker<'a, J: Job> {
    /// Which worker of the phase this is (`0..threads`).
    index: usize,
    job: &'a J,
    inputs: &'a Inputs,
    splits: &'a [SplitRange],
    /// The splits to map: what the split source hands out are indices into this.
    todo: &'a [usize],
    spiller: &'a Spiller<'a>,
    progress: &'a Progress,
    max_attempts: u32,
    commit_bytes: u64,
    buffer: Box<dyn SpillBuffer<J::Value> + 'a>,
    /// Splits mapped since the last commit point: their records are in the buffer or `runs`.
    open: Vec<usize>,
    open_bytes: u64,
    open_records: u64,
    /// Runs spilled since the last commit point.
    runs: Vec<RunInfo>,
    /// Splits to map (again) before taking new ones, and whether each is in the progress
    /// counters already.
    redo: VecDeque<(usize, bool)>,
    /// Failed attempts per split.
    failed: HashMap<usize, u32>,
    /// What committed attempts did.
    done: Mapped,
}

impl<J: Job> Worker<'_, J> {
    fn run(&mut self, source: &dyn SplitSource, failure: &FirstError, exhausted: &AtomicBool) -> Result<()> {
        loop {
            if failure.failed() || self.progress.cancelled() {
                return Ok(());
            }
            if self.redo.is_empty() && !self.wanted() {
                self.wait_until_wanted(failure, exhausted)?;
                if exhausted.load(Ordering::Relaxed) {
                    break;
                }
                continue;
            }
            if let Some(batch) = self.spiller.take_background_batch() {
                self.spiller.add(self.spiller.merge(self.job, batch)?);
                continue;
            }
            let (i, counted) = match self.redo.pop_front() {
                Some(next) => next,
                None => match source.next() {
                    Some(k) => (self.todo[k], false),
                    None => {
                        exhausted.store(true, Ordering::Relaxed);
                        break;
                    }
                },
            };
            self.map_split(i, counted)?;
        }
        self.commit()
    }

    /// Whether this worker is among the [`Progress::threads_wanted`] ones.
    fn wanted(&self) -> bool {
        let wanted = self.progress.threads_wanted.load(Ordering::Relaxed);
        wanted == 0 || self.index < wanted
    }

    /// At a split boundary of a worker that is not wanted: a commit point, then a wait (a
    /// sleep between polls) until it is wanted again, the splits ran out, or the job fails.
    fn wait_until_wanted(&mut self, failure: &FirstError, exhausted: &AtomicBool) -> Result<()> {
        self.commit()?;
        self.progress.threads_active.fetch_sub(1, Ordering::Relaxed);
        while !self.wanted()
            && !exhausted.load(Ordering::Relaxed)
            && !failure.failed()
            && !self.progress.cancelled()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.progress.threads_active.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Maps split `i` once; a failed attempt drops the open splits' records and queues them
    /// again, or fails the job after the last attempt.
    fn map_split(&mut self, i: usize, counted: bool) -> Result<()> {
        let range = self.splits[i];
        let split = self.inputs.split(range);
        let mut emitter = Emitter { buffer: &mut *self.buffer, records: 0 };
        let outcome = job::call(|| {
            self.job.map(&split, &mut emitter)?;
            match failpoint::hit("map.split") {
                true => Err(failpoint::message("map.split").into()),
                false => Ok(()),
            }
        });
        let emitted = emitter.records;
        // A spill that failed (a full disk) is the machine's failure, whatever the job did.
        if let Some(e) = self.buffer.take_error() {
            return Err(e);
        }
        self.runs.extend(self.buffer.take_runs());
        let bytes = split.data.len() as u64;
        if let Err(message) = outcome {
            let attempts = self.failed.entry(i).or_default();
            *attempts += 1;
            if *attempts >= self.max_attempts {
                return Err(Error::Job { split: split.describe(), attempts: *attempts, message });
            }
            cleanup::notify(&Notice::Retrying {
                task: split.describe(),
                attempt: *attempts,
                max_attempts: self.max_attempts,
                message,
            });
            self.done.retries += 1;
            self.progress.retries.fetch_add(1, Ordering::Relaxed);
            // What the open splits emitted is in the buffer and in `runs`, mixed with this
            // attempt's records: all of it goes, and they are mapped again.
            self.buffer.discard();
            self.spiller.discard(self.runs.drain(..));
            let again = self.open.drain(..).map(|j| (j, true)).chain([(i, counted)]);
            let mut redo: VecDeque<_> = again.collect();
            redo.extend(self.redo.drain(..));
            self.redo = redo;
            (self.open_bytes, self.open_records) = (0, 0);
            return Ok(());
        }
        self.inputs.release(range);
        if !counted {
            self.progress.bytes_mapped.fetch_add(bytes, Ordering::Relaxed);
            self.progress.splits_done.fetch_add(1, Ordering::Relaxed);
        }
        self.open.push(i);
        self.open_bytes += bytes;
        self.open_records += emitted;
        if self.max_attempts == 1 && self.spiller.journal().is_none() {
            // Nothing is mapped again: every boundary is a commit point, without a spill.
            self.spiller.add_all(self.runs.drain(..));
            self.settle();
        } else if self.runs.len() >= COMMIT_RUNS || self.open_bytes >= self.commit_bytes {
            self.commit()?;
        }
        Ok(())
    }

    /// A commit point: spills the buffer and hands every run since the last one to the pool;
    /// the open splits are done. A resumable job journals them (the runs are `fsync`ed).
    fn commit(&mut self) -> Result<()> {
        self.buffer.spill()?;
        self.runs.extend(self.buffer.take_runs());
        if let Some(journal) = self.spiller.journal()
            && !self.open.is_empty()
        {
            failpoint::hit("map.commit");
            journal.append(&Record::Committed {
                splits: self.open.iter().map(|&i| i as u32).collect(),
                runs: self.runs.iter().map(run_ref).collect(),
            })?;
            self.progress.splits_committed.fetch_add(self.open.len() as u64, Ordering::Relaxed);
        }
        self.spiller.add_all(self.runs.drain(..));
        self.settle();
        Ok(())
    }

    /// Counts the open splits as done.
    fn settle(&mut self) {
        self.done.splits += self.open.len() as u64;
        self.done.records += self.open_records;
        self.progress.records.fetch_add(self.open_records, Ordering::Relaxed);
        self.open.clear();
        (self.open_bytes, self.open_records) = (0, 0);
    }
}
