//! Temporary files and directories that must not outlive an interrupted job: the job's spill
//! directories and the temporary names of outputs not yet committed.
//!
//! Each is registered while it exists (the registration is dropped with it). A front end that
//! catches SIGINT or SIGTERM calls [`remove_all`] before it exits, so that an interrupted job
//! leaves neither gigabytes of spill runs nor half-written outputs behind. A job killed with
//! SIGKILL (or whose node went down) cannot clean up: its spill directory stays, but its name,
//! `spillway-<host>-<pidns>-<pid>-<start>-r<rank>-<time>`, says which process made it, and the
//! next job on the same host that uses the same spill directory removes it once that process
//! is gone (reporting each through the [`Notice`] hook). Its output never appears under its
//! final name. A path that its owner failed to remove (a spill directory whose
//! `remove_dir_all` ran out of file descriptors) stays registered when the owner is dropped, so
//! that a front end's [`remove_all`] as it exits still removes it; one that runs out of memory
//! calls [`try_remove_all`] instead, which never waits for a lock its own thread may hold.
//!
//! The engine is a library and prints nothing: what it cleaned up on its own reaches the
//! front end as [`Notice`]s, through the hook set with [`set_notice_hook`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, TryLockError};
use std::time::{Duration, Instant};

/// Something the engine did on its own that its user should hear about, one line each
/// (`Display` gives the line, without a program name).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    /// The spill directory of a job that no longer runs on this host (killed with SIGKILL,
    /// say) was found in the spill directory and removed.
    RemovedDeadSpillDir {
        /// The directory, as it was named.
        path: PathBuf,
        /// The bytes of the files it held.
        bytes: u64,
    },
    /// The staging directory of an output directory, left by a job that no longer runs on
    /// this host, was found beside (or inside) the output directory and removed.
    RemovedDeadStagingDir {
        /// The directory, as it was named.
        path: PathBuf,
        /// The bytes of the files it held.
        bytes: u64,
    },
    /// The job's code failed on a split or a partition (an error or a panic) and the engine
    /// tries it again; what the failed attempt emitted or wrote counts zero times.
    Retrying {
        /// The split (file and byte range) or the partition.
        task: String,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
        /// The job's message (or the panic's).
        message: String,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Retrying { task, attempt, max_attempts, message } => write!(
                f,
                "job failed on {task} (attempt {attempt} of {max_attempts}): {message}; trying again"
            ),
            Notice::RemovedDeadSpillDir { path, bytes } => {
                write!(f, "removed the spill directory of a dead job: {} ({bytes} bytes)", path.display())
            }
            Notice::RemovedDeadStagingDir { path, bytes } => {
                write!(f, "removed the unfinished output of a dead job: {} ({bytes} bytes)", path.display())
            }
        }
    }
}

type NoticeHook = Box<dyn Fn(&Notice) + Send + Sync>;

static NOTICE_HOOK: RwLock<Option<NoticeHook>> = RwLock::new(None);

/// Sets the function that receives the engine's [`Notice`]s, replacing the previous one. By
/// default there is none and notices are dropped (a library does not print); the `spillway`
/// tool prints each on one line of standard error. The hook may be called from any thread.
pub fn set_notice_hook(hook: impl Fn(&Notice) + Send + Sync + 'static) {
    *NOTICE_HOOK.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(hook));
}

/// Hands `notice` to the hook, if one is set.
pub(crate) fn notify(notice: &Notice) {
    if let Some(hook) = &*NOTICE_HOOK.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
        hook(notice);
    }
}

/// A set of paths to remove on interruption.
#[derive(Debug)]
struct Registry {
    paths: Mutex<BTreeMap<u64, PathBuf>>,
    next: AtomicU64,
    /// Set by [`remove_all_for_exit`]: registering waits for the exit.
    closed: AtomicBool,
}

static GLOBAL: Registry = Registry::new();

/// A registered path; dropping it unregisters the path (without removing it).
#[derive(Debug)]
pub(crate) struct Registration {
    registry: &'static Registry,
    id: u64,
}

/// Registers `path` (a file or a directory) for removal by [`remove_all`].
pub(crate) fn register(path: &Path) -> Registration {
    GLOBAL.register(path)
}

/// Removes every registered file and directory (directories with their contents), and
/// returns how many were removed. For a front end's signal handler, just before the process
/// exits: jobs still running fail on the missing files, so nothing may run afterwards. (When
/// no job runs any more, the paths still registered are the ones their owners failed to
/// remove.)
pub fn remove_all() -> usize {
    GLOBAL.remove_all()
}

/// As [`remove_all`], for a signal handler whose process exits next: afterwards no path can be
/// registered any more (a thread that tries, about to create a spill or staging directory,
/// waits for the exit instead), so that nothing is created between the removal and the exit.
pub fn remove_all_for_exit() -> usize {
    GLOBAL.closed.store(true, Ordering::SeqCst);
    GLOBAL.remove_all()
}

/// As [`remove_all`], for a process that must exit from wherever it is, such as an allocation
/// that failed: the calling thread may itself hold the registry's lock (a registration
/// allocates while holding it), so this waits for the lock at most `patience` and returns
/// `None` when it did not get it. The removal itself allocates (paths of directory entries).
pub fn try_remove_all(patience: Duration) -> Option<usize> {
    let paths = GLOBAL.try_lock(patience)?;
    Some(remove_paths(paths.iter()))
}

impl Registry {
    const fn new() -> Self {
        Registry {
            paths: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, PathBuf>> {
        crate::pool::lock(&self.paths)
    }

    /// The lock, if it comes free within `patience`.
    fn try_lock(&self, patience: Duration) -> Option<MutexGuard<'_, BTreeMap<u64, PathBuf>>> {
        let deadline = Instant::now() + patience;
        loop {
            match self.paths.try_lock() {
                Ok(paths) => return Some(paths),
                Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => return None,
            }
        }
    }

    fn register(&'static self, path: &Path) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut paths = self.lock();
        // Closed by a signal handler that removed everything and exits the process now.
        while self.closed.load(Ordering::SeqCst) {
            drop(paths);
            std::thread::sleep(Duration::from_secs(1));
            paths = self.lock();
        }
        paths.insert(id, path.to_owned());
        Registration { registry: self, id }
    }

    fn remove_all(&self) -> usize {
        remove_paths(self.lock().iter())
    }
}

/// Removes `paths` (directories with their contents) and returns how many were removed.
fn remove_paths<'a>(paths: impl Iterator<Item = (&'a u64, &'a PathBuf)>) -> usize {
    let mut removed = 0;
    for (id, path) in paths {
        let result = match std::fs::symlink_metadata(path) {
            // Workers may still be creating files in it: moved aside first (they then fail to
            // create more), it is removed whole.
            Ok(meta) if meta.is_dir() => {
                let aside = path.with_file_name(crate::owner::removing_name(*id));
                let gone = if std::fs::rename(path, &aside).is_ok() { &aside } else { path };
                std::fs::remove_dir_all(gone)
            }
            Ok(_) => std::fs::remove_file(path),
            Err(_) => continue,
        };
        removed += usize::from(result.is_ok());
    }
    removed
}

impl Registration {
    /// Runs `commit` (a rename that puts the registered path's content in place) so that
    /// [`remove_all`] runs either wholly before it or not at all for this path: under the
    /// registry's lock, unregistering the path when `commit` succeeds. Without this, a signal
    /// handler removing a staging directory by its open descriptor could go on deleting files
    /// after the directory was renamed into place.
    ///
    /// # Errors
    ///
    /// `commit`'s error (the registration is gone: re-register a path that stays).
    pub(crate) fn settle<T>(self, commit: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let mut paths = self.registry.lock();
        let result = commit()?;
        paths.remove(&self.id);
        Ok(result)
    }

    /// Unregisters a path that is to stay where it is (a file committed in place).
    pub(crate) fn disarm(self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Drop for Registration {
    /// Unregisters the path, unless it is still there: owners remove their path (or rename it
    /// into place) before they drop its registration, so one that is still there could not be
    /// removed (a `remove_dir_all` without a free file descriptor, say) and is left for
    /// [`remove_all`].
    fn drop(&mut self) {
        let mut paths = self.registry.lock();
        if paths.get(&self.id).is_some_and(|path| std::fs::symlink_metadata(path).is_err()) {
            paths.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_paths_are_removed_and_dropped_ones_are_not() {
        let registry: &'static Registry = Box::leak(Box::new(Registry::new()));
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("spill");
        std::fs::create_dir_all(spill.join("sub")).unwrap();
        std::fs::write(spill.join("sub/run"), b"x").unwrap();
        let tmp = dir.path().join(".out.tmp");
        std::fs::write(&tmp, b"partial").unwrap();
        let kept = dir.path().join("kept");
        std::fs::write(&kept, b"committed").unwrap();
        let gone = dir.path().join("never-created");

        let _spill = registry.register(&spill);
        let _tmp = registry.register(&tmp);
        let _gone = registry.register(&gone);
        let committed = dir.path().join(".kept.tmp");
        std::fs::write(&committed, b"committed").unwrap();
        let registration = registry.register(&committed);
        std::fs::rename(&committed, &kept).unwrap();
        drop(registration);
        assert_eq!(registry.remove_all(), 2);
        assert!(!spill.exists() && !tmp.exists());
        assert!(kept.exists());
    }

    /// A path whose owner could not remove it stays registered when the owner drops it, so
    /// that `remove_all` removes it later; `try_remove_all` gives up on a held lock.
    #[test]
    fn paths_left_behind_by_their_owner_stay_registered() {
        let registry: &'static Registry = Box::leak(Box::new(Registry::new()));
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join("left");
        std::fs::create_dir_all(left.join("sub")).unwrap();
        drop(registry.register(&left));
        assert_eq!(registry.remove_all(), 1);
        assert!(!left.exists());

        let held = registry.lock();
        assert!(registry.try_lock(Duration::from_millis(5)).is_none());
        drop(held);
        assert!(registry.try_lock(Duration::ZERO).is_some());
    }
}
