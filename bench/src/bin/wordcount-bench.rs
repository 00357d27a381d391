//! Word-count macro benchmark: Spillway vs. the single-threaded baseline vs.
//! a coreutils pipeline.
//!
//! `cargo run -p spillway-bench --release --bin wordcount-bench -- --size 1G --data DIR [--spillway PATH] [--runs 3]`
//!
//! 1. Generates the corpus into `--data` unless a matching one (same size,
//!    files, seed, generator version; see the manifest) is already there.
//! 2. Warms the page cache by reading every input file once.
//! 3. Runs each program once per round, rotating the order every round:
//!    `spillway wordcount --ascii --threads N --quiet --out OUT INPUT...`
//!    (skipped with a note if the binary is missing), `wc-baseline`, and
//!    `cat INPUT... | tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c`.
//! 4. Prints a Markdown table (median wall time, throughput, peak RSS, CPU
//!    time, speedup vs. the baseline) and whether all normalized outputs are
//!    identical.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use spillway_bench::corpus::{self, CorpusSpec};
use spillway_bench::normalize::{self, CountFormat};
use spillway_bench::runner::{self, Measurement};
use spillway_bench::table::{Align, Table};
use spillway_bench::{format_size, parse_size, size_label};

/// Size used by `--quick`.
const QUICK_SIZE: u64 = 64 << 20;

/// Word-count macro benchmark (Spillway vs. baseline vs. coreutils).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Corpus size (bytes or K/M/G suffix, binary) [default: 1G, or 64M with --quick].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Smoke run: 64 MiB corpus unless --size is given.
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
    /// The spillway binary [default: `spillway` next to this executable].
    #[arg(long)]
    spillway: Option<PathBuf>,
    /// The wc-baseline binary [default: `wc-baseline` next to this executable].
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Measured runs per program.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// `--threads` passed to spillway.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip the coreutils pipeline (it is by far the slowest).
    #[arg(long)]
    no_coreutils: bool,
}

#[derive(Debug)]
enum Kind {
    Spillway(PathBuf),
    Baseline(PathBuf),
    Coreutils,
}

#[derive(Debug)]
struct Program {
    name: &'static str,
    kind: Kind,
    format: CountFormat,
    out: PathBuf,
    runs: Vec<Measurement>,
    failure: Option<String>,
}

/// The coreutils pipeline; `$1` is the output file, the rest are inputs.
const COREUTILS_SCRIPT: &str =
    r#"out=$1; shift; cat -- "$@" | tr -cs A-Za-z '\n' | LC_ALL=C sort | uniq -c > "$out""#;

impl Program {
    fn command(&self, inputs: &[PathBuf], threads: usize) -> Command {
        let mut cmd = match &self.kind {
            Kind::Spillway(bin) => {
                let mut c = Command::new(bin);
                c.args(["wordcount", "--ascii", "--threads", &threads.to_string(), "--quiet"])
                    .arg("--out")
                    .arg(&self.out)
                    .args(inputs);
                c
            }
            Kind::Baseline(bin) => {
                let mut c = Command::new(bin);
                c.arg("--out").arg(&self.out).args(inputs);
                c
            }
            Kind::Coreutils => {
                let mut args = vec![self.out.clone()];
                args.extend(inputs.iter().cloned());
                let mut c = runner::shell_command(COREUTILS_SCRIPT, args);
                c.env("LC_ALL", "C");
                c
            }
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The program's output; a directory output (e.g. part files) is read as
    /// the concatenation of its files in name order.
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

fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    Ok(exe.parent().map_or_else(|| PathBuf::from(name), |d| d.join(name)))
}

fn warm_cache(paths: &[PathBuf]) -> Result<(u64, Duration)> {
    let start = Instant::now();
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
    Ok((total, start.elapsed()))
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 { format!("{s:.3}") } else { format!("{s:.2}") }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let size = args.size.unwrap_or(if args.quick { QUICK_SIZE } else { 1 << 30 });
    let spec = CorpusSpec::new(size, args.files, args.seed);
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-data").join(format!("wordcount-{}", size_label(size))));

    // 1. Corpus.
    let load_before = load_average();
    let t = Instant::now();
    let (inputs, generated) = corpus::ensure_corpus(&data, &spec)
        .with_context(|| format!("preparing the corpus in {}", data.display()))?;
    if generated {
        let s = t.elapsed().as_secs_f64();
        println!(
            "generated {} corpus in {} files in {:.2} s ({:.0} MB/s)",
            format_size(size),
            inputs.len(),
            s,
            size as f64 / 1e6 / s.max(1e-9)
        );
    } else {
        println!("reusing the {} corpus in {}", format_size(size), data.display());
    }

    // 2. Page cache.
    let (input_bytes, warm) = warm_cache(&inputs)?;
    println!("page cache warmed: read {} in {:.2} s", format_size(input_bytes), warm.as_secs_f64());

    // 3. Programs.
    let out_dir = data.join("out");
    fs::create_dir_all(&out_dir)?;
    let mut programs = Vec::new();
    let spillway = match &args.spillway {
        Some(p) => p.clone(),
        None => sibling_binary("spillway")?,
    };
    if spillway.is_file() {
        programs.push(Program {
            name: "spillway",
            kind: Kind::Spillway(spillway),
            format: CountFormat::Auto,
            out: out_dir.join("spillway.out"),
            runs: Vec::new(),
            failure: None,
        });
    } else {
        println!(
            "note: spillway binary not found at {} — skipped (build it with \
             `cargo build --release -p spillway-tools`, or pass --spillway PATH)",
            spillway.display()
        );
    }
    let baseline = match &args.baseline {
        Some(p) => p.clone(),
        None => sibling_binary("wc-baseline")?,
    };
    if !baseline.is_file() {
        bail!("wc-baseline not found at {} (cargo build --release -p spillway-bench)", baseline.display());
    }
    programs.push(Program {
        name: "wc-baseline",
        kind: Kind::Baseline(baseline),
        format: CountFormat::Tsv,
        out: out_dir.join("wc-baseline.out"),
        runs: Vec::new(),
        failure: None,
    });
    if !args.no_coreutils {
        programs.push(Program {
            name: "coreutils",
            kind: Kind::Coreutils,
            format: CountFormat::UniqC,
            out: out_dir.join("coreutils.out"),
            runs: Vec::new(),
            failure: None,
        });
    }

    // 4. Rounds; each round runs every program once, the order rotates.
    let n = programs.len();
    for round in 0..args.runs {
        for k in 0..n {
            let p = &mut programs[(round + k) % n];
            if p.failure.is_some() {
                continue;
            }
            remove_output(&p.out)?;
            let m = runner::run_measured(&mut p.command(&inputs, args.threads))?;
            eprintln!(
                "round {}/{}: {:<12} {:>8} s  {:>8.1} MiB  {}",
                round + 1,
                args.runs,
                p.name,
                secs(m.wall),
                m.max_rss_mib(),
                m.status
            );
            if m.status.success() {
                p.runs.push(m);
            } else {
                p.failure = Some(format!("failed ({})", m.status));
            }
        }
    }

    // 5. Outputs.
    let mut canonical: Vec<Option<Vec<u8>>> = Vec::new();
    for p in &mut programs {
        if p.failure.is_some() {
            canonical.push(None);
            continue;
        }
        let raw = p.read_output()?;
        match normalize::normalize(&raw, p.format) {
            Ok(c) => {
                if p.name == "wc-baseline" && c != raw {
                    println!("warning: wc-baseline output is not in canonical form");
                }
                canonical.push(Some(c));
            }
            Err(e) => {
                p.failure = Some(format!("unparsable output: {e:#}"));
                canonical.push(None);
            }
        }
    }
    let base_idx = programs.iter().position(|p| p.name == "wc-baseline").expect("baseline is always present");

    // 6. Report.
    println!();
    println!(
        "Word count, {} in {} files ({} bytes), {} run(s) per program, {} CPUs",
        format_size(input_bytes),
        inputs.len(),
        input_bytes,
        args.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(base) = &canonical[base_idx] {
        let pairs = normalize::parse_counts(base, CountFormat::Tsv)?;
        let words: u64 = pairs.iter().map(|(_, c)| c).sum();
        let letters: u64 = pairs.iter().map(|(w, c)| w.len() as u64 * c).sum();
        println!(
            "corpus: {} words, {} distinct, mean word length {:.2}",
            words,
            pairs.len(),
            letters as f64 / words.max(1) as f64
        );
    }
    println!();
    let base_median = programs[base_idx].runs.first().map(|_| runner::median(&walls(&programs[base_idx])));
    let mut table = Table::new([
        "program",
        "median wall (s)",
        "min–max (s)",
        "MB/s",
        "peak RSS (MiB)",
        "user+sys (s)",
        "speedup vs wc-baseline",
    ]);
    for col in 1..7 {
        table.align(col, Align::Right);
    }
    for p in &programs {
        if let Some(f) = &p.failure
            && p.runs.len() < args.runs
        {
            table.row([p.name.to_string(), f.clone()]);
            continue;
        }
        let w = walls(p);
        let med = runner::median(&w);
        let cpu = runner::median(&p.runs.iter().map(Measurement::cpu).collect::<Vec<_>>());
        let rss = p.runs.iter().map(|m| m.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let speedup =
            base_median.map_or("-".to_string(), |b| format!("{:.2}×", b.as_secs_f64() / med.as_secs_f64()));
        let name = match (&p.kind, &p.failure) {
            (_, Some(_)) => format!("{} (bad output)", p.name),
            (Kind::Coreutils, _) => "coreutils `tr | sort | uniq -c`".to_string(),
            (Kind::Spillway(_), _) => format!("spillway ({} threads)", args.threads),
            _ => p.name.to_string(),
        };
        table.row([
            name,
            secs(med),
            format!("{}–{}", secs(*w.iter().min().unwrap()), secs(*w.iter().max().unwrap())),
            format!("{:.0}", input_bytes as f64 / 1e6 / med.as_secs_f64()),
            format!("{rss:.1}"),
            secs(cpu),
            speedup,
        ]);
    }
    table.print();
    println!();
    println!(
        "MB/s = input bytes / 10^6 / median wall; user+sys = median CPU time (children included); \
         peak RSS = max ru_maxrss over the runs: for wc-baseline it includes the mmapped input \
         (page-cache pages, not heap), for the coreutils pipeline it is its largest single process."
    );
    println!("1-min load average before/after the runs: {load_before} / {}", load_average());
    println!();

    // 7. Output equality.
    let ok: Vec<usize> = (0..programs.len()).filter(|&i| canonical[i].is_some()).collect();
    let mut differ = Vec::new();
    for &i in &ok {
        if i == base_idx {
            continue;
        }
        if let (Some(a), Some(b)) = (&canonical[base_idx], &canonical[i])
            && let Some(d) = normalize::first_difference(a, b)
        {
            differ.push(format!(
                "{} differs from wc-baseline at line {}: {:?} vs {:?}",
                programs[i].name, d.line, d.left, d.right
            ));
        }
    }
    for p in &programs {
        if let Some(f) = &p.failure {
            differ.push(format!("{}: {}", p.name, f));
        }
    }
    if differ.is_empty() {
        let names: Vec<&str> = ok.iter().map(|&i| programs[i].name).collect();
        println!("outputs identical (after normalization): yes — {}", names.join(", "));
    } else {
        println!("outputs identical (after normalization): NO");
        for d in &differ {
            println!("  - {d}");
        }
    }
    println!("outputs kept in {}", out_dir.display());
    if !differ.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// The 1-minute load average from /proc/loadavg ("?" if unavailable); the
/// numbers are only meaningful on an otherwise idle machine.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn walls(p: &Program) -> Vec<Duration> {
    p.runs.iter().map(|m| m.wall).collect()
}
