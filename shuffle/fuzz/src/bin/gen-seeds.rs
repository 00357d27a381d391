//! Writes the seed corpus: small, valid runs made by `RunWriter`, byte-for-byte the same on
//! every machine (the writer is deterministic).
//!
//! Usage: `gen-seeds DIR` (the directory is created; existing seeds are overwritten).

use std::path::Path;

use spillway_shuffle::{IoBackend, RunWriter, Value};

/// Writes `records` ((partition, key, value), already in (partition, key) order) as a run.
fn seed<V: Value>(dir: &Path, name: &str, partitions: u32, block: usize, records: &[(u32, Vec<u8>, V)]) {
    let path = dir.join(name);
    let mut w = RunWriter::<V>::create(&path, partitions, IoBackend::Std)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
        .with_block_target(block);
    for (p, key, value) in records {
        w.push(*p, key, value).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let info = w.finish(false).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{:>6} bytes  {}", info.bytes, path.display());
}

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: gen-seeds DIR");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));

    // The smallest valid run: one empty partition (header, one footer entry, trailer).
    seed::<u64>(dir, "u64-empty.run", 1, 1 << 10, &[]);

    // Several blocks per partition, an empty key, duplicate keys.
    let mut records = Vec::new();
    for p in 0..3u32 {
        records.push((p, Vec::new(), 0));
        for i in 0..10u64 {
            records.push((p, format!("k{:02}", i / 2).into_bytes(), i * 7 + u64::from(p)));
        }
    }
    seed::<u64>(dir, "u64-blocks.run", 3, 64, &records);

    // Empty partitions between full ones, one block each.
    let records: Vec<_> = [(0u32, "apple", 2u64), (0, "fig", 1), (3, "pear", 5), (3, "plum", u64::MAX)]
        .into_iter()
        .map(|(p, k, v)| (p, k.as_bytes().to_vec(), v))
        .collect();
    seed::<u64>(dir, "u64-gaps.run", 4, 1 << 10, &records);

    // Many partitions of one record each.
    let records: Vec<_> = (0..16u32).map(|p| (p, vec![b'a' + p as u8; p as usize], u64::from(p))).collect();
    seed::<u64>(dir, "u64-partitions.run", 16, 1 << 10, &records);

    // Keys longer than a cache line (the reader's wide-key prefetch), and binary keys.
    let records: Vec<_> =
        (0..4u8).map(|i| (0u32, [&[0u8, 0xFF][..], &[i; 80]].concat(), u64::from(i))).collect();
    seed::<u64>(dir, "u64-long-keys.run", 1, 1 << 10, &records);

    // Variable-length values: empty, short, longer than the inline limit of strings.
    let records: Vec<_> =
        (0..12u8).map(|i| (u32::from(i / 6), vec![b'v', i], (0..i * 3).collect::<Vec<u8>>())).collect();
    seed::<Vec<u8>>(dir, "bytes.run", 2, 96, &records);

    let words = ["", "a", "fig", "ünïcödé", "a string longer than eight bytes", "日本語"];
    let records: Vec<_> =
        words.iter().enumerate().map(|(i, w)| (0u32, vec![b'0' + i as u8], (*w).to_owned())).collect();
    seed::<String>(dir, "string.run", 2, 128, &records);
}
