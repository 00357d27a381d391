//! valgrind memcheck over the C word count (to a file and collected through the output
//! callback) and over the failure and misuse program: no error, no leak (definite, indirect
//! or possible; `tests/valgrind.supp` names the one allocation of Rust's standard library that
//! memcheck counts as possibly lost, and why it is not a leak). Skipped, saying so, when valgrind is not installed
//! (scripts/install-deps.sh installs it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Compiler, lib_dir};

fn have_valgrind() -> bool {
    let found = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("valgrind is not installed: skipping (scripts/install-deps.sh installs it)");
    }
    found
}

/// Runs `exe args` under memcheck; fails the test on any error or leak.
fn memcheck(exe: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--track-origins=yes",
        ])
        .arg(format!("--suppressions={}", common::crate_dir().join("tests/valgrind.supp").display()))
        .arg(exe)
        .args(args)
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .expect("running valgrind");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "memcheck of {} {args:?}:\n{stdout}{stderr}", exe.display());
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    stdout + &stderr
}

/// A small input: memcheck runs the program some 30 times slower.
fn small_input(dir: &Path) -> std::path::PathBuf {
    let input = dir.join("in.txt");
    let text: String =
        (0..3000).map(|i| format!("word{} and Some more lines {} here\n", i % 211, i % 7)).collect();
    std::fs::write(&input, text).unwrap();
    input
}

#[test]
fn c_wordcount_is_clean_under_memcheck() {
    if !have_valgrind() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Gcc.build(&["examples/wordcount.c"], dir.path(), "wordcount");
    let input = small_input(dir.path());
    let (file, collected) = (dir.path().join("file.tsv"), dir.path().join("collected.tsv"));
    memcheck(&exe, &[file.as_os_str(), input.as_os_str()]);
    memcheck(&exe, &["--collect".as_ref(), collected.as_os_str(), input.as_os_str()]);
    let bytes = std::fs::read(&file).unwrap();
    assert!(!bytes.is_empty() && bytes == std::fs::read(&collected).unwrap());
}

#[test]
fn failures_and_misuse_are_clean_under_memcheck() {
    if !have_valgrind() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = Compiler::Gcc.build(&["tests/c/fail.c"], dir.path(), "fail");
    let input = small_input(dir.path());
    for mode in ["misuse", "map", "reduce", "output", "huge"] {
        let out = dir.path().join(format!("out-{mode}"));
        memcheck(&exe, &[mode.as_ref(), out.as_os_str(), input.as_os_str()]);
    }
}
