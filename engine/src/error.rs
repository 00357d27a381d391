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
    /// The job's own code failed (returned an error or panicked) on a split.
    #[error("job failed on {split}: {message}")]
    Job {
        /// The split: file and byte range.
        split: String,
        /// The job's message (or the panic message).
        message: String,
    },
    /// An I/O error on a named file outside the shuffle layer (outputs, spill directory).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
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

/// "N bytes before, M bytes after", for [`Error::InputChanged`].
fn changed_sizes(before: u64, after: Option<u64>) -> String {
    match after {
        Some(after) => format!("{before} bytes before, {after} bytes after"),
        None => format!("{before} bytes before, gone after"),
    }
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// True when the error comes from bad input rather than from the machine or the engine.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::Input { .. } | Error::InputChanged { .. } | Error::Output { .. } | Error::OutputExists(_)
        )
    }

    /// True when the disk (spill or output) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Shuffle(e) => e.is_disk_full(),
            Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(c) if c == libc_enospc() || c == libc_edquot())
            }
            _ => false,
        }
    }
}

/// The error a job's map or reduce code returns.
pub type JobError = Box<dyn std::error::Error + Send + Sync + 'static>;

const fn libc_enospc() -> i32 {
    28
}

const fn libc_edquot() -> i32 {
    122
}

/// Builds [`ConfigError`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);
