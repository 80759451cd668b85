//! Traffic control: the `clsact` qdisc that tc BPF programs attach under (its ingress and egress
//! hooks), added and deleted per interface, and the qdiscs of an interface listed.
//!
//! `clsact` takes the `ffff:` handle under the special parent `ffff:fff1` (shared with the
//! `ingress` qdisc, so a link has at most one of the two), exactly as
//! `tc qdisc add dev D clsact` creates it.

use crate::error::NlError;
use crate::socket::Netlink;
use crate::IfIndex;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;

/// The kind of the qdisc tc BPF programs attach under.
pub const CLSACT: &str = "clsact";

/// A queueing discipline, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    /// The interface it is attached to.
    pub index: IfIndex,
    /// Its kind (`"clsact"`, `"noqueue"`, `"fq_codel"`, ...).
    pub kind: String,
    /// Its handle (`major << 16 | minor`; `tc` prints `ffff:` for `0xffff0000`).
    pub handle: u32,
    /// Its parent (`0xffffffff` for the root, `0xfffffff1` for clsact / ingress).
    pub parent: u32,
}

impl Qdisc {
    /// True for a `clsact` qdisc.
    pub fn is_clsact(&self) -> bool {
        self.kind == CLSACT
    }
}

fn tc_index(op: &str, index: IfIndex) -> Result<i32, NlError> {
    i32::try_from(index)
        .map_err(|e| NlError::new(op, io::Error::new(io::ErrorKind::InvalidInput, e)))
}

fn clsact_message(index: i32) -> TcMessage {
    let mut msg = TcMessage::with_index(index);
    msg.header.parent = TcHandle::CLSACT;
    msg.header.handle = TcHandle {
        major: TcHandle::CLSACT.major,
        minor: 0,
    };
    msg.attributes.push(TcAttribute::Kind(CLSACT.to_owned()));
    msg
}

fn qdisc_of(m: &TcMessage) -> Option<Qdisc> {
    Some(Qdisc {
        index: IfIndex::try_from(m.header.index).ok()?,
        kind: m.attributes.iter().find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        })?,
        handle: m.header.handle.into(),
        parent: m.header.parent.into(),
    })
}

impl Netlink {
    /// Adds a `clsact` qdisc to interface `index`. EEXIST (one is there already, or an `ingress`
    /// qdisc holds its place) is returned to the caller.
    pub fn add_clsact(&mut self, index: IfIndex) -> Result<(), NlError> {
        let op = format!("add clsact qdisc to {index}");
        let msg = clsact_message(tc_index(&op, index)?);
        self.request(
            &op,
            RouteNetlinkMessage::NewQueueDiscipline(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes the `clsact` qdisc of interface `index` (and with it every tc filter under it).
    /// `Ok(false)` if the interface has none; an `ingress` qdisc in its place is left alone.
    pub fn del_clsact(&mut self, index: IfIndex) -> Result<bool, NlError> {
        let op = format!("delete clsact qdisc of {index}");
        let tc_index = tc_index(&op, index)?;
        if !self.qdiscs(Some(index))?.iter().any(Qdisc::is_clsact) {
            return Ok(false);
        }
        match self.request(
            &op,
            RouteNetlinkMessage::DelQueueDiscipline(clsact_message(tc_index)),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The qdiscs of interface `index`, or of every interface.
    pub fn qdiscs(&mut self, index: Option<IfIndex>) -> Result<Vec<Qdisc>, NlError> {
        let req = TcMessage::with_index(match index {
            Some(i) => tc_index("dump qdiscs", i)?,
            None => 0,
        });
        let replies = self.request(
            "dump qdiscs",
            RouteNetlinkMessage::GetQueueDiscipline(req),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewQueueDiscipline(m) => qdisc_of(m),
                _ => None,
            })
            .filter(|q| index.is_none_or(|i| q.index == i))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clsact_is_what_tc_sends() {
        let msg = clsact_message(7);
        assert_eq!(msg.header.index, 7);
        assert_eq!(u32::from(msg.header.parent), 0xffff_fff1);
        assert_eq!(u32::from(msg.header.handle), 0xffff_0000);
        let q = qdisc_of(&msg).unwrap();
        assert!(q.is_clsact());
        assert_eq!((q.index, q.handle, q.parent), (7, 0xffff_0000, 0xffff_fff1));
    }

    #[test]
    fn qdiscs_need_a_kind_and_a_real_index() {
        assert_eq!(qdisc_of(&TcMessage::with_index(3)), None);
        let mut m = clsact_message(-1);
        assert_eq!(qdisc_of(&m), None);
        m.header.index = 2;
        m.attributes = vec![TcAttribute::Kind("noqueue".into())];
        assert!(!qdisc_of(&m).unwrap().is_clsact());
    }

    #[test]
    fn huge_indexes_are_refused_locally() {
        let e = tc_index("op", u32::MAX).unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::InvalidInput);
    }
}
