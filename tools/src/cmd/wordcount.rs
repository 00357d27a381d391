//! `spillway wordcount`.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway_engine::jobs::WordCount;
use spillway_engine::text::WordMode;

use super::common::JobOptions;

/// Arguments of `spillway wordcount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Count runs of ASCII letters [A-Za-z] only (faster). By default a word is a maximal run
    /// of Unicode letters (general category L*); invalid UTF-8 separates words.
    #[arg(long)]
    ascii: bool,
    #[command(flatten)]
    job: JobOptions,
    /// Input files or directories (directories are read recursively, skipping names that
    /// start with '.' or '_').
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inputs = args.job.inputs(&args.inputs)?;
    let mode = if args.ascii { WordMode::Ascii } else { WordMode::Unicode };
    args.job.run_job(&WordCount { mode }, &inputs)
}
