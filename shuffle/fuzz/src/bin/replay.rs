//! Runs files (or every file of directories) through the fuzz harness without libFuzzer, and
//! tallies what became of them: accepted per value type, or refused by which check; as
//! journals, how many records were read and why reading stopped.
//!
//! Usage: `replay [--checksummed | --journal | --journal-framed] PATH...` (`--checksummed`
//! repairs checksums first, as the `run_reader_checksummed` target does; `--journal` parses
//! journals, as the `journal` target does, `--journal-framed` frames lines first, as
//! `journal_framed` does). A finding panics, naming the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use spillway_shuffle_fuzz::{Outcome, exercise, fix_checksums, journal, measure};

/// What the files are read as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Checksummed,
    Journal,
    JournalFramed,
}

fn main() {
    let mut mode = Mode::Run;
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let flag = [
            ("--checksummed", Mode::Checksummed),
            ("--journal", Mode::Journal),
            ("--journal-framed", Mode::JournalFramed),
        ]
        .into_iter()
        .find(|(f, _)| arg == *f);
        if let Some((_, m)) = flag {
            mode = m;
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
        eprintln!("usage: replay [--checksummed | --journal | --journal-framed] PATH...");
        std::process::exit(2);
    }
    if matches!(mode, Mode::Journal | Mode::JournalFramed) {
        return replay_journals(&files, mode == Mode::JournalFramed);
    }
    let checksummed = mode == Mode::Checksummed;
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
                Outcome::Refused(what) => format!("refused: {}", shape(&what)),
            };
            *tally.entry(format!("{ty:>7}  {what}")).or_default() += 1;
        }
    }
    println!("{} files{}", files.len(), if checksummed { " (checksums repaired)" } else { "" });
    for (what, n) in tally {
        println!("{n:>6}  {what}");
    }
}

/// Groups a message by its shape: digits and serde_json's positions vary from file to file.
fn shape(what: &str) -> String {
    let what = what.split_once(" at line ").map_or(what, |(what, _)| what);
    let what: String = what.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
    what.split(": ").take(2).collect::<Vec<_>>().join(": ").chars().take(90).collect()
}

/// The journal targets' harness over `files`, with a tally of where parsing stopped and the
/// most memory it held per byte of input.
fn replay_journals(files: &[PathBuf], framed: bool) {
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut worst = (0.0f64, 0usize, 0usize);
    for file in files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let bytes = if framed { journal::frame(&data) } else { data };
        eprintln!("{}", file.display());
        let parsed = journal::exercise(&bytes);
        let (_, usage) = measure(|| spillway_engine::journal::parse(&bytes));
        let ratio = usage.peak as f64 / bytes.len().max(1) as f64;
        if ratio > worst.0 {
            worst = (ratio, usage.peak, bytes.len());
        }
        let records = match parsed.records.len() {
            0 => "no records",
            1 => "Begin only",
            _ => "Begin and more",
        };
        let why = parsed.stopped.as_deref().map_or_else(|| "read whole".to_owned(), shape);
        *tally.entry(format!("{records:>14}  {why}")).or_default() += 1;
    }
    println!("{} files{}", files.len(), if framed { " (framed)" } else { "" });
    for (what, n) in tally {
        println!("{n:>6}  {what}");
    }
    println!("most held at once: {:.1} bytes per byte of input ({} bytes for {})", worst.0, worst.1, worst.2);
}
