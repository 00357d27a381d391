//! Writes the seed corpus of the journal targets: small journals of resumable jobs, made with
//! the engine's own `encode`, byte-for-byte the same on every machine.
//!
//! Usage: `gen-journal-seeds [--framed] DIR` (the directory is created; existing seeds are
//! overwritten). Without `--framed`, journal files (the `journal` target); with it, the same
//! records as lines of JSON (the `journal_framed` target, which frames each line).

use std::path::{Path, PathBuf};

use spillway_engine::Metrics;
use spillway_engine::journal::{Begin, InputId, MAGIC, Record, RunRef, encode};
use spillway_shuffle_fuzz::journal::{exercise, frame, unframed};

fn begin(inputs: Vec<InputId>, splits: u64) -> Record {
    let names =
        ["the job", "the partition counts (-r)", "the splits (--split-size)", "the outputs", "the inputs"];
    Record::Begin(Begin {
        version: 1,
        settings: names
            .iter()
            .zip(1u64..)
            .map(|(n, i)| ((*n).to_owned(), i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect(),
        fingerprint: 0xDEAD_BEEF_0BAD_CAFE,
        inputs,
        splits,
    })
}

fn input(path: &str, bytes: u64) -> InputId {
    InputId { path: PathBuf::from(path), bytes, mtime: (1_767_225_600, 123_456_789), file: (2049, 131_074) }
}

fn run(name: &str, bytes: u64) -> RunRef {
    RunRef { name: name.to_owned(), bytes }
}

fn committed(splits: &[u32], runs: &[(&str, u64)]) -> Record {
    Record::Committed { splits: splits.to_vec(), runs: runs.iter().map(|&(n, b)| run(n, b)).collect() }
}

/// Writes the journal of `records` and `tail`, which reads back as the first `kept` records.
fn write_kept(dir: &Path, name: &str, framed: bool, records: &[Record], tail: &[u8], kept: usize) {
    let bytes = if framed {
        [unframed(records), tail.to_vec()].concat()
    } else {
        let mut bytes = MAGIC.to_vec();
        for record in records {
            bytes.extend(encode(record));
        }
        bytes.extend_from_slice(tail);
        bytes
    };
    // Every seed passes the harness and reads back as the records it was made of.
    let journal = if framed { frame(&bytes) } else { bytes.clone() };
    let parsed = exercise(&journal);
    assert_eq!(parsed.records, records[..kept], "seed {name}");
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("{:>6} bytes  {}", bytes.len(), path.display());
}

/// Writes the journal of `records` and `tail`, which reads back as `records`.
fn write(dir: &Path, name: &str, framed: bool, records: &[Record], tail: &[u8]) {
    write_kept(dir, name, framed, records, tail, records.len());
}

fn main() {
    let mut framed = false;
    let mut dir = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--framed") => framed = true,
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => dir = None,
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: gen-journal-seeds [--framed] DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let dir = dir.as_path();

    // A job just begun: one input, nothing done.
    write(dir, "begun", framed, &[begin(vec![input("corpus/a.txt", 4096)], 1)], b"");

    // Map commit points, a background merge, and the commit with the job's metrics.
    let inputs = vec![input("corpus/a.txt", 70_000), input("/data/b.txt", 1 << 20), input("", 0)];
    let mut records = vec![
        begin(inputs, 5),
        committed(&[0, 2], &[("spill-000001.run", 1632), ("spill-000002.run", 80)]),
        committed(&[1], &[("spill-000003.run", 4096)]),
        Record::Merged {
            inputs: vec!["spill-000001.run".into(), "spill-000003.run".into()],
            output: run("merge-000004.run", 5600),
        },
        committed(&[3, 4], &[]),
    ];
    write(dir, "mapped", framed, &records, b"");
    // Metrics as a job reports them: phase times are floats of 16 or 17 digits.
    let mut metrics = Metrics::default();
    metrics.seconds.map = 973_109.109_862_242_5;
    metrics.seconds.merge = 0.1 + 0.2;
    metrics.seconds.total = 1.0 / 3.0;
    metrics.resumed.journal_stopped = Some("torn record at byte 1004 (99 bytes announced)".into());
    let metrics = serde_json::to_value(metrics).expect("metrics serialize");
    records.push(Record::Committing { output: (2049, 917_505), metrics });
    write(dir, "committing", framed, &records, b"");

    // A crash while appending: the last record torn in its header, and in its payload.
    let next = encode(&committed(&[7], &[("spill-000009.run", 99)]));
    write(dir, "torn-header", framed, &records[..3], &next[..7]);
    write(dir, "torn-payload", framed, &records[..3], &next[..next.len() / 2]);

    // Whole records out of order: a second Begin ends what is read.
    let twice = [records[0].clone(), records[1].clone(), records[0].clone(), records[2].clone()];
    write_kept(dir, "begun-twice", framed, &twice, b"", 2);

    // Extremes: empty lists and names, the largest numbers, negative times, Unicode paths.
    let odd = InputId {
        path: PathBuf::from("dönüş/日本語 \"q\"\\.txt"),
        bytes: u64::MAX,
        mtime: (-1, 999_999_999),
        file: (0, u64::MAX),
    };
    let records = vec![
        Record::Begin(Begin {
            version: 1,
            settings: Vec::new(),
            fingerprint: u64::MAX,
            inputs: vec![odd],
            splits: 0,
        }),
        committed(&[], &[("", 0)]),
        committed(&[u32::MAX], &[("spill-18446744073709551615.run", u64::MAX)]),
        Record::Merged { inputs: Vec::new(), output: run("merge-000001.run", 0) },
        Record::Committing { output: (0, 0), metrics: serde_json::json!({"a": [1.5, -2, null, true, "x"]}) },
    ];
    write(dir, "extremes", framed, &records, b"");
}
