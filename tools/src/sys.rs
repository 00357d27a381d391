//! The binary's only `unsafe` code: how the process ends when it runs out of memory, and the
//! file size signal.
//!
//! - [`ExitOnOom`], the global allocator: the system allocator, called through unchanged;
//!   when it returns null (out of memory or address space: `ulimit -v`, a cgroup limit), the
//!   process removes the job's spill directories and temporary outputs, prints one line
//!   (`spillway: error: out of memory: allocating N bytes failed ...`) and exits with status 1,
//!   instead of Rust's default (`memory allocation of N bytes failed`, SIGABRT, everything
//!   left behind). Stable Rust has no hook for allocation failures, hence the allocator.
//! - [`ignore_file_size_signal`]: SIGXFSZ ignored, so that a write past the file size limit
//!   (`ulimit -f`) fails with `EFBIG` (an error naming the file, exit status 1, temporary files
//!   removed) instead of killing the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The system allocator, ending the process cleanly when an allocation fails.
///
/// Every call goes straight to [`System`]; only a null result takes the (cold) exit path. So
/// fallible allocations (`Vec::try_reserve`) end the process too: nothing in spillway relies
/// on them.
#[derive(Debug)]
pub struct ExitOnOom;

#[global_allocator]
static ALLOCATOR: ExitOnOom = ExitOnOom;

// SAFETY: every method forwards its arguments unchanged to `System`, which implements the
// `GlobalAlloc` contract; the only addition is that a null result never returns (the process
// exits), which the contract allows.
unsafe impl GlobalAlloc for ExitOnOom {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract (a non-zero size), passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            out_of_memory(layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if ptr.is_null() {
            out_of_memory(layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller guarantees that `ptr` came from this allocator (that is, from
        // `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `realloc`'s contract (`ptr` from this allocator, that
        // is from `System`, with `layout`; a valid non-zero `new_size`), passed on as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            out_of_memory(new_size);
        }
        new
    }
}

/// The thread id (`gettid`) of the thread handling an allocation failure; 0 while none is.
static HANDLING: AtomicI32 = AtomicI32::new(0);

/// How long the cleanup waits for the cleanup registry's lock, which the failing thread may
/// hold itself (then the cleanup is skipped) or another thread for a moment.
const REGISTRY_PATIENCE: Duration = Duration::from_millis(100);

/// Ends the process after an allocation of `size` bytes failed: removes the registered
/// temporary paths, writes one line to standard error and exits with status 1.
///
/// Other threads keep running meanwhile. Exiting with `_exit` runs no destructors and flushes
/// no buffers (a partly written standard output is not completed as if the job had
/// succeeded; outputs under temporary names are removed by the cleanup). The first thread to
/// get here does the work; another thread whose allocation fails meanwhile waits for it to
/// exit the process; if the cleanup itself cannot allocate, the thread gets here again and
/// exits at once with a fixed message, allocating nothing.
#[cold]
#[inline(never)]
fn out_of_memory(size: usize) -> ! {
    // SAFETY: `gettid` has no preconditions.
    let me = unsafe { libc::gettid() };
    if let Err(handler) = HANDLING.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst) {
        if handler == me {
            write_stderr(
                b"spillway: error: out of memory (and again while removing temporary files; some may be left)\n",
            );
            // SAFETY: `_exit` ends the process at once; it has no preconditions.
            unsafe { libc::_exit(1) }
        }
        loop {
            // SAFETY: `pause` only waits for a signal; the handling thread exits the process.
            unsafe { libc::pause() };
        }
    }
    let _ = spillway_engine::cleanup::try_remove_all(REGISTRY_PATIENCE);
    let mut line = Line::default();
    line.push(b"spillway: error: out of memory: allocating ");
    line.push_number(size);
    line.push(
        b" bytes failed (hint: the memory or address-space limit is reached: \
          lower --memory or --threads, or raise the limit, e.g. ulimit -v)\n",
    );
    write_stderr(line.bytes());
    // SAFETY: as above.
    unsafe { libc::_exit(1) }
}

/// A line built on the stack (formatting with `format!` would allocate).
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line { buf: [0; 256], len: 0 }
    }
}

impl Line {
    /// Appends `bytes` (cut at the buffer's end, leaving room for the newline).
    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.buf[self.len - 1] = b'\n';
        }
    }

    /// Appends `n` in decimal.
    fn push_number(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Writes `bytes` to standard error with `write(2)`: no lock, no buffer, no allocation.
/// Failures are ignored (the exit status tells).
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid, initialized buffer of `bytes.len()` bytes for the
        // duration of the call.
        let written = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            _ if written < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            _ => return,
        }
    }
}

/// Ignores SIGXFSZ, whose default action kills the process (with a core dump) when a file
/// grows past the file size limit (`ulimit -f`): ignored, the write fails with `EFBIG`
/// instead, and the error names the file.
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code, so nothing
    // can run in signal context; `signal` has no other preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn lines_are_built_without_allocating_and_cut_to_fit() {
        let mut line = Line::default();
        line.push(b"allocating ");
        line.push_number(0);
        line.push(b" and ");
        line.push_number(usize::MAX);
        assert_eq!(line.bytes(), format!("allocating 0 and {}", usize::MAX).as_bytes());
        let mut long = Line::default();
        long.push(&[b'x'; 300]);
        assert_eq!(long.bytes().len(), 256);
        assert_eq!(long.bytes().last(), Some(&b'\n'));
    }
}
