//! Micro benchmarks of the spill-run format: writing a run, opening (validating) it, and
//! iterating it in place.
//!
//! Two record shapes: 16-byte random keys with `u64` values (2M records) and 100-byte records
//! (10-byte key, `[u8; 90]` value; 500k records). Every run holds one partition. Inputs are
//! generated once per group from a fixed-seed PRNG, outside the timed loop; runs live in a
//! temporary directory, so reads and writes go to the page cache. Times are the benchmarking
//! thread's CPU time (user + system) unless `SPILLWAY_BENCH_CLOCK=wall` (see `common`).
//!
//! - `write/<shape>`: push N sorted records through `RunWriter` (`IoBackend::Std`) and
//!   `finish(false)`.
//! - `open_validate/<shape>`: `RunReader::open(path, ReadMode::Mmap)`: map, checksum every
//!   block, validate every archive, check key order.
//! - `iterate/<shape>`: iterate an open reader's partition in place, folding keys and values
//!   into a black-boxed checksum.
//!
//! Throughput counts logical bytes: key plus value payload (24 or 100 bytes per record).

mod common;

use std::hint::black_box;

use common::{Key16U64, Rec100, Shape, random_records, short_group, throughput, timed};
use criterion::{Criterion, criterion_group, criterion_main};
use spillway_shuffle::{ReadMode, RunReader};

fn write<S: Shape>(c: &mut Criterion) {
    let sorted = random_records::<S>(S::RECORDS, 0x5EED_0001).sorted();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("write.run");
    let mut group = short_group(c, "write");
    group.throughput(throughput::<S>(S::RECORDS));
    group.bench_function(S::NAME, |b| timed(b, || black_box(sorted.write_run(&path)).bytes));
    group.finish();
}

fn read<S: Shape>(c: &mut Criterion) {
    let sorted = random_records::<S>(S::RECORDS, 0x5EED_0002).sorted();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("read.run");
    sorted.write_run(&path);
    drop(sorted);

    let mut group = short_group(c, "open_validate");
    group.throughput(throughput::<S>(S::RECORDS));
    group.bench_function(S::NAME, |b| {
        timed(b, || {
            let reader = RunReader::<S::V>::open(black_box(&path), ReadMode::Mmap).expect("open");
            reader.total_records()
        });
    });
    group.finish();

    let reader = RunReader::<S::V>::open(&path, ReadMode::Mmap).expect("open");
    assert_eq!(reader.total_records(), S::RECORDS as u64);
    let mut group = short_group(c, "iterate");
    group.throughput(throughput::<S>(S::RECORDS));
    group.bench_function(S::NAME, |b| {
        timed(b, || black_box(&reader).iter(0).fold(0u64, |acc, (key, value)| S::fold(acc, key, value)));
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    write::<Key16U64>(c);
    write::<Rec100>(c);
    read::<Key16U64>(c);
    read::<Rec100>(c);
}

criterion_group! {
    name = run_io;
    config = common::criterion();
    targets = benches
}
criterion_main!(run_io);
