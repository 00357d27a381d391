//! Inputs that change under a running job: truncated under its memory map, a job fails with
//! an input error naming the file and its sizes (not SIGBUS), and leaves nothing behind.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spillway_engine::shuffle::ReadMode;
use spillway_engine::{Engine, Error, Inputs, OutputSpec, from_fns, jobs::write_key_value};
use spillway_tests::{Rng, names, spillway_bin};

/// 64 KiB of text: 1024 lines of 63 bytes and a newline.
fn text() -> Vec<u8> {
    (0..1024).flat_map(|i| format!("{:<62} \n", format!("w{} w{}", i % 97, i % 13)).into_bytes()).collect()
}

/// Runs a word count whose map truncates `input` to 100 bytes when it maps its first split
/// (one thread, 4 KiB splits: every later split lies past the new end). Returns the result
/// and how many splits the map saw as nothing but zeros.
fn run_truncating(
    input: &Path,
    read: ReadMode,
    spill: &Path,
    out: &Path,
) -> (spillway_engine::Result<String>, u64) {
    let truncated = AtomicBool::new(false);
    let zero_splits = AtomicU64::new(0);
    let job = from_fns(
        |text: &[u8], emit: &mut dyn FnMut(&[u8], u64)| {
            if !truncated.swap(true, Ordering::Relaxed) {
                OpenOptions::new().write(true).open(input).unwrap().set_len(100).unwrap();
            }
            if text.iter().all(|&b| b == 0) {
                zero_splits.fetch_add(1, Ordering::Relaxed);
            }
            text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).for_each(|w| emit(w, 1))
        },
        |acc: &mut u64, v: u64| *acc += v,
        |key: &[u8], total: u64, w: &mut dyn std::io::Write| write_key_value(w, key, total),
    );
    let engine = Engine::builder().threads(1).split_size(4096).spill_dir(spill).build().unwrap();
    let inputs = Inputs::with_mode([input], read).unwrap();
    let result = engine
        .run(&job, &inputs, &OutputSpec::File(out.to_owned()))
        .map(|_| std::fs::read_to_string(out).unwrap());
    (result, zero_splits.into_inner())
}

/// Without the SIGBUS handler the test process would die on the second split.
#[test]
fn an_input_truncated_under_its_map_fails_the_job_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (input, spill, out) =
        (dir.path().join("in.txt"), dir.path().join("spill"), dir.path().join("out.tsv"));
    std::fs::create_dir(&spill).unwrap();
    std::fs::write(&input, text()).unwrap();

    let (result, zero_splits) = run_truncating(&input, ReadMode::Mmap, &spill, &out);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("input {} changed while the job ran (65536 bytes before, 100 bytes after)", input.display())
    );
    assert!(matches!(&err, Error::InputChanged { path, before: 65536, after: Some(100) } if *path == input));
    assert!(err.is_input_error());
    // The splits past the new end were read (as zeros) rather than killing the process.
    assert_eq!(zero_splits, 15, "splits 1..16 lie past the first page");
    // No output, no temporary output, no spill directory.
    assert!(!out.exists());
    assert_eq!(names(dir.path()), ["in.txt", "spill"]);
    assert!(names(&spill).is_empty(), "{:?}", names(&spill));
}

/// With `pread` the job reads a copy made when the input was opened: a later change is no
/// error, and the output is that of the whole original file.
#[test]
fn a_pread_input_changed_after_it_was_read_does_not_matter() {
    let dir = tempfile::tempdir().unwrap();
    let (input, spill, out) =
        (dir.path().join("in.txt"), dir.path().join("spill"), dir.path().join("out.tsv"));
    std::fs::create_dir(&spill).unwrap();
    std::fs::write(&input, text()).unwrap();
    let (result, zero_splits) = run_truncating(&input, ReadMode::Pread, &spill, &out);
    let counts = result.unwrap();
    assert_eq!(zero_splits, 0);
    assert!(counts.starts_with("w0\t") && counts.contains("\nw96\t10\n"), "{counts}");
    assert_eq!(std::fs::metadata(&input).unwrap().len(), 100);
    assert!(names(&spill).is_empty());
}

/// `spillway sort --out FIFO`: the sort opens the FIFO (after mapping its input) and blocks
/// writing it until this test reads. The test truncates the input before reading anything:
/// the sort then reads the rest of the input past its new end. Deterministic: the sort
/// holds at most one 4 MiB write buffer and the pipe's contents ahead of the reader, less
/// than the 6 MB of records, so it reads records after the truncation whatever the timing,
/// and its check of the input comes after all its reads.
#[test]
fn spillway_sort_of_an_input_truncated_meanwhile_exits_3_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.dat");
    let fifo = dir.path().join("fifo");
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let mut rng = Rng::new(16);
    let records: Vec<u8> = (0..6_000_000).map(|_| b' ' + rng.below(95) as u8).collect();
    std::fs::write(&input, &records).unwrap();
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    let mut child = Command::new(spillway_bin())
        .args(["sort", "-q", "-t", "1", "--memory", "16M", "--spill-dir"])
        .arg(&spill)
        .arg("--out")
        .arg(&fifo)
        .arg(&input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the FIFO for reading returns once the sort has opened it for writing; should the
    // sort fail before that, the open is released by opening the FIFO for writing here.
    let opener = {
        let fifo = fifo.clone();
        std::thread::spawn(move || File::open(fifo).unwrap())
    };
    let started = Instant::now();
    while !opener.is_finished() {
        if let Some(status) = child.try_wait().unwrap() {
            let _ = OpenOptions::new().write(true).open(&fifo);
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("spillway sort ended before opening its output: {status}: {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "spillway sort never opened its output");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reader = opener.join().unwrap();
    OpenOptions::new().write(true).open(&input).unwrap().set_len(0).unwrap();
    let mut sorted = Vec::new();
    reader.read_to_end(&mut sorted).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{:?}: {stderr}", out.status);
    assert_eq!(
        stderr,
        format!(
            "spillway: error: input {} changed while the job ran (6000000 bytes before, 0 bytes after)\n",
            input.display()
        )
    );
    assert!(sorted.len() <= records.len());
    assert_eq!(names(dir.path()), ["fifo", "records.dat", "spill"]);
    assert!(names(&spill).is_empty());
}
