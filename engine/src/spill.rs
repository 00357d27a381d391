//! Spill runs and merges: the job's spill directory, the pool of waiting runs, and the
//! background merges that fold F of them as soon as F are waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use spillway_shuffle::{
    IoBackend, MergeOptions, OpenRunGauge, ReadMode, RunInfo, RunWriter, Value, merge_runs,
};

use crate::cleanup::Notice;
use crate::error::{Error, Result};
use crate::job::{Combining, Job};
use crate::journal::{JournalWriter, Record, RunRef};
use crate::metrics::Progress;
use crate::owner::OwnerTag;
use crate::report::SpanKind;

/// A per-job directory under the user's spill directory, removed when dropped (and on
/// interruption, through [`crate::cleanup`]).
///
/// Its name, `spillway-<owner>-r<rank>-<time>` (`<owner>` an [`OwnerTag`]: host, PID
/// namespace, PID, start time), tells which process made it, so that a job killed with
/// SIGKILL, which cannot remove its own, does not leave it forever: creating a spill
/// directory removes those of dead jobs beside it. Where `/proc` cannot tell a tag, the name
/// is the older `spillway-r<rank>-<pid>-<time>`, which no job removes.
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
    /// (one host, or a shared filesystem) never collide. Then removes the spill directories
    /// of dead jobs in `parent` ([`SpillDir::remove_dead_beside`]).
    pub(crate) fn for_rank(parent: &Path, rank: usize) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create spill directory", parent, e))?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = match OwnerTag::current() {
            Some(owner) => format!("spillway-{owner}-r{rank}-{nanos:x}"),
            None => format!("spillway-r{rank}-{}-{nanos:x}", std::process::id()),
        };
        let path = parent.join(name);
        // Registered before it exists (see `cleanup::remove_all_for_exit`).
        let registration = crate::cleanup::register(&path);
        std::fs::create_dir(&path).map_err(|e| Error::io("create spill directory", &path, e))?;
        let dir = SpillDir { _cleanup: registration, path };
        dir.remove_dead_beside(parent);
        Ok(dir)
    }

    /// Removes the spill directories of dead jobs in `parent` (see
    /// [`crate::owner::remove_dead`]), reporting each as a [`Notice::RemovedDeadSpillDir`].
    fn remove_dead_beside(&self, parent: &Path) {
        crate::owner::remove_dead(parent, &self.path, spill_dir_owner, |path, bytes| {
            Notice::RemovedDeadSpillDir { path, bytes }
        });
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The owner in a spill directory's name `spillway-<owner>-r<rank>-<time>`, if it has one
/// (the older `spillway-r<rank>-<pid>-<time>` has none).
fn spill_dir_owner(name: &str) -> Option<OwnerTag> {
    let (rest, time) = name.strip_prefix("spillway-")?.rsplit_once('-')?;
    let (owner, rank) = rest.rsplit_once('-')?;
    let digits = |s: &str, hex: bool| {
        !s.is_empty() && s.bytes().all(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
    };
    if !digits(time, true) || !rank.strip_prefix('r').is_some_and(|r| digits(r, false)) {
        return None;
    }
    OwnerTag::parse(owner)
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A run's file name, as the journal names it.
pub(crate) fn run_name(run: &RunInfo) -> String {
    run.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A run as the journal names it.
pub(crate) fn run_ref(run: &RunInfo) -> RunRef {
    RunRef { name: run_name(run), bytes: run.bytes }
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
    /// Merge steps tried again (the job's combiner panicked).
    pub merge_retries: u64,
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
    /// A resumable job's journal: runs are `fsync`ed, merge steps journaled.
    journal: Option<&'s JournalWriter>,
    /// Prefix of run names (a resumable job's session and rank).
    prefix: String,
    /// Attempts of a merge step whose combiner panics.
    max_attempts: u32,
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
            journal: None,
            prefix: String::new(),
            max_attempts: 1,
        }
    }

    /// Tries a merge step whose combiner (the job's code) panics up to `max_attempts` times.
    pub(crate) fn with_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Makes the runs durable for a resumable job: `fsync`ed when written, each merge step
    /// journaled before its inputs are deleted; run names carry `prefix` (the session and
    /// rank), so that they never meet the runs of another session or rank in the job
    /// directory.
    pub(crate) fn journaled(mut self, journal: &'s JournalWriter, prefix: &str) -> Self {
        self.journal = Some(journal);
        self.prefix = prefix.to_owned();
        self
    }

    /// The journal of a resumable job.
    pub(crate) fn journal(&self) -> Option<&'s JournalWriter> {
        self.journal
    }

    pub(crate) fn next_path(&self, kind: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{kind}-{}{n:06}.run", self.prefix))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        crate::pool::lock(&self.pool)
    }

    /// Writes records, already in (partition, key) order, as a new run; it joins the pool
    /// when [`Spiller::add`]ed.
    pub(crate) fn write_run<'a, V: Value>(
        &self,
        records: impl Iterator<Item = (u32, &'a [u8], &'a V)>,
    ) -> Result<RunInfo> {
        let mut span = self.progress.span(SpanKind::Spill); // the report's record (--report)
        let mut writer = RunWriter::<V>::create(&self.next_path("spill"), self.partitions, self.io)?;
        for (p, key, value) in records {
            writer.push(p, key, value)?;
        }
        let info = writer.finish(self.journal.is_some())?;
        if let Some(span) = &mut span {
            span.bytes(info.bytes);
        }
        self.progress.spills.fetch_add(1, Ordering::Relaxed);
        let mut pool = self.lock();
        pool.stats.spills += 1;
        pool.stats.spill_bytes += info.bytes;
        Ok(info)
    }

    /// If F runs wait, takes the F smallest for a background merge.
    pub(crate) fn take_background_batch(&self) -> Option<Vec<RunInfo>> {
        let mut pool = self.lock();
        if pool.waiting.len() < self.fan_in {
            return None;
        }
        pool.waiting.sort_by_key(|r| std::cmp::Reverse(r.bytes));
        let at = pool.waiting.len() - self.fan_in;
        self.progress.runs_waiting.store(at as u64, Ordering::Relaxed);
        self.progress.merges_planned.fetch_add(1, Ordering::Relaxed);
        Some(pool.waiting.split_off(at))
    }

    /// Merges `inputs` (at most F) into one new run in the pool, folding with the job's
    /// combiner when it has one, and deletes the inputs.
    pub(crate) fn merge<J: Job>(&self, job: &J, inputs: Vec<RunInfo>) -> Result<RunInfo> {
        debug_assert!(inputs.len() <= self.fan_in);
        let mut span = self.progress.span(SpanKind::Merge); // the report's record (--report)
        let paths: Vec<&Path> = inputs.iter().map(|r| r.path.as_path()).collect();
        let output = self.next_path("merge");
        // One gauge per step: the bound F is on the runs one merge reads at once.
        let gauge = OpenRunGauge::new();
        let options = MergeOptions {
            read: self.read,
            io: self.io,
            sync: self.journal.is_some(),
            gauge: Some(Arc::clone(&gauge)),
        };
        let combine =
            |acc: &mut J::Value, v: &spillway_shuffle::ArchivedValue<J::Value>| job.combine_archived(acc, v);
        // The job's combiner runs here: a panic in it fails this attempt of the step (its
        // output, unfinished, is removed), which is tried again.
        let mut attempts = 0;
        let info = loop {
            attempts += 1;
            let merged = crate::job::catch(|| match job.combines() {
                true => merge_runs::<J::Value>(&paths, &output, Some(&combine), &options),
                false => merge_runs::<J::Value>(&paths, &output, None, &options),
            });
            match merged {
                Ok(merged) => break merged?,
                Err(message) => {
                    let task = format!("a merge of {} runs ({})", inputs.len(), output.display());
                    if attempts >= self.max_attempts {
                        return Err(Error::Job { split: task, attempts, message });
                    }
                    crate::cleanup::notify(&Notice::Retrying {
                        task,
                        attempt: attempts,
                        max_attempts: self.max_attempts,
                        message,
                    });
                    self.progress.retries.fetch_add(1, Ordering::Relaxed);
                    self.lock().stats.merge_retries += 1;
                }
            }
        };
        crate::failpoint::hit("merge.step");
        if let Some(journal) = self.journal {
            journal.append(&Record::Merged {
                inputs: inputs.iter().map(run_name).collect(),
                output: run_ref(&info),
            })?;
        }
        if self.journal.is_some() {
            crate::failpoint::hit("merge.inputs");
        }
        for input in &inputs {
            let _ = std::fs::remove_file(&input.path);
        }
        if let Some(span) = &mut span {
            span.bytes(info.bytes);
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
        let mut pool = self.lock();
        pool.waiting.push(run);
        self.progress.runs_waiting.store(pool.waiting.len() as u64, Ordering::Relaxed);
    }

    /// Puts runs into the pool.
    pub(crate) fn add_all(&self, runs: impl IntoIterator<Item = RunInfo>) {
        let mut pool = self.lock();
        pool.waiting.extend(runs);
        self.progress.runs_waiting.store(pool.waiting.len() as u64, Ordering::Relaxed);
    }

    /// Deletes runs that hold a failed attempt's records (they never join the pool).
    pub(crate) fn discard(&self, runs: impl IntoIterator<Item = RunInfo>) {
        for run in runs {
            let _ = std::fs::remove_file(&run.path);
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::cleanup::{Notice, set_notice_hook};
    use crate::owner::tests::{my_start, tag_elsewhere, tag_here};
    use crate::testutil::names;
    use crate::{Engine, Inputs, OutputSpec, from_fns, jobs::write_key_value};

    /// Every notice since the hook was set (tests run in parallel: filter by path).
    static NOTICES: Mutex<Vec<Notice>> = Mutex::new(Vec::new());

    fn make_dir(path: &Path, files: &[(&str, usize)]) {
        std::fs::create_dir(path).unwrap();
        for (name, len) in files {
            let file = path.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, vec![7u8; *len]).unwrap();
        }
    }

    #[test]
    fn spill_dir_names_carry_the_owner_and_parse_back() {
        let parent = tempfile::tempdir().unwrap();
        let dir = SpillDir::for_rank(parent.path(), 3).unwrap();
        let name = dir.path().file_name().unwrap().to_str().unwrap().to_owned();
        let me = OwnerTag::current().unwrap();
        assert!(name.starts_with(&format!("spillway-{me}-r3-")), "{name}");
        assert_eq!(spill_dir_owner(&name).as_ref(), Some(me));
        for other in
            ["spillway-r0-1234-1a2b", "spillway-", "spillway-h-1-2-3-r0-", "spillway-h-1-2-3-x0-1f", "other"]
        {
            assert_eq!(spill_dir_owner(other), None, "{other}");
        }
        drop(dir);
        assert!(names(parent.path()).is_empty());
    }

    /// A job removes the spill directories of dead jobs on this host, and only those, with a
    /// notice each.
    #[test]
    fn a_job_removes_the_spill_dirs_of_dead_jobs_and_nothing_else() {
        set_notice_hook(|notice| NOTICES.lock().unwrap().push(notice.clone()));
        let data = tempfile::tempdir().unwrap();
        let spill = data.path().join("spill");
        std::fs::create_dir(&spill).unwrap();
        let (me, start) = (std::process::id(), my_start());
        let never = 999_999_999; // above the kernel's PID limit (2^22): no such process
        let dead = spill.join(format!("spillway-{}-r0-1a2b", tag_here(never, start)));
        let alive = spill.join(format!("spillway-{}-r0-1a2c", tag_here(me, start)));
        let reused = spill.join(format!("spillway-{}-r3-1a2d", tag_here(me, start + 1)));
        let elsewhere = spill.join(format!("spillway-{}-r0-1a2e", tag_elsewhere("other-node", never, start)));
        let old_format = spill.join(format!("spillway-r0-{never}-1a2f"));
        make_dir(&dead, &[("spill-000000.run", 1234)]);
        make_dir(&alive, &[("spill-000000.run", 10)]);
        make_dir(&reused, &[("merge-000001.run", 100), ("deeper/x", 50)]);
        make_dir(&elsewhere, &[("spill-000000.run", 10)]);
        make_dir(&old_format, &[("spill-000000.run", 10)]);
        // What a dead job's removal moved aside and did not finish; a live job's stays.
        let aside_dead = spill.join(format!(".spillway-removing-{}-7", tag_here(never, start)));
        let aside_alive = spill.join(format!(".spillway-removing-{}-8", tag_here(me, start)));
        make_dir(&aside_dead, &[("spill-000003.run", 77)]);
        make_dir(&aside_alive, &[("spill-000003.run", 7)]);
        // A dead job's name on a file, and on a link to a directory: neither is touched.
        let file = spill.join(format!("spillway-{}-r1-1b00", tag_here(never, start)));
        std::fs::write(&file, b"not a directory").unwrap();
        let target = data.path().join("target");
        make_dir(&target, &[("keep", 5)]);
        let link = spill.join(format!("spillway-{}-r2-1b01", tag_here(never, start)));
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let input = data.path().join("in.txt");
        std::fs::write(&input, "a b a\n").unwrap();
        let job = from_fns(
            |text: &[u8], emit: &mut dyn FnMut(&[u8], u64)| {
                text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).for_each(|w| emit(w, 1))
            },
            |acc: &mut u64, v: u64| *acc += v,
            |key: &[u8], total: u64, out: &mut dyn std::io::Write| write_key_value(out, key, total),
        );
        let out = data.path().join("out.tsv");
        let engine = Engine::builder().threads(1).spill_dir(&spill).build().unwrap();
        engine.run(&job, &Inputs::new([&input]).unwrap(), &OutputSpec::File(out.clone())).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\t2\nb\t1\n");

        let left = names(&spill);
        let expected: Vec<String> = {
            let mut kept = [&alive, &elsewhere, &old_format, &file, &link, &aside_alive]
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
                .to_vec();
            kept.sort();
            kept
        };
        assert_eq!(left, expected, "only the dead jobs' directories go (and the job's own)");
        assert!(target.join("keep").exists());
        let mut notices: Vec<Notice> = NOTICES
            .lock()
            .unwrap()
            .iter()
            .filter(|n| format!("{n}").contains(&*spill.to_string_lossy()))
            .cloned()
            .collect();
        notices.sort_by_key(|n| n.to_string());
        let mut wanted = vec![
            Notice::RemovedDeadSpillDir { path: dead.clone(), bytes: 1234 },
            Notice::RemovedDeadSpillDir { path: reused.clone(), bytes: 150 },
            Notice::RemovedDeadSpillDir { path: aside_dead.clone(), bytes: 77 },
        ];
        wanted.sort_by_key(|n| n.to_string());
        assert_eq!(notices, wanted);
        assert_eq!(
            wanted
                .iter()
                .find(|n| matches!(n, Notice::RemovedDeadSpillDir { bytes: 1234, .. }))
                .unwrap()
                .to_string(),
            format!("removed the spill directory of a dead job: {} (1234 bytes)", dead.display())
        );
    }
}
