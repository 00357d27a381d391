//! Where reduce output goes, and how it is committed: written under a temporary name,
//! `fsync`ed, renamed into place; `_SUCCESS` (the job's metrics as JSON) last.

use std::io::Write;
use std::path::{Path, PathBuf};

use spillway_shuffle::{FileSink, IoBackend};

use crate::error::{Error, Result};

/// Where a job's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// A directory of `part-NNNNN` files (one per partition, each sorted by key) and
    /// `_SUCCESS`. The directory may exist but must not hold a previous job's output.
    Dir(PathBuf),
    /// One file holding every key in byte order (replaced atomically if it exists).
    File(PathBuf),
    /// Standard output, every key in byte order.
    Stdout,
}

/// The name of partition `p`'s output file.
pub fn part_name(p: u32) -> String {
    format!("part-{p:05}")
}

/// Checks that `dir` can receive output: creates it, and refuses one that holds `_SUCCESS` or
/// part files.
pub(crate) fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create output directory", dir, e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read output directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read output directory", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "_SUCCESS" || name.starts_with("part-") {
            return Err(Error::OutputExists(dir.to_owned()));
        }
    }
    Ok(())
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.spillway-tmp-{}", std::process::id()))
}

enum Target {
    File { sink: Box<dyn FileSink>, tmp: PathBuf, path: PathBuf },
    Stdout(std::io::Stdout),
}

/// A buffered output file that only appears under its final name after [`OutputFile::commit`].
pub(crate) struct OutputFile {
    buf: Vec<u8>,
    target: Option<Target>,
    bytes: u64,
}

const OUT_BUFFER: usize = 256 << 10;

impl OutputFile {
    pub(crate) fn create(path: &Path, io: IoBackend) -> Result<Self> {
        let tmp = temp_name(path);
        let sink = io.create(&tmp)?;
        Ok(OutputFile {
            buf: Vec::with_capacity(OUT_BUFFER),
            target: Some(Target::File { sink, tmp, path: path.to_owned() }),
            bytes: 0,
        })
    }

    pub(crate) fn stdout() -> Self {
        OutputFile {
            buf: Vec::with_capacity(OUT_BUFFER),
            target: Some(Target::Stdout(std::io::stdout())),
            bytes: 0,
        }
    }

    fn drain(&mut self) -> std::io::Result<()> {
        match self.target.as_mut() {
            Some(Target::File { sink, .. }) => sink.write_all(&self.buf).map_err(std::io::Error::other)?,
            Some(Target::Stdout(out)) => out.lock().write_all(&self.buf)?,
            None => {}
        }
        self.buf.clear();
        Ok(())
    }

    /// Flushes, `fsync`s and renames into place. Returns bytes written.
    pub(crate) fn commit(mut self) -> Result<u64> {
        self.drain().map_err(|e| Error::io("write", self.describe(), e))?;
        match self.target.take() {
            Some(Target::File { sink, tmp, path }) => {
                sink.finish(true)?;
                std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
                sync_parent(&path);
            }
            Some(Target::Stdout(out)) => {
                out.lock().flush().map_err(|e| Error::io("write", "standard output", e))?
            }
            None => {}
        }
        Ok(self.bytes)
    }

    pub(crate) fn describe(&self) -> PathBuf {
        match &self.target {
            Some(Target::File { path, .. }) => path.clone(),
            _ => PathBuf::from("standard output"),
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes += data.len() as u64;
        if self.buf.len() + data.len() > OUT_BUFFER {
            self.drain()?;
        }
        if data.len() > OUT_BUFFER {
            let saved = std::mem::replace(&mut self.buf, data.to_vec());
            self.drain()?;
            self.buf = saved;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(Target::File { tmp, .. }) = self.target.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Makes a rename durable: `fsync` the directory that holds `path` (best effort).
pub(crate) fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

/// Writes `_SUCCESS` into `dir` atomically.
pub(crate) fn write_success(dir: &Path, json: &[u8]) -> Result<()> {
    let path = dir.join("_SUCCESS");
    let tmp = temp_name(&path);
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all(json).and_then(|()| file.sync_all()).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_parent(&path);
    Ok(())
}
