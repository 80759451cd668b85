//! `ferry bench compare A.json B.json`: per (result, metric) present in both reports the ratio of
//! medians B/A with a seeded bootstrap interval, the two-sided Mann–Whitney p-value over the valid
//! runs, whether the change is within the noise (smaller than twice the larger CV of the two), and a
//! verdict that uses the metric's direction; the environment differences come first. `--fail-on`
//! rules (`tcp_rr.lat_p99_us>+10%,tcp_stream.throughput_gbps<-5%`) turn changes into violations
//! for CI.

use super::{fmt_num, params_text};
use crate::model::{unit_of, Report, ResultSet};
use crate::stats;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// Tunables of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Significance level of the Mann–Whitney test (default 0.05).
    pub alpha: f64,
    /// Bootstrap resamples for the ratio interval (default 2000; 0 disables it).
    pub resamples: u32,
    /// Confidence of the interval (default 0.95).
    pub level: f64,
    /// Bootstrap seed (default 1), so the same files give the same output.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            alpha: 0.05,
            resamples: 2000,
            level: 0.95,
            seed: 1,
        }
    }
}

/// The verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// B is significantly better than A, beyond the noise.
    Better,
    /// B is significantly worse than A, beyond the noise.
    Worse,
    /// No detectable change (equal, within the noise, or not significant).
    NoChange,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoChange => "no change",
        })
    }
}

/// One (result, metric) in both reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// [`ResultSet::key`].
    pub key: String,
    /// Path id.
    pub path: String,
    /// Test.
    pub test: String,
    /// `flows=1 size=1`.
    pub params: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Direction.
    pub higher_is_better: bool,
    /// Valid runs in A and B.
    pub n: (usize, usize),
    /// Median in A.
    pub median_a: f64,
    /// Median in B.
    pub median_b: f64,
    /// median B / median A (NaN when A's median is 0 and B's is not; 1 when both are 0).
    pub ratio: f64,
    /// Bootstrap interval of the ratio.
    pub ci: Option<(f64, f64)>,
    /// Mann–Whitney two-sided p-value.
    pub p_value: Option<f64>,
    /// |ratio − 1| < 2 × max(CV A, CV B).
    pub within_noise: bool,
    /// The verdict.
    pub verdict: Verdict,
}

impl Row {
    /// The change in percent: (ratio − 1) × 100.
    pub fn change_pct(&self) -> f64 {
        (self.ratio - 1.0) * 100.0
    }
}

/// One environment field of both reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvField {
    /// `kernel`, `CPU`, `commit`, ...
    pub field: String,
    /// In A.
    pub a: String,
    /// In B.
    pub b: String,
}

impl EnvField {
    /// A and B differ.
    pub fn differs(&self) -> bool {
        self.a != self.b
    }
}

/// The comparison of two reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Environment fields of both (all compared fields; see [`EnvField::differs`]).
    pub env: Vec<EnvField>,
    /// Metrics present in both, in B's order.
    pub rows: Vec<Row>,
    /// Result keys only in A.
    pub only_a: Vec<String>,
    /// Result keys only in B.
    pub only_b: Vec<String>,
    /// The options used.
    pub options: Options,
}

fn env_fields(a: &Report, b: &Report) -> Vec<EnvField> {
    fn devices(r: &Report) -> String {
        r.meta
            .devices
            .iter()
            .map(|d| {
                let off: Vec<&str> = d
                    .offloads
                    .iter()
                    .filter(|(_, on)| !**on)
                    .map(|(k, _)| k.as_str())
                    .collect();
                if off.is_empty() {
                    format!("{}/{} mtu {}", d.netns, d.name, d.mtu)
                } else {
                    format!(
                        "{}/{} mtu {} off: {}",
                        d.netns,
                        d.name,
                        d.mtu,
                        off.join(" ")
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
    let f = |r: &Report| -> Vec<(&'static str, String)> {
        let h = &r.meta.host;
        vec![
            ("ferry version", r.meta.ferry_version.clone()),
            ("commit", r.meta.commit.clone().unwrap_or_default()),
            ("kernel", h.kernel.clone()),
            ("preempt", h.preempt.clone()),
            ("CPU", h.cpu_model.clone()),
            ("cores", h.cores.to_string()),
            ("SMT", h.smt.to_string()),
            ("governor", h.governor.clone()),
            ("mode", format!("{} ({} nodes)", r.meta.mode, r.meta.nodes)),
            ("backends", r.meta.backends.join(",")),
            ("proxy modes", r.meta.proxy_modes.join(",")),
            ("engine", r.config.engine.clone()),
            (
                "run kind",
                if r.config.smoke {
                    "smoke".into()
                } else if r.config.quick {
                    "quick".into()
                } else {
                    "full".into()
                },
            ),
            (
                "rounds × window",
                format!("{} × {} s", r.config.rounds, fmt_num(r.config.duration_s)),
            ),
            ("devices", devices(r)),
        ]
    };
    let mut out: Vec<EnvField> = f(a)
        .into_iter()
        .zip(f(b))
        .map(|((field, a), (_, b))| EnvField {
            field: field.to_string(),
            a,
            b,
        })
        .collect();
    let keys: std::collections::BTreeSet<&String> =
        a.meta.sysctls.keys().chain(b.meta.sysctls.keys()).collect();
    for k in keys {
        out.push(EnvField {
            field: k.clone(),
            a: a.meta.sysctls.get(k).cloned().unwrap_or_default(),
            b: b.meta.sysctls.get(k).cloned().unwrap_or_default(),
        });
    }
    out
}

fn valid_values(rs: &ResultSet, metric: &str) -> Vec<f64> {
    rs.runs
        .iter()
        .filter(|r| r.valid && r.error.is_none())
        .filter_map(|r| r.metrics.get(metric).copied())
        .filter(|v| v.is_finite())
        .collect()
}

/// Compares B against A.
pub fn compare(a: &Report, b: &Report, opts: &Options) -> Comparison {
    let a_sets: BTreeMap<String, &ResultSet> = a.results.iter().map(|r| (r.key(), r)).collect();
    let b_keys: std::collections::BTreeSet<String> = b.results.iter().map(ResultSet::key).collect();
    let mut rows = Vec::new();
    for rb in &b.results {
        let Some(ra) = a_sets.get(&rb.key()) else {
            continue;
        };
        let mut metrics: Vec<&String> = rb.runs.iter().flat_map(|r| r.metrics.keys()).collect();
        metrics.sort();
        metrics.dedup();
        for metric in metrics {
            let (va, vb) = (valid_values(ra, metric), valid_values(rb, metric));
            let (Some(ma), Some(mb)) = (stats::median(&va), stats::median(&vb)) else {
                continue;
            };
            let ratio = if ma == mb {
                1.0
            } else if ma == 0.0 {
                f64::NAN
            } else {
                mb / ma
            };
            let noise = 2.0 * stats::cv(&va).max(stats::cv(&vb));
            let within_noise = ratio.is_finite() && (ratio - 1.0).abs() < noise;
            let p_value = stats::mann_whitney(&va, &vb).map(|m| m.p);
            let (_, higher) = unit_of(metric);
            let significant = p_value.is_some_and(|p| p <= opts.alpha);
            let verdict = if ratio == 1.0 || within_noise || !significant {
                Verdict::NoChange
            } else if (mb > ma) == higher {
                Verdict::Better
            } else {
                Verdict::Worse
            };
            let ci = (opts.resamples > 0)
                .then(|| stats::bootstrap_ratio_ci(&va, &vb, opts.resamples, opts.level, opts.seed))
                .flatten();
            rows.push(Row {
                key: rb.key(),
                path: rb.path.clone(),
                test: rb.test.clone(),
                params: params_text(rb),
                metric: metric.clone(),
                unit: unit_of(metric).0.to_string(),
                higher_is_better: higher,
                n: (va.len(), vb.len()),
                median_a: ma,
                median_b: mb,
                ratio,
                ci,
                p_value,
                within_noise,
                verdict,
            });
        }
    }
    Comparison {
        env: env_fields(a, b),
        rows,
        only_a: a_sets
            .keys()
            .filter(|k| !b_keys.contains(*k))
            .cloned()
            .collect(),
        only_b: b
            .results
            .iter()
            .map(ResultSet::key)
            .filter(|k| !a_sets.contains_key(k))
            .collect(),
        options: opts.clone(),
    }
}

/// The comparison as text: environment differences, then one line per metric.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let diffs: Vec<&EnvField> = c.env.iter().filter(|e| e.differs()).collect();
    if diffs.is_empty() {
        out.push_str("Environment: the same in A and B.\n");
    } else {
        out.push_str("Environment differences (A → B):\n");
        for d in diffs {
            let _ = writeln!(out, "  {}: {} → {}", d.field, d.a, d.b);
        }
    }
    out.push('\n');
    let header = [
        "result", "metric", "A", "B", "B/A", "95 % CI", "p", "verdict",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &c.rows {
        let verdict = match r.verdict {
            Verdict::NoChange if r.ratio == 1.0 => "no change".to_string(),
            Verdict::NoChange if r.within_noise => "no change (within noise)".to_string(),
            Verdict::NoChange => "no detectable change".to_string(),
            v => v.to_string(),
        };
        rows.push(vec![
            r.key.clone(),
            format!("{} {}", r.metric, r.unit).trim_end().to_string(),
            fmt_num(r.median_a),
            fmt_num(r.median_b),
            format!("{}× ({:+.1} %)", fmt_num(r.ratio), r.change_pct()),
            r.ci.map_or("—".into(), |(lo, hi)| {
                format!("{} – {}", fmt_num(lo), fmt_num(hi))
            }),
            r.p_value.map_or("—".into(), |p| format!("{p:.3}")),
            verdict,
        ]);
    }
    let mut width = [0usize; 8];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let pad = " ".repeat(width[i] - cell.chars().count());
            if (2..=6).contains(&i) {
                let _ = write!(line, "{pad}{cell}  ");
            } else {
                let _ = write!(line, "{cell}{pad}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if c.rows.iter().any(|r| r.n.0.min(r.n.1) < 4) {
        out.push_str(
            "\nNote: with 3 runs on a side the smallest possible p is 0.1; run 5 rounds or more \
             for a verdict.\n",
        );
    }
    if !c.only_a.is_empty() {
        let _ = writeln!(out, "\nOnly in A: {}", c.only_a.join(", "));
    }
    if !c.only_b.is_empty() {
        let _ = writeln!(out, "\nOnly in B: {}", c.only_b.join(", "));
    }
    out
}

/// The comparison as one self-contained HTML page (same content as [`render`]; no script, no
/// external reference).
pub fn render_html(c: &Comparison, a_name: &str, b_name: &str) -> String {
    use super::html::{esc, CSS};
    let mut body = format!(
        "<h1>ferry bench compare</h1><p>A = {}<br>B = {}</p>\n<h2>Environment</h2>\n",
        esc(a_name),
        esc(b_name)
    );
    let diffs: Vec<&EnvField> = c.env.iter().filter(|e| e.differs()).collect();
    if diffs.is_empty() {
        body.push_str("<p>The same in A and B.</p>\n");
    } else {
        body.push_str("<table><tr><th>field</th><th>A</th><th>B</th></tr>");
        for d in diffs {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.field),
                esc(&d.a),
                esc(&d.b)
            );
        }
        body.push_str("</table>\n");
    }
    body.push_str(
        "<h2>Figures</h2>\n<table><tr><th>result</th><th>metric</th><th>n A / B</th><th>A</th>\
         <th>B</th><th>B/A</th><th>95 % CI</th><th>p</th><th>verdict</th></tr>",
    );
    for r in &c.rows {
        let class = match r.verdict {
            Verdict::Better => " class=\"better\"",
            Verdict::Worse => " class=\"worse\"",
            Verdict::NoChange => "",
        };
        let _ =
            write!(
            body,
            "<tr{class}><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}× ({:+.1} %)</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}{}</td></tr>",
            esc(&r.key),
            esc(&format!("{} {}", r.metric, r.unit)),
            r.n.0,
            r.n.1,
            fmt_num(r.median_a),
            fmt_num(r.median_b),
            fmt_num(r.ratio),
            r.change_pct(),
            r.ci.map_or("—".into(), |(lo, hi)| format!("{} – {}", fmt_num(lo), fmt_num(hi))),
            r.p_value.map_or("—".into(), |p| format!("{p:.3}")),
            r.verdict,
            if r.within_noise { " (within noise)" } else { "" }
        );
    }
    body.push_str("</table>\n");
    for (label, keys) in [("Only in A", &c.only_a), ("Only in B", &c.only_b)] {
        if !keys.is_empty() {
            let _ = writeln!(body, "<p>{label}: {}</p>", esc(&keys.join(", ")));
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>ferry bench compare</title><style>{CSS}</style></head><body>\n{body}</body></html>\n"
    )
}

// ---------------------------------------------------------------------------------------------
// --fail-on

/// The direction of a `--fail-on` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`: fails when the change is above the threshold.
    Above,
    /// `<`: fails when the change is below the threshold.
    Below,
}

/// One `--fail-on` rule: `[path/]test.metric>+10%`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailOn {
    /// The rule as written.
    pub text: String,
    /// Only this path (all paths when `None`).
    pub path: Option<String>,
    /// The test (`*` for any).
    pub test: String,
    /// The metric.
    pub metric: String,
    /// Above or below.
    pub op: Op,
    /// The threshold in percent of change of the median (B/A − 1).
    pub pct: f64,
}

/// A malformed `--fail-on` expression, or a rule that matches nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailOnError {
    /// The rule cannot be parsed.
    #[error("--fail-on rule {rule:?}: {reason} (expected [path/]test.metric>+N% or <-N%, e.g. tcp_rr.lat_p99_us>+10%)")]
    Syntax {
        /// The rule.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// The rule names no metric present in both reports (a typo would otherwise never fail).
    #[error("--fail-on rule {rule:?} matches no metric present in both reports")]
    NoMatch {
        /// The rule.
        rule: String,
    },
}

/// Parses a comma-separated list of rules.
pub fn parse_fail_on(s: &str) -> Result<Vec<FailOn>, FailOnError> {
    let rules: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    if rules.is_empty() {
        return Err(FailOnError::Syntax {
            rule: s.to_string(),
            reason: "no rule".into(),
        });
    }
    rules.into_iter().map(parse_rule).collect()
}

fn parse_rule(rule: &str) -> Result<FailOn, FailOnError> {
    let err = |reason: &str| FailOnError::Syntax {
        rule: rule.to_string(),
        reason: reason.to_string(),
    };
    let (at, op) = match (rule.find('>'), rule.find('<')) {
        (Some(_), Some(_)) => return Err(err("both > and <")),
        (Some(i), None) => (i, Op::Above),
        (None, Some(i)) => (i, Op::Below),
        (None, None) => return Err(err("no > or <")),
    };
    let (lhs, rhs) = (rule[..at].trim(), rule[at + 1..].trim());
    let (path, selector) = match lhs.split_once('/') {
        Some((p, rest)) if !p.is_empty() => (Some(p.to_string()), rest),
        Some(_) => return Err(err("empty path before /")),
        None => (None, lhs),
    };
    let Some((test, metric)) = selector.split_once('.') else {
        return Err(err("no . between test and metric"));
    };
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !(test == "*" || ok_name(test)) {
        return Err(err("bad test name"));
    }
    if !ok_name(metric) {
        return Err(err("bad metric name"));
    }
    let Some(num) = rhs.strip_suffix('%') else {
        return Err(err("the threshold must end in %"));
    };
    let pct: f64 = num
        .trim()
        .parse()
        .map_err(|_| err("the threshold is not a number"))?;
    if !pct.is_finite() {
        return Err(err("the threshold is not finite"));
    }
    Ok(FailOn {
        text: rule.to_string(),
        path,
        test: test.to_string(),
        metric: metric.to_string(),
        op,
        pct,
    })
}

/// A rule a metric broke.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The rule as written.
    pub rule: String,
    /// The result key.
    pub key: String,
    /// The metric.
    pub metric: String,
    /// The change of the median, percent.
    pub change_pct: f64,
    /// Whether the change was within the noise (reported, still a violation).
    pub within_noise: bool,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {:+.1} % breaks {}{}",
            self.key,
            self.metric,
            self.change_pct,
            self.rule,
            if self.within_noise {
                " (within noise)"
            } else {
                ""
            }
        )
    }
}

/// Evaluates the rules on a comparison: every (row, rule) whose change of the median crosses the
/// threshold. A rule matching no row is an error. A row without a finite ratio (A's median 0)
/// never violates.
pub fn evaluate(c: &Comparison, rules: &[FailOn]) -> Result<Vec<Violation>, FailOnError> {
    let mut out = Vec::new();
    for rule in rules {
        let rows: Vec<&Row> = c
            .rows
            .iter()
            .filter(|r| {
                (rule.test == "*" || r.test == rule.test)
                    && r.metric == rule.metric
                    && rule.path.as_ref().is_none_or(|p| *p == r.path)
            })
            .collect();
        if rows.is_empty() {
            return Err(FailOnError::NoMatch {
                rule: rule.text.clone(),
            });
        }
        for r in rows {
            let change = r.change_pct();
            let broken = change.is_finite()
                && match rule.op {
                    Op::Above => change > rule.pct,
                    Op::Below => change < rule.pct,
                };
            if broken {
                out.push(Violation {
                    rule: rule.text.clone(),
                    key: r.key.clone(),
                    metric: r.metric.clone(),
                    change_pct: change,
                    within_noise: r.within_noise,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Run;

    fn report(kernel: &str, tps: &[f64], p99: &[f64]) -> Report {
        let mut r = Report {
            schema: crate::model::SCHEMA.into(),
            ..Default::default()
        };
        r.meta.host.kernel = kernel.into();
        r.results.push(ResultSet {
            path: "P1".into(),
            test: "tcp_rr".into(),
            params: [("size".to_string(), "1".to_string())].into(),
            runs: tps
                .iter()
                .zip(p99)
                .zip(0u32..)
                .map(|((t, p), round)| Run {
                    round,
                    valid: true,
                    metrics: [("tps".to_string(), *t), ("lat_p99_us".to_string(), *p)].into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        r
    }

    #[test]
    fn a_file_against_itself_is_no_change() {
        let a = report(
            "6.1",
            &[100.0, 101.0, 99.0, 100.5, 99.5],
            &[50.0, 52.0, 51.0, 49.0, 50.0],
        );
        let c = compare(&a, &a, &Options::default());
        assert_eq!(c.rows.len(), 2);
        assert!(c
            .rows
            .iter()
            .all(|r| r.verdict == Verdict::NoChange && r.ratio == 1.0));
        assert!(c.env.iter().all(|e| !e.differs()));
        let rules = parse_fail_on("tcp_rr.lat_p99_us>+10%,tcp_rr.tps<-5%").unwrap();
        assert!(evaluate(&c, &rules).unwrap().is_empty());
        let text = render(&c);
        assert!(text.starts_with("Environment: the same"), "{text}");
        assert!(text.contains("1× (+0.0 %)"), "{text}");
    }

    #[test]
    fn a_clear_regression_is_worse_and_fails() {
        let a = report(
            "6.1",
            &[100.0, 101.0, 99.0, 100.5, 99.5],
            &[50.0, 52.0, 51.0, 49.0, 50.0],
        );
        let b = report(
            "6.6",
            &[80.0, 81.0, 79.0, 80.5, 79.5],
            &[60.0, 61.0, 62.0, 59.0, 60.0],
        );
        let c = compare(&a, &b, &Options::default());
        let tps = c.rows.iter().find(|r| r.metric == "tps").unwrap();
        assert_eq!(tps.ratio, 0.8);
        assert_eq!(tps.verdict, Verdict::Worse);
        assert!(!tps.within_noise);
        // Complete separation of 5 + 5: exact p = 2/252.
        assert!((tps.p_value.unwrap() - 2.0 / 252.0).abs() < 1e-12);
        let (lo, hi) = tps.ci.unwrap();
        assert!(lo <= 0.8 && (0.8..1.0).contains(&hi), "{lo} {hi}");
        let p99 = c.rows.iter().find(|r| r.metric == "lat_p99_us").unwrap();
        assert_eq!(p99.verdict, Verdict::Worse, "latency up is worse");
        let env: Vec<_> = c.env.iter().filter(|e| e.differs()).collect();
        assert_eq!(env.len(), 1);
        assert_eq!((env[0].a.as_str(), env[0].b.as_str()), ("6.1", "6.6"));
        assert!(render(&c).contains("kernel: 6.1 → 6.6"));
        let html = render_html(&c, "a.json", "b.json");
        assert_eq!(html.matches("<tr class=\"worse\">").count(), 2, "{html}");
        assert!(html.contains("<td>kernel</td><td>6.1</td><td>6.6</td>"));
        assert!(!html.to_lowercase().contains("http"));
        let rules = parse_fail_on("tcp_rr.lat_p99_us>+10%, tcp_rr.tps<-5%, P2-vxlan/*.tps<-1%");
        let rules = rules.unwrap();
        assert_eq!(rules[2].path.as_deref(), Some("P2-vxlan"));
        // The third rule names a path not in the reports.
        assert!(matches!(
            evaluate(&c, &rules),
            Err(FailOnError::NoMatch { rule }) if rule == "P2-vxlan/*.tps<-1%"
        ));
        let v = evaluate(&c, &rules[..2]).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].metric, "lat_p99_us");
        assert!((v[0].change_pct - 20.0).abs() < 1e-9);
        assert_eq!(v[1].metric, "tps");
        assert!(
            v[1].to_string().contains("-20.0 % breaks tcp_rr.tps<-5%"),
            "{}",
            v[1]
        );
        // A looser threshold does not fire: +20 % is not > +25 %.
        let loose = parse_fail_on("tcp_rr.lat_p99_us>+25%").unwrap();
        assert!(evaluate(&c, &loose).unwrap().is_empty());
    }

    #[test]
    fn noise_hides_small_changes() {
        let a = report("6.1", &[100.0, 120.0, 80.0], &[1.0, 1.0, 1.0]);
        let b = report("6.1", &[105.0, 125.0, 85.0], &[1.0, 1.0, 1.0]);
        let c = compare(&a, &b, &Options::default());
        let tps = c.rows.iter().find(|r| r.metric == "tps").unwrap();
        assert!(tps.within_noise);
        assert_eq!(tps.verdict, Verdict::NoChange);
        assert!(render(&c).contains("with 3 runs on a side"));
    }

    #[test]
    fn fail_on_syntax_errors() {
        let bad = [
            ("", "no rule"),
            ("tcp_rr.tps", "no > or <"),
            ("tcp_rr.tps>+10", "must end in %"),
            ("tcp_rr.tps>ten%", "not a number"),
            ("tcp_rr>+10%", "no . between"),
            ("tcp_rr.>+10%", "bad metric"),
            ("/tcp_rr.tps>1%", "empty path"),
            ("tcp_rr.tps<>1%", "both"),
        ];
        for (rule, why) in bad {
            let e = parse_fail_on(rule).unwrap_err();
            assert!(e.to_string().contains(why), "{rule}: {e}");
        }
        let r = parse_fail_on("tcp_stream.throughput_gbps<-5%").unwrap();
        assert_eq!(r[0].op, Op::Below);
        assert_eq!(r[0].pct, -5.0);
        let r = parse_fail_on("tcp_rr.lat_p99_us>10%").unwrap();
        assert_eq!((r[0].op, r[0].pct), (Op::Above, 10.0));
    }
}
