//! Sort macro benchmark: `spillway sort` in memory and out of core against GNU sort, a
//! competent in-memory Rust sort, and `cp`, on gensort ASCII records.
//!
//! `cargo run -p spillway-bench --release --bin sort-bench -- --size 4G --data DIR [--quick] [--runs 3]`
//!
//! 1. Generates `DIR/gensort-a-N.dat` (N = size / 100 records) with `spillway gen records -a`
//!    unless a file of that length is already there, and takes its valsort checksum.
//! 2. Warms the page cache by reading the input once.
//! 3. Runs each program once per round, rotating the order every round, each writing a fresh
//!    output file (removed before the run; nothing is fsynced, spillway runs with
//!    `--no-sync`): `spillway sort` with memory for everything, `spillway sort --memory
//!    SIZE/4` (out of core), the same two through the engine's generic path (`spillway sort
//!    --generic`: whole records as keys through map buffers, spill runs, merges and reduce),
//!    `LC_ALL=C sort -S 50% --parallel=T` (gensort ASCII records are
//!    lines: each ends with `\r\n`, and all have the same length, so line order is record
//!    order), the in-memory Rust sort below (this executable, `--baseline-sort IN OUT`), and
//!    `cp`.
//! 4. Checks every output with `spillway valsort`: in order, and the input's checksum.
//! 5. Prints a Markdown table: median wall time, throughput (input bytes / wall time),
//!    peak RSS (`wait4` rusage), CPU time, passes over the data (spillway's metrics; the
//!    others read and write everything once), the ratio to `cp`, and for the `--generic` rows
//!    the ratio to the specialized sort with the same memory.
//!
//! The in-memory Rust sort: read the whole file, build one `u128` per record (10-byte key
//! above a 48-bit index), sort the two halves on two threads (`sort_unstable`), merge the
//! halves while gathering records into an 8 MiB buffer, write.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use spillway_bench::runner::{self, Measurement};
use spillway_bench::table::{Align, Table};
use spillway_bench::{format_size, parse_size, size_label};

/// Size used by `--quick`.
const QUICK_SIZE: u64 = 256 << 20;
const RECORD: usize = 100;

/// Sort macro benchmark (spillway sort vs. GNU sort vs. an in-memory Rust sort vs. cp).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Input size (bytes or K/M/G suffix, binary), rounded down to whole records
    /// [default: 4G, or 256M with --quick].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Smoke run: 256 MiB unless --size is given.
    #[arg(long)]
    quick: bool,
    /// Data directory (input, outputs, spill files) [default: bench-data/sort-SIZE].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The spillway binary [default: `spillway` next to this executable, built if missing].
    #[arg(long)]
    spillway: Option<PathBuf>,
    /// Measured runs per program.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Threads for every program.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip GNU sort (the slowest by far).
    #[arg(long)]
    no_gnu: bool,
    /// Internal: run the in-memory Rust sort on IN, writing OUT.
    #[arg(long, num_args = 2, value_names = ["IN", "OUT"], hide = true)]
    baseline_sort: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SpillwayMemory,
    SpillwayExternal,
    GenericMemory,
    GenericExternal,
    GnuSort,
    RustInMemory,
    Cp,
}

#[derive(Debug)]
struct Program {
    name: String,
    kind: Kind,
    out: PathBuf,
    runs: Vec<Measurement>,
    passes: Vec<f64>,
    failure: Option<String>,
}

struct Setup {
    spillway: PathBuf,
    me: PathBuf,
    input: PathBuf,
    size: u64,
    threads: usize,
    spill: PathBuf,
    metrics: PathBuf,
}

impl Program {
    fn command(&self, s: &Setup) -> Command {
        let threads = s.threads.to_string();
        let spillway = |memory: u64, generic: bool| {
            let mut c = Command::new(&s.spillway);
            c.arg("sort");
            if generic {
                c.arg("--generic");
            }
            c.args(["--quiet", "--no-sync", "--threads", &threads, "--memory", &size_label(memory)])
                .arg("--spill-dir")
                .arg(&s.spill)
                .arg("--metrics")
                .arg(&s.metrics)
                .arg("--out")
                .arg(&self.out)
                .arg(&s.input);
            c
        };
        let mut cmd = match self.kind {
            // Room for the records, 16-byte entries and buffers, with a margin.
            Kind::SpillwayMemory => spillway((s.size * 2).max(1 << 30), false),
            Kind::SpillwayExternal => spillway(external_memory(s.size), false),
            Kind::GenericMemory => spillway(generic_memory_for_all(s.size), true),
            Kind::GenericExternal => spillway(external_memory(s.size), true),
            Kind::GnuSort => {
                let mut c = Command::new("sort");
                c.env("LC_ALL", "C")
                    .args(["-S", "50%", &format!("--parallel={threads}"), "-T"])
                    .arg(&s.spill)
                    .arg("-o")
                    .arg(&self.out)
                    .arg(&s.input);
                c
            }
            Kind::RustInMemory => {
                let mut c = Command::new(&s.me);
                c.arg("--baseline-sort").arg(&s.input).arg(&self.out);
                c
            }
            Kind::Cp => {
                let mut c = Command::new("cp");
                c.arg(&s.input).arg(&self.out);
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }

    /// Passes over the data: from spillway's metrics; one for the others (they hold the
    /// whole input in memory).
    fn passes(&self, s: &Setup) -> Result<f64> {
        match self.kind {
            Kind::SpillwayMemory | Kind::SpillwayExternal | Kind::GenericMemory | Kind::GenericExternal => {
                let json: serde_json::Value = serde_json::from_slice(&fs::read(&s.metrics)?)?;
                json["passes"].as_f64().context("no passes in spillway's metrics")
            }
            _ => Ok(1.0),
        }
    }
}

/// The generic path's in-memory budget: its map buffers copy the records (with a 16-byte
/// entry each) and grow by doubling within each thread's share, so 4x the input.
fn generic_memory_for_all(size: u64) -> u64 {
    (size * 4).max(1 << 30)
}

impl Kind {
    /// The specialized sort a `--generic` row is compared with.
    fn specialized(self) -> Option<Kind> {
        match self {
            Kind::GenericMemory => Some(Kind::SpillwayMemory),
            Kind::GenericExternal => Some(Kind::SpillwayExternal),
            _ => None,
        }
    }
}

/// The out-of-core budget: a quarter of the input, in whole MiB.
fn external_memory(size: u64) -> u64 {
    ((size / 4) >> 20).max(1) << 20
}

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    Ok(exe.parent().map_or_else(|| PathBuf::from(name), |d| d.join(name)))
}

/// The spillway binary: as given, or next to this executable (built with cargo if missing).
fn find_spillway(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let bin = sibling_binary("spillway")?;
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "spillway-tools", "--bin", "spillway"]);
        if bin.parent().and_then(Path::file_name).is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build for the spillway binary")?;
        if !status.success() || !bin.exists() {
            bail!("no spillway binary at {} (cargo build -p spillway-tools --release)", bin.display());
        }
    }
    Ok(bin)
}

/// `spillway valsort FILE`: (sorted, checksum).
fn valsort(spillway: &Path, file: &Path) -> Result<(bool, String)> {
    let out = Command::new(spillway).arg("valsort").arg(file).output().context("running spillway valsort")?;
    let report = String::from_utf8_lossy(&out.stderr);
    let checksum = report
        .lines()
        .find_map(|l| l.strip_prefix("Checksum: "))
        .with_context(|| format!("valsort {}: {report}", file.display()))?;
    Ok((out.status.success(), checksum.to_owned()))
}

fn warm_cache(path: &Path) -> Result<Duration> {
    let start = Instant::now();
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(start.elapsed())
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 { format!("{s:.3}") } else { format!("{s:.2}") }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(paths) = &args.baseline_sort {
        return baseline_sort(&paths[0], &paths[1], args.threads);
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let size = args.size.unwrap_or(if args.quick { QUICK_SIZE } else { 4 << 30 });
    let records = size / RECORD as u64;
    let size = records * RECORD as u64;
    if records == 0 {
        bail!("--size must hold at least one {RECORD}-byte record");
    }
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-data").join(format!("sort-{}", size_label(size))));
    fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let spillway = find_spillway(args.spillway.clone())?;
    let setup = Setup {
        spillway: spillway.clone(),
        me: std::env::current_exe()?,
        input: data.join(format!("gensort-a-{records}.dat")),
        size,
        threads: args.threads,
        spill: data.join("spill"),
        metrics: data.join("spillway-metrics.json"),
    };
    fs::create_dir_all(&setup.spill)?;

    // 1. Input.
    if fs::metadata(&setup.input).map(|m| m.len()).ok() != Some(size) {
        let t = Instant::now();
        let status = Command::new(&spillway)
            .args(["gen", "records", "-a", "-t", &args.threads.to_string(), &records.to_string()])
            .arg(&setup.input)
            .status()
            .context("running spillway gen records")?;
        if !status.success() {
            bail!("spillway gen records failed");
        }
        let s = t.elapsed().as_secs_f64();
        println!("generated {} of gensort -a records in {s:.2} s", format_size(size));
    }
    let (_, input_checksum) = valsort(&spillway, &setup.input)?;

    // 2. Warm cache.
    let warm = warm_cache(&setup.input)?;
    println!(
        "input: {} ({records} records, checksum {input_checksum}); cache warmed in {:.2} s",
        setup.input.display(),
        warm.as_secs_f64()
    );

    // 3. Rounds.
    let mut programs: Vec<Program> = [
        ("spillway sort (in memory)", Kind::SpillwayMemory),
        (&*format!("spillway sort --memory {}", size_label(external_memory(size))), Kind::SpillwayExternal),
        ("spillway sort --generic (in memory)", Kind::GenericMemory),
        (
            &*format!("spillway sort --generic --memory {}", size_label(external_memory(size))),
            Kind::GenericExternal,
        ),
        ("LC_ALL=C sort -S 50%", Kind::GnuSort),
        ("in-memory Rust sort", Kind::RustInMemory),
        ("cp", Kind::Cp),
    ]
    .into_iter()
    .filter(|(_, k)| !(args.no_gnu && *k == Kind::GnuSort))
    .enumerate()
    .map(|(i, (name, kind))| Program {
        name: name.to_owned(),
        kind,
        out: data.join(format!("out-{i}.dat")),
        runs: Vec::new(),
        passes: Vec::new(),
        failure: None,
    })
    .collect();
    let n = programs.len();
    for round in 0..args.runs {
        for j in 0..n {
            let p = &mut programs[(j + round) % n];
            if p.failure.is_some() {
                continue;
            }
            let _ = fs::remove_file(&p.out);
            let _ = fs::remove_file(&setup.metrics);
            let m = runner::run_measured(&mut p.command(&setup))?;
            if !m.status.success() {
                p.failure = Some(format!("exit status {}", m.status));
                continue;
            }
            let (sorted, checksum) = valsort(&spillway, &p.out)?;
            if p.kind != Kind::Cp && !sorted {
                p.failure = Some("valsort: not sorted".into());
            } else if checksum != input_checksum {
                p.failure = Some(format!("valsort: checksum {checksum}, input {input_checksum}"));
            }
            p.passes.push(p.passes(&setup)?);
            println!("  round {}: {:<28} {:>8} s", round + 1, p.name, secs(m.wall));
            std::io::stdout().flush()?;
            p.runs.push(m);
            let _ = fs::remove_file(&p.out);
        }
    }

    // 4. Table.
    let cp_wall = programs
        .iter()
        .find(|p| p.kind == Kind::Cp && !p.runs.is_empty())
        .map(|p| runner::median(&p.runs.iter().map(|m| m.wall).collect::<Vec<_>>()));
    let median_wall = |kind: Kind| {
        programs
            .iter()
            .find(|p| p.kind == kind && !p.runs.is_empty())
            .map(|p| runner::median(&p.runs.iter().map(|m| m.wall).collect::<Vec<_>>()))
    };
    let mut table = Table::new([
        "program",
        "wall (s)",
        "MB/s",
        "peak RSS (MiB)",
        "CPU (s)",
        "passes",
        "wall / cp",
        "wall / specialized",
        "valsort",
    ]);
    for c in 1..8 {
        table.align(c, Align::Right);
    }
    for p in &programs {
        if p.runs.is_empty() {
            table.row([
                p.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                p.failure.clone().unwrap_or_default(),
            ]);
            continue;
        }
        let wall = runner::median(&p.runs.iter().map(|m| m.wall).collect::<Vec<_>>());
        let cpu = runner::median(&p.runs.iter().map(Measurement::cpu).collect::<Vec<_>>());
        let rss = p.runs.iter().map(|m| m.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let passes = p.passes.iter().copied().fold(0.0, f64::max);
        table.row([
            p.name.clone(),
            secs(wall),
            format!("{:.0}", size as f64 / 1e6 / wall.as_secs_f64().max(1e-9)),
            format!("{rss:.0}"),
            secs(cpu),
            format!("{passes:.2}"),
            cp_wall.map_or("-".into(), |c| format!("{:.2}", wall.as_secs_f64() / c.as_secs_f64().max(1e-9))),
            p.kind
                .specialized()
                .and_then(median_wall)
                .map_or("-".into(), |c| format!("{:.2}", wall.as_secs_f64() / c.as_secs_f64().max(1e-9))),
            p.failure.clone().unwrap_or_else(|| "ok".into()),
        ]);
    }
    println!();
    println!(
        "{} of gensort -a records, {} threads, median of {} runs (peak RSS: max over runs):",
        format_size(size),
        args.threads,
        args.runs
    );
    println!();
    table.print();
    if programs.iter().any(|p| p.failure.is_some()) {
        bail!("some outputs failed validation");
    }
    Ok(())
}

/// The competent in-memory Rust sort (see the module docs).
fn baseline_sort(input: &Path, output: &Path, threads: usize) -> Result<()> {
    let data = fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    if data.len() % RECORD != 0 {
        bail!("{}: not a whole number of records", input.display());
    }
    let n = data.len() / RECORD;
    let key = |i: usize| -> u128 {
        let r = &data[i * RECORD..i * RECORD + 10];
        let mut k = [0u8; 16];
        k[..10].copy_from_slice(r);
        u128::from_be_bytes(k) | i as u128
    };
    let mut keys: Vec<u128> = (0..n).map(key).collect();
    let parts = threads.clamp(1, 2);
    let (a, b) = keys.split_at_mut(if parts == 2 { n / 2 } else { n });
    std::thread::scope(|s| {
        s.spawn(|| a.sort_unstable());
        b.sort_unstable();
    });
    let (a, b) = keys.split_at(if parts == 2 { n / 2 } else { n });
    let mut out = std::io::BufWriter::with_capacity(8 << 20, fs::File::create(output)?);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        let at = (next & ((1 << 48) - 1)) as usize * RECORD;
        out.write_all(&data[at..at + RECORD])?;
    }
    out.flush()?;
    Ok(())
}
