//! Read-only access to whole files: memory maps, or aligned buffers filled with `pread`.
//!
//! This is one of the modules of the crate allowed to use `unsafe` (with `prefetch`, `replace`,
//! `sigbus`, `uring` and `run::reader`): creating a memory map and dropping pages from it.

use std::fs::File;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{Advice, Mmap, UncheckedAdvice};

use super::sigbus::{self, Watch};
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
    /// A memory-mapped file that may shrink under the mapping ([`ByteSource::open_watched`]).
    Watched(WatchedMap),
    /// Bytes owned in an aligned buffer.
    Owned(Aligned),
}

/// A memory map whose pages past a shrunken end of file read as zeros instead of raising
/// SIGBUS (see [`ByteSource::open_watched`]).
#[derive(Debug)]
pub struct WatchedMap {
    // Declared before `map`, so dropped first: the range is unwatched before it is unmapped
    // (and could be reused by another mapping).
    watch: Watch,
    map: Mmap,
}

impl WatchedMap {
    /// True once a read found pages that had vanished from the file (it was truncated while
    /// mapped): those bytes, and all after them, read as zeros.
    pub fn vanished(&self) -> bool {
        self.watch.vanished()
    }
}

impl ByteSource {
    /// Opens `path` and brings it into memory as `mode` says. Empty files give an empty
    /// source (a zero-length file cannot be mapped).
    ///
    /// # Errors
    ///
    /// The file is missing or unreadable, or the mapping fails; the error names the file.
    pub fn open(path: &Path, mode: ReadMode) -> Result<ByteSource> {
        Self::open_with(path, mode, false)
    }

    /// As [`ByteSource::open`], for a file that other processes may change while it is read
    /// (an input of a job). A memory map is *watched*: should the file shrink while it is
    /// mapped, a read of a page past its new end does not kill the process with SIGBUS (as a
    /// plain shared mapping would) but reads zeros, and [`ByteSource::vanished`] says so from
    /// then on. The caller must then treat what it read as garbage: check `vanished` (and the
    /// file's size and modification time) after reading and before using the results.
    ///
    /// The first watched map installs a process-wide SIGBUS handler; a fault outside every
    /// watched map still goes to the handler in place before it (or kills the process).
    ///
    /// # Errors
    ///
    /// As [`ByteSource::open`].
    pub fn open_watched(path: &Path, mode: ReadMode) -> Result<ByteSource> {
        Self::open_with(path, mode, true)
    }

    fn open_with(path: &Path, mode: ReadMode, watched: bool) -> Result<ByteSource> {
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
                // runs; `ReadMode::Pread` exists for inputs that may. An input that does
                // change anyway is caught: a truncation by the watch (reads of vanished pages
                // see zeros rather than SIGBUS), any change by the engine's check of size and
                // modification time after reading, which fails the job; the bytes it read
                // meanwhile are only ever treated as arbitrary input bytes.
                let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
                if watched {
                    let watch = sigbus::watch(map.as_ptr(), map.len());
                    Ok(ByteSource::Watched(WatchedMap { watch, map }))
                } else {
                    Ok(ByteSource::Mapped(map))
                }
            }
            ReadMode::Pread => {
                let mut buf = Aligned::with_capacity(len);
                buf.resize(len, 0);
                file.read_exact_at(&mut buf[..], 0).map_err(|e| Error::io("read", path, e))?;
                Ok(ByteSource::Owned(buf))
            }
        }
    }

    /// True when this is a watched map ([`ByteSource::open_watched`]) and a read found pages
    /// that had vanished from the file; false otherwise.
    pub fn vanished(&self) -> bool {
        matches!(self, ByteSource::Watched(watched) if watched.vanished())
    }

    fn map(&self) -> Option<&Mmap> {
        match self {
            ByteSource::Mapped(map) | ByteSource::Watched(WatchedMap { map, .. }) => Some(map),
            ByteSource::Owned(_) => None,
        }
    }

    /// Hints that the bytes will be read sequentially (mapped sources only; a no-op otherwise).
    pub fn advise_sequential(&self) {
        if let Some(map) = self.map() {
            // A failed hint changes nothing but speed.
            let _ = map.advise(Advice::Sequential);
        }
    }

    /// Hints that the bytes will be needed soon (mapped sources only).
    pub fn advise_willneed(&self) {
        if let Some(map) = self.map() {
            let _ = map.advise(Advice::WillNeed);
        }
    }

    /// Tells the kernel that `range` will not be read again, so that its pages can leave this
    /// process's resident set (they stay in the page cache). A no-op for owned buffers.
    ///
    /// The caller must not hold borrows of the range that it still reads: the bytes remain
    /// valid (they are re-read from the file on access), only residency changes.
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let Some(map) = self.map() {
            let page = 4096;
            let start = range.start.div_ceil(page) * page;
            let end = range.end.min(map.len()) / page * page;
            if start < end {
                // SAFETY: MADV_DONTNEED on a read-only, file-backed shared mapping drops the
                // pages from this process; the next access faults them back in from the file,
                // so every outstanding `&[u8]` keeps seeing the same bytes (the file is not
                // modified, per the contract in `open`). Over the zero pages of a watched map
                // (a private anonymous mapping by then) it drops them too: they read as zeros
                // again.
                let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }
}

impl Deref for ByteSource {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ByteSource::Mapped(map) | ByteSource::Watched(WatchedMap { map, .. }) => map,
            ByteSource::Owned(buf) => buf,
        }
    }
}

/// Asks the kernel to back the allocation of `v` (its whole capacity) with transparent huge
/// pages where it can: for a large table probed at random, whose 4 KiB pages would miss the
/// TLB on nearly every probe. Call it before the memory is first written: pages already
/// faulted in stay small until the kernel collapses them. Only the 2 MiB-aligned middle of
/// the allocation can become huge pages; smaller allocations are left alone. A hint: a kernel
/// without THP, or with it off, changes nothing but speed.
pub fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let start = v.as_ptr() as usize;
    let end = start + v.capacity() * size_of::<T>();
    let (from, to) = (start.div_ceil(HUGE) * HUGE, end / HUGE * HUGE);
    if from < to {
        // SAFETY: MADV_HUGEPAGE neither reads nor writes memory: it only sets how the kernel
        // backs the range `from..to`, which lies inside `v`'s allocation (page-aligned, as
        // `madvise` requires). The contents stay as they are whatever the backing; the call
        // fails harmlessly (ignored) where THP is not available.
        let _ = unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    const PAGE: usize = 4096;

    fn file_of(dir: &Path, name: &str, len: usize) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0xab; len]).unwrap();
        path
    }

    fn truncate(path: &Path, len: u64) {
        OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
    }

    #[test]
    fn a_truncated_watched_map_reads_zeros_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_of(dir.path(), "input", 8 * PAGE);
        let source = ByteSource::open_watched(&path, ReadMode::Mmap).unwrap();
        assert!(matches!(source, ByteSource::Watched(_)));
        assert!(source.iter().all(|&b| b == 0xab));
        assert!(!source.vanished());

        // Pages 2.. are gone: reading them would raise SIGBUS; watched, they read as zeros.
        truncate(&path, (PAGE + 100) as u64);
        assert_eq!(source[5 * PAGE + 7], 0);
        assert!(source.vanished());
        assert_eq!(source.len(), 8 * PAGE);
        assert!(source[..PAGE + 100].iter().all(|&b| b == 0xab));
        // Past the new end: zeros in the last page of the file (the kernel's), and in the
        // pages that vanished (the handler's), also those before the faulting page.
        assert!(source[PAGE + 100..].iter().all(|&b| b == 0));
        // Releasing pages still works over the zero pages, which then read as zeros again.
        source.release(0..source.len());
        assert!(source[2 * PAGE..].iter().all(|&b| b == 0));
        assert_eq!(source[0], 0xab);

        // An unchanged watched file is not flagged; sources that are not watched never are.
        let other = file_of(dir.path(), "other", 3 * PAGE);
        let unchanged = ByteSource::open_watched(&other, ReadMode::Mmap).unwrap();
        assert!(unchanged.iter().all(|&b| b == 0xab) && !unchanged.vanished());
        assert!(!ByteSource::open_watched(&other, ReadMode::Pread).unwrap().vanished());
        assert!(!ByteSource::open(&other, ReadMode::Mmap).unwrap().vanished());
        drop(source);
        // Its slot is free again: another watched map of the same size is not flagged.
        assert!(!ByteSource::open_watched(&path, ReadMode::Mmap).unwrap().vanished());
    }

    /// Run in a child process (the test runs itself): with the handler installed (and
    /// working for a watched map), a truncated map that is not watched still kills the
    /// process with SIGBUS.
    #[test]
    fn a_fault_outside_watched_maps_still_kills_the_process() {
        const CHILD: &str = "SPILLWAY_SIGBUS_TEST_CHILD";
        let name = "io::mmap::tests::a_fault_outside_watched_maps_still_kills_the_process";
        if let Some(dir) = std::env::var_os(CHILD) {
            let dir = Path::new(&dir);
            // No core file for the expected crash.
            let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
            let watched_path = file_of(dir, "watched", 4 * PAGE);
            let plain_path = file_of(dir, "plain", 4 * PAGE);
            let watched = ByteSource::open_watched(&watched_path, ReadMode::Mmap).unwrap();
            let plain = ByteSource::open(&plain_path, ReadMode::Mmap).unwrap();
            truncate(&watched_path, 0);
            truncate(&plain_path, 0);
            assert_eq!(watched[3 * PAGE], 0);
            assert!(watched.vanished());
            eprintln!("child: watched map handled; reading the plain one");
            let byte = std::hint::black_box(plain[3 * PAGE]);
            eprintln!("child: survived a fault outside every watched map: read {byte}");
            std::process::exit(0);
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("child: watched map handled"), "the child did not get there: {stderr}");
        assert!(!stderr.contains("survived"), "{stderr}");
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{:?}: {stderr}", out.status);
    }
}
