//! `ipMasq`: masquerade traffic that leaves a pod subnet, with node-level rules keyed by subnet.
//!
//! The reference plugin adds one chain per container, which leaks when DEL never comes
//! (containernetworking/plugins#810). Ferry keeps one chain, `FERRY-CNI-MASQ`, jumped to from
//! `nat POSTROUTING`, holding two rules per (network, subnet): RETURN for traffic staying in the
//! subnet, MASQUERADE (`--random-fully`) for the rest except multicast. The rules match the pod
//! subnet as source only, so they can never match tunnel-outer packets. They are ensured on the first
//! ADD of a boot (a stamp file makes later ADDs free) and re-verified by every GC.

use ipnetwork::IpNetwork;
use std::path::Path;

/// The chain that holds our masquerade rules.
pub const CHAIN: &str = "FERRY-CNI-MASQ";

fn err(op: &str, e: impl std::fmt::Display) -> String {
    format!("iptables {op}: {e}")
}

/// The rules for one subnet, as `iptables` argument strings.
pub fn rules(network: &str, subnet: IpNetwork) -> [String; 2] {
    let (mcast, net) = if subnet.is_ipv4() {
        ("224.0.0.0/4", subnet.to_string())
    } else {
        ("ff00::/8", subnet.to_string())
    };
    let comment = format!("ferry-cni:{network}");
    [
        format!("-s {net} -d {net} -m comment --comment {comment} -j RETURN"),
        format!(
            "-s {net} ! -d {mcast} -m comment --comment {comment} -j MASQUERADE --random-fully"
        ),
    ]
}

/// Makes sure the chain, the jump and the rules for `subnet` exist (idempotent).
pub fn ensure(network: &str, subnet: IpNetwork) -> Result<(), String> {
    let ipt = iptables::new(subnet.is_ipv6()).map_err(|e| err("init", e))?;
    if !ipt
        .chain_exists("nat", CHAIN)
        .map_err(|e| err("list chains", e))?
    {
        if let Err(e) = ipt.new_chain("nat", CHAIN) {
            // A concurrent ADD may have created it in between.
            if !ipt.chain_exists("nat", CHAIN).unwrap_or(false) {
                return Err(err("create chain", e));
            }
        }
    }
    let jump = format!("-m comment --comment ferry-cni-masquerade -j {CHAIN}");
    ipt.append_unique("nat", "POSTROUTING", &jump)
        .or_else(|e| {
            if ipt.exists("nat", "POSTROUTING", &jump).unwrap_or(false) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| err("add jump", e))?;
    for rule in rules(network, network_of(subnet)) {
        ipt.append_unique("nat", CHAIN, &rule)
            .or_else(|e| {
                if ipt.exists("nat", CHAIN, &rule).unwrap_or(false) {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| err("add rule", e))?;
    }
    Ok(())
}

fn network_of(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// [`ensure`], skipped when `stamp_dir` records that it already ran in this boot.
pub fn ensure_once(
    network: &str,
    subnet: IpNetwork,
    stamp_dir: &Path,
    boot_id: &str,
) -> Result<(), String> {
    let stamp = stamp_dir.join(format!(
        "masq.{}",
        network_of(subnet).to_string().replace(['/', ':'], "_")
    ));
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == boot_id) {
        return Ok(());
    }
    ensure(network, subnet)?;
    std::fs::write(&stamp, boot_id).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_the_subnet_as_source_only() {
        let [ret, masq] = rules("n", "10.1.0.0/24".parse().unwrap());
        assert_eq!(
            ret,
            "-s 10.1.0.0/24 -d 10.1.0.0/24 -m comment --comment ferry-cni:n -j RETURN"
        );
        assert!(masq.starts_with("-s 10.1.0.0/24 ! -d 224.0.0.0/4"));
        assert!(masq.ends_with("MASQUERADE --random-fully"));
        assert!(rules("n", "fd00::/64".parse().unwrap())[1].contains("ff00::/8"));
    }
}
