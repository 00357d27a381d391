//! Reduce: every owned partition into its part file, or every key into one output.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use spillway_shuffle::{Merge, RunReader};

use super::Engine;
use super::resume::{JobDir, Resumed};

use crate::cleanup::{self, Notice};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::job::{self, Job};
use crate::output::{Destination, FileDestination, OutputFile, file_destination, part_name};
use crate::pool::{self};
use crate::report::SpanKind;

impl Engine {
    /// Reduces every partition into its own part file in the staging directory `dir`,
    /// partitions spread over the threads.
    pub(super) fn reduce_to_dir<J: Job>(
        &self,
        job: &J,
        readers: &[RunReader<J::Value>],
        owned: &[u32],
        dir: &Path,
        retries: &AtomicU64,
        resumable: Option<(&JobDir, &Resumed)>,
    ) -> Result<(u64, u64, u64)> {
        let progress = &*self.progress;
        let parts = pool::for_each_in(
            "spillway-reduce",
            self.crew(),
            owned.to_vec(),
            || (),
            |(), p| {
                if progress.cancelled() {
                    return Err(Error::Cancelled);
                }
                let path = dir.join(part_name(p));
                // A part file an earlier session of a resumable job completed is linked in.
                if let Some((_, resumed)) = resumable
                    && let Some(kept) = resumed.reduced.get(&p)
                    && kept.is_intact()
                    && std::fs::hard_link(&kept.path, &path).is_ok()
                {
                    resumed.parts_kept.fetch_add(1, Ordering::Relaxed);
                    progress.partitions_done.fetch_add(1, Ordering::Relaxed);
                    return Ok((kept.keys, kept.bytes));
                }
                let mut span = progress.span(SpanKind::Reduce); // the report's record (--report)
                let (keys, bytes, _) = self.with_retries(retries, || {
                    // A failed attempt's part file is written again from its start.
                    let out = OutputFile::create_staged(&path, self.io)?;
                    let merge = Merge::new(readers.iter().map(|r| r.iter(p)).collect());
                    reduce_merge(job, merge, out, &format!("reduce of partition {p}"), self.sync)
                })?;
                if let Some(span) = &mut span {
                    span.bytes(bytes);
                }
                if let Some((job_dir, _)) = resumable {
                    job_dir.reduced(p, &path, keys)?;
                }
                progress.partitions_done.fetch_add(1, Ordering::Relaxed);
                Ok((keys, bytes))
            },
        );
        progress.threads_active.store(0, Ordering::Relaxed);
        // (On failure the staging directory goes, with every part file written into it.)
        let parts = parts?;
        let (keys, bytes) = parts.iter().fold((0, 0), |(k, b), &(keys, bytes)| (k + keys, b + bytes));
        Ok((keys, bytes, parts.len() as u64))
    }

    /// Reduces every partition of `readers` into the one output file `path`, all keys in byte
    /// order (see [`reduce_all`]). A file that replaces its target is written again from the
    /// start when the job's code fails; a device or FIFO, written in place, is tried once
    /// (what reached it cannot be taken back).
    pub(super) fn reduce_to_file<J: Job>(
        &self,
        job: &J,
        readers: &[RunReader<J::Value>],
        path: &Path,
        retries: &AtomicU64,
    ) -> Result<(u64, u64, Option<Destination>)> {
        let attempt = || reduce_all(job, readers, OutputFile::create(path, self.io)?, self.sync);
        match file_destination(path)? {
            FileDestination::Replace(_) => self.with_retries(retries, attempt),
            FileDestination::InPlace(_) => attempt(),
        }
    }

    /// Runs `attempt` until it succeeds, fails otherwise than in the job's code, or has failed
    /// [`max_attempts`](crate::EngineBuilder::max_attempts) times; counts the retries.
    fn with_retries<T>(&self, retries: &AtomicU64, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempts = 1;
        loop {
            match attempt() {
                Err(Error::Job { split, message, .. }) if attempts < self.max_attempts => {
                    cleanup::notify(&Notice::Retrying {
                        task: split,
                        attempt: attempts,
                        max_attempts: self.max_attempts,
                        message,
                    });
                    attempts += 1;
                    self.progress.retries.fetch_add(1, Ordering::Relaxed);
                    retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::Job { split, message, .. }) => {
                    return Err(Error::Job { split, attempts, message });
                }
                other => return other,
            }
        }
    }
}

/// Reduces every partition of `readers` into one output, all keys in byte order: partitions
/// hold disjoint keys, so one merge over every (run, partition) cursor yields global order
/// while never reading more than the F runs that are open. Returns the destination waiting to
/// be committed (`fsync`ed when `sync`).
pub(super) fn reduce_all<J: Job>(
    job: &J,
    readers: &[RunReader<J::Value>],
    out: OutputFile,
    sync: bool,
) -> Result<(u64, u64, Option<Destination>)> {
    let partitions = readers.first().map_or(0, RunReader::partitions);
    let merge = Merge::new(readers.iter().flat_map(|r| (0..partitions).map(|p| r.iter(p))).collect());
    reduce_merge(job, merge, out, "reduce", sync)
}

/// Reduces every group of `merge` into `out` and finishes it (`fsync`ed when `sync`): (keys,
/// bytes, the destination waiting to be committed).
fn reduce_merge<J: Job>(
    job: &J,
    mut merge: Merge<'_, J::Value>,
    mut out: OutputFile,
    what: &str,
    sync: bool,
) -> Result<(u64, u64, Option<Destination>)> {
    let mut keys = 0u64;
    let outcome = job::call(|| {
        while let Some((key, mut group)) = merge.next_group() {
            job.reduce(key, &mut group, &mut out)?;
            out.end_key(key)?;
            keys += 1;
        }
        match failpoint::hit("reduce.partition") {
            true => Err(failpoint::message("reduce.partition").into()),
            false => Ok(()),
        }
    });
    if let Err(message) = outcome {
        // A failure of the output itself (a full disk) is the machine's, not the job's: the
        // output recorded it, naming the file.
        return Err(out.take_error().unwrap_or_else(|| Error::Job {
            split: what.to_owned(),
            attempts: 1,
            message,
        }));
    }
    let (bytes, dest) = out.finish(sync)?;
    Ok((keys, bytes, dest))
}
