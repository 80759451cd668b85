//! `udp_max_rate` against a known bottleneck (privileged): two fresh network namespaces joined by
//! a veth pair whose client end has a token-bucket qdisc (`tbf`) of 40 Mbit/s, so the highest
//! rate of 1,000-byte datagrams without loss is known from the wire size (1,042 bytes with the
//! Ethernet, IP and UDP headers: 4,798 packets/s). The search must land within 20 % below and
//! 10 % above it (the bucket's burst lets a little more through in a 150 ms trial), in at most 5
//! paced trials, with the unpaced trial's loss showing why a search was needed. The namespaces
//! and the server's threads go with the test (Drop guards).

use ferry_bench::loadgen::{self, Close, Server, Spec, Test};
use ferry_tests::{privileged, veth, Netns};

#[test]
fn udp_max_rate_finds_a_token_bucket_bottleneck() {
    if !privileged("udp_max_rate_finds_a_token_bucket_bottleneck") {
        return;
    }
    let client = Netns::new("fbmrc");
    let server = Netns::new("fbmrs");
    veth(&client, "mr0", &server, "mr1");
    client.sh("ip addr add 10.77.0.1/24 dev mr0 && ip link set mr0 up && tc qdisc add dev mr0 root tbf rate 40mbit burst 8kb latency 5ms");
    server.sh("ip addr add 10.77.0.2/24 dev mr1 && ip link set mr1 up");
    let srv = server.run(|| {
        Server::bind("10.77.0.2:0".parse().unwrap())
            .expect("bind")
            .spawn()
            .expect("spawn")
    });
    let spec = Spec {
        test: Test::UdpMaxRate,
        target: srv.local_addr(),
        flows: 1,
        size: 1000,
        warmup_s: 0.1,
        duration_s: 0.5,
        cooldown_s: 0.1,
        close: Close::Server,
        rate_pps: 0,
        timeout_ms: 1000,
    };
    let o = client.run(|| loadgen::run(&spec)).expect("udp_max_rate");
    let m = |k: &str| o.metrics.get(k).copied().unwrap_or(f64::NAN);
    println!("{:?}", o.metrics);
    let want = 40e6 / (1042.0 * 8.0);
    let got = m("max_lossless_pps");
    assert!(
        got >= 0.8 * want && got <= 1.1 * want,
        "max lossless {got:.0} pps, the bucket passes {want:.0}"
    );
    assert!(
        m("loss_pct") > 10.0,
        "the unpaced trial overflowed the bucket"
    );
    assert_eq!(m("sender_limited"), 0.0);
    let trials = m("search_trials");
    assert!((1.0..=5.0).contains(&trials), "{trials} trials");
    assert!(
        (m("max_lossless_gbps") - got * 1000.0 * 8.0 / 1e9).abs() < 1e-9,
        "payload bits"
    );
    assert_eq!(o.spec.as_ref().map(|s| s.test), Some(Test::UdpMaxRate));

    // One flow only.
    let two = Spec { flows: 2, ..spec };
    assert!(matches!(loadgen::run(&two), Err(loadgen::Error::Spec(m)) if m.contains("one flow")));
    drop(srv);
}
