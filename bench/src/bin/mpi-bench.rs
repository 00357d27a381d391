//! MPI benchmark: `mpirun -n 2` with 1 thread per rank beside `mpirun -n 1` with 2 threads,
//! alternated in one run on the same inputs, for word count (little to exchange: a combiner
//! folds the words map-side) and for the sort through the engine (`sort --generic`: no
//! combiner, about half of the input moves between the two ranks). Phase times, the parts of
//! the exchange and its transfer rate come from each job's metrics (medians over rounds).
//!
//! ```sh
//! cargo build --release -p spillway-tools --features mpi
//! cargo run --release -p spillway-bench --bin mpi-bench -- --size 1G --runs 3
//! ```
//!
//! The exchange rate is honest: bytes received by a rank divided by its transfer time, which
//! leaves out the wait for the slowest rank's map phase, finding the sections, the descriptor
//! all-to-all and the rank's own sections (see `ExchangeTimes` in the engine). "GB/s" shows
//! the slowest rank; "aggregate GB/s" is all bytes moved over the longest transfer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use spillway_bench::corpus::{CorpusSpec, DEFAULT_SEED, ensure_corpus};
use spillway_bench::runner::median;
use spillway_bench::{Table, format_size, parse_size, run_measured, size_label};

/// Compare rank and thread layouts of `spillway` jobs under mpirun.
#[derive(Debug, Parser)]
struct Args {
    /// Word-count corpus size (K/M/G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Corpus files.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Where the corpus lives [default: bench-data/wordcount-SIZE].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Sort input size (gensort ASCII records of 100 bytes; K/M/G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    sort_size: u64,
    /// Where the sort input lives [default: bench-data/mpi-sort-SIZE].
    #[arg(long)]
    sort_data: Option<PathBuf>,
    /// Jobs to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["wordcount", "sort"])]
    jobs: Vec<JobKind>,
    /// The spillway binary, built with `--features mpi` [default: next to this binary].
    #[arg(long)]
    spillway: Option<PathBuf>,
    /// A second spillway binary: each layout then runs with both binaries, alternated (A/B).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Rounds (each runs every layout of every job).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Extra environment for the ranks (NAME=VALUE, repeatable), e.g. SPILLWAY_MPI_CHUNK=64M.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    envs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JobKind {
    Wordcount,
    Sort,
}

struct Layout {
    name: &'static str,
    ranks: usize,
    threads: usize,
}

const LAYOUTS: [Layout; 2] = [
    Layout { name: "-n 1 x 2 threads", ranks: 1, threads: 2 },
    Layout { name: "-n 2 x 1 thread", ranks: 2, threads: 1 },
];

fn check_binary(spillway: &Path) -> Result<()> {
    if !spillway.is_file() {
        bail!(
            "no spillway binary at {}: cargo build --release -p spillway-tools --features mpi (or pass --spillway PATH)",
            spillway.display()
        );
    }
    let version = Command::new(spillway).arg("--version").output().context("running spillway --version")?;
    if !String::from_utf8_lossy(&version.stdout).contains("(mpi)") {
        bail!(
            "{} was built without the mpi feature: cargo build --release -p spillway-tools --features mpi",
            spillway.display()
        );
    }
    Ok(())
}

/// gensort ASCII records of about `size` bytes, generated once.
fn ensure_records(spillway: &Path, dir: &Path, size: u64) -> Result<PathBuf> {
    let records = size / 100;
    let path = dir.join(format!("gensort-a-{records}.dat"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == records * 100) {
        println!("sort input: {} ({records} records, reused)", path.display());
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let status = Command::new(spillway)
        .args(["gen", "records", "-a", &records.to_string()])
        .arg(&path)
        .status()
        .context("running spillway gen records")?;
    if !status.success() {
        bail!("spillway gen records failed");
    }
    println!("sort input: {} ({records} records, generated)", path.display());
    Ok(path)
}

/// One measured run: wall time and the job's metrics (rank 0's totals with `per_rank`).
struct Sample {
    wall: Duration,
    metrics: Value,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn med(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The slowest rank's transfer rate and the aggregate rate of one run, in GB/s.
fn rates(m: &Value) -> (f64, f64) {
    let Some(ranks) = m["per_rank"].as_array() else { return (0.0, 0.0) };
    let mut slowest = f64::INFINITY;
    let (mut bytes, mut longest) = (0.0, 0.0f64);
    for r in ranks {
        let received = f(&r["bytes_received"]);
        let transfer = f(&r["exchange"]["transfer"]);
        if transfer > 0.0 && received > 0.0 {
            slowest = slowest.min(received / transfer / 1e9);
        }
        bytes += received;
        longest = longest.max(transfer);
    }
    if slowest.is_infinite() {
        slowest = 0.0;
    }
    (slowest, if longest > 0.0 { bytes / longest / 1e9 } else { 0.0 })
}

fn main() -> std::process::ExitCode {
    spillway_bench::run_main("mpi-bench", run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    let spillway = args.spillway.clone().unwrap_or_else(|| exe.with_file_name("spillway"));
    check_binary(&spillway)?;
    let mut binaries = vec![("A", spillway.clone())];
    if let Some(b) = &args.compare {
        check_binary(b)?;
        binaries.push(("B", b.clone()));
        println!("A = {}, B = {}", spillway.display(), b.display());
    }
    let mut envs = Vec::new();
    for e in &args.envs {
        let Some((k, v)) = e.split_once('=') else { bail!("--env {e:?}: expected NAME=VALUE") };
        envs.push((k.to_owned(), v.to_owned()));
    }

    let mut inputs: Vec<(JobKind, Vec<PathBuf>, u64)> = Vec::new();
    for &job in &args.jobs {
        match job {
            JobKind::Wordcount => {
                let data = args.data.clone().unwrap_or_else(|| {
                    PathBuf::from(format!("bench-data/wordcount-{}", size_label(args.size)))
                });
                let spec = CorpusSpec::new(args.size, args.files, DEFAULT_SEED);
                let (files, generated) = ensure_corpus(&data, &spec).context("generating the corpus")?;
                println!(
                    "word count corpus: {} in {} files ({})",
                    format_size(args.size),
                    files.len(),
                    if generated { "generated" } else { "reused" }
                );
                inputs.push((job, files, args.size));
            }
            JobKind::Sort => {
                let dir = args.sort_data.clone().unwrap_or_else(|| {
                    PathBuf::from(format!("bench-data/mpi-sort-{}", size_label(args.sort_size)))
                });
                let path = ensure_records(&spillway, &dir, args.sort_size)?;
                let bytes = std::fs::metadata(&path)?.len();
                inputs.push((job, vec![path], bytes));
            }
        }
    }
    for (_, files, _) in &inputs {
        for f in files {
            std::fs::read(f)?; // warm the page cache
        }
    }
    let scratch = PathBuf::from("bench-data/mpi-bench-out");
    std::fs::create_dir_all(&scratch)?;

    // samples[job][binary][layout]
    let mut samples: Vec<Vec<Vec<Vec<Sample>>>> = inputs
        .iter()
        .map(|_| binaries.iter().map(|_| LAYOUTS.iter().map(|_| Vec::new()).collect()).collect())
        .collect();
    for round in 0..args.runs {
        for (j, (job, files, _)) in inputs.iter().enumerate() {
            for (l, layout) in LAYOUTS.iter().enumerate() {
                for (b, (_, bin)) in binaries.iter().enumerate() {
                    let out = scratch.join(format!("out-{j}-{l}-{b}-{round}"));
                    let metrics = scratch.join(format!("metrics-{j}-{l}-{b}-{round}.json"));
                    let _ = std::fs::remove_dir_all(&out);
                    let mut cmd = spillway_bench::runner::mpirun();
                    cmd.envs(envs.iter().map(|(k, v)| (k, v)))
                        .args(["-n", &layout.ranks.to_string()])
                        .arg(bin);
                    match job {
                        JobKind::Wordcount => cmd.args(["wordcount", "--ascii"]),
                        // The generic path on one rank too: the same engine job on both sides.
                        JobKind::Sort => cmd.args(["sort", "--generic"]),
                    };
                    cmd.args(["-q", "-t", &layout.threads.to_string()])
                        .arg("--out-dir")
                        .arg(&out)
                        .arg("--metrics")
                        .arg(&metrics)
                        .args(files);
                    let m = run_measured(&mut cmd)?;
                    if !m.status.success() {
                        bail!("{job:?} {} failed: {}", layout.name, m.status);
                    }
                    let metrics = serde_json::from_slice(&std::fs::read(&metrics)?)?;
                    samples[j][b][l].push(Sample { wall: m.wall, metrics });
                    std::fs::remove_dir_all(&out)?;
                }
            }
        }
    }

    let mut table = Table::new([
        "job",
        "layout",
        "median wall (s)",
        "MB/s",
        "vs -n 1",
        "map (s)",
        "exchange (s)",
        "wait (s)",
        "transfer (s)",
        "write (s)",
        "merge+reduce (s)",
        "bytes exchanged",
        "GB/s (slowest rank)",
        "aggregate GB/s",
    ]);
    for (j, (job, _, bytes)) in inputs.iter().enumerate() {
        for (b, (label, _)) in binaries.iter().enumerate() {
            let base = median(&samples[j][b][0].iter().map(|s| s.wall).collect::<Vec<_>>()).as_secs_f64();
            for (l, layout) in LAYOUTS.iter().enumerate() {
                let runs = &samples[j][b][l];
                let wall = median(&runs.iter().map(|s| s.wall).collect::<Vec<_>>()).as_secs_f64();
                let sec = |k: &str| med(runs.iter().map(|s| f(&s.metrics["seconds"][k])));
                let ex = |k: &str| med(runs.iter().map(|s| f(&s.metrics["exchange"][k])));
                let sent = med(runs.iter().map(|s| f(&s.metrics["bytes_sent"])));
                let (slowest, aggregate): (Vec<f64>, Vec<f64>) =
                    runs.iter().map(|s| rates(&s.metrics)).unzip();
                let layout_name = if binaries.len() > 1 {
                    format!("{label}: {}", layout.name)
                } else {
                    layout.name.to_string()
                };
                let moved = layout.ranks > 1;
                table.row([
                    format!("{job:?}").to_lowercase(),
                    layout_name,
                    format!("{wall:.3}"),
                    format!("{:.0}", *bytes as f64 / wall / 1e6),
                    format!("{:.2}x", base / wall),
                    format!("{:.3}", sec("map")),
                    format!("{:.3}", sec("exchange")),
                    if moved { format!("{:.3}", ex("wait")) } else { "-".into() },
                    if moved { format!("{:.3}", ex("transfer")) } else { "-".into() },
                    if moved { format!("{:.3}", ex("write")) } else { "-".into() },
                    format!("{:.3}", sec("merge") + sec("reduce")),
                    format_size(sent as u64),
                    if moved { format!("{:.2}", med(slowest)) } else { "-".into() },
                    if moved { format!("{:.2}", med(aggregate)) } else { "-".into() },
                ]);
            }
        }
    }
    table.print();
    println!(
        "(medians over {} rounds; per-phase times are maxima over ranks; \"vs -n 1\" = wall of -n 1 x 2 \
         threads / this wall, higher is faster)",
        args.runs
    );
    Ok(())
}
