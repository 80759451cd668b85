//! Driving conflists the way libcni does (what containerd's CRI plugin and our kubelet need):
//! build each plugin's config from the list (`name`, `cniVersion`, `prevResult`, and the
//! `runtimeConfig` of the capabilities the plugin declares), run the chain in order for ADD and in
//! reverse for DEL, and keep the result cache (`<cacheDir>/results/<network>-<containerID>-<ifname>`,
//! `kind: cniCacheV1`) that feeds `prevResult` to DEL and CHECK.

use crate::error::{code, CniError, CniResult};
use crate::exec::{find_plugin, invoke, Invocation};
use base64::Engine;
use ferry_sys::netns::NetnsFd;
use std::path::{Path, PathBuf};

/// A parsed network configuration list (`.conflist`, or a single `.conf` wrapped as one).
#[derive(Debug, Clone)]
pub struct ConfList {
    /// Spec version of the list.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin configurations, in order.
    pub plugins: Vec<serde_json::Value>,
    /// Skip CHECK.
    pub disable_check: bool,
    /// Skip GC.
    pub disable_gc: bool,
    /// The bytes it was parsed from (cached with results, like libcni).
    pub bytes: Vec<u8>,
}

fn decode(msg: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::DECODE, msg.to_owned()).with_details(e)
}

impl ConfList {
    /// Parses a conflist, or a single plugin config (which has a `type` and no `plugins`).
    pub fn parse(bytes: &[u8]) -> CniResult<ConfList> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| decode("invalid network config list", e))?;
        let name = v
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        let cni_version = v
            .get("cniVersion")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        if name.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "config list has no name",
            ));
        }
        let plugins = match (v.get("plugins"), v.get("type")) {
            (Some(p), _) => p.as_array().cloned().unwrap_or_default(),
            (None, Some(_)) => vec![v.clone()],
            (None, None) => Vec::new(),
        };
        if plugins.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("config list {name} has no plugins"),
            ));
        }
        let flag = |k: &str| v.get(k).and_then(|b| b.as_bool()).unwrap_or(false);
        Ok(ConfList {
            cni_version,
            name,
            plugins,
            disable_check: flag("disableCheck"),
            disable_gc: flag("disableGC"),
            bytes: bytes.to_vec(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> CniResult<ConfList> {
        let bytes = std::fs::read(path).map_err(|e| {
            CniError::new(code::IO_FAILURE, format!("reading {}", path.display())).with_details(e)
        })?;
        Self::parse(&bytes)
    }

    /// The first `*.conflist`, `*.conf` or `*.json` in `dir` in lexical order (containerd's
    /// `max_conf_num = 1` choice), if any.
    pub fn first_in_dir(dir: &Path) -> CniResult<Option<ConfList>> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(None);
        };
        let mut names: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
            })
            .collect();
        names.sort();
        names.first().map(|p| Self::load(p)).transpose()
    }
}

/// Per-attachment runtime parameters.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    /// Container (sandbox) id.
    pub container_id: String,
    /// Netns path (may be empty for DEL).
    pub netns: String,
    /// Interface name.
    pub ifname: String,
    /// `CNI_ARGS` pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, `dns`, ...).
    pub capability_args: serde_json::Map<String, serde_json::Value>,
}

impl RuntimeConf {
    fn args_string(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// A libcni-style plugin runner.
///
/// Plugins act on the network namespace they are started in (the node's). A runtime that is not
/// itself inside the node's namespace must say which one with [`Runtime::in_netns`].
#[derive(Debug)]
pub struct Runtime {
    /// Directories searched for plugin binaries (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Cache directory (containerd: `/var/lib/cni`).
    pub cache_dir: PathBuf,
    /// The node namespace plugins run in; `None` means the caller's own.
    pub netns: Option<NetnsFd>,
}

impl Runtime {
    /// A runner whose plugins run in the caller's network namespace.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Runtime {
        Runtime {
            bin_dirs,
            cache_dir,
            netns: None,
        }
    }

    /// A runner whose plugins run in the network namespace at `node_netns`.
    pub fn in_netns(
        bin_dirs: Vec<PathBuf>,
        cache_dir: PathBuf,
        node_netns: &Path,
    ) -> CniResult<Runtime> {
        let ns = NetnsFd::open(node_netns)
            .map_err(|e| CniError::new(code::INVALID_CONFIG, "runtime netns").with_details(e))?;
        Ok(Runtime {
            bin_dirs,
            cache_dir,
            netns: Some(ns),
        })
    }

    fn cache_path(&self, list: &ConfList, rt: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{}-{}-{}", list.name, rt.container_id, rt.ifname))
    }

    /// The cached ADD result of this attachment, if any.
    pub fn cached_result(&self, list: &ConfList, rt: &RuntimeConf) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.cache_path(list, rt)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("result").cloned().filter(|r| !r.is_null())
    }

    fn build(
        list: &ConfList,
        plugin: &serde_json::Value,
        prev: Option<&serde_json::Value>,
        rt: &RuntimeConf,
    ) -> serde_json::Value {
        let mut conf = plugin.clone();
        conf["name"] = list.name.clone().into();
        conf["cniVersion"] = list.cni_version.clone().into();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        let mut rc = serde_json::Map::new();
        if let Some(caps) = plugin.get("capabilities").and_then(|c| c.as_object()) {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(arg) = rt.capability_args.get(cap) {
                        rc.insert(cap.clone(), arg.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf["runtimeConfig"] = rc.into();
        }
        conf
    }

    fn run_one(
        &self,
        command: &str,
        list: &ConfList,
        plugin: &serde_json::Value,
        prev: Option<&serde_json::Value>,
        rt: &RuntimeConf,
    ) -> CniResult<Option<serde_json::Value>> {
        let ty = plugin
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let binary = find_plugin(ty, &self.bin_dirs)?;
        let conf = Self::build(list, plugin, prev, rt);
        let args = rt.args_string();
        let inv = Invocation {
            command,
            container_id: &rt.container_id,
            netns: &rt.netns,
            ifname: &rt.ifname,
            args: &args,
            path: &self.bin_dirs,
            run_in: self.netns.as_ref(),
        };
        invoke(
            &binary,
            &inv,
            &serde_json::to_vec(&conf).unwrap_or_default(),
        )
    }

    /// ADD through the whole chain; caches and returns the final result.
    pub fn add(&self, list: &ConfList, rt: &RuntimeConf) -> CniResult<serde_json::Value> {
        let mut prev: Option<serde_json::Value> = None;
        for plugin in &list.plugins {
            let out = self.run_one("ADD", list, plugin, prev.as_ref(), rt)?;
            if out.is_some() {
                prev = out;
            }
        }
        let result = prev.unwrap_or_else(|| serde_json::json!({"cniVersion": list.cni_version}));
        self.write_cache(list, rt, &result)?;
        Ok(result)
    }

    fn write_cache(
        &self,
        list: &ConfList,
        rt: &RuntimeConf,
        result: &serde_json::Value,
    ) -> CniResult<()> {
        let path = self.cache_path(list, rt);
        let io = |e: std::io::Error| {
            CniError::new(code::IO_FAILURE, format!("writing {}", path.display())).with_details(e)
        };
        let entry = serde_json::json!({
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "config": base64::engine::general_purpose::STANDARD.encode(&list.bytes),
            "ifName": rt.ifname,
            "networkName": list.name,
            "cniArgs": rt.args.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
            "capabilityArgs": rt.capability_args,
            "result": result,
        });
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        ferry_sys::fs::write_atomic(
            &path,
            &bytes,
            ferry_sys::fs::WriteOptions::private().create_dir(true),
        )
        .map_err(|e| io(e.into()))
    }

    /// DEL through the chain in reverse, with the cached result as `prevResult`; then drops the
    /// cache entry. Every plugin is run even if an earlier one failed; the first error is returned.
    pub fn del(&self, list: &ConfList, rt: &RuntimeConf) -> CniResult<()> {
        let cached = self.cached_result(list, rt);
        let mut first_err = None;
        for plugin in list.plugins.iter().rev() {
            if let Err(e) = self.run_one("DEL", list, plugin, cached.as_ref(), rt) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => {
                let _ = std::fs::remove_file(self.cache_path(list, rt));
                Ok(())
            }
        }
    }

    /// CHECK through the chain with the cached result.
    pub fn check(&self, list: &ConfList, rt: &RuntimeConf) -> CniResult<()> {
        if list.disable_check {
            return Ok(());
        }
        let cached = self.cached_result(list, rt).ok_or_else(|| {
            CniError::new(
                code::UNKNOWN_CONTAINER,
                format!("no cached result for {}", rt.container_id),
            )
        })?;
        for plugin in &list.plugins {
            self.run_one("CHECK", list, plugin, Some(&cached), rt)?;
        }
        Ok(())
    }

    /// GC with the list of attachments to keep.
    pub fn gc(&self, list: &ConfList, valid: &[(String, String)]) -> CniResult<()> {
        if list.disable_gc {
            return Ok(());
        }
        let attachments: Vec<serde_json::Value> = valid
            .iter()
            .map(|(c, i)| serde_json::json!({"containerID": c, "ifname": i}))
            .collect();
        let rt = RuntimeConf::default();
        for plugin in &list.plugins {
            let mut p = plugin.clone();
            p["cni.dev/valid-attachments"] = attachments.clone().into();
            self.run_one("GC", list, &p, None, &rt)?;
        }
        Ok(())
    }

    /// STATUS of every plugin.
    pub fn status(&self, list: &ConfList) -> CniResult<()> {
        let rt = RuntimeConf::default();
        for plugin in &list.plugins {
            self.run_one("STATUS", list, plugin, None, &rt)?;
        }
        Ok(())
    }
}
