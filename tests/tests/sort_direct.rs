//! `spillway sort --io direct`: spill runs written and merged with `O_DIRECT` through io_uring
//! give the same bytes as the buffered path and the reference (valsort's checksum too), in
//! one and several merge passes, at input sizes that are and are not multiples of 4 KiB;
//! without O_DIRECT (`SPILLWAY_NO_ODIRECT=1`, as on a filesystem that refuses it) and without
//! io_uring (`SPILLWAY_NO_URING=1`) the same; a full spill filesystem fails with the run
//! file named. Spill directories are on the test's temporary directory (a disk here; the
//! direct path is asserted where the filesystem takes O_DIRECT).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use spillway_engine::shuffle::io::direct::uring_available;
use spillway_tests::{read_parts, spillway_bin};
use spillway_tools::records::{gensort, valsort};

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(spillway_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running spillway")
}

fn run_ok(args: &[&str], env: &[(&str, &str)]) {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "spillway {args:?} {env:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The records of `files` sorted as byte strings.
fn reference(files: &[&Path]) -> Vec<u8> {
    let data: Vec<u8> = files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect();
    let mut records: Vec<&[u8]> = data.chunks_exact(100).collect();
    records.sort_unstable();
    records.concat()
}

/// Whether the filesystem of `dir` takes O_DIRECT.
fn takes_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join(".probe");
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(probe);
    ok
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Direct and buffered runs give the reference's bytes in every mode: out of core in one
/// pass, with F = 2 (intermediate merges, also written direct), one thread, part files; for
/// an input whose size is a multiple of 4 KiB (4,096 records) and inputs whose sizes are not.
#[test]
fn direct_runs_give_the_same_bytes_as_buffered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ascii = dir.path().join("ascii.dat");
    let binary = dir.path().join("binary.dat");
    let aligned = dir.path().join("aligned.dat");
    gensort::generate_file(&ascii, 0, 100_003, true, 2).unwrap();
    gensort::generate_file(&binary, 7, 60_000, false, 2).unwrap();
    gensort::generate_file(&aligned, 3, 4096 * 5, false, 2).unwrap();
    assert_eq!(std::fs::metadata(&aligned).unwrap().len() % 4096, 0);
    assert_ne!(std::fs::metadata(&ascii).unwrap().len() % 4096, 0);
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let direct_expected = uring_available() && takes_direct(&spill);
    let m = dir.path().join("metrics.json");

    for inputs in [vec![aligned.as_path()], vec![&ascii, &binary, &aligned]] {
        let expected = reference(&inputs);
        let names: Vec<&str> = inputs.iter().map(|p| s(p)).collect();
        let modes: &[&[&str]] = &[
            &["--threads", "2", "--memory", "1M"],
            &["--threads", "2", "--memory", "1M", "--max-open-runs", "2", "--partitions", "5"],
            &["--threads", "1", "--memory", "512K", "--max-open-runs", "3"],
        ];
        for (i, mode) in modes.iter().enumerate() {
            for dir_output in [false, true] {
                let mut outputs = Vec::new();
                for io in ["std", "direct"] {
                    let out = dir.path().join(format!("out-{}-{i}-{dir_output}-{io}", inputs.len()));
                    let mut args =
                        vec!["sort", "-q", "--io", io, "--spill-dir", s(&spill), "--metrics", s(&m)];
                    args.extend_from_slice(mode);
                    args.extend_from_slice(&[if dir_output { "--out-dir" } else { "--out" }, s(&out)]);
                    args.extend_from_slice(&names);
                    run_ok(&args, &[]);
                    let metrics = metrics(&m);
                    assert_eq!(metrics["in_memory"].as_bool(), Some(false), "{metrics}");
                    if mode.contains(&"2") && mode.contains(&"--max-open-runs") {
                        assert!(metrics["passes"].as_f64().unwrap() > 2.0, "{metrics}");
                    }
                    let backend = metrics["io_backend"].as_str().unwrap().to_owned();
                    match io {
                        "direct" if direct_expected => assert_eq!(backend, "direct"),
                        _ => assert_eq!(backend, "pwrite", "io {io}"),
                    }
                    let got =
                        if dir_output { read_parts(&out).concat() } else { std::fs::read(&out).unwrap() };
                    assert!(got == expected, "spillway {args:?}: output differs from the reference");
                    if !dir_output {
                        let report = valsort::validate_file(&out, 2).unwrap();
                        assert!(report.is_sorted(), "{report}");
                    }
                    outputs.push(got);
                }
                assert!(outputs[0] == outputs[1]);
            }
        }
    }
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0, "spill directory left behind");
}

/// The spec's 1,000,000-record ASCII file through direct runs with F = 2: valsort's checksum
/// 7a19cff467438 (`tests/tests/sort.rs` checks the same through the buffered path).
#[test]
fn million_records_direct_to_the_known_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gensort-a-1000000");
    gensort::generate_file(&input, 0, 1_000_000, true, 2).unwrap();
    let out = dir.path().join("sorted");
    let m = dir.path().join("metrics.json");
    let args = ["sort", "-q", "--io", "direct", "--memory", "24M", "--max-open-runs", "2"];
    let rest = ["--spill-dir", s(dir.path()), "--metrics", s(&m), "--out", s(&out), s(&input)];
    run_ok(&[&args[..], &rest[..]].concat(), &[]);
    let metrics = metrics(&m);
    assert!(metrics["passes"].as_f64().unwrap() > 2.0, "{metrics}");
    let report = valsort::validate_file(&out, 2).unwrap();
    assert!(report.is_sorted(), "{report}");
    assert_eq!(format!("{:x}", report.checksum), "7a19cff467438");
    assert_eq!((report.records, report.duplicates), (1_000_000, 0));
}

/// Where O_DIRECT is refused (forced here with SPILLWAY_NO_ODIRECT=1: the same answer as
/// tmpfs before Linux 6.6 gives) the runs go through the page cache and the metrics say so;
/// without io_uring (SPILLWAY_NO_URING=1) `--io direct` is the buffered path. Same bytes.
#[test]
fn fallbacks_give_the_same_bytes_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.dat");
    gensort::generate_file(&input, 11, 50_001, false, 2).unwrap();
    let expected = reference(&[&input]);
    let m = dir.path().join("metrics.json");
    let out = dir.path().join("out");
    let args = ["sort", "--io", "direct", "--memory", "1M", "--spill-dir", s(dir.path())];
    let rest = ["--metrics", s(&m), "--out", s(&out), s(&input)];
    let args = [&args[..], &rest[..]].concat();

    let refused = run(&args, &[("SPILLWAY_NO_ODIRECT", "1")]);
    assert!(refused.status.success(), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(std::fs::read(&out).unwrap() == expected);
    if uring_available() {
        let backend = metrics(&m)["io_backend"].as_str().unwrap().to_owned();
        assert!(backend.contains("O_DIRECT refused") && backend.contains("page cache"), "{backend}");
        // The summary on standard error shows it.
        assert!(String::from_utf8_lossy(&refused.stderr).contains("O_DIRECT refused"));
    }

    std::fs::remove_file(&out).unwrap();
    run_ok(&args, &[("SPILLWAY_NO_URING", "1")]);
    assert!(std::fs::read(&out).unwrap() == expected);
    assert_eq!(metrics(&m)["io_backend"].as_str(), Some("pwrite"));
}

/// A 1 MiB tmpfs mounted on a new directory (root only), unmounted when dropped.
struct TinyFs(tempfile::TempDir);

impl TinyFs {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status();
        mounted.is_ok_and(|st| st.success()).then_some(TinyFs(dir))
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        if !Command::new("umount").arg(self.0.path()).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

/// A spill filesystem that fills up fails the direct sort with one line naming the run file
/// and the cause, and leaves no output and no spill directory.
#[test]
fn a_full_spill_filesystem_names_the_run() {
    let Some(fs) = TinyFs::mount() else {
        eprintln!("cannot mount a tmpfs here (not root): skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.dat");
    gensort::generate_file(&input, 5, 40_000, false, 2).unwrap();
    let out = dir.path().join("out");
    let out_run = run(
        &[
            "sort",
            "--io",
            "direct",
            "--memory",
            "1M",
            "--spill-dir",
            s(fs.0.path()),
            "--out",
            s(&out),
            s(&input),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out_run.stderr);
    assert!(!out_run.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No space left") && err.contains(".rec"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(fs.0.path()).unwrap().count(), 0, "spill directory left behind");
}
