//! Resumable jobs: the job directory beside the output, its journal, and what a job started
//! again finds done.
//!
//! A resumable job writes its runs into `.<output name>.spillway-job/` beside its output
//! instead of a temporary spill directory, and journals (see [`crate::journal`]) each map
//! commit point (splits done, with the runs that hold every record they emitted, `fsync`ed)
//! and each merge step (inputs, output). Started again, it replays the journal: a run's
//! *groups* are the commit points whose records it holds (a merged run holds its inputs'),
//! every kept run is validated (`RunReader::open` checks every block), a run that is missing
//! or fails makes its groups bad, and every run holding a bad group goes too (until nothing
//! changes). The splits of the remaining groups are done; the rest are mapped again. Files of
//! the directory that the journal does not name as live (partial runs, merge outputs whose
//! record was never written, inputs of journaled merges) are removed. A journal cut short or
//! damaged is read up to the first bad record: that prefix describes an earlier, consistent
//! state (runs it names that were deleted since count as missing). The directory is removed
//! once the output is committed.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use spillway_shuffle::{ReadMode, RunInfo, RunReader, Value};

use crate::error::{Error, Result};
use crate::journal::{self, Begin, JournalWriter, Record, RunRef};
use crate::metrics::Metrics;
use crate::output::{OutputSpec, parent_dir};

/// The journal's name in the job directory.
const JOURNAL: &str = "journal";

/// A resumable job's directory, locked by this process while it runs.
#[derive(Debug)]
pub(crate) struct JobDir {
    path: PathBuf,
    journal: JournalWriter,
    /// Holds the lock on the journal (released when dropped).
    _lock: File,
}

/// What the job directory held that is still good.
#[derive(Debug, Default)]
pub(crate) struct Resumed {
    /// Per split of the plan: done already.
    pub(crate) done: Vec<bool>,
    /// The kept runs, validated, for the pool.
    pub(crate) runs: Vec<RunInfo>,
    /// Runs dropped because they (or a run sharing their splits) were missing or failed
    /// validation: their splits are mapped again.
    pub(crate) dropped_runs: u64,
    /// The largest run number in use (new runs are numbered after it).
    pub(crate) last_run_number: u64,
    /// Why the journal was read only in part, if it was.
    pub(crate) journal_stopped: Option<String>,
    /// The job's metrics, when it was killed after its output was renamed into place.
    pub(crate) committed: Option<Metrics>,
}

/// The output's path, if it has one.
fn target(output: &OutputSpec) -> Option<&Path> {
    match output {
        OutputSpec::Dir(path) | OutputSpec::File(path) => Some(path),
        _ => None,
    }
}

/// Device and inode of `path` (a symbolic link followed).
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Where the job directory of a resumable job writing `output` is: `.<name>.spillway-job`
/// beside it.
///
/// # Errors
///
/// [`Error::Config`] for standard output (a resumable job needs a file or directory).
pub fn job_dir_path(output: &OutputSpec) -> Result<PathBuf> {
    let target = match target(output) {
        Some(path) => path,
        None => {
            return Err(Error::Config(crate::ConfigError(
                "a resumable job needs an output file or directory (its job directory goes beside it), not \
                 standard output"
                    .into(),
            )));
        }
    };
    let name =
        target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    Ok(parent_dir(target).join(format!(".{name}.spillway-job")))
}

impl JobDir {
    /// Opens (or starts) the job directory of `output` for a job that is `begin`; checks that
    /// an interrupted job there was this job, and returns what it left that is still good.
    pub(crate) fn open<V: Value>(
        output: &OutputSpec,
        begin: &Begin,
        partitions: u32,
        read: ReadMode,
    ) -> Result<(JobDir, Resumed)> {
        let path = job_dir_path(output)?;
        std::fs::create_dir_all(&path).map_err(|e| Error::io("create job directory", &path, e))?;
        let journal_path = path.join(JOURNAL);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&journal_path)
            .map_err(|e| Error::io("open", &journal_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(resume_error(&path, "another process is running this job".into()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &journal_path, e)),
        }
        let bytes = std::fs::read(&journal_path).map_err(|e| Error::io("read", &journal_path, e))?;
        let parsed = journal::parse(&bytes);
        let mut resumed = Resumed { done: vec![false; begin.splits as usize], ..Resumed::default() };
        let live = match parsed.records.split_first() {
            Some((Record::Begin(before), records)) => {
                compare(&path, before, begin)?;
                if let Some(Record::Committing { output: identity, metrics }) = records.last()
                    && target(output).and_then(file_identity) == Some(*identity)
                {
                    resumed.committed = serde_json::from_value(metrics.clone()).ok();
                }
                resumed.journal_stopped = parsed.stopped.filter(|_| parsed.valid_len < bytes.len() as u64);
                replay::<V>(&path, records, partitions, read, &mut resumed)
            }
            _ => Vec::new(),
        };
        let fresh = parsed.records.is_empty();
        remove_all_but(&path, &live)?;
        let journal = JournalWriter::open(&journal_path, if fresh { 0 } else { parsed.valid_len })?;
        if fresh {
            journal.append(&Record::Begin(begin.clone()))?;
        }
        Ok((JobDir { path, journal, _lock: lock }, resumed))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn journal(&self) -> &JournalWriter {
        &self.journal
    }

    /// Journals that `path` (a staging directory or temporary file) is about to be renamed
    /// into place as the output, with the job's `metrics`.
    pub(crate) fn committing(&self, path: Option<&Path>, metrics: &Metrics) -> Result<()> {
        let Some(identity) = path.and_then(file_identity) else { return Ok(()) };
        let metrics = serde_json::to_value(metrics).expect("metrics serialize");
        self.journal.append(&Record::Committing { output: identity, metrics })
    }

    /// Removes the directory: the job's output is committed.
    pub(crate) fn finish(self) -> Result<()> {
        std::fs::remove_dir_all(&self.path).map_err(|e| Error::io("remove job directory", &self.path, e))
    }
}

fn resume_error(dir: &Path, what: String) -> Error {
    Error::Resume { dir: dir.to_owned(), what }
}

/// Refuses to resume a job that is not the one journaled, naming the first difference.
fn compare(dir: &Path, before: &Begin, now: &Begin) -> Result<()> {
    if before.version != now.version {
        return Err(resume_error(dir, format!("its journal has format version {}", before.version)));
    }
    for (old, new) in before.inputs.iter().zip(&now.inputs) {
        let what = if old.path != new.path {
            None
        } else if old.bytes != new.bytes {
            Some(format!("{} bytes then, {} now", old.bytes, new.bytes))
        } else if old.file != new.file {
            Some("another file now".into())
        } else if old.mtime != new.mtime {
            Some("modified since".into())
        } else {
            continue;
        };
        if let Some(what) = what {
            return Err(resume_error(dir, format!("input {} changed ({what})", new.path.display())));
        }
        break;
    }
    for ((name, old), (_, new)) in before.settings.iter().zip(&now.settings) {
        if old != new {
            return Err(resume_error(dir, format!("{name} differ from the interrupted job's")));
        }
    }
    if before.settings.len() != now.settings.len() || before.splits != now.splits {
        return Err(resume_error(dir, "the job's settings differ from the interrupted job's".into()));
    }
    if before.fingerprint != now.fingerprint {
        return Err(resume_error(
            dir,
            "the partitioner's fingerprint differs (another build of spillway, or another CPU)".into(),
        ));
    }
    Ok(())
}

/// Replays `records` into `resumed`; returns the names of the runs kept.
fn replay<V: Value>(
    dir: &Path,
    records: &[Record],
    partitions: u32,
    read: ReadMode,
    resumed: &mut Resumed,
) -> Vec<String> {
    // Commit groups (their splits) and the live runs with the groups they hold.
    let mut groups: Vec<&[u32]> = Vec::new();
    let mut live: HashMap<&str, (&RunRef, BTreeSet<usize>)> = HashMap::new();
    for record in records {
        match record {
            Record::Committed { splits, runs } => {
                let g = groups.len();
                groups.push(splits);
                for run in runs {
                    live.insert(&run.name, (run, BTreeSet::from([g])));
                }
            }
            Record::Merged { inputs, output } => {
                let mut held = BTreeSet::new();
                for input in inputs {
                    if let Some((_, g)) = live.remove(input.as_str()) {
                        held.extend(g);
                    }
                }
                live.insert(&output.name, (output, held));
            }
            Record::Begin(_) | Record::Committing { .. } => {}
        }
    }
    let mut bad: BTreeSet<usize> = BTreeSet::new();
    let mut good: HashMap<&str, RunInfo> = HashMap::new();
    for (&name, (run, held)) in &live {
        match check_run::<V>(dir, run, partitions, read) {
            Some(info) => {
                good.insert(name, info);
            }
            None => bad.extend(held.iter().copied()),
        }
    }
    // A run holding a bad group goes, and its other groups are bad then too.
    loop {
        let before = bad.len();
        good.retain(|name, _| {
            let held = &live[name].1;
            let keep = held.is_disjoint(&bad);
            if !keep {
                bad.extend(held.iter().copied());
            }
            keep
        });
        if bad.len() == before {
            break;
        }
    }
    for (g, splits) in groups.iter().enumerate() {
        if !bad.contains(&g) {
            for &s in *splits {
                if let Some(done) = resumed.done.get_mut(s as usize) {
                    *done = true;
                }
            }
        }
    }
    resumed.dropped_runs = (live.len() - good.len()) as u64;
    let mut kept: Vec<String> = good.keys().map(|n| (*n).to_owned()).collect();
    kept.sort();
    resumed.last_run_number = kept.iter().filter_map(|n| run_number(n)).max().unwrap_or(0);
    let mut runs: Vec<(String, RunInfo)> = good.into_iter().map(|(n, r)| (n.to_owned(), r)).collect();
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    resumed.runs = runs.into_iter().map(|(_, r)| r).collect();
    kept
}

/// The run `run` of the job directory, if it is there whole and valid.
fn check_run<V: Value>(dir: &Path, run: &RunRef, partitions: u32, read: ReadMode) -> Option<RunInfo> {
    if run.name.contains('/') || run.name == JOURNAL {
        return None;
    }
    let path = dir.join(&run.name);
    let len = std::fs::metadata(&path).ok()?.len();
    if len != run.bytes {
        return None;
    }
    // Opening validates every block (checksums, archives, key order).
    let reader = RunReader::<V>::open(&path, read).ok()?;
    if reader.partitions() != partitions {
        return None;
    }
    let records = (0..partitions).map(|p| reader.records(p)).collect();
    Some(RunInfo { path, bytes: len, records })
}

/// The number in a run's name, `<kind>-<number>.run`.
pub(crate) fn run_number(name: &str) -> Option<u64> {
    name.strip_suffix(".run")?.rsplit_once('-')?.1.parse().ok()
}

/// Removes every file of `dir` but the journal and `keep`.
fn remove_all_but(dir: &Path, keep: &[String]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read job directory", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != JOURNAL && !keep.contains(&name) {
            let path = entry.path();
            let removed =
                if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(())
}
