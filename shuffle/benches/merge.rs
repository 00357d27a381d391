//! Micro benchmarks of the loser-tree merge: `Merge` over the partition iterators of open
//! runs, at fan-in 2, 8, 64 and 512.
//!
//! Every benchmark of a shape merges the same total number of records (2M 16-byte-key/`u64`
//! records, or 500k 100-byte records), dealt round-robin from one random set into the fan-in
//! runs and sorted per run; one partition. Runs are written and opened once per fan-in,
//! outside the timed loop, and read through memory maps of files in the page cache. Times are
//! the benchmarking thread's CPU time unless `SPILLWAY_BENCH_CLOCK=wall` (see `common`).
//!
//! - `merge/<shape>/<fan-in>`: `Merge::new` + `next_record` until exhausted, folding keys and
//!   values into a checksum.
//! - `merge_combine/k16_u64/64`: `next_combined` with a sum, over 2M records drawn from 250k
//!   distinct keys (about 8 values per key).
//! - `merge_to_run/k16_u64/64`: `merge_readers` (merge, deserialize, `RunWriter` to a file).
//!
//! Before timing, every merged input is checked: `Merge` yields all its records, in key order.
//!
//! Throughput counts input records, and their logical bytes (key plus value payload).

mod common;

use std::path::PathBuf;

use common::{
    Key16U64, Rec100, Shape, duplicated_records, random_records, short_group, throughput, timed, write_runs,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use spillway_shuffle::rkyv::Archived;
use spillway_shuffle::{ArchivedValue, IoBackend, Merge, MergeOptions, ReadMode, RunReader, merge_readers};

const FAN_INS: [usize; 4] = [2, 8, 64, 512];

/// Runs written to a temporary directory and opened.
struct OpenRuns<S: Shape> {
    _dir: tempfile::TempDir,
    readers: Vec<RunReader<S::V>>,
}

impl<S: Shape> OpenRuns<S> {
    fn new(records: &common::Records<S::V>, fan_in: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = write_runs(dir.path(), &records.split_sorted(fan_in));
        let readers: Vec<_> =
            paths.iter().map(|p| RunReader::<S::V>::open(p, ReadMode::Mmap).expect("open")).collect();
        let total: u64 = readers.iter().map(RunReader::total_records).sum();
        assert_eq!(total, records.len() as u64);
        OpenRuns { _dir: dir, readers }
    }

    fn merge(&self) -> Merge<'_, S::V> {
        Merge::new(self.readers.iter().map(|r| r.iter(0)).collect())
    }

    /// Asserts that `Merge` yields `records` records in key order.
    fn check(&self, records: usize) {
        let mut merge = self.merge();
        let mut prev: Option<&[u8]> = None;
        let mut n = 0;
        while let Some((key, _)) = merge.next_record() {
            assert!(prev.is_none_or(|prev| prev <= key), "merge out of order");
            prev = Some(key);
            n += 1;
        }
        assert_eq!(n, records);
    }
}

fn merge<S: Shape>(c: &mut Criterion) {
    let records = random_records::<S>(S::RECORDS, 0x5EED_0003);
    let runs: Vec<(usize, OpenRuns<S>)> =
        FAN_INS.iter().map(|&fan_in| (fan_in, OpenRuns::<S>::new(&records, fan_in))).collect();
    drop(records);
    for (_, runs) in &runs {
        runs.check(S::RECORDS);
    }

    let mut group = short_group(c, "merge");
    group.throughput(throughput::<S>(S::RECORDS));
    for (fan_in, runs) in &runs {
        group.bench_with_input(BenchmarkId::new(S::NAME, fan_in), runs, |b, runs| {
            timed(b, || drain::<S>(runs.merge()));
        });
    }
    group.finish();
}

/// Takes every record of `merge`, folding it into a checksum.
fn drain<'a, S: Shape>(merge: impl Iterator<Item = (&'a [u8], &'a ArchivedValue<S::V>)>) -> u64 {
    merge.fold(0, |acc, (key, value)| S::fold(acc, key, value))
}

fn sum(acc: &mut u64, v: &Archived<u64>) {
    *acc = acc.wrapping_add(v.to_native());
}

fn merge_combine(c: &mut Criterion) {
    type S = Key16U64;
    let fan_in = 64;
    let records = duplicated_records::<S>(S::RECORDS, S::RECORDS / 8, 0x5EED_0004);
    let runs = OpenRuns::<S>::new(&records, fan_in);
    drop(records);
    runs.check(S::RECORDS);
    let mut group = short_group(c, "merge_combine");
    group.throughput(throughput::<S>(S::RECORDS));
    group.bench_with_input(BenchmarkId::new(S::NAME, fan_in), &runs, |b, runs| {
        timed(b, || {
            let mut merge = runs.merge();
            let mut acc = 0u64;
            while let Some((key, total)) = merge.next_combined(sum) {
                acc = acc.wrapping_add(total).wrapping_add(key.len() as u64);
            }
            acc
        });
    });
    group.finish();
}

fn merge_to_run(c: &mut Criterion) {
    type S = Key16U64;
    let fan_in = 64;
    let records = random_records::<S>(S::RECORDS, 0x5EED_0005);
    let runs = OpenRuns::<S>::new(&records, fan_in);
    drop(records);
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("merged.run");
    let options = MergeOptions { io: IoBackend::Std, ..MergeOptions::default() };
    let mut group = short_group(c, "merge_to_run");
    group.throughput(throughput::<S>(S::RECORDS));
    group.bench_with_input(BenchmarkId::new(S::NAME, fan_in), &runs, |b, runs| {
        timed(b, || merge_readers(&runs.readers, &out, None, &options).expect("merge").bytes);
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    merge::<Key16U64>(c);
    merge::<Rec100>(c);
    merge_combine(c);
    merge_to_run(c);
}

criterion_group! {
    name = merges;
    config = common::criterion();
    targets = benches
}
criterion_main!(merges);
