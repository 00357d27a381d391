//! Runs files (or every file of directories) through the fuzz harness without libFuzzer, and
//! tallies what became of them: accepted per value type, or refused by which check.
//!
//! Usage: `replay [--checksummed] PATH...` (`--checksummed` repairs checksums first, as the
//! `run_reader_checksummed` target does). A finding panics, naming the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use spillway_shuffle_fuzz::{Outcome, exercise, fix_checksums};

fn main() {
    let mut checksummed = false;
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        if arg == "--checksummed" {
            checksummed = true;
            continue;
        }
        let path = PathBuf::from(arg);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .map(|e| e.expect("directory entry").path())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path);
        }
    }
    if files.is_empty() {
        eprintln!("usage: replay [--checksummed] PATH...");
        std::process::exit(2);
    }
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if checksummed {
            fix_checksums(&mut bytes);
        }
        eprintln!("{}", file.display());
        for (ty, outcome) in ["u64", "Vec<u8>", "String"].into_iter().zip(exercise(&bytes)) {
            let what = match outcome {
                Outcome::Accepted(0) => "accepted, empty".to_owned(),
                Outcome::Accepted(_) => "accepted, with records".to_owned(),
                // Group by the message's shape: digits vary from file to file.
                Outcome::Refused(what) => {
                    let what: String =
                        what.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
                    let what = what.split(": ").take(2).collect::<Vec<_>>().join(": ");
                    format!("refused: {}", what.chars().take(90).collect::<String>())
                }
            };
            *tally.entry(format!("{ty:>7}  {what}")).or_default() += 1;
        }
    }
    println!("{} files{}", files.len(), if checksummed { " (checksums repaired)" } else { "" });
    for (what, n) in tally {
        println!("{n:>6}  {what}");
    }
}
