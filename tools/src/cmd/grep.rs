//! `spillway grep`.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway_engine::jobs::Grep;

use super::common::{InputError, JobOptions};

/// Arguments of `spillway grep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: JobOptions,
    /// A regular expression (Rust `regex` syntax; `^` and `$` match at line boundaries).
    #[arg(value_name = "PATTERN")]
    pattern: String,
    /// Input files or directories.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let inputs = args.job.inputs(&args.inputs)?;
    let job = Grep::new(&args.pattern, &inputs).map_err(|e| InputError(format!("invalid pattern: {e}")))?;
    args.job.run_job(&job, &inputs)
}
