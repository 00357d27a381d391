//! Putting a finished file in place of an existing one without the filesystem's implicit
//! flush.
//!
//! ext4 (and XFS) treat `rename(tmp, path)` over an existing `path` as the write-then-rename
//! idiom of a program that forgot to `fsync`, and start writeback of all of `tmp`'s data
//! inside the `rename` (ext4's `auto_da_alloc`). For an output written without `fsync` on
//! purpose, that costs as much as the write itself (figures in `bench/README.md`), where a
//! rename to a free name costs next to nothing. Swapping the
//! two names with `renameat2(RENAME_EXCHANGE)` is just as atomic for readers of `path`, and
//! starts no writeback; the old file, now under the temporary name, is then removed.

use std::io;
use std::path::Path;

/// Renames `from` to `to`, replacing a regular file at `to`, without making the filesystem
/// write `from`'s data out first. Readers of `to` see the old file or the new one, never
/// neither.
///
/// On Linux, an existing regular file at `to` is swapped with `from` (`renameat2` with
/// `RENAME_EXCHANGE`) and then removed from `from`; anything else (no file at `to`, a
/// filesystem or kernel without the flag, other systems) is a plain [`std::fs::rename`]. A
/// crash between the swap and the removal leaves the old file under `from`. Use it for
/// outputs that are deliberately not synced; a synced output has nothing left to flush.
///
/// # Errors
///
/// The rename fails (as [`std::fs::rename`] would), or the old file cannot be removed after
/// the swap (the new file is in place then).
pub fn replace_without_flush(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let existing_file = std::fs::symlink_metadata(to).is_ok_and(|m| m.file_type().is_file());
        if existing_file {
            match exchange(from, to) {
                Ok(()) => return std::fs::remove_file(from),
                // Not supported here, or `to` went away meanwhile: rename as usual.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOENT)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    std::fs::rename(from, to)
}

/// Atomically swaps the names `a` and `b` (both must exist).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call, and
    // `renameat2` only reads them; `AT_FDCWD` makes relative paths relative to the current
    // directory, as `std::fs::rename` does.
    let r = unsafe {
        libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_an_existing_file_and_renames_onto_a_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, out) = (dir.path().join(".tmp"), dir.path().join("out"));
        std::fs::write(&tmp, b"first").unwrap();
        replace_without_flush(&tmp, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"first");
        assert!(!tmp.exists());
        std::fs::write(&tmp, b"second").unwrap();
        replace_without_flush(&tmp, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"second");
        assert!(!tmp.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A missing source is an error, and the target is untouched.
        assert!(replace_without_flush(&tmp, &out).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"second");
    }

    #[test]
    fn does_not_swap_a_directory_away() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, sub) = (dir.path().join(".tmp"), dir.path().join("sub"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("keep"), b"x").unwrap();
        std::fs::write(&tmp, b"data").unwrap();
        assert!(replace_without_flush(&tmp, &sub).is_err());
        assert!(sub.join("keep").exists() && tmp.exists());
    }
}
