//! [`Destination`]: an opened output file, replaced, written in place, or standard output.

use super::*;

/// An opened output destination: where the bytes of one output file go, and how it is put in
/// place ([`Destination::create`] decides with [`file_destination`]). The one type behind the
/// engine's `OutputFile`, the sort's output, [`write_whole`], the metrics file and the
/// `spillway gen records` tool.
///
/// - [`Destination::Replace`]: a regular file, written under a temporary name beside its
///   target ([`TempFile`]: the permissions of the file it replaces, registered with
///   [`crate::cleanup`], removed unless committed); at positions from several threads
///   ([`Destination::positioned`]) or in order. [`Destination::commit`] puts it in place.
/// - [`Destination::InPlace`]: a device, FIFO or one of the process's descriptors
///   ([`open_in_place`]: descriptors appending), written in order, never renamed.
/// - [`Destination::Stdout`]: standard output, in order.
#[derive(Debug)]
pub enum Destination {
    /// A file that replaces its target when committed.
    Replace(TempFile),
    /// A device, FIFO or descriptor, written in place.
    InPlace {
        /// The open file.
        file: std::fs::File,
        /// Its name, for errors.
        path: PathBuf,
    },
    /// Standard output.
    Stdout,
}

impl Destination {
    /// Opens the file `path` names as an output (see [`file_destination`]): a temporary file
    /// beside a regular file's target, or a device, FIFO or descriptor in place.
    ///
    /// # Errors
    ///
    /// As [`file_destination`], [`TempFile::create`] and [`open_in_place`].
    pub fn create(path: &Path) -> Result<Self> {
        Ok(match file_destination(path)? {
            FileDestination::Replace(target) => Destination::Replace(TempFile::create(&target)?),
            FileDestination::InPlace(path) => Destination::InPlace { file: open_in_place(&path)?, path },
        })
    }

    /// The open file: a replacing file's temporary file, or the device, FIFO or descriptor
    /// written in place (`None` for standard output).
    pub fn file(&self) -> Option<&std::fs::File> {
        match self {
            Destination::Replace(temp) => Some(temp.file()),
            Destination::InPlace { file, .. } => Some(file),
            Destination::Stdout => None,
        }
    }

    /// The file and the name its errors give, for positioned writes: a replacing file only
    /// (a device, FIFO or standard output is written in order).
    pub fn positioned(&self) -> Option<(&std::fs::File, &Path)> {
        match self {
            Destination::Replace(temp) => Some((temp.file(), temp.path())),
            _ => None,
        }
    }

    /// Appends `data`, in order.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]) naming the file (or standard output).
    pub fn write_in_order(&self, data: &[u8]) -> Result<()> {
        match self {
            Destination::Replace(temp) => {
                let mut file = temp.file();
                file.write_all(data).map_err(|e| Error::io("write", temp.path(), e))
            }
            Destination::InPlace { file, path } => {
                let mut file = file;
                file.write_all(data).map_err(|e| Error::io("write", path.as_path(), e))
            }
            Destination::Stdout => {
                std::io::stdout().lock().write_all(data).map_err(|e| Error::io("write", "standard output", e))
            }
        }
    }

    /// `fsync`s a replacing file (once: [`Destination::commit`] then skips it); nothing for
    /// the others.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the `fsync` failed.
    pub fn sync(&mut self) -> Result<()> {
        match self {
            Destination::Replace(temp) => temp.sync(),
            _ => Ok(()),
        }
    }

    /// Puts the output in place. A replacing file: with `sync`, `fsync`ed (unless it was),
    /// renamed over its target and the directory `fsync`ed ([`TempFile::commit`]); without,
    /// swapped in with nothing flushed ([`TempFile::replace_unsynced`]). Standard output is
    /// flushed; a file written in place needs nothing.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the `fsync`, the rename or the flush failed (a temporary file is then
    /// removed).
    pub fn commit(self, sync: bool) -> Result<()> {
        match self {
            Destination::Replace(temp) if sync => temp.commit(),
            Destination::Replace(temp) => temp.replace_unsynced(),
            Destination::InPlace { .. } => Ok(()),
            Destination::Stdout => {
                std::io::stdout().lock().flush().map_err(|e| Error::io("write", "standard output", e))
            }
        }
    }
}
