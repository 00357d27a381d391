//! Generates the deterministic English-like benchmark corpus.
//!
//! `cargo run -p spillway-bench --release --bin gen-corpus -- --size 1G --files 8 --out DIR`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use spillway_bench::corpus::{self, CorpusSpec, Vocabulary};
use spillway_bench::{format_size, parse_size};

/// Generate a deterministic English-like text corpus (Zipf word frequencies).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Total size (bytes, or with a binary K/M/G/T suffix).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Number of files to split the corpus into.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// PRNG seed.
    #[arg(long, default_value_t = corpus::DEFAULT_SEED)]
    seed: u64,
    /// Number of distinct vocabulary entries.
    #[arg(long, default_value_t = corpus::DEFAULT_VOCAB_SIZE)]
    vocab: usize,
    /// Regenerate even if the directory already holds a matching corpus.
    #[arg(long)]
    force: bool,
    /// Print vocabulary statistics.
    #[arg(long)]
    stats: bool,
}

fn main() -> std::process::ExitCode {
    spillway_bench::run_main("gen-corpus", run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let spec =
        CorpusSpec { total_bytes: args.size, files: args.files, seed: args.seed, vocab_size: args.vocab };
    if args.stats {
        let t = Instant::now();
        let s = Vocabulary::new(spec.seed, spec.vocab_size).stats();
        eprintln!("vocabulary built in {:.3} s", t.elapsed().as_secs_f64());
        println!(
            "vocabulary: {} words ({} proper nouns), lengths {}..={}, mean type length {:.2}, \
             expected token length {:.2}, top word share {:.2} %",
            s.words,
            s.proper_nouns,
            s.min_len,
            s.max_len,
            s.mean_type_len,
            s.mean_token_len,
            s.top_word_share * 100.0
        );
        let hist: Vec<String> = s
            .type_len_histogram
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(l, c)| format!("{l}:{c}"))
            .collect();
        println!("type length histogram: {}", hist.join(" "));
    }
    if !args.force
        && let Some(paths) = corpus::existing_corpus(&args.out, &spec)
    {
        println!(
            "{}: matching corpus already present ({} files, {}); use --force to regenerate",
            args.out.display(),
            paths.len(),
            format_size(spec.total_bytes)
        );
        return Ok(());
    }
    let t = Instant::now();
    let (paths, _) = if args.force {
        (corpus::write_corpus_with(&args.out, &spec)?, true)
    } else {
        corpus::ensure_corpus(&args.out, &spec)?
    };
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {} in {} files to {} in {:.2} s ({:.0} MB/s)",
        format_size(spec.total_bytes),
        paths.len(),
        args.out.display(),
        secs,
        spec.total_bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}
