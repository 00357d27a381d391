//! The reference single-threaded word count: mmap + byte class table +
//! `HashMap<&[u8], u64, ahash::RandomState>`, output sorted by word.
//!
//! `wc-baseline --out FILE INPUT...` writes `word<TAB>count\n` lines sorted by
//! word in byte order; words are maximal runs of `[A-Za-z]`, case kept.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use spillway_bench::baseline;

/// Count words (maximal runs of [A-Za-z]) in the input files.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Output file (`word<TAB>count` lines sorted by word).
    #[arg(long)]
    out: PathBuf,
    /// Print timing and counts to stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Input files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    spillway_bench::run_main("wc-baseline", run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let inputs = baseline::MappedInputs::open(&args.inputs)?;
    let mut counts = baseline::new_counts(1 << 16);
    for data in inputs.slices() {
        baseline::count_words(data, &mut counts);
    }
    let counted = start.elapsed();
    let out = baseline::render_sorted(&counts);
    std::fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;
    if args.verbose {
        eprintln!(
            "wc-baseline: {} bytes, {} distinct words, count {:.3} s, total {:.3} s",
            inputs.total_len(),
            counts.len(),
            counted.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
