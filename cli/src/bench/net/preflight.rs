//! The preflight: what the machine is (CPU model, cores, governor, SMT, kernel, load), whether it
//! is quiet (busy share over 1 s: warned above 5 %, refused with `--strict-quiet`), iperf3's
//! version, the sysctls that shape the results (read inside a node's namespace) and the devices on
//! the paths with their MTU and offloads (`ethtool -k` inside their namespace).

use super::lab::Place;
use anyhow::{bail, Result};
use ferry_bench::model::{Device, Host};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Above this busy share the machine is called noisy.
pub(crate) const BUSY_LIMIT: f64 = 0.05;

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The machine, with its busy share measured over 1 s. Returns a warning when it is busy, or
/// fails with `strict`.
pub(crate) fn host(strict: bool) -> Result<(Host, Option<String>)> {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = u32::try_from(std::thread::available_parallelism().map_or(1, usize::from))
        .unwrap_or(u32::MAX);
    let governor = match read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") {
        g if g.is_empty() => "none".into(),
        g => g,
    };
    let smt = read("/sys/devices/system/cpu/smt/active") == "1";
    let version = output(Command::new("uname").arg("-v"));
    let preempt = ["PREEMPT_RT", "PREEMPT_DYNAMIC", "PREEMPT"]
        .iter()
        .find(|p| version.contains(*p))
        .map_or_else(|| "none".into(), |p| (*p).to_owned());
    let loadavg = read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let a = super::cpu::sample(&[])?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let b = super::cpu::sample(&[])?;
    let busy_before =
        super::cpu::busy_rate(&a, &b, t.elapsed().as_secs_f64()) / f64::from(cores.max(1));
    let iperf3 = output(Command::new("iperf3").arg("--version"))
        .lines()
        .next()
        .unwrap_or("not installed")
        .to_owned();
    let host = Host {
        hostname: read("/proc/sys/kernel/hostname"),
        cpu_model,
        cores,
        governor,
        smt,
        kernel: output(Command::new("uname").arg("-r")),
        preempt,
        loadavg,
        busy_before,
        iperf3,
    };
    let mut warning = None;
    if busy_before > BUSY_LIMIT {
        let msg = format!(
            "the machine was {:.0} % busy before the run (over 5 %): figures are noisier",
            busy_before * 100.0
        );
        if strict {
            bail!("{msg}; --strict-quiet refuses to run");
        }
        warning = Some(msg);
    }
    Ok((host, warning))
}

/// The sysctls that shape the results, read inside `place`'s namespace.
pub(crate) fn sysctls(place: &Place) -> BTreeMap<String, String> {
    const NAMES: &[&str] = &[
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_tw_reuse",
        "net.core.somaxconn",
        "net.bridge.bridge-nf-call-iptables",
        "net.netfilter.nf_conntrack_max",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.tcp_congestion_control",
    ];
    let mut out = BTreeMap::new();
    for n in NAMES {
        let Ok(mut cmd) = place.command(Path::new("sysctl")) else {
            continue;
        };
        let v = output(cmd.args(["-n", n]));
        out.insert(
            (*n).to_owned(),
            if v.is_empty() { "absent".into() } else { v },
        );
    }
    out
}

/// A device's kind, MTU and offloads, read inside `place`'s namespace.
pub(crate) fn device(place: &Place, dev: &str) -> Option<Device> {
    let link = output(
        place
            .command(Path::new("ip"))
            .ok()?
            .args(["-d", "-j", "link", "show", "dev", dev]),
    );
    let v: serde_json::Value = serde_json::from_str(&link).ok()?;
    let l = &v[0];
    let kind = l["linkinfo"]["info_kind"]
        .as_str()
        .unwrap_or("device")
        .to_owned();
    let mtu = u32::try_from(l["mtu"].as_u64().unwrap_or(0)).unwrap_or(0);
    let k = output(place.command(Path::new("ethtool")).ok()?.args(["-k", dev]));
    let mut offloads = BTreeMap::new();
    for want in [
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
        "generic-receive-offload",
        "tx-checksumming",
        "rx-checksumming",
    ] {
        if let Some(on) = k
            .lines()
            .find_map(|l| l.trim().strip_prefix(want)?.strip_prefix(": "))
        {
            offloads.insert(want.to_owned(), on.starts_with("on"));
        }
    }
    Some(Device {
        netns: place.label.clone(),
        name: dev.to_owned(),
        kind,
        mtu,
        offloads,
    })
}
