//! Small pieces of SVG and HTML text: escaping, number formats, axes and line charts.

use std::fmt::Write;

/// Width of every chart's view box.
pub(super) const WIDTH: f64 = 960.0;
/// Left margin of the charts (labels of the timeline's rows, the y axis of the others).
pub(super) const LEFT: f64 = 190.0;
/// Right margin.
pub(super) const RIGHT: f64 = 20.0;

/// Colors of ranks' lines (cycled).
pub(super) const RANK_COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

/// Text for HTML or SVG content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes in binary units (`1.5 GiB`).
pub(super) fn bytes(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Milliseconds as seconds (`12.3 s`) or milliseconds (`250 ms`).
pub(super) fn millis(ms: f64) -> String {
    if ms >= 1000.0 { format!("{:.2} s", ms / 1000.0) } else { format!("{ms:.0} ms") }
}

/// Round tick steps covering `0..max` in about `n` steps.
pub(super) fn ticks(max: f64, n: usize) -> Vec<f64> {
    if max <= 0.0 || !max.is_finite() {
        return vec![0.0];
    }
    let raw = max / n.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let mut out = Vec::new();
    let mut t = 0.0;
    while t <= max * 1.000_001 {
        out.push(t);
        t += step;
    }
    out
}

/// Maps time (ms) to x.
#[derive(Debug, Clone, Copy)]
pub(super) struct TimeAxis {
    /// The job's length, ms (at least 1).
    pub(super) total_ms: f64,
}

impl TimeAxis {
    /// The x of `ms`.
    pub(super) fn x(&self, ms: f64) -> f64 {
        LEFT + (ms / self.total_ms).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    /// Vertical grid lines and time labels from `top` to `bottom` (labels below it).
    pub(super) fn draw(&self, out: &mut String, top: f64, bottom: f64) {
        for t in ticks(self.total_ms, 8) {
            let x = self.x(t);
            let _ = write!(
                out,
                r##"<line class="grid" x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                millis(t)
            );
        }
    }
}

/// One line of a line chart: (t ms, value) points.
#[derive(Debug)]
pub(super) struct Series {
    pub(super) label: String,
    pub(super) color: String,
    pub(super) dashed: bool,
    pub(super) points: Vec<(f64, f64)>,
}

/// A line chart over the job's time: `series` against a y axis of `format`ted values.
pub(super) fn line_chart(
    name: &str,
    title: &str,
    time: TimeAxis,
    series: &[Series],
    format: fn(f64) -> String,
) -> String {
    const HEIGHT: f64 = 220.0;
    const TOP: f64 = 16.0;
    const BOTTOM: f64 = HEIGHT - 40.0;
    let max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.05 } else { 1.0 };
    let y = |v: f64| BOTTOM - (v / max).clamp(0.0, 1.0) * (BOTTOM - TOP);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg data-chart="{name}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{}"><title>{}</title>"##,
        esc(title),
        esc(title)
    );
    time.draw(&mut out, TOP, BOTTOM);
    for v in ticks(max, 4) {
        let _ = write!(
            out,
            r##"<line class="grid" x1="{LEFT}" y1="{yv:.1}" x2="{:.1}" y2="{yv:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            esc(&format(v)),
            yv = y(v),
        );
    }
    let _ = write!(
        out,
        r##"<line class="axis" x1="{LEFT}" y1="{BOTTOM}" x2="{:.1}" y2="{BOTTOM}"/>"##,
        WIDTH - RIGHT
    );
    for (i, s) in series.iter().enumerate() {
        let mut points = String::new();
        for &(t, v) in &s.points {
            let _ = write!(points, "{:.1},{:.1} ", time.x(t), y(v));
        }
        let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let peak = s.points.iter().map(|p| p.1).fold(0.0f64, f64::max);
        let _ = write!(
            out,
            r##"<polyline class="series" fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}" data-tip="{}"><title>{}</title></polyline>"##,
            esc(&s.color),
            points.trim_end(),
            esc(&format!("{}: peak {}", s.label, format(peak))),
            esc(&s.label),
        );
        // The legend, top left, one entry per line.
        let (lx, ly) = (8.0, TOP + 14.0 * i as f64 + 4.0);
        let _ = write!(
            out,
            r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"##,
            lx + 18.0,
            esc(&s.color),
            lx + 22.0,
            ly + 4.0,
            esc(&s.label)
        );
    }
    out.push_str("</svg>");
    out
}
