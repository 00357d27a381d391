//! Nothing lost, nothing left behind: outputs that alias standard output or an input, output
//! directories committed whole under any signal, and metrics files committed with the output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use spillway_engine::{Engine, Inputs, OutputSpec, jobs::WordCount, text::WordMode};
use spillway_tests::{
    gutenberg_files, messy_text, names, read_parts, reference_wordcount, spillway, spillway_bin,
};

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).env("SPILLWAY", spillway_bin()).output().unwrap()
}

/// `-o /dev/stdout` (and `--metrics /dev/stdout`, `/dev/fd/1`) write into the descriptor:
/// a file the shell opened with `>>` keeps what it held, and is not replaced.
#[test]
fn dev_stdout_is_written_in_place_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let input = &gutenberg_files()[0];
    let expected = reference_wordcount(std::slice::from_ref(input), false);
    let log = dir.path().join("log");
    for out in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        std::fs::write(&log, "old\n").unwrap();
        let run = sh(&format!("\"$SPILLWAY\" wordcount -q -o {out} '{}' >> '{}'", s(input), s(&log)));
        assert!(run.status.success(), "{out}: {}", String::from_utf8_lossy(&run.stderr));
        let mut want = b"old\n".to_vec();
        want.extend_from_slice(&expected);
        assert!(std::fs::read(&log).unwrap() == want, "-o {out} did not append to the file behind it");
    }
    std::fs::write(&log, "old\n").unwrap();
    let out = dir.path().join("counts");
    let run = sh(&format!(
        "\"$SPILLWAY\" wordcount -q -o '{}' --metrics /dev/stdout '{}' >> '{}'",
        s(&out),
        s(input),
        s(&log)
    ));
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("old\n{") && text.contains("\"output_keys\""), "{text}");
    assert_eq!(names(dir.path()), ["counts", "log"], "no temporary left beside the log");
}

/// `--out` naming an input (directly or through a link) is refused before any work, the input
/// untouched; `sort` sorts a file in place, as GNU sort -o does.
#[test]
fn out_naming_an_input_is_refused_except_for_sort() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, messy_text(7, 20_000)).unwrap();
    let before = std::fs::read(&input).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    for job in ["wordcount", "index"] {
        for out in [&input, &link] {
            let run = spillway(&[job, "-q", "-o", s(out), s(&input)]);
            let err = String::from_utf8_lossy(&run.stderr);
            assert_eq!(run.status.code(), Some(3), "{job} -o {out:?}: {err}");
            assert!(err.contains("is also the input") && err.contains("in.txt"), "{err}");
        }
    }
    let run = spillway(&["grep", "-q", "-o", s(&input), "a", s(&dir.path().join("."))]);
    assert_eq!(run.status.code(), Some(3), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(std::fs::read(&input).unwrap() == before, "an input was overwritten");

    let records = dir.path().join("records");
    assert!(spillway(&["gen", "records", "20000", s(&records)]).status.success());
    for generic in [&[][..], &["--generic"][..]] {
        let run = spillway(&[&["sort", "-q", "-o", s(&records), s(&records)][..], generic].concat());
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(spillway(&["valsort", s(&records)]).status.success(), "sorted in place");
        assert_eq!(std::fs::metadata(&records).unwrap().len(), 2_000_000);
    }
}

/// A metrics file that cannot be written fails the job before its output appears: the file it
/// would replace keeps its content, the output directory is never made.
#[test]
fn a_failing_metrics_file_fails_the_job_before_the_output_appears() {
    let dir = tempfile::tempdir().unwrap();
    let input = gutenberg_files()[0].clone();
    let out = dir.path().join("counts");
    std::fs::write(&out, "old").unwrap();
    let run = spillway(&["wordcount", "-q", "--metrics", "/dev/full", "-o", s(&out), s(&input)]);
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    let out_dir = dir.path().join("parts");
    let run = spillway(&["wordcount", "-q", "--metrics", "/dev/full", "--out-dir", s(&out_dir), s(&input)]);
    assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(names(dir.path()), ["counts"], "no output directory, no staging directory");

    // The sort's own path too, in memory and out of core, one file and part files.
    let records = dir.path().join("records");
    assert!(spillway(&["gen", "records", "20000", s(&records)]).status.success());
    for memory in ["1G", "1M"] {
        let run =
            spillway(&["sort", "-q", "-m", memory, "--metrics", "/dev/full", "-o", s(&out), s(&records)]);
        assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        let run = spillway(&[
            "sort",
            "-q",
            "-m",
            memory,
            "--metrics",
            "/dev/full",
            "--out-dir",
            s(&out_dir),
            s(&records),
        ]);
        assert_eq!(run.status.code(), Some(1), "{}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(names(dir.path()), ["counts", "records"], "no output directory, no staging directory");
    }
    let metrics = dir.path().join("metrics.json");
    let run = spillway(&["sort", "-q", "--metrics", s(&metrics), "-o", s(&out), s(&records)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(json["records"], 20000);
}

/// The output directory is replaced whole: an existing empty directory keeps its permissions;
/// a link to a directory is followed (the link stays); a directory holding other files gets
/// the part files moved in beside them, `_SUCCESS` last.
#[test]
fn output_directories_are_committed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let files = gutenberg_files()[..2].to_vec();
    let expected = reference_wordcount(&files, false);
    let inputs = Inputs::new(&files).unwrap();
    let engine = Engine::builder().threads(2).partitions(5).spill_dir(dir.path()).build().unwrap();
    let job = WordCount { mode: WordMode::Unicode };
    let check = |out: &Path, others: &[&str]| {
        let mut want: Vec<String> = (0..5).map(|p| format!("part-{p:05}")).collect();
        want.push("_SUCCESS".into());
        want.extend(others.iter().map(|s| s.to_string()));
        want.sort();
        assert_eq!(names(out), want);
        assert!(read_parts(out).concat().len() == expected.len());
    };

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o750)).unwrap();
    engine.run(&job, &inputs, &OutputSpec::Dir(empty.clone())).unwrap();
    check(&empty, &[]);
    assert_eq!(std::fs::metadata(&empty).unwrap().permissions().mode() & 0o777, 0o750);

    let target = dir.path().join("target");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap(); // dangling until the commit
    engine.run(&job, &inputs, &OutputSpec::Dir(link.clone())).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    check(&target, &[]);

    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "keep").unwrap();
    engine.run(&job, &inputs, &OutputSpec::Dir(busy.clone())).unwrap();
    check(&busy, &["notes.txt"]);
    assert_eq!(std::fs::read(busy.join("notes.txt")).unwrap(), b"keep");

    let mut left: Vec<String> = names(dir.path());
    left.retain(|n| n.starts_with('.') || n.starts_with("spillway-"));
    assert!(left.is_empty(), "staging or spill directories left: {left:?}");
}

/// SIGTERM or SIGKILL at any moment of a job with thousands of part files: the output
/// directory holds either every part file and `_SUCCESS`, or does not exist; SIGTERM also
/// leaves no staging or spill directory.
#[test]
fn a_signal_at_any_moment_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, messy_text(11, 2_000_000)).unwrap();
    let run = |out: &Path, spill: &Path| {
        std::fs::create_dir(spill).unwrap();
        Command::new(spillway_bin())
            .args(["wordcount", "-q", "-r", "200", "-t", "2", "--spill-dir", s(spill)])
            .args(["--out-dir", s(out), s(&input)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Signals from the start to past the end of an undisturbed run (timed without the build
    // of the binary that its first use brings up to date).
    spillway_bin();
    let started = std::time::Instant::now();
    let status = run(&dir.path().join("whole"), &dir.path().join("spill-whole")).wait().unwrap();
    assert!(status.success());
    let whole = started.elapsed();
    let mut outcomes = [0usize; 2];
    // Tenths of an undisturbed run, then well past its end (a busy machine may slow a run
    // down: the last ones let it finish, so that signals after the commit are tried too).
    for (i, tenths) in (0..12u32).chain([20, 40]).enumerate() {
        let delay = whole * tenths / 10;
        for (signal, name) in [(15, "TERM"), (9, "KILL")] {
            let out = dir.path().join(format!("out-{i}-{name}"));
            let spill = dir.path().join(format!("spill-{i}-{name}"));
            let mut child = run(&out, &spill);
            std::thread::sleep(delay);
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status();
            let status = child.wait().unwrap();
            if out.exists() {
                let got = names(&out);
                assert_eq!(got.len(), 201, "{name} after {delay:?}: partial output ({} files)", got.len());
                assert!(out.join("_SUCCESS").exists());
                outcomes[1] += 1;
            } else {
                assert!(!status.success(), "exit 0 without output");
                outcomes[0] += 1;
            }
            if signal == 15 {
                let prefix = format!(".out-{i}-{name}.");
                let staged: Vec<String> =
                    names(dir.path()).into_iter().filter(|n| n.starts_with(&prefix)).collect();
                assert!(staged.is_empty(), "SIGTERM after {delay:?} left {staged:?}");
                assert!(names(&spill).is_empty(), "SIGTERM after {delay:?} left a spill directory");
            }
        }
    }
    // Both outcomes happened, or the test proved nothing about the commit.
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "killed {} times before, {} after the commit",
        outcomes[0],
        outcomes[1]
    );
}

/// One output file needs no partitions: `-r 65536` and `-r 1048576` with a 64 KiB budget run
/// in bounded memory (this peaked at 2.3 GB, and the OOM killer ended the second) and give the
/// bytes of `-r 16`.
#[test]
fn many_partitions_with_one_output_file_stay_within_memory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, messy_text(5, 500_000)).unwrap();
    let expected = reference_wordcount(std::slice::from_ref(&input.clone()), false);
    for r in ["16", "65536", "1048576"] {
        let out = dir.path().join(format!("out-{r}"));
        let metrics = dir.path().join(format!("metrics-{r}"));
        let run = spillway(&[
            "wordcount",
            "-q",
            "-r",
            r,
            "-m",
            "64K",
            "-t",
            "2",
            "--metrics",
            s(&metrics),
            "-o",
            s(&out),
            s(&input),
        ]);
        assert!(run.status.success(), "-r {r}: {}", String::from_utf8_lossy(&run.stderr));
        assert!(std::fs::read(&out).unwrap() == expected, "-r {r} differs from the reference");
        let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
        assert!(metrics["spills"].as_u64().unwrap() > 10, "the budget forced spills");
        let rss = metrics["peak_rss_bytes"].as_u64().unwrap();
        assert!(rss < 64 << 20, "-r {r}: peak RSS {} MiB", rss >> 20);
    }
}

/// Settings that cannot work are refused before any work with the reason (exit 2). (The
/// warning for a million part files is a unit test of the tools.)
#[test]
fn degenerate_settings_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, messy_text(3, 20_000)).unwrap();
    let out_dir = dir.path().join("out");
    let cases: [(&[&str], &str); 3] = [
        (&["-m", "64K", "-t", "1000"], "leaves each 65 bytes"),
        (&["-m", "16T"], "would be killed before it spills"),
        (&["-r", "65536", "-m", "64K", "-t", "2"], "every spill run carries a 2 MiB index"),
    ];
    for (flags, why) in cases {
        let run =
            spillway(&[&["wordcount", "-q"][..], flags, &["--out-dir", s(&out_dir), s(&input)]].concat());
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.starts_with("spillway: error: ") && err.contains(why), "{flags:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out_dir.exists());
    }
}

/// A thread that cannot be started (a user's thread limit, a batch system's pids limit) fails
/// the job with one clear line and exit 1, leaving nothing behind; it used to panic with
/// "internal error ... (at engine.rs:587)". Runs the binary as `nobody` under `ulimit -u`
/// (root is exempt from the limit), so it needs root and `setpriv`.
#[test]
fn a_thread_that_cannot_start_fails_the_job_cleanly() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0"
        || Command::new("setpriv").arg("--help").output().is_err()
    {
        eprintln!("skipped: needs root and setpriv to run as another user under a thread limit");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, messy_text(9, 100_000)).unwrap();
    let records = dir.path().join("records");
    assert!(spillway(&["gen", "records", "10000", s(&records)]).status.success());
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    std::fs::set_permissions(&spill, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dir.path().join("out");
    let cases: [Vec<&str>; 4] = [
        vec!["wordcount", "-t", "8", "-o", s(&out), s(&input)],
        vec!["index", "-t", "8", "--out-dir", s(&out), s(&input)],
        vec!["sort", "-t", "8", "-o", s(&out), s(&records)],
        vec!["sort", "--generic", "-t", "8", "-o", s(&out), s(&records)],
    ];
    for args in cases {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let run = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c"])
            .arg(format!(
                "ulimit -u 3 && exec \"$SPILLWAY\" {} -q --spill-dir '{}'",
                quoted.join(" "),
                s(&spill)
            ))
            .env("SPILLWAY", spillway_bin())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("spillway: error: cannot start thread") && err.contains("ulimit -u"),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} left an output");
        assert!(names(&spill).is_empty(), "{args:?} left a spill directory");
    }
    let mut left = names(dir.path());
    left.retain(|n| n.starts_with('.'));
    assert!(left.is_empty(), "temporaries left: {left:?}");
}

/// The CLI commits into an output directory that holds other files (moved in one by one):
/// everything is still there after the process has exited (the registry of paths to remove at
/// exit must not keep the committed ones).
#[test]
fn the_cli_commits_into_a_directory_holding_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = &gutenberg_files()[0];
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("job.log"), "mine").unwrap();
    let run = spillway(&["wordcount", "-q", "-r", "3", "--out-dir", s(&out), s(input)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(names(&out), ["_SUCCESS", "job.log", "part-00000", "part-00001", "part-00002"]);
    let mut got = read_parts(&out);
    got.sort();
    assert_eq!(got.concat().len(), reference_wordcount(std::slice::from_ref(input), false).len());
    assert_eq!(names(dir.path()), ["out"], "no staging directory left");
}
