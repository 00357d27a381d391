//! `spillway_run_buffers`: a job over byte buffers, called as C would, with callbacks written
//! in Rust (`extern "C"`, no panics).

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use spillway_capi::*;

unsafe extern "C" fn map(_: *mut c_void, data: *const u8, len: usize, e: *mut SpillwayEmitter) -> c_int {
    // SAFETY: the engine passes `len` readable bytes at `data` and this call's emitter.
    let text = unsafe { std::slice::from_raw_parts(data, len) };
    for word in text.split(|b| !b.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
        // SAFETY: `e` is this call's emitter; the slices are valid.
        unsafe { spillway_emit(e, word.as_ptr(), word.len(), [1u8].as_ptr(), 1) };
    }
    0
}

unsafe extern "C" fn reduce(
    _: *mut c_void,
    key: *const u8,
    key_len: usize,
    values: *mut SpillwayValues,
    out: *mut SpillwayWriter,
) -> c_int {
    let (mut n, mut v, mut l) = (0u64, std::ptr::null(), 0usize);
    // SAFETY: `values` and `out` are this call's; the out-pointers are valid.
    unsafe {
        while spillway_values_next(values, &mut v, &mut l) == SpillwayStatus::Ok {
            n += 1;
        }
        spillway_write(out, key, key_len);
        let line = format!("\t{n}\n");
        spillway_write(out, line.as_ptr(), line.len());
    }
    0
}

#[test]
fn a_job_over_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let out = CString::new(dir.path().join("out.tsv").to_str().unwrap()).unwrap();
    let texts: [&[u8]; 3] = [b"b a b\n", b"", b"c a\nb\n"];
    let buffers: Vec<*const u8> = texts.iter().map(|t| t.as_ptr()).collect();
    let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
    let (mut config, mut job) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: every pointer passed is valid for the call; the handles are freed once.
    unsafe {
        assert_eq!(spillway_config_new(&mut config), SpillwayStatus::Ok);
        assert_eq!(spillway_config_set_threads(config, 2), SpillwayStatus::Ok);
        assert_eq!(
            spillway_job_new(Some(map), None, Some(reduce), std::ptr::null_mut(), &mut job),
            SpillwayStatus::Ok
        );
        let status = spillway_run_buffers(
            config,
            job,
            buffers.as_ptr(),
            lengths.as_ptr(),
            std::ptr::null(),
            texts.len(),
            SpillwayOutput::File as c_int,
            out.as_ptr(),
            std::ptr::null_mut(),
        );
        assert_eq!(status, SpillwayStatus::Ok, "{:?}", CStr::from_ptr(spillway_last_error()));
        // No buffers: an input error with a message.
        let status = spillway_run_buffers(
            config,
            job,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            0,
            SpillwayOutput::File as c_int,
            out.as_ptr(),
            std::ptr::null_mut(),
        );
        assert_eq!(status, SpillwayStatus::Input);
        let message: *const c_char = spillway_last_error();
        assert!(CStr::from_ptr(message).to_string_lossy().contains("no input buffers"));
        spillway_job_free(job);
        spillway_config_free(config);
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("out.tsv")).unwrap(), "a\t2\nb\t3\nc\t1\n");
}
