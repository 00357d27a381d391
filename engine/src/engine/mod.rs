//! The engine: [`EngineBuilder`] and [`Engine`], and the run of a job, phase by phase:
//!
//! - `builder` — the settings, their defaults and the checks of `build`;
//! - this module — `run_with`, the driver: agreement between ranks, the output's staging,
//!   the phases in order, metrics and the commit;
//! - `map` — the map phase on the worker threads (splits, buffers, background merges);
//! - `exchange` — with several ranks, partition sections to their owners;
//! - `merge` — the planned intermediate merges;
//! - `reduce` — reduce into part files or one output.

mod budget;
mod builder;
mod exchange;
mod map;
mod merge;
mod reduce;
mod resume;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use spillway_shuffle::{HashPartitioner, IoBackend, OpenRunGauge, Partitioner, ReadMode, RunReader};

use crate::cluster::{Agreement, Cluster, ExchangeStats};
use crate::error::{ConfigError, Error, Result};
use crate::feed::InputFeed;
use crate::input::Inputs;
use crate::job::Job;
use crate::journal::Begin;
use crate::metrics::{AnonSampler, Metrics, Phase, PhaseTimes, Progress, ResumeStats, Retries, peak_rss};
use crate::output::{Destination, OutputFile, OutputSpec, StagedDir, commit_with_metrics, fresh_token};
use crate::pool::{self, Crew};
use crate::report::{RankRecord, SpanKind};
use crate::spill::{SpillDir, Spiller};

/// The most worker threads `spillway ctl --threads` can grow a job to.
pub const MAX_THREADS: usize = 1024;

pub use self::budget::{DEFAULT_BUDGET_CAP, DEFAULT_BUDGET_FLOOR, MemoryBudget, MemoryFacts, MemoryLimit};
pub use self::builder::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MEMORY_BUDGET, DEFAULT_SPLIT_SIZE, EngineBuilder, MIN_MEMORY_BUDGET,
};
use self::builder::{MIN_THREAD_SHARE, RUN_INDEX_PER_PARTITION, human_bytes};
use self::reduce::reduce_all;
pub use self::resume::job_dir_path;
use self::resume::{JobDir, Resumed};

/// Runs jobs, and the record sort ([`sort_records`](crate::sort::sort_records)). Build one
/// with [`Engine::builder`]: its settings are set and checked there, once, for both.
#[derive(Debug)]
pub struct Engine {
    pub(crate) threads: usize,
    pub(crate) partitions: u32,
    pub(crate) memory_budget: u64,
    /// Where the budget came from (the metrics' `memory_budget_source`).
    pub(crate) memory_budget_source: String,
    /// F for merges running on every thread at once (the default shares the open-file
    /// limit between them).
    max_open_runs: usize,
    /// F as set, if it was.
    max_open_runs_set: Option<usize>,
    pub(crate) spill_dir: PathBuf,
    split_size: Option<usize>,
    pub(crate) io: IoBackend,
    /// The backend asked for, before [`IoBackend::resolve`] (the record sort decides `Auto`
    /// per input).
    pub(crate) io_requested: IoBackend,
    read: ReadMode,
    pub(crate) progress: Arc<Progress>,
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) metrics_file: Option<PathBuf>,
    pub(crate) sample_memory: bool,
    max_attempts: u32,
    resume: bool,
    pub(crate) sync: bool,
}

impl Engine {
    /// A builder with default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The open-run threshold F in effect.
    pub fn max_open_runs(&self) -> usize {
        self.max_open_runs
    }

    /// F for `concurrent` merges at once: as set, or by default the open-file limit shared
    /// between them ([`limits::default_max_open_runs`](spillway_shuffle::limits::default_max_open_runs)).
    pub(crate) fn max_open_runs_for(&self, concurrent: usize) -> usize {
        self.max_open_runs_set.unwrap_or_else(|| spillway_shuffle::limits::default_max_open_runs(concurrent))
    }

    /// The threads a phase runs on: the engine's, or as many as
    /// [`Progress::threads_wanted`] asks for (at most [`Progress::threads_max`]).
    pub(crate) fn crew(&self) -> Crew<'_> {
        let max = self.progress.threads_max.load(Ordering::Relaxed).max(self.threads);
        Crew::following(self.threads, max, &self.progress)
    }

    /// The most worker threads a job with `partitions` part files (0: one output) can grow
    /// to: each keeps a share of the memory budget of at least `MIN_THREAD_SHARE` (and of
    /// its runs' partition index), the planned F still fits the open-file limit shared by
    /// that many concurrent merges (unless F was set), and never more than [`MAX_THREADS`].
    fn threads_max(&self, partitions: u32) -> usize {
        let index = u64::from(partitions) * RUN_INDEX_PER_PARTITION;
        let by_budget = self.memory_budget / index.max(MIN_THREAD_SHARE);
        let mut most = usize::try_from(by_budget).unwrap_or(usize::MAX).clamp(1, MAX_THREADS);
        if self.max_open_runs_set.is_none() {
            let fits = |c: usize| spillway_shuffle::limits::default_max_open_runs(c) >= self.max_open_runs;
            let mut c = self.threads;
            while c < most && fits(c + 1) {
                c += 1;
            }
            most = c;
        }
        most.max(self.threads)
    }

    /// The live progress counters of this engine's jobs.
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Runs `job` over `inputs`, hash-partitioned, writing `output`.
    ///
    /// # Errors
    ///
    /// Bad input, a failure of the job's code (naming the split), a full disk, a corrupt
    /// run, or an output directory that already holds output. On error no `_SUCCESS` is
    /// written and no output file appears under a final name half-written.
    pub fn run<J: Job>(&self, job: &J, inputs: &Inputs, output: &OutputSpec) -> Result<Metrics> {
        let partitioner = HashPartitioner::new(self.partitions)?;
        self.run_with(job, inputs, &partitioner, output)
    }

    /// As [`Engine::run`], routing keys with `partitioner` (which decides R; for example a
    /// [`RangePartitioner`](spillway_shuffle::RangePartitioner) for globally ordered part files).
    ///
    /// # Errors
    ///
    /// As [`Engine::run`].
    pub fn run_with<J: Job>(
        &self,
        job: &J,
        inputs: &Inputs,
        partitioner: &dyn Partitioner,
        output: &OutputSpec,
    ) -> Result<Metrics> {
        self.run_any(job, Given::Inputs(inputs), partitioner, output)
    }

    /// Runs `job` over the files pushed into `feed` while it runs (see [`InputFeed`]): the
    /// map phase ends once the feed has ended and its splits are mapped. The output is that of
    /// [`Engine::run`] over the same files given up front in the same order. Under MPI only
    /// rank 0's feed needs a producer (the other ranks get their splits from rank 0).
    ///
    /// # Errors
    ///
    /// As [`Engine::run`]; a [`ConfigError`] for a resumable engine (the journal records the
    /// inputs up front) or a feed cut otherwise than the job's split mode; the producer's
    /// error ([`InputFeed::fail`]).
    pub fn run_fed<J: Job>(&self, job: &J, feed: &InputFeed, output: &OutputSpec) -> Result<Metrics> {
        let partitioner = HashPartitioner::new(self.partitions)?;
        self.run_fed_with(job, feed, &partitioner, output)
    }

    /// As [`Engine::run_fed`], routing keys with `partitioner`.
    ///
    /// # Errors
    ///
    /// As [`Engine::run_fed`].
    pub fn run_fed_with<J: Job>(
        &self,
        job: &J,
        feed: &InputFeed,
        partitioner: &dyn Partitioner,
        output: &OutputSpec,
    ) -> Result<Metrics> {
        if self.resume {
            return Err(ConfigError(
                "a resumable job (--resume) needs its inputs up front: streamed inputs (--inputs-from) \
                 cannot be journaled"
                    .into(),
            )
            .into());
        }
        if feed.split_mode() != job.split_mode() {
            return Err(ConfigError(format!(
                "the input feed cuts splits as {:?}, the job needs {:?}",
                feed.split_mode(),
                job.split_mode()
            ))
            .into());
        }
        self.run_any(job, Given::Feed(feed), partitioner, output)
    }

    fn run_any<J: Job>(
        &self,
        job: &J,
        given: Given<'_>,
        partitioner: &dyn Partitioner,
        output: &OutputSpec,
    ) -> Result<Metrics> {
        let started = Instant::now();
        let sampler = AnonSampler::start(self.sample_memory);
        // One sorted output needs no partitions: the final merge reads every partition of
        // every run anyway, and with R of them its cursors would grow with runs x R whatever
        // the memory budget says.
        let single;
        let partitioner = match output {
            OutputSpec::Dir(_) => {
                self.check_partitions(partitioner.partitions())?;
                partitioner
            }
            _ => {
                single = HashPartitioner::new(1)?;
                &single as &dyn Partitioner
            }
        };
        let progress = &*self.progress;
        let (rank, ranks) = (self.cluster.rank(), self.cluster.size());
        crate::failpoint::set_rank(rank);
        progress.set_phase(Phase::Starting);
        let indexed = if matches!(output, OutputSpec::Dir(_)) { partitioner.partitions() } else { 0 };
        progress.threads_max.store(self.threads_max(indexed), Ordering::Relaxed);
        let split_size = match given {
            Given::Inputs(inputs) => self.split_size.unwrap_or_else(|| {
                let per_split = inputs.total_bytes() / (8 * (self.threads * ranks) as u64);
                usize::try_from(per_split).unwrap_or(usize::MAX).clamp(1 << 20, DEFAULT_SPLIT_SIZE)
            }),
            Given::Feed(feed) => feed.split_size(),
        };
        // Every rank must run the same job over the same inputs with the same routing.
        let agreement = agreement::<J>(job, given, partitioner, split_size, output);
        let token = self.cluster.agree(&agreement)?;
        let (inputs, splits) = match given {
            Given::Inputs(inputs) => (Some(inputs), inputs.plan_splits(job.split_mode(), split_size)?),
            Given::Feed(_) => (None, Vec::new()),
        };
        // A resumable job goes on from what its job directory holds.
        let (job_dir, mut resumed) = match self.resume {
            true => {
                let begin = Begin {
                    version: 1,
                    settings: agreement.settings.iter().map(|(name, d)| ((*name).to_owned(), *d)).collect(),
                    fingerprint: agreement.fingerprint,
                    inputs: inputs.map_or(&[][..], Inputs::files).iter().map(|f| f.identity()).collect(),
                    splits: splits.len() as u64,
                };
                let (dir, resumed) = JobDir::open::<J::Value>(
                    output,
                    &begin,
                    partitioner.partitions(),
                    self.read,
                    &*self.cluster,
                )?;
                if let Some(metrics) = resumed.committed.clone() {
                    // Killed after its output was committed: nothing left but the directory.
                    if rank == 0 {
                        dir.finish()?;
                    }
                    progress.set_phase(Phase::Done);
                    return Ok(metrics);
                }
                (Some(dir), resumed)
            }
            false => (None, Resumed::default()),
        };
        // The output can be written: found out before any work, not after all of it. Part
        // files go into a staging directory that rank 0 renames into place at the end.
        let mut staged = match output {
            OutputSpec::Dir(dir) if rank == 0 => Some(StagedDir::create(dir, token)?),
            OutputSpec::File(_) if rank == 0 => {
                output.check()?;
                None
            }
            _ => None,
        };
        if let OutputSpec::Dir(dir) = output
            && ranks > 1
        {
            // The other ranks find rank 0's staging directory now: an output directory they do
            // not share fails before any work.
            self.cluster.barrier()?;
            if rank != 0 {
                staged = Some(StagedDir::attach(dir, token)?);
            }
        }
        match given {
            Given::Inputs(inputs) => {
                progress.splits_total.store(splits.len() as u64, Ordering::Relaxed);
                progress.bytes_total.store(inputs.total_bytes(), Ordering::Relaxed);
            }
            Given::Feed(feed) => feed.attach(Arc::clone(&self.progress)),
        }
        let spill_dir = match &job_dir {
            Some(_) => None,
            None => Some(SpillDir::for_rank(&self.spill_dir, rank)?),
        };
        let dir =
            job_dir.as_ref().map_or_else(|| spill_dir.as_ref().expect("one of them").path(), JobDir::path);
        let mut spiller =
            Spiller::new(dir, partitioner.partitions(), self.io, self.read, self.max_open_runs, progress)
                .with_attempts(self.max_attempts);
        let mut commit_bytes = map::COMMIT_BYTES;
        if let Some(job_dir) = &job_dir {
            spiller = spiller.journaled(job_dir.journal(), job_dir.run_prefix());
            // Commit points often enough that a kill loses little (about 3 per thread and rank,
            // besides those every 4 spills), and rare enough that a job whose buffers never
            // fill spills little more than it would: each commit spills them, and the reduce
            // then merges one more run per commit (4 per thread cost 3.4% more instructions in
            // an in-memory 1 GiB word count on 2 threads; 3 cost 2.3%).
            let per_thread = given.total_bytes() / (3 * (self.threads * ranks) as u64);
            commit_bytes = per_thread.clamp(32 << 20, 1 << 30);
        }
        let kept_runs = resumed.runs.len() as u64; // this rank's share
        spiller.add_all(std::mem::take(&mut resumed.runs));
        let todo: Vec<usize> =
            (0..splits.len()).filter(|&i| !resumed.done.get(i).copied().unwrap_or(false)).collect();
        let done_before = (splits.len() - todo.len()) as u64;
        let done_bytes: u64 = (0..splits.len())
            .filter(|&i| resumed.done.get(i).copied().unwrap_or(false))
            .map(|i| (splits[i].end - splits[i].start) as u64)
            .sum();
        progress.splits_done.fetch_add(done_before, Ordering::Relaxed);
        progress.splits_committed.fetch_add(done_before, Ordering::Relaxed);
        progress.bytes_mapped.fetch_add(done_bytes, Ordering::Relaxed);

        progress.set_phase(Phase::Map);
        let catalog = match given {
            Given::Inputs(inputs) => map::Catalog::Planned { inputs, splits: &splits, todo: &todo },
            Given::Feed(feed) => map::Catalog::Fed(feed),
        };
        let mapped = self.map_phase(job, catalog, partitioner, &spiller, commit_bytes);
        if let Given::Feed(feed) = given
            && let Some(e) = feed.take_error()
        {
            return Err(e); // a listed file could not be read: what the map failed of follows
        }
        given.check_unchanged()?; // also when the map failed: a changed input explains it
        let mapped = mapped?;
        // The other ranks opened only the files of the splits they mapped: rank 0's list of
        // every file's path, in index order, completes their names for the reduce.
        if let Given::Feed(feed) = given
            && ranks > 1
        {
            let mine = if rank == 0 { feed.name_list() } else { Vec::new() };
            let lists = self.cluster.all_gather(&mine)?;
            if rank != 0 {
                feed.learn_names(lists.first().map_or(&[][..], Vec::as_slice));
            }
        }
        let map_done = Instant::now();

        // Partition p is reduced by its owner: one file of all keys is written by rank 0;
        // part files are spread over the ranks (contiguous blocks for a total order).
        let partitions = partitioner.partitions();
        let owner = |p: u32| -> usize {
            match output {
                OutputSpec::Dir(_) if partitioner.total_order() => p as usize * ranks / partitions as usize,
                OutputSpec::Dir(_) => p as usize % ranks,
                _ => 0,
            }
        };
        progress.set_phase(Phase::Merge);
        let exchanged =
            if ranks > 1 { self.exchange(job, &spiller, &owner)? } else { ExchangeStats::default() };
        progress.bytes_exchanged.store(exchanged.sent + exchanged.received, Ordering::Relaxed);
        let exchange_done = Instant::now();
        let finals = self.merge_phase(job, &spiller)?;
        let merge_done = Instant::now();

        progress.set_phase(Phase::Reduce);
        progress.runs_waiting.store(finals.len() as u64, Ordering::Relaxed);
        let gauge = OpenRunGauge::new();
        // Opening a run validates (and faults in) every byte of it: on every thread. The
        // readers keep the runs' order (the merge breaks ties by it).
        let mut opened = pool::for_each_with(
            "spillway-open",
            self.threads,
            finals.iter().enumerate().collect(),
            || (),
            |(), (i, run)| {
                let _span = progress.span(SpanKind::Reduce); // the report's record (--report)
                Ok((i, RunReader::<J::Value>::open(&run.path, self.read)?.track(&gauge)))
            },
        )?;
        opened.sort_unstable_by_key(|&(i, _)| i);
        let readers: Vec<_> = opened.into_iter().map(|(_, reader)| reader).collect();
        spiller.note_final_merge(&gauge);
        let owned: Vec<u32> = (0..partitions).filter(|&p| owner(p) == rank).collect();
        let mut pending = None;
        // One output is reduced on this thread (part files have a span per partition).
        let reduce_span = match output {
            OutputSpec::Dir(_) => None,
            _ => progress.span(SpanKind::Reduce),
        };
        let reduce_retries = AtomicU64::new(0);
        let (output_keys, output_bytes, output_files) = match (output, &staged) {
            (OutputSpec::Dir(_), Some(staged)) => {
                let resumable = job_dir.as_ref().map(|dir| (dir, &resumed));
                self.reduce_to_dir(job, &readers, &owned, staged.path(), &reduce_retries, resumable)?
            }
            _ if rank != 0 => (0, 0, 0),
            (OutputSpec::File(path), _) => {
                let (keys, bytes, file) = self.reduce_to_file(job, &readers, path, &reduce_retries)?;
                pending = file;
                (keys, bytes, 1)
            }
            (OutputSpec::Sink(sink), _) => {
                reduce_all(job, &readers, OutputFile::sink(sink.clone()), self.sync)
                    .map(|(k, b, _)| (k, b, 0))?
            }
            _ => reduce_all(job, &readers, OutputFile::stdout(), self.sync).map(|(k, b, _)| (k, b, 1))?,
        };
        drop(readers);
        drop(reduce_span);
        let stats = spiller.stats();
        let finished = Instant::now();
        let metrics = Metrics {
            ranks,
            rank,
            threads: self.threads,
            partitions,
            memory_budget: self.memory_budget,
            memory_budget_source: self.memory_budget_source.clone(),
            max_open_runs: self.max_open_runs,
            io_backend: self.io.name().to_owned(),
            input_files: given.totals().0,
            input_bytes: given.totals().1,
            splits: mapped.splits,
            map_records: mapped.records,
            spills: stats.spills,
            spill_bytes: stats.spill_bytes,
            merge_steps: stats.merge_steps,
            merge_bytes: stats.merge_bytes,
            max_fan_in: stats.max_fan_in,
            peak_open_runs: stats.peak_open_runs,
            bytes_sent: exchanged.sent,
            bytes_received: exchanged.received,
            output_keys,
            output_bytes,
            output_files,
            peak_rss_bytes: peak_rss(),
            peak_anon_bytes: sampler.finish(),
            exchange: exchanged.times,
            retries: Retries {
                map: mapped.retries,
                merge: stats.merge_retries,
                reduce: reduce_retries.into_inner(),
            },
            // (Counted once, on rank 0, but the runs each rank adopted.)
            resumed: ResumeStats {
                splits_done: if rank == 0 { done_before } else { 0 },
                runs_kept: kept_runs,
                runs_dropped: if rank == 0 { resumed.dropped_runs } else { 0 },
                partitions_kept: resumed.parts_kept.load(Ordering::Relaxed),
                journal_stopped: resumed.journal_stopped.clone(),
            },
            seconds: PhaseTimes {
                map: (map_done - started).as_secs_f64(),
                exchange: (exchange_done - map_done).as_secs_f64(),
                merge: (merge_done - exchange_done).as_secs_f64(),
                reduce: (finished - merge_done).as_secs_f64(),
                total: (finished - started).as_secs_f64(),
            },
            per_rank: Vec::new(),
        };
        // Every rank's part files are written once rank 0 has their metrics.
        let metrics = if ranks > 1 { self.gather_metrics(metrics)? } else { metrics };
        if ranks > 1 {
            self.gather_record()?;
        }
        if rank == 0 {
            let _span = progress.span(SpanKind::Commit); // the report's record (--report)
            self.commit(&metrics, staged, pending, job_dir.as_ref())?;
        }
        drop(spiller);
        if let Some(dir) = job_dir
            && rank == 0
        {
            crate::failpoint::hit("commit.finish");
            dir.finish()?;
        }
        progress.runs_waiting.store(0, Ordering::Relaxed);
        progress.set_phase(Phase::Done);
        Ok(metrics)
    }

    /// Refuses `partitions` part files when every spill run's index of them would not fit in
    /// a thread's share of the memory budget (each spill would then write more index than
    /// data, and a million partitions would fill the disk with indexes).
    fn check_partitions(&self, partitions: u32) -> Result<()> {
        let index = u64::from(partitions) * RUN_INDEX_PER_PARTITION;
        let share = self.memory_budget / self.threads as u64;
        if index > share {
            return Err(ConfigError(format!(
                "{partitions} partitions need at least {} of memory budget per thread ({} threads): \
                 every spill run carries a {} index of its partitions, more than the {} share of \
                 a thread (raise the budget to {} or use fewer partitions)",
                human_bytes(index),
                self.threads,
                human_bytes(index),
                human_bytes(share),
                human_bytes(index * self.threads as u64),
            ))
            .into());
        }
        Ok(())
    }

    /// Puts the output in place (the staged directory with `_SUCCESS`, or the one output
    /// file; durable with [`EngineBuilder::sync`]) together with the metrics file: written and
    /// `fsync`ed before the output is committed, renamed into place right after it, so that a
    /// metrics file that cannot be written fails the job before its output appears.
    fn commit(
        &self,
        metrics: &Metrics,
        staged: Option<StagedDir>,
        pending: Option<Destination>,
        job_dir: Option<&JobDir>,
    ) -> Result<()> {
        let json = serde_json::to_vec_pretty(metrics).expect("metrics serialize");
        if let Some(job_dir) = job_dir {
            // What is about to be renamed into place, so that a job killed right after the
            // rename finds its output committed when it resumes.
            let temp = pending.as_ref().and_then(Destination::positioned).map(|(_, path)| path);
            let path = staged.as_ref().map(StagedDir::path).or(temp);
            job_dir.committing(path, metrics)?;
            crate::failpoint::hit("commit.output");
        }
        commit_with_metrics(self.metrics_file.as_deref(), &json, || {
            if let Some(staged) = staged {
                staged.commit(&json, self.sync)?;
            }
            if let Some(dest) = pending {
                dest.commit(self.sync)?; // with sync: synced already, renamed, the directory synced
            }
            Ok(())
        })
    }

    /// Rank 0 receives every rank's record of the run (`--report`; empty from a rank that does
    /// not record) and keeps the others' in its recorder. Every rank calls it, recording or
    /// not, so that the collective always matches.
    fn gather_record(&self) -> Result<()> {
        let recorder = self.progress.recorder();
        if let Some(recorder) = recorder {
            recorder.set_rank(self.cluster.rank(), self.cluster.size());
        }
        let mine = recorder.map(|r| serde_json::to_vec(&r.rank_record()).expect("a record serializes"));
        if let Some(all) = self.cluster.gather(&mine.unwrap_or_default())? {
            let others = all
                .iter()
                .enumerate()
                .filter(|(rank, bytes)| *rank != 0 && !bytes.is_empty())
                .map(|(_, bytes)| {
                    serde_json::from_slice(bytes)
                        .map_err(|e| Error::Cluster(format!("bad record of the run from a rank: {e}")))
                })
                .collect::<Result<Vec<RankRecord>>>()?;
            if let Some(recorder) = recorder {
                recorder.set_others(others);
            }
        }
        Ok(())
    }

    /// Rank 0 receives every rank's metrics and returns the totals; other ranks their own.
    fn gather_metrics(&self, mine: Metrics) -> Result<Metrics> {
        let json = serde_json::to_vec(&mine).expect("metrics serialize");
        match self.cluster.gather(&json)? {
            Some(all) => {
                let parts = all
                    .iter()
                    .map(|bytes| {
                        serde_json::from_slice(bytes)
                            .map_err(|e| Error::Cluster(format!("bad metrics from a rank: {e}")))
                    })
                    .collect::<Result<Vec<Metrics>>>()?;
                Ok(Metrics::totals(parts))
            }
            None => Ok(mine),
        }
    }
}

/// The inputs of a run: opened up front, or arriving while it runs.
#[derive(Clone, Copy)]
enum Given<'a> {
    Inputs(&'a Inputs),
    Feed(&'a InputFeed),
}

impl Given<'_> {
    /// (files, bytes): all of them, or those fed so far (on another rank than 0: those seen).
    fn totals(&self) -> (u64, u64) {
        match self {
            Given::Inputs(inputs) => (inputs.files().len() as u64, inputs.total_bytes()),
            Given::Feed(feed) => feed.totals(),
        }
    }

    fn total_bytes(&self) -> u64 {
        self.totals().1
    }

    fn check_unchanged(&self) -> Result<()> {
        match self {
            Given::Inputs(inputs) => inputs.check_unchanged(),
            Given::Feed(feed) => feed.check_unchanged(),
        }
    }
}

/// What must be equal on every rank: the job (type, parameters, split mode), the routing,
/// the split plan, the output and the inputs (paths and sizes), each digested with a fixed
/// hash (ahash's output may depend on the build, the partitioner fingerprint checks that);
/// the token is this process's own choice (rank 0's names the job's staging directory).
fn agreement<J: Job>(
    job: &J,
    given: Given<'_>,
    partitioner: &dyn Partitioner,
    split_size: usize,
    output: &OutputSpec,
) -> Agreement {
    let digest = |text: &str| xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let mut files = String::new();
    match given {
        Given::Inputs(inputs) => {
            for f in inputs.files() {
                files.push_str(&format!("{}:{}|", f.path.display(), f.bytes().len()));
            }
        }
        // Only rank 0 reads the list: the ranks agree on its name.
        Given::Feed(feed) => files = format!("streamed from {}", feed.label()),
    }
    Agreement {
        settings: vec![
            ("the job", digest(&format!("{}|{}", std::any::type_name::<J>(), job.parameters()))),
            ("the partition counts (-r)", digest(&partitioner.partitions().to_string())),
            ("the splits (--split-size)", digest(&format!("{:?}|{split_size}", job.split_mode()))),
            ("the outputs", digest(&format!("{output:?}"))),
            ("the inputs (paths or sizes)", digest(&files)),
        ],
        fingerprint: partitioner.fingerprint(),
        token: fresh_token(),
    }
}
