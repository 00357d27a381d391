//! `O_DIRECT` files through io_uring: spill runs written and read past the page cache.
//!
//! A sort whose input is larger than memory writes every record to a run and reads it back
//! once. Through the page cache those bytes evict the node's cached files (the job's own
//! input, other jobs' data) and cost a copy each way; with `O_DIRECT` they go between the
//! process's buffers and the device. `O_DIRECT` wants aligned memory, offsets and lengths
//! ([`ALIGN`] = 4 KiB here, the page size and the common logical block size), and its reads
//! and writes block for the device, so this module keeps several in flight through io_uring:
//!
//! - [`AlignedBuf`]: a zeroed heap block aligned to [`ALIGN`], of a multiple of it.
//! - [`DirectFile`] (`write.rs`): positioned writes from any thread, from a pool of aligned
//!   buffers registered with the ring (`IORING_OP_WRITE_FIXED`); the caller fills the next
//!   buffer while the kernel writes the previous ones. Writes need not be aligned: a write
//!   whose file offset is not a multiple of [`ALIGN`] puts its first bytes at the same offset
//!   within its buffer, so its whole blocks are aligned in memory too, and the partial blocks
//!   at its ends are assembled in small aligned blocks that are written once every byte of
//!   them has arrived (every byte of a run is written exactly once). The file's last,
//!   partial block is written padded and the file is then truncated to its length.
//! - [`ReadRing`] and [`DirectStream`] (`read.rs`): a ring per merging thread with every
//!   stream's buffers registered on it (`IORING_OP_READ_FIXED`); each stream of a byte range
//!   keeps [`READ_DEPTH`] reads in flight, so the merge finds its next buffer read when the
//!   device keeps up. A record cut by a buffer's end is copied in front of the next buffer
//!   (each buffer has a margin for it), so that every record is contiguous in memory.
//!
//! # Fallbacks
//!
//! A filesystem that refuses `O_DIRECT` (tmpfs before Linux 6.6, some network and FUSE
//! filesystems answer `EINVAL`), or the environment variable [`NO_DIRECT_ENV`]
//! (`SPILLWAY_NO_ODIRECT=1`), gets the same files opened without it: the same code, through the page cache
//! ([`DirectFile::is_direct`] and [`open_read`] say which). Without io_uring
//! ([`uring_available`] false: refused by the kernel, or `SPILLWAY_NO_URING=1`) callers use
//! their buffered path instead; the record sort says so in its metrics.

#[allow(unsafe_code, reason = "aligned allocations and ring submissions of buffers the kernel fills")]
mod buf;
#[allow(unsafe_code, reason = "io_uring submissions of buffers the kernel fills asynchronously")]
mod read;
#[allow(unsafe_code, reason = "io_uring submissions of buffers the kernel reads asynchronously")]
mod write;

pub use buf::AlignedBuf;
pub use read::{DirectStream, READ_DEPTH, ReadRing};
pub use write::{DirectBuf, DirectFile};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Alignment of `O_DIRECT` buffers, offsets and lengths.
pub const ALIGN: usize = 4096;

/// `n` rounded down to a multiple of [`ALIGN`].
#[inline]
pub const fn align_down(n: u64) -> u64 {
    n & !(ALIGN as u64 - 1)
}

/// `n` rounded up to a multiple of [`ALIGN`].
#[inline]
pub const fn align_up(n: u64) -> u64 {
    align_down(n + ALIGN as u64 - 1)
}

/// True when io_uring can be used here (the probe of the io_uring write backend, which also
/// honours `SPILLWAY_NO_URING`), and the kernel has the fixed-buffer opcodes.
pub fn uring_available() -> bool {
    super::uring::available_with(&[io_uring::opcode::ReadFixed::CODE, io_uring::opcode::WriteFixed::CODE])
}

/// The environment variable that turns `O_DIRECT` off (set to anything but `""` or `"0"`):
/// files are then opened as on a filesystem that refuses it (through the page cache, still
/// with io_uring).
pub const NO_DIRECT_ENV: &str = "SPILLWAY_NO_ODIRECT";

fn direct_forced_off() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os(NO_DIRECT_ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// True when `e` is the answer of a filesystem that does not do `O_DIRECT`.
fn refuses_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// `O_DIRECT`, or no flag when [`NO_DIRECT_ENV`] turns it off.
fn direct_flag() -> i32 {
    if direct_forced_off() { 0 } else { libc::O_DIRECT }
}

/// Opens `path` for reading with `O_DIRECT`, or without it where the filesystem refuses it.
/// Returns the file and whether it is direct.
///
/// # Errors
///
/// The file cannot be opened, naming it.
pub fn open_read(path: &Path) -> Result<(File, bool)> {
    let flag = direct_flag();
    match OpenOptions::new().read(true).custom_flags(flag).open(path) {
        Ok(file) => Ok((file, flag != 0)),
        Err(e) if refuses_direct(&e) => {
            let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
            Ok((file, false))
        }
        Err(e) => Err(Error::io("open", path, e)),
    }
}

/// Creates (truncating) `path` for writing with `O_DIRECT`, or without it where the
/// filesystem refuses it. Returns the file and whether it is direct.
fn create_write(path: &Path) -> Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    let flag = direct_flag();
    match options.clone().custom_flags(flag).open(path) {
        Ok(file) => Ok((file, flag != 0)),
        Err(e) if refuses_direct(&e) => {
            let file = options.open(path).map_err(|e| Error::io("create", path, e))?;
            Ok((file, false))
        }
        Err(e) => Err(Error::io("create", path, e)),
    }
}

/// Reads `out.len()` bytes at `offset` of a file opened by [`open_read`] (direct or not),
/// through an aligned bounce buffer: for the few small reads (binary searches) beside the
/// streams.
///
/// # Errors
///
/// A read fails, or the file ends before the bytes (naming `path`).
pub fn read_exact_at(file: &File, path: &Path, offset: u64, out: &mut [u8]) -> Result<()> {
    let start = align_down(offset);
    let end = align_up(offset + out.len() as u64);
    let mut bounce = AlignedBuf::new((end - start) as usize);
    let want = (offset - start) as usize + out.len();
    let mut got = 0;
    while got < want {
        match file.read_at(&mut bounce[got..], start + got as u64) {
            Ok(0) => {
                return Err(Error::io(
                    "read",
                    path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ends before byte {}", start + want as u64),
                    ),
                ));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    let skip = (offset - start) as usize;
    out.copy_from_slice(&bounce[skip..skip + out.len()]);
    Ok(())
}

// Retries of one operation after `EINTR`/`EAGAIN` before its error is reported (the io_uring
// write backend's bound).
use super::uring::MAX_RETRIES;

#[cfg(test)]
mod tests;
