//! The `spillway` command-line tool.
#![forbid(unsafe_code)]

mod cmd;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use cmd::eprint_line;

/// Exit status for usage errors (bad flags or arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit status for bad input: missing or unreadable paths, malformed records, an output
/// directory that already holds output.
pub const EXIT_INPUT: u8 = 3;
/// Exit status for failures of the job or the machine: a full disk, a corrupt spill run, a
/// panic in job code.
pub const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    cleanup_on_signals();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Prints a command-line error and returns its exit status: help and version (0) as clap
/// formats them, a flag's bad value on one line naming the flag, other usage errors (missing
/// arguments, unknown flags) with clap's usage text.
fn usage_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::ValueValidation {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        eprint_line(format_args!("spillway: {first}"));
    } else {
        let _ = e.print();
    }
    ExitCode::from(EXIT_USAGE)
}

/// On SIGINT, SIGTERM or SIGHUP: removes the running job's spill directories and
/// uncommitted output files, says so, and exits with 128 + the signal number (130 for
/// Ctrl-C), as a shell reports a process killed by the signal. Committed outputs stay; the
/// output being written never appears under its final name.
fn cleanup_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return; // without the handler the default action (terminate) still applies
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = spillway_engine::cleanup::remove_all();
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            eprint_line(format_args!(
                "\nspillway: interrupted by {name}; {removed} temporary path(s) removed"
            ));
            std::process::exit(128 + signal);
        }
    });
}

/// Prints `spillway: error: ...` with the whole cause chain on one line, and picks the exit
/// status. A broken pipe (output piped into `head`) is not an error.
fn report(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
        if let Some(spillway_engine::Error::Io { source, .. }) =
            cause.downcast_ref::<spillway_engine::Error>()
            && source.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
    }
    eprint_line(format_args!("spillway: error: {}", message(err)));
    ExitCode::from(exit_code(err))
}

/// The whole cause chain of `err` on one line.
pub fn message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// The exit status for `err`: a usage error, bad input or a failure.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| c.is::<cmd::UsageError>() || c.is::<spillway_engine::ConfigError>()) {
        return EXIT_USAGE;
    }
    let input = err.chain().any(|c| {
        c.downcast_ref::<spillway_engine::Error>().is_some_and(spillway_engine::Error::is_input_error)
            || c.is::<cmd::InputError>()
    });
    if input { EXIT_INPUT } else { EXIT_FAILURE }
}
