//! Dispatch of one plugin invocation: environment and config in, a JSON answer or a CNI error out.

use crate::config::NetConf;
use crate::env::{CniEnv, Command};
use crate::error::{code, CniError};
use crate::version::{self, Version};
use crate::{bridge, loopback};

/// Which plugin this binary acts as (it is multi-call: `ferry-cni` or `loopback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// The bridge plugin.
    Bridge,
    /// The loopback plugin.
    Loopback,
}

impl Personality {
    /// Chooses by the name the binary was invoked as.
    pub fn from_argv0(argv0: &str) -> Personality {
        let base = std::path::Path::new(argv0)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if base == "loopback" {
            Personality::Loopback
        } else {
            Personality::Bridge
        }
    }
}

/// A failed invocation: the error and the version to print it in.
#[derive(Debug)]
pub struct Failure {
    /// The error.
    pub error: CniError,
    /// `cniVersion` of the error object.
    pub version: String,
}

fn requested_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        })
        .filter(|v| Version::parse_supported(v).is_some())
        .unwrap_or_else(|| version::LATEST.to_owned())
}

/// Runs one invocation. `Ok(Some(v))` is printed on stdout; `Ok(None)` prints nothing.
pub fn run(
    who: Personality,
    get_env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<serde_json::Value>, Failure> {
    let fail = |error: CniError| Failure {
        error,
        version: requested_version(stdin),
    };
    let env = CniEnv::from_lookup(get_env).map_err(fail)?;
    if env.command == Command::Version {
        return Ok(Some(version::version_info(&requested_version(stdin))));
    }
    let version = match who {
        Personality::Loopback => {
            let doc: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
                fail(
                    CniError::new(code::DECODE, "failed to decode network configuration")
                        .with_details(e),
                )
            })?;
            NetConf::version_of(&doc).map_err(fail)?
        }
        Personality::Bridge => Version::V1_0_0,
    };
    if who == Personality::Loopback {
        return loopback::run(&env, version).map_err(fail);
    }
    let conf = NetConf::parse(stdin).map_err(fail)?;
    let fail = |error: CniError| Failure {
        error,
        version: conf.version.to_string(),
    };
    let need = |min: Version, verb: &str| -> Result<(), Failure> {
        if conf.version < min {
            Err(fail(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "{verb} needs cniVersion {min} or later, the config says {}",
                    conf.version
                ),
            )))
        } else {
            Ok(())
        }
    };
    match env.command {
        Command::Add => bridge::add(&conf, &env)
            .map(|out| Some(out.encode(conf.version)))
            .map_err(fail),
        Command::Del => bridge::del(&conf, &env).map(|()| None).map_err(fail),
        Command::Check => {
            need(Version::V0_4_0, "CHECK")?;
            bridge::check(&conf, &env).map(|()| None).map_err(fail)
        }
        Command::Gc => {
            need(Version::V1_1_0, "GC")?;
            bridge::gc(&conf, &env).map(|()| None).map_err(fail)
        }
        Command::Status => {
            need(Version::V1_1_0, "STATUS")?;
            bridge::status(&conf, &env).map(|()| None).map_err(fail)
        }
        Command::Version => Ok(None),
    }
}
