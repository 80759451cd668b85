//! `ferry bench` (the pod-network benchmark), `ferry bench cni` and `ferry bench startup` on the
//! real kernel (privileged), in short smoke runs: every figure is present, finite and positive,
//! every path carried traffic through the counters it must move, the JSON reads back, `compare`
//! of a report with itself finds no change, bad flags are refused before anything is created, and
//! nothing of the run is left (namespaces named after the bench's pid, its clusters' cgroups, the
//! root namespace's links and routes).

mod common;

use common::*;
use ferry_tests::{privileged, RootSnapshot};
use std::process::Command;

/// The numbers of a table row (`name  1.23 [1.00-2.00]  ...`).
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '-')
        .filter_map(|w| w.parse::<f64>().ok())
        .collect()
}

fn base36(mut v: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn bench_cni_reports_both_plugins_and_leaves_nothing() {
    if !privileged("bench_cni_reports_both_plugins_and_leaves_nothing") {
        return;
    }
    binaries(&["ferry-cni"]);
    let root = RootSnapshot::take();
    let child = Command::new(FERRY)
        .args([
            "bench",
            "cni",
            "--pods",
            "4",
            "--concurrent",
            "4",
            "--rounds",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ferry bench cni failed: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    for row in ["ferry-cni", "bridge+host-local", "ratio (per round)"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} row:\n{stdout}"));
        let v = numbers(line.trim_start_matches(row));
        // Five columns, each `median [min-max]`.
        assert_eq!(v.len(), 15, "{row}: {line}");
        assert!(v.iter().all(|x| x.is_finite() && *x > 0.0), "{row}: {line}");
        for c in v.chunks(3) {
            assert!(
                c[1] <= c[0] && c[0] <= c[2],
                "median outside its min-max: {line}"
            );
        }
    }
    assert!(stdout.contains("target ADD p50 <= 1/3 of the reference: "));
    // Its namespaces are `fbn`/`fbp` + its pid in base 36 + a counter.
    let mine: Vec<_> = namespaces()
        .into_iter()
        .filter(|n| {
            n.starts_with(&format!("fbn{}", base36(pid)))
                || n.starts_with(&format!("fbp{}", base36(pid)))
        })
        .collect();
    assert!(mine.is_empty(), "namespaces left: {mine:?}");
    root.assert_unchanged();
}

#[test]
fn bench_refuses_bad_flags_before_creating_anything() {
    if !privileged("bench_refuses_bad_flags_before_creating_anything") {
        return;
    }
    // Other tests of this binary create namespaces at the same time: look only for names a
    // refused invocation itself would have made (its pid in the bench's naming schemes).
    let mut prefixes = Vec::new();
    for args in [
        &["bench", "cni", "--rounds", "0"][..],
        &["bench", "cni", "--pods", "-3"],
        &["bench", "startup", "--nodes", "0"],
        &["bench", "startup", "--pods", "many"],
        &["bench", "nosuch"],
    ] {
        let child = Command::new(FERRY)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        prefixes.extend([
            format!("fbn{}", base36(pid)),
            format!("fbp{}", base36(pid)),
            format!("fb{}-", pid % 100_000),
        ]);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: no clear error: {err}");
    }
    let made: Vec<_> = namespaces()
        .into_iter()
        .filter(|n| prefixes.iter().any(|p| n.starts_with(p.as_str())))
        .collect();
    assert!(
        made.is_empty(),
        "a refused invocation created namespaces: {made:?}"
    );
}

#[test]
fn bench_startup_times_pods_and_removes_its_cluster() {
    if !privileged("bench_startup_times_pods_and_removes_its_cluster") {
        return;
    }
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let root = RootSnapshot::take();
    let child = Command::new(FERRY)
        .args([
            "bench", "startup", "--pods", "4", "--rounds", "2", "--nodes", "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cluster = format!("fb{}", child.id() % 100_000);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ferry bench startup failed: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(stdout.contains("every node Ready in"), "{stdout}");
    assert_eq!(
        stdout.matches("create->ready p50").count(),
        3,
        "two rounds and the summary:\n{stdout}"
    );
    for row in [
        "create->ready p50",
        "create->ready p99",
        "bound->ready p50",
        "throughput",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} summary row:\n{stdout}"));
        let v = numbers(line.trim_start().trim_start_matches(row));
        assert!(
            v.len() >= 3 && v[..3].iter().all(|x| x.is_finite() && *x > 0.0),
            "{line}"
        );
    }
    let left: Vec<_> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{cluster}-")))
        .collect();
    assert!(
        left.is_empty(),
        "namespaces of the bench's cluster left: {left:?}"
    );
    root.assert_unchanged();
}

/// Validates a report against docs/bench-schema.json with python3-jsonschema (installed by
/// scripts/setup.sh; required under CI=true).
fn validate_schema(file: &std::path::Path) {
    let python = "/usr/bin/python3";
    let has = Command::new(python)
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "python3-jsonschema is missing and CI=true forbids skipping the schema check"
        );
        eprintln!("schema check skipped: python3-jsonschema is not installed");
        return;
    }
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench-schema.json");
    let script = "import json, sys, jsonschema\n\
                  v = jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))\n\
                  errors = sorted(v.iter_errors(json.load(open(sys.argv[2]))), key=str)\n\
                  for e in errors[:10]: print(list(e.absolute_path), e.message)\n\
                  sys.exit(1 if errors else 0)\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(schema)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report.json does not validate: {}",
        text(&out)
    );
}

/// Serialises the tests that run the pod-network bench: one of them holds its lock on purpose.
static NET_BENCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn net_bench_turn() -> std::sync::MutexGuard<'static, ()> {
    NET_BENCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The metrics that must be present and non-zero in every valid run of a test.
fn required(test: &str) -> &'static [&'static str] {
    match test {
        "tcp_stream" => &["throughput_gbps"],
        "tcp_rr" | "udp_rr" => &["tps", "lat_p50_us"],
        "tcp_crr" => &["cps", "connect_p50_us"],
        "tcp_cc" => &["cps"],
        _ => &[],
    }
}

#[test]
fn bench_quick_smoke_measures_every_path_and_leaves_nothing() {
    if !privileged("bench_quick_smoke_measures_every_path_and_leaves_nothing") {
        return;
    }
    let _turn = net_bench_turn();
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let root = RootSnapshot::take();
    let out_dir = tempfile::tempdir().unwrap();
    let child = Command::new(FERRY)
        .args(["bench", "--quick", "--smoke", "--seed", "7", "--out"])
        .arg(out_dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tag = format!("fb{}", child.id() % 100_000);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ferry bench --quick --smoke failed: {}",
        text(&out)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));

    let report = ferry_bench::report::json::read(&out_dir.path().join("report.json"))
        .unwrap_or_else(|e| panic!("report.json does not read back: {e}"));
    assert_eq!(report.schema, ferry_bench::model::SCHEMA);
    assert!(!report.partial);
    assert_eq!(
        report.config.paths,
        ["L1", "P1", "P2-ref-vxlan", "P2-vxlan", "S1-ebpf", "S2-ebpf"]
    );
    assert_eq!(report.config.seed, 7);
    for id in &report.config.paths {
        let info = report.paths.iter().find(|p| &p.id == id).unwrap();
        assert!(
            info.unavailable.is_none(),
            "{id} unavailable: {:?}",
            info.unavailable
        );
        assert!(!info.verify.is_empty(), "{id} has no counter to verify");
        for test in ["tcp_stream", "tcp_rr", "tcp_crr"] {
            let sets: Vec<_> = report
                .results
                .iter()
                .filter(|r| &r.path == id && r.test == test)
                .collect();
            assert!(!sets.is_empty(), "no {test} results for {id}");
            for rs in sets {
                assert_eq!(rs.runs.len(), 2, "{}: one run per round", rs.key());
                for run in &rs.runs {
                    assert!(run.error.is_none(), "{}: {:?}", rs.key(), run.error);
                    assert!(
                        !run.flags.iter().any(|f| f.starts_with("wrong path")),
                        "{}: {:?}",
                        rs.key(),
                        run.flags
                    );
                    assert!(run.valid, "{}: invalid run {:?}", rs.key(), run.flags);
                    assert!(run.cpu.is_some(), "{}: no CPU figures", rs.key());
                    for m in required(test) {
                        let v = run.metrics.get(*m).copied().unwrap_or(f64::NAN);
                        assert!(v.is_finite() && v > 0.0, "{}: {m} = {v}", rs.key());
                    }
                    for (m, v) in &run.metrics {
                        assert!(v.is_finite() && *v >= 0.0, "{}: {m} = {v}", rs.key());
                    }
                }
                for m in required(test) {
                    let s = rs
                        .summary
                        .get(*m)
                        .unwrap_or_else(|| panic!("{}: no {m} summary", rs.key()));
                    assert!(
                        s.median > 0.0 && s.min <= s.median && s.median <= s.max,
                        "{}: {m} {s:?}",
                        rs.key()
                    );
                }
            }
        }
    }
    validate_schema(&out_dir.path().join("report.json"));
    let html = std::fs::read_to_string(out_dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg"), "the HTML report has no chart");

    // A report compared with itself: no change, exit 0.
    let json = out_dir.path().join("report.json");
    let cmp = Command::new(FERRY)
        .args(["bench", "compare"])
        .args([&json, &json])
        .output()
        .unwrap();
    assert!(cmp.status.success(), "compare X X failed: {}", text(&cmp));
    let cmp_out = String::from_utf8_lossy(&cmp.stdout).to_lowercase();
    assert!(
        !cmp_out.contains("worse") && !cmp_out.contains("better"),
        "compare of a file with itself found a change:\n{cmp_out}"
    );

    // Nothing of the run is left: its namespaces, its cluster's namespaces and cgroup.
    let left: Vec<_> = namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&tag))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let cg = std::path::Path::new("/sys/fs/cgroup/unified").join(format!("ferry-{tag}a"));
    let cg2 = std::path::Path::new("/sys/fs/cgroup").join(format!("ferry-{tag}a"));
    assert!(
        !cg.exists() && !cg2.exists(),
        "the cluster's cgroup is left"
    );
    root.assert_unchanged();
}

#[test]
fn bench_net_refuses_bad_input_before_creating_anything() {
    if !privileged("bench_net_refuses_bad_input_before_creating_anything") {
        return;
    }
    let _turn = net_bench_turn();
    let mut tags = Vec::new();
    for (args, want, code) in [
        (&["bench", "--paths", "X9"][..], "unknown path", 1),
        (&["bench", "--tests", "nope"], "unknown test", 1),
        (
            &["bench", "--paths", "P2-udp", "--backend", "vxlan"],
            "cannot be built",
            1,
        ),
        (
            &[
                "bench",
                "--name",
                "nosuchcluster",
                "--state-dir",
                "/nonexistent",
            ],
            "no cluster named nosuchcluster",
            1,
        ),
        (
            &["bench", "--kubeconfig", "/nonexistent/kubeconfig"],
            "no such file",
            1,
        ),
        (&["bench", "--nodes", "a,b"], "--kubeconfig", 2),
        (&["bench", "--duration", "0"], "out of range", 1),
        (
            &["bench", "--svc-scale", "0,50", "--svc-from", "pod,outside"],
            "--svc-from: unknown value \"outside\" (pod, external)",
            1,
        ),
        (
            &["bench", "--svc-scale", "0", "--svc-from", ","],
            "--svc-from: empty list",
            1,
        ),
        (&["bench", "--svc-from", "external"], "--svc-scale", 2),
    ] {
        let child = Command::new(FERRY)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tags.push(format!("fb{}", child.id() % 100_000));
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: no clear error: {err}");
    }
    // A second run while one holds the lock (here: this test) is refused.
    std::fs::create_dir_all("/run/ferry").unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/ferry/bench.lock")
        .unwrap();
    lock.lock().unwrap();
    let child = Command::new(FERRY)
        .args(["bench", "--smoke", "--paths", "L0", "--tests", "rr"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tags.push(format!("fb{}", child.id() % 100_000));
    let out = child.wait_with_output().unwrap();
    drop(lock);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another `ferry bench` is running"),
        "{}",
        text(&out)
    );
    let made: Vec<_> = namespaces()
        .into_iter()
        .filter(|n| tags.iter().any(|t| n.starts_with(t.as_str())))
        .collect();
    assert!(
        made.is_empty(),
        "a refused invocation created namespaces: {made:?}"
    );
}

#[test]
fn bench_runs_on_a_cluster_through_its_kubeconfig() {
    if !privileged("bench_runs_on_a_cluster_through_its_kubeconfig") {
        return;
    }
    let _turn = net_bench_turn();
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let up = c.up(&["--nodes", "2"]);
    assert!(up.status.success(), "ferry up: {}", text(&up));
    let kubeconfig = c.dir().join("kubeconfig");
    let kc = kubeconfig.to_str().unwrap();

    // Bad input: a lab-only path, a node that does not exist, --name with --kubeconfig; nothing
    // is created.
    for (args, want) in [
        (&["--paths", "L1"][..], "not available on a real cluster"),
        (
            &["--nodes", "node-1,nosuchnode"],
            "no node named nosuchnode",
        ),
        (&["--name", "x"], "exclude each other"),
        (&["--svc-scale", "0,10"], "lab only"),
    ] {
        let out = Command::new(FERRY)
            .args(["bench", "--kubeconfig", kc])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: no clear error: {err}");
    }
    let k = Kubectl(kc.to_owned());
    assert_eq!(k.ok(&["get", "pods", "-A", "-o", "name"]).trim(), "");

    // Through the API only: pods placed by nodeName, clients by kubectl exec.
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(FERRY)
        .args(["bench", "--kubeconfig", kc, "--smoke", "--seed", "3"])
        .args([
            "--paths",
            "L2,P1,P2,S1",
            "--tests",
            "stream,rr,cc,udp_max_rate",
            "--out",
        ])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry bench --kubeconfig: {}",
        text(&out)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let report = ferry_bench::report::json::read(&out_dir.path().join("report.json"))
        .unwrap_or_else(|e| panic!("report.json does not read back: {e}"));
    validate_schema(&out_dir.path().join("report.json"));
    assert_eq!(report.meta.mode, "cluster");
    assert!(!report.partial);
    assert_eq!(report.config.paths, ["L2", "P1", "P2", "S1"]);
    for id in ["L2", "P1", "P2", "S1"] {
        let info = report.paths.iter().find(|p| p.id == id).unwrap();
        assert!(info.unavailable.is_none(), "{id}: {:?}", info.unavailable);
        for (test, metric) in [
            ("tcp_stream", "throughput_gbps"),
            ("tcp_rr", "tps"),
            ("tcp_cc", "cps"),
            ("udp_max_rate", "max_lossless_pps"),
        ] {
            let rs = report
                .results
                .iter()
                .find(|r| r.path == id && r.test == test)
                .unwrap_or_else(|| panic!("no {id} {test}"));
            assert_eq!(rs.runs.len(), 2, "{id} {test}: one run per round");
            for r in &rs.runs {
                assert!(r.error.is_none(), "{id} {test}: {:?}", r.error);
                let v = r.metrics.get(metric).copied().unwrap_or(0.0);
                assert!(v > 0.0 && v.is_finite(), "{id} {test}: {metric} {v}");
                assert!(r.cpu.is_none(), "{id} {test}: no CPU figures off the lab");
            }
        }
    }
    let s1 = report.paths.iter().find(|p| p.id == "S1").unwrap();
    assert_eq!(s1.baseline.as_deref(), Some("P1"));
    // Nothing of the run is left in the cluster.
    assert_eq!(
        k.ok(&[
            "get",
            "pods,services",
            "-A",
            "-l",
            "ferry-bench",
            "-o",
            "name"
        ])
        .trim(),
        ""
    );
    let down = c.ferry("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    c.assert_gone();
    root.assert_unchanged();
}
