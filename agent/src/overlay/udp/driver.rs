//! The `udp` driver: owns the running userspace datapath ([`super::Datapath`]), restarts it
//! when the node's address changes, keeps `ferry.udp` in shape, hands the workers the peer table
//! and reconciles the per-peer routes into the device. The datapath itself lives in the
//! sibling modules of [`super`].

use crate::config;
use crate::health::Fault;
use crate::netlink::Netlink;
use crate::overlay::udp;
use crate::overlay::{apply_routes, Backend, Report, Tunnel, View};
use ipnetwork::Ipv4Network;
use std::sync::Arc;

/// The udp driver and its datapath (started at the first round that knows our address).
#[derive(Debug, Default)]
pub struct Driver {
    datapath: Option<udp::Datapath>,
}

impl Driver {
    /// A driver without a datapath yet.
    pub fn new() -> Self {
        Driver::default()
    }
}

impl Backend for Driver {
    fn name(&self) -> &'static str {
        config::Backend::Udp.name()
    }

    fn overhead(&self) -> u32 {
        udp::OVERHEAD
    }

    fn tunnel(&self) -> Option<Tunnel> {
        Some(Tunnel {
            port: udp::PORT,
            probe_device: None,
        })
    }

    fn userspace_stats(&self) -> Option<Arc<udp::Stats>> {
        self.datapath.as_ref().map(|d| d.stats.clone())
    }

    /// (Re)starts the datapath when our address changed, brings `ferry.udp` into shape (MTU, up,
    /// the podCIDR's network address /32), hands the workers the new peer table and reconciles
    /// the per-peer routes.
    fn reconcile(&mut self, nl: &mut Netlink, view: &View<'_>) -> Report {
        let mut report = Report::default();
        let (Some(cidr), Some(local), Some(mtu)) = (view.cidr, view.local, view.mtu) else {
            return report;
        };
        if self.datapath.as_ref().is_some_and(|d| d.local() != local) {
            tracing::info!(address = %local, "node address changed: restarting the udp datapath");
            self.datapath = None;
        }
        if self.datapath.is_none() {
            let mut started = udp::Datapath::start(local, udp::default_threads());
            if let Err(e) = &started {
                if e.is_mismatch() {
                    if let Ok(Some(l)) = nl.link_by_name(udp::DEVICE) {
                        tracing::warn!(device = udp::DEVICE, error = %e, "existing device does not match: recreating it");
                        let _ = nl.del_link(l.index);
                        started = udp::Datapath::start(local, udp::default_threads());
                    }
                }
            }
            match started {
                Ok(d) => {
                    tracing::info!(
                        device = udp::DEVICE, address = %local, port = udp::PORT,
                        threads = d.threads(), offload = d.offload(), "udp datapath attached"
                    );
                    self.datapath = Some(d);
                }
                Err(e) => {
                    report.fault = Some(if e.is_addr_in_use() {
                        Fault::PortInUse {
                            device: udp::DEVICE,
                            port: udp::PORT,
                        }
                    } else {
                        Fault::Device(format!("udp datapath: {e}"))
                    });
                    return report;
                }
            }
        }
        let index = match udp::ensure_device(nl, mtu, Ipv4Network::from(cidr.network())) {
            Ok(i) => i,
            Err(e) => {
                report.fault = Some(Fault::Device(e.to_string()));
                if matches!(e, udp::DeviceError::Missing) {
                    self.datapath = None;
                }
                return report;
            }
        };
        let (want, table, skipped) = udp::desired(view.nodes, view.own, index);
        report.skipped = skipped;
        report.peers = want.len();
        report.probe = Some((index, want.clone()));
        if let Some(d) = &self.datapath {
            d.set_table(udp::Table::new(Some(cidr), &table));
        }
        apply_routes(nl, &want, &mut report);
        report
    }
}
