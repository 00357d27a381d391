//! Every mode gives the same bytes, equal to an independent BTreeMap reference:
//! {1, 2 threads} x {in memory, forced spills, multi-pass merges with F = 2} x
//! {1, 7, 64 partitions} x {std, io_uring} x {mmap, pread}, on messy random text and on the
//! bundled Gutenberg sample, for word count (ASCII and Unicode), index and grep.

use std::path::{Path, PathBuf};

use spillway_engine::jobs::{Grep, InvertedIndex, WordCount};
use spillway_engine::shuffle::{IoBackend, ReadMode};
use spillway_engine::text::WordMode;
use spillway_engine::{Engine, Inputs, Job, Metrics, OutputSpec};
use spillway_tests::{
    gutenberg_files, messy_text, read_parts, reference_grep, reference_index, reference_wordcount,
    sorted_lines,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    InMemory,
    Spills,
    MultiPass,
}

const MODES: [Mode; 3] = [Mode::InMemory, Mode::Spills, Mode::MultiPass];

fn engine(
    threads: usize,
    partitions: u32,
    mode: Mode,
    io: IoBackend,
    read: ReadMode,
    spill: &Path,
) -> Engine {
    let builder =
        Engine::builder().threads(threads).partitions(partitions).io(io).read_mode(read).spill_dir(spill);
    match mode {
        Mode::InMemory => builder.memory_budget(256 << 20),
        Mode::Spills => builder.memory_budget(64 << 10).split_size(16 << 10).max_open_runs(64),
        Mode::MultiPass => builder.memory_budget(64 << 10).split_size(16 << 10).max_open_runs(2),
    }
    .build()
    .expect("valid configuration")
}

/// Checks what a run's metrics say about its mode: in memory, no buffer spilled under memory
/// pressure (each worker writes at most the one run it ends the map phase with) and nothing
/// was merged before the final merge; forced spills wrote more runs than that; multi-pass
/// merged in steps of F = 2. And `io` is the backend the metrics name.
fn check_metrics(m: &Metrics, mode: Mode, io: IoBackend) {
    assert!(m.max_fan_in <= m.max_open_runs, "{m:?}");
    assert!(m.peak_open_runs <= m.max_open_runs, "{m:?}");
    assert_eq!(m.io_backend, io.resolve().name(), "{m:?}");
    let end_of_map_runs = m.threads as u64;
    match mode {
        Mode::InMemory => {
            assert!(m.spills <= end_of_map_runs, "nothing may spill in memory: {m:?}");
            assert_eq!(m.merge_steps, 0, "{m:?}");
        }
        Mode::Spills => {
            assert!(m.spills > end_of_map_runs.max(2), "forced spills expected: {m:?}");
            // A spill holds about a thread's share of the budget, never a handful of keys.
            assert!(m.spill_bytes / m.spills >= 2048, "spills too small: {m:?}");
        }
        Mode::MultiPass => {
            assert!(m.spills > end_of_map_runs.max(2), "forced spills expected: {m:?}");
            assert!(m.merge_steps > 0, "multi-pass merges expected: {m:?}");
            assert_eq!(m.max_fan_in, 2, "{m:?}");
        }
    }
}

/// Runs `job` into a single file and into a directory; checks both against `expected`.
fn run_both<J: Job>(
    job: &J,
    inputs: &Inputs,
    (engine, io): (&Engine, IoBackend),
    expected: &[u8],
    mode: Mode,
    what: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    let metrics = engine.run(job, inputs, &OutputSpec::File(file.clone())).unwrap();
    let got = std::fs::read(&file).unwrap();
    assert!(
        got == expected,
        "{what}: single-file output differs from the reference ({} vs {} bytes)",
        got.len(),
        expected.len()
    );
    check_metrics(&metrics, mode, io);

    let out_dir = dir.path().join("parts");
    let metrics = engine.run(job, inputs, &OutputSpec::Dir(out_dir.clone())).unwrap();
    let parts = read_parts(&out_dir);
    assert_eq!(parts.len() as u32, metrics.partitions, "{what}: one part file per partition");
    for part in &parts {
        assert_eq!(&sorted_lines(part), part, "{what}: each part is sorted by key");
    }
    assert!(
        sorted_lines(&parts.concat()) == sorted_lines(expected),
        "{what}: the parts hold exactly the reference lines"
    );
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap())
            .expect("_SUCCESS holds JSON");
    assert_eq!(success["output_files"], u64::from(metrics.partitions));
    assert_eq!(success["input_bytes"], inputs.total_bytes());
    check_metrics(&metrics, mode, io);
}

fn messy_inputs(dir: &Path) -> Vec<PathBuf> {
    let sizes = [150_000usize, 0, 70_000, 1, 33_333];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let path = dir.join(format!("messy-{i}.txt"));
            std::fs::write(&path, messy_text(i as u64 + 7, len)).unwrap();
            path
        })
        .collect()
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

#[test]
fn wordcount_matrix_on_messy_text() {
    let data = tempfile::tempdir().unwrap();
    let files = messy_inputs(data.path());
    let inputs = Inputs::new(&files).unwrap();
    for ascii in [false, true] {
        let expected = reference_wordcount(&files, ascii);
        let job = WordCount { mode: if ascii { WordMode::Ascii } else { WordMode::Unicode } };
        for threads in [1, 2] {
            for mode in MODES {
                for partitions in [1, 7, 64] {
                    let e = engine(threads, partitions, mode, IoBackend::Std, ReadMode::Mmap, data.path());
                    let what = format!("wordcount ascii={ascii} threads={threads} {mode:?} R={partitions}");
                    run_both(&job, &inputs, (&e, IoBackend::Std), &expected, mode, &what);
                }
            }
        }
    }
}

#[test]
fn wordcount_io_backends_and_read_modes_on_gutenberg() {
    let files = gutenberg_files();
    let spill = tempfile::tempdir().unwrap();
    let expected = reference_wordcount(&files, false);
    // The io_uring rows use io_uring wherever this process may (the metrics must then say
    // "uring"); where the kernel refuses it they test the std fallback, and say so.
    // `shuffle/tests/io_backends.rs` checks the probe against the kernel itself.
    if IoBackend::Uring.resolve() == IoBackend::Uring {
        eprintln!("io_uring available: the Uring rows must run on io_uring");
    } else {
        eprintln!(
            "NOTE: io_uring is refused here (kernel, seccomp, or SPILLWAY_NO_URING): \
             the Uring rows test the std fallback"
        );
        assert!(
            std::env::var_os("SPILLWAY_EXPECT_URING").is_none(),
            "SPILLWAY_EXPECT_URING is set but io_uring is not available"
        );
    }
    for read in [ReadMode::Mmap, ReadMode::Pread] {
        let inputs = Inputs::with_mode(&files, read).unwrap();
        for io in [IoBackend::Std, IoBackend::Uring] {
            for mode in [Mode::InMemory, Mode::MultiPass] {
                let e = engine(2, 7, mode, io, read, spill.path());
                let what = format!("gutenberg {read:?} {io:?} {mode:?}");
                run_both(&WordCount { mode: WordMode::Unicode }, &inputs, (&e, io), &expected, mode, &what);
            }
        }
    }
}

#[test]
fn index_matrix() {
    let data = tempfile::tempdir().unwrap();
    let mut files = messy_inputs(data.path());
    files.extend(gutenberg_files().into_iter().take(2));
    let inputs = Inputs::new(&files).unwrap();
    let expected = reference_index(&files, &names(&files), false);
    let job = InvertedIndex::new(&inputs, WordMode::Unicode);
    for threads in [1, 2] {
        for mode in MODES {
            for partitions in [1, 7] {
                let e = engine(threads, partitions, mode, IoBackend::Std, ReadMode::Mmap, data.path());
                run_both(
                    &job,
                    &inputs,
                    (&e, IoBackend::Std),
                    &expected,
                    mode,
                    &format!("index t={threads} {mode:?} R={partitions}"),
                );
            }
        }
    }
}

#[test]
fn grep_matrix() {
    let data = tempfile::tempdir().unwrap();
    let mut files = messy_inputs(data.path());
    files.extend(gutenberg_files().into_iter().take(3));
    let inputs = Inputs::new(&files).unwrap();
    for pattern in [r"Cæsar|[Ww]hale", r"^The ", r"\d{3}$", r"(?i)merge"] {
        let expected = reference_grep(&files, &names(&files), pattern);
        assert!(!expected.is_empty(), "pattern {pattern} should match something");
        let job = Grep::new(pattern, &inputs).unwrap();
        for threads in [1, 2] {
            for mode in MODES {
                let e = engine(threads, 7, mode, IoBackend::Std, ReadMode::Mmap, data.path());
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("out.txt");
                let metrics = e.run(&job, &inputs, &OutputSpec::File(file.clone())).unwrap();
                let got = std::fs::read(&file).unwrap();
                assert!(got == expected, "grep {pattern:?} t={threads} {mode:?} differs from the reference");
                assert!(metrics.max_fan_in <= metrics.max_open_runs);
            }
        }
    }
}

#[test]
fn empty_inputs_give_empty_output() {
    let data = tempfile::tempdir().unwrap();
    let empty = data.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let inputs = Inputs::new([&empty]).unwrap();
    let e = engine(2, 7, Mode::InMemory, IoBackend::Std, ReadMode::Mmap, data.path());
    run_both(
        &WordCount { mode: WordMode::Unicode },
        &inputs,
        (&e, IoBackend::Std),
        b"",
        Mode::InMemory,
        "empty input",
    );
}

#[test]
fn job_errors_and_panics_name_the_split_and_leave_no_success() {
    struct Failing;
    impl Job for Failing {
        type Value = u64;
        type Combiner = spillway_engine::NoCombiner;

        fn combiner(&self) -> Option<&spillway_engine::NoCombiner> {
            None
        }

        fn map(
            &self,
            split: &spillway_engine::Split<'_>,
            emit: &mut spillway_engine::Emitter<'_, u64>,
        ) -> Result<(), spillway_engine::JobError> {
            emit.emit(b"k", 1);
            if split.offset > 0 {
                panic!("bad record near byte {}", split.offset);
            }
            Ok(())
        }
        fn reduce(
            &self,
            _key: &[u8],
            _values: spillway_engine::Values<'_, '_, u64>,
            _out: &mut dyn std::io::Write,
        ) -> Result<(), spillway_engine::JobError> {
            Ok(())
        }
    }
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.txt");
    std::fs::write(&input, "line\n".repeat(10_000)).unwrap();
    let inputs = Inputs::new([&input]).unwrap();
    let e = Engine::builder().threads(2).split_size(4096).spill_dir(data.path()).build().unwrap();
    let out = data.path().join("out");
    let err = e.run(&Failing, &inputs, &OutputSpec::Dir(out.clone())).unwrap_err().to_string();
    assert!(err.contains("in.txt bytes ") && err.contains("panicked: bad record near byte"), "{err}");
    assert!(!out.join("_SUCCESS").exists());
    let leftovers: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        leftovers.iter().all(|n| !n.to_string_lossy().starts_with("spillway-")),
        "the spill directory is removed on failure: {leftovers:?}"
    );
}

#[test]
fn output_dir_with_previous_output_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.txt");
    std::fs::write(&input, "a b c\n").unwrap();
    let inputs = Inputs::new([&input]).unwrap();
    let e = engine(1, 2, Mode::InMemory, IoBackend::Std, ReadMode::Mmap, data.path());
    let out = data.path().join("out");
    e.run(&WordCount { mode: WordMode::Ascii }, &inputs, &OutputSpec::Dir(out.clone())).unwrap();
    let before = std::fs::read(out.join("part-00000")).unwrap();
    let err =
        e.run(&WordCount { mode: WordMode::Ascii }, &inputs, &OutputSpec::Dir(out.clone())).unwrap_err();
    assert!(err.is_input_error() && err.to_string().contains("already holds"), "{err}");
    assert_eq!(std::fs::read(out.join("part-00000")).unwrap(), before, "committed output untouched");
}
