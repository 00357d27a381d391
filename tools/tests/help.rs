//! The binary starts and documents itself (this test also makes cargo build the binary that
//! the workspace's end-to-end tests in `tests/` run).

use std::process::Command;

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for sub in ["wordcount", "index", "grep", "gen", "valsort", "Exit status"] {
        assert!(text.contains(sub), "--help lacks {sub}:\n{text}");
    }
}
