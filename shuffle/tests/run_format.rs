//! Round trips through the run format, raw sections, value types, and the committed fixture.

mod common;

use common::{Records, read_all, write_run};
use proptest::prelude::*;
use spillway_shuffle::{IoBackend, ReadMode, RunReader, RunWriter};

fn records_strategy() -> impl Strategy<Value = (u32, Records)> {
    (1u32..6).prop_flat_map(|r| {
        (
            Just(r),
            prop::collection::vec((0..r, prop::collection::vec(any::<u8>(), 0..24), any::<u64>()), 0..400),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Writing random records and reading them back is the identity (after sorting).
    #[test]
    fn write_then_read_is_identity((r, records) in records_strategy(), block in 1usize..2048) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.run");
        let info = write_run(&path, r, records.clone(), block);
        let mut expected = records;
        expected.sort();
        prop_assert_eq!(info.total_records(), expected.len() as u64);
        prop_assert_eq!(read_all(&path), expected.clone());
        // The pread path reads the same bytes.
        let run = RunReader::<u64>::open(&path, ReadMode::Pread).unwrap();
        let via_pread: Records = (0..r).flat_map(|p| run.iter(p).map(move |(k, v)| (p, k.to_vec(), v.to_native()))).collect();
        prop_assert_eq!(via_pread, expected);
    }
}

#[test]
fn empty_run_has_all_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.run");
    let info = RunWriter::<u64>::create(&path, 5, IoBackend::Std).unwrap().finish(true).unwrap();
    assert!(info.records.is_empty(), "no partition holds records");
    let run = RunReader::<u64>::open(&path, ReadMode::Mmap).unwrap();
    assert_eq!(run.partitions(), 5);
    assert_eq!(run.total_records(), 0);
    assert_eq!(run.iter(3).count(), 0);
}

#[test]
fn out_of_order_pushes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.run");
    let mut w = RunWriter::<u64>::create(&path, 3, IoBackend::Std).unwrap().with_block_target(1);
    w.push(1, b"b", &1).unwrap();
    w.push(1, b"b", &2).unwrap(); // equal keys are fine
    let err = w.push(1, b"a", &3).unwrap_err().to_string();
    assert!(err.contains("out of order") && err.contains("o.run"), "{err}");
    let err = w.push(0, b"z", &3).unwrap_err().to_string();
    assert!(err.contains("partition 0 after partition 1"), "{err}");
    assert!(w.push(3, b"z", &3).is_err(), "partition out of range");
    drop(w);
    assert!(!path.exists(), "an unfinished run never appears under its final name");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no temporary debris");
}

#[test]
fn raw_sections_copy_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.run");
    let records: Records =
        (0..500u64).map(|i| ((i % 3) as u32, format!("k{i:04}").into_bytes(), i)).collect();
    write_run(&src, 3, records.clone(), 256);
    let a = RunReader::<u64>::open(&src, ReadMode::Mmap).unwrap();
    let dst = dir.path().join("dst.run");
    let mut w = RunWriter::<u64>::create(&dst, 3, IoBackend::Std).unwrap();
    for p in [0, 2] {
        let s = a.section(p);
        w.append_section(p, a.section_bytes(p), s.records, s.blocks).unwrap();
    }
    w.finish(false).unwrap();
    let mut expected: Records = records.into_iter().filter(|r| r.0 != 1).collect();
    expected.sort();
    assert_eq!(read_all(&dst), expected);
}

#[test]
fn structured_values_round_trip() {
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
    struct Posting {
        docs: Vec<u32>,
        name: String,
    }
    common::is_value::<Posting>();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.run");
    let mut w = RunWriter::<Posting>::create(&path, 1, IoBackend::Std).unwrap().with_block_target(64);
    let values: Vec<Posting> =
        (0..100u32).map(|i| Posting { docs: (0..i % 7).collect(), name: format!("doc{i}") }).collect();
    for (i, v) in values.iter().enumerate() {
        w.push(0, format!("{i:03}").as_bytes(), v).unwrap();
    }
    w.finish(false).unwrap();
    let run = RunReader::<Posting>::open(&path, ReadMode::Mmap).unwrap();
    let back: Vec<Posting> = run.iter(0).map(|(_, v)| spillway_shuffle::to_owned::<Posting>(v)).collect();
    assert_eq!(back, values);
    // Read as the wrong value type: refused, not misread.
    let err = RunReader::<u64>::open(&path, ReadMode::Mmap).unwrap_err().to_string();
    assert!(err.contains("wrong value type"), "{err}");
}

/// The committed fixtures: `tests/fixtures/v1-u64.run` (written by version 1's writer) and
/// `tests/fixtures/v2-u64.run`, written by `fixture_records` with block target 64 (v2: into 6
/// partitions, the last two empty and not indexed). If this test fails, the format changed:
/// bump `FORMAT_VERSION`, keep a reader for the older versions, and add a new fixture beside
/// these.
#[test]
fn reads_committed_fixtures() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (v1, v2) = (fixtures.join("v1-u64.run"), fixtures.join("v2-u64.run"));
    let expected = fixture_records();
    if std::env::var_os("SPILLWAY_WRITE_FIXTURES").is_some() {
        write_run(&v2, 6, expected.clone(), 64);
    }
    let mut sorted = expected;
    sorted.sort();
    assert_eq!(read_all(&v1), sorted);
    assert_eq!(read_all(&v2), sorted);
    let old = RunReader::<u64>::open(&v1, ReadMode::Mmap).unwrap();
    let new = RunReader::<u64>::open(&v2, ReadMode::Mmap).unwrap();
    assert_eq!((old.partitions(), old.indexed_sections()), (4, 4));
    assert_eq!((new.partitions(), new.indexed_sections()), (6, 4));
    for p in 0..4 {
        assert_eq!(old.section_bytes(p), new.section_bytes(p), "partition {p}: the same frames");
    }
    assert_eq!((new.records(5), new.section(5).records, new.section_bytes(4).len()), (0, 0, 0));
    // And today's writer still produces exactly the committed v2 bytes.
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.run");
    write_run(&fresh, 6, fixture_records(), 64);
    assert_eq!(std::fs::read(&fresh).unwrap(), std::fs::read(&v2).unwrap());
}

fn fixture_records() -> Records {
    (0..40u64)
        .map(|i| ((i % 4) as u32, format!("word-{:02}", i * 7 % 40).into_bytes(), i * 1000 + 1))
        .collect()
}

/// Records of `run` in partition `p`, with values deserialized; `prefetch` calls
/// [`PartitionIter::prefetch_ahead`](spillway_shuffle::PartitionIter::prefetch_ahead) before
/// every step and once more after the end, as the merge does from fan-in 8 on.
fn iterate<V: spillway_shuffle::Value>(run: &RunReader<V>, p: u32, prefetch: bool) -> Vec<(Vec<u8>, V)> {
    let mut iter = run.iter(p);
    let mut out = Vec::new();
    loop {
        if prefetch {
            iter.prefetch_ahead();
        }
        let Some((key, value)) = iter.next() else { break };
        out.push((key.to_vec(), spillway_shuffle::to_owned::<V>(value)));
    }
    if prefetch {
        iter.prefetch_ahead();
        assert!(iter.next().is_none(), "a prefetch after the end restarted the iterator");
    }
    out
}

/// Prefetching changes nothing about iteration: with `prefetch_ahead` before every step, every
/// partition yields exactly the records written, in order, for narrow and wide (longer than a
/// cache line) keys, small and large values, many blocks, and empty partitions.
#[test]
fn prefetch_ahead_leaves_iteration_unchanged() {
    fn check<V: spillway_shuffle::Value + Clone + PartialEq + std::fmt::Debug>(
        records: &[(u32, Vec<u8>, V)],
        partitions: u32,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.run");
        let mut w = RunWriter::<V>::create(&path, partitions, IoBackend::Std).unwrap().with_block_target(700);
        for (p, k, v) in records {
            w.push(*p, k, v).unwrap();
        }
        w.finish(false).unwrap();
        for mode in [ReadMode::Mmap, ReadMode::Pread] {
            let run = RunReader::<V>::open(&path, mode).unwrap();
            let mut total = 0;
            for p in 0..partitions {
                let expected: Vec<(Vec<u8>, V)> =
                    records.iter().filter(|r| r.0 == p).map(|(_, k, v)| (k.clone(), v.clone())).collect();
                let plain = iterate(&run, p, false);
                let prefetched = iterate(&run, p, true);
                assert_eq!(plain, expected, "partition {p} ({mode:?}) without prefetch");
                assert_eq!(prefetched, expected, "partition {p} ({mode:?}) with prefetch");
                total += prefetched.len();
            }
            assert_eq!(total, records.len());
        }
    }
    // Partition 1 stays empty; keys grow from 2 to 200 bytes (wide keys from the middle on).
    let key = |i: usize| format!("{i:05}").repeat(1 + i / 25).into_bytes();
    let part = |i: usize| if i % 3 == 1 { 2 } else { (i % 3) as u32 };
    fn sorted<V>(mut v: Vec<(u32, Vec<u8>, V)>) -> Vec<(u32, Vec<u8>, V)> {
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v
    }
    let u64s: Vec<(u32, Vec<u8>, u64)> = sorted((0..1000).map(|i| (part(i), key(i), i as u64 * 7)).collect());
    check(&u64s, 3);
    let blobs: Vec<(u32, Vec<u8>, Vec<u8>)> =
        sorted((0..400).map(|i| (part(i), key(i), vec![i as u8; i % 300])).collect());
    check(&blobs, 3);
}
