//! Options shared by the job subcommands, and running a job with progress and metrics.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use spillway_engine::shuffle::{IoBackend, Partitioner, ReadMode};
use spillway_engine::{
    ConfigError, DEFAULT_MAX_ATTEMPTS, DEFAULT_SPLIT_SIZE, Engine, EngineBuilder, FileDestination, FileNames,
    InputFeed, InputFile, Inputs, Job, MIN_MEMORY_BUDGET, MemoryBudget, OutputSpec, Progress, TempFile,
    parent_dir,
};

use super::report::ReportWriter;
use super::status::StatusWriter;

/// An error in the user's input found by the tool itself (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// A usage error found after the command line was parsed, such as two flags that disagree
/// (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl From<ConfigError> for UsageError {
    fn from(e: ConfigError) -> Self {
        UsageError(e.0)
    }
}

/// What a job reads: inputs opened up front, or the list of `--inputs-from` (`-`: standard
/// input), read while the job runs.
#[derive(Debug, Clone, Copy)]
pub enum JobInputs<'a> {
    /// Opened up front.
    Given(&'a Inputs),
    /// Named by this list while the job runs; the feed records the files' paths in the
    /// table given (which a job that names its files holds).
    Listed(&'a Path, &'a FileNames),
}

/// Writes `line` and a newline to standard error, ignoring failure: a full or closed
/// standard error must not change the exit status.
pub fn eprint_line(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The most partitions `-r` accepts (each partition costs memory in every buffer and merge).
pub const MAX_PARTITIONS: u32 = 1 << 20;

/// More part files than this get a warning (a million files in one directory is rarely meant).
const MANY_PART_FILES: u32 = 1 << 16;

/// The warning for an output of more than [`MANY_PART_FILES`] part files.
fn many_part_files(output: &OutputSpec, partitions: u32) -> Option<String> {
    match output {
        OutputSpec::Dir(dir) if partitions > MANY_PART_FILES => Some(format!(
            "spillway: warning: -r {partitions} writes {partitions} part files into {}",
            dir.display()
        )),
        _ => None,
    }
}

/// Bytes of partition index every spill run carries per partition (the engine refuses an R
/// whose index exceeds a thread's share of the budget).
const RUN_INDEX_PER_PARTITION: u64 = 32;

/// The partition count when `-r` is not given: one partition per thread of every rank, so that
/// no rank (and no thread) sits idle in reduce, and at least 16 (the single-process default).
/// At most what keeps a spill run's partition index within an eighth of a thread's share of
/// `memory`, and at most [`MAX_PARTITIONS`]; never below 16 (a thread's share is at least
/// 16 KiB, so that bound is at least 64).
///
/// Every rank must compute the same R (the ranks compare it before any work): on nodes with
/// different numbers of CPUs, give `-t` or `-r`.
pub fn default_partitions(ranks: usize, threads: usize, memory: u64) -> u32 {
    let wanted = u64::try_from(ranks).unwrap_or(u64::MAX).saturating_mul(threads as u64);
    let share = memory / threads.max(1) as u64;
    let bound = (share / (8 * RUN_INDEX_PER_PARTITION)).min(MAX_PARTITIONS.into());
    u32::try_from(wanted.min(bound).max(16)).unwrap_or(MAX_PARTITIONS)
}

/// Parses a whole number in `min..=max`.
fn parse_in<T: TryFrom<u64>>(s: &str, min: u64, max: u64) -> Result<T, String> {
    let n: u64 = s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))?;
    match T::try_from(n) {
        Ok(n_t) if (min..=max).contains(&n) => Ok(n_t),
        _ if max == u64::MAX => Err(format!("must be at least {min}")),
        _ => Err(format!("must be between {min} and {max}")),
    }
}

/// Parses a count that must be at least 1 (threads, record and key sizes).
pub fn parse_positive(s: &str) -> Result<usize, String> {
    parse_in(s, 1, u64::MAX)
}

/// Parses `-r`: 1 to [`MAX_PARTITIONS`].
pub fn parse_partitions(s: &str) -> Result<u32, String> {
    parse_in(s, 1, MAX_PARTITIONS.into())
}

/// Parses `--max-open-runs`: a merge reads at least 2 runs.
pub fn parse_fan_in(s: &str) -> Result<usize, String> {
    parse_in(s, 2, u64::MAX)
}

/// Parses `--max-attempts`: at least one attempt.
pub fn parse_attempts(s: &str) -> Result<u32, String> {
    parse_in(s, 1, u32::MAX.into())
}

/// The default of `--memory` for `--help`: the rule, and what it gives on this machine.
pub fn memory_default_help() -> String {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let here = MemoryBudget::detect(threads);
    format!(
        "[default: half of the memory this process may use: the least of MemAvailable, the \
         cgroup's memory.max (v1: memory.limit_in_bytes) and SLURM_MEM_PER_NODE (or \
         SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE), divided among the job's ranks on the node; \
         64M to 64G; here {}M: {}]",
        here.bytes >> 20,
        here.source
    )
}

/// Parses `--memory`: a size of at least the engine's minimum budget (64K).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if size < MIN_MEMORY_BUDGET {
        return Err(format!("must be at least {}K", MIN_MEMORY_BUDGET >> 10));
    }
    Ok(size)
}

/// Parses `--split-size`: a size of at least 1 byte.
pub fn parse_split_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("must be at least 1 byte".into()),
        size => Ok(size),
    }
}

/// Parses a size: a number with an optional binary suffix K, M, G or T (also KB/KiB...).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    let stripped = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match stripped.chars().last() {
        Some('K') => (&stripped[..stripped.len() - 1], 10),
        Some('M') => (&stripped[..stripped.len() - 1], 20),
        Some('G') => (&stripped[..stripped.len() - 1], 30),
        Some('T') => (&stripped[..stripped.len() - 1], 40),
        _ => (stripped, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| format!("invalid size {s:?} (examples: 1M, 512M, 2G)"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} is too large"))
}

/// The progress of the resumable job this process runs, for the signal handler's line.
pub static RESUMABLE: std::sync::OnceLock<Arc<Progress>> = std::sync::OnceLock::new();

/// Options every job subcommand takes.
#[derive(Debug, clap::Args)]
pub struct JobOptions {
    /// Worker threads [default: number of CPUs].
    #[arg(long, short = 't', value_name = "N", value_parser = parse_positive)]
    pub threads: Option<usize>,
    /// Partitions R (1 to 1048576): reduce parallelism, and the number of part files with
    /// --out-dir [default: ranks x threads, at least 16].
    #[arg(long, short = 'r', value_name = "R", value_parser = parse_partitions)]
    pub partitions: Option<u32>,
    /// Memory budget of the map-side buffers (e.g. 1M, 512M, 2G; at least 64K), shared by the
    /// threads. A thread spills a sorted run to --spill-dir when its share is full.
    #[arg(long, short = 'm', value_name = "SIZE", value_parser = parse_memory,
          help = format!("Memory budget of the map-side buffers (e.g. 1M, 512M, 2G; at least 64K), shared by \
                          the threads. A thread spills a sorted run to --spill-dir when its share is full \
                          {}", memory_default_help()))]
    pub memory: Option<u64>,
    /// The budget, once decided (`--memory`, or the default from the machine).
    #[arg(skip)]
    pub budget: std::sync::OnceLock<MemoryBudget>,
    /// The open-file threshold F (at least 2): no merge reads more than F runs at once; more
    /// runs are merged in several passes [default: from the open-file limit].
    #[arg(long, value_name = "F", value_parser = parse_fan_in)]
    pub max_open_runs: Option<usize>,
    /// How often the job's code is tried on one split or one partition's reduce before the job
    /// fails (1 turns retry off). What a failed attempt emitted or wrote counts zero times;
    /// retries are counted in the metrics. A full disk or a corrupt run is not retried.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = parse_attempts)]
    pub max_attempts: u32,
    /// Make the job resumable: its runs and a journal of what is done go into
    /// .NAME.spillway-job/ beside the output NAME (not into --spill-dir), kept when the job is
    /// killed, fails or is interrupted (SIGINT, SIGTERM, SIGHUP: it stops at once, saying how
    /// far it got). The same command with --resume again goes on from there, mapping only
    /// what is not done; a changed input or setting is refused. The directory is removed
    /// once the output is committed. Needs --out or --out-dir.
    #[arg(long)]
    pub resume: bool,
    /// Where spill runs go (a per-job subdirectory, removed at the end) [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Write one part file per partition plus _SUCCESS (the job's metrics as JSON) into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub out_dir: Option<PathBuf>,
    /// Write all output, sorted by key in byte order, into FILE (replaced atomically; never one
    /// of the inputs; /dev/stdout and /dev/fd/N write into that descriptor, appending)
    /// [default: standard output].
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Target split size; inputs are cut at record boundaries near multiples of it
    /// [default: input / (8 x threads), between 1M and 64M].
    #[arg(long, value_name = "SIZE", value_parser = parse_split_size)]
    pub split_size: Option<u64>,
    /// How spill runs and outputs are written: std (buffered write calls), uring (io_uring
    /// with several writes in flight; falls back to std when the kernel refuses it, or when
    /// SPILLWAY_NO_URING=1), direct (sort's spill runs written and merged with O_DIRECT
    /// through io_uring, past the page cache, so a sort larger than memory does not evict the
    /// node's cached files; where the spill filesystem refuses O_DIRECT, or with
    /// SPILLWAY_NO_ODIRECT=1, the same through the page cache; other files as uring), or
    /// auto (what measured faster here: std, and for sort direct runs when input, runs and
    /// output would not fit in MemAvailable).
    #[arg(long, value_name = "BACKEND", default_value = "auto")]
    pub io: IoBackend,
    /// How inputs and runs are read: mmap, or pread (for files that may change while the job
    /// runs, or filesystems where mmap is slow).
    #[arg(long, value_name = "MODE", default_value = "mmap")]
    pub read: ReadMode,
    /// Also write the job's metrics (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Write the job's live status (versioned JSON, docs/status.md) into FILE, replaced
    /// atomically about once a second, ending with the final state (succeeded, failed with the
    /// message, interrupted). Under mpirun rank 0 writes it with every rank's state, which the
    /// other ranks write into FILE.rank-N beside it (FILE must be on a filesystem every rank
    /// shares). `spillway status FILE` shows it; `spillway ctl FILE --stop` stops the job.
    #[arg(long, value_name = "FILE")]
    pub status: Option<PathBuf>,
    /// Besides the output, write a record of the run into FILE (HTML, e.g. report.html): one
    /// self-contained page (no network needed to view it) with the timeline of every rank's
    /// and thread's work (map, spill, merge, exchange, reduce, commit), throughput, spills
    /// and merges, memory against the budget over time, and the bytes exchanged per rank pair
    /// (docs/report.md). Written when the job ends, also when it fails or is interrupted
    /// (under mpirun by rank 0, with every rank's record); a page that cannot be written then
    /// is a warning and does not change the exit status.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// No progress bar and no metrics summary on standard error.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Whether --out may name one of the inputs (sort's in-place sort, as GNU sort's `-o`);
    /// the other jobs refuse it, since their output would replace the input.
    #[arg(skip)]
    pub out_may_be_input: bool,
    /// The job's name in the status file (`wordcount`, `index`, `grep`, `sort`).
    #[arg(skip)]
    pub name: &'static str,
}

impl JobOptions {
    /// Worker threads: `-t`, or the number of CPUs (the engine's default).
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// The memory budget: `--memory`, or the default computed from this machine
    /// ([`MemoryBudget::detect`]), decided once.
    pub fn budget(&self) -> &MemoryBudget {
        self.budget.get_or_init(|| match self.memory {
            Some(bytes) => MemoryBudget::given(bytes, "--memory"),
            None => MemoryBudget::detect(self.threads()),
        })
    }

    /// Partitions R for a job across `ranks` ranks: `-r`, or [`default_partitions`].
    pub fn partitions(&self, ranks: usize) -> u32 {
        self.partitions.unwrap_or_else(|| default_partitions(ranks, self.threads(), self.budget().bytes))
    }

    /// Opens the inputs (failing before any work if one is missing or unreadable).
    pub fn inputs(&self, paths: &[PathBuf]) -> anyhow::Result<Inputs> {
        Ok(Inputs::with_mode(paths, self.read)?)
    }

    /// Builds the engine, runs `job`, shows progress, reports metrics. Built with the `mpi`
    /// feature, runs across the ranks of `mpirun` (rank 0 shows progress and metrics).
    pub fn run_job<J: Job>(&self, job: &J, inputs: &Inputs) -> anyhow::Result<ExitCode> {
        self.run_job_with(self.engine_builder(1), job, inputs, None)
    }

    /// As [`JobOptions::run_job`], over the paths that the list `list` names while the job
    /// runs (`--inputs-from`; `-` is standard input): see [`super::inputs_from`]. The feed
    /// records the files' paths in `names`, which a job that names its files was built with
    /// ([`spillway_engine::jobs::InvertedIndex::fed`]).
    pub fn run_job_listed<J: Job>(
        &self,
        job: &J,
        list: &Path,
        names: &FileNames,
    ) -> anyhow::Result<ExitCode> {
        self.run_inputs(self.engine_builder(1), job, JobInputs::Listed(list, names), None)
    }

    /// As [`JobOptions::run_job`], with the engine `builder` describes (from
    /// [`JobOptions::engine_builder`]), routing keys with `partitioner` instead of hashing.
    pub fn run_job_with<J: Job>(
        &self,
        builder: EngineBuilder,
        job: &J,
        inputs: &Inputs,
        partitioner: Option<&dyn Partitioner>,
    ) -> anyhow::Result<ExitCode> {
        self.run_inputs(builder, job, JobInputs::Given(inputs), partitioner)
    }

    fn run_inputs<J: Job>(
        &self,
        builder: EngineBuilder,
        job: &J,
        inputs: JobInputs<'_>,
        partitioner: Option<&dyn Partitioner>,
    ) -> anyhow::Result<ExitCode> {
        #[cfg(feature = "mpi")]
        {
            mpi_run::run(self, builder, job, inputs, partitioner)
        }
        #[cfg(not(feature = "mpi"))]
        {
            self.run_on(builder, job, inputs, partitioner, Arc::new(spillway_engine::Local))
        }
    }

    /// The engine these options describe (the one place where the flags become engine
    /// settings, for the jobs and for `sort`), for a job across `ranks` ranks (which decide
    /// the default partition count), before progress and the cluster are added.
    pub fn engine_builder(&self, ranks: usize) -> EngineBuilder {
        let partitions = self.partitions(ranks);
        let mut builder = Engine::builder()
            .partitions(partitions)
            .threads(self.threads())
            .memory(self.budget().clone())
            .io(self.io)
            .read_mode(self.read)
            .sample_memory(true) // for peak_anon_bytes in the metrics
            .max_attempts(self.max_attempts)
            .resume(self.resume);
        if let Some(size) = self.split_size {
            builder = builder.split_size(usize::try_from(size).unwrap_or(usize::MAX));
        }
        if let Some(f) = self.max_open_runs {
            builder = builder.max_open_runs(f);
        }
        if let Some(dir) = &self.spill_dir {
            builder = builder.spill_dir(dir);
        }
        if let Some(path) = &self.metrics {
            builder = builder.metrics_file(path); // committed with the output
        }
        builder
    }

    /// Runs `job` on `cluster` with the engine `builder` describes; only rank 0 shows
    /// progress and prints metrics.
    pub fn run_on<J: Job>(
        &self,
        builder: EngineBuilder,
        job: &J,
        inputs: JobInputs<'_>,
        partitioner: Option<&dyn Partitioner>,
        cluster: Arc<dyn spillway_engine::Cluster>,
    ) -> anyhow::Result<ExitCode> {
        let quiet = self.quiet || cluster.rank() != 0;
        let ranks = (cluster.rank(), cluster.size());
        let progress = Arc::new(Progress::default());
        if self.resume {
            let _ = RESUMABLE.set(Arc::clone(&progress));
        }
        let partitions = self.partitions(cluster.size());
        let engine = builder
            .partitions(partitions)
            .progress(Arc::clone(&progress))
            .cluster(cluster)
            .build()
            .map_err(UsageError::from)?;
        let given = match inputs {
            JobInputs::Given(inputs) => Some(inputs),
            JobInputs::Listed(..) => None,
        };
        let output = self.check_paths_of(given)?;
        if let Some(warning) = many_part_files(&output, partitions).filter(|_| !quiet) {
            eprint_line(warning);
        }
        let feed = match inputs {
            JobInputs::Given(_) => None,
            JobInputs::Listed(list, names) => {
                let size =
                    self.split_size.map_or(DEFAULT_SPLIT_SIZE, |s| usize::try_from(s).unwrap_or(usize::MAX));
                let feed = InputFeed::new(list.display().to_string(), job.split_mode(), size, self.read)
                    .with_names(names.clone());
                let feed = Arc::new(feed);
                if ranks.0 == 0 {
                    super::inputs_from::follow(list, Arc::clone(&feed))?;
                    let ended = Arc::clone(&feed);
                    super::status::on_end_of_input(Box::new(move || ended.end()));
                }
                Some(feed)
            }
        };
        let status = self.start_status(&progress, ranks)?;
        let report = self.start_report(&progress, ranks)?;
        let bar =
            (!quiet && std::io::stderr().is_terminal()).then(|| ProgressBar::start(Arc::clone(&progress)));
        let result = match (partitioner, given, &feed) {
            (Some(partitioner), Some(inputs), _) => engine.run_with(job, inputs, partitioner, &output),
            (None, Some(inputs), _) => engine.run(job, inputs, &output),
            (Some(partitioner), None, Some(feed)) => engine.run_fed_with(job, feed, partitioner, &output),
            (None, None, Some(feed)) => engine.run_fed(job, feed, &output),
            (_, None, None) => unreachable!("listed inputs have a feed"),
        };
        if let Some(bar) = bar {
            bar.finish();
        }
        let result = result.map_err(anyhow::Error::from);
        if let Some(report) = report {
            report.finish_with(&result, result.as_ref().ok().cloned());
        }
        let metrics = finish_status(status.as_deref(), result)?;
        if !quiet {
            eprint_line(serde_json::to_string_pretty(&metrics).expect("metrics serialize"));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Starts the `--status` writer of this rank, if asked for.
    ///
    /// # Errors
    ///
    /// The status file cannot be written (an [`InputError`]).
    pub fn start_status(
        &self,
        progress: &Arc<Progress>,
        ranks: (usize, usize),
    ) -> anyhow::Result<Option<Arc<StatusWriter>>> {
        let Some(path) = &self.status else { return Ok(None) };
        let writer =
            StatusWriter::start(path, self.name, Arc::clone(progress), ranks, self.threads(), self.resume)?;
        Ok(Some(writer))
    }

    /// Starts recording the job for `--report`, if asked for.
    ///
    /// # Errors
    ///
    /// The report cannot be written (an [`InputError`], on rank 0).
    pub fn start_report(
        &self,
        progress: &Arc<Progress>,
        ranks: (usize, usize),
    ) -> anyhow::Result<Option<Arc<ReportWriter>>> {
        let Some(path) = &self.report else { return Ok(None) };
        Ok(Some(ReportWriter::start(path, self.name, progress, ranks, self.budget().bytes)?))
    }

    /// Checks everything the job will write, before any work starts, and returns the output:
    /// `--spill-dir` (a directory if it exists), `--out-dir` / `--out`
    /// ([`OutputSpec::check`]) and `--metrics` ([`JobOptions::check_metrics`]).
    ///
    /// # Errors
    ///
    /// An [`InputError`] or an engine input error (exit status 3), naming the path.
    pub fn check_paths(&self, inputs: &Inputs) -> anyhow::Result<OutputSpec> {
        self.check_paths_of(Some(inputs))
    }

    /// As [`JobOptions::check_paths`]; `None`: inputs not known yet (`--inputs-from`).
    fn check_paths_of(&self, inputs: Option<&Inputs>) -> anyhow::Result<OutputSpec> {
        let files = inputs.map_or(&[][..], Inputs::files);
        if let Some(dir) = &self.spill_dir
            && std::fs::metadata(dir).is_ok_and(|meta| !meta.is_dir())
        {
            return Err(InputError(format!("--spill-dir {} is not a directory", dir.display())).into());
        }
        let output = match (&self.out_dir, &self.out) {
            (Some(dir), _) => OutputSpec::Dir(dir.clone()),
            (None, Some(file)) => OutputSpec::File(file.clone()),
            (None, None) => OutputSpec::Stdout,
        };
        // A resumable job killed after its output was committed finds it there: the engine
        // tells that from output of another job.
        let resuming = self.resume && spillway_engine::job_dir_path(&output).is_ok_and(|dir| dir.exists());
        if !resuming {
            output.check()?;
        }
        if let (OutputSpec::File(out), false) = (&output, self.out_may_be_input)
            && let Some(id) = FileId::of(out)
            && let Some(input) = files.iter().find(|f| FileId::of(&f.path).as_ref() == Some(&id))
        {
            return Err(InputError(format!(
                "--out {} is also the input {}: the output would replace it",
                out.display(),
                input.path.display()
            ))
            .into());
        }
        self.check_metrics(files)?;
        Ok(output)
    }

    /// Checks `--metrics FILE`: its directory exists and takes new files, it is not a
    /// directory, and it is neither the `--out` file, nor inside the `--out-dir` directory,
    /// nor an input (each of which the metrics would overwrite after the job).
    fn check_metrics(&self, inputs: &[InputFile]) -> Result<(), InputError> {
        let Some(path) = &self.metrics else { return Ok(()) };
        let refuse = |what: &str| Err(InputError(format!("--metrics {}: {what}", path.display())));
        let target = match spillway_engine::file_destination(path) {
            Ok(FileDestination::Replace(target)) => target,
            Ok(FileDestination::InPlace(_)) => return Ok(()), // a device or FIFO
            Err(spillway_engine::Error::Output { what, .. }) => return refuse(&what),
            Err(e) => return refuse(&e.to_string()),
        };
        // A read-only directory fails now rather than after the job (the probe is removed).
        if let Err(e) = TempFile::create(&target) {
            return refuse(&format!("cannot create a file in its directory: {e}"));
        }
        let Some(metrics) = FileId::of(&target) else { return Ok(()) };
        let is_metrics = |path: &Path| FileId::of(path).as_ref() == Some(&metrics);
        if self.out.as_deref().is_some_and(is_metrics) {
            return refuse("is also the --out file");
        }
        if let Some(dir) = &self.out_dir
            && let (Ok(dir), Ok(parent)) =
                (std::fs::canonicalize(dir), std::fs::canonicalize(parent_dir(&target)))
            && dir == parent
        {
            return refuse("is inside the --out-dir directory");
        }
        if inputs.iter().any(|input| is_metrics(&input.path)) {
            return refuse("is also an input");
        }
        Ok(())
    }
}

/// Writes the final state of a job's `result` into its status file (if it has one): succeeded,
/// or failed with the message.
pub fn finish_status<T>(status: Option<&StatusWriter>, result: anyhow::Result<T>) -> anyhow::Result<T> {
    if let Some(status) = status {
        match &result {
            Ok(_) => status.finish("succeeded", None),
            Err(err) => status.finish("failed", Some(crate::message(err))),
        }
    }
    result
}

/// Which file a path names, to tell whether two paths name the same file.
#[derive(Debug, PartialEq, Eq)]
enum FileId {
    /// An existing file: its device and inode.
    Inode(u64, u64),
    /// A file that does not exist (yet): the canonical directory it will be created in (a
    /// dangling link followed) joined with its name.
    Path(PathBuf),
}

impl FileId {
    /// The file `path` names, or `None` when neither it nor its directory can be resolved.
    fn of(path: &Path) -> Option<Self> {
        if let Ok(meta) = std::fs::metadata(path) {
            return Some(FileId::Inode(meta.dev(), meta.ino()));
        }
        let FileDestination::Replace(target) = spillway_engine::file_destination(path).ok()? else {
            return None;
        };
        let dir = std::fs::canonicalize(parent_dir(&target)).ok()?;
        Some(FileId::Path(dir.join(target.file_name()?)))
    }
}

/// Running a job under MPI: initialization, abort on failure, one message per failing rank.
#[cfg(feature = "mpi")]
mod mpi_run {
    use std::process::ExitCode;
    use std::sync::Arc;

    use mpi::traits::Communicator;
    use spillway_engine::Job;
    use spillway_engine::cluster::MpiCluster;

    use super::JobOptions;

    /// Gives mpirun a moment to forward what this rank just printed: MPI_Abort tears the
    /// job down at once, and OpenMPI may drop the last output of an aborting rank (the one
    /// line that says why the job failed).
    fn let_the_message_out() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    pub fn run<J: Job>(
        options: &JobOptions,
        builder: spillway_engine::EngineBuilder,
        job: &J,
        inputs: super::JobInputs<'_>,
        partitioner: Option<&dyn spillway_engine::shuffle::Partitioner>,
    ) -> anyhow::Result<ExitCode> {
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Multiple)
            .ok_or_else(|| anyhow::anyhow!("MPI was already initialized"))?;
        if level < mpi::Threading::Multiple {
            anyhow::bail!("the MPI library provides thread level {level:?}; spillway needs Multiple");
        }
        let world = universe.world();
        let (rank, size) = (world.rank(), world.size());
        if size > 1 {
            // An unwinding panic would drop the Universe and hang in MPI_Finalize while other
            // ranks wait in a collective: abort the whole job instead. A panic in the job's
            // code is the engine's to catch (it retries, or fails the job on every rank).
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                previous(info);
                if spillway_engine::in_job_code() {
                    return;
                }
                let what = crate::last_panic().unwrap_or_else(|| "(no message)".into());
                super::eprint_line(format_args!("spillway: internal error: rank {rank}: {what}"));
                let_the_message_out();
                mpi::topology::SimpleCommunicator::world().abort(crate::EXIT_FAILURE.into());
            }));
        }
        match options.run_on(builder, job, inputs, partitioner, Arc::new(MpiCluster::world()?)) {
            Ok(code) => Ok(code),
            Err(err) if size > 1 => {
                // Disagreement is found by every rank at once: rank 0 reports it, all exit.
                let agreement = err
                    .downcast_ref::<spillway_engine::Error>()
                    .is_some_and(|e| matches!(e, spillway_engine::Error::Cluster(_)));
                if rank == 0 || !agreement {
                    super::eprint_line(format_args!(
                        "spillway: error: rank {rank}: {}",
                        crate::message(&err)
                    ));
                }
                let code = crate::exit_code(&err);
                if agreement {
                    drop(universe);
                    return Ok(ExitCode::from(code));
                }
                let_the_message_out();
                world.abort(code.into())
            }
            Err(err) => Err(err),
        }
    }
}

/// A progress bar on standard error, fed from the engine's counters.
pub(super) struct ProgressBar {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl ProgressBar {
    pub(super) fn start(progress: Arc<Progress>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix:>6} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            while !flag.load(Ordering::Relaxed) {
                bar.set_length(progress.bytes_total.load(Ordering::Relaxed));
                bar.set_position(progress.bytes_mapped.load(Ordering::Relaxed));
                bar.set_prefix(progress.phase().name());
                bar.set_message(format!(
                    "splits {}/{}  spills {}  merges {}  partitions reduced {}",
                    progress.splits_done.load(Ordering::Relaxed),
                    progress.splits_total.load(Ordering::Relaxed),
                    progress.spills.load(Ordering::Relaxed),
                    progress.merges.load(Ordering::Relaxed),
                    progress.partitions_done.load(Ordering::Relaxed),
                ));
                bar.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        ProgressBar { stop, handle }
    }

    pub(super) fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_fan_in, parse_memory, parse_partitions, parse_positive, parse_size, parse_split_size};

    #[test]
    fn counts_and_sizes_out_of_range_are_refused() {
        assert_eq!(parse_positive("3"), Ok(3));
        assert_eq!(parse_positive("0"), Err("must be at least 1".into()));
        assert!(parse_positive("-1").unwrap_err().contains("not a whole number"));
        assert_eq!(parse_partitions("1048576"), Ok(1 << 20));
        assert_eq!(parse_partitions("1048577"), Err("must be between 1 and 1048576".into()));
        assert!(parse_partitions("4294967296").is_err());
        assert_eq!(parse_fan_in("2"), Ok(2));
        assert!(parse_fan_in("1").is_err());
        assert_eq!(parse_memory("64K"), Ok(64 << 10));
        assert_eq!(parse_memory("65535"), Err("must be at least 64K".into()));
        assert_eq!(parse_split_size("1"), Ok(1));
        assert!(parse_split_size("0").is_err());
    }

    /// Without -r every thread of every rank gets a partition to reduce: 16 on one small
    /// machine as before, ranks x threads beyond, bounded by the budget's room for run indexes.
    #[test]
    fn the_default_partition_count_follows_ranks_and_threads() {
        use super::default_partitions;
        let g = 1 << 30;
        assert_eq!(default_partitions(1, 2, g), 16);
        assert_eq!(default_partitions(1, 64, g), 64);
        assert_eq!(default_partitions(8, 1, g), 16);
        assert_eq!(default_partitions(32, 1, g), 32);
        assert_eq!(default_partitions(128, 2, g), 256);
        assert_eq!(default_partitions(1024, 8, g), 8192);
        // 16 MiB per thread: an index of at most 2 MiB, 65536 partitions.
        assert_eq!(default_partitions(8192, 64, g), 1 << 16);
        assert_eq!(default_partitions(1 << 20, 64, 64 << 30), 1 << 20, "at most MAX_PARTITIONS");
        // --memory 1M on 2 threads: 512 KiB per thread, an index of at most 64 KiB (2048 partitions).
        assert_eq!(default_partitions(4096, 2, 1 << 20), 2048);
        // The smallest share (16 KiB) still allows 16.
        assert_eq!(default_partitions(1000, 4, 64 << 10), 64);
        assert_eq!(default_partitions(0, 0, 64 << 10), 16);
    }

    #[test]
    fn a_million_part_files_get_a_warning() {
        let dir = spillway_engine::OutputSpec::Dir("out".into());
        let warning = super::many_part_files(&dir, 1 << 20).unwrap();
        assert_eq!(warning, "spillway: warning: -r 1048576 writes 1048576 part files into out");
        assert_eq!(super::many_part_files(&dir, 65536), None);
        let file = spillway_engine::OutputSpec::File("out".into());
        assert_eq!(super::many_part_files(&file, 1 << 20), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("3GB"), Ok(3 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
