//! The CNI invocation environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`, validated once so the rest of the plugin works with typed values.

use crate::error::{code, quoted, CniError, CniResult};
use crate::fault::FaultPoint;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container (idempotent).
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Release everything not in the valid-attachments list.
    Gc,
    /// Report readiness.
    Status,
}

impl Command {
    /// Parses the value of `CNI_COMMAND`.
    pub fn parse(s: &str) -> CniResult<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {}", quoted(other)),
                )
                .with_details("expected one of ADD, DEL, CHECK, VERSION, GC, STATUS"))
            }
        })
    }
}

/// Maximum interface name length (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Validates a Linux interface name.
pub fn validate_ifname(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name.len() > MAX_IFNAME {
        return Err(format!(
            "{what} {} is longer than {MAX_IFNAME} characters",
            quoted(name)
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "{what} {} contains characters not allowed in interface names",
            quoted(name)
        ));
    }
    Ok(())
}

/// The validated per-invocation environment.
#[derive(Debug, Clone)]
pub struct CniEnv {
    /// The verb.
    pub command: Command,
    /// Container id (empty for VERSION, GC and STATUS).
    pub container_id: String,
    /// Netns path (may be empty on DEL).
    pub netns: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// `CNI_ARGS` as a map.
    pub args: BTreeMap<String, String>,
    /// Directories to search for delegated plugins.
    pub path: Vec<PathBuf>,
    /// Test-only: the ADD step to fail after (`FERRY_CNI_FAULT`, see [`crate::fault`]).
    pub fault: FaultPoint,
}

impl CniEnv {
    /// Reads and validates the environment through `get` (normally `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> CniResult<CniEnv> {
        let command = match get("CNI_COMMAND") {
            Some(c) if !c.is_empty() => Command::parse(&c)?,
            _ => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")),
        };
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let require = |name: &str| -> CniResult<String> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(CniError::new(
                    code::INVALID_ENV,
                    format!("{name} is not set"),
                )),
            }
        };
        let (container_id, ifname) = if needs_container {
            (require("CNI_CONTAINERID")?, require("CNI_IFNAME")?)
        } else {
            (
                get("CNI_CONTAINERID").unwrap_or_default(),
                get("CNI_IFNAME").unwrap_or_default(),
            )
        };
        if needs_container {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname, "CNI_IFNAME")
                .map_err(|e| CniError::new(code::INVALID_ENV, e))?;
        }
        // DEL may run with an empty netns (containerd's second DEL); ADD and CHECK need one.
        let netns = if matches!(command, Command::Add | Command::Check) {
            require("CNI_NETNS")?
        } else {
            get("CNI_NETNS").unwrap_or_default()
        };
        let args = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        let fault = FaultPoint::from_lookup(&get)?;
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
            fault,
        })
    }
}

/// Container ids start with an alphanumeric and contain only `[A-Za-z0-9_.-]` (spec).
fn validate_container_id(id: &str) -> CniResult<()> {
    let ok_first = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_first && ok_rest {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!("invalid CNI_CONTAINERID {}", quoted(id)),
        )
        .with_details("must start with an alphanumeric and contain only [A-Za-z0-9_.-]"))
    }
}

/// Parses `K=V;K=V` (order not guaranteed; empty segments ignored).
pub fn parse_cni_args(s: &str) -> CniResult<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("invalid CNI_ARGS pair {}: expected KEY=VALUE", quoted(part)),
            ));
        };
        map.insert(k.to_owned(), v.to_owned());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> CniResult<CniEnv> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn add_requires_container_netns_ifname() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/x"),
        ];
        let e = env(&base).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_IFNAME"), "{e}");
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/x"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_CONTAINERID", "a"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"), "{e}");
    }

    #[test]
    fn del_accepts_empty_netns() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Del);
        assert!(e.netns.is_empty());
    }

    #[test]
    fn rejects_unknown_and_missing_command() {
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            code::INVALID_ENV
        );
        assert_eq!(env(&[]).unwrap_err().code, code::INVALID_ENV);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn validates_names_and_ids() {
        let long = "a".repeat(16);
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", &long),
        ])
        .unwrap_err();
        assert!(e.msg.contains("longer than 15"), "{e}");
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "-bad id"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e}");
    }

    #[test]
    fn parses_cni_args() {
        let m =
            parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default").unwrap();
        assert_eq!(m["K8S_POD_NAME"], "web-0");
        assert_eq!(m.len(), 3);
        assert!(parse_cni_args("novalue").is_err());
    }
}
