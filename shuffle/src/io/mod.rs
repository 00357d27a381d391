//! I/O backends: how run and output files are written, and how files are read.
//!
//! Reading goes through [`ByteSource`]: a read-only memory map of the file ([`ReadMode::Mmap`],
//! the default) or, for files that may change under a mapping or live on filesystems where
//! mmap is a poor fit, the whole file read into an aligned buffer with `pread`
//! ([`ReadMode::Pread`]). Either way the bytes are then used in place. Inputs, which other
//! processes may truncate while they are mapped, are opened with
//! [`ByteSource::open_watched`]: pages that vanish read as zeros and the source says so,
//! instead of the process dying of SIGBUS.
//! [`prefetch_read`] asks for a cache line ahead of a random gather over those bytes (safe
//! callers have no prefetch instruction of their own).
//!
//! Writing goes through a [`FileSink`], created by an [`IoBackend`]: large reusable buffers
//! written with plain `write` calls ([`IoBackend::Std`]), or handed to io_uring so that the
//! kernel writes one buffer while the caller fills the next ([`IoBackend::Uring`]).
//! [`IoBackend::Auto`] picks the backend that measured faster on our machines: `std`. For
//! writes that land in the page cache, io_uring is *slower* (it costs an extra copy into its
//! own buffers; the figures are in `bench/README.md`); its overlap only pays when writes block
//! on the device. Choose
//! [`IoBackend::Uring`] explicitly for that case;
//!
//! [`IoBackend::Direct`] writes and reads the record sort's spill runs with `O_DIRECT` through
//! io_uring ([`direct`]), past the page cache. Under `Auto` the record sort takes it by itself
//! when its traffic through the page cache (input, runs and output: three times the input)
//! would not fit in `MemAvailable`: on an 8 GiB sort with a 1 GiB budget (24 GiB machine, disk
//! 0.9 GB/s direct writes, 1.4 GB/s direct reads) direct runs took 163-167 s against 177-201 s
//! buffered (2 alternating rounds each, a loaded machine) and 29% less system time (`bench/results/sort-direct-8G.md`), while for
//! runs that the page cache absorbs (100 MB, `--memory 16M`) buffered runs were several times
//! faster: the writes never waited for the disk, and small direct writes do. it falls back to `std` when the kernel
//! refuses io_uring (seccomp filters, old kernels, `io_uring_disabled`), and setting the
//! environment variable `SPILLWAY_NO_URING=1` turns it off. [`replace_without_flush`] puts a
//! finished, deliberately unsynced file in place of an existing one without the filesystem
//! writing it out inside the `rename`.

// The modules allowed `unsafe` (the crate denies it); each unsafe block has a SAFETY note.
pub mod direct;
#[allow(unsafe_code, reason = "creating memory maps, dropping pages from them, asking for huge pages")]
mod mmap;
#[allow(unsafe_code, reason = "the _mm_prefetch intrinsic")]
mod prefetch;
#[allow(unsafe_code, reason = "renameat2(RENAME_EXCHANGE), which std does not offer")]
mod replace;
#[allow(unsafe_code, reason = "the SIGBUS handler: sigaction, and mmap of zero pages over a vanished file")]
mod sigbus;
mod std_sink;
#[allow(unsafe_code, reason = "io_uring submissions of buffers the kernel reads asynchronously")]
mod uring;

pub use mmap::{ByteSource, ReadMode, WatchedMap, advise_huge_pages};
pub(crate) use prefetch::prefetch_line;
pub use prefetch::{prefetch_index, prefetch_range, prefetch_read};
pub use replace::replace_without_flush;
pub use std_sink::StdSink;

use std::path::Path;

use crate::Result;

/// Size of the write buffers of every backend (and of each in-flight io_uring write).
pub const WRITE_BUFFER: usize = 1 << 20;

/// A sequential, buffered writer of one file.
///
/// Dropping a sink without calling [`FileSink::finish`] may lose buffered bytes: callers
/// write under a temporary name and only rename after `finish` succeeds.
pub trait FileSink: Send {
    /// Appends `data` to the file. Bytes may stay buffered until [`FileSink::finish`].
    ///
    /// # Errors
    ///
    /// The first write error (a full disk, an I/O error), naming the file.
    fn write_all(&mut self, data: &[u8]) -> Result<()>;

    /// Number of bytes accepted so far: the offset the next byte will have in the file.
    fn position(&self) -> u64;

    /// Writes out everything still buffered, waits for in-flight writes, optionally `fsync`s,
    /// and closes the file. Returns the file length.
    ///
    /// # Errors
    ///
    /// Any write or sync error, naming the file.
    fn finish(self: Box<Self>, sync: bool) -> Result<u64>;
}

/// Which mechanism writes files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoBackend {
    /// The backend that measured faster here: std, except for the record sort's runs when
    /// they would not fit in the page cache (then [`IoBackend::Direct`]; see the module docs).
    #[default]
    Auto,
    /// Plain buffered `write` calls.
    Std,
    /// io_uring with several buffers in flight. Falls back to std when the kernel refuses it.
    Uring,
    /// `O_DIRECT` through io_uring ([`direct`]) for the record sort's spill runs and their
    /// merge reads, past the page cache; other files are written as with [`IoBackend::Uring`].
    /// Falls back to std when the kernel refuses io_uring, and to the page cache (same code,
    /// without `O_DIRECT`) where the filesystem refuses `O_DIRECT` (tmpfs).
    Direct,
}

impl IoBackend {
    /// The backend that will actually be used: `Auto` becomes `Std`, and `Uring` becomes
    /// `Std` when io_uring is not available on this machine.
    pub fn resolve(self) -> IoBackend {
        match self {
            IoBackend::Std | IoBackend::Auto => IoBackend::Std,
            IoBackend::Uring => {
                if uring::available() {
                    IoBackend::Uring
                } else {
                    IoBackend::Std
                }
            }
            IoBackend::Direct => {
                if direct::uring_available() {
                    IoBackend::Direct
                } else {
                    IoBackend::Std
                }
            }
        }
    }

    /// A short lowercase name ("auto", "std", "uring", "direct").
    pub fn name(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::Std => "std",
            IoBackend::Uring => "uring",
            IoBackend::Direct => "direct",
        }
    }

    /// Creates (truncating) `path` and returns a sink that writes it.
    ///
    /// # Errors
    ///
    /// The file cannot be created.
    pub fn create(self, path: &Path) -> Result<Box<dyn FileSink>> {
        match self.resolve() {
            IoBackend::Uring | IoBackend::Direct => match uring::UringSink::create(path)? {
                Some(sink) => Ok(Box::new(sink)),
                None => Ok(Box::new(StdSink::create(path)?)),
            },
            _ => Ok(Box::new(StdSink::create(path)?)),
        }
    }
}

impl std::str::FromStr for IoBackend {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(IoBackend::Auto),
            "std" => Ok(IoBackend::Std),
            "uring" | "io_uring" | "io-uring" => Ok(IoBackend::Uring),
            "direct" | "o_direct" => Ok(IoBackend::Direct),
            other => Err(crate::Error::Config(format!(
                "unknown I/O backend {other:?} (expected auto, std, uring or direct)"
            ))),
        }
    }
}
