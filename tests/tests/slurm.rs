//! Under a real SLURM (feature `mpi`; `scripts/slurm-up.sh` starts a one-node cluster, and
//! `scripts/test.sh` calls it first): `srun --mpi=pmix -n 4 spillway ...` and the README's
//! `sbatch` script (`scripts/spillway.sbatch`, `mpirun` inside) give the bytes of one process,
//! and `scancel --signal=TERM --batch` ends a running job cleanly: no output, no temporary
//! files left; with `--resume`, a second `sbatch` finishes a job `scancel` stopped.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use spillway_tests::ranks::{SPILLS, check_mpi_build, text_inputs};
use spillway_tests::{messy_text, names, spillway, spillway_bin};

/// The README's batch script.
fn sbatch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/spillway.sbatch")
}

/// A SLURM client command, failing the test with the way out when SLURM is not up.
fn slurm(program: &str) -> Command {
    let up = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    let state = up.as_ref().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert!(
        up.as_ref().is_ok_and(|o| o.status.success()) && state.as_ref().is_ok_and(|s| !s.is_empty()),
        "no SLURM here (sinfo: {state:?}): run scripts/slurm-up.sh first (as root; it installs and starts one)"
    );
    let mut cmd = Command::new(program);
    // Jobs inherit this environment (sbatch's --export=ALL): spillway on PATH, and mpirun's
    // consent to run as root.
    let bin_dir = spillway_bin().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    cmd.env("PATH", path).env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    cmd
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `scontrol show job` says about `job`: (JobState, ExitCode).
fn job_state(job: &str) -> (String, String) {
    let out = Command::new("scontrol").args(["show", "job", job]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("?")
            .to_string()
    };
    (field("JobState"), field("ExitCode"))
}

/// `srun --mpi=pmix -n 4` (the ranks get their world from SLURM's PMIx server) and the `sbatch`
/// script with `mpirun` inside: the same part files as one process, and one output file.
#[test]
fn srun_and_sbatch_give_the_same_bytes_as_one_process() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let single = dir.path().join("single");
    let mut args = vec!["index", "-q", "-r", "6"];
    args.extend(SPILLS);
    let mut one = args.clone();
    one.extend(["--out-dir", single.to_str().unwrap()]);
    one.extend(files.iter().map(String::as_str));
    ok("one process", &spillway(&one));
    let expected: Vec<Vec<u8>> =
        (0..6).map(|p| std::fs::read(single.join(format!("part-{p:05}"))).unwrap()).collect();

    let via_srun = dir.path().join("srun");
    let out = slurm("srun")
        .args(["--mpi=pmix", "-n", "4", "--time=10"])
        .arg(spillway_bin())
        .args(&args)
        .args(["-t", "1", "--out-dir", via_srun.to_str().unwrap()])
        .args(&files)
        .output()
        .unwrap();
    ok("srun --mpi=pmix -n 4", &out);
    let via_sbatch = dir.path().join("sbatch");
    let log = dir.path().join("sbatch.log");
    let out = slurm("sbatch")
        .args(["--parsable", "--wait", "--time=10", "-o", log.to_str().unwrap(), "-D"])
        .arg(dir.path())
        .arg(sbatch_script())
        .args(&args)
        .args(["-t", "1", "--out-dir", via_sbatch.to_str().unwrap()])
        .args(&files)
        .output()
        .unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    ok(&format!("sbatch (job log: {log_text})"), &out);
    for (how, out_dir) in [("srun", &via_srun), ("sbatch", &via_sbatch)] {
        for (p, bytes) in expected.iter().enumerate() {
            let part = std::fs::read(out_dir.join(format!("part-{p:05}"))).unwrap();
            assert!(&part == bytes, "{how}: part {p} differs from one process");
        }
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap()).unwrap();
        assert_eq!(metrics["ranks"], 4, "{how}: four ranks");
        assert!(metrics["bytes_sent"].as_u64().unwrap() > 0, "{how}: sections moved between ranks");
    }

    // One output file, through srun.
    let file = dir.path().join("one.txt");
    let mut one = vec!["wordcount", "-q", "-o", file.to_str().unwrap()];
    one.extend(files.iter().map(String::as_str));
    ok("one process", &spillway(&one));
    let srun_file = dir.path().join("srun.txt");
    let out = slurm("srun")
        .args(["--mpi=pmix", "-n", "4", "--time=10"])
        .arg(spillway_bin())
        .args(["wordcount", "-q", "-t", "1", "-o", srun_file.to_str().unwrap()])
        .args(&files)
        .output()
        .unwrap();
    ok("srun wordcount -o", &out);
    assert!(
        std::fs::read(&srun_file).unwrap() == std::fs::read(&file).unwrap(),
        "srun: the output file differs"
    );
}

/// The README's batch script is `scripts/spillway.sbatch`, word for word.
#[test]
fn the_readme_shows_the_sbatch_script() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let script = std::fs::read_to_string(sbatch_script()).unwrap();
    assert!(
        readme.contains(&format!("```bash\n{script}```\n")),
        "README.md must show scripts/spillway.sbatch as it is"
    );
}

/// `scancel --signal=TERM --batch` signals the batch script only; the script passes it on
/// through mpirun to the ranks, which end with no output and nothing left in the spill
/// directory. The job writes into a FIFO nobody reads, so it is certain to be running (rank 0
/// blocks opening its output once the map phase is over) when the signal comes.
#[test]
fn scancel_term_ends_a_running_batch_job_cleanly() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, messy_text(77, 2 << 20)).unwrap();
    let (spill, out_dir) = (dir.path().join("spill"), dir.path().join("out"));
    std::fs::create_dir(&spill).unwrap();
    std::fs::create_dir(&out_dir).unwrap();
    let fifo = out_dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let log = dir.path().join("job.log");
    let out = slurm("sbatch")
        .args(["--parsable", "--time=10", "-o", log.to_str().unwrap(), "-D"])
        .arg(dir.path())
        .arg(sbatch_script())
        .args(["wordcount", "-q", "-t", "1"])
        .args(SPILLS)
        .arg("--spill-dir")
        .arg(&spill)
        .arg("--out")
        .arg(&fifo)
        .arg(&input)
        .output()
        .unwrap();
    ok("sbatch", &out);
    let job = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap().to_string();

    // Running, with runs in a spill directory.
    let started = Instant::now();
    loop {
        if names(&spill).iter().any(|d| !names(&spill.join(d)).is_empty()) {
            break;
        }
        let (state, _) = job_state(&job);
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            state == "PENDING" || state == "RUNNING",
            "job {job} is {state} before the signal: {log_text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "job {job} did not get going ({state}): {log_text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("scancel").args(["--signal=TERM", "--batch", &job]).output().unwrap();
    ok("scancel --signal=TERM --batch", &out);

    let signalled = Instant::now();
    let (state, exit) = loop {
        let (state, exit) = job_state(&job);
        if state != "RUNNING" && state != "COMPLETING" && state != "PENDING" {
            break (state, exit);
        }
        assert!(signalled.elapsed() < Duration::from_secs(300), "job {job} did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    // The ranks exit with 143; mpirun reports a failed job (its own status, 1).
    assert_eq!(state, "FAILED", "job {job} ended {state} ({exit}): {log_text}");
    assert_ne!(exit, "0:0", "{log_text}");
    assert!(!log_text.contains("internal error"), "{log_text}");
    assert_eq!(names(&spill), Vec::<String>::new(), "spill directories left: {log_text}");
    assert_eq!(names(&out_dir), ["fifo"], "only the FIFO stays where the output would go");
}

/// Waits until `job` has left SLURM's queue; returns (JobState, ExitCode).
fn wait_for_end(job: &str) -> (String, String) {
    let started = Instant::now();
    loop {
        let (state, exit) = job_state(job);
        if state != "RUNNING" && state != "COMPLETING" && state != "PENDING" {
            return (state, exit);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "job {job} did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The walltime case: a `--resume` job held in its map phase (a failpoint stalls one worker)
/// gets `scancel --signal=TERM --batch`, ends keeping its job directory, and a second `sbatch`
/// of the same command finishes it with the output of one process, keeping what was done.
#[test]
fn a_resumable_batch_job_stopped_by_scancel_is_finished_by_the_next_sbatch() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let base = ["wordcount", "-q", "-t", "1", "-r", "4", "--memory", "1M", "--split-size", "64K"];
    let single = dir.path().join("single");
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--out-dir", single.to_str().unwrap()]);
    args.extend(files.iter().map(String::as_str));
    ok("one process", &spillway(&args));
    let out = dir.path().join("out");
    let submit = |failpoints: &str, log: &Path| {
        let out = slurm("sbatch")
            .env("SPILLWAY_FAILPOINTS", failpoints)
            .args(["--parsable", "--time=10", "-o", log.to_str().unwrap(), "-D"])
            .arg(dir.path())
            .arg(sbatch_script())
            .args(base)
            .args(["--resume", "--out-dir", out.to_str().unwrap()])
            .args(&files)
            .output()
            .unwrap();
        ok("sbatch", &out);
        String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap().to_string()
    };
    let log = dir.path().join("first.log");
    let job = submit("map.split@0=6:stall", &log);
    // Held: the journals have commits and stop growing.
    let job_dir = dir.path().join(".out.spillway-job");
    let journals = || -> u64 {
        names(&job_dir)
            .iter()
            .filter(|n| n.starts_with("journal-"))
            .map(|n| std::fs::metadata(job_dir.join(n)).map_or(0, |m| m.len()))
            .sum()
    };
    let started = Instant::now();
    let (mut len, mut since) = (0, Instant::now());
    loop {
        let now = if job_dir.exists() { journals() } else { 0 };
        if now != len {
            (len, since) = (now, Instant::now());
        } else if len > 4000 && since.elapsed() > Duration::from_secs(1) {
            break;
        }
        let (state, _) = job_state(&job);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(state == "PENDING" || state == "RUNNING", "job {job} is {state}: {text}");
        assert!(started.elapsed() < Duration::from_secs(300), "job {job} did not get going: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok("scancel", &Command::new("scancel").args(["--signal=TERM", "--batch", &job]).output().unwrap());
    let (state, _) = wait_for_end(&job);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(state, "FAILED", "{text}");
    assert!(!out.exists(), "no output yet: {text}");
    assert!(journals() > 0, "the journals are kept: {text}");

    let log = dir.path().join("second.log");
    let job = submit("", &log);
    let (state, exit) = wait_for_end(&job);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!((state.as_str(), exit.as_str()), ("COMPLETED", "0:0"), "{text}");
    assert_eq!(spillway_tests::read_parts(&out), spillway_tests::read_parts(&single));
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert!(success["resumed"]["splits_done"].as_u64().unwrap() > 0, "{success}");
    assert!(!job_dir.exists(), "the job directory is removed");
}
