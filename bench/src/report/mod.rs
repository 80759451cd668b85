//! The outputs of a `ferry bench` run, all rendered from one [`Report`]: the terminal table
//! ([`table`]), the versioned JSON ([`json`], schema `docs/bench-schema.json`), long-format CSV
//! ([`csv`]), one self-contained HTML file with inline SVG charts ([`html`]), a Prometheus text file
//! ([`prom`]), and the comparison of two reports ([`compare`]). [`write_all`] writes the selected
//! formats into a directory.

pub mod compare;
pub mod csv;
pub mod html;
pub mod json;
pub mod prom;
pub mod table;

use crate::model::{Report, ResultSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An output format of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// The terminal table, also written as `report.txt`.
    Table,
    /// `report.json` (`ferry.bench/v1`).
    Json,
    /// `report.csv`, one line per run metric.
    Csv,
    /// `report.html`, self-contained.
    Html,
    /// `report.prom`, Prometheus text exposition.
    Prom,
}

impl Format {
    /// Every format, in `--format` order.
    pub const ALL: [Format; 5] = [
        Format::Table,
        Format::Json,
        Format::Csv,
        Format::Html,
        Format::Prom,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Html => "html",
            Format::Prom => "prom",
        }
    }

    /// The file [`write_all`] writes for it.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Table => "report.txt",
            Format::Json => "report.json",
            Format::Csv => "report.csv",
            Format::Html => "report.html",
            Format::Prom => "report.prom",
        }
    }

    /// Parses a comma-separated list (`table,json,csv,html,prom`; `all` for every format);
    /// duplicates are dropped, order is kept.
    pub fn parse_list(s: &str) -> Result<Vec<Format>, FormatError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let add: Vec<Format> = if part == "all" {
                Format::ALL.to_vec()
            } else {
                vec![part.parse()?]
            };
            for f in add {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        if out.is_empty() {
            return Err(FormatError(s.to_string()));
        }
        Ok(out)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--format` name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output format {0:?}: expected a comma-separated list of table, json, csv, html, prom (or all)")]
pub struct FormatError(pub String);

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| FormatError(s.to_string()))
    }
}

/// Writes the report in each format into `dir` (created if missing) as [`Format::file_name`];
/// returns the files written, in the order given.
pub fn write_all(report: &Report, dir: &Path, formats: &[Format]) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::with_capacity(formats.len());
    for &f in formats {
        let path = dir.join(f.file_name());
        let text = match f {
            Format::Table => table::render(report),
            Format::Json => json::to_string(report)?,
            Format::Csv => csv::render(report),
            Format::Html => html::render(report),
            Format::Prom => prom::render(report),
        };
        std::fs::write(&path, text)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// `flows=1 size=1` (empty when there are no parameters).
pub fn params_text(rs: &ResultSet) -> String {
    rs.params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A figure with about four significant digits and no exponent: `52300`, `941.2`, `9.41`, `0.0123`.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "—".to_string();
    }
    let a = v.abs();
    let decimals = if a >= 1000.0 || a == 0.0 {
        0
    } else if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else if a >= 1.0 {
        3
    } else if a >= 0.01 {
        4
    } else {
        6
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A ratio with two decimals: `0.93`, `1.00`, `12.40`.
pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "—".to_string()
    }
}

/// The figures the table and the HTML lead with, per test: the headline metric, the secondary
/// ones, and the CPU cost per unit.
pub(crate) struct TestView {
    /// Headline (its ratio gets the bar).
    pub(crate) primary: &'static str,
    /// Shown next to it.
    pub(crate) secondary: &'static [&'static str],
    /// CPU per unit.
    pub(crate) cpu: &'static str,
    /// One line for people.
    pub(crate) title: &'static str,
}

pub(crate) fn test_view(test: &str) -> TestView {
    let v = |primary, secondary, cpu, title| TestView {
        primary,
        secondary,
        cpu,
        title,
    };
    match test {
        "tcp_stream" => v(
            "throughput_gbps",
            &["retrans", "fairness"][..],
            "cpu_s_per_gbit",
            "TCP stream: goodput",
        ),
        "tcp_rr" => v(
            "tps",
            &["lat_p50_us", "lat_p99_us", "lat_p999_us"][..],
            "cpu_us_per_txn",
            "TCP request/response",
        ),
        "udp_rr" => v(
            "tps",
            &["lat_p50_us", "lat_p99_us", "loss_pct"][..],
            "cpu_us_per_txn",
            "UDP request/response",
        ),
        "tcp_crr" => v(
            "cps",
            &["lat_p50_us", "connect_p50_us", "connect_p99_us"][..],
            "cpu_us_per_conn",
            "TCP connect/request/response/close",
        ),
        "tcp_cc" => v(
            "cps",
            &["connect_p50_us", "connect_p99_us"][..],
            "cpu_us_per_conn",
            "TCP connect/close",
        ),
        "udp_stream" => v(
            "received_pps",
            &["loss_pct", "reorder_pct"][..],
            "",
            "UDP stream at an offered rate",
        ),
        "udp_max_rate" => v(
            "max_lossless_pps",
            &["max_lossless_gbps", "loss_pct", "search_trials"][..],
            "",
            "UDP: highest rate with <= 0.1 % loss",
        ),
        _ => v("", &[][..], "", "other"),
    }
}

/// Tests in first-appearance order.
pub(crate) fn tests_in_order(report: &Report) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for rs in &report.results {
        if !out.contains(&rs.test.as_str()) {
            out.push(&rs.test);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(
            Format::parse_list("table, json,csv,html,prom,json").unwrap(),
            Format::ALL.to_vec()
        );
        assert_eq!(Format::parse_list("all").unwrap(), Format::ALL.to_vec());
        let e = Format::parse_list("json,pdf").unwrap_err();
        assert!(e.to_string().contains("\"pdf\""), "{e}");
        assert!(Format::parse_list(" , ").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(52_300.4), "52300");
        assert_eq!(fmt_num(941.26), "941.3");
        assert_eq!(fmt_num(9.41), "9.41");
        assert_eq!(fmt_num(0.0123), "0.0123");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(f64::NAN), "—");
        assert_eq!(fmt_ratio(0.8333), "0.83");
        assert_eq!(fmt_ratio(1.0), "1.00");
    }
}
