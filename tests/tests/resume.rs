//! Resumable jobs (`--resume`), through the `spillway` binary: killed at deterministic
//! failpoints spread over map, spill commits, background and planned merges, reduce and the
//! commit (`SPILLWAY_FAILPOINTS=NAME=N:abort`), and by timing, each job resumes to the output
//! of a clean run; nothing appears under the output's name before it is complete. A changed
//! input or setting is refused naming it; a damaged run or journal is found and never gives
//! wrong output; SIGTERM stops the job at once, saying how far it got.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use spillway_tests::{gutenberg_files, messy_text, read_parts, spillway_bin};

/// Small budget, small splits and F = 2: many runs, background and planned merges (and
/// `-r 3`, `--split-size 16K` unless a test gives others).
const SETTINGS: [&str; 6] = ["-q", "--memory", "256K", "--max-open-runs", "2", "-t"];

struct Case {
    dir: tempfile::TempDir,
    inputs: Vec<PathBuf>,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs: Vec<PathBuf> = gutenberg_files().into_iter().take(2).collect();
        let messy = dir.path().join("messy.txt");
        std::fs::write(&messy, messy_text(5, 200_000)).unwrap();
        inputs.push(messy);
        Case { dir, inputs }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `spillway JOB SETTINGS [extra] OUTPUT inputs` with `failpoints`.
    fn run(&self, job: &str, out: &[&str], extra: &[&str], failpoints: &str) -> Output {
        let mut cmd = Command::new(spillway_bin());
        cmd.arg(job).args(SETTINGS).arg("2").args(extra).args(out).args(&self.inputs);
        if !extra.contains(&"-r") {
            cmd.args(["-r", "3"]);
        }
        if !extra.contains(&"--split-size") {
            cmd.args(["--split-size", "16K"]);
        }
        cmd.env("SPILLWAY_FAILPOINTS", failpoints).output().unwrap()
    }
}

fn job_dir(out: &Path) -> PathBuf {
    out.with_file_name(format!(".{}.spillway-job", out.file_name().unwrap().to_string_lossy()))
}

/// The journal of the first session of a one-rank job.
fn journal(out: &Path) -> PathBuf {
    job_dir(out).join("journal-s1-r0")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Kills at `(failpoint, pass)` and resumes; `Some(points reached)`.
fn kill_and_resume(
    case: &Case,
    job: &str,
    dir_output: bool,
    points: &[(&str, u32)],
    expected: &Output2,
) -> usize {
    let mut reached = 0;
    for &(name, pass) in points {
        let out = case.path(&format!("{job}-{name}-{pass}-{dir_output}"));
        let out_arg = out.to_str().unwrap();
        let flag = if dir_output { "--out-dir" } else { "-o" };
        let killed = case.run(job, &[flag, out_arg], &["--resume"], &format!("{name}={pass}:abort"));
        let what = format!("{job} killed at {name}={pass} ({flag})");
        if killed.status.success() {
            // The job never passed there that often: the output is complete already.
            assert_eq!(Output2::read(&out, dir_output), *expected, "{what}: finished");
            continue;
        }
        assert_eq!(killed.status.signal(), Some(libc_sigabrt()), "{what}: {}", stderr(&killed));
        reached += 1;
        // Nothing under the output's name before it is complete, unless the kill came after
        // the rename (commit.finish).
        assert_eq!(out.exists(), name == "commit.finish", "{what}: no output before completion");
        assert!(journal(&out).exists(), "{what}: the journal is kept");
        let resumed = case.run(job, &[flag, out_arg], &["--resume"], "");
        assert!(resumed.status.success(), "{what}: resume failed: {}", stderr(&resumed));
        assert_eq!(Output2::read(&out, dir_output), *expected, "{what}: resumed output");
        assert!(!job_dir(&out).exists(), "{what}: the job directory goes once the output is committed");
    }
    reached
}

fn libc_sigabrt() -> i32 {
    6
}

/// An output: one file, or a directory's part files.
#[derive(Debug, PartialEq)]
enum Output2 {
    File(Vec<u8>),
    Parts(Vec<Vec<u8>>),
}

impl Output2 {
    fn read(out: &Path, dir: bool) -> Output2 {
        if dir {
            assert!(out.join("_SUCCESS").exists(), "{}: _SUCCESS", out.display());
            Output2::Parts(read_parts(out))
        } else {
            Output2::File(std::fs::read(out).unwrap())
        }
    }
}

fn clean(case: &Case, job: &str, dir_output: bool) -> Output2 {
    let out = case.path(&format!("{job}-clean-{dir_output}"));
    let flag = if dir_output { "--out-dir" } else { "-o" };
    let output = case.run(job, &[flag, out.to_str().unwrap()], &[], "");
    assert!(output.status.success(), "{}", stderr(&output));
    Output2::read(&out, dir_output)
}

/// At least 50 distinct kill points over map, spill commits, background and planned merges,
/// reduce and the commit, for word count and index, part files and one output file.
#[test]
fn killed_at_any_failpoint_a_job_resumes_to_the_same_output() {
    let case = Case::new();
    let mut reached = 0;
    let mut points: Vec<(&str, u32)> = Vec::new();
    for pass in [1, 2, 3, 5, 8, 13] {
        points.extend([
            ("map.split", pass * 3),
            ("map.commit", pass),
            ("merge.step", pass),
            ("merge.inputs", pass),
        ]);
    }
    points.extend([
        ("reduce.partition", 1),
        ("reduce.partition", 3),
        ("commit.output", 1),
        ("commit.finish", 1),
    ]);
    for (job, dir_output) in [("wordcount", true), ("index", false)] {
        let expected = clean(&case, job, dir_output);
        reached += kill_and_resume(&case, job, dir_output, &points, &expected);
    }
    assert!(reached >= 50, "only {reached} kill points were reached");
}

/// Killed by SIGKILL at times spread over the run; each resumes to the clean output.
#[test]
fn killed_at_any_time_a_job_resumes_to_the_same_output() {
    let case = Case::new();
    let expected = clean(&case, "wordcount", true);
    // How long a whole run takes here, to spread the kills over it.
    let out = case.path("timed");
    let started = std::time::Instant::now();
    assert!(case.run("wordcount", &["--out-dir", out.to_str().unwrap()], &["--resume"], "").status.success());
    let whole = started.elapsed();
    std::fs::remove_dir_all(&out).unwrap();
    let mut killed = 0;
    for i in 1..=6u32 {
        let mut cmd = Command::new(spillway_bin());
        cmd.arg("wordcount").args(SETTINGS).arg("2").args(["-r", "3", "--split-size", "16K"]);
        cmd.args(["--resume", "--out-dir", out.to_str().unwrap()]);
        let mut child = cmd.args(&case.inputs).spawn().unwrap();
        std::thread::sleep(whole * i / 7);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            // It finished before the kill (a slow start, a fast run): nothing to resume.
            assert_eq!(Output2::read(&out, true), expected, "run {i}");
            std::fs::remove_dir_all(&out).unwrap();
            continue;
        }
        killed += 1;
        let resumed = case.run("wordcount", &["--out-dir", out.to_str().unwrap()], &["--resume"], "");
        assert!(resumed.status.success(), "kill {i} ({status}): {}", stderr(&resumed));
        assert_eq!(Output2::read(&out, true), expected, "kill {i}");
        assert!(!job_dir(&out).exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
    assert!(killed >= 3, "only {killed} of 6 runs were killed before they finished");
}

/// SIGTERM stops a resumable job at once with one line and 128 + 15; the job directory is
/// kept and the next `--resume` finishes it with what was done kept.
#[test]
fn sigterm_stops_a_resumable_job_and_the_next_run_finishes_it() {
    let case = Case::new();
    let expected = clean(&case, "wordcount", true);
    let out = case.path("term");
    // Held at its 40th split (a failpoint that stalls) with some splits journaled.
    let mut cmd = Command::new(spillway_bin());
    cmd.arg("wordcount").args(SETTINGS).arg("1").args(["-r", "3", "--split-size", "16K"]);
    cmd.args(["--resume", "--out-dir", out.to_str().unwrap()]);
    cmd.env("SPILLWAY_FAILPOINTS", "map.split=40:stall");
    let child = cmd.args(&case.inputs).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let journal = journal(&out);
    // Held there, the journal stops growing.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut len, mut since) = (0, std::time::Instant::now());
    while std::time::Instant::now() < deadline {
        let now = std::fs::metadata(&journal).map_or(0, |m| m.len());
        if now != len {
            (len, since) = (now, std::time::Instant::now());
        } else if len > 1500 && since.elapsed() > Duration::from_millis(500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(143), "{text}");
    let line = text.trim();
    assert!(
        line.starts_with("spillway: interrupted: ")
            && line.ends_with(" splits done; rerun with --resume to continue"),
        "{text}"
    );
    assert!(!out.exists(), "no output");
    assert!(journal.exists(), "the journal is kept");
    let resumed = case.run("wordcount", &["--out-dir", out.to_str().unwrap()], &["--resume"], "");
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(Output2::read(&out, true), expected);
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert!(success["resumed"]["splits_done"].as_u64().unwrap() > 0, "{success}");
}

/// A changed input, a changed setting, or another process on the same job directory: one
/// line naming it, exit 2, and the job directory stays as it was for the right command.
#[test]
fn a_different_job_is_refused_naming_the_difference() {
    let case = Case::new();
    let out = case.path("refused");
    let out_arg = out.to_str().unwrap();
    let killed = case.run("wordcount", &["--out-dir", out_arg], &["--resume"], "map.commit=2:abort");
    assert!(!killed.status.success());
    for (extra, says) in [
        (&["-r", "5"][..], "the partition counts (-r) differ from the interrupted job's"),
        (
            &["-r", "3", "--split-size", "32K"][..],
            "the splits (--split-size) differ from the interrupted job's",
        ),
    ] {
        let output = case.run("wordcount", &["--out-dir", out_arg], &[&["--resume"][..], extra].concat(), "");
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(text.contains("cannot resume the job in ") && text.contains(says), "{text}");
        assert!(text.contains("(remove that directory to start over)"), "{text}");
    }
    let output = case.run("index", &["--out-dir", out_arg], &["--resume"], "");
    assert!(stderr(&output).contains("the job differ"), "{}", stderr(&output));
    // An input appended to.
    let messy = case.inputs[2].clone();
    let mut bytes = std::fs::read(&messy).unwrap();
    let before = bytes.len();
    bytes.extend_from_slice(b"more words\n");
    std::fs::write(&messy, &bytes).unwrap();
    let output = case.run("wordcount", &["--out-dir", out_arg], &["--resume"], "");
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    let says = format!("input {} changed ({before} bytes then, {} now)", messy.display(), before + 11);
    assert!(text.contains(&says), "{text}");
    assert!(journal(&out).exists());
}

/// A flipped byte in a kept run is found when the job resumes: that run (and any sharing its
/// splits) is dropped and its splits are mapped again. A flipped byte in the journal stops
/// its reading there. Neither gives wrong output.
#[test]
fn damaged_runs_and_journals_are_found_and_never_give_wrong_output() {
    let case = Case::new();
    let expected = clean(&case, "wordcount", true);
    for (target, at) in [("run", 0.5), ("run", 0.99), ("journal", 0.3), ("journal", 0.9)] {
        let out = case.path(&format!("damaged-{target}-{at}"));
        let out_arg = out.to_str().unwrap();
        let killed = case.run("wordcount", &["--out-dir", out_arg], &["--resume"], "map.commit=3:abort");
        assert!(!killed.status.success());
        let dir = job_dir(&out);
        // Every run (some are not journaled yet: those go anyway), or the journal.
        let victims: Vec<PathBuf> = if target == "run" {
            std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "run"))
                .collect()
        } else {
            vec![journal(&out)]
        };
        for victim in victims {
            let mut bytes = std::fs::read(&victim).unwrap();
            let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
            bytes[i] ^= 0x10;
            std::fs::write(&victim, &bytes).unwrap();
        }
        let resumed = case.run("wordcount", &["--out-dir", out_arg], &["--resume"], "");
        assert!(resumed.status.success(), "{target}: {}", stderr(&resumed));
        assert_eq!(Output2::read(&out, true), expected, "{target} damaged at {at}");
        let success: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
        if target == "run" {
            assert!(success["resumed"]["runs_dropped"].as_u64().unwrap() >= 1, "{success}");
        } else {
            assert!(success["resumed"]["journal_stopped"].is_string(), "{success}");
        }
    }
}

/// Without --resume nothing is kept: no job directory, ever.
#[test]
fn without_resume_no_job_directory_is_made() {
    let case = Case::new();
    let out = case.path("plain");
    let killed =
        case.run("wordcount", &["--out-dir", out.to_str().unwrap()], &[], "reduce.partition=1:abort");
    assert!(!killed.status.success());
    assert!(!job_dir(&out).exists());
    let output = case.run("wordcount", &[], &["--resume"], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("a resumable job needs an output file or directory"),
        "{}",
        stderr(&output)
    );
}

/// `sort --resume` goes through the engine (whose runs are journaled): killed in its map,
/// merge and commit, it resumes to the specialized sort's output.
#[test]
fn a_killed_sort_resumes_to_the_sorted_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records");
    let gen_out =
        Command::new(spillway_bin()).args(["gen", "records", "20000"]).arg(&input).output().unwrap();
    assert!(gen_out.status.success(), "{}", stderr(&gen_out));
    let sorted = dir.path().join("sorted");
    let sort = |out: &Path, extra: &[&str], failpoints: &str| {
        Command::new(spillway_bin())
            .args([
                "sort",
                "-q",
                "-t",
                "2",
                "--memory",
                "256K",
                "--max-open-runs",
                "2",
                "--split-size",
                "64K",
            ])
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(&input)
            .env("SPILLWAY_FAILPOINTS", failpoints)
            .output()
            .unwrap()
    };
    assert!(sort(&sorted, &[], "").status.success());
    let expected = std::fs::read(&sorted).unwrap();
    for point in ["map.commit=2", "merge.step=3", "merge.inputs=5", "reduce.partition=1", "commit.output=1"] {
        let out = dir.path().join(format!("out-{point}"));
        let killed = sort(&out, &["--resume"], &format!("{point}:abort"));
        assert_eq!(killed.status.signal(), Some(libc_sigabrt()), "{point}: {}", stderr(&killed));
        assert!(!out.exists(), "{point}");
        let resumed = sort(&out, &["--resume"], "");
        assert!(resumed.status.success(), "{point}: {}", stderr(&resumed));
        assert!(std::fs::read(&out).unwrap() == expected, "{point}: the sorted records");
        assert!(!job_dir(&out).exists(), "{point}");
    }
}

/// Killed in its reduce, a resumable job with part files keeps the part files it completed
/// (journaled, linked into the job directory) and reduces only the others.
#[test]
fn a_job_killed_in_reduce_keeps_the_part_files_it_finished() {
    let case = Case::new();
    let out = case.path("reduce");
    let out_arg = out.to_str().unwrap();
    let killed =
        case.run("wordcount", &["--out-dir", out_arg], &["--resume", "-r", "7"], "reduce.journaled=4:abort");
    assert_eq!(killed.status.signal(), Some(libc_sigabrt()), "{}", stderr(&killed));
    let resumed = case.run("wordcount", &["--out-dir", out_arg], &["--resume", "-r", "7"], "");
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let clean7 = case.path("clean7");
    assert!(
        case.run("wordcount", &["--out-dir", clean7.to_str().unwrap()], &["-r", "7"], "").status.success()
    );
    assert_eq!(Output2::read(&out, true), Output2::read(&clean7, true));
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(success["resumed"]["partitions_kept"], 4, "{success}");
    assert_eq!(success["output_files"], 7, "{success}");
}
