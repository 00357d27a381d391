//! The built-in jobs behind the `spillway` subcommands: word count, inverted index, grep.

use std::io::Write;

use ahash::RandomState;
use hashbrown::HashTable;
use regex::bytes::Regex;
use spillway_shuffle::ArchivedValue;
use spillway_shuffle::rkyv::Archived;

use crate::error::JobError;
use crate::feed::FileNames;
use crate::input::{Inputs, Split, SplitMode};
use crate::job::{Combiner, Emitter, Job, NoCombiner, Values};
use crate::table::{INLINE_KEY, signature, table_hash};
use crate::text::{WordMode, for_each_word};

/// Writes `key<TAB>n<LF>`.
///
/// # Errors
///
/// The writer's error.
pub fn write_key_value(out: &mut dyn Write, key: &[u8], n: u64) -> std::io::Result<()> {
    let mut line = [0u8; 21];
    let digits = format_u64(n, &mut line[..20]);
    let len = digits.len();
    line[len] = b'\n';
    out.write_all(key)?;
    out.write_all(b"\t")?;
    let start = 20 - len;
    let mut tail = [0u8; 21];
    tail[..len].copy_from_slice(&line[start..20]);
    tail[len] = b'\n';
    out.write_all(&tail[..=len])
}

/// Formats `n` in decimal into the end of `buf` (20 bytes); returns the digits.
fn format_u64(mut n: u64, buf: &mut [u8]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Word count: every word with the number of its occurrences, `word<TAB>count`.
///
/// Words are maximal runs of letters: Unicode general category L* by default (as the MIT
/// 6.824 lab counts them, case kept), or `[A-Za-z]` in ASCII mode.
#[derive(Debug, Clone, Copy)]
pub struct WordCount {
    /// Which characters make words.
    pub mode: WordMode,
}

impl Job for WordCount {
    type Value = u64;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        Some(self)
    }

    fn parameters(&self) -> String {
        format!("{:?}", self.mode)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, u64>) -> Result<(), JobError> {
        for_each_word(split.data, self.mode, |word| emit.emit(word, 1));
        Ok(())
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, u64>, out: &mut dyn Write) -> Result<(), JobError> {
        let total: u64 = values.map(|v| v.to_native()).sum();
        write_key_value(out, key, total)?;
        Ok(())
    }
}

impl Combiner<u64> for WordCount {
    #[inline]
    fn combine(&self, acc: &mut u64, value: u64) {
        *acc += value;
    }

    #[inline]
    fn combine_archived(&self, acc: &mut u64, value: &Archived<u64>) {
        *acc += value.to_native();
    }
}

/// The names of a job's input files by index: known up front, or those of an
/// [`InputFeed`](crate::InputFeed), known by the reduce.
#[derive(Debug, Clone)]
enum Names {
    Given(Vec<Vec<u8>>),
    Fed(FileNames),
}

impl Names {
    fn of(inputs: &Inputs) -> Self {
        Names::Given(inputs.files().iter().map(|f| f.path.as_os_str().as_encoded_bytes().to_vec()).collect())
    }

    /// The name of file `index`; an error if a fed file's name did not arrive (a bug).
    fn get(&self, index: u32) -> Result<&[u8], JobError> {
        let name = match self {
            Names::Given(names) => names.get(index as usize).map(Vec::as_slice),
            Names::Fed(names) => names.get(index).map(|p| p.as_os_str().as_encoded_bytes()),
        };
        name.ok_or_else(|| format!("no name is known for input file {index}").into())
    }
}

/// Inverted index: `word<TAB>N<TAB>doc1,doc2,...` — the N distinct documents (input files,
/// named by their path as given) that contain the word, in byte order of their names.
#[derive(Debug, Clone)]
pub struct InvertedIndex {
    mode: WordMode,
    names: Names,
}

impl InvertedIndex {
    /// An index over the files of `inputs`.
    pub fn new(inputs: &Inputs, mode: WordMode) -> Self {
        InvertedIndex { mode, names: Names::of(inputs) }
    }

    /// An index over the files of an [`InputFeed`](crate::InputFeed), named by `names` (its
    /// [`InputFeed::names`](crate::InputFeed::names)).
    pub fn fed(names: FileNames, mode: WordMode) -> Self {
        InvertedIndex { mode, names: Names::Fed(names) }
    }
}

/// Inserts `doc` into the sorted, duplicate-free `docs`.
fn insert_sorted(docs: &mut Vec<u32>, doc: u32) {
    if let Err(at) = docs.binary_search(&doc) {
        docs.insert(at, doc);
    }
}

impl Job for InvertedIndex {
    type Value = Vec<u32>;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        Some(self)
    }

    fn parameters(&self) -> String {
        format!("{:?}", self.mode)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, Vec<u32>>) -> Result<(), JobError> {
        // Per-split state: each word is emitted once per split.
        // Found by the combining buffer's signatures: a word of at most 16 bytes compares as
        // three integers (no `memcmp` per probe, which dominated with a `HashSet<&[u8]>`).
        let state = RandomState::with_seeds(1, 2, 3, 4);
        let mut seen: HashTable<(u64, u64, &[u8])> = HashTable::new();
        for_each_word(split.data, self.mode, |word| {
            let (w0, w1) = signature(word);
            let hash = table_hash(&state, word, w0, w1);
            let same = |&(a, b, k): &(u64, u64, &[u8])| {
                a == w0 && b == w1 && k.len() == word.len() && (word.len() <= INLINE_KEY || k == word)
            };
            if seen.find(hash, same).is_none() {
                seen.insert_unique(hash, (w0, w1, word), |&(a, b, k)| table_hash(&state, k, a, b));
            }
        });
        let doc = split.file.index;
        for (_, _, word) in seen {
            emit.emit(word, vec![doc]);
        }
        Ok(())
    }

    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, Vec<u32>>,
        out: &mut dyn Write,
    ) -> Result<(), JobError> {
        let mut docs: Vec<u32> = Vec::new();
        for value in values {
            docs.extend(value.iter().map(|d| d.to_native()));
        }
        docs.sort_unstable();
        docs.dedup();
        let mut names = docs.iter().map(|&d| self.names.get(d)).collect::<Result<Vec<&[u8]>, _>>()?;
        names.sort_unstable();
        names.dedup(); // the same path given twice is one document
        out.write_all(key)?;
        write!(out, "\t{}\t", names.len())?;
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(name)?;
        }
        out.write_all(b"\n")?;
        Ok(())
    }
}

impl Combiner<Vec<u32>> for InvertedIndex {
    fn combine(&self, acc: &mut Vec<u32>, value: Vec<u32>) {
        for doc in value {
            insert_sorted(acc, doc);
        }
    }

    fn combine_archived(&self, acc: &mut Vec<u32>, value: &ArchivedValue<Vec<u32>>) {
        for doc in value.iter() {
            insert_sorted(acc, doc.to_native());
        }
    }
}

/// Grep: the lines that match a regular expression, as `path:line_number:line`, in input
/// order (files in the order given, lines in file order).
///
/// Keys are (file index, byte offset of the line), big-endian, so byte order is input order;
/// line numbers come from [`SplitMode::NumberedLines`], so no state crosses splits.
#[derive(Debug, Clone)]
pub struct Grep {
    regex: Regex,
    names: Names,
}

impl Grep {
    /// A grep for `regex` over the files of `inputs`. `^` and `$` match at line boundaries.
    ///
    /// # Errors
    ///
    /// The pattern is not a valid regular expression.
    pub fn new(pattern: &str, inputs: &Inputs) -> Result<Self, regex::Error> {
        Ok(Grep { regex: Self::regex(pattern)?, names: Names::of(inputs) })
    }

    /// A grep for `regex` over the files of an [`InputFeed`](crate::InputFeed), named by
    /// `names` (its [`InputFeed::names`](crate::InputFeed::names)).
    ///
    /// # Errors
    ///
    /// The pattern is not a valid regular expression.
    pub fn fed(pattern: &str, names: FileNames) -> Result<Self, regex::Error> {
        Ok(Grep { regex: Self::regex(pattern)?, names: Names::Fed(names) })
    }

    fn regex(pattern: &str) -> Result<Regex, regex::Error> {
        regex::bytes::RegexBuilder::new(pattern).multi_line(true).build()
    }
}

/// Grep's value: the line's 1-based number in its file, and the line.
pub type GrepLine = (u64, Vec<u8>);

impl Job for Grep {
    type Value = GrepLine;
    type Combiner = NoCombiner;

    fn combiner(&self) -> Option<&NoCombiner> {
        None
    }

    fn split_mode(&self) -> SplitMode {
        SplitMode::NumberedLines
    }

    fn parameters(&self) -> String {
        self.regex.as_str().to_owned()
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, GrepLine>) -> Result<(), JobError> {
        let data = split.data;
        let mut key = [0u8; 12];
        key[..4].copy_from_slice(&split.file.index.to_be_bytes());
        let mut pos = 0usize;
        let mut counted = 0usize; // newlines are counted up to here
        let mut line_number = split.first_line + 1;
        while pos < data.len() {
            // A candidate match; the line it starts in is reported only if the line alone
            // matches (a match may run across a newline).
            let Some(m) = self.regex.find_at(data, pos) else { break };
            let start = data[pos..m.start()].iter().rposition(|&b| b == b'\n').map_or(pos, |i| pos + i + 1);
            let end =
                data[m.start()..].iter().position(|&b| b == b'\n').map_or(data.len(), |i| m.start() + i);
            line_number += data[counted..start].iter().filter(|&&b| b == b'\n').count() as u64;
            counted = start;
            let line = &data[start..end];
            if self.regex.is_match(line) {
                key[4..].copy_from_slice(&(split.offset + start as u64).to_be_bytes());
                emit.emit(&key, (line_number, line.to_vec()));
            }
            pos = end + 1;
        }
        Ok(())
    }

    fn reduce(
        &self,
        key: &[u8],
        values: Values<'_, '_, GrepLine>,
        out: &mut dyn Write,
    ) -> Result<(), JobError> {
        let file = u32::from_be_bytes(key[..4].try_into().expect("grep keys are 12 bytes"));
        let name = self.names.get(file)?;
        for value in values {
            out.write_all(name)?;
            write!(out, ":{}:", value.0.to_native())?;
            out.write_all(&value.1)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_value_lines() {
        let mut out = Vec::new();
        super::write_key_value(&mut out, b"word", 0).unwrap();
        super::write_key_value(&mut out, b"x", u64::MAX).unwrap();
        super::write_key_value(&mut out, b"", 1234).unwrap();
        assert_eq!(out, b"word\t0\nx\t18446744073709551615\n\t1234\n");
    }
}
