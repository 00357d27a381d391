//! A job killed with SIGKILL leaves its spill directory; the next job in the same spill
//! directory removes it and says so on one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway_tests::{spillway, spillway_bin};

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths
}

fn tree_bytes(dir: &Path) -> u64 {
    entries(dir)
        .iter()
        .map(|p| if p.is_dir() { tree_bytes(p) } else { std::fs::metadata(p).unwrap().len() })
        .sum()
}

/// The killed job is a real one: `spillway wordcount --out FIFO` cannot finish while nobody
/// reads the FIFO (it opens its output only to reduce), so its spill directory, holding the
/// runs of its map phase, exists until it is killed.
/// Starts a word count that writes into `fifo`: with nobody reading it, the job blocks once
/// its spill directory holds a run.
fn wordcount_into_fifo(spill: &Path, fifo: &Path, input: &Path) -> std::process::Child {
    Command::new(spillway_bin())
        .args(["wordcount", "-q", "-t", "1", "--spill-dir"])
        .arg(spill)
        .arg("--out")
        .arg(fifo)
        .arg(input)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn the_next_job_removes_a_killed_jobs_spill_dir_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (input, spill, fifo) = (dir.path().join("in.txt"), dir.path().join("spill"), dir.path().join("fifo"));
    std::fs::create_dir(&spill).unwrap();
    std::fs::write(&input, "to be or not to be\n".repeat(1000)).unwrap();
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());

    let mut killed = wordcount_into_fifo(&spill, &fifo, &input);
    // Wait for its spill directory and a run in it (then the job blocks opening the FIFO).
    let started = Instant::now();
    let left = loop {
        let found = entries(&spill).into_iter().find(|d| !entries(d).is_empty());
        if let Some(dir) = found {
            break dir;
        }
        assert!(killed.try_wait().unwrap().is_none(), "the job ended on its own");
        assert!(started.elapsed() < Duration::from_secs(120), "no spill run appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    killed.kill().unwrap(); // SIGKILL: no clean-up
    killed.wait().unwrap();
    assert_eq!(entries(&spill), std::slice::from_ref(&left), "the killed job's spill directory stays");
    let name = left.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("spillway-") && name.contains(&format!("-{}-", killed.id())), "{name}");
    let bytes = tree_bytes(&left);
    assert!(bytes > 0);

    let out = dir.path().join("counts.tsv");
    let (spill_s, out_s, input_s) = (spill.to_str().unwrap(), out.to_str().unwrap(), input.to_str().unwrap());
    let run = spillway(&["wordcount", "-q", "--spill-dir", spill_s, "--out", out_s, input_s]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        format!("spillway: removed the spill directory of a dead job: {} ({bytes} bytes)\n", left.display())
    );
    assert!(entries(&spill).is_empty(), "{:?}", entries(&spill));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "be\t2000\nnot\t1000\nor\t1000\nto\t2000\n");

    // A live job's directory, and one of the older format, are left alone.
    let old = spill.join(format!("spillway-r0-{}-1a2b", killed.id()));
    std::fs::create_dir(&old).unwrap();
    let mut blocked = wordcount_into_fifo(&spill, &fifo, &input);
    let live = loop {
        if let Some(dir) = entries(&spill).into_iter().find(|d| *d != old && !entries(d).is_empty()) {
            break dir;
        }
        assert!(blocked.try_wait().unwrap().is_none(), "the job ended on its own");
        assert!(started.elapsed() < Duration::from_secs(240), "no spill run appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    let run = spillway(&["wordcount", "-q", "--spill-dir", spill_s, "--out", out_s, input_s]);
    assert!(run.status.success());
    assert_eq!(String::from_utf8_lossy(&run.stderr), "");
    let mut kept = vec![live, old];
    kept.sort();
    assert_eq!(entries(&spill), kept);
    blocked.kill().unwrap();
    blocked.wait().unwrap();
}
