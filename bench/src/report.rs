//! Benchmark reports: every benchmark binary saves its [`Section`] as JSON into a results
//! directory, and [`render_dir`] turns all the sections there into `RESULTS.md` (Markdown
//! tables) and `index.html` (self-contained: the tables and inline SVG charts of throughput,
//! peak RSS, CPU time and Spillway's phases; no external script or style), and writes the
//! throughput chart alone as `throughput.svg` (for the README).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::runner::{Measurement, median};
use crate::table::{Align, Table};

/// One system's measured run of one workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// The system as the table shows it (`spillway`, `MR-MPI (2 ranks)`, ...).
    pub system: String,
    /// Wall time, seconds.
    pub wall: f64,
    /// Input bytes / 10^6 / wall.
    pub mb_per_s: f64,
    /// User CPU, seconds (children included).
    pub user: f64,
    /// System CPU, seconds.
    pub sys: f64,
    /// Peak RSS of the largest process, MiB.
    pub peak_rss_mib: f64,
    /// Output identical to Spillway's after normalization: `None` for Spillway itself.
    pub identical: Option<bool>,
    /// Spillway's phases from its metrics (`map`, `merge`, `reduce`, ...), seconds.
    pub phases: Vec<(String, f64)>,
}

impl Row {
    /// The row of a system's runs of `bytes` of input: medians (peak RSS: the largest).
    pub fn from_runs(
        name: &str,
        runs: &[Measurement],
        bytes: u64,
        identical: Option<bool>,
        phases: Vec<(String, f64)>,
    ) -> Row {
        let med =
            |f: fn(&Measurement) -> Duration| median(&runs.iter().map(f).collect::<Vec<_>>()).as_secs_f64();
        let wall = med(|m| m.wall);
        Row {
            system: name.to_owned(),
            wall,
            mb_per_s: bytes as f64 / 1e6 / wall.max(1e-9),
            user: med(|m| m.user),
            sys: med(|m| m.sys),
            peak_rss_mib: runs.iter().map(|m| m.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
            identical,
            phases,
        }
    }
}

/// One workload's results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// File stem and chart label: `wordcount`, `sort`.
    pub workload: String,
    /// A heading: what was run on what input.
    pub title: String,
    /// The measured systems.
    pub rows: Vec<Row>,
    /// One line per skipped or failed peer, and other remarks.
    pub notes: Vec<String>,
    /// Machine, date, load: the conditions.
    pub conditions: String,
}

impl Section {
    fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "system": r.system, "wall": r.wall, "mb_per_s": r.mb_per_s, "user": r.user,
                    "sys": r.sys, "peak_rss_mib": r.peak_rss_mib, "identical": r.identical,
                    "phases": r.phases.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({"workload": self.workload, "title": self.title, "rows": rows, "notes": self.notes,
               "conditions": self.conditions})
    }

    fn from_json(v: &Value) -> Section {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let f = |v: &Value| v.as_f64().unwrap_or(0.0);
        Section {
            workload: s(&v["workload"]),
            title: s(&v["title"]),
            conditions: s(&v["conditions"]),
            notes: v["notes"].as_array().into_iter().flatten().map(s).collect(),
            rows: v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Row {
                    system: s(&r["system"]),
                    wall: f(&r["wall"]),
                    mb_per_s: f(&r["mb_per_s"]),
                    user: f(&r["user"]),
                    sys: f(&r["sys"]),
                    peak_rss_mib: f(&r["peak_rss_mib"]),
                    identical: r["identical"].as_bool(),
                    phases: r["phases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| (s(&p[0]), f(&p[1])))
                        .collect(),
                })
                .collect(),
        }
    }

    /// The Markdown table of this section.
    pub fn table(&self) -> Table {
        let mut t = Table::new([
            "system",
            "wall (s)",
            "MB/s",
            "user (s)",
            "sys (s)",
            "peak RSS (MiB)",
            "output = spillway's",
        ]);
        for c in 1..6 {
            t.align(c, Align::Right);
        }
        for r in &self.rows {
            t.row([
                r.system.clone(),
                format!("{:.2}", r.wall),
                format!("{:.0}", r.mb_per_s),
                format!("{:.2}", r.user),
                format!("{:.2}", r.sys),
                format!("{:.0}", r.peak_rss_mib),
                match r.identical {
                    None => "-".into(),
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                },
            ]);
        }
        t
    }

    /// Saves the section as `DIR/WORKLOAD.json` and renders the directory ([`render_dir`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.workload));
        fs::write(&path, serde_json::to_string_pretty(&self.to_json())?)
            .with_context(|| format!("writing {}", path.display()))?;
        render_dir(dir)
    }

    /// The Markdown of this section: heading, conditions, table, notes.
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n{}\n\n{}", self.title, self.conditions, self.table().render());
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

/// Every section saved in `dir`, in workload order (`sort` before `wordcount`, by name).
pub fn load_dir(dir: &Path) -> Result<Vec<Section>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let v: Value =
                serde_json::from_slice(&fs::read(p)?).with_context(|| format!("parsing {}", p.display()))?;
            Ok(Section::from_json(&v))
        })
        .collect()
}

/// Writes `RESULTS.md`, `index.html` and `throughput.svg` in `dir` from its sections.
pub fn render_dir(dir: &Path) -> Result<()> {
    let sections = load_dir(dir)?;
    let mut md = String::from(
        "# Spillway and its peers\n\nWritten by the benchmark binaries (`wordcount-bench`, `sort-bench`); \
         `index.html` has the same tables with charts.\n\n",
    );
    for s in &sections {
        md.push_str(&s.markdown());
        md.push('\n');
    }
    fs::write(dir.join("RESULTS.md"), &md)?;
    let throughput = grouped_bars("Throughput (MB/s of input, higher is better)", &sections, |r| r.mb_per_s);
    fs::write(dir.join("throughput.svg"), &throughput)?;
    fs::write(dir.join("index.html"), html(&sections, &throughput))?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const COLORS: [&str; 8] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// A horizontal bar chart: one group per section, one bar per system, labelled with its value.
pub fn grouped_bars(title: &str, sections: &[Section], value: impl Fn(&Row) -> f64) -> String {
    let bars: Vec<(String, Vec<(String, f64)>)> = sections
        .iter()
        .map(|s| (s.workload.clone(), s.rows.iter().map(|r| (r.system.clone(), value(r))).collect()))
        .collect();
    bar_svg(title, &bars, &[])
}

/// Stacked horizontal bars (`parts` name the segments of each bar, in order).
pub fn stacked_bars(title: &str, bars: &[(String, Vec<(String, f64)>)], parts: &[&str]) -> String {
    bar_svg(title, bars, parts)
}

/// The SVG of grouped (`parts` empty: each inner pair is one bar) or stacked bars (each inner
/// pair is a segment, named by `parts`, of the group's one bar).
fn bar_svg(title: &str, groups: &[(String, Vec<(String, f64)>)], parts: &[&str]) -> String {
    let (label_w, chart_w, bar_h, gap) = (390.0, 420.0, 18.0, 4.0);
    let stacked = !parts.is_empty();
    let max =
        groups
            .iter()
            .map(|(_, v)| {
                if stacked { v.iter().map(|x| x.1).sum() } else { v.iter().map(|x| x.1).fold(0.0, f64::max) }
            })
            .fold(0.0, f64::max)
            .max(1e-9);
    let mut y = 30.0;
    let mut body = String::new();
    for (group, values) in groups {
        let _ = write!(body, r#"<text x="4" y="{:.0}" font-weight="bold">{}</text>"#, y + 13.0, esc(group));
        y += bar_h + gap;
        let rows: Vec<Vec<(String, f64)>> =
            if stacked { vec![values.clone()] } else { values.iter().map(|v| vec![v.clone()]).collect() };
        for (i, row) in rows.iter().enumerate() {
            let label = if stacked { String::new() } else { row[0].0.clone() };
            let _ = write!(
                body,
                r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
                label_w - 6.0,
                y + 13.0,
                esc(&label)
            );
            let mut x = label_w;
            let mut total = 0.0;
            for (j, (_, v)) in row.iter().enumerate() {
                let w = v / max * chart_w;
                let color = COLORS[if stacked { j } else { i } % COLORS.len()];
                let _ = write!(
                    body,
                    r#"<rect x="{x:.1}" y="{y:.0}" width="{w:.1}" height="{bar_h}" fill="{color}"/>"#
                );
                x += w;
                total += v;
            }
            let _ = write!(body, r#"<text x="{:.1}" y="{:.0}">{}</text>"#, x + 4.0, y + 13.0, number(total));
            y += bar_h + gap;
        }
        y += gap * 2.0;
    }
    if stacked {
        let mut x = label_w;
        for (j, p) in parts.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let _ = write!(
                body,
                r#"<rect x="{x:.0}" y="{y:.0}" width="12" height="12" fill="{color}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
                x + 16.0,
                y + 11.0,
                esc(p)
            );
            x += 24.0 + 8.0 * p.len() as f64;
        }
        y += 20.0;
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="4" y="16" font-size="14" font-weight="bold">{t}</text>{body}</svg>"#,
        w = label_w + chart_w + 80.0,
        h = y + 6.0,
        t = esc(title)
    ) + "\n"
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn html(sections: &[Section], throughput: &str) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Spillway and its peers</title>\n<style>\
         body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}\
         td:not(:first-child){text-align:right}</style></head><body>\n<h1>Spillway and its peers</h1>\n",
    );
    out.push_str(throughput);
    out.push_str(&grouped_bars("Peak RSS of the largest process (MiB, lower is better)", sections, |r| {
        r.peak_rss_mib
    }));
    let cpu: Vec<(String, Vec<(String, f64)>)> = sections
        .iter()
        .flat_map(|s| {
            s.rows.iter().map(move |r| {
                (
                    format!("{}: {}", s.workload, r.system),
                    vec![("user".into(), r.user), ("sys".into(), r.sys)],
                )
            })
        })
        .collect();
    out.push_str(&stacked_bars("CPU time (s): user + sys", &cpu, &["user", "sys"]));
    let phases: Vec<(String, Vec<(String, f64)>)> = sections
        .iter()
        .flat_map(|s| {
            s.rows
                .iter()
                .filter(|r| !r.phases.is_empty())
                .map(move |r| (format!("{}: {}", s.workload, r.system), r.phases.clone()))
        })
        .collect();
    if let Some((_, first)) = phases.first() {
        let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&stacked_bars("Spillway's phases (s)", &phases, &names));
    }
    for s in sections {
        let _ = write!(out, "<h2>{}</h2>\n<p>{}</p>\n<table><tr>", esc(&s.title), esc(&s.conditions));
        for h in
            ["system", "wall (s)", "MB/s", "user (s)", "sys (s)", "peak RSS (MiB)", "output = spillway's"]
        {
            let _ = write!(out, "<th>{h}</th>");
        }
        out.push_str("</tr>\n");
        let table = s.table();
        let rendered = table.render();
        for line in rendered.lines().skip(2) {
            out.push_str("<tr>");
            for cell in line.trim_matches('|').split(" | ") {
                let _ = write!(out, "<td>{}</td>", esc(cell.trim().replace("\\|", "|").as_str()));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
        if !s.notes.is_empty() {
            out.push_str("<ul>");
            for n in &s.notes {
                let _ = write!(out, "<li>{}</li>", esc(n));
            }
            out.push_str("</ul>\n");
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> Section {
        Section {
            workload: "wordcount".into(),
            title: "Word count, 64 MiB".into(),
            conditions: "2 CPUs".into(),
            notes: vec!["MR-MPI skipped: not installed".into()],
            rows: vec![
                Row {
                    system: "spillway".into(),
                    wall: 1.0,
                    mb_per_s: 67.0,
                    user: 1.5,
                    sys: 0.2,
                    peak_rss_mib: 100.0,
                    identical: None,
                    phases: vec![("map".into(), 0.8), ("reduce".into(), 0.1)],
                },
                Row { system: "a | b <c>".into(), wall: 2.0, identical: Some(true), ..Row::default() },
            ],
        }
    }

    #[test]
    fn sections_round_trip_and_render_without_external_resources() {
        let dir = tempfile::tempdir().unwrap();
        let s = section();
        s.save(dir.path()).unwrap();
        assert_eq!(load_dir(dir.path()).unwrap(), vec![s]);
        let md = fs::read_to_string(dir.path().join("RESULTS.md")).unwrap();
        assert!(md.contains("| a \\| b <c>"), "{md}");
        assert!(md.contains("- MR-MPI skipped"), "{md}");
        let html = fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("a | b &lt;c&gt;"), "{html}");
        assert!(!html.contains("<script") && !html.contains("href=") && !html.contains("src="));
        let svg = fs::read_to_string(dir.path().join("throughput.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(">67.0<"), "{svg}");
    }
}
