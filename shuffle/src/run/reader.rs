//! [`RunReader`]: opens a run, validates it once, then iterates archived records in place.
//!
//! The one module of `run` allowed to use `unsafe`, for one thing: after a block has passed
//! `rkyv::access` (full validation) in [`RunReader::open`], iteration reaches it again with
//! `access_unchecked`.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rkyv::rancor;

use super::format::{
    ENTRY_LEN, FILE_HEADER_LEN, FORMAT_VERSION, FRAME_HEADER_LEN, FileHeader, FrameHeader, OLDEST_VERSION,
    SectionEntry, TRAILER_LEN, Trailer, footer_checksum, frame_checksum,
};
use crate::io::{ByteSource, ReadMode, prefetch_line};
use crate::value::{ArchivedValue, Block, Value};
use crate::{Error, Result};

/// The archived form of a [`Block`].
pub type ArchivedBlock<V> = <Block<V> as rkyv::Archive>::Archived;

/// Counts how many runs are open at once, and the most that ever were.
///
/// Attach it to readers with [`RunReader::track`]; the engine and the tests use it to show
/// that no merge had more than `max_open_runs` runs open.
#[derive(Debug, Default)]
pub struct OpenRunGauge {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl OpenRunGauge {
    /// A new gauge at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Runs open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The largest number of runs that were open at the same time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct GaugeGuard(Arc<OpenRunGauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A validated, read-only run.
///
/// [`RunReader::open`] checks the header, footer, every block's checksum, every block's rkyv
/// archive, and key order; after that, iteration trusts the bytes and copies nothing.
pub struct RunReader<V: Value> {
    path: PathBuf,
    bytes: ByteSource,
    /// The non-empty sections' entries, partitions ascending (version 1 runs: every
    /// partition's).
    sections: Vec<SectionEntry>,
    partitions: u32,
    total_records: u64,
    _guard: Option<GaugeGuard>,
    _value: PhantomData<fn() -> V>,
}

impl<V: Value> std::fmt::Debug for RunReader<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunReader")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .field("partitions", &self.partitions)
            .field("sections", &self.sections.len())
            .field("total_records", &self.total_records)
            .finish()
    }
}

impl<V: Value> RunReader<V> {
    /// Opens and validates the run at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read ([`Error::Io`]), is not a run or is damaged
    /// ([`Error::Corrupt`], naming the byte offset), or has another format version
    /// ([`Error::UnsupportedVersion`]).
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self> {
        let bytes = ByteSource::open(path, mode)?;
        Self::from_source(path.to_owned(), bytes)
    }

    /// Validates a run held in `bytes` (for instance received from another rank); `name`
    /// appears in errors.
    ///
    /// # Errors
    ///
    /// As [`RunReader::open`].
    pub fn from_source(name: PathBuf, bytes: ByteSource) -> Result<Self> {
        let (sections, partitions, total_records) = validate::<V>(&name, &bytes)?;
        bytes.advise_sequential();
        Ok(RunReader {
            path: name,
            bytes,
            sections,
            partitions,
            total_records,
            _guard: None,
            _value: PhantomData,
        })
    }

    /// Counts this reader in `gauge` until it is dropped.
    pub fn track(mut self, gauge: &Arc<OpenRunGauge>) -> Self {
        let now = gauge.open.fetch_add(1, Ordering::Relaxed) + 1;
        gauge.peak.fetch_max(now, Ordering::Relaxed);
        self._guard = Some(GaugeGuard(Arc::clone(gauge)));
        self
    }

    /// The run's path (or name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Sections the footer indexes: the non-empty ones (every partition in a version 1 run).
    pub fn indexed_sections(&self) -> usize {
        self.sections.len()
    }

    /// Records in partition `p` (0 when out of range).
    pub fn records(&self, p: u32) -> u64 {
        self.find(p).map_or(0, |s| s.records)
    }

    /// The entry of partition `p`, if the footer indexes it.
    fn find(&self, p: u32) -> Option<&SectionEntry> {
        if self.sections.len() == self.partitions as usize {
            // Every partition indexed (version 1, or no empty section): the entry's place.
            return self.sections.get(p as usize);
        }
        self.sections.binary_search_by_key(&p, |s| s.partition).ok().map(|i| &self.sections[i])
    }

    /// Records in the whole run.
    pub fn total_records(&self) -> u64 {
        self.total_records
    }

    /// File length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The footer entry of partition `p`.
    ///
    /// # Panics
    ///
    /// When `p` is out of range.
    pub fn section(&self, p: u32) -> SectionEntry {
        assert!(p < self.partitions, "partition {p} out of range (the run has {})", self.partitions);
        // An empty section: no bytes, at the end of the header.
        let empty = SectionEntry { offset: FILE_HEADER_LEN as u64, partition: p, ..SectionEntry::default() };
        self.find(p).copied().unwrap_or(empty)
    }

    /// The raw bytes of partition `p`'s section: what is sent to the rank that owns `p`, and
    /// what [`RunWriter::append_section`](crate::RunWriter::append_section) takes.
    ///
    /// # Panics
    ///
    /// When `p` is out of range.
    pub fn section_bytes(&self, p: u32) -> &[u8] {
        let s = self.section(p);
        &self.bytes[s.offset as usize..(s.offset + s.len) as usize]
    }

    /// Iterates the records of partition `p` in key order, in place.
    ///
    /// # Panics
    ///
    /// When `p` is out of range.
    pub fn iter(&self, p: u32) -> PartitionIter<'_, V> {
        PartitionIter::new(self.section_bytes(p))
    }

    /// Iterates the archived blocks of partition `p`.
    ///
    /// # Panics
    ///
    /// When `p` is out of range.
    pub fn blocks(&self, p: u32) -> Blocks<'_, V> {
        Blocks { frames: self.section_bytes(p), _value: PhantomData }
    }

    /// Lets the kernel drop this run's pages from the process (after a merge has read it).
    pub fn release(&self) {
        self.bytes.release(0..self.bytes.len());
    }
}

/// Iterator over the archived blocks of one section.
pub struct Blocks<'a, V: Value> {
    frames: &'a [u8],
    _value: PhantomData<fn() -> V>,
}

impl<V: Value> std::fmt::Debug for Blocks<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocks").field("remaining_bytes", &self.frames.len()).finish()
    }
}

impl<'a, V: Value> Iterator for Blocks<'a, V> {
    type Item = &'a ArchivedBlock<V>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.frames.is_empty() {
            return None;
        }
        let header = FrameHeader::decode(&self.frames[..FRAME_HEADER_LEN]);
        let payload = &self.frames[FRAME_HEADER_LEN..FRAME_HEADER_LEN + header.payload_len as usize];
        self.frames = &self.frames[header.frame_len()..];
        // SAFETY: every frame of every section of this reader passed `rkyv::access` for
        // `ArchivedBlock<V>` in `validate` when the reader was created, and the bytes are
        // immutable for 'a (a read-only mapping of a file Spillway never modifies, or an owned
        // buffer borrowed from the reader).
        Some(unsafe { rkyv::access_unchecked::<ArchivedBlock<V>>(payload) })
    }
}

/// Iterator over the records of one partition of a run: `(key, archived value)`, borrowed
/// from the run's bytes.
pub struct PartitionIter<'a, V: Value> {
    blocks: Blocks<'a, V>,
    ends: &'a [rkyv::Archived<u32>],
    keys: &'a [u8],
    values: &'a [ArchivedValue<V>],
    index: usize,
    start: usize,
    /// Keys in this block are longer than a cache line on average: [`Self::prefetch_ahead`]
    /// requests two lines of them.
    wide_keys: bool,
}

impl<V: Value> std::fmt::Debug for PartitionIter<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionIter").field("index", &self.index).finish_non_exhaustive()
    }
}

impl<'a, V: Value> PartitionIter<'a, V> {
    fn new(frames: &'a [u8]) -> Self {
        PartitionIter {
            blocks: Blocks { frames, _value: PhantomData },
            ends: &[],
            keys: &[],
            values: &[],
            index: 0,
            start: 0,
            wide_keys: false,
        }
    }

    /// Hints the CPU to start loading the next records' data, one cache line ahead of where
    /// this iterator stands in each column of the current block: key offsets, key bytes (two
    /// lines when the block's keys are longer than a line on average), and values (as many
    /// lines as a value spans, up to 4).
    ///
    /// Meant to be called after every step of a k-way merge, which takes records from many
    /// iterators in turn, three column streams each: past a few sources the hardware
    /// prefetchers lose track, and the next head's key offset and key (the start of every
    /// comparison) miss the cache, as does the value the consumer reads. A record takes at
    /// most one line of each column (or as many lines as are requested), so calling this at
    /// every step requests every line at least one step of this iterator (about k records of
    /// the merge) before it is read: enough to hide the latency once k reaches about 8, and
    /// close enough that the lines in flight for all k sources stay in cache until read
    /// (further ahead was slower at large fan-ins; see `bench/README.md`).
    ///
    /// It is only a hint: it changes no state and never faults. Addresses are not clamped to
    /// their column (clamping was slower; see `bench/README.md`): they pass a column's end by at most
    /// 64 bytes per line requested, which lands on the block's next column or archive root,
    /// the next frame, or the run's footer and trailer; only at the end of the last block can
    /// a prefetch reach past the run's last byte, and one of an unmapped address is simply
    /// dropped. A no-op on targets other than `x86_64`.
    #[inline(always)]
    pub fn prefetch_ahead(&self) {
        // Addresses are computed with `wrapping_add`, never dereferenced: only hinted.
        let next_value = self.values.as_ptr().wrapping_add(self.index).cast::<u8>();
        prefetch_line(self.ends.as_ptr().wrapping_add(self.index + CACHE_LINE / 4).cast());
        let key_line = self.keys.as_ptr().wrapping_add(self.start + CACHE_LINE);
        prefetch_line(key_line);
        if self.wide_keys {
            prefetch_line(key_line.wrapping_add(CACHE_LINE));
        }
        for line in 1..=const { value_lines(size_of::<ArchivedValue<V>>()) } {
            prefetch_line(next_value.wrapping_add(line * CACHE_LINE));
        }
    }

    #[cold]
    fn next_block(&mut self) -> bool {
        for block in self.blocks.by_ref() {
            if !block.ends.is_empty() {
                self.ends = block.ends.as_slice();
                self.keys = block.keys.as_slice();
                self.values = block.values.as_slice();
                self.index = 0;
                self.start = 0;
                self.wide_keys = self.keys.len() > self.ends.len() * CACHE_LINE;
                return true;
            }
        }
        false
    }
}

impl<'a, V: Value> Iterator for PartitionIter<'a, V> {
    type Item = (&'a [u8], &'a ArchivedValue<V>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.index == self.ends.len() && !self.next_block() {
            return None;
        }
        let i = self.index;
        let end = self.ends[i].to_native() as usize;
        let key = &self.keys[self.start..end];
        self.start = end;
        self.index = i + 1;
        Some((key, &self.values[i]))
    }
}

/// Size of a cache line.
const CACHE_LINE: usize = 64;

/// The cache lines (1 to 4) that [`PartitionIter::prefetch_ahead`] requests of values of
/// `bytes` bytes.
const fn value_lines(bytes: usize) -> usize {
    let lines = bytes.div_ceil(CACHE_LINE);
    if lines == 0 {
        1
    } else if lines > 4 {
        4
    } else {
        lines
    }
}

/// Validates a whole run: header, trailer, footer, sections, frames, archives, key order.
fn validate<V: Value>(path: &Path, bytes: &[u8]) -> Result<(Vec<SectionEntry>, u32, u64)> {
    let corrupt = |offset: usize, what: String| Error::corrupt(path, offset as u64, what);
    let len = bytes.len();
    if len < FILE_HEADER_LEN {
        return Err(corrupt(0, format!("{len} bytes is too short to be a run (no header)")));
    }
    let header = FileHeader::decode(bytes[..FILE_HEADER_LEN].try_into().expect("16 bytes"))
        .ok_or_else(|| corrupt(0, "not a spillway run (bad magic)".into()))?;
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&header.version) {
        return Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            found: header.version,
            supported: FORMAT_VERSION,
        });
    }
    let expected = FileHeader::for_value(size_of::<ArchivedValue<V>>(), align_of::<ArchivedValue<V>>());
    if (header.value_size, header.value_align) != (expected.value_size, expected.value_align) {
        return Err(corrupt(
            12,
            format!(
                "written for values of size {} align {}, read as size {} align {} (wrong value type?)",
                header.value_size, header.value_align, expected.value_size, expected.value_align
            ),
        ));
    }
    if len < FILE_HEADER_LEN + TRAILER_LEN {
        return Err(corrupt(len, "truncated: no trailer".into()));
    }
    let trailer_at = len - TRAILER_LEN;
    let trailer = Trailer::decode(&bytes[trailer_at..])
        .ok_or_else(|| corrupt(trailer_at + 24, "truncated or damaged: bad end magic".into()))?;
    if trailer.version != header.version {
        return Err(corrupt(trailer_at + 4, format!("trailer says version {}", trailer.version)));
    }
    let footer_len = (trailer.entries as usize)
        .checked_mul(ENTRY_LEN)
        .filter(|&n| n <= trailer_at - FILE_HEADER_LEN)
        .ok_or_else(|| corrupt(trailer_at, format!("{} sections do not fit in the file", trailer.entries)))?;
    if trailer.partitions == 0 {
        return Err(corrupt(trailer_at, "zero partitions".into()));
    }
    if trailer.entries > trailer.partitions {
        return Err(corrupt(
            trailer_at + 4,
            format!("{} sections for {} partitions", trailer.entries, trailer.partitions),
        ));
    }
    let footer_at = trailer_at - footer_len;
    let footer = &bytes[footer_at..trailer_at];
    if footer_checksum(footer, &bytes[trailer_at..trailer_at + 16]) != trailer.footer_checksum {
        return Err(corrupt(footer_at, "footer checksum mismatch".into()));
    }
    let mut sections = Vec::with_capacity(trailer.entries as usize);
    let mut expect_offset = FILE_HEADER_LEN as u64;
    let mut total = 0u64;
    for (i, raw) in footer.chunks_exact(ENTRY_LEN).enumerate() {
        let mut entry = SectionEntry::decode(raw);
        let entry_at = footer_at + i * ENTRY_LEN;
        if header.version == 1 {
            entry.partition = i as u32;
        } else if entry.partition >= trailer.partitions
            || sections.last().is_some_and(|last: &SectionEntry| last.partition >= entry.partition)
            || entry.len == 0
        {
            return Err(corrupt(
                entry_at + 28,
                format!("section {i}: partition {} out of order", entry.partition),
            ));
        }
        let p = entry.partition;
        if entry.offset != expect_offset
            || entry.offset.checked_add(entry.len).is_none_or(|end| end > footer_at as u64)
        {
            return Err(corrupt(entry_at, format!("partition {p}: section out of place")));
        }
        expect_offset = entry.offset + entry.len;
        let section = &bytes[entry.offset as usize..expect_offset as usize];
        let (records, blocks) = validate_section::<V>(path, section, entry.offset as usize)?;
        if records != entry.records || blocks != entry.blocks {
            return Err(corrupt(
                entry_at,
                format!(
                    "partition {p}: footer says {} records in {} blocks, section holds {records} in {blocks}",
                    entry.records, entry.blocks
                ),
            ));
        }
        total += records;
        sections.push(entry);
    }
    if expect_offset != footer_at as u64 {
        return Err(corrupt(expect_offset as usize, "unaccounted bytes before the footer".into()));
    }
    if total != trailer.total_records {
        return Err(corrupt(
            trailer_at + 8,
            format!("trailer says {} records, sections hold {total}", trailer.total_records),
        ));
    }
    Ok((sections, trailer.partitions, total))
}

/// Validates one section (a sequence of frames) that starts at byte `base` of `path`:
/// frame bounds, checksums, rkyv archives, block shape, and key order across the section.
/// Returns (records, blocks).
///
/// # Errors
///
/// [`Error::Corrupt`] naming the offset of the first bad frame.
pub fn validate_section<V: Value>(path: &Path, section: &[u8], base: usize) -> Result<(u64, u32)> {
    let corrupt = |offset: usize, what: String| Error::corrupt(path, (base + offset) as u64, what);
    let mut at = 0usize;
    let mut records = 0u64;
    let mut blocks = 0u32;
    let mut last_key: Option<&[u8]> = None;
    while at < section.len() {
        if section.len() - at < FRAME_HEADER_LEN {
            return Err(corrupt(at, "truncated frame header".into()));
        }
        let header = FrameHeader::decode(&section[at..at + FRAME_HEADER_LEN]);
        let frame_len = header.frame_len();
        if frame_len > section.len() - at {
            return Err(corrupt(at, format!("frame of {} bytes runs past its section", header.payload_len)));
        }
        let payload = &section[at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + header.payload_len as usize];
        if frame_checksum(payload, header.records) != header.checksum {
            return Err(corrupt(at, "block checksum mismatch".into()));
        }
        let block = rkyv::access::<ArchivedBlock<V>, rancor::Error>(payload)
            .map_err(|e| corrupt(at + FRAME_HEADER_LEN, format!("invalid block archive: {e}")))?;
        let n = block.ends.len();
        if n != header.records as usize || block.values.len() != n {
            return Err(corrupt(at, "block record counts disagree".into()));
        }
        let mut start = 0usize;
        for end in block.ends.iter() {
            let end = end.to_native() as usize;
            if end < start || end > block.keys.len() {
                return Err(corrupt(at + FRAME_HEADER_LEN, "key offsets out of range".into()));
            }
            let key = &block.keys[start..end];
            if last_key.is_some_and(|prev| prev > key) {
                return Err(corrupt(at, "keys out of order".into()));
            }
            last_key = Some(key);
            start = end;
        }
        if start != block.keys.len() {
            return Err(corrupt(at + FRAME_HEADER_LEN, "trailing key bytes".into()));
        }
        records += n as u64;
        blocks += 1;
        at += frame_len;
    }
    Ok((records, blocks))
}
