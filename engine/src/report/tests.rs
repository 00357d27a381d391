//! The recorder against a real job's metrics, and the page.

use std::sync::Arc;

use super::render::{BINS, mapped_bins};
use super::*;
use crate::{Engine, Inputs, OutputSpec, Progress, jobs::WordCount, text::WordMode};

/// Words enough for many splits and spills with a small budget.
fn text(lines: usize) -> String {
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    // Words are letters only: a distinct word per line, spelled in base 26.
    let spell = |mut n: usize| {
        let mut w = String::from("w");
        while n > 0 {
            w.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
        }
        w
    };
    (0..lines).map(|i| format!("{} {} {}\n", words[i % 8], spell(i), words[(i * 7) % 8])).collect()
}

/// Runs a word count with spills and merges (F = 2), recording.
fn recorded_job() -> (Report, Metrics, u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = text(120_000);
    std::fs::write(dir.path().join("in.txt"), &input).unwrap();
    let progress = Arc::new(Progress::default());
    let recorder = Arc::clone(progress.record());
    let sampler = recorder.sample(Arc::clone(&progress), 256 << 10);
    let engine = Engine::builder()
        .threads(2)
        .partitions(4)
        .memory_budget(256 << 10)
        .max_open_runs(2)
        .split_size(64 << 10)
        .max_attempts(1)
        .progress(Arc::clone(&progress))
        .build()
        .unwrap();
    let inputs = Inputs::new([dir.path().join("in.txt")]).unwrap();
    let metrics = engine
        .run(&WordCount { mode: WordMode::Unicode }, &inputs, &OutputSpec::Dir(dir.path().join("out")))
        .unwrap();
    drop(sampler);
    (recorder.report("wordcount", "succeeded", None, Some(metrics.clone())), metrics, input.len() as u64)
}

fn spans(report: &Report, kind: SpanKind) -> Vec<Span> {
    report
        .ranks
        .iter()
        .flat_map(|r| &r.threads)
        .flat_map(|t| &t.spans)
        .filter(|s| s.kind == kind)
        .copied()
        .collect()
}

#[test]
fn spans_are_well_nested_per_thread_and_match_the_metrics() {
    let (report, metrics, input_bytes) = recorded_job();
    assert!(metrics.spills > 2 && metrics.merge_steps > 0, "the job spills and merges: {metrics:?}");
    for track in &report.ranks[0].threads {
        for (i, a) in track.spans.iter().enumerate() {
            assert!(a.start_us <= a.end_us);
            for b in &track.spans[i + 1..] {
                // Sorted by start: b starts inside a only if it also ends inside it.
                assert!(b.start_us >= a.start_us);
                let disjoint = b.start_us >= a.end_us;
                let inside = b.end_us <= a.end_us;
                assert!(disjoint || inside, "{}: {a:?} and {b:?} overlap", track.name);
            }
        }
    }
    let maps = spans(&report, SpanKind::Map);
    assert_eq!(maps.len() as u64, metrics.splits);
    assert_eq!(maps.iter().map(|s| s.bytes).sum::<u64>(), input_bytes);
    let spills = spans(&report, SpanKind::Spill);
    assert_eq!(spills.len() as u64, metrics.spills);
    assert_eq!(spills.iter().map(|s| s.bytes).sum::<u64>(), metrics.spill_bytes);
    let merges = spans(&report, SpanKind::Merge);
    assert_eq!(merges.len() as u64, metrics.merge_steps);
    assert_eq!(merges.iter().map(|s| s.bytes).sum::<u64>(), metrics.merge_bytes);
    // A span per partition reduced (besides the runs opened), and one commit.
    let reduced = spans(&report, SpanKind::Reduce).iter().filter(|s| s.bytes > 0).count();
    assert_eq!(reduced as u64, metrics.output_files.min(4));
    assert_eq!(spans(&report, SpanKind::Commit).len(), 1);
    assert!(spans(&report, SpanKind::Exchange).is_empty(), "one process exchanges nothing");
    // Map threads are named as the engine names them.
    assert!(report.ranks[0].threads.iter().any(|t| t.name.starts_with("spillway-map-")));
    // Samples: counters never go back, and end where the metrics do.
    let samples = &report.ranks[0].samples;
    assert!(samples.len() >= 2);
    for w in samples.windows(2) {
        assert!(
            w[0].t_ms <= w[1].t_ms && w[0].bytes_mapped <= w[1].bytes_mapped && w[0].spills <= w[1].spills
        );
    }
    let last = samples.last().unwrap();
    assert_eq!(last.bytes_mapped, input_bytes);
    assert_eq!(last.spills, metrics.spills);
    assert!(last.rss_bytes > 0);
    assert!(samples.iter().any(|s| s.buffer_bytes > 0), "buffer memory sampled");
    // The throughput chart spreads every split's bytes over its span, losing none.
    let bins = mapped_bins(&report.ranks[0], 0.0, (report.ranks[0].elapsed_ms as f64 + 1.0) / BINS as f64);
    assert!((bins.iter().sum::<f64>() - input_bytes as f64).abs() < 1.0);
    assert!(bins.iter().filter(|&&b| b > 0.0).count() > 1, "spread over several bins");
    // One process: a 1 x 1 matrix of nothing.
    assert_eq!(report.matrix(), vec![vec![0]]);
}

#[test]
fn nothing_is_recorded_without_a_recorder() {
    let progress = Progress::default();
    assert!(progress.span(SpanKind::Map).is_none());
    assert!(progress.recorder().is_none());
}

#[test]
fn the_matrix_sums_each_ranks_sends() {
    let rank = |rank: usize, sent: Vec<u64>| RankRecord { rank, ranks: 3, sent, ..RankRecord::default() };
    let report = Report {
        ranks: vec![rank(0, vec![0, 5, 7]), rank(1, vec![1, 0, 2]), rank(2, vec![])],
        ..Report::default()
    };
    assert_eq!(report.matrix(), vec![vec![0, 5, 7], vec![1, 0, 2], vec![0, 0, 0]]);
    let page = render(&report);
    assert_eq!(page.matches(r#"<rect class="cell""#).count(), 9);
    assert!(page.contains(r#"data-ranks="3""#));
}

#[test]
fn the_page_is_self_contained_and_carries_the_report() {
    let (mut report, _, _) = recorded_job();
    report.message = Some("a </script><b>message</b> & more".into());
    let page = render(&report);
    assert!(!page.contains("http://") && !page.contains("https://"), "nothing to load from the network");
    assert!(!page.contains(" src=") && !page.contains("<link"), "no external script or style");
    for chart in ["timeline", "throughput", "counts", "memory", "matrix"] {
        assert!(page.contains(&format!(r#"data-chart="{chart}""#)), "{chart}");
    }
    assert!(page.contains("a &lt;/script&gt;&lt;b&gt;message&lt;/b&gt; &amp; more"));
    // The JSON comes back whole from its element.
    let open = format!(r#"<script type="application/json" id="{DATA_ID}">"#);
    let start = page.find(&open).unwrap() + open.len();
    let end = start + page[start..].find("</script>").unwrap();
    let back: Report = serde_json::from_str(&page[start..end]).unwrap();
    assert_eq!(back, report);
    // A bar per span.
    let spans: usize = report.ranks.iter().flat_map(|r| &r.threads).map(|t| t.spans.len()).sum();
    assert_eq!(page.matches(r#"<rect class="span "#).count(), spans);
}
