//! The outputs end to end: a realistic report (several paths, 3 rounds, histograms, CPU, a flagged
//! run, an unavailable path, the Service sweep) is summarised and written in every format; the
//! JSON validates against `docs/bench-schema.json` (python3-jsonschema) and reads back equal, the
//! CSV has one line per run metric, every Prometheus line has a valid shape, the HTML has one SVG
//! per chart and no URL, headless Chromium renders those charts, and `compare` of the file with
//! itself finds no change.

use ferry_bench::model::{
    Calibration, Config, Cpu, Device, Host, Meta, MetricSummary, PathInfo, Ratio, Report,
    ResultSet, Run, SvcCounter, SvcProgramming, SvcScalePoint, SCHEMA,
};
use ferry_bench::report::{self, compare, json, Format};
use ferry_bench::stats;
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Charts [`realistic`] must produce: throughput, latency for tcp_rr size=1, tcp_rr size=1024 and
/// tcp_crr, the ladder waterfall, the Service sweep, CPU per Gbit.
const CHARTS: usize = 7;

fn path(id: &str, baseline: Option<&str>, description: &str) -> PathInfo {
    PathInfo {
        id: id.into(),
        description: description.into(),
        baseline: baseline.map(Into::into),
        client: "pod-a on node-1".into(),
        server: "10.244.2.5:7000".into(),
        verify: vec![format!("{id} device counters")],
        unavailable: None,
    }
}

/// A latency histogram of `n` transactions around `p50_us`, standard base64 of V2.
#[expect(
    clippy::cast_possible_truncation,
    reason = "test latencies of a few hundred microseconds in ns fit u64"
)]
fn histogram(p50_us: f64, n: u64) -> String {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for i in 0..n {
        // Spread ±20 % around the median, in ns.
        let f = 0.8 + 0.4 * (i as f64 / n as f64);
        h.record((p50_us * f * 1000.0).round() as u64).unwrap();
    }
    stats::encode_histogram(&h).unwrap()
}

fn run(round: u32, order: u32, metrics: &[(&str, f64)], rate: f64) -> Run {
    Run {
        round,
        order,
        started_ms: 1_764_800_000_000 + u64::from(round) * 60_000 + u64::from(order) * 3_000,
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        per_second: vec![rate, rate * 1.01, rate * 0.99],
        histogram: None,
        cpu: Some(Cpu {
            net_s: 1.9,
            user_s: 0.4,
            system_s: 0.9,
            softirq_s: 0.6,
            generator_s: 0.7,
            agent_s: 0.01,
            max_cpu_busy: 0.8,
        }),
        flags: Vec::new(),
        valid: true,
        error: None,
    }
}

fn set(path: &str, test: &str, params: &[(&str, &str)], runs: Vec<Run>) -> ResultSet {
    ResultSet {
        path: path.into(),
        test: test.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        runs,
        ..Default::default()
    }
}

fn summary(median: f64) -> MetricSummary {
    let mut s = stats::summarise_values(&[median * 0.97, median, median * 1.04]);
    s.unit = "µs".into();
    s.higher_is_better = false;
    s
}

/// A report like a default lab run would write, summarised.
fn realistic() -> Report {
    let paths = vec![
        path("L0", None, "loopback in one netns"),
        path("L1", Some("L0"), "raw veth pair"),
        path("L2", Some("L1"), "node -> node over the underlay"),
        path("P1", Some("L1"), "pod -> pod, same node"),
        path("P2-vxlan", Some("L2"), "pod -> pod, across nodes, VXLAN"),
        path(
            "P2-host-gw",
            Some("L2"),
            "pod -> pod, across nodes, host-gw",
        ),
        PathInfo {
            unavailable: Some("the udp backend is not up".into()),
            ..path("P2-udp", Some("L2"), "pod -> pod, across nodes, udp")
        },
        path(
            "S1-ebpf",
            Some("P1"),
            "pod -> ClusterIP, local backend, eBPF",
        ),
        path(
            "S2-ebpf",
            Some("P2-vxlan"),
            "pod -> ClusterIP, remote backend, eBPF",
        ),
        path("E0", None, "node -> external host"),
        path("E1", Some("E0"), "pod -> external host, masquerade"),
    ];
    // (path, throughput Gbit/s) for tcp_stream.
    let stream = [
        ("L1", 24.0),
        ("L2", 20.0),
        ("P1", 21.5),
        ("P2-vxlan", 12.0),
        ("P2-host-gw", 18.5),
    ];
    // (path, tcp_rr 1-byte p50 µs).
    let rr = [
        ("L0", 12.0),
        ("L1", 16.0),
        ("L2", 18.0),
        ("P1", 22.0),
        ("P2-vxlan", 33.0),
        ("P2-host-gw", 27.0),
        ("S1-ebpf", 23.5),
        ("S2-ebpf", 35.0),
        ("E0", 19.0),
        ("E1", 21.0),
    ];
    let mut results = Vec::new();
    let mut order = 0;
    for (p, gbps) in stream {
        let runs = (0..3)
            .map(|round| {
                order += 1;
                let g = gbps * (1.0 + 0.01 * f64::from(round));
                run(
                    round,
                    order % 20,
                    &[
                        ("throughput_gbps", g),
                        ("retrans", 0.0),
                        ("cpu_s_per_gbit", 1.9 / (g * 10.0)),
                    ],
                    g,
                )
            })
            .collect();
        results.push(set(
            p,
            "tcp_stream",
            &[("flows", "1"), ("engine", "iperf3")],
            runs,
        ));
    }
    for (size, factor) in [("1", 1.0), ("1024", 1.3)] {
        for (p, p50) in rr {
            if size == "1024" && !["L1", "P1"].contains(&p) {
                continue;
            }
            let runs = (0..3)
                .map(|round| {
                    order += 1;
                    let l = p50 * factor + 0.5 * f64::from(round);
                    let mut r = run(
                        round,
                        order % 20,
                        &[
                            ("tps", 1e6 / l),
                            ("lat_p50_us", l),
                            ("lat_p90_us", l * 1.2),
                            ("lat_p99_us", l * 1.8),
                            ("lat_p999_us", l * 3.0),
                            ("cpu_us_per_txn", l * 0.9),
                        ],
                        1e6 / l,
                    );
                    r.histogram = Some(histogram(l, 40_000));
                    r
                })
                .collect();
            results.push(set(p, "tcp_rr", &[("size", size)], runs));
        }
    }
    for (p, cps) in [("P1", 9000.0), ("S1-ebpf", 8500.0)] {
        let runs = (0..3)
            .map(|round| {
                order += 1;
                run(
                    round,
                    order % 20,
                    &[
                        ("cps", cps),
                        ("lat_p50_us", 1e6 / cps),
                        ("lat_p99_us", 2e6 / cps),
                        ("connect_p50_us", 30.0),
                        ("connect_p99_us", 60.0),
                        ("samples", 27_000.0),
                    ],
                    cps,
                )
            })
            .collect();
        results.push(set(p, "tcp_crr", &[("size", "1")], runs));
    }
    // One invalid run (path check failed) and one unsteady run.
    let p2 = results
        .iter_mut()
        .find(|r| r.path == "P2-vxlan" && r.test == "tcp_stream")
        .unwrap();
    p2.runs[1].valid = false;
    p2.runs[1]
        .flags
        .push("wrong path: node-1/flannel.1 tx_bytes did not move".into());
    p2.runs[2].per_second = vec![10.0, 12.0, 14.0, 16.0];
    let mut svc_scale = Vec::new();
    for mode in ["ebpf", "iptables"] {
        for target in ["clusterip", "pod-ip", "nodeport", "pod-ip-external"] {
            for services in [0, 1000, 10_000] {
                let extra = if mode == "iptables" && target == "clusterip" {
                    f64::from(services) / 500.0
                } else {
                    0.0
                };
                let mut p50 = summary(30.0 + extra);
                if target == "nodeport" {
                    p50.ratio = Some(Ratio {
                        baseline: format!("pod-ip-external tcp_cc at N={services}"),
                        median: 1.04,
                        min: 0.98,
                        max: 1.12,
                    });
                }
                svc_scale.push(SvcScalePoint {
                    mode: mode.into(),
                    target: target.into(),
                    test: "tcp_cc".into(),
                    services,
                    connect_p50_us: p50,
                    connect_p99_us: summary(60.0 + extra),
                    cps: summary(9000.0 - extra * 10.0),
                    datapath_entries: u64::from(services) * 4,
                    full_sync_s: f64::from(services) / 2000.0,
                    connections: 9000,
                    verified: (target == "nodeport").then(|| SvcCounter {
                        counter: "node-1 tc datapath new_flows + ct_original (nodePort 31234)"
                            .into(),
                        delta: 27_500,
                    }),
                });
            }
        }
    }
    let mut report = Report {
        schema: SCHEMA.into(),
        meta: Meta {
            ferry_version: "0.1.0".into(),
            commit: Some("893a695".into()),
            started_at: "2026-12-04T23:00:00Z".into(),
            finished_at: "2026-12-04T23:12:30Z".into(),
            elapsed_s: 750.0,
            host: Host {
                hostname: "lab".into(),
                cpu_model: "AMD EPYC 7B13".into(),
                cores: 2,
                governor: "none".into(),
                smt: false,
                kernel: "6.1.0-41-amd64".into(),
                preempt: "dynamic".into(),
                loadavg: 0.12,
                busy_before: 0.02,
                iperf3: "iperf 3.12".into(),
            },
            mode: "lab".into(),
            nodes: 2,
            backends: vec!["vxlan".into(), "host-gw".into()],
            proxy_modes: vec!["ebpf".into(), "iptables".into()],
            sysctls: [("net.core.rmem_max".to_string(), "212992".to_string())].into(),
            devices: vec![Device {
                netns: "node-1".into(),
                name: "flannel.1".into(),
                kind: "vxlan".into(),
                mtu: 1450,
                offloads: [
                    ("tcp-segmentation-offload".to_string(), true),
                    ("generic-receive-offload".to_string(), false),
                ]
                .into(),
            }],
            idle_cpu: 0.03,
            calibration: Some(Calibration {
                size: 1,
                sockperf_p50_us: 11.0,
                builtin_p50_us: 11.8,
                ratio: 11.8 / 11.0,
                within_gate: true,
            }),
        },
        config: Config {
            quick: false,
            smoke: false,
            rounds: 3,
            warmup_s: 2.0,
            duration_s: 10.0,
            cooldown_s: 0.5,
            seed: 42,
            paths: vec!["L0".into(), "L1".into(), "P1".into()],
            tests: vec!["tcp_stream".into(), "tcp_rr".into(), "tcp_crr".into()],
            flows: vec![1],
            sizes: vec![1, 1024],
            svc_scale: vec![0, 1000, 10_000],
            endpoints: 4,
            svc_from: vec!["pod".into(), "external".into()],
            engine: "iperf3".into(),
            argv: vec!["ferry".into(), "bench".into(), "--runs".into(), "3".into()],
        },
        paths,
        results,
        svc_scale,
        svc_programming: vec![SvcProgramming {
            mode: "ebpf".into(),
            services: 1000,
            changes: 20,
            p50_ms: 4.0,
            p99_ms: 9.0,
            max_ms: 9.5,
        }],
        warnings: vec!["the machine was 2 % busy before the run".into()],
        ..Default::default()
    };
    stats::summarise(&mut report);
    report
}

/// A Python with jsonschema: Debian's (python3-jsonschema, scripts/setup.sh) first, then PATH's.
fn python_with_jsonschema() -> Option<PathBuf> {
    ["/usr/bin/python3", "python3"].into_iter().find_map(|p| {
        let ok = Command::new(p)
            .args(["-c", "import jsonschema"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| PathBuf::from(p))
    })
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench-schema.json")
}

/// Validates `file` against the schema; Err(message) when it does not validate.
fn validate(python: &Path, file: &Path) -> Result<(), String> {
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  jsonschema.Draft202012Validator.check_schema(schema)\n\
                  v = jsonschema.Draft202012Validator(schema)\n\
                  errors = sorted(v.iter_errors(json.load(open(sys.argv[2]))), key=str)\n\
                  for e in errors[:10]: print(list(e.absolute_path), e.message)\n\
                  sys.exit(1 if errors else 0)\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(schema_path())
        .arg(file)
        .output()
        .expect("run python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Checks one line of the Prometheus text format; returns the metric name of a sample line.
fn prom_line(line: &str) -> Result<Option<String>, String> {
    let is_name = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if let Some(rest) = line.strip_prefix("# ") {
        let mut parts = rest.splitn(3, ' ');
        let (kind, name, tail) = (parts.next(), parts.next(), parts.next());
        return match (kind, name, tail) {
            (Some("HELP"), Some(n), Some(_)) if is_name(n) => Ok(None),
            (Some("TYPE"), Some(n), Some("gauge" | "counter" | "untyped")) if is_name(n) => {
                Ok(None)
            }
            _ => Err(format!("bad comment line: {line}")),
        };
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_at(line.find(' ').ok_or("no value")?),
    };
    if !is_name(name) {
        return Err(format!("bad metric name in {line}"));
    }
    let mut rest = rest;
    if let Some(labels) = rest.strip_prefix('{') {
        // label="value" pairs with \\, \" and \n escapes.
        let mut chars = labels.char_indices().peekable();
        loop {
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if labels[start..].starts_with('}') {
                rest = &labels[start + 1..];
                break;
            }
            let eq = labels[start..].find('=').ok_or("label without =")? + start;
            let lname = &labels[start..eq];
            if !is_name(lname) || lname.contains(':') {
                return Err(format!("bad label name {lname:?} in {line}"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line}"));
            }
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\' | '"' | 'n') => {}
                        _ => return Err(format!("bad escape in {line}")),
                    },
                    Some('"') => break,
                    Some('\n') | None => return Err(format!("unterminated value in {line}")),
                    Some(_) => {}
                }
            }
            if chars.peek().map(|(_, c)| *c) == Some(',') {
                chars.next();
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or(format!("no space before value: {line}"))?;
    match value {
        "NaN" | "+Inf" | "-Inf" => {}
        v => {
            v.parse::<f64>()
                .map_err(|_| format!("bad value {v:?} in {line}"))?;
        }
    }
    Ok(Some(name.to_string()))
}

#[test]
fn every_format_is_written_and_valid() {
    let report = realistic();
    // The fixture is what it claims: flags, ratios, the ladder.
    let p2 = report
        .results
        .iter()
        .find(|r| r.path == "P2-vxlan" && r.test == "tcp_stream")
        .unwrap();
    assert_eq!(p2.summary["throughput_gbps"].n, 2);
    assert!(
        p2.runs[2].flags[0].starts_with("not steady"),
        "{:?}",
        p2.runs[2]
    );
    assert_eq!(
        p2.summary["throughput_gbps"]
            .ratio
            .as_ref()
            .unwrap()
            .baseline,
        "L2"
    );
    let rr = report
        .results
        .iter()
        .find(|r| r.path == "P1" && r.test == "tcp_rr")
        .unwrap();
    assert!(rr.summary["lat_p99_us"].enough_samples);
    assert!(
        !rr.summary["lat_p999_us"].enough_samples,
        "40 000 < 100 000"
    );
    assert_eq!(report.ladder.len(), 7, "{:#?}", report.ladder);

    let dir = tempfile::tempdir().unwrap();
    let written = report::write_all(&report, dir.path(), &Format::ALL).unwrap();
    assert_eq!(written.len(), 5);
    for f in &written {
        assert!(std::fs::metadata(f).unwrap().len() > 100, "{}", f.display());
    }
    let file = |f: Format| dir.path().join(f.file_name());

    // JSON: reads back equal, and validates against the schema.
    let back = json::read(&file(Format::Json)).unwrap();
    assert_eq!(back, report);
    match python_with_jsonschema() {
        Some(py) => {
            validate(&py, &file(Format::Json)).unwrap_or_else(|e| panic!("schema: {e}"));
            // The schema is strict enough to reject a broken report.
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(file(Format::Json)).unwrap())
                    .unwrap();
            v["results"][0]["runs"][0]["round"] = serde_json::json!(-1);
            v["meta"]["host"]["surprise"] = serde_json::json!(1);
            let bad = dir.path().join("bad.json");
            std::fs::write(&bad, v.to_string()).unwrap();
            let e = validate(&py, &bad).unwrap_err();
            assert!(e.contains("surprise") && e.contains("-1"), "{e}");
        }
        None if in_ci() => {
            panic!("python3 with jsonschema missing (python3-jsonschema, scripts/setup.sh)")
        }
        None => eprintln!(
            "SKIPPED schema validation: no python3 with jsonschema (run scripts/setup.sh)"
        ),
    }

    // CSV: header + one line per run metric.
    let csv = std::fs::read_to_string(file(Format::Csv)).unwrap();
    let metrics: usize = report
        .results
        .iter()
        .flat_map(|r| &r.runs)
        .map(|r| r.metrics.len())
        .sum();
    assert_eq!(csv.lines().count(), 1 + metrics);
    assert!(csv.lines().any(|l| l
        .starts_with("P2-vxlan,tcp_stream,engine=iperf3;flows=1,throughput_gbps,Gbit/s,1,12.12")
        && l.ends_with(",false")));

    // Prometheus: every line has a valid shape; every sample's family was declared first.
    let prom = std::fs::read_to_string(file(Format::Prom)).unwrap();
    let mut declared = std::collections::BTreeSet::new();
    let mut samples = 0;
    for line in prom.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.split(' ').next())
        {
            assert!(declared.insert(name.to_string()), "TYPE twice: {name}");
        }
        if let Some(name) = prom_line(line).unwrap_or_else(|e| panic!("{e}")) {
            assert!(declared.contains(&name), "sample before TYPE: {line}");
            samples += 1;
        }
    }
    assert!(samples > 100, "{samples}");
    assert!(prom.contains(
        "ferry_bench_throughput_gbps_ratio{path=\"P1\",test=\"tcp_stream\",engine=\"iperf3\",flows=\"1\",baseline=\"L1\"}"
    ), "{prom}");
    assert!(prom_line("x{a=\"b\"c} 1").is_err());
    assert!(prom_line("x{a=\"b\"} one").is_err());

    // HTML: one <svg> per chart, each with role="img" and a <title>; nothing from the network.
    let html = std::fs::read_to_string(file(Format::Html)).unwrap();
    assert_eq!(html.matches("<svg").count(), CHARTS, "charts");
    assert_eq!(html.matches("<svg role=\"img\"").count(), CHARTS);
    for chunk in html.split("<svg").skip(1) {
        let open_end = chunk.find('>').unwrap();
        assert!(
            chunk[open_end + 1..].starts_with("<title"),
            "svg without title"
        );
    }
    let lower = html.to_lowercase();
    for banned in ["http", "<script", "src=", "href=", "url(", "@import"] {
        assert!(!lower.contains(banned), "HTML contains {banned:?}");
    }
    assert!(html.contains("the udp backend is not up"));

    // The table names the paths, the ladder and the warnings.
    let table = std::fs::read_to_string(file(Format::Table)).unwrap();
    for needle in [
        "tcp_stream — TCP stream: goodput",
        "P2-host-gw",
        "× L2",
        "Cost ladder",
        "encapsulation (vxlan)",
        "SNAT",
        "wrong path",
        "not measured: P2-udp (the udp backend is not up)",
        "  - the machine was 2 % busy before the run",
    ] {
        assert!(table.contains(needle), "table lacks {needle:?}:\n{table}");
    }

    // compare of the file with itself: no change, nothing fails.
    let c = compare::compare(&back, &report, &compare::Options::default());
    assert!(!c.rows.is_empty());
    assert!(c
        .rows
        .iter()
        .all(|r| r.verdict == compare::Verdict::NoChange && r.ratio == 1.0));
    let rules =
        compare::parse_fail_on("tcp_rr.lat_p99_us>+10%,tcp_stream.throughput_gbps<-5%").unwrap();
    assert_eq!(compare::evaluate(&c, &rules).unwrap(), vec![]);
}

#[test]
fn html_renders_its_charts_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        assert!(
            !in_ci(),
            "chromium is missing (apt package chromium, scripts/setup.sh)"
        );
        eprintln!("SKIPPED: chromium not installed (run scripts/setup.sh)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let written = report::write_all(&realistic(), dir.path(), &[Format::Html]).unwrap();
    let profile = dir.path().join("chromium-profile");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", written[0].display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // Our own child, by its handle.
            child.kill().ok();
            child.wait().ok();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = reader.join().unwrap();
    assert!(status.success(), "chromium failed: {status}");
    // The parsed DOM (not the file) holds the charts: chromium parsed the inline SVG as SVG.
    assert_eq!(dom.matches("<svg role=\"img\"").count(), CHARTS, "{dom}");
    assert!(dom.matches("<title id=\"chart").count() >= CHARTS);
    assert!(dom.contains("<rect") && dom.contains("<polyline"));
    assert!(dom.contains("Cost ladder: microseconds each layer adds"));
}

#[test]
fn summaries_of_a_report_without_valid_runs_still_render() {
    let mut r = realistic();
    for rs in &mut r.results {
        for run in &mut rs.runs {
            run.valid = false;
        }
    }
    r.partial = true;
    stats::summarise(&mut r);
    assert!(r.ladder.is_empty());
    assert!(r
        .results
        .iter()
        .all(|rs| rs.flags.contains(&stats::NO_VALID_RUN.to_string())));
    let t = report::table::render(&r);
    assert!(t.starts_with("PARTIAL"));
    let html = report::html::render(&r);
    // Only the Service sweep (not from runs) remains to chart.
    assert_eq!(html.matches("<svg").count(), 1);
}
