//! Running `spillway` as many ranks under `mpirun` (feature `mpi`), and the cases that must
//! give the bytes of one process at any number of ranks: `tests/many_ranks.rs` runs them at 8
//! ranks, `scripts/scale.sh` at 32 and 128 (all oversubscribed on a small machine).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::{gutenberg_files, messy_text, spillway, spillway_bin};

pub use spillway_bench::runner::mpirun;

/// Runs `spillway args` as `np` ranks.
///
/// # Panics
///
/// When `mpirun` cannot be started.
pub fn run_ranks(np: usize, args: &[&str]) -> Output {
    mpirun()
        .arg("-n")
        .arg(np.to_string())
        .arg(spillway_bin())
        .args(args)
        .output()
        .expect("mpirun not found: run scripts/install-deps.sh (installs OpenMPI) first")
}

/// Fails the test unless the `spillway` binary was built with the `mpi` feature.
///
/// # Panics
///
/// When it was not.
pub fn check_mpi_build() {
    let version = spillway(&["--version"]);
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.contains("(mpi)"), "the spillway binary was built without the mpi feature: {text}");
}

/// Text inputs for multi-rank runs, written into `dir`: three books of the sample corpus and
/// three files of messy text (about 2 MB in all).
pub fn text_inputs(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = gutenberg_files().into_iter().take(3).collect();
    for i in 0..3u64 {
        let path = dir.join(format!("messy{i}.txt"));
        std::fs::write(&path, messy_text(300 + i, 300_000)).unwrap();
        files.push(path);
    }
    files.iter().map(|f| f.display().to_string()).collect()
}

/// Forced spills and multi-pass merges: a 1 MiB budget, F = 2, 64 KiB splits.
pub const SPILLS: [&str; 6] = ["--memory", "1M", "--max-open-runs", "2", "--split-size", "64K"];

/// Where a case writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// `--out-dir`: part files (compared one by one) and `_SUCCESS`.
    Dir,
    /// `--out`: one file, which rank 0 writes.
    File,
}

/// One job that must give the same bytes at any number of ranks as in one process.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it covers, for tables and messages.
    pub name: String,
    /// The job's arguments, without output or inputs.
    args: Vec<String>,
    /// Threads per rank (`-t`).
    threads: usize,
    /// `-r`; `None` for the default, which must be `ranks x threads` (at least 16).
    partitions: Option<u32>,
    out: Out,
    inputs: Vec<String>,
}

/// What one case gave at some number of ranks.
#[derive(Debug)]
pub struct Outcome {
    /// Byte-identical to one process, with the expected partitions.
    pub identical: bool,
    /// Wall time of the multi-rank run (including `mpirun`'s start-up).
    pub wall: Duration,
    /// What differed, or the metrics in brief.
    pub detail: String,
}

/// Every job (`wordcount`, `index`, `grep`, `sort`), with spills and F = 2: more ranks than
/// partitions (`-r 4`), many partitions (`-r 300`, not a multiple of the ranks), one output
/// file, and the default partition count. Inputs are written into `dir`.
pub fn cases(dir: &Path) -> Vec<Case> {
    let text = text_inputs(dir);
    let records = dir.join("records");
    let out = spillway(&["gen", "records", "20000", records.to_str().unwrap()]);
    assert!(out.status.success(), "gen records: {}", String::from_utf8_lossy(&out.stderr));
    let records = vec![records.display().to_string()];
    let case = |name: &str, args: &[&str], partitions: Option<u32>, out: Out, inputs: &Vec<String>| Case {
        name: name.into(),
        args: args.iter().chain(&SPILLS).map(|s| (*s).to_string()).collect(),
        threads: if partitions.is_none() { 3 } else { 1 },
        partitions,
        out,
        inputs: inputs.clone(),
    };
    vec![
        case("wordcount -r 4", &["wordcount"], Some(4), Out::Dir, &text),
        case("index -r 300", &["index"], Some(300), Out::Dir, &text),
        case("grep --out", &["grep", r"Cæsar|^The|whale"], Some(7), Out::File, &text),
        case("sort -r 4", &["sort"], Some(4), Out::Dir, &records),
        case("sort --out", &["sort"], Some(4), Out::File, &records),
        case("wordcount default -r, -t 3", &["wordcount"], None, Out::Dir, &text),
    ]
}

impl Case {
    /// The partition count this case must run with at `np` ranks.
    fn expected_partitions(&self, np: usize) -> u32 {
        self.partitions.unwrap_or_else(|| u32::try_from((np * self.threads).max(16)).unwrap())
    }

    /// Runs the case in one process and as `np` ranks (outputs under `dir`), and compares.
    ///
    /// # Panics
    ///
    /// When the one-process run fails or `mpirun` cannot be started (a multi-rank run that
    /// fails is an [`Outcome`] that is not identical).
    pub fn run(&self, dir: &Path, np: usize) -> Outcome {
        let tag: String =
            self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let flag = match self.out {
            Out::Dir => "--out-dir",
            Out::File => "--out",
        };
        let expected_r = self.expected_partitions(np);
        let single = dir.join(format!("{tag}-np{np}-single"));
        let many = dir.join(format!("{tag}-np{np}"));
        let base: Vec<&str> = self.args.iter().map(String::as_str).chain(["-q"]).collect();

        let r = expected_r.to_string();
        let mut args = base.clone();
        args.extend(["-t", "2", "-r", &r, flag, single.to_str().unwrap()]);
        args.extend(self.inputs.iter().map(String::as_str));
        let out = spillway(&args);
        assert!(out.status.success(), "{}: one process: {}", self.name, String::from_utf8_lossy(&out.stderr));

        let threads = self.threads.to_string();
        let given_r = self.partitions.map(|r| r.to_string());
        let mut args = base;
        args.extend(["-t", &threads, flag, many.to_str().unwrap()]);
        if let Some(r) = &given_r {
            args.extend(["-r", r]);
        }
        args.extend(self.inputs.iter().map(String::as_str));
        let started = Instant::now();
        let out = run_ranks(np, &args);
        let wall = started.elapsed();
        let fail = |detail: String| Outcome { identical: false, wall, detail };
        if !out.status.success() {
            return fail(format!("{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        if self.out == Out::File {
            return match std::fs::read(&many).ok() == std::fs::read(&single).ok() {
                true => Outcome { identical: true, wall, detail: String::new() },
                false => fail("the output file differs".into()),
            };
        }
        for p in 0..expected_r {
            let name = format!("part-{p:05}");
            if std::fs::read(many.join(&name)).ok() != std::fs::read(single.join(&name)).ok() {
                return fail(format!("{name} differs (or is missing)"));
            }
        }
        if many.join(format!("part-{expected_r:05}")).exists() {
            return fail(format!("more than {expected_r} part files"));
        }
        let metrics: serde_json::Value = match std::fs::read(many.join("_SUCCESS")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Err(e) => return fail(format!("_SUCCESS: {e}")),
        };
        let files: Vec<u64> =
            (0..np).map(|r| metrics["per_rank"][r]["output_files"].as_u64().unwrap_or(u64::MAX)).collect();
        let owning = files.iter().filter(|&&f| f > 0).count();
        // Every rank reduces when there are at least as many partitions as ranks (always so
        // by default: each rank then reduces one partition per thread).
        if metrics["ranks"] != np || files.iter().sum::<u64>() != u64::from(expected_r) {
            return fail(format!("metrics: {} ranks, part files per rank {files:?}", metrics["ranks"]));
        }
        if owning != np.min(expected_r as usize) {
            return fail(format!("{owning} of {np} ranks wrote part files: {files:?}"));
        }
        if self.partitions.is_none() && files.iter().any(|&f| f as usize != self.threads) {
            return fail(format!("by default every rank reduces one partition per thread: {files:?}"));
        }
        let detail = format!(
            "R={expected_r}, {} bytes exchanged, {} messages",
            metrics["bytes_sent"], metrics["exchange"]["messages"]
        );
        Outcome { identical: true, wall, detail }
    }
}
