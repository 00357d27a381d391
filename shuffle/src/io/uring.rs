//! The io_uring backend: sequential file writes with several buffers in flight.
//!
//! A [`UringSink`] owns one small ring and up to [`BUFFERS`] buffers of [`WRITE_BUFFER`] bytes,
//! each allocated at most once per sink (lazily, so that a small file costs one buffer).
//! `write_all` copies into the current buffer; a full buffer is handed to the kernel as an
//! `IORING_OP_WRITE` at the file offset of its first byte, and the caller goes on filling the
//! next free buffer while the kernel copies the previous ones. When every buffer is in flight,
//! the sink waits for a completion and reuses that buffer. Short writes are resubmitted for the
//! remainder at the remainder's offset.
//!
//! # Memory safety
//!
//! The kernel reads a buffer asynchronously between submission and completion, so a buffer whose
//! write is in flight is never touched, moved or freed: buffers are `Vec<u8>`s of fixed length
//! (never grown, so the heap block never moves, and unlike a `Box` a `Vec` asserts no
//! uniqueness over its contents while the kernel reads them), a slot marked in flight is neither written nor reused, and dropping a sink waits
//! for every in-flight completion before the buffers are freed. If the ring itself fails while
//! waiting, the buffers are leaked rather than freed.
//!
//! # Availability
//!
//! [`available`] probes the kernel once per process (a small ring and the `Write` opcode). It
//! reports false when io_uring is refused (seccomp filters, `kernel.io_uring_disabled`, old
//! kernels) or when the environment variable `SPILLWAY_NO_URING` is set to anything other than
//! `""` or `"0"` (read once, at the first probe), which forces the std backend for
//! [`IoBackend::Auto`](super::IoBackend::Auto) and [`IoBackend::Uring`](super::IoBackend::Uring).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use io_uring::{IoUring, Probe, opcode, types};

use super::{FileSink, WRITE_BUFFER};
use crate::{Error, Result};

/// Buffers per sink: how many writes may be in flight at once.
pub(super) const BUFFERS: usize = 4;

/// Submission queue entries per ring (at most [`BUFFERS`] are ever used at once).
const RING_ENTRIES: u32 = 8;

/// The environment variable that forces the std backend when set (to anything but `0`).
pub(super) const NO_URING_ENV: &str = "SPILLWAY_NO_URING";

/// Retries of one operation after `EINTR`/`EAGAIN` before its error is reported.
pub(super) const MAX_RETRIES: u32 = 64;

/// What a write's completion `res` means for the write of `len` bytes of which `done` were
/// written (both writers' rule): `Ok(true)` resubmit the rest (a short write, or a transient
/// error within [`MAX_RETRIES`]), `Ok(false)` complete, `Err` its error.
pub(super) fn write_completed(res: i32, done: &mut usize, len: usize, retries: &mut u32) -> io::Result<bool> {
    if res < 0 {
        let errno = -res;
        if (errno == libc::EINTR || errno == libc::EAGAIN) && *retries < MAX_RETRIES {
            *retries += 1;
            Ok(true)
        } else {
            Err(io::Error::from_raw_os_error(errno))
        }
    } else if res == 0 {
        Err(io::Error::new(io::ErrorKind::WriteZero, "io_uring write wrote no bytes"))
    } else {
        *done += res as usize;
        *retries = 0;
        Ok(*done < len)
    }
}

/// True when this process may use io_uring: `SPILLWAY_NO_URING` is not set, a ring can be
/// created, and the kernel supports `IORING_OP_WRITE`. Probed once and cached.
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| !forced_off() && probe())
}

fn forced_off() -> bool {
    std::env::var_os(NO_URING_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

fn probe() -> bool {
    probe_opcodes(&[opcode::Write::CODE])
}

/// True when [`available`] and the kernel supports every one of `opcodes`.
pub(super) fn available_with(opcodes: &[u8]) -> bool {
    available() && probe_opcodes(opcodes)
}

fn probe_opcodes(opcodes: &[u8]) -> bool {
    let Ok(ring) = IoUring::new(RING_ENTRIES) else {
        return false;
    };
    let mut probe = Probe::new();
    // IORING_REGISTER_PROBE exists since 5.6, as does IORING_OP_WRITE: a kernel without the
    // probe does not have the opcode either.
    ring.submitter().register_probe(&mut probe).is_ok() && opcodes.iter().all(|&op| probe.is_supported(op))
}

/// One write buffer and the state of its write.
struct Slot {
    /// [`WRITE_BUFFER`] bytes, never grown: the heap block stays put while `in_flight`.
    buf: Vec<u8>,
    /// Bytes of `buf` holding data.
    len: usize,
    /// File offset of `buf[0]`.
    offset: u64,
    /// Bytes of `buf[..len]` already written by completed (possibly short) writes.
    done: usize,
    /// The kernel may be reading `buf`: it must not be touched, moved or freed.
    in_flight: bool,
    /// `EINTR`/`EAGAIN` resubmissions of the current write.
    retries: u32,
}

/// The first error, replayed by later calls (the file has a gap after a failed write).
#[derive(Clone, Copy, Debug)]
struct Poison {
    op: &'static str,
    kind: io::ErrorKind,
    errno: Option<i32>,
}

impl Poison {
    fn of(op: &'static str, e: &io::Error) -> Self {
        Poison { op, kind: e.kind(), errno: e.raw_os_error() }
    }

    fn error(self, path: &Path) -> Error {
        let source = match self.errno {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, "an earlier write to this file failed"),
        };
        Error::io(self.op, path, source)
    }
}

/// A sink writing through io_uring (see the module documentation).
pub(super) struct UringSink {
    // Field order matters only for clarity: `Drop` waits for every in-flight write before any
    // field (buffers, file, ring) is dropped.
    ring: IoUring,
    file: File,
    path: PathBuf,
    /// At most [`BUFFERS`] slots; the index of a slot is the `user_data` of its writes.
    slots: Vec<Slot>,
    /// The slot being filled, if any (never in flight).
    current: Option<usize>,
    /// Slots neither current nor in flight.
    free: Vec<usize>,
    /// Slots whose write is in flight (submitted or queued for submission).
    in_flight: usize,
    /// Bytes accepted.
    position: u64,
    poisoned: Option<Poison>,
    /// `io_uring_enter` failed: completions can no longer be waited for.
    broken: bool,
}

impl std::fmt::Debug for UringSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSink")
            .field("path", &self.path)
            .field("buffers", &self.slots.len())
            .field("in_flight", &self.in_flight)
            .field("position", &self.position)
            .field("poisoned", &self.poisoned)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl UringSink {
    /// Creates (truncating) `path`. `Ok(None)` when io_uring is refused, so that the caller
    /// falls back to std; the file is not touched in that case.
    ///
    /// # Errors
    ///
    /// The file cannot be created.
    pub(super) fn create(path: &Path) -> Result<Option<UringSink>> {
        // COOP_TASKRUN (5.19+): completions are posted when the sink enters the kernel anyway
        // (it always does before it waits), instead of interrupting it. Older kernels refuse
        // the flag with EINVAL: retry without it.
        let Ok(ring) = IoUring::builder()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))
        else {
            return Ok(None);
        };
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(Some(UringSink {
            ring,
            file,
            path: path.to_owned(),
            slots: Vec::with_capacity(BUFFERS),
            current: None,
            free: Vec::with_capacity(BUFFERS),
            in_flight: 0,
            position: 0,
            poisoned: None,
            broken: false,
        }))
    }

    fn check(&self) -> Result<()> {
        match self.poisoned {
            Some(p) => Err(p.error(&self.path)),
            None => Ok(()),
        }
    }

    fn fail(&mut self, op: &'static str, e: io::Error) -> Error {
        self.poisoned.get_or_insert(Poison::of(op, &e));
        Error::io(op, &self.path, e)
    }

    /// The slot to copy into: the current one, a free one, a new one, or (all in flight) the
    /// first to complete.
    fn current_slot(&mut self) -> Result<usize> {
        if let Some(i) = self.current {
            return Ok(i);
        }
        let i = if let Some(i) = self.free.pop() {
            i
        } else if self.slots.len() < BUFFERS {
            self.slots.push(Slot {
                buf: vec![0; WRITE_BUFFER],
                len: 0,
                offset: 0,
                done: 0,
                in_flight: false,
                retries: 0,
            });
            self.slots.len() - 1
        } else {
            while self.free.is_empty() {
                self.wait_one()?;
            }
            self.free.pop().expect("a free slot")
        };
        let slot = &mut self.slots[i];
        debug_assert!(!slot.in_flight);
        slot.len = 0;
        slot.done = 0;
        slot.retries = 0;
        slot.offset = self.position;
        self.current = Some(i);
        Ok(i)
    }

    /// Hands the current slot (if it holds data) to the kernel.
    fn submit_current(&mut self) -> Result<()> {
        let Some(i) = self.current.take() else {
            return Ok(());
        };
        if self.slots[i].len == 0 {
            self.free.push(i);
            return Ok(());
        }
        self.slots[i].in_flight = true;
        self.in_flight += 1;
        self.push_write(i)
    }

    /// Queues the write of `slots[i].buf[done..len]` at its offset and submits it. The slot
    /// must be marked in flight.
    fn push_write(&mut self, i: usize) -> Result<()> {
        let slot = &self.slots[i];
        debug_assert!(slot.in_flight && slot.done < slot.len);
        let rest = &slot.buf[slot.done..slot.len];
        let entry = opcode::Write::new(types::Fd(self.file.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .offset(slot.offset + slot.done as u64)
            .build()
            .user_data(i as u64);
        loop {
            // SAFETY: the entry points at `slots[i].buf[done..len]`, a live heap block that is
            // not touched, moved or freed while the slot is in flight: it is marked in flight
            // above, `current_slot` only hands out slots that are not, and `Drop` waits for
            // every in-flight completion (or leaks the buffers) before they are freed. The fd
            // stays open as long: `self.file` is dropped after `Drop` has waited.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                break;
            }
            // The queue is full (it cannot be with at most BUFFERS writes in flight, but make
            // room rather than assume): hand the queued entries to the kernel.
            self.enter(0)?;
        }
        self.enter(0)
    }

    /// `io_uring_enter`: submits queued entries and waits for `want` completions.
    fn enter(&mut self, want: usize) -> Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Completions must be reaped before more can be submitted; the caller does.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && want == 0 => return Ok(()),
                Err(e) => {
                    self.broken = true;
                    return Err(self.fail("io_uring_enter", e));
                }
            }
        }
    }

    /// Waits until at least one completion has been handled (a slot freed, or resubmitted).
    fn wait_one(&mut self) -> Result<()> {
        debug_assert!(self.in_flight > 0);
        if self.reap()? == 0 {
            self.enter(1)?;
            self.reap()?;
        }
        Ok(())
    }

    /// Handles every available completion; returns how many. The first write error is
    /// returned after all available completions have been handled.
    fn reap(&mut self) -> Result<usize> {
        let mut handled = 0;
        let mut first_err = None;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            handled += 1;
            if let Err(e) = self.complete(cqe.user_data() as usize, cqe.result()) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(handled),
        }
    }

    /// One completion of slot `i` with result `res` (bytes written, or `-errno`).
    fn complete(&mut self, i: usize, res: i32) -> Result<()> {
        let Some(slot) = self.slots.get_mut(i).filter(|s| s.in_flight) else {
            debug_assert!(false, "completion for slot {i}, which has no write in flight");
            return Ok(());
        };
        // The kernel is done with the buffer until it is resubmitted below.
        slot.in_flight = false;
        let outcome = write_completed(res, &mut slot.done, slot.len, &mut slot.retries);
        match outcome {
            Ok(true) => {
                // Short write (or a transient error): write the remainder at its offset.
                self.slots[i].in_flight = true;
                self.push_write(i)
            }
            Ok(false) => {
                self.in_flight -= 1;
                self.free.push(i);
                Ok(())
            }
            Err(e) => {
                self.in_flight -= 1;
                self.free.push(i);
                Err(self.fail("write", e))
            }
        }
    }

    /// Waits for every in-flight write; returns the first error.
    fn drain(&mut self) -> Result<()> {
        let mut first_err = None;
        while self.in_flight > 0 {
            if let Err(e) = self.wait_one() {
                first_err.get_or_insert(e);
                // A ring that cannot wait any more would loop forever.
                if self.broken {
                    break;
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl FileSink for UringSink {
    fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        self.check()?;
        while !data.is_empty() {
            let i = self.current_slot()?;
            let slot = &mut self.slots[i];
            let n = data.len().min(slot.buf.len() - slot.len);
            slot.buf[slot.len..slot.len + n].copy_from_slice(&data[..n]);
            slot.len += n;
            let full = slot.len == slot.buf.len();
            self.position += n as u64;
            data = &data[n..];
            if full {
                self.submit_current()?;
            }
        }
        Ok(())
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn finish(mut self: Box<Self>, sync: bool) -> Result<u64> {
        self.check()?;
        let submitted = self.submit_current();
        let drained = self.drain();
        submitted?;
        drained?;
        if sync {
            self.file.sync_all().map_err(|e| Error::io("fsync", &self.path, e))?;
        }
        Ok(self.position)
    }
}

impl Drop for UringSink {
    fn drop(&mut self) {
        // Never free a buffer the kernel may still read: wait for every in-flight write.
        // Errors were (or will never be) reported; only the waiting matters here.
        let _ = self.drain();
        if self.in_flight > 0 {
            // The ring failed while writes were in flight: leak their buffers.
            for slot in std::mem::take(&mut self.slots) {
                if slot.in_flight {
                    std::mem::forget(slot.buf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// A sink for `path`, or `None` (the test is skipped) where io_uring is refused.
    fn sink(path: &Path) -> Option<Box<UringSink>> {
        let sink = UringSink::create(path).unwrap().map(Box::new);
        if sink.is_none() {
            eprintln!("io_uring unavailable here: skipping");
        }
        sink
    }

    #[test]
    fn buffers_are_allocated_lazily_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small");
        let Some(mut s) = sink(&path) else { return };
        s.write_all(b"hello").unwrap();
        assert_eq!(s.slots.len(), 1);
        assert_eq!(s.finish(false).unwrap(), 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");

        let path = dir.path().join("big");
        let Some(mut s) = sink(&path) else { return };
        let chunk: Vec<u8> = (0..WRITE_BUFFER + 7).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        for _ in 0..10 {
            s.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
            assert!(s.slots.len() <= BUFFERS);
            assert!(s.in_flight <= BUFFERS);
        }
        assert_eq!(s.slots.len(), BUFFERS);
        assert_eq!(s.finish(true).unwrap(), expected.len() as u64);
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == expected);
    }

    #[test]
    fn errors_poison_the_sink() {
        let Some(mut s) = sink(Path::new("/dev/full")) else { return };
        let chunk = vec![7u8; WRITE_BUFFER];
        // Each full buffer is submitted; an error shows up at the latest when all are in flight.
        let err = (0..=BUFFERS + 1).find_map(|_| s.write_all(&chunk).err()).expect("ENOSPC");
        assert!(err.is_disk_full(), "{err}");
        assert!(err.to_string().contains("/dev/full"), "{err}");
        let again = s.write_all(b"x").unwrap_err();
        assert!(again.is_disk_full(), "{again}");
        assert!(s.finish(false).unwrap_err().is_disk_full());
    }
}
