//! Packet tests of the `nodeport` tc programs with `BPF_PROG_TEST_RUN` (Cilium's PKTGEN ->
//! SETUP -> CHECK style): hand-built Ethernet/IPv4/TCP|UDP packets go through the loaded
//! programs; the tests assert the verdict, the rewritten headers, valid checksums (recomputed
//! from scratch here), the conntrack map and the counters.
//!
//! Each test owns a fresh network namespace (the FIB the programs consult: a veth "underlay"
//! `u0` 10.99.0.10/24 with the client 10.99.0.254 on it, a veth "bridge" `d0` 10.244.1.1/24
//! with the backends) and a private bpffs mount for the pins, removed on drop. The programs run
//! on a thread inside the namespace; nothing is attached to any interface.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::Command;

use ferry_agent::bpf::{NodePortTc, NpMaps};
use ferry_agent::service::maglev;
use ferry_agent::service::nodeport::{NodePortConfig, NodePortDatapath};
use ferry_agent::service::{
    Backend, Entry, Frontend, FrontendKind, Proto, ServicePortName, ServiceTable,
};
use ferry_common::nat::{
    flow_hash, names, CtEntry, CtKey, NpStat, CT_F_REPLY, CT_F_SNAT, NP4_CT_MAX_ENTRIES,
};
use ferry_tests::{privileged, unique, Netns};

const NODE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 254);
const B1: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const B2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);
const SIZE: u32 = 251;
const SEED: u64 = 0x5eed;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const NEXT: u32 = u32::MAX;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The namespace, the private bpffs and the loaded programs of one test.
struct World {
    netns: Netns,
    bpffs: PathBuf,
    tc: Option<NodePortTc>,
    dp: Option<NodePortDatapath>,
}

impl World {
    fn new(tag: &str) -> World {
        World::with_nat_ports(tag, 61_000..=65_535)
    }

    fn with_nat_ports(tag: &str, nat_ports: std::ops::RangeInclusive<u16>) -> World {
        let bpffs = std::env::temp_dir().join(format!("ferry-npfs-{}", unique(tag)));
        std::fs::create_dir_all(&bpffs).expect("bpffs mount point");
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a private bpffs");
        let netns = Netns::new(tag);
        netns.sh("sysctl -qw net.ipv4.conf.all.forwarding=1 && \
             ip link add u0 type veth peer name u1 && ip addr add 10.99.0.10/24 dev u0 && \
             ip link set u1 up && ip link set u0 up && \
             ip link add d0 type veth peer name d1 && ip addr add 10.244.1.1/24 dev d0 && \
             ip link set d1 up && ip link set d0 up");
        let mut w = World {
            netns,
            bpffs,
            tc: None,
            dp: None,
        };
        let (tc, maps) = NodePortTc::load(&w.pin_dir()).expect("loading nodeport");
        let dp = NodePortDatapath::new(
            maps,
            NodePortConfig {
                node_addr: NODE,
                nat_ports,
                maglev_size: SIZE,
                seed: SEED,
            },
        )
        .expect("datapath");
        w.tc = Some(tc);
        w.dp = Some(dp);
        w
    }

    fn pin_dir(&self) -> PathBuf {
        self.bpffs.join("node")
    }

    fn dp(&mut self) -> &mut NodePortDatapath {
        self.dp.as_mut().expect("datapath")
    }

    /// Runs `program` once on `packet` inside the namespace.
    fn run(&self, program: &'static str, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd: BorrowedFd<'_> = self
            .tc
            .as_ref()
            .expect("programs")
            .program_fd(program)
            .expect("fd");
        let r = self
            .netns
            .run(|| ferry_sys::bpf::prog_test_run(fd, packet, 2048))
            .expect("BPF_PROG_TEST_RUN");
        (r.retval, r.data_out)
    }

    /// Runs the XDP program once on `packet`, as arriving on `u0` inside the namespace.
    fn run_xdp(&mut self, packet: &[u8]) -> (u32, Vec<u8>) {
        let fd: BorrowedFd<'_> = self
            .tc
            .as_mut()
            .expect("programs")
            .xdp_program_fd()
            .expect("fd");
        let r = self
            .netns
            .run(|| {
                let ifindex = ferry_sys::net::if_index("u0")?;
                ferry_sys::bpf::prog_test_run_xdp(fd, packet, 2048, ifindex)
            })
            .expect("BPF_PROG_TEST_RUN (xdp)");
        (r.retval, r.data_out)
    }

    fn stat(&self, stat: NpStat) -> u64 {
        let maps: &NpMaps = self.dp.as_ref().expect("dp").maps();
        maps.stats()
            .expect("stats")
            .into_iter()
            .find(|(s, _)| *s == stat)
            .map_or(0, |(_, n)| n)
    }

    fn conntrack(&self) -> BTreeMap<CtKey, CtEntry> {
        self.dp
            .as_ref()
            .expect("dp")
            .maps()
            .dump_conntrack()
            .expect("dump")
            .into_iter()
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.dp = None;
        self.tc = None;
        let _ = ferry_agent::bpf::unpin_nodeport(&self.pin_dir());
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir(&self.bpffs);
    }
}

fn be(addr: Ipv4Addr) -> Backend {
    Backend { addr, port: 8080 }
}

fn entry(name: &str, kind: FrontendKind, backends: &[Backend], local: bool) -> Entry {
    Entry {
        service: ServicePortName {
            namespace: "default".into(),
            name: name.into(),
            port: String::new(),
        },
        kind,
        backends: backends.to_vec(),
        local_backends: backends.iter().filter(|b| b.addr == B1).copied().collect(),
        external_local: local,
        affinity_timeout: None,
    }
}

fn fe(port: u16, proto: Proto) -> Frontend {
    Frontend {
        addr: NODE,
        port,
        proto,
    }
}

/// NodePort 30080/TCP and 30053/UDP (Cluster), 30081/TCP (Local), 30099/TCP (no endpoints),
/// and a ClusterIP that must never be reachable from outside.
fn table() -> ServiceTable {
    let both = [be(B1), be(B2)];
    let mut t = ServiceTable::default();
    t.entries.insert(
        fe(30080, Proto::Tcp),
        entry("web", FrontendKind::NodePort, &both, false),
    );
    t.entries.insert(
        fe(30053, Proto::Udp),
        entry("dns", FrontendKind::NodePort, &both, false),
    );
    t.entries.insert(
        fe(30081, Proto::Tcp),
        entry("local", FrontendKind::NodePort, &both, true),
    );
    t.entries.insert(
        fe(30099, Proto::Tcp),
        entry("empty", FrontendKind::NodePort, &[], false),
    );
    t.entries.insert(
        Frontend {
            addr: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: Proto::Tcp,
        },
        entry("web", FrontendKind::ClusterIp, &both, false),
    );
    t
}

// ---- PKTGEN ----

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !u16::try_from(acc).expect("folded")
}

/// Ones-complement checksum of the IPv4 header (0 when valid, as computed over the stored one).
fn ip_sum(pkt: &[u8]) -> u16 {
    let ihl = usize::from(pkt[14] & 0x0f) * 4;
    fold(sum16(&pkt[14..14 + ihl], 0))
}

/// Ones-complement sum of the L4 segment with its pseudo-header (0 when valid).
fn l4_sum(pkt: &[u8]) -> u16 {
    let ihl = usize::from(pkt[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([pkt[16], pkt[17]]));
    let seg = &pkt[14 + ihl..14 + total];
    let mut acc = sum16(&pkt[26..34], 0);
    acc += u32::from(pkt[23]);
    acc += u32::try_from(seg.len()).expect("len");
    fold(sum16(seg, acc))
}

/// Ethernet + IPv4 (no options) + TCP (20 bytes) or UDP, with valid checksums and a payload.
fn packet(
    proto: Proto,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    tcp_flags: u8,
    udp_zero_csum: bool,
) -> Vec<u8> {
    let payload = b"ferry-nodeport";
    let l4_len = match proto {
        Proto::Tcp => 20,
        Proto::Udp => 8,
    } + payload.len();
    let total = 20 + l4_len;
    let mut p = vec![0u8; 14 + total];
    p[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    p[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p[14] = 0x45;
    p[16..18].copy_from_slice(&u16::try_from(total).expect("len").to_be_bytes());
    p[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
    p[20..22].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
    p[22] = 64;
    p[23] = proto.number();
    p[26..30].copy_from_slice(&src.ip().octets());
    p[30..34].copy_from_slice(&dst.ip().octets());
    let l4 = 34;
    p[l4..l4 + 2].copy_from_slice(&src.port().to_be_bytes());
    p[l4 + 2..l4 + 4].copy_from_slice(&dst.port().to_be_bytes());
    let csum_off = match proto {
        Proto::Tcp => {
            p[l4 + 4..l4 + 8].copy_from_slice(&1000u32.to_be_bytes());
            p[l4 + 12] = 5 << 4;
            p[l4 + 13] = tcp_flags;
            p[l4 + 14..l4 + 16].copy_from_slice(&64240u16.to_be_bytes());
            p[l4 + 20..].copy_from_slice(payload);
            l4 + 16
        }
        Proto::Udp => {
            p[l4 + 4..l4 + 6].copy_from_slice(&u16::try_from(l4_len).expect("len").to_be_bytes());
            p[l4 + 8..].copy_from_slice(payload);
            l4 + 6
        }
    };
    let ipc = ip_sum(&p);
    p[24..26].copy_from_slice(&ipc.to_be_bytes());
    if !udp_zero_csum {
        let c = l4_sum(&p);
        p[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    }
    assert_eq!(ip_sum(&p), 0);
    p
}

fn src_of(p: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(p[26], p[27], p[28], p[29]),
        u16::from_be_bytes([p[34], p[35]]),
    )
}

fn dst_of(p: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(p[30], p[31], p[32], p[33]),
        u16::from_be_bytes([p[36], p[37]]),
    )
}

/// `p` with its L4 checksum field holding only the pseudo-header sum, as a sender with
/// checksum offload leaves it (`CHECKSUM_PARTIAL`).
fn partial_checksum(mut p: Vec<u8>, csum_off: usize) -> Vec<u8> {
    let total = usize::from(u16::from_be_bytes([p[16], p[17]]));
    let mut acc = sum16(&p[26..34], 0);
    acc += u32::from(p[23]);
    acc += u32::try_from(total - 20).expect("len");
    let pseudo = !fold(acc);
    p[csum_off..csum_off + 2].copy_from_slice(&pseudo.to_be_bytes());
    p
}

fn mac_of(p: &[u8]) -> ([u8; 6], [u8; 6]) {
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&p[0..6]);
    src.copy_from_slice(&p[6..12]);
    (dst, src)
}

fn assert_checksums_valid(p: &[u8]) {
    assert_eq!(ip_sum(p), 0, "IPv4 header checksum");
    assert_eq!(l4_sum(p), 0, "L4 checksum");
}

/// The backend Maglev must pick for a flow, computed independently of the maps.
fn maglev_pick(
    backends: &[Backend],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    proto: Proto,
) -> Backend {
    let t = maglev::table(backends, SIZE, SEED).expect("maglev");
    let k = CtKey::new(src, dst, proto.number());
    let h = flow_hash(k.saddr, k.daddr, k.sport, k.dport, k.proto, SEED);
    let i = usize::try_from(h % u64::from(SIZE)).expect("index");
    backends[t[i] as usize]
}

// ---- SETUP -> CHECK ----

#[test]
fn tcp_cluster_policy_dnat_snat_and_reverse_nat() {
    if !privileged("nodeport_packets::tcp_cluster_policy_dnat_snat_and_reverse_nat") {
        return;
    }
    let mut w = World::new("npt");
    let stats = w.dp().sync(&table()).expect("sync");
    assert_eq!(stats.failed, 0);
    let client = SocketAddrV4::new(CLIENT, 40_000);
    let front = SocketAddrV4::new(NODE, 30080);
    let want = maglev_pick(&[be(B1), be(B2)], client, front, Proto::Tcp);

    // PKTGEN: the client's SYN to the NodePort.
    let syn = packet(Proto::Tcp, client, front, SYN, false);
    let (verdict, out) = w.run(names::EXTERNAL, &syn);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "redirected to the backend's device"
    );
    assert_eq!(*dst_of(&out).ip(), want.addr);
    assert_eq!(dst_of(&out).port(), 8080);
    let nat = src_of(&out);
    assert_eq!(*nat.ip(), NODE, "ETP Cluster: SNAT to the node");
    assert!((61_000..=65_535).contains(&nat.port()), "{nat}");
    assert_checksums_valid(&out);
    assert_eq!(&out[54..], b"ferry-nodeport", "payload untouched");

    // Conntrack: exactly the pair of this flow.
    let ct = w.conntrack();
    assert_eq!(ct.len(), 2, "{ct:?}");
    let orig = ct[&CtKey::new(client, front, 6)];
    assert_eq!(
        (orig.src(), orig.dst(), orig.flags),
        (nat, SocketAddrV4::new(want.addr, 8080), CT_F_SNAT)
    );
    let reply_key = CtKey::new(SocketAddrV4::new(want.addr, 8080), nat, 6);
    let reply = ct[&reply_key];
    assert_eq!((reply.src(), reply.dst()), (front, client));
    assert_eq!(reply.flags, CT_F_SNAT | CT_F_REPLY);
    assert_eq!(w.stat(NpStat::NewFlows), 1);

    // The next client packet of the flow takes the same translation (conntrack, not Maglev).
    let ack = packet(Proto::Tcp, client, front, ACK, false);
    let (verdict, out2) = w.run(names::EXTERNAL, &ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        (src_of(&out2), dst_of(&out2)),
        (nat, SocketAddrV4::new(want.addr, 8080))
    );
    assert_eq!(w.stat(NpStat::CtOriginal), 1);
    assert_eq!(w.stat(NpStat::NewFlows), 1);

    // The backend's SYN-ACK, on the bridge (local backend) and on the underlay (host-gw).
    let synack = packet(
        Proto::Tcp,
        SocketAddrV4::new(want.addr, 8080),
        nat,
        SYN | ACK,
        false,
    );
    for program in [names::REPLY, names::EXTERNAL] {
        let (verdict, back) = w.run(program, &synack);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "{program}: sent toward the client"
        );
        assert_eq!((src_of(&back), dst_of(&back)), (front, client), "{program}");
        assert_checksums_valid(&back);
    }
    assert_eq!(w.stat(NpStat::CtReply), 2);

    // The egress program leaves SNATed replies alone (they were handled at ingress).
    let (verdict, same) = w.run(names::EGRESS, &synack);
    assert_eq!((verdict, same), (NEXT, synack));

    // A ClusterIP is never a frontend from outside.
    let cip = packet(
        Proto::Tcp,
        client,
        SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80),
        SYN,
        false,
    );
    let (verdict, out) = w.run(names::EXTERNAL, &cip);
    assert_eq!((verdict, out), (NEXT, cip));
}

#[test]
fn udp_checksums_zero_and_non_zero_and_flow_stickiness() {
    if !privileged("nodeport_packets::udp_checksums_zero_and_non_zero_and_flow_stickiness") {
        return;
    }
    let mut w = World::new("npu");
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30053);
    for (i, zero) in [(0u16, false), (1, true)] {
        let client = SocketAddrV4::new(CLIENT, 50_000 + i);
        let want = maglev_pick(&[be(B1), be(B2)], client, front, Proto::Udp);
        let q = packet(Proto::Udp, client, front, 0, zero);
        let (verdict, out) = w.run(names::EXTERNAL, &q);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(dst_of(&out), SocketAddrV4::new(want.addr, 8080));
        assert_eq!(*src_of(&out).ip(), NODE);
        assert_eq!(ip_sum(&out), 0);
        if zero {
            assert_eq!(&out[40..42], &[0, 0], "a zero UDP checksum stays zero");
        } else {
            assert_eq!(l4_sum(&out), 0);
        }
        // Same flow again: same NAT port and backend.
        let (_, again) = w.run(names::EXTERNAL, &q);
        assert_eq!(
            (src_of(&again), dst_of(&again)),
            (src_of(&out), dst_of(&out))
        );
        // The reply makes the flow a stream and is reverse-NATed.
        let r = packet(Proto::Udp, dst_of(&out), src_of(&out), 0, zero);
        let (verdict, back) = w.run(names::REPLY, &r);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!((src_of(&back), dst_of(&back)), (front, client));
        let orig = w.conntrack()[&CtKey::new(client, front, 17)];
        assert_ne!(orig.flags & ferry_common::nat::CT_F_REPLIED, 0);
    }
    assert_eq!(w.stat(NpStat::NewFlows), 2);
}

#[test]
fn local_policy_preserves_the_source_and_reverse_nats_on_egress() {
    if !privileged("nodeport_packets::local_policy_preserves_the_source_and_reverse_nats_on_egress")
    {
        return;
    }
    let mut w = World::new("npl");
    w.dp().sync(&table()).expect("sync");
    let client = SocketAddrV4::new(CLIENT, 41_000);
    let front = SocketAddrV4::new(NODE, 30081);
    let syn = packet(Proto::Tcp, client, front, SYN, false);
    let (verdict, out) = w.run(names::EXTERNAL, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(src_of(&out), client, "ETP Local: client source preserved");
    assert_eq!(
        dst_of(&out),
        SocketAddrV4::new(B1, 8080),
        "only the local endpoint"
    );
    assert_checksums_valid(&out);
    let reply_key = CtKey::new(SocketAddrV4::new(B1, 8080), client, 6);
    assert_eq!(w.conntrack()[&reply_key].flags, CT_F_REPLY);
    // The pod's reply is routed normally toward the client; underlay egress restores the source.
    let synack = packet(
        Proto::Tcp,
        SocketAddrV4::new(B1, 8080),
        client,
        SYN | ACK,
        false,
    );
    let (verdict, back) = w.run(names::EGRESS, &synack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!((src_of(&back), dst_of(&back)), (front, client));
    assert_checksums_valid(&back);

    // Without a local endpoint: dropped (kube-proxy drops too), counted.
    let mut t = table();
    if let Some(e) = t.entries.get_mut(&fe(30081, Proto::Tcp)) {
        e.local_backends.clear();
    }
    w.dp().sync(&t).expect("sync");
    let other = packet(
        Proto::Tcp,
        SocketAddrV4::new(CLIENT, 41_001),
        front,
        SYN,
        false,
    );
    let (verdict, _) = w.run(names::EXTERNAL, &other);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(w.stat(NpStat::DropNoBackend), 1);
    // The established flow is still translated (conntrack).
    let (verdict, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client, front, ACK, false),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // The client reuses its port for a direct connection to the pod: the pod sees the same
    // 4-tuple, so the old flow's entries go (else the direct replies would be rewritten).
    let direct = packet(Proto::Tcp, client, SocketAddrV4::new(B1, 8080), SYN, false);
    assert_eq!(w.run(names::EXTERNAL, &direct), (NEXT, direct.clone()));
    assert!(w.conntrack().is_empty(), "{:?}", w.conntrack());
    assert_eq!(w.stat(NpStat::Superseded), 1);
    let (verdict, untouched) = w.run(names::EGRESS, &synack);
    assert_eq!((verdict, untouched), (NEXT, synack));
}

#[test]
fn malformed_fragments_and_strangers_pass_untouched() {
    if !privileged("nodeport_packets::malformed_fragments_and_strangers_pass_untouched") {
        return;
    }
    let mut w = World::new("npm");
    w.dp().sync(&table()).expect("sync");
    let client = SocketAddrV4::new(CLIENT, 42_000);
    let front = SocketAddrV4::new(NODE, 30080);
    let good = packet(Proto::Tcp, client, front, SYN, false);

    // Truncated: the TCP header is cut after 10 bytes (the IP header still claims it all).
    let truncated = good[..44].to_vec();
    assert_eq!(
        w.run(names::EXTERNAL, &truncated),
        (NEXT, truncated.clone())
    );
    // A fragment (MF set) and a later fragment (offset 8): never translated.
    for frag in [0x2000u16, 0x0001] {
        let mut f = good.clone();
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        assert_eq!(w.run(names::EXTERNAL, &f), (NEXT, f.clone()));
    }
    // IHL below 5.
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(w.run(names::EXTERNAL, &bad_ihl), (NEXT, bad_ihl.clone()));
    // Not IPv4 (ARP ethertype), and a port that is no frontend.
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(w.run(names::EXTERNAL, &arp), (NEXT, arp.clone()));
    let stranger = packet(Proto::Tcp, client, SocketAddrV4::new(NODE, 22), SYN, false);
    assert_eq!(w.run(names::EXTERNAL, &stranger), (NEXT, stranger.clone()));
    // No endpoints: dropped at once.
    let empty = packet(
        Proto::Tcp,
        client,
        SocketAddrV4::new(NODE, 30099),
        SYN,
        false,
    );
    assert_eq!(w.run(names::EXTERNAL, &empty).0, TC_ACT_SHOT);

    assert_eq!(w.stat(NpStat::PassMalformed), 2);
    assert_eq!(w.stat(NpStat::PassFragment), 2);
    assert_eq!(w.stat(NpStat::DropNoBackend), 1);
    assert!(w.conntrack().is_empty(), "nothing tracked");
}

#[test]
fn full_conntrack_drops_new_flows_only_and_gc_frees_expired_pairs() {
    if !privileged(
        "nodeport_packets::full_conntrack_drops_new_flows_only_and_gc_frees_expired_pairs",
    ) {
        return;
    }
    let mut w = World::new("npf");
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let live = SocketAddrV4::new(CLIENT, 43_000);
    let (verdict, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, live, front, SYN, false),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // Fill the table with expired filler pairs (expires_ns 0).
    let filler = |i: u32| {
        let a = Ipv4Addr::from(0x0a00_0000 + i);
        let k = CtKey::new(SocketAddrV4::new(a, 1), SocketAddrV4::new(a, 2), 6);
        let v = CtEntry {
            saddr: k.daddr,
            daddr: k.saddr,
            sport: k.dport,
            dport: k.sport,
            flags: 0,
            pad: [0; 3],
            expires_ns: 0,
        };
        (k, v)
    };
    let mut inserted = 0;
    for i in 0..NP4_CT_MAX_ENTRIES {
        let (k, v) = filler(i);
        if w.dp().maps_mut().insert_conntrack(k, v).is_err() {
            break;
        }
        inserted += 1;
    }
    assert_eq!(
        inserted,
        NP4_CT_MAX_ENTRIES - 2,
        "the table holds max_entries"
    );
    let newcomer = SocketAddrV4::new(CLIENT, 43_001);
    let (verdict, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, newcomer, front, SYN, false),
    );
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "a new flow is dropped when the table is full"
    );
    assert_eq!(w.stat(NpStat::DropCtFull), 1);
    let (verdict, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, live, front, ACK, false),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT, "the live flow is not evicted");

    // GC: every filler is expired and has no live partner; the live pair stays.
    let (removed, left) = w.dp().gc(ferry_sys::clock::monotonic_ns()).expect("gc");
    assert_eq!((removed, left), (inserted as usize, 2));
    let (verdict, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, newcomer, front, SYN, false),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT, "room again after GC");
}

#[test]
fn restart_adopts_rows_and_a_backend_change_keeps_most_flows() {
    if !privileged("nodeport_packets::restart_adopts_rows_and_a_backend_change_keeps_most_flows") {
        return;
    }
    let mut w = World::new("npr");
    let t = table();
    w.dp().sync(&t).expect("sync");
    let f = fe(30080, Proto::Tcp);
    let before = w.dp().frontend(&f).expect("programmed");
    // A new programmer on the same pinned maps (an agent restart) adopts: nothing changes.
    w.dp = None;
    let maps = NpMaps::open_pinned(&w.pin_dir()).expect("open pins");
    let mut dp = NodePortDatapath::new(
        maps,
        NodePortConfig {
            node_addr: NODE,
            nat_ports: 61_000..=65_535,
            maglev_size: SIZE,
            seed: SEED,
        },
    )
    .expect("datapath");
    let s = dp.sync(&t).expect("sync");
    assert_eq!((s.changed, s.removed, s.failed), (0, 0, 0), "{s:?}");
    assert_eq!(dp.frontend(&f), Some(before));
    w.dp = Some(dp);

    // Adding a third backend moves about a third of new-flow choices, few between the two old
    // ones (Maglev), and the datapath picks what the independent computation says.
    let b3 = be(Ipv4Addr::new(10, 244, 1, 7));
    let mut t3 = table();
    if let Some(e) = t3.entries.get_mut(&f) {
        e.backends.push(b3);
    }
    w.dp().sync(&t3).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let (mut moved, mut shuffled) = (0, 0);
    for port in 0..300u16 {
        let c = SocketAddrV4::new(CLIENT, 20_000 + port);
        let old = maglev_pick(&[be(B1), be(B2)], c, front, Proto::Tcp);
        let new = maglev_pick(&[be(B1), be(B2), b3], c, front, Proto::Tcp);
        let (verdict, out) = w.run(names::EXTERNAL, &packet(Proto::Tcp, c, front, SYN, false));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(*dst_of(&out).ip(), new.addr, "datapath == Maglev for {c}");
        if old != new {
            if new == b3 {
                moved += 1;
            } else {
                shuffled += 1;
            }
        }
    }
    // About 1/3 move to the new backend; Maglev keeps moves between old backends rare.
    assert!((60..=140).contains(&moved), "moved {moved} of 300");
    assert!(
        shuffled <= 30,
        "{shuffled} of 300 moved between the old backends"
    );
}

/// Overwrites one conntrack entry's expiry (an "aged" flow without waiting).
fn age(w: &mut World, key: &CtKey, expires_ns: u64) {
    let mut v = w.conntrack()[key];
    v.expires_ns = expires_ns;
    w.dp()
        .maps_mut()
        .insert_conntrack(*key, v)
        .expect("age entry");
}

#[test]
fn a_reset_closes_both_directions_so_the_gc_collects_the_pair() {
    if !privileged("nodeport_packets::a_reset_closes_both_directions_so_the_gc_collects_the_pair") {
        return;
    }
    const RST: u8 = 0x04;
    let mut w = World::new("nprst");
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    // Two established flows; one is reset by the client, the other by the backend.
    for (i, client_resets) in [(0u16, true), (1, false)] {
        let client = SocketAddrV4::new(CLIENT, 44_000 + i);
        let (verdict, out) = w.run(
            names::EXTERNAL,
            &packet(Proto::Tcp, client, front, SYN, false),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (nat, backend) = (src_of(&out), dst_of(&out));
        let from_backend = |flags| packet(Proto::Tcp, backend, nat, flags, false);
        let from_client = |flags| packet(Proto::Tcp, client, front, flags, false);
        assert_eq!(
            w.run(names::REPLY, &from_backend(SYN | ACK)).0,
            TC_ACT_REDIRECT
        );
        assert_eq!(w.run(names::EXTERNAL, &from_client(ACK)).0, TC_ACT_REDIRECT);
        assert_eq!(w.run(names::REPLY, &from_backend(ACK)).0, TC_ACT_REDIRECT);
        // Established both ways: nothing is collectable within the close timeout.
        let soon = ferry_sys::clock::monotonic_ns() + 11 * 1_000_000_000;
        assert_eq!(w.dp().gc(soon).expect("gc").0, 0, "flow {i} established");
        let (verdict, _) = if client_resets {
            w.run(names::EXTERNAL, &from_client(RST | ACK))
        } else {
            w.run(names::REPLY, &from_backend(RST))
        };
        assert_eq!(verdict, TC_ACT_REDIRECT, "the RST itself is translated");
        let ct = w.conntrack();
        let orig = ct[&CtKey::new(client, front, 6)];
        let reply = ct[&CtKey::new(backend, nat, 6)];
        for (dir, e) in [("original", orig), ("reply", reply)] {
            assert_ne!(
                e.flags & ferry_common::nat::CT_F_RST,
                0,
                "flow {i} {dir}: RST flag"
            );
        }
        // The close timeout (10 s) later, the GC takes the whole pair.
        let later = ferry_sys::clock::monotonic_ns() + 11 * 1_000_000_000;
        assert_eq!(
            w.dp().gc(later).expect("gc"),
            (2, 0),
            "flow {i}: pair collected"
        );
    }
}

#[test]
fn a_new_flow_on_an_expired_tuple_removes_the_stale_reply_entry() {
    if !privileged("nodeport_packets::a_new_flow_on_an_expired_tuple_removes_the_stale_reply_entry")
    {
        return;
    }
    let mut w = World::new("npstale");
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let client = SocketAddrV4::new(CLIENT, 45_000);
    let syn = packet(Proto::Tcp, client, front, SYN, false);
    let (verdict, out) = w.run(names::EXTERNAL, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let old_reply = CtKey::new(dst_of(&out), src_of(&out), 6);
    // The original direction expired (the reply entry still lives, as after a half-dead flow).
    age(&mut w, &CtKey::new(client, front, 6), 0);
    let (verdict, again) = w.run(names::EXTERNAL, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        w.stat(NpStat::NewFlows),
        2,
        "a new flow on the reused tuple"
    );
    let ct = w.conntrack();
    assert_eq!(ct.len(), 2, "only the new pair: {ct:?}");
    let new_reply = CtKey::new(dst_of(&again), src_of(&again), 6);
    assert!(ct.contains_key(&new_reply));
    assert_eq!(
        new_reply, old_reply,
        "the freed NAT port is claimed again (same hash)"
    );
    assert_eq!(ct[&new_reply].dst(), client);
}

#[test]
fn local_policy_reply_key_collision_drops_or_supersedes() {
    if !privileged("nodeport_packets::local_policy_reply_key_collision_drops_or_supersedes") {
        return;
    }
    let mut w = World::new("npcol");
    let mut t = table();
    // A second ETP Local NodePort with the same (local) backend B1.
    t.entries.insert(
        fe(30082, Proto::Tcp),
        entry("local2", FrontendKind::NodePort, &[be(B1), be(B2)], true),
    );
    w.dp().sync(&t).expect("sync");
    let client = SocketAddrV4::new(CLIENT, 46_000);
    let (f1, f2) = (
        SocketAddrV4::new(NODE, 30081),
        SocketAddrV4::new(NODE, 30082),
    );
    let (verdict, out) = w.run(names::EXTERNAL, &packet(Proto::Tcp, client, f1, SYN, false));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(dst_of(&out), SocketAddrV4::new(B1, 8080));
    let reply_key = CtKey::new(SocketAddrV4::new(B1, 8080), client, 6);
    assert_eq!(w.conntrack()[&reply_key].src(), f1);

    // Same client ip:port to the other frontend: same backend 4-tuple; the live flow keeps it.
    let syn2 = packet(Proto::Tcp, client, f2, SYN, false);
    let (verdict, _) = w.run(names::EXTERNAL, &syn2);
    assert_eq!(verdict, TC_ACT_SHOT, "colliding new flow dropped");
    assert_eq!(w.stat(NpStat::DropCollision), 1);
    let ct = w.conntrack();
    assert_eq!(
        ct[&reply_key].src(),
        f1,
        "the live flow's replies still go to its frontend"
    );
    assert_eq!(ct.len(), 2, "{ct:?}");

    // Once the first flow expired, the new one supersedes it (both old entries go).
    age(&mut w, &reply_key, 0);
    age(&mut w, &CtKey::new(client, f1, 6), 0);
    let (verdict, out) = w.run(names::EXTERNAL, &syn2);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(dst_of(&out), SocketAddrV4::new(B1, 8080));
    assert_eq!(w.stat(NpStat::Superseded), 1);
    let ct = w.conntrack();
    assert_eq!(ct.len(), 2, "{ct:?}");
    assert_eq!(ct[&reply_key].src(), f2);
    assert!(!ct.contains_key(&CtKey::new(client, f1, 6)));
}

#[test]
fn cluster_policy_to_a_host_network_backend_on_this_node_keeps_the_source() {
    if !privileged(
        "nodeport_packets::cluster_policy_to_a_host_network_backend_on_this_node_keeps_the_source",
    ) {
        return;
    }
    let mut w = World::new("nphost");
    let mut t = table();
    let host = Backend {
        addr: NODE,
        port: 10_250,
    };
    t.entries.insert(
        fe(30083, Proto::Tcp),
        entry("hostnet", FrontendKind::NodePort, &[host], false),
    );
    w.dp().sync(&t).expect("sync");
    let client = SocketAddrV4::new(CLIENT, 47_000);
    let front = SocketAddrV4::new(NODE, 30083);
    let backend = SocketAddrV4::new(NODE, 10_250);
    let (verdict, out) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client, front, SYN, false),
    );
    // A local destination: up the stack (local delivery), with the client's own source.
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!((src_of(&out), dst_of(&out)), (client, backend));
    assert_checksums_valid(&out);
    let ct = w.conntrack();
    assert_eq!(ct.len(), 2, "{ct:?}");
    let reply = ct[&CtKey::new(backend, client, 6)];
    assert_eq!(
        (reply.src(), reply.dst(), reply.flags),
        (front, client, CT_F_REPLY)
    );
    // The local socket's answer leaves through the underlay: reverse-NATed on egress.
    let synack = packet(Proto::Tcp, backend, client, SYN | ACK, false);
    let (verdict, back) = w.run(names::EGRESS, &synack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!((src_of(&back), dst_of(&back)), (front, client));
    assert_checksums_valid(&back);
}

/// The XDP program (`ferry_np_xdp`, opt-in): a tracked flow whose translated destination leaves
/// by the underlay again (a host-gw backend on another node, the reply back to the client) is
/// translated with valid checksums, new MACs from the FIB, and `XDP_TX`; everything else is
/// passed to tc untouched: a sender's partial checksum, a destination on another device, an
/// unresolved next hop, state-changing TCP flags, untracked and malformed packets.
#[test]
fn xdp_sends_tracked_underlay_hairpins_back_out_and_leaves_the_rest_to_tc() {
    if !privileged(
        "nodeport_packets::xdp_sends_tracked_underlay_hairpins_back_out_and_leaves_the_rest_to_tc",
    ) {
        return;
    }
    const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
    const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
    let mut w = World::new("npxdp");
    w.netns
        .sh("ip route add 10.244.2.0/24 via 10.99.0.11 dev u0 && \
         ip neigh replace 10.99.0.11 lladdr 02:00:00:00:00:11 dev u0 nud permanent && \
         ip neigh replace 10.99.0.254 lladdr 02:00:00:00:00:fe dev u0 nud permanent && \
         ip neigh replace 10.244.1.5 lladdr 02:00:00:00:01:05 dev d0 nud permanent && \
         ip neigh replace 10.244.1.6 lladdr 02:00:00:00:01:06 dev d0 nud permanent");
    let u0_mac: [u8; 6] = {
        let out = w.netns.sh("cat /sys/class/net/u0/address");
        let bytes: Vec<u8> = out
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("mac"))
            .collect();
        bytes.try_into().expect("6 bytes")
    };
    let mut t = table();
    let remote = be(REMOTE);
    t.entries.insert(
        fe(30082, Proto::Tcp),
        entry("remote", FrontendKind::NodePort, &[remote], false),
    );
    t.entries.insert(
        fe(30054, Proto::Udp),
        entry("remote-dns", FrontendKind::NodePort, &[remote], false),
    );
    w.dp().sync(&t).expect("sync");
    let client = SocketAddrV4::new(CLIENT, 41_000);
    let front = SocketAddrV4::new(NODE, 30082);
    let backend = SocketAddrV4::new(REMOTE, 8080);

    // Untracked (the SYN of a new flow, or any packet without an entry): tc's job.
    let syn = packet(Proto::Tcp, client, front, SYN, false);
    assert_eq!(w.run_xdp(&syn), (XDP_PASS, syn.clone()));
    let ack = packet(Proto::Tcp, client, front, ACK, false);
    assert_eq!(w.run_xdp(&ack), (XDP_PASS, ack.clone()), "no entry yet");
    // tc takes the SYN and creates the pair.
    let (verdict, out) = w.run(names::EXTERNAL, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let nat = src_of(&out);
    assert_eq!((*nat.ip(), dst_of(&out)), (NODE, backend));

    // The first packet to a next hop goes through tc (neighbour upkeep: tc's redirect keeps
    // the kernel's entry confirmed; then once a second per next hop), untouched.
    assert_eq!(w.run_xdp(&ack), (XDP_PASS, ack.clone()));
    assert_eq!(w.stat(NpStat::XdpPassNeigh), 1);
    // The next packet of the flow: translated by XDP and sent back out of u0 to node2.
    let before = w.stat(NpStat::CtOriginal);
    let (verdict, out) = w.run_xdp(&ack);
    assert_eq!(verdict, XDP_TX);
    assert_eq!((src_of(&out), dst_of(&out)), (nat, backend));
    assert_eq!(
        mac_of(&out),
        (PEER_MAC, u0_mac),
        "next hop's MAC from the FIB"
    );
    assert_checksums_valid(&out);
    assert_eq!(&out[54..], b"ferry-nodeport", "payload untouched");
    assert_eq!(out[22], 64, "TTL as tc leaves it");
    assert_eq!(w.stat(NpStat::XdpTx), 1);
    assert_eq!(w.stat(NpStat::CtOriginal), before + 1);
    // tc would have produced the same packet (but for the MACs, which it leaves to the
    // neighbour layer).
    let (_, by_tc) = w.run(names::EXTERNAL, &ack);
    assert_eq!(&by_tc[12..], &out[12..]);

    // The backend's answer arrives on u0 and goes back to the client the same way (its first
    // packet for the client's next hop through tc).
    let answer = packet(Proto::Tcp, backend, nat, ACK, false);
    assert_eq!(w.run_xdp(&answer), (XDP_PASS, answer.clone()));
    assert_eq!(w.stat(NpStat::XdpPassNeigh), 2);
    let (verdict, back) = w.run_xdp(&answer);
    assert_eq!(verdict, XDP_TX);
    assert_eq!((src_of(&back), dst_of(&back)), (front, client));
    assert_eq!(mac_of(&back), (CLIENT_MAC, u0_mac));
    assert_checksums_valid(&back);
    assert_eq!(w.stat(NpStat::XdpTx), 2);

    // A local sender's partial checksum cannot be updated in XDP: untouched, to tc.
    let partial = partial_checksum(ack.clone(), 50);
    assert_eq!(w.run_xdp(&partial), (XDP_PASS, partial.clone()));
    assert_eq!(w.stat(NpStat::XdpPassPartialCsum), 1);
    // tc translates it (with the skb's checksum state, which XDP does not see; the lab test
    // checks the result on the wire).
    let (verdict, by_tc) = w.run(names::EXTERNAL, &partial);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((src_of(&by_tc), dst_of(&by_tc)), (nat, backend));

    // State changes stay with tc: FIN and RST of the tracked flow pass untouched.
    for flags in [ACK | 0x01, 0x04] {
        let p = packet(Proto::Tcp, client, front, flags, false);
        assert_eq!(w.run_xdp(&p), (XDP_PASS, p.clone()), "flags {flags:#x}");
    }

    // A flow whose backend is on this node's bridge (another device): passed to tc.
    let local_front = SocketAddrV4::new(NODE, 30080);
    let client2 = SocketAddrV4::new(CLIENT, 41_001);
    let (verdict, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client2, local_front, SYN, false),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let ack2 = packet(Proto::Tcp, client2, local_front, ACK, false);
    assert_eq!(w.run_xdp(&ack2), (XDP_PASS, ack2.clone()));
    assert_eq!(w.stat(NpStat::XdpPassRoute), 1);

    // UDP: a zero checksum stays zero, a real one stays valid.
    let ufront = SocketAddrV4::new(NODE, 30054);
    for (port, zero) in [(41_002, true), (41_003, false)] {
        let uclient = SocketAddrV4::new(CLIENT, port);
        let d = packet(Proto::Udp, uclient, ufront, 0, zero);
        assert_eq!(w.run(names::EXTERNAL, &d).0, TC_ACT_REDIRECT);
        let (verdict, out) = w.run_xdp(&d);
        assert_eq!(verdict, XDP_TX, "udp zero={zero}");
        assert_eq!(dst_of(&out), backend);
        if zero {
            assert_eq!(&out[40..42], &[0, 0], "no checksum stays none");
            assert_eq!(ip_sum(&out), 0);
        } else {
            assert_checksums_valid(&out);
        }
    }

    // Truncated: the L4 header cut short (TCP: below its 20 bytes).
    for len in [40, 53] {
        let mut cut = ack[..len].to_vec();
        cut[16..18].copy_from_slice(&u16::try_from(len - 14).expect("len").to_be_bytes());
        assert_eq!(w.run_xdp(&cut), (XDP_PASS, cut.clone()), "{len} bytes");
    }

    // A second later, the next hop is due again: one packet through tc, then XDP again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(w.run_xdp(&ack), (XDP_PASS, ack.clone()));
    assert_eq!(w.stat(NpStat::XdpPassNeigh), 3);
    assert_eq!(w.run_xdp(&ack).0, XDP_TX);

    // The next hop's neighbour unresolved: tc's bpf_redirect_neigh resolves it.
    w.netns.sh("ip neigh del 10.99.0.11 dev u0");
    let routed_before = w.stat(NpStat::XdpPassRoute);
    assert_eq!(w.run_xdp(&ack), (XDP_PASS, ack.clone()));
    assert_eq!(w.stat(NpStat::XdpPassRoute), routed_before + 1);
}

#[test]
fn a_pinned_link_whose_interface_was_recreated_is_replaced() {
    if !privileged("nodeport_packets::a_pinned_link_whose_interface_was_recreated_is_replaced") {
        return;
    }
    use ferry_agent::bpf::{AttachOutcome, TcHook};
    let mut w = World::new("nprelink");
    let pin_dir = w.pin_dir();
    let tc = w.tc.as_mut().expect("programs");
    let first = w
        .netns
        .run(|| tc.attach("d0", TcHook::ReplyIngress))
        .expect("first attach");
    assert_eq!(first, AttachOutcome::Created);
    let old_link = link_id(&pin_dir.join("tcx_ferry_np_rev@d0"));
    // The bridge goes away and comes back under the same name (a new netdev).
    w.netns.sh(
        "ip link del d0 && ip link add d0 type veth peer name d1 && \
         ip addr add 10.244.1.1/24 dev d0 && ip link set d1 up && ip link set d0 up",
    );
    // A new agent: the pinned link cannot be updated (its netdev is gone), so it attaches afresh.
    let (mut tc2, _maps) = NodePortTc::load(&pin_dir).expect("second load");
    let again = w
        .netns
        .run(|| tc2.attach("d0", TcHook::ReplyIngress))
        .expect("attach after the interface was recreated");
    assert_eq!(again, AttachOutcome::Created);
    let pin = pin_dir.join("tcx_ferry_np_rev@d0");
    assert_ne!(link_id(&pin), old_link, "a new link replaced the pin");
    // And a third agent swaps the program behind that link: `BPF_LINK_UPDATE` succeeds only on
    // a link whose netdev exists (the detached one answered ENOLINK).
    let (mut tc3, _maps3) = NodePortTc::load(&pin_dir).expect("third load");
    let swap = w
        .netns
        .run(|| tc3.attach("d0", TcHook::ReplyIngress))
        .expect("update");
    assert_eq!(swap, AttachOutcome::Updated);
}

/// The kernel id of a pinned link (bpftool).
fn link_id(pin: &std::path::Path) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "link", "show", "pinned"])
        .arg(pin)
        .output()
        .expect("bpftool");
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).expect("link json");
    link["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: {link}", pin.display()))
}

#[test]
fn nat_ports_of_reset_and_closed_flows_are_taken_over_by_new_flows() {
    if !privileged(
        "nodeport_packets::nat_ports_of_reset_and_closed_flows_are_taken_over_by_new_flows",
    ) {
        return;
    }
    const RST: u8 = 0x04;
    const FIN: u8 = 0x01;
    // One backend, two NAT ports (clients' ports outside the range, so none is kept).
    let mut w = World::with_nat_ports("npreuse", 61_000..=61_001);
    let mut t = table();
    t.entries.insert(
        fe(30080, Proto::Tcp),
        entry("web", FrontendKind::NodePort, &[be(B1)], false),
    );
    w.dp().sync(&t).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let client = |port| SocketAddrV4::new(CLIENT, port);
    let syn = |port| packet(Proto::Tcp, client(port), front, SYN, false);
    let from_client = |port, flags| packet(Proto::Tcp, client(port), front, flags, false);
    let (va, a) = w.run(names::EXTERNAL, &syn(46_000));
    let (vb, b) = w.run(names::EXTERNAL, &syn(46_001));
    assert_eq!((va, vb), (TC_ACT_REDIRECT, TC_ACT_REDIRECT));
    assert_ne!(
        src_of(&a).port(),
        src_of(&b).port(),
        "two ports for two flows"
    );
    let (vc, _) = w.run(names::EXTERNAL, &syn(46_002));
    assert_eq!(vc, TC_ACT_SHOT, "no port left while both flows live");
    assert_eq!(w.stat(NpStat::DropNatPorts), 1);
    // Flow b: the backend closes first (half-closed, it keeps its port), then the client.
    assert_eq!(
        w.run(
            names::REPLY,
            &packet(Proto::Tcp, dst_of(&b), src_of(&b), FIN | ACK, false)
        )
        .0,
        TC_ACT_REDIRECT
    );
    let (vc, _) = w.run(names::EXTERNAL, &syn(46_002));
    assert_eq!(vc, TC_ACT_SHOT, "a half-closed flow keeps its port");
    assert_eq!(
        w.run(names::EXTERNAL, &from_client(46_001, FIN | ACK)).0,
        TC_ACT_REDIRECT
    );
    // Flow a is reset. Its port (over at once: a RST ends the backend's socket) is preferred to
    // b's, which the backend may still hold in TIME_WAIT.
    assert_eq!(
        w.run(names::EXTERNAL, &from_client(46_000, RST | ACK)).0,
        TC_ACT_REDIRECT
    );
    let (vc, c) = w.run(names::EXTERNAL, &syn(46_002));
    assert_eq!(vc, TC_ACT_REDIRECT, "the reset flow's port is taken over");
    assert_eq!(src_of(&c), src_of(&a));
    let ct = w.conntrack();
    assert!(
        !ct.contains_key(&CtKey::new(client(46_000), front, 6)),
        "{ct:?}"
    );
    assert_eq!(
        ct[&CtKey::new(dst_of(&c), src_of(&c), 6)].dst(),
        client(46_002)
    );
    // Only b's port is left: rather than dropping the SYN, the flow closed longest ago gives its
    // port up inside its TIME_WAIT window.
    let (vd, d) = w.run(names::EXTERNAL, &syn(46_003));
    assert_eq!(vd, TC_ACT_REDIRECT, "the closed flow's port, not a drop");
    assert_eq!(w.stat(NpStat::NatPortInTimeWait), 1);
    assert_eq!(src_of(&d), src_of(&b));
    assert!(!w
        .conntrack()
        .contains_key(&CtKey::new(client(46_001), front, 6)));
    assert!(w.stat(NpStat::Superseded) >= 2);
    // Both ports live again: a drop.
    let (ve, _) = w.run(names::EXTERNAL, &syn(46_004));
    assert_eq!(ve, TC_ACT_SHOT);
    assert_eq!(w.stat(NpStat::DropNatPorts), 3);
}

/// Between two closed flows, the one past TIME_WAIT (60 s + slack since its last packet in
/// both directions) goes first; one closed 50 s ago is not yet over.
#[test]
fn a_closed_flow_past_time_wait_is_preferred() {
    if !privileged("nodeport_packets::a_closed_flow_past_time_wait_is_preferred") {
        return;
    }
    const FIN: u8 = 0x01;
    let mut w = World::with_nat_ports("nptw", 61_000..=61_001);
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let client = |port| SocketAddrV4::new(CLIENT, port);
    let syn = |port| packet(Proto::Tcp, client(port), front, SYN, false);
    let (_, a) = w.run(names::EXTERNAL, &syn(46_000));
    let (_, b) = w.run(names::EXTERNAL, &syn(46_001));
    for (port, out) in [(46_000, &a), (46_001, &b)] {
        let back = packet(Proto::Tcp, dst_of(out), src_of(out), FIN | ACK, false);
        assert_eq!(w.run(names::REPLY, &back).0, TC_ACT_REDIRECT);
        let fin = packet(Proto::Tcp, client(port), front, FIN | ACK, false);
        assert_eq!(w.run(names::EXTERNAL, &fin).0, TC_ACT_REDIRECT);
    }
    // Age both directions of a flow: `secs` since its last packet (FIN lifetime 120 s).
    let age = |w: &mut World, port: u16, out: &[u8], secs: u64| {
        let now = ferry_sys::clock::monotonic_ns();
        for key in [
            CtKey::new(dst_of(out), src_of(out), 6),
            CtKey::new(client(port), front, 6),
        ] {
            let mut e = w.conntrack()[&key];
            e.expires_ns = now + (120 - secs) * 1_000_000_000;
            w.dp().maps_mut().insert_conntrack(key, e).expect("age");
        }
    };
    // a closed 50 s ago (inside TIME_WAIT), b 70 s ago (past it): b's port goes first, whatever
    // the hash tries first.
    age(&mut w, 46_000, &a, 50);
    age(&mut w, 46_001, &b, 70);
    let (vc, c) = w.run(names::EXTERNAL, &syn(46_002));
    assert_eq!(vc, TC_ACT_REDIRECT);
    assert_eq!(
        src_of(&c),
        src_of(&b),
        "the flow past TIME_WAIT gives its port up"
    );
    assert!(w
        .conntrack()
        .contains_key(&CtKey::new(client(46_000), front, 6)));
}

/// A connection the node opens itself from its address and a port an external flow holds
/// toward the same backend (the kernel picked it without knowing the NAT entry): the node's
/// connection wins on the underlay egress and the external flow's entries go; a translated
/// packet the datapath forwarded there (it has an ingress device) changes nothing.
#[test]
fn the_nodes_own_connection_on_a_nat_tuple_supersedes_the_external_flow() {
    if !privileged(
        "nodeport_packets::the_nodes_own_connection_on_a_nat_tuple_supersedes_the_external_flow",
    ) {
        return;
    }
    let mut w = World::with_nat_ports("npnode", 40_000..=65_535);
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let client = SocketAddrV4::new(CLIENT, 45_000);
    let (v, out) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client, front, SYN, false),
    );
    assert_eq!(v, TC_ACT_REDIRECT);
    let (nat, backend) = (src_of(&out), dst_of(&out));
    assert_eq!(nat, SocketAddrV4::new(NODE, 45_000));
    // A BPF_PROG_TEST_RUN packet has no ingress device: to the egress program it is the node's
    // own SYN (a translated packet the datapath redirected there has one; the lab tests carry
    // those through the egress program with their flows intact).
    let own = packet(Proto::Tcp, nat, backend, SYN, false);
    assert_eq!(w.run(names::EGRESS, &own).0, NEXT);
    let ct = w.conntrack();
    assert!(!ct.contains_key(&CtKey::new(backend, nat, 6)), "{ct:?}");
    assert!(!ct.contains_key(&CtKey::new(client, front, 6)), "{ct:?}");
    assert_eq!(w.stat(NpStat::SupersededByNode), 1);
    // A node packet that is not a SYN (an established connection) leaves entries alone.
    let (v, out2) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client, front, SYN, false),
    );
    assert_eq!(v, TC_ACT_REDIRECT);
    let ack = packet(Proto::Tcp, src_of(&out2), dst_of(&out2), ACK, false);
    w.run(names::EGRESS, &ack);
    assert!(w
        .conntrack()
        .contains_key(&CtKey::new(dst_of(&out2), src_of(&out2), 6)));
}

/// The client's own source port is the NAT port when it lies in the NAT range and is free (the
/// kernel's NAT keeps it too): a client reusing its port reaches the backend on the same tuple,
/// whose TIME_WAIT socket accepts the SYN. Taken by another flow, or held by a socket of the
/// node (here a listener on the node's address), another port is used.
#[test]
fn the_clients_source_port_is_kept_when_free() {
    if !privileged("nodeport_packets::the_clients_source_port_is_kept_when_free") {
        return;
    }
    let mut w = World::with_nat_ports("npkeep", 40_000..=65_535);
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let syn = |from| packet(Proto::Tcp, from, front, SYN, false);
    let a = SocketAddrV4::new(CLIENT, 45_000);
    let (va, out_a) = w.run(names::EXTERNAL, &syn(a));
    assert_eq!(va, TC_ACT_REDIRECT);
    assert_eq!(src_of(&out_a), SocketAddrV4::new(NODE, 45_000), "port kept");
    assert_eq!(w.stat(NpStat::NatPortKept), 1);
    // Another client with the same port: the tuple toward the backend is taken.
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 253), 45_000);
    let (vo, out_o) = w.run(names::EXTERNAL, &syn(other));
    assert_eq!(vo, TC_ACT_REDIRECT);
    assert_eq!(*src_of(&out_o).ip(), NODE);
    assert_ne!(src_of(&out_o).port(), 45_000);
    assert!((40_000..=65_535).contains(&src_of(&out_o).port()));
    // Outside the range: a port from the range.
    let low = SocketAddrV4::new(CLIENT, 20_000);
    let (vl, out_l) = w.run(names::EXTERNAL, &syn(low));
    assert_eq!(vl, TC_ACT_REDIRECT);
    assert!((40_000..=65_535).contains(&src_of(&out_l).port()));
    // A socket of the node on its address and the client's port: never a NAT port.
    let listener = w
        .netns
        .run(|| std::net::TcpListener::bind(SocketAddrV4::new(NODE, 47_000)))
        .expect("listener in the node namespace");
    let held = SocketAddrV4::new(CLIENT, 47_000);
    let (vh, out_h) = w.run(names::EXTERNAL, &syn(held));
    assert_eq!(vh, TC_ACT_REDIRECT);
    assert_ne!(
        src_of(&out_h).port(),
        47_000,
        "the node's socket keeps its port"
    );
    assert!(w.stat(NpStat::NatPortNodeSocket) >= 1);
    drop(listener);
    let free = SocketAddrV4::new(CLIENT, 47_001);
    let (vf, out_f) = w.run(names::EXTERNAL, &syn(free));
    assert_eq!(vf, TC_ACT_REDIRECT);
    assert_eq!(src_of(&out_f).port(), 47_001);
}

#[test]
fn a_fin_close_from_both_sides_is_collected_a_half_close_is_not() {
    if !privileged("nodeport_packets::a_fin_close_from_both_sides_is_collected_a_half_close_is_not")
    {
        return;
    }
    const FIN: u8 = 0x01;
    let mut w = World::new("npfin");
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let client = SocketAddrV4::new(CLIENT, 48_000);
    let (verdict, out) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client, front, SYN, false),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (nat, backend) = (src_of(&out), dst_of(&out));
    let from_backend = |flags| packet(Proto::Tcp, backend, nat, flags, false);
    let from_client = |flags| packet(Proto::Tcp, client, front, flags, false);
    for (program, p) in [
        (names::REPLY, from_backend(SYN | ACK)),
        (names::EXTERNAL, from_client(ACK)),
        (names::REPLY, from_backend(ACK)),
        // The client half-closes; the backend may still send for as long as it likes.
        (names::EXTERNAL, from_client(FIN | ACK)),
        (names::REPLY, from_backend(ACK)),
    ] {
        assert_eq!(w.run(program, &p).0, TC_ACT_REDIRECT);
    }
    let after_fin_timeout = || ferry_sys::clock::monotonic_ns() + 121 * 1_000_000_000;
    assert_eq!(
        w.dp().gc(after_fin_timeout()).expect("gc").0,
        0,
        "half-closed: the open direction keeps the flow"
    );
    // The backend closes too: both entries carry FIN, the pair goes after the FIN timeout.
    assert_eq!(
        w.run(names::REPLY, &from_backend(FIN | ACK)).0,
        TC_ACT_REDIRECT
    );
    assert_eq!(w.run(names::EXTERNAL, &from_client(ACK)).0, TC_ACT_REDIRECT);
    assert_eq!(w.dp().gc(after_fin_timeout()).expect("gc"), (2, 0));
}

/// A pinned map whose shape this build changed (here the counters array, pinned by an older
/// build with fewer entries) is replaced when the object loads, not reused as it is; a pinned
/// map of the same shape (the conntrack table, with a live flow) is kept.
#[test]
fn a_pinned_map_of_another_shape_is_replaced_a_matching_one_kept() {
    if !privileged(
        "nodeport_packets::a_pinned_map_of_another_shape_is_replaced_a_matching_one_kept",
    ) {
        return;
    }
    let mut w = World::new("npshape");
    w.dp().sync(&table()).expect("sync");
    let front = SocketAddrV4::new(NODE, 30080);
    let client = SocketAddrV4::new(CLIENT, 45_000);
    let (v, _) = w.run(
        names::EXTERNAL,
        &packet(Proto::Tcp, client, front, SYN, false),
    );
    assert_eq!(v, TC_ACT_REDIRECT);
    let flows = w.conntrack();
    assert_eq!(flows.len(), 2);
    // What an older build left: a smaller counters array under the same pin.
    let stats_pin = w.pin_dir().join(names::STATS);
    std::fs::remove_file(&stats_pin).expect("unpin the counters");
    let old: aya::maps::PerCpuArray<aya::maps::MapData, u64> =
        aya::maps::PerCpuArray::create(NpStat::COUNT - 3, 0).expect("old counters map");
    old.pin(&stats_pin).expect("pin the old counters map");
    let entries = |path: &std::path::Path| {
        aya::maps::MapInfo::from_pin(path)
            .expect("pinned map info")
            .max_entries()
    };
    assert_eq!(entries(&stats_pin), NpStat::COUNT - 3);
    // The agent restarts: the object loads again over the same pins.
    drop(w.dp.take());
    drop(w.tc.take());
    let (tc, maps) = NodePortTc::load(&w.pin_dir()).expect("reloading nodeport");
    assert_eq!(
        entries(&stats_pin),
        NpStat::COUNT,
        "the counters map was replaced"
    );
    let kept: BTreeMap<CtKey, CtEntry> = maps.dump_conntrack().expect("dump").into_iter().collect();
    assert_eq!(kept, flows, "the conntrack map was kept");
    // Every counter is readable (an old, smaller map would fail past its end).
    assert_eq!(maps.stats().expect("stats").len(), NpStat::COUNT as usize);
    drop(tc);
}
