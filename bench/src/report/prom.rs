//! The Prometheus text exposition of a report (format 0.0.4), for a node_exporter textfile
//! collector: per metric of the result sets a gauge family `ferry_bench_<metric>` (the median over
//! valid runs) with `_min`, `_max` and `_ratio` (to the baseline, labelled `baseline`) families,
//! labelled `path`, `test` and the test's parameters; `ferry_bench_ladder_us{layer}` for the cost
//! ladder and `ferry_bench_info{...} 1` for the run. No timestamps (the textfile collector refuses
//! them).

use crate::model::{unit_of, Report, ResultSet};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `name` made a valid metric or label name: `[a-zA-Z_][a-zA-Z0-9_]*` (other characters -> `_`).
pub fn sanitise_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// A label value escaped: `\` -> `\\`, `"` -> `\"`, line feed -> `\n`.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escaped: `\` -> `\\`, line feed -> `\n`.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: Go float syntax (`NaN`, `+Inf`, `-Inf`, decimal otherwise).
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn labels(pairs: &[(String, String)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Labels of a result set: path, test, then each parameter (prefixed `param_` when its name
/// collides with one of ours).
fn set_labels(rs: &ResultSet) -> Vec<(String, String)> {
    let mut out = vec![
        ("path".to_string(), rs.path.clone()),
        ("test".to_string(), rs.test.clone()),
    ];
    for (k, v) in &rs.params {
        let mut name = sanitise_name(k);
        if ["path", "test", "baseline", "layer"].contains(&name.as_str()) || name.starts_with("__")
        {
            name = format!("param_{name}");
        }
        out.push((name, v.clone()));
    }
    out
}

/// One gauge family: HELP, TYPE, samples.
fn family(out: &mut String, name: &str, help: &str, samples: &[(Vec<(String, String)>, f64)]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{} {}", labels(l), value(*v));
    }
}

/// The exposition text.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(8192);
    let host = &report.meta.host;
    let info = vec![
        (
            "ferry_version".to_string(),
            report.meta.ferry_version.clone(),
        ),
        (
            "commit".to_string(),
            report.meta.commit.clone().unwrap_or_default(),
        ),
        ("mode".to_string(), report.meta.mode.clone()),
        ("kernel".to_string(), host.kernel.clone()),
        ("cpu_model".to_string(), host.cpu_model.clone()),
        ("started_at".to_string(), report.meta.started_at.clone()),
        ("quick".to_string(), report.config.quick.to_string()),
        ("smoke".to_string(), report.config.smoke.to_string()),
        ("partial".to_string(), report.partial.to_string()),
    ];
    family(
        &mut out,
        "ferry_bench_info",
        "The ferry bench run these figures come from (always 1).",
        &[(info, 1.0)],
    );
    // metric -> samples of each statistic.
    type Samples = Vec<(Vec<(String, String)>, f64)>;
    let mut by_metric: BTreeMap<&str, [Samples; 4]> = BTreeMap::new();
    for rs in &report.results {
        let l = set_labels(rs);
        for (metric, s) in &rs.summary {
            let e = by_metric.entry(metric).or_default();
            e[0].push((l.clone(), s.median));
            e[1].push((l.clone(), s.min));
            e[2].push((l.clone(), s.max));
            if let Some(r) = &s.ratio {
                let mut lr = l.clone();
                lr.push(("baseline".to_string(), r.baseline.clone()));
                e[3].push((lr, r.median));
            }
        }
    }
    for (metric, [med, min, max, ratio]) in &by_metric {
        let base = format!("ferry_bench_{}", sanitise_name(metric));
        let unit = match unit_of(metric).0 {
            "" => String::new(),
            u => format!(" ({u})"),
        };
        family(
            &mut out,
            &base,
            &format!("{metric}{unit}: median over the valid runs"),
            med,
        );
        family(
            &mut out,
            &format!("{base}_min"),
            &format!("{metric}{unit}: minimum over the valid runs"),
            min,
        );
        family(
            &mut out,
            &format!("{base}_max"),
            &format!("{metric}{unit}: maximum over the valid runs"),
            max,
        );
        family(
            &mut out,
            &format!("{base}_ratio"),
            &format!("{metric}: median of the per-round ratios to the baseline path"),
            ratio,
        );
    }
    let ladder: Vec<_> = report
        .ladder
        .iter()
        .map(|s| {
            (
                vec![
                    ("layer".to_string(), s.layer.clone()),
                    ("formula".to_string(), s.formula.clone()),
                ],
                s.us,
            )
        })
        .collect();
    family(
        &mut out,
        "ferry_bench_ladder_us",
        "Cost ladder: microseconds each layer adds to a 1-byte TCP round trip (median over rounds)",
        &ladder,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MetricSummary;

    #[test]
    fn families_and_escaping() {
        let r = Report {
            results: vec![ResultSet {
                path: "P2-vxlan".into(),
                test: "tcp_rr".into(),
                params: [
                    ("size".to_string(), "1".to_string()),
                    ("path".to_string(), "a\"b\\c\nd".to_string()),
                ]
                .into(),
                summary: [(
                    "lat_p50_us".to_string(),
                    MetricSummary {
                        median: 20.5,
                        min: 20.0,
                        max: 21.0,
                        n: 3,
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&r);
        assert!(
            text.contains("# TYPE ferry_bench_lat_p50_us gauge\n"),
            "{text}"
        );
        assert!(text.contains(
            "ferry_bench_lat_p50_us{path=\"P2-vxlan\",test=\"tcp_rr\",param_path=\"a\\\"b\\\\c\\nd\",size=\"1\"} 20.5\n"
        ), "{text}");
        assert!(text.contains("ferry_bench_lat_p50_us_max{"));
        assert!(!text.contains("_ratio"), "no ratio, no family");
        assert_eq!(sanitise_name("9x-y.z"), "_9x_y_z");
        assert_eq!(value(f64::INFINITY), "+Inf");
    }
}
