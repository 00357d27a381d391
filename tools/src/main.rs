//! The `spillway` command-line tool.
#![deny(unsafe_code)]

mod cmd;
#[expect(unsafe_code, reason = "the allocator that exits cleanly, and ignoring SIGXFSZ")]
mod sys;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use cmd::eprint_line;
use spillway_engine::Limit;

/// Exit status for usage errors (bad flags or arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit status for bad input: missing or unreadable paths, malformed records, an output
/// directory that already holds output.
pub const EXIT_INPUT: u8 = 3;
/// Exit status for failures of the job or the machine: a full disk, a corrupt spill run, a
/// panic in job code.
pub const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    sys::ignore_file_size_signal();
    report_panics_on_one_line();
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // What the engine cleans up on its own (a dead job's spill directory), one line each.
    spillway_engine::cleanup::set_notice_hook(|notice| eprint_line(format_args!("spillway: {notice}")));
    // A panic that reaches this far unwinds (dropping the job's spill directories and
    // temporary outputs), is printed on one line and exits 1. Panics in job code never get
    // here: the engine catches them per split and returns an error naming the split.
    let result = catch_unwind(AssertUnwindSafe(|| {
        cleanup_on_signals();
        cmd::run(cli)
    }));
    // The job is over and its files are closed: what is still registered for cleanup is what
    // its owner failed to remove (a spill directory whose removal found no free file
    // descriptor).
    spillway_engine::cleanup::remove_all();
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => report(&err),
        Err(_) => {
            let what = last_panic().unwrap_or_else(|| "(no message)".into());
            eprint_line(format_args!("spillway: internal error: {what}"));
            ExitCode::from(EXIT_FAILURE)
        }
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

/// The last panic's `MESSAGE (at FILE:LINE)`, as the hook recorded it.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Takes the last panic's `MESSAGE (at FILE:LINE)` (see [`report_panics_on_one_line`]).
pub fn last_panic() -> Option<String> {
    LAST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
}

/// Installs a panic hook that prints nothing and never a backtrace, whatever
/// `RUST_BACKTRACE` says: it records `MESSAGE (at FILE:LINE)` for [`last_panic`]. The panic
/// unwinds: the engine catches panics in job code and reports them as the job's error (one
/// line, naming the split), and `main` prints any other as `spillway: internal error: ...` and
/// exits 1. The panic that `std::thread::scope` raises on the joining thread does not replace
/// the one that caused it. (The `mpi` build wraps this hook with one that prints the panic and
/// aborts the whole job.)
fn report_panics_on_one_line() {
    std::panic::set_hook(Box::new(|info| {
        if spillway_engine::in_job_code() {
            return; // the engine's to report (or retry)
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let mut last = LAST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if message == "a scoped thread panicked" && last.is_some() {
            return;
        }
        let at = info.location().map(|l| format!(" (at {}:{})", l.file(), l.line())).unwrap_or_default();
        *last = Some(format!("{}{at}", message.replace('\n', " ")));
    }));
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
    // A small stack of its own: it only removes files and prints a line, and its creation
    // does not depend on RUST_MIN_STACK.
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(256 << 10)
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = match signal {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                let name = if cmd::STOP_REQUESTED.load(std::sync::atomic::Ordering::Relaxed) {
                    "spillway ctl --stop"
                } else {
                    name
                };
                // The status first: removing everything closes the cleanup registry, and the
                // status goes through a temporary file, which registers.
                if let Some(status) = cmd::STATUS.get() {
                    status.finish("interrupted", Some(format!("interrupted by {name}")));
                }
                if let Some(report) = cmd::REPORT.get() {
                    report.finish("interrupted", Some(format!("interrupted by {name}")), None);
                }
                let removed = spillway_engine::cleanup::remove_all_for_exit();
                match cmd::RESUMABLE.get() {
                    // Every state of a resumable job's directory is one it resumes from.
                    Some(progress) => eprint_line(format_args!(
                        "\nspillway: interrupted: {} of {} splits done; rerun with --resume to continue",
                        progress.splits_committed.load(std::sync::atomic::Ordering::Relaxed),
                        progress.splits_total.load(std::sync::atomic::Ordering::Relaxed),
                    )),
                    None => eprint_line(format_args!(
                        "\nspillway: interrupted by {name}; {removed} temporary path(s) removed"
                    )),
                }
                std::process::exit(128 + signal);
            }
        })
        .expect("spawning the signal thread");
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
        if let Some(source) = cause.downcast_ref::<spillway_engine::Error>().and_then(|e| e.io_error())
            && source.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
    }
    eprint_line(format_args!("spillway: error: {}", message(err)));
    ExitCode::from(exit_code(err))
}

/// The whole cause chain of `err` on one line, with a hint when the cause is a limit of the
/// process or the machine ([`limit`]).
pub fn message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    if let Some(limit) = limit(err) {
        message.push_str(" (hint: ");
        message.push_str(match limit {
            Limit::Memory => {
                "out of memory or address space: lower --memory or --threads, or raise the limit, e.g. ulimit -v"
            }
            Limit::OpenFiles => {
                "too many open files: raise the open-file limit (ulimit -n) or lower --max-open-runs"
            }
            Limit::FileSize => "a file grew past the file size limit: raise it (ulimit -f) or write elsewhere",
            _ => "a limit of the process or the machine is reached",
        });
        message.push(')');
    }
    message
}

/// The limit of the process or the machine behind `err`, if any: out of memory or address
/// space, too many open files, a file size limit. Such an error is the machine's (exit status
/// 1), never bad input, even where it happened while opening an input.
pub fn limit(err: &anyhow::Error) -> Option<Limit> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<spillway_engine::Error>() {
            e.limit()
        } else if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            Limit::of_io(e)
        } else {
            // Errors that keep only the text of the OS error (the tool's own input errors).
            Limit::of_text(&cause.to_string())
        }
    })
}

/// The exit status for `err`: a usage error, bad input or a failure.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|c| {
        c.is::<cmd::UsageError>()
            || c.is::<spillway_engine::ConfigError>()
            || c.downcast_ref::<spillway_engine::Error>()
                .is_some_and(|e| matches!(e, spillway_engine::Error::Resume { .. }))
    }) {
        return EXIT_USAGE;
    }
    if limit(err).is_some() {
        return EXIT_FAILURE;
    }
    let input = err.chain().any(|c| {
        c.downcast_ref::<spillway_engine::Error>().is_some_and(spillway_engine::Error::is_input_error)
            || c.is::<cmd::InputError>()
    });
    if input { EXIT_INPUT } else { EXIT_FAILURE }
}

#[cfg(test)]
mod tests {
    use spillway_engine::jobs::write_key_value;
    use spillway_engine::{Engine, Inputs, OutputSpec, from_fns};

    /// With the one-line hook installed, a panic in job code is still caught by the engine
    /// and fails the job with its message (the hook only prints).
    #[test]
    fn job_panics_still_fail_the_job_with_their_message() {
        super::report_panics_on_one_line();
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "a b\n").unwrap();
        let job = from_fns(
            |_: &[u8], _: &mut dyn FnMut(&[u8], u64)| panic!("job code failed"),
            |acc: &mut u64, v: u64| *acc += v,
            |key: &[u8], total: u64, out: &mut dyn std::io::Write| write_key_value(out, key, total),
        );
        let out = dir.path().join("out");
        let engine = Engine::builder().threads(2).build().unwrap();
        let err =
            engine.run(&job, &Inputs::new([&input]).unwrap(), &OutputSpec::File(out.clone())).unwrap_err();
        assert!(err.to_string().contains("panicked: job code failed"), "{err}");
        assert!(!out.exists());
    }
}
