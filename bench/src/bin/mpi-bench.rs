//! MPI word count benchmark: `mpirun -n 2` with 1 thread per rank beside `mpirun -n 1` with
//! 2 threads, alternated in one run on the same corpus, with time per phase and bytes
//! exchanged from each job's metrics.
//!
//! ```sh
//! cargo build --release -p spillway-tools --features mpi
//! cargo run --release -p spillway-bench --bin mpi-bench -- --size 1G --runs 3
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use spillway_bench::corpus::{CorpusSpec, DEFAULT_SEED, ensure_corpus};
use spillway_bench::runner::median;
use spillway_bench::{Table, parse_size, run_measured};

/// Compare rank and thread layouts of `spillway wordcount` under mpirun.
#[derive(Debug, Parser)]
struct Args {
    /// Corpus size (K/M/G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Corpus files.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Where the corpus lives [default: bench-data/wordcount-SIZE].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The spillway binary, built with `--features mpi` [default: next to this binary].
    #[arg(long)]
    spillway: Option<PathBuf>,
    /// Rounds (each runs both layouts).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

struct Layout {
    name: &'static str,
    ranks: usize,
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    let spillway = args.spillway.clone().unwrap_or_else(|| exe.with_file_name("spillway"));
    let version = Command::new(&spillway).arg("--version").output().context("running spillway --version")?;
    if !String::from_utf8_lossy(&version.stdout).contains("(mpi)") {
        bail!(
            "{} was built without the mpi feature: cargo build --release -p spillway-tools --features mpi",
            spillway.display()
        );
    }
    let data =
        args.data.clone().unwrap_or_else(|| PathBuf::from(format!("bench-data/wordcount-{}", args.size)));
    let spec = CorpusSpec::new(args.size, args.files, DEFAULT_SEED);
    let (files, generated) = ensure_corpus(&data, &spec).context("generating the corpus")?;
    println!(
        "corpus: {} bytes in {} files ({})",
        args.size,
        files.len(),
        if generated { "generated" } else { "reused" }
    );
    for f in &files {
        std::fs::read(f)?; // warm the page cache
    }
    let layouts = [
        Layout { name: "mpirun -n 1, 2 threads", ranks: 1, threads: 2 },
        Layout { name: "mpirun -n 2, 1 thread each", ranks: 2, threads: 1 },
    ];
    let scratch = data.join("mpi-bench-out");
    std::fs::create_dir_all(&scratch)?;
    let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); layouts.len()];
    let mut last_metrics: Vec<serde_json::Value> = vec![serde_json::Value::Null; layouts.len()];
    for round in 0..args.runs {
        for (i, layout) in layouts.iter().enumerate() {
            let out = scratch.join(format!("out-{i}-{round}"));
            let metrics = scratch.join(format!("metrics-{i}-{round}.json"));
            let mut cmd = Command::new("mpirun");
            cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
                .env("OMPI_MCA_hwloc_base_binding_policy", "none")
                .env("OMPI_MCA_btl", "self,vader")
                .args(["-n", &layout.ranks.to_string()])
                .arg(&spillway)
                .args(["wordcount", "--ascii", "-q", "-t", &layout.threads.to_string()])
                .arg("--out-dir")
                .arg(&out)
                .arg("--metrics")
                .arg(&metrics)
                .args(&files);
            let m = run_measured(&mut cmd)?;
            if !m.status.success() {
                bail!("{} failed: {}", layout.name, m.status);
            }
            walls[i].push(m.wall);
            last_metrics[i] = serde_json::from_slice(&std::fs::read(&metrics)?)?;
            std::fs::remove_dir_all(&out)?;
        }
    }
    let mut table = Table::new([
        "layout",
        "median wall (s)",
        "MB/s",
        "map (s)",
        "exchange (s)",
        "merge+reduce (s)",
        "bytes exchanged",
        "vs 1 rank",
    ]);
    let base = median(&walls[0]).as_secs_f64();
    for (i, layout) in layouts.iter().enumerate() {
        let wall = median(&walls[i]).as_secs_f64();
        let s = &last_metrics[i]["seconds"];
        let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
        table.row([
            layout.name.to_string(),
            format!("{wall:.3}"),
            format!("{:.0}", args.size as f64 / wall / 1e6),
            format!("{:.3}", f("map")),
            format!("{:.3}", f("exchange")),
            format!("{:.3}", f("merge") + f("reduce")),
            last_metrics[i]["bytes_sent"].to_string(),
            format!("{:.2}x", base / wall),
        ]);
    }
    table.print();
    println!(
        "(phase times and bytes from the last round's metrics; rank 0 totals: per-phase maxima over ranks)"
    );
    Ok(())
}
