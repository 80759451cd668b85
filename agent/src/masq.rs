//! Pod egress masquerade and FORWARD accept rules, in ferry's own iptables chains.
//!
//! ```text
//! nat     POSTROUTING -j FERRY-POSTROUTING
//!   -p udp -m addrtype --src-type LOCAL -m udp --dport 8472 -j RETURN   (tunnel-outer: never)
//!   -m mark --mark 0x4000/0x4000 -j RETURN                              (kube-proxy's job)
//!   -s <cluster> -d <cluster> -j RETURN                                 (pod-to-pod, pod-to-service)
//!   -s <cluster> -d <no-masquerade cidr> -j RETURN                      (--no-masquerade-cidrs)
//!   -s <cluster> ! -d 224.0.0.0/4 -j MASQUERADE --random-fully          (pod egress -> node IP)
//! filter  FORWARD -j FERRY-FORWARD
//!   -s <cluster> -j ACCEPT
//!   -d <cluster> -j ACCEPT                                              (a DROP policy can't break us)
//! mangle  OUTPUT -j FERRY-OUTPUT                                         (VXLAN backend only)
//!   -p udp -m udp --dport 8472 -m mark --mark 0x4000/0x4000 -j MARK --set-xmark 0x0/0x4000
//! ```
//!
//! Datapath pitfall 1 (the VXLAN 63-second stalls): an encapsulated packet inherits the inner
//! packet's mark, and kube-proxy masquerades everything carrying `0x4000`. Our masquerade rule
//! only matches pod-CIDR sources (an outer packet's source is the node address), our chain
//! returns early for locally sourced UDP to the tunnel port, and `FERRY-OUTPUT` clears
//! kube-proxy's mark on outer packets (they pass `OUTPUT`; forwarded pod packets do not), so no
//! masquerade rule can match a tunnel-outer packet. Ferry itself sets no mark.
//!
//! Level-triggered: every round reads `iptables-save`, compares our chains (rule for rule, in
//! the form `iptables-save` prints) and the jump rules, and only when something differs rewrites
//! the affected tables with one `iptables-restore --noflush` (declaring a chain flushes it, so
//! each chain is replaced atomically). `--random-fully` is dropped (once, with a warning) when
//! the kernel or iptables refuses it. [`uninstall`] removes the jumps and the chains.
//!
//! Why `iptables-save` / `iptables-restore` and not the `iptables` crate: that crate runs one
//! `iptables` process per rule operation, so replacing a chain is a flush followed by appends
//! (a window in which pod egress is not masqueraded and FORWARD may drop) and a check of all
//! rules costs one process per rule every round. One `iptables-save` per round and one
//! `iptables-restore --noflush` per change give an atomic per-table swap and a cheap steady state.

use crate::iptables::run;
pub use crate::iptables::IptablesError;
use ipnetwork::Ipv4Network;

/// kube-proxy's masquerade mark (`KUBE-MARK-MASQ`).
pub const KUBE_MASQ_MARK: u32 = 0x4000;

/// One of our chains: its table, the built-in chain that jumps to it, and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// `nat`, `filter` or `mangle`.
    pub table: &'static str,
    /// Our chain's name.
    pub name: &'static str,
    /// The built-in chain holding the jump.
    pub hook: &'static str,
    /// The rules, each as `iptables-save` prints it without the `-A <chain> ` prefix.
    pub rules: Vec<String>,
}

/// Every chain ferry may own, in uninstall order: `(table, chain, hook)`.
pub const ALL_CHAINS: [(&str, &str, &str); 3] = [
    ("nat", "FERRY-POSTROUTING", "POSTROUTING"),
    ("filter", "FERRY-FORWARD", "FORWARD"),
    ("mangle", "FERRY-OUTPUT", "OUTPUT"),
];

/// What the rules are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqConfig {
    /// Cluster pod network.
    pub cluster: Ipv4Network,
    /// Extra destinations never masqueraded.
    pub no_masquerade: Vec<Ipv4Network>,
    /// Masquerade at all (`--ip-masq`); the FORWARD rules are installed either way.
    pub masquerade: bool,
    /// The VXLAN port when the VXLAN backend runs (adds the tunnel guards).
    pub tunnel_port: Option<u16>,
    /// Use `--random-fully`.
    pub random_fully: bool,
}

/// The chains this configuration wants.
pub fn desired(c: &MasqConfig) -> Vec<Chain> {
    let cl = c.cluster;
    let mut out = Vec::new();
    if c.masquerade {
        let mut rules = Vec::new();
        if let Some(port) = c.tunnel_port {
            rules.push(format!(
                "-p udp -m addrtype --src-type LOCAL -m udp --dport {port} -j RETURN"
            ));
        }
        rules.push(format!(
            "-m mark --mark {KUBE_MASQ_MARK:#x}/{KUBE_MASQ_MARK:#x} -j RETURN"
        ));
        rules.push(format!("-s {cl} -d {cl} -j RETURN"));
        for n in &c.no_masquerade {
            rules.push(format!("-s {cl} -d {n} -j RETURN"));
        }
        rules.push(format!(
            "-s {cl} ! -d 224.0.0.0/4 -j MASQUERADE{}",
            if c.random_fully {
                " --random-fully"
            } else {
                ""
            }
        ));
        out.push(Chain {
            table: "nat",
            name: "FERRY-POSTROUTING",
            hook: "POSTROUTING",
            rules,
        });
    }
    out.push(Chain {
        table: "filter",
        name: "FERRY-FORWARD",
        hook: "FORWARD",
        rules: vec![format!("-s {cl} -j ACCEPT"), format!("-d {cl} -j ACCEPT")],
    });
    if let Some(port) = c.tunnel_port {
        out.push(Chain {
            table: "mangle",
            name: "FERRY-OUTPUT",
            hook: "OUTPUT",
            rules: vec![format!(
                "-p udp -m udp --dport {port} -m mark --mark {KUBE_MASQ_MARK:#x}/{KUBE_MASQ_MARK:#x} -j MARK --set-xmark 0x0/{KUBE_MASQ_MARK:#x}"
            )],
        });
    }
    out
}

/// What `iptables-save` shows of one chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// The chain exists.
    pub exists: bool,
    /// Its rules (without `-A <chain> `).
    pub rules: Vec<String>,
    /// How many `-A <hook> -j <chain>` rules exist.
    pub jumps: usize,
}

/// Reads one chain (and its jumps) out of `iptables-save` output.
pub fn installed(save: &str, table: &str, chain: &str, hook: &str) -> Installed {
    let mut out = Installed::default();
    let mut in_table = false;
    let decl = format!(":{chain} ");
    let add = format!("-A {chain} ");
    let jump = format!("-A {hook} -j {chain}");
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            in_table = t.trim() == table;
            continue;
        }
        if !in_table {
            continue;
        }
        if line.starts_with(&decl) {
            out.exists = true;
        } else if let Some(rule) = line.strip_prefix(&add) {
            out.rules.push(rule.trim_end().to_owned());
        } else if line.trim_end() == jump {
            out.jumps += 1;
        }
    }
    out
}

/// The `iptables-restore --noflush` input that brings `want` into place given `save` (the
/// current `iptables-save` output); `None` when everything already matches.
pub fn restore_input(want: &[Chain], save: &str) -> Option<String> {
    let mut text = String::new();
    for c in want {
        let have = installed(save, c.table, c.name, c.hook);
        if have.exists && have.rules == c.rules && have.jumps == 1 {
            continue;
        }
        text.push_str(&format!("*{}\n:{} - [0:0]\n", c.table, c.name));
        for r in &c.rules {
            text.push_str(&format!("-A {} {r}\n", c.name));
        }
        if have.jumps == 0 {
            text.push_str(&format!("-A {} -j {}\n", c.hook, c.name));
        }
        for _ in 1..have.jumps {
            text.push_str(&format!("-D {} -j {}\n", c.hook, c.name));
        }
        text.push_str("COMMIT\n");
    }
    (!text.is_empty()).then_some(text)
}

/// Keeps our chains in place, round after round.
#[derive(Debug)]
pub struct Masquerade {
    cfg: MasqConfig,
}

impl Masquerade {
    /// Rules for `cfg` (with `--random-fully` until the kernel refuses it).
    pub fn new(cfg: MasqConfig) -> Masquerade {
        Masquerade { cfg }
    }

    /// One round: returns whether anything was rewritten.
    pub fn reconcile(&mut self) -> Result<bool, IptablesError> {
        let save = run("iptables-save", &[], None)?;
        let Some(input) = restore_input(&desired(&self.cfg), &save) else {
            return Ok(false);
        };
        match run("iptables-restore", &["--noflush", "-w", "5"], Some(&input)) {
            Ok(_) => {}
            Err(e) if self.cfg.random_fully && input.contains("--random-fully") => {
                tracing::warn!(error = %e, "iptables refused --random-fully: masquerading without it");
                self.cfg.random_fully = false;
                let input = restore_input(&desired(&self.cfg), &save).unwrap_or_default();
                run("iptables-restore", &["--noflush", "-w", "5"], Some(&input))?;
            }
            Err(e) => return Err(e),
        }
        tracing::info!(cluster = %self.cfg.cluster, "iptables rules written");
        Ok(true)
    }
}

/// Removes every jump to our chains and the chains themselves (all of [`ALL_CHAINS`]), in the
/// current network namespace. Keeps going past failures; returns them all.
pub fn uninstall() -> Vec<IptablesError> {
    let mut errors = Vec::new();
    let save = match run("iptables-save", &[], None) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    for (table, chain, hook) in ALL_CHAINS {
        let have = installed(&save, table, chain, hook);
        for _ in 0..have.jumps {
            if let Err(e) = run(
                "iptables",
                &["-w", "5", "-t", table, "-D", hook, "-j", chain],
                None,
            ) {
                errors.push(e);
            }
        }
        if have.exists {
            for op in ["-F", "-X"] {
                if let Err(e) = run("iptables", &["-w", "5", "-t", table, op, chain], None) {
                    errors.push(e);
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MasqConfig {
        MasqConfig {
            cluster: "10.244.0.0/16".parse().unwrap(),
            no_masquerade: vec!["192.168.7.0/24".parse().unwrap()],
            masquerade: true,
            tunnel_port: Some(8472),
            random_fully: true,
        }
    }

    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*mangle
:OUTPUT ACCEPT [0:0]
:FERRY-OUTPUT - [0:0]
-A OUTPUT -j FERRY-OUTPUT
-A FERRY-OUTPUT -p udp -m udp --dport 8472 -m mark --mark 0x4000/0x4000 -j MARK --set-xmark 0x0/0x4000
COMMIT
*filter
:FORWARD DROP [0:0]
:FERRY-FORWARD - [0:0]
-A FORWARD -j FERRY-FORWARD
-A FORWARD -j FERRY-FORWARD
-A FERRY-FORWARD -s 10.244.0.0/16 -j ACCEPT
-A FERRY-FORWARD -d 10.244.0.0/16 -j ACCEPT
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
:FERRY-POSTROUTING - [0:0]
-A FERRY-POSTROUTING -p udp -m addrtype --src-type LOCAL -m udp --dport 8472 -j RETURN
-A FERRY-POSTROUTING -m mark --mark 0x4000/0x4000 -j RETURN
-A FERRY-POSTROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -j RETURN
-A FERRY-POSTROUTING -s 10.244.0.0/16 -d 192.168.7.0/24 -j RETURN
-A FERRY-POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
COMMIT
";

    #[test]
    fn parses_what_iptables_save_prints() {
        let nat = installed(SAVED, "nat", "FERRY-POSTROUTING", "POSTROUTING");
        assert!(nat.exists);
        assert_eq!(nat.jumps, 0);
        assert_eq!(nat.rules, desired(&cfg())[0].rules);
        let f = installed(SAVED, "filter", "FERRY-FORWARD", "FORWARD");
        assert_eq!(f.jumps, 2);
        assert_eq!(
            installed(SAVED, "raw", "FERRY-X", "OUTPUT"),
            Installed::default()
        );
    }

    #[test]
    fn restores_only_what_differs() {
        let input = restore_input(&desired(&cfg()), SAVED).unwrap();
        // nat: the missing jump is added (the chain is redeclared, i.e. rewritten atomically);
        // filter: the duplicate jump goes; mangle is left alone.
        assert!(input.contains("*nat\n:FERRY-POSTROUTING - [0:0]\n"));
        assert!(input.contains("-A POSTROUTING -j FERRY-POSTROUTING\n"));
        assert!(input.contains("*filter\n:FERRY-FORWARD - [0:0]\n"));
        assert!(input.contains("-D FORWARD -j FERRY-FORWARD\n"));
        assert!(!input.contains("mangle"));
        assert_eq!(input.matches("COMMIT").count(), 2);
        // Applying it yields a converged ruleset.
        let fixed = SAVED
            .replace(
                ":FERRY-POSTROUTING - [0:0]\n",
                ":FERRY-POSTROUTING - [0:0]\n-A POSTROUTING -j FERRY-POSTROUTING\n",
            )
            .replacen("-A FORWARD -j FERRY-FORWARD\n", "", 1);
        assert_eq!(restore_input(&desired(&cfg()), &fixed), None);
        // Without masquerade only the FORWARD and tunnel-guard chains are wanted.
        let off = MasqConfig {
            masquerade: false,
            tunnel_port: None,
            ..cfg()
        };
        let want = desired(&off);
        assert_eq!(want.len(), 1);
        assert_eq!(want[0].name, "FERRY-FORWARD");
    }

    #[test]
    fn masquerade_matches_pod_sources_only() {
        let nat = &desired(&cfg())[0];
        let masq: Vec<_> = nat
            .rules
            .iter()
            .filter(|r| r.contains("MASQUERADE"))
            .collect();
        assert_eq!(masq.len(), 1);
        assert!(masq[0].starts_with("-s 10.244.0.0/16 "), "{masq:?}");
        // Every RETURN for pod or tunnel traffic comes before the MASQUERADE rule.
        assert!(nat.rules.last().unwrap().contains("MASQUERADE"));
    }
}
