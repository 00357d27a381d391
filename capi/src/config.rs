//! The engine's settings: the config handle and its setters.

use super::*;

/// The engine's settings: an opaque handle from `spillway_config_new`, freed with
/// `spillway_config_free`.
#[derive(Debug, Default)]
pub struct SpillwayConfig {
    pub(crate) builder: EngineBuilder,
    /// The output callback and its `user` pointer.
    pub(crate) output: Option<(OutputFn, UserPtr)>,
}

/// `output(user, key, key_len, data, data_len)`: receives the output bytes `reduce` wrote for
/// one key (possibly none) when `spillway_run` is given `SPILLWAY_OUTPUT_CALLBACK`. Called once
/// per key, in byte order of the keys, from one thread, never concurrently (nor at the same
/// time as another callback of the job); under MPI on rank 0 only. The bytes belong to
/// Spillway and are valid only during the call. Returns 0, or non-zero to fail the job with
/// `SPILLWAY_STATUS_OUTPUT` (message: `spillway_fail`).
pub type SpillwayOutputFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        key: *const u8,
        key_len: usize,
        data: *const u8,
        data_len: usize,
    ) -> c_int,
>;

/// An output callback that is there.
pub(crate) type OutputFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> c_int;

impl SpillwayConfig {
    /// The engine's sink calling the output callback.
    pub(crate) fn output_sink(&self) -> Result<Sink, Failure> {
        let (callback, user) = self.output.ok_or_else(|| {
            Failure::new(
                SpillwayStatus::InvalidArgument,
                "SPILLWAY_OUTPUT_CALLBACK needs spillway_config_set_output_callback first",
            )
        })?;
        Ok(Sink::new(move |key: &[u8], data: &[u8]| {
            let user = user;
            // SAFETY: the callback's contract (the header): it reads `key_len` bytes at `key`
            // and `data_len` at `data` during this call only.
            #[allow(unsafe_code)]
            let code = unsafe { callback(user.0, key.as_ptr(), key.len(), data.as_ptr(), data.len()) };
            let message = CALLBACK_ERROR.with(|e| e.borrow_mut().take());
            match (code, message) {
                (0, _) => Ok(()),
                (_, Some(m)) => Err(std::io::Error::other(format!("output callback failed: {m}"))),
                (code, None) => Err(std::io::Error::other(format!("output callback returned {code}"))),
            }
        }))
    }
}

/// Makes a config with the engine's defaults (threads: the CPUs; 16 partitions; a memory
/// budget from the machine: half of the tightest of available memory, the cgroup limit and
/// SLURM's allocation, shared by the ranks on the node; open-run bound from the open-file
/// limit; spill directory `$TMPDIR`; 3 attempts; no resume) into `*out`. Free it with
/// `spillway_config_free`.
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
pub(crate) unsafe fn configure(
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
pub(crate) fn positive<T: PartialOrd + From<u8>>(n: T, what: &str) -> Result<T, Failure> {
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

/// Sets the output callback that `spillway_run` and `spillway_run_buffers` use with
/// `SPILLWAY_OUTPUT_CALLBACK`, and the `user` pointer passed to it (NULL `output` removes it).
/// What `user` points to must stay valid while a job runs.
///
/// # Safety
///
/// `config` is NULL or a live config not in use by another thread; `output` keeps the
/// contract of its type.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_config_set_output_callback(
    config: *mut SpillwayConfig,
    output: SpillwayOutputFn,
    user: *mut c_void,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: NULL or a live config used by this thread only.
        let config = unsafe { config.as_mut() }.ok_or_else(|| Failure::null("config"))?;
        config.output = output.map(|f| (f, UserPtr(user)));
        Ok(())
    })
}
