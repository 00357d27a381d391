//! Where sorted records go: part files written into the staging directory ([`write_part`]),
//! the destinations of one piece of output ([`Dest`]), the writer thread shared by the sorters
//! ([`SharedWriter`]), the output of a whole sort ([`Sink`]), and what writing a piece found
//! ([`Piece`]). An output file is the engine's [`Destination`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use spillway_shuffle::RangePartitioner;
use spillway_shuffle::io::direct::DirectFile;

use super::Plan;
use crate::error::{Error, Result};
use crate::output::Destination;
use crate::pool::{self, FirstError};

/// How the sorters write `dest`: at positions (a replacing file), or in order (a device,
/// FIFO or standard output).
pub(super) fn sink(dest: &Destination) -> Sink<'_> {
    match dest.positioned() {
        Some((file, path)) => Sink::File(file, path),
        None => Sink::Stream(dest),
    }
}

/// Writes one part file into the sort's staging directory, which is its temporary name (the
/// directory is renamed into place whole, or removed, at the end: see `StagedDir`): `write`
/// fills it and gives the piece; the file is `fsync`ed when `sync`.
pub(super) fn write_part(
    path: &Path,
    sync: bool,
    write: impl FnOnce(&File, &Path) -> Result<Piece>,
) -> Result<Piece> {
    let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
    let piece = write(&file, path)?;
    if sync {
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    }
    Ok(piece)
}

/// Where a piece of output goes.
pub(super) enum Dest<'f> {
    /// Positioned writes into a file of this thread's own.
    At { file: &'f File, path: &'f Path, offset: u64 },
    /// Positioned writes into a file shared by the threads, done by its writer thread.
    Shared { writer: &'f SharedWriter, offset: u64 },
    /// In order, by one thread.
    Stream(&'f Destination),
    /// Positioned `O_DIRECT` writes through io_uring (a spill run), from any thread.
    Direct { file: &'f DirectFile, offset: u64 },
}

impl Dest<'_> {
    /// Writes `data` at the destination's position and moves the position on. `data` may
    /// come back as another (cleared) buffer of the same capacity.
    pub(super) fn write(&mut self, data: &mut Vec<u8>) -> Result<()> {
        match self {
            Dest::At { file, path, offset } => {
                file.write_all_at(data, *offset).map_err(|e| Error::io("write", *path, e))?;
                *offset += data.len() as u64;
            }
            Dest::Shared { writer, offset } => {
                let len = data.len() as u64;
                writer.hand_over(*offset, data);
                *offset += len;
            }
            Dest::Stream(dest) => dest.write_in_order(data)?,
            Dest::Direct { file, offset } => {
                // Copied into the file's aligned buffers: the kernel writes one while this
                // thread gathers the next.
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let mut buffer = file.buffer()?;
                    buffer.reset(*offset);
                    let n = buffer.extend(rest);
                    file.write_at(*offset, buffer)?;
                    *offset += n as u64;
                    rest = &rest[n..];
                }
                data.clear();
            }
        }
        Ok(())
    }
}

/// The sending side of one writer thread that does the positioned writes of every sorting
/// thread into one shared file.
///
/// ext4, like most filesystems, serializes buffered writes to one file on its inode lock, and a
/// thread waiting for that lock spins in the kernel while the holder copies (a large share of
/// the in-memory sort's CPU with two writing threads: `bench/README.md`). Through the writer, a sorter hands a full buffer over,
/// takes an empty one back and goes on gathering while the writer writes.
pub(super) struct SharedWriter {
    full: crossbeam_channel::Sender<(u64, Vec<u8>)>,
    free: crossbeam_channel::Receiver<Vec<u8>>,
}

impl SharedWriter {
    /// Buffers in circulation besides the one each sorter holds.
    pub(super) fn spare_buffers(threads: usize) -> usize {
        threads
    }

    /// Runs `work` with a writer thread for `file`: every buffer handed to the writer is
    /// written at its offset, in the order handed over. A write error goes to `failure` (the
    /// sorters check it between tasks); later buffers are then dropped unwritten.
    pub(super) fn run<R>(
        file: &File,
        path: &Path,
        plan: &Plan,
        failure: &FirstError,
        work: impl FnOnce(&SharedWriter) -> R,
    ) -> R {
        let (full_tx, full_rx) = crossbeam_channel::unbounded::<(u64, Vec<u8>)>();
        let (free_tx, free_rx) = crossbeam_channel::unbounded();
        for _ in 0..Self::spare_buffers(plan.threads) {
            let _ = free_tx.send(Vec::with_capacity(plan.write_buffer + plan.size));
        }
        std::thread::scope(|scope| {
            // One that cannot start fails the sort through `failure` before any buffer is
            // handed over (the sorters check it first).
            let _ = pool::spawn(scope, "spillway-write".into(), failure, move || {
                for (offset, mut buffer) in full_rx {
                    if !failure.failed()
                        && let Err(e) = file.write_all_at(&buffer, offset)
                    {
                        failure.set(Error::io("write", path, e));
                    }
                    buffer.clear();
                    // The sorters may all have finished: then nobody takes it back.
                    let _ = free_tx.send(buffer);
                }
            });
            // `writer` is dropped when `work` returns, which ends the writer thread's loop.
            let writer = SharedWriter { full: full_tx, free: free_rx };
            work(&writer)
        })
    }

    /// Hands `data` over to be written at `offset` and replaces it by an empty buffer.
    fn hand_over(&self, offset: u64, data: &mut Vec<u8>) {
        let empty = self.free.recv().expect("the writer thread returns every buffer while sorters run");
        let full = std::mem::replace(data, empty);
        self.full.send((offset, full)).expect("the writer thread runs while sorters run");
    }
}

/// Waits, when dropped, for every write in flight to a [`DirectFile`]: held in the state of
/// each worker thread that writes one, because io_uring cancels the requests of a thread that
/// exits. Errors are left for [`DirectFile::finish`] to report.
pub(super) struct DrainOnExit<'f>(pub(super) Option<&'f DirectFile>);

impl Drop for DrainOnExit<'_> {
    fn drop(&mut self) {
        if let Some(file) = self.0 {
            let _ = file.drain();
        }
    }
}

/// The output of the whole sort.
pub(super) enum Sink<'f> {
    /// One file (the output or a run), written at positions by every thread.
    File(&'f File, &'f Path),
    /// One part file per partition of `partitioner`, in `dir`.
    Parts { dir: &'f Path, partitioner: &'f RangePartitioner, sync: bool },
    /// Standard output, or a device or FIFO: in order, by one thread.
    Stream(&'f Destination),
    /// A spill run written with `O_DIRECT` through io_uring, at positions by every thread.
    Direct(&'f DirectFile),
}

/// What writing a piece of the output found: its records and keys at both ends (for
/// counting duplicates across pieces).
#[derive(Debug, Default, Clone)]
pub(super) struct Piece {
    pub(super) records: u64,
    pub(super) duplicates: u64,
    pub(super) first_key: Vec<u8>,
    pub(super) last_key: Vec<u8>,
}

/// Total duplicates over pieces listed in output order.
pub(super) fn stitch(pieces: &[Piece]) -> u64 {
    let mut total = 0;
    let mut last: Option<&[u8]> = None;
    for p in pieces.iter().filter(|p| p.records > 0) {
        total += p.duplicates;
        if last == Some(p.first_key.as_slice()) {
            total += 1;
        }
        last = Some(&p.last_key);
    }
    total
}
