//! Pod egress masquerade, FORWARD accept rules and the pod-to-pod NOTRACK of the eBPF mode, in
//! ferry's own iptables chains.
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
//! raw     PREROUTING -j FERRY-PREROUTING                                 (empty unless pod_notrack)
//!   -s <cluster> -d <cluster> -m addrtype ! --dst-type LOCAL -j NOTRACK (forwarded pod<->pod)
//! ```
//!
//! `pod_notrack` ([`crate::bypass`]: the eBPF Service datapath runs, which translates Service
//! addresses in the socket hooks before a packet exists, so no forwarded pod-to-pod packet needs
//! NAT): pod-to-pod packets the node forwards skip connection tracking. Packets to one of the
//! node's own addresses stay tracked (the bridge and VXLAN device addresses lie in the cluster
//! network, and replies to the node's own connections must find their entries), and so do
//! packets the node sends itself (raw `OUTPUT` is not hooked). The chain stays, empty, when
//! `pod_notrack` is off, so turning it off removes the rule.
//!
//! Datapath pitfall 1 (the VXLAN 63-second stalls): an encapsulated packet inherits the inner
//! packet's mark, and kube-proxy masquerades everything carrying `0x4000`. Our masquerade rule
//! only matches pod-CIDR sources (an outer packet's source is the node address), our chain
//! returns early for locally sourced UDP to the tunnel port, and `FERRY-OUTPUT` clears
//! kube-proxy's mark on outer packets (they pass `OUTPUT`; forwarded pod packets do not), so no
//! masquerade rule can match a tunnel-outer packet. Ferry itself sets no mark.
//!
//! Level-triggered with remembered state: [`Masquerade::reconcile`] reads our chains and their
//! hook chains back (`iptables -S <chain>`, one chain each, never the whole ruleset: a full
//! `iptables-save` took 16-30 s per round beside the iptables Service proxier's rules at 10,000
//! Services, a one-chain listing ~20 ms), compares them rule for rule (in the form `iptables-save`
//! prints) and only when something differs rewrites the affected tables with one
//! `iptables-restore --noflush` (declaring a chain flushes it, so each chain is replaced
//! atomically). What the last read or restore left is remembered: while it is what we want,
//! rounds run no process at all, and the chains are read again every [`CHECK_INTERVAL`] (to
//! repair what others changed: a deleted jump, a flushed chain), after a failure, or when the
//! wanted rules change. `--random-fully` is dropped (once, with a warning) when the kernel or
//! iptables refuses it. [`uninstall`] removes the jumps and the chains.
//!
//! Why `iptables -S` / `iptables-restore` and not the `iptables` crate: that crate runs one
//! `iptables` process per rule operation, so replacing a chain is a flush followed by appends
//! (a window in which pod egress is not masqueraded and FORWARD may drop) and a check of all
//! rules costs one process per rule. A read of a few chains now and then and one
//! `iptables-restore --noflush` per change give an atomic per-table swap and a cheap steady state.

use crate::iptables::run;
pub use crate::iptables::IptablesError;
use ipnetwork::Ipv4Network;
use std::time::{Duration, Instant};

/// How often [`Masquerade::reconcile`] reads its chains back while nothing of its own changed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);

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
pub const ALL_CHAINS: [(&str, &str, &str); 4] = [
    ("nat", "FERRY-POSTROUTING", "POSTROUTING"),
    ("filter", "FERRY-FORWARD", "FORWARD"),
    ("mangle", "FERRY-OUTPUT", "OUTPUT"),
    ("raw", "FERRY-PREROUTING", "PREROUTING"),
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
    /// Forwarded pod-to-pod packets skip conntrack (eBPF mode with `--pod-netfilter-bypass`).
    pub pod_notrack: bool,
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
    out.push(Chain {
        table: "raw",
        name: "FERRY-PREROUTING",
        hook: "PREROUTING",
        rules: if c.pod_notrack {
            vec![format!(
                "-s {cl} -d {cl} -m addrtype ! --dst-type LOCAL -j NOTRACK"
            )]
        } else {
            Vec::new()
        },
    });
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

/// One chain as `iptables -S <hook>` and `iptables -S <chain>` print it (`chain`: `None` when
/// the listing failed: the chain does not exist, or cannot be read, and is rewritten).
pub fn installed_from_listings(c: &Chain, hook: &str, chain: Option<&str>) -> Installed {
    let jump = format!("-A {} -j {}", c.hook, c.name);
    let add = format!("-A {} ", c.name);
    Installed {
        exists: chain.is_some(),
        rules: chain
            .into_iter()
            .flat_map(str::lines)
            .filter_map(|l| l.strip_prefix(&add))
            .map(|r| r.trim_end().to_owned())
            .collect(),
        jumps: hook.lines().filter(|l| l.trim_end() == jump).count(),
    }
}

/// The `iptables-restore --noflush` input that brings `want` into place given `have` (what is
/// installed of each wanted chain, in the same order); `None` when everything already matches.
pub fn restore_plan(want: &[Chain], have: &[Installed]) -> Option<String> {
    let mut text = String::new();
    for (c, have) in want.iter().zip(have) {
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

/// The `iptables-restore --noflush` input that brings `want` into place given `save` (the
/// current `iptables-save` output); `None` when everything already matches.
pub fn restore_input(want: &[Chain], save: &str) -> Option<String> {
    let have: Vec<Installed> = want
        .iter()
        .map(|c| installed(save, c.table, c.name, c.hook))
        .collect();
    restore_plan(want, &have)
}

/// Runs one iptables tool: `(command, args, stdin) -> stdout` ([`run`]; tests pass a fake).
pub type Runner =
    Box<dyn FnMut(&str, &[&str], Option<&str>) -> Result<String, IptablesError> + Send>;

/// Keeps our chains in place, round after round.
pub struct Masquerade {
    cfg: MasqConfig,
    run: Runner,
    /// The chains as the last read or restore left them, and when they were last read (`None`:
    /// unknown, read at the next round).
    known: Option<(Vec<Chain>, Instant)>,
    /// How often the chains are read back anyway ([`CHECK_INTERVAL`]).
    check_every: Duration,
    /// Reads of the chains so far (each: one `iptables -S` per chain and per hook).
    reads: u64,
}

impl std::fmt::Debug for Masquerade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masquerade")
            .field("cfg", &self.cfg)
            .field("known", &self.known)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

impl Masquerade {
    /// Rules for `cfg` (with `--random-fully` until the kernel refuses it).
    pub fn new(cfg: MasqConfig) -> Masquerade {
        Masquerade::with_runner(cfg, Box::new(run), CHECK_INTERVAL)
    }

    /// Rules for `cfg`, running the iptables tools through `run`, read back every `check_every`.
    pub fn with_runner(cfg: MasqConfig, run: Runner, check_every: Duration) -> Masquerade {
        Masquerade {
            cfg,
            run,
            known: None,
            check_every,
            reads: 0,
        }
    }

    /// How many times the chains were read back.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Turns the pod-to-pod NOTRACK rule on or off (applied by the next [`Self::reconcile`]).
    pub fn set_pod_notrack(&mut self, on: bool) {
        self.cfg.pod_notrack = on;
    }

    /// Reads each wanted chain and its hook (`iptables -S`).
    fn read(&mut self, want: &[Chain]) -> Result<Vec<Installed>, IptablesError> {
        self.reads += 1;
        let mut out = Vec::new();
        for c in want {
            let hook = (self.run)("iptables", &["-w", "5", "-t", c.table, "-S", c.hook], None)?;
            let chain =
                (self.run)("iptables", &["-w", "5", "-t", c.table, "-S", c.name], None).ok();
            out.push(installed_from_listings(c, &hook, chain.as_deref()));
        }
        Ok(out)
    }

    /// One round: returns whether anything was rewritten. Runs no process while the remembered
    /// state is what is wanted and was read less than the check interval ago.
    pub fn reconcile(&mut self) -> Result<bool, IptablesError> {
        let want = desired(&self.cfg);
        if let Some((known, at)) = &self.known {
            if *known == want && at.elapsed() < self.check_every {
                return Ok(false);
            }
        }
        self.known = None;
        let have = self.read(&want)?;
        let read_at = Instant::now();
        let Some(input) = restore_plan(&want, &have) else {
            self.known = Some((want, read_at));
            return Ok(false);
        };
        let restore = ["--noflush", "-w", "5"];
        let want = match (self.run)("iptables-restore", &restore, Some(&input)) {
            Ok(_) => want,
            Err(e) if self.cfg.random_fully && input.contains("--random-fully") => {
                tracing::warn!(error = %e, "iptables refused --random-fully: masquerading without it");
                self.cfg.random_fully = false;
                let want = desired(&self.cfg);
                let input = restore_plan(&want, &have).unwrap_or_default();
                (self.run)("iptables-restore", &restore, Some(&input))?;
                want
            }
            Err(e) => return Err(e),
        };
        tracing::info!(cluster = %self.cfg.cluster, "iptables rules written");
        self.known = Some((want, read_at));
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
            pod_notrack: false,
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
*raw
:PREROUTING ACCEPT [0:0]
:FERRY-PREROUTING - [0:0]
-A PREROUTING -j FERRY-PREROUTING
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
        // Without masquerade and tunnel only the FORWARD chain and the (empty) raw chain.
        let off = MasqConfig {
            masquerade: false,
            tunnel_port: None,
            ..cfg()
        };
        let want = desired(&off);
        assert_eq!(want.len(), 2);
        assert_eq!(want[0].name, "FERRY-FORWARD");
        assert_eq!(want[1].name, "FERRY-PREROUTING");
        assert!(want[1].rules.is_empty());
        // pod_notrack fills the raw chain: that is the only change.
        let notrack = MasqConfig {
            pod_notrack: true,
            ..cfg()
        };
        let input = restore_input(&desired(&notrack), &fixed).unwrap();
        assert_eq!(
            input,
            "*raw\n:FERRY-PREROUTING - [0:0]\n-A FERRY-PREROUTING -s 10.244.0.0/16 -d 10.244.0.0/16 -m addrtype ! --dst-type LOCAL -j NOTRACK\nCOMMIT\n"
        );
    }

    /// A fake iptables: chains per table, `-S` listings as iptables prints them, and
    /// `iptables-restore --noflush` applied line by line; every call is logged.
    #[derive(Debug, Default)]
    struct Fake {
        /// `(table, chain)` -> rules (without `-A <chain> `); built-in chains always exist.
        chains: std::collections::BTreeMap<(String, String), Vec<String>>,
        calls: Vec<String>,
        refuse_random_fully: bool,
    }

    const HOOKS: [&str; 4] = ["POSTROUTING", "FORWARD", "OUTPUT", "PREROUTING"];

    impl Fake {
        fn call(
            &mut self,
            cmd: &str,
            args: &[&str],
            stdin: Option<&str>,
        ) -> Result<String, IptablesError> {
            self.calls.push(format!("{cmd} {}", args.join(" ")));
            let fail = |problem: &str| IptablesError {
                command: cmd.to_owned(),
                problem: problem.to_owned(),
            };
            match (cmd, args) {
                ("iptables", ["-w", "5", "-t", table, "-S", chain]) => {
                    let key = (table.to_string(), chain.to_string());
                    let rules = match self.chains.get(&key) {
                        Some(r) => r,
                        None if HOOKS.contains(chain) => &Vec::new(),
                        None => return Err(fail("no such chain")),
                    };
                    let head = if HOOKS.contains(chain) {
                        format!("-P {chain} ACCEPT\n")
                    } else {
                        format!("-N {chain}\n")
                    };
                    Ok(head
                        + &rules
                            .iter()
                            .map(|r| format!("-A {chain} {r}\n"))
                            .collect::<String>())
                }
                ("iptables-restore", ["--noflush", "-w", "5"]) => {
                    let input = stdin.unwrap_or_default();
                    if self.refuse_random_fully && input.contains("--random-fully") {
                        return Err(fail("unknown option --random-fully"));
                    }
                    let mut table = String::new();
                    for line in input.lines() {
                        if let Some(t) = line.strip_prefix('*') {
                            table = t.to_owned();
                        } else if let Some(decl) = line.strip_prefix(':') {
                            let chain = decl.split(' ').next().unwrap().to_owned();
                            self.chains.insert((table.clone(), chain), Vec::new());
                        } else if let Some(rest) = line.strip_prefix("-A ") {
                            let (chain, rule) = rest.split_once(' ').unwrap();
                            self.chains
                                .entry((table.clone(), chain.to_owned()))
                                .or_default()
                                .push(rule.to_owned());
                        } else if let Some(rest) = line.strip_prefix("-D ") {
                            let (chain, rule) = rest.split_once(' ').unwrap();
                            let rules = self
                                .chains
                                .get_mut(&(table.clone(), chain.to_owned()))
                                .unwrap();
                            let at = rules.iter().position(|r| r == rule).unwrap();
                            rules.remove(at);
                        } else {
                            assert_eq!(line, "COMMIT");
                        }
                    }
                    Ok(String::new())
                }
                _ => panic!("unexpected call {cmd} {args:?}"),
            }
        }

        fn rules(&self, table: &str, chain: &str) -> Vec<String> {
            self.chains
                .get(&(table.to_owned(), chain.to_owned()))
                .cloned()
                .unwrap_or_default()
        }
    }

    fn fake_masq(
        fake: &std::sync::Arc<std::sync::Mutex<Fake>>,
        cfg: MasqConfig,
        every: Duration,
    ) -> Masquerade {
        let f = fake.clone();
        Masquerade::with_runner(
            cfg,
            Box::new(move |c, a, i| f.lock().unwrap().call(c, a, i)),
            every,
        )
    }

    #[test]
    fn remembered_state_runs_nothing_until_the_check_interval() {
        let fake = std::sync::Arc::new(std::sync::Mutex::new(Fake::default()));
        let mut m = fake_masq(&fake, cfg(), Duration::from_secs(3600));
        // First round: read (a hook and a chain per wanted chain), then one restore.
        assert!(m.reconcile().unwrap());
        assert_eq!(m.reads(), 1);
        {
            let f = fake.lock().unwrap();
            assert_eq!(f.calls.len(), 9, "{:#?}", f.calls);
            assert!(
                f.calls.iter().all(|c| !c.starts_with("iptables-save")),
                "{:#?}",
                f.calls
            );
            for c in desired(&cfg()) {
                assert_eq!(f.rules(c.table, c.name), c.rules);
                assert_eq!(f.rules(c.table, c.hook), vec![format!("-j {}", c.name)]);
            }
        }
        // Steady state: no process at all.
        assert!(!m.reconcile().unwrap());
        assert!(!m.reconcile().unwrap());
        assert_eq!(fake.lock().unwrap().calls.len(), 9);
        assert_eq!(m.reads(), 1);
        // Changed wanted rules are read back and written at once, without waiting for the check.
        m.cfg.no_masquerade.push("192.168.8.0/24".parse().unwrap());
        assert!(m.reconcile().unwrap());
        assert_eq!(m.reads(), 2);
        assert!(fake
            .lock()
            .unwrap()
            .rules("nat", "FERRY-POSTROUTING")
            .contains(&"-s 10.244.0.0/16 -d 192.168.8.0/24 -j RETURN".to_owned()));
        // The pod-to-pod NOTRACK goes in and out with the eBPF datapath, at once.
        m.set_pod_notrack(true);
        assert!(m.reconcile().unwrap());
        let notrack = vec![
            "-s 10.244.0.0/16 -d 10.244.0.0/16 -m addrtype ! --dst-type LOCAL -j NOTRACK"
                .to_owned(),
        ];
        assert_eq!(
            fake.lock().unwrap().rules("raw", "FERRY-PREROUTING"),
            notrack
        );
        assert!(!m.reconcile().unwrap());
        m.set_pod_notrack(false);
        assert!(m.reconcile().unwrap());
        assert!(fake
            .lock()
            .unwrap()
            .rules("raw", "FERRY-PREROUTING")
            .is_empty());
        assert_eq!(
            fake.lock().unwrap().rules("raw", "PREROUTING"),
            ["-j FERRY-PREROUTING"]
        );
    }

    #[test]
    fn a_due_check_repairs_what_others_changed_and_rewrites_only_that() {
        let fake = std::sync::Arc::new(std::sync::Mutex::new(Fake::default()));
        // Interval zero: every round reads back.
        let mut m = fake_masq(&fake, cfg(), Duration::ZERO);
        assert!(m.reconcile().unwrap());
        assert!(!m.reconcile().unwrap(), "read back, nothing to write");
        assert_eq!(m.reads(), 2);
        // Someone deletes our nat jump and appends a second FORWARD jump.
        {
            let mut f = fake.lock().unwrap();
            f.chains
                .get_mut(&("nat".into(), "POSTROUTING".into()))
                .unwrap()
                .clear();
            f.chains
                .get_mut(&("filter".into(), "FORWARD".into()))
                .unwrap()
                .push("-j FERRY-FORWARD".into());
            f.calls.clear();
        }
        assert!(m.reconcile().unwrap());
        let f = fake.lock().unwrap();
        let restore = f
            .calls
            .iter()
            .filter(|c| c.starts_with("iptables-restore"))
            .count();
        assert_eq!(restore, 1);
        assert_eq!(f.rules("nat", "POSTROUTING"), ["-j FERRY-POSTROUTING"]);
        assert_eq!(f.rules("filter", "FORWARD"), ["-j FERRY-FORWARD"]);
        assert_eq!(f.rules("mangle", "OUTPUT"), ["-j FERRY-OUTPUT"]);
    }

    #[test]
    fn refused_random_fully_is_dropped_once_and_remembered() {
        let fake = std::sync::Arc::new(std::sync::Mutex::new(Fake {
            refuse_random_fully: true,
            ..Fake::default()
        }));
        let mut m = fake_masq(&fake, cfg(), Duration::from_secs(3600));
        assert!(m.reconcile().unwrap());
        let nat = fake.lock().unwrap().rules("nat", "FERRY-POSTROUTING");
        assert_eq!(
            nat.last().unwrap(),
            "-s 10.244.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE"
        );
        let calls = fake.lock().unwrap().calls.len();
        assert!(!m.reconcile().unwrap());
        assert_eq!(
            fake.lock().unwrap().calls.len(),
            calls,
            "the state without --random-fully is remembered"
        );
    }

    #[test]
    fn listings_parse_as_the_save_does() {
        let want = desired(&cfg());
        let nat = &want[0];
        let hook =
            "-P POSTROUTING ACCEPT\n-A POSTROUTING -j OTHER\n-A POSTROUTING -j FERRY-POSTROUTING\n";
        let chain: String = std::iter::once("-N FERRY-POSTROUTING\n".to_owned())
            .chain(
                nat.rules
                    .iter()
                    .map(|r| format!("-A FERRY-POSTROUTING {r}\n")),
            )
            .collect();
        let have = installed_from_listings(nat, hook, Some(&chain));
        assert_eq!(
            have,
            Installed {
                exists: true,
                rules: nat.rules.clone(),
                jumps: 1
            }
        );
        assert_eq!(
            installed_from_listings(nat, "-P POSTROUTING ACCEPT\n", None),
            Installed::default()
        );
        assert_eq!(restore_plan(std::slice::from_ref(nat), &[have]), None);
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
