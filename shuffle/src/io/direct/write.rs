//! [`DirectFile`]: positioned `O_DIRECT` writes from any thread through one io_uring ring.
//!
//! # Memory safety
//!
//! The kernel cancels a thread's requests when the thread exits: threads that write call
//! [`DirectFile::drain`] before they end (the record sort's workers do, from a guard in their
//! state).
//!
//! A buffer handed to the kernel is owned by the write's entry in `ops` until its completion
//! has been reaped: safe code cannot reach it. Dropping a file waits for every in-flight write
//! before the buffers are freed; if the ring fails while waiting, they are leaked instead.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use io_uring::{IoUring, opcode, types};

use super::{ALIGN, AlignedBuf, align_down, align_up, create_write};
use crate::{Error, Result};

/// Ring entries: the most writes in flight at once.
const RING_ENTRIES: u32 = 64;

/// A buffer of a [`DirectFile`]'s pool, being filled by a caller for one positioned write.
///
/// Its bytes start at the offset within the buffer that the write's file offset has within a
/// block, so that whole blocks of the file are whole blocks of the buffer.
#[derive(Debug)]
pub struct DirectBuf {
    buf: AlignedBuf,
    /// The pool index (the registration index when registered).
    index: usize,
    /// The write's file offset modulo [`ALIGN`]: where its bytes start in `buf`.
    lead: usize,
    len: usize,
}

impl DirectBuf {
    /// Starts a write at file offset `offset`: empties the buffer.
    pub fn reset(&mut self, offset: u64) {
        self.lead = (offset % ALIGN as u64) as usize;
        self.len = 0;
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn extend(&mut self, data: &[u8]) -> usize {
        let at = self.lead + self.len;
        let n = data.len().min(self.buf.len() - at);
        self.buf[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// The bytes appended since [`DirectBuf::reset`].
    pub fn data(&self) -> &[u8] {
        &self.buf[self.lead..self.lead + self.len]
    }

    /// How many more bytes fit.
    pub fn spare(&self) -> usize {
        self.buf.len() - self.lead - self.len
    }
}

/// What an in-flight write holds.
enum Hold {
    /// A pool buffer (given back on completion).
    Pool { buf: AlignedBuf, index: usize },
    /// An assembled partial block (dropped on completion).
    Edge(AlignedBuf),
}

/// One write in flight: `len` bytes from `mem` within the held buffer, at `offset`.
struct Op {
    hold: Hold,
    mem: usize,
    len: usize,
    offset: u64,
    done: usize,
    retries: u32,
}

/// A block assembled from the ends of writes that do not cover it whole.
struct Edge {
    block: AlignedBuf,
    filled: usize,
}

struct Inner {
    ring: IoUring,
    file: File,
    /// Pool buffers not given out and not in flight.
    free: Vec<(usize, AlignedBuf)>,
    /// How many pool buffers exist, and how many of them are registered (the first ones).
    pool: usize,
    registered: usize,
    buf_len: usize,
    ops: Vec<Option<Op>>,
    free_ops: Vec<usize>,
    in_flight: usize,
    edges: HashMap<u64, Edge>,
    /// One past the last byte written.
    end: u64,
    /// The first error; later calls replay it.
    poisoned: Option<(io::ErrorKind, Option<i32>, &'static str)>,
    broken: bool,
}

/// A file written with `O_DIRECT` (where the filesystem allows it) at positions, from any
/// thread, through io_uring (see the module documentation of `io::direct`).
///
/// Callers take a buffer ([`DirectFile::buffer`]), fill it ([`DirectBuf::extend`]) and hand
/// it to [`DirectFile::write_at`]; the write proceeds while they fill the next one. Every byte
/// of the file must be written exactly once before [`DirectFile::finish`]; bytes never
/// written read as zeros.
pub struct DirectFile {
    inner: Mutex<Inner>,
    path: PathBuf,
    direct: bool,
}

impl std::fmt::Debug for DirectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFile")
            .field("path", &self.path)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl DirectFile {
    /// Creates (truncating) `path`, with a pool of `buffers` buffers, each holding writes of
    /// up to `capacity` bytes at any offset. `O_DIRECT` where the filesystem allows it
    /// ([`DirectFile::is_direct`]).
    ///
    /// # Errors
    ///
    /// The file cannot be created, or no io_uring ring (naming the file).
    pub fn create(path: &Path, buffers: usize, capacity: usize) -> Result<DirectFile> {
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))
            .map_err(|e| Error::io("io_uring_setup", path, e))?;
        let (file, direct) = create_write(path)?;
        let buffers = buffers.max(1);
        let buf_len = capacity + ALIGN;
        let mut free: Vec<(usize, AlignedBuf)> =
            (0..buffers).map(|i| (i, AlignedBuf::new(buf_len))).collect();
        let iovecs: Vec<libc::iovec> = free.iter_mut().map(|(_, b)| b.iovec()).collect();
        // SAFETY: the registered blocks live as long as the ring: they are freed only after
        // `Drop` has waited for every write, and the ring (unregistering them) is dropped with
        // `Inner`, whose buffers are dropped after it... except free ones, which the kernel
        // never touches without a submission. A refused registration (RLIMIT_MEMLOCK) leaves
        // the buffers unregistered: plain writes.
        let registered = match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => buffers,
            Err(_) => 0,
        };
        free.reverse();
        Ok(DirectFile {
            inner: Mutex::new(Inner {
                ring,
                file,
                free,
                pool: buffers,
                registered,
                buf_len,
                ops: Vec::new(),
                free_ops: Vec::new(),
                in_flight: 0,
                edges: HashMap::new(),
                end: 0,
                poisoned: None,
                broken: false,
            }),
            path: path.to_owned(),
            direct,
        })
    }

    /// Whether the file was opened with `O_DIRECT` (false: the filesystem refused it, and the
    /// writes go through the page cache).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the pool's buffers are registered with the ring (fixed-buffer writes).
    pub fn registered(&self) -> bool {
        self.lock().registered > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state (no await points inside).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free buffer of the pool, waiting for a write to complete when none is free (or
    /// adding a buffer when every one is held by a caller).
    ///
    /// # Errors
    ///
    /// An earlier or a completed write failed.
    pub fn buffer(&self) -> Result<DirectBuf> {
        let mut inner = self.lock();
        inner.check(&self.path)?;
        inner.reap(&self.path)?;
        loop {
            if let Some((index, buf)) = inner.free.pop() {
                return Ok(DirectBuf { buf, index, lead: 0, len: 0 });
            }
            if inner.in_flight == 0 {
                // Every buffer is held by callers: one more (unregistered).
                let index = inner.pool;
                inner.pool += 1;
                let buf = AlignedBuf::new(inner.buf_len);
                return Ok(DirectBuf { buf, index, lead: 0, len: 0 });
            }
            inner.wait_one(&self.path)?;
        }
    }

    /// Writes `buf`'s bytes at `offset` (which must be the offset it was reset to, modulo
    /// [`ALIGN`]); returns at once, the whole blocks in flight.
    ///
    /// # Errors
    ///
    /// An earlier or a completed write failed; the submission failed.
    ///
    /// # Panics
    ///
    /// When `offset` does not match the buffer's [`DirectBuf::reset`].
    pub fn write_at(&self, offset: u64, buf: DirectBuf) -> Result<()> {
        assert_eq!(
            (offset % ALIGN as u64) as usize,
            buf.lead,
            "a write at {offset} from a buffer reset elsewhere"
        );
        let mut inner = self.lock();
        inner.check(&self.path)?;
        let DirectBuf { buf, index, lead, len } = buf;
        let (start, end) = (offset, offset + len as u64);
        inner.end = inner.end.max(end);
        let (first_whole, last_whole) = (align_up(start), align_down(end));
        if first_whole < last_whole {
            // The blocks the write covers whole, at the same alignment in the buffer.
            if start < first_whole {
                inner.add_edge(&self.path, start, &buf[lead..lead + (first_whole - start) as usize])?;
            }
            if last_whole < end {
                let from = lead + (last_whole - start) as usize;
                inner.add_edge(&self.path, last_whole, &buf[from..lead + len])?;
            }
            let mem = lead + (first_whole - start) as usize;
            let op = Op {
                hold: Hold::Pool { buf, index },
                mem,
                len: (last_whole - first_whole) as usize,
                offset: first_whole,
                done: 0,
                retries: 0,
            };
            inner.submit(&self.path, op)
        } else {
            // No whole block: the bytes go into one or two partial blocks.
            let mut at = start;
            while at < end {
                let stop = (align_down(at) + ALIGN as u64).min(end);
                let from = lead + (at - start) as usize;
                inner.add_edge(&self.path, at, &buf[from..from + (stop - at) as usize])?;
                at = stop;
            }
            inner.free.push((index, buf));
            Ok(())
        }
    }

    /// Waits for every write in flight (the first error).
    ///
    /// io_uring cancels a thread's in-flight requests when that thread exits (`ECANCELED`):
    /// a thread that wrote must call this before it ends, unless another thread that stays
    /// will call it or [`DirectFile::finish`] first.
    ///
    /// # Errors
    ///
    /// An earlier or a completed write failed.
    pub fn drain(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.drain(&self.path)?;
        inner.check(&self.path)
    }

    /// Writes the partial blocks left (the file's last one, padded), waits for every write,
    /// truncates the file to its length, `fsync`s when `sync`. Returns the length.
    ///
    /// # Errors
    ///
    /// Any write, truncate or sync error, naming the file.
    pub fn finish(self, sync: bool) -> Result<u64> {
        let mut inner = self.lock();
        inner.check(&self.path)?;
        let mut edges: Vec<(u64, Edge)> = inner.edges.drain().collect();
        edges.sort_unstable_by_key(|(at, _)| *at);
        for (at, edge) in edges {
            inner.submit(
                &self.path,
                Op { hold: Hold::Edge(edge.block), mem: 0, len: ALIGN, offset: at, done: 0, retries: 0 },
            )?;
        }
        inner.drain(&self.path)?;
        let end = inner.end;
        if !end.is_multiple_of(ALIGN as u64) {
            inner.file.set_len(end).map_err(|e| Error::io("truncate", &self.path, e))?;
        }
        if sync {
            inner.file.sync_all().map_err(|e| Error::io("fsync", &self.path, e))?;
        }
        Ok(end)
    }
}

impl Inner {
    fn check(&self, path: &Path) -> Result<()> {
        match self.poisoned {
            Some((kind, errno, op)) => {
                let source = match errno {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(kind, "an earlier write to this file failed"),
                };
                Err(Error::io(op, path, source))
            }
            None => Ok(()),
        }
    }

    fn fail(&mut self, path: &Path, op: &'static str, e: io::Error) -> Error {
        self.poisoned.get_or_insert((e.kind(), e.raw_os_error(), op));
        Error::io(op, path, e)
    }

    /// Copies `data` (within one block) into the partial block at `at`; submits the block
    /// once all of it has arrived.
    fn add_edge(&mut self, path: &Path, at: u64, data: &[u8]) -> Result<()> {
        let base = align_down(at);
        let within = (at - base) as usize;
        debug_assert!(within + data.len() <= ALIGN);
        let edge =
            self.edges.entry(base).or_insert_with(|| Edge { block: AlignedBuf::new(ALIGN), filled: 0 });
        edge.block[within..within + data.len()].copy_from_slice(data);
        edge.filled += data.len();
        if edge.filled == ALIGN {
            let edge = self.edges.remove(&base).expect("the edge just filled");
            self.submit(
                path,
                Op { hold: Hold::Edge(edge.block), mem: 0, len: ALIGN, offset: base, done: 0, retries: 0 },
            )?;
        }
        Ok(())
    }

    /// Takes `op` in flight.
    fn submit(&mut self, path: &Path, op: Op) -> Result<()> {
        while self.in_flight >= RING_ENTRIES as usize {
            self.wait_one(path)?;
        }
        let id = match self.free_ops.pop() {
            Some(id) => {
                self.ops[id] = Some(op);
                id
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        };
        self.in_flight += 1;
        self.push(path, id)
    }

    /// Queues the write of the rest of `ops[id]` and submits it.
    fn push(&mut self, path: &Path, id: usize) -> Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let registered = self.registered;
        let op = self.ops[id].as_mut().expect("an op in flight");
        let rest = (op.len - op.done) as u32;
        let at = op.offset + op.done as u64;
        let skip = op.mem + op.done;
        let entry = match &mut op.hold {
            Hold::Pool { buf, index } if *index < registered => {
                // SAFETY: within the block (mem + len <= its length).
                let ptr = unsafe { buf.as_mut_ptr().add(skip) };
                opcode::WriteFixed::new(fd, ptr, rest, *index as u16).offset(at).build()
            }
            Hold::Pool { buf, .. } | Hold::Edge(buf) => {
                // SAFETY: within the block.
                let ptr = unsafe { buf.as_mut_ptr().add(skip) };
                opcode::Write::new(fd, ptr, rest).offset(at).build()
            }
        }
        .user_data(id as u64);
        loop {
            // SAFETY: the entry points into a block owned by `ops[id]` until its completion is
            // reaped (safe code cannot reach it meanwhile), and `Drop` waits for every
            // completion (or leaks the blocks) before freeing them; the fd is open as long.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                break;
            }
            self.enter(path, 0)?;
        }
        self.enter(path, 0)
    }

    fn enter(&mut self, path: &Path, want: usize) -> Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && want == 0 => return Ok(()),
                Err(e) => {
                    self.broken = true;
                    return Err(self.fail(path, "io_uring_enter", e));
                }
            }
        }
    }

    fn wait_one(&mut self, path: &Path) -> Result<()> {
        if self.reap(path)? == 0 {
            self.enter(path, 1)?;
            self.reap(path)?;
        }
        Ok(())
    }

    /// Handles every available completion; returns how many (the first error after all).
    fn reap(&mut self, path: &Path) -> Result<usize> {
        let mut handled = 0;
        let mut first_err = None;
        loop {
            let Some(cqe) = self.ring.completion().next() else { break };
            handled += 1;
            if let Err(e) = self.complete(path, cqe.user_data() as usize, cqe.result()) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(handled),
        }
    }

    fn complete(&mut self, path: &Path, id: usize, res: i32) -> Result<()> {
        let Some(op) = self.ops.get_mut(id).and_then(Option::as_mut) else {
            debug_assert!(false, "a completion of no write");
            return Ok(());
        };
        let outcome = super::super::uring::write_completed(res, &mut op.done, op.len, &mut op.retries);
        if let Ok(true) = outcome {
            return self.push(path, id);
        }
        let op = self.ops[id].take().expect("an op in flight");
        self.free_ops.push(id);
        self.in_flight -= 1;
        if let Hold::Pool { buf, index } = op.hold {
            self.free.push((index, buf));
        }
        match outcome {
            Err(e) => Err(self.fail(path, "write", e)),
            _ => Ok(()),
        }
    }

    /// Waits for every write in flight; the first error.
    fn drain(&mut self, path: &Path) -> Result<()> {
        let mut first_err = None;
        while self.in_flight > 0 {
            if let Err(e) = self.wait_one(path) {
                first_err.get_or_insert(e);
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

impl Drop for Inner {
    fn drop(&mut self) {
        // Never free a block the kernel may still read.
        let _ = self.drain(Path::new("(dropped file)"));
        if self.in_flight > 0 {
            for op in self.ops.drain(..).flatten() {
                match op.hold {
                    Hold::Pool { buf, .. } | Hold::Edge(buf) => std::mem::forget(buf),
                }
            }
        }
    }
}
