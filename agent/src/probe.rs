//! Tunnel probes: is every peer actually reachable through the overlay, and if not, why?
//!
//! A thread sends ICMP echo requests (raw socket, payload tagged `ferryprb`) to every tunnel
//! peer's overlay address (its podCIDR's network address, which its agent, or flannel, puts on
//! `ferry.1` / `flannel.1` / `ferry.udp` as a /32), on every change of the peer set and every
//! `--probe-seconds`. Three attempts over [`ROUND`]; peers that stay silent are then pinged on
//! their underlay address, which tells the two failures apart:
//!
//! | verdict | meaning |
//! |---|---|
//! | [`Verdict::Answers`] | the overlay works both ways |
//! | [`Verdict::TunnelSilent`] | the node is up but the tunnel is not: the UDP port blocked between the nodes, a peer agent that has not programmed us, or broken checksums |
//! | [`Verdict::Silent`] | neither answers: the node is down or unreachable |
//!
//! **Checksum fallback** (datapath pitfall 1, flannel#1279): the first time VXLAN peers stay
//! `TunnelSilent` for two rounds in a row while `ferry.1` has TX checksum offload on, the prober
//! probes them once more (the control), then turns the offload off (`SIOCETHTOOL`
//! `ETHTOOL_STXCSUM`, what `ethtool -K ferry.1 tx off` does) and probes again. If a peer now
//! answers, offload stays off (re-applied if the device is recreated) and the agent reports it;
//! if not, offload is turned back on: checksums were not the cause. The experiment runs once per
//! agent run; offload is never disabled blindly (it costs throughput).
//!
//! Echo requests are built and replies parsed with `pnet_packet` (`MutableEchoRequestPacket`,
//! `Ipv4Packet` + `EchoReplyPacket`, the ICMP checksum of `pnet_packet::icmp`).
//!
//! The socket calls and the `SIOCETHTOOL` ioctl go through [`ferry_sys::net`]; this module has
//! no raw syscalls of its own.
//!
//! Results are read by the reconcile loop (the `FerryPeersUnreachable` condition, see
//! [`crate::health`]), which is woken whenever a verdict changes.

use ferry_sys::net;
use pnet_packet::icmp::echo_reply::EchoReplyPacket;
use pnet_packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet_packet::icmp::{self, IcmpPacket, IcmpTypes};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::Packet as _;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long one probe of a set of addresses lasts at most (three attempts).
pub const ROUND: Duration = Duration::from_millis(1500);
/// Payload tag of our echo requests (replies without it are someone else's).
const TAG: &[u8; 8] = b"ferryprb";

/// One peer to probe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The peer node.
    pub node: String,
    /// Its overlay address (podCIDR network address, on its tunnel device).
    pub overlay: Ipv4Addr,
    /// Its underlay address (public IP).
    pub underlay: Ipv4Addr,
}

/// The outcome of probing one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered through the overlay.
    Answers,
    /// Silent through the overlay, but its underlay address answers.
    TunnelSilent,
    /// Neither answers.
    Silent,
}

impl Verdict {
    /// What it means, for a condition message; `port` is the tunnel's UDP port.
    pub fn describe(self, port: u16) -> String {
        match self {
            Verdict::Answers => "answers".to_owned(),
            Verdict::TunnelSilent => format!(
                "no answer through the tunnel but its underlay address answers (UDP {port} blocked between the nodes, or its agent has not programmed this node)"
            ),
            Verdict::Silent => {
                "neither the tunnel nor its underlay address answers (node down or unreachable)"
                    .to_owned()
            }
        }
    }
}

/// What the prober found so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Verdict per peer node, for the current targets that were probed at least once.
    pub verdicts: BTreeMap<String, Verdict>,
    /// TX checksum offload was turned off on the VXLAN device because the tunnel only worked
    /// without it.
    pub checksum_off: bool,
}

/// Handle on the prober thread.
#[derive(Debug)]
pub struct Prober {
    targets: mpsc::Sender<Vec<Target>>,
    last: Vec<Target>,
    report: Arc<Mutex<Report>>,
}

impl Prober {
    /// Opens the raw ICMP socket (in the calling thread's network namespace, so a failure is
    /// reported here) and starts the thread. `every` is the re-probe period; `vxlan_device` the
    /// device whose checksum offload may be turned off (`None`: never touch offloads).
    pub fn spawn(
        every: Duration,
        vxlan_device: Option<&'static str>,
        wake: Arc<Notify>,
    ) -> io::Result<Prober> {
        let socket = IcmpSocket::open()?;
        let (tx, rx) = mpsc::channel();
        let report = Arc::new(Mutex::new(Report::default()));
        let shared = report.clone();
        std::thread::Builder::new()
            .name("ferry-probe".into())
            .spawn(move || run(&socket, &rx, every, vxlan_device, &shared, &wake))?;
        Ok(Prober {
            targets: tx,
            last: Vec::new(),
            report,
        })
    }

    /// Hands the thread a new peer set (sorted); probed at once when it differs from the last.
    pub fn set_targets(&mut self, mut targets: Vec<Target>) {
        targets.sort();
        if targets != self.last {
            self.last = targets.clone();
            let _ = self.targets.send(targets);
        }
    }

    /// The peer set last handed over.
    pub fn targets(&self) -> &[Target] {
        &self.last
    }

    /// The latest results.
    pub fn report(&self) -> Report {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn run(
    socket: &IcmpSocket,
    rx: &mpsc::Receiver<Vec<Target>>,
    every: Duration,
    device: Option<&'static str>,
    report: &Mutex<Report>,
    wake: &Notify,
) {
    let mut targets: Vec<Target> = Vec::new();
    let mut checksum_off = false;
    let mut fallback_tried = false;
    let mut silent_rounds: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        match rx.recv_timeout(every) {
            Ok(t) => targets = t,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        // Only the newest set matters.
        while let Ok(t) = rx.try_recv() {
            targets = t;
        }
        if let Some(dev) = device.filter(|_| checksum_off) {
            // Re-apply after the device was recreated (new devices start with offload on).
            if tx_checksum(dev) == Some(true) {
                let _ = set_tx_checksum(dev, false);
            }
        }
        let mut verdicts = probe_all(socket, &targets);
        // Peers silent through the tunnel in consecutive rounds (a peer that just joined may not
        // have programmed us yet: one round proves nothing).
        silent_rounds.retain(|node, _| verdicts.get(node) == Some(&Verdict::TunnelSilent));
        for (node, v) in &verdicts {
            if *v == Verdict::TunnelSilent {
                *silent_rounds.entry(node.clone()).or_insert(0) += 1;
            }
        }
        let persistent: Vec<&Target> = targets
            .iter()
            .filter(|t| silent_rounds.get(&t.node).is_some_and(|n| *n >= 2))
            .collect();
        if let Some(dev) = device.filter(|_| !persistent.is_empty() && !fallback_tried) {
            if tx_checksum(dev) == Some(true) {
                fallback_tried = true;
                let answered = checksum_fallback(socket, dev, &persistent);
                if !answered.is_empty() {
                    checksum_off = true;
                    for t in &persistent {
                        if answered.contains(&t.overlay) {
                            verdicts.insert(t.node.clone(), Verdict::Answers);
                        }
                    }
                }
            }
        }
        let new = Report {
            verdicts,
            checksum_off,
        };
        let changed = match report.lock() {
            Ok(mut r) => {
                let changed = *r != new;
                *r = new;
                changed
            }
            Err(_) => return,
        };
        if changed {
            wake.notify_one();
        }
    }
}

/// The checksum experiment on `dev` for peers persistently silent through the tunnel: probe
/// once more with offload on (the control), then with it off. Returns the overlay addresses
/// that answered only with offload off (offload then stays off); when none did, offload is
/// turned back on.
fn checksum_fallback(socket: &IcmpSocket, dev: &str, silent: &[&Target]) -> BTreeSet<Ipv4Addr> {
    let addrs: Vec<Ipv4Addr> = silent.iter().map(|t| t.overlay).collect();
    let control = socket.probe(&addrs);
    let still: Vec<Ipv4Addr> = addrs.into_iter().filter(|a| !control.contains(a)).collect();
    if still.is_empty() {
        return BTreeSet::new();
    }
    if let Err(e) = set_tx_checksum(dev, false) {
        tracing::warn!(device = dev, error = %e, "cannot turn TX checksum offload off to test it");
        return BTreeSet::new();
    }
    let answered = socket.probe(&still);
    if answered.is_empty() {
        if let Err(e) = set_tx_checksum(dev, true) {
            tracing::error!(device = dev, error = %e, "cannot turn TX checksum offload back on");
        }
        tracing::info!(
            device = dev,
            peers = still.len(),
            "tunnel probe failed with TX checksum offload on and off: checksums are not the cause (offload left on)"
        );
    } else {
        tracing::warn!(
            device = dev,
            peers = answered.len(),
            "tunnel probe failed with TX checksum offload on and passed with it off: offload disabled (kernel VXLAN checksum bug, flannel#1279)"
        );
    }
    answered
}

/// Probes every target through the overlay, then the silent ones on their underlay address.
fn probe_all(socket: &IcmpSocket, targets: &[Target]) -> BTreeMap<String, Verdict> {
    if targets.is_empty() {
        return BTreeMap::new();
    }
    let overlay: Vec<Ipv4Addr> = targets.iter().map(|t| t.overlay).collect();
    let answered = socket.probe(&overlay);
    let silent: Vec<Ipv4Addr> = targets
        .iter()
        .filter(|t| !answered.contains(&t.overlay))
        .map(|t| t.underlay)
        .collect();
    let underlay = socket.probe(&silent);
    targets
        .iter()
        .map(|t| {
            let v = if answered.contains(&t.overlay) {
                Verdict::Answers
            } else if underlay.contains(&t.underlay) {
                Verdict::TunnelSilent
            } else {
                Verdict::Silent
            };
            (t.node.clone(), v)
        })
        .collect()
}

/// A raw `IPPROTO_ICMP` socket that only receives echo replies.
#[derive(Debug)]
struct IcmpSocket {
    fd: OwnedFd,
    id: u16,
    seq: std::cell::Cell<u16>,
}

impl IcmpSocket {
    fn open() -> io::Result<IcmpSocket> {
        let fd = net::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)?;
        let filter: u32 = !(1 << 0); // everything but ICMP_ECHOREPLY (type 0)
        net::set_icmp_filter(fd.as_fd(), filter)?;
        net::set_recv_timeout(fd.as_fd(), Duration::from_millis(50))?;
        Ok(IcmpSocket {
            fd,
            id: (std::process::id() & 0xffff) as u16,
            seq: std::cell::Cell::new(0),
        })
    }

    /// Which of `addrs` answer an echo request within [`ROUND`] (three attempts).
    fn probe(&self, addrs: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
        let mut answered = BTreeSet::new();
        if addrs.is_empty() {
            return answered;
        }
        let start = Instant::now();
        let mut attempts = 0;
        let mut buf = [0u8; 1500];
        while start.elapsed() < ROUND && answered.len() < addrs.len() {
            let due = ROUND * attempts / 3;
            if attempts < 3 && start.elapsed() >= due {
                attempts += 1;
                let seq = self.seq.get().wrapping_add(1);
                self.seq.set(seq);
                for a in addrs.iter().filter(|a| !answered.contains(*a)) {
                    let _ = self.send(*a, seq);
                }
            }
            let n = match net::recv(self.fd.as_fd(), &mut buf, 0) {
                Ok(n) if n > 0 => n,
                _ => continue,
            };
            if let Some(src) = parse_reply(&buf[..n], self.id) {
                if addrs.contains(&src) {
                    answered.insert(src);
                }
            }
        }
        answered
    }

    fn send(&self, dst: Ipv4Addr, seq: u16) -> io::Result<()> {
        let packet = echo_request(self.id, seq);
        net::send_to_v4(self.fd.as_fd(), &packet, libc::MSG_DONTWAIT, dst, 0).map(drop)
    }
}

/// An ICMP echo request with identifier `id`, sequence `seq` and our tag as payload; the
/// checksum is `pnet_packet::icmp::checksum` (RFC 1071 over the whole message).
pub fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    let mut req = MutableEchoRequestPacket::new(&mut p).expect("16 bytes hold an echo request");
    req.set_icmp_type(IcmpTypes::EchoRequest);
    req.set_identifier(id);
    req.set_sequence_number(seq);
    req.set_payload(TAG);
    let c = icmp::checksum(&IcmpPacket::new(req.packet()).expect("16 bytes hold an ICMP header"));
    req.set_checksum(c);
    p
}

/// The source of `packet` (IPv4 header + ICMP, as a raw socket delivers it) if it is an echo
/// reply to us (`id`, our tag).
pub fn parse_reply(packet: &[u8], id: u16) -> Option<Ipv4Addr> {
    let ip = Ipv4Packet::new(packet)?;
    if ip.get_version() != 4 || ip.get_header_length() < 5 {
        return None;
    }
    // The ICMP message is everything after the header (IHL), whatever the total length says.
    let reply = EchoReplyPacket::new(packet.get(usize::from(ip.get_header_length()) * 4..)?)?;
    let ok = reply.get_icmp_type() == IcmpTypes::EchoReply
        && reply.get_identifier() == id
        && reply.payload().get(..TAG.len()) == Some(TAG.as_slice());
    ok.then(|| ip.get_source())
}

/// Whether TX checksum offload is on for `dev` (`None`: cannot tell).
pub fn tx_checksum(dev: &str) -> Option<bool> {
    net::tx_checksum(dev).ok()
}

/// Turns TX checksum offload of `dev` on or off (`ethtool -K dev tx on|off`).
pub fn set_tx_checksum(dev: &str, on: bool) -> io::Result<()> {
    net::set_tx_checksum(dev, on)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pnet_packet::util::checksum` without a skipped word: the plain RFC 1071 checksum (the
    /// function `pnet_packet::icmp::checksum` runs, skipping the checksum field).
    fn checksum(data: &[u8]) -> u16 {
        pnet_packet::util::checksum(data, usize::MAX)
    }

    #[test]
    fn echo_request_checksums_to_zero_and_replies_parse() {
        let req = echo_request(0x1234, 7);
        assert_eq!(req[0], 8);
        assert_eq!(req[4..8], [0x12, 0x34, 0, 7], "identifier, sequence");
        assert_eq!(&req[8..], TAG);
        assert_eq!(checksum(&req), 0, "a packet with its checksum sums to zero");
        // A reply as the kernel delivers it on a raw socket: IPv4 header + ICMP.
        let mut reply = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 244, 1, 0, 10, 244, 0, 0,
        ];
        let mut icmp = req;
        icmp[0] = 0;
        reply.extend_from_slice(&icmp);
        assert_eq!(
            parse_reply(&reply, 0x1234),
            Some(Ipv4Addr::new(10, 244, 1, 0))
        );
        assert_eq!(parse_reply(&reply, 0x9999), None, "someone else's id");
        let mut foreign = reply.clone();
        foreign[20 + 8] = b'x';
        assert_eq!(parse_reply(&foreign, 0x1234), None, "not our tag");
        let mut request = reply.clone();
        request[20] = 8;
        assert_eq!(parse_reply(&request, 0x1234), None, "not a reply");
        assert_eq!(parse_reply(&reply[..30], 0x1234), None, "truncated");
        assert_eq!(parse_reply(&[], 0x1234), None);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (checksum 220d).
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(checksum(&[0xff]), !0xff00);
        // What echo_request uses: the same sum with the checksum field (bytes 2..4) left out.
        let example = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(
            icmp::checksum(&IcmpPacket::new(&example).unwrap()),
            checksum(&[0x00, 0x01, 0, 0, 0xf4, 0xf5, 0xf6, 0xf7])
        );
    }

    #[test]
    fn verdicts_explain_themselves() {
        assert!(Verdict::TunnelSilent
            .describe(8472)
            .contains("UDP 8472 blocked"));
        assert!(Verdict::Silent.describe(8472).contains("node down"));
    }
}
