//! Helpers shared by the shuffle integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use spillway_shuffle::{IoBackend, RunInfo, RunReader, RunWriter, Value};

/// Records as (partition, key, value), to be sorted before writing.
pub type Records = Vec<(u32, Vec<u8>, u64)>;

/// Writes `records` (in any order) as a sorted run with small blocks.
pub fn write_run(path: &Path, partitions: u32, mut records: Records, block: usize) -> RunInfo {
    records.sort();
    let mut w = RunWriter::<u64>::create(path, partitions, IoBackend::Std).unwrap().with_block_target(block);
    for (p, k, v) in &records {
        w.push(*p, k, v).unwrap();
    }
    w.finish(false).unwrap()
}

/// Reads every record of every partition.
pub fn read_all(path: &Path) -> Records {
    let r = RunReader::<u64>::open(path, spillway_shuffle::ReadMode::Mmap).unwrap();
    let mut out = Vec::new();
    for p in 0..r.partitions() {
        out.extend(r.iter(p).map(|(k, v)| (p, k.to_vec(), v.to_native())));
    }
    out
}

/// The reference for a combined merge: sum values per (partition, key).
pub fn sum_by_key(records: &Records) -> Records {
    let mut map: BTreeMap<(u32, Vec<u8>), u64> = BTreeMap::new();
    for (p, k, v) in records {
        *map.entry((*p, k.clone())).or_default() += v;
    }
    map.into_iter().map(|((p, k), v)| (p, k, v)).collect()
}

/// Asserts that `V` is a run value type (compile-time check used by tests).
pub fn is_value<V: Value>() {}
