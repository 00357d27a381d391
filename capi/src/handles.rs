//! Boxed handles and the checked reading of C pointers (byte buffers, paths).

use super::*;

/// `len` bytes at `ptr` (NULL is fine when `len` is 0).
///
/// # Safety
///
/// Unless `len` is 0, `ptr` points to `len` readable bytes that outlive `'a`.
#[allow(unsafe_code)]
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::new(SpillwayStatus::NullArgument, format!("a NULL pointer with length {len}")));
    }
    // No buffer is larger (a negative length cast to `size_t`, say): making a slice of it
    // would abort the process.
    if len > isize::MAX as usize {
        return Err(Failure::new(
            SpillwayStatus::InvalidArgument,
            format!("a length of {len} bytes is larger than any buffer"),
        ));
    }
    // SAFETY: the caller's contract: `ptr` points to `len` readable bytes living for `'a`.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A path from a NUL-terminated C string (any bytes but NUL, as Unix paths are).
///
/// # Safety
///
/// `ptr` is NULL or a NUL-terminated string.
#[allow(unsafe_code)]
pub(crate) unsafe fn path(ptr: *const c_char, what: &str) -> Result<PathBuf, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: the caller's contract: a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// Boxes `value` into a new handle in `*out`.
///
/// # Safety
///
/// `out` is NULL or valid for a write.
#[allow(unsafe_code)]
pub(crate) unsafe fn new_handle<T>(out: *mut *mut T, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null("out"));
    }
    // SAFETY: `out` is valid for a write (the caller's contract) and not NULL.
    unsafe { out.write(Box::into_raw(Box::new(value))) };
    Ok(())
}

/// Frees a handle from [`new_handle`] (NULL is ignored).
///
/// # Safety
///
/// `handle` is NULL or a live handle from `new_handle`, freed once, used by no other thread.
#[allow(unsafe_code)]
pub(crate) unsafe fn free_handle<T>(handle: *mut T) {
    if !handle.is_null() {
        // SAFETY: the caller's contract: a live handle from `Box::into_raw`, freed once.
        drop(unsafe { Box::from_raw(handle) });
    }
}
