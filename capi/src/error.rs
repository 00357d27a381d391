//! Status codes, the thread-local error message, and the guard every entry point runs under
//! (no panic crosses the boundary).

use super::*;

/// The result of every call. `SPILLWAY_STATUS_OK` is 0; every failure is at least 2, with its message
/// from `spillway_last_error()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillwayStatus {
    /// Success.
    Ok = 0,
    /// Not a failure: `spillway_values_next` has no more values.
    End = 1,
    /// A required pointer argument was NULL.
    NullArgument = 2,
    /// An argument is out of range or not valid (a setting, a split size, an output kind).
    InvalidArgument = 3,
    /// The engine's settings were refused when the job started (e.g. a memory budget above
    /// the machine's memory).
    Config = 4,
    /// An input path is missing, unreadable, or changed while the job ran.
    Input = 5,
    /// The output cannot be written where it names, or already holds a job's output.
    Output = 6,
    /// A callback failed (returned non-zero or panicked) as often as it was tried.
    Job = 7,
    /// An I/O error: a spill, an output or a run could not be written or read.
    Io = 8,
    /// A panic inside Spillway itself (a bug); the message says where.
    Panic = 9,
    /// Any other failure.
    Other = 10,
}

thread_local! {
    /// The message of the last failed call on this thread.
    pub(crate) static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The message a callback set with `spillway_fail` before returning non-zero.
    pub(crate) static CALLBACK_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A panic caught inside `spillway_emit`, raised again once the map callback returns.
    pub(crate) static PENDING_PANIC: RefCell<Option<Box<dyn Any + Send>>> = const { RefCell::new(None) };
}

/// A failed call: its status and message.
pub(crate) struct Failure {
    status: SpillwayStatus,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: SpillwayStatus, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    pub(crate) fn null(what: &str) -> Self {
        Failure::new(SpillwayStatus::NullArgument, format!("{what} is NULL"))
    }

    /// Records the message as this thread's last error; returns the status.
    pub(crate) fn report(self) -> SpillwayStatus {
        set_last_error(&self.message);
        self.status
    }
}

pub(crate) fn set_last_error(message: &str) {
    let message = CString::new(message.replace('\0', "\\0")).expect("no NUL left");
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(message));
}

/// Runs an entry point's body: catches a panic, records a failure's message.
pub(crate) fn entry(f: impl FnOnce() -> Result<(), Failure>) -> SpillwayStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SpillwayStatus::Ok,
        Ok(Err(failure)) => failure.report(),
        Err(panic) => {
            set_last_error(&format!("spillway: {}", panic_message(&*panic)));
            SpillwayStatus::Panic
        }
    }
}

/// The status for an engine error.
pub(crate) fn status_of(err: &Error) -> SpillwayStatus {
    match err {
        Error::Input { .. } | Error::InputChanged { .. } => SpillwayStatus::Input,
        Error::Output { .. } | Error::OutputExists(_) => SpillwayStatus::Output,
        Error::Job { .. } => SpillwayStatus::Job,
        Error::Config(_) | Error::Resume { .. } => SpillwayStatus::Config,
        Error::Shuffle(_) => SpillwayStatus::Io,
        _ => SpillwayStatus::Other,
    }
}

/// The message of the last failed call on this thread, or NULL if none failed yet. The
/// string is owned by Spillway and valid until the next failing call on this thread. A
/// successful call leaves it as it was (as `errno`).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn spillway_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
}

/// Sets the message of the callback failure about to be returned: call it from a callback,
/// on the thread the callback runs on, just before returning non-zero. The message is copied.
///
/// # Safety
///
/// `message` is NULL (no message) or a NUL-terminated string.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_fail(message: *const c_char) -> SpillwayStatus {
    entry(|| {
        let text = if message.is_null() {
            None
        } else {
            // SAFETY: the caller's contract: a NUL-terminated string.
            Some(unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned())
        };
        CALLBACK_ERROR.with(|e| *e.borrow_mut() = text);
        Ok(())
    })
}

/// Frees a string Spillway returned (NULL is ignored).
///
/// # Safety
///
/// `s` is NULL or a string from Spillway (`metrics_json`), not yet freed.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: the caller's contract: a string from `CString::into_raw`, freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}
