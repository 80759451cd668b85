//! The generator's wire format: the 16-byte header a TCP client sends in the same write as its
//! first request, and the 16-byte header of every UDP datagram (with the bodies of the
//! `udp_stream` report query and reply). The layout is described in the [`super`] module header;
//! everything is big-endian. Decoding checks every field, so a malformed header is refused with a
//! reason instead of being half-trusted.

use super::Close;

/// Header length, TCP and UDP.
pub(crate) const HDR: usize = 16;
/// First four bytes of a TCP connection.
const TCP_MAGIC: [u8; 4] = *b"FBT1";
/// First four bytes of every UDP datagram.
const UDP_MAGIC: [u8; 4] = *b"FBU1";
/// Largest request or response a header may announce (16 MiB): a bound on the server's buffers.
pub(crate) const MAX_SIZE: u32 = 16 << 20;
/// Body of a [`UdpKind::Query`]: the first and one-past-last sequence of the window.
pub(crate) const QUERY_LEN: usize = HDR + 8;
/// Body of a [`UdpKind::Report`]: unique received, duplicated, reordered (in the queried range)
/// and every datagram received for the token.
pub(crate) const REPORT_LEN: usize = HDR + 32;

/// What a TCP connection does after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The client writes until it shuts down its side; the server reads and counts, then writes
    /// the total it read as 8 bytes and closes.
    Stream = 1,
    /// Request/response until the client closes.
    Rr = 2,
    /// One request/response, then the close order of the header.
    Crr = 3,
}

/// The header of a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpHeader {
    /// What follows.
    pub(crate) mode: Mode,
    /// `Crr` close order (ignored otherwise, sent as `Server`).
    pub(crate) close: Close,
    /// Request size (`Stream`: the client's write size, informative).
    pub(crate) req: u32,
    /// Response size (`Stream`: 0).
    pub(crate) resp: u32,
}

impl TcpHeader {
    /// The 16 bytes on the wire.
    pub(crate) fn encode(&self) -> [u8; HDR] {
        let mut b = [0u8; HDR];
        b[..4].copy_from_slice(&TCP_MAGIC);
        b[4] = self.mode as u8;
        b[5] = match self.close {
            Close::Server => 0,
            Close::Client => 1,
            Close::Rst => 2,
        };
        b[8..12].copy_from_slice(&self.req.to_be_bytes());
        b[12..16].copy_from_slice(&self.resp.to_be_bytes());
        b
    }

    /// Parses and checks a header; the error says what is wrong.
    pub(crate) fn decode(b: &[u8; HDR]) -> Result<TcpHeader, &'static str> {
        if b[..4] != TCP_MAGIC {
            return Err("bad magic");
        }
        let mode = match b[4] {
            1 => Mode::Stream,
            2 => Mode::Rr,
            3 => Mode::Crr,
            _ => return Err("unknown mode"),
        };
        let close = match b[5] {
            0 => Close::Server,
            1 => Close::Client,
            2 => Close::Rst,
            _ => return Err("unknown close order"),
        };
        if b[6..8] != [0, 0] {
            return Err("reserved bytes not zero");
        }
        let req = be32(&b[8..12]);
        let resp = be32(&b[12..16]);
        if req > MAX_SIZE || resp > MAX_SIZE {
            return Err("size above 16 MiB");
        }
        // `Crr` with no request and no response is `tcp_cc`'s hello: the server closes at once.
        let cc_hello = mode == Mode::Crr && req == 0 && resp == 0;
        if mode != Mode::Stream && !cc_hello && (req == 0 || resp == 0) {
            return Err("zero request or response size");
        }
        Ok(TcpHeader {
            mode,
            close,
            req,
            resp,
        })
    }
}

/// What a UDP datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpKind {
    /// `udp_rr` request; the server echoes the datagram unchanged (so the reply is the same size).
    Rr = 1,
    /// `udp_stream` data; the server records the sequence for the token.
    Data = 2,
    /// `udp_stream` report query (body: first and one-past-last sequence of the window).
    Query = 3,
    /// The server's reply to a query.
    Report = 4,
}

/// The header of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpHeader {
    /// What it is.
    pub(crate) kind: UdpKind,
    /// Random per client flow: the server's key for its sequence accounting.
    pub(crate) token: u32,
    /// Sequence number (per flow, from 0).
    pub(crate) seq: u32,
}

impl UdpHeader {
    /// Writes the header into the first [`HDR`] bytes of `b` (which must be at least that long).
    pub(crate) fn write(&self, b: &mut [u8]) {
        b[..4].copy_from_slice(&UDP_MAGIC);
        b[4] = self.kind as u8;
        b[5..8].fill(0);
        b[8..12].copy_from_slice(&self.token.to_be_bytes());
        b[12..16].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Parses the header at the start of a datagram.
    pub(crate) fn read(b: &[u8]) -> Result<UdpHeader, &'static str> {
        if b.len() < HDR {
            return Err("datagram shorter than the header");
        }
        if b[..4] != UDP_MAGIC {
            return Err("bad magic");
        }
        let kind = match b[4] {
            1 => UdpKind::Rr,
            2 => UdpKind::Data,
            3 => UdpKind::Query,
            4 => UdpKind::Report,
            _ => return Err("unknown kind"),
        };
        if b[5..8] != [0, 0, 0] {
            return Err("reserved bytes not zero");
        }
        Ok(UdpHeader {
            kind,
            token: be32(&b[8..12]),
            seq: be32(&b[12..16]),
        })
    }
}

/// A big-endian u32 from exactly 4 bytes.
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A big-endian u64 from exactly 8 bytes.
pub(crate) fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_header_round_trips_and_rejects_garbage() {
        let h = TcpHeader {
            mode: Mode::Crr,
            close: Close::Rst,
            req: 14,
            resp: 1024,
        };
        let b = h.encode();
        assert_eq!(TcpHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(TcpHeader::decode(&bad), Err("bad magic"));
        let mut bad = b;
        bad[4] = 9;
        assert_eq!(TcpHeader::decode(&bad), Err("unknown mode"));
        let mut bad = b;
        bad[12..16].copy_from_slice(&(MAX_SIZE + 1).to_be_bytes());
        assert_eq!(TcpHeader::decode(&bad), Err("size above 16 MiB"));
        let mut bad = b;
        bad[8..12].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            TcpHeader::decode(&bad),
            Err("zero request or response size")
        );
    }

    #[test]
    fn the_cc_hello_is_a_crr_header_without_request_or_response() {
        let h = TcpHeader {
            mode: Mode::Crr,
            close: Close::Server,
            req: 0,
            resp: 0,
        };
        assert_eq!(TcpHeader::decode(&h.encode()), Ok(h));
        let rr = TcpHeader {
            mode: Mode::Rr,
            ..h
        };
        assert_eq!(
            TcpHeader::decode(&rr.encode()),
            Err("zero request or response size")
        );
    }

    #[test]
    fn udp_header_round_trips_and_rejects_garbage() {
        let mut b = [0u8; 20];
        let h = UdpHeader {
            kind: UdpKind::Data,
            token: 0xdead_beef,
            seq: 7,
        };
        h.write(&mut b);
        assert_eq!(UdpHeader::read(&b), Ok(h));
        assert_eq!(
            UdpHeader::read(&b[..15]),
            Err("datagram shorter than the header")
        );
        b[4] = 0;
        assert_eq!(UdpHeader::read(&b), Err("unknown kind"));
    }
}
