//! The `spillway` binary when things go wrong: failed or impossible writes keep the files
//! that were there, flags and paths are checked before any work with one clear line and the
//! documented exit status (2 usage, 3 bad input, 1 failure), a full standard error or a
//! panic does not change that, and signals still end a blocked command. Running into a limit
//! of the process (memory or address space, open files, file size) is one line and exit 1,
//! with nothing left behind; a build without MPI refuses to run as one of several ranks.

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use spillway_tests::{names, spillway, spillway_bin};

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` exited with `code` and printed exactly one line on standard error,
/// starting with `spillway: ` and containing every one of `needles`.
#[track_caller]
fn assert_one_line(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("spillway: "), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "lacks {needle:?}: {err}");
    }
}

/// Runs `spillway args` under the shell's `ulimit FLAG LIMIT` (`-v` KiB of address space,
/// `-n` open files, `-f` blocks of file size).
fn limited(flag: &str, limit: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {flag} {limit} && exec \"$0\" \"$@\""))
        .arg(spillway_bin())
        .args(args)
        .output()
        .unwrap()
}

/// A directory with a small text input, `in.txt`.
fn with_input() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "b a b\n").unwrap();
    (dir, input)
}

/// A character device like `/dev/full` (every write fails with ENOSPC) at `dir/full`, where
/// this machine lets us make one (root); never the real one.
fn full_device(dir: &Path) -> Option<PathBuf> {
    let full = dir.join("full");
    let made = Command::new("mknod").arg(&full).args(["c", "1", "7"]).stderr(Stdio::null()).status();
    made.is_ok_and(|st| st.success()).then_some(full)
}

/// A 1 MiB tmpfs mounted on a new directory, unmounted when dropped.
struct TinyFs {
    dir: tempfile::TempDir,
}

impl TinyFs {
    /// Mounts it, or `None` where this machine does not allow it (not root).
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status();
        mounted.is_ok_and(|st| st.success()).then_some(TinyFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `gen records` into an existing file where the new one cannot be written (a full file
/// system; a file size limit) fails and leaves the old file as it was, with no temporary
/// file left behind when the failure is an error.
#[test]
fn gen_records_that_fail_keep_the_old_file() {
    if let Some(fs) = TinyFs::mount() {
        let file = fs.path().join("records.dat");
        assert!(spillway(&["gen", "records", "1000", s(&file)]).status.success());
        let old = std::fs::read(&file).unwrap();
        // 2 MB into a 1 MiB file system.
        let out = spillway(&["gen", "records", "20000", s(&file)]);
        assert_one_line(&out, 1, &[s(&file), "No space left"]);
        assert!(std::fs::read(&file).unwrap() == old, "the old file was changed");
        assert_eq!(names(fs.path()), ["records.dat"], "temporary file left");
    }

    // Anywhere: a file size limit fails the write (SIGXFSZ is ignored) when the new file
    // grows past it; the old file is untouched and the temporary one removed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.dat");
    std::fs::write(&file, b"old records").unwrap();
    let out = limited("-f", 100, &["gen", "records", "20000", s(&file)]);
    assert_one_line(&out, 1, &[s(&file), "File too large"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"old records");
    assert_eq!(names(dir.path()), ["records.dat"], "temporary file left");
}

/// Record counts no file can hold, and ranges past the last record number, are usage errors
/// found before the file is touched.
#[test]
fn gen_records_refuses_impossible_ranges_before_touching_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.dat");
    std::fs::write(&file, b"old").unwrap();
    let out = spillway(&["gen", "records", "100000000000000000", s(&file)]);
    assert_one_line(&out, 2, &["100000000000000000 records", "more than a file can hold"]);
    let last = u128::MAX.to_string();
    let out = spillway(&["gen", "records", "--start", &last, "2", s(&file)]);
    assert_one_line(&out, 2, &["last record number"]);
    assert!(
        spillway(&["gen", "records", "--start", &last, "1", s(&dir.path().join("last"))]).status.success()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["last", "records.dat"]);
}

/// A FIFO is written in place, in order (the records a regular file gets); a directory or a
/// missing directory is bad input naming the path.
#[test]
fn gen_records_writes_fifos_in_place_and_names_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let regular = dir.path().join("regular.dat");
    assert!(spillway(&["gen", "records", "-t", "2", "25000", s(&regular)]).status.success());
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let read = dir.path().join("read.dat");
    let mut reader = Command::new("cat").arg(&fifo).stdout(File::create(&read).unwrap()).spawn().unwrap();
    let out = spillway(&["gen", "records", "-t", "2", "25000", s(&fifo)]);
    if !out.status.success() {
        let _ = reader.kill(); // nobody else will open the FIFO for writing
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(reader.wait().unwrap().success());
    assert!(std::fs::read(&read).unwrap() == std::fs::read(&regular).unwrap(), "FIFO output differs");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");

    assert_one_line(
        &spillway(&["gen", "records", "10", s(dir.path())]),
        3,
        &[s(dir.path()), "is a directory"],
    );
    let missing = dir.path().join("no-such-dir/records.dat");
    assert_one_line(&spillway(&["gen", "records", "10", s(&missing)]), 3, &[s(&missing), "No such file"]);
}

/// `--metrics FILE` is checked before the job (exit 3 naming it, nothing written): its
/// directory must exist, and it must be neither a directory, the --out file (also through a
/// link, a dangling one too, also when neither exists yet), a file inside --out-dir, nor an
/// input. When fine it is replaced atomically. The same for every job and both sort paths.
#[test]
fn metrics_path_is_checked_before_the_job_and_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("in.txt");
    std::fs::write(&text, "b a b\n").unwrap();
    let records = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "1000", s(&records)]).status.success());
    let out = dir.path().join("out");
    let existing = dir.path().join("existing");
    std::fs::write(&existing, b"keep me").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&existing, &link).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink("out", &dangling).unwrap();
    let out_dir = dir.path().join("out-dir");
    std::fs::create_dir(&out_dir).unwrap();
    let missing = dir.path().join("no-such-dir/m.json");

    let jobs: [&[&str]; 5] = [
        &["wordcount", "-q"],
        &["index", "-q"],
        &["grep", "-q", "a"],
        &["sort", "-q"],
        &["sort", "-q", "--generic", "-r", "2"],
    ];
    for job in jobs {
        let input = if job[0] == "sort" { &records } else { &text };
        let run = |extra: &[&str]| spillway(&[job, extra, &[s(input)]].concat());
        let before = names(dir.path());
        for (metrics, out_flags, what) in [
            (s(&missing), vec!["--out", s(&out)], "No such file"),
            (s(dir.path()), vec!["--out", s(&out)], "is a directory"),
            (s(&out), vec!["--out", s(&out)], "is also the --out file"),
            (s(&existing), vec!["--out", s(&existing)], "is also the --out file"),
            (s(&link), vec!["--out", s(&existing)], "is also the --out file"),
            (s(&dangling), vec!["--out", s(&out)], "is also the --out file"),
            (s(&out), vec!["--out", s(&dangling)], "is also the --out file"),
            (s(input), vec!["--out", s(&out)], "is also an input"),
        ] {
            let got = run(&[&["--metrics", metrics][..], &out_flags].concat());
            assert_one_line(&got, 3, &["--metrics", metrics, what]);
        }
        let inside = out_dir.join("part-00000");
        let got = run(&["--metrics", s(&inside), "--out-dir", s(&out_dir)]);
        assert_one_line(&got, 3, &[s(&inside), "inside the --out-dir"]);
        assert_eq!(names(dir.path()), before, "{job:?} wrote something");
        assert!(names(&out_dir).is_empty());
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

        // Fine: written whole, replacing what was there, with no temporary file left.
        let metrics = dir.path().join("metrics.json");
        std::fs::write(&metrics, b"old").unwrap();
        let got = run(&["--metrics", s(&metrics), "--out", s(&out)]);
        assert!(got.status.success(), "{job:?}: {}", stderr(&got));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
        assert!(json.get("input_bytes").is_some(), "{json}");
        assert!(names(dir.path()).iter().all(|n| !n.contains("spillway-tmp")), "{:?}", names(dir.path()));
        std::fs::remove_file(&metrics).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
}

/// `spillway valsort FIFO` blocks until a writer opens the FIFO; SIGINT must still end it
/// with 130 (the report, not the wait, holds standard error).
#[test]
fn valsort_blocked_on_a_fifo_exits_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut child =
        Command::new(spillway_bin()).arg("valsort").arg(&fifo).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the process catches SIGINT (bit 1 of SigCgt), so that the signal is not
    // delivered before the handler exists.
    let status = format!("/proc/{}/status", child.id());
    let started = Instant::now();
    let catches_sigint = || {
        std::fs::read_to_string(&status).ok().and_then(|text| {
            let mask = text.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            Some(u64::from_str_radix(mask.trim(), 16).ok()? & 2 != 0)
        })
    };
    while catches_sigint() != Some(true) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let exited = exited.expect("valsort ignored SIGINT for 10 s");
    assert_eq!(exited.code(), Some(130), "{}", stderr(&output));
    assert!(stderr(&output).contains("interrupted by SIGINT"), "{}", stderr(&output));
}

/// A standard error that fails every write (a full device) changes no exit status: bad input
/// stays 3, a usage error 2, success (whose metrics cannot be printed) 0.
#[test]
fn a_failing_standard_error_keeps_the_exit_status() {
    let (dir, input) = with_input();
    let Some(full) = full_device(dir.path()) else { return };
    let run = |args: &[&str]| {
        let sink = std::fs::OpenOptions::new().write(true).open(&full).unwrap();
        Command::new(spillway_bin()).args(args).stdout(Stdio::null()).stderr(sink).status().unwrap()
    };
    assert_eq!(run(&["wordcount", "-q", "/no/such/input"]).code(), Some(3));
    assert_eq!(run(&["wordcount", "-t", "0", s(&input)]).code(), Some(2));
    assert_eq!(run(&["grep", "(", s(&input)]).code(), Some(2));
    assert_eq!(run(&["wordcount", s(&input)]).code(), Some(0));
    let records = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "100", s(&records)]).status.success());
    assert_eq!(run(&["sort", "--out", s(&dir.path().join("sorted")), s(&records)]).code(), Some(0));
    assert_eq!(run(&["valsort", s(&records)]).code(), Some(1), "valsort's own status");
    assert!(std::fs::metadata(&full).unwrap().file_type().is_char_device());
}

/// No thread can be started (no stack fits): one line without a backtrace, even with
/// RUST_BACKTRACE=1, and exit 1. (This used to be a panic reaching `main`; a thread that
/// cannot start is an ordinary error now.)
#[test]
fn thread_start_failures_print_one_line_and_exit_1() {
    let (_dir, input) = with_input();
    let out = Command::new(spillway_bin())
        .args(["wordcount", "-q"])
        .arg(&input)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_MIN_STACK", (1u64 << 50).to_string())
        .output()
        .unwrap();
    assert_one_line(&out, 1, &["spillway: error: cannot start thread spillway-", "ulimit -u"]);
    let err = stderr(&out);
    assert!(!err.contains("backtrace") && !err.contains("panicked at"), "{err}");
}

/// Out-of-range flag values are usage errors (exit 2) on one line naming the flag, the same
/// in every subcommand.
#[test]
fn out_of_range_flags_are_usage_errors_naming_the_flag() {
    let (dir, input) = with_input();
    let out = dir.path().join("out");
    let shared: [(&[&str], &str); 7] = [
        (&["-t", "0"], "--threads"),
        (&["-r", "0"], "--partitions"),
        (&["-r", "4294967295"], "--partitions"),
        (&["--memory", "0"], "--memory"),
        (&["--max-open-runs", "1"], "--max-open-runs"),
        (&["--split-size", "0"], "--split-size"),
        (&["--memory", "1K"], "--memory"),
    ];
    let jobs: [&[&str]; 5] = [&["wordcount"], &["index"], &["grep", "a"], &["sort"], &["sort", "--generic"]];
    for job in jobs {
        for (flags, name) in shared {
            let got = spillway(&[job, flags, &["-q", "--out", s(&out), s(&input)]].concat());
            assert_one_line(&got, 2, &[name]);
        }
    }
    for sort in [&["sort"][..], &["sort", "--generic"]] {
        for (flags, name) in [
            (&["--key-size", "0"][..], "--key-size"),
            (&["--record-size", "0"], "--record-size"),
            (&["--key-size", "20", "--record-size", "10"], "--key-size 20"),
        ] {
            assert_one_line(&spillway(&[sort, flags, &["-q", s(&input)]].concat()), 2, &[name]);
        }
    }
    assert_one_line(&spillway(&["gen", "records", "-t", "0", "10", s(&out)]), 2, &["--threads"]);
    assert_one_line(&spillway(&["valsort", "-t", "0", s(&input)]), 2, &["--threads"]);
    assert!(!out.exists());
}

/// The engine's checks of its settings (a thread's share of the budget, a budget above the
/// machine's memory) hold for every job and both sort paths, which build the same engine:
/// usage errors on one line, before any input is read or output written.
#[test]
fn engine_settings_are_checked_the_same_for_every_job_and_both_sorts() {
    let (dir, input) = with_input();
    let out = dir.path().join("out");
    let records = dir.path().join("records");
    std::fs::write(&records, vec![b'r'; 100 * 50]).unwrap();
    let jobs: [&[&str]; 3] = [&["wordcount"], &["sort"], &["sort", "--generic"]];
    for job in jobs {
        let input = if job[0] == "sort" { &records } else { &input };
        let thin =
            spillway(&[job, &["-q", "-t", "8", "--memory", "64K", "--out", s(&out), s(input)]].concat());
        assert_one_line(&thin, 2, &["64 KiB shared by 8 threads", "each thread needs at least 16 KiB"]);
        let huge = spillway(&[job, &["-q", "--memory", "1048576G", "--out", s(&out), s(input)]].concat());
        assert_one_line(
            &huge,
            2,
            &["a memory budget of 1048576 GiB is more than", "choose a smaller budget"],
        );
        // At the limit the job runs.
        let ok = spillway(&[job, &["-q", "-t", "4", "--memory", "64K", "--out", s(&out), s(input)]].concat());
        assert!(ok.status.success(), "{job:?}: {}", stderr(&ok));
        std::fs::remove_file(&out).unwrap();
    }
    assert!(!out.exists());
}

/// An invalid grep pattern is a usage error on one line.
#[test]
fn invalid_grep_patterns_are_one_line_usage_errors() {
    let (_dir, input) = with_input();
    let out = spillway(&["grep", "(", s(&input)]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "spillway: error: invalid pattern '(': unclosed group\n");
    assert_one_line(
        &spillway(&["grep", "a{2,1}", s(&input)]),
        2,
        &["invalid pattern 'a{2,1}': invalid repetition"],
    );
}

/// A regular file named by --spill-dir or --out-dir is bad input (exit 3) for every job,
/// found before any work.
#[test]
fn files_named_as_directories_are_bad_input() {
    let (dir, input) = with_input();
    let records = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "1000", s(&records)]).status.success());
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let jobs: [&[&str]; 4] =
        [&["wordcount"], &["grep", "a"], &["sort", "-t", "2", "--memory", "64K"], &["sort", "--generic"]];
    for job in jobs {
        let input = if job[0] == "sort" { &records } else { &input };
        let got = spillway(&[job, &["-q", "--spill-dir", s(&file), s(input)]].concat());
        assert_one_line(&got, 3, &[&format!("--spill-dir {} is not a directory", s(&file))]);
        let got = spillway(&[job, &["-q", "--out-dir", s(&file), s(input)]].concat());
        assert_one_line(&got, 3, &[s(&file), "not a directory"]);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// `--help` texts say what the flags do for each command.
#[test]
fn help_texts_fit_their_commands() {
    let help = |args: &[&str]| {
        let out = spillway(args);
        assert!(out.status.success());
        // Lines are wrapped to the terminal: compare with whitespace collapsed.
        String::from_utf8(out.stdout).unwrap().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert!(!help(&["--help"]).contains("inspect"));
    let sort = help(&["sort", "--help"]);
    assert!(sort.contains("--io <BACKEND> With --generic only"), "{sort}");
    assert!(sort.contains("--split-size <SIZE> With --generic only"), "{sort}");
    assert!(sort.contains("-r, --partitions <R> Number of part files"), "{sort}");
    assert!(help(&["wordcount", "--help"]).contains("-r, --partitions <R> Partitions R (1 to 1048576)"));
    let wordcount = help(&["wordcount", "--help"]);
    assert!(!wordcount.contains("index") && !wordcount.contains("document"), "{wordcount}");
    assert!(help(&["index", "--help"]).contains("each file is one document"));
}

/// In `dir`: an empty spill directory, and an output directory holding `result` = `old` (what
/// a failed job must leave as it was). Returns (spill, output directory, result).
fn spill_and_old_output(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (spill, out_dir) = (dir.join("spill"), dir.join("out"));
    std::fs::create_dir(&spill).unwrap();
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("result");
    std::fs::write(&out, b"old").unwrap();
    (spill, out_dir, out)
}

/// Running out of memory or address space (`ulimit -v`) ends the job on one line that says
/// so, with exit status 1 (not Rust's `memory allocation of N bytes failed` and SIGABRT), and
/// leaves nothing behind: no spill directory, no temporary output beside --out, the file
/// --out names unchanged. Both ways it happens: an allocation that fails (here the sort's
/// entries, 16 bytes per 1-byte record: ~1 GB, more than the whole limit, requested when
/// the spill directory and the temporary output exist), and a memory map of an input that
/// does not fit (an error, which says out of memory or address space; not bad input). The
/// inputs are sparse files: nothing is read before the failure.
#[test]
fn running_out_of_memory_is_one_line_exit_1_and_leaves_nothing_behind() {
    const LIMIT_KIB: u64 = 512 << 10;
    let dir = tempfile::tempdir().unwrap();
    let (spill, out_dir, out) = spill_and_old_output(dir.path());
    let records = dir.path().join("records.bin");
    File::create(&records).unwrap().set_len(120 << 20).unwrap();
    let big = dir.path().join("big.txt");
    File::create(&big).unwrap().set_len(1 << 30).unwrap();

    let check = |args: &[&str], needles: &[&str]| {
        let common = ["-q", "-t", "2", "--spill-dir", s(&spill), "--out", s(&out)];
        let got = limited("-v", LIMIT_KIB, &[args, &common].concat());
        assert_one_line(&got, 1, &[&["spillway: error: "][..], needles].concat());
        assert!(names(&spill).is_empty(), "{args:?} left {:?} in the spill directory", names(&spill));
        assert_eq!(names(&out_dir), ["result"], "{args:?} left a temporary output");
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
    };
    // 120 Mi records of 1 byte do not fit a 2G budget at 19 bytes each: two chunks, and the
    // entries of one take 1 GB. The spill directory exists by then.
    let sort = ["sort", "--record-size", "1", "--key-size", "1", "--memory", "2G", s(&records)];
    check(&sort, &["out of memory: allocating 1006632960 bytes failed", "--memory", "ulimit -v"]);
    // Read into memory (pread): the 1 GiB buffer is the failing allocation.
    check(
        &["wordcount", "--read", "pread", s(&big)],
        &["out of memory: allocating 1073741824 bytes failed", "ulimit -v"],
    );
    // Mapped: the map fails, which the job reports as an error naming the input.
    check(&["wordcount", s(&big)], &[s(&big), "Cannot allocate memory", "out of memory or address space"]);
}

/// Running out of file descriptors (`ulimit -n`) is the machine's limit, not bad input:
/// wherever it strikes (reading an input directory, opening an input, creating or opening a
/// run), the job fails with exit status 1 on one line that names the file, says "Too many
/// open files" and hints at `ulimit -n`, and leaves no spill directory (whose removal needs a
/// descriptor too) and no temporary output; or the job fits and its output is right.
#[test]
fn running_out_of_file_descriptors_is_a_failure_not_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts");
    std::fs::create_dir(&texts).unwrap();
    for i in 0..20 {
        std::fs::write(texts.join(format!("f{i:02}.txt")), format!("w{i} alpha beta {}\n", i * 7)).unwrap();
    }
    let records = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "3000", s(&records)]).status.success());
    let spill = dir.path().join("spill");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&spill).unwrap();
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("result");

    let jobs: [&[&str]; 2] = [
        &["wordcount", "--memory", "64K", "--max-open-runs", "2", s(&texts)],
        &["sort", "--memory", "64K", "--max-open-runs", "2", s(&records)],
    ];
    let (mut failures, mut inputs, mut runs) = (0, 0, 0);
    for job in jobs {
        let args = [job, &["-q", "-t", "2", "--spill-dir", s(&spill), "--out", s(&out)]].concat();
        let got = spillway(&args);
        assert!(got.status.success(), "{}", stderr(&got));
        let expected = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        for n in 4..=10 {
            let got = limited("-n", n, &args);
            match got.status.code() {
                Some(0) => assert!(std::fs::read(&out).unwrap() == expected, "{job:?} at {n}: wrong output"),
                Some(1) => {
                    assert_one_line(&got, 1, &["Too many open files", "ulimit -n", s(dir.path())]);
                    failures += 1;
                    inputs += usize::from(stderr(&got).contains("error: input "));
                    runs += usize::from(stderr(&got).contains(s(&spill)));
                    assert!(!out.exists());
                }
                _ => panic!("{job:?} with ulimit -n {n}: {:?}: {}", got.status, stderr(&got)),
            }
            let _ = std::fs::remove_file(&out);
            assert!(names(&spill).is_empty(), "{job:?} at {n} left {:?}", names(&spill));
            assert!(names(&out_dir).is_empty(), "{job:?} at {n} left {:?}", names(&out_dir));
        }
    }
    assert!(
        failures > 0 && inputs > 0 && runs > 0,
        "{failures} failures, {inputs} on inputs, {runs} on runs"
    );
}

/// The variables by which launchers tell a process its rank and their number.
const LAUNCHER_VARS: [&str; 10] = [
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK",
    "PMI_SIZE",
    "PMI_RANK",
    "PMIX_RANK",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_PROCID",
    "SLURM_NTASKS",
];

/// A build without the `mpi` feature started by a launcher as one of several ranks refuses
/// to run a job (each rank would run all of it): a usage error (exit 2) on one line naming
/// the rank, the launcher and its variable, before anything is written. One rank, an
/// `sbatch` script (which runs once although `SLURM_NTASKS` says 4) and the per-process
/// tools (`gen records`, `valsort`) run as usual. (The `mpi` build runs under real launchers
/// in tests/mpi.rs.)
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_several_ranks() {
    if cfg!(feature = "mpi") {
        return;
    }
    let (dir, input) = with_input();
    let records = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "100", s(&records)]).status.success());
    let out = dir.path().join("out");
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(spillway_bin());
        for var in LAUNCHER_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied()).args(args).output().unwrap()
    };
    let jobs: [&[&str]; 5] = [
        &["wordcount", "-q", "--out", s(&out), s(&input)],
        &["index", "-q", "--out", s(&out), s(&input)],
        &["grep", "-q", "--out", s(&out), "a", s(&input)],
        &["sort", "-q", "--out", s(&out), s(&records)],
        &["sort", "-q", "--generic", "--out", s(&out), s(&records)],
    ];
    let launches: [(&[(&str, &str)], &str); 4] = [
        (
            &[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "2")],
            "rank 2 of 4 by mpirun (OMPI_COMM_WORLD_SIZE=4)",
        ),
        (&[("PMI_SIZE", "3"), ("PMI_RANK", "0")], "rank 0 of 3 by mpiexec (PMI_SIZE=3)"),
        (
            &[("SLURM_STEP_NUM_TASKS", "2"), ("SLURM_PROCID", "1"), ("SLURM_NTASKS", "2")],
            "rank 1 of 2 by srun (SLURM_STEP_NUM_TASKS=2)",
        ),
        (&[("PMIX_RANK", "1")], "rank 1 by a PMIx launcher (PMIX_RANK=1)"),
    ];
    for job in jobs {
        for (env, says) in launches {
            let got = run(env, job);
            assert_one_line(
                &got,
                2,
                &[
                    &format!("spillway: error: started as {says}"),
                    "built without MPI support",
                    "--features mpi",
                ],
            );
            assert!(!out.exists(), "{job:?} wrote its output");
        }
        for env in [
            &[("OMPI_COMM_WORLD_SIZE", "1"), ("OMPI_COMM_WORLD_RANK", "0")][..],
            &[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")],
            &[("PMIX_RANK", "0")],
        ] {
            let got = run(env, job);
            assert!(got.status.success(), "{job:?} {env:?}: {}", stderr(&got));
            std::fs::remove_file(&out).unwrap();
        }
    }
    let many = [("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "1")];
    assert!(run(&many, &["gen", "records", "10", s(&out)]).status.success());
    assert!(run(&many, &["valsort", s(&records)]).status.code() == Some(1), "valsort ran");
}

/// A file size limit (`ulimit -f`) no longer kills the process with SIGXFSZ: the write fails,
/// and the job ends with exit status 1 on one line naming the file ("File too large", a hint
/// at `ulimit -f`), leaving no temporary output and no spill directory; the file --out names
/// keeps its content. The same for the generator, both sorts, and a spilling word count.
#[test]
fn a_file_size_limit_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records.dat");
    assert!(spillway(&["gen", "records", "--ascii", "20000", s(&records)]).status.success());
    let (spill, out_dir, out) = spill_and_old_output(dir.path());
    let jobs: [&[&str]; 5] = [
        &["gen", "records", "20000", s(&out)],
        &["sort", "-q", "--out", s(&out), s(&records)],
        &[
            "sort",
            "-q",
            "-t",
            "2",
            "--memory",
            "64K",
            "--spill-dir",
            s(&spill),
            "--out",
            s(&out),
            s(&records),
        ],
        &["wordcount", "-q", "--spill-dir", s(&spill), "--out", s(&out), s(&records)],
        &["wordcount", "-q", "--memory", "64K", "--spill-dir", s(&spill), "--out", s(&out), s(&records)],
    ];
    for job in jobs {
        // 100 blocks: 50 KiB (sh counts 512-byte blocks) or 100 KiB; every output is 2 MB.
        let got = limited("-f", 100, job);
        assert_one_line(&got, 1, &["spillway: error: ", "File too large", "ulimit -f", s(dir.path())]);
        assert!(names(&spill).is_empty(), "{job:?} left {:?}", names(&spill));
        assert_eq!(names(&out_dir), ["result"], "{job:?} left a temporary output");
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
    }
}

/// A standard error that is a pipe nobody reads any more (every write fails with EPIPE;
/// SIGPIPE is ignored) changes no exit status: bad input stays 3, a usage error 2, running
/// out of memory 1, success 0.
#[test]
fn a_closed_standard_error_pipe_keeps_the_exit_status() {
    let (dir, input) = with_input();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // Opened for reading and writing first, so that opening the writing end does not block.
    let reader = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    drop(reader);
    let run = |args: &[&str]| {
        let sink = writer.try_clone().unwrap();
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 524288 && exec \"$0\" \"$@\"")
            .arg(spillway_bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(sink)
            .status()
            .unwrap()
    };
    assert_eq!(run(&["wordcount", "-q", "/no/such/input"]).code(), Some(3));
    assert_eq!(run(&["wordcount", "-t", "0", s(&input)]).code(), Some(2));
    assert_eq!(run(&["wordcount", "-t", "1", s(&input)]).code(), Some(0));
    let big = dir.path().join("big.txt");
    File::create(&big).unwrap().set_len(1 << 30).unwrap();
    assert_eq!(run(&["wordcount", "-q", "-t", "1", "--read", "pread", s(&big)]).code(), Some(1));
}
