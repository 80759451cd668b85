//! The socket ([`Netlink`]), the one request/ack/dump loop every operation goes through, and the
//! framing of a datagram into netlink messages (shared with [`crate::events`]).
//!
//! A socket is bound to the network namespace it was created in: [`Netlink::new_in`] creates one
//! inside a given namespace (on the calling thread, which returns to its own namespace at once),
//! after which every operation on it acts there.

use crate::error::NlError;
use ferry_sys::netns::{NetnsError, NetnsFd};
use netlink_packet_core::{
    DecodeError, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;

/// Size of the receive buffer: a dump datagram is at most a page or so, a notification smaller.
pub(crate) const RECV_BUF: usize = 64 * 1024;

/// A blocking rtnetlink socket.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Strict checking lets the kernel filter dumps by the header we send.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Opens a socket inside `ns`; the thread returns to its own namespace afterwards.
    pub fn new_in(ns: &NetnsFd) -> Result<Netlink, NetnsError> {
        ns.run(Netlink::new)?.map_err(|source| NetnsError::Io {
            op: "open netlink socket in",
            path: ns.path().to_path_buf(),
            source,
        })
    }

    /// Sends one request and collects the replies: a dump until NLMSG_DONE, an ACKed request until
    /// its ACK, anything else until its first reply. Errors carry `op` and the kernel's errno
    /// (also when a dump fails to start and reports it in NLMSG_DONE). Every operation of this
    /// crate is built on it; it is public for operations other crates may need that have no
    /// wrapper here yet.
    pub fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let out = encode(msg, flags, self.seq);
        self.socket.send(&out, 0).map_err(|e| NlError::new(op, e))?;

        let mut replies = Vec::new();
        loop {
            let n = {
                let mut slice = &mut self.buf[..];
                self.socket
                    .recv(&mut slice, 0)
                    .map_err(|e| NlError::new(op, e))?
            };
            for reply in frames(&self.buf[..n]) {
                let reply = reply
                    .map_err(|e| NlError::new(op, io::Error::new(io::ErrorKind::InvalidData, e)))?;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match step(reply.payload, flags, &mut replies) {
                    Step::More => {}
                    Step::Done => return Ok(replies),
                    Step::Failed(e) => return Err(NlError::new(op, e)),
                }
            }
        }
    }
}

/// Serializes a request with `NLM_F_REQUEST | flags` and sequence number `seq`.
fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out);
    out
}

/// What one reply of ours means for the request in flight.
#[derive(Debug)]
enum Step {
    /// Keep reading.
    More,
    /// The request is answered; the collected replies are the result.
    Done,
    /// The kernel refused it.
    Failed(io::Error),
}

/// Handles one reply to a request sent with `flags`, collecting inner messages in `replies`.
fn step(
    payload: NetlinkPayload<RouteNetlinkMessage>,
    flags: u16,
    replies: &mut Vec<RouteNetlinkMessage>,
) -> Step {
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    match payload {
        // An ACK is an error message with no code.
        NetlinkPayload::Error(err) => match err.code {
            None => Step::Done,
            Some(_) => Step::Failed(err.to_io()),
        },
        // A dump that fails to start reports its errno in NLMSG_DONE.
        NetlinkPayload::Done(d) if d.code < 0 => {
            Step::Failed(io::Error::from_raw_os_error(-d.code))
        }
        NetlinkPayload::Done(_) => Step::Done,
        NetlinkPayload::InnerMessage(m) => {
            replies.push(m);
            if !dump && flags & NLM_F_ACK == 0 {
                Step::Done
            } else {
                Step::More
            }
        }
        _ => Step::More,
    }
}

/// The netlink messages of one received datagram, in order. A message that does not decode is
/// yielded as an error and ends the iteration (its length cannot be trusted); so does a header
/// of length 0.
pub(crate) fn frames(buf: &[u8]) -> Frames<'_> {
    Frames { buf, offset: 0 }
}

/// Iterator returned by [`frames`].
#[derive(Debug)]
pub(crate) struct Frames<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl Iterator for Frames<'_> {
    type Item = Result<NetlinkMessage<RouteNetlinkMessage>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.buf.len() {
            return None;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[self.offset..]) {
            Err(e) => {
                self.offset = self.buf.len();
                Some(Err(e))
            }
            Ok(msg) => {
                let len = msg.header.length as usize;
                if len == 0 {
                    self.offset = self.buf.len();
                    return None;
                }
                // Messages are aligned to 4 bytes (NLMSG_ALIGN).
                self.offset += (len + 3) & !3;
                Some(Ok(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NLM_F_CREATE};
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use std::num::NonZeroI32;

    fn link_named(name: &str) -> RouteNetlinkMessage {
        let mut l = LinkMessage::default();
        l.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(l)
    }

    #[test]
    fn frames_split_a_datagram() {
        let mut buf = encode(link_named("abc"), 0, 7);
        buf.extend(encode(link_named("eth0"), 0, 8));
        let msgs: Vec<_> = frames(&buf).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].header.sequence_number, 7);
        assert_eq!(msgs[1].header.sequence_number, 8);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = &msgs[1].payload else {
            panic!("not a link: {:?}", msgs[1].payload);
        };
        assert_eq!(l.attributes, vec![LinkAttribute::IfName("eth0".into())]);
    }

    #[test]
    fn frames_stop_at_garbage() {
        let mut buf = encode(link_named("eth0"), 0, 1);
        buf.extend([0xff; 7]);
        let got: Vec<_> = frames(&buf).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(got[1].is_err());
        assert_eq!(frames(&[]).count(), 0);
    }

    #[test]
    fn request_flags_and_sequence() {
        let buf = encode(link_named("x"), NLM_F_ACK | NLM_F_CREATE, 42);
        let msg = frames(&buf).next().unwrap().unwrap();
        assert_eq!(msg.header.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(msg.header.sequence_number, 42);
        assert_eq!(msg.header.length as usize, buf.len());
    }

    fn error(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut e = ErrorMessage::default();
        e.code = NonZeroI32::new(code);
        NetlinkPayload::Error(e)
    }

    fn done(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut d = DoneMessage::default();
        d.code = code;
        NetlinkPayload::Done(d)
    }

    #[test]
    fn ack_error_done_and_replies() {
        let mut r = Vec::new();
        assert!(matches!(step(error(0), NLM_F_ACK, &mut r), Step::Done));
        match step(error(-libc::EEXIST), NLM_F_ACK, &mut r) {
            Step::Failed(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST)),
            s => panic!("{s:?}"),
        }
        match step(done(-libc::EOPNOTSUPP), NLM_F_DUMP, &mut r) {
            Step::Failed(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP)),
            s => panic!("{s:?}"),
        }
        // A dump collects until DONE; an ACKed request until its ACK; a plain get stops at once.
        let inner = || NetlinkPayload::InnerMessage(link_named("a"));
        assert!(matches!(step(inner(), NLM_F_DUMP, &mut r), Step::More));
        assert!(matches!(step(inner(), NLM_F_ACK, &mut r), Step::More));
        assert!(matches!(step(inner(), 0, &mut r), Step::Done));
        assert_eq!(r.len(), 3);
        assert!(matches!(step(done(0), NLM_F_DUMP, &mut r), Step::Done));
    }
}
