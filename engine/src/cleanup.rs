//! Temporary files and directories that must not outlive an interrupted job: the job's spill
//! directories and the temporary names of outputs not yet committed.
//!
//! Each is registered while it exists (the registration is dropped with it). A front end that
//! catches SIGINT or SIGTERM calls [`remove_all`] before it exits, so that an interrupted job
//! leaves neither gigabytes of spill runs nor half-written outputs behind. A path that its
//! owner failed to remove (a spill directory whose `remove_dir_all` ran out of file
//! descriptors) stays registered when the owner is dropped, so that a front end's
//! [`remove_all`] as it exits still removes it. One that runs out of memory calls
//! [`try_remove_all`] instead, which never waits for a lock its own thread may hold. (A job killed with
//! SIGKILL cannot clean up: its spill directory, named `spillway-r<rank>-<pid>-<time>`, stays
//! in the spill directory until removed by hand; its output never appears under its final
//! name.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

/// A set of paths to remove on interruption.
#[derive(Debug)]
struct Registry {
    paths: Mutex<BTreeMap<u64, PathBuf>>,
    next: AtomicU64,
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

/// As [`remove_all`], for a process that must exit from wherever it is, such as an allocation
/// that failed: the calling thread may itself hold the registry's lock (a registration
/// allocates while holding it), so this waits for the lock at most `patience` and returns
/// `None` when it did not get it. The removal itself allocates (paths of directory entries).
pub fn try_remove_all(patience: Duration) -> Option<usize> {
    let paths = GLOBAL.try_lock(patience)?;
    Some(remove_paths(paths.values()))
}

impl Registry {
    const fn new() -> Self {
        Registry { paths: Mutex::new(BTreeMap::new()), next: AtomicU64::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, PathBuf>> {
        self.paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        self.lock().insert(id, path.to_owned());
        Registration { registry: self, id }
    }

    fn remove_all(&self) -> usize {
        remove_paths(self.lock().values())
    }
}

/// Removes `paths` (directories with their contents) and returns how many were removed.
fn remove_paths<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> usize {
    let mut removed = 0;
    for path in paths {
        // A worker may create a file in a spill directory while it is being removed.
        for _ in 0..3 {
            let result = match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
                Ok(_) => std::fs::remove_file(path),
                Err(_) => break,
            };
            if result.is_ok() {
                removed += 1;
                break;
            }
        }
    }
    removed
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
