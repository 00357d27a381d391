//! `--report FILE.html` through the `spillway` binary: the page of a succeeded, a failed and
//! an interrupted job, a report that cannot be written, and the page loaded in a real browser
//! engine (headless Chromium, which `scripts/install-deps.sh` installs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway_tests::browser::{check_rendered, chromium, rendered_dom, report_json};
use spillway_tests::{gutenberg_files, spillway, spillway_bin};

/// Small splits, spills and F = 2: every kind of span but the exchange shows.
const SETTINGS: [&str; 11] =
    ["-q", "-t", "2", "-r", "3", "--memory", "1M", "--max-open-runs", "2", "--split-size", "64K"];

fn inputs() -> Vec<String> {
    gutenberg_files().iter().take(3).map(|p| p.display().to_string()).collect()
}

/// Runs a word count with `extra` arguments; returns its output.
fn wordcount(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["wordcount"];
    args.extend(SETTINGS);
    args.extend(extra);
    let inputs = inputs();
    args.extend(inputs.iter().map(String::as_str));
    spillway(&args)
}

#[test]
fn a_succeeded_job_reports_its_timeline_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let out_dir = dir.path().join("out");
    let out = wordcount(&["--out-dir", out_dir.to_str().unwrap(), "--report", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out_dir.join("_SUCCESS").exists());
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap()).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing to fetch");
    let report = report_json(&html);
    assert_eq!(report["state"], "succeeded");
    assert_eq!(report["job"], "wordcount");
    assert_eq!(report["ranks"].as_array().unwrap().len(), 1);
    let rank = &report["ranks"][0];
    let spans: Vec<&serde_json::Value> =
        rank["threads"].as_array().unwrap().iter().flat_map(|t| t["spans"].as_array().unwrap()).collect();
    let count = |kind: &str| spans.iter().filter(|s| s["kind"] == kind).count() as u64;
    assert_eq!(count("map"), metrics["splits"].as_u64().unwrap());
    assert_eq!(count("spill"), metrics["spills"].as_u64().unwrap());
    assert_eq!(count("merge"), metrics["merge_steps"].as_u64().unwrap());
    assert!(count("merge") > 0 && count("reduce") >= 3 && count("commit") == 1);
    assert!(!rank["samples"].as_array().unwrap().is_empty());
    // No temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let Some(browser) = chromium() else {
        println!(
            "NOTE: chromium not found: the page was not loaded in a browser (scripts/install-deps.sh installs it)"
        );
        return;
    };
    let dom = rendered_dom(&browser, &page, &dir.path().join("profile"));
    check_rendered(&dom, &["timeline", "throughput", "counts", "memory", "matrix"]);
    // One process: a 1 x 1 matrix.
    assert_eq!(dom.matches(r#"<rect class="cell""#).count(), 1);
}

#[test]
fn a_failed_job_reports_its_state_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("failed.html");
    let out_dir = dir.path().join("out");
    let mut args = vec!["wordcount"];
    args.extend(SETTINGS);
    args.extend([
        "--max-attempts",
        "1",
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--report",
        page.to_str().unwrap(),
    ]);
    let inputs = inputs();
    args.extend(inputs.iter().map(String::as_str));
    let out = Command::new(spillway_bin())
        .args(&args)
        .env("SPILLWAY_FAILPOINTS", "map.split=3:error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out_dir.join("_SUCCESS").exists());
    let report = report_json(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(report["state"], "failed");
    assert!(report["message"].as_str().unwrap().contains("failpoint"), "{}", report["message"]);
    assert!(report["metrics"].is_null());
}

#[test]
fn an_interrupted_job_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("interrupted.html");
    let out_dir = dir.path().join("out");
    let status = dir.path().join("status.json");
    let mut child = Command::new(spillway_bin())
        .arg("wordcount")
        .args(SETTINGS)
        .args(["--out-dir", out_dir.to_str().unwrap(), "--report", page.to_str().unwrap()])
        .args(["--status", status.to_str().unwrap()])
        .args(inputs())
        .env("SPILLWAY_FAILPOINTS", "map.split=5:stall")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held at its sixth split (the status says so; the deadline is against hangs only).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = std::fs::read(&status)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["splits_done"].as_u64() > Some(4));
        if held {
            break;
        }
        assert!(Instant::now() < deadline, "the job never reached its sixth split");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the job did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(child.wait().unwrap().code(), Some(128 + 15));
    let report = report_json(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(report["state"], "interrupted");
    assert!(report["message"].as_str().unwrap().contains("SIGTERM"));
    assert!(!out_dir.exists() || !out_dir.join("_SUCCESS").exists());
}

#[test]
fn a_report_that_cannot_be_written_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("no-such-dir").join("report.html");
    let out_dir = dir.path().join("out");
    let out = wordcount(&["--out-dir", out_dir.to_str().unwrap(), "--report", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--report") && stderr.contains("no-such-dir"), "{stderr}");
    assert!(!out_dir.exists(), "refused before any work");
    // A directory is not a report file.
    let out = wordcount(&["--out-dir", out_dir.to_str().unwrap(), "--report", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn the_sort_reports_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records");
    let page = dir.path().join("sort.html");
    let out = spillway(&["gen", "records", "20000", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sorted = dir.path().join("sorted");
    for memory in ["1G", "256K"] {
        let out = spillway(&[
            "sort",
            "-q",
            "--memory",
            memory,
            "-o",
            sorted.to_str().unwrap(),
            "--report",
            page.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = report_json(&std::fs::read_to_string(&page).unwrap());
        assert_eq!(report["state"], "succeeded");
        assert_eq!(report["job"], "sort");
        assert_eq!(report["metrics"]["map_records"], 20000);
        let kinds: Vec<String> = report["ranks"][0]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["spans"].as_array().unwrap())
            .map(|s| s["kind"].as_str().unwrap().to_owned())
            .collect();
        let expected: &[&str] =
            if memory == "1G" { &["map", "commit"] } else { &["spill", "merge", "reduce", "commit"] };
        for kind in expected {
            assert!(kinds.iter().any(|k| k == kind), "sort --memory {memory}: no {kind} in {kinds:?}");
        }
    }
}
