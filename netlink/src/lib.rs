//! `ferry-netlink`: Ferry's one rtnetlink client, shared by the CNI plugin, the node agent and the
//! kubelet.
//!
//! A small synchronous client over one `NETLINK_ROUTE` socket, built on `netlink-sys` and
//! `netlink-packet-route`. The plugin is a short-lived single-threaded process and the agent's
//! requests are answered by the kernel within microseconds, so a blocking socket is both the
//! simplest and the fastest choice (no runtime to start). A socket acts in the network namespace
//! it was created in: [`Netlink::new_in`] opens one inside a pod's namespace, after which every
//! operation on it acts there, whatever namespace the thread is in.
//!
//! Why not the `rtnetlink` crate: it is an async front end (a connection task on a tokio runtime)
//! over the same `netlink-packet-route` messages; a blocking request/response client opened by
//! `setns` on the caller's own thread is the simpler fit for all three users.
//!
//! | module | job |
//! |---|---|
//! | [`socket`] | the socket ([`Netlink`]), the one request/ack/dump loop and message framing |
//! | [`error`] | [`NlError`]: the operation and the kernel's errno |
//! | [`mac`] | [`Mac`], printed and parsed as `aa:bb:cc:dd:ee:ff` |
//! | [`link`] | [`Link`] and link operations: bridge, veth, VXLAN, up/MTU/MAC, delete, stats, nsid |
//! | [`addr`] | address operations |
//! | [`route`] | route operations (the plugin's pod routes, the agent's main-table IPv4 routes) |
//! | [`neigh`] | neighbour (ARP) and bridge FDB entries of one device |
//! | [`events`] | link notifications (`RTNLGRP_LINK`) |
//! | [`tc`] | `clsact` qdiscs, where the eBPF load balancer's tc programs attach |

#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod addr;
pub mod error;
pub mod events;
pub mod link;
pub mod mac;
pub mod neigh;
pub mod route;
pub mod socket;
pub mod tc;

pub use addr::AddressOptions;
pub use error::NlError;
pub use events::{LinkEvent, LinkEventKind, LinkEvents, Received};
pub use link::{Link, LinkStats, VethEnd, Vxlan, VxlanSpec};
pub use mac::{Mac, ParseMacError};
pub use neigh::{Fdb, Neigh};
pub use route::{InstalledRoute, Route4, RouteSpec, MAIN_TABLE};
pub use socket::Netlink;
pub use tc::Qdisc;

/// An interface index (`ifindex`), as the kernel numbers links within one network namespace.
///
/// A plain alias: the callers store indexes in their own plans and tables, and a newtype would
/// change every one of them for no new check (an index is only meaningful in its namespace,
/// which a type cannot tell either).
pub type IfIndex = u32;
