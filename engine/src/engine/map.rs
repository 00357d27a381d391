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
//! ([`Progress::threads_wanted`], `spillway ctl --threads`), below or above the engine's
//! threads. The memory budget is divided among the wanted workers: a worker holds a share
//! ([`Budget`]) while it has a buffer. At a split boundary (its redo queue empty), a worker
//! that is not wanted (`t >= wanted`) reaches a commit point (its buffer spilled, its runs in
//! the pool, its splits done), gives its buffer and share back and waits until it is wanted
//! again or the splits run out; a worker whose share is no longer the budget over the wanted
//! count does the same and takes a new share, waiting until the budget has it (the workers
//! that leave give theirs back at their next boundary), so the buffers stay within the budget
//! whatever the changes. The phase's starting thread starts more workers when more are wanted.
//! What a worker maps does not decide the output, which is the same whichever worker maps
//! which split. Every wait is on the job's [`Progress`] condition variable, never a spin.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spillway_shuffle::{Partitioner, RunInfo};

use super::Engine;
use crate::buffer::{AppendBuffer, CombineBuffer, SpillBuffer};
use crate::cleanup::{self, Notice};
use crate::cluster::{FixedSplits, SplitList, SplitSource};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::feed::InputFeed;
use crate::input::{Inputs, Split, SplitRange};
use crate::job::{self, Combining, Emitter, Job};
use crate::journal::Record;
use crate::metrics::Progress;
use crate::pool::{self, Crew, FirstError, lock};
use crate::report::SpanKind;
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
        catalog: Catalog<'_>,
        partitioner: &dyn Partitioner,
        spiller: &Spiller<'_>,
        commit_bytes: u64,
    ) -> Result<Mapped> {
        let sizes: Vec<u64> = match catalog {
            Catalog::Planned { splits, todo, .. } => {
                todo.iter().map(|&i| (splits[i].end - splits[i].start) as u64).collect()
            }
            Catalog::Fed(_) => Vec::new(),
        };
        let fixed = FixedSplits(&sizes);
        let list: &dyn SplitList = match catalog {
            Catalog::Planned { .. } => &fixed,
            Catalog::Fed(feed) => feed,
        };
        let source = self.cluster.split_source(list, self.threads, &self.progress);
        let source: &dyn SplitSource = &*source;
        let (records, mapped, retries) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let exhausted = AtomicBool::new(false);
        self.progress.threads_active.store(0, Ordering::Relaxed);
        let failure = FirstError::default();
        let crew = self.crew();
        let budget = Budget { total: self.memory_budget, free: Mutex::new(self.memory_budget) };
        let over = || exhausted.load(Ordering::Relaxed) || failure.failed() || self.progress.cancelled();
        std::thread::scope(|scope| {
            if pool::spawn(scope, "spillway-splits".into(), &failure, || source.serve()).is_none() {
                return;
            }
            let mut started = 0;
            loop {
                while started < crew.wanted() && !over() {
                    let t = started;
                    let (records, mapped, retries, failure) = (&records, &mapped, &retries, &failure);
                    let (exhausted, budget) = (&exhausted, &budget);
                    let worker = move || {
                        self.progress.threads_active.fetch_add(1, Ordering::Relaxed);
                        let mut worker = Worker {
                            index: t,
                            job,
                            catalog,
                            spiller,
                            partitioner,
                            progress: &self.progress,
                            crew,
                            budget,
                            max_attempts: self.max_attempts,
                            commit_bytes,
                            buffer: None,
                            share: 0,
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
                            source.abort(); // workers waiting for a split that may never come
                        }
                        worker.give_back();
                        self.progress.threads_active.fetch_sub(1, Ordering::Relaxed);
                        records.fetch_add(worker.done.records, Ordering::Relaxed);
                        mapped.fetch_add(worker.done.splits, Ordering::Relaxed);
                        retries.fetch_add(worker.done.retries, Ordering::Relaxed);
                        crew.notify(); // a failure, or the end: the waiting workers see it
                    };
                    if pool::spawn(scope, format!("spillway-map-{t}"), failure, worker).is_none() {
                        return;
                    }
                    started += 1;
                }
                if over() || started >= crew.max() {
                    break;
                }
                // More workers start when more are wanted (without spinning meanwhile).
                crew.wait(|| crew.wanted() > started || over());
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

/// The splits of a map phase and their files.
#[derive(Clone, Copy)]
pub(super) enum Catalog<'a> {
    /// Planned up front: the split source hands out indices into `todo`, which are indices
    /// into `splits`.
    Planned { inputs: &'a Inputs, splits: &'a [SplitRange], todo: &'a [usize] },
    /// Streamed: the split source hands out the feed's split indices.
    Fed(&'a InputFeed),
}

impl<'a> Catalog<'a> {
    /// The split index of what the split source handed out as `k`.
    fn index(&self, k: usize) -> usize {
        match self {
            Catalog::Planned { todo, .. } => todo[k],
            Catalog::Fed(_) => k,
        }
    }

    fn range(&self, i: usize) -> SplitRange {
        match self {
            Catalog::Planned { splits, .. } => splits[i],
            Catalog::Fed(feed) => feed.range(i),
        }
    }

    fn split(&self, range: SplitRange) -> Split<'a> {
        match *self {
            Catalog::Planned { inputs, .. } => inputs.split(range),
            Catalog::Fed(feed) => feed.split(range),
        }
    }

    fn release(&self, range: SplitRange) {
        match self {
            Catalog::Planned { inputs, .. } => inputs.release(range),
            Catalog::Fed(feed) => feed.release(range),
        }
    }
}

/// One map worker thread: its buffer, its open splits and the runs spilled since its last
/// commit point (see the module docs).
struct Worker<'a, J: Job> {
    /// Which worker of the phase this is (`0..threads`).
    index: usize,
    job: &'a J,
    /// The splits and their files.
    catalog: Catalog<'a>,
    spiller: &'a Spiller<'a>,
    partitioner: &'a dyn Partitioner,
    progress: &'a Progress,
    /// How many workers are wanted now.
    crew: Crew<'a>,
    /// The shares of the memory budget.
    budget: &'a Budget,
    max_attempts: u32,
    commit_bytes: u64,
    /// The buffer, while the worker holds a share of the budget (`share` bytes) for it.
    buffer: Option<Box<dyn SpillBuffer<J::Value> + 'a>>,
    share: usize,
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

/// The map workers' shares of the memory budget: a worker takes one for its buffer and gives
/// it back when it leaves, so the shares held never add up to more than the budget.
#[derive(Debug)]
struct Budget {
    total: u64,
    free: Mutex<u64>,
}

impl Budget {
    /// The share of each of `wanted` workers.
    fn share(&self, wanted: usize) -> usize {
        usize::try_from(self.total / wanted.max(1) as u64).unwrap_or(usize::MAX)
    }

    /// Takes `share` bytes if the budget has them free.
    fn try_take(&self, share: usize) -> bool {
        let mut free = lock(&self.free);
        let fits = *free >= share as u64;
        if fits {
            *free -= share as u64;
        }
        fits
    }

    fn free(&self) -> u64 {
        *lock(&self.free)
    }

    fn give(&self, share: usize) {
        *lock(&self.free) += share as u64;
    }
}

impl<'a, J: Job> Worker<'a, J> {
    fn run(&mut self, source: &dyn SplitSource, failure: &FirstError, exhausted: &AtomicBool) -> Result<()> {
        loop {
            if failure.failed() || self.progress.cancelled() {
                return Ok(());
            }
            if self.redo.is_empty() {
                if !self.wanted() {
                    self.wait_until_wanted(failure, exhausted)?;
                    if exhausted.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                if self.buffer.is_some() && self.share != self.budget.share(self.crew.wanted()) {
                    self.leave()?; // the wanted count changed: a buffer of the new share
                }
                if self.buffer.is_none() && !self.take_share(failure, exhausted) {
                    if exhausted.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
            }
            if let Some(batch) = self.spiller.take_background_batch() {
                self.spiller.add(self.spiller.merge(self.job, batch)?);
                continue;
            }
            let (i, counted) = match self.redo.pop_front() {
                Some(next) => next,
                None => match source.next() {
                    Some(k) => (self.catalog.index(k), false),
                    None => {
                        exhausted.store(true, Ordering::Relaxed);
                        self.crew.notify();
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
        self.index < self.crew.wanted()
    }

    /// A commit point, then the buffer and its share go back to the budget.
    fn leave(&mut self) -> Result<()> {
        self.commit()?;
        self.give_back();
        Ok(())
    }

    /// Drops the buffer (what it holds is spilled or discarded by then) and gives its share
    /// back.
    fn give_back(&mut self) {
        if self.buffer.take().is_some() {
            self.budget.give(std::mem::take(&mut self.share));
            self.crew.notify();
            self.note_buffer();
        }
    }

    /// Tells the report's recorder (`--report`) what this worker's buffer holds now.
    fn note_buffer(&mut self) {
        if let Some(recorder) = self.progress.recorder() {
            recorder.note_buffer(self.buffer.as_deref().map_or(0, |b| b.allocated() as u64));
        }
    }

    /// Takes the share of the budget of the workers wanted now and makes a buffer of it,
    /// waiting until the budget has it free (the workers that leave or shrink give theirs
    /// back at their next split boundary). `false`: the wait ended because this worker is
    /// not wanted any more, the splits ran out, or the job fails.
    fn take_share(&mut self, failure: &FirstError, exhausted: &AtomicBool) -> bool {
        let over = || exhausted.load(Ordering::Relaxed) || failure.failed() || self.progress.cancelled();
        loop {
            let share = self.budget.share(self.crew.wanted());
            if self.budget.try_take(share) {
                let (job, spiller, partitioner) = (self.job, self.spiller, self.partitioner);
                let buffer: Box<dyn SpillBuffer<J::Value> + 'a> = if self.job.combines() {
                    Box::new(CombineBuffer::new(job, spiller, partitioner, share))
                } else {
                    Box::new(AppendBuffer::new(spiller, partitioner, share))
                };
                (self.buffer, self.share) = (Some(buffer), share);
                return true;
            }
            self.progress.threads_active.fetch_sub(1, Ordering::Relaxed);
            self.crew.wait(|| {
                self.budget.free() >= self.budget.share(self.crew.wanted()) as u64 || !self.wanted() || over()
            });
            self.progress.threads_active.fetch_add(1, Ordering::Relaxed);
            if !self.wanted() || over() {
                return false;
            }
        }
    }

    /// At a split boundary of a worker that is not wanted: a commit point, its buffer given
    /// back, then a wait (without spinning) until it is wanted again, the splits ran out, or
    /// the job fails.
    fn wait_until_wanted(&mut self, failure: &FirstError, exhausted: &AtomicBool) -> Result<()> {
        self.leave()?;
        self.progress.threads_active.fetch_sub(1, Ordering::Relaxed);
        let over = || exhausted.load(Ordering::Relaxed) || failure.failed() || self.progress.cancelled();
        while !self.wanted() && !over() {
            self.crew.wait(|| self.wanted() || over());
        }
        self.progress.threads_active.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Maps split `i` once; a failed attempt drops the open splits' records and queues them
    /// again, or fails the job after the last attempt.
    fn map_split(&mut self, i: usize, counted: bool) -> Result<()> {
        let range = self.catalog.range(i);
        let mut span = self.progress.span(SpanKind::Map); // the report's record (--report)
        let split = self.catalog.split(range);
        let buffer = self.buffer.as_deref_mut().expect("a worker maps with a buffer");
        let mut emitter = Emitter { buffer, records: 0 };
        let outcome = job::call(|| {
            self.job.map(&split, &mut emitter)?;
            emitter.buffer.finish_inserts(); // runs the combiner on what it deferred
            match failpoint::hit("map.split") {
                true => Err(failpoint::message("map.split").into()),
                false => Ok(()),
            }
        });
        let emitted = emitter.records;
        // A spill that failed (a full disk) is the machine's failure, whatever the job did.
        if let Some(e) = self.buffer.as_deref_mut().expect("a worker maps with a buffer").take_error() {
            return Err(e);
        }
        self.runs.extend(self.buffer.as_deref_mut().expect("a worker maps with a buffer").take_runs());
        let bytes = split.data.len() as u64;
        if let Some(span) = &mut span {
            span.bytes(bytes);
            self.note_buffer();
        }
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
            self.buffer.as_deref_mut().expect("a worker maps with a buffer").discard();
            self.spiller.discard(self.runs.drain(..));
            let again = self.open.drain(..).map(|j| (j, true)).chain([(i, counted)]);
            let mut redo: VecDeque<_> = again.collect();
            redo.extend(self.redo.drain(..));
            self.redo = redo;
            (self.open_bytes, self.open_records) = (0, 0);
            return Ok(());
        }
        self.catalog.release(range);
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
        if let Some(buffer) = self.buffer.as_deref_mut() {
            buffer.spill()?;
            self.runs.extend(buffer.take_runs());
        }
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
