//! [`TempFile`]: a file written under a temporary name and renamed into place.

use super::*;

/// A file being written under a temporary name next to its final name, with the
/// permissions of the file it replaces: renamed into place by [`TempFile::commit`], removed
/// if dropped first, and registered with [`crate::cleanup`] meanwhile (so that a signal
/// handler removes it too).
#[derive(Debug)]
pub struct TempFile {
    file: std::fs::File,
    temp: PathBuf,
    target: PathBuf,
    synced: bool,
    committed: bool,
    _cleanup: crate::cleanup::Registration,
}

impl TempFile {
    /// Creates `.NAME.spillway-tmp-PID` (with a `-N` suffix if that exists) in the directory
    /// of `target`.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the temporary file cannot be created.
    pub fn create(target: &Path) -> Result<Self> {
        let base = temp_name(target);
        let mut attempt = 0u32;
        let (file, temp, _cleanup) = loop {
            let mut temp = base.clone().into_os_string();
            if attempt > 0 {
                temp.push(format!("-{attempt}"));
            }
            let temp = PathBuf::from(temp);
            // Registered before it exists: a signal handler that removes everything and exits
            // never misses it (or, having closed the registry, keeps this thread from making it).
            let registration = crate::cleanup::register(&temp);
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => break (file, temp, registration),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    registration.disarm(); // another temporary file of this process
                    attempt += 1;
                }
                Err(e) => return Err(Error::io("create", &temp, e)),
            }
        };
        keep_permissions(&temp, target);
        Ok(TempFile { file, temp, target: target.to_owned(), synced: false, committed: false, _cleanup })
    }

    /// The open temporary file.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// The temporary name.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// `fsync`s the file, renames it over its final name and `fsync`s the directory.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): `fsync` or the rename failed (the temporary file is then removed).
    pub fn commit(mut self) -> Result<()> {
        self.sync()?;
        let target = self.rename()?;
        sync_parent(&target);
        Ok(())
    }

    /// Notes that the file's data was `fsync`ed through another handle (an I/O backend's
    /// sink), so that [`TempFile::commit`] does not sync it again.
    pub(crate) fn mark_synced(&mut self) {
        self.synced = true;
    }

    /// `fsync`s the file (once; [`TempFile::commit`] then skips it).
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the `fsync` failed.
    pub fn sync(&mut self) -> Result<()> {
        if !self.synced {
            self.file.sync_all().map_err(|e| Error::io("fsync", &self.temp, e))?;
            self.synced = true;
        }
        Ok(())
    }

    /// Renames the file over its final name as it is (after [`TempFile::sync`] for a durable
    /// commit; the caller `fsync`s the directory). Returns the final name.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the rename failed (the temporary file is then removed).
    pub fn rename(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.temp, &self.target).map_err(|e| Error::io("rename", &self.temp, e))?;
        self.committed = true;
        Ok(std::mem::take(&mut self.target))
    }

    /// Puts the file in place without flushing anything: an existing file at the final name
    /// is swapped out and removed rather than renamed over
    /// ([`replace_without_flush`](spillway_shuffle::io::replace_without_flush)), since ext4
    /// writes the new file's data to disk inside a rename over an existing file.
    ///
    /// # Errors
    ///
    /// an I/O error ([`Error::io`]): the rename failed (the temporary file is then removed).
    pub fn replace_unsynced(mut self) -> Result<()> {
        spillway_shuffle::io::replace_without_flush(&self.temp, &self.target)
            .map_err(|e| Error::io("rename", &self.temp, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
