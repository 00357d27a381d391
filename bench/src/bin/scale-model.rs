//! The exchange at P ranks: a model to thousands of ranks, calibrated by runs measured here
//! (`docs/scaling.md` explains the model and shows its tables).
//!
//! ```sh
//! cargo run --release -p spillway-bench --bin scale-model -- predict             # P = 2..8192
//! cargo build --release -p spillway-tools --features mpi
//! cargo run --release -p spillway-bench --bin scale-model -- measure \
//!     --ranks 1,2,4,8,16,32,64,128 --per-rank 4M                                # weak scaling + fit
//! ```
//!
//! `measure` runs `spillway sort --generic` (no combiner: nearly all data moves) under
//! `mpirun -n P` with a fixed amount of data per rank, prints the weak-scaling table (per-rank
//! phase times, bytes, messages), fits the per-message cost, bandwidth and descriptor step to
//! every rank's measured transfer and descriptor times, and shows predicted against measured.
//! With more ranks than cores the ranks share them, which the fit takes into account
//! ([`spillway_bench::scaling::sharing`]): on a small machine it measures overhead growth,
//! not speed-up.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use spillway_bench::scaling::{Fit, Params, Prediction, Sample, predict};
use spillway_bench::table::Align;
use spillway_bench::{Table, format_size, parse_size, run_measured};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Prints the model for P = 2, 4, ..., 8192.
    Predict(ModelArgs),
    /// Measures weak scaling here, fits the model and prints predicted against measured.
    Measure(MeasureArgs),
}

#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// Map output per rank (what the exchange moves).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    shuffle_per_rank: u64,
    /// Worker threads per rank.
    #[arg(long, default_value_t = 8)]
    threads: u32,
    /// Memory budget per rank.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    memory: u64,
    /// The open-run bound F.
    #[arg(long, default_value_t = 1000)]
    fan_in: u32,
    /// Partitions R [default: ranks x threads, at least 16].
    #[arg(long)]
    partitions: Option<u32>,
    /// Link bandwidth per rank, GB/s.
    #[arg(long, default_value_t = 12.5)]
    bandwidth_gbs: f64,
    /// Network latency, microseconds.
    #[arg(long, default_value_t = 2.0)]
    latency_us: f64,
    /// CPU per message, microseconds (`measure` fits it on this machine).
    #[arg(long, default_value_t = 2.0)]
    per_message_us: f64,
    /// Rank 0's split server, microseconds per request (`split-server-bench` measures it).
    #[arg(long, default_value_t = 35.0)]
    request_us: f64,
    /// Largest P (powers of two from 2).
    #[arg(long, default_value_t = 8192)]
    max_ranks: u32,
}

impl ModelArgs {
    fn params(&self) -> Params {
        Params {
            shuffle_per_rank: self.shuffle_per_rank as f64,
            input_per_rank: self.shuffle_per_rank as f64,
            threads: f64::from(self.threads),
            memory: self.memory as f64,
            fan_in: f64::from(self.fan_in),
            partitions: self.partitions.map(f64::from),
            bandwidth: self.bandwidth_gbs * 1e9,
            latency: self.latency_us * 1e-6,
            per_message: self.per_message_us * 1e-6,
            request_service: self.request_us * 1e-6,
            ..Params::default()
        }
    }
}

#[derive(Debug, clap::Args)]
struct MeasureArgs {
    /// Rank counts (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16, 32])]
    ranks: Vec<usize>,
    /// Input per rank (gensort records).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    per_rank: u64,
    /// Memory budget per rank of the measured runs.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    run_memory: u64,
    /// Cores the ranks share [default: this machine's].
    #[arg(long)]
    cores: Option<usize>,
    /// The spillway binary, built with `--features mpi` [default: next to this binary].
    #[arg(long)]
    spillway: Option<PathBuf>,
    /// Where inputs and outputs go.
    #[arg(long, default_value = "bench-data/scale-model")]
    scratch: PathBuf,
    /// The model's parameters for the prediction to thousands of ranks (its per-message cost
    /// is replaced by the one fitted here).
    #[command(flatten)]
    model: ModelArgs,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn secs(x: f64) -> String {
    if x >= 1.0 { format!("{x:.2}") } else { format!("{:.1} ms", x * 1e3) }
}

fn count(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1} G", x / 1e9),
        x if x >= 1e6 => format!("{:.1} M", x / 1e6),
        x if x >= 1e4 => format!("{:.0} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn bytes(x: f64) -> String {
    format_size(x.max(0.0) as u64)
}

/// A table whose columns are all numbers (right-aligned).
fn numbers_table<const N: usize>(headers: [&str; N]) -> Table {
    let mut t = Table::new(headers);
    for c in 0..N {
        t.align(c, Align::Right);
    }
    t
}

fn prediction_table(params: &Params, max_ranks: u32) -> Table {
    let mut t = numbers_table([
        "P",
        "R",
        "runs/rank (sent)",
        "msgs/rank",
        "msgs total",
        "bytes/rank",
        "packed/rank",
        "descr.+req. mem/rank",
        "recv buffers",
        "runs after",
        "recv index/rank",
        "passes (F)",
        "merged before/after",
        "descr. time",
        "data time",
        "split req/s (cap)",
    ]);
    let mut p = 2u32;
    while p <= max_ranks {
        let x: Prediction = predict(params, f64::from(p));
        t.row([
            p.to_string(),
            count(x.partitions),
            format!("{} ({})", count(x.runs_per_rank), count(x.runs_sent)),
            count(x.messages_per_rank),
            count(x.messages_total),
            bytes(x.bytes_per_rank),
            bytes(x.packed_bytes),
            bytes(x.descriptor_memory),
            bytes(x.buffer_memory),
            count(x.runs_after),
            bytes(x.received_index_bytes),
            format!("{}", x.merge_passes),
            format!("{} / {}", bytes(x.premerge_bytes), bytes(x.merged_after)),
            secs(x.descriptor_time),
            secs(x.data_time),
            format!("{} ({})", count(x.requests_per_second), count(x.server_capacity)),
        ]);
        p *= 2;
    }
    t
}

/// One measured run at P ranks.
struct Run {
    ranks: usize,
    wall: f64,
    metrics: Value,
}

impl Run {
    /// Every rank's metrics (the totals for one rank).
    fn ranks(&self) -> Vec<&Value> {
        match self.metrics["per_rank"].as_array() {
            Some(all) if !all.is_empty() => all.iter().collect(),
            _ => vec![&self.metrics],
        }
    }

    fn max(&self, pick: impl Fn(&Value) -> f64) -> f64 {
        self.ranks().into_iter().map(pick).fold(0.0, f64::max)
    }

    fn median(&self, pick: impl Fn(&Value) -> f64) -> f64 {
        let mut v: Vec<f64> = self.ranks().into_iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

fn measure(args: &MeasureArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let spillway = args.spillway.clone().unwrap_or_else(|| exe.with_file_name("spillway"));
    let version = Command::new(&spillway).arg("--version").output().context("running spillway --version")?;
    if !String::from_utf8_lossy(&version.stdout).contains("(mpi)") {
        bail!("{} was built without the mpi feature", spillway.display());
    }
    let cores = args.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    std::fs::create_dir_all(&args.scratch)?;
    let most = args.ranks.iter().copied().max().unwrap_or(1);
    let records = args.per_rank / 100;
    let inputs: Vec<PathBuf> = (0..most)
        .map(|i| -> Result<PathBuf> {
            let path = args.scratch.join(format!("records-{records}-{i}"));
            if !std::fs::metadata(&path).is_ok_and(|m| m.len() == records * 100) {
                let start = (i as u64 * records).to_string();
                let ok = Command::new(&spillway)
                    .args(["gen", "records", "--start", &start, &records.to_string()])
                    .arg(&path)
                    .status()?
                    .success();
                if !ok {
                    bail!("spillway gen records failed");
                }
            }
            Ok(path)
        })
        .collect::<Result<_>>()?;
    let mut runs = Vec::new();
    for &np in &args.ranks {
        let out = args.scratch.join(format!("out-{np}"));
        let metrics = args.scratch.join(format!("metrics-{np}.json"));
        let _ = std::fs::remove_dir_all(&out);
        let mut cmd = spillway_bench::runner::mpirun();
        cmd.args(["-n", &np.to_string()]).arg(&spillway);
        cmd.args(["sort", "--generic", "-q", "-t", "1", "--memory", &args.run_memory.to_string()])
            .arg("--out-dir")
            .arg(&out)
            .arg("--metrics")
            .arg(&metrics)
            .args(&inputs[..np]);
        let m = run_measured(&mut cmd)?;
        if !m.status.success() {
            bail!("{np} ranks: {}", m.status);
        }
        let metrics: Value = serde_json::from_slice(&std::fs::read(&metrics)?)?;
        std::fs::remove_dir_all(&out)?;
        eprintln!("measured {np} ranks: {:.2} s", m.wall.as_secs_f64());
        runs.push(Run { ranks: np, wall: m.wall.as_secs_f64(), metrics });
    }
    print_weak(&runs, args.per_rank, cores);
    let samples: Vec<Sample> = runs
        .iter()
        .filter(|r| r.ranks > 1)
        .flat_map(|r| {
            r.ranks().into_iter().map(|m| Sample {
                ranks: r.ranks as f64,
                messages: f(&m["exchange"]["messages"]),
                bytes: f(&m["bytes_received"]),
                transfer: f(&m["exchange"]["transfer"]),
                descriptors: f(&m["exchange"]["descriptors"]),
            })
        })
        .collect();
    if samples.is_empty() {
        return Ok(());
    }
    let fit = Fit::from_samples(&samples, cores as f64);
    println!(
        "\nFit over {} rank samples ({cores} cores shared): {:.2} µs CPU per message, {:.2} GB/s per \
         rank unshared, {:.1} µs per descriptor all-to-all step\n",
        samples.len(),
        fit.per_message * 1e6,
        fit.bandwidth / 1e9,
        fit.latency * 1e6
    );
    print_calibration(&runs, &fit, args, cores);
    let mut model = args.model.params();
    model.per_message = fit.per_message;
    println!(
        "\nPredicted to 8192 ranks with the fitted CPU per message ({:.2} µs), {} per rank through \
         the exchange, {} threads, {} budget, F = {}, a {:.1} GB/s and {:.1} µs link:\n",
        fit.per_message * 1e6,
        format_size(args.model.shuffle_per_rank),
        args.model.threads,
        format_size(args.model.memory),
        args.model.fan_in,
        args.model.bandwidth_gbs,
        args.model.latency_us
    );
    prediction_table(&model, args.model.max_ranks).print();
    Ok(())
}

fn print_weak(runs: &[Run], per_rank: u64, cores: usize) {
    println!(
        "\nWeak scaling: `spillway sort --generic -t 1`, {} per rank, {cores} cores (slowest rank's phases)\n",
        format_size(per_rank)
    );
    let mut t = numbers_table([
        "P",
        "wall (s)",
        "map",
        "exchange",
        "wait",
        "descriptors",
        "transfer",
        "write",
        "merge",
        "reduce",
        "bytes exchanged",
        "packed",
        "messages",
        "msgs/rank",
    ]);
    for r in runs {
        let m = &r.metrics;
        t.row([
            r.ranks.to_string(),
            format!("{:.2}", r.wall),
            secs(r.max(|x| f(&x["seconds"]["map"]))),
            secs(r.max(|x| f(&x["seconds"]["exchange"]))),
            secs(r.max(|x| f(&x["exchange"]["wait"]))),
            secs(r.max(|x| f(&x["exchange"]["descriptors"]))),
            secs(r.max(|x| f(&x["exchange"]["transfer"]))),
            secs(r.max(|x| f(&x["exchange"]["write"]))),
            secs(r.max(|x| f(&x["seconds"]["merge"]))),
            secs(r.max(|x| f(&x["seconds"]["reduce"]))),
            bytes(f(&m["bytes_sent"])),
            bytes(f(&m["exchange"]["packed"])),
            count(f(&m["exchange"]["messages"])),
            count(f(&m["exchange"]["messages"]) / r.ranks as f64),
        ]);
    }
    t.print();
}

fn print_calibration(runs: &[Run], fit: &Fit, args: &MeasureArgs, cores: usize) {
    println!("Predicted against measured (median rank; the model's messages from its own counts)\n");
    let mut t = numbers_table([
        "P",
        "R",
        "msgs/rank measured",
        "msgs/rank model",
        "spills/rank measured",
        "spills/rank model",
        "transfer measured",
        "transfer fitted",
        "descriptors measured",
        "descriptors fitted",
    ]);
    for r in runs.iter().filter(|r| r.ranks > 1) {
        let np = r.ranks as f64;
        let partitions = f(&r.metrics["partitions"]);
        let params = Params {
            shuffle_per_rank: args.per_rank as f64,
            input_per_rank: args.per_rank as f64,
            threads: 1.0,
            memory: args.run_memory as f64,
            fan_in: f(&r.metrics["max_open_runs"]),
            partitions: Some(partitions),
            ..Params::default()
        };
        let x = predict(&params, np);
        let messages = r.median(|m| f(&m["exchange"]["messages"]));
        let received = r.median(|m| f(&m["bytes_received"]));
        let spills = r.median(|m| f(&m["spills"]));
        t.row([
            r.ranks.to_string(),
            count(partitions),
            count(messages),
            count(x.messages_per_rank),
            count(spills),
            count(x.runs_per_rank),
            secs(r.median(|m| f(&m["exchange"]["transfer"]))),
            secs(fit.transfer(np, cores as f64, messages, received)),
            secs(r.median(|m| f(&m["exchange"]["descriptors"]))),
            secs(fit.descriptors(np, cores as f64)),
        ]);
    }
    t.print();
}

fn main() -> std::process::ExitCode {
    spillway_bench::run_main("scale-model", run)
}

fn run() -> Result<()> {
    match Args::parse().command {
        Cmd::Predict(model) => {
            println!(
                "Model: {} per rank through the exchange, {} threads, {} budget, F = {}, {:.1} GB/s, {:.1} µs, {:.1} µs per message\n",
                format_size(model.shuffle_per_rank),
                model.threads,
                format_size(model.memory),
                model.fan_in,
                model.bandwidth_gbs,
                model.latency_us,
                model.per_message_us
            );
            prediction_table(&model.params(), model.max_ranks).print();
            Ok(())
        }
        Cmd::Measure(args) => measure(&args),
    }
}
