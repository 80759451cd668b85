//! The `loopback` plugin, served by the same binary when it is invoked under that name (runtimes
//! such as containerd run a `loopback` network for every pod, so one must exist in the bin dir).

use crate::bridge::netlink_error;
use crate::env::{CniEnv, Command};
use crate::error::{code, CniError, CniResult};
use crate::types::{CniOutput, Interface, IpConfig};
use crate::version::Version;
use ferry_netlink::Netlink;
use ferry_sys::netns::NetnsFd;
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn lo_net(ip: IpAddr, prefix: u8) -> IpNetwork {
    IpNetwork::new(ip, prefix).expect("loopback prefixes are valid")
}

/// Runs one loopback command; returns the result to print, if any.
pub fn run(env: &CniEnv, version: Version) -> CniResult<Option<serde_json::Value>> {
    match env.command {
        Command::Add | Command::Check => {
            let ns = NetnsFd::open(&env.netns)?;
            let mut nl = Netlink::new_in(&ns)?;
            let lo = nl
                .link_by_name("lo")
                .map_err(netlink_error)?
                .ok_or_else(|| CniError::new(code::NETLINK, "no lo in the netns"))?;
            if env.command == Command::Check {
                return if lo.up {
                    Ok(None)
                } else {
                    Err(CniError::new(code::CHECK_FAILED, "lo is down"))
                };
            }
            if !lo.up {
                nl.set_up(lo.index).map_err(netlink_error)?;
            }
            let out = CniOutput {
                interfaces: vec![Interface {
                    name: "lo".into(),
                    mac: "00:00:00:00:00:00".into(),
                    sandbox: env.netns.clone(),
                    ..Default::default()
                }],
                ips: vec![
                    IpConfig {
                        address: lo_net(Ipv4Addr::LOCALHOST.into(), 8),
                        gateway: None,
                        interface: Some(0),
                    },
                    IpConfig {
                        address: lo_net(Ipv6Addr::LOCALHOST.into(), 128),
                        gateway: None,
                        interface: Some(0),
                    },
                ],
                ..Default::default()
            };
            Ok(Some(out.encode(version)))
        }
        // The netns (and its lo) goes away with the pod; nothing to release.
        Command::Del | Command::Gc | Command::Status => Ok(None),
        Command::Version => Ok(Some(crate::version::version_info(&version.to_string()))),
    }
}
