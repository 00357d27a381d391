//! [`EngineBuilder`]: the settings of an [`Engine`], their defaults, and the checks of `build`.

use std::path::PathBuf;
use std::sync::Arc;

use spillway_shuffle::{IoBackend, ReadMode, limits};

use super::Engine;
use super::budget::MemoryBudget;
use crate::cluster::{Cluster, Local};
use crate::error::{ConfigError, Result};

use crate::metrics::Progress;

/// Largest default split size: 64 MiB. The default is smaller for small inputs, so that every
/// thread gets several splits: `clamp(input / (8 x threads), 1 MiB, 64 MiB)`.
pub const DEFAULT_SPLIT_SIZE: usize = 64 << 20;
/// The memory budget when nothing about the machine's memory can be read: 1 GiB. The default
/// is computed from the machine ([`MemoryBudget::detect`]).
pub const DEFAULT_MEMORY_BUDGET: u64 = super::budget::FALLBACK_BUDGET;
/// Smallest accepted memory budget: 64 KiB.
pub const MIN_MEMORY_BUDGET: u64 = 64 << 10;
/// Smallest share of the memory budget one thread may get: 16 KiB (below that a thread spills
/// a run every few records).
pub const MIN_THREAD_SHARE: u64 = 16 << 10;
/// Attempts of the job's code per split or partition by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Bytes of index every spill run carries per partition (its footer entry).
pub(super) const RUN_INDEX_PER_PARTITION: u64 = 32;

/// Builds an [`Engine`]. Every setting has a default; see each method.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    threads: usize,
    partitions: u32,
    memory_budget: Option<MemoryBudget>,
    max_open_runs: Option<usize>,
    spill_dir: Option<PathBuf>,
    split_size: Option<usize>,
    io: IoBackend,
    read: ReadMode,
    progress: Option<Arc<Progress>>,
    cluster: Option<Arc<dyn Cluster>>,
    metrics_file: Option<PathBuf>,
    sample_memory: bool,
    max_attempts: u32,
    resume: bool,
    sync: bool,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            partitions: 16,
            memory_budget: None,
            max_open_runs: None,
            spill_dir: None,
            split_size: None,
            io: IoBackend::Auto,
            read: ReadMode::Mmap,
            progress: None,
            cluster: None,
            metrics_file: None,
            sample_memory: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            resume: false,
            sync: true,
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

    /// Memory budget of the map-side buffers, in bytes, shared equally by the threads (at
    /// least 64 KiB; default: half of the memory this process may use on its node, see
    /// [`MemoryBudget::from_facts`]). A thread spills when its share is used. The metrics name
    /// its source `"EngineBuilder::memory_budget"`; [`EngineBuilder::memory`] names another.
    pub fn memory_budget(self, bytes: u64) -> Self {
        self.memory(MemoryBudget::given(bytes, "EngineBuilder::memory_budget"))
    }

    /// The memory budget with its source, which the metrics report as `memory_budget_source`
    /// (a front end's own default, or the flag it came from).
    pub fn memory(mut self, budget: MemoryBudget) -> Self {
        self.memory_budget = Some(budget);
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

    /// How runs are read (default [`ReadMode::Mmap`]). Inputs are opened by [`Inputs`](crate::Inputs).
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
    /// feature, `MpiCluster::world()?` runs the job across the ranks of `mpirun`, and
    /// `MpiCluster::new(&comm)?` across those of a communicator the caller made.
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

    /// How often the job's code is tried on one split, and on one partition's reduce, before
    /// the job fails (default 3; 1 turns retry off). A failed attempt (an error or a panic in
    /// `map`, `combine` or `reduce`) counts zero times: the map side drops the worker's buffer
    /// and the runs it spilled since its last commit point and maps those splits again; the
    /// reduce side writes the part file again. Failures of the machine (a full disk, a
    /// corrupt run) are not retried. Retries are counted in
    /// [`Metrics::retries`](crate::Metrics::retries).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Makes jobs resumable (default off): a job keeps its runs and a journal of what it has
    /// done in `.<output name>.spillway-job/` beside its output (instead of a temporary spill
    /// directory), and a job started again with the same settings and inputs after any kill
    /// or failure goes on from there: splits whose runs are kept (and validate) are not mapped
    /// again. A different job, settings that change the output, or a changed input are refused
    /// ([`Error::Resume`](crate::Error::Resume)), naming the difference. The directory is
    /// removed once the output is committed. Needs an output file or directory; one rank.
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Samples the process's anonymous memory every 10 ms on a thread of its own while a job
    /// runs, for [`Metrics::peak_anon_bytes`](crate::Metrics::peak_anon_bytes) (default off:
    /// a library call starts no thread it does not need).
    pub fn sample_memory(mut self, on: bool) -> Self {
        self.sample_memory = on;
        self
    }

    /// Whether outputs are made durable before they are put in place (default on): part
    /// files, `_SUCCESS` and one output file are `fsync`ed, renamed, and their directory
    /// `fsync`ed. Off, nothing is flushed: an existing output file is swapped out rather than
    /// renamed over ([`TempFile::replace_unsynced`](crate::TempFile::replace_unsynced)), and
    /// a crash soon after the job may lose the output (never half of it under its final
    /// name). The metrics file is `fsync`ed either way.
    pub fn sync(mut self, on: bool) -> Self {
        self.sync = on;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// Zero threads, partitions or split size; a budget under 64 KiB, above the memory of the
    /// machine or of the process's control group, or leaving a thread less than 16 KiB
    /// (`MIN_THREAD_SHARE`); F under 2.
    pub fn build(mut self) -> Result<Engine, ConfigError> {
        if self.threads == 0 {
            return Err(ConfigError("threads must be at least 1".into()));
        }
        let budget = self.memory_budget.take().unwrap_or_else(|| MemoryBudget::detect(self.threads));
        let (memory_budget, memory_budget_source) = (budget.bytes, budget.source);
        if self.partitions == 0 {
            return Err(ConfigError("partitions must be at least 1".into()));
        }
        if memory_budget < MIN_MEMORY_BUDGET {
            return Err(ConfigError(format!("memory budget {} is below the 64K minimum", memory_budget)));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError("max attempts must be at least 1".into()));
        }
        if self.split_size == Some(0) {
            return Err(ConfigError("split size must be at least 1 byte".into()));
        }
        if let Some(limit) = memory_limit()
            && memory_budget > limit
        {
            return Err(ConfigError(format!(
                "a memory budget of {} is more than the {} of memory this process may use: the job \
                 would be killed before it spills (choose a smaller budget)",
                human_bytes(memory_budget),
                human_bytes(limit),
            )));
        }
        let share = memory_budget / self.threads as u64;
        if share < MIN_THREAD_SHARE {
            return Err(ConfigError(format!(
                "a memory budget of {} shared by {} threads leaves each {share} bytes; each thread needs at \
                 least {} KiB (raise the budget to {} or use fewer threads)",
                human_bytes(memory_budget),
                self.threads,
                MIN_THREAD_SHARE >> 10,
                human_bytes(MIN_THREAD_SHARE * self.threads as u64),
            )));
        }
        if let Some(f) = self.max_open_runs
            && f < 2
        {
            return Err(ConfigError(format!("max open runs must be at least 2 (got {f})")));
        }
        Ok(Engine {
            threads: self.threads,
            partitions: self.partitions,
            memory_budget,
            memory_budget_source,
            max_open_runs: self.max_open_runs.unwrap_or_else(|| limits::default_max_open_runs(self.threads)),
            max_open_runs_set: self.max_open_runs,
            spill_dir: self.spill_dir.unwrap_or_else(std::env::temp_dir),
            split_size: self.split_size,
            io: self.io.resolve(),
            io_requested: self.io,
            read: self.read,
            progress: self.progress.unwrap_or_default(),
            cluster: self.cluster.unwrap_or_else(|| Arc::new(Local)),
            metrics_file: self.metrics_file,
            sample_memory: self.sample_memory,
            max_attempts: self.max_attempts,
            resume: self.resume,
            sync: self.sync,
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
pub(super) fn human_bytes(n: u64) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    match units.iter().find(|(_, shift)| n >= 1 << shift) {
        Some((unit, shift)) => format!("{} {unit}", n.div_ceil(1 << shift)),
        None => format!("{n} bytes"),
    }
}
