//! Test-only fault injection for ADD.
//!
//! `FERRY_CNI_FAULT=<step>` makes ADD fail right after `<step>` (one of [`ADD_STEPS`]) has done its
//! work, as if the next operation had failed. The privileged tests use it to prove that a failure
//! at any point of ADD rolls back exactly what that invocation created and nothing else.
//!
//! It is inert unless the variable is set, and no runtime sets it. It is read through the same
//! lookup as the `CNI_*` variables, and an unknown step name is an error, so a misspelt step in a
//! test cannot silently turn into an ADD that succeeds.

use crate::error::{code, CniError, CniResult};

/// The environment variable naming the step to fail after.
pub const VAR: &str = "FERRY_CNI_FAULT";

/// The steps of ADD, in the order they run; each ends with a fault point of the same name.
pub const ADD_STEPS: &[&str] = &[
    // Open CNI_NETNS and check it is a network namespace.
    "netns",
    // Read the node network file (when the config takes its subnet from it).
    "node-network",
    // Open the node's netlink socket; the bridge name must not be taken by a non-bridge link.
    "bridge-check",
    // CNI_IFNAME must not exist in the pod netns.
    "ifname-check",
    // This attachment's host veth must not be alive in another netns.
    "host-veth-check",
    // Reserve addresses (built-in store or delegated IPAM).
    "ipam",
    // Find or create the bridge, set it up.
    "bridge",
    // Gateway address on the bridge, forwarding.
    "gateway",
    // Create the veth pair.
    "veth",
    // Hairpin mode on the bridge port.
    "hairpin",
    // Addresses on the pod interface.
    "pod-address",
    // Pod interface up.
    "pod-up",
    // Routes in the pod netns.
    "routes",
    // ipMasq rules.
    "masq",
];

/// Where (if anywhere) this invocation is to fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPoint(Option<&'static str>);

impl FaultPoint {
    /// No fault: what every real invocation gets.
    pub const NONE: FaultPoint = FaultPoint(None);

    /// Reads [`VAR`] through `get`. Unset or empty: no fault; an unknown step name is an error.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> CniResult<FaultPoint> {
        match get(VAR) {
            None => Ok(FaultPoint::NONE),
            Some(s) if s.is_empty() => Ok(FaultPoint::NONE),
            Some(s) => ADD_STEPS
                .iter()
                .find(|step| **step == s)
                .map(|step| FaultPoint(Some(step)))
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_ENV,
                        format!("{VAR} names no ADD step: {}", crate::error::quoted(&s)),
                    )
                    .with_details(format!("steps: {}", ADD_STEPS.join(", ")))
                }),
        }
    }

    /// The step this invocation fails after, if any.
    pub fn step(self) -> Option<&'static str> {
        self.0
    }

    /// Called when `step` has done its work: fails if this is the step to fail after.
    pub fn after(self, step: &'static str) -> CniResult<()> {
        debug_assert!(ADD_STEPS.contains(&step), "unknown ADD step {step}");
        if self.0 == Some(step) {
            Err(CniError::new(
                code::IO_FAILURE,
                format!("injected fault after ADD step {step} ({VAR})"),
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(v: Option<&str>) -> CniResult<FaultPoint> {
        FaultPoint::from_lookup(|k| {
            assert_eq!(k, VAR);
            v.map(str::to_owned)
        })
    }

    #[test]
    fn unset_or_empty_is_inert_and_unknown_names_are_rejected() {
        assert_eq!(lookup(None).unwrap(), FaultPoint::NONE);
        assert_eq!(lookup(Some("")).unwrap(), FaultPoint::NONE);
        for step in ADD_STEPS {
            assert!(FaultPoint::NONE.after(step).is_ok());
        }
        let e = lookup(Some("vteh")).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("\"vteh\""), "{e}");
        assert!(e.details.contains("veth"), "{e}");
    }

    #[test]
    fn fails_after_exactly_the_named_step() {
        let f = lookup(Some("veth")).unwrap();
        assert_eq!(f.step(), Some("veth"));
        for step in ADD_STEPS.iter().filter(|s| **s != "veth") {
            assert!(f.after(step).is_ok(), "{step}");
        }
        let e = f.after("veth").unwrap_err();
        assert!(e.msg.contains("after ADD step veth"), "{e}");
    }

    /// Every step listed is a fault point in ADD's code, exactly once, in the listed order, and
    /// ADD has no fault point that is not listed (so the privileged test that walks
    /// [`ADD_STEPS`] covers every one).
    #[test]
    fn every_step_is_a_fault_point_in_add_and_vice_versa() {
        let src = include_str!("bridge.rs");
        let code = src.split("#[cfg(test)]").next().unwrap_or(src);
        let needle = ".after(\"";
        let mut found = Vec::new();
        let mut rest = code;
        while let Some(i) = rest.find(needle) {
            rest = &rest[i + needle.len()..];
            let end = rest.find('"').unwrap();
            found.push(&rest[..end]);
        }
        assert_eq!(found, ADD_STEPS, "fault points in bridge.rs vs ADD_STEPS");
    }
}
