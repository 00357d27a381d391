//! A record of a run: when each worker thread did what, and how the job's counters and memory
//! moved over time, rendered as a self-contained HTML page (the `spillway` tool's
//! `--report FILE.html`, `docs/report.md`).
//!
//! - [`Recorder`]: made by [`Progress::record`](crate::Progress::record) before a job starts
//!   (nothing is recorded without one). The engine marks the boundaries of its work items on
//!   the thread that does them — a split mapped, a spill written, a merge step, the
//!   exchange, a partition reduced, the commit — as [`Span`]s in a vector of the thread's own
//!   (no lock shared with another worker; one uncontended lock per work item, never per
//!   record), and each rank's bytes sent to every other rank.
//! - [`Sampler`]: a thread that samples the [`Progress`](crate::Progress) counters, the map
//!   buffers' accounted memory and the process's resident memory (`/proc/self/statm`) at
//!   20 Hz, halving its rate whenever it holds [`MAX_SAMPLES`] points (so a long job keeps a
//!   few thousand points at most).
//! - [`Report`]: what the page shows, for every rank (under MPI rank 0 gathers the other
//!   ranks' records at the end of the job); serialized as JSON into the page.
//! - [`render`]: the page, with its charts drawn as inline SVG (no script or style from the
//!   network; a small inline script adds tooltips and marks the page `data-rendered="ok"`).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use spillway_engine::{Engine, Inputs, OutputSpec, Progress, jobs::WordCount, report, text::WordMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("a.txt"), "the cat saw the dog\n")?;
//! let progress = Arc::new(Progress::default());
//! let recorder = Arc::clone(progress.record());
//! let sampler = recorder.sample(Arc::clone(&progress), 64 << 20);
//! let engine = Engine::builder().threads(2).memory_budget(64 << 20).progress(progress).build()?;
//! let metrics = engine.run(&WordCount { mode: WordMode::Unicode }, &Inputs::new([dir.path()])?,
//!     &OutputSpec::File(dir.path().join("counts.tsv")))?;
//! drop(sampler);
//! let report = recorder.report("wordcount", "succeeded", None, Some(metrics));
//! assert!(report.ranks[0].threads.iter().any(|t| t.spans.iter().any(|s| s.kind == report::SpanKind::Map)));
//! let page = report::render(&report);
//! assert!(page.contains("<svg"));
//! # Ok(()) }
//! ```

mod recorder;
mod render;
mod svg;

pub use recorder::{MAX_SAMPLES, Recorder, Sampler, SpanGuard};
pub use render::{DATA_ID, render};

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// The version of the report's JSON (the `<script type="application/json">` in the page);
/// fields are only added within a version.
pub const REPORT_VERSION: u32 = 1;

/// What a report page shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The job's name (`wordcount`, `sort`, ...).
    pub job: String,
    /// How it ended: `succeeded`, `failed`, `interrupted` (or `running`, for a record taken
    /// while it runs).
    pub state: String,
    /// Why it failed or was interrupted.
    pub message: Option<String>,
    /// Every rank's record, by rank (rank 0's alone when the job failed before the others'
    /// were gathered).
    pub ranks: Vec<RankRecord>,
    /// The job's metrics (totals over ranks), when it succeeded.
    pub metrics: Option<Metrics>,
}

/// One rank's (process's) record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
#[non_exhaustive]
pub struct RankRecord {
    /// The rank (0 without MPI).
    pub rank: usize,
    /// Ranks in the job.
    pub ranks: usize,
    /// The host it ran on.
    pub host: String,
    /// When its recording started, milliseconds since the Unix epoch (ranks are aligned by
    /// it, so across hosts by their clocks).
    pub started_unix_ms: u64,
    /// Milliseconds from the start of recording to the end of this record.
    pub elapsed_ms: u64,
    /// The map-side buffers' memory budget, bytes.
    pub memory_budget: u64,
    /// Milliseconds between samples at the end (the sampler halves its rate as points
    /// accumulate).
    pub sample_interval_ms: u64,
    /// Every thread that did recorded work, in the order they started.
    pub threads: Vec<ThreadTrack>,
    /// Counters and memory over time.
    pub samples: Vec<Sample>,
    /// Bytes of partition sections this rank sent to each rank (index = destination; empty
    /// on one rank or before the exchange).
    pub sent: Vec<u64>,
}

/// One thread's spans (threads of one name, which never run at once, share a track).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ThreadTrack {
    /// The thread's name (`spillway-map-0`, `main`, ...).
    pub name: String,
    /// Its spans by start time; a span nests inside another (a spill during a split's map)
    /// or follows it.
    pub spans: Vec<Span>,
}

/// A piece of work on one thread, from `start_us` to `end_us` (microseconds from the start of
/// recording).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Span {
    /// What it was.
    pub kind: SpanKind,
    /// Start, microseconds.
    pub start_us: u64,
    /// End, microseconds (at least `start_us`).
    pub end_us: u64,
    /// Bytes it handled, where known (a split's input, a run written); 0 otherwise.
    #[serde(default)]
    pub bytes: u64,
}

/// The kinds of work a report shows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SpanKind {
    /// Mapping one split.
    Map,
    /// Writing one spill run (sorted records of a map buffer).
    Spill,
    /// One merge step (background or planned).
    Merge,
    /// Moving partition sections to their owner ranks.
    Exchange,
    /// Reducing one partition (or the one output), and opening the final runs.
    Reduce,
    /// Committing the output.
    Commit,
}

impl SpanKind {
    /// Every kind, in the order the page's legend shows them.
    pub const ALL: [SpanKind; 6] = [
        SpanKind::Map,
        SpanKind::Spill,
        SpanKind::Merge,
        SpanKind::Exchange,
        SpanKind::Reduce,
        SpanKind::Commit,
    ];

    /// A lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Map => "map",
            SpanKind::Spill => "spill",
            SpanKind::Merge => "merge",
            SpanKind::Exchange => "exchange",
            SpanKind::Reduce => "reduce",
            SpanKind::Commit => "commit",
        }
    }
}

/// The job's counters and memory at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Sample {
    /// Milliseconds from the start of recording.
    pub t_ms: u64,
    /// Input bytes mapped so far.
    pub bytes_mapped: u64,
    /// Spill runs written so far.
    pub spills: u64,
    /// Merge steps done so far.
    pub merges: u64,
    /// Partitions reduced so far.
    pub partitions_done: u64,
    /// Bytes exchanged so far.
    pub bytes_exchanged: u64,
    /// Memory the map-side buffers hold (counted by capacity, as the budget counts it), at
    /// their workers' last split boundary.
    pub buffer_bytes: u64,
    /// Resident memory of the process (`/proc/self/statm`), bytes.
    pub rss_bytes: u64,
    /// The phase ([`Phase`](crate::Phase) as its number).
    pub phase: u8,
}

impl Report {
    /// The bytes sent from each rank (row) to each rank (column); ranks without an exchange
    /// record count zero.
    pub fn matrix(&self) -> Vec<Vec<u64>> {
        let n = self.ranks.iter().map(|r| r.ranks.max(r.rank + 1)).max().unwrap_or(1).max(1);
        let mut m = vec![vec![0u64; n]; n];
        for r in &self.ranks {
            for (to, &bytes) in r.sent.iter().enumerate().take(n) {
                m[r.rank.min(n - 1)][to] += bytes;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests;
