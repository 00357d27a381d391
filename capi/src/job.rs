//! The job handle (C callbacks and their `user` pointer) and its adapter to the engine's
//! [`Job`](spillway_engine::Job).

use super::*;

/// How inputs are cut into the splits that `map` receives: the values of
/// `spillway_job_set_split`'s `split` argument (an `int`, checked).
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

/// How a job with 64-bit values (`spillway_job_new_u64`) combines the values of one key: the
/// values of its `combine` argument (an `int`, checked). The engine folds them itself, in
/// place, on the map side, in merges and before reduce: no callback per value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillwayCombine {
    /// No combining: reduce sees every value emitted.
    None = 0,
    /// The sum (wrapping at 2^64).
    Sum = 1,
    /// The least value.
    Min = 2,
    /// The greatest value.
    Max = 3,
}

impl SpillwayCombine {
    fn from_int(combine: c_int) -> Result<Self, Failure> {
        match combine {
            0 => Ok(SpillwayCombine::None),
            1 => Ok(SpillwayCombine::Sum),
            2 => Ok(SpillwayCombine::Min),
            3 => Ok(SpillwayCombine::Max),
            _ => Err(Failure::new(
                SpillwayStatus::InvalidArgument,
                format!(
                    "combine {combine} is none of SPILLWAY_COMBINE_NONE (0), _SUM (1), _MIN (2), _MAX (3)"
                ),
            )),
        }
    }
}

impl Combiner<u64> for SpillwayCombine {
    #[inline]
    fn combine(&self, acc: &mut u64, value: u64) {
        *acc = match self {
            SpillwayCombine::None => unreachable!("a job without combining has no combiner"),
            SpillwayCombine::Sum => acc.wrapping_add(value),
            SpillwayCombine::Min => (*acc).min(value),
            SpillwayCombine::Max => (*acc).max(value),
        };
    }

    #[inline]
    fn combine_archived(&self, acc: &mut u64, value: &spillway_engine::ArchivedValue<u64>) {
        self.combine(acc, value.to_native());
    }
}

/// What a job's values are.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueKind {
    /// Byte strings, combined by the optional combine callback.
    Bytes(SpillwayCombineFn),
    /// 64-bit unsigned integers, combined by the engine.
    U64(SpillwayCombine),
}

/// A job: an opaque handle from `spillway_job_new` or `spillway_job_new_u64`, freed with
/// `spillway_job_free`.
#[derive(Debug)]
pub struct SpillwayJob {
    pub(crate) map: MapFn,
    pub(crate) values: ValueKind,
    pub(crate) reduce: ReduceFn,
    pub(crate) user: UserPtr,
    pub(crate) split: SplitMode,
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
pub(crate) type MapFn = unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut SpillwayEmitter) -> c_int;
/// A reduce callback that is there.
pub(crate) type ReduceFn =
    unsafe extern "C" fn(*mut c_void, *const u8, usize, *mut SpillwayValues, *mut SpillwayWriter) -> c_int;

/// The caller's `user` pointer, handed to every callback on any worker thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserPtr(pub(crate) *mut c_void);

// SAFETY: the header's contract: callbacks run concurrently on worker threads with this
// pointer, and the caller makes what it points to safe to use so (read-only, or synchronized).
#[allow(unsafe_code)]
unsafe impl Send for UserPtr {}
// SAFETY: as for `Send` above.
#[allow(unsafe_code)]
unsafe impl Sync for UserPtr {}

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
    // SAFETY: passed on from the caller.
    entry(|| unsafe { job_into(map, || Ok(ValueKind::Bytes(combine)), reduce, user, out) })
}

/// Makes a job whose values are 64-bit unsigned integers into `*out`: `map` emits them with
/// `spillway_emit_u64`, the engine combines them as `combine` says (a `spillway_combine`
/// value: `SPILLWAY_COMBINE_SUM` for counts), and `reduce` reads them with
/// `spillway_values_next_u64`. The fast path for counting and numeric aggregation: no value
/// is allocated or copied per emit, and no callback runs per combined value. `user` is as for
/// `spillway_job_new`. Free the job with `spillway_job_free`.
///
/// # Safety
///
/// `out` is NULL or valid for a write; the callbacks keep the contracts of their types.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn spillway_job_new_u64(
    map: SpillwayMapFn,
    combine: c_int,
    reduce: SpillwayReduceFn,
    user: *mut c_void,
    out: *mut *mut SpillwayJob,
) -> SpillwayStatus {
    // SAFETY: passed on from the caller.
    entry(|| unsafe {
        job_into(map, || Ok(ValueKind::U64(SpillwayCombine::from_int(combine)?)), reduce, user, out)
    })
}

/// The two constructors' common part: checks the callbacks, then puts a job splitting lines
/// with `values` into `*out`.
///
/// # Safety
///
/// `out` is NULL or valid for a write.
#[allow(unsafe_code)]
unsafe fn job_into(
    map: SpillwayMapFn,
    values: impl FnOnce() -> Result<ValueKind, Failure>,
    reduce: SpillwayReduceFn,
    user: *mut c_void,
    out: *mut *mut SpillwayJob,
) -> Result<(), Failure> {
    let map = map.ok_or_else(|| Failure::null("map"))?;
    let reduce = reduce.ok_or_else(|| Failure::null("reduce"))?;
    let job = SpillwayJob { map, values: values()?, reduce, user: UserPtr(user), split: SplitMode::Lines };
    // SAFETY: passed on from the caller.
    unsafe { new_handle(out, job) }
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
    split: c_int,
    record_size: usize,
) -> SpillwayStatus {
    entry(|| {
        // SAFETY: the caller's contract: NULL or a live job used by this thread only.
        let job = unsafe { job.as_mut() }.ok_or_else(|| Failure::null("job"))?;
        job.split = match split {
            0 => SplitMode::Lines,
            1 => SplitMode::Records(positive(record_size, "record size")?),
            2 => SplitMode::WholeFile,
            _ => {
                return Err(Failure::new(
                    SpillwayStatus::InvalidArgument,
                    format!(
                        "split {split} is none of SPILLWAY_SPLIT_LINES (0), _RECORDS (1), _WHOLE_FILE (2)"
                    ),
                ));
            }
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

thread_local! {
    /// The buffer a combine callback writes into (see `CJob::call_combine`).
    static COMBINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A C job as the engine's [`Job`]: its own [`Combiner`] when it has a combine callback.
pub(crate) struct CJob<'j>(pub(crate) &'j SpillwayJob);

impl CJob<'_> {
    /// The outcome of a callback that returned `code`: its message (set with `spillway_fail`)
    /// on failure; a panic kept by `spillway_emit` is raised again.
    pub(crate) fn outcome(what: &str, code: c_int) -> Result<(), JobError> {
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
    pub(crate) fn call_combine(&self, acc: &mut Vec<u8>, value: &[u8]) {
        let ValueKind::Bytes(Some(combine)) = self.0.values else {
            unreachable!("a combining job of byte values has a combine callback")
        };
        // The combined value is written into this thread's spare buffer, which then trades
        // places with `acc`: no allocation per combine once the buffers have grown (the map
        // side combines on every emit of a key already buffered).
        let code = COMBINED.with_borrow_mut(|combined| {
            combined.clear();
            let mut writer = SpillwayWriter { out: combined, error: None };
            // SAFETY: the callback's contract (the header): it reads `acc_len` bytes at `acc`
            // and `value_len` at `value`, writes through `out` only during this call.
            let code = unsafe {
                combine(self.0.user.0, acc.as_ptr(), acc.len(), value.as_ptr(), value.len(), &mut writer)
            };
            if code == 0 {
                std::mem::swap(acc, combined);
            }
            code
        });
        // `Job::combine` has no error: a failure is a panic, which the engine catches for the
        // split, merge or partition, and reports with this message.
        if code != 0
            && let Err(e) = Self::outcome("combine", code)
        {
            panic!("{e}");
        }
    }

    /// Calls the C map callback on `split` with `emits`.
    #[allow(unsafe_code)]
    fn call_map(&self, split: &Split<'_>, emits: Emits<'_, '_>) -> Result<(), JobError> {
        let mut emitter = SpillwayEmitter { inner: emits, input: (split.file.index, split.offset) };
        // SAFETY: the callback's contract (the header): it reads `split_len` bytes at `split`
        // and uses the emitter only during this call.
        let code =
            unsafe { (self.0.map)(self.0.user.0, split.data.as_ptr(), split.data.len(), &mut emitter) };
        Self::outcome("map", code)
    }

    /// Calls the C reduce callback on `key` and `values`.
    #[allow(unsafe_code)]
    fn call_reduce(&self, key: &[u8], values: ValuesOf<'_, '_>, out: &mut dyn Write) -> Result<(), JobError> {
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

impl Job for CJob<'_> {
    type Value = Vec<u8>;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        matches!(self.0.values, ValueKind::Bytes(Some(_))).then_some(self)
    }

    fn split_mode(&self) -> SplitMode {
        self.0.split
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, Vec<u8>>) -> Result<(), JobError> {
        self.call_map(split, Emits::Bytes(emit))
    }

    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, Vec<u8>>,
        out: &mut dyn Write,
    ) -> Result<(), JobError> {
        self.call_reduce(key, ValuesOf::Bytes(values), out)
    }
}

/// A C job with 64-bit values (`spillway_job_new_u64`) as the engine's [`Job`]: the engine
/// folds its values with the job's [`SpillwayCombine`].
pub(crate) struct CJobU64<'j> {
    pub(crate) job: CJob<'j>,
    pub(crate) combine: SpillwayCombine,
}

impl Job for CJobU64<'_> {
    type Value = u64;
    type Combiner = SpillwayCombine;

    fn combiner(&self) -> Option<&SpillwayCombine> {
        (self.combine != SpillwayCombine::None).then_some(&self.combine)
    }

    fn parameters(&self) -> String {
        format!("{:?}", self.combine)
    }

    fn split_mode(&self) -> SplitMode {
        self.job.0.split
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, u64>) -> Result<(), JobError> {
        self.job.call_map(split, Emits::U64(emit))
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, u64>, out: &mut dyn Write) -> Result<(), JobError> {
        self.job.call_reduce(key, ValuesOf::U64(values), out)
    }
}

impl Combiner<Vec<u8>> for CJob<'_> {
    fn combine(&self, acc: &mut Vec<u8>, value: Vec<u8>) {
        self.call_combine(acc, &value);
    }

    fn combine_archived(&self, acc: &mut Vec<u8>, value: &ArchivedVec<u8>) {
        self.call_combine(acc, value.as_slice());
    }
}
