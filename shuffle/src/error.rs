//! The shuffle layer's error type.

use std::path::PathBuf;

/// Result alias for the shuffle layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the shuffle layer.
///
/// Errors about a file name the file; corruption errors also name the byte offset at which the
/// problem was found, so that a user can inspect the file (`spillway inspect`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", "mmap", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A run file failed validation: wrong magic, unknown version, truncation, bad checksum,
    /// records out of order, or an archive that does not check out.
    #[error("corrupt run {path} at byte {offset}: {what}")]
    Corrupt {
        /// The run file (or a description of an in-memory buffer).
        path: PathBuf,
        /// Byte offset in the file where the problem was detected.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A run was written by a newer (or foreign) version of the format.
    #[error("run {path}: unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The run file.
        path: PathBuf,
        /// The version recorded in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// Records were pushed to a [`RunWriter`](crate::RunWriter) out of (partition, key) order.
    #[error("records pushed out of order into {path}: {what}")]
    OutOfOrder {
        /// The run being written.
        path: PathBuf,
        /// Which ordering rule was broken.
        what: String,
    },
    /// A value could not be serialized or deserialized by rkyv.
    #[error("serializing a value for {path}: {message}")]
    Serialize {
        /// The run being written.
        path: PathBuf,
        /// rkyv's message.
        message: String,
    },
    /// An invalid argument or configuration (zero partitions, fan-in below 2, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), offset, what: what.into() }
    }

    /// True when the underlying cause is a full disk (`ENOSPC`) or exceeded quota (`EDQUOT`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == libc::ENOSPC || code == libc::EDQUOT
            ),
            _ => false,
        }
    }
}
