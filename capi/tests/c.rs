//! Real C, C++ and Fortran programs compiled against `include/spillway.h` (or, in Fortran,
//! `iso_c_binding` interfaces) and linked with the shared library this crate builds: word
//! counts (C, Fortran) byte-identical to `spillway wordcount`, an inverted index (C++)
//! byte-identical to `spillway index`, and failing callbacks and misuse answered with an error
//! code and a message, never a crash. A missing compiler fails its test, naming the package.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{Compiler, engine_index, engine_wordcount, gutenberg, gutenberg_files, run};

/// Builds `source` with `compiler`, runs it as `PROGRAM OUTPUT INPUT...` and checks that its
/// output file equals `reference`'s bytes; returns the program's standard error.
fn same_output(
    compiler: Compiler,
    source: &str,
    flags: &[&str],
    inputs: &[PathBuf],
    reference: fn(&Path) -> Vec<u8>,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let exe = compiler.build(&[source], dir.path(), "program");
    let out = dir.path().join("out.tsv");
    let args = flags
        .iter()
        .map(OsStr::new)
        .chain(std::iter::once(out.as_os_str()))
        .chain(inputs.iter().map(|p| p.as_os_str()));
    let (code, stdout, stderr) = run(&exe, args);
    assert_eq!(code, 0, "{source} failed: {stdout}{stderr}");
    let (got, expected) = (std::fs::read(&out).unwrap(), reference(dir.path()));
    assert!(got == expected, "{source} differs from spillway ({} vs {} bytes)", got.len(), expected.len());
    stderr
}

#[test]
fn c_wordcount_matches_spillway_wordcount() {
    let stderr = same_output(Compiler::Gcc, "examples/wordcount.c", &[], &[gutenberg()], engine_wordcount);
    assert!(stderr.contains("\"map_records\""), "metrics JSON on stderr: {stderr}");
}

/// The output callback (`SPILLWAY_OUTPUT_CALLBACK`) collects in memory what the file output
/// holds: the example checks the key order and writes the collected bytes.
#[test]
fn c_wordcount_collected_by_the_output_callback_matches_spillway_wordcount() {
    let stderr =
        same_output(Compiler::Gcc, "examples/wordcount.c", &["--collect"], &[gutenberg()], engine_wordcount);
    assert!(stderr.contains("collected ") && stderr.contains(" keys"), "{stderr}");
}

#[test]
fn cxx_index_matches_spillway_index() {
    same_output(Compiler::Gxx, "examples/index.cpp", &[], &gutenberg_files(), engine_index);
}

#[test]
fn fortran_wordcount_matches_spillway_wordcount() {
    same_output(Compiler::Gfortran, "examples/wordcount.f90", &[], &[gutenberg()], engine_wordcount);
}

/// Runs `tests/c/fail.c` in `mode`; returns its standard output.
fn fail(mode: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Gcc.build(&["tests/c/fail.c"], dir.path(), "fail");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "one line\nanother line\n").unwrap();
    let out = dir.path().join("out");
    let (code, stdout, stderr) = run(&exe, [mode.as_ref(), out.as_os_str(), input.as_os_str()]);
    assert_eq!(code, 0, "fail {mode}: {stdout}{stderr}");
    assert!(!out.exists(), "a failed job left its output");
    stdout
}

#[test]
fn a_failing_map_callback_fails_the_job_with_its_message() {
    let stdout = fail("map");
    assert!(stdout.contains("map callback failed: map refuses this split"), "{stdout}");
    assert!(stdout.contains("2 attempts"), "{stdout}");
}

#[test]
fn a_failing_combine_callback_fails_the_job_with_its_message() {
    let stdout = fail("combine");
    assert!(stdout.contains("combine callback failed: combine cannot add these"), "{stdout}");
}

#[test]
fn a_failing_reduce_callback_fails_the_job_with_its_code() {
    let stdout = fail("reduce");
    assert!(stdout.contains("reduce callback returned 42"), "{stdout}");
}

/// A length no buffer has (`(size_t)-8`) passed to `spillway_emit`: an error code and a
/// message, where a slice of it would abort the process.
#[test]
fn an_impossible_length_is_an_error_not_a_crash() {
    let stdout = fail("huge");
    assert!(
        stdout.contains(
            "map callback failed: a length of 18446744073709551608 bytes is larger than any buffer"
        ),
        "{stdout}"
    );
}

/// `spillway_emit` (byte values) from the map of a job with 64-bit values: an error code and
/// a message naming the call to use, which fails the job.
#[test]
fn a_call_of_the_other_value_kind_is_an_error() {
    let stdout = fail("kind");
    assert!(
        stdout.contains(
            "map callback failed: spillway_emit does not fit a job made by spillway_job_new_u64: use spillway_emit_u64"
        ),
        "{stdout}"
    );
}

#[test]
fn a_failing_output_callback_fails_the_job_with_its_message() {
    let stdout = fail("output");
    assert!(stdout.contains("output callback failed: the output callback has no room for l"), "{stdout}");
}

#[test]
fn misuse_gives_error_codes_and_messages() {
    let stdout = fail("misuse");
    for what in [
        "config_new(NULL)",
        "set_threads(0)",
        "run(NULL job)",
        "run(missing input)",
        "run(1-byte budget)",
        "run(kind 7)",
        "run(kind -1)",
        "set_split(9)",
        "run(callback unset)",
        "emit(NULL emitter)",
        "job_new_u64(no map)",
        "job_new_u64(combine 9)",
        "emit_u64(NULL emitter)",
        "values_next_u64(NULL)",
        "values_next(NULL)",
        "write(NULL)",
    ] {
        assert!(stdout.contains(what), "{what} not answered: {stdout}");
    }
    assert!(stdout.contains("out is NULL"), "{stdout}");
    assert!(stdout.contains("output kind 7 is none of"), "{stdout}");
    assert!(stdout.contains("combine 9 is none of SPILLWAY_COMBINE_NONE"), "{stdout}");
    assert!(stdout.contains("/nonexistent/spillway-input"), "{stdout}");
}
