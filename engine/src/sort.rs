//! Sorting fixed-size records: the Sort Benchmark's 100-byte records keyed by their first 10
//! bytes (TeraSort/GraySort), or any record and key size.
//!
//! # Order
//!
//! Records are ordered by their key (the first `key_size` bytes, compared as unsigned bytes,
//! like `memcmp`), and records with equal keys **by the rest of the record**. Since a key is
//! a prefix of its record, that is simply the byte order of whole records: the output is the
//! same bytes whatever the key size, the number of threads or partitions, the memory budget,
//! or the path taken (in memory, out of core, or through the generic engine). It is *not* a
//! stable sort: records with equal keys do not keep their input order. `valsort` accepts the
//! output (it checks key order only) and its checksum equals the input's.
//!
//! # Two paths
//!
//! **The generic path** ([`RecordSortJob`] with [`sample_partitioner`], run by
//! [`Engine::run_with`](crate::Engine::run_with)): map splits the input at record boundaries
//! ([`SplitMode::Records`]) and emits every whole record as a key with the value `()`; a
//! [`RangePartitioner`] built from a sample of whole records routes keys, so part files
//! concatenate in order; reduce writes each key once per value. It is correct and exercises
//! the whole engine, but every record is copied into the map-side arena, indexed by a
//! (partition, offset, length) triple, comparison-sorted, encoded into rkyv blocks of a spill
//! run, decoded by the merge and copied again by reduce. Measured on 256 MiB of gensort ASCII
//! records (2 threads, warm cache, a shared and busy 2-core machine): 7.4 s and 3.9 s of CPU
//! with a budget that holds everything, against 0.8-1.1 s and 0.4 s of CPU for the
//! specialized path below (both fsyncing the output); the generic final merge into one file
//! is single-threaded.
//!
//! **The specialized path** ([`sort_records`], what `spillway sort` runs): the engine's
//! inputs (memory-mapped) and output conventions, and nothing else.
//!
//! 1. *Entries.* Each record becomes one `u128`: its first 10 bytes, big-endian, in the high
//!    80 bits, and its index in the low 48. Comparing entries compares keys; records whose 10
//!    leading bytes are equal are compared in place from byte 10 on (rare, except for skewed
//!    data). Entries take 16 bytes per record; records are never copied before the output.
//! 2. *Radix sort.* A counting pass over the mapped input (both threads, halves of the input)
//!    gives the histogram of the first byte; a second pass writes every entry straight into
//!    its bucket (each thread into its own slots, so no locks and no second array). Buckets
//!    are then sorted by an MSD radix sort on the following bytes (each level a counting
//!    scatter into a per-thread scratch array of the bucket's size, copied back: buckets are
//!    small enough to stay in cache). Groups of at most 48 entries are sorted as plain
//!    integers (key bits, then index), and runs of equal key bits are then put in the order of
//!    the rest of their records; entries whose 10 bytes are all equal are compared in place
//!    from byte 10 on. Buckets larger than 1/8 of a thread's share are first split in place
//!    on their next bytes (American flag sort), so that skewed keys still spread over the
//!    threads and the scratch arrays stay small.
//! 3. *Output.* The threads take buckets in order: sort one, then gather its records from the
//!    mapping into a large buffer and hand it to the writer thread, which writes it with
//!    `pwrite` at the bucket's offset (known from the histogram); the output is written exactly
//!    once, in large blocks. One writer, because the filesystem serializes writes to one file
//!    and a second writing thread spins on the lock instead of gathering. Every record of the
//!    gather is a cache and TLB miss at a random place in the input; the gather prefetches the
//!    cache lines of the record 16 places ahead ([`prefetch_read`]), which halved its time (540
//!    to 280 ms of CPU for 1 GiB). Part files ([`OutputSpec::Dir`]) use the boundaries of a
//!    [`RangePartitioner`] built from a sample of whole records (the same boundaries as the
//!    generic path, so the part files are identical); standard output, and a device or FIFO
//!    named as the output file, are written in order by one thread.
//! 4. *Out of core.* When the input does not fit the memory budget, chunks of the input that
//!    do are sorted as above into *runs*: plain record files in the spill directory (the input
//!    pages of a chunk are released once its run is written). The runs are then merged by a
//!    loser tree over buffered `pread` cursors (keys compared by their first 16 bytes as a
//!    `u128`), in parallel: the key space is cut at quantiles of a sample of the input, each
//!    run is binary-searched for the cut points, and each piece is merged by one thread into
//!    its offset of the output file (or into its part file). At most `max_open_runs` runs are
//!    merged at once; with more runs, the smallest are merged first into bigger runs (the same
//!    plan as the engine's, [`plan_merges`]).
//!
//! Every record is thus read and written once when the input fits in memory (`passes` = 1 in
//! the metrics) and twice when it does not (`passes` = 2, more only when there are more than
//! `max_open_runs` runs).
//!
//! # Memory
//!
//! The budget covers what the sorter holds at once: the mapped records of the chunk being
//! sorted, 16 bytes of entry per record (and the radix scratch, at most 1/8 of the entries:
//! 2 bytes per record), and the write buffers; in the merge, the read buffers of every run
//! and the write buffers. So an input sorts in memory when `records x (record_size + 18) +
//! buffers <= budget`. Memory-mapped input pages are counted because they are resident while
//! a chunk is sorted (they stay in the page cache after); out of core, the pages of each
//! chunk are released from the process once its run is written.
//!
//! # Options that do not apply
//!
//! Runs and outputs are written with positioned writes from every thread (`pwrite`), not
//! through an [`IoBackend`](spillway_shuffle::IoBackend); runs are read with `pread` into
//! buffers of bounded size. Inputs are read as [`Inputs`] was opened (mmap or pread).
//! Outputs go under a temporary name and are renamed into place; without `sync`, an existing
//! output file is swapped out rather than renamed over ([`TempFile::replace_unsynced`]: ext4 would
//! otherwise write the whole new output to disk inside the `rename`, 0.5-1.3 s per GiB here).

use std::cmp::Ordering as CmpOrdering;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use spillway_shuffle::io::{prefetch_range, prefetch_read};
use spillway_shuffle::{RangePartitioner, limits, plan_merges};

use crate::error::{ConfigError, Error, JobError, Result};
use crate::input::{Inputs, Split, SplitMode, SplitRange};
use crate::job::{Emitter, Job, Values};
use crate::metrics::{AnonSampler, Metrics, Phase, PhaseTimes, Progress, peak_rss};
use crate::output::{
    FileDestination, OutputSpec, StagedDir, TempFile, file_destination, fresh_token, open_in_place,
    part_name, sync_parent,
};
use crate::pool::{self, FirstError};
use crate::spill::SpillDir;
use crate::{DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET};

/// The Sort Benchmark's record length.
pub const RECORD_SIZE: usize = 100;
/// The Sort Benchmark's key length.
pub const KEY_SIZE: usize = 10;
/// Sample records per partition (and per merge piece) for range boundaries.
pub const SAMPLE_PER_PARTITION: usize = 100;
/// Input bytes that sampling maps before it releases them (see `Records::sample`).
const SAMPLE_WINDOW: usize = 16 << 20;

/// Leading record bytes held in an entry.
const ENTRY_KEY_BYTES: usize = 10;
/// Bits of an entry that hold the record index.
const INDEX_BITS: u32 = 48;
const INDEX_MASK: u128 = (1 << INDEX_BITS) - 1;
/// Buckets up to this many entries are comparison-sorted.
const SMALL_SORT: usize = 48;
/// Largest write buffer (per thread).
const MAX_WRITE_BUFFER: usize = 4 << 20;
/// Largest read buffer of one run cursor in a merge.
const MAX_READ_BUFFER: usize = 4 << 20;
/// How many records ahead the output gather prefetches.
const GATHER_AHEAD: usize = 16;
/// Merge pieces per thread when merging into one file.
const PIECES_PER_THREAD: usize = 4;

/// Settings of [`sort_records`]. Build with struct update syntax from the default:
///
/// ```
/// let options = spillway_engine::sort::SortOptions { threads: 2, ..Default::default() };
/// assert_eq!(options.record_size, 100);
/// ```
#[derive(Debug, Clone)]
pub struct SortOptions {
    /// Record length in bytes (default 100).
    pub record_size: usize,
    /// Key length in bytes, at most the record length (default 10). Records are ordered by
    /// key, equal keys by the rest of the record (see the module docs: the output does not
    /// depend on it); it decides what counts as a duplicate key in the metrics.
    pub key_size: usize,
    /// Threads (default: the number of CPUs).
    pub threads: usize,
    /// Part files with [`OutputSpec::Dir`] (default 16).
    pub partitions: u32,
    /// Memory budget in bytes (default 1 GiB, at least 64 KiB); see the module docs.
    pub memory_budget: u64,
    /// The most runs one merge reads at once, F (default: from `RLIMIT_NOFILE`).
    pub max_open_runs: Option<usize>,
    /// Parent of the job's spill directory (default: `$TMPDIR` or `/tmp`).
    pub spill_dir: Option<PathBuf>,
    /// `fsync` output files before renaming them into place (default true).
    pub sync: bool,
    /// Live counters for a progress display.
    pub progress: Arc<Progress>,
}

impl Default for SortOptions {
    fn default() -> Self {
        SortOptions {
            record_size: RECORD_SIZE,
            key_size: KEY_SIZE,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            partitions: 16,
            memory_budget: DEFAULT_MEMORY_BUDGET,
            max_open_runs: None,
            spill_dir: None,
            sync: true,
            progress: Arc::default(),
        }
    }
}

impl SortOptions {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A zero record size, a key size of zero or longer than a record, zero threads or
    /// partitions, a budget under 64 KiB, F under 2.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        if self.record_size == 0 {
            return fail("record size must be at least 1 byte".into());
        }
        if self.key_size == 0 || self.key_size > self.record_size {
            return fail(format!(
                "key size {} must be between 1 and the record size {}",
                self.key_size, self.record_size
            ));
        }
        if self.threads == 0 {
            return fail("threads must be at least 1".into());
        }
        if self.partitions == 0 {
            return fail("partitions must be at least 1".into());
        }
        if self.memory_budget < MIN_MEMORY_BUDGET {
            return fail(format!("memory budget {} is below the 64K minimum", self.memory_budget));
        }
        if let Some(f) = self.max_open_runs
            && f < 2
        {
            return fail(format!("max open runs must be at least 2 (got {f})"));
        }
        Ok(())
    }
}

/// What [`sort_records`] did: the engine's [`Metrics`] (flattened into the same JSON object)
/// and the sort's own counters.
///
/// In the engine metrics, `splits` counts sorted chunks, `spills` and `spill_bytes` the runs,
/// `merge_steps` and `merge_bytes` the intermediate merges (not the final one); the phase
/// times are `map` (sampling and run formation, or the in-memory sort and write), `merge`
/// (intermediate merges) and `reduce` (the final merge).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct SortMetrics {
    /// The engine's metrics.
    #[serde(flatten)]
    pub job: Metrics,
    /// Records sorted.
    pub records: u64,
    /// Record length.
    pub record_size: usize,
    /// Key length.
    pub key_size: usize,
    /// Whether the input was sorted in memory (no runs).
    pub in_memory: bool,
    /// Runs written (0 in memory).
    pub runs: u64,
    /// Bytes written over bytes of input: every record is written once per pass (1 in
    /// memory, 2 out of core, more when intermediate merges were needed).
    pub passes: f64,
    /// Adjacent output records with equal keys (valsort's "Duplicate keys").
    pub duplicate_keys: u64,
    /// Records sampled for range boundaries.
    pub sample_records: u64,
}

// ---------------------------------------------------------------------------------------
// The generic path.

/// Sorting records as a generic MapReduce job: map emits every whole record as a key (value
/// `()`), reduce writes each key once per value. Run it with a range partitioner from
/// [`sample_partitioner`] so that part files concatenate in order:
///
/// ```
/// use spillway_engine::sort::{RecordSortJob, sample_partitioner};
/// use spillway_engine::{Engine, Inputs, OutputSpec};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("in"), b"c2b1a3b1")?; // four 2-byte records
/// let inputs = Inputs::new([dir.path().join("in")])?;
/// let partitioner = sample_partitioner(&inputs, 2, 3)?;
/// let out = dir.path().join("sorted");
/// let engine = Engine::builder().threads(2).build()?;
/// engine.run_with(&RecordSortJob { record_size: 2 }, &inputs, &partitioner, &OutputSpec::File(out.clone()))?;
/// assert_eq!(std::fs::read(out)?, b"a3b1b1c2");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RecordSortJob {
    /// Record length in bytes.
    pub record_size: usize,
}

impl Job for RecordSortJob {
    type Value = ();

    fn split_mode(&self) -> SplitMode {
        SplitMode::Records(self.record_size)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, ()>) -> Result<(), JobError> {
        for record in split.data.chunks_exact(self.record_size.max(1)) {
            emit.emit(record, ());
        }
        Ok(())
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, ()>, out: &mut dyn Write) -> Result<(), JobError> {
        for _ in values {
            out.write_all(key)?;
        }
        Ok(())
    }
}

/// A range partitioner over `partitions` partitions whose boundaries are whole records,
/// picked at the quantiles of [`SAMPLE_PER_PARTITION`] evenly spaced records per partition.
/// Whole records (not just keys) as boundaries keep partitions balanced when many records
/// share a key.
///
/// # Errors
///
/// An input is not a whole number of records ([`Error::Input`], naming it), or `partitions`
/// or `record_size` is zero.
pub fn sample_partitioner(inputs: &Inputs, record_size: usize, partitions: u32) -> Result<RangePartitioner> {
    if record_size == 0 {
        return Err(config("record size must be at least 1 byte"));
    }
    let records = Records::new(inputs, record_size)?;
    let mut sample = records.sample(SAMPLE_PER_PARTITION * partitions as usize, Some(inputs));
    Ok(RangePartitioner::from_sample(&mut sample, partitions)?)
}

fn config(message: impl Into<String>) -> Error {
    Error::Shuffle(spillway_shuffle::Error::Config(message.into()))
}

// ---------------------------------------------------------------------------------------
// Records: the mapped input as one sequence of fixed-size records.

#[derive(Debug, Clone, Copy)]
struct Segment<'a> {
    data: &'a [u8],
    /// Index of the segment's first record in the sequence.
    first: usize,
    /// Input file index and byte offset of `data` in it (for releasing pages).
    file: usize,
    offset: usize,
}

/// A sequence of records over slices of the mapped inputs.
#[derive(Debug, Clone)]
struct Records<'a> {
    segments: Vec<Segment<'a>>,
    size: usize,
    len: usize,
    /// The inputs the segments borrow from.
    inputs: &'a Inputs,
}

impl<'a> Records<'a> {
    fn new(inputs: &'a Inputs, size: usize) -> Result<Self> {
        let mut segments = Vec::new();
        let mut len = 0;
        for (i, file) in inputs.files().iter().enumerate() {
            let data = file.bytes();
            if data.len() % size != 0 {
                let n = data.len();
                return Err(Error::Input {
                    path: file.path.clone(),
                    what: format!(
                        "length {n} is not a whole number of {size}-byte records \
                         (partial record of {} bytes at byte {})",
                        n % size,
                        n - n % size
                    ),
                });
            }
            if !data.is_empty() {
                segments.push(Segment { data, first: len, file: i, offset: 0 });
                len += data.len() / size;
            }
        }
        Ok(Records { segments, size, len, inputs })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> u64 {
        (self.len * self.size) as u64
    }

    /// The records `range`, numbered from 0.
    fn slice(&self, range: Range<usize>) -> Records<'a> {
        let mut segments = Vec::new();
        for s in &self.segments {
            let end = s.first + s.data.len() / self.size;
            let (a, b) = (range.start.max(s.first), range.end.min(end));
            if a < b {
                let (from, to) = ((a - s.first) * self.size, (b - s.first) * self.size);
                segments.push(Segment {
                    data: &s.data[from..to],
                    first: a - range.start,
                    file: s.file,
                    offset: s.offset + from,
                });
            }
        }
        Records { segments, size: self.size, len: range.len(), inputs: self.inputs }
    }

    #[inline]
    fn get(&self, i: usize) -> &'a [u8] {
        let s = if self.segments.len() == 1 {
            &self.segments[0]
        } else {
            &self.segments[self.segments.partition_point(|s| s.first <= i) - 1]
        };
        let at = (i - s.first) * self.size;
        &s.data[at..at + self.size]
    }

    /// Calls `f(index, record)` for the records `range`, in order.
    #[inline]
    fn for_each(&self, range: Range<usize>, mut f: impl FnMut(usize, &'a [u8])) {
        for s in &self.segments {
            let end = s.first + s.data.len() / self.size;
            let (a, b) = (range.start.max(s.first), range.end.min(end));
            if a < b {
                let bytes = &s.data[(a - s.first) * self.size..(b - s.first) * self.size];
                for (j, record) in bytes.chunks_exact(self.size).enumerate() {
                    f(a + j, record);
                }
            }
        }
    }

    /// `count` evenly spaced records (all of them if there are fewer).
    ///
    /// With `release`, the pages that sampling maps are let go of every [`SAMPLE_WINDOW`]
    /// bytes: each touch of the mapping maps the kernel's fault-around (64 KiB) of cached
    /// pages, so a sample of a few thousand records otherwise leaves most of a large input
    /// mapped (measured: peak RSS 920 MiB for a 1 GiB input sorted under `--memory 255M`).
    fn sample(&self, count: usize, release: Option<&Inputs>) -> Vec<Vec<u8>> {
        let n = self.len;
        let count = count.min(n);
        let window = (SAMPLE_WINDOW / self.size).max(1);
        let mut mapped_from = 0;
        let mut sample = Vec::with_capacity(count);
        for j in 0..count {
            let i = j * n / count;
            sample.push(self.get(i).to_vec());
            if let Some(inputs) = release
                && (i + 1 - mapped_from >= window || j + 1 == count)
            {
                self.slice(mapped_from..i + 1).release(inputs);
                mapped_from = i + 1;
            }
        }
        sample
    }

    /// Lets the kernel drop these records' pages from the process (they stay cached).
    fn release(&self, inputs: &Inputs) {
        for s in &self.segments {
            inputs.release(SplitRange {
                file: s.file,
                start: s.offset,
                end: s.offset + s.data.len(),
                first_line: 0,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entries and the in-place radix sort.

/// The entry key bits of a record: its first 10 bytes (zero-padded), big-endian, above the
/// index bits.
#[inline(always)]
fn entry_key(record: &[u8]) -> u128 {
    let mut padded = [0u8; ENTRY_KEY_BYTES];
    let head = match record.first_chunk::<ENTRY_KEY_BYTES>() {
        Some(head) => head,
        None => {
            padded[..record.len()].copy_from_slice(record);
            &padded
        }
    };
    let hi = u64::from_be_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    let lo = u16::from_be_bytes([head[8], head[9]]);
    (u128::from(hi) << 64) | (u128::from(lo) << INDEX_BITS)
}

#[inline(always)]
fn index(entry: u128) -> usize {
    (entry & INDEX_MASK) as usize
}

/// Byte `byte` (< 10) of an entry's key.
#[inline(always)]
fn digit(entry: u128, byte: usize) -> usize {
    (entry >> (120 - 8 * byte)) as u8 as usize
}

/// Compares entries as their records compare.
struct Order<'r, 'a> {
    records: &'r Records<'a>,
    /// Record bytes held in an entry: the rest is compared in place.
    held: usize,
}

impl Order<'_, '_> {
    #[inline(never)]
    fn cmp_rest(&self, a: u128, b: u128) -> CmpOrdering {
        let (ra, rb) = (self.records.get(index(a)), self.records.get(index(b)));
        ra[self.held..].cmp(&rb[self.held..])
    }

    /// Compares an entry with a whole record.
    fn cmp_record(&self, a: u128, record: &[u8]) -> CmpOrdering {
        self.records.get(index(a)).cmp(record)
    }
}

/// Sorts `v`, whose entries agree on their first `byte` key bytes: an MSD radix sort on the
/// following key bytes, each level a counting scatter into `scratch` (grown to `v.len()` and
/// reused) and a copy back, with [`small_sort`] for small groups.
fn sort_entries(v: &mut [u128], byte: usize, order: &Order<'_, '_>, scratch: &mut Vec<u128>) {
    let n = v.len();
    if byte >= order.held {
        // Every entry holds the same key bytes: only the rest of the records can tell.
        v.sort_unstable_by(|&a, &b| order.cmp_rest(a, b));
        return;
    }
    if n <= SMALL_SORT {
        return small_sort(v, order);
    }
    let mut counts = [0usize; 256];
    for &e in v.iter() {
        counts[digit(e, byte)] += 1;
    }
    if counts[digit(v[0], byte)] == n {
        return sort_entries(v, byte + 1, order, scratch);
    }
    let mut next = [0usize; 256];
    let mut sum = 0;
    for (slot, &c) in next.iter_mut().zip(&counts) {
        *slot = sum;
        sum += c;
    }
    if scratch.len() < n {
        scratch.resize(n, 0);
    }
    let out = &mut scratch[..n];
    for &e in v.iter() {
        let d = digit(e, byte);
        out[next[d]] = e;
        next[d] += 1;
    }
    v.copy_from_slice(out);
    let mut start = 0;
    for &c in &counts {
        if c > 1 {
            sort_entries(&mut v[start..start + c], byte + 1, order, scratch);
        }
        start += c;
    }
}

/// Sorts a few entries: as plain integers (by key bits, then index, with no call per
/// comparison), then every run of entries with equal key bits by the rest of their records.
fn small_sort(v: &mut [u128], order: &Order<'_, '_>) {
    v.sort_unstable();
    let mut i = 0;
    while i + 1 < v.len() {
        let key = v[i] >> INDEX_BITS;
        let mut j = i + 1;
        while j < v.len() && v[j] >> INDEX_BITS == key {
            j += 1;
        }
        if j - i > 1 {
            v[i..j].sort_unstable_by(|&a, &b| order.cmp_rest(a, b));
        }
        i = j;
    }
}

/// Permutes `v` in place so that its entries are grouped by digit `byte`, in digit order
/// (American flag sort); returns the 257 group bounds, or `None` when every entry has the
/// same digit (nothing moved).
fn partition_by_digit(v: &mut [u128], byte: usize) -> Option<[usize; 257]> {
    let mut counts = [0usize; 256];
    for &e in v.iter() {
        counts[digit(e, byte)] += 1;
    }
    if counts[digit(v[0], byte)] == v.len() {
        return None;
    }
    let mut bounds = [0usize; 257];
    for d in 0..256 {
        bounds[d + 1] = bounds[d] + counts[d];
    }
    let mut heads = [0usize; 256];
    heads.copy_from_slice(&bounds[..256]);
    for d in 0..256 {
        let end = bounds[d + 1];
        while heads[d] < end {
            let mut e = v[heads[d]];
            let mut t = digit(e, byte);
            while t != d {
                std::mem::swap(&mut e, &mut v[heads[t]]);
                heads[t] += 1;
                t = digit(e, byte);
            }
            v[heads[d]] = e;
            heads[d] += 1;
        }
    }
    Some(bounds)
}

/// Equality of keys, for counting duplicates.
#[derive(Clone, Copy)]
struct KeyEq {
    /// Mask of the key bits held in an entry.
    mask: u128,
    /// Key bytes beyond the entry's (compared in place).
    rest: (usize, usize),
}

impl KeyEq {
    fn new(key_size: usize) -> Self {
        let held = key_size.min(ENTRY_KEY_BYTES);
        KeyEq { mask: !0u128 << (128 - 8 * held), rest: (held, key_size.max(held)) }
    }

    #[inline]
    fn entries_equal(&self, a: u128, b: u128, records: &Records<'_>) -> bool {
        (a ^ b) & self.mask == 0
            && (self.rest.0 == self.rest.1 || {
                let (ra, rb) = (records.get(index(a)), records.get(index(b)));
                ra[self.rest.0..self.rest.1] == rb[self.rest.0..self.rest.1]
            })
    }
}

// ---------------------------------------------------------------------------------------
// Output files.

/// An output file: a regular file is written under a temporary name ([`TempFile`]: removed
/// should the job fail or be interrupted) and put in place by `commit`; a device or FIFO is
/// written in place, in order (see [`file_destination`]).
#[derive(Debug)]
enum OutFile {
    Replace(TempFile),
    InPlace { file: File, path: PathBuf },
}

impl OutFile {
    fn create(path: &Path) -> Result<Self> {
        match file_destination(path)? {
            FileDestination::Replace(path) => Ok(OutFile::Replace(TempFile::create(&path)?)),
            FileDestination::InPlace(path) => Ok(OutFile::InPlace { file: open_in_place(&path)?, path }),
        }
    }

    /// The file written, and the name its errors give.
    fn file(&self) -> (&File, &Path) {
        match self {
            OutFile::Replace(temp) => (temp.file(), temp.path()),
            OutFile::InPlace { file, path } => (file, path),
        }
    }

    /// How the sorters write it: at positions, or (a device or FIFO) in order.
    fn sink(&self) -> Sink<'_> {
        match self.file() {
            (file, path) if matches!(self, OutFile::Replace(_)) => Sink::File(file, path),
            (file, path) => Sink::Stream(Stream::File(file, path)),
        }
    }

    /// `fsync`s a replacing file (once).
    fn sync(&mut self) -> Result<()> {
        match self {
            OutFile::Replace(temp) => temp.sync(),
            OutFile::InPlace { .. } => Ok(()),
        }
    }

    /// Puts the file in place: `fsync`ed and renamed when `sync` (the caller `fsync`s the
    /// directory), otherwise swapped in without flushing ([`TempFile::replace_unsynced`]).
    fn commit(self, sync: bool) -> Result<()> {
        match self {
            OutFile::Replace(mut temp) if sync => {
                temp.sync()?;
                temp.rename().map(drop)
            }
            OutFile::Replace(temp) => temp.replace_unsynced(),
            OutFile::InPlace { .. } => Ok(()),
        }
    }
}

/// Part files written so far, renamed into place together once every partition has been
/// written: a failed sort leaves no part files behind (dropped, they remove themselves).
#[derive(Debug, Default)]
struct WrittenParts(Mutex<Vec<OutFile>>);

impl WrittenParts {
    /// Keeps `part` (`fsync`ed first when `sync`, on the calling thread).
    fn add(&self, mut part: OutFile, sync: bool) -> Result<()> {
        if sync {
            part.sync()?;
        }
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(part);
        Ok(())
    }

    fn commit(self, sync: bool) -> Result<()> {
        for part in self.0.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            part.commit(sync)?;
        }
        Ok(())
    }
}

/// Output written in order by one thread.
#[derive(Debug, Clone, Copy)]
enum Stream<'f> {
    Stdout,
    /// A device or FIFO named as the output file.
    File(&'f File, &'f Path),
}

/// Where a piece of output goes.
enum Dest<'f> {
    /// Positioned writes into a file of this thread's own.
    At { file: &'f File, path: &'f Path, offset: u64 },
    /// Positioned writes into a file shared by the threads, done by its writer thread.
    Shared { writer: &'f SharedWriter, offset: u64 },
    /// In order, by one thread.
    Stream(Stream<'f>),
}

impl Dest<'_> {
    /// Writes `data` at the destination's position and moves the position on. `data` may
    /// come back as another (cleared) buffer of the same capacity.
    fn write(&mut self, data: &mut Vec<u8>) -> Result<()> {
        match self {
            Dest::At { file, path, offset } => {
                file.write_all_at(data, *offset).map_err(|e| Error::io("write", *path, e))?;
                *offset += data.len() as u64;
            }
            Dest::Shared { writer, offset } => {
                let len = data.len() as u64;
                writer.hand_over(*offset, data);
                *offset += len;
            }
            Dest::Stream(Stream::Stdout) => std::io::stdout()
                .lock()
                .write_all(data)
                .map_err(|e| Error::io("write", "standard output", e))?,
            Dest::Stream(Stream::File(file, path)) => {
                let mut file: &File = file;
                file.write_all(data).map_err(|e| Error::io("write", *path, e))?
            }
        }
        Ok(())
    }
}

/// The sending side of one writer thread that does the positioned writes of every sorting
/// thread into one shared file.
///
/// ext4, like most filesystems, serializes buffered writes to one file on its inode lock, and a
/// thread waiting for that lock spins in the kernel while the holder copies: with two threads
/// each writing its own pieces of a 1 GiB output, the spinning was a quarter of the in-memory
/// sort's CPU samples (`perf record`). Through the writer, a sorter hands a full buffer over,
/// takes an empty one back and goes on gathering while the writer writes.
struct SharedWriter {
    full: crossbeam_channel::Sender<(u64, Vec<u8>)>,
    free: crossbeam_channel::Receiver<Vec<u8>>,
}

impl SharedWriter {
    /// Buffers in circulation besides the one each sorter holds.
    fn spare_buffers(threads: usize) -> usize {
        threads
    }

    /// Runs `work` with a writer thread for `file`: every buffer handed to the writer is
    /// written at its offset, in the order handed over. A write error goes to `failure` (the
    /// sorters check it between tasks); later buffers are then dropped unwritten.
    fn run<R>(
        file: &File,
        path: &Path,
        plan: &Plan,
        failure: &FirstError,
        work: impl FnOnce(&SharedWriter) -> R,
    ) -> R {
        let (full_tx, full_rx) = crossbeam_channel::unbounded::<(u64, Vec<u8>)>();
        let (free_tx, free_rx) = crossbeam_channel::unbounded();
        for _ in 0..Self::spare_buffers(plan.threads) {
            let _ = free_tx.send(Vec::with_capacity(plan.write_buffer + plan.size));
        }
        std::thread::scope(|scope| {
            spawn_named(scope, "spillway-write".into(), failure, move || {
                for (offset, mut buffer) in full_rx {
                    if !failure.failed()
                        && let Err(e) = file.write_all_at(&buffer, offset)
                    {
                        failure.set(Error::io("write", path, e));
                    }
                    buffer.clear();
                    // The sorters may all have finished: then nobody takes it back.
                    let _ = free_tx.send(buffer);
                }
            });
            // `writer` is dropped when `work` returns, which ends the writer thread's loop.
            let writer = SharedWriter { full: full_tx, free: free_rx };
            work(&writer)
        })
    }

    /// Hands `data` over to be written at `offset` and replaces it by an empty buffer.
    fn hand_over(&self, offset: u64, data: &mut Vec<u8>) {
        let empty = self.free.recv().expect("the writer thread returns every buffer while sorters run");
        let full = std::mem::replace(data, empty);
        self.full.send((offset, full)).expect("the writer thread runs while sorters run");
    }
}

/// The output of the whole sort.
enum Sink<'f> {
    /// One file (the output or a run), written at positions by every thread.
    File(&'f File, &'f Path),
    /// One part file per partition of `partitioner`, in `dir`.
    Parts { dir: &'f Path, partitioner: &'f RangePartitioner, sync: bool },
    /// Standard output, or a device or FIFO: in order, by one thread.
    Stream(Stream<'f>),
}

/// What writing a piece of the output found: its records and keys at both ends (for
/// counting duplicates across pieces).
#[derive(Debug, Default, Clone)]
struct Piece {
    records: u64,
    duplicates: u64,
    first_key: Vec<u8>,
    last_key: Vec<u8>,
}

/// Total duplicates over pieces listed in output order.
fn stitch(pieces: &[Piece]) -> u64 {
    let mut total = 0;
    let mut last: Option<&[u8]> = None;
    for p in pieces.iter().filter(|p| p.records > 0) {
        total += p.duplicates;
        if last == Some(p.first_key.as_slice()) {
            total += 1;
        }
        last = Some(&p.last_key);
    }
    total
}

/// Starts a thread in `scope`; one that cannot be started fails the sort through `failure`
/// (see [`pool::spawn`]), and the threads already running stop at their next task.
fn spawn_named<'s, F: FnOnce() + Send + 's>(
    scope: &'s std::thread::Scope<'s, '_>,
    name: String,
    failure: &FirstError,
    f: F,
) -> bool {
    pool::spawn(scope, name, failure, f).is_some()
}

// ---------------------------------------------------------------------------------------
// Sorting one chunk in memory.

/// Fixed settings of one sort.
struct Plan {
    size: usize,
    key_size: usize,
    threads: usize,
    /// Bytes of each thread's write buffer (a multiple of the record size).
    write_buffer: usize,
    budget: u64,
    max_open_runs: usize,
    count_duplicates: bool,
}

/// Sorts `records` (all of them, in memory) into `sink`, using `entries` (one slot per
/// record). Returns the pieces written, in output order.
fn sort_chunk(
    plan: &Plan,
    records: &Records<'_>,
    entries: &mut [u128],
    sink: &Sink<'_>,
    progress: &Progress,
) -> Result<Vec<Piece>> {
    let n = records.len();
    debug_assert_eq!(entries.len(), n);
    let threads = plan.threads.min(n.div_ceil(4096)).max(1);
    let order = Order { records, held: plan.size.min(ENTRY_KEY_BYTES) };

    // 1. Histogram of the first byte, per thread.
    let ranges: Vec<Range<usize>> = (0..threads).map(|t| t * n / threads..(t + 1) * n / threads).collect();
    let histograms: Vec<[usize; 256]> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|range| {
                pool::spawn_or_run(scope, "spillway-sort".into(), move || {
                    let mut h = [0usize; 256];
                    records.for_each(range.clone(), |_, r| h[r[0] as usize] += 1);
                    h
                })
            })
            .collect();
        handles.into_iter().map(pool::Started::join).collect()
    });

    // 2. Every thread writes its entries straight into its slots of each bucket.
    let mut bucket_bounds = vec![0usize; 257];
    {
        let mut slots: Vec<Vec<&mut [u128]>> = (0..threads).map(|_| Vec::with_capacity(256)).collect();
        let mut rest: &mut [u128] = entries;
        for d in 0..256 {
            let mut total = 0;
            for (t, h) in histograms.iter().enumerate() {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(h[d]);
                slots[t].push(head);
                rest = tail;
                total += h[d];
            }
            bucket_bounds[d + 1] = bucket_bounds[d] + total;
        }
        std::thread::scope(|scope| {
            for (range, mut mine) in ranges.iter().zip(slots) {
                pool::spawn_or_run(scope, "spillway-sort".into(), move || {
                    let mut at = [0usize; 256];
                    records.for_each(range.clone(), |i, r| {
                        let d = r[0] as usize;
                        // A bucket can only overflow when the input changed since its
                        // histogram (a truncated input reads as zeros): the record is dropped
                        // here and the check of the inputs after this chunk fails the sort.
                        if let Some(slot) = mine[d].get_mut(at[d]) {
                            *slot = entry_key(r) | i as u128;
                            at[d] += 1;
                        }
                    });
                });
            }
        });
    }

    // 3. Sort tasks: the buckets, big ones split on their next bytes first.
    let mut tasks: Vec<(Range<usize>, usize)> = Vec::new();
    let threshold = (n / (plan.threads * 8)).max(1 << 16);
    for d in 0..256 {
        split_task(entries, bucket_bounds[d]..bucket_bounds[d + 1], 1, threshold, &order, &mut tasks);
    }

    let pieces = match sink {
        Sink::File(file, path) => {
            sort_and_write(plan, records, entries, &tasks, &order, file, path, progress, threads)
        }
        Sink::Parts { dir, partitioner, sync } => {
            sort_tasks(entries, &tasks, &order, threads)?;
            let bounds = part_bounds(entries, partitioner, &order);
            write_parts(plan, records, entries, &bounds, dir, *sync, progress, threads)
        }
        Sink::Stream(stream) => {
            sort_tasks(entries, &tasks, &order, threads)?;
            let mut buffer = Vec::with_capacity(plan.write_buffer);
            let piece =
                write_entries(plan, records, entries, &mut buffer, &mut Dest::Stream(*stream), progress)?;
            Ok(vec![piece])
        }
    }?;
    // Every record of the chunk has been read: an input that changed meanwhile (truncated
    // ones read as zeros) fails the sort before anything is committed.
    records.inputs.check_unchanged()?;
    Ok(pieces)
}

/// Adds `range` (entries agreeing on `byte` key bytes) as sort tasks, split on its next
/// bytes while it holds more than `threshold` entries.
fn split_task(
    entries: &mut [u128],
    range: Range<usize>,
    byte: usize,
    threshold: usize,
    order: &Order<'_, '_>,
    tasks: &mut Vec<(Range<usize>, usize)>,
) {
    if range.is_empty() {
        return;
    }
    if range.len() <= threshold || byte >= order.held {
        tasks.push((range, byte));
        return;
    }
    match partition_by_digit(&mut entries[range.clone()], byte) {
        None => split_task(entries, range, byte + 1, threshold, order, tasks),
        Some(bounds) => {
            for d in 0..256 {
                let sub = range.start + bounds[d]..range.start + bounds[d + 1];
                split_task(entries, sub, byte + 1, threshold, order, tasks);
            }
        }
    }
}

/// Cuts `entries` into the (contiguous, ordered) task ranges.
fn task_slices<'e>(mut entries: &'e mut [u128], tasks: &[(Range<usize>, usize)]) -> Vec<&'e mut [u128]> {
    let mut at = 0;
    let mut out = Vec::with_capacity(tasks.len());
    for (range, _) in tasks {
        let (_, rest) = std::mem::take(&mut entries).split_at_mut(range.start - at);
        let (mine, rest) = rest.split_at_mut(range.len());
        out.push(mine);
        entries = rest;
        at = range.end;
    }
    out
}

/// Sorts every task, in parallel.
fn sort_tasks(
    entries: &mut [u128],
    tasks: &[(Range<usize>, usize)],
    order: &Order<'_, '_>,
    threads: usize,
) -> Result<()> {
    let queue =
        Mutex::new(task_slices(entries, tasks).into_iter().zip(tasks).collect::<Vec<_>>().into_iter());
    let failure = FirstError::default();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let sorter = || {
                let mut scratch = Vec::new();
                loop {
                    let next = pool::lock(&queue).next();
                    let Some((slice, (_, byte))) = next else { break };
                    sort_entries(slice, *byte, order, &mut scratch);
                }
            };
            if !spawn_named(scope, "spillway-sort".into(), &failure, sorter) {
                break;
            }
        }
    });
    failure.into_result()
}

/// Sorts the tasks and writes each at its offset as soon as it is sorted, in parallel.
#[allow(clippy::too_many_arguments)]
fn sort_and_write(
    plan: &Plan,
    records: &Records<'_>,
    entries: &mut [u128],
    tasks: &[(Range<usize>, usize)],
    order: &Order<'_, '_>,
    file: &File,
    path: &Path,
    progress: &Progress,
    threads: usize,
) -> Result<Vec<Piece>> {
    let queue = Mutex::new(
        task_slices(entries, tasks).into_iter().zip(tasks).enumerate().collect::<Vec<_>>().into_iter(),
    );
    let pieces = Mutex::new(vec![Piece::default(); tasks.len()]);
    let failure = FirstError::default();
    SharedWriter::run(file, path, plan, &failure, |writer| {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                if !spawn_named(scope, "spillway-sort".into(), &failure, || {
                    let mut buffer = Vec::with_capacity(plan.write_buffer + plan.size);
                    let mut scratch = Vec::new();
                    loop {
                        if failure.failed() || progress.cancelled() {
                            break;
                        }
                        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                        let Some((i, (slice, (range, byte)))) = next else { break };
                        sort_entries(slice, *byte, order, &mut scratch);
                        let offset = (range.start * plan.size) as u64;
                        let mut dest = Dest::Shared { writer, offset };
                        match write_entries(plan, records, slice, &mut buffer, &mut dest, progress) {
                            Ok(piece) => {
                                pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = piece
                            }
                            Err(e) => failure.set(e),
                        }
                    }
                }) {
                    break;
                }
            }
        })
    });
    if progress.cancelled() {
        failure.set(Error::Cancelled);
    }
    failure.into_result()?;
    Ok(pieces.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// The entry range of each partition of `partitioner` in the sorted `entries`.
fn part_bounds(entries: &[u128], partitioner: &RangePartitioner, order: &Order<'_, '_>) -> Vec<usize> {
    let mut bounds = vec![0];
    for b in partitioner.boundaries() {
        bounds.push(entries.partition_point(|&e| order.cmp_record(e, b) == CmpOrdering::Less));
    }
    bounds.push(entries.len());
    bounds
}

/// Writes the partitions of the sorted `entries` (cut at `bounds`) into part files.
#[allow(clippy::too_many_arguments)]
fn write_parts(
    plan: &Plan,
    records: &Records<'_>,
    entries: &[u128],
    bounds: &[usize],
    dir: &Path,
    sync: bool,
    progress: &Progress,
    threads: usize,
) -> Result<Vec<Piece>> {
    let parts = bounds.len() - 1;
    let next = AtomicUsize::new(0);
    let pieces = Mutex::new(vec![Piece::default(); parts]);
    let written = WrittenParts::default();
    let failure = FirstError::default();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(parts) {
            if !spawn_named(scope, "spillway-sort".into(), &failure, || {
                let mut buffer = Vec::with_capacity(plan.write_buffer);
                loop {
                    let p = next.fetch_add(1, Ordering::Relaxed);
                    if p >= parts || failure.failed() || progress.cancelled() {
                        break;
                    }
                    let result = OutFile::create(&dir.join(part_name(p as u32))).and_then(|out| {
                        let (file, path) = out.file();
                        let mut dest = Dest::At { file, path, offset: 0 };
                        let piece = write_entries(
                            plan,
                            records,
                            &entries[bounds[p]..bounds[p + 1]],
                            &mut buffer,
                            &mut dest,
                            progress,
                        )?;
                        written.add(out, sync)?;
                        Ok(piece)
                    });
                    match result {
                        Ok(piece) => {
                            pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[p] = piece;
                            progress.partitions_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failure.set(e),
                    }
                }
            }) {
                break;
            }
        }
    });
    if progress.cancelled() {
        failure.set(Error::Cancelled);
    }
    failure.into_result()?;
    // Part files are committed here, within `sort_chunk`: check the inputs first.
    records.inputs.check_unchanged()?;
    written.commit(sync)?;
    Ok(pieces.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Gathers the records of the sorted `entries` into `buffer` and writes them to `dest`.
fn write_entries(
    plan: &Plan,
    records: &Records<'_>,
    entries: &[u128],
    buffer: &mut Vec<u8>,
    dest: &mut Dest<'_>,
    progress: &Progress,
) -> Result<Piece> {
    let size = plan.size;
    let per_write = (plan.write_buffer / size).max(1);
    for chunk in entries.chunks(per_write) {
        buffer.clear();
        gather(records, chunk, buffer);
        let len = buffer.len() as u64;
        dest.write(buffer)?;
        progress.bytes_mapped.fetch_add(len, Ordering::Relaxed);
    }
    let mut piece = Piece { records: entries.len() as u64, ..Piece::default() };
    if plan.count_duplicates
        && let (Some(&first), Some(&last)) = (entries.first(), entries.last())
    {
        let eq = KeyEq::new(plan.key_size);
        piece.duplicates =
            entries.windows(2).filter(|w| eq.entries_equal(w[0], w[1], records)).count() as u64;
        piece.first_key = records.get(index(first))[..plan.key_size].to_vec();
        piece.last_key = records.get(index(last))[..plan.key_size].to_vec();
    }
    Ok(piece)
}

/// Appends the records of `entries` to `buffer`, in order.
///
/// The records come from random places in the input, so every one is a cache miss (and, over
/// a large mapping, a TLB miss): the gather asks for the cache lines of the record
/// [`GATHER_AHEAD`] places further on before copying each one, so that many misses are in
/// flight at once instead of one.
#[inline]
fn gather(records: &Records<'_>, entries: &[u128], buffer: &mut Vec<u8>) {
    match records.segments.as_slice() {
        // The common case, with the record size known to the compiler.
        [segment] if records.size == RECORD_SIZE => {
            gather_fixed::<RECORD_SIZE>(segment.data, entries, buffer)
        }
        [segment] => {
            let (data, size) = (segment.data, records.size);
            for (i, &e) in entries.iter().enumerate() {
                if let Some(&ahead) = entries.get(i + GATHER_AHEAD) {
                    prefetch_range(data, index(ahead) * size, size);
                }
                let at = index(e) * size;
                buffer.extend_from_slice(&data[at..at + size]);
            }
        }
        _ => {
            for (i, &e) in entries.iter().enumerate() {
                if let Some(&ahead) = entries.get(i + GATHER_AHEAD) {
                    prefetch_range(records.get(index(ahead)), 0, records.size);
                }
                buffer.extend_from_slice(records.get(index(e)));
            }
        }
    }
}

/// [`gather`] from one mapped segment of `SIZE`-byte records.
#[inline]
fn gather_fixed<const SIZE: usize>(data: &[u8], entries: &[u128], buffer: &mut Vec<u8>) {
    buffer.reserve(entries.len() * SIZE);
    let fetch = |e: u128| {
        let at = index(e) * SIZE;
        let mut line = 0;
        while line < SIZE {
            prefetch_read(data, at + line);
            line += 64;
        }
        prefetch_read(data, at + SIZE - 1);
    };
    for &e in entries.iter().take(GATHER_AHEAD) {
        fetch(e);
    }
    for (i, &e) in entries.iter().enumerate() {
        if let Some(&ahead) = entries.get(i + GATHER_AHEAD) {
            fetch(ahead);
        }
        let at = index(e) * SIZE;
        let record: &[u8; SIZE] = data[at..at + SIZE].try_into().expect("one record");
        buffer.extend_from_slice(record);
    }
}

// ---------------------------------------------------------------------------------------
// Runs and merges.

/// A sorted run: a plain file of records in the spill directory.
#[derive(Debug)]
struct Run {
    path: PathBuf,
    records: u64,
}

/// An open run being merged (shared by the merging threads: reads are `pread`s).
struct OpenRun<'r> {
    run: &'r Run,
    file: File,
}

/// Index of the first record of `run` that is not less than `key` (a whole record).
fn lower_bound(run: &OpenRun<'_>, size: usize, key: &[u8], scratch: &mut [u8]) -> Result<u64> {
    let (mut lo, mut hi) = (0u64, run.run.records);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        run.file
            .read_exact_at(&mut scratch[..size], mid * size as u64)
            .map_err(|e| Error::io("read", &run.run.path, e))?;
        if &scratch[..size] < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
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

/// Reads a range of a run's records through a buffer.
struct Cursor<'r> {
    run: &'r OpenRun<'r>,
    size: usize,
    next: u64,
    end: u64,
    buffer: Vec<u8>,
    pos: usize,
    len: usize,
    /// [`head16`] of the current record (`u128::MAX` when done).
    key: u128,
    done: bool,
}

impl<'r> Cursor<'r> {
    fn new(run: &'r OpenRun<'r>, size: usize, range: Range<u64>, buffer: Vec<u8>) -> Result<Self> {
        let mut c = Cursor {
            run,
            size,
            next: range.start,
            end: range.end,
            buffer,
            pos: 0,
            len: 0,
            key: u128::MAX,
            done: false,
        };
        c.refill()?;
        Ok(c)
    }

    #[cold]
    fn refill(&mut self) -> Result<()> {
        let capacity = (self.buffer.len() / self.size) as u64;
        let n = capacity.min(self.end - self.next) as usize;
        if n == 0 {
            self.done = true;
            self.key = u128::MAX;
            return Ok(());
        }
        let bytes = n * self.size;
        self.run
            .file
            .read_exact_at(&mut self.buffer[..bytes], self.next * self.size as u64)
            .map_err(|e| Error::io("read", &self.run.run.path, e))?;
        self.next += n as u64;
        self.pos = 0;
        self.len = bytes;
        self.key = head16(&self.buffer[..self.size]);
        Ok(())
    }

    #[inline(always)]
    fn current(&self) -> &[u8] {
        &self.buffer[self.pos..self.pos + self.size]
    }

    #[inline(always)]
    fn advance(&mut self) -> Result<()> {
        self.pos += self.size;
        if self.pos >= self.len {
            return self.refill();
        }
        self.key = head16(&self.buffer[self.pos..self.pos + self.size]);
        Ok(())
    }
}

/// Does cursor `a`'s record come before cursor `b`'s? Done cursors come last; equal records
/// in cursor order.
#[inline(always)]
fn before(cursors: &[Cursor<'_>], a: usize, b: usize) -> bool {
    let (x, y) = (&cursors[a], &cursors[b]);
    if x.key != y.key { x.key < y.key } else { before_slow(x, y, a < b) }
}

#[inline(never)]
fn before_slow(x: &Cursor<'_>, y: &Cursor<'_>, tie: bool) -> bool {
    match (x.done, y.done) {
        (true, true) => tie,
        (true, false) => false,
        (false, true) => true,
        (false, false) => match x.current()[16.min(x.size)..].cmp(&y.current()[16.min(y.size)..]) {
            CmpOrdering::Less => true,
            CmpOrdering::Greater => false,
            CmpOrdering::Equal => tie,
        },
    }
}

/// Plays the matches below `node` of a loser tree over `k` cursors; returns the winner.
fn build_tree(cursors: &[Cursor<'_>], tree: &mut [usize], node: usize) -> usize {
    let k = cursors.len();
    if node >= k {
        return node - k;
    }
    let left = build_tree(cursors, tree, 2 * node);
    let right = build_tree(cursors, tree, 2 * node + 1);
    if before(cursors, left, right) {
        tree[node] = right;
        left
    } else {
        tree[node] = left;
        right
    }
}

/// Merges the `ranges` of `runs` (one per run) into `dest`.
#[allow(clippy::too_many_arguments)]
fn merge_piece(
    plan: &Plan,
    runs: &[OpenRun<'_>],
    ranges: &[Range<u64>],
    read_buffer: usize,
    buffers: &mut Vec<Vec<u8>>,
    out: &mut Vec<u8>,
    dest: &mut Dest<'_>,
    count_duplicates: bool,
) -> Result<Piece> {
    let size = plan.size;
    let mut cursors = Vec::with_capacity(runs.len());
    for (run, range) in runs.iter().zip(ranges) {
        if !range.is_empty() {
            let mut buffer = buffers.pop().unwrap_or_default();
            buffer.resize(read_buffer, 0);
            cursors.push(Cursor::new(run, size, range.clone(), buffer)?);
        }
    }
    let mut piece = Piece::default();
    let ks = plan.key_size;
    // Keys of at most 16 bytes are compared through the cursors' `head16`.
    let short_keys = ks <= 16;
    let key_shift = 128 - 8 * ks.min(16) as u32;
    let mut last_head = 0u128;
    let mut last_key = vec![0u8; ks];
    let k = cursors.len();
    if k > 0 {
        let mut tree = vec![0usize; k];
        tree[0] = build_tree(&cursors, &mut tree, 1);
        let per_write = (plan.write_buffer / size).max(1) * size;
        out.clear();
        loop {
            let winner = tree[0];
            let c = &cursors[winner];
            if c.done {
                break;
            }
            let record = c.current();
            if count_duplicates {
                let head = c.key >> key_shift;
                if piece.records == 0 {
                    piece.first_key = record[..ks].to_vec();
                } else if head == last_head && (short_keys || record[..ks] == last_key[..]) {
                    piece.duplicates += 1;
                }
                last_head = head;
                if !short_keys {
                    last_key.copy_from_slice(&record[..ks]);
                }
            }
            match <&[u8; RECORD_SIZE]>::try_from(record) {
                Ok(fixed) => out.extend_from_slice(fixed),
                Err(_) => out.extend_from_slice(record),
            }
            piece.records += 1;
            if out.len() >= per_write {
                dest.write(out)?;
                out.clear();
            }
            cursors[winner].advance()?;
            // Replay the winner's path to the root.
            let mut champion = winner;
            let mut node = (winner + k) / 2;
            while node > 0 {
                let rival = tree[node];
                if before(&cursors, rival, champion) {
                    tree[node] = champion;
                    champion = rival;
                }
                node /= 2;
            }
            tree[0] = champion;
        }
        if count_duplicates {
            piece.last_key =
                if short_keys { (last_head << key_shift).to_be_bytes()[..ks].to_vec() } else { last_key };
        }
        dest.write(out)?;
        out.clear();
    }
    buffers.extend(cursors.into_iter().map(|c| c.buffer));
    Ok(piece)
}

/// Merges `runs` into `sink`, in pieces cut at `splitters` (whole records, sorted) for a
/// file, at the partition boundaries for part files; pieces run in parallel.
fn merge_runs(
    plan: &Plan,
    runs: &[Run],
    sink: &Sink<'_>,
    splitters: &[Vec<u8>],
    count_duplicates: bool,
    progress: &Progress,
) -> Result<Vec<Piece>> {
    let size = plan.size;
    let open: Vec<OpenRun<'_>> = runs
        .iter()
        .map(|run| {
            let file = File::open(&run.path).map_err(|e| Error::io("open", &run.path, e))?;
            Ok(OpenRun { run, file })
        })
        .collect::<Result<_>>()?;
    let cuts: &[Vec<u8>] = match sink {
        Sink::File(..) => splitters,
        Sink::Parts { partitioner, .. } => partitioner.boundaries(),
        Sink::Stream(_) => &[],
    };
    // bounds[r][j]: where piece j starts in run r.
    let mut scratch = vec![0u8; size];
    let mut bounds = Vec::with_capacity(open.len());
    for run in &open {
        let mut b = vec![0u64];
        for cut in cuts {
            b.push(lower_bound(run, size, cut, &mut scratch)?);
        }
        b.push(run.run.records);
        bounds.push(b);
    }
    let pieces_total = cuts.len() + 1;
    let threads = match sink {
        Sink::Stream(_) => 1,
        _ => plan.threads.min(pieces_total),
    };
    let k = open.len().max(1);
    let share = (plan.budget / threads as u64) as usize;
    let read_buffer =
        ((share.saturating_sub(2 * plan.write_buffer) / k).min(MAX_READ_BUFFER) / size).max(1) * size;

    let next = AtomicUsize::new(0);
    let pieces = Mutex::new(vec![Piece::default(); pieces_total]);
    let written = WrittenParts::default();
    let failure = FirstError::default();
    let merge_all = |writer: Option<&SharedWriter>| {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                if !spawn_named(scope, "spillway-merge".into(), &failure, || {
                    let mut buffers: Vec<Vec<u8>> = Vec::new();
                    let mut out = Vec::with_capacity(plan.write_buffer + size);
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        if j >= pieces_total || failure.failed() || progress.cancelled() {
                            break;
                        }
                        let ranges: Vec<Range<u64>> = bounds.iter().map(|b| b[j]..b[j + 1]).collect();
                        let mut merge = |dest: &mut Dest<'_>| {
                            merge_piece(
                                plan,
                                &open,
                                &ranges,
                                read_buffer,
                                &mut buffers,
                                &mut out,
                                dest,
                                count_duplicates,
                            )
                        };
                        let result = match sink {
                            Sink::File(..) => {
                                let offset = bounds.iter().map(|b| b[j]).sum::<u64>() * size as u64;
                                let writer = writer.expect("a file sink has a writer");
                                merge(&mut Dest::Shared { writer, offset })
                            }
                            Sink::Parts { dir, sync, .. } => OutFile::create(&dir.join(part_name(j as u32)))
                                .and_then(|f| {
                                    let piece = merge(&mut Dest::At {
                                        file: f.file().0,
                                        path: f.file().1,
                                        offset: 0,
                                    })?;
                                    written.add(f, *sync)?;
                                    progress.partitions_done.fetch_add(1, Ordering::Relaxed);
                                    Ok(piece)
                                }),
                            Sink::Stream(stream) => merge(&mut Dest::Stream(*stream)),
                        };
                        match result {
                            Ok(piece) => {
                                pieces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[j] = piece
                            }
                            Err(e) => failure.set(e),
                        }
                    }
                }) {
                    break;
                }
            }
        })
    };
    match sink {
        Sink::File(file, path) => SharedWriter::run(file, path, plan, &failure, |w| merge_all(Some(w))),
        _ => merge_all(None),
    }
    if progress.cancelled() {
        failure.set(Error::Cancelled);
    }
    failure.into_result()?;
    if let Sink::Parts { sync, .. } = sink {
        written.commit(*sync)?;
    }
    Ok(pieces.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

// ---------------------------------------------------------------------------------------
// The driver.

/// Sorts the records of `inputs` into `output` (see the module docs for the order, the
/// algorithm and the memory budget). [`OutputSpec::File`] gets every record in order;
/// [`OutputSpec::Dir`] gets `options.partitions` part files whose concatenation is in order,
/// and `_SUCCESS` holding the metrics as JSON.
///
/// ```
/// use spillway_engine::sort::{SortOptions, sort_records};
/// use spillway_engine::{Inputs, OutputSpec};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("a"), b"dd2bb9")?; // 3-byte records, 2-byte keys
/// std::fs::write(dir.path().join("b"), b"aa5bb1")?;
/// let inputs = Inputs::new([dir.path().join("a"), dir.path().join("b")])?;
/// let out = dir.path().join("sorted");
/// let options = SortOptions { record_size: 3, key_size: 2, threads: 2, ..Default::default() };
/// let metrics = sort_records(&inputs, &OutputSpec::File(out.clone()), &options)?;
/// assert_eq!(std::fs::read(out)?, b"aa5bb1bb9dd2");
/// assert_eq!((metrics.records, metrics.duplicate_keys, metrics.passes), (4, 1, 1.0));
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// Invalid options; an input that is not a whole number of records ([`Error::Input`], naming
/// the file); an output directory that already holds output; I/O errors (a full disk), naming
/// the file. No output appears under its final name unless the sort succeeded.
pub fn sort_records(inputs: &Inputs, output: &OutputSpec, options: &SortOptions) -> Result<SortMetrics> {
    let started = Instant::now();
    let sampler = AnonSampler::start();
    options.validate().map_err(|e| config(e.0))?;
    let progress = &*options.progress;
    progress.set_phase(Phase::Starting);
    let records = Records::new(inputs, options.record_size)?;
    let n = records.len();
    let size = options.record_size;
    progress.bytes_total.store(records.bytes(), Ordering::Relaxed);
    // Part files go into a staging directory renamed into place at the end.
    let staged = match output {
        OutputSpec::Dir(dir) => Some(StagedDir::create(dir, fresh_token())?),
        _ => None,
    };
    let threads = options.threads;
    let budget = options.memory_budget;
    let write_buffer = ((budget as usize / (4 * threads)).min(MAX_WRITE_BUFFER) / size).max(1) * size;
    let plan = Plan {
        size,
        key_size: options.key_size,
        threads,
        write_buffer,
        budget,
        max_open_runs: options.max_open_runs.unwrap_or_else(|| limits::default_max_open_runs(1)),
        count_duplicates: true,
    };
    // Each sorter's write buffer, and the writer thread's spare ones.
    let buffers = (threads + SharedWriter::spare_buffers(threads)) * write_buffer;
    let capacity = ((budget.saturating_sub(buffers as u64)) / (size as u64 + 18)).max(1);
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).min(INDEX_MASK as usize);
    let in_memory = n <= capacity;

    // Range boundaries: partitions of a directory output, and the pieces of a parallel merge.
    let pieces = threads * PIECES_PER_THREAD;
    let sample_size = match output {
        OutputSpec::Dir(_) => SAMPLE_PER_PARTITION * options.partitions as usize,
        _ if !in_memory => SAMPLE_PER_PARTITION * pieces,
        _ => 0,
    };
    // Out of core, only the chunk being sorted should be resident.
    let mut sample = records.sample(sample_size, (!in_memory).then_some(inputs));
    let sample_records = sample.len() as u64;
    let partitioner = match output {
        OutputSpec::Dir(_) => Some(RangePartitioner::from_sample(&mut sample, options.partitions)?),
        _ => None,
    };
    let splitters = RangePartitioner::from_sample(&mut sample, pieces as u32)?.boundaries().to_vec();
    drop(sample);
    if !in_memory {
        // What the fault-around of the last sampled record mapped beyond it.
        records.release(inputs);
    }

    // The final output.
    let out_file = match output {
        OutputSpec::File(path) => Some(OutFile::create(path)?),
        _ => None,
    };
    let sink = match (output, &out_file, &partitioner) {
        (OutputSpec::File(_), Some(f), _) => f.sink(),
        (OutputSpec::Dir(_), _, Some(p)) => Sink::Parts {
            dir: staged.as_ref().expect("a directory output is staged").path(),
            partitioner: p,
            sync: options.sync,
        },
        _ => Sink::Stream(Stream::Stdout),
    };

    progress.set_phase(Phase::Map);
    let mut stats = RunStats::default();
    let (pieces_written, sorted_done, merged_done);
    if in_memory {
        let mut entries = vec![0u128; n];
        pieces_written = sort_chunk(&plan, &records, &mut entries, &sink, progress)?;
        sorted_done = Instant::now();
        merged_done = sorted_done;
        stats.chunks = u64::from(n > 0);
    } else {
        let spill_parent = options.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spill = SpillDir::create(&spill_parent)?;
        let chunks = n.div_ceil(capacity);
        let chunk_len = n.div_ceil(chunks);
        let mut entries = vec![0u128; chunk_len];
        let mut runs = Vec::with_capacity(chunks);
        for c in 0..chunks {
            let range = c * chunk_len..((c + 1) * chunk_len).min(n);
            let chunk = records.slice(range.clone());
            let path = spill.path().join(format!("run-{c:06}.rec"));
            let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            let plan = Plan { count_duplicates: false, ..plan };
            sort_chunk(&plan, &chunk, &mut entries[..range.len()], &Sink::File(&file, &path), progress)?;
            drop(file);
            chunk.release(inputs);
            progress.spills.fetch_add(1, Ordering::Relaxed);
            stats.run_bytes += chunk.bytes();
            runs.push(Run { path, records: range.len() as u64 });
        }
        drop(entries);
        stats.chunks = chunks as u64;
        stats.runs = runs.len() as u64;
        sorted_done = Instant::now();

        progress.set_phase(Phase::Merge);
        let runs = merge_until_fits(&plan, runs, spill.path(), &splitters, &mut stats, progress)?;
        merged_done = Instant::now();
        progress.set_phase(Phase::Reduce);
        stats.max_fan_in = stats.max_fan_in.max(runs.len());
        pieces_written = merge_runs(&plan, &runs, &sink, &splitters, true, progress)?;
        drop(spill);
    }
    let duplicate_keys = stitch(&pieces_written);
    let output_files = match output {
        OutputSpec::Dir(_) => u64::from(options.partitions),
        _ => 1,
    };
    if let Some(f) = out_file {
        f.commit(options.sync)?;
        if options.sync
            && let OutputSpec::File(path) = output
        {
            sync_parent(path);
        }
    }
    let finished = Instant::now();
    let input_bytes = records.bytes();
    let written = stats.run_bytes + stats.merge_bytes + input_bytes;
    let mut metrics = SortMetrics {
        job: Metrics {
            ranks: 1,
            threads,
            partitions: options.partitions,
            memory_budget: budget,
            max_open_runs: plan.max_open_runs,
            io_backend: "pwrite".into(),
            input_files: inputs.files().len() as u64,
            input_bytes,
            splits: stats.chunks,
            map_records: n as u64,
            spills: stats.runs,
            spill_bytes: stats.run_bytes,
            merge_steps: stats.merge_steps,
            merge_bytes: stats.merge_bytes,
            max_fan_in: stats.max_fan_in,
            peak_open_runs: stats.max_fan_in,
            output_keys: n as u64,
            output_bytes: input_bytes,
            output_files,
            peak_rss_bytes: 0,
            peak_anon_bytes: 0,
            seconds: PhaseTimes {
                map: (sorted_done - started).as_secs_f64(),
                merge: (merged_done - sorted_done).as_secs_f64(),
                reduce: (finished - merged_done).as_secs_f64(),
                total: (finished - started).as_secs_f64(),
                ..PhaseTimes::default()
            },
            ..Metrics::default()
        },
        records: n as u64,
        record_size: size,
        key_size: options.key_size,
        in_memory,
        runs: stats.runs,
        passes: if input_bytes == 0 { 0.0 } else { written as f64 / input_bytes as f64 },
        duplicate_keys,
        sample_records,
    };
    metrics.job.peak_rss_bytes = peak_rss();
    metrics.job.peak_anon_bytes = sampler.finish();
    if let Some(staged) = staged {
        let json = serde_json::to_vec_pretty(&metrics).expect("metrics serialize");
        staged.commit(&json, options.sync)?;
    }
    progress.set_phase(Phase::Done);
    Ok(metrics)
}

#[derive(Debug, Default)]
struct RunStats {
    chunks: u64,
    runs: u64,
    run_bytes: u64,
    merge_steps: u64,
    merge_bytes: u64,
    max_fan_in: usize,
}

/// Merges runs (smallest first) until at most F remain.
fn merge_until_fits(
    plan: &Plan,
    runs: Vec<Run>,
    dir: &Path,
    splitters: &[Vec<u8>],
    stats: &mut RunStats,
    progress: &Progress,
) -> Result<Vec<Run>> {
    let sizes: Vec<u64> = runs.iter().map(|r| r.records).collect();
    let merge_plan = plan_merges(&sizes, plan.max_open_runs);
    let mut slots: Vec<Option<Run>> = runs.into_iter().map(Some).collect();
    for step in &merge_plan.steps {
        let inputs: Vec<Run> = step.inputs.iter().map(|&i| slots[i].take().expect("planned run")).collect();
        let path = dir.join(format!("merge-{:06}.rec", step.output));
        let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        merge_runs(plan, &inputs, &Sink::File(&file, &path), splitters, false, progress)?;
        drop(file);
        let records: u64 = inputs.iter().map(|r| r.records).sum();
        for input in &inputs {
            let _ = std::fs::remove_file(&input.path);
        }
        stats.merge_steps += 1;
        stats.merge_bytes += records * plan.size as u64;
        stats.max_fan_in = stats.max_fan_in.max(inputs.len());
        progress.merges.fetch_add(1, Ordering::Relaxed);
        slots.resize_with(slots.len().max(step.output + 1), || None);
        slots[step.output] = Some(Run { path, records });
    }
    Ok(merge_plan.final_inputs.iter().map(|&i| slots[i].take().expect("final run")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic xorshift generator.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn random_records(seed: u64, n: usize, size: usize, alphabet: u8) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        (0..n * size).map(|_| (rng.next() % u64::from(alphabet)) as u8).collect()
    }

    fn reference(data: &[u8], size: usize) -> Vec<u8> {
        let mut recs: Vec<&[u8]> = data.chunks_exact(size).collect();
        recs.sort();
        recs.concat()
    }

    fn sort_bytes(files: &[&[u8]], options: &SortOptions, dir_output: bool) -> (Vec<u8>, SortMetrics) {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let p = dir.path().join(format!("in{i}"));
                std::fs::write(&p, data).unwrap();
                p
            })
            .collect();
        let inputs = Inputs::new(&paths).unwrap();
        let options = SortOptions { spill_dir: Some(dir.path().join("spill")), ..options.clone() };
        if dir_output {
            let out = dir.path().join("out");
            let m = sort_records(&inputs, &OutputSpec::Dir(out.clone()), &options).unwrap();
            let mut all = Vec::new();
            for p in 0..options.partitions {
                all.extend(std::fs::read(out.join(part_name(p))).unwrap());
            }
            assert!(out.join("_SUCCESS").exists());
            (all, m)
        } else {
            let out = dir.path().join("out");
            let m = sort_records(&inputs, &OutputSpec::File(out.clone()), &options).unwrap();
            assert_eq!(std::fs::read_dir(dir.path().join("spill")).map_or(0, |d| d.count()), 0);
            (std::fs::read(out).unwrap(), m)
        }
    }

    #[test]
    fn radix_sort_matches_comparison_sort() {
        for (size, alphabet, n) in [
            (100, 255, 5000),
            (100, 2, 5000),
            (12, 2, 3000),
            (10, 3, 3000),
            (4, 2, 2000),
            (16, 200, 4000),
            (1, 255, 999),
        ] {
            let data = random_records(size as u64, n, size, alphabet);
            let inputs_dir = tempfile::tempdir().unwrap();
            let p = inputs_dir.path().join("in");
            std::fs::write(&p, &data).unwrap();
            let inputs = Inputs::new([&p]).unwrap();
            let records = Records::new(&inputs, size).unwrap();
            let order = Order { records: &records, held: size.min(ENTRY_KEY_BYTES) };
            let mut entries: Vec<u128> = (0..n).map(|i| entry_key(records.get(i)) | i as u128).collect();
            sort_entries(&mut entries, 0, &order, &mut Vec::new());
            let got: Vec<u8> = entries.iter().flat_map(|&e| records.get(index(e)).to_vec()).collect();
            assert_eq!(got, reference(&data, size), "size {size} alphabet {alphabet}");
        }
    }

    #[test]
    fn in_memory_out_of_core_and_parts_agree() {
        let a = random_records(1, 3000, 100, 255);
        let b = random_records(2, 1777, 100, 4); // many duplicate keys
        let expected = reference(&[a.clone(), b.clone()].concat(), 100);
        let base = SortOptions { threads: 2, partitions: 5, ..Default::default() };
        let (got, m) = sort_bytes(&[&a, &b], &base, false);
        assert!(got == expected && m.in_memory && m.passes == 1.0);
        let small = SortOptions { memory_budget: 64 << 10, ..base.clone() };
        let (got, m) = sort_bytes(&[&a, &b], &small, false);
        assert!(got == expected, "out of core");
        assert!(!m.in_memory && m.runs > 2 && m.passes == 2.0, "{m:?}");
        let f2 = SortOptions { max_open_runs: Some(2), ..small.clone() };
        let (got, m) = sort_bytes(&[&a, &b], &f2, false);
        assert!(got == expected && m.job.merge_steps > 0 && m.passes > 2.0 && m.job.max_fan_in == 2, "{m:?}");
        for options in [&base, &small, &f2] {
            let (got, m) = sort_bytes(&[&a, &b], options, true);
            assert!(got == expected, "parts");
            assert_eq!(m.job.output_files, 5);
        }
        let one = SortOptions { threads: 1, partitions: 1, ..small };
        assert!(sort_bytes(&[&a, &b], &one, false).0 == expected);
    }

    #[test]
    fn odd_sizes_duplicates_and_empty() {
        for (size, key) in [(7, 3), (1, 1), (16, 16), (128, 20)] {
            let data = random_records(size as u64, 2500, size, 3);
            let expected = reference(&data, size);
            for budget in [64 << 10, 1 << 30] {
                let options = SortOptions {
                    record_size: size,
                    key_size: key,
                    threads: 2,
                    partitions: 3,
                    memory_budget: budget,
                    ..Default::default()
                };
                let (got, m) = sort_bytes(&[&data, &[]], &options, false);
                assert!(got == expected, "size {size} budget {budget}");
                let dups = expected.chunks_exact(size).collect::<Vec<_>>();
                let dups = dups.windows(2).filter(|w| w[0][..key] == w[1][..key]).count() as u64;
                assert_eq!(m.duplicate_keys, dups, "size {size} key {key} budget {budget}");
                let (parts, _) = sort_bytes(&[&data], &options, true);
                assert!(parts == expected);
            }
        }
        let (got, m) = sort_bytes(&[&[]], &SortOptions::default(), false);
        assert!(got.is_empty() && m.records == 0);
        let (got, m) = sort_bytes(&[&[]], &SortOptions { partitions: 3, ..Default::default() }, true);
        assert_eq!(m.job.output_files, 3);
        assert!(got.is_empty());
    }

    #[test]
    fn partial_records_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.dat");
        std::fs::write(&p, [0u8; 250]).unwrap();
        let inputs = Inputs::new([&p]).unwrap();
        let err = sort_records(&inputs, &OutputSpec::File(dir.path().join("o")), &SortOptions::default())
            .unwrap_err();
        assert!(err.is_input_error());
        let text = err.to_string();
        assert!(
            text.contains("odd.dat") && text.contains("partial record of 50 bytes at byte 200"),
            "{text}"
        );
        assert!(!dir.path().join("o").exists());
        let bad = SortOptions { key_size: 101, ..Default::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn generic_job_gives_the_same_parts() {
        let data = random_records(9, 4000, 100, 2);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, &data).unwrap();
        let inputs = Inputs::new([&p]).unwrap();
        let partitioner = sample_partitioner(&inputs, 100, 4).unwrap();
        let engine = crate::Engine::builder().threads(2).memory_budget(256 << 10).build().unwrap();
        let job = RecordSortJob { record_size: 100 };
        engine.run_with(&job, &inputs, &partitioner, &OutputSpec::Dir(dir.path().join("g"))).unwrap();
        let options = SortOptions { threads: 2, partitions: 4, ..Default::default() };
        sort_records(&inputs, &OutputSpec::Dir(dir.path().join("s")), &options).unwrap();
        for part in 0..4 {
            let g = std::fs::read(dir.path().join("g").join(part_name(part))).unwrap();
            let s = std::fs::read(dir.path().join("s").join(part_name(part))).unwrap();
            assert!(g == s, "part {part}");
            assert!(!g.is_empty());
        }
    }
}
