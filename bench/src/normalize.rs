//! Normalizing word-count outputs of different programs so they can be
//! compared byte for byte.
//!
//! The canonical form is `word\tcount\n` lines sorted by word in byte order,
//! one line per distinct non-empty word (duplicate words are summed, words
//! with an empty name are dropped — `tr -cs A-Za-z '\n'` emits an empty first
//! line when the input starts with a non-letter, which `uniq -c` then counts).

use anyhow::{Context, Result, bail};

/// The line format of a word-count output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountFormat {
    /// `word\tcount` (wc-baseline, expected Spillway output). The split is at
    /// the last tab.
    Tsv,
    /// `uniq -c` output: optional leading blanks, the count, one space, the
    /// word (which may be empty).
    UniqC,
    /// Per line: `Tsv` if the line has a tab, else `UniqC` if it starts
    /// (after blanks) with a digit, else `word count` split at the last space.
    Auto,
}

fn parse_count(digits: &[u8], line_no: usize) -> Result<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        bail!("line {line_no}: bad count {:?}", String::from_utf8_lossy(digits));
    }
    std::str::from_utf8(digits)?.parse().with_context(|| format!("line {line_no}: count out of range"))
}

fn parse_uniq_c(line: &[u8], line_no: usize) -> Result<(&[u8], u64)> {
    let start = line.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(line.len());
    let rest = &line[start..];
    let end = rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
    let count = parse_count(&rest[..end], line_no)?;
    let word = match rest.get(end) {
        None => &rest[end..],
        Some(b' ') => &rest[end + 1..],
        Some(_) => bail!("line {line_no}: expected a space after the count"),
    };
    Ok((word, count))
}

fn split_last(line: &[u8], sep: u8, line_no: usize) -> Result<(&[u8], u64)> {
    let Some(pos) = line.iter().rposition(|b| *b == sep) else {
        bail!("line {line_no}: no separator in {:?}", String::from_utf8_lossy(line));
    };
    Ok((&line[..pos], parse_count(&line[pos + 1..], line_no)?))
}

fn parse_line(line: &[u8], format: CountFormat, line_no: usize) -> Result<(&[u8], u64)> {
    match format {
        CountFormat::Tsv => split_last(line, b'\t', line_no),
        CountFormat::UniqC => parse_uniq_c(line, line_no),
        CountFormat::Auto => {
            if line.contains(&b'\t') {
                split_last(line, b'\t', line_no)
            } else if line.iter().find(|b| **b != b' ').is_some_and(u8::is_ascii_digit) {
                parse_uniq_c(line, line_no)
            } else {
                split_last(line, b' ', line_no)
            }
        }
    }
}

/// Parses a word-count output into `(word, count)` pairs (in input order;
/// empty words included). A trailing `\r` is not stripped; a missing final
/// newline is accepted.
pub fn parse_counts(input: &[u8], format: CountFormat) -> Result<Vec<(&[u8], u64)>> {
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    if body.is_empty() && input.len() <= 1 {
        return Ok(Vec::new());
    }
    body.split(|b| *b == b'\n').enumerate().map(|(i, line)| parse_line(line, format, i + 1)).collect()
}

/// Canonicalizes `(word, count)` pairs: drops empty words, sums duplicates,
/// sorts by word (byte order) and renders `word\tcount\n` lines.
pub fn canonicalize(mut pairs: Vec<(&[u8], u64)>) -> Vec<u8> {
    pairs.retain(|(w, _)| !w.is_empty());
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(pairs.iter().map(|(w, _)| w.len() + 8).sum());
    let mut i = 0;
    while i < pairs.len() {
        let word = pairs[i].0;
        let mut total = 0u64;
        while i < pairs.len() && pairs[i].0 == word {
            total += pairs[i].1;
            i += 1;
        }
        out.extend_from_slice(word);
        out.push(b'\t');
        out.extend_from_slice(total.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Normalizes an output in the given format to the canonical form.
pub fn normalize(input: &[u8], format: CountFormat) -> Result<Vec<u8>> {
    Ok(canonicalize(parse_counts(input, format)?))
}

/// Normalizes `uniq -c` output (`"  count word"`) to sorted `word\tcount`.
pub fn normalize_uniq_c(input: &[u8]) -> Result<Vec<u8>> {
    normalize(input, CountFormat::UniqC)
}

/// Normalizes `word\tcount` output (any order) to the canonical form.
pub fn normalize_tsv(input: &[u8]) -> Result<Vec<u8>> {
    normalize(input, CountFormat::Tsv)
}

/// Where two canonical outputs first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// 1-based line number of the first differing line.
    pub line: usize,
    /// That line in the left output (`None` if it has ended).
    pub left: Option<String>,
    /// That line in the right output (`None` if it has ended).
    pub right: Option<String>,
}

/// Compares two outputs line by line; `None` if they are identical.
pub fn first_difference(left: &[u8], right: &[u8]) -> Option<Difference> {
    if left == right {
        return None;
    }
    let mut l = left.split(|b| *b == b'\n');
    let mut r = right.split(|b| *b == b'\n');
    let mut line = 1;
    loop {
        match (l.next(), r.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (a, b) => {
                let show = |x: Option<&[u8]>| x.map(|s| String::from_utf8_lossy(s).into_owned());
                return Some(Difference { line, left: show(a), right: show(b) });
            }
        }
    }
}

/// Number of lines (distinct words) and the sum of counts (total words) of a
/// canonical output.
pub fn summarize(canonical: &[u8]) -> Result<(u64, u64)> {
    let pairs = parse_counts(canonical, CountFormat::Tsv)?;
    Ok((pairs.len() as u64, pairs.iter().map(|(_, c)| c).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniq_c_output() {
        // What `printf '..a b\nb Ab\n' | tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c` prints.
        let input = b"      1 \n      1 Ab\n      1 a\n      2 b\n";
        assert_eq!(normalize_uniq_c(input).unwrap(), b"Ab\t1\na\t1\nb\t2\n");
        // Counts wider than the padding, no trailing newline, duplicates summed.
        let input = b"12345678 zz\n      3 a\n      1 zz";
        assert_eq!(normalize_uniq_c(input).unwrap(), b"a\t3\nzz\t12345679\n");
        assert!(normalize_uniq_c(b"  x word\n").is_err());
        assert!(normalize_uniq_c(b"  12x word\n").is_err());
        assert_eq!(normalize_uniq_c(b"").unwrap(), b"");
    }

    #[test]
    fn tsv_and_auto() {
        assert_eq!(normalize_tsv(b"b\t2\na\t1\n").unwrap(), b"a\t1\nb\t2\n");
        assert!(normalize_tsv(b"b 2\n").is_err());
        let mixed = b"b\t2\n   4 c\nd 5\n";
        assert_eq!(normalize(mixed, CountFormat::Auto).unwrap(), b"b\t2\nc\t4\nd\t5\n");
        // Byte order: uppercase before lowercase.
        assert_eq!(normalize_tsv(b"a\t1\nZ\t1\n").unwrap(), b"Z\t1\na\t1\n");
    }

    #[test]
    fn differences() {
        assert_eq!(first_difference(b"a\t1\n", b"a\t1\n"), None);
        let d = first_difference(b"a\t1\nb\t2\n", b"a\t1\nb\t3\n").unwrap();
        assert_eq!(d.line, 2);
        assert_eq!(d.left.as_deref(), Some("b\t2"));
        assert_eq!(d.right.as_deref(), Some("b\t3"));
        let d = first_difference(b"a\t1\n", b"a\t1\nb\t1\n").unwrap();
        assert_eq!((d.line, d.left.as_deref()), (2, Some("")));
        assert_eq!(summarize(b"a\t1\nb\t3\n").unwrap(), (2, 4));
    }
}
