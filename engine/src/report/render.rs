//! The report page: one HTML file with inline CSS, SVG and script, the report's JSON inside.

use std::fmt::Write;

use super::svg::{LEFT, RANK_COLORS, RIGHT, Series, TimeAxis, WIDTH, bytes, esc, line_chart, millis};
use super::{RankRecord, Report, SpanKind};

/// The `id` of the `<script type="application/json">` element that holds the report.
pub const DATA_ID: &str = "spillway-report";

/// Each kind's bar color.
fn color(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Map => "#4e79a7",
        SpanKind::Spill => "#f28e2b",
        SpanKind::Merge => "#b07aa1",
        SpanKind::Exchange => "#59a14f",
        SpanKind::Reduce => "#e15759",
        SpanKind::Commit => "#222222",
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}
.state{display:inline-block;padding:1px 8px;border-radius:4px;color:#fff;font-weight:600}
.state.succeeded{background:#2e7d32}.state.failed{background:#c62828}.state.interrupted{background:#ef6c00}.state.running{background:#1565c0}
table.facts{border-collapse:collapse;margin:8px 0}table.facts td{padding:2px 12px 2px 0}table.facts td:first-child{color:#666}
svg{display:block;background:#fcfcfc;border:1px solid #e3e3e3;border-radius:4px;margin:4px 0}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .tick{fill:#777}svg .grid{stroke:#eee}svg .axis{stroke:#999}
svg .sep{stroke:#bbb}svg .rankname{font-weight:600}
.keys span{display:inline-block;margin-right:14px}.keys i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.note{color:#666}#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:3px 7px;border-radius:3px;font-size:12px;display:none;white-space:pre}
#errors{color:#c62828}
"#;

/// Checks every chart laid out (the browser measured its shapes), adds tooltips, and marks
/// the page: `data-rendered="ok"`, or `"error"` with the reasons in `#errors` (where
/// `window.onerror` writes too).
const SCRIPT: &str = r#"
(function(){
  var errors=document.getElementById('errors');
  function fail(m){errors.appendChild(document.createTextNode(m+'\n'));document.body.setAttribute('data-rendered','error');}
  window.onerror=function(msg,src,line){fail('script error: '+msg+' (line '+line+')');};
  try{
    var data=JSON.parse(document.getElementById('spillway-report').textContent);
    var charts=document.querySelectorAll('svg[data-chart]');
    var drawn=0;
    for(var i=0;i<charts.length;i++){
      var c=charts[i],shapes=c.querySelectorAll('rect,polyline,line'),box=c.getBBox();
      if(shapes.length===0||!(box.width>0&&box.height>0)){fail('chart '+c.getAttribute('data-chart')+' is empty');continue;}
      c.setAttribute('data-drawn',String(shapes.length));drawn++;
    }
    var spans=0;
    data.ranks.forEach(function(r){r.threads.forEach(function(t){spans+=t.spans.length;});});
    var bars=document.querySelectorAll('svg[data-chart="timeline"] rect.span').length;
    if(bars!==spans)fail('timeline shows '+bars+' of '+spans+' spans');
    var tip=document.getElementById('tip');
    document.addEventListener('mousemove',function(e){
      var t=e.target&&e.target.getAttribute&&e.target.getAttribute('data-tip');
      if(t){tip.textContent=t;tip.style.display='block';tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';}
      else tip.style.display='none';
    });
    document.body.setAttribute('data-charts',String(drawn));
    if(document.body.getAttribute('data-rendered')!=='error')document.body.setAttribute('data-rendered','ok');
  }catch(e){fail('script error: '+e);}
})();
"#;

/// The job's time axis (ranks aligned by their start), and each rank's offset in ms.
fn time_axis(report: &Report) -> (TimeAxis, Vec<f64>) {
    let t0 = report.ranks.iter().map(|r| r.started_unix_ms).min().unwrap_or(0);
    let offsets: Vec<f64> = report.ranks.iter().map(|r| (r.started_unix_ms - t0) as f64).collect();
    let end = report
        .ranks
        .iter()
        .zip(&offsets)
        .map(|(r, o)| {
            let last_span = r
                .threads
                .iter()
                .flat_map(|t| t.spans.iter())
                .map(|s| s.end_us as f64 / 1000.0)
                .fold(0.0, f64::max);
            o + (r.elapsed_ms as f64).max(last_span)
        })
        .fold(1.0f64, f64::max);
    (TimeAxis { total_ms: end }, offsets)
}

/// The page for `report`.
pub fn render(report: &Report) -> String {
    let (time, offsets) = time_axis(report);
    let mut out = String::with_capacity(64 << 10);
    let title = format!("spillway {} — {}", report.job, report.state);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        out,
        r#"<h1>spillway {} <span class="state {}">{}</span></h1>"#,
        esc(&report.job),
        esc(&report.state),
        esc(&report.state)
    );
    if let Some(message) = &report.message {
        let _ = write!(out, r#"<p class="message">{}</p>"#, esc(message));
    }
    facts(&mut out, report, time.total_ms);
    out.push_str(
        "<h2>Timeline</h2><p class=\"note\">What each worker thread of each rank was doing. Thin bars \
                  run inside the wide one above them (a spill while a split is mapped).</p>",
    );
    keys(&mut out);
    timeline(&mut out, report, time, &offsets);
    out.push_str(
        "<h2>Throughput</h2><p class=\"note\">Input bytes mapped per second (each split's bytes spread over the time it was mapped).</p>",
    );
    out.push_str(&throughput(report, time, &offsets));
    out.push_str(
        "<h2>Spills and merges</h2><p class=\"note\">Spill runs written and merge steps done so far.</p>",
    );
    out.push_str(&counts(report, time, &offsets));
    out.push_str(
        "<h2>Memory</h2><p class=\"note\">Resident memory of each rank's process (/proc/self/statm) and \
                  the memory its map buffers hold, against the buffers' budget (dashed).</p>",
    );
    out.push_str(&memory(report, time, &offsets));
    out.push_str("<h2>Bytes exchanged</h2>");
    matrix(&mut out, report);
    let json = serde_json::to_string(report).expect("a report serializes");
    // `</` cannot end the script element early: `<\/` is the same JSON string.
    let json = json.replace("</", "<\\/");
    let _ = write!(
        out,
        r#"<pre id="errors"></pre><div id="tip"></div><script type="application/json" id="{DATA_ID}">{json}</script><script>{SCRIPT}</script></body></html>"#
    );
    out.push('\n');
    out
}

/// The summary table.
fn facts(out: &mut String, report: &Report, total_ms: f64) {
    let mut rows: Vec<(&str, String)> = vec![
        ("ranks", report.ranks.len().to_string()),
        ("hosts", {
            let mut hosts: Vec<&str> = report.ranks.iter().map(|r| r.host.as_str()).collect();
            hosts.dedup();
            hosts.join(", ")
        }),
        ("duration", millis(total_ms)),
    ];
    if let Some(m) = &report.metrics {
        rows.push(("threads", m.threads.to_string()));
        rows.push((
            "input",
            format!("{} in {} files, {} splits", bytes(m.input_bytes as f64), m.input_files, m.splits),
        ));
        rows.push(("records mapped", m.map_records.to_string()));
        rows.push(("spills", format!("{} ({})", m.spills, bytes(m.spill_bytes as f64))));
        rows.push(("merge steps", format!("{} ({})", m.merge_steps, bytes(m.merge_bytes as f64))));
        rows.push(("bytes exchanged", bytes(m.bytes_sent as f64)));
        rows.push(("output", format!("{} keys, {}", m.output_keys, bytes(m.output_bytes as f64))));
        rows.push((
            "memory budget",
            format!("{} ({})", bytes(m.memory_budget as f64), m.memory_budget_source),
        ));
        rows.push(("peak RSS", bytes(m.peak_rss_bytes as f64)));
    }
    out.push_str(r#"<table class="facts">"#);
    for (k, v) in rows {
        let _ = write!(out, "<tr><td>{k}</td><td>{}</td></tr>", esc(&v));
    }
    out.push_str("</table>");
}

/// The legend of span colors.
fn keys(out: &mut String) {
    out.push_str(r#"<div class="keys">"#);
    for kind in SpanKind::ALL {
        let _ = write!(out, r#"<span><i style="background:{}"></i>{}</span>"#, color(kind), kind.name());
    }
    out.push_str("</div>");
}

/// One row per thread of each rank; a bar per span, nested spans thinner.
fn timeline(out: &mut String, report: &Report, time: TimeAxis, offsets: &[f64]) {
    const ROW: f64 = 18.0;
    const TOP: f64 = 10.0;
    let rows: usize = report.ranks.iter().map(|r| r.threads.len().max(1) + 1).sum();
    let bottom = TOP + rows as f64 * ROW;
    let height = bottom + 26.0;
    let _ = write!(
        out,
        r##"<svg data-chart="timeline" viewBox="0 0 {WIDTH} {height:.0}" width="100%" role="img" aria-label="timeline"><title>Timeline</title>"##
    );
    time.draw(out, TOP, bottom);
    let mut y = TOP;
    for (rank, offset) in report.ranks.iter().zip(offsets) {
        let _ = write!(
            out,
            r##"<line class="sep" x1="0" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="rankname" x="4" y="{:.1}">rank {} · {}</text>"##,
            WIDTH - RIGHT,
            y + 13.0,
            rank.rank,
            esc(&rank.host)
        );
        y += ROW;
        if rank.threads.is_empty() {
            let _ =
                write!(out, r#"<text class="tick" x="{LEFT}" y="{:.1}">no spans recorded</text>"#, y + 12.0);
            y += ROW;
        }
        for track in &rank.threads {
            let _ = write!(out, r#"<text x="12" y="{:.1}">{}</text>"#, y + 12.0, esc(&track.name));
            // Depth of each span: how many spans still open contain it.
            let mut open: Vec<u64> = Vec::new();
            for s in &track.spans {
                while open.last().is_some_and(|&end| end <= s.start_us) {
                    open.pop();
                }
                let depth = open.len() as f64;
                open.push(s.end_us);
                let (start, end) = (offset + s.start_us as f64 / 1000.0, offset + s.end_us as f64 / 1000.0);
                let (x0, x1) = (time.x(start), time.x(end));
                let inset = (2.0 + 4.0 * depth).min(6.0);
                let mut tip = format!(
                    "rank {} {}: {} {} – {} ({})",
                    rank.rank,
                    track.name,
                    s.kind.name(),
                    millis(start),
                    millis(end),
                    millis(end - start)
                );
                if s.bytes > 0 {
                    let _ = write!(tip, ", {}", bytes(s.bytes as f64));
                }
                let _ = write!(
                    out,
                    r#"<rect class="span k-{}" x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}" data-tip="{}"><title>{}</title></rect>"#,
                    s.kind.name(),
                    y + inset,
                    (x1 - x0).max(0.6),
                    (ROW - 2.0 * inset).max(2.0),
                    color(s.kind),
                    esc(&tip),
                    esc(&tip)
                );
            }
            y += ROW;
        }
    }
    out.push_str("</svg>");
}

fn rank_color(rank: &RankRecord) -> String {
    RANK_COLORS[rank.rank % RANK_COLORS.len()].to_owned()
}

/// Bins of the throughput chart.
pub(super) const BINS: usize = 240;

/// The input bytes `rank` mapped in each of [`BINS`] bins over the job (bins of `bin_ms`):
/// each split's bytes spread evenly over the time it was mapped (its map span).
pub(super) fn mapped_bins(rank: &RankRecord, offset: f64, bin_ms: f64) -> Vec<f64> {
    let mut bins = vec![0.0f64; BINS];
    for s in rank.threads.iter().flat_map(|t| &t.spans).filter(|s| s.kind == SpanKind::Map) {
        let (start, end) = (offset + s.start_us as f64 / 1000.0, offset + s.end_us as f64 / 1000.0);
        let first = ((start / bin_ms) as usize).min(BINS - 1);
        let last = ((end / bin_ms) as usize).min(BINS - 1);
        if end - start <= 0.0 || first == last {
            bins[first] += s.bytes as f64;
            continue;
        }
        let per_ms = s.bytes as f64 / (end - start);
        for (b, bin) in bins.iter_mut().enumerate().take(last + 1).skip(first) {
            let (lo, hi) = (b as f64 * bin_ms, (b + 1) as f64 * bin_ms);
            *bin += per_ms * (end.min(hi) - start.max(lo)).max(0.0);
        }
    }
    bins
}

/// Input bytes mapped per second, per rank ([`mapped_bins`]: the counters the sampler reads
/// grow a whole split at a time, which would show as spikes).
fn throughput(report: &Report, time: TimeAxis, offsets: &[f64]) -> String {
    let bin_ms = time.total_ms / BINS as f64;
    let series: Vec<Series> = report
        .ranks
        .iter()
        .zip(offsets)
        .map(|(r, o)| {
            let mut points = Vec::with_capacity(2 * BINS);
            for (b, bytes) in mapped_bins(r, *o, bin_ms).iter().enumerate() {
                let rate = bytes / (bin_ms / 1000.0);
                points.push((b as f64 * bin_ms, rate));
                points.push(((b + 1) as f64 * bin_ms, rate));
            }
            Series { label: format!("rank {} mapped/s", r.rank), color: rank_color(r), dashed: false, points }
        })
        .collect();
    line_chart("throughput", "Input bytes mapped per second", time, &series, |v| format!("{}/s", bytes(v)))
}

/// Spill runs and merge steps over time, per rank.
fn counts(report: &Report, time: TimeAxis, offsets: &[f64]) -> String {
    let mut series = Vec::new();
    for (r, o) in report.ranks.iter().zip(offsets) {
        let point = |f: fn(&super::Sample) -> u64| {
            r.samples.iter().map(|s| (o + s.t_ms as f64, f(s) as f64)).collect()
        };
        series.push(Series {
            label: format!("rank {} spills", r.rank),
            color: rank_color(r),
            dashed: false,
            points: point(|s| s.spills),
        });
        series.push(Series {
            label: format!("rank {} merges", r.rank),
            color: rank_color(r),
            dashed: true,
            points: point(|s| s.merges),
        });
    }
    line_chart("counts", "Spills and merges so far", time, &series, |v| format!("{v:.0}"))
}

/// Resident memory and buffer memory per rank, and the budget.
fn memory(report: &Report, time: TimeAxis, offsets: &[f64]) -> String {
    let mut series = Vec::new();
    for (r, o) in report.ranks.iter().zip(offsets) {
        let point = |f: fn(&super::Sample) -> u64| {
            r.samples.iter().map(|s| (o + s.t_ms as f64, f(s) as f64)).collect()
        };
        series.push(Series {
            label: format!("rank {} RSS", r.rank),
            color: rank_color(r),
            dashed: false,
            points: point(|s| s.rss_bytes),
        });
        series.push(Series {
            label: format!("rank {} buffers", r.rank),
            color: "#999999".into(),
            dashed: false,
            points: point(|s| s.buffer_bytes),
        });
    }
    let budget = report.ranks.iter().map(|r| r.memory_budget).max().unwrap_or(0) as f64;
    if budget > 0.0 {
        series.push(Series {
            label: "budget".into(),
            color: "#000000".into(),
            dashed: true,
            points: vec![(0.0, budget), (time.total_ms, budget)],
        });
    }
    line_chart("memory", "Memory against the budget", time, &series, bytes)
}

/// Bytes sent from each rank (row) to each rank (column), as a heat map.
fn matrix(out: &mut String, report: &Report) {
    let m = report.matrix();
    let n = m.len();
    let total: u64 = m.iter().flatten().sum();
    if report.ranks.len() <= 1 {
        out.push_str("<p class=\"note\">One process: nothing moved between ranks (a 1 × 1 matrix).</p>");
    } else {
        let _ = write!(
            out,
            "<p class=\"note\">Bytes of partition sections each rank (row) sent to each rank (column); {} in all.</p>",
            bytes(total as f64)
        );
    }
    let cell = (600.0 / n as f64).clamp(24.0, 80.0);
    let (left, top) = (80.0, 40.0);
    let size = left + cell * n as f64 + 20.0;
    let height = top + cell * n as f64 + 20.0;
    let _ = write!(
        out,
        r##"<svg data-chart="matrix" data-ranks="{n}" viewBox="0 0 {size:.0} {height:.0}" width="{size:.0}" role="img" aria-label="exchange matrix"><title>Bytes exchanged per rank pair</title><text x="{left}" y="14">to rank →</text>"##
    );
    let max = m.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    for (from, row) in m.iter().enumerate() {
        let y = top + cell * from as f64;
        let _ = write!(out, r#"<text x="8" y="{:.1}">rank {from}</text>"#, y + cell / 2.0 + 4.0);
        for (to, &b) in row.iter().enumerate() {
            let x = left + cell * to as f64;
            if from == 0 {
                let _ =
                    write!(out, r#"<text x="{:.1}" y="32" text-anchor="middle">{to}</text>"#, x + cell / 2.0);
            }
            let shade = 1.0 - 0.85 * (b as f64 / max);
            let fill = format!("rgb({:.0},{:.0},255)", 255.0 * shade, 255.0 * (0.3 + 0.7 * shade));
            let tip = format!("rank {from} → rank {to}: {}", bytes(b as f64));
            let _ = write!(
                out,
                r##"<rect class="cell" data-from="{from}" data-to="{to}" data-bytes="{b}" x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{fill}" stroke="#fff" data-tip="{}"><title>{}</title></rect>"##,
                esc(&tip),
                esc(&tip)
            );
            if cell >= 40.0 {
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                    x + cell / 2.0,
                    y + cell / 2.0 + 4.0,
                    esc(&bytes(b as f64))
                );
            }
        }
    }
    out.push_str("</svg>");
}
