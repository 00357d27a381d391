//! What the callbacks are handed: the emitter (`map`), the values of a key (`reduce`) and the
//! writer (`reduce`, `combine`), with the calls that use them.

use super::*;

/// The engine's emitter of a job's value kind.
pub(crate) enum Emits<'e, 'b> {
    /// Byte-string values (`spillway_job_new`): `spillway_emit`.
    Bytes(&'e mut Emitter<'b, Vec<u8>>),
    /// 64-bit values (`spillway_job_new_u64`): `spillway_emit_u64`.
    U64(&'e mut Emitter<'b, u64>),
}

/// The values of one key, of a job's value kind.
pub(crate) enum ValuesOf<'i, 'a> {
    /// Byte strings: `spillway_values_next`.
    Bytes(Values<'i, 'a, Vec<u8>>),
    /// 64-bit values: `spillway_values_next_u64`.
    U64(Values<'i, 'a, u64>),
}

/// What `map` emits into: valid only during the `map` call it is passed to.
pub struct SpillwayEmitter<'e, 'b> {
    pub(crate) inner: Emits<'e, 'b>,
    /// The input file's index and the split's byte offset in it.
    pub(crate) input: (u32, u64),
}

impl std::fmt::Debug for SpillwayEmitter<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillwayEmitter").finish_non_exhaustive()
    }
}

/// The values of one key in `reduce`: valid only during that call, as is every value it gives.
pub struct SpillwayValues<'i, 'a> {
    pub(crate) inner: ValuesOf<'i, 'a>,
}

impl std::fmt::Debug for SpillwayValues<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillwayValues").finish_non_exhaustive()
    }
}

/// Where `reduce` writes its output bytes and `combine` its combined value: valid only during
/// that call.
pub struct SpillwayWriter<'w> {
    pub(crate) out: &'w mut dyn Write,
    /// The first write error: the job fails with it even if the callback returns 0.
    pub(crate) error: Option<std::io::Error>,
}

impl std::fmt::Debug for SpillwayWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillwayWriter").field("error", &self.error).finish_non_exhaustive()
    }
}

/// The failure of a call that does not fit the job's value kind.
fn wrong_kind(call: &str, job: &str) -> Failure {
    Failure::new(SpillwayStatus::InvalidArgument, format!("{call} does not fit a job made by {job}"))
}

/// Emits one `(key, value)` pair from `map` of a job with byte-string values
/// (`spillway_job_new`); both are copied.
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
        let Emits::Bytes(inner) = &mut emitter.inner else {
            return Err(wrong_kind("spillway_emit", "spillway_job_new_u64: use spillway_emit_u64"));
        };
        catch_unwind(AssertUnwindSafe(|| inner.emit(key, value.to_vec()))).map_err(|panic| {
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

/// Emits one `(key, value)` pair from `map` of a job with 64-bit values
/// (`spillway_job_new_u64`); the key is copied. No allocation: the engine folds `value` into
/// the key's buffered value (as the job's `spillway_combine` says) or buffers it.
///
/// # Safety
///
/// `emitter` is the one passed to the running `map` call (on this thread); `key` points to
/// `key_len` readable bytes (or is NULL when `key_len` is 0).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_emit_u64(
    emitter: *mut SpillwayEmitter,
    key: *const u8,
    key_len: usize,
    value: u64,
) -> SpillwayStatus {
    // One `catch_unwind` (not `entry`'s and the emit's): this is the hot path of a counting
    // job. Only the engine's buffer can panic here (a bug, or a spill that could not be
    // written); the panic is kept and raised again when `map` returns, so that the engine
    // reports it for the split.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract: this call's live emitter.
        let emitter = unsafe { emitter.as_mut() }.ok_or_else(|| Failure::null("emitter"))?;
        // SAFETY: the caller's contract: readable bytes of this length.
        let key = unsafe { bytes(key, key_len)? };
        match &mut emitter.inner {
            Emits::U64(inner) => {
                inner.emit(key, value);
                Ok(())
            }
            Emits::Bytes(_) => Err(wrong_kind("spillway_emit_u64", "spillway_job_new: use spillway_emit")),
        }
    }));
    match outcome {
        Ok(Ok(())) => SpillwayStatus::Ok,
        Ok(Err(failure)) => failure.report(),
        Err(panic) => {
            let status = Failure::new(SpillwayStatus::Panic, panic_message(&*panic)).report();
            PENDING_PANIC.with(|p| *p.borrow_mut() = Some(panic));
            status
        }
    }
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
        let ValuesOf::Bytes(inner) = &mut values.inner else {
            return Err(wrong_kind(
                "spillway_values_next",
                "spillway_job_new_u64: use spillway_values_next_u64",
            ));
        };
        match inner.next() {
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

/// Gives the next value of the key of a job with 64-bit values (`spillway_job_new_u64`) in
/// `*value` and returns `SPILLWAY_STATUS_OK`, or returns `SPILLWAY_STATUS_END` when there are
/// no more. With a combining job a key's values are already folded, one per run at most.
///
/// # Safety
///
/// `values` is the one passed to the running `reduce` call (on this thread); `value` is valid
/// for a write.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_values_next_u64(
    values: *mut SpillwayValues,
    value: *mut u64,
) -> SpillwayStatus {
    let mut end = false;
    let status = entry(|| {
        // SAFETY: the caller's contract: this call's live values.
        let values = unsafe { values.as_mut() }.ok_or_else(|| Failure::null("values"))?;
        if value.is_null() {
            return Err(Failure::null("value"));
        }
        let ValuesOf::U64(inner) = &mut values.inner else {
            return Err(wrong_kind("spillway_values_next_u64", "spillway_job_new: use spillway_values_next"));
        };
        match inner.next() {
            // SAFETY: valid for a write (the caller's contract) and not NULL.
            Some(v) => unsafe { value.write(v.to_native()) },
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
