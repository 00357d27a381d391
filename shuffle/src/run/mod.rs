//! The spill-run format: a writer, a reader, and the byte layout between them.
//!
//! A run holds the records of every partition, each partition's records sorted by key, in
//! rkyv-archived blocks that are read in place. The layout is documented in `FORMAT.md`
//! beside this file.

pub mod format;
#[allow(unsafe_code, reason = "access_unchecked on blocks validated at open; each block has a SAFETY note")]
mod reader;
mod writer;

pub use reader::{ArchivedBlock, Blocks, OpenRunGauge, PartitionIter, RunReader, validate_section};
pub use writer::{RunInfo, RunWriter};
