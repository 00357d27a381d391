//! The recorder: spans per thread, the sampler, and what a rank gathers.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{RankRecord, Report, Sample, Span, SpanKind, ThreadTrack};
use crate::metrics::{Metrics, Progress};
use crate::pool::lock;

/// The most samples a rank keeps: at this many the sampler drops every other one and halves
/// its rate.
pub const MAX_SAMPLES: usize = 2048;

/// The sampler's first interval (20 Hz).
const FIRST_INTERVAL: Duration = Duration::from_millis(50);

/// Spans a thread's vector holds before it grows (a split is at least a megabyte of input,
/// so few threads ever record more).
const SPANS_AHEAD: usize = 256;

/// Tells recorders apart in the threads' caches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's log in the recorder it last recorded for (recorder id, log).
    static LOG: RefCell<Option<(u64, Arc<ThreadLog>)>> = const { RefCell::new(None) };
}

/// The spans of one thread: only that thread pushes (its lock is never contended but by the
/// snapshot at the end).
#[derive(Debug)]
struct ThreadLog {
    name: String,
    spans: Mutex<Vec<Span>>,
    /// The thread's map buffer's memory at its last split boundary.
    buffer: AtomicU64,
}

/// Records a job's spans and samples; see the [module](super) documentation.
#[derive(Debug)]
pub struct Recorder {
    id: u64,
    start: Instant,
    started_unix_ms: u64,
    threads: Mutex<Vec<Arc<ThreadLog>>>,
    samples: Mutex<Samples>,
    sent: Mutex<Vec<u64>>,
    memory_budget: AtomicU64,
    rank: AtomicUsize,
    ranks: AtomicUsize,
    /// The other ranks' records, gathered by rank 0 at the end of the job.
    others: Mutex<Vec<RankRecord>>,
}

#[derive(Debug, Default)]
struct Samples {
    points: Vec<Sample>,
    interval_ms: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Recorder {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            start: Instant::now(),
            started_unix_ms,
            threads: Mutex::default(),
            samples: Mutex::new(Samples {
                points: Vec::with_capacity(MAX_SAMPLES),
                interval_ms: FIRST_INTERVAL.as_millis() as u64,
            }),
            sent: Mutex::default(),
            memory_budget: AtomicU64::new(0),
            rank: AtomicUsize::new(0),
            ranks: AtomicUsize::new(1),
            others: Mutex::default(),
        }
    }

    /// Microseconds since the recorder started.
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Runs `f` on the calling thread's log (registered with its first span).
    fn with_log<T>(&self, f: impl FnOnce(&ThreadLog) -> T) -> T {
        LOG.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().is_none_or(|(id, _)| *id != self.id) {
                let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
                let log = Arc::new(ThreadLog {
                    name,
                    spans: Mutex::new(Vec::with_capacity(SPANS_AHEAD)),
                    buffer: AtomicU64::new(0),
                });
                lock(&self.threads).push(Arc::clone(&log));
                *cell = Some((self.id, log));
            }
            f(&cell.as_ref().expect("registered above").1)
        })
    }

    /// Starts a span of `kind` on this thread; it ends when the guard drops.
    pub fn span(&self, kind: SpanKind) -> SpanGuard<'_> {
        SpanGuard { recorder: self, kind, start_us: self.now_us(), bytes: 0 }
    }

    /// Records a finished span on this thread.
    fn push(&self, span: Span) {
        self.with_log(|log| lock(&log.spans).push(span));
    }

    /// Notes the memory of this thread's map buffer (at a split boundary; 0 once it is gone).
    pub fn note_buffer(&self, bytes: u64) {
        self.with_log(|log| log.buffer.store(bytes, Ordering::Relaxed));
    }

    /// Notes the bytes this rank (`rank` of `ranks`) sent to each rank.
    pub fn note_sent(&self, rank: usize, sent: Vec<u64>) {
        self.set_rank(rank, sent.len().max(1));
        *lock(&self.sent) = sent;
    }

    /// Sets this process's rank and the job's ranks.
    pub fn set_rank(&self, rank: usize, ranks: usize) {
        self.rank.store(rank, Ordering::Relaxed);
        self.ranks.store(ranks.max(1), Ordering::Relaxed);
    }

    /// Keeps the other ranks' records (rank 0, at the end of the job).
    pub fn set_others(&self, others: Vec<RankRecord>) {
        *lock(&self.others) = others;
    }

    /// Takes one sample of `progress` now.
    fn sample_now(&self, progress: &Progress) {
        let buffer_bytes = lock(&self.threads).iter().map(|t| t.buffer.load(Ordering::Relaxed)).sum();
        let sample = Sample {
            t_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_mapped: progress.bytes_mapped.load(Ordering::Relaxed),
            spills: progress.spills.load(Ordering::Relaxed),
            merges: progress.merges.load(Ordering::Relaxed),
            partitions_done: progress.partitions_done.load(Ordering::Relaxed),
            bytes_exchanged: progress.bytes_exchanged.load(Ordering::Relaxed),
            buffer_bytes,
            rss_bytes: statm_rss(),
            phase: progress.phase() as u8,
        };
        let mut samples = lock(&self.samples);
        if samples.points.len() >= MAX_SAMPLES {
            // Every other point goes, and the rate halves: the points stay evenly spaced.
            let kept: Vec<Sample> = samples.points.iter().step_by(2).copied().collect();
            samples.points.clear();
            samples.points.extend(kept);
            samples.interval_ms *= 2;
        }
        samples.points.push(sample);
    }

    /// Starts the sampler thread for `progress` (its buffers' budget is `memory_budget`
    /// bytes); it stops when the [`Sampler`] drops, after a last sample.
    pub fn sample(self: &Arc<Self>, progress: Arc<Progress>, memory_budget: u64) -> Sampler {
        self.memory_budget.store(memory_budget, Ordering::Relaxed);
        self.sample_now(&progress);
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (recorder, flag) = (Arc::downgrade(self), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("spillway-report".into())
            .spawn(move || sample_until_stopped(&recorder, &progress, &flag))
            .ok();
        Sampler { stop, thread }
    }

    /// This rank's record so far.
    pub fn rank_record(&self) -> RankRecord {
        let mut tracks: Vec<ThreadTrack> = Vec::new();
        for log in lock(&self.threads).iter() {
            let spans = lock(&log.spans).clone();
            match tracks.iter_mut().find(|t| t.name == log.name) {
                Some(track) => track.spans.extend(spans),
                None => tracks.push(ThreadTrack { name: log.name.clone(), spans }),
            }
        }
        for track in &mut tracks {
            // Outer spans first where two start together.
            track.spans.sort_by_key(|s| (s.start_us, std::cmp::Reverse(s.end_us)));
        }
        let samples = lock(&self.samples);
        RankRecord {
            rank: self.rank.load(Ordering::Relaxed),
            ranks: self.ranks.load(Ordering::Relaxed),
            host: host_name(),
            started_unix_ms: self.started_unix_ms,
            elapsed_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            memory_budget: self.memory_budget.load(Ordering::Relaxed),
            sample_interval_ms: samples.interval_ms,
            threads: tracks,
            samples: samples.points.clone(),
            sent: lock(&self.sent).clone(),
        }
    }

    /// The whole report: this rank's record and the other ranks' gathered ones.
    pub fn report(
        &self,
        job: &str,
        state: &str,
        message: Option<String>,
        metrics: Option<Metrics>,
    ) -> Report {
        let mut ranks = vec![self.rank_record()];
        ranks.extend(lock(&self.others).iter().cloned());
        ranks.sort_by_key(|r| r.rank);
        ranks.dedup_by_key(|r| r.rank);
        Report {
            version: super::REPORT_VERSION,
            job: job.to_owned(),
            state: state.to_owned(),
            message,
            ranks,
            metrics,
        }
    }
}

/// The sampler's loop: a sample every interval until stopped (or the recorder is gone).
fn sample_until_stopped(
    recorder: &Weak<Recorder>,
    progress: &Progress,
    stop: &(Mutex<bool>, std::sync::Condvar),
) {
    loop {
        let interval = match recorder.upgrade() {
            Some(r) => Duration::from_millis(lock(&r.samples).interval_ms),
            None => return,
        };
        let guard = lock(&stop.0);
        let (guard, _) = stop
            .1
            .wait_timeout_while(guard, interval, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stopped = *guard;
        drop(guard);
        if let Some(r) = recorder.upgrade() {
            r.sample_now(progress);
        }
        if stopped {
            return;
        }
    }
}

/// The sampler thread of a [`Recorder`]; dropping it takes a last sample and stops it.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A span being recorded: it ends when dropped.
#[derive(Debug)]
pub struct SpanGuard<'r> {
    recorder: &'r Recorder,
    kind: SpanKind,
    start_us: u64,
    bytes: u64,
}

impl SpanGuard<'_> {
    /// Sets the bytes the span handled.
    pub fn bytes(&mut self, bytes: u64) {
        self.bytes = bytes;
    }
}

impl Drop for SpanGuard<'_> {
    fn drop(&mut self) {
        let end_us = self.recorder.now_us().max(self.start_us);
        self.recorder.push(Span { kind: self.kind, start_us: self.start_us, end_us, bytes: self.bytes });
    }
}

/// The page size, from the auxiliary vector (`AT_PAGESZ`); 4096 where it cannot be read.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        auxv.chunks_exact(16)
            .map(|pair| {
                let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
                (word(&pair[..8]), word(&pair[8..]))
            })
            .find(|&(key, _)| key == AT_PAGESZ)
            .map_or(4096, |(_, value)| value)
    })
}

/// Resident memory of this process (`/proc/self/statm`, second field, in pages), bytes.
pub(crate) fn statm_rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|f| f.parse().ok()).unwrap_or(0);
    pages * page_size()
}

/// This host's name (`/proc/sys/kernel/hostname`), or `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_stay_bounded_and_evenly_spaced() {
        let recorder = Recorder::new();
        let progress = Progress::default();
        for i in 0..(3 * MAX_SAMPLES as u64) {
            progress.bytes_mapped.store(i, Ordering::Relaxed);
            recorder.sample_now(&progress);
        }
        let record = recorder.rank_record();
        assert!(record.samples.len() <= MAX_SAMPLES && record.samples.len() >= MAX_SAMPLES / 2);
        // Halved at pushes 2049, 3073, 4097 and 5121 (each time back to MAX / 2 points).
        assert_eq!(record.sample_interval_ms, 16 * FIRST_INTERVAL.as_millis() as u64);
        assert_eq!(record.samples.len(), MAX_SAMPLES);
        assert!(record.samples.windows(2).all(|w| w[0].bytes_mapped < w[1].bytes_mapped));
    }

    #[test]
    fn threads_get_their_own_tracks_and_spans_end_after_they_start() {
        let recorder = Arc::new(Recorder::new());
        std::thread::scope(|s| {
            for t in 0..3 {
                let r = &recorder;
                std::thread::Builder::new()
                    .name(format!("worker-{t}"))
                    .spawn_scoped(s, move || {
                        for _ in 0..10 {
                            let _outer = r.span(SpanKind::Map);
                            let mut inner = r.span(SpanKind::Spill);
                            inner.bytes(7);
                        }
                    })
                    .unwrap();
            }
        });
        let record = recorder.rank_record();
        assert_eq!(record.threads.len(), 3);
        for track in &record.threads {
            assert_eq!(track.spans.len(), 20);
            assert_eq!(track.spans.iter().filter(|s| s.kind == SpanKind::Spill && s.bytes == 7).count(), 10);
        }
        assert!(page_size().is_power_of_two() && statm_rss() > 0);
    }
}
