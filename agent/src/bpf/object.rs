//! The embedded eBPF objects, and a summary of what each contains read from its ELF (no kernel,
//! no privileges needed).

use std::fmt;

use aya_obj::{Object, ProgramSection};

use super::BpfError;

/// A BPF object built from one `ferry-ebpf` binary and embedded in this crate.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedObject {
    /// The `ferry-ebpf` binary it was built from, e.g. `"sock-lb"`.
    pub name: &'static str,
    /// The ELF object, 8-byte aligned; empty when built with `AYA_BUILD_SKIP`.
    pub bytes: &'static [u8],
}

impl EmbeddedObject {
    /// The bytes, or [`BpfError::NotBuilt`] if the build skipped the eBPF programs.
    pub fn bytes(&self) -> Result<&'static [u8], BpfError> {
        if self.bytes.is_empty() {
            Err(BpfError::NotBuilt { object: self.name })
        } else {
            Ok(self.bytes)
        }
    }
}

/// The `sock-lb` object (`ebpf/src/sock_lb.rs`).
pub(crate) const SOCK_LB: EmbeddedObject = EmbeddedObject {
    name: "sock-lb",
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock-lb")),
};

/// The `pod-fastpath` object (`ebpf/src/pod_fastpath.rs`).
pub(crate) const POD_FASTPATH: EmbeddedObject = EmbeddedObject {
    name: "pod-fastpath",
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pod-fastpath")),
};

/// The `nodeport` object (`ebpf/src/nodeport.rs`): tc programs for traffic from outside the node.
pub(crate) const NODEPORT: EmbeddedObject = EmbeddedObject {
    name: "nodeport",
    bytes: aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodeport")),
};

static OBJECTS: [EmbeddedObject; 3] = [SOCK_LB, POD_FASTPATH, NODEPORT];

/// Every embedded object.
pub fn embedded_objects() -> &'static [EmbeddedObject] {
    &OBJECTS
}

/// One program of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSummary {
    /// The program's (function) name, which is also its kernel name.
    pub name: String,
    /// Where it attaches, in the ELF section syntax, e.g. `cgroup/connect4`.
    pub attach: String,
}

/// The programs and maps of an object, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSummary {
    /// The object's name.
    pub object: &'static str,
    /// Its size in bytes.
    pub size: usize,
    /// Its programs.
    pub programs: Vec<ProgramSummary>,
    /// Its map names.
    pub maps: Vec<String>,
}

impl fmt::Display for ObjectSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({} bytes)", self.object, self.size)?;
        for program in &self.programs {
            writeln!(f, "  program {} ({})", program.name, program.attach)?;
        }
        for map in &self.maps {
            writeln!(f, "  map {map}")?;
        }
        Ok(())
    }
}

/// Parses an embedded object's ELF and lists its programs and maps.
pub fn describe(object: &EmbeddedObject) -> Result<ObjectSummary, BpfError> {
    let bytes = object.bytes()?;
    let parsed = Object::parse(bytes).map_err(|source| BpfError::Parse {
        object: object.name,
        source: Box::new(source),
    })?;
    let mut programs: Vec<_> = parsed
        .programs
        .iter()
        .map(|(name, program)| ProgramSummary {
            name: name.clone(),
            attach: attach_point(&program.section),
        })
        .collect();
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut maps: Vec<_> = parsed.maps.keys().cloned().collect();
    maps.sort();
    Ok(ObjectSummary {
        object: object.name,
        size: bytes.len(),
        programs,
        maps,
    })
}

/// The attach point of a program section: ELF section syntax for the cgroup socket-address hooks
/// Ferry uses, aya's debug form for anything else.
fn attach_point(section: &ProgramSection) -> String {
    use aya_obj::programs::CgroupSockAddrAttachType as T;

    let ProgramSection::CgroupSockAddr { attach_type } = section else {
        return format!("{section:?}");
    };
    let hook = match attach_type {
        T::Bind4 => "bind4",
        T::Bind6 => "bind6",
        T::Connect4 => "connect4",
        T::Connect6 => "connect6",
        T::GetPeerName4 => "getpeername4",
        T::GetPeerName6 => "getpeername6",
        T::GetSockName4 => "getsockname4",
        T::GetSockName6 => "getsockname6",
        T::UDPSendMsg4 => "sendmsg4",
        T::UDPSendMsg6 => "sendmsg6",
        T::UDPRecvMsg4 => "recvmsg4",
        T::UDPRecvMsg6 => "recvmsg6",
    };
    format!("cgroup/{hook}")
}

#[cfg(test)]
mod tests {
    use ferry_common::names;

    use super::*;

    /// The names `ferry-common` promises are the ones the eBPF side actually compiled in.
    #[test]
    fn sock_lb_object_matches_common_names() {
        let summary = describe(&SOCK_LB).expect("sock-lb must be built (AYA_BUILD_SKIP unset)");
        let programs: Vec<_> = summary
            .programs
            .iter()
            .map(|p| (p.name.as_str(), p.attach.as_str()))
            .collect();
        assert_eq!(
            programs,
            [
                (names::CONNECT4, "cgroup/connect4"),
                (names::GETPEERNAME4, "cgroup/getpeername4"),
                (names::RECVMSG4, "cgroup/recvmsg4"),
                (names::SENDMSG4, "cgroup/sendmsg4"),
            ]
        );
        assert_eq!(summary.maps, names::MAPS);
    }

    /// The pod fast path's programs and maps are the ones `ferry_common::fastpath` names.
    #[test]
    fn pod_fastpath_object_matches_common_names() {
        use ferry_common::fastpath::names as fp;
        let summary = describe(&POD_FASTPATH).expect("pod-fastpath must be built");
        let programs: Vec<_> = summary.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(programs, fp::PROGRAMS);
        assert!(summary
            .programs
            .iter()
            .all(|p| p.attach.contains("SchedClassifier")));
        assert_eq!(summary.maps, fp::MAPS);
    }

    /// The `nodeport` object's programs and maps are the ones `ferry_common::nat` names.
    #[test]
    fn nodeport_object_matches_common_names() {
        use ferry_common::nat::names as np;
        let summary = describe(&NODEPORT).expect("nodeport must be built");
        let tc: Vec<_> = summary
            .programs
            .iter()
            .filter(|p| p.attach.contains("SchedClassifier"))
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(tc, np::PROGRAMS);
        let mut xdp: Vec<_> = summary
            .programs
            .iter()
            .filter(|p| p.attach.contains("Xdp"))
            .map(|p| p.name.as_str())
            .collect();
        xdp.sort_unstable();
        assert_eq!(xdp, [np::XDP, np::XDP_PASS]);
        assert_eq!(summary.programs.len(), np::PROGRAMS.len() + 2);
        assert_eq!(summary.maps, np::MAPS);
    }

    #[test]
    fn embedded_objects_lists_sock_lb() {
        let names: Vec<_> = embedded_objects().iter().map(|o| o.name).collect();
        assert_eq!(names, ["sock-lb", "pod-fastpath", "nodeport"]);
    }
}
