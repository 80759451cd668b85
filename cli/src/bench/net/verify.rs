//! Path verification: the counters a path must move, read before and after every run from
//! outside the data path (`ip -s -j link` in the device's namespace, the socket LB's pinned
//! counters through `ferry-agent services -o json`, `iptables-save -c` in the node's namespace). A
//! run whose expected counter did not move is flagged `wrong path: ...` and is not valid.

use super::lab::Place;
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// A counter a path must move.
#[derive(Debug, Clone)]
pub(crate) enum Check {
    /// A device's transmitted or received bytes.
    Link {
        /// The namespace the device is in.
        place: Place,
        /// Device name.
        dev: String,
        /// `tx` or `rx`.
        dir: &'static str,
    },
    /// The socket LB's rewrites (connect4 + sendmsg4) of one node.
    SockLb {
        /// The node's pin directory.
        bpffs: PathBuf,
        /// `node-1`.
        node: String,
    },
    /// The tc datapath's translations of external traffic (`new_flows` + `ct_original`) of one
    /// node (`ferry-agent services -o json`, from the pinned per-CPU counters).
    NodePortTc {
        /// The node's pin directory.
        bpffs: PathBuf,
        /// `node-1`.
        node: String,
    },
    /// Packets through the iptables DNAT rules to one endpoint in a node's nat table.
    Dnat {
        /// The node's namespace.
        place: Place,
        /// `IP:port` of the endpoint.
        to: String,
    },
}

impl Check {
    /// How the report names it (`node-1/ferry.1 tx_bytes`).
    pub(crate) fn describe(&self) -> String {
        match self {
            Check::Link { place, dev, dir } => format!("{}/{dev} {dir}_bytes", place.label),
            Check::SockLb { node, .. } => format!("{node} socket LB rewrites"),
            Check::NodePortTc { node, .. } => {
                format!("{node} tc datapath new_flows + ct_original")
            }
            Check::Dnat { place, to } => format!("{} iptables DNAT to {to} packets", place.label),
        }
    }

    /// The counter's current value.
    pub(crate) fn read(&self, ferry_agent: &Path) -> Result<u64> {
        match self {
            Check::Link { place, dev, dir } => {
                let out = super::lab::run_ok(
                    place
                        .command(Path::new("ip"))?
                        .args(["-s", "-j", "link", "show", "dev", dev]),
                )?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                v[0]["stats64"][dir]["bytes"]
                    .as_u64()
                    .with_context(|| format!("no {dir} bytes for {dev} in `ip -s -j link`"))
            }
            Check::SockLb { bpffs, .. } => {
                let out = super::lab::run_ok(
                    std::process::Command::new(ferry_agent)
                        .args(["services", "-o", "json", "--bpffs-dir"])
                        .arg(bpffs),
                )?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                let c = &v["counters"];
                match (
                    c["connect4_rewrites"].as_u64(),
                    c["sendmsg4_rewrites"].as_u64(),
                ) {
                    (Some(a), Some(b)) => Ok(a + b),
                    _ => bail!("no rewrite counters in `ferry-agent services -o json`"),
                }
            }
            Check::NodePortTc { bpffs, .. } => {
                let out = super::lab::run_ok(
                    std::process::Command::new(ferry_agent)
                        .args(["services", "-o", "json", "--bpffs-dir"])
                        .arg(bpffs),
                )?;
                let v: serde_json::Value = serde_json::from_str(&out)?;
                let c = &v["external"]["counters"];
                match (c["new_flows"].as_u64(), c["ct_original"].as_u64()) {
                    (Some(a), Some(b)) => Ok(a + b),
                    _ => bail!(
                        "no tc datapath counters in `ferry-agent services -o json` (is \
                         --external-datapath on?)"
                    ),
                }
            }
            Check::Dnat { place, to } => {
                let out = super::lab::run_ok(
                    place
                        .command(Path::new("iptables-save"))?
                        .args(["-c", "-t", "nat"]),
                )?;
                Ok(dnat_packets(&out, to))
            }
        }
    }
}

/// Sums the packet counters (`[pkts:bytes]`) of the DNAT rules to `to` in `iptables-save -c`.
pub(crate) fn dnat_packets(save: &str, to: &str) -> u64 {
    save.lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .any(|w| w[0] == "--to-destination" && w[1] == to)
        })
        .filter_map(|l| {
            let c = l.strip_prefix('[')?.split(']').next()?;
            c.split(':').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Reads every check (`None` where the read failed: reported, not fatal).
pub(crate) fn read_all(checks: &[Check], ferry_agent: &Path) -> Vec<Result<u64>> {
    checks.iter().map(|c| c.read(ferry_agent)).collect()
}

/// The `wrong path` flags of a run from the counters before and after it.
pub(crate) fn flags(
    checks: &[Check],
    before: &[Result<u64>],
    after: &[Result<u64>],
) -> Vec<String> {
    let mut flags = Vec::new();
    for ((c, b), a) in checks.iter().zip(before).zip(after) {
        match (b, a) {
            (Ok(b), Ok(a)) if a > b => {}
            (Ok(_), Ok(_)) => flags.push(format!("wrong path: {} did not move", c.describe())),
            (Err(e), _) | (_, Err(e)) => {
                flags.push(format!("wrong path: {} unreadable: {e:#}", c.describe()));
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnat_counters_are_summed_per_endpoint() {
        let save = "*nat\n\
            [0:0] -A KUBE-SVC-X -m statistic --mode random -j KUBE-SEP-1\n\
            [12:720] -A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.244.0.3:7000\n\
            [3:100] -A KUBE-SEP-2 -p udp -m udp -j DNAT --to-destination 10.244.0.3:7000\n\
            [5:300] -A KUBE-SEP-3 -p tcp -m tcp -j DNAT --to-destination 10.244.0.3:70001\n\
            [7:300] -A KUBE-SEP-4 -p tcp -m tcp -j DNAT --to-destination 10.244.0.30:7000\n";
        assert_eq!(dnat_packets(save, "10.244.0.3:7000"), 15);
        assert_eq!(dnat_packets(save, "10.244.9.9:7000"), 0);
    }

    #[test]
    fn a_counter_that_did_not_move_flags_the_run() {
        let place = Place {
            label: "node-1".into(),
            netns: PathBuf::from("/run/netns/x"),
            cgroup: None,
            exec: None,
        };
        let checks = vec![Check::Link {
            place,
            dev: "ferry.1".into(),
            dir: "tx",
        }];
        assert!(flags(&checks, &[Ok(5)], &[Ok(9)]).is_empty());
        let f = flags(&checks, &[Ok(5)], &[Ok(5)]);
        assert_eq!(f, vec!["wrong path: node-1/ferry.1 tx_bytes did not move"]);
        let f = flags(&checks, &[Ok(5)], &[Err(anyhow::anyhow!("gone"))]);
        assert!(f[0].starts_with("wrong path: node-1/ferry.1 tx_bytes unreadable"));
    }
}
