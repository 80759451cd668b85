//! A failed ADD rolls back exactly what it created (issue #10, first defect). A working attachment
//! (container `c3`, `eth0`, 10.89.0.2) sits on the node; ADDs fail beside it, at every step of ADD
//! in turn (`FERRY_CNI_FAULT`), and each time independent reads (`ip -j` in every namespace,
//! `iptables -S`, every file of the IPAM store and the runtime's result cache) must show the node
//! exactly as it was, and the attachment must still pass CHECK and reach its gateway.

mod common;

use common::Node;
use ferry_cni::fault::{ADD_STEPS, VAR};
use ferry_libcni::runtime::{ConfList, RuntimeConf};
use ferry_tests::{privileged, wait_until, Netns, RootSnapshot};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const SUBNET: &str = "10.89.0.0/24";
const GATEWAY: &str = "10.89.0.1";

/// Links, addresses and routes of a namespace, as `ip -j` prints them. `-d` shows link details
/// (veth peers' namespaces, bridge ports) where they hold no timers: not on the node, whose bridge
/// and bridge ports report running STP timers.
fn netns_state(ns: &Netns, details: bool) -> String {
    let link = if details { "-d link show" } else { "link show" };
    ns.sh(&format!(
        "ip -j {link}; ip -j addr show; ip -j route show table all; ip -j -6 route show table all"
    ))
}

/// Every file under `dir` with its bytes, except the IPAM store's `lock` file: it also holds the
/// allocator's rotation hints, which move on with every allocation by design (a just-released
/// address is not handed out again at once), failed or not.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if p.file_name().is_some_and(|n| n != "lock") {
                let rel = p.strip_prefix(base.parent().unwrap_or(base)).unwrap();
                let rel = rel.display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Everything a failed ADD could have touched.
#[derive(Debug, PartialEq, Eq)]
struct State {
    node: String,
    nat: String,
    pods: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
}

fn state(node: &Node, pods: &[&Netns]) -> State {
    State {
        node: netns_state(&node.ns, false),
        nat: node.ns.sh("iptables -t nat -S"),
        pods: pods.iter().map(|p| netns_state(p, true)).collect(),
        files: [node.data_dir(), node.dir.path().join("cache")]
            .iter()
            .flat_map(|d| files(d))
            .collect(),
    }
}

/// Panics with what differs, in readable form, unless `after` equals `before`.
fn assert_unchanged(before: &State, after: &State, case: &str) {
    if after == before {
        return;
    }
    let diff =
        |what: &str, a: &str, b: &str| format!("\n=== {what} before\n{a}\n=== {what} after\n{b}");
    let mut report = String::new();
    if after.node != before.node {
        report += &diff("node", &before.node, &after.node);
    }
    if after.nat != before.nat {
        report += &diff("node nat table", &before.nat, &after.nat);
    }
    for (i, (b, a)) in before.pods.iter().zip(&after.pods).enumerate() {
        if a != b {
            report += &diff(&format!("pod {i}"), b, a);
        }
    }
    let text = |f: &BTreeMap<String, Vec<u8>>| {
        f.iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if after.files != before.files {
        report += &diff("files", &text(&before.files), &text(&after.files));
    }
    panic!("{case}: the node changed:{report}");
}

/// Waits until IPv6 duplicate address detection has settled everywhere (a `tentative` flag
/// clearing later would read as a change).
fn settle(namespaces: &[&Netns]) {
    for ns in namespaces {
        assert!(
            wait_until(Duration::from_secs(10), || !ns
                .sh("ip -j addr show")
                .contains("tentative")),
            "DAD did not settle in {}",
            ns.name()
        );
    }
}

/// ADD with the fault point `step` (or none).
fn add(node: &Node, cid: &str, netns: &str, ifname: &str, step: Option<&str>) -> common::Answer {
    let conf = serde_json::to_vec(&conf(node)).unwrap();
    let mut env = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
    ];
    if let Some(step) = step {
        env.push((VAR, step));
    }
    node.call(&env, &conf)
}

fn conf(node: &Node) -> serde_json::Value {
    node.conf("1.1.0", SUBNET, json!({"ipMasq": true}))
}

fn list(node: &Node) -> ConfList {
    let doc = json!({"cniVersion": "1.1.0", "name": "testnet", "plugins": [conf(node)]});
    ConfList::parse(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

fn runtime_conf(cid: &str, netns: &str, ifname: &str) -> RuntimeConf {
    RuntimeConf {
        container_id: cid.into(),
        netns: netns.into(),
        ifname: ifname.into(),
        ..Default::default()
    }
}

/// The working attachment: c3/eth0 in `pod`, through the runtime so its result is cached.
fn healthy(node: &Node, pod: &Netns) -> serde_json::Value {
    let result = node
        .runtime()
        .add(&list(node), &runtime_conf("c3", pod.path(), "eth0"))
        .unwrap();
    assert_eq!(result["ips"][0]["address"], "10.89.0.2/24", "{result}");
    result
}

/// The working attachment still works: CHECK (with the cached result) and a ping of its gateway.
fn assert_still_works(node: &Node, pod: &Netns, case: &str) {
    node.runtime()
        .check(&list(node), &runtime_conf("c3", pod.path(), "eth0"))
        .unwrap_or_else(|e| panic!("{case}: CHECK of the working attachment failed: {e}"));
    let ping = pod.try_sh(&format!("ping -c 1 -W 2 {GATEWAY}"));
    assert!(
        ping.status.success(),
        "{case}: the working attachment cannot reach its gateway: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

/// The issue as reported: a second ADD of the same container, netns and ifname answers 101 and
/// must leave the working attachment alone (it used to delete its eth0, host veth and address).
#[test]
fn repeated_add_leaves_the_working_attachment_alone() {
    if !privileged("repeated_add_leaves_the_working_attachment_alone") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    healthy(&node, &pod);
    settle(&[&node.ns, &pod]);
    let before = state(&node, &[&pod]);

    let again = add(&node, "c3", pod.path(), "eth0", None);
    assert_eq!(again.code(), 101, "{}", again.stdout);
    assert_eq!(
        again.json["msg"],
        format!("interface eth0 already exists in netns {}", pod.path())
    );
    assert_unchanged(&before, &state(&node, &[&pod]), "repeated ADD");
    // The same through the runtime: it fails and keeps the cached result of the first ADD.
    let e = node
        .runtime()
        .add(&list(&node), &runtime_conf("c3", pod.path(), "eth0"))
        .unwrap_err();
    assert_eq!(e.code, 101, "{e}");
    assert_unchanged(
        &before,
        &state(&node, &[&pod]),
        "repeated ADD via the runtime",
    );
    assert_eq!(node.reservations(), ["10.89.0.2"]);
    assert_still_works(&node, &pod, "repeated ADD");
}

/// Every step of ADD fails in turn, for four failing ADDs beside the working attachment:
///
/// | ADD | why it is interesting |
/// |---|---|
/// | c3/eth0 in the same pod | the issue: the same attachment again |
/// | c3/eth0 in another pod | same attachment key (host veth name, IPAM owner), other netns |
/// | c3/eth1 in the same pod | a second interface: shares the pod's routes (a second default route) |
/// | c4/eth0 in another pod | an independent pod: creates everything, so rolls everything back |
/// | c5/eth0, retried | its earlier ADD's interface is gone but it still holds 10.89.0.3 (no DEL came yet): the retry creates a veth and must take back only that |
#[test]
fn a_failed_add_rolls_back_only_what_it_created() {
    if !privileged("a_failed_add_rolls_back_only_what_it_created") {
        return;
    }
    let root = RootSnapshot::take();
    let node = Node::new();
    let (pod, other, retried) = (Netns::new("fcp"), Netns::new("fcp"), Netns::new("fcp"));
    healthy(&node, &pod);
    let earlier = add(&node, "c5", retried.path(), "eth0", None);
    assert_eq!(earlier.expect_ok()["ips"][0]["address"], "10.89.0.3/24");
    retried.sh("ip link del eth0");
    settle(&[&node.ns, &pod, &other, &retried]);
    let namespaces = [&pod, &other, &retried];
    let before = state(&node, &namespaces);
    let step_index = |name: &str| ADD_STEPS.iter().position(|s| *s == name).unwrap();

    // (container, netns, ifname, the first step that refuses it by itself, its code and message)
    let cases = [
        (
            "c3",
            &pod,
            "eth0",
            Some((
                "ifname-check",
                101,
                format!("interface eth0 already exists in netns {}", pod.path()),
            )),
        ),
        (
            "c3",
            &other,
            "eth0",
            Some((
                "host-veth-check",
                101,
                "already exists and does not lead into netns".to_owned(),
            )),
        ),
        ("c3", &pod, "eth1", None),
        ("c4", &other, "eth0", None),
        ("c5", &retried, "eth0", None),
    ];
    for (i, step) in ADD_STEPS.iter().enumerate() {
        for (cid, ns, ifname, refused) in &cases {
            let case = format!("{cid}/{ifname} in {} failing after {step}", ns.name());
            let a = add(&node, cid, ns.path(), ifname, Some(step));
            let msg = a.json["msg"].as_str().unwrap_or_default().to_owned();
            match refused {
                Some((at, code, text)) if i >= step_index(at) => {
                    assert_eq!(a.code(), *code, "{case}: {}", a.stdout);
                    assert!(msg.contains(text.as_str()), "{case}: {msg}");
                }
                _ => {
                    assert_eq!(a.code(), 5, "{case}: {}", a.stdout);
                    assert_eq!(msg, format!("injected fault after ADD step {step} ({VAR})"));
                }
            }
            assert!(
                !a.stdout.contains("rollback"),
                "{case}: rollback reported a problem: {}",
                a.stdout
            );
            assert_unchanged(&before, &state(&node, &namespaces), &case);
            assert_still_works(&node, &pod, &case);
        }
    }
    // Without a fault, the retry converges: same address.
    let converged = add(&node, "c5", retried.path(), "eth0", None);
    assert_eq!(converged.expect_ok()["ips"][0]["address"], "10.89.0.3/24");
    drop((pod, other, retried, node));
    root.assert_unchanged();
}

/// On a node without a bridge, the first ADD fails at every step in turn: each time nothing of
/// the attachment is left (no veth, no reservation, no index entry, nothing in the pod netns).
/// The bridge, once created, stays: it is node state shared by every attachment.
#[test]
fn a_failed_first_add_leaves_no_attachment_behind() {
    if !privileged("a_failed_first_add_leaves_no_attachment_behind") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    settle(&[&pod]);
    let pod_before = netns_state(&pod, true);
    for step in ADD_STEPS {
        let a = add(&node, "c1", pod.path(), "eth0", Some(step));
        assert_eq!(a.code(), 5, "{step}: {}", a.stdout);
        assert!(!a.stdout.contains("rollback"), "{step}: {}", a.stdout);
        assert!(node.ferry_veths().is_empty(), "{step}: {:?}", node.links());
        assert!(node.reservations().is_empty(), "{step}");
        let index = node.data_dir().join("testnet/by-attachment");
        let entries = std::fs::read_dir(&index).map(Iterator::count).unwrap_or(0);
        assert_eq!(
            entries,
            0,
            "{step}: index entries left in {}",
            index.display()
        );
        assert_eq!(
            netns_state(&pod, true),
            pod_before,
            "{step}: the pod changed"
        );
    }
    // Nothing in the way of the ADD that then succeeds.
    let ok = add(&node, "c1", pod.path(), "eth0", None);
    ok.expect_ok();
    assert_eq!(node.ferry_veths().len(), 1);
    assert_eq!(node.reservations().len(), 1);
}

/// An unknown step name is refused instead of being ignored (a misspelt step in a test must not
/// turn into an ADD that succeeds), and leaves nothing behind.
#[test]
fn unknown_fault_step_is_an_error() {
    if !privileged("unknown_fault_step_is_an_error") {
        return;
    }
    let node = Node::new();
    let pod = Netns::new("fcp");
    let a = add(&node, "c1", pod.path(), "eth0", Some("vteh"));
    assert_eq!(a.code(), 4, "{}", a.stdout);
    assert!(a.json["msg"].as_str().unwrap().contains("\"vteh\""));
    assert!(node.ferry_veths().is_empty() && node.reservations().is_empty());
}
