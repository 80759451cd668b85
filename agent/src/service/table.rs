//! The service table: what every Service frontend on this node should be translated to, computed
//! as a pure function of the Services, EndpointSlices and Nodes the agent sees ([`compute`]).
//! Both proxiers (eBPF socket LB and iptables) program exactly this table; tests compare the
//! kernel's state with it.
//!
//! One [`Entry`] per [`Frontend`] (address, port, protocol): a ClusterIP port, a NodePort on one
//! node address, an externalIP port or a LoadBalancer ingress IP port. Its backends are the
//! endpoints kube-proxy would use (ready ones; serving-terminating ones only when none is ready;
//! `internalTrafficPolicy: Local` keeps this node's), sorted, with the port resolved (named
//! `targetPort`s through the EndpointSlice's port names). An entry with no backends is kept: the
//! proxier must refuse it at once (ECONNREFUSED / ICMP port unreachable), never time out.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// L4 protocol of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IANA protocol number (6, 17), as the kernel and the BPF maps use it.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// `tcp` / `udp`, as iptables and the inspection output spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What a client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The address (ClusterIP, node address, externalIP or LoadBalancer ingress IP).
    pub addr: Ipv4Addr,
    /// The port (the Service port, or the nodePort).
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto.name())
    }
}

/// Where a connection goes instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The endpoint's address.
    pub addr: Ipv4Addr,
    /// The endpoint's port (the resolved `targetPort`).
    pub port: u16,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// Which kind of Service address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// `spec.clusterIP` (and `clusterIPs`).
    ClusterIp,
    /// `nodePort` on one node address.
    NodePort,
    /// One of `spec.externalIPs`.
    ExternalIp,
    /// One of `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

/// The Service port a frontend belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

/// One frontend's translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The Service port this frontend serves.
    pub service: ServicePortName,
    /// What kind of address the frontend is.
    pub kind: FrontendKind,
    /// The endpoints to spread new connections over (sorted, no duplicates); empty: refuse.
    pub backends: Vec<Backend>,
    /// `sessionAffinity: ClientIP`: its `timeoutSeconds` (`None`: no affinity).
    pub affinity_timeout: Option<u32>,
}

/// Everything the proxier programs, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    /// Frontend -> translation.
    pub entries: BTreeMap<Frontend, Entry>,
    /// Objects (or parts of them) skipped as unusable: `(namespace/name, why)`, for logs, metrics
    /// and events. Every other Service is still served.
    pub skipped: Vec<(String, String)>,
}
