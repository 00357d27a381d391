//! Every kind of damage to a run gives a typed error naming the file and a byte offset.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{Records, write_run};
use proptest::prelude::*;
use spillway_shuffle::run::format::repair_checksums;
use spillway_shuffle::{ByteSource, Error, IoBackend, ReadMode, RunReader, RunWriter, Value, to_owned};

fn sample_run(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("sample.run");
    let records: Records =
        (0..300u64).map(|i| ((i % 3) as u32, format!("key{i:05}").into_bytes(), i)).collect();
    write_run(&path, 3, records, 512);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<RunReader<u64>, Error> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    RunReader::<u64>::open(&path, ReadMode::Mmap)
}

fn corrupt_offset(err: &Error) -> u64 {
    match err {
        Error::Corrupt { offset, .. } => *offset,
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes) = sample_run(dir.path());
    bytes[0] = b'X';
    let err = open_bytes(dir.path(), "magic.run", &bytes).unwrap_err();
    assert_eq!(corrupt_offset(&err), 0);
    let msg = err.to_string();
    assert!(msg.contains("magic.run") && msg.contains("bad magic"), "{msg}");
}

#[test]
fn foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = open_bytes(dir.path(), "text.run", b"hello world, this is not a run at all!!\n").unwrap_err();
    assert!(err.to_string().contains("not a spillway run"), "{err}");
}

#[test]
fn unknown_version() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes) = sample_run(dir.path());
    bytes[8] = 9;
    match open_bytes(dir.path(), "v9.run", &bytes).unwrap_err() {
        Error::UnsupportedVersion { found: 9, supported: 2, path } => assert!(path.ends_with("v9.run")),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn truncation_at_every_length_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_run(dir.path());
    for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let err = open_bytes(dir.path(), "trunc.run", &bytes[..len]).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "length {len}: {err:?}");
        assert!(err.to_string().contains("trunc.run"), "{err}");
    }
}

#[test]
fn every_flipped_byte_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample_run(dir.path());
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        let path = dir.path().join("flip.run");
        let result = RunReader::<u64>::from_source(path, ByteSource::Owned(to_aligned(&damaged)));
        let err = result.expect_err(&format!("flipped byte at {at} went unnoticed"));
        match err {
            Error::Corrupt { offset, .. } => assert!(offset <= bytes.len() as u64),
            Error::UnsupportedVersion { .. } => assert!((8..12).contains(&at)),
            other => panic!("byte {at}: unexpected error {other:?}"),
        }
    }
}

#[test]
fn block_checksum_error_names_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes) = sample_run(dir.path());
    // Byte 16 is the first frame header; its payload starts at 32.
    bytes[40] ^= 1;
    let err = open_bytes(dir.path(), "sum.run", &bytes).unwrap_err();
    assert_eq!(corrupt_offset(&err), 16);
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let err = RunReader::<u64>::open(Path::new("/nonexistent/dir/x.run"), ReadMode::Mmap).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/dir/x.run"), "{err}");
}

fn to_aligned(bytes: &[u8]) -> spillway_shuffle::Aligned {
    let mut v = spillway_shuffle::Aligned::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the reader; anything that is not a run is an error.
    #[test]
    fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let result = RunReader::<u64>::from_source("garbage".into(), ByteSource::Owned(to_aligned(&bytes)));
        prop_assert!(result.is_err());
    }

    /// A valid header and trailer around garbage never panics: it is refused with a
    /// corruption error naming the file and an offset within it, or, should the bytes happen
    /// to form a run, every record the footer counts reads back in key order.
    #[test]
    #[allow(clippy::needless_pass_by_value)]
    fn garbage_between_valid_ends(mid in prop::collection::vec(any::<u8>(), 0..400), cut in 0usize..64) {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = sample_run(dir.path());
        let mut mixed = bytes[..16 + cut].to_vec();
        mixed.extend_from_slice(&mid);
        mixed.extend_from_slice(&bytes[bytes.len() - 32 - 96..]);
        match RunReader::<u64>::from_source("mixed.run".into(), ByteSource::Owned(to_aligned(&mixed))) {
            Err(err @ Error::Corrupt { .. }) => {
                let offset = corrupt_offset(&err);
                prop_assert!(offset <= mixed.len() as u64, "{err}");
                let msg = err.to_string();
                prop_assert!(msg.contains("mixed.run") && msg.contains(&format!("at byte {offset}")), "{msg}");
            }
            Err(other) => prop_assert!(false, "expected a corruption error, got {other:?}"),
            Ok(run) => {
                let mut total = 0u64;
                for p in 0..run.partitions() {
                    let keys: Vec<&[u8]> = run.iter(p).map(|(k, _)| k).collect();
                    prop_assert!(keys.is_sorted(), "partition {p}: keys out of order");
                    total += keys.len() as u64;
                }
                prop_assert_eq!(total, run.total_records());
            }
        }
    }
}

/// Small valid runs of `u64`, `Vec<u8>` and `String` values, several blocks each.
fn typed_runs() -> &'static [Vec<u8>] {
    fn write<V: Value>(dir: &Path, name: &str, records: &[(u32, Vec<u8>, V)]) -> Vec<u8> {
        let path = dir.join(name);
        let mut w = RunWriter::<V>::create(&path, 2, IoBackend::Std).unwrap().with_block_target(96);
        for (p, k, v) in records {
            w.push(*p, k, v).unwrap();
        }
        w.finish(false).unwrap();
        std::fs::read(&path).unwrap()
    }
    static RUNS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = |i: u8| vec![b'k', i / 2];
        let u64s: Vec<_> = (0..12u8).map(|i| (u32::from(i / 6), key(i), u64::from(i) << 40)).collect();
        let bytes: Vec<_> =
            (0..12u8).map(|i| (u32::from(i / 6), key(i), (0..i * 2).collect::<Vec<u8>>())).collect();
        let strings: Vec<_> = (0..12u8)
            .map(|i| (u32::from(i / 6), key(i), "ünïcödé string ".repeat(usize::from(i % 3))))
            .collect();
        vec![
            write(dir.path(), "u64.run", &u64s),
            write(dir.path(), "bytes.run", &bytes),
            write(dir.path(), "string.run", &strings),
        ]
    })
}

/// Opens `bytes` as a run of `V` and, when it is accepted, reads every record and value.
/// A refusal must be a corruption (or version) error at an offset within the run.
fn open_and_read_all<V: Value>(bytes: &[u8]) {
    match RunReader::<V>::from_source("damaged".into(), ByteSource::Owned(to_aligned(bytes))) {
        Ok(run) => {
            let mut total = 0u64;
            for p in 0..run.partitions() {
                let mut prev: Option<&[u8]> = None;
                for (key, value) in run.iter(p) {
                    assert!(prev.is_none_or(|prev| prev <= key), "partition {p}: keys out of order");
                    prev = Some(key);
                    std::hint::black_box(to_owned::<V>(value));
                    total += 1;
                }
            }
            assert_eq!(total, run.total_records());
        }
        Err(Error::Corrupt { offset, .. }) => assert!(offset <= bytes.len() as u64, "offset {offset}"),
        Err(Error::UnsupportedVersion { .. }) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Damage behind valid checksums (rkyv archives, record counts, key offsets, key order,
    /// footer entries) is refused with a corruption error, or the run reads back in full: as
    /// `u64`, `Vec<u8>` and `String` values, whatever the run was written with.
    #[test]
    #[allow(clippy::needless_pass_by_value)]
    fn damage_behind_repaired_checksums(
        which in 0usize..3,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = typed_runs()[which].clone();
        for (at, mask) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= mask;
        }
        repair_checksums(&mut bytes);
        open_and_read_all::<u64>(&bytes);
        open_and_read_all::<Vec<u8>>(&bytes);
        open_and_read_all::<String>(&bytes);
    }
}
