//! `spillway index`.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway_engine::jobs::InvertedIndex;
use spillway_engine::text::WordMode;

use super::common::JobOptions;

/// Arguments of `spillway index`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Words are runs of ASCII letters [A-Za-z] only (default: Unicode letters).
    #[arg(long)]
    ascii: bool,
    #[command(flatten)]
    job: JobOptions,
    /// Input files or directories; each file is one document, named by its path as given.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inputs = args.job.inputs(&args.inputs)?;
    let mode = if args.ascii { WordMode::Ascii } else { WordMode::Unicode };
    args.job.run_job(&InvertedIndex::new(&inputs, mode), &inputs)
}
