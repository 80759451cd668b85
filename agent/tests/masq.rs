//! Privileged test of the masquerade chains' remembered state (`ferry_agent::masq::Masquerade`)
//! against the real iptables, in a network namespace this test creates (removed by its `Drop`
//! guard, also on panic): the chains land as `iptables-save` shows them, a converged round runs
//! no process, and a due read-back (reading our chains with `iptables -S`, never the whole
//! ruleset) repairs a jump someone deleted and a chain someone flushed; the pod-to-pod NOTRACK
//! rule of the eBPF mode is added and removed.

#![forbid(unsafe_code)]

use ferry_agent::masq::{desired, MasqConfig, Masquerade};
use ferry_tests::{privileged, Netns};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn cfg() -> MasqConfig {
    MasqConfig {
        cluster: "10.244.0.0/16".parse().unwrap(),
        no_masquerade: vec!["192.168.7.0/24".parse().unwrap()],
        masquerade: true,
        tunnel_port: Some(8472),
        random_fully: true,
        pod_notrack: false,
    }
}

/// A masquerade that counts the processes it runs (the real tools, in the current namespace).
fn counted(check_every: Duration) -> (Masquerade, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let c = n.clone();
    let m = Masquerade::with_runner(
        cfg(),
        Box::new(move |cmd, args, stdin| {
            c.fetch_add(1, Ordering::SeqCst);
            ferry_agent::iptables::run(cmd, args, stdin)
        }),
        check_every,
    );
    (m, n)
}

#[test]
fn masquerade_chains_are_read_back_per_chain_and_repaired() {
    if !privileged("masquerade_chains_are_read_back_per_chain_and_repaired") {
        return;
    }
    let ns = Netns::new("fmasq");
    let save = || ns.sh("iptables-save");
    let want_lines_of = |cfg: &MasqConfig, save: &str| {
        for c in desired(cfg) {
            let jump = format!("-A {} -j {}", c.hook, c.name);
            assert_eq!(
                save.lines().filter(|l| *l == jump).count(),
                1,
                "{jump}\n{save}"
            );
            let rules: Vec<&str> = save
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("-A {} ", c.name)))
                .collect();
            assert_eq!(rules, c.rules, "{save}");
        }
    };
    let want_lines = |save: &str| want_lines_of(&cfg(), save);

    // Long interval: the first round writes, the next ones run nothing.
    let (mut m, calls) = counted(Duration::from_secs(3600));
    assert!(ns.run(|| m.reconcile()).unwrap());
    want_lines(&save());
    let after_first = calls.load(Ordering::SeqCst);
    assert_eq!(after_first, 9, "4 hooks + 4 chains read, one restore");
    assert!(!ns.run(|| m.reconcile()).unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), after_first);

    // A fresh agent (state unknown) reads back what is there and writes nothing.
    let (mut fresh, calls) = counted(Duration::ZERO);
    assert!(!ns.run(|| fresh.reconcile()).unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 8, "reads only");

    // Others delete a jump and flush a chain: the next due read-back repairs both.
    ns.sh("iptables -t nat -D POSTROUTING -j FERRY-POSTROUTING && iptables -t filter -F FERRY-FORWARD");
    assert!(ns.run(|| fresh.reconcile()).unwrap());
    want_lines(&save());
    assert!(!ns.run(|| fresh.reconcile()).unwrap());
    assert_eq!(fresh.reads(), 3);

    // The eBPF mode's pod-to-pod NOTRACK goes in and out of the raw table, nothing else moves.
    let notrack = MasqConfig {
        pod_notrack: true,
        ..cfg()
    };
    fresh.set_pod_notrack(true);
    assert!(ns.run(|| fresh.reconcile()).unwrap());
    let with = save();
    want_lines_of(&notrack, &with);
    assert!(
        with.contains(
            "-A FERRY-PREROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -m addrtype ! --dst-type LOCAL -j NOTRACK"
        ),
        "{with}"
    );
    fresh.set_pod_notrack(false);
    assert!(ns.run(|| fresh.reconcile()).unwrap());
    let without = save();
    want_lines(&without);
    assert!(!without.contains("NOTRACK"), "{without}");
}
