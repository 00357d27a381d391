//! Writing a file so that it appears whole or not at all: under a temporary name in the same
//! directory (`.NAME.spillway-tmp-PID`), renamed over the final name only once complete, and
//! removed on failure, so that a full disk or an interrupt never destroys the file that was
//! there before.
//!
//! Devices, FIFOs and sockets are written in place instead (renaming over them would destroy
//! them), and a symbolic link is followed: the file it points to is replaced (or created, for
//! a dangling link), the link stays. (The same rules as the engine's outputs.)
//! Temporary files are registered while they exist, so that a signal handler can remove them
//! with [`remove_temporaries`] before the process exits.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How a file named on the command line is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A new or regular file (symbolic links resolved to the file they point to): written
    /// under a temporary name next to it and renamed over it.
    Replace(PathBuf),
    /// An existing device, FIFO or socket: written in place, in order.
    InPlace(PathBuf),
}

/// Decides how `path` is written, before any work starts.
///
/// # Errors
///
/// `path` is a directory, ends with `/`, does not name a file, or its directory does not
/// exist or is not a directory; the message names the directory when it is the problem
/// (callers add the path).
pub fn destination(path: &Path) -> io::Result<Destination> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "ends with / (names a directory)"));
    }
    let is_link = |path: &Path| std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
        Ok(meta) if meta.is_file() => Ok(Destination::Replace(if is_link(path) {
            std::fs::canonicalize(path)?
        } else {
            path.to_owned()
        })),
        Ok(_) => Ok(Destination::InPlace(path.to_owned())),
        Err(e) if !matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => Err(e),
        // A link to a file that does not exist yet: the file is created where it points.
        Err(_) if is_link(path) => destination(&dangling_target(path)?),
        Err(_) => {
            if path.file_name().is_none() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "does not name a file"));
            }
            let parent = parent_dir(path);
            match std::fs::metadata(parent) {
                Ok(meta) if meta.is_dir() => Ok(Destination::Replace(path.to_owned())),
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", parent.display()),
                )),
                Err(e) => Err(io::Error::new(e.kind(), format!("directory {}: {e}", parent.display()))),
            }
        }
    }
}

/// Where the dangling symbolic link `path` points, through further links (at most 40, as the
/// kernel allows), relative targets taken from the directory of the link.
fn dangling_target(path: &Path) -> io::Result<PathBuf> {
    let mut at = path.to_owned();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&at) else { return Ok(at) };
        at = parent_dir(&at).join(target); // an absolute target replaces the directory
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "too many levels of symbolic links"))
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` into `path` as a whole (see the module docs).
///
/// # Errors
///
/// As [`destination`], and any I/O error (the previous file then stays as it was).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match destination(path)? {
        Destination::InPlace(path) => OpenOptions::new().write(true).open(path)?.write_all(bytes),
        Destination::Replace(target) => {
            let temp = TempFile::create(&target)?;
            temp.file().write_all(bytes)?;
            temp.commit()
        }
    }
}

/// A file being written under a temporary name next to its final name; removed when dropped
/// unless [`TempFile::commit`] renamed it into place.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    id: u64,
}

impl TempFile {
    /// Creates `.NAME.spillway-tmp-PID` (with a `-N` suffix if that exists) in the directory of
    /// `target`, with the permissions of `target` if it exists.
    ///
    /// # Errors
    ///
    /// The temporary file cannot be created.
    pub fn create(target: &Path) -> io::Result<Self> {
        let name = target.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let base = format!(".{}.spillway-tmp-{}", name.to_string_lossy(), std::process::id());
        let dir = parent_dir(target);
        let mut attempt = 0u32;
        let (file, temp) = loop {
            let temp = dir.join(if attempt == 0 { base.clone() } else { format!("{base}-{attempt}") });
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => break (file, temp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().insert(id, temp.clone());
        let temp = TempFile { file, temp, target: target.to_owned(), id };
        if let Ok(meta) = std::fs::metadata(target) {
            temp.file.set_permissions(meta.permissions())?;
        }
        Ok(temp)
    }

    /// The open temporary file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Flushes the file to disk and renames it over its final name.
    ///
    /// # Errors
    ///
    /// `fsync` or the rename failed (the temporary file is then removed).
    pub fn commit(self) -> io::Result<()> {
        self.file.sync_all()?;
        // Under the registry's lock, so that a signal handler removing temporaries either
        // sees the file committed or removes it before the rename.
        let mut temps = registry();
        std::fs::rename(&self.temp, &self.target)?;
        temps.remove(&self.id);
        drop(temps);
        // Make the rename durable; some file systems refuse to sync a directory.
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if registry().remove(&self.id).is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Temporary files that exist now, by registration number.
static TEMPORARIES: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());

/// The next registration number.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    TEMPORARIES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes every temporary file not yet committed and returns how many it removed. For a
/// signal handler just before the process exits: files being written are gone afterwards.
pub fn remove_temporaries() -> usize {
    let mut temps = registry();
    let removed = temps.values().filter(|temp| std::fs::remove_file(temp).is_ok()).count();
    temps.clear();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replace_whole_files_and_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        write(&file, b"one").unwrap();
        write(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write(&link, b"three").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"three");
        assert_eq!(names(dir.path()), ["f", "link"]);

        // A dangling link (relative, through a second link): the file is created where it
        // points.
        std::os::unix::fs::symlink("new", dir.path().join("dangling")).unwrap();
        std::os::unix::fs::symlink("dangling", dir.path().join("chain")).unwrap();
        write(&dir.path().join("chain"), b"four").unwrap();
        assert_eq!(std::fs::read(dir.path().join("new")).unwrap(), b"four");
        assert!(std::fs::symlink_metadata(dir.path().join("chain")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn a_dropped_temporary_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"old").unwrap();
        let temp = TempFile::create(&file).unwrap();
        temp.file().write_all(b"partial").unwrap();
        let second = TempFile::create(&file).unwrap();
        assert_eq!(names(dir.path()).len(), 3, "{:?}", names(dir.path()));
        drop((temp, second));
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["f"]);
    }

    #[test]
    fn destinations() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(destination(dir.path()).unwrap_err().kind(), io::ErrorKind::IsADirectory);
        let missing = dir.path().join("no-dir/f");
        assert!(destination(&missing).unwrap_err().to_string().contains("no-dir"));
        let file = dir.path().join("f");
        assert_eq!(destination(&file).unwrap(), Destination::Replace(file.clone()));
        std::fs::write(&file, b"").unwrap();
        assert!(destination(&file.join("g")).unwrap_err().to_string().contains("is not a directory"));
        assert!(destination(&dir.path().join("new/")).unwrap_err().to_string().contains("ends with /"));
        assert_eq!(destination(Path::new("/dev/null")).unwrap(), Destination::InPlace("/dev/null".into()));
    }
}
