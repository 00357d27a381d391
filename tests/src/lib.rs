//! Shared helpers for Spillway's integration tests: the `spillway` binary, deterministic
//! test text, and independent reference models (BTreeMap-based) of every job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use unicode_general_category::{GeneralCategory, get_general_category};

pub mod browser;
pub mod ranks;

/// Path of the `spillway` binary of this build, built (or brought up to date) on first use.
pub fn spillway_bin() -> PathBuf {
    // Built once per test process, so that tests never run a stale binary (cargo returns at
    // once when it is up to date).
    static BUILT: Mutex<bool> = Mutex::new(false);
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("spillway");
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "spillway-tools", "--bin", "spillway"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if cfg!(feature = "mpi") {
            cmd.args(["--features", "mpi"]);
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building the spillway binary failed");
        *built = true;
    }
    bin
}

/// Runs `spillway` with `args`.
pub fn spillway(args: &[&str]) -> Output {
    Command::new(spillway_bin()).args(args).output().expect("running spillway")
}

/// The bundled sample corpus (`testdata/gutenberg/*.txt`), in name order.
pub fn gutenberg_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/gutenberg");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/gutenberg")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

/// A small deterministic PRNG (xorshift64*), so test inputs never change.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Deterministic messy text of about `len` bytes: Zipf-ish English words, capitals,
/// punctuation, digits, non-ASCII letters (`Cæsar`, Greek, CJK), combining marks, invalid
/// UTF-8 and stray binary bytes, long and empty lines.
pub fn messy_text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "of",
        "and",
        "a",
        "to",
        "in",
        "is",
        "you",
        "that",
        "it",
        "he",
        "was",
        "for",
        "on",
        "are",
        "as",
        "with",
        "his",
        "they",
        "I",
        "at",
        "be",
        "this",
        "have",
        "from",
        "The",
        "Cæsar",
        "naïve",
        "café",
        "Ελλάδα",
        "日本語",
        "straße",
        "ΣΊΣΥΦΟΣ",
        "e\u{301}t\u{e9}",
        "ǅemal",
        "ªº",
        "x",
        "Zipf",
        "MapReduce",
        "spill",
        "merge",
        "longwordlongwordlongwordlongword",
        "don't",
        "co-operate",
        "R2D2",
        "under_score",
    ];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let r = rng.below(1000);
        match r {
            0..=99 => {
                // A pseudo-word from a large space, so that vocabularies outgrow tiny budgets.
                for _ in 0..3 + rng.below(7) {
                    out.push(b"etaoinshrdlucmfwypvbgkqjxz"[(rng.below(26) * rng.below(26) / 26) as usize]);
                }
                out.push(b' ');
            }
            100..=899 => {
                // Zipf-ish: low indices far more often.
                let i = (rng.below(WORDS.len() as u64) * rng.below(WORDS.len() as u64)) / WORDS.len() as u64;
                out.extend_from_slice(WORDS[i as usize].as_bytes());
                out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
            }
            900..=949 => out.extend_from_slice(b", "),
            950..=969 => out.extend_from_slice(b".\n"),
            970..=979 => out.extend_from_slice(format!("{} ", rng.below(100_000)).as_bytes()),
            980..=984 => out.push(0xff),
            985..=989 => out.extend_from_slice(&[0xc3]),
            990..=994 => out.extend_from_slice(&[0xe2, 0x82]),
            995..=996 => out.extend_from_slice(&[0, 1, 2, b'\t', 0x80, b'q']),
            _ => out.push(b'\n'),
        }
    }
    out
}

/// Is `c` a letter (Unicode general category L*)?
pub fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

/// The words of `text`, by the reference definition: maximal runs of `[A-Za-z]` (ASCII) or of
/// Unicode letters, invalid UTF-8 separating words.
pub fn reference_words(text: &[u8], ascii: bool) -> Vec<Vec<u8>> {
    let mut words = Vec::new();
    if ascii {
        for w in text.split(|b| !b.is_ascii_alphabetic()) {
            if !w.is_empty() {
                words.push(w.to_vec());
            }
        }
        return words;
    }
    let mut current = String::new();
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_letter(c) {
                current.push(c);
            } else if !current.is_empty() {
                words.push(std::mem::take(&mut current).into_bytes());
            }
        }
        if !chunk.invalid().is_empty() && !current.is_empty() {
            words.push(std::mem::take(&mut current).into_bytes());
        }
    }
    if !current.is_empty() {
        words.push(current.into_bytes());
    }
    words
}

/// Reference word count: `word<TAB>count` lines sorted by word in byte order.
pub fn reference_wordcount(files: &[PathBuf], ascii: bool) -> Vec<u8> {
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for f in files {
        for w in reference_words(&std::fs::read(f).expect("read input"), ascii) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (w, n) in counts {
        out.extend_from_slice(&w);
        out.extend_from_slice(format!("\t{n}\n").as_bytes());
    }
    out
}

/// Reference inverted index: `word<TAB>N<TAB>docs` with docs named as given (`names[i]` for
/// `files[i]`), sorted in byte order.
pub fn reference_index(files: &[PathBuf], names: &[String], ascii: bool) -> Vec<u8> {
    let mut index: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (f, name) in files.iter().zip(names) {
        for w in reference_words(&std::fs::read(f).expect("read input"), ascii) {
            index.entry(w).or_default().insert(name.as_bytes().to_vec());
        }
    }
    let mut out = Vec::new();
    for (w, docs) in index {
        out.extend_from_slice(&w);
        out.extend_from_slice(format!("\t{}\t", docs.len()).as_bytes());
        let joined: Vec<&[u8]> = docs.iter().map(Vec::as_slice).collect();
        out.extend_from_slice(&joined.join(&b","[..]));
        out.push(b'\n');
    }
    out
}

/// Reference grep: `name:line_number:line` for every matching line, in input order.
pub fn reference_grep(files: &[PathBuf], names: &[String], pattern: &str) -> Vec<u8> {
    let re = regex::bytes::Regex::new(pattern).expect("valid pattern");
    let mut out = Vec::new();
    for (f, name) in files.iter().zip(names) {
        let data = std::fs::read(f).expect("read input");
        let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        for (i, line) in lines.iter().enumerate() {
            if re.is_match(line) {
                out.extend_from_slice(format!("{name}:{}:", i + 1).as_bytes());
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    }
    out
}

/// Concatenates the part files of an output directory in partition order.
pub fn read_parts(dir: &Path) -> Vec<Vec<u8>> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("part-")))
        .collect();
    parts.sort();
    parts.iter().map(|p| std::fs::read(p).expect("part file")).collect()
}

/// Sorts the lines of `text` in byte order.
pub fn sorted_lines(text: &[u8]) -> Vec<u8> {
    let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    lines.sort();
    lines.concat()
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_words_follow_the_definition() {
        let text = "Cæsar's naïve e\u{301}clair, 日本語\u{0}x".as_bytes();
        let words: Vec<String> =
            reference_words(text, false).into_iter().map(|w| String::from_utf8(w).unwrap()).collect();
        assert_eq!(words, ["Cæsar", "s", "naïve", "e", "clair", "日本語", "x"]);
        let ascii: Vec<String> =
            reference_words(text, true).into_iter().map(|w| String::from_utf8(w).unwrap()).collect();
        assert_eq!(ascii, ["C", "sar", "s", "na", "ve", "e", "clair", "x"]);
        let mut invalid = b"ab".to_vec();
        invalid.push(0xff);
        invalid.extend_from_slice(b"cd");
        assert_eq!(reference_words(&invalid, false), [b"ab".to_vec(), b"cd".to_vec()]);
    }
}
