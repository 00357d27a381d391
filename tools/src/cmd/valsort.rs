//! `spillway valsort`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use spillway_tools::records::valsort;

use super::common::parse_positive;

/// Arguments of `spillway valsort`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Threads for the parallel CRC-32 [default: number of CPUs].
    #[arg(long, short = 't', value_name = "N", value_parser = parse_positive)]
    threads: Option<usize>,
    /// The file of 100-byte records to validate.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    // Standard error is locked only to write the report: validating can block (a FIFO with
    // no writer yet), and the signal handler must still be able to print while it does. A
    // report that cannot be written does not change valsort's exit status.
    let code = match valsort::validate_file(&args.file, threads) {
        Ok(report) => {
            let _ = report.write_report(&mut std::io::stderr().lock());
            report.exit_code()
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "{e}");
            e.exit_code()
        }
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
