//! `spillway sort`: TeraSort-style sort of fixed-size records.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use spillway_engine::Progress;
use spillway_engine::sort::{RecordShape, RecordSortJob, sample_partitioner, sort_records};

use super::common::{JobOptions, ProgressBar, UsageError, finish_status, parse_positive};

/// Arguments of `spillway sort`. The shared job options that mean something else here, or
/// only with --generic, get their own help.
#[derive(Debug, clap::Args)]
#[command(
    mut_arg("partitions", |a| a.help(
        "Number of part files R (1 to 1048576) with --out-dir, range-partitioned so that they \
         concatenate in order; with --generic also the reduce parallelism"
    )),
    mut_arg("memory", |a| a.help(format!(
        "Memory budget (e.g. 1M, 512M, 2G; at least 64K): the input is sorted in memory when its \
         records fit (record size + 18 bytes each, plus write buffers), otherwise in sorted runs \
         under --spill-dir that are then merged {}",
        super::common::memory_default_help()
    ))),
    mut_arg("split_size", |a| a.help(
        "With --generic only: the target split size of the engine's map phase [default: input / \
         (8 x threads), between 1M and 64M]"
    )),
    mut_arg("io", |a| a.help("With --generic only: how the engine writes spill runs and outputs (std, uring, auto)")),
    mut_arg("out", |a| a.help(
        "Write the sorted records into FILE, replaced atomically [default: standard output]. FILE \
         may be one of the inputs: it is then sorted in place, as with GNU sort -o (the input is \
         read whole before the output replaces it)"
    )),
)]
pub struct Args {
    /// Record length in bytes (Sort Benchmark records: 100).
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = parse_positive)]
    record_size: usize,
    /// Key length in bytes: records go in key order (unsigned bytes), equal keys in the order of
    /// the rest of the record (so the output is the records in byte order; input order is not
    /// kept). The key decides what counts as a duplicate key in the metrics.
    #[arg(long, value_name = "BYTES", default_value_t = 10, value_parser = parse_positive)]
    key_size: usize,
    /// Run as a generic MapReduce job through the engine (whole records as keys, a sampled
    /// range partitioner, the engine's spills and merges) instead of the specialized record
    /// sorter. Same output, several times slower. --resume takes this path too (the engine's
    /// runs are what a resumable job journals).
    #[arg(long)]
    generic: bool,
    /// Do not fsync the output (the file, or the part files and _SUCCESS) before putting it in
    /// place (faster; a crash soon after may lose it, never leaving part of it under its final
    /// name). Applies to --generic too.
    #[arg(long)]
    no_sync: bool,
    #[command(flatten)]
    job: JobOptions,
    /// Input files or directories of records (directories are read recursively, skipping
    /// names that start with '.' or '_'); sorted together.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Under mpirun the sort runs through the engine across the ranks (range-partitioned, so
    // rank order is key order). (A build without MPI refuses to start as one of several
    // ranks: `cmd::run`.)
    let parallel = super::launch::detect().is_some_and(|launch| launch.is_parallel());
    if args.key_size > args.record_size {
        let (key, record) = (args.key_size, args.record_size);
        return Err(UsageError(format!("--key-size {key} is longer than --record-size {record}")).into());
    }
    let mut args = args;
    args.job.out_may_be_input = true;
    args.job.name = "sort"; // sorting a file in place, as GNU sort -o does
    let job = &args.job;
    // One engine for both paths: its settings are set and checked in one place.
    let builder = job.engine_builder(1).sync(!args.no_sync);
    if args.generic || parallel || job.resume {
        let inputs = job.inputs(&args.inputs)?;
        // Before sampling reads the inputs (the job checks them again when it starts).
        job.check_paths(&inputs)?;
        // The ranks are not started yet: their number comes from the launcher (one when it
        // does not say, as under a bare PMIx launcher; -r then decides).
        let ranks = super::launch::detect().and_then(|launch| launch.size).unwrap_or(1);
        let ranks = usize::try_from(ranks).unwrap_or(usize::MAX);
        let partitioner = sample_partitioner(&inputs, args.record_size, job.partitions(ranks))?;
        return job.run_job_with(
            builder,
            &RecordSortJob { record_size: args.record_size },
            &inputs,
            Some(&partitioner),
        );
    }
    let progress = Arc::new(Progress::default());
    let engine = builder.progress(Arc::clone(&progress)).build().map_err(UsageError::from)?;
    let shape = RecordShape { record_size: args.record_size, key_size: args.key_size };
    let inputs = job.inputs(&args.inputs)?;
    let output = job.check_paths(&inputs)?;
    let status = job.start_status(&progress, (0, 1))?;
    let report = job.start_report(&progress, (0, 1))?;
    let bar =
        (!job.quiet && std::io::stderr().is_terminal()).then(|| ProgressBar::start(Arc::clone(&progress)));
    let result = sort_records(&engine, &inputs, &output, shape).map_err(anyhow::Error::from);
    if let Some(bar) = bar {
        bar.finish();
    }
    if let Some(report) = report {
        report.finish_with(&result, result.as_ref().ok().map(|m| m.job.clone()));
    }
    let metrics = finish_status(status.as_deref(), result)?;
    let json = serde_json::to_string_pretty(&metrics).expect("metrics serialize");
    if !job.quiet {
        super::common::eprint_line(json);
    }
    Ok(ExitCode::SUCCESS)
}
