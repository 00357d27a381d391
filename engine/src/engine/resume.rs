//! Resumable jobs: the job directory beside the output, its journals, and what a job started
//! again finds done.
//!
//! A resumable job writes its runs into `.<output name>.spillway-job/` beside its output
//! instead of a temporary spill directory, and each rank journals (see [`crate::journal`]),
//! in `journal-s<session>-r<rank>`, its map commit points (splits done, with the runs that
//! hold every record they emitted, `fsync`ed) and its merge steps (inputs, output). A job
//! started again (a new *session*, with any number of ranks and threads) replays every
//! journal, sessions in order: a run's *groups* are the commit points whose records it holds
//! (a merged run holds its inputs'; a merge whose inputs are not all known, such as one over
//! runs received in an exchange, is ignored and its inputs count as missing). Every kept run
//! is validated (`RunReader::open` checks every block; with several ranks each validates its
//! share and the ranks all-gather the names that failed), a run that is missing or fails makes
//! its groups bad, and every run holding a bad group goes too (until nothing changes). The
//! splits of the remaining groups are done; the rest are mapped again. The kept runs are
//! shared out over the ranks (round robin by name), which adopt them into their pools. Files
//! that no journal names as live (partial runs, runs of a session that were never
//! journaled) are removed by rank 0 before any rank starts its session. A journal cut short
//! or damaged is read up to its first bad record: that prefix describes an earlier,
//! consistent state (runs it names that were deleted since count as missing). Rank 0 removes
//! the directory once the output is committed.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use spillway_shuffle::{ReadMode, RunInfo, RunReader, Value};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::journal::{self, Begin, JournalWriter, Record, RunRef};
use crate::metrics::Metrics;
use crate::output::{OutputSpec, parent_dir};

/// The lock file of a job directory (rank 0 holds it while the job runs).
const LOCK: &str = "lock";

/// A resumable job's directory, with this rank's journal of this session.
#[derive(Debug)]
pub(crate) struct JobDir {
    path: PathBuf,
    journal: JournalWriter,
    /// This session's prefix of run names: `s<session>r<rank>-`.
    prefix: String,
    /// Rank 0 holds the lock (released when dropped).
    _lock: Option<File>,
}

/// What the job directory held that is still good.
#[derive(Debug, Default)]
pub(crate) struct Resumed {
    /// Per split of the plan: done already.
    pub(crate) done: Vec<bool>,
    /// The kept runs this rank adopts, validated, for its pool.
    pub(crate) runs: Vec<RunInfo>,
    /// Kept runs, over every rank.
    pub(crate) kept_runs: u64,
    /// Runs dropped because they (or a run sharing their splits) were missing or failed
    /// validation: their splits are mapped again.
    pub(crate) dropped_runs: u64,
    /// Why a journal was read only in part, if one was.
    pub(crate) journal_stopped: Option<String>,
    /// The job's metrics, when it was killed after its output was renamed into place.
    pub(crate) committed: Option<Metrics>,
    /// Partitions whose part files an earlier session completed (checked when used).
    pub(crate) reduced: HashMap<u32, ReducedPart>,
    /// Of those, the part files this rank used.
    pub(crate) parts_kept: std::sync::atomic::AtomicU64,
}

/// A part file an earlier session completed, kept in the job directory.
#[derive(Debug, Clone)]
pub(crate) struct ReducedPart {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) hash: u64,
    pub(crate) keys: u64,
}

impl ReducedPart {
    /// Whether the file is still there, whole and unchanged.
    pub(crate) fn is_intact(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.bytes)
            && hash_file(&self.path).is_ok_and(|h| h == self.hash)
    }
}

/// xxh3-64 of a file's bytes, read in 1 MiB pieces.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hasher.digest()),
            n => hasher.update(&buf[..n]),
        }
    }
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
    /// Opens (or starts) the job directory of `output` for a job that is `begin`, collectively
    /// on every rank of `cluster`; checks that an interrupted job there was this job, and
    /// returns what it left that is still good (this rank's share of the kept runs).
    pub(crate) fn open<V: Value>(
        output: &OutputSpec,
        begin: &Begin,
        partitions: u32,
        read: ReadMode,
        cluster: &dyn Cluster,
    ) -> Result<(JobDir, Resumed)> {
        let (rank, ranks) = (cluster.rank(), cluster.size());
        let path = job_dir_path(output)?;
        std::fs::create_dir_all(&path).map_err(|e| Error::io("create job directory", &path, e))?;
        let lock = match rank {
            0 => Some(lock(&path)?),
            _ => None,
        };
        // Every journal, sessions in order.
        let mut journals = Vec::new();
        let entries = std::fs::read_dir(&path).map_err(|e| Error::io("read job directory", &path, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = journal_key(&name) {
                journals.push((key, entry.path()));
            }
        }
        journals.sort();
        let session = journals.last().map_or(1, |((s, _), _)| s + 1);
        let mut resumed = Resumed { done: vec![false; begin.splits as usize], ..Resumed::default() };
        let mut records = Vec::new();
        for ((s, _), file) in &journals {
            let bytes = std::fs::read(file).map_err(|e| Error::io("read", file, e))?;
            let parsed = journal::parse(&bytes);
            if let Some(why) = &parsed.stopped
                && parsed.valid_len < bytes.len() as u64
                && resumed.journal_stopped.is_none()
            {
                resumed.journal_stopped = Some(format!("{}: {why}", file.display()));
            }
            if let Some((Record::Begin(before), rest)) = parsed.records.split_first() {
                compare(&path, before, begin)?;
                records.extend(rest.iter().cloned().map(|r| (*s, r)));
            }
        }
        let last_session = journals.last().map(|((s, _), _)| *s);
        for (s, record) in &records {
            if let Record::Committing { output: identity, metrics } = record
                && Some(*s) == last_session
                && target(output).and_then(file_identity) == Some(*identity)
            {
                resumed.committed = serde_json::from_value(metrics.clone()).ok();
            }
        }
        let records: Vec<Record> = records.into_iter().map(|(_, r)| r).collect();
        let mut live = replay::<V>(&path, &records, partitions, read, cluster, &mut resumed)?;
        for record in &records {
            if let Record::Reduced { partition, name, bytes, hash, keys } = record
                && !name.contains('/')
                && name.starts_with("reduced-")
            {
                let part = ReducedPart { path: path.join(name), bytes: *bytes, hash: *hash, keys: *keys };
                resumed.reduced.insert(*partition, part);
                live.push(name.clone());
            }
        }
        // Rank 0 removes what no journal names, before any rank starts writing.
        if rank == 0 {
            remove_all_but(&path, &live)?;
        }
        cluster.barrier()?;
        let journal_path = path.join(format!("journal-s{session}-r{rank}"));
        let journal = JournalWriter::open(&journal_path, 0)?;
        journal.append(&Record::Begin(begin.clone()))?;
        let _ = ranks;
        Ok((JobDir { path, journal, prefix: format!("s{session}r{rank}-"), _lock: lock }, resumed))
    }

    /// The prefix of this session's and rank's run names.
    pub(crate) fn run_prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn journal(&self) -> &JournalWriter {
        &self.journal
    }

    /// Keeps the finished part file `part` of `partition` (holding `keys` keys): a hard link
    /// in the job directory, journaled, so that a resumed session does not reduce it again.
    /// Best effort: where the filesystem has no hard links the partition is simply not kept.
    pub(crate) fn reduced(&self, partition: u32, part: &Path, keys: u64) -> Result<()> {
        let name = format!("reduced-{partition:05}");
        let kept = self.path.join(&name);
        let _ = std::fs::remove_file(&kept); // a damaged one from an earlier session
        if std::fs::hard_link(part, &kept).is_err() {
            return Ok(());
        }
        let bytes = std::fs::metadata(&kept).map_err(|e| Error::io("stat", &kept, e))?.len();
        let hash = hash_file(&kept).map_err(|e| Error::io("read", &kept, e))?;
        self.journal.append(&Record::Reduced { partition, name, bytes, hash, keys })?;
        crate::failpoint::hit("reduce.journaled");
        Ok(())
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

/// Replays `records` into `resumed`: which splits are done, and this rank's share of the
/// kept runs. Returns the names of every kept run (every rank computes the same).
fn replay<V: Value>(
    dir: &Path,
    records: &[Record],
    partitions: u32,
    read: ReadMode,
    cluster: &dyn Cluster,
    resumed: &mut Resumed,
) -> Result<Vec<String>> {
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
            // A merge of runs the journals do not know (received in an exchange) tells
            // nothing: its output is not kept, and the inputs it deleted count as missing.
            Record::Merged { inputs, output } if inputs.iter().all(|i| live.contains_key(i.as_str())) => {
                let mut held = BTreeSet::new();
                for input in inputs {
                    if let Some((_, g)) = live.remove(input.as_str()) {
                        held.extend(g);
                    }
                }
                live.insert(&output.name, (output, held));
            }
            Record::Merged { .. } | Record::Begin(_) | Record::Committing { .. } | Record::Reduced { .. } => {
            }
        }
    }
    // Each rank validates its share, round robin by name; the ranks learn each other's
    // failures.
    let mut names: Vec<&str> = live.keys().copied().collect();
    names.sort_unstable();
    let (rank, ranks) = (cluster.rank(), cluster.size());
    let mut mine = Vec::new();
    let mut failed = Vec::new();
    for (i, &name) in names.iter().enumerate().filter(|(i, _)| i % ranks == rank) {
        match check_run::<V>(dir, live[name].0, partitions, read) {
            Some(info) => mine.push((i, info)),
            None => failed.push(name.to_owned()),
        }
    }
    let all_failed: BTreeSet<String> = cluster
        .all_gather(failed.join("\n").as_bytes())?
        .iter()
        .flat_map(|bytes| String::from_utf8_lossy(bytes).split('\n').map(str::to_owned).collect::<Vec<_>>())
        .filter(|n| !n.is_empty())
        .collect();
    let mut bad: BTreeSet<usize> = BTreeSet::new();
    for name in &all_failed {
        if let Some((_, held)) = live.get(name.as_str()) {
            bad.extend(held.iter().copied());
        }
    }
    // A run holding a bad group goes, and its other groups are bad then too.
    let mut good: BTreeSet<&str> = names.iter().copied().filter(|n| !all_failed.contains(*n)).collect();
    loop {
        let before = bad.len();
        good.retain(|name| {
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
    resumed.kept_runs = good.len() as u64;
    resumed.dropped_runs = (live.len() - good.len()) as u64;
    resumed.runs = mine.into_iter().filter(|(i, _)| good.contains(names[*i])).map(|(_, info)| info).collect();
    Ok(good.into_iter().map(str::to_owned).collect())
}

/// The run `run` of the job directory, if it is there whole and valid.
fn check_run<V: Value>(dir: &Path, run: &RunRef, partitions: u32, read: ReadMode) -> Option<RunInfo> {
    if run.name.contains('/')
        || journal_key(&run.name).is_some()
        || run.name == LOCK
        || run.name.starts_with("reduced-")
    {
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
    let records = (0..partitions).map(|p| (p, reader.records(p))).filter(|&(_, n)| n > 0).collect();
    Some(RunInfo { path, bytes: len, records })
}

/// The (session, rank) of a journal's file name, `journal-s<session>-r<rank>`.
fn journal_key(name: &str) -> Option<(u64, u64)> {
    let (session, rank) = name.strip_prefix("journal-s")?.split_once("-r")?;
    Some((session.parse().ok()?, rank.parse().ok()?))
}

/// Locks the job directory for this job (rank 0).
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(resume_error(dir, "another process is running this job".into()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

/// Removes every file of `dir` but the journals, the lock and `keep`.
fn remove_all_but(dir: &Path, keep: &[String]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read job directory", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if journal_key(&name).is_none() && name != LOCK && !keep.contains(&name) {
            let path = entry.path();
            let removed =
                if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(())
}
