//! Task retry: a split whose map fails (an error or a panic in the job's code) after emitting
//! half of its records, or a partition whose reduce fails after writing part of its output,
//! is tried again, and what the failed attempt emitted or wrote counts zero times. Checked
//! against an independent BTreeMap count, in memory, with spills and with multi-pass merges,
//! with and without a combiner, on one and two threads.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use spillway_engine::{
    Combiner, Emitter, Engine, Error, Inputs, Job, JobError, Metrics, OutputSpec, Split, Values,
};
use spillway_tests::{messy_text, names, read_parts, sorted_lines};

/// How a chosen attempt fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    Error,
    Panic,
}

/// Counts whitespace-separated tokens. The first attempt of every split whose index (offset /
/// `split_size`) is 1 mod 3 emits half of its tokens and then fails (all attempts when
/// `always`); the first reduce of each key in `bad_keys` writes a partial line and fails.
struct Flaky<const COMBINE: bool> {
    split_size: u64,
    failure: Failure,
    always: bool,
    seen: Mutex<HashSet<(PathBuf, u64)>>,
    bad_keys: Vec<Vec<u8>>,
    reduced_bad: Mutex<HashSet<Vec<u8>>>,
}

impl<const COMBINE: bool> Flaky<COMBINE> {
    fn new(split_size: u64, failure: Failure) -> Self {
        Flaky {
            split_size,
            failure,
            always: false,
            seen: Mutex::default(),
            bad_keys: Vec::new(),
            reduced_bad: Mutex::default(),
        }
    }

    fn chosen(&self, split: &Split<'_>) -> bool {
        (split.offset / self.split_size) % 3 == 1
    }

    fn fail(&self, what: &str) -> Result<(), JobError> {
        match self.failure {
            Failure::Error => Err(format!("{what} failed on purpose").into()),
            Failure::Panic => panic!("{what} panicked on purpose"),
        }
    }
}

impl<const COMBINE: bool> Job for Flaky<COMBINE> {
    type Value = u64;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        COMBINE.then_some(self)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, u64>) -> Result<(), JobError> {
        let tokens: Vec<&[u8]> =
            split.data.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()).collect();
        let first = self.chosen(split)
            && (self.always || self.seen.lock().unwrap().insert((split.file.path.clone(), split.offset)));
        if first {
            for token in &tokens[..tokens.len() / 2] {
                emit.emit(token, 1);
            }
            return self.fail("map");
        }
        for token in tokens {
            emit.emit(token, 1);
        }
        Ok(())
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, u64>, out: &mut dyn Write) -> Result<(), JobError> {
        let total: u64 = values.map(|v| v.to_native()).sum();
        if self.bad_keys.iter().any(|k| k == key) && self.reduced_bad.lock().unwrap().insert(key.to_vec()) {
            out.write_all(key)?;
            out.write_all(b"\tpartial")?;
            return self.fail("reduce");
        }
        out.write_all(key)?;
        writeln!(out, "\t{total}")?;
        Ok(())
    }
}

impl<const COMBINE: bool> Combiner<u64> for Flaky<COMBINE> {
    fn combine(&self, acc: &mut u64, value: u64) {
        *acc += value;
    }
}

fn reference(files: &[PathBuf]) -> Vec<u8> {
    let mut counts = BTreeMap::<Vec<u8>, u64>::new();
    for f in files {
        for token in std::fs::read(f).unwrap().split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()) {
            *counts.entry(token.to_vec()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (k, v) in counts {
        out.extend_from_slice(&k);
        writeln!(out, "\t{v}").unwrap();
    }
    out
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    [120_000usize, 50_000, 0, 33_333]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let path = dir.join(format!("in-{i}.txt"));
            std::fs::write(&path, messy_text(i as u64 + 11, len)).unwrap();
            path
        })
        .collect()
}

const SPLIT: usize = 8 << 10;

#[derive(Debug, Clone, Copy)]
enum Mode {
    InMemory,
    Spills,
    MultiPass,
}

fn engine(threads: usize, mode: Mode, spill: &Path) -> Engine {
    let builder = Engine::builder().threads(threads).partitions(5).split_size(SPLIT).spill_dir(spill);
    match mode {
        Mode::InMemory => builder.memory_budget(64 << 20),
        Mode::Spills => builder.memory_budget(64 << 10).max_open_runs(64),
        Mode::MultiPass => builder.memory_budget(64 << 10).max_open_runs(2),
    }
    .build()
    .unwrap()
}

fn check<const COMBINE: bool>(threads: usize, mode: Mode, failure: Failure) {
    let data = tempfile::tempdir().unwrap();
    let files = inputs(data.path());
    let expected = reference(&files);
    let inputs = Inputs::new(&files).unwrap();
    let what = format!("combine={COMBINE} threads={threads} {mode:?} {failure:?}");

    let job = Flaky::<COMBINE>::new(SPLIT as u64, failure);
    let out = data.path().join("out.txt");
    let m = engine(threads, mode, data.path()).run(&job, &inputs, &OutputSpec::File(out.clone())).unwrap();
    assert!(std::fs::read(&out).unwrap() == expected, "{what}: one output file differs from the reference");
    let flaky_splits = job.seen.lock().unwrap().len() as u64;
    assert!(flaky_splits >= 5, "{what}: the inputs must have splits to fail on");
    check_metrics(&m, mode, flaky_splits, &what);

    let job = Flaky::<COMBINE>::new(SPLIT as u64, failure);
    let dir = data.path().join("parts");
    let m = engine(threads, mode, data.path()).run(&job, &inputs, &OutputSpec::Dir(dir.clone())).unwrap();
    assert!(
        sorted_lines(&read_parts(&dir).concat()) == expected,
        "{what}: the part files differ from the reference"
    );
    check_metrics(&m, mode, flaky_splits, &what);
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(success["retries"]["map"], flaky_splits, "{what}: _SUCCESS counts the retries");
}

fn check_metrics(m: &Metrics, mode: Mode, flaky_splits: u64, what: &str) {
    assert_eq!(m.retries.map, flaky_splits, "{what}: one retry per split that failed once: {m:?}");
    assert_eq!(m.retries.reduce, 0, "{what}");
    match mode {
        Mode::InMemory => assert!(m.spills <= m.threads as u64, "{what}: nothing may spill in memory: {m:?}"),
        Mode::Spills => assert!(m.spills > m.threads as u64 + 2, "{what}: spills expected: {m:?}"),
        Mode::MultiPass => assert!(m.merge_steps > 0 && m.max_fan_in == 2, "{what}: merges expected: {m:?}"),
    }
}

#[test]
fn a_split_that_fails_once_after_emitting_half_counts_once() {
    for threads in [1, 2] {
        for mode in [Mode::InMemory, Mode::Spills, Mode::MultiPass] {
            for failure in [Failure::Error, Failure::Panic] {
                check::<true>(threads, mode, failure);
                check::<false>(threads, mode, failure);
            }
        }
    }
}

#[test]
fn a_reduce_that_fails_once_after_writing_is_written_again() {
    let data = tempfile::tempdir().unwrap();
    let files = inputs(data.path());
    let expected = reference(&files);
    let inputs = Inputs::new(&files).unwrap();
    // Two keys of the input: in one output file both fail in the same reduce, which then
    // takes three attempts.
    let bad_keys: Vec<Vec<u8>> = expected
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b'\t').next())
        .filter(|k| !k.is_empty())
        .step_by(97)
        .take(2)
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(bad_keys.len(), 2);
    for failure in [Failure::Error, Failure::Panic] {
        for mode in [Mode::InMemory, Mode::MultiPass] {
            let job = Flaky::<true> { bad_keys: bad_keys.clone(), ..Flaky::new(u64::MAX, failure) };
            let out = data.path().join("out.txt");
            let m = engine(2, mode, data.path()).run(&job, &inputs, &OutputSpec::File(out.clone())).unwrap();
            assert!(std::fs::read(&out).unwrap() == expected, "{failure:?} {mode:?}: one output file");
            assert_eq!((m.retries.map, m.retries.reduce), (0, 2), "{m:?}");

            let job = Flaky::<true> { bad_keys: bad_keys.clone(), ..Flaky::new(u64::MAX, failure) };
            let dir = data.path().join(format!("parts-{failure:?}-{mode:?}"));
            let m = engine(2, mode, data.path()).run(&job, &inputs, &OutputSpec::Dir(dir.clone())).unwrap();
            assert!(sorted_lines(&read_parts(&dir).concat()) == expected, "{failure:?} {mode:?}: part files");
            assert_eq!((m.retries.map, m.retries.reduce), (0, 2), "{m:?}");
        }
    }
}

#[test]
fn a_split_that_always_fails_fails_the_job_naming_it_and_leaves_nothing() {
    let data = tempfile::tempdir().unwrap();
    let files = inputs(data.path());
    let inputs = Inputs::new(&files).unwrap();
    let spill = tempfile::tempdir().unwrap();
    for (attempts, failure) in [(3, Failure::Error), (1, Failure::Panic), (2, Failure::Error)] {
        let job = Flaky::<true> { always: true, ..Flaky::new(SPLIT as u64, failure) };
        let engine = Engine::builder()
            .threads(2)
            .split_size(SPLIT)
            .memory_budget(64 << 10)
            .spill_dir(spill.path())
            .max_attempts(attempts)
            .build()
            .unwrap();
        let out = data.path().join("out");
        let err = engine.run(&job, &inputs, &OutputSpec::Dir(out.clone())).unwrap_err();
        let Error::Job { split, attempts: tried, message } = &err else { panic!("not a job error: {err}") };
        assert_eq!(*tried, attempts, "{err}");
        assert!(split.contains("in-") && split.contains("bytes "), "names file and range: {err}");
        let expected = if failure == Failure::Panic {
            "panicked: map panicked on purpose"
        } else {
            "map failed on purpose"
        };
        assert_eq!(message, expected);
        let text = err.to_string();
        assert_eq!(text.contains(&format!("after {attempts} attempts")), attempts > 1, "{text}");
        assert!(!out.exists(), "no output, no _SUCCESS");
        assert!(names(spill.path()).is_empty(), "spill directory removed: {:?}", names(spill.path()));
        let leftovers: Vec<String> =
            names(data.path()).into_iter().filter(|n| !n.starts_with("in-")).collect();
        assert!(leftovers.is_empty(), "nothing left beside the output: {leftovers:?}");
    }
}

#[test]
fn zero_attempts_are_refused() {
    let err = Engine::builder().max_attempts(0).build().unwrap_err();
    assert_eq!(err.to_string(), "invalid configuration: max attempts must be at least 1");
}

/// The `spillway` binary, with failpoints (`SPILLWAY_FAILPOINTS`) standing in for the job's
/// code failing: the output of a job whose second split and first reduce fail once is the
/// output of a clean run, each retry is announced on one line and counted in `_SUCCESS`.
#[test]
fn the_cli_retries_and_says_so() {
    let data = tempfile::tempdir().unwrap();
    let files = inputs(data.path());
    let files: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let clean = data.path().join("clean");
    let run = |out: &Path, failpoints: &str, extra: &[&str]| {
        let mut args = vec!["wordcount", "-q", "-r", "4", "--memory", "256K", "--split-size", "8K"];
        args.extend_from_slice(extra);
        args.extend(["--out-dir", out.to_str().unwrap()]);
        args.extend(&files);
        std::process::Command::new(spillway_tests::spillway_bin())
            .args(&args)
            .env("SPILLWAY_FAILPOINTS", failpoints)
            .output()
            .unwrap()
    };
    assert!(run(&clean, "", &[]).status.success());
    for (failpoints, retries) in [
        ("map.split=2:panic,reduce.partition=1:error", (1, 1)),
        ("map.split=1:error,map.split=5:panic,map.split=9:error", (3, 0)),
        ("reduce.partition=2:panic,reduce.partition=3:panic", (0, 2)),
    ] {
        let out = data.path().join(format!("out-{}", retries.0 * 10 + retries.1));
        let output = run(&out, failpoints, &["-t", "2"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{failpoints}: {stderr}");
        assert_eq!(read_parts(&out), read_parts(&clean), "{failpoints}: the output of a clean run");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len() as u64, retries.0 + retries.1, "{failpoints}: one line per retry: {stderr}");
        for line in lines {
            assert!(
                line.starts_with("spillway: job failed on ")
                    && (line.contains("(attempt 1 of 3): ") || line.contains("(attempt 2 of 3): "))
                    && line.ends_with("; trying again"),
                "{line}"
            );
        }
        let success: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
        assert_eq!(
            (success["retries"]["map"].as_u64(), success["retries"]["reduce"].as_u64()),
            (Some(retries.0), Some(retries.1))
        );
    }

    // Always failing: three attempts, then one error line naming the split; exit 1.
    let out = data.path().join("never");
    let output = run(&out, "map.split=1+:error", &["-t", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("spillway: error: job failed on "), "{stderr}");
    assert!(last.contains(" bytes ") && last.ends_with(" after 3 attempts: failpoint map.split"), "{stderr}");
    assert!(!out.exists());
    // --max-attempts 1: no retry.
    let output = run(&out, "map.split=3:panic", &["--max-attempts", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(": panicked: failpoint map.split (pass 3)"), "{stderr}");
    assert!(!out.exists());
}

/// Counts tokens; its archived combiner (used by merges) panics the first time it runs.
struct PanickyCombiner(std::sync::atomic::AtomicBool);

impl Job for PanickyCombiner {
    type Value = u64;
    type Combiner = Self;

    fn combiner(&self) -> Option<&Self> {
        Some(self)
    }

    fn map(&self, split: &Split<'_>, emit: &mut Emitter<'_, u64>) -> Result<(), JobError> {
        for token in split.data.split(u8::is_ascii_whitespace).filter(|t| !t.is_empty()) {
            emit.emit(token, 1);
        }
        Ok(())
    }

    fn reduce(&self, key: &[u8], values: Values<'_, '_, u64>, out: &mut dyn Write) -> Result<(), JobError> {
        let total: u64 = values.map(|v| v.to_native()).sum();
        out.write_all(key)?;
        writeln!(out, "\t{total}")?;
        Ok(())
    }
}

impl Combiner<u64> for PanickyCombiner {
    fn combine(&self, acc: &mut u64, value: u64) {
        *acc += value;
    }

    fn combine_archived(&self, acc: &mut u64, value: &spillway_engine::shuffle::ArchivedValue<u64>) {
        if !self.0.swap(true, std::sync::atomic::Ordering::Relaxed) {
            panic!("combiner panicked on purpose");
        }
        *acc += value.to_native();
    }
}

#[test]
fn a_merge_whose_combiner_panics_once_is_merged_again() {
    let data = tempfile::tempdir().unwrap();
    let files = inputs(data.path());
    let expected = reference(&files);
    let inputs = Inputs::new(&files).unwrap();
    let job = PanickyCombiner(std::sync::atomic::AtomicBool::new(false));
    let out = data.path().join("out.txt");
    let m =
        engine(2, Mode::MultiPass, data.path()).run(&job, &inputs, &OutputSpec::File(out.clone())).unwrap();
    assert!(std::fs::read(&out).unwrap() == expected, "the output of a clean run");
    assert_eq!((m.retries.map, m.retries.merge, m.retries.reduce), (0, 1, 0), "{m:?}");
    assert!(m.merge_steps > 0);
}
