//! The HTML report: one self-contained file (inline CSS and hand-written inline SVG, no script, no
//! external reference of any kind) with the charts — throughput per path as bars against its
//! physical limit (L1 or L2) with min–max error bars, request/response latency percentiles on a log
//! scale, throughput against the number of flows (when several were run), the cost-ladder
//! waterfall, connect latency against the number of Services per proxy mode (with the pod-IP
//! control), CPU per Gbit — and the tables: environment, warnings, paths, cost
//! ladder, every figure, and the flagged runs. Every chart is an `<svg role="img">` with a
//! `<title>`.

use super::{fmt_num, fmt_ratio, params_text, table::flags_text};
use crate::model::{unit_of, MetricSummary, Report, ResultSet};
use crate::stats;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Chart colours (Tableau 10), one per series.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Chart width in CSS pixels.
const W: f64 = 780.0;
/// Left margin (labels) of horizontal bar charts.
const LABEL_W: f64 = 200.0;
/// Right margin (notes) of horizontal bar charts.
const NOTE_W: f64 = 160.0;

/// The stylesheet of every HTML output.
pub(crate) const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.banner{padding:.6em 1em;border-radius:4px;margin:.5em 0;font-weight:600}
.partial{background:#fde2e1;color:#8a1c12}.quick{background:#fff4d6;color:#7a5200}.smoke{background:#e3ecfa;color:#1d3f73}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.few{color:#999}.flag{color:#a33}.worse{background:#fde2e1}.better{background:#e2f5e4}figure{margin:1em 0}figcaption{color:#555;font-size:13px}
svg text{font:11px system-ui,sans-serif;fill:#333}svg .axis{stroke:#999;stroke-width:1}svg .grid{stroke:#eee;stroke-width:1}
";

/// Text escaped for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A round number >= x/5 for axis ticks (1, 2 or 5 times a power of ten).
fn nice_step(range: f64) -> f64 {
    if !range.is_finite() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let m = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Ticks from 0 to at least `max`: (ticks, axis end).
fn linear_ticks(max: f64) -> (Vec<f64>, f64) {
    let step = nice_step(max);
    let mut ticks = vec![0.0];
    let mut t = 0.0;
    while t < max - 1e-12 {
        t += step;
        ticks.push(t);
    }
    (ticks, t.max(step))
}

fn svg_open(id: &str, title: &str, h: f64) -> String {
    format!(
        "<svg role=\"img\" aria-labelledby=\"{id}-title\" viewBox=\"0 0 {W} {h:.0}\" width=\"{W}\" \
         height=\"{h:.0}\"><title id=\"{id}-title\">{}</title>",
        esc(title)
    )
}

fn figure(svg: String, caption: &str) -> String {
    format!(
        "<figure>{svg}<figcaption>{}</figcaption></figure>\n",
        esc(caption)
    )
}

/// One bar of a horizontal bar chart.
#[derive(Debug, Clone)]
struct Bar {
    label: String,
    value: f64,
    min: f64,
    max: f64,
    /// A reference line drawn across the bar's row (the physical limit), with its name.
    limit: Option<(String, f64)>,
    /// Text right of the plot.
    note: String,
    /// The bar's tooltip (after the label).
    tip: String,
    /// Drawn from `start` instead of 0 (waterfall).
    start: f64,
    colour: &'static str,
}

/// Horizontal bars with min–max error bars and optional reference lines.
fn hbar_chart(id: &str, title: &str, unit: &str, bars: &[Bar]) -> String {
    let row = 26.0;
    let top = 14.0;
    let h = top + row * bars.len() as f64 + 34.0;
    let plot_w = W - LABEL_W - NOTE_W;
    let hi = bars
        .iter()
        .flat_map(|b| {
            [
                b.start + b.value,
                b.max + b.start,
                b.limit.as_ref().map_or(0.0, |l| l.1),
                b.start,
            ]
        })
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (ticks, end) = linear_ticks(hi);
    let x = |v: f64| LABEL_W + (v.max(0.0) / end).min(1.0) * plot_w;
    let mut s = svg_open(id, title, h);
    let axis_y = top + row * bars.len() as f64 + 4.0;
    for t in &ticks {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{axis_y:.1}\"/>\
             <text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">{2}</text>",
            x(*t),
            axis_y + 14.0,
            fmt_num(*t)
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{LABEL_W}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        LABEL_W + plot_w,
        LABEL_W + plot_w / 2.0,
        axis_y + 28.0,
        esc(unit)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let cy = y + row / 2.0;
        let (a, z) = if b.value >= 0.0 {
            (x(b.start), x(b.start + b.value))
        } else {
            (x(b.start + b.value), x(b.start))
        };
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"16\" fill=\"{}\"><title>{}: {}</title></rect>",
            LABEL_W - 6.0,
            cy + 4.0,
            esc(&b.label),
            y + 5.0,
            (z - a).max(1.0),
            b.colour,
            esc(&b.label),
            esc(&b.tip)
        );
        if b.max > b.min {
            let (x1, x2) = (x(b.start + b.min), x(b.start + b.max));
            let _ = write!(
                s,
                "<path d=\"M{x1:.1} {:.1}V{:.1}M{x1:.1} {cy:.1}H{x2:.1}M{x2:.1} {:.1}V{:.1}\" \
                 stroke=\"#222\" stroke-width=\"1.2\" fill=\"none\"/>",
                cy - 5.0,
                cy + 5.0,
                cy - 5.0,
                cy + 5.0
            );
        }
        if let Some((name, v)) = &b.limit {
            let lx = x(*v);
            let _ = write!(
                s,
                "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{lx:.1}\" y2=\"{:.1}\" stroke=\"#111\" \
                 stroke-width=\"2\" stroke-dasharray=\"3 2\"><title>{} (physical limit): {} {}</title></line>",
                y + 1.0,
                y + row - 1.0,
                esc(name),
                fmt_num(*v),
                esc(unit)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LABEL_W + plot_w + 8.0,
            cy + 4.0,
            esc(&b.note)
        );
    }
    s.push_str("</svg>");
    s
}

/// One line of a line chart: a name, points (x index, summary) and a dash pattern.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    points: Vec<(usize, MetricSummary)>,
    dashed: bool,
}

/// A line chart over categorical x positions, linear or log y, with min–max whiskers; hollow
/// points are percentiles without enough samples.
fn line_chart(
    id: &str,
    title: &str,
    x_labels: &[String],
    y_unit: &str,
    log: bool,
    series: &[Series],
) -> String {
    let (left, right, top, bottom) = (70.0, 190.0, 14.0, 44.0);
    let h = 300.0;
    let plot_w = W - left - right;
    let plot_h = h - top - bottom;
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|(_, m)| [m.median, m.min, m.max]))
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .collect();
    let vmax = values.iter().copied().fold(0.0, f64::max);
    let vmin = values.iter().copied().fold(f64::INFINITY, f64::min);
    let (ticks, lo, hi): (Vec<f64>, f64, f64) = if log {
        // 1-2-5 steps per decade, from the last step at or below the smallest value to the first
        // at or above the largest.
        let steps = |from: f64, to: f64| {
            let mut t = Vec::new();
            let mut d = 10f64.powf(from.max(1e-9).log10().floor());
            while t.last().is_none_or(|v| *v < to) {
                for m in [1.0, 2.0, 5.0] {
                    t.push(d * m);
                }
                d *= 10.0;
            }
            t
        };
        let all = steps(vmin, vmax.max(vmin));
        let lo = all
            .iter()
            .copied()
            .rev()
            .find(|v| *v <= vmin * 1.0001)
            .unwrap_or(all[0]);
        let hi = all
            .iter()
            .copied()
            .find(|v| *v >= vmax * 0.9999 && *v > lo)
            .unwrap_or(lo * 10.0);
        let t: Vec<f64> = all.into_iter().filter(|v| *v >= lo && *v <= hi).collect();
        (t, lo, hi)
    } else {
        let (t, end) = linear_ticks(vmax);
        (t, 0.0, end)
    };
    let y = |v: f64| -> f64 {
        let f = if log {
            (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            (v - lo) / (hi - lo)
        };
        top + plot_h * (1.0 - f.clamp(0.0, 1.0))
    };
    let n = x_labels.len().max(1) as f64;
    let x = |i: usize| left + plot_w * (i as f64 + 0.5) / n;
    let mut s = svg_open(id, title, h);
    for t in &ticks {
        let _ = write!(
            s,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\"/>\
             <text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
            y(*t),
            left + plot_w,
            left - 6.0,
            y(*t) + 4.0,
            fmt_num(*t)
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0:.1}\"/>\
         <line class=\"axis\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\"/>\
         <text x=\"14\" y=\"{2:.1}\" transform=\"rotate(-90 14 {2:.1})\" text-anchor=\"middle\">{3}</text>",
        top + plot_h,
        left + plot_w,
        top + plot_h / 2.0,
        esc(&format!("{y_unit}{}", if log { " (log scale)" } else { "" }))
    );
    for (i, l) in x_labels.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(i),
            top + plot_h + 16.0,
            esc(l)
        );
    }
    for (k, ser) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|(_, m)| !log || m.median > 0.0)
            .map(|(i, m)| format!("{:.1},{:.1}", x(*i), y(m.median)))
            .collect();
        let _ = write!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{}/>",
            pts.join(" "),
            if ser.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            }
        );
        for (i, m) in &ser.points {
            if log && m.median <= 0.0 {
                continue;
            }
            let (px, py) = (x(*i), y(m.median));
            if m.max > m.min && (!log || m.min > 0.0) {
                let _ = write!(
                    s,
                    "<line x1=\"{px:.1}\" y1=\"{:.1}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"{colour}\"/>",
                    y(m.min),
                    y(m.max)
                );
            }
            let fill = if m.enough_samples { colour } else { "#fff" };
            let _ = write!(
                s,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{colour}\" \
                 stroke-width=\"1.5\"><title>{}: {} {}{}</title></circle>",
                esc(&ser.name),
                fmt_num(m.median),
                esc(y_unit),
                if m.enough_samples {
                    ""
                } else {
                    " (few samples)"
                }
            );
        }
        let ly = top + 12.0 + 18.0 * k as f64;
        let lx = left + plot_w + 14.0;
        let _ = write!(
            s,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 22.0,
            if ser.dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            },
            lx + 28.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The physical limit of a path: the first of L1 / L2 along its chain of baselines.
fn limit_of<'a>(report: &'a Report, path: &str) -> Option<&'a str> {
    let base = |id: &str| {
        report
            .paths
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.baseline.as_deref())
    };
    let mut cur = base(path)?;
    for _ in 0..16 {
        if cur == "L1" || cur == "L2" {
            return Some(cur);
        }
        cur = base(cur)?;
    }
    None
}

/// The result set of `path` with the same test and parameters as `like`; failing that, the only
/// one that differs in the `engine` parameter alone.
fn find<'a>(report: &'a Report, path: &str, like: &ResultSet) -> Option<&'a ResultSet> {
    let same_test = || {
        report
            .results
            .iter()
            .filter(move |r| r.path == path && r.test == like.test)
    };
    if let Some(r) = same_test().find(|r| r.params == like.params) {
        return Some(r);
    }
    let strip = |r: &ResultSet| {
        let mut p = r.params.clone();
        p.remove("engine");
        p
    };
    let mut candidates = same_test().filter(|r| strip(r) == strip(like));
    match (candidates.next(), candidates.next()) {
        (Some(r), None) => Some(r),
        _ => None,
    }
}

/// A bar label: the path and the parameters that tell it apart from the other bars of the chart
/// (`P1 flows=2`), cut to 34 characters.
fn set_label(rs: &ResultSet, all: &[&ResultSet]) -> String {
    let mut label = rs.path.clone();
    for (k, v) in &rs.params {
        if all.iter().any(|o| o.params.get(k) != Some(v)) {
            label.push_str(&format!(" {k}={v}"));
        }
    }
    if label.chars().count() > 34 {
        label = label.chars().take(33).collect::<String>() + "…";
    }
    label
}

/// Parameters every result set of a chart shares, for its caption (`flows=1 size=131072`).
fn common_params(all: &[&ResultSet]) -> String {
    let Some(first) = all.first() else {
        return String::new();
    };
    first
        .params
        .iter()
        .filter(|(k, v)| all.iter().all(|o| o.params.get(*k) == Some(*v)))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn throughput_chart(report: &Report, n: usize) -> Option<String> {
    let metric = "throughput_gbps";
    let sets: Vec<&ResultSet> = report
        .results
        .iter()
        .filter(|r| r.test == "tcp_stream" && r.summary.contains_key(metric))
        .collect();
    let bars: Vec<Bar> = sets
        .iter()
        .filter_map(|rs| {
            let s = rs.summary.get(metric)?;
            let limit = limit_of(report, &rs.path).and_then(|l| {
                let v = find(report, l, rs)?.summary.get(metric)?.median;
                Some((l.to_string(), v))
            });
            let note = match (&limit, &s.ratio) {
                (Some((l, _)), Some(r)) if &r.baseline == l => {
                    format!("{}× {l}", fmt_ratio(r.median))
                }
                (Some((l, v)), _) if *v > 0.0 => format!("{}× {l}", fmt_ratio(s.median / v)),
                _ => String::new(),
            };
            Some(Bar {
                label: set_label(rs, &sets),
                value: s.median,
                min: s.min,
                max: s.max,
                tip: format!(
                    "{} Gbit/s [{} – {}] {note}",
                    fmt_num(s.median),
                    fmt_num(s.min),
                    fmt_num(s.max)
                ),
                limit,
                note,
                start: 0.0,
                colour: if rs.path.starts_with('L') {
                    "#9aa5b1"
                } else {
                    PALETTE[0]
                },
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    Some(figure(
        hbar_chart(
            &format!("chart{n}"),
            "TCP stream throughput per path against its physical limit",
            "Gbit/s (median, min–max over rounds)",
            &bars,
        ),
        &format!(
            "Goodput per path, {} (median over rounds, whiskers min–max); the dashed line is the \
             physical limit measured in the same run (L1 raw veth pair for same-node paths, L2 \
             node to node for cross-node paths); the note is the ratio to it.",
            common_params(&sets)
        ),
    ))
}

/// The latency metrics drawn, with their x labels.
const PERCENTILES: [(&str, &str); 4] = [
    ("lat_p50_us", "p50"),
    ("lat_p90_us", "p90"),
    ("lat_p99_us", "p99"),
    ("lat_p999_us", "p99.9"),
];

fn latency_charts(report: &Report, next: &mut usize) -> Vec<String> {
    let mut groups: Vec<(String, Vec<&ResultSet>)> = Vec::new();
    for rs in &report.results {
        if !["tcp_rr", "udp_rr", "tcp_crr"].contains(&rs.test.as_str())
            || !PERCENTILES.iter().any(|(m, _)| rs.summary.contains_key(*m))
        {
            continue;
        }
        let key = format!("{} {}", rs.test, params_text(rs));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(rs),
            None => groups.push((key, vec![rs])),
        }
    }
    let labels: Vec<String> = PERCENTILES.iter().map(|(_, l)| l.to_string()).collect();
    groups
        .into_iter()
        .map(|(key, sets)| {
            let series: Vec<Series> = sets
                .iter()
                .map(|rs| Series {
                    name: rs.path.clone(),
                    points: PERCENTILES
                        .iter()
                        .enumerate()
                        .filter_map(|(i, (m, _))| Some((i, rs.summary.get(*m)?.clone())))
                        .collect(),
                    dashed: false,
                })
                .collect();
            *next += 1;
            figure(
                line_chart(
                    &format!("chart{next}"),
                    &format!("Transaction latency percentiles, {key}"),
                    &labels,
                    "µs",
                    true,
                    &series,
                ),
                &format!(
                    "{key}: latency per transaction at each percentile (median over rounds, \
                     whiskers min–max), log scale; hollow points had fewer samples than the \
                     percentile needs (p99: 10 000, p99.9: 100 000 per run)."
                ),
            )
        })
        .collect()
}

fn ladder_chart(report: &Report, n: usize) -> Option<String> {
    if report.ladder.is_empty() {
        return None;
    }
    let medians: BTreeMap<String, f64> = stats::rr_by_round(report, "lat_p50_us")
        .into_iter()
        .filter_map(|(p, rounds)| {
            let v: Vec<f64> = rounds.into_values().collect();
            Some((p, stats::median(&v)?))
        })
        .collect();
    let rungs = stats::ladder_rungs(report);
    let mut bars = Vec::new();
    if let Some(l0) = medians.get("L0") {
        bars.push(Bar {
            label: "L0 loopback (base)".into(),
            value: *l0,
            min: *l0,
            max: *l0,
            limit: None,
            note: format!("{} µs", fmt_num(*l0)),
            tip: format!("{} µs round trip on loopback", fmt_num(*l0)),
            start: 0.0,
            colour: "#9aa5b1",
        });
    }
    for step in &report.ladder {
        let start = rungs
            .iter()
            .find(|r| r.layer == step.layer)
            .and_then(|r| {
                let from = medians.get(&r.from)?;
                let extra = match &r.extra {
                    Some((a, b)) => medians.get(a)? - medians.get(b)?,
                    None => 0.0,
                };
                Some(from + extra)
            })
            .unwrap_or(0.0);
        bars.push(Bar {
            label: step.layer.clone(),
            value: step.us,
            min: step.min_us,
            max: step.max_us,
            limit: None,
            note: format!("{:+.1} µs", step.us),
            tip: format!(
                "{:+.1} µs [{} – {}] = {}",
                step.us,
                fmt_num(step.min_us),
                fmt_num(step.max_us),
                step.formula
            ),
            start,
            colour: if step.us >= 0.0 {
                PALETTE[1]
            } else {
                PALETTE[4]
            },
        });
    }
    Some(figure(
        hbar_chart(
            &format!("chart{n}"),
            "Cost ladder: microseconds each layer adds to a 1-byte TCP round trip",
            "µs (tcp_rr size 1, p50; each layer starts at the round trip it adds to)",
            &bars,
        ),
        "Waterfall of the cost ladder: each bar starts at the round trip of the path the layer is \
         added to and spans the microseconds it adds (median over rounds of the per-round \
         difference, whiskers min–max).",
    ))
}

fn svc_chart(report: &Report, n: usize) -> Option<String> {
    if report.svc_scale.is_empty() {
        return None;
    }
    // tcp_cc isolates the connect; tcp_crr points are drawn only when there is no tcp_cc.
    let cc = report.svc_scale.iter().any(|p| p.test == "tcp_cc");
    let points: Vec<&crate::model::SvcScalePoint> = report
        .svc_scale
        .iter()
        .filter(|p| !cc || p.test == "tcp_cc")
        .collect();
    let mut counts: Vec<u32> = points.iter().map(|p| p.services).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut series: Vec<Series> = Vec::new();
    for p in points {
        let name = format!("{} → {}", p.mode, p.target);
        let i = counts.iter().position(|c| *c == p.services).unwrap_or(0);
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((i, p.connect_p50_us.clone())),
            None => series.push(Series {
                name,
                points: vec![(i, p.connect_p50_us.clone())],
                // The controls (pod IPs) dashed; the Service's frontends solid.
                dashed: p.target != "clusterip" && p.target != "nodeport",
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by_key(|(i, _)| *i);
    }
    let labels: Vec<String> = counts.iter().map(|c| format!("{c} Services")).collect();
    Some(figure(
        line_chart(
            &format!("chart{n}"),
            "Connect latency against the number of Services, per proxy mode",
            &labels,
            "connect p50 µs",
            false,
            &series,
        ),
        "Connect latency p50 (tcp_cc) per proxy mode with N Services programmed (median over \
         rounds, whiskers min–max): from the client pod to the probed Service's ClusterIP and from \
         the external host to its NodePort on node-1 (solid), and, as their controls, to the \
         backend's pod IP from the pod (pod-ip) and from the external host over node-1 \
         (pod-ip-external) (dashed).",
    ))
}

/// The Service scale sweep's points: one row per (mode, target, test, Service count).
fn svc_table(report: &Report) -> String {
    let mut s = String::from(
        "<h2>Service scale</h2>\n<p>Median over rounds [min – max]. Ratio: connect p50 per round \
         against, for <code>nodeport</code>, <code>pod-ip-external</code> of the same round and \
         Service count (NodePort against direct); for the other targets, the same target at the \
         first Service count. Verified: the node-1 counter every NodePort run had to move, and by \
         how much (at least one per connection).</p>\n<table><tr><th>mode</th><th>target</th>\
         <th>test</th><th>services</th><th>connect p50 µs</th><th>connect p99 µs</th>\
         <th>conn/s</th><th>p50 ratio</th><th>p99 ratio</th><th>connections</th><th>verified</th>\
         <th>entries</th><th>sync s</th></tr>",
    );
    let cell = |m: &MetricSummary| {
        if m.n == 0 {
            return "—".to_string();
        }
        format!(
            "{} [{} – {}]{}",
            fmt_num(m.median),
            fmt_num(m.min),
            fmt_num(m.max),
            if m.enough_samples { "" } else { "*" }
        )
    };
    let ratio = |m: &MetricSummary| {
        m.ratio.as_ref().map_or("—".to_string(), |r| {
            format!(
                "{}× [{} – {}] vs {}",
                fmt_ratio(r.median),
                fmt_ratio(r.min),
                fmt_ratio(r.max),
                esc(&r.baseline)
            )
        })
    };
    for p in &report.svc_scale {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&p.mode),
            esc(&p.target),
            esc(&p.test),
            p.services,
            cell(&p.connect_p50_us),
            cell(&p.connect_p99_us),
            cell(&p.cps),
            ratio(&p.connect_p50_us),
            ratio(&p.connect_p99_us),
            p.connections,
            p.verified.as_ref().map_or("—".to_string(), |v| format!(
                "{} +{}",
                esc(&v.counter),
                v.delta
            )),
            p.datapath_entries,
            fmt_num(p.full_sync_s)
        );
    }
    s.push_str("</table>\n");
    s
}

/// Throughput against the number of flows, a line per path (and other parameters), when the run
/// measured more than one flow count.
fn flows_chart(report: &Report, n: usize) -> Option<String> {
    let metric = "throughput_gbps";
    let sets: Vec<&ResultSet> = report
        .results
        .iter()
        .filter(|r| r.test == "tcp_stream" && r.params.contains_key("flows"))
        .filter(|r| r.summary.contains_key(metric))
        .collect();
    let mut flows: Vec<u32> = sets
        .iter()
        .filter_map(|r| r.params.get("flows")?.parse().ok())
        .collect();
    flows.sort_unstable();
    flows.dedup();
    if flows.len() < 2 {
        return None;
    }
    let mut series: Vec<Series> = Vec::new();
    for rs in &sets {
        let Some(f) = rs.params.get("flows").and_then(|f| f.parse::<u32>().ok()) else {
            continue;
        };
        let mut others = rs.params.clone();
        others.remove("flows");
        let mut name = rs.path.clone();
        for (k, v) in &others {
            if sets.iter().any(|o| o.params.get(k) != Some(v)) {
                name.push_str(&format!(" {k}={v}"));
            }
        }
        let i = flows.iter().position(|x| *x == f).unwrap_or(0);
        let point = (i, rs.summary[metric].clone());
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(point),
            None => series.push(Series {
                name,
                points: vec![point],
                dashed: rs.path.starts_with('L'),
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by_key(|(i, _)| *i);
    }
    let labels: Vec<String> = flows.iter().map(|f| format!("{f} flows")).collect();
    Some(figure(
        line_chart(
            &format!("chart{n}"),
            "TCP stream throughput against the number of flows",
            &labels,
            "Gbit/s",
            false,
            &series,
        ),
        "Goodput of N parallel flows per path (median over rounds, whiskers min–max); dashed: \
         the baselines (L0, L1, L2).",
    ))
}

fn cpu_chart(report: &Report, n: usize) -> Option<String> {
    let sets: Vec<&ResultSet> = report
        .results
        .iter()
        .filter(|r| r.test == "tcp_stream" && r.summary.contains_key("cpu_s_per_gbit"))
        .collect();
    let bars: Vec<Bar> = sets
        .iter()
        .filter_map(|rs| {
            let s = rs.summary.get("cpu_s_per_gbit")?;
            Some(Bar {
                label: set_label(rs, &sets),
                value: s.median,
                min: s.min,
                max: s.max,
                limit: None,
                note: format!("{} CPU s/Gbit", fmt_num(s.median)),
                tip: format!(
                    "{} CPU s/Gbit [{} – {}]",
                    fmt_num(s.median),
                    fmt_num(s.min),
                    fmt_num(s.max)
                ),
                start: 0.0,
                colour: PALETTE[3],
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    Some(figure(
        hbar_chart(
            &format!("chart{n}"),
            "CPU seconds per Gbit received, per path",
            "CPU s/Gbit (lower is better)",
            &bars,
        ),
        &format!(
            "tcp_stream {}: machine CPU seconds busy during the window minus the idle baseline, \
             per Gbit of payload received (median over rounds, whiskers min–max).",
            common_params(&sets)
        ),
    ))
}

fn kv_table(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table>\n");
    s
}

fn environment(report: &Report) -> String {
    let m = &report.meta;
    let h = &m.host;
    let c = &report.config;
    let list = |v: &[String]| v.join(", ");
    let nums = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let mut rows = vec![
        ("ferry version", m.ferry_version.clone()),
        (
            "commit",
            m.commit.clone().unwrap_or_else(|| "unknown".into()),
        ),
        (
            "started / finished",
            format!("{} / {}", m.started_at, m.finished_at),
        ),
        ("elapsed", format!("{} s", fmt_num(m.elapsed_s))),
        ("mode", format!("{} ({} nodes)", m.mode, m.nodes)),
        ("backends", list(&m.backends)),
        ("proxy modes", list(&m.proxy_modes)),
        ("host", h.hostname.clone()),
        (
            "CPU",
            format!(
                "{} · {} CPUs · SMT {}",
                h.cpu_model,
                h.cores,
                if h.smt { "on" } else { "off" }
            ),
        ),
        ("governor", h.governor.clone()),
        ("kernel", format!("{} ({})", h.kernel, h.preempt)),
        (
            "load / busy before",
            format!(
                "{} / {} %",
                fmt_num(h.loadavg),
                fmt_num(h.busy_before * 100.0)
            ),
        ),
        (
            "idle CPU baseline",
            format!("{} CPU s/s", fmt_num(m.idle_cpu)),
        ),
        ("iperf3", h.iperf3.clone()),
        ("rounds", format!("{} (seed {})", c.rounds, c.seed)),
        (
            "warm-up / window / cool-down",
            format!(
                "{} / {} / {} s",
                fmt_num(c.warmup_s),
                fmt_num(c.duration_s),
                fmt_num(c.cooldown_s)
            ),
        ),
        (
            "paths / tests",
            format!("{} / {}", list(&c.paths), list(&c.tests)),
        ),
        (
            "flows / sizes",
            format!("{} / {} B", nums(&c.flows), nums(&c.sizes)),
        ),
        ("engine", c.engine.clone()),
        ("command", c.argv.join(" ")),
    ];
    if !c.svc_scale.is_empty() {
        rows.push((
            "Service counts",
            format!("{} ({} endpoints each)", nums(&c.svc_scale), c.endpoints),
        ));
        if !c.svc_from.is_empty() {
            rows.push(("Service sweep clients", c.svc_from.join(", ")));
        }
    }
    if let Some(cal) = &m.calibration {
        rows.push((
            "calibration",
            format!(
                "size {} B: built-in p50 {} µs vs sockperf {} µs = {}× ({})",
                cal.size,
                fmt_num(cal.builtin_p50_us),
                fmt_num(cal.sockperf_p50_us),
                fmt_num(cal.ratio),
                if cal.within_gate {
                    "within ±10 %"
                } else {
                    "OUTSIDE ±10 %"
                }
            ),
        ));
    }
    let mut s = kv_table(&rows);
    if !m.sysctls.is_empty() {
        s.push_str("<table><tr><th>sysctl</th><th>value</th></tr>");
        for (k, v) in &m.sysctls {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
        }
        s.push_str("</table>\n");
    }
    if !m.devices.is_empty() {
        s.push_str("<table><tr><th>netns</th><th>device</th><th>kind</th><th>MTU</th><th>offloads off</th></tr>");
        for d in &m.devices {
            let off: Vec<&str> = d
                .offloads
                .iter()
                .filter(|(_, on)| !**on)
                .map(|(k, _)| k.as_str())
                .collect();
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&d.netns),
                esc(&d.name),
                esc(&d.kind),
                d.mtu,
                esc(&off.join(", "))
            );
        }
        s.push_str("</table>\n");
    }
    s
}

fn paths_table(report: &Report) -> String {
    let mut s = String::from(
        "<table><tr><th>path</th><th>description</th><th>baseline</th><th>client</th>\
         <th>server</th><th>verified by</th><th>status</th></tr>",
    );
    for p in &report.paths {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td></tr>",
            esc(&p.id),
            esc(&p.description),
            esc(p.baseline.as_deref().unwrap_or("—")),
            esc(&p.client),
            esc(&p.server),
            esc(&p.verify.join("; ")),
            if p.unavailable.is_some() { " class=\"flag\"" } else { "" },
            esc(p.unavailable.as_deref().unwrap_or("measured"))
        );
    }
    s.push_str("</table>\n");
    s
}

fn results_table(report: &Report) -> String {
    let mut s = String::from(
        "<table><tr><th>path</th><th>test</th><th>params</th><th>metric</th><th>unit</th>\
         <th>n</th><th>median</th><th>min – max</th><th>q1 – q3</th><th>CV</th>\
         <th>ratio (min – max)</th><th>flags</th></tr>",
    );
    for rs in &report.results {
        let flags = flags_text(rs);
        if rs.summary.is_empty() {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td colspan=\"8\">—</td><td class=\"flag\">{}</td></tr>",
                esc(&rs.path),
                esc(&rs.test),
                esc(&params_text(rs)),
                esc(&flags)
            );
        }
        for (metric, m) in &rs.summary {
            let ratio = m.ratio.as_ref().map_or("—".to_string(), |r| {
                format!(
                    "{}× {} ({} – {})",
                    fmt_ratio(r.median),
                    r.baseline,
                    fmt_ratio(r.min),
                    fmt_ratio(r.max)
                )
            });
            let _ = write!(
                s,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{} – {}</td><td class=\"n\">{} – {}</td>\
                 <td class=\"n\">{} %</td><td>{}</td><td class=\"flag\">{}</td></tr>",
                if m.enough_samples { "" } else { " class=\"few\" title=\"few samples\"" },
                esc(&rs.path),
                esc(&rs.test),
                esc(&params_text(rs)),
                esc(metric),
                esc(if m.unit.is_empty() { unit_of(metric).0 } else { &m.unit }),
                m.n,
                fmt_num(m.median),
                fmt_num(m.min),
                fmt_num(m.max),
                fmt_num(m.q1),
                fmt_num(m.q3),
                fmt_num(m.cv * 100.0),
                esc(&ratio),
                esc(&flags)
            );
        }
    }
    s.push_str("</table>\n");
    s
}

fn flagged_runs(report: &Report) -> String {
    let mut s = String::new();
    for rs in &report.results {
        for run in &rs.runs {
            if run.valid && run.flags.is_empty() && run.error.is_none() {
                continue;
            }
            let _ =
                write!(
                s,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"flag\">{}</td></tr>",
                esc(&rs.key()),
                run.round,
                if run.valid { "valid (doubtful)" } else { "invalid, excluded" },
                esc(&run
                    .flags
                    .iter()
                    .cloned()
                    .chain(run.error.iter().map(|e| format!("error: {e}")))
                    .collect::<Vec<_>>()
                    .join("; "))
            );
        }
    }
    if s.is_empty() {
        return "<p>No run was flagged.</p>\n".into();
    }
    format!(
        "<table><tr><th>result</th><th>round</th><th>status</th><th>flags</th></tr>{s}</table>\n"
    )
}

/// The HTML document.
pub fn render(report: &Report) -> String {
    let mut body = String::with_capacity(64 * 1024);
    let h = &report.meta.host;
    let _ = writeln!(
        body,
        "<h1>ferry bench</h1><p>{} · {} CPUs · kernel {} · {} · {} rounds × {} s</p>",
        esc(&h.cpu_model),
        h.cores,
        esc(&h.kernel),
        esc(&report.meta.started_at),
        report.config.rounds,
        fmt_num(report.config.duration_s)
    );
    if report.partial {
        body.push_str("<div class=\"banner partial\">PARTIAL: the run stopped early; these are the results so far.</div>\n");
    }
    if report.config.smoke {
        body.push_str("<div class=\"banner smoke\">SMOKE: correctness only; the figures are not meaningful.</div>\n");
    } else if report.config.quick {
        body.push_str(
            "<div class=\"banner quick\">QUICK: indicative only (few short rounds).</div>\n",
        );
    }
    body.push_str("<h2>Charts</h2>\n");
    let mut n = 0;
    let mut charts = Vec::new();
    if let Some(c) = throughput_chart(report, n + 1) {
        n += 1;
        charts.push(c);
    }
    charts.extend(latency_charts(report, &mut n));
    let rest: [fn(&Report, usize) -> Option<String>; 4] =
        [flows_chart, ladder_chart, svc_chart, cpu_chart];
    for chart in rest {
        if let Some(c) = chart(report, n + 1) {
            n += 1;
            charts.push(c);
        }
    }
    if charts.is_empty() {
        body.push_str("<p>No figure to chart.</p>\n");
    }
    for c in charts {
        body.push_str(&c);
    }
    body.push_str("<h2>Warnings</h2>\n");
    if report.warnings.is_empty() {
        body.push_str("<p>None.</p>\n");
    } else {
        body.push_str("<ul>");
        for w in &report.warnings {
            let _ = write!(body, "<li>{}</li>", esc(w));
        }
        body.push_str("</ul>\n");
    }
    body.push_str("<h2>Environment</h2>\n");
    body.push_str(&environment(report));
    body.push_str("<h2>Paths</h2>\n");
    body.push_str(&paths_table(report));
    if !report.ladder.is_empty() {
        body.push_str("<h2>Cost ladder</h2>\n<table><tr><th>layer</th><th>formula</th><th>+µs</th><th>min – max</th><th>CPU µs/txn</th></tr>");
        for s in &report.ladder {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{} – {}</td><td class=\"n\">{}</td></tr>",
                esc(&s.layer),
                esc(&s.formula),
                fmt_num(s.us),
                fmt_num(s.min_us),
                fmt_num(s.max_us),
                s.cpu_us.map_or("—".into(), fmt_num)
            );
        }
        body.push_str("</table>\n");
    }
    if !report.svc_scale.is_empty() {
        body.push_str(&svc_table(report));
    }
    body.push_str("<h2>All figures</h2>\n<p>Median over the valid runs; ratio = median of the per-round ratios to the baseline path. Grey rows are percentiles with fewer samples than they need. CPU per unit: machine CPU seconds busy in the window minus the idle baseline, per Gbit received, per transaction or per connection.</p>\n");
    body.push_str(&results_table(report));
    body.push_str("<h2>Flagged runs</h2>\n");
    body.push_str(&flagged_runs(report));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ferry bench — {}</title><style>{CSS}</style></head><body>\n{body}</body></html>\n",
        esc(&report.meta.started_at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_scale_chart_and_table_show_the_nodeport_and_its_control() {
        use crate::report::table::tests::svc_point;
        let mut points = Vec::new();
        for mode in ["ebpf", "iptables"] {
            for n in [0, 1000] {
                points.push(svc_point(
                    mode,
                    "nodeport",
                    n,
                    26.0,
                    Some(("pod-ip-external tcp_cc at N=0", 1.04, 0.98, 1.12)),
                ));
                points.push(svc_point(mode, "pod-ip-external", n, 25.0, None));
                points.push(svc_point(mode, "clusterip", n, 20.0, None));
            }
        }
        let r = Report {
            svc_scale: points,
            ..Default::default()
        };
        let chart = svc_chart(&r, 1).unwrap();
        for s in [
            "ebpf → nodeport",
            "iptables → nodeport",
            "ebpf → pod-ip-external",
        ] {
            assert!(chart.contains(s), "no {s} series: {chart}");
        }
        let html = render(&r);
        assert!(html.contains("<h2>Service scale</h2>"), "{html}");
        assert!(
            html.contains("1.04× [0.98 – 1.12] vs pod-ip-external tcp_cc at N=0"),
            "{html}"
        );
    }

    #[test]
    fn escaping_and_ticks() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(37.0), 10.0);
        let (ticks, end) = linear_ticks(9.4);
        assert_eq!(ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(end, 10.0);
    }

    #[test]
    fn throughput_bars_are_drawn_against_the_physical_limit() {
        use crate::model::{PathInfo, Run};
        let stream = |path: &str, engine: &str, gbps: f64| ResultSet {
            path: path.into(),
            test: "tcp_stream".into(),
            params: [
                ("flows".to_string(), "1".to_string()),
                ("engine".to_string(), engine.to_string()),
            ]
            .into(),
            runs: vec![Run {
                valid: true,
                metrics: [("throughput_gbps".to_string(), gbps)].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let path = |id: &str, baseline: Option<&str>| PathInfo {
            id: id.into(),
            baseline: baseline.map(Into::into),
            ..Default::default()
        };
        let mut r = Report {
            paths: vec![
                path("L0", None),
                path("L1", Some("L0")),
                path("P1", Some("L1")),
                path("S1-ebpf", Some("P1")),
            ],
            results: vec![
                stream("L1", "iperf3", 20.0),
                stream("S1-ebpf", "builtin", 10.0),
            ],
            ..Default::default()
        };
        crate::stats::summarise(&mut r);
        let svg = throughput_chart(&r, 1).unwrap();
        // S1-ebpf's chain S1 -> P1 -> L1 reaches L1, measured with another engine: 10 / 20.
        assert!(svg.contains(">0.50× L1</text>"), "{svg}");
        assert_eq!(
            svg.matches("stroke-dasharray=\"3 2\"").count(),
            1,
            "one limit line"
        );
        assert_eq!(limit_of(&r, "L1"), None);
    }

    #[test]
    fn bar_labels_keep_only_distinguishing_parameters() {
        let rs = |path: &str, flows: &str| ResultSet {
            path: path.into(),
            params: [
                ("flows".to_string(), flows.to_string()),
                ("size".to_string(), "131072".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let (a, b, c) = (rs("P1", "1"), rs("P1", "2"), rs("P2-vxlan", "1"));
        let all = [&a, &b, &c];
        assert_eq!(set_label(&a, &all), "P1 flows=1");
        assert_eq!(set_label(&c, &[&a, &c]), "P2-vxlan");
        assert_eq!(common_params(&all), "size=131072");
        let long = rs(&"x".repeat(40), "1");
        assert_eq!(set_label(&long, &[&long]).chars().count(), 34);
    }

    #[test]
    fn flows_chart_needs_two_flow_counts() {
        use crate::model::Run;
        let stream = |path: &str, flows: &str, gbps: f64| ResultSet {
            path: path.into(),
            test: "tcp_stream".into(),
            params: [("flows".to_string(), flows.to_string())].into(),
            runs: vec![Run {
                valid: true,
                metrics: [("throughput_gbps".to_string(), gbps)].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut r = Report {
            results: vec![stream("L1", "1", 20.0), stream("P1", "1", 18.0)],
            ..Default::default()
        };
        crate::stats::summarise(&mut r);
        assert!(flows_chart(&r, 1).is_none());
        r.results.push(stream("P1", "2", 25.0));
        r.results.push(stream("L1", "2", 30.0));
        crate::stats::summarise(&mut r);
        let svg = flows_chart(&r, 1).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains(">2 flows</text>"));
        assert_eq!(
            svg.matches("stroke-dasharray=\"6 4\"").count(),
            2,
            "L1 line and legend"
        );
    }

    #[test]
    fn empty_report_renders_without_charts() {
        let html = render(&Report::default());
        assert!(html.contains("No figure to chart."));
        assert!(!html.contains("<svg"));
        assert!(!html.contains("http"));
    }
}
