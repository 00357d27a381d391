//! Temporary files and directories that must not outlive an interrupted job: the job's spill
//! directories and the temporary names of outputs not yet committed.
//!
//! Each is registered while it exists (the registration is dropped with it). A front end that
//! catches SIGINT or SIGTERM calls [`remove_all`] before it exits, so that an interrupted job
//! leaves neither gigabytes of spill runs nor half-written outputs behind. (A job killed with
//! SIGKILL cannot clean up: its spill directory, named `spillway-r<rank>-<pid>-<time>`, stays
//! in the spill directory until removed by hand; its output never appears under its final
//! name.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
/// exits: jobs still running fail on the missing files, so nothing may run afterwards.
pub fn remove_all() -> usize {
    GLOBAL.remove_all()
}

impl Registry {
    const fn new() -> Self {
        Registry { paths: Mutex::new(BTreeMap::new()), next: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, PathBuf>> {
        self.paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register(&'static self, path: &Path) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, path.to_owned());
        Registration { registry: self, id }
    }

    fn remove_all(&self) -> usize {
        let paths = self.lock();
        let mut removed = 0;
        for (id, path) in paths.iter() {
            let result = match std::fs::symlink_metadata(path) {
                // Workers may still be creating files in it: moved aside first (they then fail
                // to create more), it is removed whole.
                Ok(meta) if meta.is_dir() => {
                    let aside =
                        path.with_file_name(format!(".spillway-removing-{}-{id}", std::process::id()));
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
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
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
        drop(registry.register(&kept));
        assert_eq!(registry.remove_all(), 2);
        assert!(!spill.exists() && !tmp.exists());
        assert!(kept.exists());
    }
}
