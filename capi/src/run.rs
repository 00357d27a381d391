//! Running a job: inputs from paths or memory buffers, into a directory, one file or the
//! caller's output callback.

use super::*;

/// Where `spillway_run` writes its output: the values of its `kind` argument (an `int`, so
/// that any value can be passed and checked: another value gives `SPILLWAY_STATUS_INVALID_ARGUMENT`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillwayOutput {
    /// A directory of `part-NNNNN` files, one per partition, each sorted by key, and `_SUCCESS`
    /// (committed atomically). The directory may exist but must not hold a job's output.
    Dir = 0,
    /// One file holding every key in byte order (replaced atomically if it exists).
    File = 1,
    /// The config's output callback (`spillway_config_set_output_callback`): each key's
    /// output bytes, in byte order of the keys, from one thread; `output` is not used (NULL).
    Callback = 2,
}

impl SpillwayOutput {
    /// The output kind `kind` names.
    pub(crate) fn from_int(kind: c_int) -> Result<Self, Failure> {
        match kind {
            0 => Ok(SpillwayOutput::Dir),
            1 => Ok(SpillwayOutput::File),
            2 => Ok(SpillwayOutput::Callback),
            _ => Err(Failure::new(
                SpillwayStatus::InvalidArgument,
                format!("output kind {kind} is none of SPILLWAY_OUTPUT_DIR (0), _FILE (1), _CALLBACK (2)"),
            )),
        }
    }
}

/// Runs `job` with the settings of `config` over the files and directories `inputs[0..n]`
/// (NUL-terminated paths), into `output` as `kind` says (a `spillway_output` value). The callbacks run on the engine's
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
    kind: c_int,
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
    kind: c_int,
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
pub(crate) unsafe fn run(
    config: *const SpillwayConfig,
    job: *const SpillwayJob,
    inputs: impl FnOnce() -> spillway_engine::Result<Inputs>,
    kind: c_int,
    output: *const c_char,
    metrics_json: *mut *mut c_char,
) -> Result<(), Failure> {
    // SAFETY: the caller's contract: NULL or live handles.
    let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
    // SAFETY: as above.
    let job = unsafe { job.as_ref() }.ok_or_else(|| Failure::null("job"))?;
    let output = match SpillwayOutput::from_int(kind)? {
        // SAFETY: the caller's contract: NULL or a NUL-terminated string.
        SpillwayOutput::Dir => OutputSpec::Dir(unsafe { path(output, "output")? }),
        // SAFETY: as above.
        SpillwayOutput::File => OutputSpec::File(unsafe { path(output, "output")? }),
        SpillwayOutput::Callback => OutputSpec::Sink(config.output_sink()?),
    };
    let engine: Engine =
        config.builder.clone().build().map_err(|e| Failure::new(SpillwayStatus::Config, e.to_string()))?;
    let inputs = inputs().map_err(|e| Failure::new(status_of(&e), e.to_string()))?;
    let result = match job.values {
        ValueKind::Bytes(_) => engine.run(&CJob(job), &inputs, &output),
        ValueKind::U64(combine) => engine.run(&CJobU64 { job: CJob(job), combine }, &inputs, &output),
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
