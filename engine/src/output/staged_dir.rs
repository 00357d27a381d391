//! [`StagedDir`]: an output directory staged whole beside its target; the metrics file
//! committed with the output.

use super::*;

/// What names a staging directory: `.OUT.spillway-staging-<owner>-<token>` beside the output
/// directory `OUT`, or `.spillway-staging-<owner>-<token>` inside it.
const STAGING: &str = ".spillway-staging-";

/// A value for naming a job's staging directory: the time and this process's id.
pub(crate) fn fresh_token() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

/// A metrics file ([`EngineBuilder::metrics_file`](crate::EngineBuilder::metrics_file))
/// written before the output is committed: a regular file under its temporary name
/// (`fsync`ed), renamed into place right after the output; a device or FIFO in place at once.
/// Either way, a metrics file that cannot be written fails the job before its output appears.
#[derive(Debug)]
struct MetricsFile(Option<Destination>);

impl MetricsFile {
    /// Writes `json` and a newline.
    fn prepare(path: &Path, json: &[u8]) -> Result<Self> {
        let mut bytes = json.to_vec();
        bytes.push(b'\n');
        let mut dest = Destination::create(path)?;
        dest.write_in_order(&bytes)?;
        dest.sync()?;
        match dest {
            Destination::Replace(_) => Ok(MetricsFile(Some(dest))),
            _ => Ok(MetricsFile(None)), // written in place, and closed
        }
    }

    /// Puts the file in place.
    fn commit(self) -> Result<()> {
        self.0.map_or(Ok(()), |dest| dest.commit(true))
    }
}

/// Commits a job's outputs (`commit`) with its metrics file, if any (`json` into
/// `metrics_file`): the metrics file is written first, so that one that cannot be written
/// fails the job before its output appears, and put in place right after the output.
pub(crate) fn commit_with_metrics(
    metrics_file: Option<&Path>,
    json: &[u8],
    commit: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let metrics = metrics_file.map(|path| MetricsFile::prepare(path, json)).transpose()?;
    commit()?;
    metrics.map_or(Ok(()), MetricsFile::commit)
}

/// An output directory being written under a temporary name: part files and `_SUCCESS` go
/// into a staging directory beside it, which [`StagedDir::commit`] renames into place in one
/// step. Whatever ends the job before that (an error, a signal, `SIGKILL`, a rank that dies, a
/// disk with no room left for `_SUCCESS`), the output directory gets no part file and no
/// `_SUCCESS`. Dropped uncommitted, the staging directory is removed (by the rank that made
/// it); it is registered with [`crate::cleanup`] meanwhile.
///
/// The one rename needs the output directory to be new or empty, and the staging directory
/// on its filesystem. Otherwise (it holds other files, it is a mount point, or its parent
/// takes no new entries) the files are staged inside it and moved in one by one, `_SUCCESS`
/// last; a signal during the moves removes the ones already moved, only `SIGKILL` can leave
/// part files without `_SUCCESS` there.
#[derive(Debug)]
pub(crate) struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    /// Renamed whole (`true`), or moved in file by file.
    whole: bool,
    /// This rank made the staging directory, and commits or removes it.
    owner: bool,
    committed: bool,
    _cleanup: Option<crate::cleanup::Registration>,
}

impl StagedDir {
    /// Vets the output directory `dir` (it must not hold a job's output) and makes the
    /// staging directory, named after `token` (a value every rank of the job agreed on). This
    /// process (rank 0) commits it; other ranks find it with [`StagedDir::attach`].
    ///
    /// # Errors
    ///
    /// [`Error::Output`] or [`Error::OutputExists`]: `dir` is a file or holds output; an I/O
    /// error creating the directories.
    pub(crate) fn create(dir: &Path, token: u64) -> Result<Self> {
        let (target, exists) = vet_dir(dir)?;
        let parent = parent_dir(&target).to_owned();
        if !exists {
            std::fs::create_dir_all(&parent).map_err(|e| Error::io("create output directory", &parent, e))?;
        }
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // `<owner>-<token>`: a later job removes what a dead one left (see `remove_dead`).
        let staging_name = match OwnerTag::current() {
            Some(owner) => format!("{STAGING}{owner}-{token:016x}"),
            None => format!("{STAGING}{token:016x}"),
        };
        let beside = parent.join(format!(".{name}{staging_name}"));
        let inside = target.join(&staging_name);
        // The whole directory can be renamed into place when it is empty and on the same
        // filesystem as its parent (not a mount point). Registered before it exists, so that
        // a signal never misses it.
        let whole = !exists || (is_empty_dir(&target) && same_filesystem(&target, &parent));
        let mut registration = crate::cleanup::register(&beside);
        let (staging, whole) = match whole.then(|| std::fs::create_dir(&beside)) {
            Some(Ok(())) => (beside, true),
            // A parent that takes no new entries: stage inside the directory itself.
            Some(Err(_)) if exists => (inside, false),
            Some(Err(e)) => return Err(Error::io("create output directory", &beside, e)),
            None => (inside, false),
        };
        if !whole {
            registration = crate::cleanup::register(&staging);
            std::fs::create_dir(&staging).map_err(|e| Error::io("create output directory", &staging, e))?;
        }
        // The staging directories that dead jobs left for this output, beside it or in it.
        let prefix = format!(".{name}{STAGING}");
        let dead_owner = |entry: &str, prefix: &str| {
            let (owner, token) = entry.strip_prefix(prefix)?.rsplit_once('-')?;
            token.bytes().all(|b| b.is_ascii_hexdigit()).then(|| OwnerTag::parse(owner))?
        };
        let notice = |path, bytes| Notice::RemovedDeadStagingDir { path, bytes };
        crate::owner::remove_dead(&parent, &staging, |entry| dead_owner(entry, &prefix), notice);
        crate::owner::remove_dead(&target, &staging, |entry| dead_owner(entry, STAGING), notice);
        Ok(StagedDir { staging, target, whole, owner: true, committed: false, _cleanup: Some(registration) })
    }

    /// Finds the staging directory rank 0 made for `dir` with `token` (for another rank's
    /// part files).
    ///
    /// # Errors
    ///
    /// [`Error::Output`]: it is not there (the output directory is not on a filesystem this
    /// rank shares with rank 0).
    pub(crate) fn attach(dir: &Path, token: u64) -> Result<Self> {
        let target = resolve_dir(dir)?;
        let suffix = format!("-{token:016x}");
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let beside = format!(".{name}{STAGING}");
        let find = |dir: &Path, prefix: &str| {
            std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(&suffix))
            })
        };
        let found = find(parent_dir(&target), &beside)
            .map(|p| (p, true))
            .or_else(|| find(&target, STAGING).map(|p| (p, false)));
        let Some((staging, whole)) = found else {
            return Err(output_error(
                dir,
                "rank 0's staging directory is not visible from this rank: --out-dir must be on a filesystem every rank shares",
            ));
        };
        Ok(StagedDir { staging, target, whole, owner: false, committed: false, _cleanup: None })
    }

    /// Where part files are written until the commit.
    pub(crate) fn path(&self) -> &Path {
        &self.staging
    }

    /// Writes `_SUCCESS` (`json`) into the staging directory, `fsync`s it (with `sync`) and
    /// puts everything in place: one rename of the directory, or (see [`StagedDir`]) the part
    /// files moved in one by one and `_SUCCESS` last.
    ///
    /// # Errors
    ///
    /// An I/O error (a full disk, a rename refused): nothing appears in the output directory.
    pub(crate) fn commit(mut self, json: &[u8], sync: bool) -> Result<()> {
        debug_assert!(self.owner, "only the rank that made the staging directory commits it");
        let success = self.staging.join("_SUCCESS");
        let mut file = std::fs::File::create(&success).map_err(|e| Error::io("create", &success, e))?;
        file.write_all(json)
            .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
            .map_err(|e| Error::io("write", &success, e))?;
        drop(file);
        if sync {
            sync_dir(&self.staging);
        }
        if self.whole {
            if let Ok(meta) = std::fs::metadata(&self.target) {
                let _ = std::fs::set_permissions(&self.staging, meta.permissions());
            }
            let rename = || std::fs::rename(&self.staging, &self.target);
            let renamed = match self._cleanup.take() {
                Some(registration) => registration.settle(rename),
                None => rename(),
            };
            match renamed {
                Ok(()) => {
                    self.committed = true;
                    if sync {
                        sync_parent(&self.target);
                    }
                    return Ok(());
                }
                // Someone put files into the directory meanwhile: move ours in one by one.
                Err(e) if matches!(e.raw_os_error(), Some(39 | 17)) && self.target.is_dir() => {
                    self._cleanup = Some(crate::cleanup::register(&self.staging));
                    check_dir_empty(&self.target)?;
                }
                Err(e) => return Err(Error::io("rename", &self.staging, e)),
            }
        }
        self.move_in()
    }

    /// Moves every file of the staging directory into the output directory, `_SUCCESS` last;
    /// on failure (or a signal meanwhile) the ones already moved are removed again.
    fn move_in(&mut self) -> Result<()> {
        let entries = std::fs::read_dir(&self.staging).map_err(|e| Error::io("read", &self.staging, e))?;
        let mut names = entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io("read", &self.staging, e))?;
        names.retain(|n| n != "_SUCCESS");
        names.sort();
        names.push("_SUCCESS".into());
        let mut moved = Vec::with_capacity(names.len());
        for name in &names {
            let (from, to) = (self.staging.join(name), self.target.join(name));
            // Registered before it appears: a signal from here on removes it.
            let registration = crate::cleanup::register(&to);
            if let Err(e) = std::fs::rename(&from, &to) {
                for (path, _) in &moved {
                    let _ = std::fs::remove_file(path);
                }
                return Err(Error::io("rename", &from, e));
            }
            moved.push((to, registration));
        }
        sync_dir(&self.target);
        self.committed = true;
        for (_, registration) in moved {
            registration.disarm(); // committed: they stay
        }
        let _ = std::fs::remove_dir(&self.staging);
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if self.owner && !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Resolves the output directory `dir` and checks it: not a file, no job's output in it.
/// Returns the directory and whether it exists.
fn vet_dir(dir: &Path) -> Result<(PathBuf, bool)> {
    if dir.as_os_str().is_empty() {
        return Err(output_error(dir, "is empty"));
    }
    let target = resolve_dir(dir)?;
    match std::fs::metadata(&target) {
        Ok(meta) if !meta.is_dir() => Err(output_error(dir, "exists and is not a directory")),
        Ok(_) => check_dir_empty(&target).map(|()| (target, true)),
        Err(_) => Ok((target, false)),
    }
}

/// The directory `dir` names: a symbolic link (dangling or not) is followed, so that the
/// output replaces what it points to and the link stays.
fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    let is_link = std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(dir.to_owned());
    }
    match std::fs::canonicalize(dir) {
        Ok(target) => Ok(target),
        Err(_) => dangling_target(dir),
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(a), Ok(b)) if a.dev() == b.dev())
}
