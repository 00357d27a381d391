//! Plain runs of fixed-size records, and [`RecordCursor`], the [`MergeSource`] that merges
//! them.
//!
//! A plain record run is what the record sort spills: records of one size, concatenated in
//! byte order, nothing else (no header, no framing, no checksum). It is read with `pread`,
//! from any thread, through a buffer per cursor, so that a merge over F runs holds F buffers
//! and no mapping; or, opened with [`RecordRun::open_direct`], with `O_DIRECT` through
//! io_uring ([`DirectStream`]: several reads in flight per cursor, past the page cache).

use std::cmp::Ordering;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::MergeSource;
use crate::io::direct::{self, DirectStream, ReadRing};
use crate::{Error, Result};

/// An open plain run of fixed-size records in byte order (see the module docs). Cursors over
/// ranges of it ([`RecordRun::cursor`]) may be used from several threads at once.
#[derive(Debug)]
pub struct RecordRun {
    file: File,
    path: PathBuf,
    size: usize,
    records: u64,
    /// Opened by [`RecordRun::open_direct`]: read only through aligned reads.
    direct: bool,
}

impl RecordRun {
    /// Opens the run at `path`, whose records are `size` bytes long.
    ///
    /// # Errors
    ///
    /// `size` is 0, the file cannot be opened, or its length is not a whole number of
    /// records ([`Error::Corrupt`], at the start of the last, partial record).
    pub fn open(path: &Path, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::Config("records of 0 bytes".into()));
        }
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Self::with_file(file, path, size, false)
    }

    /// As [`RecordRun::open`], for reading through [`RecordRun::direct_cursor`]: the file is
    /// opened with `O_DIRECT` where its filesystem allows it ([`RecordRun::is_direct`]).
    ///
    /// # Errors
    ///
    /// As [`RecordRun::open`].
    pub fn open_direct(path: &Path, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(Error::Config("records of 0 bytes".into()));
        }
        let (file, direct) = direct::open_read(path)?;
        Self::with_file(file, path, size, direct)
    }

    fn with_file(file: File, path: &Path, size: usize, direct: bool) -> Result<Self> {
        let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
        let partial = len % size as u64;
        if partial != 0 {
            return Err(Error::corrupt(path, len - partial, format!("a partial record of {partial} bytes")));
        }
        Ok(RecordRun { file, path: path.to_owned(), size, records: len / size as u64, direct })
    }

    /// Whether the run was opened with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of records.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The size of a record in bytes.
    pub fn record_size(&self) -> usize {
        self.size
    }

    /// The index of the first record that is not less than `key` (compared as bytes, like
    /// `<[u8]>::cmp`: a whole record, or a prefix of one), by binary search.
    ///
    /// # Errors
    ///
    /// A read fails.
    pub fn lower_bound(&self, key: &[u8]) -> Result<u64> {
        let mut record = vec![0u8; self.size];
        let (mut lo, mut hi) = (0u64, self.records);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.read_at(&mut record, mid)?;
            if record.as_slice() < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// A cursor on the records `range` of this run, reading through `buffer` (as many whole
    /// records at a time as its length holds, at least one; taken back by
    /// [`RecordCursor::into_buffer`]).
    ///
    /// # Errors
    ///
    /// The first read fails.
    ///
    /// # Panics
    ///
    /// When `range` reaches past the run's end.
    pub fn cursor(&self, range: Range<u64>, mut buffer: Vec<u8>) -> Result<RecordCursor<'_>> {
        assert!(
            range.start <= range.end && range.end <= self.records,
            "records {range:?} of {}",
            self.records
        );
        if buffer.len() < self.size {
            buffer.resize(self.size, 0);
        }
        let mut cursor = RecordCursor {
            run: self,
            size: self.size,
            next: range.start,
            end: range.end,
            buffer,
            stream: None,
            pos: 0,
            len: 0,
            prefix: u128::MAX,
            done: false,
        };
        cursor.refill()?;
        Ok(cursor)
    }

    /// A cursor on the records `range` of this run reading through the slots `stream` of
    /// `ring` ([`DirectStream`]: [`direct::READ_DEPTH`] reads in flight). The ring's records
    /// must be at least this run's record size.
    ///
    /// # Errors
    ///
    /// The first read fails.
    ///
    /// # Panics
    ///
    /// When `range` reaches past the run's end.
    pub fn direct_cursor<'r>(
        &'r self,
        range: Range<u64>,
        ring: &'r ReadRing,
        stream: usize,
    ) -> Result<RecordCursor<'r>> {
        assert!(
            range.start <= range.end && range.end <= self.records,
            "records {range:?} of {}",
            self.records
        );
        let size = self.size as u64;
        let mut cursor = RecordCursor {
            run: self,
            size: self.size,
            next: range.end,
            end: range.end,
            buffer: Vec::new(),
            stream: None,
            pos: 0,
            len: 0,
            prefix: u128::MAX,
            done: range.is_empty(),
        };
        if !range.is_empty() {
            let stream = DirectStream::new(
                ring,
                stream,
                &self.file,
                &self.path,
                range.start * size,
                range.end * size,
            )?;
            cursor.len = stream.window().len();
            cursor.stream = Some(stream);
            cursor.settle()?;
        }
        Ok(cursor)
    }

    /// Reads whole records from record `first` on into `buf`.
    fn read_at(&self, buf: &mut [u8], first: u64) -> Result<()> {
        let offset = first * self.size as u64;
        if self.direct {
            return direct::read_exact_at(&self.file, &self.path, offset, buf);
        }
        self.file.read_exact_at(buf, offset).map_err(|e| Error::io("read", &self.path, e))
    }
}

/// The first 16 bytes of a record, big-endian, zero-padded.
#[inline(always)]
fn head16(record: &[u8]) -> u128 {
    match record.first_chunk::<16>() {
        Some(head) => u128::from_be_bytes(*head),
        None => {
            let mut head = [0u8; 16];
            head[..record.len()].copy_from_slice(record);
            u128::from_be_bytes(head)
        }
    }
}

/// A range of a [`RecordRun`]'s records, read through a buffer: the [`MergeSource`] of the
/// record sort's merges.
///
/// Its prefix is the head record's first 16 bytes read as a big-endian `u128`, zero-padded
/// ([`LoserTree::peek_prefix`](super::LoserTree::peek_prefix) gives it, so a caller can
/// compare keys of up to 16 bytes without loading the record); records with equal prefixes
/// are compared from byte 16 on. Records are whole-record byte order, so equal records are
/// identical: which source wins a tie (the lower index) shows in no output byte.
#[derive(Debug)]
pub struct RecordCursor<'r> {
    run: &'r RecordRun,
    size: usize,
    /// The next record to read into the buffer, and the end of the range.
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    /// Direct reads: the bytes come from the stream's window instead of `buffer`.
    stream: Option<DirectStream<'r>>,
    /// The head's offset in the buffer (or window), and the bytes read into it.
    pos: usize,
    len: usize,
    /// [`head16`] of the head (`u128::MAX` when done).
    prefix: u128,
    done: bool,
}

impl RecordCursor<'_> {
    /// Reads the next buffer of records; done when the range has none left.
    #[cold]
    #[inline(never)]
    fn refill(&mut self) -> Result<()> {
        if self.stream.is_some() {
            return self.settle();
        }
        let capacity = (self.buffer.len() / self.size) as u64;
        let n = capacity.min(self.end - self.next) as usize;
        if n == 0 {
            self.done = true;
            self.prefix = u128::MAX;
            return Ok(());
        }
        let bytes = n * self.size;
        self.run.read_at(&mut self.buffer[..bytes], self.next)?;
        self.next += n as u64;
        self.pos = 0;
        self.len = bytes;
        self.prefix = head16(&self.buffer[..self.size]);
        Ok(())
    }

    /// Direct reads: moves the window on until it holds the head record whole (the window's
    /// last, partial record going in front of the next read's bytes), then takes its prefix;
    /// done when the range has no record left.
    fn settle(&mut self) -> Result<()> {
        while self.len - self.pos < self.size {
            let stream = self.stream.as_mut().expect("a direct cursor");
            let keep = self.len - self.pos;
            let more = stream.advance(keep)?;
            self.len = stream.window().len();
            self.pos = 0;
            if !more {
                if self.len == 0 {
                    self.done = true;
                    self.prefix = u128::MAX;
                    return Ok(());
                }
                if self.len < self.size {
                    let run = self.run;
                    return Err(Error::corrupt(
                        &run.path,
                        0,
                        format!("the range ends inside a record ({} bytes of it)", self.len),
                    ));
                }
            }
        }
        self.prefix = head16(&self.bytes()[self.pos..self.pos + self.size]);
        Ok(())
    }

    /// The bytes the head is in.
    #[inline(always)]
    fn bytes(&self) -> &[u8] {
        match &self.stream {
            Some(stream) => stream.window(),
            None => &self.buffer,
        }
    }

    /// The head record (meaningless once the cursor is exhausted).
    #[inline(always)]
    pub fn head(&self) -> &[u8] {
        &self.bytes()[self.pos..self.pos + self.size]
    }

    /// The read buffer, to reuse (empty for a direct cursor).
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }
}

impl MergeSource for RecordCursor<'_> {
    type Prefix = u128;
    type Error = Error;
    const EXHAUSTED: u128 = u128::MAX;

    #[inline(always)]
    fn prefix(&self) -> u128 {
        self.prefix
    }

    #[inline(always)]
    fn is_exhausted(&self) -> bool {
        self.done
    }

    #[inline(always)]
    fn cmp_heads(&self, other: &Self) -> Ordering {
        let from = 16.min(self.size);
        self.head()[from..].cmp(&other.head()[from..])
    }

    #[inline(always)]
    fn advance(&mut self) -> Result<()> {
        self.pos += self.size;
        if self.pos + self.size > self.len {
            return self.refill();
        }
        self.prefix = head16(&self.bytes()[self.pos..self.pos + self.size]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::LoserTree;
    use super::*;

    /// Writes `records` (sorted here) as a plain run and opens it.
    fn write_run(dir: &Path, name: &str, size: usize, mut records: Vec<Vec<u8>>) -> RecordRun {
        records.sort_unstable();
        let path = dir.join(name);
        std::fs::write(&path, records.concat()).unwrap();
        RecordRun::open(&path, size).unwrap()
    }

    /// Writes every list of `runs` as a plain run, in order.
    fn write_runs(dir: &Path, size: usize, runs: &[Vec<Vec<u8>>]) -> Vec<RecordRun> {
        runs.iter()
            .enumerate()
            .map(|(i, records)| write_run(dir, &format!("run-{i}"), size, records.clone()))
            .collect()
    }

    /// Every record of each run.
    fn whole(runs: &[RecordRun]) -> Vec<Range<u64>> {
        runs.iter().map(|r| 0..r.records()).collect()
    }

    /// Merges `ranges` of `runs` (one each) with buffers of `buffer_records` records.
    fn merge(runs: &[RecordRun], ranges: &[Range<u64>], buffer_records: usize) -> Vec<u8> {
        let cursors: Vec<RecordCursor<'_>> = runs
            .iter()
            .zip(ranges)
            .map(|(run, range)| {
                run.cursor(range.clone(), vec![0; buffer_records * run.record_size()]).unwrap()
            })
            .collect();
        let mut tree = LoserTree::new(cursors);
        let mut out = Vec::new();
        while let Some(cursor) = tree.peek() {
            assert_eq!(tree.peek_prefix(), head16(cursor.head()));
            out.extend_from_slice(cursor.head());
            tree.advance().unwrap();
        }
        assert_eq!(tree.peek_prefix(), u128::MAX);
        out
    }

    /// As [`merge`], through direct cursors (`O_DIRECT` where the filesystem allows it) on
    /// one ring with reads of `block` bytes; `None` where io_uring is unavailable.
    fn merge_direct(dir: &Path, runs: &[RecordRun], ranges: &[Range<u64>], block: usize) -> Option<Vec<u8>> {
        if !direct::uring_available() {
            return None;
        }
        let size = runs.first().map_or(1, RecordRun::record_size);
        let open: Vec<RecordRun> =
            runs.iter().map(|r| RecordRun::open_direct(r.path(), size).unwrap()).collect();
        assert!(open.iter().all(|r| r.path().starts_with(dir)));
        let ring = ReadRing::new(open.len(), block, size).unwrap();
        let cursors: Vec<RecordCursor<'_>> = open
            .iter()
            .zip(ranges)
            .enumerate()
            .map(|(i, (run, range))| run.direct_cursor(range.clone(), &ring, i).unwrap())
            .collect();
        let mut tree = LoserTree::new(cursors);
        let mut out = Vec::new();
        while let Some(cursor) = tree.peek() {
            assert_eq!(tree.peek_prefix(), head16(cursor.head()));
            out.extend_from_slice(cursor.head());
            tree.advance().unwrap();
        }
        Some(out)
    }

    /// The reference: every record of every run, sorted by `Vec::sort`.
    fn reference(runs: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut all: Vec<Vec<u8>> = runs.iter().flatten().cloned().collect();
        all.sort();
        all.concat()
    }

    /// Records of `size` bytes over a small alphabet (so that prefixes tie), or sharing their
    /// first 16 bytes, or all `0xFF` (the exhausted sentinel's prefix).
    fn record_strategy(size: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => prop::collection::vec(prop::sample::select(vec![0u8, 1, 0xFE, 0xFF]), size),
            1 => prop::collection::vec(prop::sample::select(vec![0u8, 0xFF]), size.saturating_sub(16))
                .prop_map(move |tail| { let mut r = vec![0xABu8; size.min(16)]; r.extend(tail); r }),
            1 => Just(vec![0xFF; size]),
        ]
    }

    fn runs_strategy() -> impl Strategy<Value = (usize, Vec<Vec<Vec<u8>>>)> {
        prop::sample::select(vec![1usize, 3, 10, 16, 17, 100]).prop_flat_map(|size| {
            (Just(size), prop::collection::vec(prop::collection::vec(record_strategy(size), 0..40), 1..12))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// A merge of record cursors equals sorting every record, at every record size around
        /// the 16-byte prefix, with small buffers (refills mid-merge) and empty runs.
        #[test]
        fn record_merge_equals_sort((size, runs) in runs_strategy(), buffer_records in 1usize..5) {
            let dir = tempfile::tempdir().unwrap();
            let open = write_runs(dir.path(), size, &runs);
            prop_assert_eq!(merge(&open, &whole(&open), buffer_records), reference(&runs));
        }

        /// Direct cursors (aligned reads in flight, records cut by a read's end carried over,
        /// ranges starting anywhere in a block) merge to the same bytes, also piece by piece
        /// at `lower_bound` cuts found through the direct file.
        #[test]
        fn direct_merge_equals_sort((size, runs) in runs_strategy(), cut in record_strategy(100)) {
            let dir = tempfile::tempdir().unwrap();
            let open = write_runs(dir.path(), size, &runs);
            if let Some(got) = merge_direct(dir.path(), &open, &whole(&open), 4096) {
                prop_assert_eq!(got, reference(&runs));
                let direct: Vec<RecordRun> =
                    open.iter().map(|r| RecordRun::open_direct(r.path(), size).unwrap()).collect();
                let cut = &cut[..size];
                let bounds: Vec<u64> = direct.iter().map(|r| r.lower_bound(cut).unwrap()).collect();
                let plain: Vec<u64> = open.iter().map(|r| r.lower_bound(cut).unwrap()).collect();
                prop_assert_eq!(&bounds, &plain);
                let low: Vec<Range<u64>> = bounds.iter().map(|&b| 0..b).collect();
                let high: Vec<Range<u64>> = open.iter().zip(&bounds).map(|(r, &b)| b..r.records()).collect();
                let mut pieces = merge_direct(dir.path(), &open, &low, 4096).unwrap();
                pieces.extend(merge_direct(dir.path(), &open, &high, 8192).unwrap());
                prop_assert_eq!(pieces, reference(&runs));
            }
        }

        /// Merging the ranges cut at `lower_bound` of a key, piece by piece, gives the same
        /// bytes as one merge.
        #[test]
        fn pieces_cut_at_lower_bounds_concatenate((size, runs) in runs_strategy(), cut in record_strategy(100)) {
            let dir = tempfile::tempdir().unwrap();
            let open = write_runs(dir.path(), size, &runs);
            let cut = &cut[..size];
            let bounds: Vec<u64> = open.iter().map(|r| r.lower_bound(cut).unwrap()).collect();
            let low: Vec<Range<u64>> = bounds.iter().map(|&b| 0..b).collect();
            let high: Vec<Range<u64>> = open.iter().zip(&bounds).map(|(r, &b)| b..r.records()).collect();
            let mut got = merge(&open, &low, 2);
            prop_assert!(got.chunks(size).all(|r| r < cut));
            got.extend(merge(&open, &high, 3));
            prop_assert_eq!(got, reference(&runs));
        }
    }

    /// Equal records in every run, at the exhausted sentinel's prefix too: all of them come
    /// out, and the tree stops only when every run is done.
    #[test]
    fn ties_across_runs_and_the_sentinel_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let size = 20;
        let runs: Vec<Vec<Vec<u8>>> = (0..5)
            .map(|i| {
                let mut records = vec![vec![7u8; size]; 3];
                records.push(vec![0xFF; size]);
                records.push([vec![0xFF; 16], vec![i; 4]].concat());
                records
            })
            .collect();
        let open = write_runs(dir.path(), size, &runs);
        assert_eq!(merge(&open, &whole(&open), 1), reference(&runs));
    }

    /// Direct cursors over runs of many blocks (records cut by every read's end), from
    /// offsets inside blocks, equal the plain cursors' merge.
    #[test]
    fn direct_cursors_over_many_blocks() {
        let dir = tempfile::tempdir().unwrap();
        for size in [17usize, 100, 4097] {
            let byte = |n: u64| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u8;
            let runs: Vec<Vec<Vec<u8>>> = (0..3u64)
                .map(|i| {
                    (0..(700 + 300 * i))
                        .map(|j| (0..size as u64).map(|b| byte(i << 40 | j << 16 | b)).collect())
                        .collect()
                })
                .collect();
            let sub = dir.path().join(format!("s{size}"));
            std::fs::create_dir(&sub).unwrap();
            let open = write_runs(&sub, size, &runs);
            let ranges: Vec<Range<u64>> =
                open.iter().enumerate().map(|(i, r)| (i as u64 * 41)..r.records()).collect();
            let expected = merge(&open, &ranges, 7);
            if let Some(got) = merge_direct(&sub, &open, &ranges, 4096) {
                assert!(got == expected, "record size {size}");
            }
        }
    }

    /// One run, empty runs, no runs, and empty ranges.
    #[test]
    fn one_run_empty_runs_and_no_runs() {
        let dir = tempfile::tempdir().unwrap();
        let size = 10;
        let records: Vec<Vec<u8>> = (0..50u8).rev().map(|i| vec![i.wrapping_mul(37); size]).collect();
        let one = write_run(dir.path(), "one", size, records.clone());
        let expected = reference(std::slice::from_ref(&records));
        assert_eq!(merge(std::slice::from_ref(&one), &whole(std::slice::from_ref(&one)), 7), expected);

        let empty = write_run(dir.path(), "empty", size, Vec::new());
        assert_eq!(empty.records(), 0);
        let open = [empty, one];
        let got = merge(&open, &[0..0, 0..open[1].records()], 3);
        assert_eq!(got, expected);
        assert!(merge(&open, &[0..0, 5..5], 3).is_empty());
        assert!(merge(&[], &[], 3).is_empty());
        let mut tree = LoserTree::<RecordCursor<'_>>::new(Vec::new());
        assert!(tree.peek().is_none());
        assert_eq!(tree.fan_in(), 0);
        assert!(tree.sources().is_empty());
        assert!(tree.into_sources().is_empty());
        tree = LoserTree::new(vec![open[0].cursor(0..0, Vec::new()).unwrap()]);
        assert!(tree.peek().is_none());
    }

    /// Multi-pass merges with F = 2, as the sort runs them (`plan_merges`, each step a merge
    /// of whole runs into a new run), give the reference's bytes.
    #[test]
    fn two_way_passes_follow_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let size = 12;
        // Bytes 0..3 from a multiplicative hash of (run, record, byte): many equal records.
        let byte = |n: u64| ((n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 3) as u8;
        let runs: Vec<Vec<Vec<u8>>> = (0..7u64)
            .map(|i| {
                (0..i * 13 % 40)
                    .map(|j| (0..size as u64).map(|b| byte(i << 32 | j << 8 | b)).collect())
                    .collect()
            })
            .collect();
        let mut open: Vec<Option<RecordRun>> =
            write_runs(dir.path(), size, &runs).into_iter().map(Some).collect();
        let sizes: Vec<u64> = open.iter().map(|r| r.as_ref().unwrap().records()).collect();
        let plan = super::super::plan_merges(&sizes, 2);
        assert!(plan.steps.len() >= 5, "{plan:?}");
        open.resize_with(sizes.len() + plan.steps.len(), || None);
        for step in &plan.steps {
            let inputs: Vec<RecordRun> = step.inputs.iter().map(|&i| open[i].take().unwrap()).collect();
            assert!(inputs.len() <= 2);
            let path = dir.path().join(format!("merge-{}", step.output));
            std::fs::write(&path, merge(&inputs, &whole(&inputs), 2)).unwrap();
            open[step.output] = Some(RecordRun::open(&path, size).unwrap());
        }
        let finals: Vec<RecordRun> = plan.final_inputs.iter().map(|&i| open[i].take().unwrap()).collect();
        assert_eq!(finals.len(), 2);
        assert_eq!(merge(&finals, &whole(&finals), 5), reference(&runs));
    }

    #[test]
    fn open_refuses_partial_records_and_zero_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        std::fs::write(&path, [1u8; 25]).unwrap();
        let err = RecordRun::open(&path, 10).unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset: 20, .. }), "{err}");
        assert!(matches!(RecordRun::open(&path, 0).unwrap_err(), Error::Config(_)));
        assert!(matches!(RecordRun::open(&dir.path().join("missing"), 10).unwrap_err(), Error::Io { .. }));
        assert_eq!(RecordRun::open(&path, 5).unwrap().records(), 5);
    }
}
