//! Failpoints: named places where a test makes the process fail on purpose, deterministically.
//!
//! `SPILLWAY_FAILPOINTS` lists rules separated by commas, each `NAME[@RANK]=N[+][:ACTION]`:
//! the `N`th pass (1-based, counted per process) through the failpoint `NAME` fails, or with
//! `+` every pass from the `N`th on; with `@RANK` only on that rank (under MPI). `ACTION` is
//! `error` (the caller fails as the job's code would, the default), `panic`, `abort` (the
//! process ends at once, as if killed: no cleanup, no unwinding), or `stall` (the thread
//! sleeps for good: a job held at a known point for a signal to reach it), or `slow` (the
//! thread sleeps 20 ms and goes on: with `N+`, a job slowed down to be watched and changed
//! while it runs), or `hold` (the thread waits, sleeping 20 ms between checks, while the file
//! `NAME` exists in the directory `SPILLWAY_FAILPOINTS_HOLD` names: a phase held open until a
//! test has done what it does there, then let go by removing the file). For example
//! `SPILLWAY_FAILPOINTS=map.split=3:panic,reduce.partition@1=1+:error`.
//!
//! Unset, a pass costs one load of an initialized `OnceLock` and an empty-slice check; the
//! failpoints sit on per-split, per-run and per-partition paths, never per record. The names
//! are listed in [`NAMES`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Every failpoint the engine passes through, with where it is.
pub const NAMES: &[(&str, &str)] = &[
    ("map.split", "after the job's map returned for a split, before the worker takes its output"),
    ("map.commit", "at a resumable job's map commit point: runs written and synced, not yet journaled"),
    ("exchange.receive", "with several ranks: a run starts arriving from another rank"),
    (
        "merge.step",
        "a merge step (in the map phase or the planned merges): output written (a resumable job's synced), not yet journaled",
    ),
    ("merge.inputs", "a resumable job's merge step: journaled, its inputs not yet deleted"),
    (
        "reduce.partition",
        "after a partition's (or the one output's) reduce wrote its keys, before it is finished",
    ),
    ("reduce.journaled", "a resumable job's reduce: a part file kept and journaled, the next not yet begun"),
    ("commit.output", "a resumable job's commit: journaled as committing, the output not yet renamed"),
    ("commit.finish", "a resumable job's end: output committed, job directory not yet removed"),
];

/// What a failpoint does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The caller fails as the job's code would.
    Error,
    /// A panic at the failpoint.
    Panic,
    /// `abort`: the process ends at once.
    Abort,
    /// The thread sleeps for good.
    Stall,
    /// The thread sleeps 20 ms and goes on.
    Slow,
    /// The thread waits while `$SPILLWAY_FAILPOINTS_HOLD/NAME` exists.
    Hold,
}

#[derive(Debug)]
struct Rule {
    name: String,
    rank: Option<usize>,
    from: u64,
    every: bool,
    action: Action,
    passes: AtomicU64,
}

static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
static RANK: AtomicUsize = AtomicUsize::new(0);

/// Records this process's rank (rules with `@RANK` compare it).
pub(crate) fn set_rank(rank: usize) {
    RANK.store(rank, Ordering::Relaxed);
}

fn rules() -> &'static [Rule] {
    RULES.get_or_init(|| match std::env::var("SPILLWAY_FAILPOINTS") {
        Ok(spec) if !spec.trim().is_empty() => parse(&spec).unwrap_or_else(|e| {
            eprintln!("spillway: ignoring SPILLWAY_FAILPOINTS: {e}");
            Vec::new()
        }),
        _ => Vec::new(),
    })
}

fn parse(spec: &str) -> Result<Vec<Rule>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|rule| {
            let bad = || format!("{rule:?} is not NAME[@RANK]=N[+][:error|panic|abort|stall|slow|hold]");
            let (target, when) = rule.split_once('=').ok_or_else(bad)?;
            let (name, rank) = match target.split_once('@') {
                Some((name, rank)) => (name, Some(rank.parse().map_err(|_| bad())?)),
                None => (target, None),
            };
            if !NAMES.iter().any(|(n, _)| *n == name) {
                return Err(format!("unknown failpoint {name:?}"));
            }
            let (count, action) = match when.split_once(':') {
                Some((count, "error")) => (count, Action::Error),
                Some((count, "panic")) => (count, Action::Panic),
                Some((count, "abort")) => (count, Action::Abort),
                Some((count, "stall")) => (count, Action::Stall),
                Some((count, "slow")) => (count, Action::Slow),
                Some((count, "hold")) => (count, Action::Hold),
                Some(_) => return Err(bad()),
                None => (when, Action::Error),
            };
            let (count, every) = match count.strip_suffix('+') {
                Some(count) => (count, true),
                None => (count, false),
            };
            let from: u64 = count.parse().map_err(|_| bad())?;
            if from == 0 {
                return Err(bad());
            }
            Ok(Rule { name: name.to_owned(), rank, from, every, action, passes: AtomicU64::new(0) })
        })
        .collect()
}

/// A pass through the failpoint `name`: `true` when the caller must fail as the job's code
/// would (the rule's action is `error`). A `panic` rule panics here, an `abort` rule ends the
/// process here.
pub(crate) fn hit(name: &str) -> bool {
    let rules = rules();
    if rules.is_empty() {
        return false;
    }
    let rank = RANK.load(Ordering::Relaxed);
    let mut fail = false;
    for rule in rules.iter().filter(|r| r.name == name && r.rank.is_none_or(|r| r == rank)) {
        let pass = rule.passes.fetch_add(1, Ordering::Relaxed) + 1;
        if pass == rule.from || (rule.every && pass > rule.from) {
            match rule.action {
                Action::Error => fail = true,
                Action::Panic => panic!("failpoint {name} (pass {pass})"),
                Action::Abort => {
                    eprintln!("spillway: failpoint {name} aborts the process (pass {pass})");
                    std::process::abort();
                }
                Action::Stall => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                Action::Slow => std::thread::sleep(std::time::Duration::from_millis(20)),
                Action::Hold => {
                    let dir = std::env::var_os("SPILLWAY_FAILPOINTS_HOLD").unwrap_or_default();
                    let file = std::path::Path::new(&dir).join(name);
                    while !dir.is_empty() && file.exists() {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                }
            }
        }
    }
    fail
}

/// The message of a failure made at failpoint `name`.
pub(crate) fn message(name: &str) -> String {
    format!("failpoint {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_ones_are_named() {
        assert_eq!(parse("merge.step=2:hold").unwrap()[0].action, Action::Hold);
        let rules = parse("map.split=3:panic, reduce.partition@1=2+").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            (rules[0].from, rules[0].every, rules[0].action, rules[0].rank),
            (3, false, Action::Panic, None)
        );
        assert_eq!(
            (rules[1].from, rules[1].every, rules[1].action, rules[1].rank),
            (2, true, Action::Error, Some(1))
        );
        assert!(parse("nope=1").unwrap_err().contains("unknown failpoint \"nope\""));
        for bad in ["map.split", "map.split=0", "map.split=x", "map.split=1:explode", "map.split@x=1"] {
            assert!(parse(bad).unwrap_err().contains("is not NAME"), "{bad}");
        }
    }
}
