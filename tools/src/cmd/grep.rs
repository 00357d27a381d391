//! `spillway grep`.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway_engine::FileNames;
use spillway_engine::jobs::Grep;

use super::common::{JobOptions, UsageError};

/// Arguments of `spillway grep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    job: JobOptions,
    /// A regular expression (Rust `regex` syntax; `^` and `$` match at line boundaries).
    #[arg(value_name = "PATTERN")]
    pattern: String,
    /// Read the input paths from LIST while the job runs (`-`: standard input), as
    /// `wordcount --inputs-from` does; matches are named by the paths as listed, files in list
    /// order.
    #[arg(long, value_name = "LIST", conflicts_with = "inputs")]
    inputs_from: Option<PathBuf>,
    /// Input files or directories.
    #[arg(required_unless_present = "inputs_from", value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    args.job.name = "grep";
    let invalid = |e: regex::Error| {
        UsageError(format!("invalid pattern '{}': {}", args.pattern.escape_debug(), pattern_error(&e)))
    };
    if let Some(list) = &args.inputs_from {
        super::words::check_listed(&args.job)?;
        let names = FileNames::default();
        let job = Grep::fed(&args.pattern, names.clone()).map_err(invalid)?;
        return args.job.run_job_listed(&job, list, &names);
    }
    let inputs = args.job.inputs(&args.inputs)?;
    let job = Grep::new(&args.pattern, &inputs).map_err(invalid)?;
    args.job.run_job(&job, &inputs)
}

/// What is wrong with a pattern, on one line: for a syntax error its kind (`unclosed group`)
/// without the copy of the pattern and the carets that `regex` draws above it (its message
/// always ends with `error: KIND`); other errors (a size limit) flattened.
fn pattern_error(err: &regex::Error) -> String {
    let text = err.to_string();
    match text.rsplit_once("\nerror: ") {
        Some((_, kind)) if matches!(err, regex::Error::Syntax(_)) => kind.to_owned(),
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::pattern_error;

    fn error_of(pattern: &str) -> String {
        pattern_error(&regex::bytes::RegexBuilder::new(pattern).multi_line(true).build().unwrap_err())
    }

    #[test]
    fn pattern_errors_are_one_line() {
        assert_eq!(error_of("("), "unclosed group");
        assert_eq!(error_of("a{2,1}"), "invalid repetition count range, the start must be <= the end");
        assert_eq!(error_of("\\p{Nope}"), "Unicode property not found");
        assert_eq!(error_of("a\n(b"), "unclosed group");
        let big = regex::bytes::RegexBuilder::new("\\w{1000}").size_limit(1000).build().unwrap_err();
        let message = pattern_error(&big);
        assert!(!message.contains('\n') && message.contains("size limit"), "{message}");
    }
}
