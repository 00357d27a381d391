//! Where reduce output goes, and how it is committed: one file written under a temporary name
//! ([`TempFile`]), `fsync`ed, renamed into place; an output directory staged whole beside it
//! ([`StagedDir`]: part files, then `_SUCCESS` with the job's metrics as JSON) and renamed into
//! place in one step; devices, FIFOs and the process's own descriptors written in place.

use std::io::Write;
use std::path::{Path, PathBuf};

use spillway_shuffle::{FileSink, IoBackend};

use crate::background::BackgroundSink;
use crate::cleanup::Notice;
use crate::error::{Error, Result};
use crate::owner::OwnerTag;

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
            OutputSpec::Stdout => Ok(()),
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

/// An opened output destination: where the bytes of one output file go, and how it is put in
/// place ([`Destination::create`] decides with [`file_destination`]). The one type behind the
/// engine's `OutputFile`, the sort's output, [`write_whole`], the metrics file and the
/// `spillway gen records` tool.
///
/// - [`Destination::Replace`]: a regular file, written under a temporary name beside its
///   target ([`TempFile`]: the permissions of the file it replaces, registered with
///   [`crate::cleanup`], removed unless committed); at positions from several threads
///   ([`Destination::positioned`]) or in order. [`Destination::commit`] puts it in place.
/// - [`Destination::InPlace`]: a device, FIFO or one of the process's descriptors
///   ([`open_in_place`]: descriptors appending), written in order, never renamed.
/// - [`Destination::Stdout`]: standard output, in order.
#[derive(Debug)]
pub enum Destination {
    /// A file that replaces its target when committed.
    Replace(TempFile),
    /// A device, FIFO or descriptor, written in place.
    InPlace {
        /// The open file.
        file: std::fs::File,
        /// Its name, for errors.
        path: PathBuf,
    },
    /// Standard output.
    Stdout,
}

impl Destination {
    /// Opens the file `path` names as an output (see [`file_destination`]): a temporary file
    /// beside a regular file's target, or a device, FIFO or descriptor in place.
    ///
    /// # Errors
    ///
    /// As [`file_destination`], [`TempFile::create`] and [`open_in_place`].
    pub fn create(path: &Path) -> Result<Self> {
        Ok(match file_destination(path)? {
            FileDestination::Replace(target) => Destination::Replace(TempFile::create(&target)?),
            FileDestination::InPlace(path) => Destination::InPlace { file: open_in_place(&path)?, path },
        })
    }

    /// The open file: a replacing file's temporary file, or the device, FIFO or descriptor
    /// written in place (`None` for standard output).
    pub fn file(&self) -> Option<&std::fs::File> {
        match self {
            Destination::Replace(temp) => Some(temp.file()),
            Destination::InPlace { file, .. } => Some(file),
            Destination::Stdout => None,
        }
    }

    /// The file and the name its errors give, for positioned writes: a replacing file only
    /// (a device, FIFO or standard output is written in order).
    pub fn positioned(&self) -> Option<(&std::fs::File, &Path)> {
        match self {
            Destination::Replace(temp) => Some((temp.file(), temp.path())),
            _ => None,
        }
    }

    /// Appends `data`, in order.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]) naming the file (or standard output).
    pub fn write_in_order(&self, data: &[u8]) -> Result<()> {
        match self {
            Destination::Replace(temp) => {
                let mut file = temp.file();
                file.write_all(data).map_err(|e| Error::io("write", temp.path(), e))
            }
            Destination::InPlace { file, path } => {
                let mut file = file;
                file.write_all(data).map_err(|e| Error::io("write", path.as_path(), e))
            }
            Destination::Stdout => {
                std::io::stdout().lock().write_all(data).map_err(|e| Error::io("write", "standard output", e))
            }
        }
    }

    /// `fsync`s a replacing file (once: [`Destination::commit`] then skips it); nothing for
    /// the others.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the `fsync` failed.
    pub fn sync(&mut self) -> Result<()> {
        match self {
            Destination::Replace(temp) => temp.sync(),
            _ => Ok(()),
        }
    }

    /// Puts the output in place. A replacing file: with `sync`, `fsync`ed (unless it was),
    /// renamed over its target and the directory `fsync`ed ([`TempFile::commit`]); without,
    /// swapped in with nothing flushed ([`TempFile::replace_unsynced`]). Standard output is
    /// flushed; a file written in place needs nothing.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the `fsync`, the rename or the flush failed (a temporary file is then
    /// removed).
    pub fn commit(self, sync: bool) -> Result<()> {
        match self {
            Destination::Replace(temp) if sync => temp.commit(),
            Destination::Replace(temp) => temp.replace_unsynced(),
            Destination::InPlace { .. } => Ok(()),
            Destination::Stdout => {
                std::io::stdout().lock().flush().map_err(|e| Error::io("write", "standard output", e))
            }
        }
    }
}

/// Where an [`OutputFile`]'s bytes go.
enum Target {
    /// A new file in a staging directory (which is its temporary name), through the I/O
    /// backend's sink.
    Staged(Box<dyn FileSink>),
    /// A [`Destination::Replace`] file, through the I/O backend's sink on its temporary name.
    Replace { sink: Box<dyn FileSink>, dest: Destination },
    /// A device, FIFO, descriptor or standard output: written in order, in place.
    InOrder(Destination),
}

/// A buffered output (reduce writes into it): a part file in a staging directory, a file that
/// replaces its target only once [`OutputFile::finish`] has written it and the returned
/// [`Destination`] is committed, a device or standard output. It records its own first error,
/// so that a failure of the output (a full disk) is told from a failure of the job's code that
/// wrote into it ([`OutputFile::take_error`]).
pub(crate) struct OutputFile {
    buf: Vec<u8>,
    target: Option<Target>,
    bytes: u64,
    error: Option<Error>,
}

const OUT_BUFFER: usize = 256 << 10;

impl OutputFile {
    fn new(target: Target) -> Self {
        OutputFile { buf: Vec::with_capacity(OUT_BUFFER), target: Some(target), bytes: 0, error: None }
    }

    /// An output replacing `path` (see [`Destination::create`]) when committed. A file is
    /// written from a thread of its own ([`BackgroundSink`]): this is the output of the one
    /// reduce thread of a single output file.
    pub(crate) fn create(path: &Path, io: IoBackend) -> Result<Self> {
        let target = match Destination::create(path)? {
            Destination::Replace(temp) => {
                let sink = BackgroundSink::wrap(io.create(temp.path())?);
                Target::Replace { sink, dest: Destination::Replace(temp) }
            }
            dest => Target::InOrder(dest),
        };
        Ok(Self::new(target))
    }

    /// A new file inside a [`StagedDir`] (which is the temporary name).
    pub(crate) fn create_staged(path: &Path, io: IoBackend) -> Result<Self> {
        Ok(Self::new(Target::Staged(io.create(path)?)))
    }

    pub(crate) fn stdout() -> Self {
        Self::new(Target::InOrder(Destination::Stdout))
    }

    /// The output's own first error (writing or finishing it), if it had one.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Writes the buffer out. A failure is recorded ([`OutputFile::take_error`]) and comes
    /// back as an `io::Error` of the same kind for the job's code.
    fn drain(&mut self) -> std::io::Result<()> {
        let result = match self.target.as_mut() {
            Some(Target::Replace { sink, .. } | Target::Staged(sink)) => {
                sink.write_all(&self.buf).map_err(Error::from)
            }
            Some(Target::InOrder(dest)) => dest.write_in_order(&self.buf),
            None => Ok(()),
        };
        self.buf.clear();
        result.map_err(|e| {
            let kind = e.io_kind();
            let message = e.to_string();
            self.error.get_or_insert(e);
            std::io::Error::new(kind, message)
        })
    }

    /// Flushes, and `fsync`s a file when `sync`; returns the bytes written and, for a file
    /// replacing its target, the destination to commit ([`Destination::commit`]: it stays
    /// under its temporary name until then; `None` for a staged part file, a device or
    /// standard output).
    pub(crate) fn finish(mut self, sync: bool) -> Result<(u64, Option<Destination>)> {
        if self.drain().is_err() {
            return Err(self.error.take().expect("drain records its error"));
        }
        let dest = match self.target.take() {
            Some(Target::Replace { sink, mut dest }) => {
                sink.finish(sync)?;
                if let (Destination::Replace(temp), true) = (&mut dest, sync) {
                    temp.mark_synced();
                }
                Some(dest)
            }
            Some(Target::Staged(sink)) => {
                sink.finish(sync)?;
                None
            }
            // Written in place: nothing to commit (a device or FIFO is closed here).
            Some(Target::InOrder(dest)) => dest.commit(sync).map(|()| None)?,
            None => None,
        };
        Ok((self.bytes, dest))
    }
}

impl Write for OutputFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes += data.len() as u64;
        if self.buf.len() + data.len() > OUT_BUFFER {
            self.drain()?;
        }
        if data.len() > OUT_BUFFER {
            let saved = std::mem::replace(&mut self.buf, data.to_vec());
            self.drain()?;
            self.buf = saved;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// A file being written under a temporary name next to its final name, with the
/// permissions of the file it replaces: renamed into place by [`TempFile::commit`], removed
/// if dropped first, and registered with [`crate::cleanup`] meanwhile (so that a signal
/// handler removes it too).
#[derive(Debug)]
pub struct TempFile {
    file: std::fs::File,
    temp: PathBuf,
    target: PathBuf,
    synced: bool,
    committed: bool,
    _cleanup: crate::cleanup::Registration,
}

impl TempFile {
    /// Creates `.NAME.spillway-tmp-PID` (with a `-N` suffix if that exists) in the directory
    /// of `target`.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the temporary file cannot be created.
    pub fn create(target: &Path) -> Result<Self> {
        let base = temp_name(target);
        let mut attempt = 0u32;
        let (file, temp, _cleanup) = loop {
            let mut temp = base.clone().into_os_string();
            if attempt > 0 {
                temp.push(format!("-{attempt}"));
            }
            let temp = PathBuf::from(temp);
            // Registered before it exists: a signal handler that removes everything and exits
            // never misses it (or, having closed the registry, keeps this thread from making it).
            let registration = crate::cleanup::register(&temp);
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => break (file, temp, registration),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    registration.disarm(); // another temporary file of this process
                    attempt += 1;
                }
                Err(e) => return Err(Error::io("create", &temp, e)),
            }
        };
        keep_permissions(&temp, target);
        Ok(TempFile { file, temp, target: target.to_owned(), synced: false, committed: false, _cleanup })
    }

    /// The open temporary file.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// The temporary name.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// `fsync`s the file, renames it over its final name and `fsync`s the directory.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): `fsync` or the rename failed (the temporary file is then removed).
    pub fn commit(mut self) -> Result<()> {
        self.sync()?;
        let target = self.rename()?;
        sync_parent(&target);
        Ok(())
    }

    /// Notes that the file's data was `fsync`ed through another handle (an I/O backend's
    /// sink), so that [`TempFile::commit`] does not sync it again.
    pub(crate) fn mark_synced(&mut self) {
        self.synced = true;
    }

    /// `fsync`s the file (once; [`TempFile::commit`] then skips it).
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the `fsync` failed.
    pub fn sync(&mut self) -> Result<()> {
        if !self.synced {
            self.file.sync_all().map_err(|e| Error::io("fsync", &self.temp, e))?;
            self.synced = true;
        }
        Ok(())
    }

    /// Renames the file over its final name as it is (after [`TempFile::sync`] for a durable
    /// commit; the caller `fsync`s the directory). Returns the final name.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the rename failed (the temporary file is then removed).
    pub fn rename(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io("rename", &self.temp, e))?;
        self.committed = true;
        Ok(std::mem::take(&mut self.target))
    }

    /// Puts the file in place without flushing anything: an existing file at the final name
    /// is swapped out and removed rather than renamed over
    /// ([`replace_without_flush`](spillway_shuffle::io::replace_without_flush)), since ext4
    /// writes the new file's data to disk inside a rename over an existing file.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the rename failed (the temporary file is then removed).
    pub fn replace_unsynced(mut self) -> Result<()> {
        spillway_shuffle::io::replace_without_flush(&self.temp, &self.target)
            .map_err(|e| Error::io("rename", &self.temp, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

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
