//! Read-only access to whole files: memory maps, or aligned buffers filled with `pread`.
//!
//! This is one of the three modules of the crate allowed to use `unsafe` (with `uring` and
//! `run::reader`): creating a memory map and dropping pages from it.

use std::fs::File;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::value::Aligned;
use crate::{Error, Result};

/// How a file is brought into memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// A read-only shared memory map (zero copy; pages come from the page cache).
    #[default]
    Mmap,
    /// The whole file read with `pread` into an owned, 16-byte-aligned buffer. For files that
    /// may be modified while the job runs, and for filesystems where mmap performs poorly.
    Pread,
}

impl std::str::FromStr for ReadMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mmap" => Ok(ReadMode::Mmap),
            "pread" | "read" => Ok(ReadMode::Pread),
            other => Err(Error::Config(format!("unknown read mode {other:?} (expected mmap or pread)"))),
        }
    }
}

/// The bytes of a file (or of a buffer received from elsewhere), readable in place.
#[derive(Debug)]
pub enum ByteSource {
    /// A memory-mapped file.
    Mapped(Mmap),
    /// Bytes owned in an aligned buffer.
    Owned(Aligned),
}

impl ByteSource {
    /// Opens `path` and brings it into memory as `mode` says. Empty files give an empty
    /// source (a zero-length file cannot be mapped).
    ///
    /// # Errors
    ///
    /// The file is missing or unreadable, or the mapping fails; the error names the file.
    pub fn open(path: &Path, mode: ReadMode) -> Result<ByteSource> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
        if len == 0 {
            return Ok(ByteSource::Owned(Aligned::new()));
        }
        let len = usize::try_from(len)
            .map_err(|_| Error::Config(format!("{} is too large to address", path.display())))?;
        match mode {
            ReadMode::Mmap => {
                // SAFETY: the mapping is read-only and private to this process. Spillway never
                // modifies a file it maps (runs are immutable once renamed into place), and
                // for inputs the documented contract is that they do not change while the job
                // runs; `ReadMode::Pread` exists for inputs that may.
                let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
                Ok(ByteSource::Mapped(map))
            }
            ReadMode::Pread => {
                let mut buf = Aligned::with_capacity(len);
                buf.resize(len, 0);
                file.read_exact_at(&mut buf[..], 0).map_err(|e| Error::io("read", path, e))?;
                Ok(ByteSource::Owned(buf))
            }
        }
    }

    /// Hints that the bytes will be read sequentially (mapped sources only; a no-op otherwise).
    pub fn advise_sequential(&self) {
        if let ByteSource::Mapped(map) = self {
            // A failed hint changes nothing but speed.
            let _ = map.advise(Advice::Sequential);
        }
    }

    /// Hints that the bytes will be needed soon (mapped sources only).
    pub fn advise_willneed(&self) {
        if let ByteSource::Mapped(map) = self {
            let _ = map.advise(Advice::WillNeed);
        }
    }

    /// Tells the kernel that `range` will not be read again, so that its pages can leave this
    /// process's resident set (they stay in the page cache). A no-op for owned buffers.
    ///
    /// The caller must not hold borrows of the range that it still reads: the bytes remain
    /// valid (they are re-read from the file on access), only residency changes.
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let ByteSource::Mapped(map) = self {
            let page = 4096;
            let start = range.start.div_ceil(page) * page;
            let end = range.end.min(map.len()) / page * page;
            if start < end {
                // SAFETY: MADV_DONTNEED on a read-only, file-backed shared mapping drops the
                // pages from this process; the next access faults them back in from the file,
                // so every outstanding `&[u8]` keeps seeing the same bytes (the file is not
                // modified, per the contract in `open`).
                let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }
}

impl Deref for ByteSource {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ByteSource::Mapped(map) => map,
            ByteSource::Owned(buf) => buf,
        }
    }
}
