//! Long-format CSV: one line per (run, metric), `path,test,params,metric,unit,round,value,valid`,
//! with the parameters as `flows=1;size=1`. Invalid runs are included with `valid` = false so a
//! spreadsheet can filter them the way the summaries do. Quoting per RFC 4180.

use crate::model::{unit_of, Report};

/// The header line (without the line break).
pub const HEADER: &str = "path,test,params,metric,unit,round,value,valid";

/// A field, quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text: the header, then one line per run metric in result and run order.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str(HEADER);
    out.push_str("\r\n");
    for rs in &report.results {
        let params = rs
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        for run in &rs.runs {
            for (metric, value) in &run.metrics {
                let line = [
                    field(&rs.path),
                    field(&rs.test),
                    field(&params),
                    field(metric),
                    field(unit_of(metric).0),
                    run.round.to_string(),
                    value.to_string(),
                    run.valid.to_string(),
                ];
                out.push_str(&line.join(","));
                out.push_str("\r\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResultSet, Run};

    #[test]
    fn one_line_per_run_metric_with_quoting() {
        let r = Report {
            results: vec![ResultSet {
                path: "P1".into(),
                test: "tcp_rr".into(),
                params: [
                    ("size".to_string(), "1".to_string()),
                    ("note".to_string(), "a,\"b\"".to_string()),
                ]
                .into(),
                runs: vec![
                    Run {
                        round: 0,
                        valid: true,
                        metrics: [
                            ("tps".to_string(), 1500.5),
                            ("lat_p50_us".to_string(), 20.0),
                        ]
                        .into(),
                        ..Default::default()
                    },
                    Run {
                        round: 1,
                        valid: false,
                        metrics: [("tps".to_string(), 3.0)].into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&r);
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "P1,tcp_rr,\"note=a,\"\"b\"\";size=1\",lat_p50_us,µs,0,20,true"
        );
        assert_eq!(
            lines[3],
            "P1,tcp_rr,\"note=a,\"\"b\"\";size=1\",tps,txn/s,1,3,false"
        );
    }
}
