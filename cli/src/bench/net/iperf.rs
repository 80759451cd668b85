//! The iperf3 engine of `tcp_stream` (1 flow on plain-IP paths: the figure users recognise).
//! iperf3 3.12 takes whole seconds for `-t` and `-O`, so the client runs for the whole
//! warm-up + window + cool-down (rounded up) with 0.1 s intervals, and the window is cut out of
//! the intervals: goodput = bytes of the intervals inside the window / their length.

use ferry_bench::loadgen::Outcome;
use std::net::SocketAddrV4;

/// iperf3's arguments for a run of `total_s` seconds against `target`.
pub(crate) fn args(target: SocketAddrV4, total_s: f64) -> Vec<String> {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "seconds, small and positive"
    )]
    let t = total_s.ceil().max(1.0) as u64;
    vec![
        "-c".into(),
        target.ip().to_string(),
        "-p".into(),
        target.port().to_string(),
        "-t".into(),
        t.to_string(),
        "-i".into(),
        "0.1".into(),
        "-J".into(),
    ]
}

/// The window `[warmup, warmup + duration]` cut out of iperf3's JSON.
pub(crate) fn parse(json: &str, warmup_s: f64, duration_s: f64) -> Result<Outcome, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("iperf3 output is not JSON: {e}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let intervals = v["intervals"].as_array().ok_or("iperf3: no intervals")?;
    let end = warmup_s + duration_s;
    let (mut bytes, mut secs, mut retrans) = (0.0, 0.0, 0.0);
    // Per-second buckets of the window.
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for i in intervals {
        let s = &i["sum"];
        let (Some(start), Some(stop), Some(b)) =
            (s["start"].as_f64(), s["end"].as_f64(), s["bytes"].as_f64())
        else {
            continue;
        };
        if start + 1e-6 < warmup_s || stop > end + 0.05 {
            continue;
        }
        bytes += b;
        secs += stop - start;
        retrans += s["retransmits"].as_f64().unwrap_or(0.0);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "small, positive"
        )]
        let k = (start - warmup_s).max(0.0) as usize;
        if buckets.len() <= k {
            buckets.resize(k + 1, (0.0, 0.0));
        }
        buckets[k].0 += b;
        buckets[k].1 += stop - start;
    }
    if secs <= 0.0 {
        return Err("iperf3: no interval inside the window".into());
    }
    let gbps = bytes * 8.0 / secs / 1e9;
    let cpu = &v["end"]["cpu_utilization_percent"];
    let total = v["end"]["sum_sent"]["seconds"].as_f64().unwrap_or(secs);
    let host_total = cpu["host_total"].as_f64().unwrap_or(0.0) / 100.0;
    let mut o = Outcome {
        window_s: secs,
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "byte counts"
        )]
        bytes: bytes as u64,
        client_cpu_s: host_total * total,
        // iperf3 is single-threaded: its CPU share is its one thread's.
        client_busiest_thread: host_total,
        per_second: buckets
            .iter()
            .filter(|(_, s)| *s > 0.5)
            .map(|(b, s)| b * 8.0 / s / 1e9)
            .collect(),
        ..Default::default()
    };
    o.metrics.insert("throughput_gbps".into(), gbps);
    o.metrics.insert("retrans".into(), retrans);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(start: f64, bytes: f64) -> serde_json::Value {
        serde_json::json!({"sum": {"start": start, "end": start + 0.1, "bytes": bytes, "retransmits": 1}})
    }

    #[test]
    fn only_the_window_is_counted() {
        let intervals: Vec<_> = (0..30)
            .map(|i| {
                let start = f64::from(i) * 0.1;
                // warm-up intervals carry more bytes: they must not count
                interval(start, if start < 0.5 { 9e9 } else { 1.25e8 })
            })
            .collect();
        let json = serde_json::json!({
            "intervals": intervals,
            "end": {"sum_sent": {"seconds": 3.0}, "cpu_utilization_percent": {"host_total": 50.0}}
        })
        .to_string();
        let o = parse(&json, 0.5, 2.0).unwrap();
        assert!((o.window_s - 2.0).abs() < 1e-6, "{}", o.window_s);
        assert!((o.metrics["throughput_gbps"] - 10.0).abs() < 1e-6);
        assert!((o.metrics["retrans"] - 20.0).abs() < 1e-9);
        assert_eq!(o.per_second.len(), 2);
        assert!((o.client_cpu_s - 1.5).abs() < 1e-9);
    }

    #[test]
    fn errors_are_reported() {
        assert!(parse(r#"{"error": "unable to connect"}"#, 0.5, 2.0)
            .unwrap_err()
            .contains("unable to connect"));
        assert!(parse("not json", 0.5, 2.0).is_err());
    }

    #[test]
    fn whole_seconds_for_iperf3() {
        let a = args("10.0.0.1:5201".parse().unwrap(), 2.7);
        assert_eq!(a[5], "3");
    }
}
