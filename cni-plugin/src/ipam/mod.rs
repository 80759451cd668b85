//! IP address management: the built-in store ([`store`]) or an external IPAM plugin.
//!
//! Both answer the same question for ADD (which addresses, gateways and routes the attachment
//! gets) and are released by `(network, containerID, ifname)` on DEL, so DEL never needs the
//! container's netns.

pub mod store;

use crate::config::{IpamSource, NetConf, NodeNetwork, RangeSet};
use crate::env::CniEnv;
use crate::error::{code, CniError, CniResult};
use crate::exec::{find_plugin, invoke, Invocation};
use crate::types::{CniOutput, Dns, IpConfig, Route};
use ipnetwork::IpNetwork;
use std::net::IpAddr;
use store::{current_boot_id, Store, StoreError};

/// What IPAM decided for one attachment.
#[derive(Debug, Clone, Default)]
pub struct Assigned {
    /// Addresses with their gateways (`interface` unset).
    pub ips: Vec<IpConfig>,
    /// Routes requested by the IPAM configuration.
    pub routes: Vec<Route>,
    /// DNS from the IPAM plugin.
    pub dns: Dns,
    /// How to take back exactly what this allocation created (see [`undo_add`]).
    pub undo: IpamUndo,
}

/// What an ADD's allocation created, so a failed ADD can release that and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IpamUndo {
    /// Nothing new: every address was already held by this attachment (an ADD retried after a
    /// crash gets its addresses back), so they are not this invocation's to release.
    #[default]
    Nothing,
    /// Addresses the built-in store reserved in this call.
    Reserved(Vec<IpAddr>),
    /// The delegated IPAM plugin's ADD succeeded (it refuses a second ADD for the same
    /// attachment, so what it holds was created by this call): undone with a delegated DEL.
    Delegated(String),
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exhausted { .. } => CniError::new(code::IP_EXHAUSTED, e.to_string()),
            StoreError::Io { .. } => CniError::new(code::IO_FAILURE, "IPAM store").with_details(e),
        }
    }
}

fn boot_id() -> CniResult<String> {
    current_boot_id()
        .map_err(|e| CniError::new(code::IO_FAILURE, "reading boot id").with_details(e))
}

/// Opens the built-in store of `conf`'s network.
pub fn open_store(conf: &NetConf) -> CniResult<Store> {
    Ok(Store::open(&conf.data_dir, &conf.name, &boot_id()?)?)
}

/// Allocates addresses for an ADD. `node` is the node network file when the config uses one.
pub fn add(conf: &NetConf, env: &CniEnv, node: Option<&NodeNetwork>) -> CniResult<Assigned> {
    match &conf.ipam {
        IpamSource::Delegate(plugin) => delegate_add(conf, env, plugin),
        IpamSource::Static { ranges, routes } => builtin_add(conf, env, ranges, routes.clone()),
        IpamSource::NodeFile(path) => {
            let node = node.ok_or_else(|| {
                CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("node network file {} not loaded", path.display()),
                )
            })?;
            let routes = node
                .network
                .map(|n| vec![Route::new(n, None)])
                .unwrap_or_default();
            builtin_add(conf, env, &[vec![node.range()?]], routes)
        }
    }
}

fn builtin_add(
    conf: &NetConf,
    env: &CniEnv,
    ranges: &[RangeSet],
    routes: Vec<Route>,
) -> CniResult<Assigned> {
    let store = open_store(conf)?;
    let held = store
        .lookup_indexed(&env.container_id, &env.ifname)?
        .unwrap_or_default();
    let got = store.allocate(ranges, &env.container_id, &env.ifname)?;
    let reserved: Vec<IpAddr> = got
        .iter()
        .map(|(ip, _)| *ip)
        .filter(|ip| !held.contains(ip))
        .collect();
    let ips = got
        .into_iter()
        .map(|(ip, range)| IpConfig {
            address: IpNetwork::new(ip, range.subnet.prefix()).unwrap_or(range.subnet),
            gateway: range.gateway,
            interface: None,
        })
        .collect();
    Ok(Assigned {
        ips,
        routes,
        dns: Dns::default(),
        undo: if reserved.is_empty() {
            IpamUndo::Nothing
        } else {
            IpamUndo::Reserved(reserved)
        },
    })
}

/// Takes back what one ADD's allocation created (see [`IpamUndo`]); addresses the attachment
/// held before that ADD stay reserved.
pub fn undo_add(conf: &NetConf, env: &CniEnv, undo: &IpamUndo) -> CniResult<()> {
    match undo {
        IpamUndo::Nothing => Ok(()),
        IpamUndo::Reserved(ips) => {
            open_store(conf)?.release_some(&env.container_id, &env.ifname, ips)?;
            Ok(())
        }
        IpamUndo::Delegated(plugin) => delegate_run(conf, env, plugin, "DEL").map(drop),
    }
}

/// Releases the attachment's addresses (idempotent).
pub fn del(conf: &NetConf, env: &CniEnv) -> CniResult<()> {
    match &conf.ipam {
        IpamSource::Delegate(plugin) => delegate_run(conf, env, plugin, "DEL").map(drop),
        IpamSource::Static { .. } | IpamSource::NodeFile(_) => {
            open_store(conf)?.release(&env.container_id, &env.ifname)?;
            Ok(())
        }
    }
}

fn delegate_run(
    conf: &NetConf,
    env: &CniEnv,
    plugin: &str,
    command: &str,
) -> CniResult<Option<serde_json::Value>> {
    let binary = find_plugin(plugin, &env.path)?;
    let args: String = env
        .args
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    let inv = Invocation {
        command,
        container_id: &env.container_id,
        netns: &env.netns,
        ifname: &env.ifname,
        args: &args,
        path: &env.path,
        run_in: None,
    };
    let stdin = serde_json::to_vec(&conf.raw).unwrap_or_default();
    invoke(&binary, &inv, &stdin).map_err(|e| e.context(format!("delegated IPAM {command}")))
}

fn delegate_add(conf: &NetConf, env: &CniEnv, plugin: &str) -> CniResult<Assigned> {
    let out = delegate_run(conf, env, plugin, "ADD")?;
    let parsed: CniResult<CniOutput> = out
        .ok_or_else(|| {
            CniError::new(
                code::DECODE,
                format!("IPAM plugin {plugin} printed no result"),
            )
        })
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                CniError::new(code::DECODE, format!("IPAM plugin {plugin} result")).with_details(e)
            })
        });
    match parsed {
        Ok(r) if !r.ips.is_empty() => Ok(Assigned {
            ips: r.ips,
            routes: r.routes,
            dns: r.dns,
            undo: IpamUndo::Delegated(plugin.to_owned()),
        }),
        other => {
            // The spec: a failed delegated ADD is followed by a DEL on that delegate.
            let _ = delegate_run(conf, env, plugin, "DEL");
            Err(other.err().unwrap_or_else(|| {
                CniError::new(
                    code::DELEGATE,
                    format!("IPAM plugin {plugin} returned no IPs"),
                )
            }))
        }
    }
}

/// Forwards GC (for 1.1.0 delegates) or applies it to the built-in store. Returns what was
/// released by the built-in store.
pub fn gc(conf: &NetConf, env: &CniEnv) -> CniResult<Vec<store::Reservation>> {
    match &conf.ipam {
        IpamSource::Delegate(plugin) => {
            if delegate_supports_110(conf, env, plugin) {
                delegate_run(conf, env, plugin, "GC")?;
            }
            Ok(Vec::new())
        }
        _ => {
            let valid = conf.valid_attachments.clone().unwrap_or_default();
            let store = open_store(conf)?;
            Ok(store.retain(|r| {
                valid
                    .iter()
                    .any(|a| a.container_id == r.owner.container_id && a.ifname == r.owner.ifname)
            })?)
        }
    }
}

/// Forwards STATUS to a 1.1.0 delegate.
pub fn status(conf: &NetConf, env: &CniEnv) -> CniResult<()> {
    if let IpamSource::Delegate(plugin) = &conf.ipam {
        find_plugin(plugin, &env.path).map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg))?;
        if delegate_supports_110(conf, env, plugin) {
            delegate_run(conf, env, plugin, "STATUS")?;
        }
    }
    Ok(())
}

fn delegate_supports_110(conf: &NetConf, env: &CniEnv, plugin: &str) -> bool {
    delegate_run(conf, env, plugin, "VERSION")
        .ok()
        .flatten()
        .and_then(|v| v.get("supportedVersions").cloned())
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|a| a.iter().any(|s| s == "1.1.0"))
}
