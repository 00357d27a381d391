//! `spillway wordcount` and `spillway index`: the two jobs over the words of text files,
//! which take the same arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway_engine::jobs::{InvertedIndex, WordCount};
use spillway_engine::text::WordMode;

use super::common::JobOptions;

/// The help of `wordcount`'s INPUT.
pub const WORDCOUNT_INPUTS: &str = "Input files or directories (directories are read recursively, skipping \
    names that start with '.' or '_'); their words are counted together";

/// The help of `index`'s INPUT.
pub const INDEX_INPUTS: &str = "Input files or directories (directories are read recursively, skipping \
    names that start with '.' or '_'); each file is one document, named in the output by its path \
    (as given, or the directory as given joined with the path inside it)";

/// Arguments of `spillway wordcount` and `spillway index`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Words are maximal runs of ASCII letters [A-Za-z] only (faster). By default a word is a
    /// maximal run of Unicode letters (general category L*); invalid UTF-8 separates words.
    #[arg(long)]
    ascii: bool,
    #[command(flatten)]
    job: JobOptions,
    /// Input files or directories (each command sets its own help: [`WORDCOUNT_INPUTS`],
    /// [`INDEX_INPUTS`]).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

impl Args {
    fn mode(&self) -> WordMode {
        if self.ascii { WordMode::Ascii } else { WordMode::Unicode }
    }
}

/// `spillway wordcount`.
pub fn wordcount(mut args: Args) -> anyhow::Result<ExitCode> {
    args.job.name = "wordcount";
    let inputs = args.job.inputs(&args.inputs)?;
    args.job.run_job(&WordCount { mode: args.mode() }, &inputs)
}

/// `spillway index`.
pub fn index(mut args: Args) -> anyhow::Result<ExitCode> {
    args.job.name = "index";
    let inputs = args.job.inputs(&args.inputs)?;
    args.job.run_job(&InvertedIndex::new(&inputs, args.mode()), &inputs)
}
