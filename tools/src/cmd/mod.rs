//! Subcommands, one module each, and the options they share.

mod common;
mod gen_records;
mod grep;
mod inputs_from;
mod launch;
mod report;
mod sort;
mod status;
mod valsort;
mod words;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use common::{InputError, RESUMABLE, UsageError, eprint_line};
pub use report::REPORT;
pub use status::{STATUS, STOP_REQUESTED};

/// The version, with "(mpi)" when built with the `mpi` feature.
const VERSION: &str = if cfg!(feature = "mpi") {
    concat!(env!("CARGO_PKG_VERSION"), " (mpi)")
} else {
    env!("CARGO_PKG_VERSION")
};

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 the job or the machine failed (job code error, full disk, corrupt \
spill run, a thread that cannot start; out of memory, too many open files, file size limit); 2 \
usage error (also settings that cannot work together); 3 bad input (missing or unreadable path, \
malformed records, output directory already holding output, an input changed while the job \
ran); 130 / 143 interrupted by SIGINT / SIGTERM or `spillway ctl --stop` (spill files and the \
unfinished output removed; a --resume job keeps its job directory). `valsort` follows valsort: 0 sorted, 1 not sorted or invalid.";

const STATUS_AFTER_HELP: &str = "\
Exit status: 0 the job is running and responding, or succeeded; 1 it failed or was interrupted; \
3 the status file cannot be read or is not a status file; 4 not responding: the job says it is \
running but its status (or one rank's heartbeat) is older than --stale seconds (killed, or its \
node is gone).";

/// Spillway: a MapReduce engine for HPC clusters. Memory-maps its inputs, spills sorted
/// rkyv runs under a memory budget, merges them under an open-file bound, and writes
/// atomically committed output.
#[derive(Debug, Parser)]
#[command(name = "spillway", version = VERSION, about, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Count words: lines `word<TAB>count`, sorted by word in byte order.
    #[command(after_help = AFTER_HELP, mut_arg("inputs", |a| a.help(words::WORDCOUNT_INPUTS)))]
    Wordcount(words::Args),
    /// Build an inverted index: lines `word<TAB>N<TAB>doc1,doc2,...`.
    #[command(after_help = AFTER_HELP, mut_arg("inputs", |a| a.help(words::INDEX_INPUTS)))]
    Index(words::Args),
    /// Print lines matching a regular expression as `path:line_number:line`, in input order.
    #[command(after_help = AFTER_HELP)]
    Grep(grep::Args),
    /// Sort fixed-size records (Sort Benchmark: 100 bytes, 10-byte keys) into a file or part files.
    #[command(after_help = AFTER_HELP)]
    Sort(sort::Args),
    /// Generate data.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Show the live status of a job started with --status FILE (one screen; a table of ranks
    /// under mpirun), or its JSON with --json.
    #[command(after_help = STATUS_AFTER_HELP)]
    Status(status::StatusArgs),
    /// Control a running job through its --status FILE, from any machine that sees the file:
    /// --stop stops it cleanly.
    #[command(after_help = "Exit status: 0 the request was written; 1 the job is not running; 3 \
the status file cannot be read.")]
    Ctl(status::CtlArgs),
    /// Validate a file of 100-byte sort records like the Sort Benchmark's valsort: prints
    /// valsort's report on standard error and exits 0 when the records are in order.
    Valsort(valsort::Args),
}

#[derive(Debug, Subcommand)]
enum GenCommand {
    /// Sort Benchmark records, byte-identical to gensort 1.5: records B..B+N into FILE.
    Records(gen_records::Args),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // A job started as one of several ranks by a launcher needs the `mpi` feature; without it
    // every rank would run the whole job. `gen records` and `valsort` are per-process tools in
    // every build (the `mpi` build runs them once per rank too), so they run.
    let job = matches!(
        cli.command,
        Command::Wordcount(_) | Command::Index(_) | Command::Grep(_) | Command::Sort(_)
    );
    if job
        && !cfg!(feature = "mpi")
        && let Some(launch) = launch::detect().filter(launch::Launch::is_parallel)
    {
        return Err(UsageError(launch::without_mpi_error(&launch)).into());
    }
    match cli.command {
        Command::Wordcount(args) => words::wordcount(args),
        Command::Index(args) => words::index(args),
        Command::Grep(args) => grep::run(args),
        Command::Sort(args) => sort::run(args),
        Command::Gen(GenCommand::Records(args)) => gen_records::run(args),
        Command::Status(args) => status::status(&args),
        Command::Ctl(args) => status::ctl(&args),
        Command::Valsort(args) => valsort::run(args),
    }
}
