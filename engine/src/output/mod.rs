//! Where reduce output goes, and how it is committed: one file written under a temporary name
//! ([`TempFile`]), `fsync`ed, renamed into place; an output directory staged whole beside it
//! ([`StagedDir`]: part files, then `_SUCCESS` with the job's metrics as JSON) and renamed into
//! place in one step; devices, FIFOs and the process's own descriptors written in place.

use std::io::Write;
use std::path::{Path, PathBuf};

use spillway_shuffle::{FileSink, IoBackend};

use crate::cleanup::Notice;
use crate::error::{Error, Result};
use crate::owner::OwnerTag;

mod destination;
mod output_file;
mod sink;
mod staged_dir;
mod temp_file;

pub use destination::Destination;
pub(crate) use output_file::OutputFile;
pub use sink::{Collected, KeyOutput, KeySink, Sink};
pub(crate) use staged_dir::{StagedDir, commit_with_metrics, fresh_token};
pub use temp_file::TempFile;

/// Where a job's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// A directory of `part-NNNNN` files (one per partition, each sorted by key) and
    /// `_SUCCESS`. The directory may exist but must not hold a previous job's output.
    Dir(PathBuf),
    /// One file holding every key in byte order (replaced atomically if it exists).
    File(PathBuf),
    /// Standard output, every key in byte order.
    Stdout,
    /// The caller's [`Sink`]: each key's output in byte order of the keys (see [`Sink`]).
    Sink(Sink),
}

impl OutputSpec {
    /// Checks, before any work starts, that the output can be written where it names: a
    /// [`OutputSpec::File`] must not be a directory and its directory must exist; a
    /// [`OutputSpec::Dir`] must not hold a previous job's output. (The engine checks this
    /// itself; front ends can call it earlier still.)
    ///
    /// # Errors
    ///
    /// [`Error::Output`] or [`Error::OutputExists`], naming the path.
    pub fn check(&self) -> Result<()> {
        match self {
            OutputSpec::File(path) => match file_destination(path)? {
                FileDestination::Replace(target) => probe_writable(&target, path),
                FileDestination::InPlace(_) => Ok(()),
            },
            OutputSpec::Dir(dir) => match std::fs::metadata(dir) {
                Ok(meta) if !meta.is_dir() => Err(output_error(dir, "exists and is not a directory")),
                Ok(_) => check_dir_empty(dir),
                Err(_) => Ok(()), // created when the job commits
            },
            OutputSpec::Stdout | OutputSpec::Sink(_) => Ok(()),
        }
    }
}

/// How a file named as an output is written ([`file_destination`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileDestination {
    /// A new or regular file: written under a temporary name in the same directory, renamed
    /// over this path. A symbolic link is followed: the file it points to is replaced, the
    /// link stays.
    Replace(PathBuf),
    /// An existing device, FIFO or socket (`/dev/null`, a named pipe), or one of this
    /// process's open descriptors (`/dev/stdout`, `/dev/stderr`, `/dev/fd/N`,
    /// `/proc/self/fd/N`, whatever file is behind it): written in place, with no temporary
    /// name, rename or `fsync` (replacing it would destroy it, or the file the shell opened
    /// with `>>`). Open it with [`open_in_place`].
    InPlace(PathBuf),
}

fn output_error(path: &Path, what: &str) -> Error {
    Error::Output { path: path.to_owned(), what: what.to_owned() }
}

/// Decides how `path` is written (see [`FileDestination`]), before any work starts. The same
/// rules serve every file Spillway writes on a user's behalf (`--out`, `--metrics`, `gen
/// records`).
///
/// # Errors
///
/// [`Error::Output`] naming `path`: it is a directory, ends with `/`, does not name a file,
/// its directory does not exist or is not a directory, or it is a loop of links.
pub fn file_destination(path: &Path) -> Result<FileDestination> {
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(output_error(path, "ends with / (--out names one file; --out-dir writes part files)"));
    }
    if names_a_descriptor(path) {
        return Ok(FileDestination::InPlace(path.to_owned()));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            Err(output_error(path, "is a directory (--out names one file; --out-dir writes part files)"))
        }
        Ok(meta) if meta.is_file() => {
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if is_link {
                let target = std::fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))?;
                Ok(FileDestination::Replace(target))
            } else {
                Ok(FileDestination::Replace(path.to_owned()))
            }
        }
        Ok(_) => Ok(FileDestination::InPlace(path.to_owned())),
        // A link to a file that does not exist yet: the file is created where it points.
        Err(_) if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) => {
            let target = dangling_target(path)?;
            file_destination(&target)
        }
        Err(_) => {
            let parent = parent_dir(path);
            if path.file_name().is_none() {
                return Err(output_error(path, "does not name a file"));
            }
            match std::fs::metadata(parent) {
                Ok(meta) if meta.is_dir() => Ok(FileDestination::Replace(path.to_owned())),
                Ok(_) => Err(output_error(path, &format!("{} is not a directory", parent.display()))),
                Err(e) => Err(output_error(path, &format!("directory {}: {e}", parent.display()))),
            }
        }
    }
}

/// Whether `path`, or a link on the way to its file, names one of this process's open
/// descriptors: `/dev/stdin`, `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, or
/// `/proc/{self,thread-self,PID}/fd/N`. (Following such a link leads to the file behind the
/// descriptor, which must not be replaced.)
fn names_a_descriptor(path: &Path) -> bool {
    let own = format!("/proc/{}/fd/", std::process::id());
    let mut at = path.to_owned();
    for _ in 0..40 {
        let text = at.to_string_lossy();
        if matches!(&*text, "/dev/stdin" | "/dev/stdout" | "/dev/stderr") {
            return true;
        }
        for dir in ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/", own.as_str()] {
            if text.strip_prefix(dir).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                return true;
            }
        }
        // Only a link can lead to a descriptor; the magic links under /proc stop here.
        match std::fs::read_link(&at) {
            Ok(target) if !at.starts_with("/proc") => at = parent_dir(&at).join(target),
            _ => return false,
        }
    }
    false
}

/// Opens a [`FileDestination::InPlace`] file for writing: a descriptor of this process
/// (`/dev/stdout`, ...) appending, so that a file the shell opened with `>>` keeps what it
/// held; a device or FIFO as it is.
///
/// # Errors
///
/// an I/O error ([`Error::io`]) naming the path.
pub fn open_in_place(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .append(names_a_descriptor(path))
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Where the dangling symbolic link `path` points, through further links (at most 40, as
/// the kernel allows), relative targets taken from the link's directory.
fn dangling_target(path: &Path) -> Result<PathBuf> {
    let mut at = path.to_owned();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&at) else { return Ok(at) };
        at = parent_dir(&at).join(target); // an absolute target replaces the directory
    }
    Err(output_error(path, "too many levels of symbolic links"))
}

/// Checks that a file can be created beside `path` (where its temporary name goes), so that
/// a read-only or missing directory fails before any work rather than after all of it. The
/// error names `output`.
fn probe_writable(path: &Path, output: &Path) -> Result<()> {
    let probe = temp_name(path);
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            Err(output_error(output, &format!("cannot create files in {}: {e}", parent_dir(path).display())))
        }
    }
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Gives the temporary file `tmp` the permissions of the file it will replace, if any (a
/// private output stays private).
fn keep_permissions(tmp: &Path, path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp, meta.permissions());
    }
}

/// The name of partition `p`'s output file.
pub fn part_name(p: u32) -> String {
    format!("part-{p:05}")
}

/// Refuses a directory that holds `_SUCCESS` or part files.
fn check_dir_empty(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read output directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read output directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "_SUCCESS" || name.starts_with("part-") {
            return Err(Error::OutputExists(dir.to_owned()));
        }
    }
    Ok(())
}

/// The temporary name `path` is written under before it is renamed into place.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.spillway-tmp-{}", std::process::id()))
}

/// Makes a rename durable: `fsync` the directory that holds `path` (best effort: some file
/// systems refuse to sync a directory).
pub(crate) fn sync_parent(path: &Path) {
    sync_dir(parent_dir(path));
}

/// Writes `bytes` into `path` so that it appears whole or not at all: a regular file (or the
/// one a link points to) is replaced through a [`TempFile`]; a device or FIFO is written in
/// place.
///
/// # Errors
///
/// As [`file_destination`], and any I/O error (a replaced file then keeps what it held).
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let dest = Destination::create(path)?;
    dest.write_in_order(bytes)?;
    dest.commit(true)
}

/// `fsync`s a directory (best effort: some filesystems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::names;

    #[test]
    fn whole_writes_replace_files_and_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        write_whole(&file, b"one").unwrap();
        write_whole(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_whole(&link, b"three").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"three");
        assert_eq!(names(dir.path()), ["f", "link"]);

        // A dangling link (relative, through a second link): the file is created where it
        // points.
        std::os::unix::fs::symlink("new", dir.path().join("dangling")).unwrap();
        std::os::unix::fs::symlink("dangling", dir.path().join("chain")).unwrap();
        write_whole(&dir.path().join("chain"), b"four").unwrap();
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
        let what = |path: &Path| file_destination(path).unwrap_err().to_string();
        assert!(what(dir.path()).contains("is a directory"));
        assert!(what(&dir.path().join("no-dir/f")).contains("no-dir"));
        let file = dir.path().join("f");
        assert_eq!(file_destination(&file).unwrap(), FileDestination::Replace(file.clone()));
        std::fs::write(&file, b"").unwrap();
        assert!(what(&file.join("g")).contains("is not a directory"));
        assert!(what(&dir.path().join("new/")).contains("ends with /"));
        let null = Path::new("/dev/null");
        assert_eq!(file_destination(null).unwrap(), FileDestination::InPlace(null.into()));
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(what(&a).contains("too many levels of symbolic links"));
    }
}
