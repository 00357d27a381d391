//! Sort macro benchmark: `spillway sort` with its default memory (in memory) and out of core
//! against MR-MPI, Polars, DuckDB, GNU sort, a competent in-memory Rust sort, and `cp`, on
//! gensort ASCII records; every output is checked byte-identical to spillway's.
//!
//! `cargo run -p spillway-bench --release --bin sort-bench -- [--size 256M] [--data DIR] [--runs 1]`
//!
//! 1. Generates `DIR/gensort-a-N.dat` (N = size / 100 records) with `spillway gen records -a`
//!    unless a file of that length is already there, and takes its valsort checksum.
//! 2. Warms the page cache by reading the input once.
//! 3. Runs each program once per round, rotating the order every round, each writing a fresh
//!    output file (removed before the run; nothing is fsynced, spillway runs with
//!    `--no-sync`): `spillway sort` with the default `--memory` (from the machine: in memory),
//!    `spillway sort --memory SIZE/4` (out of core), the same two through the engine's
//!    generic path (`--generic`: whole records as keys through map buffers, spill runs, merges
//!    and reduce; in memory with `--memory 4×SIZE`, each row giving its wall time against the
//!    specialized row's), MR-MPI (`mpirun -n T`), Polars and DuckDB
//!    (T threads), `LC_ALL=C sort -S 50% --parallel=T` (gensort ASCII records are lines: each
//!    ends with `\r\n`, and all have the same length, so line order is record order), the
//!    in-memory Rust sort below (this executable, `--baseline-sort IN OUT`), and `cp`. A peer
//!    that is not installed is skipped with a note (`scripts/install-peers.sh`).
//! 4. Checks spillway's outputs with `spillway valsort` (in order, the input's checksum) and
//!    every other sort's output against spillway's, byte for byte (a digest).
//! 5. Prints a Markdown table (median wall, throughput, user and sys CPU, peak RSS, output
//!    identical) with spillway's passes over the data, and saves it into `--results`.
//!
//! The in-memory Rust sort: read the whole file, build one `u128` per record (10-byte key
//! above a 48-bit index), sort the two halves on two threads (`sort_unstable`), merge the
//! halves while gathering records into an 8 MiB buffer, write.

use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use spillway_bench::peers::{self, MrMpi, Python};
use spillway_bench::report::{Row, Section};
use spillway_bench::runner::{self, Measurement};
use spillway_bench::{find_spillway, format_size, parse_size, run_main, size_label};

const RECORD: usize = 100;

/// Sort benchmark: spillway sort, MR-MPI, Polars, DuckDB, GNU sort, a Rust sort and cp.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Input size (bytes or K/M/G suffix, binary), rounded down to whole records; 1G for the
    /// full comparison.
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    size: u64,
    /// Smoke run: 64 MiB (overrides --size).
    #[arg(long)]
    quick: bool,
    /// Data directory (input, outputs, spill files) [default: bench-data/sort-SIZE].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the results go (`sort.json`, `RESULTS.md`, `index.html`, `throughput.svg`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results: PathBuf,
    /// The spillway binary [default: `spillway` next to this executable, built if missing].
    #[arg(long)]
    spillway: Option<PathBuf>,
    /// Measured runs per system (the table gives medians).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Threads (ranks for MR-MPI) of every parallel system.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip GNU sort.
    #[arg(long)]
    no_gnu: bool,
    /// Instead of the comparison: the out-of-core sort buffered (`--io std`) against O_DIRECT
    /// (`--io direct`), alternating `--runs` rounds, with `--memory`, page-cache growth and the
    /// disk's own direct bandwidth (`dd`); writes `sort-direct-SIZE.md` into `--results`.
    #[arg(long)]
    direct_vs_buffered: bool,
    /// `--memory` of the `--direct-vs-buffered` runs.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    memory: u64,
    /// An existing input of 100-byte records to sort instead of generating one (its size is
    /// then the file's).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Internal: run the in-memory Rust sort on IN, writing OUT.
    #[arg(long, num_args = 2, value_names = ["IN", "OUT"], hide = true)]
    baseline_sort: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    SpillwayDefault,
    SpillwayExternal,
    /// `spillway sort --generic` (the engine's own path) with memory for everything.
    SpillwayGeneric,
    /// `spillway sort --generic` with the out-of-core memory.
    SpillwayGenericExternal,
    MrMpi(PathBuf),
    Python(PathBuf, PathBuf),
    GnuSort,
    RustInMemory,
    Cp,
}

#[derive(Debug)]
struct System {
    name: String,
    kind: Kind,
    out: PathBuf,
    runs: Vec<Measurement>,
    passes: Vec<f64>,
    phases: Vec<(String, f64)>,
    digest: Option<u64>,
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

impl System {
    fn is_spillway(&self) -> bool {
        matches!(
            self.kind,
            Kind::SpillwayDefault
                | Kind::SpillwayExternal
                | Kind::SpillwayGeneric
                | Kind::SpillwayGenericExternal
        )
    }

    fn command(&self, s: &Setup) -> Result<Command> {
        let threads = s.threads.to_string();
        let spillway = |memory: Option<u64>, generic: bool| {
            let mut c = Command::new(&s.spillway);
            c.args(["sort", "--quiet", "--no-sync", "--threads", &threads]);
            if let Some(memory) = memory {
                c.args(["--memory", &size_label(memory)]);
            }
            if generic {
                c.arg("--generic");
            }
            c.arg("--spill-dir")
                .arg(&s.spill)
                .arg("--metrics")
                .arg(&s.metrics)
                .arg("--out")
                .arg(&self.out)
                .arg(&s.input);
            c
        };
        let mut cmd = match &self.kind {
            Kind::SpillwayDefault => spillway(None, false),
            Kind::SpillwayExternal => spillway(Some(external_memory(s.size)), false),
            Kind::SpillwayGeneric => spillway(Some(generic_memory(s.size)), true),
            Kind::SpillwayGenericExternal => spillway(Some(external_memory(s.size)), true),
            Kind::MrMpi(bin) => {
                fs::create_dir_all(&self.out)?;
                let mut c = runner::mpirun();
                c.args(["-n", &threads]).arg(bin).arg(&self.out).arg(&s.spill).arg("512").arg(&s.input);
                c
            }
            Kind::Python(python, script) => {
                let mut c = Command::new(python);
                c.arg(script)
                    .arg("sort")
                    .arg(&self.out)
                    .arg(&s.input)
                    .env("POLARS_MAX_THREADS", &threads)
                    .env("DUCKDB_THREADS", &threads)
                    .env("DUCKDB_TEMP", &s.spill);
                c
            }
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
        Ok(cmd)
    }
}

/// Phase names and seconds.
type Phases = Vec<(String, f64)>;

/// Spillway's passes over the data (the record sort's metrics give them; the generic path's
/// do not) and phase times, from its metrics.
fn spillway_metrics(path: &Path) -> Result<(Option<f64>, Phases)> {
    let json: serde_json::Value = serde_json::from_slice(&fs::read(path)?)?;
    let passes = json["passes"].as_f64();
    let phases = ["map", "merge", "reduce"]
        .iter()
        .map(|p| ((*p).to_owned(), json["seconds"][*p].as_f64().unwrap_or(0.0)))
        .collect();
    Ok((passes, phases))
}

/// Memory for `sort --generic` to hold everything: four times the input (keys, values,
/// sort entries and the runs' blocks), in whole MiB.
fn generic_memory(size: u64) -> u64 {
    ((size * 4) >> 20).max(1) << 20
}

/// The out-of-core budget: a quarter of the input, in whole MiB.
fn external_memory(size: u64) -> u64 {
    ((size / 4) >> 20).max(1) << 20
}

/// A digest of the bytes of `path` (a file, or a directory's files concatenated in name order).
fn digest(path: &Path) -> Result<u64> {
    let mut files = vec![path.to_path_buf()];
    if path.is_dir() {
        files =
            fs::read_dir(path)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        files.sort();
    }
    // Whole blocks of 8 MiB (the last one shorter) whatever the file boundaries: `Hasher::write`
    // depends on how the bytes are cut.
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    let mut buf = vec![0u8; 8 << 20];
    let (mut filled, mut total) = (0, 0u64);
    for f in files {
        let mut file = fs::File::open(&f).with_context(|| format!("opening {}", f.display()))?;
        loop {
            let n = file.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
            total += n as u64;
            if filled == buf.len() {
                h.write(&buf);
                filled = 0;
            }
        }
    }
    h.write(&buf[..filled]);
    h.write_u64(total);
    Ok(h.finish())
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

fn warm_cache(path: &Path) -> Result<()> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

fn remove_output(path: &Path) {
    let _ = if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
}

fn main() -> ExitCode {
    run_main("sort-bench", run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    if let Some(paths) = &args.baseline_sort {
        return baseline_sort(&paths[0], &paths[1], args.threads);
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let size = match &args.input {
        Some(input) => fs::metadata(input).with_context(|| format!("reading {}", input.display()))?.len(),
        None if args.quick => 64 << 20,
        None => args.size,
    };
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
        input: args.input.clone().unwrap_or_else(|| data.join(format!("gensort-a-{records}.dat"))),
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
        println!(
            "generated {} of gensort -a records in {:.2} s",
            format_size(size),
            t.elapsed().as_secs_f64()
        );
    }
    let (_, input_checksum) = valsort(&spillway, &setup.input)?;
    if args.direct_vs_buffered {
        let bench = spillway_bench::direct::DirectBench {
            spillway: spillway.clone(),
            input: setup.input.clone(),
            data: data.clone(),
            memory: args.memory,
            threads: args.threads,
            rounds: args.runs,
            checksum: input_checksum,
        };
        return spillway_bench::direct::run(&bench, &args.results);
    }
    warm_cache(&setup.input)?;
    println!("input: {} ({records} records, checksum {input_checksum})", setup.input.display());

    // 2. Systems.
    let t = args.threads;
    let mut notes = Vec::new();
    let mut kinds = vec![
        (format!("spillway sort -t {t} (default --memory)"), Kind::SpillwayDefault),
        (
            format!("spillway sort -t {t} --memory {} (out of core)", size_label(external_memory(size))),
            Kind::SpillwayExternal,
        ),
        (
            format!(
                "spillway sort --generic -t {t} --memory {} (in memory)",
                size_label(generic_memory(size))
            ),
            Kind::SpillwayGeneric,
        ),
        (
            format!(
                "spillway sort --generic -t {t} --memory {} (out of core)",
                size_label(external_memory(size))
            ),
            Kind::SpillwayGenericExternal,
        ),
    ];
    match peers::mrmpi(MrMpi::Sort) {
        Ok(bin) => kinds.push((format!("MR-MPI (mpirun -n {t})"), Kind::MrMpi(bin))),
        Err(note) => notes.push(format!("MR-MPI skipped: {note}")),
    }
    for (which, label) in [(Python::Polars, "Polars"), (Python::DuckDb, "DuckDB")] {
        match peers::python(which) {
            Ok((python, script, version)) => {
                kinds.push((format!("{label} {version} ({t} threads)"), Kind::Python(python, script)))
            }
            Err(note) => notes.push(format!("{label} skipped: {note}")),
        }
    }
    if !args.no_gnu {
        kinds.push((format!("LC_ALL=C sort -S 50% --parallel={t}"), Kind::GnuSort));
    }
    kinds.push(("in-memory Rust sort (2 threads)".into(), Kind::RustInMemory));
    kinds.push(("cp (a copy, not a sort: the floor)".into(), Kind::Cp));
    let mut systems: Vec<System> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| System {
            name,
            kind,
            out: data.join(format!("out-{i}.dat")),
            runs: Vec::new(),
            passes: Vec::new(),
            phases: Vec::new(),
            digest: None,
            failure: None,
        })
        .collect();
    for n in &notes {
        println!("note: {n}");
    }

    // 3. Rounds.
    let load_before = runner::load_average();
    let n = systems.len();
    for round in 0..args.runs {
        for j in 0..n {
            let p = &mut systems[(j + round) % n];
            if p.failure.is_some() {
                continue;
            }
            remove_output(&p.out);
            let _ = fs::remove_file(&setup.metrics);
            let m = runner::run_measured(&mut p.command(&setup)?)?;
            println!(
                "  round {}: {:<48} {:>8.2} s  {:>8.0} MiB  {}",
                round + 1,
                p.name,
                m.wall.as_secs_f64(),
                m.max_rss_mib(),
                m.status
            );
            std::io::stdout().flush()?;
            if !m.status.success() {
                p.failure = Some(format!("exit status {}", m.status));
                remove_output(&p.out);
                continue;
            }
            if p.is_spillway() {
                let (sorted, checksum) = valsort(&spillway, &p.out)?;
                if !sorted {
                    p.failure = Some("valsort: not sorted".into());
                } else if checksum != input_checksum {
                    p.failure = Some(format!("valsort: checksum {checksum}, input {input_checksum}"));
                }
                let (passes, phases) = spillway_metrics(&setup.metrics)?;
                p.passes.extend(passes);
                p.phases = phases;
            }
            if p.kind != Kind::Cp {
                p.digest = Some(digest(&p.out)?);
            }
            p.runs.push(m);
            remove_output(&p.out);
        }
    }

    // 4. Report.
    let reference = systems[0].digest;
    let mut rows = Vec::new();
    for p in &systems {
        if let Some(f) = &p.failure {
            notes.push(format!("{}: {f}", p.name));
        }
        if p.runs.is_empty() {
            continue;
        }
        let identical = match &p.kind {
            Kind::SpillwayDefault | Kind::Cp => None,
            _ => Some(p.digest.is_some() && p.digest == reference),
        };
        let mut name = p.name.clone();
        if let Some(passes) = p.passes.iter().copied().reduce(f64::max) {
            name.push_str(&format!(", {passes:.0} pass{}", if passes > 1.0 { "es" } else { "" }));
        }
        // The engine's generic path against the specialized sort with the same memory regime.
        let specialized = match p.kind {
            Kind::SpillwayGeneric => Some(Kind::SpillwayDefault),
            Kind::SpillwayGenericExternal => Some(Kind::SpillwayExternal),
            _ => None,
        };
        if let Some(special) = specialized
            .and_then(|kind| {
                systems.iter().find(|q| std::mem::discriminant(&q.kind) == std::mem::discriminant(&kind))
            })
            .filter(|q| !q.runs.is_empty())
        {
            let wall = |runs: &[Measurement]| {
                runner::median(&runs.iter().map(|m| m.wall).collect::<Vec<_>>()).as_secs_f64()
            };
            name.push_str(&format!(
                ", {:.2}× the specialized sort's wall",
                wall(&p.runs) / wall(&special.runs)
            ));
        }
        rows.push(Row::from_runs(&name, &p.runs, size, identical, p.phases.clone()));
    }
    notes.push(format!(
        "The first spillway row is the reference: its output passed valsort (sorted, checksum {input_checksum}), and \
         every other sort's output is compared with it byte for byte. Nothing is fsynced (spillway: --no-sync). \
         Peak RSS is the largest single process (MR-MPI: one rank) and counts mapped input pages."
    ));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let section = Section {
        workload: "sort".into(),
        title: format!("Sort, {} of gensort -a records ({records} x 100 bytes)", format_size(size)),
        rows,
        notes,
        conditions: format!(
            "{cpus} CPUs, {t} threads or ranks per system, median of {} run(s), page cache warm; 1-minute load \
             average {load_before} before, {} after; {}",
            args.runs,
            runner::load_average(),
            runner::date()
        ),
    };
    println!();
    print!("{}", section.markdown());
    section.save(&args.results)?;
    println!("\nresults in {} (RESULTS.md, index.html)", args.results.display());
    if section.rows.iter().any(|r| r.identical == Some(false)) || systems.iter().any(|p| p.failure.is_some())
    {
        bail!("some outputs differ from spillway's or failed (see the notes)");
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
