//! Many ranks on one small host (feature `mpi`): every job at 8 ranks (oversubscribed) gives
//! the bytes of one process, with spills and F = 2, with more ranks than partitions, with many
//! partitions, and with the default partition count, which gives every rank work in reduce.
//! `scripts/scale.sh` runs the same cases at 32 and 128 ranks (`scale_table`, ignored here).
#![cfg(feature = "mpi")]

use spillway_tests::ranks::{cases, check_mpi_build};

#[test]
fn eight_ranks_give_the_same_bytes_as_one_process() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases(dir.path()) {
        let outcome = case.run(dir.path(), 8);
        if !outcome.identical {
            failures.push(format!("{}: {}", case.name, outcome.detail));
        }
    }
    assert!(failures.is_empty(), "at 8 ranks:\n{}", failures.join("\n"));
}

/// The scale table: every case at each rank count of `SPILLWAY_SCALE_RANKS` (default
/// "32 128"), one Markdown row per run; fails if any run differs. Run by `scripts/scale.sh`.
#[test]
#[ignore = "minutes of oversubscribed ranks: scripts/scale.sh"]
fn scale_table() {
    check_mpi_build();
    let ranks: Vec<usize> = std::env::var("SPILLWAY_SCALE_RANKS")
        .unwrap_or_else(|_| "32 128".into())
        .split_whitespace()
        .map(|n| n.parse().expect("SPILLWAY_SCALE_RANKS: rank counts"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cases = cases(dir.path());
    println!("| ranks | job | identical | wall (s) | detail |");
    println!("| ---: | --- | --- | ---: | --- |");
    let mut failures = 0;
    for &np in &ranks {
        for case in &cases {
            let outcome = case.run(dir.path(), np);
            failures += usize::from(!outcome.identical);
            let detail = outcome.detail.replace('\n', " ");
            println!(
                "| {np} | {} | {} | {:.1} | {detail} |",
                case.name,
                if outcome.identical { "yes" } else { "NO" },
                outcome.wall.as_secs_f64()
            );
        }
    }
    assert_eq!(failures, 0, "some runs differ from one process");
}
