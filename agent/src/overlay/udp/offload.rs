//! Segmentation and coalescing offloads of the udp datapath (the same idea as wireguard-go's):
//!
//! * **TX**: the TUN device runs with `IFF_VNET_HDR` and `TUNSETOFFLOAD(TUN_F_CSUM |
//!   TUN_F_TSO4)`, so the kernel hands a worker whole TCP super-packets (up to 64 KiB, one
//!   `read`). [`segment_tcp4`] cuts one into MSS-sized IPv4/TCP packets (IP id, total length,
//!   header checksum, TCP sequence number, flags and checksum per segment) laid out back to back;
//!   one `sendmsg` with `UDP_SEGMENT` then sends up to 48 of them as one UDP GSO batch (the
//!   kernel emits one datagram per segment, each the bare inner packet: flannel's wire format is
//!   unchanged). [`GsoQueue`] fills those sends across reads: a super-packet is ~50 segments.
//! * **RX**: the socket has `UDP_GRO`, so one `recvmsg` returns many datagrams of one sender back
//!   to back. [`Coalescer`] merges consecutive in-order segments of one TCP flow into one
//!   super-packet written with a `VIRTIO_NET_HDR_GSO_TCPV4` header (one `write`, one pass through
//!   the stack); anything else is written as is, marked checksum-valid (the outer UDP checksum,
//!   which the kernel verified, covered it).
//!
//! Checksums are RFC 1071 sums over native-endian 32-bit words folded to 16 bits, which are
//! byte-order independent when stored back with `to_ne_bytes`.
//!
//! Header fields are read through `pnet_packet`'s zero-copy views ([`Ipv4Packet`],
//! [`TcpPacket`]); the writes (per-segment lengths, ids, sequence numbers, flags, checksums) and
//! the checksum arithmetic stay hand-written byte offsets: they run per segment over buffers being
//! built, and the 32-bit-word sums here are what keeps them cheap.

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{Ipv4Flags, Ipv4Packet};
use pnet_packet::tcp::{TcpFlags, TcpPacket};

/// `struct virtio_net_hdr` (10 bytes, native endian).
pub(crate) const VNET_HDR_LEN: usize = 10;
const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_ECN: u8 = 0x80;
const TCP_FIN: u8 = TcpFlags::FIN;
const TCP_PSH: u8 = TcpFlags::PSH;
const TCP_ACK: u8 = TcpFlags::ACK;
/// Largest IPv4 packet (and UDP GSO batch payload).
pub(crate) const MAX_PACKET: usize = 65535;

/// Adds `data` to a ones-complement accumulator.
fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_ne_bytes(tail))
}

/// Folds an accumulator to 16 bits (native order; store with `to_ne_bytes`).
#[expect(
    clippy::cast_possible_truncation,
    reason = "the loop leaves acc below 2^16"
)]
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The sum of the TCP/UDP pseudo header of an IPv4 packet `ip` with an L4 length `len`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "len is an L4 length inside one IPv4 packet, at most MAX_PACKET (65535)"
)]
fn pseudo(ip: &[u8], proto: u8, len: usize) -> u64 {
    let mut p = [0u8; 12];
    p[..8].copy_from_slice(&ip[12..20]);
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    sum(&p, 0)
}

fn ip_checksum(ip: &mut [u8], ihl: usize) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = !fold(sum(&ip[..ihl], 0));
    ip[10..12].copy_from_slice(&c.to_ne_bytes());
}

/// The parsed `virtio_net_hdr` fields the datapath uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VnetHdr {
    pub(crate) flags: u8,
    pub(crate) gso_type: u8,
    pub(crate) gso_size: u16,
    pub(crate) csum_start: u16,
    pub(crate) csum_offset: u16,
}

impl VnetHdr {
    pub(crate) fn parse(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }
}

/// Completes a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the field at
/// `start + offset` holds the pseudo-header sum; the sum over `pkt[start..]` finishes it.
pub(crate) fn finish_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Option<()> {
    let at = start.checked_add(offset)?;
    if at + 2 > pkt.len() || start > pkt.len() {
        return None;
    }
    let c = !fold(sum(&pkt[start..], 0));
    pkt[at..at + 2].copy_from_slice(&c.to_ne_bytes());
    Some(())
}

/// Turns what one TUN `read` returned (`vnet header + packet`) into wire packets appended to
/// `out`, back to back, all `stride` bytes long except maybe the last. Returns `(stride, count)`;
/// `None` for packets that cannot be handled (dropped; `out` may then hold a partial append).
pub(crate) fn tx_packets(buf: &mut [u8], out: &mut Vec<u8>) -> Option<(usize, usize)> {
    if buf.len() < VNET_HDR_LEN + 20 {
        return None;
    }
    let h = VnetHdr::parse(&buf[..VNET_HDR_LEN]);
    let pkt = &mut buf[VNET_HDR_LEN..];
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            if h.flags & F_NEEDS_CSUM != 0 {
                finish_checksum(pkt, usize::from(h.csum_start), usize::from(h.csum_offset))?;
            }
            out.extend_from_slice(pkt);
            Some((pkt.len(), 1))
        }
        GSO_TCPV4 => segment_tcp4(pkt, usize::from(h.gso_size), out),
        _ => None,
    }
}

/// Cuts an IPv4/TCP super-packet into segments of at most `mss` payload bytes, appended back to
/// back to `out`. Returns `(stride, count)`: every segment is `stride` bytes except the last.
#[expect(
    clippy::cast_possible_truncation,
    reason = "total <= pkt.len() <= MAX_PACKET (65535, the TUN read buffer); `i as u16` and `(i * mss) as u32` wrap on purpose: the IP id and the TCP sequence number count modulo 2^16 and 2^32"
)]
pub(crate) fn segment_tcp4(pkt: &[u8], mss: usize, out: &mut Vec<u8>) -> Option<(usize, usize)> {
    let ip = Ipv4Packet::new(pkt)?;
    if pkt.len() < 40
        || ip.get_version() != 4
        || ip.get_next_level_protocol() != IpNextHeaderProtocols::Tcp
        || mss == 0
    {
        return None;
    }
    let ihl = usize::from(ip.get_header_length()) * 4;
    let tcp = TcpPacket::new(pkt.get(ihl..)?)?;
    let thl = usize::from(tcp.get_data_offset()) * 4;
    let hlen = ihl + thl;
    if ihl < 20 || thl < 20 || pkt.len() < hlen {
        return None;
    }
    let payload = &pkt[hlen..];
    let id0 = ip.get_identification();
    let seq0 = tcp.get_sequence();
    let flags = tcp.get_flags();
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let start = out.len();
        out.extend_from_slice(&pkt[..hlen]);
        out.extend_from_slice(chunk);
        let seg = &mut out[start..];
        let total = hlen + chunk.len();
        seg[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
        ip_checksum(seg, ihl);
        let tcp = &mut seg[ihl..];
        tcp[4..8].copy_from_slice(&seq0.wrapping_add((i * mss) as u32).to_be_bytes());
        if i + 1 < count {
            tcp[13] = flags & !(TCP_FIN | TCP_PSH);
        }
        tcp[16..18].copy_from_slice(&[0, 0]);
        let ph = pseudo(seg, 6, total - ihl);
        let c = !fold(sum(&seg[ihl..], ph));
        seg[ihl + 16..ihl + 18].copy_from_slice(&c.to_ne_bytes());
    }
    Some((hlen + mss, count))
}

/// Largest UDP GSO batch handed to one `sendmsg` (payload bytes: at most 65507 fit in one IPv4
/// datagram), and its segment limit.
pub(crate) const GSO_MAX_BYTES: usize = 65_000;
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Groups the wire segments of consecutive TUN reads into UDP GSO sends.
///
/// A 64 KiB TSO super-packet at MTU 1372 is ~50 segments of 1350 bytes, and one GSO send holds
/// at most 48 ([`GSO_MAX_BYTES`]), so sending every read on its own costs two `sendmsg` per
/// super-packet (48 + 2 segments) and two datagrams at the peer (two `recvmsg`, often two TUN
/// writes). Here a tail of full-sized segments is kept back and the next read's segments join it
/// when they go to the same peer with the same stride (GSO needs every segment but the last at
/// one size), so a stream of super-packets leaves in full 48-segment sends. What is kept back
/// goes out when something else comes and at [`GsoQueue::flush`] (end of the worker's batch).
#[derive(Debug)]
pub(crate) struct GsoQueue<P> {
    /// Segments kept back, then the segments being committed (appended by [`tx_packets`]).
    pub(crate) buf: Vec<u8>,
    /// Peer and stride of the kept-back segments (`None`: `buf` holds none).
    held: Option<(P, usize)>,
}

impl<P: Copy + PartialEq> GsoQueue<P> {
    pub(crate) fn new() -> GsoQueue<P> {
        GsoQueue {
            // Kept back (< one send) + one super-packet's segments.
            buf: Vec::with_capacity(3 * MAX_PACKET),
            held: None,
        }
    }

    /// Sends what was appended to `buf` from `start` on (segments of `stride` bytes for `peer`,
    /// the last maybe shorter), joined to the kept-back segments where possible, through
    /// `send(peer, segments, stride)`; keeps back a tail of full segments shorter than a send.
    pub(crate) fn commit(
        &mut self,
        start: usize,
        peer: P,
        stride: usize,
        send: &mut impl FnMut(P, &[u8], usize),
    ) {
        // Where the segments for this peer start: 0 when the kept-back ones are joined.
        let mut at = 0;
        if let Some((p, s)) = self.held.take() {
            if (p, s) != (peer, stride) {
                send(p, &self.buf[..start], s);
                at = start;
            }
        }
        let group = (GSO_MAX_BYTES / stride).clamp(1, GSO_MAX_SEGMENTS) * stride;
        while self.buf.len() - at > group {
            send(peer, &self.buf[at..at + group], stride);
            at += group;
        }
        // The rest, one send at most: kept back unless it is a full send or ends short.
        let rest = self.buf.len() - at;
        if rest == group || !rest.is_multiple_of(stride) {
            send(peer, &self.buf[at..], stride);
            self.buf.clear();
        } else {
            self.buf.copy_within(at.., 0);
            self.buf.truncate(rest);
            self.held = Some((peer, stride));
        }
    }

    /// Sends what is kept back.
    pub(crate) fn flush(&mut self, send: &mut impl FnMut(P, &[u8], usize)) {
        if let Some((peer, stride)) = self.held.take() {
            send(peer, &self.buf, stride);
        }
        self.buf.clear();
    }
}

/// What [`Coalescer::push`] needs of a mergeable IPv4/TCP segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// IPv4 header length (always 20: no options).
    ihl: usize,
    /// IPv4 + TCP header length.
    hlen: usize,
    /// TCP payload length (> 0).
    len: usize,
    /// TCP sequence number.
    seq: u32,
    /// TCP flags (ACK, maybe PSH).
    flags: u8,
}

/// Merges consecutive in-order TCP segments of one flow into GSO super-packets for TUN writes.
#[derive(Debug)]
pub(crate) struct Coalescer {
    /// vnet header + the packet being built.
    buf: Vec<u8>,
    /// Segments merged into `buf` (0: empty).
    segs: usize,
    ihl: usize,
    hlen: usize,
    mss: usize,
    next_seq: u32,
    /// No more segments may join (short or PSH segment merged).
    closed: bool,
}

impl Coalescer {
    pub(crate) fn new() -> Coalescer {
        Coalescer {
            buf: Vec::with_capacity(VNET_HDR_LEN + MAX_PACKET),
            segs: 0,
            ihl: 0,
            hlen: 0,
            mss: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// The segment's geometry when `p` is a plain IPv4/TCP segment that may be merged.
    fn mergeable(p: &[u8]) -> Option<Segment> {
        let ip = Ipv4Packet::new(p)?;
        let ihl = usize::from(ip.get_header_length()) * 4;
        // Not fragmented (MF clear, offset 0), TCP, no IP options.
        if ihl != 20
            || ip.get_next_level_protocol() != IpNextHeaderProtocols::Tcp
            || ip.get_flags() & Ipv4Flags::MoreFragments != 0
            || ip.get_fragment_offset() != 0
        {
            return None;
        }
        let total = usize::from(ip.get_total_length());
        let tcp = TcpPacket::new(&p[ihl..])?;
        let thl = usize::from(tcp.get_data_offset()) * 4;
        let flags = tcp.get_flags();
        if total != p.len() || thl < 20 || total < ihl + thl || flags & !TCP_PSH != TCP_ACK {
            return None;
        }
        let len = total - ihl - thl;
        (len > 0).then_some(Segment {
            ihl,
            hlen: ihl + thl,
            len,
            seq: tcp.get_sequence(),
            flags,
        })
    }

    /// Offers one validated inner packet; calls `write` with finished (vnet header + packet)
    /// buffers.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "len is one segment's payload (below MAX_PACKET); the TCP sequence number counts modulo 2^32"
    )]
    pub(crate) fn push(&mut self, p: &[u8], write: &mut impl FnMut(&[u8])) {
        let Some(Segment {
            ihl,
            hlen,
            len,
            seq,
            flags,
        }) = Self::mergeable(p)
        else {
            self.flush(write);
            write_single(p, &mut self.buf, write);
            return;
        };
        if self.segs > 0 {
            let base = &self.buf[VNET_HDR_LEN..];
            // Same flow and header: compared as raw byte ranges (one memcmp each) rather than
            // field by field. Addresses; ports, (seq skipped), ack, data offset.. window;
            // options identical.
            let same_flow = !self.closed
                && hlen == self.hlen
                && len <= self.mss
                && base[12..20] == p[12..20]
                && base[ihl..ihl + 4] == p[ihl..ihl + 4]
                && base[ihl + 8..ihl + 13] == p[ihl + 8..ihl + 13]
                && base[ihl + 14..ihl + 16] == p[ihl + 14..ihl + 16]
                && base[ihl + 20..hlen] == p[ihl + 20..hlen]
                && seq == self.next_seq
                && self.buf.len() + len <= VNET_HDR_LEN + MAX_PACKET;
            if same_flow {
                self.buf.extend_from_slice(&p[hlen..]);
                self.segs += 1;
                self.next_seq = self.next_seq.wrapping_add(len as u32);
                self.buf[VNET_HDR_LEN + ihl + 13] |= flags & TCP_PSH;
                if len < self.mss || flags & TCP_PSH != 0 {
                    self.closed = true;
                }
                return;
            }
            self.flush(write);
        }
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        self.buf.extend_from_slice(p);
        self.segs = 1;
        self.ihl = ihl;
        self.hlen = hlen;
        self.mss = len;
        self.next_seq = seq.wrapping_add(len as u32);
        self.closed = flags & TCP_PSH != 0;
    }

    /// Writes out the packet being built, if any.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "hlen, mss, ihl and total all lie within the packet being built, at most MAX_PACKET (65535) bytes"
    )]
    pub(crate) fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        match self.segs {
            0 => return,
            1 => {
                self.buf[0] = F_DATA_VALID;
            }
            _ => {
                let (ihl, hlen) = (self.ihl, self.hlen);
                let total = self.buf.len() - VNET_HDR_LEN;
                let mut h = [0u8; VNET_HDR_LEN];
                h[0] = F_NEEDS_CSUM;
                h[1] = GSO_TCPV4;
                h[2..4].copy_from_slice(&(hlen as u16).to_ne_bytes());
                h[4..6].copy_from_slice(&(self.mss as u16).to_ne_bytes());
                h[6..8].copy_from_slice(&(ihl as u16).to_ne_bytes());
                h[8..10].copy_from_slice(&16u16.to_ne_bytes());
                self.buf[..VNET_HDR_LEN].copy_from_slice(&h);
                let ip = &mut self.buf[VNET_HDR_LEN..];
                ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                ip_checksum(ip, ihl);
                // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not inverted.
                let partial = fold(pseudo(ip, 6, total - ihl));
                ip[ihl + 16..ihl + 18].copy_from_slice(&partial.to_ne_bytes());
            }
        }
        write(&self.buf);
        self.segs = 0;
        self.closed = false;
    }
}

/// Writes one packet as is, with a vnet header saying its checksum was verified.
fn write_single(p: &[u8], scratch: &mut Vec<u8>, write: &mut impl FnMut(&[u8])) {
    scratch.clear();
    scratch.extend_from_slice(&[F_DATA_VALID, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    scratch.extend_from_slice(p);
    write(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An IPv4/TCP packet 10.0.0.1:1000 -> 10.0.0.2:2000 with `payload`, seq `seq`, valid
    /// checksums.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "test packets are far below 64 KiB"
    )]
    fn tcp_packet(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let total = 40 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&2000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p[40..].copy_from_slice(payload);
        ip_checksum(&mut p, 20);
        let c = !fold(sum(&p[20..], pseudo(&p, 6, total - 20)));
        p[36..38].copy_from_slice(&c.to_ne_bytes());
        p
    }

    fn valid(p: &[u8]) -> bool {
        fold(sum(&p[..20], 0)) == 0xffff
            && fold(sum(&p[20..], pseudo(p, 6, p.len() - 20))) == 0xffff
    }

    #[test]
    fn checksums_match_a_known_header() {
        // RFC 1071 style example: a real IPv4 header with checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        ip_checksum(&mut h, 20);
        assert_eq!(h[10..12], [0xb8, 0x61]);
        assert!(valid(&tcp_packet(1, TCP_ACK, b"hello")));
    }

    #[test]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "test data: `(i * 7) as u8` wraps on purpose (a byte pattern) and segment indexes are below 3"
    )]
    fn segmentation_then_coalescing_round_trips() {
        let payload: Vec<u8> = (0..3500u32).map(|i| (i * 7) as u8).collect();
        let big = tcp_packet(1000, TCP_ACK | TCP_PSH, &payload);
        let mut out = Vec::new();
        let (stride, count) = segment_tcp4(&big, 1300, &mut out).unwrap();
        assert_eq!((stride, count), (1340, 3));
        let segs: Vec<&[u8]> = out.chunks(stride).collect();
        assert_eq!(segs[2].len(), 40 + 900);
        for (i, s) in segs.iter().enumerate() {
            assert!(valid(s), "segment {i}");
            let seq = u32::from_be_bytes(s[24..28].try_into().unwrap());
            assert_eq!(seq, 1000 + 1300 * i as u32);
            assert_eq!(s[33] & TCP_PSH != 0, i == 2, "PSH only on the last");
            assert_eq!(&s[40..], &payload[i * 1300..(i * 1300 + s.len() - 40)]);
        }
        // Coalescing the three segments gives one GSO packet equal to the original.
        let mut c = Coalescer::new();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut w = |b: &[u8]| written.push(b.to_vec());
        for s in &segs {
            c.push(s, &mut w);
        }
        c.flush(&mut w);
        assert_eq!(written.len(), 1);
        let h = VnetHdr::parse(&written[0]);
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum_start, h.csum_offset),
            (GSO_TCPV4, 1300, 20, 16)
        );
        let merged = &written[0][VNET_HDR_LEN..];
        assert_eq!(merged.len(), big.len());
        assert_eq!(merged[..36], big[..36], "headers (checksum aside)");
        assert_eq!(merged[40..], big[40..]);
        // Completing the partial checksum yields the original's.
        let mut full = merged.to_vec();
        finish_checksum(&mut full, 20, 16).unwrap();
        assert_eq!(full, big);
    }

    /// Appends `n` segments of `stride` bytes (the last `last` bytes) numbered from `id`.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "test data: `i as u8` wraps on purpose (segment ids are a byte pattern)"
    )]
    fn append(buf: &mut Vec<u8>, id: u8, n: usize, stride: usize, last: usize) -> usize {
        let start = buf.len();
        for i in 0..n {
            let len = if i + 1 == n { last } else { stride };
            buf.extend(std::iter::repeat_n(id.wrapping_add(i as u8), len));
        }
        start
    }

    #[test]
    fn gso_queue_fills_sends_across_reads() {
        const S: usize = 1350;
        let full = GSO_MAX_BYTES / S;
        assert_eq!(full, 48);
        let mut q = GsoQueue::new();
        // (peer, segments, stride, bytes) of every send.
        type Sends = Vec<(u8, usize, usize, Vec<u8>)>;
        let sent: RefCell<Sends> = RefCell::default();
        let mut send =
            |p: u8, d: &[u8], s: usize| sent.borrow_mut().push((p, d.len() / s, s, d.to_vec()));
        // Three 50-segment super-packets for peer 1: 48 + 48 + 48 + 6 instead of 6 sends.
        let mut want = Vec::new();
        for k in 0..3u8 {
            let start = append(&mut q.buf, 50 * k, 50, S, S);
            want.extend_from_slice(&q.buf[start..]);
            q.commit(start, 1, S, &mut send);
        }
        q.flush(&mut send);
        let sent = sent.into_inner();
        let counts: Vec<usize> = sent.iter().map(|x| x.1).collect();
        assert_eq!(counts, [48, 48, 48, 6]);
        assert!(sent.iter().all(|x| (x.0, x.2) == (1, S)));
        let got: Vec<u8> = sent.iter().flat_map(|x| x.3.clone()).collect();
        assert_eq!(got, want, "every byte, in order");
        assert!(q.buf.is_empty());
    }

    #[test]
    fn gso_queue_sends_held_segments_before_anything_else() {
        let mut q = GsoQueue::new();
        let sent: RefCell<Vec<(u8, usize, usize)>> = RefCell::default();
        let mut send = |p: u8, d: &[u8], s: usize| sent.borrow_mut().push((p, d.len(), s));
        // 3 full segments held for peer 1, then peer 2: peer 1's go first.
        let start = append(&mut q.buf, 0, 3, 100, 100);
        q.commit(start, 1, 100, &mut send);
        assert!(sent.borrow().is_empty(), "kept back");
        let start = append(&mut q.buf, 10, 2, 100, 100);
        q.commit(start, 2, 100, &mut send);
        assert_eq!(*sent.borrow(), [(1, 300, 100)]);
        // Same peer, other stride (a lone ACK): the held segments go first.
        let start = append(&mut q.buf, 20, 1, 52, 52);
        q.commit(start, 2, 52, &mut send);
        assert_eq!(sent.borrow()[1..], [(2, 200, 100)]);
        // A short last segment ends a send: joined, sent at once, nothing held.
        let start = append(&mut q.buf, 30, 2, 52, 40);
        q.commit(start, 2, 52, &mut send);
        assert_eq!(sent.borrow()[2..], [(2, 52 + 52 + 40, 52)]);
        assert!(q.buf.is_empty());
        q.flush(&mut send);
        assert_eq!(sent.borrow().len(), 3);
    }

    #[test]
    fn coalescer_keeps_flows_and_gaps_apart() {
        let a1 = tcp_packet(0, TCP_ACK, &[1; 100]);
        let a3 = tcp_packet(200, TCP_ACK, &[1; 100]); // gap: seq 100 missing
        let syn = tcp_packet(0, 0x02, &[]);
        let mut c = Coalescer::new();
        let mut written: Vec<Vec<u8>> = Vec::new();
        let mut w = |b: &[u8]| written.push(b.to_vec());
        c.push(&a1, &mut w);
        c.push(&a3, &mut w);
        c.push(&syn, &mut w);
        c.flush(&mut w);
        assert_eq!(written.len(), 3);
        for (b, orig) in written.iter().zip([&a1, &a3, &syn]) {
            assert_eq!(b[0], F_DATA_VALID);
            assert_eq!(b[1], GSO_NONE);
            assert_eq!(&b[VNET_HDR_LEN..], orig.as_slice());
        }
    }
}
