//! Spill runs and merges: the job's spill directory, the pool of waiting runs, and the
//! background merges that fold F of them as soon as F are waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use spillway_shuffle::{
    IoBackend, MergeOptions, OpenRunGauge, ReadMode, RunInfo, RunWriter, Value, merge_runs,
};

use crate::error::{Error, Result};
use crate::job::Job;
use crate::metrics::Progress;

/// A per-job directory under the user's spill directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
    /// Removed on interruption too (see [`crate::cleanup`]).
    _cleanup: crate::cleanup::Registration,
}

impl SpillDir {
    pub(crate) fn create(parent: &Path) -> Result<Self> {
        Self::for_rank(parent, 0)
    }

    /// A spill directory whose name carries `rank`, so that ranks sharing a spill directory
    /// (one host, or a shared filesystem) never collide.
    pub(crate) fn for_rank(parent: &Path, rank: usize) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create spill directory", parent, e))?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("spillway-r{rank}-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| Error::io("create spill directory", &path, e))?;
        Ok(SpillDir { _cleanup: crate::cleanup::register(&path), path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Counters of the spill and merge machinery, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SpillStats {
    pub spills: u64,
    pub spill_bytes: u64,
    pub merge_steps: u64,
    pub merge_bytes: u64,
    pub max_fan_in: usize,
    /// The most run readers open at once within one merge step.
    pub peak_open_runs: usize,
}

#[derive(Debug, Default)]
struct Pool {
    waiting: Vec<RunInfo>,
    stats: SpillStats,
}

/// Writes spill runs and keeps the pool of runs that wait to be merged.
pub(crate) struct Spiller<'s> {
    dir: &'s Path,
    partitions: u32,
    io: IoBackend,
    read: ReadMode,
    fan_in: usize,
    seq: AtomicU64,
    pool: Mutex<Pool>,
    progress: &'s Progress,
}

impl std::fmt::Debug for Spiller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spiller").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl<'s> Spiller<'s> {
    pub(crate) fn new(
        dir: &'s Path,
        partitions: u32,
        io: IoBackend,
        read: ReadMode,
        fan_in: usize,
        progress: &'s Progress,
    ) -> Self {
        Spiller {
            dir,
            partitions,
            io,
            read,
            fan_in,
            seq: AtomicU64::new(0),
            pool: Mutex::new(Pool::default()),
            progress,
        }
    }

    pub(crate) fn next_path(&self, kind: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{n:06}.run"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes records, already in (partition, key) order, as a new run in the pool.
    pub(crate) fn write_run<'a, V: Value>(
        &self,
        records: impl Iterator<Item = (u32, &'a [u8], &'a V)>,
    ) -> Result<()> {
        let mut writer = RunWriter::<V>::create(&self.next_path("spill"), self.partitions, self.io)?;
        for (p, key, value) in records {
            writer.push(p, key, value)?;
        }
        let info = writer.finish(false)?;
        self.progress.spills.fetch_add(1, Ordering::Relaxed);
        let mut pool = self.lock();
        pool.stats.spills += 1;
        pool.stats.spill_bytes += info.bytes;
        pool.waiting.push(info);
        Ok(())
    }

    /// If F runs wait, takes the F smallest for a background merge.
    pub(crate) fn take_background_batch(&self) -> Option<Vec<RunInfo>> {
        let mut pool = self.lock();
        if pool.waiting.len() < self.fan_in {
            return None;
        }
        pool.waiting.sort_by_key(|r| std::cmp::Reverse(r.bytes));
        let at = pool.waiting.len() - self.fan_in;
        Some(pool.waiting.split_off(at))
    }

    /// Merges `inputs` (at most F) into one new run in the pool, folding with the job's
    /// combiner when it has one, and deletes the inputs.
    pub(crate) fn merge<J: Job>(&self, job: &J, inputs: Vec<RunInfo>) -> Result<RunInfo> {
        debug_assert!(inputs.len() <= self.fan_in);
        let paths: Vec<&Path> = inputs.iter().map(|r| r.path.as_path()).collect();
        let output = self.next_path("merge");
        // One gauge per step: the bound F is on the runs one merge reads at once.
        let gauge = OpenRunGauge::new();
        let options =
            MergeOptions { read: self.read, io: self.io, sync: false, gauge: Some(Arc::clone(&gauge)) };
        let combine =
            |acc: &mut J::Value, v: &spillway_shuffle::ArchivedValue<J::Value>| job.combine_archived(acc, v);
        let info = if J::COMBINER {
            merge_runs::<J::Value>(&paths, &output, Some(&combine), &options)?
        } else {
            merge_runs::<J::Value>(&paths, &output, None, &options)?
        };
        for input in &inputs {
            let _ = std::fs::remove_file(&input.path);
        }
        self.progress.merges.fetch_add(1, Ordering::Relaxed);
        let mut pool = self.lock();
        pool.stats.merge_steps += 1;
        pool.stats.merge_bytes += info.bytes;
        pool.stats.max_fan_in = pool.stats.max_fan_in.max(inputs.len());
        pool.stats.peak_open_runs = pool.stats.peak_open_runs.max(gauge.peak());
        Ok(info)
    }

    /// Returns a run to the pool.
    pub(crate) fn add(&self, run: RunInfo) {
        self.lock().waiting.push(run);
    }

    /// Takes every waiting run.
    pub(crate) fn take_all(&self) -> Vec<RunInfo> {
        std::mem::take(&mut self.lock().waiting)
    }

    /// Records the final merge, which reads the runs of `gauge`.
    pub(crate) fn note_final_merge(&self, gauge: &OpenRunGauge) {
        let mut pool = self.lock();
        pool.stats.max_fan_in = pool.stats.max_fan_in.max(gauge.peak());
        pool.stats.peak_open_runs = pool.stats.peak_open_runs.max(gauge.peak());
    }

    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    pub(crate) fn stats(&self) -> SpillStats {
        self.lock().stats
    }
}
