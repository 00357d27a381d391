//! Jobs with 64-bit values (`spillway_job_new_u64`), called as C would, with callbacks written
//! in Rust: every `spillway_combine` (none, sum, min, max) gives what a `BTreeMap` model
//! folds, with a budget small enough that the map side spills and runs are merged (so values
//! are folded in the buffer, in merges and before reduce).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_int, c_void};
use std::fmt::Write as _;

use spillway_capi::*;

/// Lines `key value`: emits `(key, value)`.
unsafe extern "C" fn map(_: *mut c_void, data: *const u8, len: usize, e: *mut SpillwayEmitter) -> c_int {
    // SAFETY: the engine passes `len` readable bytes at `data`.
    let text = unsafe { std::slice::from_raw_parts(data, len) };
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let space = line.iter().position(|&b| b == b' ').expect("key value");
        let value: u64 = std::str::from_utf8(&line[space + 1..]).unwrap().parse().unwrap();
        // SAFETY: `e` is this call's emitter; the key slice is valid.
        if unsafe { spillway_emit_u64(e, line.as_ptr(), space, value) } != SpillwayStatus::Ok {
            return 1;
        }
    }
    0
}

/// Writes `key<TAB>v1,v2,...` with the key's values in increasing order (without combining
/// they arrive in no particular order).
unsafe extern "C" fn reduce(
    _: *mut c_void,
    key: *const u8,
    key_len: usize,
    values: *mut SpillwayValues,
    out: *mut SpillwayWriter,
) -> c_int {
    let mut all = Vec::new();
    let mut v = 0u64;
    // SAFETY: `values` and `out` are this call's; `v` is valid for writes; `key` has
    // `key_len` bytes.
    unsafe {
        while spillway_values_next_u64(values, &mut v) == SpillwayStatus::Ok {
            all.push(v);
        }
        all.sort_unstable();
        let mut line = String::from("\t");
        for (i, v) in all.iter().enumerate() {
            let _ = write!(line, "{}{v}", if i > 0 { "," } else { "" });
        }
        line.push('\n');
        spillway_write(out, key, key_len);
        spillway_write(out, line.as_ptr(), line.len());
    }
    0
}

/// `n` pairs over `keys` keys, pseudo-random, as lines `key value`.
fn pairs(n: usize, keys: u64) -> (Vec<u8>, Vec<(String, u64)>) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = Vec::new();
    let mut list = Vec::new();
    for _ in 0..n {
        let key = format!("key{:05}", next() % keys);
        let value = next() % 1_000_000;
        text.extend_from_slice(format!("{key} {value}\n").as_bytes());
        list.push((key, value));
    }
    (text, list)
}

/// Runs the job with `combine` over `text` into a file; returns its bytes.
fn run(combine: SpillwayCombine, text: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = CString::new(dir.path().join("out.tsv").to_str().unwrap()).unwrap();
    let (mut config, mut job) = (std::ptr::null_mut(), std::ptr::null_mut());
    let (buffers, lengths) = ([text.as_ptr()], [text.len()]);
    // SAFETY: every pointer passed is valid for the call; the handles are freed once.
    unsafe {
        assert_eq!(spillway_config_new(&mut config), SpillwayStatus::Ok);
        assert_eq!(spillway_config_set_threads(config, 2), SpillwayStatus::Ok);
        assert_eq!(spillway_config_set_partitions(config, 3), SpillwayStatus::Ok);
        // 64 KiB per thread: the map side spills many times, and F = 2 merges in passes.
        assert_eq!(spillway_config_set_memory_budget(config, 128 << 10), SpillwayStatus::Ok);
        assert_eq!(spillway_config_set_max_open_runs(config, 2), SpillwayStatus::Ok);
        assert_eq!(
            spillway_job_new_u64(Some(map), combine as c_int, Some(reduce), std::ptr::null_mut(), &mut job),
            SpillwayStatus::Ok
        );
        let mut metrics = std::ptr::null_mut();
        let status = spillway_run_buffers(
            config,
            job,
            buffers.as_ptr(),
            lengths.as_ptr(),
            std::ptr::null(),
            1,
            SpillwayOutput::File as c_int,
            out.as_ptr(),
            &mut metrics,
        );
        assert_eq!(status, SpillwayStatus::Ok, "{:?}", CStr::from_ptr(spillway_last_error()));
        let json = CStr::from_ptr(metrics).to_string_lossy().into_owned();
        assert!(!json.contains("\"spills\":0,"), "the job should spill: {json}");
        spillway_string_free(metrics);
        spillway_job_free(job);
        spillway_config_free(config);
    }
    std::fs::read_to_string(dir.path().join("out.tsv")).unwrap()
}

/// How a combine folds two values.
type Fold = fn(u64, u64) -> u64;

/// What the job must write: each key's values folded by `fold` (all of them without one).
fn model(list: &[(String, u64)], fold: Option<Fold>) -> String {
    let mut groups: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (k, v) in list {
        groups.entry(k).or_default().push(*v);
    }
    let mut text = String::new();
    for (k, mut values) in groups {
        let values: Vec<String> = match fold {
            Some(f) => vec![values.iter().copied().reduce(f).unwrap().to_string()],
            None => {
                values.sort_unstable();
                values.iter().map(u64::to_string).collect()
            }
        };
        let _ = writeln!(text, "{k}\t{}", values.join(","));
    }
    text
}

#[test]
fn every_combine_matches_a_model() {
    let (text, list) = pairs(40_000, 3_000);
    let cases: [(SpillwayCombine, Option<Fold>); 4] = [
        (SpillwayCombine::None, None),
        (SpillwayCombine::Sum, Some(u64::wrapping_add)),
        (SpillwayCombine::Min, Some(u64::min)),
        (SpillwayCombine::Max, Some(u64::max)),
    ];
    for (combine, fold) in cases {
        assert!(run(combine, &text) == model(&list, fold), "{combine:?} differs from the model");
    }
}
