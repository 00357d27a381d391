//! Aligned Markdown tables for benchmark reports.

use std::fmt::Write as _;

/// Horizontal alignment of a table column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Left-aligned (`:---`).
    Left,
    /// Right-aligned (`---:`), for numbers.
    Right,
}

/// A Markdown table whose columns are padded to equal width, so it reads well
/// both in a terminal and pasted into a README.
///
/// ```
/// use spillway_bench::table::{Align, Table};
/// let mut t = Table::new(["program", "wall (s)"]);
/// t.align(1, Align::Right);
/// t.row(["wc-baseline", "1.25"]);
/// assert_eq!(
///     t.render(),
///     "| program     | wall (s) |\n| :---------- | -------: |\n| wc-baseline |     1.25 |\n"
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given column headers, all columns left-aligned.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let aligns = vec![Align::Left; headers.len()];
        Table { headers, aligns, rows: Vec::new() }
    }

    /// Sets the alignment of column `col` (0-based).
    pub fn align(&mut self, col: usize, align: Align) -> &mut Self {
        self.aligns[col] = align;
        self
    }

    /// Appends a row; missing cells are left empty, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
        self
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table as Markdown (one line per row, `\n`-terminated).
    /// `|` inside cells is escaped as `\|`.
    pub fn render(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let headers: Vec<String> = self.headers.iter().map(|h| esc(h)).collect();
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(|c| esc(c)).collect()).collect();
        let widths: Vec<usize> = (0..headers.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([headers[i].chars().count(), 4])
                    .max()
                    .unwrap_or(4)
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            out.push('|');
            for (i, c) in cells.iter().enumerate() {
                let w = widths[i];
                // Writing into a String cannot fail.
                let _ = match self.aligns[i] {
                    Align::Left => write!(out, " {c:<w$} |"),
                    Align::Right => write!(out, " {c:>w$} |"),
                };
            }
            out.push('\n');
        };
        line(&mut out, &headers);
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            let dashes = "-".repeat(w - 1);
            match self.aligns[i] {
                Align::Left => out.push_str(&format!(" :{dashes} |")),
                Align::Right => out.push_str(&format!(" {dashes}: |")),
            }
        }
        out.push('\n');
        for r in &rows {
            line(&mut out, r);
        }
        out
    }

    /// Prints [`Table::render`] to standard output.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}
