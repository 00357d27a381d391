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
//! run, decoded by the merge and copied again by reduce: several times the CPU of the specialized
//! path below (figures in `bench/README.md`); the generic final merge into one file is
//! single-threaded.
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
//!    cache lines of the record 16 places ahead ([`prefetch_read`]), which halved its time. Part files ([`OutputSpec::Dir`]) use the boundaries of a
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
//! # Settings
//!
//! The sort takes an [`Engine`]: its threads, partitions (the part files of
//! [`OutputSpec::Dir`]), memory budget, open-run bound F, spill directory, progress counters,
//! metrics file, memory sampling and `sync` are set and checked once, by
//! [`EngineBuilder::build`] (a thread share under 16 KiB or a budget above the machine's
//! memory is refused as it is for every job); the records' own shape is a [`RecordShape`].
//! Some engine settings do not apply: runs and outputs are written with positioned writes from
//! every thread (`pwrite`), not through the engine's [`IoBackend`], except that
//! [`IoBackend::Direct`] writes the runs (and intermediate merges) with `O_DIRECT` through
//! io_uring ([`DirectFile`]: aligned registered buffers, the sorters gathering the next while
//! the kernel writes the previous) and reads them back through direct cursors (one ring per
//! merging thread, three reads in flight per run), past the page cache; runs are otherwise
//! read with `pread` into buffers of bounded size; inputs are read as [`Inputs`] was
//! opened (mmap or pread), whatever the engine's read mode; there are no splits, and no job
//! code to retry (`max_attempts`). Outputs are the engine's: a file under a temporary name
//! renamed into place, a device, FIFO or standard output written in order, part files in a
//! staging directory. Without
//! [`EngineBuilder::sync`], an existing output file is swapped out rather than renamed over
//! ([`TempFile::replace_unsynced`]: ext4 would otherwise write the whole new output to disk
//! inside the `rename`, 0.5-1.3 s per GiB here).
//!
//! # Modules
//!
//! - `records`: the mapped inputs as one sequence of fixed-size records, and sampling.
//! - `radix`: entries (key bytes and record index in a `u128`), their radix sort, sort tasks.
//! - `chunk`: sorting one chunk in memory and gathering its records into the output.
//! - `sink`: part files, the destinations of pieces of output and the shared writer thread.
//! - `external`: runs and the parallel loser-tree merge, intermediate merges.
//! - `generic`: the generic path ([`RecordSortJob`], [`sample_partitioner`]).
//!
//! [`SplitMode::Records`]: crate::SplitMode::Records
//! [`prefetch_read`]: spillway_shuffle::io::prefetch_read
//! [`plan_merges`]: spillway_shuffle::plan_merges
//! [`TempFile::replace_unsynced`]: crate::TempFile::replace_unsynced
//! [`EngineBuilder::build`]: crate::EngineBuilder::build
//! [`EngineBuilder::sync`]: crate::EngineBuilder::sync

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;
use spillway_shuffle::io::direct::DirectFile;
use spillway_shuffle::{IoBackend, RangePartitioner};

use crate::engine::Engine;
use crate::error::{ConfigError, Error, Result};
use crate::input::Inputs;
use crate::metrics::{AnonSampler, Metrics, Phase, PhaseTimes, peak_rss};
use crate::output::{Destination, OutputSpec, StagedDir, commit_with_metrics, fresh_token};
use crate::report::SpanKind;
use crate::spill::SpillDir;

mod chunk;
mod external;
mod generic;
mod radix;
mod records;
mod sink;

pub use generic::{RecordSortJob, sample_partitioner};

use chunk::sort_chunk;
use external::{Run, RunStats, merge_runs, merge_until_fits};
use radix::INDEX_MASK;
use records::Records;
use sink::{SharedWriter, Sink, stitch};

/// The Sort Benchmark's record length.
pub const RECORD_SIZE: usize = 100;
/// The Sort Benchmark's key length.
pub const KEY_SIZE: usize = 10;
/// Sample records per partition (and per merge piece) for range boundaries.
pub const SAMPLE_PER_PARTITION: usize = 100;
/// Largest write buffer (per thread).
const MAX_WRITE_BUFFER: usize = 4 << 20;
/// Merge pieces per thread when merging into one file.
const PIECES_PER_THREAD: usize = 4;

/// The records [`sort_records`] sorts: their length and the length of their key (the rest of
/// its settings are the [`Engine`]'s). The default is the Sort Benchmark's.
///
/// ```
/// let shape = spillway_engine::sort::RecordShape::default();
/// assert_eq!((shape.record_size, shape.key_size), (100, 10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordShape {
    /// Record length in bytes (default 100).
    pub record_size: usize,
    /// Key length in bytes, at most the record length (default 10). Records are ordered by
    /// key, equal keys by the rest of the record (see the module docs: the output does not
    /// depend on it); it decides what counts as a duplicate key in the metrics.
    pub key_size: usize,
}

impl Default for RecordShape {
    fn default() -> Self {
        RecordShape { record_size: RECORD_SIZE, key_size: KEY_SIZE }
    }
}

impl RecordShape {
    /// Checks the shape.
    ///
    /// # Errors
    ///
    /// A zero record size, a key size of zero or longer than a record.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.record_size == 0 {
            return Err(ConfigError("record size must be at least 1 byte".into()));
        }
        if self.key_size == 0 || self.key_size > self.record_size {
            return Err(ConfigError(format!(
                "key size {} must be between 1 and the record size {}",
                self.key_size, self.record_size
            )));
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
    /// Spill runs written and read with `O_DIRECT` through io_uring ([`IoBackend::Direct`]).
    direct: bool,
}

impl Plan {
    /// Buffers of a run's [`DirectFile`]: one per sorter plus two, so that writes are in
    /// flight while every sorter fills its next buffer.
    fn direct_buffers(&self) -> usize {
        self.threads + 2
    }

    /// Bytes of each of a [`DirectFile`]'s buffers: together as much as the shared writer's
    /// spare buffers take ([`SharedWriter::spare_buffers`]), so that the budget cuts the input
    /// into the same chunks either way.
    fn direct_capacity(&self) -> usize {
        let total = SharedWriter::spare_buffers(self.threads) * self.write_buffer;
        (total / self.direct_buffers()).max(1)
    }
}

/// Whether the runs of an out-of-core sort of `input_bytes` are written and read with
/// `O_DIRECT` ([`DirectFile`]): asked for with [`IoBackend::Direct`] (when io_uring is
/// available); with [`IoBackend::Auto`], when the sort's own traffic through the page cache
/// (input, runs and output: three times the input) would not fit in `MemAvailable`, so that
/// buffered runs would evict cached data, the sort's own input included. Measured on 8 GiB
/// with `--memory 1G` (`bench/results/sort-direct-8G.md`): direct runs 163-167 s wall against
/// 177-201 s buffered, 15 s of system time against 21; on 100 MB with `--memory 16M` buffered runs are several times
/// faster, since the page cache absorbs them and small direct writes wait for the device.
fn direct_runs(engine: &Engine, input_bytes: u64) -> bool {
    match engine.io_requested {
        IoBackend::Direct => engine.io == IoBackend::Direct,
        IoBackend::Auto => {
            // The page cache is charged to the control group too.
            let facts = crate::engine::MemoryFacts::read(engine.threads);
            let available = [facts.mem_available, facts.cgroup.map(|c| c.bytes)].into_iter().flatten().min();
            available.is_some_and(|a| input_bytes.saturating_mul(3) > a)
                && IoBackend::Direct.resolve() == IoBackend::Direct
        }
        _ => false,
    }
}

/// Sorts the records of `inputs` into `output` with the settings of `engine` (see the module
/// docs for the order, the algorithm and the memory budget). [`OutputSpec::File`] gets every
/// record in order; [`OutputSpec::Dir`] gets the engine's `partitions` part files whose
/// concatenation is in order, and `_SUCCESS` holding the metrics as JSON.
///
/// The engine's threads, partitions, memory budget, open-run bound F, spill directory,
/// progress counters, metrics file, memory sampling and [`sync`](crate::EngineBuilder::sync)
/// apply as they do to its jobs (and were checked by
/// [`EngineBuilder::build`](crate::EngineBuilder::build)); its split size, I/O backend, read
/// mode and `max_attempts` do not (see the module docs).
///
/// ```
/// use spillway_engine::sort::{RecordShape, sort_records};
/// use spillway_engine::{Engine, Inputs, OutputSpec};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("a"), b"dd2bb9")?; // 3-byte records, 2-byte keys
/// std::fs::write(dir.path().join("b"), b"aa5bb1")?;
/// let inputs = Inputs::new([dir.path().join("a"), dir.path().join("b")])?;
/// let out = dir.path().join("sorted");
/// let engine = Engine::builder().threads(2).build()?;
/// let shape = RecordShape { record_size: 3, key_size: 2 };
/// let metrics = sort_records(&engine, &inputs, &OutputSpec::File(out.clone()), shape)?;
/// assert_eq!(std::fs::read(out)?, b"aa5bb1bb9dd2");
/// assert_eq!((metrics.records, metrics.duplicate_keys, metrics.passes), (4, 1, 1.0));
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// An invalid [`RecordShape`]; an engine of several ranks (this sort runs in one process: run
/// [`RecordSortJob`] across ranks); an input that is not a whole number of records
/// ([`Error::Input`], naming the file); an output directory that already holds output; I/O
/// errors (a full disk), naming the file. No output appears under its final name unless the
/// sort succeeded.
pub fn sort_records(
    engine: &Engine,
    inputs: &Inputs,
    output: &OutputSpec,
    shape: RecordShape,
) -> Result<SortMetrics> {
    let started = Instant::now();
    shape.check()?;
    if engine.cluster.size() > 1 {
        return Err(ConfigError(format!(
            "sort_records runs in one process, not across {} ranks: run RecordSortJob through the engine",
            engine.cluster.size()
        ))
        .into());
    }
    if let OutputSpec::Sink(_) = output {
        return Err(ConfigError(
            "sort_records writes files or standard output, not a sink: run RecordSortJob through the engine"
                .into(),
        )
        .into());
    }
    let sampler = AnonSampler::start(engine.sample_memory);
    let progress = &*engine.progress;
    progress.set_phase(Phase::Starting);
    let records = Records::new(inputs, shape.record_size)?;
    let n = records.len();
    let size = shape.record_size;
    progress.bytes_total.store(records.bytes(), Ordering::Relaxed);
    // Part files go into a staging directory renamed into place at the end.
    let staged = match output {
        OutputSpec::Dir(dir) => Some(StagedDir::create(dir, fresh_token())?),
        _ => None,
    };
    let threads = engine.threads;
    let budget = engine.memory_budget;
    let write_buffer = ((budget as usize / (4 * threads)).min(MAX_WRITE_BUFFER) / size).max(1) * size;
    let plan = Plan {
        size,
        key_size: shape.key_size,
        threads,
        write_buffer,
        budget,
        // One merge at a time opens its runs (its threads share them).
        max_open_runs: engine.max_open_runs_for(1),
        count_duplicates: true,
        direct: false,
    };
    // Each sorter's write buffer, and the writer thread's spare ones (or a direct run's pool
    // of the same size).
    let buffers = (threads + SharedWriter::spare_buffers(threads)) * write_buffer;
    let capacity = ((budget.saturating_sub(buffers as u64)) / (size as u64 + 18)).max(1);
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).min(INDEX_MASK as usize);
    let in_memory = n <= capacity;
    let plan = Plan { direct: !in_memory && direct_runs(engine, records.bytes()), ..plan };

    // Range boundaries: partitions of a directory output, and the pieces of a parallel merge.
    let pieces = threads * PIECES_PER_THREAD;
    let sample_size = match output {
        OutputSpec::Dir(_) => SAMPLE_PER_PARTITION * engine.partitions as usize,
        _ if !in_memory => SAMPLE_PER_PARTITION * pieces,
        _ => 0,
    };
    // Out of core, only the chunk being sorted should be resident.
    let mut sample = records.sample(sample_size, (!in_memory).then_some(inputs));
    let sample_records = sample.len() as u64;
    let partitioner = match output {
        OutputSpec::Dir(_) => Some(RangePartitioner::from_sample(&mut sample, engine.partitions)?),
        _ => None,
    };
    let splitters = RangePartitioner::from_sample(&mut sample, pieces as u32)?.boundaries().to_vec();
    drop(sample);
    if !in_memory {
        // What the fault-around of the last sampled record mapped beyond it.
        records.release(inputs);
    }

    // The final output: a file or standard output, or part files.
    let dest = match output {
        OutputSpec::File(path) => Some(Destination::create(path)?),
        OutputSpec::Stdout => Some(Destination::Stdout),
        OutputSpec::Dir(_) | OutputSpec::Sink(_) => None,
    };
    let sink = match (&dest, &staged, &partitioner) {
        (Some(dest), _, _) => sink::sink(dest),
        (None, Some(staged), Some(p)) => {
            Sink::Parts { dir: staged.path(), partitioner: p, sync: engine.sync }
        }
        _ => unreachable!("a directory output is staged and partitioned"),
    };

    progress.set_phase(Phase::Map);
    let mut stats = RunStats::default();
    let (pieces_written, sorted_done, merged_done);
    // The spill directory's filesystem refused O_DIRECT: the direct path went through the
    // page cache.
    let mut direct_refused = false;
    // The report's record (--report): the driver thread's steps (the sort's own threads are
    // not recorded).
    if in_memory {
        let mut entries = vec![0u128; n];
        let mut span = progress.span(SpanKind::Map);
        pieces_written = sort_chunk(&plan, &records, &mut entries, &sink, progress)?;
        if let Some(span) = &mut span {
            span.bytes(records.bytes());
        }
        drop(span);
        sorted_done = Instant::now();
        merged_done = sorted_done;
        stats.chunks = u64::from(n > 0);
    } else {
        let spill = SpillDir::create(&engine.spill_dir)?;
        let chunks = n.div_ceil(capacity);
        let chunk_len = n.div_ceil(chunks);
        let mut entries = vec![0u128; chunk_len];
        let mut runs = Vec::with_capacity(chunks);
        let mut page_cached_runs = false;
        for c in 0..chunks {
            let range = c * chunk_len..((c + 1) * chunk_len).min(n);
            let chunk = records.slice(range.clone());
            let path = spill.path().join(format!("run-{c:06}.rec"));
            let plan = Plan { count_duplicates: false, ..plan };
            let mut span = progress.span(SpanKind::Spill);
            if let Some(span) = &mut span {
                span.bytes(chunk.bytes());
            }
            let entries = &mut entries[..range.len()];
            if plan.direct {
                let file = DirectFile::create(&path, plan.direct_buffers(), plan.direct_capacity())?;
                sort_chunk(&plan, &chunk, entries, &Sink::Direct(&file), progress)?;
                if !file.is_direct() {
                    page_cached_runs = true;
                }
                file.finish(false)?;
            } else {
                let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
                sort_chunk(&plan, &chunk, entries, &Sink::File(&file, &path), progress)?;
            }
            drop(span);
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
        let span = progress.span(SpanKind::Merge);
        let runs = merge_until_fits(&plan, runs, spill.path(), &splitters, &mut stats, progress)?;
        drop(span);
        merged_done = Instant::now();
        progress.set_phase(Phase::Reduce);
        stats.max_fan_in = stats.max_fan_in.max(runs.len());
        let span = progress.span(SpanKind::Reduce);
        pieces_written = merge_runs(&plan, &runs, &sink, &splitters, true, progress)?;
        drop(span);
        drop(spill);
        direct_refused = page_cached_runs;
    }
    let duplicate_keys = stitch(&pieces_written);
    let output_files = match output {
        OutputSpec::Dir(_) => u64::from(engine.partitions),
        _ => 1,
    };
    // The output's data is on disk before the sort is timed; it is put in place (with the
    // metrics file) once the metrics are known.
    let mut dest = dest;
    if let (Some(dest), true) = (&mut dest, engine.sync) {
        dest.sync()?;
    }
    let finished = Instant::now();
    let input_bytes = records.bytes();
    let written = stats.run_bytes + stats.merge_bytes + input_bytes;
    let mut metrics = SortMetrics {
        job: Metrics {
            ranks: 1,
            threads,
            partitions: engine.partitions,
            memory_budget: budget,
            memory_budget_source: engine.memory_budget_source.clone(),
            max_open_runs: plan.max_open_runs,
            io_backend: match (plan.direct, direct_refused) {
                (false, _) => "pwrite".into(),
                (true, false) => "direct".into(),
                (true, true) => "direct (O_DIRECT refused by the spill directory: page cache)".into(),
            },
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
        key_size: shape.key_size,
        in_memory,
        runs: stats.runs,
        passes: if input_bytes == 0 { 0.0 } else { written as f64 / input_bytes as f64 },
        duplicate_keys,
        sample_records,
    };
    metrics.job.peak_rss_bytes = peak_rss();
    metrics.job.peak_anon_bytes = sampler.finish();
    let json = serde_json::to_vec_pretty(&metrics).expect("metrics serialize");
    let _span = progress.span(SpanKind::Commit);
    commit_with_metrics(engine.metrics_file.as_deref(), &json, || {
        if let Some(dest) = dest {
            dest.commit(engine.sync)?;
        }
        match staged {
            Some(staged) => staged.commit(&json, engine.sync),
            None => Ok(()),
        }
    })?;
    progress.set_phase(Phase::Done);
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineBuilder;
    use crate::output::part_name;

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

    /// `n` random records of `size` bytes over the first `alphabet` byte values (shared
    /// with the other modules' tests).
    pub(super) fn random_records(seed: u64, n: usize, size: usize, alphabet: u8) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        (0..n * size).map(|_| (rng.next() % u64::from(alphabet)) as u8).collect()
    }

    /// `data`'s records sorted by a comparison sort.
    pub(super) fn reference(data: &[u8], size: usize) -> Vec<u8> {
        let mut recs: Vec<&[u8]> = data.chunks_exact(size).collect();
        recs.sort();
        recs.concat()
    }

    /// Sorts `files` with the engine `builder` builds (spilling into a directory of the
    /// test's own) into one file or part files; returns what the output holds.
    fn sort_bytes(
        files: &[&[u8]],
        builder: &EngineBuilder,
        shape: RecordShape,
        dir_output: bool,
    ) -> (Vec<u8>, SortMetrics) {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<std::path::PathBuf> = files
            .iter()
            .enumerate()
            .map(|(i, data)| {
                let p = dir.path().join(format!("in{i}"));
                std::fs::write(&p, data).unwrap();
                p
            })
            .collect();
        let inputs = Inputs::new(&paths).unwrap();
        let engine = builder.clone().spill_dir(dir.path().join("spill")).build().unwrap();
        let out = dir.path().join("out");
        if dir_output {
            let m = sort_records(&engine, &inputs, &OutputSpec::Dir(out.clone()), shape).unwrap();
            let mut all = Vec::new();
            for p in 0..m.job.partitions {
                all.extend(std::fs::read(out.join(part_name(p))).unwrap());
            }
            assert!(out.join("_SUCCESS").exists());
            (all, m)
        } else {
            let m = sort_records(&engine, &inputs, &OutputSpec::File(out.clone()), shape).unwrap();
            assert_eq!(std::fs::read_dir(dir.path().join("spill")).map_or(0, |d| d.count()), 0);
            (std::fs::read(out).unwrap(), m)
        }
    }

    #[test]
    fn in_memory_out_of_core_and_parts_agree() {
        let a = random_records(1, 3000, 100, 255);
        let b = random_records(2, 1777, 100, 4); // many duplicate keys
        let expected = reference(&[a.clone(), b.clone()].concat(), 100);
        let tera = RecordShape::default();
        let base = Engine::builder().threads(2).partitions(5);
        let (got, m) = sort_bytes(&[&a, &b], &base, tera, false);
        assert!(got == expected && m.in_memory && m.passes == 1.0);
        let small = base.clone().memory_budget(64 << 10);
        let (got, m) = sort_bytes(&[&a, &b], &small, tera, false);
        assert!(got == expected, "out of core");
        assert!(!m.in_memory && m.runs > 2 && m.passes == 2.0, "{m:?}");
        let f2 = small.clone().max_open_runs(2);
        let (got, m) = sort_bytes(&[&a, &b], &f2, tera, false);
        assert!(got == expected && m.job.merge_steps > 0 && m.passes > 2.0 && m.job.max_fan_in == 2, "{m:?}");
        for builder in [&base, &small, &f2] {
            let (got, m) = sort_bytes(&[&a, &b], builder, tera, true);
            assert!(got == expected, "parts");
            assert_eq!(m.job.output_files, 5);
        }
        let one = small.threads(1).partitions(1);
        assert!(sort_bytes(&[&a, &b], &one, tera, false).0 == expected);
        // Without sync: the same bytes (an existing output swapped out unflushed).
        let unsynced = base.sync(false);
        assert!(sort_bytes(&[&a, &b], &unsynced, tera, false).0 == expected);
        assert!(sort_bytes(&[&a, &b], &unsynced, tera, true).0 == expected);
    }

    #[test]
    fn odd_sizes_duplicates_and_empty() {
        for (size, key) in [(7, 3), (1, 1), (16, 16), (128, 20)] {
            let data = random_records(size as u64, 2500, size, 3);
            let expected = reference(&data, size);
            let shape = RecordShape { record_size: size, key_size: key };
            for budget in [64 << 10, 1 << 30] {
                let builder = Engine::builder().threads(2).partitions(3).memory_budget(budget);
                let (got, m) = sort_bytes(&[&data, &[]], &builder, shape, false);
                assert!(got == expected, "size {size} budget {budget}");
                let dups = expected.chunks_exact(size).collect::<Vec<_>>();
                let dups = dups.windows(2).filter(|w| w[0][..key] == w[1][..key]).count() as u64;
                assert_eq!(m.duplicate_keys, dups, "size {size} key {key} budget {budget}");
                let (parts, _) = sort_bytes(&[&data], &builder, shape, true);
                assert!(parts == expected);
            }
        }
        let tera = RecordShape::default();
        let (got, m) = sort_bytes(&[&[]], &Engine::builder(), tera, false);
        assert!(got.is_empty() && m.records == 0);
        let (got, m) = sort_bytes(&[&[]], &Engine::builder().partitions(3), tera, true);
        assert_eq!(m.job.output_files, 3);
        assert!(got.is_empty());
    }

    #[test]
    fn partial_records_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.dat");
        std::fs::write(&p, [0u8; 250]).unwrap();
        let inputs = Inputs::new([&p]).unwrap();
        let engine = Engine::builder().build().unwrap();
        let out = OutputSpec::File(dir.path().join("o"));
        let err = sort_records(&engine, &inputs, &out, RecordShape::default()).unwrap_err();
        assert!(err.is_input_error());
        let text = err.to_string();
        assert!(
            text.contains("odd.dat") && text.contains("partial record of 50 bytes at byte 200"),
            "{text}"
        );
        assert!(!dir.path().join("o").exists());
        let bad = RecordShape { key_size: 101, ..RecordShape::default() };
        assert!(bad.check().is_err());
        let err = sort_records(&engine, &inputs, &out, bad).unwrap_err();
        assert!(err.to_string().contains("key size 101"), "{err}");
    }
}
