//! Property tests of the udp datapath's offload parsers, which read packets as they come: from
//! peers over the network (the receive coalescer, after the datapath's address check) and from
//! the TUN device (`virtio_net_hdr` + super-packet). Arbitrary and damaged packets never panic;
//! the coalescer neither loses nor invents bytes (each merged super-packet re-segments into the
//! segments it took in); segmentation cuts a super-packet's payload into pieces that concatenate
//! back to it. `PROPTEST_CASES` sets the cases per property (default 256).

use super::ipv4_addrs;
use super::offload::{segment_tcp4, tx_packets, Coalescer, VnetHdr, MAX_PACKET, VNET_HDR_LEN};
use proptest::prelude::*;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// An IPv4/TCP packet of flow `flow` (ports differ per flow) with `payload` (checksums left 0:
/// the coalescer does not read them).
fn tcp(flow: u8, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 40 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 244, 1, 2]);
    p[16..20].copy_from_slice(&[10, 244, 0, 3]);
    p[20..22].copy_from_slice(&(1000 + u16::from(flow)).to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&7u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p[34..36].copy_from_slice(&512u16.to_be_bytes());
    p[40..].copy_from_slice(payload);
    p
}

/// `len` payload bytes that differ from their neighbours.
fn filler(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

/// One received inner packet: a segment of one of two flows (mostly in order, full-sized,
/// ACK or ACK|PSH), sometimes with other flags, a gap, a damaged byte, or plain junk.
#[derive(Debug, Clone)]
enum Rx {
    Seg {
        flow: u8,
        len: usize,
        flags: u8,
        gap: u32,
        damage: Option<(usize, u8)>,
    },
    Junk(Vec<u8>),
}

fn rx() -> impl Strategy<Value = Rx> {
    prop_oneof![
        8 => (
            0..2u8,
            prop_oneof![4 => Just(100usize), 1 => 0..300usize],
            prop_oneof![4 => Just(ACK), 1 => Just(ACK | PSH), 1 => any::<u8>()],
            prop_oneof![6 => Just(0u32), 1 => any::<u32>()],
            prop::option::weighted(0.1, (0..60usize, 1..=255u8)),
        )
            .prop_map(|(flow, len, flags, gap, damage)| Rx::Seg { flow, len, flags, gap, damage }),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Rx::Junk),
    ]
}

/// The bytes a packet stands for: a GSO super-packet counts its header once per segment.
fn wire_bytes(out: &[u8]) -> usize {
    let h = VnetHdr::parse(&out[..VNET_HDR_LEN]);
    let len = out.len() - VNET_HDR_LEN;
    if h.gso_type == 0 {
        return len;
    }
    let hlen = usize::from(u16::from_ne_bytes([out[2], out[3]]));
    let mss = usize::from(h.gso_size);
    let segs = (len - hlen).div_ceil(mss);
    len + (segs - 1) * hlen
}

proptest! {
    #[test]
    fn the_coalescer_neither_panics_nor_loses_bytes(events in prop::collection::vec(rx(), 0..40)) {
        let mut next = [1000u32, 5000u32];
        let mut inputs = Vec::new();
        for e in events {
            let p = match e {
                Rx::Seg { flow, len, flags, gap, damage } => {
                    let f = usize::from(flow);
                    let seq = next[f].wrapping_add(gap);
                    let payload: Vec<u8> = filler(len);
                    next[f] = seq.wrapping_add(u32::try_from(len).unwrap_or(u32::MAX));
                    let mut p = tcp(flow, seq, flags, &payload);
                    if let Some((at, x)) = damage {
                        if let Some(b) = p.get_mut(at) {
                            *b ^= x;
                        }
                    }
                    p
                }
                Rx::Junk(j) => j,
            };
            // The datapath pushes only packets whose IPv4 addresses its table admits.
            if ipv4_addrs(&p).is_some() {
                inputs.push(p);
            }
        }
        let mut c = Coalescer::new();
        let mut outs: Vec<Vec<u8>> = Vec::new();
        let mut write = |b: &[u8]| outs.push(b.to_vec());
        for p in &inputs {
            c.push(p, &mut write);
        }
        c.flush(&mut write);
        prop_assert!(outs.len() <= inputs.len());
        for o in &outs {
            prop_assert!(o.len() > VNET_HDR_LEN && o.len() <= VNET_HDR_LEN + MAX_PACKET);
            let h = VnetHdr::parse(&o[..VNET_HDR_LEN]);
            if h.gso_type != 0 {
                // A merged super-packet cuts back into full segments and one last.
                let mut segs = Vec::new();
                let cut = segment_tcp4(&o[VNET_HDR_LEN..], usize::from(h.gso_size), &mut segs);
                prop_assert!(cut.is_some(), "a merged packet does not re-segment");
            }
        }
        let sent: usize = inputs.iter().map(Vec::len).sum();
        let written: usize = outs.iter().map(|o| wire_bytes(o)).sum();
        prop_assert_eq!(written, sent);
    }

    #[test]
    fn tun_reads_never_panic(
        flags in any::<u8>(),
        gso_type in prop_oneof![Just(0u8), Just(1u8), Just(0x81u8), any::<u8>()],
        gso_size in prop_oneof![Just(0u16), 1..2000u16, any::<u16>()],
        csum in (any::<u16>(), any::<u16>()),
        payload_len in 0..3000usize,
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        junk in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let payload: Vec<u8> = filler(payload_len);
        let pkt = tcp(0, 1, ACK | PSH, &payload);
        let mut buf = vec![flags, gso_type, 0, 0];
        buf.extend(gso_size.to_ne_bytes());
        buf.extend(csum.0.to_ne_bytes());
        buf.extend(csum.1.to_ne_bytes());
        let mut damaged = buf.clone();
        buf.extend(&pkt);
        damaged.extend(&pkt);
        for (i, x) in damage {
            let at = i.index(damaged.len());
            damaged[at] ^= x;
        }
        for mut b in [buf.clone(), damaged, junk] {
            let mut out = Vec::new();
            if let Some((stride, count)) = tx_packets(&mut b, &mut out) {
                prop_assert!(count >= 1 && stride > 0);
                prop_assert!(out.len() > (count - 1) * stride && out.len() <= count * stride);
            }
        }
        // An intact super-packet: the segments' payloads concatenate back to the payload.
        if gso_size > 0 && payload_len > 0 {
            let mut out = Vec::new();
            let (stride, count) = segment_tcp4(&pkt, usize::from(gso_size), &mut out)
                .expect("a well-formed super-packet segments");
            let mut joined: Vec<u8> = Vec::new();
            for s in out.chunks(stride) {
                prop_assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
                joined.extend(&s[40..]);
            }
            prop_assert_eq!(count, payload_len.div_ceil(usize::from(gso_size)));
            prop_assert_eq!(joined, payload);
        }
    }
}
