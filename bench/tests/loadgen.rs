//! The built-in load generator end to end on 127.0.0.1: a server in this process, the client
//! running every test for about a second, and the figures checked for consistency (completions
//! against histogram samples and rates, byte and sequence accounting), plus the failure cases: a
//! refused port, a server that dies mid-run, a malformed header, a bad spec.

use base64::Engine as _;
use ferry_bench::loadgen::{self, Close, Error, Outcome, Server, ServerHandle, Spec, Test};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn server() -> ServerHandle {
    Server::bind("127.0.0.1:0".parse().unwrap())
        .expect("bind")
        .spawn()
        .expect("spawn")
}

fn spec(test: Test, target: SocketAddr) -> Spec {
    Spec {
        test,
        target,
        flows: 2,
        size: 64,
        warmup_s: 0.2,
        duration_s: 1.0,
        cooldown_s: 0.1,
        close: Close::Server,
        rate_pps: 0,
        timeout_ms: 1000,
    }
}

/// One line with a run's figures (shown with `--nocapture`).
fn show(o: &Outcome) {
    let s = o.spec.as_ref().expect("the outcome carries its spec");
    let figures: Vec<String> = o
        .metrics
        .iter()
        .map(|(k, v)| format!("{k}={v:.2}"))
        .collect();
    println!(
        "{} flows={} size={} close={:?}: completed={} cpu={:.2}s busiest={:.2} {}",
        s.test,
        s.flows,
        s.size,
        s.close,
        o.completed,
        o.client_cpu_s,
        o.client_busiest_thread,
        figures.join(" ")
    );
}

fn metric(o: &Outcome, name: &str) -> f64 {
    *o.metrics
        .get(name)
        .unwrap_or_else(|| panic!("metric {name} missing: {:?}", o.metrics))
}

fn decode(h: &str) -> hdrhistogram::Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(h)
        .expect("base64");
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("HdrHistogram V2")
}

/// The checks every request/response-like test shares.
fn check_transactions(o: &Outcome, rate_metric: &str) {
    show(o);
    assert!(o.completed > 0, "{o:?}");
    assert!((o.window_s - 1.0).abs() < 1e-9);
    assert_eq!(o.samples, o.completed, "one latency sample per completion");
    let rate = metric(o, rate_metric);
    assert!((rate - o.completed as f64 / o.window_s).abs() < 1e-6);
    let h = decode(o.histogram.as_deref().expect("histogram"));
    assert_eq!(h.len(), o.samples);
    let (p50, p90, p99, p999) = (
        metric(o, "lat_p50_us"),
        metric(o, "lat_p90_us"),
        metric(o, "lat_p99_us"),
        metric(o, "lat_p999_us"),
    );
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= metric(o, "lat_max_us")
    );
    assert!((h.value_at_quantile(0.5) as f64 / 1000.0 - p50).abs() < 1e-9);
    // The single whole second of the window holds at most every completion.
    assert_eq!(o.per_second.len(), 1);
    assert!(o.per_second[0] > 0.0 && o.per_second[0] <= o.completed as f64);
    assert_eq!(o.per_flow.len(), 2);
    assert_eq!(o.per_flow.iter().sum::<f64>(), o.completed as f64);
    let f = metric(o, "fairness");
    assert!((0.5..=1.0).contains(&f), "fairness {f}");
    assert_eq!(metric(o, "errors"), 0.0, "{:?}", o.errors);
    assert_eq!(metric(o, "error_rate_pct"), 0.0);
    assert!(o.client_cpu_s > 0.0);
    assert!(o.client_busiest_thread > 0.0 && o.client_busiest_thread <= 1.0);
}

#[test]
fn tcp_rr() {
    let srv = server();
    let o = loadgen::run(&spec(Test::TcpRr, srv.local_addr())).expect("run");
    check_transactions(&o, "tps");
    assert_eq!(o.bytes, o.completed * 2 * 64);
    assert!(o.connect_histogram.is_none());
}

#[test]
fn tcp_rr_one_byte_and_large_messages() {
    let srv = server();
    for size in [1, 100_000] {
        let mut s = spec(Test::TcpRr, srv.local_addr());
        s.size = size;
        let o = loadgen::run(&s).expect("run");
        check_transactions(&o, "tps");
        assert_eq!(o.bytes, o.completed * 2 * u64::from(size));
    }
}

#[test]
fn tcp_crr_every_close_order() {
    let srv = server();
    for close in [Close::Server, Close::Client, Close::Rst] {
        let mut s = spec(Test::TcpCrr, srv.local_addr());
        s.close = close;
        let o = loadgen::run(&s).expect("run");
        check_transactions(&o, "cps");
        let c = decode(o.connect_histogram.as_deref().expect("connect histogram"));
        assert_eq!(
            c.len(),
            o.completed,
            "a connect sample per transaction ({close:?})"
        );
        assert!(metric(&o, "connect_p50_us") <= metric(&o, "lat_p50_us"));
        assert!(metric(&o, "connect_p50_us") <= metric(&o, "connect_p99_us"));
    }
}

#[test]
fn tcp_cc() {
    let srv = server();
    let mut s = spec(Test::TcpCc, srv.local_addr());
    s.close = Close::Rst;
    let o = loadgen::run(&s).expect("run");
    check_transactions(&o, "cps");
    assert_eq!(o.bytes, 0);
    assert!(metric(&o, "connect_p50_us") > 0.0);
}

/// TIME_WAIT sockets on 127.0.0.1 whose local port is not `server_port` and whose remote port is:
/// the client's side of connections to that server.
fn client_time_waits(server_port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap_or(""), 16).ok();
            f.len() > 3
                && f[3] == "06"
                && port(f[2]) == Some(server_port)
                && port(f[1]) != Some(server_port)
        })
        .count()
}

#[test]
fn tcp_cc_server_closes_first_so_the_client_keeps_no_time_wait() {
    let srv = server();
    let port = srv.local_addr().port();
    let o = loadgen::run(&spec(Test::TcpCc, srv.local_addr())).expect("run");
    show(&o);
    check_transactions(&o, "cps");
    assert_eq!(o.errors.values().sum::<u64>(), 0, "{:?}", o.errors);
    assert!(metric(&o, "connect_p50_us") > 0.0);
    // A connection cut at the run's end may close from the client side: allow a handful.
    let tw = client_time_waits(port);
    assert!(
        tw <= 5,
        "tcp_cc's default close left {tw} TIME_WAIT sockets on the client side ({} connections)",
        o.completed
    );
    // The bare connect + close (`--close client`) leaves them on the client: the check can fail.
    let mut c = spec(Test::TcpCc, srv.local_addr());
    c.close = Close::Client;
    c.duration_s = 0.3;
    let o = loadgen::run(&c).expect("run");
    assert!(o.completed > 100, "{:?}", o.metrics);
    assert!(client_time_waits(port) >= tw + 100);
}

#[test]
fn udp_rr() {
    let srv = server();
    let o = loadgen::run(&spec(Test::UdpRr, srv.local_addr())).expect("run");
    show(&o);
    assert!(o.completed > 0);
    assert_eq!(o.samples, o.completed);
    assert!((metric(&o, "tps") - o.completed as f64 / o.window_s).abs() < 1e-6);
    // Loopback does not drop at this rate; allow a little for a busy test machine.
    assert!(metric(&o, "loss_pct") < 1.0, "{:?}", o.metrics);
    assert_eq!(
        metric(&o, "loss_pct"),
        100.0 * o.lost as f64 / (o.completed + o.lost) as f64
    );
}

#[test]
fn udp_rr_small_size_pads_to_the_header() {
    let srv = server();
    let mut s = spec(Test::UdpRr, srv.local_addr());
    s.size = 1;
    s.flows = 1;
    let o = loadgen::run(&s).expect("run");
    assert!(o.completed > 0);
    assert_eq!(o.bytes, o.completed * 2 * 16);
}

#[test]
fn udp_stream_paced() {
    let srv = server();
    let mut s = spec(Test::UdpStream, srv.local_addr());
    s.rate_pps = 5000;
    let o = loadgen::run(&s).expect("run");
    let u = o.udp.expect("udp counts");
    show(&o);
    let offered = metric(&o, "offered_pps");
    assert!((offered - 10_000.0).abs() < 500.0, "offered {offered}");
    assert_eq!(offered, u.sent as f64 / o.window_s);
    assert_eq!(o.completed, u.received);
    // Loopback loses nothing unless the server thread starves (tests run in parallel on 2 CPUs).
    assert!(u.received <= u.sent && u.received > u.sent / 2, "{u:?}");
    assert_eq!(metric(&o, "received_pps"), u.received as f64 / o.window_s);
    let loss = 100.0 * (u.sent - u.received) as f64 / u.sent as f64;
    assert!((metric(&o, "loss_pct") - loss).abs() < 1e-9);
    assert_eq!(u.dup, 0);
    assert_eq!(
        o.per_second.iter().sum::<f64>(),
        u.sent as f64,
        "whole-second window: every send is in a bucket"
    );
    assert_eq!(o.bytes, u.received * 64);
}

#[test]
fn tcp_stream() {
    let srv = server();
    let mut s = spec(Test::TcpStream, srv.local_addr());
    s.size = 64 << 10;
    let o = loadgen::run(&s).expect("run");
    let g = metric(&o, "throughput_gbps");
    show(&o);
    assert!(g > 0.05, "{g} Gbit/s");
    assert!((g - o.bytes as f64 * 8.0 / o.window_s / 1e9).abs() < 1e-9);
    assert!(metric(&o, "retrans") >= 0.0);
    let st = o.stream.expect("stream counts");
    assert_eq!(
        st.written, st.server_read,
        "every byte written was read by the server"
    );
    assert!(o.bytes <= st.written);
    assert!(o.completed > 0 && o.completed * (64 << 10) <= st.written);
    assert_eq!(o.per_flow.iter().sum::<f64>(), o.bytes as f64);
    // Per-second Gbit/s of the single whole second: about the window's average.
    assert_eq!(o.per_second.len(), 1);
    assert!(o.per_second[0] > 0.0);
    assert!(o.histogram.is_none() && o.samples == 0);
    assert_eq!(metric(&o, "errors"), 0.0);
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn refused_port_is_a_clear_error() {
    let target = free_port();
    for test in [Test::TcpRr, Test::TcpCrr, Test::TcpStream] {
        match loadgen::run(&spec(test, target)) {
            Err(Error::Connect { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{test:?}: expected a refused connect, got {other:?}"),
        }
    }
    let err = loadgen::run(&spec(Test::UdpRr, target)).expect_err("no UDP server");
    assert!(err.to_string().contains(&target.to_string()), "{err}");
}

#[test]
fn server_killed_mid_run_counts_errors_and_returns() {
    let srv = server();
    let mut s = spec(Test::TcpRr, srv.local_addr());
    s.duration_s = 2.0;
    let t = Instant::now();
    let client = std::thread::spawn(move || loadgen::run(&s));
    std::thread::sleep(Duration::from_millis(1000));
    srv.stop();
    let o = client
        .join()
        .unwrap()
        .expect("a run with errors is still a run");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the client did not hang"
    );
    assert!(o.completed > 0, "completions before the kill");
    assert!(
        o.errors.get("closed").copied().unwrap_or(0) > 0,
        "the cut connections: {:?}",
        o.errors
    );
    assert!(
        o.errors.get("refused").copied().unwrap_or(0) > 0,
        "reconnects: {:?}",
        o.errors
    );
    assert!(metric(&o, "error_rate_pct") > 0.0);
    assert_eq!(metric(&o, "errors"), o.errors.values().sum::<u64>() as f64);
}

#[test]
fn malformed_header_drops_the_connection_and_the_server_keeps_serving() {
    let srv = server();
    let mut c = TcpStream::connect(srv.local_addr()).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(c.read(&mut b).unwrap_or(0), 0, "the server closed it");
    let mut s = spec(Test::TcpRr, srv.local_addr());
    s.flows = 1;
    let o = loadgen::run(&s).expect("run");
    assert!(o.completed > 0);
}

#[test]
fn bad_specs_are_refused() {
    let target = free_port();
    for (f, what) in [
        ((|s: &mut Spec| s.flows = 0) as fn(&mut Spec), "flows"),
        (|s| s.size = 0, "size"),
        (|s| s.duration_s = 0.0, "duration_s"),
        (|s| s.warmup_s = f64::NAN, "warmup_s"),
        (|s| s.timeout_ms = 0, "timeout_ms"),
    ] {
        let mut s = spec(Test::TcpRr, target);
        f(&mut s);
        match loadgen::run(&s) {
            Err(Error::Spec(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_server_in_another_namespace_stops_from_this_one() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED a_server_in_another_namespace_stops_from_this_one: needs root");
        return;
    }
    // Sockets keep their namespace: bind in a fresh one, serve and stop from this thread.
    let (_ns, srv) = ferry_sys::netns::NetnsFd::new_anonymous(|| {
        Server::bind("0.0.0.0:0".parse().unwrap()).expect("bind")
    })
    .expect("a new network namespace");
    let srv = srv.spawn().expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        srv.stop();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("stop() returned: it does not depend on reaching the listener");
}

/// Kills and reaps a child on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "a measurement that needs sockperf and a quiet machine: \
            cargo test --release -p ferry-bench --test loadgen -- --ignored --nocapture"]
fn tcp_rr_p50_against_sockperf_on_loopback() {
    use std::process::{Command, Stdio};
    let port = free_port().port().to_string();
    let _sockperf = Kill(
        Command::new("sockperf")
            .args(["sr", "--tcp", "-i", "127.0.0.1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sockperf is installed"),
    );
    let sp_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    while TcpStream::connect(sp_addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "sockperf sr did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let srv = server();
    let mut s = spec(Test::TcpRr, srv.local_addr());
    s.flows = 1;
    s.size = 14;
    s.warmup_s = 0.5;
    s.duration_s = 2.0;
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        let mut pair = [0.0; 2];
        for builtin in [round % 2 == 0, round % 2 == 1] {
            if builtin {
                pair[0] = metric(&loadgen::run(&s).expect("run"), "lat_p50_us");
            } else {
                let out = Command::new("sockperf")
                    .args(["pp", "--tcp", "--full-rtt", "-m", "14", "-i", "127.0.0.1"])
                    .args(["-p", &port, "-t", "2"])
                    .output()
                    .expect("sockperf pp");
                let text = String::from_utf8_lossy(&out.stdout);
                pair[1] = text
                    .lines()
                    .find(|l| l.contains("percentile 50.000"))
                    .and_then(|l| l.rsplit('=').next())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no p50 in sockperf's output: {text}"));
            }
        }
        println!(
            "round {round}: built-in p50 {:.2} us, sockperf p50 {:.2} us",
            pair[0], pair[1]
        );
        ours.push(pair[0]);
        theirs.push(pair[1]);
        ratios.push(pair[0] / pair[1]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let r = median(&mut ratios);
    println!(
        "tcp_rr 14 B p50: built-in {:.2} us, sockperf {:.2} us, ratio {r:.3} [{:.3}-{:.3}]",
        median(&mut ours),
        median(&mut theirs),
        ratios[0],
        ratios[ratios.len() - 1]
    );
    assert!((0.75..=1.25).contains(&r), "built-in / sockperf = {r:.3}");
}
