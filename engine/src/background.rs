//! [`BackgroundSink`]: a [`FileSink`] whose writes happen on a thread of its own.
//!
//! The one reduce of a single output file merges, reduces and writes on one thread; on a
//! page-cache file about a third of that thread's time went into the kernel's copies of the
//! bytes written. Handing full buffers to a writer thread overlaps those copies with the
//! merge. The buffers ([`CHUNKS`] of [`CHUNK`] bytes) are allocated once and go round between
//! the two threads; nothing is allocated per write.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use spillway_shuffle::FileSink;
use spillway_shuffle::io::WRITE_BUFFER;

/// Bytes handed to the writer at a time: the sink's own buffer size, so that the sink writes
/// them straight through.
const CHUNK: usize = WRITE_BUFFER;
/// Buffers going round: one filling, one being written, one waiting.
const CHUNKS: usize = 3;

type Written = spillway_shuffle::Result<Box<dyn FileSink>>;

/// A [`FileSink`] that buffers what it is given and has another thread write it into the
/// wrapped sink, in order. A write error comes back from the next call after it happened (or
/// from [`FileSink::finish`]).
pub(crate) struct BackgroundSink {
    buf: Vec<u8>,
    position: u64,
    /// Buffers allocated so far (at most [`CHUNKS`]).
    allocated: usize,
    full: Option<Sender<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<Written>>,
    /// The error the writer stopped at, returned again by every later call.
    failed: Option<spillway_shuffle::Error>,
}

/// A copy of `e` (errors are not `Clone`): the same kind of I/O error on the same file.
fn again(e: &spillway_shuffle::Error) -> spillway_shuffle::Error {
    match e {
        spillway_shuffle::Error::Io { op, path, source } => {
            spillway_shuffle::Error::io(op, path, std::io::Error::new(source.kind(), source.to_string()))
        }
        other => spillway_shuffle::Error::Config(other.to_string()),
    }
}

impl BackgroundSink {
    /// `sink`, written from a thread of its own; `sink` itself when no thread can start (the
    /// writes then happen on the caller's thread, as without the wrapper).
    pub(crate) fn wrap(sink: Box<dyn FileSink>) -> Box<dyn FileSink> {
        let (full_tx, full_rx) = bounded::<Vec<u8>>(CHUNKS);
        let (empty_tx, empty_rx) = bounded::<Vec<u8>>(CHUNKS);
        let (sink_tx, sink_rx) = bounded::<Box<dyn FileSink>>(1);
        let started = std::thread::Builder::new().name("spillway-writer".into()).spawn(move || {
            let mut sink = sink_rx.recv().expect("the sink is sent once the thread started");
            for buf in full_rx {
                sink.write_all(&buf)?;
                // The filling side may have finished: then nobody waits for the buffer.
                let _ = empty_tx.send(buf);
            }
            Ok(sink)
        });
        let Ok(writer) = started else { return sink };
        sink_tx.send(sink).expect("the writer thread waits for its sink");
        Box::new(BackgroundSink {
            buf: Vec::with_capacity(CHUNK),
            position: 0,
            allocated: 1,
            full: Some(full_tx),
            empty: empty_rx,
            writer: Some(writer),
            failed: None,
        })
    }

    /// Hands the filled buffer to the writer and takes an empty one.
    fn send(&mut self) -> spillway_shuffle::Result<()> {
        if let Some(e) = &self.failed {
            return Err(again(e));
        }
        let next = match self.allocated < CHUNKS {
            true => {
                self.allocated += 1;
                Some(Vec::with_capacity(CHUNK))
            }
            false => self.empty.recv().ok(),
        };
        // No empty buffer comes back once the writer stopped: it failed.
        let Some(next) = next else { return Err(self.stop()) };
        let full = std::mem::replace(&mut self.buf, next);
        if self.full.as_ref().expect("sender present until finish").send(full).is_err() {
            return Err(self.stop());
        }
        self.buf.clear();
        Ok(())
    }

    /// Waits for the writer thread to end (it ends once the sender is dropped, or at its first
    /// error) and returns its sink or its error. A panic of the writer is raised again here.
    fn join(&mut self) -> Written {
        self.full = None;
        let writer = self.writer.take().expect("the writer is joined once");
        writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The error the writer stopped at (kept for later calls).
    fn stop(&mut self) -> spillway_shuffle::Error {
        let e = match self.join() {
            Err(e) => e,
            Ok(_) => unreachable!("the writer stops early only at an error"),
        };
        self.failed = Some(again(&e));
        e
    }
}

impl FileSink for BackgroundSink {
    fn write_all(&mut self, mut data: &[u8]) -> spillway_shuffle::Result<()> {
        self.position += data.len() as u64;
        while !data.is_empty() {
            let n = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.send()?;
            }
        }
        Ok(())
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn finish(mut self: Box<Self>, sync: bool) -> spillway_shuffle::Result<u64> {
        if !self.buf.is_empty() || self.failed.is_some() {
            self.send()?;
        }
        self.join()?.finish(sync)
    }
}

impl Drop for BackgroundSink {
    fn drop(&mut self) {
        // Unfinished (a failed reduce): the writer ends once the sender is gone; the wrapped
        // sink is dropped on its thread or here.
        if self.writer.is_some() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_shuffle::IoBackend;

    #[test]
    fn writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut sink = BackgroundSink::wrap(IoBackend::Std.create(&path).unwrap());
        let mut want = Vec::new();
        for i in 0..5000u32 {
            // Pieces of every size, some larger than a chunk.
            let piece = vec![i as u8; (i as usize * 7919) % (CHUNK * 2 + 3)];
            sink.write_all(&piece).unwrap();
            want.extend_from_slice(&piece);
            if want.len() > 64 * CHUNK {
                break;
            }
        }
        assert_eq!(sink.position(), want.len() as u64);
        assert_eq!(sink.finish(false).unwrap(), want.len() as u64);
        assert!(std::fs::read(&path).unwrap() == want);
    }

    #[test]
    fn a_write_error_comes_back() {
        // /dev/full refuses every write with ENOSPC.
        let Ok(inner) = IoBackend::Std.create(std::path::Path::new("/dev/full")) else { return };
        let mut sink = BackgroundSink::wrap(inner);
        let piece = vec![1u8; CHUNK];
        let mut failed = false;
        for _ in 0..CHUNKS * 4 {
            if sink.write_all(&piece).is_err() {
                failed = true;
                break;
            }
        }
        if failed {
            // Every later call fails too.
            assert!(sink.write_all(&piece).is_err());
            assert!(sink.finish(false).is_err());
        } else {
            assert!(sink.finish(false).is_err());
        }
    }

    #[test]
    fn dropping_an_unfinished_sink_ends_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = BackgroundSink::wrap(IoBackend::Std.create(&dir.path().join("out")).unwrap());
        sink.write_all(&vec![3u8; CHUNK * 3 + 5]).unwrap();
        drop(sink);
    }
}
