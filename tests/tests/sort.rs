//! `spillway sort` end to end: gensort input, valsort on the output (order, and the same
//! checksum as the input), byte-identical output in every mode (in memory, out of core, F = 2,
//! threads, partitions, part files, the generic engine path), skewed and duplicate keys, bad
//! and empty input. The library's [`sort_records`] directly, too.

use std::path::{Path, PathBuf};

use spillway_engine::sort::{RecordShape, sort_records};
use spillway_engine::{Engine, Inputs, OutputSpec};
use spillway_tests::{Rng, read_parts, spillway};
use spillway_tools::records::{gensort, valsort};

fn run_ok(args: &[&str]) {
    let out = spillway(args);
    assert!(out.status.success(), "spillway {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The records of `files` sorted as byte strings: the one correct output.
fn reference(files: &[&Path], size: usize) -> Vec<u8> {
    let data: Vec<u8> = files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    let mut records: Vec<&[u8]> = data.chunks_exact(size).collect();
    records.sort_unstable();
    records.concat()
}

fn checksum(path: &Path) -> valsort::Report {
    valsort::validate_file(path, 2).expect("valsort can read it")
}

/// valsort accepts `sorted` and its checksum and record count equal the inputs'.
fn assert_valsort(sorted: &Path, inputs: &[&Path]) -> valsort::Report {
    let report = checksum(sorted);
    assert!(report.is_sorted(), "{}: {report}", sorted.display());
    let mut sum = 0u128;
    let mut records = 0;
    for input in inputs {
        let r = checksum(input);
        sum = sum.wrapping_add(r.checksum);
        records += r.records;
    }
    assert_eq!((report.checksum, report.records), (sum, records), "{}", sorted.display());
    report
}

/// 100-byte records where 90% share one 10-byte key (with distinct payloads) and some are
/// whole-record duplicates: skewed keys that must still split evenly.
fn skewed_records(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n * 100);
    for i in 0..n {
        let mut rec = [0u8; 100];
        if rng.below(10) < 9 {
            rec[..10].copy_from_slice(b"SKEWEDKEY!");
        } else {
            rng.next_u64().to_be_bytes().iter().chain(&[0, 1]).zip(&mut rec[..10]).for_each(|(b, r)| *r = *b);
        }
        // Every 50th record repeats the payload of the one before (a duplicate record).
        let payload = if i % 50 == 0 && i > 0 { (i - 1) as u64 } else { i as u64 };
        rec[10..18].copy_from_slice(&payload.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        rec[18..].fill(b'x');
        out.extend_from_slice(&rec);
    }
    out
}

/// Every mode gives the same bytes as the reference, accepted by valsort.
#[test]
fn every_mode_gives_the_same_sorted_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ascii = dir.path().join("ascii.dat");
    let binary = dir.path().join("binary.dat");
    gensort::generate_file(&ascii, 0, 100_000, true, 2).unwrap();
    gensort::generate_file(&binary, 7, 60_000, false, 2).unwrap();
    // Duplicate keys: the first 20,000 ASCII records again, as a third file.
    let dups = dir.path().join("dups.dat");
    std::fs::write(&dups, &std::fs::read(&ascii).unwrap()[..2_000_000]).unwrap();
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();

    for inputs in [vec![ascii.as_path()], vec![&ascii, &binary, &dups]] {
        let expected = reference(&inputs, 100);
        let names: Vec<&str> = inputs.iter().map(|p| s(p)).collect();
        let modes: &[&[&str]] = &[
            &["--threads", "2"],
            &["--threads", "1", "--partitions", "1"],
            &["--threads", "2", "--memory", "1M"],
            &["--threads", "2", "--memory", "1M", "--max-open-runs", "2", "--partitions", "7"],
            &["--threads", "1", "--memory", "256K", "--read", "pread"],
            &["--threads", "2", "--generic", "--memory", "1M", "--split-size", "256K"],
        ];
        for (i, mode) in modes.iter().enumerate() {
            for dir_output in [false, true] {
                let out = dir.path().join(format!("out-{}-{i}-{dir_output}", inputs.len()));
                let mut args = vec!["sort", "-q", "--spill-dir", s(&spill)];
                args.extend_from_slice(mode);
                args.extend_from_slice(&[if dir_output { "--out-dir" } else { "--out" }, s(&out)]);
                args.extend_from_slice(&names);
                run_ok(&args);
                let got = if dir_output { read_parts(&out).concat() } else { std::fs::read(&out).unwrap() };
                assert!(got == expected, "spillway {args:?}: output differs from the reference");
                if !dir_output {
                    let report = assert_valsort(&out, &inputs);
                    assert_eq!(report.duplicates, if inputs.len() == 1 { 0 } else { 20_000 }, "{report}");
                }
            }
        }
    }
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spill directory left behind");
}

/// The spec's 1,000,000-record file has no duplicate keys: its sorted output is unique, with
/// valsort checksum 7a19cff467438. Sorted out of core with F = 2.
#[test]
fn million_ascii_records_sort_to_the_known_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gensort-a-1000000");
    gensort::generate_file(&input, 0, 1_000_000, true, 2).unwrap();
    let (in_memory, out_of_core) = (dir.path().join("a.sorted"), dir.path().join("b.sorted"));
    let metrics = dir.path().join("metrics.json");
    run_ok(&["sort", "-q", "--out", s(&in_memory), "--metrics", s(&metrics), s(&input)]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!((m["in_memory"].as_bool(), m["passes"].as_f64()), (Some(true), Some(1.0)), "{m}");
    let report = assert_valsort(&in_memory, &[&input]);
    assert_eq!(format!("{:x}", report.checksum), "7a19cff467438");
    assert_eq!((report.records, report.duplicates), (1_000_000, 0));
    run_ok(&[
        "sort",
        "-q",
        "--memory",
        "24M",
        "--max-open-runs",
        "2",
        "--spill-dir",
        s(dir.path()),
        "--out",
        s(&out_of_core),
        "--metrics",
        s(&metrics),
        s(&input),
    ]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(m["in_memory"].as_bool(), Some(false), "{m}");
    assert!(m["runs"].as_u64().unwrap() > 2 && m["passes"].as_f64().unwrap() > 2.0, "{m}");
    assert!(m["max_fan_in"].as_u64().unwrap() <= 2, "{m}");
    assert!(std::fs::read(&in_memory).unwrap() == std::fs::read(&out_of_core).unwrap());
}

/// The binary 1,000,000-record file, through the library, one pass out of core: checksum
/// 7a0e0d4868cd4, two passes over the data.
#[test]
fn million_binary_records_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gensort-1000000");
    gensort::generate_file(&input, 0, 1_000_000, false, 2).unwrap();
    let out = dir.path().join("sorted");
    let engine = Engine::builder()
        .threads(2)
        .memory_budget(40 << 20)
        .spill_dir(dir.path())
        .sync(false)
        .build()
        .unwrap();
    let inputs = Inputs::new([&input]).unwrap();
    let metrics =
        sort_records(&engine, &inputs, &OutputSpec::File(out.clone()), RecordShape::default()).unwrap();
    assert!(!metrics.in_memory && metrics.runs >= 3 && metrics.passes == 2.0, "{metrics:?}");
    assert_eq!((metrics.records, metrics.duplicate_keys, metrics.job.merge_steps), (1_000_000, 0, 0));
    let report = assert_valsort(&out, &[&input]);
    assert_eq!(format!("{:x}", report.checksum), "7a0e0d4868cd4");
}

/// 90% of the records share one key: part files still balance (whole records as range
/// boundaries), in the specialized and the generic path, and concatenate to sorted output.
#[test]
fn skewed_keys_still_balance_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("skewed.dat");
    std::fs::write(&input, skewed_records(40_000, 5)).unwrap();
    let expected = reference(&[&input], 100);
    for (i, extra) in [&[][..], &["--memory", "512K"], &["--generic", "--memory", "1M"]].iter().enumerate() {
        let out = dir.path().join(format!("parts-{i}"));
        let mut args = vec!["sort", "-q", "--threads", "2", "--partitions", "8", "--out-dir", s(&out)];
        args.extend_from_slice(extra);
        args.push(s(&input));
        run_ok(&args);
        let parts = read_parts(&out);
        assert_eq!(parts.len(), 8);
        assert!(parts.concat() == expected, "spillway {args:?}");
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        let mean = expected.len() / 8;
        assert!(
            sizes.iter().all(|&n| n > mean / 2 && n < mean * 3 / 2),
            "unbalanced parts {sizes:?} ({args:?})"
        );
        assert!(out.join("_SUCCESS").exists());
    }
    // Duplicate keys are counted like valsort counts them.
    let sorted = dir.path().join("sorted");
    let metrics = dir.path().join("m.json");
    run_ok(&["sort", "-q", "--out", s(&sorted), "--metrics", s(&metrics), s(&input)]);
    let report = assert_valsort(&sorted, &[&input]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(m["duplicate_keys"].as_u64(), Some(report.duplicates));
    assert!(report.duplicates > 30_000);
}

/// Other record and key sizes; directories as input.
#[test]
fn other_record_sizes_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let mut rng = Rng::new(11);
    for f in 0..3 {
        let data: Vec<u8> = (0..16 * 5000).map(|_| b"ab\n\0\xff"[rng.below(5) as usize]).collect();
        std::fs::write(inputs.join(format!("part{f}")), data).unwrap();
    }
    let files: Vec<PathBuf> = (0..3).map(|f| inputs.join(format!("part{f}"))).collect();
    let expected = reference(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>(), 16);
    for extra in [&[][..], &["--threads", "2", "--memory", "64K"], &["--generic"]] {
        let out = dir.path().join("out");
        let mut args = vec!["sort", "-q", "--record-size", "16", "--key-size", "4", "--out", s(&out)];
        args.extend_from_slice(extra);
        args.push(s(&inputs));
        run_ok(&args);
        assert!(std::fs::read(&out).unwrap() == expected, "spillway {args:?}");
    }
    let out = spillway(&["sort", "--key-size", "17", "--record-size", "16", "--out", "x", s(&inputs)]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A partial record is a clear input error naming the file (exit 3), in both paths; empty
/// input sorts to empty output.
#[test]
fn partial_records_and_empty_input() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.dat");
    gensort::generate_file(&good, 0, 10, true, 1).unwrap();
    let bad = dir.path().join("bad.dat");
    std::fs::write(&bad, vec![b'x'; 1050]).unwrap();
    let out = dir.path().join("out");
    for extra in [None, Some("--generic")] {
        let mut args = vec!["sort", "--out", s(&out), s(&good), s(&bad)];
        args.extend(extra);
        let result = spillway(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("bad.dat") && stderr.contains("partial record of 50 bytes at byte 1000"),
            "{stderr}"
        );
        assert!(!out.exists());
    }

    let empty = dir.path().join("empty.dat");
    std::fs::write(&empty, b"").unwrap();
    run_ok(&["sort", "-q", "--out", s(&out), s(&empty)]);
    assert_eq!(std::fs::read(&out).unwrap(), b"");
    let parts = dir.path().join("parts");
    run_ok(&["sort", "-q", "--partitions", "3", "--out-dir", s(&parts), s(&empty)]);
    assert_eq!(read_parts(&parts), vec![Vec::<u8>::new(); 3]);
    let stdout = spillway(&["sort", "-q", s(&good)]);
    assert!(stdout.status.success());
    assert!(stdout.stdout == reference(&[&good], 100));
    // An output directory that already holds output is refused (exit 3).
    let again = spillway(&["sort", "-q", "--out-dir", s(&parts), s(&empty)]);
    assert_eq!(again.status.code(), Some(3));
}

/// An existing output file is replaced, with and without `--no-sync` (which swaps the old file
/// out instead of renaming over it), leaving no temporary files behind; a failed sort leaves
/// the old output alone.
#[test]
fn existing_output_files_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.dat"), dir.path().join("b.dat"));
    gensort::generate_file(&a, 0, 3000, true, 1).unwrap();
    gensort::generate_file(&b, 3000, 2000, false, 1).unwrap();
    let out_dir = dir.path().join("o");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("sorted");
    for (input, sync) in [(&a, true), (&b, false), (&a, false), (&b, true)] {
        let mut args = vec!["sort", "-q", "--threads", "2", "--out", s(&out), s(input)];
        if !sync {
            args.push("--no-sync");
        }
        run_ok(&args);
        assert!(std::fs::read(&out).unwrap() == reference(&[input], 100), "{args:?}");
        let names: Vec<_> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["sorted"], "{args:?}");
    }
    let bad = dir.path().join("bad.dat");
    std::fs::write(&bad, [b'x'; 150]).unwrap();
    let failed = spillway(&["sort", "-q", "--no-sync", "--out", s(&out), s(&bad)]);
    assert_eq!(failed.status.code(), Some(3));
    assert!(std::fs::read(&out).unwrap() == reference(&[&b], 100));
}
