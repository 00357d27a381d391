//! `spillway wordcount` and `spillway index`: the two jobs over the words of text files,
//! which take the same arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway_engine::FileNames;
use spillway_engine::jobs::{InvertedIndex, WordCount};
use spillway_engine::text::WordMode;

use super::common::{JobOptions, UsageError};

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
    /// Read the input paths from LIST while the job runs (`-`: standard input), one per
    /// line, each naming a finished file (or directory), relative paths from the current
    /// directory; blank lines and lines starting with '#' are skipped. Standard input or a
    /// FIFO ends at end of file; a regular LIST, which may still be appended, ends at a line
    /// '#end' or at `spillway ctl STATUS --end-of-input` (with --status STATUS). Output is
    /// that of the same files given up front, in list order. Not with --resume; the split
    /// size defaults to 64M.
    #[arg(long, value_name = "LIST", conflicts_with = "inputs")]
    inputs_from: Option<PathBuf>,
    #[command(flatten)]
    job: JobOptions,
    /// Input files or directories (each command sets its own help: [`WORDCOUNT_INPUTS`],
    /// [`INDEX_INPUTS`]).
    #[arg(required_unless_present = "inputs_from", value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

impl Args {
    fn mode(&self) -> WordMode {
        if self.ascii { WordMode::Ascii } else { WordMode::Unicode }
    }
}

/// Refuses `--inputs-from` with `--resume` (a resumable job's journal records its inputs).
pub fn check_listed(job: &JobOptions) -> Result<(), UsageError> {
    if job.resume {
        return Err(UsageError(
            "--inputs-from cannot be used with --resume: a resumable job's journal records its inputs up \
             front"
                .into(),
        ));
    }
    Ok(())
}

/// `spillway wordcount`.
pub fn wordcount(mut args: Args) -> anyhow::Result<ExitCode> {
    args.job.name = "wordcount";
    let job = WordCount { mode: args.mode() };
    if let Some(list) = &args.inputs_from {
        check_listed(&args.job)?;
        return args.job.run_job_listed(&job, list, &FileNames::default());
    }
    let inputs = args.job.inputs(&args.inputs)?;
    args.job.run_job(&job, &inputs)
}

/// `spillway index`.
pub fn index(mut args: Args) -> anyhow::Result<ExitCode> {
    args.job.name = "index";
    if let Some(list) = &args.inputs_from {
        check_listed(&args.job)?;
        let names = FileNames::default();
        return args.job.run_job_listed(&InvertedIndex::fed(names.clone(), args.mode()), list, &names);
    }
    let inputs = args.job.inputs(&args.inputs)?;
    args.job.run_job(&InvertedIndex::new(&inputs, args.mode()), &inputs)
}
