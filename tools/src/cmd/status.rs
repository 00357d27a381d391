//! Live status of a running job: the writer behind `--status FILE`, `spillway status FILE`
//! and `spillway ctl FILE` (`docs/status.md` documents the file).
//!
//! Every rank runs one writer thread that wakes every tenth of a second to read the control
//! file and writes about once a second (and right after a change of threads). Rank 0 replaces FILE
//! (a [`TempFile`] renamed over it, not `fsync`ed: a status is not worth a disk flush) with
//! the job's state, folding in the heartbeat files `FILE.rank-N` that every other rank
//! replaces the same way (no MPI call from a side thread: the ranks share the output's
//! filesystem). Every rank also polls the control file `FILE.ctl`, to which `spillway ctl`
//! appends its requests: a stop request raises SIGTERM in the process, so the job stops
//! exactly as on SIGTERM (the signal handler in `main` writes the final state
//! `interrupted`); the last `threads N` line for this rank (or for every rank) sets
//! [`Progress::set_threads_wanted`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use spillway_engine::{Progress, TempFile};

use super::common::{InputError, eprint_line};

/// The version of the status file's schema (`schema`); fields are only added within a version.
pub const SCHEMA: u32 = 1;

/// How often the status and the heartbeats are written.
const INTERVAL: Duration = Duration::from_secs(1);

/// How often the control file is read (a request that changes the threads is acknowledged in
/// the status right away).
const CONTROL_INTERVAL: Duration = Duration::from_millis(100);

/// How far the clocks of the ranks' hosts may differ: a heartbeat file older than the job
/// by more than this is an earlier job's.
const SKEW_MS: u64 = 10_000;

/// Exit status of `spillway status` for a running job whose heartbeat (or one rank's) is
/// older than `--stale` seconds.
pub const EXIT_NOT_RESPONDING: u8 = 4;

/// The status writer of the job this process runs, for the signal handler's final state.
pub static STATUS: OnceLock<Arc<StatusWriter>> = OnceLock::new();

/// Set when this process stops because `spillway ctl --stop` asked it to.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// What `spillway ctl --end-of-input` does in this process (set by `--inputs-from` on rank 0).
static END_OF_INPUT: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Sets what `spillway ctl --end-of-input` does in this process.
pub fn on_end_of_input(end: Box<dyn Fn() + Send + Sync>) {
    let _ = END_OF_INPUT.set(end);
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The control file beside a status file.
pub fn control_path(status: &Path) -> PathBuf {
    with_suffix(status, ".ctl")
}

/// The heartbeat file of `rank` beside a status file.
fn heartbeat_path(status: &Path, rank: usize) -> PathBuf {
    with_suffix(status, &format!(".rank-{rank}"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One rank's state (a heartbeat file, and a row of the status's `per_rank`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RankStatus {
    /// The rank (0 without MPI).
    pub rank: usize,
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it last wrote its state (ms since the Unix epoch).
    pub heartbeat_ms: u64,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// Its phase: `starting`, `map`, `merge`, `reduce`, `done`.
    pub phase: String,
    /// Worker threads.
    pub threads: usize,
    /// Workers working now in the map phase, the planned merges or reduce (0 between
    /// phases).
    pub threads_active: usize,
    /// The workers asked for by `spillway ctl --threads` (0: the job's -t), as this rank
    /// read it: the change acknowledged.
    pub threads_wanted: usize,
    /// The most workers `ctl --threads` can start on this rank.
    pub threads_max: usize,
    /// Splits it mapped.
    pub splits_done: u64,
    /// Input bytes of those splits.
    pub bytes_mapped: u64,
    /// Pairs emitted by map (counted at commit points).
    pub records: u64,
    /// Spill runs written.
    pub spills: u64,
    /// Merge steps done.
    pub merges: u64,
    /// Merge steps planned so far (background merges started, and the planned merge
    /// phase's steps once it starts).
    pub merges_planned: u64,
    /// Runs waiting for a merge or the reduce.
    pub runs_waiting: u64,
    /// Partitions reduced.
    pub partitions_done: u64,
    /// Failed attempts tried again.
    pub retries: u64,
    /// Splits journaled for good (resumable jobs).
    pub splits_committed: u64,
    /// Bytes sent and received in the exchange (set when it ends).
    pub bytes_exchanged: u64,
}

/// The status file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Status {
    /// [`SCHEMA`].
    pub schema: u32,
    /// `wordcount`, `index`, `grep` or `sort`.
    pub job: String,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub state: String,
    /// Why it failed or was interrupted.
    pub message: Option<String>,
    /// Rank 0's phase.
    pub phase: String,
    /// When the job started and when this was written (ms since the Unix epoch).
    pub started_ms: u64,
    /// See [`Status::started_ms`].
    pub updated_ms: u64,
    /// Seconds since the job started.
    pub elapsed_seconds: f64,
    /// Ranks.
    pub ranks: usize,
    /// Worker threads of every rank.
    pub threads: usize,
    /// Splits mapped, of `splits_total`.
    pub splits_done: u64,
    /// Splits in the job.
    pub splits_total: u64,
    /// Splits journaled for good (resumable jobs only).
    pub splits_committed: Option<u64>,
    /// Input bytes mapped, of `bytes_total`.
    pub bytes_mapped: u64,
    /// Input bytes.
    pub bytes_total: u64,
    /// Sums over ranks.
    pub records: u64,
    /// See [`Status::records`].
    pub spills: u64,
    /// See [`Status::records`].
    pub merges: u64,
    /// See [`Status::records`].
    pub merges_planned: u64,
    /// See [`Status::records`].
    pub runs_waiting: u64,
    /// See [`Status::records`].
    pub partitions_done: u64,
    /// See [`Status::records`].
    pub retries: u64,
    /// See [`Status::records`].
    pub bytes_exchanged: u64,
    /// Input bytes mapped per second since the job started.
    pub rate_bytes_per_second: f64,
    /// Seconds until the map phase ends at that rate (only during the map phase).
    pub eta_seconds: Option<f64>,
    /// Every rank's state, rank order.
    pub per_rank: Vec<RankStatus>,
}

/// What the writer knows of its job.
struct Job {
    path: PathBuf,
    name: String,
    progress: Arc<Progress>,
    rank: usize,
    ranks: usize,
    threads: usize,
    resumable: bool,
    host: String,
    started: Instant,
    started_ms: u64,
}

/// The thread that writes the status (rank 0) or this rank's heartbeat (other ranks) about
/// once a second and polls the control file every tenth of a second, until
/// [`StatusWriter::finish`].
pub struct StatusWriter {
    job: Job,
    /// The final state once set: nothing is written after it.
    done: Mutex<Option<(String, Option<String>)>>,
    wake: Condvar,
    /// Serializes writes (the thread and the final write from another thread).
    writing: Mutex<()>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").field("path", &self.job.path).finish_non_exhaustive()
    }
}

impl StatusWriter {
    /// Writes the first status now and starts the thread.
    ///
    /// # Errors
    ///
    /// An [`InputError`]: the status file cannot be written (exit status 3), or the thread
    /// cannot start.
    pub fn start(
        path: &Path,
        name: &str,
        progress: Arc<Progress>,
        (rank, ranks): (usize, usize),
        threads: usize,
        resumable: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| String::new(), |h| h.trim().to_owned());
        let job = Job {
            path: path.to_owned(),
            name: name.to_owned(),
            progress,
            rank,
            ranks,
            threads,
            resumable,
            host,
            started: Instant::now(),
            started_ms: now_ms(),
        };
        let writer = Arc::new(StatusWriter {
            job,
            done: Mutex::new(None),
            wake: Condvar::new(),
            writing: Mutex::new(()),
            handle: Mutex::new(None),
        });
        if rank == 0 {
            // A stop request left from an earlier job is not for this one.
            let _ = std::fs::remove_file(control_path(path));
        }
        writer
            .write("running", None)
            .map_err(|e| InputError(format!("--status {}: cannot write it: {e}", path.display())))?;
        let thread = Arc::clone(&writer);
        let handle = std::thread::Builder::new()
            .name("spillway-status".into())
            .stack_size(256 << 10)
            .spawn(move || thread.run())
            .map_err(|e| anyhow::anyhow!("cannot start the status thread: {e}"))?;
        *writer.handle.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        let _ = STATUS.set(Arc::clone(&writer));
        Ok(writer)
    }

    fn run(&self) {
        let mut written = Instant::now();
        let p = &*self.job.progress;
        let threads = || (p.threads_wanted.load(Ordering::Relaxed), p.threads_active.load(Ordering::Relaxed));
        let mut threads_written = threads();
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            done = self.wake.wait_timeout(done, CONTROL_INTERVAL).unwrap_or_else(PoisonError::into_inner).0;
            if done.is_some() {
                return;
            }
            drop(done);
            let request = Request::read(&self.job.path, self.job.rank);
            let mut changed = false;
            if let Some(threads) = request.threads
                && threads != self.job.progress.threads_wanted.load(Ordering::Relaxed)
            {
                self.job.progress.set_threads_wanted(threads);
                changed = true;
            }
            if request.end_of_input
                && let Some(end) = END_OF_INPUT.get()
            {
                end();
            }
            if request.stop && !STOP_REQUESTED.swap(true, Ordering::Relaxed) {
                // Stops as SIGTERM does: the signal handler cleans up and writes `interrupted`.
                let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
            }
            // A change of threads is acknowledged at once, and once `ctl --threads` was used
            // the status follows the workers active; otherwise it is written about once a
            // second (a failed write is tried again next time).
            let now = threads();
            if changed || (now.0 != 0 && now != threads_written) || written.elapsed() >= INTERVAL {
                let _ = self.write("running", None);
                (written, threads_written) = (Instant::now(), now);
            }
            done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Writes the final `state` (`succeeded`, `failed`, `interrupted`) with `message`, and
    /// stops the thread. Only the first call writes.
    pub fn finish(&self, state: &str, message: Option<String>) {
        {
            let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
            if done.is_some() {
                return;
            }
            *done = Some((state.to_owned(), message.clone()));
        }
        self.wake.notify_all();
        let _ = self.write(state, message);
        let handle = self.handle.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.thread().id() != std::thread::current().id()
        {
            let _ = handle.join();
        }
    }

    /// This rank's state now.
    fn rank_status(&self, state: &str) -> RankStatus {
        let (job, p) = (&self.job, &*self.job.progress);
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        RankStatus {
            rank: job.rank,
            host: job.host.clone(),
            pid: std::process::id(),
            heartbeat_ms: now_ms(),
            state: state.to_owned(),
            phase: p.phase().name().to_owned(),
            threads: job.threads,
            threads_active: p.threads_active.load(Ordering::Relaxed),
            threads_wanted: p.threads_wanted.load(Ordering::Relaxed),
            threads_max: p.threads_max.load(Ordering::Relaxed),
            splits_done: load(&p.splits_done),
            bytes_mapped: load(&p.bytes_mapped),
            records: load(&p.records),
            spills: load(&p.spills),
            merges: load(&p.merges),
            merges_planned: load(&p.merges_planned),
            runs_waiting: load(&p.runs_waiting),
            partitions_done: load(&p.partitions_done),
            retries: load(&p.retries),
            splits_committed: load(&p.splits_committed),
            bytes_exchanged: load(&p.bytes_exchanged),
        }
    }

    /// Writes the status (rank 0) or this rank's heartbeat.
    fn write(&self, state: &str, message: Option<String>) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let job = &self.job;
        let own = self.rank_status(state);
        if job.rank != 0 {
            return replace(&heartbeat_path(&job.path, job.rank), &serde_json::to_vec(&own)?);
        }
        let mut per_rank = vec![own];
        for rank in 1..job.ranks {
            let heartbeat = std::fs::read(heartbeat_path(&job.path, rank)).ok();
            let row = heartbeat.and_then(|bytes| serde_json::from_slice::<RankStatus>(&bytes).ok());
            // A rank that has not written yet: its row says so with a zero heartbeat.
            per_rank.push(
                row.filter(|r| r.rank == rank && r.heartbeat_ms + SKEW_MS >= job.started_ms).unwrap_or(
                    RankStatus {
                        rank,
                        state: "starting".into(),
                        phase: "starting".into(),
                        ..RankStatus::default()
                    },
                ),
            );
        }
        let status = self.fold(state, message, per_rank);
        let mut bytes = serde_json::to_vec_pretty(&status)?;
        bytes.push(b'\n');
        replace(&job.path, &bytes)
    }

    /// The job's status from its ranks' rows.
    fn fold(&self, state: &str, message: Option<String>, mut per_rank: Vec<RankStatus>) -> Status {
        let (job, p) = (&self.job, &*self.job.progress);
        let elapsed = job.started.elapsed().as_secs_f64();
        // Rank 0 counts every split it hands out (to any rank) when it hands it out: the job's
        // totals. Its own row gets what its own workers mapped.
        let (splits_done, bytes_mapped) = (per_rank[0].splits_done, per_rank[0].bytes_mapped);
        let others = |f: fn(&RankStatus) -> u64| per_rank[1..].iter().map(f).sum::<u64>();
        let (other_splits, other_bytes) = (others(|r| r.splits_done), others(|r| r.bytes_mapped));
        per_rank[0].splits_done = splits_done.saturating_sub(other_splits);
        per_rank[0].bytes_mapped = bytes_mapped.saturating_sub(other_bytes);
        let sum = |f: fn(&RankStatus) -> u64| per_rank.iter().map(f).sum::<u64>();
        let bytes_total = p.bytes_total.load(Ordering::Relaxed);
        let rate = if elapsed > 0.0 { bytes_mapped as f64 / elapsed } else { 0.0 };
        let phase = p.phase().name().to_owned();
        let eta = (state == "running" && phase == "map" && rate > 0.0)
            .then(|| bytes_total.saturating_sub(bytes_mapped) as f64 / rate);
        Status {
            schema: SCHEMA,
            job: job.name.clone(),
            state: state.to_owned(),
            message,
            phase,
            started_ms: job.started_ms,
            updated_ms: now_ms(),
            elapsed_seconds: elapsed,
            ranks: job.ranks,
            threads: per_rank.iter().map(|r| r.threads).sum::<usize>().max(job.threads),
            splits_done,
            splits_total: p.splits_total.load(Ordering::Relaxed),
            splits_committed: job.resumable.then(|| sum(|r| r.splits_committed)),
            bytes_mapped,
            bytes_total,
            records: sum(|r| r.records),
            spills: sum(|r| r.spills),
            merges: sum(|r| r.merges),
            merges_planned: sum(|r| r.merges_planned),
            runs_waiting: sum(|r| r.runs_waiting),
            partitions_done: sum(|r| r.partitions_done),
            retries: sum(|r| r.retries),
            bytes_exchanged: sum(|r| r.bytes_exchanged),
            rate_bytes_per_second: rate,
            eta_seconds: eta,
            per_rank,
        }
    }
}

/// Replaces `path` with `bytes` through a temporary file and a rename (not `fsync`ed).
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = TempFile::create(path).map_err(std::io::Error::other)?;
    temp.file().write_all(bytes)?;
    temp.rename().map_err(std::io::Error::other)?;
    Ok(())
}

/// What the control file asks of one rank. The file is a list of lines that `spillway ctl`
/// appends: `stop`, `end-of-input`, `threads N` (every rank) and `threads N rank R` (rank R
/// only); the last `threads` line that applies wins.
#[derive(Debug, Default, PartialEq)]
struct Request {
    stop: bool,
    threads: Option<usize>,
    end_of_input: bool,
}

impl Request {
    /// The request for `rank` in the control file beside the status file `path` (none
    /// without one).
    fn read(path: &Path, rank: usize) -> Self {
        Self::parse(&std::fs::read_to_string(control_path(path)).unwrap_or_default(), rank)
    }

    fn parse(text: &str, rank: usize) -> Self {
        let mut request = Request::default();
        for line in text.lines().map(str::trim) {
            if line == "stop" {
                request.stop = true;
            } else if line == "end-of-input" {
                request.end_of_input = true;
            } else if let Some(rest) = line.strip_prefix("threads ") {
                let mut words = rest.split_whitespace();
                let n = words.next().and_then(|n| n.parse().ok());
                let target = match (words.next(), words.next(), words.next()) {
                    (None, ..) => Some(None),
                    (Some("rank"), Some(r), None) => r.parse().ok().map(Some),
                    _ => None,
                };
                if let (Some(n), Some(target)) = (n, target)
                    && target.is_none_or(|r: usize| r == rank)
                {
                    request.threads = Some(n);
                }
            }
        }
        request
    }

    /// The line that asks for `threads` on `rank` (every rank: `None`).
    fn threads_line(threads: usize, rank: Option<usize>) -> String {
        match rank {
            Some(rank) => format!("threads {threads} rank {rank}\n"),
            None => format!("threads {threads}\n"),
        }
    }
}

/// Arguments of `spillway status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status file's JSON (schema in docs/status.md) instead of the summary.
    #[arg(long)]
    json: bool,
    /// A running job whose status (or one of whose ranks' heartbeat) is older than this many
    /// seconds is reported as not responding (exit status 4).
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = super::common::parse_positive)]
    stale: usize,
    /// The job's --status file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Reads and parses a status file.
fn read_status(path: &Path) -> anyhow::Result<Status> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError(format!("cannot read the status file {}: {e}", path.display())))?;
    let status: Status = serde_json::from_slice(&bytes)
        .map_err(|e| InputError(format!("{} is not a spillway status file: {e}", path.display())))?;
    if status.schema == 0 || status.schema > SCHEMA {
        return Err(InputError(format!(
            "{}: status schema {} (this spillway reads schema {SCHEMA})",
            path.display(),
            status.schema
        ))
        .into());
    }
    Ok(status)
}

/// The ranks of a running job whose heartbeat is older than `stale` (rank 0's is the file's
/// `updated_ms`).
fn silent_ranks(status: &Status, now: u64, stale: Duration) -> Vec<usize> {
    let stale = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX);
    if status.state != "running" {
        return Vec::new();
    }
    let mut silent: Vec<usize> = Vec::new();
    if now.saturating_sub(status.updated_ms) > stale {
        silent.push(0);
    }
    for row in status.per_rank.iter().filter(|r| r.rank != 0 && r.state == "running") {
        if now.saturating_sub(row.heartbeat_ms) > stale {
            silent.push(row.rank);
        }
    }
    silent
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (n as f64, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn age(now: u64, then: u64) -> String {
    if then == 0 { "never".into() } else { format!("{:.1}s ago", now.saturating_sub(then) as f64 / 1000.0) }
}

/// The summary `spillway status` prints.
fn summary(status: &Status, now: u64, silent: &[usize]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let state = if silent.is_empty() { status.state.clone() } else { "NOT RESPONDING".into() };
    let _ = writeln!(s, "job        {} ({} rank(s), {} thread(s))", status.job, status.ranks, status.threads);
    if let Some(rank) = status.per_rank.first().filter(|r| r.threads_active > 0 || r.threads_wanted > 0) {
        let wanted = if rank.threads_wanted == 0 { rank.threads } else { rank.threads_wanted };
        let _ = writeln!(
            s,
            "threads    {} working of {wanted} wanted on rank 0 (-t {}, at most {})",
            rank.threads_active, rank.threads, rank.threads_max
        );
    }
    let _ =
        writeln!(s, "state      {state}, phase {}, updated {}", status.phase, age(now, status.updated_ms));
    if let Some(message) = &status.message {
        let _ = writeln!(s, "message    {message}");
    }
    if !silent.is_empty() {
        let ranks: Vec<String> = silent.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "silent     rank(s) {}", ranks.join(", "));
    }
    let percent = if status.bytes_total > 0 {
        100.0 * status.bytes_mapped as f64 / status.bytes_total as f64
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "map        {} / {} splits, {} / {} ({percent:.1}%), {}/s",
        status.splits_done,
        status.splits_total,
        human_bytes(status.bytes_mapped),
        human_bytes(status.bytes_total),
        human_bytes(status.rate_bytes_per_second as u64),
    );
    if let Some(committed) = status.splits_committed {
        let _ = writeln!(s, "committed  {committed} splits (resumable)");
    }
    let eta = status.eta_seconds.map_or_else(|| "-".into(), |e| format!("{e:.0}s"));
    let _ = writeln!(s, "elapsed    {:.1}s, map ETA {eta}", status.elapsed_seconds);
    let _ = writeln!(
        s,
        "counts     {} records, {} spills, {} / {} merges ({} runs waiting), {} partitions reduced, {} \
         retries, {} exchanged",
        status.records,
        status.spills,
        status.merges,
        status.merges_planned,
        status.runs_waiting,
        status.partitions_done,
        status.retries,
        human_bytes(status.bytes_exchanged),
    );
    if status.ranks > 1 {
        let _ =
            writeln!(s, "\nrank  host             pid      state        phase     heartbeat  splits  mapped");
        for r in &status.per_rank {
            let _ = writeln!(
                s,
                "{:<5} {:<16} {:<8} {:<12} {:<9} {:<10} {:<7} {}",
                r.rank,
                r.host.chars().take(16).collect::<String>(),
                r.pid,
                if silent.contains(&r.rank) { "silent" } else { &r.state },
                r.phase,
                age(now, r.heartbeat_ms),
                r.splits_done,
                human_bytes(r.bytes_mapped),
            );
        }
    }
    s
}

/// `spillway status`.
pub fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let status = read_status(&args.file)?;
    let now = now_ms();
    let silent = silent_ranks(&status, now, Duration::from_secs(args.stale as u64));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", summary(&status, now, &silent));
    }
    let code = match status.state.as_str() {
        _ if !silent.is_empty() => EXIT_NOT_RESPONDING,
        "running" | "succeeded" => 0,
        _ => crate::EXIT_FAILURE,
    };
    Ok(ExitCode::from(code))
}

/// Arguments of `spillway ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Stop the job at the next safe point, as SIGTERM does: a --resume job keeps what is
    /// done (rerun it with --resume), any other removes its temporary files. Every rank
    /// stops. The status then says `interrupted`.
    #[arg(long, required_unless_present_any = ["threads", "end_of_input"])]
    stop: bool,
    /// End the inputs of a job started with `--inputs-from LIST`: its map phase ends once the
    /// files listed so far are mapped (lines appended to LIST later are not read).
    #[arg(long)]
    end_of_input: bool,
    /// Run on N worker threads (every rank, or the one of --rank), from each worker's next
    /// split boundary in the map phase and next work item in merges and reduce. N may be
    /// above the job's -t: more workers start (as many as each keeps a share of the memory
    /// budget of at least 16 KiB, at most 1024). The memory budget is divided among the N:
    /// a worker that leaves spills what it mapped and gives its share back. The status shows
    /// threads_wanted (the change read) and threads_active.
    #[arg(long, value_name = "N", value_parser = super::common::parse_positive)]
    threads: Option<usize>,
    /// Apply --threads on rank R only (under mpirun; default: every rank).
    #[arg(long, value_name = "R", requires = "threads")]
    rank: Option<usize>,
    /// The job's --status file (the request goes into FILE.ctl beside it, which every rank
    /// reads every tenth of a second).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// `spillway ctl`.
pub fn ctl(args: &CtlArgs) -> anyhow::Result<ExitCode> {
    let status = read_status(&args.file)?;
    if status.state != "running" {
        eprint_line(format_args!("spillway: the job is not running (it {})", status.state));
        return Ok(ExitCode::from(crate::EXIT_FAILURE));
    }
    if let Some(rank) = args.rank
        && rank >= status.ranks.max(1)
    {
        return Err(super::common::UsageError(format!(
            "--rank {rank}: the job has {} rank(s)",
            status.ranks.max(1)
        ))
        .into());
    }
    let mut text = String::new();
    if let Some(threads) = args.threads {
        text.push_str(&Request::threads_line(threads, args.rank));
    }
    if args.end_of_input {
        text.push_str("end-of-input\n");
    }
    if args.stop {
        text.push_str("stop\n");
    }
    // Appended: a request that no rank has read yet is not overwritten by the next one.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(control_path(&args.file))
        .and_then(|mut file| file.write_all(text.as_bytes()));
    appended.map_err(|e| InputError(format!("cannot write the control file: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{RankStatus, Status, silent_ranks};
    use std::time::Duration;

    #[test]
    fn control_requests_apply_to_their_rank_and_the_last_wins() {
        use super::Request;
        let all = |n| Request::threads_line(n, None);
        let one = |n, r| Request::threads_line(n, Some(r));
        let text = [all(3), one(5, 1), "stop\n".into(), one(2, 0)].concat();
        assert_eq!(Request::parse(&text, 0), Request { stop: true, threads: Some(2), end_of_input: false });
        assert_eq!(Request::parse(&text, 1), Request { stop: true, threads: Some(5), end_of_input: false });
        assert_eq!(Request::parse(&text, 2), Request { stop: true, threads: Some(3), end_of_input: false });
        assert_eq!(Request::parse(&(text + &all(4)), 1).threads, Some(4));
        assert_eq!(Request::parse("threads x\nthreads 2 rank\nthreads 2 nope 1\n", 0), Request::default());
    }

    /// docs/status.md documents every field the status file holds, at the top level and in
    /// `per_rank` (and no field that is not written).
    #[test]
    fn the_schema_doc_names_every_field() {
        let doc = include_str!("../../../docs/status.md");
        let schema = &doc[doc.find("## Schema").expect("a schema section")..];
        let (table, rows) = schema.split_at(schema.find("`per_rank[i]`").expect("the per_rank paragraph"));
        let keys = |value: serde_json::Value| -> Vec<String> {
            value.as_object().expect("an object").keys().cloned().collect()
        };
        let named = |text: &str| -> Vec<String> {
            let mut names: Vec<String> = text
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .map(str::to_owned)
                .collect();
            names.sort_unstable();
            names.dedup();
            names
        };
        let status = keys(serde_json::to_value(Status::default()).unwrap());
        // The first column of the table's rows names the fields.
        let first_columns: String =
            table.lines().filter(|l| l.starts_with("| `")).filter_map(|l| l.split('|').nth(1)).collect();
        let documented = named(&first_columns);
        for key in &status {
            assert!(documented.contains(key), "docs/status.md: the table lacks `{key}`");
        }
        for name in &documented {
            assert!(
                status.contains(name),
                "docs/status.md documents `{name}`, which the status does not hold"
            );
        }
        let row = keys(serde_json::to_value(RankStatus::default()).unwrap());
        let in_rows = named(rows.split("\n\n").next().unwrap());
        for key in &row {
            assert!(in_rows.contains(key), "docs/status.md: per_rank lacks `{key}`");
        }
        for name in in_rows.iter().filter(|n| n.contains('_') || row.contains(n)) {
            assert!(
                row.contains(name),
                "docs/status.md documents per_rank `{name}`, which a row does not hold"
            );
        }
    }

    #[test]
    fn a_stale_status_or_rank_is_silent_only_while_running() {
        let row = |rank, heartbeat_ms| RankStatus {
            rank,
            heartbeat_ms,
            state: "running".into(),
            ..RankStatus::default()
        };
        let mut status = Status {
            state: "running".into(),
            updated_ms: 10_000,
            per_rank: vec![row(0, 10_000), row(1, 9_000), row(2, 2_000)],
            ..Status::default()
        };
        let stale = Duration::from_secs(5);
        assert_eq!(silent_ranks(&status, 12_000, stale), vec![2]);
        assert_eq!(silent_ranks(&status, 16_000, stale), vec![0, 1, 2]);
        status.state = "succeeded".into();
        assert!(silent_ranks(&status, 60_000, stale).is_empty());
    }
}
