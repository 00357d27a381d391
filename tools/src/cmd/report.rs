//! `--report FILE.html`: the record of the run as a self-contained HTML page
//! (`docs/report.md`), rendered by the engine's [`report`](spillway_engine::report) module.
//!
//! Every rank records (spans per thread, samples); under mpirun the engine gathers the other
//! ranks' records to rank 0 at the end of a successful job, and rank 0 writes the page. The
//! page is written whole (a temporary name renamed over FILE) when the job ends: succeeded,
//! failed (rank 0's own record, the message shown) or interrupted (from the signal handler).
//! A page that cannot be written is a warning on standard error and does not change the exit
//! status: the job's output is committed by then and stays the job's result.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use spillway_engine::report::{Recorder, Sampler, render};
use spillway_engine::{Metrics, Progress, TempFile, write_whole};

use super::common::{InputError, eprint_line};

/// The report of the job this process runs, for the signal handler's final state.
pub static REPORT: OnceLock<Arc<ReportWriter>> = OnceLock::new();

/// Records a job and writes its page once it ends.
#[derive(Debug)]
pub struct ReportWriter {
    path: PathBuf,
    job: String,
    rank: usize,
    recorder: Arc<Recorder>,
    /// The sampler while the job runs; taken by the first [`ReportWriter::finish`].
    sampler: Mutex<Option<Sampler>>,
}

impl ReportWriter {
    /// Starts recording `progress` (the job `job`, this process rank `rank` of `ranks`, its
    /// buffers' budget `memory_budget`), to be written to `path` by rank 0.
    ///
    /// # Errors
    ///
    /// On rank 0, `path` cannot be written (its directory is missing or read-only, or it
    /// names a directory): an [`InputError`] naming it, before the job starts.
    pub fn start(
        path: &Path,
        job: &str,
        progress: &Arc<Progress>,
        (rank, ranks): (usize, usize),
        memory_budget: u64,
    ) -> anyhow::Result<Arc<Self>> {
        if rank == 0 {
            if path.is_dir() {
                return Err(InputError(format!("--report {}: is a directory", path.display())).into());
            }
            // Found out now, not after the job: the temporary file the page goes through.
            TempFile::create(path).map_err(|e| InputError(format!("--report {}: {e}", path.display())))?;
        }
        let recorder = Arc::clone(progress.record());
        recorder.set_rank(rank, ranks);
        let sampler = recorder.sample(Arc::clone(progress), memory_budget);
        let writer = Arc::new(ReportWriter {
            path: path.to_owned(),
            job: job.to_owned(),
            rank,
            recorder,
            sampler: Mutex::new(Some(sampler)),
        });
        let _ = REPORT.set(Arc::clone(&writer));
        Ok(writer)
    }

    /// Ends the recording and (rank 0) writes the page with the final `state` (`succeeded`,
    /// `failed`, `interrupted`), once: later calls do nothing. A write error is a warning.
    pub fn finish(&self, state: &str, message: Option<String>, metrics: Option<Metrics>) {
        let Some(sampler) = self.sampler.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        drop(sampler); // its last sample
        if self.rank != 0 {
            return;
        }
        let page = render(&self.recorder.report(&self.job, state, message, metrics));
        if let Err(e) = write_whole(&self.path, page.as_bytes()) {
            eprint_line(format_args!(
                "spillway: warning: --report {}: the report could not be written: {e} (the job's \
                 result and exit status are unchanged)",
                self.path.display()
            ));
        }
    }

    /// [`ReportWriter::finish`] with the state of a job's `result`.
    pub fn finish_with<T>(&self, result: &anyhow::Result<T>, metrics: Option<Metrics>) {
        match result {
            Ok(_) => self.finish("succeeded", None, metrics),
            Err(err) => self.finish("failed", Some(crate::message(err)), None),
        }
    }
}
