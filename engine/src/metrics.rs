//! Job metrics (written into `_SUCCESS` as JSON) and live progress counters.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// What a finished job did. Serialized as JSON into `_SUCCESS`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Ranks in the job (1 without MPI).
    pub ranks: usize,
    /// This rank (0 without MPI). In rank 0's totals, 0.
    pub rank: usize,
    /// Worker threads.
    pub threads: usize,
    /// Partitions R.
    pub partitions: u32,
    /// Memory budget for map-side buffers, in bytes.
    pub memory_budget: u64,
    /// Where the budget came from: the flag or call that set it (`"--memory"`), or how the
    /// default was computed (`"half of cgroup memory.max (4.0 GiB)"`, see
    /// [`MemoryBudget::from_facts`](crate::MemoryBudget::from_facts)).
    #[serde(default)]
    pub memory_budget_source: String,
    /// The open-run threshold F.
    pub max_open_runs: usize,
    /// The I/O backend actually used ("std" or "uring").
    pub io_backend: String,
    /// Input files.
    pub input_files: u64,
    /// Input bytes.
    pub input_bytes: u64,
    /// Splits mapped.
    pub splits: u64,
    /// Pairs emitted by map.
    pub map_records: u64,
    /// Spill runs written by map-side buffers.
    pub spills: u64,
    /// Bytes of spill runs.
    pub spill_bytes: u64,
    /// Intermediate merges (background and planned).
    pub merge_steps: u64,
    /// Bytes written by intermediate merges.
    pub merge_bytes: u64,
    /// The largest number of runs any merge read (the final merge included).
    pub max_fan_in: usize,
    /// The most run readers open at once within any one merge step (never above F).
    pub peak_open_runs: usize,
    /// Bytes of partition sections sent to other ranks.
    pub bytes_sent: u64,
    /// Bytes of partition sections received from other ranks.
    pub bytes_received: u64,
    /// Keys reduced.
    pub output_keys: u64,
    /// Output bytes written.
    pub output_bytes: u64,
    /// Output files written.
    pub output_files: u64,
    /// Peak resident set size of the process (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Peak anonymous resident memory sampled during the job (RssAnon), bytes: sampled every
    /// 10 ms by a thread of its own when memory sampling is on
    /// ([`EngineBuilder::sample_memory`](crate::EngineBuilder::sample_memory), the `spillway`
    /// tool turns it on), 0 otherwise. Mapped input pages are reclaimable page cache and are
    /// not included.
    pub peak_anon_bytes: u64,
    /// Seconds per phase.
    pub seconds: PhaseTimes,
    /// Where the exchange's time went (all zero on one rank).
    #[serde(default)]
    pub exchange: ExchangeTimes,
    /// Failed attempts of the job's code that were tried again
    /// ([`EngineBuilder::max_attempts`](crate::EngineBuilder::max_attempts)).
    #[serde(default)]
    pub retries: Retries,
    /// What a resumable job found done when it started (all zero for a fresh one).
    #[serde(default)]
    pub resumed: ResumeStats,
    /// With several ranks, on rank 0: every rank's own metrics (this struct then holds the
    /// totals: sums of counts, maxima of peaks and times).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_rank: Vec<Metrics>,
}

/// Failed attempts that were tried again, per kind of task: what a failed attempt emitted or
/// wrote counts zero times.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Retries {
    /// Map attempts of a split that failed (an error or a panic in the job's `map`, or in
    /// its combiner while it mapped).
    pub map: u64,
    /// Merge steps whose attempt failed (a panic in the job's combiner).
    pub merge: u64,
    /// Reduce attempts of a partition (or of the one output file) that failed.
    pub reduce: u64,
}

/// What a resumable job ([`EngineBuilder::resume`](crate::EngineBuilder::resume)) found in
/// its job directory when it started.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ResumeStats {
    /// Splits done already (their runs kept, validated): not mapped again.
    pub splits_done: u64,
    /// Runs kept and validated.
    pub runs_kept: u64,
    /// Runs dropped: missing, damaged, or holding the output of splits that another dropped
    /// run held too; those splits were mapped again.
    pub runs_dropped: u64,
    /// Part files an earlier session completed, used as they were (not reduced again).
    #[serde(default)]
    pub partitions_kept: u64,
    /// Why the journal was read only up to some record (a damaged record), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_stopped: Option<String>,
}

/// Wall-clock seconds per phase.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct PhaseTimes {
    /// Map (with background merges).
    pub map: f64,
    /// Moving partition sections to their owner ranks (0 on one rank), including the wait for
    /// the slowest rank's map phase; [`Metrics::exchange`] has the parts.
    pub exchange: f64,
    /// Planned intermediate merges after the map phase.
    pub merge: f64,
    /// Final merge and reduce, output commit included.
    pub reduce: f64,
    /// The whole job.
    pub total: f64,
}

impl Metrics {
    /// Totals over ranks: counts summed, peaks and times maximal; `per_rank` holds the parts.
    /// The exchange times are maxima over ranks too (their message counts are summed).
    pub(crate) fn totals(parts: Vec<Metrics>) -> Metrics {
        let mut t = parts.first().cloned().unwrap_or_default();
        t.rank = 0;
        for m in &parts[1..] {
            t.splits += m.splits;
            t.map_records += m.map_records;
            t.spills += m.spills;
            t.spill_bytes += m.spill_bytes;
            t.merge_steps += m.merge_steps;
            t.merge_bytes += m.merge_bytes;
            t.max_fan_in = t.max_fan_in.max(m.max_fan_in);
            t.peak_open_runs = t.peak_open_runs.max(m.peak_open_runs);
            t.bytes_sent += m.bytes_sent;
            t.bytes_received += m.bytes_received;
            t.output_keys += m.output_keys;
            t.output_bytes += m.output_bytes;
            t.output_files += m.output_files;
            t.peak_rss_bytes = t.peak_rss_bytes.max(m.peak_rss_bytes);
            t.peak_anon_bytes = t.peak_anon_bytes.max(m.peak_anon_bytes);
            t.threads += m.threads;
            let (a, b) = (&mut t.seconds, &m.seconds);
            a.map = a.map.max(b.map);
            a.exchange = a.exchange.max(b.exchange);
            a.merge = a.merge.max(b.merge);
            a.reduce = a.reduce.max(b.reduce);
            a.total = a.total.max(b.total);
            t.exchange.max(&m.exchange);
            t.retries.map += m.retries.map;
            t.retries.merge += m.retries.merge;
            t.retries.reduce += m.retries.reduce;
            t.resumed.splits_done += m.resumed.splits_done;
            t.resumed.runs_kept += m.resumed.runs_kept;
            t.resumed.runs_dropped += m.resumed.runs_dropped;
            t.resumed.partitions_kept += m.resumed.partitions_kept;
        }
        t.per_rank = parts;
        t
    }
}

/// The phase a job is in, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Opening inputs and planning splits.
    Starting = 0,
    /// Mapping splits.
    Map = 1,
    /// Intermediate merges (and, with several ranks, the exchange).
    Merge = 2,
    /// Final merge and reduce.
    Reduce = 3,
    /// Finished.
    Done = 4,
}

impl Phase {
    /// A short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Map => "map",
            Phase::Merge => "merge",
            Phase::Reduce => "reduce",
            Phase::Done => "done",
        }
    }
}

/// Live counters a job updates as it goes; a progress display reads them from another thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes in splits that have been mapped.
    pub bytes_mapped: AtomicU64,
    /// Total input bytes.
    pub bytes_total: AtomicU64,
    /// Splits mapped.
    pub splits_done: AtomicU64,
    /// Splits in the job.
    pub splits_total: AtomicU64,
    /// Spill runs written.
    pub spills: AtomicU64,
    /// Merge steps done.
    pub merges: AtomicU64,
    /// Partitions reduced.
    pub partitions_done: AtomicU64,
    /// Failed attempts of the job's code that are tried again.
    pub retries: AtomicU64,
    /// Splits whose output a resumable job has journaled (done for good), including those
    /// found done when it resumed.
    pub splits_committed: AtomicU64,
    /// Pairs emitted by map, counted at each worker's commit points (what a failed attempt
    /// emitted is never counted).
    pub records: AtomicU64,
    /// Bytes of partition sections this rank received so far while its exchange runs, then,
    /// once it ended, the bytes it sent and received (0 on one rank).
    pub bytes_exchanged: AtomicU64,
    /// Set (by another thread, at any time, through [`Progress::set_threads_wanted`]) to
    /// run the job on this many worker threads (0, the default: the engine's
    /// [`threads`](crate::EngineBuilder::threads)). It may be above the engine's threads:
    /// more workers start (up to [`Progress::threads_max`]). The map phase applies it at
    /// each worker's next split boundary (a worker that leaves commits what it mapped and
    /// gives its buffer back; the memory budget is divided among the wanted workers, each
    /// buffer rebuilt with the new share), merges and reduce at each worker's next work item
    /// (a merge step, a partition).
    pub threads_wanted: AtomicUsize,
    /// Workers working now (neither waiting for [`Progress::threads_wanted`] to rise nor
    /// finished) in the map phase, the planned merges or reduce; 0 between phases.
    pub threads_active: AtomicUsize,
    /// The most worker threads [`Progress::threads_wanted`] can start in this job (the memory
    /// budget's shares and the open-file limit bound it); set when the job starts.
    pub threads_max: AtomicUsize,
    /// Merge steps planned: the background merges started plus the planned merge phase's
    /// steps, known when that phase starts.
    pub merges_planned: AtomicU64,
    /// Runs waiting: in the map phase, the runs in the pool (handed on at commit points) that
    /// no merge has taken; in the planned merges, the runs not yet merged (each step turns
    /// its inputs into one); in reduce, the runs of the final merge.
    pub runs_waiting: AtomicU64,
    /// Wakes the workers waiting for a change of [`Progress::threads_wanted`].
    changed: std::sync::Condvar,
    changed_lock: std::sync::Mutex<()>,
    phase: AtomicU8,
    /// Set to ask the job to stop (another thread or rank failed); the job then fails with
    /// [`Error::Cancelled`](crate::Error::Cancelled).
    pub cancel: AtomicBool,
    /// The record of the run, once [`Progress::record`] asked for one.
    recorder: std::sync::OnceLock<std::sync::Arc<crate::report::Recorder>>,
}

impl Progress {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Map,
            2 => Phase::Merge,
            3 => Phase::Reduce,
            4 => Phase::Done,
            _ => Phase::Starting,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Starts recording the job's timeline ([`report`](crate::report)), if it does not yet;
    /// the engine records spans only for a `Progress` asked this before the job starts.
    pub fn record(&self) -> &std::sync::Arc<crate::report::Recorder> {
        self.recorder.get_or_init(std::sync::Arc::default)
    }

    /// The recorder, when [`Progress::record`] made one.
    pub fn recorder(&self) -> Option<&std::sync::Arc<crate::report::Recorder>> {
        self.recorder.get()
    }

    /// A span of `kind` on this thread while the guard lives, when recording (nothing
    /// otherwise: one atomic load).
    pub(crate) fn span(&self, kind: crate::report::SpanKind) -> Option<crate::report::SpanGuard<'_>> {
        self.recorder.get().map(|r| r.span(kind))
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Asks the job to run on `n` worker threads (0: the engine's own count); see
    /// [`Progress::threads_wanted`]. Wakes the workers waiting for it.
    pub fn set_threads_wanted(&self, n: usize) {
        self.threads_wanted.store(n, Ordering::Relaxed);
        self.notify();
    }

    /// Wakes every thread in [`Progress::wait_for_change`].
    pub(crate) fn notify(&self) {
        let _guard = self.changed_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.changed.notify_all();
    }

    /// Blocks (without spinning) until [`Progress::notify`] or a tenth of a second passed,
    /// unless `done` already holds: the waits of workers for a change of
    /// [`Progress::threads_wanted`], for work, or for the end of a phase (the timeout only
    /// bounds a missed wake-up, as a cancellation that does not notify).
    pub(crate) fn wait_for_change(&self, done: impl Fn() -> bool) {
        let guard = self.changed_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if done() {
            return;
        }
        let _ = self.changed.wait_timeout(guard, Duration::from_millis(100));
    }
}

/// Reads a `kB` field of `/proc/self/status`, in bytes.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of this process so far (VmHWM).
pub fn peak_rss() -> u64 {
    status_field("VmHWM:").unwrap_or(0)
}

/// Anonymous resident memory of this process right now (RssAnon).
pub fn anon_rss() -> u64 {
    status_field("RssAnon:").unwrap_or(0)
}

/// Samples [`anon_rss`] every few milliseconds until dropped and reports the peak; or, off,
/// starts no thread and reports 0.
pub(crate) struct AnonSampler {
    stop: std::sync::Arc<AtomicBool>,
    peak: std::sync::Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
    on: bool,
}

impl AnonSampler {
    pub(crate) fn start(on: bool) -> Self {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        if !on {
            return AnonSampler { stop, peak: std::sync::Arc::default(), handle: None, on };
        }
        let peak = std::sync::Arc::new(AtomicU64::new(anon_rss()));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::Builder::new()
            .name("spillway-rss".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.fetch_max(anon_rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .ok();
        AnonSampler { stop, peak, handle, on }
    }

    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if self.on {
            self.peak.fetch_max(anon_rss(), Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for AnonSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Wall-clock seconds of the parts of the exchange on one rank, and what moved.
///
/// `premerge`, `wait`, `prepare`, `descriptors`, `data`, `finish` and `local` follow each other and add
/// up to [`PhaseTimes::exchange`](crate::PhaseTimes::exchange); `transfer`, `drain` and
/// `write` are parts of `data` that overlap (received bytes are written while the next ones
/// arrive).
///
/// The honest transfer rate of a rank is `bytes_received / transfer` (see
/// [`ExchangeTimes::transfer_rate`]): waiting for the slowest rank to finish its map phase,
/// finding the sections, exchanging descriptors, writing what arrived and handling the rank's
/// own sections are not transfer time.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct ExchangeTimes {
    /// Waiting for every rank to reach the exchange (a rank that finished its map phase early
    /// waits here for the slowest one).
    pub wait: f64,
    /// Finding the sections of the local runs.
    pub prepare: f64,
    /// Exchanging section descriptors (all-to-all).
    pub descriptors: f64,
    /// Wall time of moving and writing section bytes, from the first message posted until
    /// every byte sent has been taken and every byte received has been written.
    pub data: f64,
    /// Receiving section bytes from other ranks (the copy happens here): from the first
    /// message posted until the last byte arrived, without the time the receiver stalled
    /// because no receive buffer was free (received bytes still being written).
    pub transfer: f64,
    /// After receiving, waiting for the other ranks to take this rank's sends.
    pub drain: f64,
    /// Writing received sections into runs (overlaps `transfer`).
    pub write: f64,
    /// Closing the last received run.
    pub finish: f64,
    /// Keeping this rank's own sections: removing runs with nothing left to reduce here, and
    /// copying the own sections into smaller runs when keeping the runs whole would exceed F.
    pub local: f64,
    /// Messages sent: one stream per destination, cut into messages of its receiver's size.
    pub messages: u64,
    /// The largest message size in bytes that this rank receives with.
    pub chunk_bytes: u64,
    /// Sections received in pieces (cut by the end of a receive buffer).
    pub pieced: u64,
    /// Bytes copied into messages that span several sections (the rest is sent straight from
    /// the mapped runs).
    pub packed: u64,
    /// Merging this rank's runs into one before sending (see `premerged`).
    pub premerge: f64,
    /// Local runs merged into one before sending, so that each receiver gets one run from this
    /// rank (0: sent as they were; done when the receivers' runs would exceed F).
    pub premerged: u64,
    /// Runs this rank received (one per source run that held sections for it).
    pub runs_received: u64,
    /// Ranks whose sections this rank received.
    pub sources: u64,
}

impl ExchangeTimes {
    /// Bytes received per second of transfer (0 when nothing moved).
    pub fn transfer_rate(&self, bytes_received: u64) -> f64 {
        if self.transfer > 0.0 { bytes_received as f64 / self.transfer } else { 0.0 }
    }

    /// Maxima of the times and the message size, sums of the counts.
    pub(crate) fn max(&mut self, o: &ExchangeTimes) {
        self.wait = self.wait.max(o.wait);
        self.prepare = self.prepare.max(o.prepare);
        self.descriptors = self.descriptors.max(o.descriptors);
        self.data = self.data.max(o.data);
        self.transfer = self.transfer.max(o.transfer);
        self.drain = self.drain.max(o.drain);
        self.write = self.write.max(o.write);
        self.finish = self.finish.max(o.finish);
        self.local = self.local.max(o.local);
        self.messages += o.messages;
        self.chunk_bytes = self.chunk_bytes.max(o.chunk_bytes);
        self.pieced += o.pieced;
        self.packed += o.packed;
        self.premerge = self.premerge.max(o.premerge);
        self.premerged += o.premerged;
        self.runs_received += o.runs_received;
        self.sources += o.sources;
    }
}
