//! Privileged tests of the eBPF socket load balancer (`sock-lb` + `EbpfProxier`) with real
//! sockets (`BPF_PROG_TEST_RUN` does not run sock_addr programs).
//!
//! Each test builds its own world and removes it on every exit path (Drop guards):
//! - a private bpffs instance mounted on a temporary directory (the pin directory lives in it;
//!   unmounting it releases every pin the test left);
//! - a fresh cgroup under the cgroup2 mount (never the root cgroup), holding only the test's
//!   client processes (`python3`, joined to the cgroup and the netns between fork and exec);
//! - a fresh network namespace (`ferry_tests::Netns`) with `lo` up, where the backends listen on
//!   127.0.0.1 and the clients run. Frontends are ClusterIP-like addresses with no route: only
//!   the programs make them reachable.
//!
//! Kernel state is checked with `bpftool -j` (programs attached to the cgroup, pinned map dumps).
//! Since it encloses the old smoke test, this file replaces `bpf_smoke.rs`.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ferry_agent::bpf::AttachOutcome;
use ferry_agent::service::ebpf::{inspect, uninstall, EbpfProxier};
use ferry_agent::service::{Backend, Proto, Proxier as _, ServiceTable};
use ferry_common::names;
use ferry_tests::{privileged, wait_until};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 10);
const VIP_EMPTY: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 11);
const VIP_UNKNOWN: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 99);

mod sock_lb_lab;

use sock_lb_lab::{got_names, table, Lab};

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Array(Vec::new());
    }
    serde_json::from_slice(&out.stdout).expect("bpftool JSON")
}

/// Names of the programs `bpftool cgroup show` lists on `cgroup`.
fn attached(cgroup: &Path) -> BTreeSet<String> {
    let cg = cgroup.to_string_lossy().into_owned();
    bpftool(&["cgroup", "show", &cg])
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Ids of the programs `bpftool cgroup show` lists on `cgroup`.
fn attached_ids(cgroup: &Path) -> BTreeSet<u64> {
    let cg = cgroup.to_string_lossy().into_owned();
    bpftool(&["cgroup", "show", &cg])
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

fn program_ids(proxier: &EbpfProxier) -> BTreeSet<u64> {
    proxier
        .programs()
        .program_ids()
        .expect("program ids")
        .into_iter()
        .map(|(_, id)| u64::from(id))
        .collect()
}

/// `bpftool map dump pinned` of the service map, as a sorted list of entries.
fn dump_services(pin_dir: &Path) -> Vec<String> {
    let p = pin_dir
        .join(names::LB4_SERVICES)
        .to_string_lossy()
        .into_owned();
    let mut v: Vec<String> = bpftool(&["map", "dump", "pinned", &p])
        .as_array()
        .expect("array")
        .iter()
        .map(|e| format!("{}={}", e["key"], e["value"]))
        .collect();
    v.sort();
    v
}

#[test]
fn tcp_spread_refusal_update_and_adoption() {
    if !privileged("sock_lb::tcp_spread_refusal_update_and_adoption") {
        return;
    }
    let lab = Lab::new("slt");
    let backends = [
        lab.tcp_backend("b0"),
        lab.tcp_backend("b1"),
        lab.tcp_backend("b2"),
    ];
    let mut proxier = lab.proxier();
    assert!(proxier
        .attach_outcomes()
        .iter()
        .all(|(_, o)| *o == AttachOutcome::Created));
    let t = table(&[
        (VIP, 80, Proto::Tcp, backends.to_vec(), None),
        (VIP_EMPTY, 80, Proto::Tcp, vec![], None),
    ]);
    let stats = proxier.sync(&t).expect("sync");
    assert_eq!((stats.changed, stats.failed), (2, 0));
    // Independent view: all four programs attached to exactly our cgroup.
    let want: BTreeSet<String> = names::PROGRAMS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(attached(&lab.cgroup), want);

    // Spread over the three backends; the application sees the VIP as its peer.
    let results = lab.run(&["tcp", &VIP.to_string(), "80", "30"]);
    for r in &results {
        assert_eq!(r["peer"], format!("{VIP}:80"), "{r}");
    }
    let spread = got_names(&results);
    assert_eq!(
        spread.keys().cloned().collect::<Vec<_>>(),
        ["b0", "b1", "b2"],
        "{spread:?}"
    );

    // No backends: refused at once.
    let r = lab.run(&["tcp", &VIP_EMPTY.to_string(), "80", "1"]);
    assert_eq!(r[0]["errno"], libc::ECONNREFUSED, "{r:?}");
    assert!(r[0]["ms"].as_f64().expect("ms") < 500.0, "{r:?}");
    // Not a frontend: left alone (no route in this netns).
    let r = lab.run(&["tcp", &VIP_UNKNOWN.to_string(), "80", "1"]);
    assert_eq!(r[0]["errno"], libc::ENETUNREACH, "{r:?}");

    // Update: only b1 remains; right after sync no connection reaches another backend.
    let t = table(&[
        (VIP, 80, Proto::Tcp, vec![backends[1]], None),
        (VIP_EMPTY, 80, Proto::Tcp, vec![], None),
    ]);
    assert_eq!(proxier.sync(&t).expect("sync").changed, 1);
    let spread = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "20"]));
    assert_eq!(
        spread.keys().cloned().collect::<Vec<_>>(),
        ["b1"],
        "{spread:?}"
    );

    // Kill the proxier (no detach): the pins keep serving.
    let before = dump_services(&lab.pin_dir);
    let old_ids = program_ids(&proxier);
    assert_eq!(attached_ids(&lab.cgroup), old_ids);
    drop(proxier);
    let spread = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "5"]));
    assert_eq!(
        spread.keys().cloned().collect::<Vec<_>>(),
        ["b1"],
        "{spread:?}"
    );
    let view = inspect(&lab.pin_dir).expect("inspect while no proxier runs");
    assert_eq!(view.frontends.len(), 2, "{view}");
    // The inspection command reads the same from the pins alone.
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(["services", "-o", "json", "--bpffs-dir"])
        .arg(&lab.pin_dir)
        .output()
        .expect("ferry-agent services");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services JSON");
    let fronts = json["frontends"].as_array().expect("frontends");
    assert_eq!(fronts.len(), 2, "{json}");
    assert_eq!(fronts[0]["frontend"], format!("{VIP}:80/tcp"), "{json}");
    assert_eq!(fronts[0]["backends"][0]["port"], backends[1].port, "{json}");
    assert_eq!(
        fronts[1]["backends"].as_array().map(Vec::len),
        Some(0),
        "{json}"
    );
    assert!(json["counters"]["refused"].as_u64() >= Some(1), "{json}");

    // A new proxier adopts: links updated in place, nothing rewritten for the same table.
    let mut proxier = lab.proxier();
    assert!(proxier
        .attach_outcomes()
        .iter()
        .all(|(_, o)| *o == AttachOutcome::Updated));
    // BPF_LINK_UPDATE swapped the programs behind the same pinned links.
    let new_ids = program_ids(&proxier);
    assert!(new_ids.is_disjoint(&old_ids), "{new_ids:?} vs {old_ids:?}");
    assert_eq!(attached_ids(&lab.cgroup), new_ids);
    assert_eq!(dump_services(&lab.pin_dir), before);
    let stats = proxier.sync(&t).expect("sync");
    assert_eq!((stats.changed, stats.removed, stats.failed), (0, 0, 0));
    assert_eq!(dump_services(&lab.pin_dir), before);
    assert_eq!(attached(&lab.cgroup), want);
    let spread = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "5"]));
    assert_eq!(spread.keys().cloned().collect::<Vec<_>>(), ["b1"]);

    // Removing everything, then uninstalling, leaves no pin and no attachment.
    let stats = proxier.sync(&ServiceTable::default()).expect("sync");
    assert_eq!(stats.removed, 2);
    assert!(dump_services(&lab.pin_dir).is_empty());
    drop(proxier);
    uninstall(&lab.pin_dir).expect("uninstall");
    assert!(!lab.pin_dir.exists());
    // The kernel frees a link whose last reference (the pin) went in deferred work, so the
    // programs leave the cgroup shortly after the unlink, not during it.
    assert!(
        wait_until(Duration::from_secs(5), || attached(&lab.cgroup).is_empty()),
        "programs still attached 5 s after uninstall: {:?}",
        attached(&lab.cgroup)
    );
}

#[test]
fn udp_reverse_translation_big_datagram_and_socket_destroy() {
    if !privileged("sock_lb::udp_reverse_translation_big_datagram_and_socket_destroy") {
        return;
    }
    let lab = Lab::new("slu");
    let u0 = lab.udp_backend("u0");
    let u1 = lab.udp_backend("u1");
    let mut proxier = lab.proxier();
    proxier
        .sync(&table(&[
            (VIP, 53, Proto::Udp, vec![u0], None),
            (VIP_EMPTY, 53, Proto::Udp, vec![], None),
        ]))
        .expect("sync");

    // Unconnected: 2000 bytes arrive whole; the reply comes from the VIP.
    let r = lab.run(&["udp", &VIP.to_string(), "53", "2000"]);
    assert_eq!(r[0]["got"], "u0:2000", "{r:?}");
    assert_eq!(r[0]["frm"], format!("{VIP}:53"), "{r:?}");
    // No backends: sendto is refused.
    let r = lab.run(&["udp", &VIP_EMPTY.to_string(), "53", "10"]);
    assert_eq!(r[0]["errno"], libc::ECONNREFUSED, "{r:?}");

    // Connected: getpeername shows the VIP; when its backend goes, the socket is destroyed.
    let mut child = lab
        .client(&["udpconn".into(), VIP.to_string(), "53".into()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first result");
    let first: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(first["peer"], format!("{VIP}:53"), "{first}");
    assert_eq!(first["got"], "u0:2", "{first}");
    proxier
        .sync(&table(&[
            (VIP, 53, Proto::Udp, vec![u1], None),
            (VIP_EMPTY, 53, Proto::Udp, vec![], None),
        ]))
        .expect("sync");
    assert_eq!(proxier.last_destroyed(), 1);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("second result");
    let _ = child.wait();
    let second: serde_json::Value = serde_json::from_str(rest.trim()).expect("JSON");
    // The destroyed socket is disconnected with ECONNABORTED pending: a send reports
    // EDESTADDRREQ (no peer any more), a receive ECONNABORTED. Either way it errors.
    let errno = second["errno"]
        .as_i64()
        .unwrap_or_else(|| panic!("send worked: {second}"));
    assert!(
        [i64::from(libc::ECONNABORTED), i64::from(libc::EDESTADDRREQ)].contains(&errno),
        "{second}"
    );
    // New sockets go to the new backend.
    let r = lab.run(&["udp", &VIP.to_string(), "53", "3"]);
    assert_eq!(r[0]["got"], "u1:3", "{r:?}");
    drop(proxier);
}

#[test]
fn affinity_sticks_then_expires() {
    if !privileged("sock_lb::affinity_sticks_then_expires") {
        return;
    }
    let lab = Lab::new("sla");
    let backends = vec![
        lab.tcp_backend("a0"),
        lab.tcp_backend("a1"),
        lab.tcp_backend("a2"),
    ];
    let mut proxier = lab.proxier();
    proxier
        .sync(&table(&[(VIP, 80, Proto::Tcp, backends.clone(), Some(1))]))
        .expect("sync");
    let spread = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "15"]));
    assert_eq!(spread.len(), 1, "affinity must stick: {spread:?}");
    // Past the 1 s timeout each choice is random again: over 8 rounds more than one backend.
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(1100));
        let r = lab.run(&["tcp", &VIP.to_string(), "80", "1"]);
        seen.insert(r[0]["got"].as_str().expect("reply").to_owned());
    }
    assert!(
        seen.len() > 1,
        "affinity never expired in {:?}: {seen:?}",
        start.elapsed()
    );
    // The sticky backend goes: its affinity entry goes with it, the client sticks elsewhere.
    let sticky = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "5"]));
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    let sticky = sticky.keys().next().expect("one").clone();
    let index = ["a0", "a1", "a2"]
        .iter()
        .position(|n| *n == sticky)
        .expect("name");
    let mut rest = backends.clone();
    rest.remove(index);
    proxier
        .sync(&table(&[(VIP, 80, Proto::Tcp, rest, Some(1))]))
        .expect("sync");
    // The one client netns had one entry, naming the removed backend: purged by the sync.
    let left = proxier.maps().dump_affinity().expect("affinity dump");
    assert!(left.is_empty(), "stale affinity entries: {left:?}");
    let after = got_names(&lab.run(&["tcp", &VIP.to_string(), "80", "5"]));
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        !after.contains_key(&sticky),
        "{sticky} was removed: {after:?}"
    );
    let hits = proxier
        .maps()
        .stats()
        .expect("stats")
        .into_iter()
        .find(|(s, _)| s.name() == "affinity_hits")
        .map(|(_, n)| n);
    assert!(hits >= Some(14), "{hits:?}");
    // The Service goes: its affinity entries go too (they would name ids other backends take
    // later).
    assert!(!proxier.maps().dump_affinity().expect("dump").is_empty());
    proxier.sync(&table(&[])).expect("sync");
    let left = proxier.maps().dump_affinity().expect("affinity dump");
    assert!(left.is_empty(), "entries of a removed Service: {left:?}");
    drop(proxier);
}

#[test]
fn generation_flips_never_show_half_an_update() {
    if !privileged("sock_lb::generation_flips_never_show_half_an_update") {
        return;
    }
    let lab = Lab::new("slf");
    let b: Vec<Backend> = ["f0", "f1", "f2", "f3"]
        .into_iter()
        .map(|n| lab.tcp_backend(n))
        .collect();
    let sets = [vec![b[0], b[1]], vec![b[1], b[2], b[3]]];
    let mut proxier = lab.proxier();
    proxier
        .sync(&table(&[(VIP, 80, Proto::Tcp, sets[0].clone(), None)]))
        .expect("sync");
    // A client connects over and over while the backend set flips between two generations.
    let child = lab
        .client(&["tcp".into(), VIP.to_string(), "80".into(), "400".into()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut flips = 0;
    let started = Instant::now();
    let mut child = child;
    while child.try_wait().expect("wait").is_none() && started.elapsed() < Duration::from_secs(60) {
        flips += 1;
        let set = &sets[flips % 2];
        let stats = proxier
            .sync(&table(&[(VIP, 80, Proto::Tcp, set.clone(), None)]))
            .expect("sync");
        assert_eq!(stats.changed, 1);
    }
    let out = child.wait_with_output().expect("client output");
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(results.len(), 400);
    // Every connection reached a backend of one set or the other: none failed or went untranslated.
    let spread = got_names(&results);
    assert!(flips >= 10, "only {flips} flips during the run");
    let stats = proxier.maps().stats().expect("stats");
    for name in ["err_no_slot", "err_no_backend"] {
        let n = stats
            .iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, n)| *n);
        assert_eq!(n, Some(0), "{name}: {stats:?}");
    }
    // The service map holds exactly one generation: 1 entry + the live set's slots.
    let live = &sets[flips % 2];
    assert_eq!(
        dump_services(&lab.pin_dir).len(),
        1 + live.len(),
        "after {flips} flips"
    );
    println!("{flips} flips, spread {spread:?}");
    drop(proxier);
}

/// An agent without the tc datapath (`--external-datapath false`, or enabling it failed) detaches
/// the tc programs a previous agent left pinned, and removes their maps: they would otherwise go
/// on translating external traffic with maps nobody updates.
#[test]
fn without_the_tc_datapath_a_previous_agents_tc_programs_are_detached() {
    if !privileged("sock_lb::without_the_tc_datapath_a_previous_agents_tc_programs_are_detached") {
        return;
    }
    use ferry_agent::bpf::{attached_interfaces, NodePortTc, TcHook};
    use ferry_agent::service::ProxyError;
    let lab = Lab::new("sltcoff");
    lab.netns
        .sh("ip link add ext0 type veth peer name ext1 && ip link set ext0 up");
    let cases: [(&str, Option<Result<_, ProxyError>>); 2] = [
        ("--external-datapath false", None),
        (
            "enabling failed",
            Some(Err(ProxyError::Bpf("underlay gone".into()))),
        ),
    ];
    for (what, opts) in cases {
        // A previous agent's tc program, attached through a pinned link, and its maps.
        let (mut tc, maps) = NodePortTc::load(&lab.pin_dir).expect("nodeport load");
        lab.netns
            .run(|| tc.attach("ext0", TcHook::UnderlayIngress))
            .expect("attach");
        drop((tc, maps));
        let pin = lab
            .pin_dir
            .join(format!("tcx_{}@ext0", ferry_common::nat::names::EXTERNAL));
        let link = bpftool(&["link", "show", "pinned", pin.to_str().expect("utf-8")])["id"]
            .as_u64()
            .expect("link id");
        let ct = lab.pin_dir.join(ferry_common::nat::names::CONNTRACK);
        assert!(ct.exists());

        let mut p = lab.proxier();
        assert!(!p.configure_external(opts), "{what}");
        assert!(p.external().is_none(), "{what}");
        assert!(
            attached_interfaces(&lab.pin_dir, ferry_common::nat::names::EXTERNAL).is_empty(),
            "{what}: link pin removed"
        );
        assert!(!ct.exists(), "{what}: map pins removed");
        let gone = wait_until(Duration::from_secs(5), || {
            !Command::new("bpftool")
                .args(["link", "show", "id", &link.to_string()])
                .output()
                .expect("bpftool")
                .status
                .success()
        });
        assert!(gone, "{what}: link {link} still attached");
        drop(p);
    }
}

/// `--external-xdp`: not on a veth underlay whose peer has no XDP program (its `XDP_TX` frames
/// would be lost); once the peer has one, the agent attaches the XDP program to the underlay in
/// native mode through a pinned link (checked with `ip -d -j link`), a restarted agent adopts
/// that link (`BPF_LINK_UPDATE`, same link), and an agent started without the flag detaches it.
#[test]
fn external_xdp_is_attached_adopted_and_detached_when_turned_off() {
    if !privileged("sock_lb::external_xdp_is_attached_adopted_and_detached_when_turned_off") {
        return;
    }
    use ferry_agent::bpf::{xdp_interfaces, TcHook};
    use ferry_agent::service::ebpf::ExternalOptions;
    use ferry_agent::service::nodeport::NodePortConfig;
    let lab = Lab::new("slxdp");
    lab.netns.sh(
        "ip link add ext0 type veth peer name ext1 && ip addr add 10.99.0.10/24 dev ext0 && \
         ip link set ext1 up && ip link set ext0 up",
    );
    let opts = |xdp| ExternalOptions {
        underlay: "ext0".into(),
        reply_devices: Vec::new(),
        egress_devices: Vec::new(),
        config: NodePortConfig {
            node_addr: Ipv4Addr::new(10, 99, 0, 10),
            nat_ports: 61_000..=65_535,
            maglev_size: 251,
            seed: 7,
        },
        xdp,
    };
    let xdp_of = || -> serde_json::Value {
        let link: serde_json::Value =
            serde_json::from_str(&lab.netns.sh("ip -d -j link show ext0")).expect("ip -j");
        link[0]["xdp"].clone()
    };
    // The underlay is a veth whose peer has no XDP program: XDP_TX frames would be lost, so the
    // agent leaves XDP off (tc serves) and retries at every sync.
    let mut p = lab.proxier();
    assert!(lab.netns.run(|| p.configure_external(Some(Ok(opts(true))))));
    assert!(xdp_of().is_null(), "{}", xdp_of());
    assert!(!p
        .external_attach_outcomes()
        .iter()
        .any(|(_, h, _)| *h == TcHook::UnderlayXdp));
    drop(p);
    // With a program on the peer (the pass-through one, from a load with pins of its own).
    let (mut peer_tc, _peer_maps) =
        ferry_agent::bpf::NodePortTc::load(&lab.bpffs.join("peer")).expect("load (peer)");
    lab.netns
        .run(|| peer_tc.attach_xdp_pass("ext1"))
        .expect("pass-through XDP on the peer");
    let mut ids = Vec::new();
    for round in 0..2 {
        let mut p = lab.proxier();
        assert!(lab.netns.run(|| p.configure_external(Some(Ok(opts(true))))));
        let outcome = p
            .external_attach_outcomes()
            .into_iter()
            .find(|(i, h, _)| i == "ext0" && *h == TcHook::UnderlayXdp)
            .map(|(_, _, o)| o);
        let want = if round == 0 {
            AttachOutcome::Created
        } else {
            AttachOutcome::Updated
        };
        assert_eq!(outcome, Some(want), "round {round}");
        let xdp = xdp_of();
        assert_eq!(xdp["mode"], 1, "native mode: {xdp}");
        assert_eq!(xdp["prog"]["name"], ferry_common::nat::names::XDP, "{xdp}");
        assert_eq!(xdp_interfaces(&lab.pin_dir), vec!["ext0".to_owned()]);
        ids.push(xdp["prog"]["id"].as_u64().expect("prog id"));
        drop(p);
        // The pinned link keeps the program attached while no agent runs.
        assert_eq!(xdp_of()["mode"], 1, "round {round}: still attached");
    }
    assert_ne!(
        ids[0], ids[1],
        "the restarted agent's own program behind the link"
    );
    let mut p = lab.proxier();
    assert!(lab
        .netns
        .run(|| p.configure_external(Some(Ok(opts(false))))));
    assert!(xdp_interfaces(&lab.pin_dir).is_empty(), "pin removed");
    assert!(
        wait_until(Duration::from_secs(5), || xdp_of().is_null()),
        "XDP detached: {}",
        xdp_of()
    );
    drop(p);
    let _ = ferry_agent::bpf::unpin_nodeport(&lab.bpffs.join("peer"));
}
