//! The std backend: one large buffer, plain `write` calls.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{FileSink, WRITE_BUFFER};
use crate::{Error, Result};

/// Writes a file through one reusable [`WRITE_BUFFER`]-sized buffer.
#[derive(Debug)]
pub struct StdSink {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    position: u64,
}

impl StdSink {
    /// Creates (truncating) `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(StdSink { file, path: path.to_owned(), buf: Vec::with_capacity(WRITE_BUFFER), position: 0 })
    }

    fn flush_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf).map_err(|e| Error::io("write", &self.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl FileSink for StdSink {
    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.position += data.len() as u64;
        if self.buf.len() + data.len() > self.buf.capacity() {
            self.flush_buf()?;
        }
        if data.len() >= self.buf.capacity() {
            self.file.write_all(data).map_err(|e| Error::io("write", &self.path, e))
        } else {
            self.buf.extend_from_slice(data);
            Ok(())
        }
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn finish(mut self: Box<Self>, sync: bool) -> Result<u64> {
        self.flush_buf()?;
        if sync {
            self.file.sync_all().map_err(|e| Error::io("fsync", &self.path, e))?;
        }
        Ok(self.position)
    }
}
