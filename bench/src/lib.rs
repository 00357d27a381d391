//! Spillway's macro-benchmark infrastructure (word count).
//!
//! * [`corpus`]: a deterministic English-like text corpus generator
//!   ([`write_corpus`]); binary `gen-corpus`.
//! * [`baseline`]: the reference single-threaded word count that Spillway is
//!   compared against; binary `wc-baseline`.
//! * [`runner`]: spawning and measuring child processes and shell pipelines
//!   ([`run_measured`], [`Measurement`]).
//! * [`normalize`]: turning outputs of different word counters into one
//!   canonical, byte-comparable form.
//! * [`table`]: aligned Markdown tables ([`Table`]).
//! * [`scaling`]: the model of the exchange at P ranks; binary `scale-model`.
//! * [`peers`]: the systems the benchmarks compare with (MR-MPI, Polars, DuckDB), found or
//!   built, or skipped with a note.
//! * [`report`]: the results directory: Markdown tables, an HTML page with SVG charts.
//!
//! The driver is the binary `wordcount-bench`.

pub mod baseline;
pub mod corpus;
pub mod direct;
pub mod normalize;
pub mod peers;
pub mod report;
pub mod runner;
pub mod scaling;
pub mod table;

pub use corpus::{CorpusSpec, write_corpus};
pub use runner::{Measurement, run_measured};
pub use table::Table;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

/// Runs a benchmark's `main`: an error is one line on standard error (`NAME: error: ...`, the
/// causes joined by `: `, never a backtrace) and exit status 1.
pub fn run_main(name: &str, body: impl FnOnce() -> Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A binary of this workspace beside the running executable (`target/release/NAME`).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    Ok(exe.parent().map_or_else(|| PathBuf::from(name), |d| d.join(name)))
}

/// The spillway binary: `given`, or `spillway` beside this executable, built with cargo (in
/// the profile of this executable) when it is missing, as on a fresh clone after
/// `cargo run -p spillway-bench --bin ...`.
pub fn find_spillway(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("no spillway binary at {}", path.display());
        }
        return Ok(path);
    }
    let bin = sibling_binary("spillway")?;
    if !bin.exists() {
        eprintln!("building the spillway binary (cargo build -p spillway-tools) ...");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "spillway-tools", "--bin", "spillway"]);
        if bin.parent().and_then(Path::file_name).is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = bin.parent().and_then(Path::parent) {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status().context("running cargo build for the spillway binary")?;
        if !status.success() || !bin.exists() {
            bail!(
                "no spillway binary at {} (build it with `cargo build --release -p spillway-tools`, \
                 or pass --spillway PATH)",
                bin.display()
            );
        }
    }
    Ok(bin)
}

/// Parses a byte size: a plain number of bytes, or a number with a binary
/// suffix `K`, `M`, `G` or `T` (powers of 1024; `KiB`, `MB`, `k`... are
/// accepted too, all binary). Fractions are allowed with a suffix (`1.5G`).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => bail!("bad size {text:?}: unknown suffix {suffix:?} (use K, M, G or T)"),
    };
    if num.is_empty() {
        bail!("bad size {text:?}: no number");
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift).ok_or_else(|| anyhow::anyhow!("size {text:?} too large"));
    }
    let f: f64 = num.parse().map_err(|_| anyhow::anyhow!("bad size {text:?}"))?;
    if shift == 0 {
        bail!("bad size {text:?}: fractional byte count");
    }
    Ok((f * (1u64 << shift) as f64).round() as u64)
}

/// Formats a byte count with a binary unit (`1.00 GiB`, `64.0 MiB`, `512 B`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else if v < 10.0 {
        format!("{v:.2} {}", UNITS[u])
    } else if v < 100.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// A compact label for a byte count, as accepted by [`parse_size`]:
/// `1G`, `64M`, `4K` when the size is a whole multiple, else the plain number.
pub fn size_label(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1gib").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1.5").is_err());
        assert_eq!(format_size(1 << 30), "1.00 GiB");
        assert_eq!(format_size(64 << 20), "64.0 MiB");
        assert_eq!(format_size(100), "100 B");
        assert_eq!(size_label(1 << 30), "1G");
        assert_eq!(size_label(64 << 20), "64M");
        assert_eq!(size_label(3 << 29), "1536M");
        assert_eq!(size_label(1000), "1000");
        assert_eq!(parse_size(&size_label(3 << 29)).unwrap(), 3 << 29);
    }
}
