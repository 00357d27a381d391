//! Live status (`--status FILE`, `spillway status`) and a clean stop (`spillway ctl --stop`),
//! through the `spillway` binary: jobs held at a known split by a failpoint that stalls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spillway_tests::{gutenberg_files, spillway, spillway_bin};

/// Small splits and two threads: the job is held by `map.split=5:stall` with splits left.
const SETTINGS: [&str; 7] = ["-q", "-t", "2", "--split-size", "16K", "-r", "3"];

fn inputs() -> Vec<PathBuf> {
    gutenberg_files().into_iter().take(3).collect()
}

fn start(job: &[&str], failpoints: &str) -> Child {
    Command::new(spillway_bin())
        .arg("wordcount")
        .args(SETTINGS)
        .args(job)
        .args(inputs())
        .env("SPILLWAY_FAILPOINTS", failpoints)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Waits (against hangs only) until the status file parses and `ready` holds for it.
fn wait_for(path: &Path, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = read_json(path)
            && ready(&status)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status {} never got there: {:?}",
            path.display(),
            read_json(path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_child(child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn status_cmd(args: &[&str]) -> Output {
    spillway(&[&["status"][..], args].concat())
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The status of a running job parses, counts splits and says `running`; it ends
/// `succeeded`, and `spillway status` exits 0 both times.
#[test]
fn the_status_of_a_job_that_runs_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out) = (dir.path().join("status.json"), dir.path().join("out.tsv"));
    // Held at its 5th split for good: a stop ends it (its other splits are done by then).
    let child =
        start(&["--status", status.to_str().unwrap(), "-o", out.to_str().unwrap()], "map.split=5:stall");
    let running = wait_for(&status, |s| s["state"] == "running" && s["splits_done"].as_u64() > Some(4));
    assert_eq!(running["schema"], 1);
    assert_eq!(running["job"], "wordcount");
    assert_eq!(running["phase"], "map");
    assert_eq!(running["threads"], 2);
    assert!(running["splits_total"].as_u64().unwrap() > running["splits_done"].as_u64().unwrap() - 1);
    assert_eq!(running["per_rank"][0]["rank"], 0);
    assert!(running["splits_committed"].is_null(), "not resumable: {running}");
    // It is rewritten while it runs (the heartbeat moves).
    let first = running["updated_ms"].as_u64().unwrap();
    wait_for(&status, |s| s["updated_ms"].as_u64().unwrap() > first);
    let shown = status_cmd(&[status.to_str().unwrap()]);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown));
    assert!(text(&shown).contains("state      running, phase map"), "{}", text(&shown));
    let stopped = spillway(&["ctl", status.to_str().unwrap(), "--stop"]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let _ = wait_child(child);

    let done = wait_child(start(&["--status", status.to_str().unwrap(), "-o", out.to_str().unwrap()], ""));
    assert!(done.status.success(), "{}", text(&done));
    let last = read_json(&status).unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["phase"], "done");
    assert_eq!(last["splits_done"], last["splits_total"]);
    assert!(last["records"].as_u64().unwrap() > 0);
    let json = status_cmd(&["--json", status.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(0));
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["state"], "succeeded");
}

/// A job that fails says `failed` with the message; `spillway status` exits 1.
#[test]
fn a_failed_job_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out) = (dir.path().join("status.json"), dir.path().join("out.tsv"));
    let child = start(
        &["--status", status.to_str().unwrap(), "-o", out.to_str().unwrap(), "--max-attempts", "1"],
        "map.split=3:error",
    );
    let output = wait_child(child);
    assert_eq!(output.status.code(), Some(1));
    let last = read_json(&status).unwrap();
    assert_eq!(last["state"], "failed", "{last}");
    assert!(last["message"].as_str().unwrap().contains("failpoint map.split"), "{last}");
    let shown = status_cmd(&[status.to_str().unwrap()]);
    assert_eq!(shown.status.code(), Some(1));
    assert!(text(&shown).contains("failed"), "{}", text(&shown));
}

/// A job killed with SIGKILL leaves `running` behind: `spillway status` reports it as not
/// responding (exit 4) once its status is older than --stale.
#[test]
fn a_killed_job_is_not_responding() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out) = (dir.path().join("status.json"), dir.path().join("out.tsv"));
    let mut child =
        start(&["--status", status.to_str().unwrap(), "-o", out.to_str().unwrap()], "map.split=5:stall");
    wait_for(&status, |s| s["splits_done"].as_u64() > Some(4));
    let alive = status_cmd(&["--stale", "3", status.to_str().unwrap()]);
    assert_eq!(alive.status.code(), Some(0), "{}", text(&alive));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let dead = status_cmd(&["--stale", "1", status.to_str().unwrap()]);
    assert_eq!(dead.status.code(), Some(4), "{}", text(&dead));
    assert!(text(&dead).contains("NOT RESPONDING"), "{}", text(&dead));
    assert_eq!(status_cmd(&["--stale", "1", "--json", status.to_str().unwrap()]).status.code(), Some(4));
    // A missing status file is bad input.
    assert_eq!(status_cmd(&[dir.path().join("none").to_str().unwrap()]).status.code(), Some(3));
}

/// `ctl --stop` without --resume: exit 143 as on SIGTERM, no output, no spill directory,
/// status `interrupted`; a `ctl` for a job that is over is refused.
#[test]
fn stop_removes_what_the_job_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, spill) = (dir.path().join("st"), dir.path().join("out"), dir.path().join("spill"));
    std::fs::create_dir(&spill).unwrap();
    let child = start(
        &[
            "--status",
            status.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--spill-dir",
            spill.to_str().unwrap(),
        ],
        "map.split=5:stall",
    );
    wait_for(&status, |s| s["splits_done"].as_u64() > Some(4));
    assert!(spillway(&["ctl", status.to_str().unwrap(), "--stop"]).status.success());
    let output = wait_child(child);
    assert_eq!(output.status.code(), Some(143), "{}", text(&output));
    assert!(text(&output).contains("interrupted by spillway ctl --stop"), "{}", text(&output));
    let last = read_json(&status).unwrap();
    assert_eq!(last["state"], "interrupted", "{last}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spill directory left");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("spillway-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let again = spillway(&["ctl", status.to_str().unwrap(), "--stop"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(status_cmd(&[status.to_str().unwrap()]).status.code(), Some(1));
}

/// `ctl --stop` of a --resume job keeps its job directory; the next --resume finishes it with
/// the bytes of a clean run.
#[test]
fn stop_then_resume_gives_the_clean_output() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.tsv");
    let run_clean = wait_child(start(&["-o", clean.to_str().unwrap()], ""));
    assert!(run_clean.status.success(), "{}", text(&run_clean));
    let (status, out) = (dir.path().join("st"), dir.path().join("out.tsv"));
    let args = ["--status", status.to_str().unwrap(), "-o", out.to_str().unwrap(), "--resume"];
    let child = start(&args, "map.split=5:stall");
    let held = wait_for(&status, |s| s["splits_committed"].as_u64() > Some(2));
    assert!(held["splits_committed"].as_u64().unwrap() <= held["splits_done"].as_u64().unwrap());
    assert!(spillway(&["ctl", status.to_str().unwrap(), "--stop"]).status.success());
    let output = wait_child(child);
    assert_eq!(output.status.code(), Some(143), "{}", text(&output));
    assert!(text(&output).contains("rerun with --resume to continue"), "{}", text(&output));
    assert_eq!(read_json(&status).unwrap()["state"], "interrupted");
    assert!(!out.exists());
    assert!(dir.path().join(".out.tsv.spillway-job").exists(), "the job directory is kept");
    let resumed = wait_child(start(&args, ""));
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&clean).unwrap());
    let last = read_json(&status).unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["splits_committed"], last["splits_total"], "{last}");
}

/// The phases of a job, in order, as the status names them.
const PHASES: [&str; 3] = ["map", "merge", "reduce"];

/// Whether the status `s` is in `phase` or a later one (or the job is over).
fn reached(s: &serde_json::Value, phase: &str) -> bool {
    let at = |p: &str| PHASES.iter().position(|x| *x == p);
    s["state"] != "running" || s["phase"] == "done" || at(s["phase"].as_str().unwrap_or("")) >= at(phase)
}

/// `ctl --threads` changes the workers up (beyond -t) and down several times in every phase
/// while the job runs: the map phase and reduce are held open by `hold` failpoints until the
/// changes are acknowledged there (merges are slowed, as long as they last); every change
/// is acknowledged in the status (`threads_wanted`), and the output is the bytes of a run
/// without changes.
#[test]
fn changing_threads_in_every_phase_keeps_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.txt");
    std::fs::write(&input, spillway_tests::messy_text(77, 8 << 20)).unwrap();
    let settings = [
        "wordcount",
        "-q",
        "-t",
        "2",
        "--split-size",
        "4K",
        "--memory",
        "1M",
        "-r",
        "512",
        "--max-open-runs",
        "2",
    ];
    let hold = dir.path().join("hold");
    std::fs::create_dir(&hold).unwrap();
    let run = |extra: &[&str], failpoints: &str| {
        Command::new(spillway_bin())
            .args(settings)
            .args(extra)
            .arg(&input)
            .env("SPILLWAY_FAILPOINTS", failpoints)
            .env("SPILLWAY_FAILPOINTS_HOLD", &hold)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let clean = dir.path().join("clean");
    assert!(wait_child(run(&["--out-dir", clean.to_str().unwrap()], "")).status.success());
    let (status, out) = (dir.path().join("st"), dir.path().join("out"));
    for held in ["map.split", "reduce.partition"] {
        std::fs::write(hold.join(held), b"").unwrap();
    }
    // Every split, merge step and partition takes 20 ms more; the 1500th of the 2048 splits
    // and the 400th of the 512 partitions wait until the test lets them go.
    let failpoints = "map.split=1+:slow,map.split=1500:hold,merge.step=1+:slow,\
                      reduce.partition=1+:slow,reduce.partition=400:hold";
    let child = run(&["--status", status.to_str().unwrap(), "--out-dir", out.to_str().unwrap()], failpoints);
    let mut applied = Vec::new();
    for phase in PHASES {
        let seen = wait_for(&status, |s| reached(s, phase));
        for wanted in [4u64, 1, 3, 2] {
            if seen["phase"] != phase || seen["state"] != "running" {
                break; // (the merges may be over before the test sees them)
            }
            assert!(
                spillway(&["ctl", status.to_str().unwrap(), "--threads", &wanted.to_string()])
                    .status
                    .success()
            );
            let seen = wait_for(&status, |s| {
                s["phase"] != phase || s["per_rank"][0]["threads_wanted"].as_u64() == Some(wanted)
            });
            if seen["phase"] == phase {
                assert_eq!(seen["per_rank"][0]["threads_max"].as_u64().map(|m| m >= 4), Some(true), "{seen}");
                // In effect once as many work, unless the phase ran out of work meanwhile.
                let row = |s: &serde_json::Value, f: &str| s["per_rank"][0][f].as_u64().unwrap_or(0);
                let out_of_work = |s: &serde_json::Value| match phase {
                    "map" => row(s, "splits_done") + 1 >= s["splits_total"].as_u64().unwrap(),
                    "merge" => row(s, "merges") + 1 >= row(s, "merges_planned"),
                    _ => row(s, "partitions_done") + 1 >= 512,
                };
                let active = wait_for(&status, |s| {
                    s["phase"] != phase || row(s, "threads_active") == wanted || out_of_work(s)
                });
                if active["phase"] == phase && row(&active, "threads_active") == wanted {
                    applied.push((phase, wanted));
                }
            } else {
                assert_ne!(phase, "map", "the map phase is held open: {seen}");
                assert_ne!(phase, "reduce", "reduce is held open: {seen}");
            }
        }
        match phase {
            "map" => std::fs::remove_file(hold.join("map.split")).unwrap(),
            "reduce" => std::fs::remove_file(hold.join("reduce.partition")).unwrap(),
            _ => {}
        }
    }
    let output = wait_child(child);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(spillway_tests::read_parts(&out), spillway_tests::read_parts(&clean));
    let last = read_json(&status).unwrap();
    assert_eq!(last["state"], "succeeded", "{last}");
    // In the map phase the workers are held by nothing but the one split: every change
    // takes effect there, including 4 workers on a job started with 2.
    assert!(applied.contains(&("map", 4)) && applied.contains(&("map", 1)), "{applied:?}");
    eprintln!("changes seen in effect: {applied:?}");
}
