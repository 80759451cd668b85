//! Ferry's node agent, as a library.
//!
//! `ferry-agent` runs inside each node's network namespace. It watches Nodes, makes its own node
//! ready for pods (node network file + CNI conflist once the Node has a `spec.podCIDR`), publishes
//! flannel-compatible annotations on its Node, programs the overlay between nodes (backend
//! `vxlan`, the default: a kernel VXLAN device plus one route, neighbour and FDB entry per peer;
//! `host-gw`: one route per peer podCIDR; or `udp`: a TUN device and a userspace datapath),
//! masquerades pod egress (iptables), and routes Services in place of kube-proxy
//! (`--service-proxy ebpf`, the default: cgroup socket hooks; or `iptables`).
//! `ferry-agent uninstall` removes what it installed; `ferry-agent programs` lists the embedded
//! eBPF programs; `ferry-agent services` prints the service table from the pinned maps.
//!
//! | module | job |
//! |---|---|
//! | [`config`] | command-line flags, validated settings |
//! | [`agent`] | the watch -> reconcile loop |
//! | [`health`] | the Node conditions it owns: `NetworkUnavailable`, `FerryNetworkDegraded`, `FerryServiceProxyReady` |
//! | [`service`] | Services: the service table (pure) and the proxiers that program it (eBPF socket LB, iptables) |
//! | [`probe`] | ICMP probes of every tunnel peer; TX checksum fallback |
//! | [`linkwatch`] | wakes the loop when the underlay interface or an overlay device changes |
//! | [`client`] | the kube-rs client (server URL + CA file + bearer token) |
//! | [`node`] | what is read from and published on Node objects |
//! | [`subnet`] | `subnet.env` and `10-ferry.conflist`: content and atomic writes |
//! | [`overlay`] | the backends as drivers (`Backend` trait, one factory): VXLAN, host-gw, and udp (persistent TUN device, batched userspace datapath); shared peer planning |
//! | [`metrics`] | Prometheus metrics (`/metrics`, `/healthz`) on `--metrics-address` |
//! | `http` | the small bounded HTTP/1.x responder of the metrics and health-check servers |
//! | [`iptables`] | running `iptables-save` / `iptables-restore` / `conntrack` (one spawn path) |
//! | [`masq`] | masquerade, FORWARD and pod-to-pod NOTRACK rules in `FERRY-*` iptables chains |
//! | [`bypass`] | which Service datapath runs, and so whether pod-to-pod traffic skips netfilter |
//! | [`uninstall`] | removal of everything above from the namespace |
//! | [`netlink`], [`sysctl`] | the agent's view of `ferry-netlink` (MAC helpers) and its sysctls (`ip_forward`, the bridge hook) over `ferry-sys`; the kernel boundary itself is those crates |
//! | [`bpf`] | the eBPF programs built from `ferry-ebpf`, embedded at compile time |

pub mod agent;
pub mod bpf;
pub mod bypass;
pub mod client;
pub mod config;
pub mod fastpath;
pub mod health;
pub(crate) mod http;
pub mod iptables;
pub mod linkwatch;
pub mod masq;
pub mod metrics;
pub mod netlink;
pub mod node;
pub mod overlay;
pub mod probe;
pub mod service;
pub mod subnet;
pub mod sysctl;
pub mod uninstall;
