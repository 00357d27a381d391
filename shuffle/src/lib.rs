//! Spillway's shuffle layer: bytes, keys and runs. It knows nothing of jobs.
//!
//! - [`partition`]: [`HashPartitioner`] (ahash, fixed seeds) and [`RangePartitioner`]
//!   (sorted boundaries, total order), each with a fingerprint that ranks compare.
//! - [`run`]: the spill-run format — [`RunWriter`] streams records in (partition, key) order
//!   into rkyv-archived blocks; [`RunReader`] validates a run once and iterates it in place.
//! - [`merge`]: the one loser tree ([`LoserTree`], generic over a [`MergeSource`]) with its
//!   two sources: [`Merge`] over runs' partitions and [`RecordCursor`] over plain record runs
//!   ([`RecordRun`]); [`merge_runs`], and [`plan_merges`], which keeps every merge within the
//!   open-run threshold F.
//! - [`io`]: reading through memory maps or `pread` ([`ByteSource`]), writing through the
//!   std or io_uring backend ([`IoBackend`]).
//! - [`limits`]: the default F from `RLIMIT_NOFILE`.
//!
//! # Example
//!
//! Write two runs of word counts, merge them with a combiner, and read the result:
//!
//! ```
//! use spillway_shuffle::{IoBackend, MergeOptions, ReadMode, RunReader, RunWriter, merge_runs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (a, b, out) = (dir.path().join("a.run"), dir.path().join("b.run"), dir.path().join("c.run"));
//!
//! // Two partitions; records go in (partition, key) order.
//! let mut w = RunWriter::<u64>::create(&a, 2, IoBackend::Std)?;
//! w.push(0, b"apple", &2)?;
//! w.push(1, b"pear", &1)?;
//! w.finish(false)?;
//! let mut w = RunWriter::<u64>::create(&b, 2, IoBackend::Std)?;
//! w.push(0, b"apple", &3)?;
//! w.push(0, b"fig", &1)?;
//! w.finish(false)?;
//!
//! let add = |acc: &mut u64, v: &rkyv::Archived<u64>| *acc += v.to_native();
//! merge_runs::<u64>(&[&a, &b], &out, Some(&add), &MergeOptions::default())?;
//!
//! let run = RunReader::<u64>::open(&out, ReadMode::Mmap)?;
//! let p0: Vec<(&[u8], u64)> = run.iter(0).map(|(k, v)| (k, v.to_native())).collect();
//! assert_eq!(p0, [(&b"apple"[..], 5), (&b"fig"[..], 1)]);
//! assert_eq!(run.records(1), 1);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod error;
pub mod io;
pub mod limits;
pub mod merge;
pub mod partition;
pub mod run;
mod value;

pub use error::{Error, Result};
pub use io::{ByteSource, FileSink, IoBackend, ReadMode};
pub use merge::{
    CombineFn, LoserTree, Merge, MergeOptions, MergePlan, MergeSource, MergeStep, RecordCursor, RecordRun,
    merge_readers, merge_runs, plan_merges,
};
pub use partition::{HashPartitioner, Partitioner, RangePartitioner};
pub use run::{OpenRunGauge, PartitionIter, RunInfo, RunReader, RunWriter};
pub use value::{Aligned, ArchivedValue, BLOCK_ALIGN, Block, Value, to_owned};

/// rkyv, re-exported so that users name the same version (for `Archived<T>` and derives).
pub use rkyv;
