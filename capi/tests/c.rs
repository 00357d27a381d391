//! Real C, C++ and Fortran programs compiled against `include/spillway.h` (or, in Fortran,
//! `iso_c_binding` interfaces) and linked with the shared library this crate builds: word
//! counts (C, Fortran) byte-identical to `spillway wordcount`, an inverted index (C++)
//! byte-identical to `spillway index`, and failing callbacks and misuse answered with an error
//! code and a message, never a crash. A missing compiler fails its test, naming the package.

mod common;

use common::{Compiler, engine_wordcount, gutenberg, run};

#[test]
fn c_wordcount_matches_spillway_wordcount() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Gcc.build(&["examples/wordcount.c"], dir.path(), "wordcount");
    let out = dir.path().join("counts.tsv");
    let (code, _stdout, stderr) = run(&exe, [out.as_os_str(), gutenberg().as_os_str()]);
    assert_eq!(code, 0, "the C word count failed: {stderr}");
    assert!(stderr.contains("\"map_records\""), "metrics JSON on stderr: {stderr}");
    let expected = engine_wordcount(dir.path());
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == expected,
        "the C word count differs from spillway wordcount ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
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

#[test]
fn misuse_gives_error_codes_and_messages() {
    let stdout = fail("misuse");
    for what in
        ["config_new(NULL)", "set_threads(0)", "run(NULL job)", "run(missing input)", "run(1-byte budget)"]
    {
        assert!(stdout.contains(what), "{what} not answered: {stdout}");
    }
    assert!(stdout.contains("out is NULL"), "{stdout}");
    assert!(stdout.contains("/nonexistent/spillway-input"), "{stdout}");
}

#[test]
fn cxx_index_matches_spillway_index() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Gxx.build(&["examples/index.cpp"], dir.path(), "index");
    let out = dir.path().join("index.tsv");
    let files = common::gutenberg_files();
    let mut args = vec![out.as_os_str()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let (code, _stdout, stderr) = run(&exe, args);
    assert_eq!(code, 0, "the C++ index failed: {stderr}");
    let expected = common::engine_index(dir.path());
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == expected,
        "the C++ index differs from spillway index ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
}

#[test]
fn fortran_wordcount_matches_spillway_wordcount() {
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Gfortran.build(&["examples/wordcount.f90"], dir.path(), "wordcount_f");
    let out = dir.path().join("counts.tsv");
    let (code, stdout, stderr) = run(&exe, [out.as_os_str(), gutenberg().as_os_str()]);
    assert_eq!(code, 0, "the Fortran word count failed: {stdout}{stderr}");
    let expected = engine_wordcount(dir.path());
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == expected,
        "the Fortran word count differs from spillway wordcount ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
}
