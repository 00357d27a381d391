//! `--report` under `mpirun` (feature `mpi`): rank 0 writes every rank's record, and the
//! exchange matrix has one row per rank, summing to the bytes the metrics say were sent.
#![cfg(feature = "mpi")]

use spillway_tests::browser::{check_rendered, chromium, rendered_dom, report_json};
use spillway_tests::ranks::{SPILLS, check_mpi_build, run_ranks, text_inputs};

#[test]
fn rank_zero_reports_every_rank_and_the_exchange_matrix() {
    check_mpi_build();
    let dir = tempfile::tempdir().unwrap();
    let files = text_inputs(dir.path());
    let page = dir.path().join("report.html");
    let out_dir = dir.path().join("out");
    let np = 3;
    let mut args = vec!["wordcount", "-q", "-t", "1", "-r", "7"];
    args.extend(SPILLS);
    args.extend(["--out-dir", out_dir.to_str().unwrap(), "--report", page.to_str().unwrap()]);
    args.extend(files.iter().map(String::as_str));
    let out = run_ranks(np, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).unwrap()).unwrap();
    let html = std::fs::read_to_string(&page).unwrap();
    let report = report_json(&html);
    assert_eq!(report["state"], "succeeded");
    let ranks = report["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), np);
    let mut total = 0;
    for (r, rank) in ranks.iter().enumerate() {
        assert_eq!(rank["rank"], r);
        let sent: Vec<u64> = rank["sent"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
        assert_eq!(sent.len(), np, "rank {r} sent to every rank");
        assert_eq!(sent[r], 0, "rank {r} sends nothing to itself");
        let row: u64 = sent.iter().sum();
        assert_eq!(row, metrics["per_rank"][r]["bytes_sent"].as_u64().unwrap(), "rank {r}'s row");
        total += row;
        let kinds: Vec<&str> = rank["threads"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["spans"].as_array().unwrap())
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"map") && kinds.contains(&"exchange"), "rank {r}: {kinds:?}");
        assert!(!rank["samples"].as_array().unwrap().is_empty(), "rank {r} sampled");
    }
    assert!(total > 0);
    assert_eq!(total, metrics["bytes_sent"].as_u64().unwrap());
    // The matrix: np rows of np cells.
    assert!(html.contains(&format!(r#"data-ranks="{np}""#)));
    assert_eq!(html.matches(r#"<rect class="cell""#).count(), np * np);
    for from in 0..np {
        assert_eq!(html.matches(&format!(r#"data-from="{from}""#)).count(), np, "row of rank {from}");
    }
    match chromium() {
        Some(browser) => {
            let dom = rendered_dom(&browser, &page, &dir.path().join("profile"));
            check_rendered(&dom, &["timeline", "throughput", "counts", "memory", "matrix"]);
        }
        None => println!("NOTE: chromium not found: the page was not loaded in a browser"),
    }
}
