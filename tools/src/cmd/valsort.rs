//! `spillway valsort`.

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
    let mut stderr = std::io::stderr().lock();
    match valsort::validate_file(&args.file, threads) {
        Ok(report) => {
            report.write_report(&mut stderr)?;
            Ok(ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(1)))
        }
        Err(e) => {
            use std::io::Write;
            writeln!(stderr, "{e}")?;
            Ok(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1)))
        }
    }
}
