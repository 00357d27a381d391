//! Spillway's MapReduce engine: the job API, input splits, worker threads, map-side buffers
//! and spills, merges under the open-run threshold, reduce, and atomic output commit.
//!
//! - [`Job`]: map a [`Split`] by emitting `(key, value)` pairs into an [`Emitter`], optionally
//!   combine values, reduce each key. [`from_fns`] builds a job from closures.
//! - [`Engine`] (built by [`EngineBuilder`]): threads, partitions, memory budget,
//!   `max_open_runs`, spill directory, I/O backend, `sync`. [`Engine::run`] returns
//!   [`Metrics`]; [`sort::sort_records`] sorts fixed-size records with the same settings.
//! - [`Inputs`]: files and directories, memory-mapped before any work starts.
//! - [`OutputSpec`]: part files plus `_SUCCESS`, one sorted file, standard output, or the
//!   caller's [`Sink`] (each key's output in key order; [`Sink::collect`] keeps the pairs).
//! - [`jobs`]: word count, inverted index and grep, as the `spillway` tool runs them.
//!
//! # Example
//!
//! Count words in two files, in one globally sorted output file:
//!
//! ```
//! use spillway_engine::{Engine, Inputs, OutputSpec, jobs::WordCount, text::WordMode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("a.txt"), "the cat saw the dog\n")?;
//! std::fs::write(dir.path().join("b.txt"), "The dog, the end.\n")?;
//!
//! let engine = Engine::builder().threads(2).partitions(8).memory_budget(64 << 20).build()?;
//! let inputs = Inputs::new([dir.path()])?;
//! let out = dir.path().join("counts.tsv");
//! let metrics = engine.run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::File(out.clone()))?;
//!
//! assert_eq!(std::fs::read_to_string(&out)?, "The\t1\ncat\t1\ndog\t2\nend\t1\nsaw\t1\nthe\t3\n");
//! assert_eq!(metrics.map_records, 9);
//! # Ok(()) }
//! ```

// `deny`, not `forbid`: `cluster::comm` (feature `mpi`) is the one exception.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod background;
mod buffer;
pub mod cleanup;
pub mod cluster;
mod engine;
mod error;
pub mod failpoint;
mod feed;
mod input;
mod job;
pub mod jobs;
pub mod journal;
mod merge_plan;
mod metrics;
mod output;
mod owner;
mod pool;
pub mod report;
pub mod sort;
mod spill;
mod table;
#[cfg(test)]
mod testutil;
pub mod text;

pub use cluster::{Agreement, Cluster, Local};
pub use engine::{
    DEFAULT_BUDGET_CAP, DEFAULT_BUDGET_FLOOR, DEFAULT_MAX_ATTEMPTS, DEFAULT_MEMORY_BUDGET,
    DEFAULT_SPLIT_SIZE, Engine, EngineBuilder, MAX_THREADS, MIN_MEMORY_BUDGET, MemoryBudget, MemoryFacts,
    MemoryLimit, job_dir_path,
};
pub use error::{ConfigError, Error, JobError, Limit, Result};
pub use feed::{FileNames, InputFeed};
pub use input::{InputFile, Inputs, Split, SplitMode};
pub use job::{Combiner, Emitter, FnJob, Job, NoCombiner, Values, from_fns, in_job_code, panic_message};
pub use metrics::{Metrics, Phase, PhaseTimes, Progress, ResumeStats, Retries, anon_rss, peak_rss};
pub use output::{
    Collected, Destination, FileDestination, KeyOutput, KeySink, OutputSpec, Sink, TempFile,
    file_destination, open_in_place, parent_dir, part_name, write_whole,
};
pub use spillway_shuffle as shuffle;
/// What a job with its own value type needs, so that it depends on this crate alone: the
/// [`Value`] bound, the archived form reduce reads, [`to_owned`], and rkyv itself (derive with
/// `#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]` and
/// `#[rkyv(crate = spillway_engine::rkyv)]`; see `examples/struct_value.rs`).
pub use spillway_shuffle::{ArchivedValue, Value, rkyv, to_owned};
