//! `spillway gen records`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use spillway_tools::records::gensort;

use super::common::{UsageError, parse_positive};

/// Arguments of `spillway gen records`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ASCII records (gensort -a): printable keys, CRLF line ends.
    #[arg(long, short = 'a')]
    ascii: bool,
    /// First record number B (gensort -bB).
    #[arg(long, short = 'b', value_name = "B", default_value_t = 0)]
    start: u128,
    /// Generator threads [default: number of CPUs].
    #[arg(long, short = 't', value_name = "N", value_parser = parse_positive)]
    threads: Option<usize>,
    /// Number of records N.
    #[arg(value_name = "N")]
    count: u64,
    /// Output file: a regular file is replaced atomically (written under a temporary name next
    /// to it, renamed into place when complete); a device or FIFO is written in place.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Refuse what cannot work before touching any file.
    gensort::file_len(args.start, args.count).map_err(|e| UsageError(e.to_string()))?;
    spillway_engine::file_destination(&args.file)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    gensort::generate_file(&args.file, args.start, args.count, args.ascii, threads)
        .with_context(|| format!("writing {}", args.file.display()))?;
    Ok(ExitCode::SUCCESS)
}
