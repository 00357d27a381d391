//! A reimplementation of the Sort Benchmark's `valsort` 1.5 validator, with the same report
//! text and exit status.
//!
//! valsort checks that the keys of a record file never go down, counts adjacent duplicate keys,
//! and prints a checksum — the sum mod 2^128 of the zlib CRC-32 of every record — that does not
//! depend on the order of the records, so comparing it before and after a sort shows that the
//! sort changed no record. [`validate_file`] reads the file in parallel chunks and stitches the
//! per-chunk summaries together exactly like valsort's partition summaries.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::RECORD_LEN;

/// Records per chunk read by one [`validate_file`] worker (1 MB: stays in L2 while scanned).
const FILE_CHUNK_RECORDS: u64 = 10_000;

/// The outcome of validating a record file: everything valsort reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Number of records.
    pub records: u64,
    /// Sum mod 2^128, over all records, of the zlib CRC-32 of each 100-byte record.
    pub checksum: u128,
    /// Number of adjacent pairs of records with equal keys.
    pub duplicates: u64,
    /// Number of adjacent pairs whose key goes down (the later key is smaller).
    pub unordered: u64,
    /// 0-based index of the first record whose key is smaller than the key before it, if any.
    pub first_unordered: Option<u64>,
}

impl Report {
    /// Writes valsort's report text (valsort sends it to standard error), for example
    ///
    /// ```text
    /// Records: 1000000
    /// Checksum: 7a19cff467438
    /// Duplicate keys: 0
    /// SUCCESS - all records are in order
    /// ```
    ///
    /// or, when some records are out of order,
    ///
    /// ```text
    /// First unordered record is record 2
    /// Records: 1000000
    /// Checksum: 7a19cff467438
    /// ERROR - there are 500117 unordered records
    /// ```
    pub fn write_report(&self, w: &mut impl Write) -> io::Result<()> {
        write!(w, "{self}")
    }

    /// Whether no key is smaller than the key before it.
    #[must_use]
    pub fn is_sorted(&self) -> bool {
        self.unordered == 0
    }

    /// valsort's exit status: 0 if the records are in order, 1 otherwise.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        if self.is_sorted() { 0 } else { 1 }
    }
}

/// The same text as [`Report::write_report`].
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_sorted() {
            // `first_unordered` is always set when `unordered > 0`; valsort would print 0.
            let first = self.first_unordered.unwrap_or(0);
            writeln!(f, "First unordered record is record {first}")?;
        }
        writeln!(f, "Records: {}", self.records)?;
        writeln!(f, "Checksum: {:x}", self.checksum)?;
        if self.is_sorted() {
            writeln!(f, "Duplicate keys: {}", self.duplicates)?;
            writeln!(f, "SUCCESS - all records are in order")
        } else {
            writeln!(f, "ERROR - there are {} unordered records", self.unordered)
        }
    }
}

/// Why a file could not be validated. The [`Display`](fmt::Display) text is valsort's message.
#[derive(Debug)]
pub enum ValsortError {
    /// The file could not be opened or read.
    Io {
        /// The file being validated.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The input holds no records at all.
    Empty,
    /// The input's length is not a multiple of the record length.
    PartialRecord,
}

impl ValsortError {
    /// valsort's exit status for this failure (always 1).
    pub fn exit_code(&self) -> i32 {
        1
    }

    fn io(path: &Path, source: io::Error) -> Self {
        ValsortError::Io { path: path.to_path_buf(), source }
    }
}

impl fmt::Display for ValsortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValsortError::Io { path, source } => {
                // Like perror(3): "path: message", without Rust's " (os error N)" suffix.
                let message = source.to_string();
                let message = match message.rfind(" (os error ") {
                    Some(cut) if source.raw_os_error().is_some() => &message[..cut],
                    _ => &message,
                };
                write!(f, "{}: {message}", path.display())
            }
            ValsortError::Empty => f.write_str("there must be at least one record to be validated"),
            ValsortError::PartialRecord => f.write_str("partial record found at end"),
        }
    }
}

impl std::error::Error for ValsortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ValsortError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Summary of a non-empty run of whole records, like valsort's partition summary: enough to
/// stitch consecutive runs together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    records: u64,
    checksum: u128,
    duplicates: u64,
    unordered: u64,
    /// Index within this run.
    first_unordered: Option<u64>,
    first_key: u128,
    last_key: u128,
}

/// The 10-byte key of a record as an integer that orders like `memcmp` on the key bytes.
#[inline(always)]
fn key(rec: &[u8]) -> u128 {
    let head: [u8; 16] = rec[..16].try_into().expect("a record is longer than 16 bytes");
    u128::from_be_bytes(head) >> 48
}

impl Summary {
    /// Summarizes `data`, which must be a non-empty sequence of whole records.
    fn of(data: &[u8]) -> Self {
        debug_assert!(!data.is_empty() && data.len().is_multiple_of(RECORD_LEN));
        let template = crc32fast::Hasher::new();
        let crc = |rec: &[u8]| {
            let mut hasher = template.clone();
            hasher.update(rec);
            u128::from(hasher.finalize())
        };
        let mut recs = data.chunks_exact(RECORD_LEN);
        let first = recs.next().expect("at least one record");
        let first_key = key(first);
        let mut prev = first_key;
        let mut checksum = crc(first);
        let (mut duplicates, mut unordered) = (0u64, 0u64);
        for rec in recs {
            let k = key(rec);
            checksum = checksum.wrapping_add(crc(rec));
            duplicates += u64::from(k == prev);
            unordered += u64::from(k < prev);
            prev = k;
        }
        let first_unordered = if unordered == 0 {
            None
        } else {
            // A second pass over the keys only, stopping at the first descent.
            data.chunks_exact(RECORD_LEN)
                .map(key)
                .zip(data.chunks_exact(RECORD_LEN).skip(1).map(key))
                .position(|(a, b)| b < a)
                .map(|i| i as u64 + 1)
        };
        Summary {
            records: (data.len() / RECORD_LEN) as u64,
            checksum,
            duplicates,
            unordered,
            first_unordered,
            first_key,
            last_key: prev,
        }
    }

    /// Extends this summary with the run of records that immediately follows it.
    fn append(&mut self, next: &Summary) {
        if next.first_key == self.last_key {
            self.duplicates += 1;
        } else if next.first_key < self.last_key {
            self.unordered += 1;
            self.first_unordered.get_or_insert(self.records);
        }
        if self.first_unordered.is_none() {
            self.first_unordered = next.first_unordered.map(|i| self.records + i);
        }
        self.records += next.records;
        self.checksum = self.checksum.wrapping_add(next.checksum);
        self.duplicates += next.duplicates;
        self.unordered += next.unordered;
        self.last_key = next.last_key;
    }

    fn report(&self) -> Report {
        Report {
            records: self.records,
            checksum: self.checksum,
            duplicates: self.duplicates,
            unordered: self.unordered,
            first_unordered: self.first_unordered,
        }
    }
}

/// Checks the length of an input of `len` bytes, in valsort's order: a partial record is
/// reported even when there is no whole one.
fn check_len(len: u64) -> Result<(), ValsortError> {
    if !len.is_multiple_of(RECORD_LEN as u64) {
        Err(ValsortError::PartialRecord)
    } else if len == 0 {
        Err(ValsortError::Empty)
    } else {
        Ok(())
    }
}

/// Validates records held in memory, on the calling thread.
///
/// Fails with [`ValsortError::PartialRecord`] if `data.len()` is not a multiple of 100 and
/// with [`ValsortError::Empty`] if `data` is empty.
pub fn validate_bytes(data: &[u8]) -> Result<Report, ValsortError> {
    check_len(data.len() as u64)?;
    Ok(Summary::of(data).report())
}

/// Validates the record file at `path` using `threads` reader threads (`0` is treated as `1`);
/// the report does not depend on the number of threads.
///
/// Regular files are read in 1 MB chunks with positioned reads, each summarized on its own and
/// then stitched in file order; other files (pipes, devices) are read sequentially.
pub fn validate_file(path: &Path, threads: usize) -> Result<Report, ValsortError> {
    validate_file_chunked(path, threads, FILE_CHUNK_RECORDS)
}

fn validate_file_chunked(path: &Path, threads: usize, chunk_records: u64) -> Result<Report, ValsortError> {
    let file = File::open(path).map_err(|e| ValsortError::io(path, e))?;
    let meta = file.metadata().map_err(|e| ValsortError::io(path, e))?;
    if !meta.is_file() {
        return validate_stream(path, file, chunk_records);
    }
    let len = meta.len();
    check_len(len)?;
    let count = len / RECORD_LEN as u64;
    let chunks = count.div_ceil(chunk_records);
    let threads = u64::try_from(threads.max(1)).unwrap_or(u64::MAX).min(chunks);
    let job = ValJob {
        file: &file,
        count,
        chunk_records,
        chunks,
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    };
    let mut summaries = if threads == 1 {
        job.run()
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|_| scope.spawn(|| job.run())).collect();
            let mut all = Vec::new();
            let mut error = None;
            for worker in workers {
                match worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)) {
                    Ok(part) => all.extend(part),
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            error.map_or(Ok(all), Err)
        })
    }
    .map_err(|e| ValsortError::io(path, e))?;
    summaries.sort_unstable_by_key(|&(chunk, _)| chunk);
    debug_assert_eq!(summaries.len() as u64, chunks);
    let mut parts = summaries.into_iter().map(|(_, summary)| summary);
    let mut total = parts.next().expect("a non-empty file has a chunk");
    for part in parts {
        total.append(&part);
    }
    Ok(total.report())
}

/// Shared state of one [`validate_file`] call: workers claim chunk numbers from `next`.
struct ValJob<'a> {
    file: &'a File,
    count: u64,
    chunk_records: u64,
    chunks: u64,
    next: AtomicU64,
    failed: AtomicBool,
}

impl ValJob<'_> {
    /// Summarizes chunks until none are left, returning `(chunk number, summary)` pairs.
    fn run(&self) -> io::Result<Vec<(u64, Summary)>> {
        let chunk_len =
            usize::try_from(self.chunk_records.min(self.count)).expect("chunk fits in memory") * RECORD_LEN;
        let mut buf = vec![0u8; chunk_len];
        let mut out = Vec::new();
        loop {
            let chunk = self.next.fetch_add(1, Ordering::Relaxed);
            if chunk >= self.chunks || self.failed.load(Ordering::Relaxed) {
                return Ok(out);
            }
            let first = chunk * self.chunk_records;
            let records = self.chunk_records.min(self.count - first);
            // `records <= chunk_records`, which was just shown to fit in a `usize`.
            let bytes = &mut buf[..records as usize * RECORD_LEN];
            if let Err(err) = self.file.read_exact_at(bytes, first * RECORD_LEN as u64) {
                self.failed.store(true, Ordering::Relaxed);
                return Err(err);
            }
            out.push((chunk, Summary::of(bytes)));
        }
    }
}

/// Sequential validation of a file that cannot be read at offsets (a pipe, a device).
fn validate_stream(path: &Path, mut reader: impl Read, chunk_records: u64) -> Result<Report, ValsortError> {
    let chunk_len = usize::try_from(chunk_records).unwrap_or(usize::MAX / RECORD_LEN) * RECORD_LEN;
    let mut buf = vec![0u8; chunk_len];
    let mut total: Option<Summary> = None;
    loop {
        // Fill the buffer completely unless the input ends first.
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ValsortError::io(path, e)),
            }
        }
        let whole = filled / RECORD_LEN * RECORD_LEN;
        if whole > 0 {
            let part = Summary::of(&buf[..whole]);
            match &mut total {
                Some(total) => total.append(&part),
                None => total = Some(part),
            }
        }
        if filled < buf.len() {
            if filled != whole {
                return Err(ValsortError::PartialRecord);
            }
            return total.map(|t| t.report()).ok_or(ValsortError::Empty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::KEY_LEN;
    use crate::records::gensort::{fill_records, generate_file};

    fn records(start: u128, count: usize, ascii: bool) -> Vec<u8> {
        let mut buf = vec![0u8; count * RECORD_LEN];
        fill_records(start, &mut buf, ascii);
        buf
    }

    /// valsort's algorithm, one record at a time, written as plainly as possible.
    fn naive(data: &[u8]) -> Report {
        let recs: Vec<&[u8]> = data.chunks(RECORD_LEN).collect();
        let mut report = Report {
            records: recs.len() as u64,
            checksum: 0,
            duplicates: 0,
            unordered: 0,
            first_unordered: None,
        };
        for (i, rec) in recs.iter().enumerate() {
            report.checksum = report.checksum.wrapping_add(u128::from(crc32fast::hash(rec)));
            if i > 0 {
                match recs[i - 1][..KEY_LEN].cmp(&rec[..KEY_LEN]) {
                    std::cmp::Ordering::Equal => report.duplicates += 1,
                    std::cmp::Ordering::Greater => {
                        report.unordered += 1;
                        report.first_unordered.get_or_insert(i as u64);
                    }
                    std::cmp::Ordering::Less => {}
                }
            }
        }
        report
    }

    /// `data`'s records sorted by key (stable): a bucket sort on the top bits of the key, so
    /// that sorting a million records stays quick in debug builds.
    pub(super) fn sorted(data: &[u8]) -> Vec<u8> {
        let keys: Vec<u128> = data.chunks_exact(RECORD_LEN).map(key).collect();
        let bits = keys.len().next_power_of_two().trailing_zeros().max(1);
        let bucket = |k: u128| (k >> (8 * KEY_LEN as u32 - bits)) as usize;
        let mut starts = vec![0usize; (1 << bits) + 1];
        for &k in &keys {
            starts[bucket(k) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        let mut order = vec![0usize; keys.len()];
        let mut next = starts.clone();
        for (i, &k) in keys.iter().enumerate() {
            order[next[bucket(k)]] = i;
            next[bucket(k)] += 1;
        }
        for b in starts.windows(2) {
            if b[1] - b[0] > 1 {
                order[b[0]..b[1]].sort_by_key(|&i| keys[i]);
            }
        }
        let mut out = Vec::with_capacity(data.len());
        for i in order {
            out.extend_from_slice(&data[i * RECORD_LEN..(i + 1) * RECORD_LEN]);
        }
        out
    }

    fn text(report: &Report) -> String {
        let mut out = Vec::new();
        report.write_report(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A small file with duplicates and descents in awkward places (first, last, chunk edges).
    fn tricky_records() -> Vec<u8> {
        let mut data = sorted(&records(0, 60, false));
        let rec = |i: usize| i * RECORD_LEN..(i + 1) * RECORD_LEN;
        // Duplicate keys (different payloads) at 5/6 and across 9/10.
        let k5: Vec<u8> = data[rec(5)][..KEY_LEN].to_vec();
        data[rec(6)][..KEY_LEN].copy_from_slice(&k5);
        let k9: Vec<u8> = data[rec(9)][..KEY_LEN].to_vec();
        data[rec(10)][..KEY_LEN].copy_from_slice(&k9);
        // Descents: swap 20/21, 34/35 (record 35 is the first of a 7-record chunk), and make
        // the last record the smallest.
        for (a, b) in [(20, 21), (34, 35)] {
            let tmp = data[rec(a)].to_vec();
            data.copy_within(rec(b), a * RECORD_LEN);
            data[rec(b)].copy_from_slice(&tmp);
        }
        data[rec(59)][..KEY_LEN].fill(0);
        data
    }

    #[test]
    fn million_record_ascii_file_unsorted_then_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ascii");
        generate_file(&path, 0, 1_000_000, true, 2).unwrap();
        let report = validate_file(&path, 2).unwrap();
        assert_eq!(
            text(&report),
            "First unordered record is record 2\nRecords: 1000000\nChecksum: 7a19cff467438\n\
             ERROR - there are 500117 unordered records\n"
        );
        assert_eq!(report.exit_code(), 1);
        assert!(!report.is_sorted());

        let data = sorted(&std::fs::read(&path).unwrap());
        std::fs::write(&path, &data).unwrap();
        let report = validate_file(&path, 2).unwrap();
        assert_eq!(
            text(&report),
            "Records: 1000000\nChecksum: 7a19cff467438\nDuplicate keys: 0\n\
             SUCCESS - all records are in order\n"
        );
        assert_eq!(report.exit_code(), 0);
    }

    #[test]
    fn million_record_binary_file_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary");
        generate_file(&path, 0, 1_000_000, false, 2).unwrap();
        let data = sorted(&std::fs::read(&path).unwrap());
        std::fs::write(&path, &data).unwrap();
        let report = validate_file(&path, 2).unwrap();
        assert_eq!(
            text(&report),
            "Records: 1000000\nChecksum: 7a0e0d4868cd4\nDuplicate keys: 0\n\
             SUCCESS - all records are in order\n"
        );
        assert!(report.is_sorted());
    }

    #[test]
    fn out_of_order_matches_the_naive_computation() {
        for ascii in [false, true] {
            let data = records(0, 5_000, ascii);
            let expected = naive(&data);
            assert!(expected.unordered > 2_000);
            assert_eq!(validate_bytes(&data).unwrap(), expected);
        }
        let data = tricky_records();
        let expected = naive(&data);
        assert_eq!(expected.duplicates, 2);
        assert_eq!(expected.unordered, 3);
        assert_eq!(expected.first_unordered, Some(21));
        let report = validate_bytes(&data).unwrap();
        assert_eq!(report, expected);
        assert!(text(&report).starts_with("First unordered record is record 21\n"));
        assert!(text(&report).ends_with("ERROR - there are 3 unordered records\n"));
    }

    #[test]
    fn chunk_stitching_is_independent_of_threads_and_chunk_size() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = [
            ("tricky", tricky_records()),
            ("sorted", sorted(&records(0, 60, true))),
            ("random", records(3, 60, false)),
            ("one", records(0, 1, false)),
            ("all-equal", {
                let mut data = records(0, 23, false);
                for rec in data.chunks_exact_mut(RECORD_LEN) {
                    rec[..KEY_LEN].fill(b'k');
                }
                data
            }),
        ];
        for (name, data) in &inputs {
            let expected = naive(data);
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            for threads in 1..=4 {
                for chunk in [1, 2, 7, 10, 59, 60, 1_000] {
                    assert_eq!(
                        validate_file_chunked(&path, threads, chunk).unwrap(),
                        expected,
                        "{name}: threads={threads} chunk={chunk}"
                    );
                }
                assert_eq!(validate_file(&path, threads).unwrap(), expected, "{name}");
            }
            for chunk in [1, 7, 1_000] {
                let stream = validate_stream(&path, data.as_slice(), chunk).unwrap();
                assert_eq!(stream, expected, "{name}: stream chunk={chunk}");
            }
        }
    }

    #[test]
    fn sorted_with_duplicates_reports_them() {
        let mut data = sorted(&records(0, 100, false));
        let second_key: Vec<u8> = data[100..110].to_vec();
        data[..KEY_LEN].copy_from_slice(&second_key);
        let report = validate_bytes(&data).unwrap();
        assert_eq!(report.duplicates, 1);
        assert_eq!(report.first_unordered, None);
        assert_eq!(report, naive(&data));
        assert!(text(&report).ends_with("Duplicate keys: 1\nSUCCESS - all records are in order\n"));
    }

    #[test]
    fn empty_and_partial_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("empty", Vec::new(), "there must be at least one record to be validated"),
            ("short", vec![7; 50], "partial record found at end"),
            ("partial", records(0, 3, false)[..250].to_vec(), "partial record found at end"),
            ("extra", [records(0, 2, true), vec![b'x']].concat(), "partial record found at end"),
        ];
        for (name, data, message) in cases {
            assert_eq!(validate_bytes(&data).unwrap_err().to_string(), message, "{name}");
            let path = dir.path().join(name);
            std::fs::write(&path, &data).unwrap();
            for threads in [1, 3] {
                let err = validate_file(&path, threads).unwrap_err();
                assert_eq!(err.to_string(), message, "{name}");
                assert_eq!(err.exit_code(), 1);
            }
            let err = validate_stream(&path, data.as_slice(), 1).unwrap_err();
            assert_eq!(err.to_string(), message, "{name}: stream");
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-file");
        let err = validate_file(&path, 2).unwrap_err();
        assert!(matches!(err, ValsortError::Io { .. }));
        assert_eq!(err.to_string(), format!("{}: No such file or directory", path.display()));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn checksum_prints_lowercase_hex_without_leading_zeros() {
        let mut report = validate_bytes(&records(0, 1, false)).unwrap();
        report.checksum = 0x0abc_def0;
        assert!(text(&report).contains("\nChecksum: abcdef0\n"));
        report.checksum = u128::MAX;
        assert!(text(&report).contains(&format!("\nChecksum: {}\n", "f".repeat(32))));
    }

    #[test]
    fn key_orders_like_memcmp() {
        let mut a = [0u8; RECORD_LEN];
        let mut b = [0u8; RECORD_LEN];
        a[9] = 1;
        b[10] = 0xFF; // beyond the key: must not matter
        assert!(key(&a) > key(&b));
        b[..KEY_LEN].fill(0xFF);
        a[..KEY_LEN].fill(0xFF);
        assert_eq!(key(&a), key(&b));
        a[0] = 0x80;
        assert!(key(&a) < key(&b));
    }
}
