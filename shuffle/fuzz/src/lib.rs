//! What the fuzz targets do with their input, shared by both targets and the seed generator.
//!
//! [`exercise`] hands the bytes to [`RunReader::from_source`] (the entry point that
//! [`RunReader::open`] and the MPI exchange share) as three value types, checks that a refusal is
//! a corruption error naming the run and an offset within it, that validation allocates no more
//! than the input justifies, and, when a run is accepted, reads every record, value, block and
//! merged group of it. [`fix_checksums`] repairs frame and footer checksums so that mutated inputs
//! get past them into the rkyv, key-order and iteration code.
//!
//! [`journal`] does the same for the journal of resumable jobs
//! ([`spillway_engine::journal::parse`]), shared by the `journal` and `journal_framed` targets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

use spillway_shuffle::run::format::repair_checksums;

pub mod journal;
use spillway_shuffle::{Aligned, ArchivedValue, ByteSource, Error, Merge, RunReader, Value, to_owned};

/// The name the fuzzed run goes by; errors must name it.
pub const RUN_NAME: &str = "fuzz-input.run";

/// Bytes that validation may allocate beyond what the input's size justifies (a path, an error
/// message, rkyv's error context).
pub const ALLOC_SLACK: usize = 16 << 10;

/// Opens `data` as a run of `u64`, `Vec<u8>` and `String` values (the last two have the same
/// archived shape, so a run of one is also validated as the other) and reads whatever opens.
///
/// # Panics
///
/// On any finding: a panic inside the reader, an error that is not a corruption error naming
/// the run and an offset within it, an allocation larger than the input justifies, or an
/// accepted run whose contents contradict its footer or key order.
pub fn exercise(data: &[u8]) -> [Outcome; 3] {
    [
        check::<u64>(data, |v| {
            black_box(v.to_native());
        }),
        check::<Vec<u8>>(data, |v| {
            black_box(v.as_slice());
        }),
        check::<String>(data, |v| {
            black_box(v.as_str());
        }),
    ]
}

/// What became of an input opened as one value type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted and read: this many records.
    Accepted(u64),
    /// Refused with this error message (without the run's name and offset).
    Refused(String),
}

fn check<V: Value>(data: &[u8], visit: impl Fn(&ArchivedValue<V>)) -> Outcome {
    let mut buf = Aligned::with_capacity(data.len());
    buf.extend_from_slice(data);
    let (result, usage) = measure(|| RunReader::<V>::from_source(RUN_NAME.into(), ByteSource::Owned(buf)));
    // One allocation at most the size of the input (the footer checksum covers a copy of the
    // footer, the section table is as long as the footer); all of them together at most twice.
    assert!(
        usage.largest <= data.len() + ALLOC_SLACK,
        "validating {} bytes made an allocation of {} bytes",
        data.len(),
        usage.largest
    );
    assert!(
        usage.peak <= 2 * data.len() + ALLOC_SLACK,
        "validating {} bytes held {} bytes at once",
        data.len(),
        usage.peak
    );
    let err = match result {
        Ok(run) => {
            read_everything(&run, visit);
            return Outcome::Accepted(run.total_records());
        }
        Err(err) => err,
    };
    let message = err.to_string();
    assert!(message.contains(RUN_NAME), "{message}");
    match err {
        Error::Corrupt { path, offset, what } => {
            assert_eq!(path, Path::new(RUN_NAME));
            assert!(offset <= data.len() as u64, "offset {offset} past the end of {} bytes", data.len());
            Outcome::Refused(what)
        }
        Error::UnsupportedVersion { path, .. } => {
            assert_eq!(path, Path::new(RUN_NAME));
            Outcome::Refused("unsupported version".into())
        }
        other => panic!("not a corruption error: {other:?}"),
    }
}

/// Reads every record of an accepted run, in every way the reader offers.
fn read_everything<V: Value>(run: &RunReader<V>, visit: impl Fn(&ArchivedValue<V>)) {
    let mut total = 0u64;
    for p in 0..run.partitions() {
        let section = run.section(p);
        assert_eq!(run.section_bytes(p).len() as u64, section.len);
        let mut records = 0u64;
        let mut prev: Option<&[u8]> = None;
        let mut iter = run.iter(p);
        while let Some((key, value)) = iter.next() {
            iter.prefetch_ahead();
            assert!(prev.is_none_or(|prev| prev <= key), "partition {p}: keys out of order");
            prev = Some(key);
            visit(value);
            black_box(to_owned::<V>(value));
            records += 1;
        }
        assert_eq!(records, run.records(p), "partition {p}: record count");
        let mut blocks = 0u32;
        let mut block_records = 0u64;
        for block in run.blocks(p) {
            assert_eq!(block.ends.len(), block.values.len());
            block_records += block.ends.len() as u64;
            blocks += 1;
        }
        assert_eq!((block_records, blocks), (section.records, section.blocks), "partition {p}: blocks");
        total += records;
    }
    assert_eq!(total, run.total_records());

    // All partitions merged (each is sorted, so the merge is well-formed), by groups.
    let mut merge = Merge::new((0..run.partitions()).map(|p| run.iter(p)).collect());
    let mut merged = 0u64;
    let mut prev: Option<&[u8]> = None;
    while let Some((key, group)) = merge.next_group() {
        assert!(prev.is_none_or(|prev| prev < key), "merged groups out of order");
        prev = Some(key);
        for value in group {
            visit(value);
            merged += 1;
        }
    }
    assert_eq!(merged, total);
}

/// Repairs frame and footer checksums ([`repair_checksums`]).
pub fn fix_checksums(bytes: &mut [u8]) {
    repair_checksums(bytes);
}

/// Allocation counters of [`CountingAlloc`], active while [`measure`] runs.
static COUNTING: AtomicBool = AtomicBool::new(false);
static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// What a measured call allocated.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// The largest single allocation (or reallocation), in bytes.
    pub largest: usize,
    /// The most bytes allocated during the call and live at the same time.
    pub peak: usize,
}

/// Runs `f`, counting its heap allocations (the fuzz targets are single-threaded).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    CURRENT.store(0, Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    let usage =
        Usage { largest: LARGEST.load(Ordering::SeqCst), peak: PEAK.load(Ordering::SeqCst).max(0) as usize };
    (out, usage)
}

fn count(grow: usize, shrink: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LARGEST.fetch_max(grow, Ordering::Relaxed);
        let now = CURRENT.fetch_add(grow as isize - shrink as isize, Ordering::Relaxed) + grow as isize
            - shrink as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// The system allocator, counting what [`measure`]d calls allocate.
#[derive(Debug)]
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only atomics and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 0);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, layout.size());
        // SAFETY: forwarded; `ptr` came from this allocator, which is `System`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size, layout.size());
        // SAFETY: forwarded; `ptr` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;
