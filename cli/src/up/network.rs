//! `ferry up`'s fabric: the namespaces and the underlay (a bridge in the switch namespace, one
//! veth per member, the external host), the cgroups, the bpffs pin directory of the nodes' socket
//! LB, and the node directories with ferry-cni installed (the server's and the nodes' 0700: they
//! hold keys and tokens). Each resource is recorded in the state file before it is created.

use super::{ServiceProxy, Store, Up};
use crate::state::Link;
use crate::sys::{self};
use crate::topology::{self, node_ip, node_name, BRIDGE, CP_IP, EXT_IP, IFACE};
use crate::{cgroup, net};
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

impl Up<'_> {
    pub(super) fn members(&self) -> Vec<(String, String, Ipv4Addr)> {
        let mut m = vec![("cp".to_owned(), self.topo.cp_ns(), CP_IP)];
        m.extend(
            self.topo
                .node_indexes()
                .map(|i| (format!("n{i}"), self.topo.node_ns(i), node_ip(i))),
        );
        // The external host: on the underlay like any member, nothing routed into the cluster.
        m.push(("ext".to_owned(), self.topo.ext_ns(), EXT_IP));
        m
    }

    pub(super) fn create_network(&mut self) -> Result<()> {
        let namespaces = self.topo.namespaces();
        self.state.namespaces.clone_from(&namespaces);
        self.save()?;
        for ns in &namespaces {
            self.check("the network namespaces")?;
            net::netns_add(ns)?;
        }
        let sw = self.topo.switch_ns();
        net::batch(
            &sw,
            &format!("link set lo up\nlink add {BRIDGE} type bridge\nlink set {BRIDGE} up\n"),
        )?;
        let members = self.members();
        self.state.links = members
            .iter()
            .map(|(port, ns, _)| Link {
                netns: ns.clone(),
                name: IFACE.to_owned(),
                peer_netns: sw.clone(),
                peer: port.clone(),
            })
            .collect();
        self.save()?;
        let mut ports = String::new();
        for (port, ns, _) in &members {
            self.check("the underlay links")?;
            net::veth(ns, IFACE, &sw, port)?;
            ports.push_str(&format!(
                "link set {port} master {BRIDGE}\nlink set {port} up\n"
            ));
        }
        net::batch(&sw, &ports)?;
        for (_, ns, ip) in &members {
            net::batch(
                ns,
                &format!(
                    "link set lo up\naddr add {ip}/{} dev {IFACE}\nlink set {IFACE} up\n",
                    topology::UNDERLAY_PREFIX
                ),
            )?;
        }
        // `--servers N`: each replica listens on an address of its own; the balancer keeps
        // the control plane's.
        if self.args.servers > 1 {
            let script: String = (1..=self.args.servers)
                .map(|k| {
                    format!(
                        "addr add {}/{} dev {IFACE}\n",
                        crate::ha::server_ip(k),
                        topology::UNDERLAY_PREFIX
                    )
                })
                .collect();
            net::batch(&self.topo.cp_ns(), &script)?;
        }
        // Nodes route pod traffic (as any Kubernetes node must).
        for i in self.topo.node_indexes() {
            let ns = self.topo.node_ns(i);
            sys::in_netns(&net::netns_path(&ns), ferry_sys::sysctl::enable_ip_forward)
                .and_then(|r| r.map_err(std::io::Error::from))
                .with_context(|| format!("enabling IPv4 forwarding in {ns}"))?;
            // A real node has a default route; these nodes only have the underlay. Without a
            // route, a packet to a ClusterIP that no rule translated (a Service without
            // endpoints) fails its route lookup before FORWARD / OUTPUT, where the iptables
            // proxier's REJECT answers ECONNREFUSED, and the client sees an ICMP net-unreachable,
            // which TCP treats as soft: a timeout. The service range goes out on the underlay.
            net::batch(
                &ns,
                &format!("route add {} dev {IFACE}\n", self.args.service_cidr),
            )?;
        }
        self.step(format!(
            "network: {} namespaces ({}, {}, {}, external host {} {EXT_IP}), underlay {} on \
             bridge {BRIDGE} in {sw}",
            namespaces.len(),
            sw,
            self.topo.cp_ns(),
            if self.topo.nodes == 1 {
                self.topo.node_ns(1)
            } else {
                format!(
                    "{}..{}",
                    self.topo.node_ns(1),
                    self.topo.node_ns(self.topo.nodes)
                )
            },
            self.topo.ext_ns(),
            topology::UNDERLAY,
        ));
        Ok(())
    }

    pub(super) fn cluster_cgroup(&self) -> PathBuf {
        topology::cluster_cgroup(&self.state.cgroup_root, &self.topo.name)
    }

    pub(super) fn node_cgroup(&self, i: u32) -> PathBuf {
        self.cluster_cgroup().join(format!("n{i}"))
    }

    pub(super) fn create_cgroups(&mut self) -> Result<()> {
        let top = self.cluster_cgroup();
        let mut all = vec![top.clone()];
        if self.args.servers > 1 {
            all.push(top.join("apiserver-lb"));
            all.extend((1..=self.args.servers).map(|k| top.join(format!("server-{k}"))));
            all.extend((1..=crate::ha::ETCD_MEMBERS).map(|k| top.join(format!("etcd-{k}"))));
        } else {
            all.push(top.join("server"));
            if self.args.store == Store::Etcd {
                all.push(top.join("etcd"));
            }
        }
        for i in self.topo.node_indexes() {
            let n = self.node_cgroup(i);
            all.extend([
                n.clone(),
                n.join("kubelet"),
                n.join("agent"),
                n.join("pods"),
            ]);
        }
        self.state.cgroups.clone_from(&all);
        self.save()?;
        for cg in &all {
            cgroup::create(cg)?;
        }
        self.step(format!("cgroups: {} under {}", all.len(), top.display()));
        Ok(())
    }

    /// The eBPF mode's pin directory (each agent pins under `<it>/<node>`): `/sys/fs/bpf/ferry-<name>`
    /// when `/sys/fs/bpf` is a bpf filesystem, else a bpffs instance of the cluster's own mounted
    /// at `<cluster dir>/bpffs` (unmounted by `ferry down` with the other mounts there). Recorded
    /// first, so `ferry down` removes it whatever happens.
    pub(super) fn create_bpffs(&mut self) -> Result<()> {
        if !self.bins.agent_services || self.args.service_proxy != ServiceProxy::Ebpf {
            return Ok(());
        }
        let dir = if sys::is_bpffs(Path::new(topology::BPFFS)) {
            topology::bpffs_dir(&self.topo.name)
        } else {
            self.dir.bpffs()
        };
        self.state.bpffs = Some(dir.clone());
        self.save()?;
        if !dir.starts_with(topology::BPFFS) {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            sys::mount_bpffs(&dir, &format!("ferry-{}", self.topo.name))?;
        }
        for i in self.topo.node_indexes() {
            let d = dir.join(node_name(i));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.step(format!("bpffs: pins under {}", dir.display()));
        Ok(())
    }

    pub(super) fn prepare_files(&mut self) -> Result<()> {
        let mkdir = |p: &Path| {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
        };
        // Owner only: the server's keys and tokens, each node's token and kubelet key.
        let private = |p: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)
                .with_context(|| format!("creating {}", p.display()))
        };
        mkdir(&self.dir.logs())?;
        private(&self.dir.server())?;
        for i in self.topo.node_indexes() {
            let node = self.dir.node(i);
            private(&node)?;
            for sub in ["cni/bin", "cni/net.d", "kubelet", "agent"] {
                mkdir(&node.join(sub))?;
            }
            let bin = node.join("cni/bin");
            let plugin = bin.join("ferry-cni");
            if std::fs::hard_link(&self.bins.cni, &plugin).is_err() {
                std::fs::copy(&self.bins.cni, &plugin).with_context(|| {
                    format!(
                        "installing {} as {}",
                        self.bins.cni.display(),
                        plugin.display()
                    )
                })?;
            }
            // ferry-cni answers as the loopback plugin under that name.
            std::os::unix::fs::symlink("ferry-cni", bin.join("loopback"))
                .with_context(|| format!("linking {}/loopback", bin.display()))?;
        }
        Ok(())
    }
}
