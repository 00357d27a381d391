//! The reference single-threaded word count ("wc-baseline").
//!
//! This is the competent-but-not-heroic program Spillway is compared against:
//! every input file is memory-mapped, scanned byte by byte with a 256-entry
//! class table, and words (maximal runs of ASCII letters `[A-Za-z]`, case
//! kept) are counted in a `HashMap<&[u8], u64, ahash::RandomState>` keyed by
//! slices of the mappings (no per-word allocation). The result is sorted by
//! word in byte order and rendered as `word\tcount\n` lines. No SIMD, no
//! threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};

/// `IS_LETTER[b]` is true iff `b` is an ASCII letter `[A-Za-z]`.
pub static IS_LETTER: [bool; 256] = letter_table();

const fn letter_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = b'A';
    while c <= b'Z' {
        t[c as usize] = true;
        t[(c + 32) as usize] = true;
        c += 1;
    }
    t
}

/// Word → count map whose keys borrow from the scanned input.
pub type WordCounts<'a> = HashMap<&'a [u8], u64, ahash::RandomState>;

/// A new, empty [`WordCounts`] with room for `capacity` distinct words.
pub fn new_counts<'a>(capacity: usize) -> WordCounts<'a> {
    HashMap::with_capacity_and_hasher(capacity, ahash::RandomState::new())
}

/// Adds the words of `data` (maximal runs of `[A-Za-z]`) to `counts`.
pub fn count_words<'a>(data: &'a [u8], counts: &mut WordCounts<'a>) {
    let n = data.len();
    let mut i = 0;
    while i < n {
        while i < n && !IS_LETTER[data[i] as usize] {
            i += 1;
        }
        let start = i;
        while i < n && IS_LETTER[data[i] as usize] {
            i += 1;
        }
        if i > start {
            *counts.entry(&data[start..i]).or_insert(0) += 1;
        }
    }
}

/// Renders `counts` as `word\tcount\n` lines sorted by word in byte order.
pub fn render_sorted(counts: &WordCounts<'_>) -> Vec<u8> {
    let mut entries: Vec<(&[u8], u64)> = counts.iter().map(|(w, c)| (*w, *c)).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let bytes: usize = entries.iter().map(|(w, _)| w.len() + 12).sum();
    let mut out = Vec::with_capacity(bytes);
    for (w, c) in entries {
        out.extend_from_slice(w);
        // Writing into a Vec cannot fail.
        let _ = writeln!(out, "\t{c}");
    }
    out
}

/// Read-only memory mappings of a set of input files.
#[derive(Debug)]
pub struct MappedInputs {
    maps: Vec<Mmap>,
}

impl MappedInputs {
    /// Maps every file in `paths` (empty files are skipped: they hold no
    /// words and cannot be mapped).
    ///
    /// The files must not be modified while mapped (benchmark inputs are
    /// written once and then only read).
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> io::Result<Self> {
        let mut maps = Vec::with_capacity(paths.len());
        for p in paths {
            let p = p.as_ref();
            let file =
                File::open(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            if file.metadata()?.len() == 0 {
                continue;
            }
            // SAFETY: the mapping is read-only and private to this process;
            // the benchmark inputs are not truncated or modified while the
            // program runs (documented precondition of `open`), so the
            // mapped bytes stay valid for the lifetime of `Mmap`.
            let map = unsafe { Mmap::map(&file)? };
            // Advisory only; failure is harmless.
            let _ = map.advise(Advice::Sequential);
            maps.push(map);
        }
        Ok(MappedInputs { maps })
    }

    /// The mapped contents, one slice per non-empty file.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.maps.iter().map(|m| &m[..])
    }

    /// Total mapped bytes.
    pub fn total_len(&self) -> u64 {
        self.maps.iter().map(|m| m.len() as u64).sum()
    }
}

/// Counts the words of all `paths` and returns the sorted `word\tcount\n`
/// rendering (what `wc-baseline` writes).
pub fn wordcount_files(paths: &[PathBuf]) -> io::Result<Vec<u8>> {
    let inputs = MappedInputs::open(paths)?;
    let mut counts = new_counts(1 << 16);
    for data in inputs.slices() {
        count_words(data, &mut counts);
    }
    Ok(render_sorted(&counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Independent naive word count: split on non-letters, BTreeMap.
    fn naive(data: &[Vec<u8>]) -> Vec<u8> {
        let mut m: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for d in data {
            for w in d.split(|b| !b.is_ascii_alphabetic()) {
                if !w.is_empty() {
                    *m.entry(w.to_vec()).or_default() += 1;
                }
            }
        }
        let mut out = Vec::new();
        for (w, c) in m {
            out.extend_from_slice(&w);
            out.extend_from_slice(format!("\t{c}\n").as_bytes());
        }
        out
    }

    #[test]
    fn small_inputs() {
        let mut counts = new_counts(0);
        count_words(b"", &mut counts);
        count_words(b"..12..", &mut counts);
        count_words(b"Hello, hello world! don't HELLO-world\xc3\xa9x", &mut counts);
        assert_eq!(
            String::from_utf8(render_sorted(&counts)).unwrap(),
            "HELLO\t1\nHello\t1\ndon\t1\nhello\t1\nt\t1\nworld\t2\nx\t1\n"
        );
    }

    #[test]
    fn matches_naive_count_on_generated_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::corpus::write_corpus(dir.path(), 1 << 20, 4, 1234).unwrap();
        // An empty file and one without a trailing newline, too.
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, b"").unwrap();
        let odd = dir.path().join("odd.txt");
        std::fs::write(&odd, b"Zebra-zebra 42 zebra").unwrap();
        let mut all = paths.clone();
        all.push(empty);
        all.push(odd);
        let got = wordcount_files(&all).unwrap();
        let data: Vec<Vec<u8>> = all.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let want = naive(&data);
        assert!(got == want, "baseline output differs from the naive count");
        let distinct = got.iter().filter(|&&b| b == b'\n').count();
        assert!(distinct > 10_000, "only {distinct} distinct words");
    }
}
