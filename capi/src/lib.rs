//! Spillway's C ABI: MapReduce jobs whose map, combine and reduce are C functions.
//!
//! The header `include/spillway.h` is generated from this crate by cbindgen and checked in
//! (`tests/header.rs` fails when it is out of date; `SPILLWAY_BLESS=1 cargo test -p
//! spillway-capi --test header` rewrites it). The library builds as `libspillway_capi.so`
//! and `libspillway_capi.a`.
//!
//! - [`spillway_config_new`] and its setters hold the engine's settings (threads, partitions,
//!   memory budget, open-run bound, spill directory, attempts, resume).
//! - [`spillway_job_new`] makes a job from a map, an optional combine and a reduce callback
//!   and a `void *user` pointer; values are opaque byte strings.
//! - [`spillway_run`] runs a job over input paths into a directory of part files or one
//!   file, and can return the job's metrics as JSON.
//!
//! Every function returns a [`SpillwayStatus`]; on failure [`spillway_last_error`] gives the
//! message (per thread). No Rust panic crosses the boundary: each entry point catches them,
//! and a callback that fails (returns non-zero) or a panic under it fails the job with its
//! message, after the engine's retries.
//!
//! It uses only the engine's public API.
//!
//! # Example (from Rust, as C would call it)
//!
//! ```
//! use std::ffi::{CString, c_char, c_int, c_void};
//! use spillway_capi::*;
//!
//! unsafe extern "C" fn map(_: *mut c_void, data: *const u8, len: usize, e: *mut SpillwayEmitter) -> c_int {
//!     // SAFETY: the engine passes `len` readable bytes at `data` and a live emitter.
//!     let text = unsafe { std::slice::from_raw_parts(data, len) };
//!     for word in text.split(|b| !b.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
//!         // SAFETY: `e` is the emitter of this call; the slices are valid.
//!         unsafe { spillway_emit(e, word.as_ptr(), word.len(), [1u8].as_ptr(), 1) };
//!     }
//!     0
//! }
//! unsafe extern "C" fn reduce(_: *mut c_void, key: *const u8, key_len: usize, values: *mut SpillwayValues, out: *mut SpillwayWriter) -> c_int {
//!     let (mut n, mut v, mut l) = (0u64, std::ptr::null(), 0usize);
//!     // SAFETY: `values` and `out` are this call's; the out-pointers are valid.
//!     unsafe {
//!         while spillway_values_next(values, &mut v, &mut l) == SpillwayStatus::Ok { n += 1 }
//!         spillway_write(out, key, key_len);
//!         let line = format!("\t{n}\n");
//!         spillway_write(out, line.as_ptr(), line.len());
//!     }
//!     0
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("in.txt"), "b a b\n")?;
//! let input = CString::new(dir.path().join("in.txt").to_str().unwrap())?;
//! let output = CString::new(dir.path().join("out.tsv").to_str().unwrap())?;
//! let (mut config, mut job) = (std::ptr::null_mut(), std::ptr::null_mut());
//! // SAFETY: every pointer passed is valid for the call; the handles are freed once.
//! unsafe {
//!     assert_eq!(spillway_config_new(&mut config), SpillwayStatus::Ok);
//!     assert_eq!(spillway_config_set_threads(config, 2), SpillwayStatus::Ok);
//!     assert_eq!(spillway_job_new(Some(map), None, Some(reduce), std::ptr::null_mut(), &mut job), SpillwayStatus::Ok);
//!     let inputs = [input.as_ptr()];
//!     let status = spillway_run(config, job, inputs.as_ptr(), 1, SpillwayOutput::File, output.as_ptr(), std::ptr::null_mut());
//!     assert_eq!(status, SpillwayStatus::Ok);
//!     spillway_job_free(job);
//!     spillway_config_free(config);
//! }
//! assert_eq!(std::fs::read_to_string(dir.path().join("out.tsv"))?, "a\t1\nb\t2\n");
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use spillway_engine::shuffle::rkyv::vec::ArchivedVec;
use spillway_engine::{
    Emitter, Engine, EngineBuilder, Error, Inputs, Job, JobError, OutputSpec, Split, SplitMode, Values,
    panic_message,
};

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

/// Where `spillway_run` writes its output.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillwayOutput {
    /// A directory of `part-NNNNN` files, one per partition, each sorted by key, and `_SUCCESS`
    /// (committed atomically). The directory may exist but must not hold a job's output.
    Dir = 0,
    /// One file holding every key in byte order (replaced atomically if it exists).
    File = 1,
}

/// How inputs are cut into the splits that `map` receives.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillwaySplit {
    /// At line ends (the default): a split is whole lines.
    Lines = 0,
    /// Fixed-size records of `record_size` bytes; a split is whole records.
    Records = 1,
    /// Each input file is one split.
    WholeFile = 2,
}

/// The engine's settings: an opaque handle from `spillway_config_new`, freed with
/// `spillway_config_free`.
#[derive(Debug, Default)]
pub struct SpillwayConfig {
    builder: EngineBuilder,
}

/// A job: an opaque handle from `spillway_job_new`, freed with `spillway_job_free`.
#[derive(Debug)]
pub struct SpillwayJob {
    map: MapFn,
    combine: SpillwayCombineFn,
    reduce: ReduceFn,
    user: UserPtr,
    split: SplitMode,
}

/// What `map` emits into: valid only during the `map` call it is passed to.
pub struct SpillwayEmitter<'e, 'b> {
    inner: &'e mut Emitter<'b, Vec<u8>>,
    /// The input file's index and the split's byte offset in it.
    input: (u32, u64),
}

impl std::fmt::Debug for SpillwayEmitter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillwayEmitter").finish_non_exhaustive()
    }
}

/// The values of one key in `reduce`: valid only during that call, as is every value it gives.
pub struct SpillwayValues<'i, 'a> {
    inner: Values<'i, 'a, Vec<u8>>,
}

impl std::fmt::Debug for SpillwayValues<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillwayValues").finish_non_exhaustive()
    }
}

/// Where `reduce` writes its output bytes and `combine` its combined value: valid only during
/// that call.
pub struct SpillwayWriter<'w> {
    out: &'w mut dyn Write,
    /// The first write error: the job fails with it even if the callback returns 0.
    error: Option<std::io::Error>,
}

impl std::fmt::Debug for SpillwayWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillwayWriter").field("error", &self.error).finish_non_exhaustive()
    }
}

/// `map(user, split, split_len, emitter)`: emits pairs of the split's bytes with
/// `spillway_emit`. Returns 0, or non-zero to fail the split (message: `spillway_fail`).
/// Runs concurrently on the worker threads.
pub type SpillwayMapFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        split: *const u8,
        split_len: usize,
        emitter: *mut SpillwayEmitter,
    ) -> c_int,
>;

/// `combine(user, acc, acc_len, value, value_len, out)`: writes the combination of two values
/// of one key into `out` with `spillway_write` (it starts empty). Must be associative and
/// commutative. Returns 0, or non-zero to fail. Runs concurrently on the worker threads.
pub type SpillwayCombineFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        acc: *const u8,
        acc_len: usize,
        value: *const u8,
        value_len: usize,
        out: *mut SpillwayWriter,
    ) -> c_int,
>;

/// `reduce(user, key, key_len, values, out)`: reads the key's values with
/// `spillway_values_next` and writes output bytes with `spillway_write`. Keys arrive in byte
/// order within a partition. Returns 0, or non-zero to fail the partition. Runs concurrently
/// on the worker threads (one partition per thread at a time).
pub type SpillwayReduceFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        key: *const u8,
        key_len: usize,
        values: *mut SpillwayValues,
        out: *mut SpillwayWriter,
    ) -> c_int,
>;

/// A map callback that is there.
type MapFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut SpillwayEmitter) -> c_int;
/// A reduce callback that is there.
type ReduceFn =
    unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut SpillwayValues, *mut SpillwayWriter) -> c_int;

/// The caller's `user` pointer, handed to every callback on any worker thread.
#[derive(Debug, Clone, Copy)]
struct UserPtr(*mut c_void);

// SAFETY: the header's contract: callbacks run concurrently on worker threads with this
// pointer, and the caller makes what it points to safe to use so (read-only, or synchronized).
#[allow(unsafe_code)]
unsafe impl Send for UserPtr {}
// SAFETY: as for `Send` above.
#[allow(unsafe_code)]
unsafe impl Sync for UserPtr {}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The message a callback set with `spillway_fail` before returning non-zero.
    static CALLBACK_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A panic caught inside `spillway_emit`, raised again once the map callback returns.
    static PENDING_PANIC: RefCell<Option<Box<dyn Any + Send>>> = const { RefCell::new(None) };
}

/// A failed call: its status and message.
struct Failure {
    status: SpillwayStatus,
    message: String,
}

impl Failure {
    fn new(status: SpillwayStatus, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }

    fn null(what: &str) -> Self {
        Failure::new(SpillwayStatus::NullArgument, format!("{what} is NULL"))
    }
}

fn set_last_error(message: &str) {
    let message = CString::new(message.replace('\0', "\\0")).expect("no NUL left");
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(message));
}

/// Runs an entry point's body: catches a panic, records a failure's message.
fn entry(f: impl FnOnce() -> Result<(), Failure>) -> SpillwayStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SpillwayStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(panic) => {
            set_last_error(&format!("spillway: {}", panic_message(&*panic)));
            SpillwayStatus::Panic
        }
    }
}

/// The status for an engine error.
fn status_of(err: &Error) -> SpillwayStatus {
    match err {
        Error::Input { .. } | Error::InputChanged { .. } => SpillwayStatus::Input,
        Error::Output { .. } | Error::OutputExists(_) => SpillwayStatus::Output,
        Error::Job { .. } => SpillwayStatus::Job,
        Error::Config(_) | Error::Resume { .. } => SpillwayStatus::Config,
        Error::Shuffle(_) => SpillwayStatus::Io,
        _ => SpillwayStatus::Other,
    }
}

/// `len` bytes at `ptr` (NULL is fine when `len` is 0).
///
/// # Safety
///
/// Unless `len` is 0, `ptr` points to `len` readable bytes that outlive `'a`.
#[allow(unsafe_code)]
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::new(SpillwayStatus::NullArgument, format!("a NULL pointer with length {len}")));
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
unsafe fn path(ptr: *const c_char, what: &str) -> Result<PathBuf, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: the caller's contract: a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
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

/// Boxes `value` into a new handle in `*out`.
///
/// # Safety
///
/// `out` is NULL or valid for a write.
#[allow(unsafe_code)]
unsafe fn new_handle<T>(out: *mut *mut T, value: T) -> Result<(), Failure> {
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
unsafe fn free_handle<T>(handle: *mut T) {
    if !handle.is_null() {
        // SAFETY: the caller's contract: a live handle from `Box::into_raw`, freed once.
        drop(unsafe { Box::from_raw(handle) });
    }
}

/// Makes a config with the engine's defaults (threads: the CPUs; 16 partitions; 1 GiB memory
/// budget; open-run bound from the open-file limit; spill directory `$TMPDIR`; 3 attempts; no
/// resume) into `*out`. Free it with `spillway_config_free`.
///
/// # Safety
///
/// `out` is NULL or valid for a write.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_new(out: *mut *mut SpillwayConfig) -> SpillwayStatus {
    entry(|| {
        // SAFETY: passed on from the caller.
        unsafe { new_handle(out, SpillwayConfig::default()) }
    })
}

/// Frees a config (NULL is ignored). Jobs already run are unaffected.
///
/// # Safety
///
/// `config` is NULL or from `spillway_config_new`, not yet freed, and not in use by another
/// thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_free(config: *mut SpillwayConfig) {
    // SAFETY: passed on from the caller.
    unsafe { free_handle(config) }
}

/// Applies `f` to the builder of `config`.
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
unsafe fn configure(
    config: *mut SpillwayConfig,
    f: impl FnOnce(EngineBuilder) -> Result<EngineBuilder, Failure>,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: NULL or a live config used by this thread only.
        let config = unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))?;
        config.builder = f(std::mem::take(&mut config.builder))?;
        Ok(())
    })
}

/// A setting that must be at least 1.
fn positive<T: PartialOrd + From<u8>>(n: T, what: &str) -> Result<T, Failure> {
    if n < T::from(1) {
        return Err(Failure::new(SpillwayStatus::InvalidArgument, format!("{what} must be at least 1")));
    }
    Ok(n)
}

/// Sets the number of worker threads (at least 1).
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_threads(
    config: *mut SpillwayConfig,
    threads: usize,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe { configure(config, |b| Ok(b.threads(positive(threads, "threads")?))) }
}

/// Sets the number of partitions R (at least 1): reduce parallelism and part files.
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_partitions(
    config: *mut SpillwayConfig,
    partitions: u32,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe { configure(config, |b| Ok(b.partitions(positive(partitions, "partitions")?))) }
}

/// Sets the memory budget of the map-side buffers in bytes, shared by the threads (at least
/// 64 KiB; checked when the job starts).
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_memory_budget(
    config: *mut SpillwayConfig,
    bytes: u64,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe { configure(config, |b| Ok(b.memory_budget(bytes))) }
}

/// Sets the open-run bound F: no merge reads more runs at once (checked when the job starts).
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_max_open_runs(
    config: *mut SpillwayConfig,
    runs: usize,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe { configure(config, |b| Ok(b.max_open_runs(runs))) }
}

/// Sets the parent directory of the job's spill directory (a NUL-terminated path; copied).
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread; `dir` is NULL or a
/// NUL-terminated string.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_spill_dir(
    config: *mut SpillwayConfig,
    dir: *const c_char,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe {
        configure(config, |b| {
            // SAFETY: the caller's contract: NULL or a NUL-terminated string.
            let dir = path(dir, "dir")?;
            Ok(b.spill_dir(dir))
        })
    }
}

/// Sets how often a failing split or partition is tried (at least 1; default 3).
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_max_attempts(
    config: *mut SpillwayConfig,
    attempts: u32,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe { configure(config, |b| Ok(b.max_attempts(positive(attempts, "max attempts")?))) }
}

/// Turns resume on (non-zero) or off: runs and a journal are kept beside the output so that a
/// job run again after a crash maps only what it had not.
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_resume(
    config: *mut SpillwayConfig,
    on: c_int,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    unsafe { configure(config, |b| Ok(b.resume(on != 0))) }
}

/// Makes a job from callbacks into `*out`: `map` and `reduce` are required, `combine` may be
/// NULL. `user` is passed to every callback, on any worker thread and concurrently: what it
/// points to must stay valid while the job runs and be safe to use from several threads.
/// Free the job with `spillway_job_free`.
///
/// # Safety
///
/// `out` is NULL or valid for a write; the callbacks keep the contracts of their types.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_job_new(
    map: SpillwayMapFn,
    combine: SpillwayCombineFn,
    reduce: SpillwayReduceFn,
    user: *mut c_void,
    out: *mut *mut SpillwayJob,
) -> SpillwayStatus {
    entry(|| {
        let map = map.ok_or_else(|| Failure::null("map"))?;
        let reduce = reduce.ok_or_else(|| Failure::null("reduce"))?;
        let job = SpillwayJob { map, combine, reduce, user: UserPtr(user), split: SplitMode::Lines };
        // SAFETY: passed on from the caller.
        unsafe { new_handle(out, job) }
    })
}

/// Sets how inputs are cut into splits: lines (default), fixed-size records of `record_size`
/// bytes (at least 1; ignored otherwise), or whole files.
///
/// # Safety
///
/// `job` is NULL or a live job not in use by another thread.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_job_set_split(
    job: *mut SpillwayJob,
    split: SpillwaySplit,
    record_size: usize,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: NULL or a live job used by this thread only.
        let job = unsafe { job.as_mut() }.ok_or_else(|| Failure::null("job"))?;
        job.split = match split {
            SpillwaySplit::Lines => SplitMode::Lines,
            SpillwaySplit::Records => SplitMode::Records(positive(record_size, "record size")?),
            SpillwaySplit::WholeFile => SplitMode::WholeFile,
        };
        Ok(())
    })
}

/// Frees a job (NULL is ignored).
///
/// # Safety
///
/// `job` is NULL or from `spillway_job_new`, not yet freed, and not running.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_job_free(job: *mut SpillwayJob) {
    // SAFETY: passed on from the caller.
    unsafe { free_handle(job) }
}

/// Emits one `(key, value)` pair from `map`; both are copied.
///
/// # Safety
///
/// `emitter` is the one passed to the running `map` call (on this thread); `key` and `value`
/// point to `key_len` and `value_len` readable bytes (either may be NULL when its length is 0).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_emit(
    emitter: *mut SpillwayEmitter,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> SpillwayStatus {
    // A panic in the engine's buffer (a bug, or a spill that could not be written) is kept
    // and raised again when `map` returns, so that the engine reports it for the split.
    let mut panicked = None;
    let status = entry(|| {
        // SAFETY: the caller's contract: this call's live emitter.
        let emitter = unsafe { emitter.as_mut() }.ok_or_else(|| Failure::null("emitter"))?;
        // SAFETY: the caller's contract: readable bytes of these lengths.
        let (key, value) = unsafe { (bytes(key, key_len)?, bytes(value, value_len)?) };
        catch_unwind(AssertUnwindSafe(|| emitter.inner.emit(key, value.to_vec()))).map_err(|panic| {
            let message = panic_message(&*panic);
            panicked = Some(panic);
            Failure::new(SpillwayStatus::Panic, message)
        })
    });
    if let Some(panic) = panicked {
        PENDING_PANIC.with(|p| *p.borrow_mut() = Some(panic));
    }
    status
}

/// Tells `map` where its split comes from: the index of its input file in `*file_index` (the
/// position among the inputs given to `spillway_run`, 0-based, where the files found in a
/// given directory follow in byte order of their names) and the split's byte offset in that
/// file in `*offset`.
///
/// # Safety
///
/// `emitter` is the one passed to the running `map` call (on this thread); `file_index` and
/// `offset` are valid for writes.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_emitter_input(
    emitter: *const SpillwayEmitter,
    file_index: *mut u32,
    offset: *mut u64,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: this call's live emitter.
        let emitter = unsafe { emitter.as_ref() }.ok_or_else(|| Failure::null("emitter"))?;
        if file_index.is_null() || offset.is_null() {
            return Err(Failure::null("file_index or offset"));
        }
        // SAFETY: both are valid for writes (the caller's contract) and not NULL.
        unsafe {
            file_index.write(emitter.input.0);
            offset.write(emitter.input.1);
        }
        Ok(())
    })
}

/// Gives the next value of the key in `*value` and `*value_len` and returns `SPILLWAY_STATUS_OK`, or
/// returns `SPILLWAY_STATUS_END` when there are no more. A value's bytes belong to Spillway and stay
/// valid until `reduce` returns; they are not aligned.
///
/// # Safety
///
/// `values` is the one passed to the running `reduce` call (on this thread); `value` and
/// `value_len` are valid for writes.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_values_next(
    values: *mut SpillwayValues,
    value: *mut *const u8,
    value_len: *mut usize,
) -> SpillwayStatus {
    let mut end = false;
    let status = entry(|| {
        // SAFETY: the caller's contract: this call's live values.
        let values = unsafe { values.as_mut() }.ok_or_else(|| Failure::null("values"))?;
        if value.is_null() || value_len.is_null() {
            return Err(Failure::null("value or value_len"));
        }
        match values.inner.next() {
            Some(v) => {
                let v: &ArchivedVec<u8> = v;
                // SAFETY: both are valid for writes (the caller's contract) and not NULL.
                unsafe {
                    value.write(v.as_slice().as_ptr());
                    value_len.write(v.len());
                }
            }
            None => end = true,
        }
        Ok(())
    });
    if status == SpillwayStatus::Ok && end { SpillwayStatus::End } else { status }
}

/// Writes `len` bytes: output bytes from `reduce`, or the combined value from `combine`.
/// Returns `SPILLWAY_STATUS_IO` if the output cannot be written; the job then fails with that error
/// whatever the callback returns.
///
/// # Safety
///
/// `out` is the one passed to the running callback (on this thread); `data` points to `len`
/// readable bytes (or is NULL with `len` 0).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_write(
    out: *mut SpillwayWriter,
    data: *const u8,
    len: usize,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: this call's live writer.
        let out = unsafe { out.as_mut() }.ok_or_else(|| Failure::null("out"))?;
        // SAFETY: the caller's contract: `len` readable bytes.
        let data = unsafe { bytes(data, len)? };
        if let Some(e) = &out.error {
            return Err(Failure::new(SpillwayStatus::Io, format!("an earlier write failed: {e}")));
        }
        out.out.write_all(data).map_err(|e| {
            let failure = Failure::new(SpillwayStatus::Io, format!("writing output: {e}"));
            out.error = Some(e);
            failure
        })
    })
}

/// Runs `job` with the settings of `config` over the files and directories `inputs[0..n]`
/// (NUL-terminated paths), into `output` as `kind` says. The callbacks run on the engine's
/// worker threads; this call returns when the job is committed or failed. With
/// `metrics_json` not NULL, a successful run stores there the job's metrics as a JSON object,
/// to be freed with `spillway_string_free`.
///
/// # Safety
///
/// `config` and `job` are NULL or live handles; `inputs` points to `n` pointers, each NULL or
/// a NUL-terminated string; `output` is NULL or a NUL-terminated string; `metrics_json` is
/// NULL or valid for a write.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_run(
    config: *const SpillwayConfig,
    job: *const SpillwayJob,
    inputs: *const *const c_char,
    n: usize,
    kind: SpillwayOutput,
    output: *const c_char,
    metrics_json: *mut *mut c_char,
) -> SpillwayStatus {
    entry(|| {
        if inputs.is_null() && n > 0 {
            return Err(Failure::null("inputs"));
        }
        let mut paths = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: `inputs` points to `n` pointers (the caller's contract), each NULL or a
            // NUL-terminated string.
            paths.push(unsafe { path(*inputs.add(i), &format!("inputs[{i}]"))? });
        }
        // SAFETY: passed on from the caller.
        unsafe { run(config, job, || Inputs::new(&paths), kind, output, metrics_json) }
    })
}

/// As `spillway_run`, over byte buffers instead of files: buffer `i` is `lengths[i]` bytes at
/// `buffers[i]`, named `names[i]` (a NUL-terminated string that stands for its path in
/// messages; `names` may be NULL: then `buffer-<i>`). The buffers are copied before the job
/// starts; the caller keeps them.
///
/// # Safety
///
/// As `spillway_run`; `buffers` and `lengths` point to `n` entries each, buffer `i` holding
/// `lengths[i]` readable bytes (NULL when 0); `names` is NULL or points to `n` pointers, each
/// NULL or a NUL-terminated string.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_run_buffers(
    config: *const SpillwayConfig,
    job: *const SpillwayJob,
    buffers: *const *const u8,
    lengths: *const usize,
    names: *const *const c_char,
    n: usize,
    kind: SpillwayOutput,
    output: *const c_char,
    metrics_json: *mut *mut c_char,
) -> SpillwayStatus {
    entry(|| {
        if n > 0 && (buffers.is_null() || lengths.is_null()) {
            return Err(Failure::null("buffers or lengths"));
        }
        let mut inputs = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: `buffers`, `lengths` (and `names` unless NULL) hold `n` entries (the
            // caller's contract), each buffer `lengths[i]` readable bytes.
            let (data, name) = unsafe {
                let data = bytes(*buffers.add(i), *lengths.add(i))?;
                let name = match names.is_null() {
                    true => PathBuf::from(format!("buffer-{i}")),
                    false => path(*names.add(i), &format!("names[{i}]"))?,
                };
                (data, name)
            };
            inputs.push((name, data));
        }
        // SAFETY: passed on from the caller.
        unsafe { run(config, job, || Inputs::from_memory(inputs), kind, output, metrics_json) }
    })
}

/// The common part of `spillway_run` and `spillway_run_buffers`.
///
/// # Safety
///
/// As `spillway_run`.
#[allow(unsafe_code)]
unsafe fn run(
    config: *const SpillwayConfig,
    job: *const SpillwayJob,
    inputs: impl FnOnce() -> spillway_engine::Result<Inputs>,
    kind: SpillwayOutput,
    output: *const c_char,
    metrics_json: *mut *mut c_char,
) -> Result<(), Failure> {
    // SAFETY: the caller's contract: NULL or live handles.
    let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
    // SAFETY: as above.
    let job = unsafe { job.as_ref() }.ok_or_else(|| Failure::null("job"))?;
    // SAFETY: the caller's contract: NULL or a NUL-terminated string.
    let output = unsafe { path(output, "output")? };
    let output = match kind {
        SpillwayOutput::Dir => OutputSpec::Dir(output),
        SpillwayOutput::File => OutputSpec::File(output),
    };
    let engine: Engine =
        config.builder.clone().build().map_err(|e| Failure::new(SpillwayStatus::Config, e.to_string()))?;
    let inputs = inputs().map_err(|e| Failure::new(status_of(&e), e.to_string()))?;
    let result = match job.combine {
        Some(_) => engine.run(&CJob::<true>(job), &inputs, &output),
        None => engine.run(&CJob::<false>(job), &inputs, &output),
    };
    let metrics = result.map_err(|e| Failure::new(status_of(&e), e.to_string()))?;
    if !metrics_json.is_null() {
        let json = serde_json::to_string(&metrics)
            .map_err(|e| Failure::new(SpillwayStatus::Other, format!("metrics as JSON: {e}")))?;
        let json = CString::new(json).expect("JSON holds no NUL");
        // SAFETY: valid for a write (the caller's contract) and not NULL.
        unsafe { metrics_json.write(json.into_raw()) };
    }
    Ok(())
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

/// A C job as the engine's [`Job`], with or without its combiner.
struct CJob<'j, const COMBINE: bool>(&'j SpillwayJob);

impl<const COMBINE: bool> CJob<'_, COMBINE> {
    /// The outcome of a callback that returned `code`: its message (set with `spillway_fail`)
    /// on failure; a panic kept by `spillway_emit` is raised again.
    fn outcome(what: &str, code: c_int) -> Result<(), JobError> {
        if let Some(panic) = PENDING_PANIC.with(|p| p.borrow_mut().take()) {
            std::panic::resume_unwind(panic);
        }
        let message = CALLBACK_ERROR.with(|e| e.borrow_mut().take());
        if code == 0 {
            return Ok(());
        }
        Err(match message {
            Some(m) => format!("{what} callback failed: {m}").into(),
            None => format!("{what} callback returned {code}").into(),
        })
    }

    /// Calls the C combiner on `acc` and `value`.
    #[allow(unsafe_code)]
    fn call_combine(&self, acc: &mut Vec<u8>, value: &[u8]) {
        let combine = self.0.combine.expect("a combining job has a combiner");
        let mut combined = Vec::with_capacity(acc.len());
        let mut writer = SpillwayWriter { out: &mut combined, error: None };
        // SAFETY: the callback's contract (the header): it reads `acc_len` bytes at `acc` and
        // `value_len` at `value`, writes through `out` only during this call.
        let code = unsafe {
            combine(self.0.user.0, acc.as_ptr(), acc.len(), value.as_ptr(), value.len(), &mut writer)
        };
        // `Job::combine` has no error: a failure is a panic, which the engine catches for the
        // split, merge or partition, and reports with this message.
        if let Err(e) = Self::outcome("combine", code) {
            panic!("{e}");
        }
        *acc = combined;
    }
}

impl<const COMBINE: bool> Job for CJob<'_, COMBINE> {
    type Value = Vec<u8>;
    const COMBINER: bool = COMBINE;

    fn split_mode(&self) -> SplitMode {
        self.0.split
    }

    #[allow(unsafe_code)]
    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, Vec<u8>>) -> Result<(), JobError> {
        let mut emitter = SpillwayEmitter { inner: emit, input: (split.file.index, split.offset) };
        // SAFETY: the callback's contract (the header): it reads `split_len` bytes at `split`
        // and uses the emitter only during this call.
        let code =
            unsafe { (self.0.map)(self.0.user.0, split.data.as_ptr(), split.data.len(), &mut emitter) };
        Self::outcome("map", code)
    }

    fn combine(&self, acc: &mut Vec<u8>, value: Vec<u8>) {
        self.call_combine(acc, &value);
    }

    fn combine_archived(&self, acc: &mut Vec<u8>, value: &ArchivedVec<u8>) {
        self.call_combine(acc, value.as_slice());
    }

    #[allow(unsafe_code)]
    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, Vec<u8>>,
        out: &mut dyn Write,
    ) -> Result<(), JobError> {
        let mut values = SpillwayValues { inner: values };
        let mut writer = SpillwayWriter { out, error: None };
        // SAFETY: the callback's contract (the header): it reads `key_len` bytes at `key` and
        // uses `values` and `out` only during this call.
        let code =
            unsafe { (self.0.reduce)(self.0.user.0, key.as_ptr(), key.len(), &mut values, &mut writer) };
        if let Some(e) = writer.error {
            CALLBACK_ERROR.with(|m| m.borrow_mut().take());
            return Err(e.into());
        }
        Self::outcome("reduce", code)
    }
}
