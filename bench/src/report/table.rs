//! The terminal table: a banner (`QUICK: indicative only`, `SMOKE: correctness only`, `PARTIAL`),
//! the machine in one line, then per test one row per (path, parameters): the headline figure's
//! median, its min–max, the ratio to the baseline path with a text bar, the secondary figures, CPU
//! per unit and flags; then the cost ladder, the Service sweep and the warnings. Also the progress
//! line printed while the rounds run.

use super::{fmt_num, fmt_ratio, params_text, test_view, tests_in_order};
use crate::model::{unit_of, MetricSummary, Report, ResultSet};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Characters of the ratio bar for a ratio of 1.0.
const BAR_FULL: usize = 10;
/// Longest bar (1.5×); longer ratios end in `▶`.
const BAR_MAX: usize = 15;

/// A ratio as a bar of block characters, ten per 1.0× (in eighths), ending in `▶` beyond 1.5×.
pub fn ratio_bar(ratio: f64) -> String {
    if !ratio.is_finite() || ratio <= 0.0 {
        return String::new();
    }
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths_total = BAR_MAX * 8;
    let wanted = (ratio * (BAR_FULL * 8) as f64).round();
    let eighths = eighths_of(wanted.min(eighths_total as f64));
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8]);
    }
    if wanted > eighths_total as f64 {
        s.push('▶');
    }
    s
}

/// A whole number of eighths in 0..=[`BAR_MAX`]·8 as usize.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the caller rounds and clamps to 0..=BAR_MAX*8"
)]
fn eighths_of(x: f64) -> usize {
    x.max(0.0) as usize
}

/// A short column label: `lat_p99_us` -> `p99 µs`, `lat_p999_us` -> `p99.9 µs`,
/// `connect_p50_us` -> `connect p50 µs`, `loss_pct` -> `loss %`.
pub fn label(metric: &str) -> String {
    let unit = unit_of(metric).0;
    let mut base = metric.strip_prefix("lat_").unwrap_or(metric);
    for suffix in ["_us", "_ms", "_pct", "_gbps", "_pps"] {
        if let Some(b) = base.strip_suffix(suffix) {
            base = b;
            break;
        }
    }
    let base = base.replace("p999", "p99.9").replace('_', " ");
    if unit.is_empty() {
        base
    } else {
        format!("{base} {unit}")
    }
}

/// Lays out rows in columns separated by two spaces; `right[i]` right-aligns column i.
fn grid(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The figure of a summary, marked `*` when it is a percentile without enough samples.
fn figure(s: Option<&MetricSummary>) -> String {
    match s {
        None => "—".into(),
        Some(s) if !s.enough_samples => format!("{}*", fmt_num(s.median)),
        Some(s) => fmt_num(s.median),
    }
}

/// The flags of a result set and a count of its runs' flags: `no valid run; not steady ×2`.
pub fn flags_text(rs: &ResultSet) -> String {
    let mut parts: Vec<String> = rs
        .flags
        .iter()
        .filter(|f| !f.starts_with(crate::stats::FEW_SAMPLES))
        .cloned()
        .collect();
    // Grouped by kind (the text before `:` or ` (`): the full text when every run of the group
    // says the same, the kind alone otherwise (the HTML lists each run's flags in full).
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in &rs.runs {
        let errors = run
            .error
            .iter()
            .map(|e| format!("error: {}", e.lines().next().unwrap_or_default()));
        for f in run.flags.iter().cloned().chain(errors) {
            let kind = f.split([':', '(']).next().unwrap_or(&f).trim().to_string();
            groups.entry(kind).or_default().push(f);
        }
    }
    for (kind, texts) in groups {
        let n = texts.len();
        let text = if texts.iter().all(|t| *t == texts[0]) {
            texts[0].clone()
        } else {
            kind
        };
        parts.push(if n > 1 { format!("{text} ×{n}") } else { text });
    }
    let invalid = rs.runs.iter().filter(|r| !r.valid).count();
    if invalid > 0 && !rs.flags.iter().any(|f| f == crate::stats::NO_VALID_RUN) {
        parts.push(format!("{invalid}/{} runs invalid", rs.runs.len()));
    }
    parts.join("; ")
}

fn banner(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if report.partial {
        out.push("PARTIAL: the run stopped early; these are the results so far.".to_string());
    }
    if report.config.smoke {
        out.push("SMOKE: correctness only; the figures are not meaningful.".to_string());
    } else if report.config.quick {
        out.push(format!(
            "QUICK: indicative only ({} rounds of {} s).",
            report.config.rounds,
            fmt_num(report.config.duration_s)
        ));
    }
    out
}

/// The whole table as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for b in banner(report) {
        let _ = writeln!(out, "{b}");
    }
    let h = &report.meta.host;
    let _ = writeln!(
        out,
        "ferry bench {} · {} · {} CPUs · kernel {} · {} rounds × {} s, seed {}",
        report.meta.ferry_version,
        if h.cpu_model.is_empty() {
            "unknown CPU"
        } else {
            &h.cpu_model
        },
        h.cores,
        h.kernel,
        report.config.rounds,
        fmt_num(report.config.duration_s),
        report.config.seed
    );
    let unavailable: Vec<String> = report
        .paths
        .iter()
        .filter_map(|p| Some(format!("{} ({})", p.id, p.unavailable.as_ref()?)))
        .collect();
    if !unavailable.is_empty() {
        let _ = writeln!(out, "not measured: {}", unavailable.join(", "));
    }
    let mut few = false;
    for test in tests_in_order(report) {
        let view = test_view(test);
        let sets: Vec<&ResultSet> = report.results.iter().filter(|r| r.test == test).collect();
        let primary = if view.primary.is_empty() {
            sets.iter()
                .find_map(|r| r.summary.keys().next().map(String::as_str))
                .unwrap_or("")
        } else {
            view.primary
        };
        let (unit, higher) = unit_of(primary);
        let _ = writeln!(
            out,
            "\n{test} — {} · {} ({}, {} is better)",
            view.title,
            primary,
            if unit.is_empty() { "-" } else { unit },
            if higher { "higher" } else { "lower" }
        );
        // Secondary figures none of the rows has are left out.
        let secondary: Vec<&str> = view
            .secondary
            .iter()
            .copied()
            .filter(|m| sets.iter().any(|r| r.summary.contains_key(*m)))
            .collect();
        let mut header = vec![
            "path".to_string(),
            "params".to_string(),
            "median".to_string(),
            "[min – max]".to_string(),
            "× baseline".to_string(),
            String::new(),
        ];
        header.extend(secondary.iter().map(|m| label(m)));
        if !view.cpu.is_empty() {
            header.push(unit_of(view.cpu).0.to_string());
        }
        header.push("flags".to_string());
        let mut rows = vec![header];
        for rs in sets {
            let s = rs.summary.get(primary);
            let mut row = vec![rs.path.clone(), params_text(rs), figure(s)];
            row.push(s.map_or(String::new(), |s| {
                format!("[{} – {}]", fmt_num(s.min), fmt_num(s.max))
            }));
            match s.and_then(|s| s.ratio.as_ref()) {
                Some(r) => {
                    row.push(format!("{}× {}", fmt_ratio(r.median), r.baseline));
                    row.push(ratio_bar(r.median));
                }
                None => {
                    row.push("—".into());
                    row.push(String::new());
                }
            }
            for m in &secondary {
                let s = rs.summary.get(*m);
                few |= s.is_some_and(|s| !s.enough_samples);
                row.push(figure(s));
            }
            if !view.cpu.is_empty() {
                row.push(figure(rs.summary.get(view.cpu)));
            }
            row.push(flags_text(rs));
            rows.push(row);
        }
        let mut right = vec![false, false, true, true, true, false];
        right.extend(secondary.iter().map(|_| true));
        right.push(true);
        out.push_str(&grid(&rows, &right));
    }
    if few {
        out.push_str(
            "* percentile from fewer samples than it needs (p99: 10 000, p99.9: 100 000 per run)\n",
        );
    }
    if !report.ladder.is_empty() {
        out.push_str("\nCost ladder — µs each layer adds to a 1-byte TCP round trip (tcp_rr p50, median over rounds)\n");
        let mut rows = vec![vec![
            "layer".to_string(),
            "formula".to_string(),
            "+µs".to_string(),
            "[min – max]".to_string(),
            "CPU µs/txn".to_string(),
        ]];
        for s in &report.ladder {
            rows.push(vec![
                s.layer.clone(),
                s.formula.clone(),
                fmt_num(s.us),
                format!("[{} – {}]", fmt_num(s.min_us), fmt_num(s.max_us)),
                s.cpu_us.map_or("—".into(), fmt_num),
            ]);
        }
        out.push_str(&grid(&rows, &[false, false, true, true, true]));
    }
    if !report.svc_scale.is_empty() {
        out.push_str(
            "\nService scale — connect latency and connections/s against the number of Services\n",
        );
        let mut rows = vec![vec![
            "mode".to_string(),
            "target".to_string(),
            "test".to_string(),
            "services".to_string(),
            "connect p50 µs".to_string(),
            "connect p99 µs".to_string(),
            "conn/s".to_string(),
            "p50 ratio".to_string(),
            "entries".to_string(),
            "sync s".to_string(),
        ]];
        for p in &report.svc_scale {
            rows.push(vec![
                p.mode.clone(),
                p.target.clone(),
                p.test.clone(),
                p.services.to_string(),
                figure(Some(&p.connect_p50_us)),
                figure(Some(&p.connect_p99_us)),
                figure(Some(&p.cps)),
                p.connect_p50_us.ratio.as_ref().map_or("—".into(), |r| {
                    format!(
                        "{}× [{} – {}]",
                        fmt_ratio(r.median),
                        fmt_ratio(r.min),
                        fmt_ratio(r.max)
                    )
                }),
                p.datapath_entries.to_string(),
                fmt_num(p.full_sync_s),
            ]);
        }
        out.push_str(&grid(
            &rows,
            &[
                false, false, false, true, true, true, true, true, true, true,
            ],
        ));
        out.push_str(
            "p50 ratio: connect p50 per round against, for nodeport (external host -> NodePort on \
             node-1), pod-ip-external (the same backend's pod IP from the external host) at the \
             same Service count; for the other targets, the same target at the first count.\n",
        );
    }
    if !report.svc_programming.is_empty() {
        out.push_str("\nService programming latency — API write until a prober sees the change\n");
        let mut rows = vec![vec![
            "mode".to_string(),
            "services".to_string(),
            "changes".to_string(),
            "p50 ms".to_string(),
            "p99 ms".to_string(),
            "max ms".to_string(),
        ]];
        for p in &report.svc_programming {
            rows.push(vec![
                p.mode.clone(),
                p.services.to_string(),
                p.changes.to_string(),
                fmt_num(p.p50_ms),
                fmt_num(p.p99_ms),
                fmt_num(p.max_ms),
            ]);
        }
        out.push_str(&grid(&rows, &[false, true, true, true, true, true]));
    }
    out.push_str(
        "\nCPU per unit: machine CPU seconds busy in the window minus the idle baseline, per Gbit \
         received, per transaction or per connection.\n",
    );
    if !report.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for w in &report.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}

/// One progress line: `[ 12/48]  25 % █████░░░░░░░░░░░░░░░  P1 tcp_rr size=1` (no line break).
pub fn progress(done: usize, total: usize, label: &str) -> String {
    const WIDTH: usize = 20;
    let done = done.min(total);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let digits = total.to_string().len();
    format!(
        "[{done:>digits$}/{total}] {pct:>3} % {}{}  {label}",
        "█".repeat(filled),
        "░".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Config, Ratio, Run};

    #[test]
    fn bars() {
        assert_eq!(ratio_bar(1.0), "█".repeat(10));
        assert_eq!(ratio_bar(0.5), "█████");
        assert_eq!(ratio_bar(0.9375), "█████████▍");
        assert!(ratio_bar(3.0).ends_with('▶'));
        assert_eq!(ratio_bar(3.0).chars().count(), 16);
        assert_eq!(ratio_bar(0.0), "");
        assert_eq!(ratio_bar(f64::NAN), "");
    }

    #[test]
    fn labels() {
        assert_eq!(label("lat_p99_us"), "p99 µs");
        assert_eq!(label("lat_p999_us"), "p99.9 µs");
        assert_eq!(label("connect_p50_us"), "connect p50 µs");
        assert_eq!(label("loss_pct"), "loss %");
        assert_eq!(label("retrans"), "retrans segments");
    }

    #[test]
    fn progress_line() {
        assert_eq!(
            progress(12, 48, "P1 tcp_rr size=1"),
            "[12/48]  25 % █████░░░░░░░░░░░░░░░  P1 tcp_rr size=1"
        );
        assert!(progress(0, 0, "x").contains("100 %"));
        assert!(progress(60, 48, "x").starts_with("[48/48] 100 %"));
    }

    #[test]
    fn run_flags_are_grouped_by_kind() {
        let run = |flags: &[&str], valid: bool| Run {
            valid,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        };
        let rs = ResultSet {
            runs: vec![
                run(
                    &[
                        "cpu-bound: a CPU was 97 % busy",
                        "wrong path: x did not move",
                    ],
                    false,
                ),
                run(
                    &[
                        "cpu-bound: a CPU was 100 % busy",
                        "wrong path: x did not move",
                    ],
                    false,
                ),
                run(&["not steady (CV 20 %, trend +1 %)"], true),
                Run {
                    valid: false,
                    error: Some("connection refused\nmore".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            flags_text(&rs),
            "cpu-bound ×2; error: connection refused; not steady (CV 20 %, trend +1 %); \
             wrong path: x did not move ×2; 3/4 runs invalid"
        );
    }

    /// A Service scale point: connect p50 `p50` µs, its ratio when given.
    pub(crate) fn svc_point(
        mode: &str,
        target: &str,
        n: u32,
        p50: f64,
        ratio: Option<(&str, f64, f64, f64)>,
    ) -> crate::model::SvcScalePoint {
        let m = |v: f64| MetricSummary {
            n: 1,
            median: v,
            min: v,
            max: v,
            enough_samples: true,
            ..Default::default()
        };
        let mut connect_p50_us = m(p50);
        connect_p50_us.ratio = ratio.map(|(b, median, min, max)| Ratio {
            baseline: b.into(),
            median,
            min,
            max,
        });
        crate::model::SvcScalePoint {
            mode: mode.into(),
            target: target.into(),
            test: "tcp_cc".into(),
            services: n,
            connect_p50_us,
            connect_p99_us: m(p50 * 2.0),
            cps: m(30_000.0),
            datapath_entries: 40,
            full_sync_s: 0.1,
            connections: 30_000,
            verified: None,
        }
    }

    #[test]
    fn service_scale_rows_show_every_target_and_the_ratio() {
        let r = Report {
            svc_scale: vec![
                svc_point(
                    "ebpf",
                    "nodeport",
                    1000,
                    26.0,
                    Some(("pod-ip-external tcp_cc at N=1000", 1.04, 0.98, 1.123)),
                ),
                svc_point("ebpf", "pod-ip-external", 1000, 25.0, None),
                svc_point(
                    "iptables",
                    "clusterip",
                    1000,
                    40.0,
                    Some(("clusterip tcp_cc at N=0", 1.5, 1.25, 2.0)),
                ),
            ],
            ..Default::default()
        };
        let t = render(&r);
        let row = |target: &str| {
            t.lines()
                .find(|l| l.split_whitespace().nth(1) == Some(target))
                .unwrap_or_else(|| panic!("no {target} row:\n{t}"))
                .to_owned()
        };
        assert!(row("nodeport").contains("1.04× [0.98 – 1.12]"), "{t}");
        assert!(row("pod-ip-external").contains(" — "), "{t}");
        assert!(row("clusterip").contains("1.50× [1.25 – 2.00]"), "{t}");
        assert!(t.contains("for nodeport (external host -> NodePort on node-1), pod-ip-external"));
    }

    #[test]
    fn table_shows_banner_ratio_and_flags() {
        let mut rs = ResultSet {
            path: "P1".into(),
            test: "tcp_rr".into(),
            params: [("size".to_string(), "1".to_string())].into(),
            runs: vec![
                Run {
                    valid: true,
                    flags: vec!["not steady (CV 12 %, trend +1 %)".into()],
                    ..Default::default()
                },
                Run {
                    valid: false,
                    flags: vec!["cpu-bound".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        rs.summary.insert(
            "tps".into(),
            MetricSummary {
                n: 1,
                median: 40_000.0,
                min: 39_000.0,
                max: 41_000.0,
                enough_samples: true,
                ratio: Some(Ratio {
                    baseline: "L1".into(),
                    median: 0.8,
                    min: 0.78,
                    max: 0.82,
                }),
                ..Default::default()
            },
        );
        rs.summary.insert(
            "lat_p999_us".into(),
            MetricSummary {
                n: 1,
                median: 99.0,
                enough_samples: false,
                ..Default::default()
            },
        );
        let r = Report {
            config: Config {
                quick: true,
                rounds: 3,
                duration_s: 2.0,
                ..Default::default()
            },
            partial: true,
            results: vec![rs],
            warnings: vec!["the machine was busy".into()],
            ..Default::default()
        };
        let t = render(&r);
        assert!(t.starts_with("PARTIAL"), "{t}");
        assert!(
            t.contains("QUICK: indicative only (3 rounds of 2 s)"),
            "{t}"
        );
        assert!(t.contains("40000"), "{t}");
        assert!(t.contains("[39000 – 41000]"), "{t}");
        assert!(t.contains("0.80× L1  ████████ "), "{t}");
        assert!(t.contains("99*"), "{t}");
        assert!(
            t.contains("cpu-bound; not steady (CV 12 %, trend +1 %); 1/2 runs invalid"),
            "{t}"
        );
        assert!(t.contains("  - the machine was busy"), "{t}");
    }
}
