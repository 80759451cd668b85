//! The highly available control plane of `ferry up --store etcd --servers N` (N > 1): where its
//! pieces live, their health probes, and `ferry apiserver-lb`, the TCP balancer in front of the
//! ferry-server replicas.
//!
//! ```text
//!   <name>-cp  eth0 10.99.0.2:6443       ferry apiserver-lb (also 127.0.0.1:<api-port> in the
//!                                        root namespace, an inherited listener)
//!              eth0 10.99.0.(2+k):6443   ferry-server replica k (k = 1..N), its own data dir,
//!                                        all of them given every etcd member
//!              lo   127.0.0.k:2379/2380  etcd member etcd-k (k = 1..3), client/peer URLs
//! ```
//!
//! The balancer works at TCP level (TLS goes end to end to a replica, whose serving certificate
//! names the balanced address, 127.0.0.1 and every replica's address): each new connection goes
//! to the next replica in turn, and to the one after it when the connection is refused or times
//! out, so a dead replica costs a client nothing but its open connections. Every client of the
//! cluster (kubectl through the root-namespace port, each node's kubelet and agent through
//! `https://10.99.0.2:6443`) goes through it.

use anyhow::{bail, Context, Result};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most ferry-server replicas `--servers` allows (their addresses follow the control plane's).
pub(crate) const MAX_SERVERS: u32 = 5;
/// etcd members when `--servers` > 1 (an odd count: one may fail and a majority remains).
pub(crate) const ETCD_MEMBERS: u32 = 3;
/// etcd's peer port (its client port is [`crate::topology::ETCD_PORT`]).
pub(crate) const ETCD_PEER_PORT: u16 = crate::topology::ETCD_PORT + 1;

/// Replica `k`'s (from 1) address on the control plane's underlay interface.
pub(crate) fn server_ip(k: u32) -> Ipv4Addr {
    let last = u8::try_from(2 + k.min(MAX_SERVERS)).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 99, 0, last)
}

/// etcd member `k`'s (from 1) address on the control plane's loopback.
pub(crate) fn etcd_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        0,
        0,
        u8::try_from(k.clamp(1, ETCD_MEMBERS)).unwrap_or(1),
    )
}

/// etcd member `k`'s client URL.
pub(crate) fn etcd_client_url(k: u32) -> String {
    format!("http://{}:{}", etcd_ip(k), crate::topology::ETCD_PORT)
}

/// etcd member `k`'s peer URL.
pub(crate) fn etcd_peer_url(k: u32) -> String {
    format!("http://{}:{ETCD_PEER_PORT}", etcd_ip(k))
}

/// The member index of a component named `etcd-<k>` or `apiserver-<k>` (`prefix` given).
pub(crate) fn member_index(component: &str, prefix: &str) -> Option<u32> {
    let k: u32 = component.strip_prefix(prefix)?.parse().ok()?;
    (k >= 1).then_some(k)
}

/// `GET /health` of the etcd member listening on `ip` inside namespace `netns`: Ok when it
/// answers `"health":"true"` (it then has a leader and can serve), otherwise why not.
pub(crate) fn etcd_health(netns: &Path, ip: Ipv4Addr) -> Result<()> {
    let body = crate::sys::in_netns(netns, || -> std::io::Result<String> {
        let addr = (ip, crate::topology::ETCD_PORT).into();
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(format!("GET /health HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.take(64 * 1024).read_to_string(&mut out)?;
        Ok(out)
    })?
    .with_context(|| format!("GET http://{ip}:{}/health", crate::topology::ETCD_PORT))?;
    let json = body.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("etcd's /health answered {:?}", json))?;
    if v["health"] == "true" {
        Ok(())
    } else {
        bail!(
            "unhealthy: {}",
            v["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .unwrap_or("no reason given")
        )
    }
}

/// `ferry apiserver-lb` flags (started by `ferry up --servers N` in the control-plane namespace).
#[derive(Debug, clap::Args)]
pub(crate) struct LbArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Also accept on this listening TCP socket, inherited from the parent process (fd >= 3).
    #[arg(long, value_name = "FD")]
    inherited_listener_fd: Option<i32>,
    /// A replica's address; repeat for each.
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
    /// Milliseconds a connection to a replica may take before the next one is tried.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    connect_timeout_ms: u64,
    /// Client connections relayed at once; more are closed at accept (each replica has its own
    /// `--max-connections` too).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
}

/// `ferry apiserver-lb`: accepts forever; fails only when it cannot listen.
pub(crate) fn run_lb(args: &LbArgs) -> Result<()> {
    // Take the inherited fd before anything else opens fds of ours.
    let inherited = args
        .inherited_listener_fd
        .map(|fd| {
            ferry_sys::listener::inherited_tcp_listener(fd)
                .map_err(|e| anyhow::anyhow!("--inherited-listener-fd {fd}: {e}"))
        })
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let mut listeners = vec![tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?];
        if let Some(l) = inherited {
            listeners.push(
                tokio::net::TcpListener::from_std(l).context("using the inherited listener")?,
            );
        }
        let lb = Arc::new(Balancer {
            backends: args.backends.clone(),
            next: AtomicUsize::new(0),
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        });
        eprintln!(
            "ferry apiserver-lb: {} -> {:?}",
            listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            args.backends
        );
        let slots = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        ));
        let mut accepting = tokio::task::JoinSet::new();
        for l in listeners {
            accepting.spawn(accept_loop(l, Arc::clone(&lb), Arc::clone(&slots)));
        }
        while accepting.join_next().await.is_some() {}
        Ok(())
    })
}

/// Accepts on `l` forever, relaying each connection through `lb` while it holds one of `slots`;
/// a connection beyond them is closed at once.
async fn accept_loop(
    l: tokio::net::TcpListener,
    lb: Arc<Balancer>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut refused: u64 = 0;
    loop {
        match l.accept().await {
            Ok((conn, peer)) => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Logged for the first and every 1000th.
                    if refused.is_multiple_of(1000) {
                        eprintln!("connection cap reached: closing {peer}");
                    }
                    refused += 1;
                    continue;
                };
                let lb = Arc::clone(&lb);
                tokio::spawn(async move {
                    lb.serve(conn).await;
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// TCP keepalive on a relayed connection: probes after 30 s idle, every 10 s, 3 of them.
fn keepalive(s: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
}

/// Round robin over the replicas, skipping those that refuse.
#[derive(Debug)]
struct Balancer {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    connect_timeout: Duration,
}

impl Balancer {
    /// The order in which a new connection tries the replicas: each one in turn, starting with
    /// the next.
    fn order(&self) -> Vec<SocketAddr> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        (0..n).map(|i| self.backends[(start + i) % n]).collect()
    }

    async fn serve(&self, mut client: tokio::net::TcpStream) {
        for b in self.order() {
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(b))
                .await
            {
                Ok(Ok(mut upstream)) => {
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    // A peer that vanished without a FIN or RST (its namespace deleted, a link
                    // down) is noticed in about a minute, and its slot freed.
                    keepalive(&client);
                    keepalive(&upstream);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
                Ok(Err(e)) => eprintln!("replica {b}: {e}; trying the next"),
                Err(_) => eprintln!(
                    "replica {b}: no connection within {:?}; trying the next",
                    self.connect_timeout
                ),
            }
        }
        eprintln!("no replica reachable: connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn addresses_stay_in_their_ranges() {
        assert_eq!(server_ip(1), Ipv4Addr::new(10, 99, 0, 3));
        assert_eq!(server_ip(MAX_SERVERS), Ipv4Addr::new(10, 99, 0, 7));
        // Below the first node's address (10.99.0.11).
        assert!(server_ip(MAX_SERVERS) < crate::topology::node_ip(1));
        assert_eq!(etcd_client_url(2), "http://127.0.0.2:2379");
        assert_eq!(etcd_peer_url(3), "http://127.0.0.3:2380");
        assert_eq!(member_index("etcd-2", "etcd-"), Some(2));
        assert_eq!(member_index("etcd", "etcd-"), None);
        assert_eq!(member_index("etcd-0", "etcd-"), None);
        assert_eq!(member_index("apiserver-lb", "apiserver-"), None);
    }

    /// An echo server answering with its own tag, on a free loopback port.
    async fn tagged(tag: u8) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while c.read_exact(&mut b).await.is_ok() {
                        if c.write_all(&[tag, b[0]]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn tag_of(lb: &Arc<Balancer>) -> u8 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let lb2 = Arc::clone(lb);
        tokio::spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            lb2.serve(c).await;
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(&[7]).await.unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(b[1], 7, "bytes relayed both ways");
        b[0]
    }

    #[tokio::test]
    async fn spreads_connections_and_skips_a_dead_replica() {
        let (a, b) = (tagged(1).await, tagged(2).await);
        // A port nobody listens on: bound, then closed.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let lb = Arc::new(Balancer {
            backends: vec![a, dead, b],
            next: AtomicUsize::new(0),
            connect_timeout: Duration::from_secs(1),
        });
        let mut tags = Vec::new();
        for _ in 0..6 {
            tags.push(tag_of(&lb).await);
        }
        // a, dead->b, b, a, dead->b, b.
        assert_eq!(tags, [1, 2, 2, 1, 2, 2]);
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_and_a_freed_slot_is_reused() {
        let backend = tagged(5).await;
        let lb = Arc::new(Balancer {
            backends: vec![backend],
            next: AtomicUsize::new(0),
            connect_timeout: Duration::from_secs(1),
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(accept_loop(l, lb, Arc::new(tokio::sync::Semaphore::new(1))));
        let echo = |mut c: tokio::net::TcpStream| async move {
            c.write_all(&[9]).await.ok()?;
            let mut b = [0u8; 2];
            c.read_exact(&mut b).await.ok()?;
            Some((c, b))
        };
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (first, b) = echo(first).await.expect("the first connection is relayed");
        assert_eq!(b, [5, 9]);
        // The second is over the cap: closed without an answer.
        let second = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(echo(second).await.is_none(), "relayed over the cap");
        // Once the first closes, its slot serves the next one.
        drop(first);
        let mut third = None;
        for _ in 0..50 {
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            if let Some(r) = echo(c).await {
                third = Some(r.1);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(third, Some([5, 9]), "the freed slot was not reused");
    }
}
