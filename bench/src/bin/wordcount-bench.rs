//! Word-count macro benchmark: Spillway against what users would otherwise pick, side by side
//! on the same corpus, each output checked identical to Spillway's after normalization.
//!
//! `cargo run -p spillway-bench --release --bin wordcount-bench -- [--size 256M] [--runs 1]`
//!
//! 1. Generates the corpus into `--data` unless a matching one (same size, files, seed,
//!    generator version; see the manifest) is already there.
//! 2. Warms the page cache by reading every input file once.
//! 3. Runs each system once per round, rotating the order every round:
//!    `spillway wordcount --ascii --threads T` (built if missing), the single-threaded
//!    baseline (this executable, `--baseline-wc`), MR-MPI (`mpirun -n T`), Polars and DuckDB
//!    (T threads), and `cat | tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c`. A peer that is
//!    not installed is skipped with a note (`scripts/install-peers.sh`).
//! 4. Prints a Markdown table (median wall, throughput, user and sys CPU, peak RSS, output
//!    identical) and saves it into `--results` (Markdown, HTML with SVG charts; see
//!    `spillway_bench::report`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use spillway_bench::corpus::{self, CorpusSpec};
use spillway_bench::normalize::{self, CountFormat};
use spillway_bench::peers::{self, MrMpi, Python};
use spillway_bench::report::{Row, Section};
use spillway_bench::runner::{self, Measurement};
use spillway_bench::{baseline, find_spillway, format_size, parse_size, run_main, size_label};

/// Word-count benchmark: Spillway, MR-MPI, Polars, DuckDB, coreutils and a baseline.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Corpus size (bytes or K/M/G suffix, binary); 1G for the full comparison.
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    size: u64,
    /// Smoke run: a 64 MiB corpus (overrides --size).
    #[arg(long)]
    quick: bool,
    /// Number of corpus files.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Corpus seed.
    #[arg(long, default_value_t = corpus::DEFAULT_SEED)]
    seed: u64,
    /// Corpus directory [default: bench-data/wordcount-SIZE under the current directory].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the results go (`wordcount.json`, `RESULTS.md`, `index.html`, `throughput.svg`).
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
    /// Skip the coreutils pipeline (by far the slowest).
    #[arg(long)]
    no_coreutils: bool,
    /// Only render the results directory again (RESULTS.md, index.html, throughput.svg) from
    /// the JSON files there; run nothing.
    #[arg(long)]
    render: bool,
    /// Internal: the single-threaded baseline word count of INPUTs into OUT.
    #[arg(long, num_args = 2.., value_names = ["OUT", "INPUT"], hide = true)]
    baseline_wc: Option<Vec<PathBuf>>,
}

#[derive(Debug)]
enum Kind {
    Spillway(PathBuf),
    Baseline,
    MrMpi(PathBuf),
    Python(PathBuf, PathBuf),
    Coreutils,
}

#[derive(Debug)]
struct System {
    name: String,
    kind: Kind,
    format: CountFormat,
    out: PathBuf,
    runs: Vec<Measurement>,
    failure: Option<String>,
}

/// The coreutils pipeline; `$1` is the output file, the rest are inputs.
const COREUTILS_SCRIPT: &str =
    r#"out=$1; shift; cat -- "$@" | tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c > "$out""#;

struct Setup {
    inputs: Vec<PathBuf>,
    threads: usize,
    spill: PathBuf,
    metrics: PathBuf,
}

impl System {
    fn command(&self, s: &Setup) -> Result<Command> {
        let threads = s.threads.to_string();
        let mut cmd = match &self.kind {
            Kind::Spillway(bin) => {
                let mut c = Command::new(bin);
                c.args(["wordcount", "--ascii", "--threads", &threads, "--quiet", "--spill-dir"])
                    .arg(&s.spill)
                    .arg("--metrics")
                    .arg(&s.metrics)
                    .arg("--out")
                    .arg(&self.out)
                    .args(&s.inputs);
                c
            }
            Kind::Baseline => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("--baseline-wc").arg(&self.out).args(&s.inputs);
                c
            }
            Kind::MrMpi(bin) => {
                fs::create_dir_all(&self.out)?;
                let mut c = runner::mpirun();
                c.args(["-n", &threads]).arg(bin).arg(&self.out).arg(&s.spill).arg("512").args(&s.inputs);
                c
            }
            Kind::Python(python, script) => {
                let mut c = Command::new(python);
                c.arg(script)
                    .arg("wordcount")
                    .arg(&self.out)
                    .args(&s.inputs)
                    .env("POLARS_MAX_THREADS", &threads)
                    .env("DUCKDB_THREADS", &threads)
                    .env("DUCKDB_TEMP", &s.spill);
                c
            }
            Kind::Coreutils => {
                let mut args = vec![self.out.clone()];
                args.extend(s.inputs.iter().cloned());
                let mut c = runner::shell_command(COREUTILS_SCRIPT, args);
                c.env("LC_ALL", "C");
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        Ok(cmd)
    }

    /// The output; a directory (part files) is read as the concatenation of its files.
    fn read_output(&self) -> Result<Vec<u8>> {
        let meta = fs::metadata(&self.out)
            .with_context(|| format!("{}: no output at {}", self.name, self.out.display()))?;
        if !meta.is_dir() {
            return fs::read(&self.out).with_context(|| format!("reading {}", self.out.display()));
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&self.out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut all = Vec::new();
        for f in files {
            all.extend(fs::read(&f)?);
        }
        Ok(all)
    }
}

fn remove_output(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    Ok(())
}

fn warm_cache(paths: &[PathBuf]) -> Result<u64> {
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    for p in paths {
        let mut f = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

fn main() -> ExitCode {
    run_main("wordcount-bench", run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    if let Some(paths) = &args.baseline_wc {
        let out = baseline::wordcount_files(&paths[1..])?;
        return fs::write(&paths[0], out).with_context(|| format!("writing {}", paths[0].display()));
    }
    if args.render {
        spillway_bench::report::render_dir(&args.results)?;
        println!("rendered {}", args.results.display());
        return Ok(());
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let size = if args.quick { 64 << 20 } else { args.size };
    let spec = CorpusSpec::new(size, args.files, args.seed);
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-data").join(format!("wordcount-{}", size_label(size))));
    let spillway = find_spillway(args.spillway.clone())?;

    // 1. Corpus and page cache.
    let t = Instant::now();
    let (inputs, generated) = corpus::ensure_corpus(&data, &spec)
        .with_context(|| format!("preparing the corpus in {}", data.display()))?;
    if generated {
        println!(
            "generated {} corpus in {} files in {:.2} s",
            format_size(size),
            inputs.len(),
            t.elapsed().as_secs_f64()
        );
    } else {
        println!("reusing the {} corpus in {}", format_size(size), data.display());
    }
    let input_bytes = warm_cache(&inputs)?;

    // 2. Systems.
    let out_dir = data.join("out");
    let setup = Setup {
        inputs,
        threads: args.threads,
        spill: data.join("spill"),
        metrics: data.join("spillway-metrics.json"),
    };
    fs::create_dir_all(&out_dir)?;
    fs::create_dir_all(&setup.spill)?;
    let mut notes = Vec::new();
    let t = args.threads;
    let mut kinds: Vec<(String, Kind, CountFormat)> = vec![
        (format!("spillway wordcount --ascii -t {t}"), Kind::Spillway(spillway), CountFormat::Tsv),
        ("baseline: 1 thread, mmap + HashMap".into(), Kind::Baseline, CountFormat::Tsv),
    ];
    match peers::mrmpi(MrMpi::WordCount) {
        Ok(bin) => kinds.push((format!("MR-MPI (mpirun -n {t})"), Kind::MrMpi(bin), CountFormat::Tsv)),
        Err(note) => notes.push(format!("MR-MPI skipped: {note}")),
    }
    for which in [Python::Polars, Python::DuckDb] {
        match peers::python(which) {
            Ok((python, script, version)) => {
                let name = format!(
                    "{} {version} ({t} threads)",
                    if which == Python::Polars { "Polars" } else { "DuckDB" }
                );
                kinds.push((name, Kind::Python(python, script), CountFormat::Tsv));
            }
            Err(note) => notes.push(format!("{which:?} skipped: {note}")),
        }
    }
    if !args.no_coreutils {
        kinds.push(("`tr | LC_ALL=C sort | uniq -c`".into(), Kind::Coreutils, CountFormat::UniqC));
    }
    let mut systems: Vec<System> = kinds
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind, format))| System {
            name,
            kind,
            format,
            out: out_dir.join(format!("system-{i}.out")),
            runs: Vec::new(),
            failure: None,
        })
        .collect();
    for n in &notes {
        println!("note: {n}");
    }

    // 3. Rounds; each runs every system once, the order rotates.
    let load_before = runner::load_average();
    let mut phases = Vec::new();
    let n = systems.len();
    for round in 0..args.runs {
        for k in 0..n {
            let p = &mut systems[(round + k) % n];
            if p.failure.is_some() {
                continue;
            }
            remove_output(&p.out)?;
            let _ = fs::remove_file(&setup.metrics);
            let m = runner::run_measured(&mut p.command(&setup)?)?;
            eprintln!(
                "round {}/{}: {:<40} {:>8.2} s  {:>8.1} MiB  {}",
                round + 1,
                args.runs,
                p.name,
                m.wall.as_secs_f64(),
                m.max_rss_mib(),
                m.status
            );
            if !m.status.success() {
                p.failure = Some(format!("failed ({})", m.status));
                continue;
            }
            if matches!(p.kind, Kind::Spillway(_)) {
                phases = spillway_phases(&setup.metrics)?;
            }
            p.runs.push(m);
        }
    }

    // 4. Outputs, against spillway's.
    let mut canonical: Vec<Option<Vec<u8>>> = Vec::new();
    for p in &mut systems {
        let c = if p.failure.is_none() {
            Some(p.read_output().and_then(|raw| normalize::normalize(&raw, p.format)))
        } else {
            None
        };
        match c {
            Some(Ok(c)) => canonical.push(Some(c)),
            Some(Err(e)) => {
                p.failure = Some(format!("unreadable output: {e:#}"));
                canonical.push(None);
            }
            None => canonical.push(None),
        }
    }
    let reference = canonical[0].clone();
    let mut rows = Vec::new();
    for (i, p) in systems.iter().enumerate() {
        if let Some(f) = &p.failure {
            notes.push(format!("{}: {f}", p.name));
        }
        if p.runs.is_empty() {
            continue;
        }
        let identical = match (&reference, &canonical[i]) {
            _ if i == 0 => None,
            (Some(a), Some(b)) => {
                if let Some(d) = normalize::first_difference(a, b) {
                    notes.push(format!(
                        "{} differs from spillway at line {}: {:?} vs {:?}",
                        p.name, d.line, d.left, d.right
                    ));
                }
                Some(a == b)
            }
            _ => Some(false),
        };
        rows.push(Row::from_runs(
            &p.name,
            &p.runs,
            input_bytes,
            identical,
            if i == 0 { phases.clone() } else { Vec::new() },
        ));
    }
    notes.push(
        "MB/s = input bytes / 10^6 / median wall; user and sys CPU include every child process; peak RSS is \
         the largest single process (ru_maxrss of wait4: for MR-MPI one rank, for the pipeline its largest \
         member; the baseline's includes its mapped input)."
            .into(),
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut summary = String::new();
    if let Some(base) = &reference {
        let pairs = normalize::parse_counts(base, CountFormat::Tsv)?;
        let words: u64 = pairs.iter().map(|(_, c)| c).sum();
        summary = format!(" ({words} words, {} distinct)", pairs.len());
    }
    let section = Section {
        workload: "wordcount".into(),
        title: format!(
            "Word count, {} corpus in {} files{summary}",
            format_size(input_bytes),
            setup.inputs.len()
        ),
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
    println!(
        "\nresults in {} (RESULTS.md, index.html); outputs in {}",
        args.results.display(),
        out_dir.display()
    );
    if section.rows.iter().any(|r| r.identical == Some(false)) || systems.iter().any(|p| p.failure.is_some())
    {
        bail!("some outputs differ from spillway's or failed (see the notes)");
    }
    Ok(())
}

/// Spillway's phase times from its metrics file.
fn spillway_phases(metrics: &Path) -> Result<Vec<(String, f64)>> {
    let json: serde_json::Value = serde_json::from_slice(&fs::read(metrics)?)?;
    Ok(["map", "exchange", "merge", "reduce"]
        .iter()
        .map(|p| (p.to_string(), json["seconds"][p].as_f64().unwrap_or(0.0)))
        .collect())
}
