//! Internet checksum arithmetic (RFC 1071 / RFC 1624) for the XDP program, which has no
//! `bpf_l3_csum_replace` / `bpf_l4_csum_replace`, and for its tests.
//!
//! Every value is taken **as it sits in the packet**, loaded with the machine's byte order
//! (`u16::from_ne_bytes` of the two bytes): ones'-complement addition commutes with byte
//! swapping, so the results are stored back the same way, never converted.

/// Folds a 32-bit ones'-complement sum to 16 bits (three rounds: enough for any `u32`, and a
/// fixed count for the verifier).
#[inline(always)]
#[must_use]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "three folds leave at most 16 bits"
    )]
    let s = s as u16;
    s
}

/// The checksum after a 32-bit field covered by it changed from `old` to `new` (RFC 1624 eqn.
/// 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
#[must_use]
pub const fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let not_old = !old;
    let sum = (!check) as u32 + (not_old & 0xffff) + (not_old >> 16) + (new & 0xffff) + (new >> 16);
    !fold(sum)
}

/// [`replace4`] for a 16-bit field.
#[inline(always)]
#[must_use]
pub const fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// The folded (not complemented) sum of the IPv4 pseudo-header: what a sender with checksum
/// offload (`CHECKSUM_PARTIAL`) leaves in the TCP / UDP checksum field for the device to
/// finish. `l4_len` is in host order.
#[inline(always)]
#[must_use]
pub const fn pseudo_header(saddr: u32, daddr: u32, proto: u8, l4_len: u16) -> u16 {
    let proto_word = u16::from_ne_bytes([0, proto]) as u32;
    let len = l4_len.to_be_bytes();
    let len_word = u16::from_ne_bytes(len) as u32;
    fold(
        (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16) + proto_word + len_word,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full checksum of a pseudo-header + segment, from scratch, in packet order.
    fn full(saddr: [u8; 4], daddr: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
        let mut sum = 0u32;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_ne_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&saddr);
        add(&daddr);
        add(&[0, proto]);
        add(&u16::try_from(seg.len()).unwrap().to_be_bytes());
        add(seg);
        !fold(sum)
    }

    fn segment(check: u16) -> [u8; 23] {
        let mut seg = [7u8; 23];
        seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
        seg[2..4].copy_from_slice(&30080u16.to_be_bytes());
        seg[16..18].copy_from_slice(&check.to_ne_bytes());
        seg
    }

    #[test]
    fn incremental_updates_match_a_full_recomputation() {
        let (s, d) = ([10, 99, 0, 254], [10, 99, 0, 10]);
        let c = full(s, d, 6, &segment(0));
        let seg = segment(c);
        assert_eq!(full(s, d, 6, &seg), 0, "valid before");
        // New destination address and port, as the XDP program rewrites them.
        let nd = [10, 244, 2, 5];
        let c2 = replace4(c, u32::from_ne_bytes(d), u32::from_ne_bytes(nd));
        let mut seg2 = seg;
        seg2[2..4].copy_from_slice(&8080u16.to_be_bytes());
        let c2 = replace2(
            c2,
            u16::from_ne_bytes(30080u16.to_be_bytes()),
            u16::from_ne_bytes(8080u16.to_be_bytes()),
        );
        seg2[16..18].copy_from_slice(&c2.to_ne_bytes());
        assert_eq!(full(s, nd, 6, &seg2), 0, "valid after");
        let mut fresh = seg2;
        fresh[16..18].copy_from_slice(&[0, 0]);
        assert_eq!(c2, full(s, nd, 6, &fresh), "same as computed from scratch");
    }

    #[test]
    fn the_ip_header_checksum_updates_too() {
        let mut hdr = [
            0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 99, 0, 254, 10, 99, 0, 10,
        ];
        let sum = |h: &[u8]| {
            !fold(
                h.chunks(2)
                    .map(|c| u32::from(u16::from_ne_bytes([c[0], c[1]])))
                    .sum(),
            )
        };
        let c = sum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_ne_bytes());
        let old = u32::from_ne_bytes([10, 99, 0, 10]);
        let new = u32::from_ne_bytes([10, 244, 1, 5]);
        let c2 = replace4(c, old, new);
        hdr[16..20].copy_from_slice(&[10, 244, 1, 5]);
        hdr[10..12].copy_from_slice(&c2.to_ne_bytes());
        assert_eq!(sum(&hdr), 0);
    }

    #[test]
    fn a_partial_checksum_is_the_pseudo_header_sum() {
        let (s, d) = ([10, 99, 0, 254], [10, 99, 0, 10]);
        // What the kernel's tcp_v4_send_check leaves with offload: ~csum_tcpudp_magic(...)
        // = the folded pseudo-header sum; a full checksum of the same segment differs.
        let zero = segment(0);
        let partial = pseudo_header(u32::from_ne_bytes(s), u32::from_ne_bytes(d), 6, 23);
        let mut sum = 0u32;
        for w in [[10, 99], [0, 254], [10, 99], [0, 10], [0, 6]] {
            sum += u32::from(u16::from_ne_bytes(w));
        }
        sum += u32::from(u16::from_ne_bytes(23u16.to_be_bytes()));
        assert_eq!(partial, fold(sum));
        assert_ne!(
            partial,
            full(s, d, 6, &zero),
            "a full checksum is not the pseudo sum"
        );
    }
}
