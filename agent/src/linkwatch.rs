//! Wakes the reconcile loop when one of the agent's links appears, disappears or changes: the
//! underlay interface (`--iface`), `ferry.1`, `ferry.udp`.
//!
//! A thread holds a `ferry-netlink` link-event subscription ([`LinkEvents`], `RTNLGRP_LINK`) in
//! the agent's network namespace and pokes the loop's [`Notify`] for notifications that name one
//! of those links. Without it, an underlay interface that vanishes (the kernel then also deletes
//! the VXLAN device bound to it, and every route through either) or comes back would only be
//! noticed at the next periodic resync. Pod veths, which come and go all the time in a node's
//! namespace, are filtered out so they cost no reconcile rounds.
//!
//! If the socket overflows (`ENOBUFS`: events were lost) the loop is woken once, since the lost
//! events may have been ours; any other socket failure ends the watch with a log line, and the
//! periodic resync carries on alone.

use ferry_netlink::{LinkEvent, LinkEvents, Received};
use std::io;
use std::sync::Arc;
use tokio::sync::Notify;

/// Opens the subscription in the calling thread's network namespace (so a failure is reported
/// at start) and spawns the thread that reads it. `names` are the links that matter.
pub fn spawn(names: Vec<String>, wake: Arc<Notify>) -> io::Result<()> {
    let events = LinkEvents::subscribe()?;
    std::thread::Builder::new()
        .name("ferry-linkwatch".into())
        .spawn(move || watch(events, &names, &wake))?;
    Ok(())
}

/// True if one of `events` names one of `names`.
fn concerns(events: &[LinkEvent], names: &[String]) -> bool {
    events
        .iter()
        .filter_map(|e| e.name.as_deref())
        .any(|name| names.iter().any(|w| w == name))
}

fn watch(mut events: LinkEvents, names: &[String], wake: &Notify) {
    loop {
        match events.recv() {
            Ok(Received::Overflow) => {
                tracing::debug!("link notifications overflowed: reconciling");
                wake.notify_one();
            }
            Ok(Received::Events(evs)) => {
                if concerns(&evs, names) {
                    wake.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "link watch ended (the periodic resync still runs)");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_netlink::LinkEventKind;

    #[test]
    fn only_named_links_matter() {
        let ev = |name: Option<&str>| LinkEvent {
            kind: LinkEventKind::Del,
            index: 1,
            name: name.map(str::to_owned),
        };
        let names = vec!["eth0".to_owned(), "ferry.1".to_owned()];
        assert!(concerns(&[ev(Some("veth1")), ev(Some("ferry.1"))], &names));
        assert!(!concerns(&[ev(Some("veth1")), ev(None)], &names));
        assert!(!concerns(&[], &names));
    }
}
