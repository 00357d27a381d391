//! [`OutputFile`]: the buffered output reduce writes into.

use super::*;
use crate::background::BackgroundSink;

/// Where an [`OutputFile`]'s bytes go.
enum Target {
    /// A new file in a staging directory (which is its temporary name), through the I/O
    /// backend's sink.
    Staged(Box<dyn FileSink>),
    /// A [`Destination::Replace`] file, through the I/O backend's sink on its temporary name.
    Replace { sink: Box<dyn FileSink>, dest: Destination },
    /// A device, FIFO, descriptor or standard output: written in order, in place.
    InOrder(Destination),
    /// The caller's sink: each key's bytes, whole, at [`OutputFile::end_key`].
    Sink(Sink),
}

/// A buffered output (reduce writes into it): a part file in a staging directory, a file that
/// replaces its target only once [`OutputFile::finish`] has written it and the returned
/// [`Destination`] is committed, a device, standard output or the caller's [`Sink`] (one call
/// per key: [`OutputFile::end_key`]). It records its own first error,
/// so that a failure of the output (a full disk) is told from a failure of the job's code that
/// wrote into it ([`OutputFile::take_error`]).
pub(crate) struct OutputFile {
    buf: Vec<u8>,
    target: Option<Target>,
    bytes: u64,
    error: Option<Error>,
}

const OUT_BUFFER: usize = 256 << 10;

impl OutputFile {
    fn new(target: Target) -> Self {
        OutputFile { buf: Vec::with_capacity(OUT_BUFFER), target: Some(target), bytes: 0, error: None }
    }

    /// An output replacing `path` (see [`Destination::create`]) when committed. A file is
    /// written from a thread of its own ([`BackgroundSink`]): this is the output of the one
    /// reduce thread of a single output file.
    pub(crate) fn create(path: &Path, io: IoBackend) -> Result<Self> {
        let target = match Destination::create(path)? {
            Destination::Replace(temp) => {
                let sink = BackgroundSink::wrap(io.create(temp.path())?);
                Target::Replace { sink, dest: Destination::Replace(temp) }
            }
            dest => Target::InOrder(dest),
        };
        Ok(Self::new(target))
    }

    /// A new file inside a [`StagedDir`] (which is the temporary name).
    pub(crate) fn create_staged(path: &Path, io: IoBackend) -> Result<Self> {
        Ok(Self::new(Target::Staged(io.create(path)?)))
    }

    pub(crate) fn stdout() -> Self {
        Self::new(Target::InOrder(Destination::Stdout))
    }

    /// The caller's sink: the bytes of each key go to it whole at [`OutputFile::end_key`].
    pub(crate) fn sink(sink: Sink) -> Self {
        OutputFile { buf: Vec::new(), target: Some(Target::Sink(sink)), bytes: 0, error: None }
    }

    /// Reduce has written `key`'s output: a sink receives it now (a failure is recorded as
    /// [`OutputFile::drain`]'s); nothing happens for a file.
    #[inline]
    pub(crate) fn end_key(&mut self, key: &[u8]) -> std::io::Result<()> {
        let Some(Target::Sink(sink)) = &self.target else { return Ok(()) };
        let result = sink.accept(key, &self.buf);
        self.buf.clear();
        result.map_err(|e| {
            let message = format!("the output sink failed: {e}");
            self.error.get_or_insert(Error::Output { path: "the output sink".into(), what: e.to_string() });
            std::io::Error::new(e.kind(), message)
        })
    }

    /// The output's own first error (writing or finishing it), if it had one.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Writes the buffer out. A failure is recorded ([`OutputFile::take_error`]) and comes
    /// back as an `io::Error` of the same kind for the job's code.
    fn drain(&mut self) -> std::io::Result<()> {
        let result = match self.target.as_mut() {
            Some(Target::Replace { sink, .. } | Target::Staged(sink)) => {
                sink.write_all(&self.buf).map_err(Error::from)
            }
            Some(Target::InOrder(dest)) => dest.write_in_order(&self.buf),
            // Handed over per key by `end_key`: nothing is left between keys.
            Some(Target::Sink(_)) | None => Ok(()),
        };
        self.buf.clear();
        result.map_err(|e| {
            let kind = e.io_kind();
            let message = e.to_string();
            self.error.get_or_insert(e);
            std::io::Error::new(kind, message)
        })
    }

    /// Flushes, and `fsync`s a file when `sync`; returns the bytes written and, for a file
    /// replacing its target, the destination to commit ([`Destination::commit`]: it stays
    /// under its temporary name until then; `None` for a staged part file, a device or
    /// standard output).
    pub(crate) fn finish(mut self, sync: bool) -> Result<(u64, Option<Destination>)> {
        if self.drain().is_err() {
            return Err(self.error.take().expect("drain records its error"));
        }
        let dest = match self.target.take() {
            Some(Target::Replace { sink, mut dest }) => {
                sink.finish(sync)?;
                if let (Destination::Replace(temp), true) = (&mut dest, sync) {
                    temp.mark_synced();
                }
                Some(dest)
            }
            Some(Target::Staged(sink)) => {
                sink.finish(sync)?;
                None
            }
            // Written in place: nothing to commit (a device or FIFO is closed here).
            Some(Target::InOrder(dest)) => dest.commit(sync).map(|()| None)?,
            Some(Target::Sink(_)) | None => None,
        };
        Ok((self.bytes, dest))
    }
}

impl Write for OutputFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes += data.len() as u64;
        // A sink takes each key's bytes whole: they stay in the buffer until `end_key`.
        if self.buf.len() + data.len() > OUT_BUFFER && !matches!(self.target, Some(Target::Sink(_))) {
            self.drain()?;
            if data.len() > OUT_BUFFER {
                let saved = std::mem::replace(&mut self.buf, data.to_vec());
                self.drain()?;
                self.buf = saved;
                return Ok(data.len());
            }
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
