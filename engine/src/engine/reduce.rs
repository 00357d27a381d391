//! Reduce: every owned partition into its part file, or every key into one output.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::Ordering;

use spillway_shuffle::{Merge, RunReader};

use super::Engine;
use super::map::panic_message;

use crate::error::{Error, Result};
use crate::job::Job;
use crate::output::{OutputFile, TempFile, part_name};
use crate::pool::{self};

impl Engine {
    /// Reduces every partition into its own part file in the staging directory `dir`,
    /// partitions spread over the threads.
    pub(super) fn reduce_to_dir<J: Job>(
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
pub(super) fn reduce_all<J: Job>(
    job: &J,
    readers: &[RunReader<J::Value>],
    out: OutputFile,
) -> Result<(u64, u64, Option<TempFile>)> {
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
) -> Result<(u64, u64, Option<TempFile>)> {
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
        // A failure of the output itself (a full disk) is the machine's, not the job's: the
        // output recorded it, naming the file.
        return Err(out
            .take_error()
            .unwrap_or_else(|| Error::Job { split: what.to_owned(), message: e.to_string() }));
    }
    let (bytes, file) = out.finish()?;
    Ok((keys, bytes, file))
}
