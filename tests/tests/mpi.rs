//! Multi-rank runs under a real `mpirun` (feature `mpi`): outputs byte-identical to the
//! single-process run for 1-4 ranks (oversubscribed), disagreement and failures end the whole
//! job with a clear message and no `_SUCCESS`.
#![cfg(feature = "mpi")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway_tests::ranks::{SPILLS, check_mpi_build, mpirun, run_ranks, text_inputs};
use spillway_tests::{gutenberg_files, messy_text, spillway, spillway_bin};

/// Every job, every rank count, in memory and with forced spills and F = 2: the same bytes as
/// the single-process run, both as one file and as part files.
#[test]
fn ranks_give_the_same_bytes_as_one_process() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    for (job, extra) in [("wordcount", &[][..]), ("index", &[][..]), ("grep", &[r"Cæsar|^The|whale"][..])] {
        for budget in [&["--memory", "1G"][..], &SPILLS] {
            let mut base = vec![job, "-q", "-r", "7"];
            base.extend_from_slice(budget);
            base.extend_from_slice(extra);

            let single_file = dir.path().join(format!("{job}-single.txt"));
            let single_dir = dir.path().join(format!("{job}-single-{}", budget.len()));
            let mut args = base.clone();
            args.extend(["-o", single_file.to_str().unwrap()]);
            args.extend(&files);
            assert!(spillway(&args).status.success());
            let mut args = base.clone();
            args.extend(["--out-dir", single_dir.to_str().unwrap()]);
            args.extend(&files);
            assert!(spillway(&args).status.success());
            let expected = std::fs::read(&single_file).unwrap();

            for np in 1..=4 {
                let file = dir.path().join(format!("{job}-np{np}.txt"));
                let mut args = base.clone();
                args.extend(["-t", "1", "-o", file.to_str().unwrap()]);
                args.extend(&files);
                let out = run_ranks(np, &args);
                assert!(out.status.success(), "np={np} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                assert!(
                    std::fs::read(&file).unwrap() == expected,
                    "{job} np={np} {budget:?}: output differs"
                );

                let out_dir = dir.path().join(format!("{job}-np{np}-dir-{}", budget.len()));
                let mut args = base.clone();
                args.extend(["-t", "1", "--out-dir", out_dir.to_str().unwrap()]);
                args.extend(&files);
                let out = run_ranks(np, &args);
                assert!(out.status.success(), "np={np}: {}", String::from_utf8_lossy(&out.stderr));
                for p in 0..7 {
                    let name = format!("part-{p:05}");
                    assert!(
                        std::fs::read(out_dir.join(&name)).unwrap()
                            == std::fs::read(single_dir.join(&name)).unwrap(),
                        "{job} np={np} {name} differs"
                    );
                }
                let metrics: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap()).unwrap();
                assert_eq!(metrics["ranks"], np);
                // One rank has no per-rank breakdown; several ranks list each.
                assert_eq!(metrics["per_rank"].as_array().map_or(1, Vec::len), np);
                if np > 1 {
                    assert!(metrics["bytes_sent"].as_u64().unwrap() > 0, "sections moved between ranks");
                    assert_eq!(metrics["bytes_sent"], metrics["bytes_received"]);
                }
            }
        }
    }
}

/// Ranks that disagree on anything that changes the output (-r, --ascii, grep's pattern) fail
/// together before any work, with one message naming what differs (not a build mismatch),
/// and write nothing.
#[test]
fn disagreeing_ranks_fail_with_one_message() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let input = gutenberg_files()[0].display().to_string();
    let out_dir = dir.path().join("out");
    let out = out_dir.to_str().unwrap();
    let bin = spillway_bin();
    let cases: [(&[&str], &[&str], &str); 3] = [
        (&["wordcount", "-r", "7"], &["wordcount", "-r", "8"], "the partition counts (-r) differ"),
        (&["wordcount", "--ascii"], &["wordcount"], "the job differ"),
        (&["grep", "whale"], &["grep", "Whale"], "the job differ"),
    ];
    for (rank0, rank1, what) in cases {
        let out = mpirun()
            .args(["-n", "1"])
            .arg(&bin)
            .args(rank0)
            .args(["-q", "--out-dir", out, &input, ":", "-n", "1"])
            .arg(&bin)
            .args(rank1)
            .args(["-q", "--out-dir", out, &input])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{rank0:?} / {rank1:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.matches("spillway: error:").count(), 1, "one message: {err}");
        assert!(err.contains("different settings") && err.contains(what), "{rank0:?} / {rank1:?}: {err}");
        assert!(!err.contains("routes keys differently"), "{err}");
        assert!(!out_dir.exists(), "{rank0:?} / {rank1:?} left an output directory");
    }
}

/// A rank whose own work fails ends the job promptly on every rank (MPI_Abort), naming the
/// rank and the cause; no `_SUCCESS`.
#[test]
fn a_failing_rank_ends_the_job() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let input = gutenberg_files()[0].display().to_string();
    let out_dir = dir.path().join("out");
    let bin = spillway_bin();
    // Rank 1's spill directory cannot be created (it is not part of the agreed
    // configuration: each node may have its own scratch disk).
    let started = Instant::now();
    let out = mpirun()
        .args(["-n", "1"])
        .arg(&bin)
        .args(["wordcount", "-q", "--out-dir", out_dir.to_str().unwrap(), &input, ":", "-n", "1"])
        .arg(&bin)
        .args([
            "wordcount",
            "-q",
            "--spill-dir",
            "/dev/null/spill",
            "--out-dir",
            out_dir.to_str().unwrap(),
            &input,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spillway: error: rank 1:") && err.contains("/dev/null"), "{err}");
    assert!(!out_dir.join("_SUCCESS").exists());
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A rank killed mid-job ends the whole job with a non-zero status, never a hang.
#[test]
fn a_killed_rank_ends_the_job() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..4u64 {
        let path = dir.path().join(format!("big{i}.txt"));
        std::fs::write(&path, messy_text(900 + i, 8 << 20)).unwrap();
        files.push(path.display().to_string());
    }
    let out_dir = dir.path().join("out");
    let mut child = mpirun()
        .args(["-n", "2"])
        .arg(spillway_bin())
        .args([
            "wordcount",
            "-q",
            "-t",
            "1",
            "--memory",
            "1M",
            "--max-open-runs",
            "2",
            "--split-size",
            "256K",
        ])
        .args(["--out-dir", out_dir.to_str().unwrap()])
        .args(&files)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the ranks to start, then kill one of them.
    let started = Instant::now();
    let victim = loop {
        let ps = Command::new("pgrep").args(["-P", &child.id().to_string(), "spillway"]).output().unwrap();
        let pids: Vec<String> =
            String::from_utf8_lossy(&ps.stdout).split_whitespace().map(String::from).collect();
        if pids.len() == 2 {
            break pids[1].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "ranks did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill").args(["-9", &victim]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not end after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a job with a killed rank must not succeed");
    assert!(!out_dir.join("_SUCCESS").exists());
}

/// `spillway sort` across ranks (range-partitioned through the engine): the same bytes as the
/// single-process sort, as one file and as part files whose concatenation is sorted.
#[test]
fn sort_across_ranks_matches_one_process() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records");
    let input_str = input.to_str().unwrap();
    assert!(spillway(&["gen", "records", "20000", input_str]).status.success());
    let single = dir.path().join("single.sorted");
    assert!(spillway(&["sort", "-q", "-o", single.to_str().unwrap(), input_str]).status.success());
    let expected = std::fs::read(&single).unwrap();
    for budget in [&["--memory", "1G"][..], &SPILLS] {
        for np in 1..=4 {
            let file = dir.path().join(format!("np{np}-{}.sorted", budget.len()));
            let mut args = vec!["sort", "-q", "-t", "1", "-r", "6", "-o", file.to_str().unwrap()];
            args.extend_from_slice(budget);
            args.push(input_str);
            let out = run_ranks(np, &args);
            assert!(out.status.success(), "np={np}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(std::fs::read(&file).unwrap() == expected, "sort np={np} {budget:?}: output differs");

            let out_dir = dir.path().join(format!("np{np}-{}-parts", budget.len()));
            let mut args = vec!["sort", "-q", "-t", "1", "-r", "6", "--out-dir", out_dir.to_str().unwrap()];
            args.extend_from_slice(budget);
            args.push(input_str);
            let out = run_ranks(np, &args);
            assert!(out.status.success(), "np={np}: {}", String::from_utf8_lossy(&out.stderr));
            let parts: Vec<u8> =
                (0..6).flat_map(|p| std::fs::read(out_dir.join(format!("part-{p:05}"))).unwrap()).collect();
            assert!(parts == expected, "sort np={np}: concatenated part files differ");
        }
    }
}

/// Sections cut into many small messages, and sections larger than a receive buffer (received
/// in pieces), with each rank choosing its own message and buffer sizes: still the same bytes
/// as one process, and the metrics show the messages and pieces.
#[test]
fn sections_in_many_messages_and_in_pieces() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let bin = spillway_bin();
    let bin = bin.to_str().unwrap();
    // (environment of every rank, or of rank 0 and of the others)
    let settings: [(&[&str], &[&str]); 4] = [
        (&["SPILLWAY_MPI_CHUNK=4K"], &["SPILLWAY_MPI_CHUNK=4K"]),
        (
            &["SPILLWAY_MPI_CHUNK=4K", "SPILLWAY_MPI_BUFFER=64K"],
            &["SPILLWAY_MPI_CHUNK=4K", "SPILLWAY_MPI_BUFFER=64K"],
        ),
        (&["SPILLWAY_MPI_CHUNK=16", "SPILLWAY_MPI_BUFFER=48K"], &["SPILLWAY_MPI_CHUNK=24K"]),
        (&["SPILLWAY_MPI_BUFFER=40000"], &["SPILLWAY_MPI_CHUNK=1M", "SPILLWAY_MPI_BUFFER=100K"]),
    ];
    for (job, budget) in
        [("index", &["--memory", "1G"][..]), ("index", &SPILLS[..]), ("wordcount", &["--memory", "1G"][..])]
    {
        let mut base = vec![job, "-q", "-r", "7", "-t", "1"];
        base.extend_from_slice(budget);
        let single = dir.path().join(format!("{job}-{}-single", budget.len()));
        let mut args = base.clone();
        args.extend(["--out-dir", single.to_str().unwrap()]);
        args.extend(&files);
        assert!(spillway(&args).status.success());
        for (s, (first, others)) in settings.iter().enumerate() {
            for np in [2, 3] {
                let out_dir = dir.path().join(format!("{job}-{}-{s}-np{np}", budget.len()));
                let mut args = base.clone();
                args.extend(["--out-dir", out_dir.to_str().unwrap()]);
                args.extend(&files);
                // MPMD: rank 0 with `first`, the others with `others`, through env(1).
                let mut cmd = mpirun();
                cmd.args(["-n", "1", "env"]).args(*first).arg(bin).args(&args);
                cmd.args([":", "-n", &(np - 1).to_string(), "env"]).args(*others).arg(bin).args(&args);
                let out = cmd.output().unwrap();
                assert!(
                    out.status.success(),
                    "{job} {budget:?} {first:?}/{others:?} np={np}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                for p in 0..7 {
                    let name = format!("part-{p:05}");
                    assert!(
                        std::fs::read(out_dir.join(&name)).unwrap()
                            == std::fs::read(single.join(&name)).unwrap(),
                        "{job} {budget:?} {first:?}/{others:?} np={np}: {name} differs"
                    );
                }
                let metrics: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap()).unwrap();
                assert_eq!(metrics["bytes_sent"], metrics["bytes_received"]);
                let sent = metrics["bytes_sent"].as_u64().unwrap();
                assert!(sent > 0);
                let messages = metrics["exchange"]["messages"].as_u64().unwrap();
                let chunk = |r: usize| metrics["per_rank"][r]["exchange"]["chunk_bytes"].as_u64().unwrap();
                // Every message is at most its receiver's chunk.
                let largest_chunk = (0..np).map(chunk).max().unwrap();
                assert!(messages >= sent.div_ceil(largest_chunk), "{messages} messages for {sent} bytes");
                if s < 2 {
                    assert_eq!(chunk(0), 4096);
                    assert!(messages >= sent / 4096, "sections went in 4K messages");
                }
                if s == 2 {
                    assert_eq!((chunk(0), chunk(1)), (16, 24 << 10), "each rank receives with its own size");
                }
                // (In memory each rank sends one run's large sections; with spills and F = 2 the
                // runs that wait at the end of the map phase may all be small.)
                if s == 1 && job == "index" && budget[1] == "1G" {
                    let pieced = metrics["exchange"]["pieced"].as_u64().unwrap();
                    assert!(
                        pieced > 0,
                        "some sections are larger than a 32K buffer ({budget:?} np={np}): {metrics}"
                    );
                }
            }
        }
    }
}

/// Word count with spills and F = 2 on small splits, as the retry and resume tests run it.
const SPILLING_WORDCOUNT: [&str; 10] =
    ["wordcount", "-q", "-r", "5", "--memory", "1M", "--max-open-runs", "2", "--split-size", "64K"];

/// A directory with the text inputs, and their part files from one process running
/// [`SPILLING_WORDCOUNT`].
fn spilling_wordcount() -> (tempfile::TempDir, Vec<String>, Vec<Vec<u8>>) {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let single = dir.path().join("single");
    let mut args = SPILLING_WORDCOUNT.to_vec();
    args.extend(["--out-dir", single.to_str().unwrap()]);
    args.extend(files.iter().map(String::as_str));
    assert!(spillway(&args).status.success());
    let expected = spillway_tests::read_parts(&single);
    (dir, files, expected)
}

/// A split or a partition whose job code fails on one rank is retried there (failpoints stand
/// in for the job's code): the output is the single-process output, with spills and F = 2,
/// and a panic in the job's code does not abort the MPI job. Always failing ends every rank
/// with the error naming the split and the attempts.
#[test]
fn a_failed_split_or_partition_is_retried_on_its_rank() {
    let (dir, files, expected) = spilling_wordcount();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let base = SPILLING_WORDCOUNT;

    let out = dir.path().join("retried");
    let mut args = base.to_vec();
    args.extend(["--out-dir", out.to_str().unwrap()]);
    args.extend(&files);
    let output = mpirun()
        .env("SPILLWAY_FAILPOINTS", "map.split@1=2:panic,map.split@2=1:error,reduce.partition@0=1:panic")
        .args(["-n", "3"])
        .arg(spillway_bin())
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(spillway_tests::read_parts(&out), expected, "retried on three ranks");
    let success: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    // (Rank 1 maps at least two splits; rank 2, started last, may find none left to map.)
    let map = success["retries"]["map"].as_u64().unwrap();
    assert!((1..=2).contains(&map), "{success}");
    assert_eq!(success["retries"]["reduce"], 1, "{success}");
    assert_eq!(stderr.matches("; trying again").count() as u64, map + 1, "{stderr}");

    let never = dir.path().join("never");
    let mut args = base.to_vec();
    args.extend(["--out-dir", never.to_str().unwrap()]);
    args.extend(&files);
    let started = Instant::now();
    let output = mpirun()
        .env("SPILLWAY_FAILPOINTS", "map.split@1=1+:error")
        .args(["-n", "3"])
        .arg(spillway_bin())
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1: job failed on ")
            && stderr.contains(" after 3 attempts: failpoint map.split"),
        "{stderr}"
    );
    assert!(!never.exists());
    assert!(started.elapsed() < Duration::from_secs(120), "the job ends, it does not hang");
}

/// `--resume` under mpirun: one rank aborts at a failpoint (the launcher ends the job), and
/// the job resumed with another number of ranks (2 -> 3, 3 -> 2) gives the single-process
/// output, at ten or more points over map, commits, exchange, merges, reduce and commit.
#[test]
fn a_job_killed_on_one_rank_resumes_on_another_number_of_ranks() {
    let (dir, files, expected) = spilling_wordcount();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let base = SPILLING_WORDCOUNT;
    let points = [
        ("map.split@1=5", 2, 3),
        ("map.commit@0=1", 3, 2),
        ("map.commit@1=2", 2, 3),
        ("exchange.receive@1=1", 3, 2),
        ("exchange.receive@0=2", 2, 3),
        ("merge.step@0=1", 3, 2),
        ("merge.inputs@1=1", 2, 3),
        ("reduce.partition@1=1", 3, 2),
        ("commit.output@0=1", 2, 3),
        ("commit.finish@0=1", 3, 2),
        ("map.commit@0=2", 3, 2),
        ("reduce.partition@0=1", 2, 3),
    ];
    let (mut killed, mut reused, mut missed) = (0, 0, Vec::new());
    for (point, first, then) in points {
        let out = dir.path().join(format!("out-{point}"));
        let mut args = base.to_vec();
        args.extend(["--resume", "--out-dir", out.to_str().unwrap()]);
        args.extend(&files);
        let run = |np: usize, failpoints: &str| {
            mpirun()
                .env("SPILLWAY_FAILPOINTS", failpoints)
                .args(["-n", &np.to_string()])
                .arg(spillway_bin())
                .args(&args)
                .output()
                .unwrap()
        };
        let first_run = run(first, &format!("{point}:abort"));
        if first_run.status.success() {
            // Never reached: the job finished.
            assert_eq!(spillway_tests::read_parts(&out), expected, "{point}: finished");
            missed.push(point);
            continue;
        }
        killed += 1;
        assert_eq!(out.exists(), point.starts_with("commit.finish"), "{point}: no output before the commit");
        let resumed = run(then, "");
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        assert!(resumed.status.success(), "{point}: resumed on {then} ranks: {stderr}");
        assert_eq!(spillway_tests::read_parts(&out), expected, "{point}: resumed on {then} ranks");
        let job_dir = dir.path().join(format!(".out-{point}.spillway-job"));
        assert!(!job_dir.exists(), "{point}: the job directory is removed");
        let success: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
        if success["resumed"]["splits_done"].as_u64().unwrap_or(0) > 0 {
            reused += 1;
        }
    }
    // (Which rank maps how many splits varies: a point or two may be missed.)
    assert!(killed >= 10, "only {killed} of {} points were reached; not {missed:?}", points.len());
    assert!(reused >= 7, "only {reused} of the resumed jobs kept mapped splits");
}

/// `--status` under mpirun: rank 0's file holds every rank's row, each with its own heartbeat
/// and phase (rank 1 held in its map phase by a failpoint that stalls); `ctl --stop` stops
/// every rank, the status says `interrupted`, and `--resume` then finishes the job with the
/// bytes of one process.
#[test]
fn status_of_every_rank_and_stop_under_mpirun() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let base = ["wordcount", "-q", "-t", "1", "-r", "3", "--split-size", "64K"];
    let single = dir.path().join("single");
    let mut args = base.to_vec();
    args.extend(["--out-dir", single.to_str().unwrap()]);
    args.extend(&files);
    assert!(spillway(&args).status.success());
    let (status, out) = (dir.path().join("status.json"), dir.path().join("out"));
    let mut args = base.to_vec();
    args.extend(["--resume", "--status", status.to_str().unwrap(), "--out-dir", out.to_str().unwrap()]);
    args.extend(&files);
    let mut child = mpirun()
        .env("SPILLWAY_FAILPOINTS", "map.split@1=3:stall")
        .args(["-n", "2"])
        .arg(spillway_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = || -> Option<serde_json::Value> { serde_json::from_slice(&std::fs::read(&status).ok()?).ok() };
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        if let Some(s) = read()
            && s["per_rank"].as_array().is_some_and(|rows| {
                rows.len() == 2
                    && rows.iter().all(|r| r["state"] == "running" && r["heartbeat_ms"].as_u64() > Some(0))
            })
            && s["per_rank"][1]["splits_done"].as_u64() >= Some(2)
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no status of both ranks: {:?}", read());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(held["ranks"], 2);
    assert_eq!(held["per_rank"][1]["rank"], 1);
    assert_eq!(held["per_rank"][1]["phase"], "map");
    assert_ne!(held["per_rank"][0]["pid"], held["per_rank"][1]["pid"]);
    let shown = spillway(&["status", status.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(shown.status.code(), Some(0), "{text}");
    assert!(
        text.contains("rank  host") && text.lines().filter(|l| l.starts_with("1 ")).count() == 1,
        "{text}"
    );
    assert!(spillway(&["ctl", status.to_str().unwrap(), "--stop"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    let ended = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!ended.success());
    assert_eq!(read().unwrap()["state"], "interrupted");
    assert!(!out.exists());
    let resumed = mpirun().args(["-n", "2"]).arg(spillway_bin()).args(&args).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(spillway_tests::read_parts(&out), spillway_tests::read_parts(&single));
    assert_eq!(read().unwrap()["state"], "succeeded");
}

/// `ctl --threads` under mpirun, to every rank and to one with `--rank`, up beyond -t and
/// down, in the map phase and in reduce (each held open by a `hold` failpoint on every rank
/// until the changes are acknowledged in every rank's row): the bytes of one process.
#[test]
fn changing_threads_of_every_rank_and_of_one_under_mpirun() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.txt");
    std::fs::write(&input, messy_text(78, 8 << 20)).unwrap();
    let base = ["wordcount", "-q", "-t", "1", "-r", "64", "--split-size", "4K", "--memory", "1M"];
    let single = dir.path().join("single");
    let mut args = base.to_vec();
    args.extend(["--out-dir", single.to_str().unwrap(), input.to_str().unwrap()]);
    assert!(spillway(&args).status.success());
    let hold = dir.path().join("hold");
    std::fs::create_dir(&hold).unwrap();
    for held in ["map.split", "reduce.partition"] {
        std::fs::write(hold.join(held), b"").unwrap();
    }
    let (status, out) = (dir.path().join("status.json"), dir.path().join("out"));
    let mut args = base.to_vec();
    args.extend(["--status", status.to_str().unwrap(), "--out-dir", out.to_str().unwrap()]);
    args.push(input.to_str().unwrap());
    // Of the 2048 splits at least one rank maps 600 and holds the map phase there; each rank
    // reduces 32 partitions and holds reduce at its 20th.
    let failpoints = "map.split=1+:slow,map.split=600:hold,reduce.partition=1+:slow,reduce.partition=20:hold";
    let mut child = mpirun()
        .env("SPILLWAY_FAILPOINTS", failpoints)
        .env("SPILLWAY_FAILPOINTS_HOLD", &hold)
        .args(["-n", "2"])
        .arg(spillway_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = || -> Option<serde_json::Value> { serde_json::from_slice(&std::fs::read(&status).ok()?).ok() };
    let wait = |what: &str, ready: &dyn Fn(&[serde_json::Value]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(s) = read()
                && let Some(rows) = s["per_rank"].as_array()
                && rows.len() == 2
                && ready(rows)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {:?}", read());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let ctl = |extra: &[&str]| {
        let mut args = vec!["ctl", status.to_str().unwrap()];
        args.extend(extra);
        assert!(spillway(&args).status.success(), "ctl {extra:?}");
    };
    let wanted = |rows: &[serde_json::Value], w: [u64; 2]| {
        rows.iter().zip(w).all(|(r, w)| r["threads_wanted"].as_u64() == Some(w))
    };
    let both_in = |rows: &[serde_json::Value], phase: &str| {
        rows.iter().any(|r| r["phase"] == phase) && rows.iter().all(|r| r["state"] == "running")
    };
    wait("both ranks running, one in the map phase", &|rows| both_in(rows, "map"));
    for (extra, w) in [
        (&["--threads", "3"][..], [3, 3]),
        (&["--threads", "1", "--rank", "1"][..], [3, 1]),
        (&["--threads", "2", "--rank", "0"][..], [2, 1]),
    ] {
        ctl(extra);
        wait(&format!("map: ctl {extra:?} acknowledged"), &|rows| wanted(rows, w));
    }
    std::fs::remove_file(hold.join("map.split")).unwrap();
    wait("both ranks in reduce", &|rows| rows.iter().all(|r| r["phase"] == "reduce"));
    for (extra, w) in [(&["--threads", "4"][..], [4, 4]), (&["--threads", "1", "--rank", "0"][..], [1, 4])] {
        ctl(extra);
        wait(&format!("reduce: ctl {extra:?} acknowledged"), &|rows| wanted(rows, w));
    }
    std::fs::remove_file(hold.join("reduce.partition")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let ended = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the job did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(ended.success(), "{stderr}");
    assert_eq!(spillway_tests::read_parts(&out), spillway_tests::read_parts(&single));
    assert_eq!(read().unwrap()["state"], "succeeded");
}

/// Runs `spillway args` as `np` ranks with the environment settings `env` (`NAME=value`).
fn run_ranks_with(np: usize, env: &[&str], args: &[&str]) -> std::process::Output {
    let mut cmd = mpirun();
    cmd.args(["-n", &np.to_string(), "env"]).args(env).arg(spillway_bin()).args(args);
    cmd.output().unwrap()
}

/// The part files and the metrics of `args` run as `np` ranks (with `env`) into `out_dir`,
/// after checking that the run succeeded.
fn parts_and_metrics(
    np: usize,
    env: &[&str],
    args: &[&str],
    out_dir: &std::path::Path,
) -> (Vec<Vec<u8>>, serde_json::Value) {
    let mut args = args.to_vec();
    args.extend(["--out-dir", out_dir.to_str().unwrap()]);
    let out = run_ranks_with(np, env, &args);
    assert!(out.status.success(), "np={np} {env:?} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let metrics = serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap()).unwrap();
    (spillway_tests::read_parts(out_dir), metrics)
}

/// One received run per source rank: with spills, two threads and F = 3, a rank that holds
/// two runs at the exchange merges them into one before sending (its receivers would hold
/// about 2 P > F runs), so every rank receives exactly one run from each rank that sent it
/// sections (the metrics' `runs_received` against `sources`); the bytes are one process's,
/// at 2, 3 and 8 ranks, with F = 3 and with F = 2.
#[test]
fn every_rank_receives_one_run_per_source_rank() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let mut premerged = 0;
    for f in ["3", "2"] {
        let mut base =
            vec!["wordcount", "-q", "-r", "9", "--memory", "1M", "--max-open-runs", f, "--split-size", "64K"];
        base.extend(files.iter().map(String::as_str));
        let single = dir.path().join(format!("single-{f}"));
        let mut args = base.clone();
        args.extend(["--out-dir", single.to_str().unwrap()]);
        assert!(spillway(&args).status.success());
        let expected = spillway_tests::read_parts(&single);
        base.extend(["-t", "2"]);
        for np in [2, 3, 8] {
            let out_dir = dir.path().join(format!("f{f}-np{np}"));
            let (parts, metrics) = parts_and_metrics(np, &[], &base, &out_dir);
            assert!(parts == expected, "F={f} np={np}: output differs");
            for r in 0..np {
                let exchange = &metrics["per_rank"][r]["exchange"];
                let runs = exchange["runs_received"].as_u64().unwrap();
                let sources = exchange["sources"].as_u64().unwrap();
                assert!(sources > 0, "F={f} np={np}: rank {r} received nothing: {metrics}");
                assert_eq!(runs, sources, "F={f} np={np}: rank {r}'s received runs: {exchange}");
                premerged += exchange["premerged"].as_u64().unwrap();
            }
        }
    }
    assert!(premerged > 0, "no rank had two runs to merge before sending: the test needs more spills");
}

/// Zero copy for large sections: sections of at least the receiver's direct threshold go in
/// messages of their own, straight from the mapped runs. With every section direct nothing is
/// packed (copied); with none direct and small messages some are; either way the bytes are one
/// process's, each rank receiving with its own threshold.
#[test]
fn sections_above_the_direct_threshold_are_never_copied() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    for budget in [&["--memory", "1G"][..], &SPILLS] {
        let mut base = vec!["index", "-q", "-r", "6", "-t", "1"];
        base.extend_from_slice(budget);
        base.extend(files.iter().map(String::as_str));
        let single = dir.path().join(format!("single-{}", budget.len()));
        let mut args = base.clone();
        args.extend(["--out-dir", single.to_str().unwrap()]);
        assert!(spillway(&args).status.success());
        let expected = spillway_tests::read_parts(&single);
        for np in [2, 3] {
            let cases: [(&[&str], bool); 3] = [
                (&["SPILLWAY_MPI_CHUNK=4K", "SPILLWAY_MPI_DIRECT=1"], false),
                (&["SPILLWAY_MPI_CHUNK=4K", "SPILLWAY_MPI_DIRECT=1G"], true),
                (&["SPILLWAY_MPI_CHUNK=16K", "SPILLWAY_MPI_DIRECT=2K", "SPILLWAY_MPI_BUFFER=40K"], false),
            ];
            for (i, (env, copies)) in cases.iter().enumerate() {
                let out_dir = dir.path().join(format!("np{np}-{i}-{}", budget.len()));
                let (parts, metrics) = parts_and_metrics(np, env, &base, &out_dir);
                assert!(parts == expected, "np={np} {env:?} {budget:?}: output differs");
                let packed = metrics["exchange"]["packed"].as_u64().unwrap();
                let sent = metrics["bytes_sent"].as_u64().unwrap();
                let messages = metrics["exchange"]["messages"].as_u64().unwrap();
                assert!(sent > 0 && messages >= sent / (16 << 10), "{env:?}: {metrics}");
                if *copies {
                    assert!(packed > 0 && packed <= sent, "np={np} {env:?}: packed {packed} of {sent}");
                } else if env.contains(&"SPILLWAY_MPI_DIRECT=1") {
                    assert_eq!(packed, 0, "np={np} {env:?}: every section is direct");
                } else {
                    assert!(packed < sent, "np={np} {env:?}: packed {packed} of {sent}");
                }
            }
        }
    }
}
