//! The engine's error type.

use std::path::PathBuf;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can make a job fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error in the shuffle layer: a run that could not be written or read, a corrupt run,
    /// a full disk.
    #[error(transparent)]
    Shuffle(#[from] spillway_shuffle::Error),
    /// An input path is missing, unreadable, or not usable as input.
    #[error("input {path}: {what}")]
    Input {
        /// The path as given (or found inside a given directory).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The job's own code failed (returned an error or panicked) on a split, or on a
    /// partition's reduce, as often as it was tried.
    #[error("job failed on {split}{}: {message}", tries(*attempts))]
    Job {
        /// The split (file and byte range) or the partition.
        split: String,
        /// How often it was tried (each attempt failed).
        attempts: u32,
        /// The job's message (or the panic message) of the last attempt.
        message: String,
    },
    /// The output cannot be written where it is named (a directory where a file should go, a
    /// missing parent directory).
    #[error("output {path}: {what}")]
    Output {
        /// The output path as given.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The output already exists and would be overwritten.
    #[error("output {0} already holds a job's output (remove it first, or choose another --out-dir)")]
    OutputExists(PathBuf),
    /// The ranks of a multi-node job disagree or cannot communicate.
    #[error("cluster: {0}")]
    Cluster(String),
    /// Settings that cannot work together for this job (found when it starts).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A worker thread could not be started (a process or user thread limit: `ulimit -u`, a
    /// batch system's pids limit). The job fails cleanly.
    #[error(
        "cannot start thread {thread}: {source} (a limit on threads or processes was reached: see ulimit -u, or the batch system's pids limit; or use fewer threads)"
    )]
    Spawn {
        /// The thread's name.
        thread: String,
        /// Why the system refused it.
        #[source]
        source: std::io::Error,
    },
    /// A resumable job cannot go on from what its job directory holds: the command or an
    /// input differs from the interrupted job's, or another process runs it.
    #[error("cannot resume the job in {dir}: {what} (remove that directory to start over)")]
    Resume {
        /// The job directory.
        dir: PathBuf,
        /// What differs.
        what: String,
    },
    /// The job was cancelled (another thread or rank failed first).
    #[error("job cancelled")]
    Cancelled,
    /// An input file changed while the job read it: truncated under its memory map, or its
    /// size, modification time or identity differ from when it was opened (see
    /// [`Inputs::check_unchanged`](crate::Inputs::check_unchanged)). What the job read of it
    /// cannot be trusted.
    #[error("input {path} changed while the job ran ({})", changed_sizes(*before, *after))]
    InputChanged {
        /// The path as given (or found inside a given directory).
        path: PathBuf,
        /// Its size in bytes when it was opened.
        before: u64,
        /// Its size in bytes when the change was found; `None` when the path no longer names
        /// a file.
        after: Option<u64>,
    },
}

/// " after N attempts", for [`Error::Job`] (nothing for one).
fn tries(attempts: u32) -> String {
    if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() }
}

/// "N bytes before, M bytes after", for [`Error::InputChanged`].
fn changed_sizes(before: u64, after: Option<u64>) -> String {
    match after {
        Some(after) => format!("{before} bytes before, {after} bytes after"),
        None => format!("{before} bytes before, gone after"),
    }
}

impl Error {
    /// An operating-system error on a named file (an output, the spill or job directory, an
    /// input's metadata): the shuffle layer's [`Io`](spillway_shuffle::Error::Io), the one I/O
    /// error variant of the workspace, so that every consumer matches one shape.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Shuffle(spillway_shuffle::Error::io(op, path, source))
    }

    /// The operating-system error behind this error, if it carries one.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Error::Shuffle(spillway_shuffle::Error::Io { source, .. }) => Some(source),
            _ => None,
        }
    }

    /// True when the error comes from bad input rather than from the machine or the engine.
    /// An input or output that could not be opened because the process ran into one of its
    /// limits (too many open files, out of memory or address space: [`Error::limit`]) is not
    /// bad input.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::Input { .. } | Error::InputChanged { .. } | Error::Output { .. } | Error::OutputExists(_)
        ) && self.limit().is_none()
    }

    /// The limit of the process or the machine that this error ran into, if it is one: out
    /// of memory or address space, too many open files, a file size limit. Found in the OS
    /// error the error carries, or, for [`Error::Input`] and [`Error::Output`], which keep
    /// only its text, in that text.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Error::Shuffle(spillway_shuffle::Error::Io { source, .. }) => Limit::of_io(source),
            Error::Input { what, .. } | Error::Output { what, .. } => Limit::of_text(what),
            _ => None,
        }
    }

    /// The kind of the I/O error behind this error (`Other` when there is none).
    pub fn io_kind(&self) -> std::io::ErrorKind {
        self.io_error().map_or(std::io::ErrorKind::Other, std::io::Error::kind)
    }

    /// True when the disk (spill or output) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Shuffle(e) if e.is_disk_full())
    }
}

/// A limit of the process or the machine that an operation ran into ([`Error::limit`]): not
/// bad input, and not a broken machine, but a resource that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Out of memory or address space (`ENOMEM`): `ulimit -v`, a cgroup's memory limit, a
    /// failed memory map.
    Memory,
    /// Too many open files: the process's limit (`EMFILE`, `ulimit -n`) or the system's
    /// (`ENFILE`).
    OpenFiles,
    /// A file grew past the file size limit (`EFBIG`: `ulimit -f`, or the largest file the
    /// file system holds).
    FileSize,
}

impl Limit {
    /// The limit that the OS error number `errno` reports, if any.
    pub fn of_os_error(errno: i32) -> Option<Limit> {
        match errno {
            libc::ENOMEM => Some(Limit::Memory),
            libc::EMFILE | libc::ENFILE => Some(Limit::OpenFiles),
            libc::EFBIG => Some(Limit::FileSize),
            _ => None,
        }
    }

    /// The limit that an I/O error reports, if any.
    pub fn of_io(error: &std::io::Error) -> Option<Limit> {
        error.raw_os_error().and_then(Limit::of_os_error)
    }

    /// The limit reported by the message of an OS error within `text`: the last
    /// `(os error N)`, as [`std::io::Error`] displays one. For errors that keep only the text
    /// of the I/O error that caused them.
    pub fn of_text(text: &str) -> Option<Limit> {
        const MARK: &str = "(os error ";
        let at = text.rfind(MARK)? + MARK.len();
        let digits = &text[at..];
        let end = digits.find(')')?;
        Limit::of_os_error(digits[..end].parse().ok()?)
    }
}

/// The error a job's map or reduce code returns.
pub type JobError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Builds [`ConfigError`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno)
    }

    /// Running out of file descriptors or memory while opening an input or probing an output
    /// is the machine's limit, not bad input; the rest of the input errors stay bad input.
    #[test]
    fn limits_are_not_input_errors() {
        let input = |source: std::io::Error| Error::Input { path: "in".into(), what: source.to_string() };
        assert_eq!(input(os(libc::EMFILE)).limit(), Some(Limit::OpenFiles));
        assert!(!input(os(libc::EMFILE)).is_input_error());
        assert!(!input(os(libc::ENFILE)).is_input_error());
        assert_eq!(input(os(libc::ENOMEM)).limit(), Some(Limit::Memory));
        assert!(!input(os(libc::ENOMEM)).is_input_error());
        assert!(input(os(libc::ENOENT)).is_input_error());
        assert!(input(os(libc::EACCES)).is_input_error());
        let output =
            Error::Output { path: "out".into(), what: format!("cannot create files in d: {}", os(24)) };
        assert!(!output.is_input_error());
        assert!(Error::Input { path: "in".into(), what: "not a regular file".into() }.is_input_error());

        let shuffle = Error::Shuffle(spillway_shuffle::Error::io("open", "run", os(libc::EMFILE)));
        assert_eq!(shuffle.limit(), Some(Limit::OpenFiles));
        assert_eq!(Error::io("write", "out", os(libc::EFBIG)).limit(), Some(Limit::FileSize));
        assert_eq!(Error::io("write", "out", os(libc::ENOSPC)).limit(), None);
        assert_eq!(Limit::of_text("no error here"), None);
        assert_eq!(Limit::of_text("(os error 24"), None);
    }
}
