//! [`ReadRing`] and [`DirectStream`]: sequential reads of byte ranges with several reads in
//! flight per range, through one ring per thread.
//!
//! # Memory safety
//!
//! A slot's block is written by the kernel between a read's submission and its completion;
//! meanwhile the slot is marked in flight and no slice of it exists: a stream hands out its
//! window (a slice of its current slot, which is never in flight) only borrowed from the
//! stream, and submits reads only through `&mut self`. Dropping a stream waits for its reads;
//! dropping the ring waits for every read (or leaks the blocks when the ring failed).

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use io_uring::{IoUring, opcode, types};

use super::{ALIGN, AlignedBuf, MAX_RETRIES, align_down};
use crate::{Error, Result};

/// Reads in flight per stream: its buffers (one being consumed, the others being read).
pub const READ_DEPTH: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// A read of `want` bytes at `offset` into the slot's data area (after its margin), `done`
    /// of them read.
    InFlight {
        fd: i32,
        offset: u64,
        want: usize,
        done: usize,
        retries: u32,
    },
    /// The read ended with `len` bytes (fewer than asked only at the file's end).
    Ready {
        len: usize,
    },
    Failed {
        errno: i32,
    },
}

struct Inner {
    ring: IoUring,
    state: Vec<State>,
    in_flight: usize,
    broken: bool,
}

/// One io_uring ring and the read buffers ("slots") of every stream of one thread, registered
/// with it (see the module docs of `io::direct`). Not shared between threads.
pub struct ReadRing {
    inner: RefCell<Inner>,
    /// Each slot: a margin of `margin` bytes, then `block` bytes that reads fill.
    slots: Vec<AlignedBuf>,
    margin: usize,
    block: usize,
    registered: bool,
}

impl std::fmt::Debug for ReadRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadRing")
            .field("slots", &self.slots.len())
            .field("block", &self.block)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl ReadRing {
    /// A ring for `streams` streams of [`READ_DEPTH`] reads of `block` bytes (rounded to
    /// [`ALIGN`]) each, carrying over records of up to `record` bytes between reads.
    ///
    /// # Errors
    ///
    /// The kernel refuses the ring.
    pub fn new(streams: usize, block: usize, record: usize) -> Result<ReadRing> {
        let entries = (streams * READ_DEPTH).clamp(4, 4096).next_power_of_two() as u32;
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))
            .map_err(|e| Error::io("io_uring_setup", "(merge reads)", e))?;
        let margin = record.div_ceil(ALIGN).max(1) * ALIGN;
        let block = block.div_ceil(ALIGN).max(1) * ALIGN;
        let n = streams * READ_DEPTH;
        let slots: Vec<AlignedBuf> = (0..n).map(|_| AlignedBuf::new(margin + block)).collect();
        let iovecs: Vec<libc::iovec> = slots.iter().map(AlignedBuf::iovec).collect();
        // SAFETY: the blocks outlive the registration: `slots` is dropped after `inner` (the
        // ring) and never changed; the kernel touches them only for submitted reads. Refused
        // (RLIMIT_MEMLOCK, too many): plain reads into the same blocks.
        let registered =
            n <= u16::MAX as usize && unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok();
        Ok(ReadRing {
            inner: RefCell::new(Inner { ring, state: vec![State::Idle; n], in_flight: 0, broken: false }),
            slots,
            margin,
            block,
            registered,
        })
    }

    /// How many streams the ring has slots for.
    pub fn streams(&self) -> usize {
        self.slots.len() / READ_DEPTH
    }

    /// Whether the slots are registered (fixed-buffer reads).
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Starts reading `want` bytes at `offset` of `fd` into slot `i`.
    fn start(&self, i: usize, fd: i32, offset: u64, want: usize) -> io::Result<()> {
        let mut inner = self.inner.borrow_mut();
        debug_assert!(!matches!(inner.state[i], State::InFlight { .. }));
        inner.state[i] = State::InFlight { fd, offset, want, done: 0, retries: 0 };
        inner.in_flight += 1;
        self.push(&mut inner, i)
    }

    fn push(&self, inner: &mut Inner, i: usize) -> io::Result<()> {
        let State::InFlight { fd, offset, want, done, .. } = inner.state[i] else {
            unreachable!("a slot in flight")
        };
        // SAFETY: within the slot's block (margin + done < margin + block).
        let ptr = unsafe { self.slots[i].raw().add(self.margin + done) };
        let fd = types::Fd(fd);
        let len = (want - done) as u32;
        let entry = if self.registered {
            opcode::ReadFixed::new(fd, ptr, len, i as u16).offset(offset + done as u64).build()
        } else {
            opcode::Read::new(fd, ptr, len).offset(offset + done as u64).build()
        }
        .user_data(i as u64);
        loop {
            // SAFETY: the slot is marked in flight: no slice of it exists until its
            // completion is reaped, and the ring's and streams' `Drop` wait for it (see the
            // module docs); the stream keeps the fd open as long.
            if unsafe { inner.ring.submission().push(&entry) }.is_ok() {
                break;
            }
            Self::enter(inner, 0)?;
        }
        Self::enter(inner, 0)
    }

    fn enter(inner: &mut Inner, want: usize) -> io::Result<()> {
        loop {
            match inner.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && want == 0 => return Ok(()),
                Err(e) => {
                    inner.broken = true;
                    return Err(e);
                }
            }
        }
    }

    /// Waits until slot `i`'s read has ended; returns the bytes read.
    fn wait(&self, i: usize) -> io::Result<usize> {
        let mut inner = self.inner.borrow_mut();
        loop {
            match inner.state[i] {
                State::Ready { len } => {
                    inner.state[i] = State::Idle;
                    return Ok(len);
                }
                State::Failed { errno } => {
                    inner.state[i] = State::Idle;
                    return Err(io::Error::from_raw_os_error(errno));
                }
                State::Idle => return Ok(0),
                State::InFlight { .. } => {}
            }
            if inner.broken {
                return Err(io::Error::other("the io_uring ring failed"));
            }
            if self.reap(&mut inner)? == 0 {
                Self::enter(&mut inner, 1)?;
                self.reap(&mut inner)?;
            }
        }
    }

    fn reap(&self, inner: &mut Inner) -> io::Result<usize> {
        let mut handled = 0;
        loop {
            let Some(cqe) = inner.ring.completion().next() else { break };
            handled += 1;
            let i = cqe.user_data() as usize;
            let res = cqe.result();
            let State::InFlight { fd, offset, want, done, retries } = inner.state[i] else {
                debug_assert!(false, "a completion for slot {i}, which has no read in flight");
                continue;
            };
            let next = if res < 0 {
                if (-res == libc::EINTR || -res == libc::EAGAIN) && retries < MAX_RETRIES {
                    State::InFlight { fd, offset, want, done, retries: retries + 1 }
                } else {
                    State::Failed { errno: -res }
                }
            } else if res == 0 {
                State::Ready { len: done }
            } else {
                let done = done + res as usize;
                // A short read before the end: read the rest (direct reads stop short only at
                // the file's end, where the next read returns 0).
                if done < want && done.is_multiple_of(512) {
                    State::InFlight { fd, offset, want, done, retries: 0 }
                } else {
                    State::Ready { len: done }
                }
            };
            inner.state[i] = next;
            if matches!(next, State::InFlight { .. }) {
                self.push(inner, i)?;
            } else {
                inner.in_flight -= 1;
            }
        }
        Ok(handled)
    }
}

impl Drop for ReadRing {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        while inner.in_flight > 0 && !inner.broken {
            if Self::enter(inner, 1).is_err() {
                break;
            }
            while let Some(cqe) = inner.ring.completion().next() {
                let i = cqe.user_data() as usize;
                if matches!(inner.state[i], State::InFlight { .. }) {
                    inner.state[i] = State::Idle;
                    inner.in_flight -= 1;
                }
            }
        }
        if inner.in_flight > 0 {
            // The ring failed with reads in flight: leak every block rather than free one the
            // kernel may still fill.
            for slot in std::mem::take(&mut self.slots) {
                std::mem::forget(slot);
            }
        }
    }
}

/// A sequential read of the bytes `start..end` of one file through [`READ_DEPTH`] slots of a
/// [`ReadRing`], exposed as a window of contiguous bytes that [`DirectStream::advance`] moves
/// on, carrying the window's last bytes (a record cut by the read's end) in front of the next.
pub struct DirectStream<'r> {
    ring: &'r ReadRing,
    file: &'r File,
    path: &'r Path,
    /// The stream's slots: `first..first + READ_DEPTH`, used in turn.
    first: usize,
    /// The slot holding the window, and the next file offset to read (aligned).
    current: usize,
    next_read: u64,
    /// File offsets of the slots' reads in flight, in the order they were started.
    pending: std::collections::VecDeque<(usize, u64)>,
    end: u64,
    /// The window: bytes `window_start..window_end` of the current slot.
    window_start: usize,
    window_end: usize,
}

impl std::fmt::Debug for DirectStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectStream")
            .field("path", &self.path)
            .field("slots", &(self.first..self.first + READ_DEPTH))
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl<'r> DirectStream<'r> {
    /// A stream of the bytes `start..end` of `file` through stream slot set `stream` of
    /// `ring`, with its reads started and the first window read.
    ///
    /// # Errors
    ///
    /// A read fails (naming `path`).
    ///
    /// # Panics
    ///
    /// When `stream` is not below [`ReadRing::streams`].
    pub fn new(
        ring: &'r ReadRing,
        stream: usize,
        file: &'r File,
        path: &'r Path,
        start: u64,
        end: u64,
    ) -> Result<Self> {
        assert!(stream < ring.streams(), "stream {stream} of a ring for {}", ring.streams());
        let first = stream * READ_DEPTH;
        let aligned = align_down(start);
        let mut s = DirectStream {
            ring,
            file,
            path,
            first,
            current: first,
            next_read: aligned,
            pending: std::collections::VecDeque::with_capacity(READ_DEPTH),
            end,
            window_start: ring.margin,
            window_end: ring.margin,
        };
        for k in 0..READ_DEPTH {
            s.start_read(first + k)?;
        }
        let skip = (start - aligned) as usize;
        s.advance(0)?;
        // The first read began at the block holding `start`.
        s.window_start = (s.window_start + skip).min(s.window_end);
        Ok(s)
    }

    fn start_read(&mut self, slot: usize) -> Result<()> {
        if self.next_read >= self.end {
            return Ok(());
        }
        let want = self.ring.block;
        self.ring
            .start(slot, self.file.as_raw_fd(), self.next_read, want)
            .map_err(|e| Error::io("read", self.path, e))?;
        self.pending.push_back((slot, self.next_read));
        self.next_read += want as u64;
        Ok(())
    }

    /// The bytes of the window.
    #[inline(always)]
    pub fn window(&self) -> &[u8] {
        // SAFETY: the current slot has no read in flight (its read was waited for in
        // `advance`, and it is resubmitted only after the window has moved to another slot,
        // through `&mut self`); the range lies within its block.
        unsafe {
            std::slice::from_raw_parts(
                self.ring.slots[self.current].raw().add(self.window_start),
                self.window_end - self.window_start,
            )
        }
    }

    /// Moves the window to the next read's bytes, with the current window's last `keep` bytes
    /// (at most the ring's record size) copied in front. Returns false (an empty window) when
    /// the range has no more bytes to read; the kept bytes are then the window.
    ///
    /// # Errors
    ///
    /// A read fails, or the file ends before the range (naming the file).
    pub fn advance(&mut self, keep: usize) -> Result<bool> {
        let ring = self.ring;
        debug_assert!(keep <= ring.margin && keep <= self.window_end - self.window_start);
        let Some((slot, offset)) = self.pending.pop_front() else {
            // Nothing more: the window is the kept bytes.
            self.window_start = self.window_end - keep;
            return Ok(false);
        };
        let got = ring.wait(slot).map_err(|e| Error::io("read", self.path, e))?;
        let wanted = (self.end - offset).min(ring.block as u64) as usize;
        if got < wanted {
            return Err(Error::io(
                "read",
                self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends at byte {}, before byte {}", offset + got as u64, self.end),
                ),
            ));
        }
        if keep > 0 {
            // SAFETY: both slots have no read in flight (`slot`'s was just waited for), they
            // are distinct blocks, and the ranges lie within them (keep <= margin).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    ring.slots[self.current].raw().add(self.window_end - keep),
                    ring.slots[slot].raw().add(ring.margin - keep),
                    keep,
                );
            }
        }
        let previous = self.current;
        self.current = slot;
        self.window_start = ring.margin - keep;
        self.window_end = ring.margin + wanted;
        // The previous slot is free again: read ahead into it (only after the window moved).
        if previous != slot && !self.pending.iter().any(|&(s, _)| s == previous) {
            self.start_read(previous)?;
        }
        Ok(true)
    }
}

impl Drop for DirectStream<'_> {
    fn drop(&mut self) {
        // Reads into the slots must end before they are used again.
        for (slot, _) in std::mem::take(&mut self.pending) {
            let _ = self.ring.wait(slot);
        }
    }
}
