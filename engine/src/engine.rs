//! The engine: configuration, and the run of a job through map, merge and reduce.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use spillway_shuffle::{
    ByteSource, HashPartitioner, IoBackend, Merge, OpenRunGauge, Partitioner, ReadMode, RunInfo, RunReader,
    RunWriter, limits, plan_merges,
};

use crate::buffer::{AppendBuffer, CombineBuffer, SpillBuffer};
use crate::cluster::{Agreement, Cluster, ExchangeStats, InSection, Local, OutSection, SplitSource};
use crate::error::{ConfigError, Error, Result};
use crate::input::{Inputs, SplitRange};
use crate::job::{Emitter, Job};
use crate::metrics::{AnonSampler, Metrics, Phase, PhaseTimes, Progress, peak_rss};
use crate::output::{
    MetricsFile, OutputFile, OutputSpec, Pending, StagedDir, fresh_token, part_name, sync_parent,
};
use crate::pool::{self, FirstError};
use crate::spill::{SpillDir, Spiller};

/// Largest default split size: 64 MiB. The default is smaller for small inputs, so that every
/// thread gets several splits: `clamp(input / (8 x threads), 1 MiB, 64 MiB)`.
pub const DEFAULT_SPLIT_SIZE: usize = 64 << 20;
/// Default memory budget for map-side buffers: 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 1 << 30;
/// Smallest accepted memory budget: 64 KiB.
pub const MIN_MEMORY_BUDGET: u64 = 64 << 10;
/// Smallest share of the memory budget one thread may get: 16 KiB (below that a thread spills
/// a run every few records).
pub const MIN_THREAD_SHARE: u64 = 16 << 10;
/// Bytes of index every spill run carries per partition (its footer entry).
const RUN_INDEX_PER_PARTITION: u64 = 32;

/// Builds an [`Engine`]. Every setting has a default; see each method.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    threads: usize,
    partitions: u32,
    memory_budget: u64,
    max_open_runs: Option<usize>,
    spill_dir: Option<PathBuf>,
    split_size: Option<usize>,
    io: IoBackend,
    read: ReadMode,
    progress: Option<Arc<Progress>>,
    cluster: Option<Arc<dyn Cluster>>,
    metrics_file: Option<PathBuf>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            partitions: 16,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            max_open_runs: None,
            spill_dir: None,
            split_size: None,
            io: IoBackend::Auto,
            read: ReadMode::Mmap,
            progress: None,
            cluster: None,
            metrics_file: None,
        }
    }
}

impl EngineBuilder {
    /// Worker threads (default: the number of CPUs).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Partitions R (default 16): reduce parallelism and the number of part files.
    pub fn partitions(mut self, r: u32) -> Self {
        self.partitions = r;
        self
    }

    /// Memory budget of the map-side buffers, in bytes, shared equally by the threads
    /// (default 1 GiB; at least 64 KiB). A thread spills when its share is used.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// The open-run threshold F: no merge reads more runs at once (default: from
    /// `RLIMIT_NOFILE`, see [`limits::default_max_open_runs`]).
    pub fn max_open_runs(mut self, f: usize) -> Self {
        self.max_open_runs = Some(f);
        self
    }

    /// Parent directory of the job's spill directory (default: `$TMPDIR` or `/tmp`).
    pub fn spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// Target split size in bytes (default: see [`DEFAULT_SPLIT_SIZE`]).
    pub fn split_size(mut self, bytes: usize) -> Self {
        self.split_size = Some(bytes);
        self
    }

    /// How runs and outputs are written (default [`IoBackend::Auto`]).
    pub fn io(mut self, io: IoBackend) -> Self {
        self.io = io;
        self
    }

    /// How runs are read (default [`ReadMode::Mmap`]). Inputs are opened by [`Inputs`].
    pub fn read_mode(mut self, read: ReadMode) -> Self {
        self.read = read;
        self
    }

    /// Counters the job updates as it runs (for a progress bar in another thread).
    pub fn progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The ranks this engine runs with (default: [`Local`], one process). With the `mpi`
    /// feature, `MpiCluster::world()` runs the job across the ranks of `mpirun`.
    pub fn cluster(mut self, cluster: Arc<dyn Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Also writes the job's metrics (JSON) into `path`, committed with the output: written
    /// and `fsync`ed before the output appears, renamed into place right after it (a device
    /// or FIFO is written in place, after the output). Rank 0 writes it.
    pub fn metrics_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.metrics_file = Some(path.into());
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// Zero threads, partitions or split size; a budget under 64 KiB; F under 2.
    pub fn build(self) -> Result<Engine, ConfigError> {
        if self.threads == 0 {
            return Err(ConfigError("threads must be at least 1".into()));
        }
        if self.partitions == 0 {
            return Err(ConfigError("partitions must be at least 1".into()));
        }
        if self.memory_budget < MIN_MEMORY_BUDGET {
            return Err(ConfigError(format!(
                "memory budget {} is below the 64K minimum",
                self.memory_budget
            )));
        }
        if self.split_size == Some(0) {
            return Err(ConfigError("split size must be at least 1 byte".into()));
        }
        if let Some(limit) = memory_limit()
            && self.memory_budget > limit
        {
            return Err(ConfigError(format!(
                "a memory budget of {} is more than the {} of memory this process may use: the job \
                 would be killed before it spills (choose a smaller budget)",
                human_bytes(self.memory_budget),
                human_bytes(limit),
            )));
        }
        let share = self.memory_budget / self.threads as u64;
        if share < MIN_THREAD_SHARE {
            return Err(ConfigError(format!(
                "a memory budget of {} shared by {} threads leaves each {share} bytes; each thread needs at \
                 least {} KiB (raise the budget to {} or use fewer threads)",
                human_bytes(self.memory_budget),
                self.threads,
                MIN_THREAD_SHARE >> 10,
                human_bytes(MIN_THREAD_SHARE * self.threads as u64),
            )));
        }
        let max_open_runs = match self.max_open_runs {
            Some(f) if f < 2 => {
                return Err(ConfigError(format!("max open runs must be at least 2 (got {f})")));
            }
            Some(f) => f,
            None => limits::default_max_open_runs(self.threads),
        };
        Ok(Engine {
            threads: self.threads,
            partitions: self.partitions,
            memory_budget: self.memory_budget,
            max_open_runs,
            spill_dir: self.spill_dir.unwrap_or_else(std::env::temp_dir),
            split_size: self.split_size,
            io: self.io.resolve(),
            read: self.read,
            progress: self.progress.unwrap_or_default(),
            cluster: self.cluster.unwrap_or_else(|| Arc::new(Local)),
            metrics_file: self.metrics_file,
        })
    }
}

/// The memory this process may use: the machine's (`MemTotal`), or its control group's limit
/// when lower (a batch system's allocation). `None` when neither can be read.
fn memory_limit() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib << 10)
    });
    let group = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok());
    match (total, group) {
        (Some(t), Some(g)) => Some(t.min(g)),
        (t, g) => t.or(g),
    }
}

/// `n` bytes for messages: `512 KiB`, `3 MiB`, `2 GiB` (rounded up).
fn human_bytes(n: u64) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    match units.iter().find(|(_, shift)| n >= 1 << shift) {
        Some((unit, shift)) => format!("{} {unit}", n.div_ceil(1 << shift)),
        None => format!("{n} bytes"),
    }
}

/// Runs jobs. Build one with [`Engine::builder`].
#[derive(Debug)]
pub struct Engine {
    threads: usize,
    partitions: u32,
    memory_budget: u64,
    max_open_runs: usize,
    spill_dir: PathBuf,
    split_size: Option<usize>,
    io: IoBackend,
    read: ReadMode,
    progress: Arc<Progress>,
    cluster: Arc<dyn Cluster>,
    metrics_file: Option<PathBuf>,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
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
        let started = Instant::now();
        let sampler = AnonSampler::start();
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
        progress.set_phase(Phase::Starting);
        let split_size = self.split_size.unwrap_or_else(|| {
            let per_split = inputs.total_bytes() / (8 * (self.threads * ranks) as u64);
            usize::try_from(per_split).unwrap_or(usize::MAX).clamp(1 << 20, DEFAULT_SPLIT_SIZE)
        });
        // Every rank must run the same job over the same inputs with the same routing.
        let token = self.cluster.agree(&agreement::<J>(job, inputs, partitioner, split_size, output))?;
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
        let splits = inputs.plan_splits(job.split_mode(), split_size)?;
        progress.splits_total.store(splits.len() as u64, Ordering::Relaxed);
        progress.bytes_total.store(inputs.total_bytes(), Ordering::Relaxed);
        let spill_dir = SpillDir::for_rank(&self.spill_dir, rank)?;
        let spiller = Spiller::new(
            spill_dir.path(),
            partitioner.partitions(),
            self.io,
            self.read,
            self.max_open_runs,
            progress,
        );

        progress.set_phase(Phase::Map);
        let mapped = self.map_phase(job, inputs, &splits, partitioner, &spiller);
        inputs.check_unchanged()?; // also when the map failed: a changed input explains it
        let (map_records, mapped_splits) = mapped?;
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
            if ranks > 1 { self.exchange::<J>(&spiller, &owner)? } else { ExchangeStats::default() };
        let exchange_done = Instant::now();
        let finals = self.merge_phase(job, &spiller)?;
        let merge_done = Instant::now();

        progress.set_phase(Phase::Reduce);
        let gauge = OpenRunGauge::new();
        let readers = finals
            .iter()
            .map(|run| Ok(RunReader::<J::Value>::open(&run.path, self.read)?.track(&gauge)))
            .collect::<Result<Vec<_>>>()?;
        spiller.note_final_merge(&gauge);
        let owned: Vec<u32> = (0..partitions).filter(|&p| owner(p) == rank).collect();
        let mut pending = None;
        if let (OutputSpec::Dir(dir), None) = (output, &staged) {
            staged = Some(StagedDir::attach(dir, token)?); // made by rank 0 before the map phase
        }
        let (output_keys, output_bytes, output_files) = match (output, &staged) {
            (OutputSpec::Dir(_), Some(staged)) => self.reduce_to_dir(job, &readers, &owned, staged.path())?,
            _ if rank != 0 => (0, 0, 0),
            (OutputSpec::File(path), _) => {
                let (keys, bytes, file) = reduce_all(job, &readers, OutputFile::create(path, self.io)?)?;
                pending = file;
                (keys, bytes, 1)
            }
            _ => reduce_all(job, &readers, OutputFile::stdout()).map(|(k, b, _)| (k, b, 1))?,
        };
        drop(readers);
        let stats = spiller.stats();
        let finished = Instant::now();
        let metrics = Metrics {
            ranks,
            rank,
            threads: self.threads,
            partitions,
            memory_budget: self.memory_budget,
            max_open_runs: self.max_open_runs,
            io_backend: self.io.name().to_owned(),
            input_files: inputs.files().len() as u64,
            input_bytes: inputs.total_bytes(),
            splits: mapped_splits,
            map_records,
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
        if rank == 0 {
            self.commit(&metrics, staged, pending)?;
        }
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
    /// file) together with the metrics file: written and `fsync`ed before the output is
    /// committed, renamed into place right after it, so that a metrics file that cannot be
    /// written fails the job before its output appears.
    fn commit(&self, metrics: &Metrics, staged: Option<StagedDir>, pending: Option<Pending>) -> Result<()> {
        let json = serde_json::to_vec_pretty(metrics).expect("metrics serialize");
        let metrics_file = match &self.metrics_file {
            Some(path) => Some(MetricsFile::prepare(path, &json)?),
            None => None,
        };
        if let Some(staged) = staged {
            staged.commit(&json, true)?;
        }
        if let Some(file) = pending {
            sync_parent(&file.rename()?);
        }
        if let Some(file) = metrics_file {
            file.commit()?;
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

    /// Sends every local run's sections that other ranks own to their owners, and writes
    /// what arrives as runs (one run per source run, sections copied as they are, validated
    /// when opened). A local run stays as it is when nothing left it or when no merge will be
    /// needed (reduce reads only the partitions this rank owns, so the sections that left are
    /// never read again); otherwise its own sections are copied into a smaller run, so that
    /// merges do not carry the sections that left.
    fn exchange<J: Job>(&self, spiller: &Spiller<'_>, owner: &dyn Fn(u32) -> usize) -> Result<ExchangeStats> {
        let started = Instant::now();
        let rank = self.cluster.rank();
        let runs = spiller.take_all();
        let readers = runs
            .iter()
            .map(|r| RunReader::<J::Value>::open(&r.path, self.read))
            .collect::<Result<Vec<_>, _>>()?;
        let mut outgoing = Vec::new();
        // Per local run: bytes of sections this rank owns, and of sections that leave.
        let mut own = vec![0u64; runs.len()];
        let mut leaving = vec![0u64; runs.len()];
        for (i, reader) in readers.iter().enumerate() {
            for p in 0..reader.partitions() {
                let section = reader.section(p);
                if section.records == 0 {
                    continue;
                }
                if owner(p) == rank {
                    own[i] += section.len;
                } else {
                    leaving[i] += section.len;
                    outgoing.push(OutSection {
                        run: i as u32,
                        partition: p,
                        records: section.records,
                        blocks: section.blocks,
                        bytes: reader.section_bytes(p),
                    });
                }
            }
        }
        let prepare = started.elapsed().as_secs_f64();
        let partitions = spiller.partitions();
        // The run being received: (source rank, source run) and its writer.
        type Receiving<V> = Option<((usize, u32), RunWriter<V>)>;
        let mut current: Receiving<J::Value> = None;
        // A section larger than a receive buffer, collected piece by piece in a file.
        let mut pieces: Option<(PathBuf, std::fs::File)> = None;
        let mut received: Vec<RunInfo> = Vec::new();
        let buffers = usize::try_from(self.memory_budget).unwrap_or(usize::MAX);
        let mut stats = self.cluster.exchange(&outgoing, owner, buffers, &mut |s: InSection<'_>| {
            if current.as_ref().is_none_or(|(key, _)| *key != (s.source, s.run)) {
                if let Some((_, writer)) = current.take() {
                    received.push(writer.finish(false)?);
                }
                let writer = RunWriter::<J::Value>::create(&spiller.next_path("recv"), partitions, self.io)?;
                current = Some(((s.source, s.run), writer));
            }
            let (_, writer) = current.as_mut().expect("a writer is open");
            if s.is_whole() {
                writer.append_section(s.partition, s.bytes, s.records, s.blocks)?;
                return Ok(());
            }
            if s.offset == 0 {
                let path = spiller.next_path("piece");
                let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
                pieces = Some((path, file));
            }
            let (path, file) = pieces.as_mut().expect("a section's first piece comes first");
            file.write_all(s.bytes).map_err(|e| Error::io("write", &*path, e))?;
            if s.is_last() {
                let (path, file) = pieces.take().expect("collecting a section");
                drop(file);
                let section = ByteSource::open(&path, ReadMode::Mmap)?;
                writer.append_section(s.partition, &section, s.records, s.blocks)?;
                drop(section);
                let _ = std::fs::remove_file(&path);
            }
            Ok(())
        })?;
        let started = Instant::now();
        if let Some((_, writer)) = current.take() {
            received.push(writer.finish(false)?);
        }
        stats.times.finish = started.elapsed().as_secs_f64();

        // This rank's own sections.
        let started = Instant::now();
        // Kept whole, a run costs a validation of the sections that left when it is opened
        // again (measured: ~0.07 s for 270 MiB, against ~0.4 s for copying the sections that
        // stay), but merges would carry them: keep runs whole unless a merge will be needed.
        let kept = own.iter().filter(|&&b| b > 0).count();
        let merges = kept + received.len() > self.max_open_runs;
        for (i, (run, reader)) in runs.into_iter().zip(&readers).enumerate() {
            if own[i] == 0 {
                let _ = std::fs::remove_file(&run.path);
            } else if leaving[i] == 0 || !merges {
                spiller.add(run);
            } else {
                let mut writer =
                    RunWriter::<J::Value>::create(&spiller.next_path("own"), partitions, self.io)?;
                for p in (0..partitions).filter(|&p| owner(p) == rank) {
                    let section = reader.section(p);
                    if section.records > 0 {
                        writer.append_section(p, reader.section_bytes(p), section.records, section.blocks)?;
                    }
                }
                spiller.add(writer.finish(false)?);
                let _ = std::fs::remove_file(&run.path);
            }
        }
        drop(readers);
        for run in received {
            spiller.add(run);
        }
        stats.times.prepare = prepare;
        stats.times.local = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Maps every split on the worker threads; background merges run on the same threads as
    /// soon as F runs wait. Returns the number of pairs emitted.
    fn map_phase<J: Job>(
        &self,
        job: &J,
        inputs: &Inputs,
        splits: &[SplitRange],
        partitioner: &dyn Partitioner,
        spiller: &Spiller<'_>,
    ) -> Result<(u64, u64)> {
        let sizes: Vec<u64> = splits.iter().map(|r| (r.end - r.start) as u64).collect();
        let source = self.cluster.split_source(&sizes, &self.progress);
        let source: &dyn SplitSource = &*source;
        let records = AtomicU64::new(0);
        let mapped = AtomicU64::new(0);
        let failure = FirstError::default();
        let share = usize::try_from(self.memory_budget / self.threads as u64).unwrap_or(usize::MAX);
        let progress = &*self.progress;
        std::thread::scope(|scope| {
            if pool::spawn(scope, "spillway-splits".into(), &failure, || source.serve()).is_none() {
                return;
            }
            for t in 0..self.threads {
                let (records, mapped, failure) = (&records, &mapped, &failure);
                let worker = move || {
                    let mut buffer: Box<dyn SpillBuffer<J::Value>> = if J::COMBINER {
                        Box::new(CombineBuffer::new(job, spiller, partitioner, share))
                    } else {
                        Box::new(AppendBuffer::new(spiller, partitioner, share))
                    };
                    let mut emitted = 0;
                    loop {
                        if failure.failed() || progress.cancelled() {
                            break;
                        }
                        if let Some(batch) = spiller.take_background_batch() {
                            match spiller.merge(job, batch) {
                                Ok(run) => spiller.add(run),
                                Err(e) => failure.set(e),
                            }
                            continue;
                        }
                        let Some(i) = source.next() else { break };
                        let range = splits[i];
                        mapped.fetch_add(1, Ordering::Relaxed);
                        let split = inputs.split(range);
                        let mut emitter = Emitter { buffer: &mut *buffer, records: 0 };
                        let outcome = catch_unwind(AssertUnwindSafe(|| job.map(&split, &mut emitter)));
                        emitted += emitter.records;
                        let message = match outcome {
                            Ok(Ok(())) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(panic) => Some(panic_message(&*panic)),
                        };
                        if let Some(message) = message {
                            failure.set(Error::Job { split: split.describe(), message });
                            break;
                        }
                        if let Some(e) = buffer.take_error() {
                            failure.set(e);
                            break;
                        }
                        inputs.release(range);
                        progress.bytes_mapped.fetch_add(split.data.len() as u64, Ordering::Relaxed);
                        progress.splits_done.fetch_add(1, Ordering::Relaxed);
                    }
                    if !failure.failed()
                        && let Err(e) = buffer.spill()
                    {
                        failure.set(e);
                    }
                    records.fetch_add(emitted, Ordering::Relaxed);
                };
                if pool::spawn(scope, format!("spillway-map-{t}"), failure, worker).is_none() {
                    break;
                }
            }
        });
        if progress.cancelled() {
            failure.set(Error::Cancelled);
        }
        failure.into_result()?;
        source.finish()?;
        Ok((records.into_inner(), mapped.into_inner()))
    }

    /// Runs the planned intermediate merges (in waves of independent steps, in parallel);
    /// returns the at most F runs of the final merge.
    fn merge_phase<J: Job>(&self, job: &J, spiller: &Spiller<'_>) -> Result<Vec<RunInfo>> {
        let runs = spiller.take_all();
        let sizes: Vec<u64> = runs.iter().map(|r| r.bytes).collect();
        let plan = plan_merges(&sizes, self.max_open_runs);
        let mut slots: Vec<Option<RunInfo>> = runs.into_iter().map(Some).collect();
        slots.resize(sizes.len() + plan.steps.len(), None);
        let mut pending: Vec<_> = plan.steps.iter().collect();
        while !pending.is_empty() {
            let (ready, later): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|step| step.inputs.iter().all(|&i| slots[i].is_some()));
            pending = later;
            let work: Vec<(usize, Vec<RunInfo>)> = ready
                .iter()
                .map(|step| {
                    (step.output, step.inputs.iter().map(|&i| slots[i].take().expect("ready")).collect())
                })
                .collect();
            let done = pool::for_each("spillway-merge", self.threads, work, |(output, inputs)| {
                spiller.merge(job, inputs).map(|run| (output, run))
            })?;
            for (output, run) in done {
                slots[output] = Some(run);
            }
        }
        Ok(plan.final_inputs.iter().map(|&i| slots[i].take().expect("final input exists")).collect())
    }

    /// Reduces every partition into its own part file in the staging directory `dir`,
    /// partitions spread over the threads.
    fn reduce_to_dir<J: Job>(
        &self,
        job: &J,
        readers: &[RunReader<J::Value>],
        owned: &[u32],
        dir: &Path,
    ) -> Result<(u64, u64, u64)> {
        let progress = &*self.progress;
        let parts = pool::for_each("spillway-reduce", self.threads, owned.to_vec(), |p| {
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            let out = OutputFile::create_staged(&dir.join(part_name(p)), self.io)?;
            let merge = Merge::new(readers.iter().map(|r| r.iter(p)).collect());
            let (keys, bytes, _) = reduce_merge(job, merge, out, &format!("reduce of partition {p}"))?;
            progress.partitions_done.fetch_add(1, Ordering::Relaxed);
            Ok((keys, bytes))
        })?;
        // (On failure the staging directory goes, with every part file written into it.)
        let (keys, bytes) = parts.iter().fold((0, 0), |(k, b), &(keys, bytes)| (k + keys, b + bytes));
        Ok((keys, bytes, parts.len() as u64))
    }
}

/// Reduces every partition of `readers` into one output, all keys in byte order: partitions
/// hold disjoint keys, so one merge over every (run, partition) cursor yields global order
/// while never reading more than the F runs that are open. Returns the file waiting to be
/// renamed into place.
fn reduce_all<J: Job>(
    job: &J,
    readers: &[RunReader<J::Value>],
    out: OutputFile,
) -> Result<(u64, u64, Option<Pending>)> {
    let partitions = readers.first().map_or(0, RunReader::partitions);
    let merge = Merge::new(readers.iter().flat_map(|r| (0..partitions).map(|p| r.iter(p))).collect());
    reduce_merge(job, merge, out, "reduce")
}

/// Reduces every group of `merge` into `out` and finishes it: (keys, bytes, the file waiting
/// to be renamed into place).
fn reduce_merge<J: Job>(
    job: &J,
    mut merge: Merge<'_, J::Value>,
    mut out: OutputFile,
    what: &str,
) -> Result<(u64, u64, Option<Pending>)> {
    let mut keys = 0u64;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        while let Some((key, mut group)) = merge.next_group() {
            job.reduce(key, &mut group, &mut out)?;
            keys += 1;
        }
        Ok::<(), crate::error::JobError>(())
    }));
    let message = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => Some(panic_message(&*panic).into()),
    };
    if let Some(e) = message {
        // An I/O error on the output is the machine's fault, not the job's: report it as such,
        // naming the file once (the sink's own errors already name it).
        return Err(match e.downcast::<std::io::Error>() {
            Ok(io) => {
                let kind = io.kind();
                match io.raw_os_error() {
                    Some(code) => Error::io("write", out.describe(), std::io::Error::from_raw_os_error(code)),
                    None => match io.into_inner().map(|inner| inner.downcast::<spillway_shuffle::Error>()) {
                        Some(Ok(sink)) => Error::Shuffle(*sink),
                        Some(Err(other)) => {
                            Error::io("write", out.describe(), std::io::Error::new(kind, other))
                        }
                        None => Error::io("write", out.describe(), kind.into()),
                    },
                }
            }
            Err(e) => Error::Job { split: what.to_owned(), message: e.to_string() },
        });
    }
    let (bytes, file) = out.finish()?;
    Ok((keys, bytes, file))
}

/// What must be equal on every rank: the job (type, parameters, split mode), the routing,
/// the split plan, the output and the inputs (paths and sizes), each digested with a fixed
/// hash (ahash's output may depend on the build, the partitioner fingerprint checks that);
/// the token is this process's own choice (rank 0's names the job's staging directory).
fn agreement<J: Job>(
    job: &J,
    inputs: &Inputs,
    partitioner: &dyn Partitioner,
    split_size: usize,
    output: &OutputSpec,
) -> Agreement {
    let digest = |text: &str| xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let mut files = String::new();
    for f in inputs.files() {
        files.push_str(&format!("{}:{}|", f.path.display(), f.bytes().len()));
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
