//! The pod-to-pod netfilter bypass of the eBPF mode (`--pod-netfilter-bypass`, on by default).
//!
//! The eBPF socket load balancer translates a Service address in `connect()` / `sendmsg()`, before
//! a packet exists, so while it is the node's Service datapath no forwarded pod-to-pod packet needs
//! NAT or a conntrack entry. Two pieces of netfilter work then only cost time on every pod packet
//! (measured in docs/benchmarks.md: pod to pod on one node went from 0.85-0.92x to 0.98x the raw
//! veth pair on tcp_rr, across nodes from 0.84-0.88x to 0.95x the kernel VXLAN reference):
//!
//! - `net.bridge.bridge-nf-call-iptables` of the node's namespace: with `br_netfilter` loaded,
//!   every frame bridged between two pods of the node walks the iptables hooks and conntrack.
//!   Turned off ([`crate::sysctl::BRIDGE_NF_CALL_IPTABLES`] = 0).
//! - conntrack of routed pod-to-pod packets (across nodes): a raw-table `NOTRACK` rule for cluster
//!   to cluster, except to the node's own addresses (`crate::masq`, chain `FERRY-PREROUTING`).
//!
//! Both are right only while the eBPF proxier is the one that programmed the node: the iptables
//! proxier (explicit or the `--proxy-fallback`) DNATs Service traffic and needs the bridge hook
//! (a same-node backend's reply is bridged and must be un-NATed) and conntrack; so does another
//! proxy (`--service-proxy off`, kube-proxy beside us). So the Services loop reports which
//! proxier runs ([`PodBypass::set_ebpf`]) and the agent's loop applies the result each round: off
//! means the bridge hook back on and the NOTRACK rule gone. Until the Services loop has decided
//! (the first sync after a start), nothing is changed, so a restarted agent in eBPF mode does not
//! flap the node's settings. Without `br_netfilter` the sysctl does not exist: nothing to turn
//! off, and in iptables mode a warning, since the bridge then never passes frames to iptables.

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

const UNDECIDED: u8 = 0;
const EBPF: u8 = 1;
const OTHER: u8 = 2;

/// Which Service datapath runs, shared between the Services loop (writer) and the agent's loop
/// (reader, woken on a change).
#[derive(Debug)]
pub struct PodBypass {
    state: AtomicU8,
    wake: Arc<Notify>,
}

impl PodBypass {
    /// Undecided, waking `wake` when the Services loop decides or changes its mind.
    pub fn new(wake: Arc<Notify>) -> Arc<PodBypass> {
        Arc::new(PodBypass {
            state: AtomicU8::new(UNDECIDED),
            wake,
        })
    }

    /// Records whether the node's Service datapath is the eBPF socket LB; wakes the agent's loop
    /// when that changed.
    pub fn set_ebpf(&self, ebpf: bool) {
        let new = if ebpf { EBPF } else { OTHER };
        if self.state.swap(new, Ordering::SeqCst) != new {
            self.wake.notify_one();
        }
    }

    /// `Some(true)`: the eBPF datapath runs; `Some(false)`: another one (or none of ours);
    /// `None`: not decided yet.
    pub fn ebpf(&self) -> Option<bool> {
        match self.state.load(Ordering::SeqCst) {
            EBPF => Some(true),
            OTHER => Some(false),
            _ => None,
        }
    }
}

/// What the node should look like: `Some(true)` bypass, `Some(false)` full netfilter, `None`
/// leave it as it is.
pub fn wanted(enabled: bool, ebpf: Option<bool>) -> Option<bool> {
    ebpf.map(|e| e && enabled)
}

/// Sets the bridge hook of this namespace for `bypass` (hook off when bypassing). Returns whether
/// it was written; a missing sysctl (no `br_netfilter`) is `Ok(false)` when bypassing and an
/// error otherwise.
pub fn apply_bridge_hook(path: &Path, bypass: bool) -> std::io::Result<bool> {
    match crate::sysctl::set(path, !bypass) {
        Err(e) if bypass && e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_ebpf_datapath_with_the_flag_bypasses() {
        assert_eq!(wanted(true, None), None);
        assert_eq!(wanted(true, Some(true)), Some(true));
        assert_eq!(wanted(false, Some(true)), Some(false));
        assert_eq!(wanted(true, Some(false)), Some(false));
    }

    #[tokio::test]
    async fn a_change_wakes_the_loop_once() {
        let wake = Arc::new(Notify::new());
        let b = PodBypass::new(wake.clone());
        assert_eq!(b.ebpf(), None);
        b.set_ebpf(true);
        assert_eq!(b.ebpf(), Some(true));
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
        b.set_ebpf(true);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), wake.notified())
                .await
                .is_err(),
            "no change, no wake-up"
        );
        b.set_ebpf(false);
        assert_eq!(b.ebpf(), Some(false));
    }

    #[test]
    fn the_bridge_hook_follows_the_bypass() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bridge-nf-call-iptables");
        std::fs::write(&p, "1\n").unwrap();
        assert!(apply_bridge_hook(&p, true).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), "0");
        assert!(!apply_bridge_hook(&p, true).unwrap());
        assert!(apply_bridge_hook(&p, false).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), "1");
        let missing = dir.path().join("missing");
        assert!(!apply_bridge_hook(&missing, true).unwrap());
        assert!(apply_bridge_hook(&missing, false).is_err());
    }
}
