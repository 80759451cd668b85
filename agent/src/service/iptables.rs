//! The iptables proxier (`--service-proxy iptables`): kube-proxy's iptables mode, in ferry's own
//! chains (never `KUBE-*`), programmed from the [`ServiceTable`].
//!
//! ```text
//! nat     PREROUTING, OUTPUT -j FERRY-SERVICES
//!   -d <addr>/32 -p <proto> -m <proto> --dport <port> -j FERRY-SVC-<hash>      (one per frontend with endpoints)
//!   -m addrtype --dst-type LOCAL -j FERRY-NODEPORTS                             (last)
//! nat     FERRY-NODEPORTS
//!   -p <proto> -m <proto> --dport <nodePort> -j FERRY-SVC-<hash>                (NodePorts on any local address)
//! nat     FERRY-SVC-<hash>                                                      (one frontend: its endpoints)
//!   ! -s <cluster> -d <addr>/32 ... -j FERRY-MARK-MASQ      (ClusterIP: off-cluster sources)
//!   -j FERRY-MARK-MASQ                                      (NodePort, externalIP, LB IP with externalTrafficPolicy Cluster)
//!   -m recent --rcheck --seconds <t> --reap --name FERRY-SEP-<h> ... -j FERRY-SEP-<h>   (ClientIP affinity, per endpoint)
//!   -m statistic --mode random --probability 1/(n-i) -j FERRY-SEP-<h>          (endpoint i of n; the last unconditional)
//! nat     FERRY-EXT-<hash>                 (externalTrafficPolicy Local: the frontend's dispatch target instead)
//!   -s <cluster> -j FERRY-SVC-<hash>                        (pods: every endpoint, source kept)
//!   -m addrtype --src-type LOCAL -j FERRY-MARK-MASQ         (the node itself: every endpoint, masqueraded)
//!   -m addrtype --src-type LOCAL -j FERRY-SVC-<hash>
//!   -j FERRY-SVL-<hash>                                     (from outside: local endpoints, source kept; none: no rule)
//! nat     FERRY-SVL-<hash>: as FERRY-SVC-<hash> over the local endpoints, without the mark
//! nat     FERRY-SEP-<hash>                                                      (one endpoint of one frontend)
//!   -s <endpoint>/32 -j FERRY-MARK-MASQ                                         (hairpin: a pod reaching itself)
//!   -p <proto> [-m recent --set ...] -m <proto> -j DNAT --to-destination <endpoint>:<port>
//! nat     FERRY-MARK-MASQ: -j MARK --set-xmark 0x20000/0x20000
//! nat     POSTROUTING -j FERRY-SERVICES-POST
//!   -m mark ! --mark 0x20000/0x20000 -j RETURN
//!   -j MARK --set-xmark 0x0/0x20000                                             (cleared before any encapsulation)
//!   -j MASQUERADE
//! filter  INPUT, FORWARD, OUTPUT -j FERRY-SERVICES
//!   -d <addr>/32 -p <proto> -m <proto> --dport <port> -j REJECT --reject-with icmp-port-unreachable   (no endpoints)
//!   -p <proto> -m addrtype --dst-type LOCAL -m <proto> --dport <nodePort> -j REJECT ...              (NodePort, no endpoints)
//!   -d <addr>/32 ... -j DROP, -p <proto> -m addrtype --dst-type LOCAL ... -j DROP      (externalTrafficPolicy Local, no local endpoint)
//! ```
//!
//! `externalTrafficPolicy: Local` follows kube-proxy's `KUBE-EXT-*` chain: traffic from outside
//! the cluster reaches only this node's endpoints with its source address kept (the backend sees
//! the client), and is dropped in filter when the node has none (the load balancer's health
//! check, [`super::healthcheck`], tells it to stop sending); pods and the node itself still
//! reach every endpoint. Pod traffic was translated in nat before filter sees it, so the drop
//! only ever matches untranslated external traffic.
//!
//! A frontend without endpoints is rejected with ICMP port unreachable, so `connect` fails at
//! once with `ECONNREFUSED` and a UDP sender gets the ICMP error (never a timeout). The
//! masquerade mark is ferry's own bit ([`MASQ_MARK`]), distinct from kube-proxy's `0x4000`,
//! its drop mark `0x8000`, portmap's and netavark's `0x2000` / `0x1000`; the existing
//! `FERRY-POSTROUTING` chain ([`crate::masq`]) keeps pod-to-pod traffic unmasqueraded, and this
//! chain masquerades only what the service rules marked.
//!
//! Chain names hash the frontend and the endpoint (FNV-1a, base32), so they are stable across
//! agent restarts. Every sync renders the wanted chains in the exact form `iptables-save` prints
//! them and diffs them against the known state ([`State`]): what the last successful restore
//! wrote. Only the chains that differ are written (new ones declared, changed ones flushed and
//! refilled, removed ones flushed and deleted, `FERRY-SERVICES` / `FERRY-NODEPORTS` rewritten
//! when a dispatch line changes) in one `iptables-restore --noflush` per sync: each table's
//! change is atomic, and an unchanged table writes nothing. `iptables-save` (seconds at 10,000
//! Services) is read only when the state is unknown: at the first sync (a restarted agent adopts
//! the rules, no flush, and removes stale chains of ours), after a failed sync, and as a full
//! resync every [`FULL_RESYNC_SYNCS`] syncs or [`FULL_RESYNC_INTERVAL`] (repairing changes made
//! by others, e.g. a deleted jump).
//!
//! UDP conntrack: after a sync, flows of a UDP frontend whose endpoint went away (all of them
//! when it has none left, or the frontend was removed) are deleted with `conntrack -D` (when
//! the tool is installed), so a client that keeps sending is re-balanced instead of
//! black-holed; flows to a frontend that got endpoints back are deleted too (they were not
//! translated). For a NodePort the flows are matched by the nodePort and the endpoint that
//! answers them, whatever node address the client used (kube-proxy's `--dst-nat` clean-up). The first sync of a process makes one level-triggered pass instead
//! (`conntrack -L`): flows to a UDP frontend answered by anything but a current backend are
//! deleted one by one (endpoints changed while no agent ran); working flows are never touched.

use super::{Backend, Entry, Frontend, FrontendKind, Proto, Proxier, ProxyError, ProxyMode};
use super::{ServiceTable, SyncStats};
use ipnetwork::Ipv4Network;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Ferry's masquerade mark for Service traffic (see the module documentation).
pub const MASQ_MARK: u32 = 0x20000;
/// nat: the entry chain (jumped from PREROUTING and OUTPUT); filter: the reject chain (jumped
/// from INPUT, FORWARD and OUTPUT).
pub const SERVICES: &str = "FERRY-SERVICES";
/// nat: NodePorts on local addresses.
pub const NODEPORTS: &str = "FERRY-NODEPORTS";
/// nat: sets [`MASQ_MARK`].
pub const MARK_MASQ: &str = "FERRY-MARK-MASQ";
/// nat: masquerades marked Service traffic (jumped from POSTROUTING).
pub const POSTROUTING: &str = "FERRY-SERVICES-POST";
/// Prefix of the per-frontend chains.
pub const SVC_PREFIX: &str = "FERRY-SVC-";
/// Prefix of the per-endpoint chains.
pub const SEP_PREFIX: &str = "FERRY-SEP-";
/// Prefix of the external-traffic chains of `externalTrafficPolicy: Local` frontends.
pub const EXT_PREFIX: &str = "FERRY-EXT-";
/// Prefix of the local-endpoint chains of `externalTrafficPolicy: Local` frontends.
pub const SVL_PREFIX: &str = "FERRY-SVL-";

/// A sync reads `iptables-save` again (a full resync against the kernel's rules, repairing
/// changes made by others) after this many syncs from the remembered state...
pub const FULL_RESYNC_SYNCS: u64 = 1000;
/// ...or this long after the last read, whichever comes first (kube-proxy forces a full sync
/// hourly too). Such a sync costs what the first one does (about 30 s at 10,000 Services on
/// the 2-core lab machine, most of it `iptables-save`).
pub const FULL_RESYNC_INTERVAL: Duration = Duration::from_secs(3600);

/// The hooks: `(table, built-in chain, our chain)`, in the order the jumps are checked.
pub const JUMPS: [(&str, &str, &str); 6] = [
    ("nat", "PREROUTING", SERVICES),
    ("nat", "OUTPUT", SERVICES),
    ("nat", "POSTROUTING", POSTROUTING),
    ("filter", "INPUT", SERVICES),
    ("filter", "FORWARD", SERVICES),
    ("filter", "OUTPUT", SERVICES),
];

/// 64-bit FNV-1a of `s`, as 16 base32 characters (a stable, short chain-name suffix).
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..13)
        .map(|i| {
            let [low, ..] = (h >> (i * 5)).to_le_bytes();
            char::from(ALPHABET[usize::from(low & 31)])
        })
        .collect()
}

/// The chain of frontend `fe` of service port `entry.service`.
pub fn svc_chain(fe: &Frontend, entry: &Entry) -> String {
    format!("{SVC_PREFIX}{}", hash(&format!("{}/{fe}", entry.service)))
}

/// The external-traffic chain of an `externalTrafficPolicy: Local` frontend.
pub fn ext_chain(fe: &Frontend, entry: &Entry) -> String {
    format!("{EXT_PREFIX}{}", hash(&format!("{}/{fe}", entry.service)))
}

/// The local-endpoint chain of an `externalTrafficPolicy: Local` frontend.
pub fn svl_chain(fe: &Frontend, entry: &Entry) -> String {
    format!("{SVL_PREFIX}{}", hash(&format!("{}/{fe}", entry.service)))
}

/// The chain of endpoint `b` of frontend `fe`.
pub fn sep_chain(fe: &Frontend, entry: &Entry, b: &Backend) -> String {
    format!(
        "{SEP_PREFIX}{}",
        hash(&format!("{}/{fe}/{b}", entry.service))
    )
}

/// `--probability` as `iptables-save` prints it: the kernel keeps `round(p * 2^31)`, printed
/// with 11 decimals.
pub fn probability(p: f64) -> String {
    let q = (p * 2_147_483_648.0).round();
    format!("{:.11}", q / 2_147_483_648.0)
}

/// One table's chains as wanted (or as installed): chain -> rules, each rule as
/// `iptables-save` prints it without `-A <chain> `.
pub type Chains = BTreeMap<String, Vec<String>>;

/// What the proxier wants in the nat and filter tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// nat chains.
    pub nat: Chains,
    /// filter chains.
    pub filter: Chains,
}

/// Renders `table` (see the module documentation). `cluster`: the pod network (sources outside
/// it are masqueraded); `None` masquerades every Service connection.
pub fn render(table: &ServiceTable, cluster: Option<Ipv4Network>) -> Rules {
    let mut nat = Chains::new();
    let mut filter_rules = Vec::new();
    let mut services = Vec::new();
    let mut nodeports = Vec::new();
    let mut seen_nodeports = BTreeSet::new();
    let not_pods = cluster.map(|c| format!("! -s {c} ")).unwrap_or_default();
    for (fe, entry) in &table.entries {
        let p = fe.proto.name();
        let dst = format!("-d {}/32 -p {p} -m {p} --dport {}", fe.addr, fe.port);
        let local_np =
            entry.kind == FrontendKind::NodePort && seen_nodeports.insert((fe.port, fe.proto));
        // Untranslated traffic to the frontend: refused (no endpoint at all) or, for external
        // traffic with externalTrafficPolicy Local on a node without local endpoints, dropped.
        let filter_target = if entry.backends.is_empty() {
            Some("-j REJECT --reject-with icmp-port-unreachable")
        } else if entry.external_local && entry.local_backends.is_empty() {
            Some("-j DROP")
        } else {
            None
        };
        if let Some(target) = filter_target {
            filter_rules.push(format!("{dst} {target}"));
            if local_np {
                filter_rules.push(format!(
                    "-p {p} -m addrtype --dst-type LOCAL -m {p} --dport {} {target}",
                    fe.port
                ));
            }
        }
        if entry.backends.is_empty() {
            continue;
        }
        let chain = svc_chain(fe, entry);
        let target = if entry.external_local {
            ext_chain(fe, entry)
        } else {
            chain.clone()
        };
        services.push(format!("{dst} -j {target}"));
        if local_np {
            nodeports.push(format!("-p {p} -m {p} --dport {} -j {target}", fe.port));
        }
        // ClusterIP: only off-cluster sources need the reply to come back through us; a
        // NodePort, externalIP or LoadBalancer IP may be reached from anywhere, and with
        // externalTrafficPolicy Local the EXT chain decides.
        let mark = match entry.kind {
            FrontendKind::ClusterIp => Some(format!("{not_pods}{dst} -j {MARK_MASQ}")),
            _ if entry.external_local => None,
            _ => Some(format!("-j {MARK_MASQ}")),
        };
        nat.insert(
            chain.clone(),
            policy_rules(fe, entry, &entry.backends, mark),
        );
        let mut endpoints: BTreeSet<&Backend> = entry.backends.iter().collect();
        if entry.external_local {
            let svl = svl_chain(fe, entry);
            let mut ext = Vec::new();
            if let Some(c) = cluster {
                ext.push(format!("-s {c} -j {chain}"));
            }
            ext.push(format!("-m addrtype --src-type LOCAL -j {MARK_MASQ}"));
            ext.push(format!("-m addrtype --src-type LOCAL -j {chain}"));
            if !entry.local_backends.is_empty() {
                ext.push(format!("-j {svl}"));
                nat.insert(svl, policy_rules(fe, entry, &entry.local_backends, None));
                endpoints.extend(&entry.local_backends);
            }
            nat.insert(target, ext);
        }
        for b in endpoints {
            let sep = sep_chain(fe, entry, b);
            let recent = if entry.affinity_timeout.is_some() {
                format!("-m recent --set --name {sep} --mask 255.255.255.255 --rsource ")
            } else {
                String::new()
            };
            nat.insert(
                sep,
                vec![
                    format!("-s {}/32 -j {MARK_MASQ}", b.addr),
                    format!("-p {p} {recent}-m {p} -j DNAT --to-destination {b}"),
                ],
            );
        }
    }
    services.push(format!("-m addrtype --dst-type LOCAL -j {NODEPORTS}"));
    nat.insert(SERVICES.to_owned(), services);
    nat.insert(NODEPORTS.to_owned(), nodeports);
    nat.insert(
        MARK_MASQ.to_owned(),
        vec![format!("-j MARK --set-xmark {MASQ_MARK:#x}/{MASQ_MARK:#x}")],
    );
    nat.insert(
        POSTROUTING.to_owned(),
        vec![
            format!("-m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN"),
            format!("-j MARK --set-xmark 0x0/{MASQ_MARK:#x}"),
            "-j MASQUERADE".to_owned(),
        ],
    );
    let mut filter = Chains::new();
    filter.insert(SERVICES.to_owned(), filter_rules);
    Rules { nat, filter }
}

/// The rules of a policy chain spreading new connections of `fe` over `backends` (not empty),
/// after the `mark` rule if any: ClientIP affinity checks first, then the random pick.
fn policy_rules(
    fe: &Frontend,
    entry: &Entry,
    backends: &[Backend],
    mark: Option<String>,
) -> Vec<String> {
    let mut rules: Vec<String> = mark.into_iter().collect();
    let seps: Vec<String> = backends.iter().map(|b| sep_chain(fe, entry, b)).collect();
    if let Some(t) = entry.affinity_timeout {
        for sep in &seps {
            rules.push(format!(
                "-m recent --rcheck --seconds {t} --reap --name {sep} --mask 255.255.255.255 --rsource -j {sep}"
            ));
        }
    }
    let n = seps.len();
    for (i, sep) in seps.iter().enumerate() {
        if i + 1 == n {
            rules.push(format!("-j {sep}"));
        } else {
            let prob = probability(1.0 / (n - i) as f64);
            rules.push(format!(
                "-m statistic --mode random --probability {prob} -j {sep}"
            ));
        }
    }
    rules
}

/// Whether `chain` is one of ours in this module's namespace of names.
fn ours(chain: &str) -> bool {
    chain == SERVICES
        || chain == NODEPORTS
        || chain == MARK_MASQ
        || chain == POSTROUTING
        || chain.starts_with(SVC_PREFIX)
        || chain.starts_with(SEP_PREFIX)
        || chain.starts_with(EXT_PREFIX)
        || chain.starts_with(SVL_PREFIX)
}

/// What `iptables-save` shows of one table: our chains and their rules, and every jump count
/// `(hook, chain)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Our chains (declared), with their rules.
    pub chains: Chains,
    /// `-A <hook> -j <chain>` counts for our chains.
    pub jumps: BTreeMap<(String, String), usize>,
}

/// Reads our chains of `table` out of `iptables-save` output.
pub fn installed(save: &str, table: &str) -> Installed {
    let mut out = Installed::default();
    let mut in_table = false;
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            in_table = t.trim() == table;
            continue;
        }
        if !in_table {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if ours(name) {
                out.chains.entry(name.to_owned()).or_default();
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, rest) = rule.split_once(' ').unwrap_or((rule, ""));
            if ours(chain) {
                out.chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(rest.trim_end().to_owned());
            } else if let Some(target) = rest.strip_prefix("-j ") {
                let target = target.trim_end();
                if ours(target) {
                    *out.jumps
                        .entry((chain.to_owned(), target.to_owned()))
                        .or_default() += 1;
                }
            }
        }
    }
    out
}

/// The `iptables-restore --noflush` input that makes our chains of `table` equal `want`, given
/// `save`; `None` when they already match. Changed chains are redeclared (flushed) and refilled,
/// stale ones flushed then deleted, jumps added or de-duplicated, all in one `COMMIT`.
pub fn restore_table(table: &str, want: &Chains, save: &str) -> Option<String> {
    restore_table_from(table, want, &installed(save, table))
}

/// [`restore_table`] against a known state `have` (what the last restore wrote, or what
/// `iptables-save` showed): only the chains that differ are written.
pub fn restore_table_from(table: &str, want: &Chains, have: &Installed) -> Option<String> {
    let mut decl = String::new();
    let mut body = String::new();
    for (chain, rules) in want {
        if have.chains.get(chain) == Some(rules) {
            continue;
        }
        let _ = writeln!(decl, ":{chain} - [0:0]");
        for r in rules {
            let _ = writeln!(body, "-A {chain} {r}");
        }
    }
    for (_, hook, chain) in JUMPS.iter().filter(|(t, _, _)| *t == table) {
        let n = have
            .jumps
            .get(&((*hook).to_owned(), (*chain).to_owned()))
            .copied()
            .unwrap_or(0);
        if n == 0 {
            let _ = writeln!(body, "-I {hook} -j {chain}");
        }
        for _ in 1..n {
            let _ = writeln!(body, "-D {hook} -j {chain}");
        }
    }
    let mut stale = String::new();
    for chain in have.chains.keys().filter(|c| !want.contains_key(*c)) {
        let _ = writeln!(decl, ":{chain} - [0:0]");
        let _ = writeln!(stale, "-X {chain}");
    }
    if decl.is_empty() && body.is_empty() {
        return None;
    }
    Some(format!("*{table}\n{decl}{body}{stale}COMMIT\n"))
}

/// What one table holds after a successful [`restore_table_from`] of `want`: exactly `want`
/// and one jump per hook.
fn written(table: &str, want: Chains) -> Installed {
    Installed {
        chains: want,
        jumps: JUMPS
            .iter()
            .filter(|(t, _, _)| *t == table)
            .map(|(_, hook, chain)| (((*hook).to_owned(), (*chain).to_owned()), 1))
            .collect(),
    }
}

/// Our state of both tables, as last written (or as read from `iptables-save`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The nat table.
    pub nat: Installed,
    /// The filter table.
    pub filter: Installed,
}

impl State {
    /// Our chains and jumps as `iptables-save` output `save` shows them.
    pub fn from_save(save: &str) -> State {
        State {
            nat: installed(save, "nat"),
            filter: installed(save, "filter"),
        }
    }

    /// The state after a successful restore of `rules`.
    pub fn written(rules: Rules) -> State {
        State {
            nat: written("nat", rules.nat),
            filter: written("filter", rules.filter),
        }
    }
}

/// The restore input for `rules` given the known state `have` (`None`: nothing to write): the
/// partial restore of a sync (only changed chains, new chains declared, removed ones flushed
/// and deleted, missing or duplicate jumps fixed).
pub fn restore_input_from(rules: &Rules, have: &State) -> Option<String> {
    let parts: Vec<String> = [
        ("filter", &rules.filter, &have.filter),
        ("nat", &rules.nat, &have.nat),
    ]
    .into_iter()
    .filter_map(|(t, want, have)| restore_table_from(t, want, have))
    .collect();
    (!parts.is_empty()).then(|| parts.concat())
}

/// The whole restore input for `rules` given `save` (`None`: nothing to write).
pub fn restore_input(rules: &Rules, save: &str) -> Option<String> {
    restore_input_from(rules, &State::from_save(save))
}

/// Removes all our Service chains and jumps (given `save`): the restore input, `None` when none
/// is there.
pub fn uninstall_input(save: &str) -> Option<String> {
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let have = installed(save, table);
        if have.chains.is_empty() && have.jumps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for ((hook, chain), n) in &have.jumps {
            for _ in 0..*n {
                let _ = writeln!(out, "-D {hook} -j {chain}");
            }
        }
        for chain in have.chains.keys() {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for chain in have.chains.keys() {
            let _ = writeln!(out, "-X {chain}");
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// One `conntrack -D -p udp` of the clean-up: the flows to `orig_dst` (any destination when
/// `None`: a NodePort, reached through any node address) port `port`, answered by `reply_src`
/// (any reply source when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UdpDelete {
    /// The original destination address.
    pub orig_dst: Option<Ipv4Addr>,
    /// The original destination port.
    pub port: u16,
    /// The reply source (an endpoint, or the frontend itself for untranslated flows).
    pub reply_src: Option<(Ipv4Addr, u16)>,
}

impl UdpDelete {
    /// The `conntrack` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(str::to_owned).to_vec();
        if let Some(d) = self.orig_dst {
            a.extend(["--orig-dst".to_owned(), d.to_string()]);
        }
        a.extend(["--orig-port-dst".to_owned(), self.port.to_string()]);
        if let Some((addr, port)) = self.reply_src {
            a.extend([
                "--reply-src".to_owned(),
                addr.to_string(),
                "--reply-port-src".to_owned(),
                port.to_string(),
            ]);
        }
        a
    }
}

/// Every endpoint a frontend may translate to: its backends, and for external traffic with
/// `externalTrafficPolicy: Local` its local backends.
fn reachable(e: &Entry) -> BTreeSet<Backend> {
    let mut out: BTreeSet<Backend> = e.backends.iter().copied().collect();
    if e.external_local {
        out.extend(&e.local_backends);
    }
    out
}

/// The UDP conntrack deletions going from `old` to `new` (sorted, no duplicates): every flow of
/// a removed frontend; the flows answered by an endpoint that went away; the untranslated flows
/// (answered by the frontend itself) of a frontend that had no endpoint, or no local endpoint
/// for its external traffic, and has one now. A NodePort's endpoint deletions match the
/// nodePort on any address.
pub fn stale_udp(old: &ServiceTable, new: &ServiceTable) -> Vec<UdpDelete> {
    let mut out = BTreeSet::new();
    for (fe, before) in old.entries.iter().filter(|(f, _)| f.proto == Proto::Udp) {
        let Some(after) = new.entries.get(fe) else {
            out.insert(UdpDelete {
                orig_dst: Some(fe.addr),
                port: fe.port,
                reply_src: None,
            });
            continue;
        };
        let orig_dst = (before.kind != FrontendKind::NodePort).then_some(fe.addr);
        let now = reachable(after);
        for b in reachable(before).difference(&now) {
            out.insert(UdpDelete {
                orig_dst,
                port: fe.port,
                reply_src: Some((b.addr, b.port)),
            });
        }
        let untranslated = UdpDelete {
            orig_dst: Some(fe.addr),
            port: fe.port,
            reply_src: Some((fe.addr, fe.port)),
        };
        if before.backends.is_empty() && !after.backends.is_empty() {
            out.insert(untranslated);
        }
        if after.external_local
            && !after.local_backends.is_empty()
            && (!before.external_local || before.local_backends.is_empty())
        {
            out.insert(untranslated);
        }
    }
    out.into_iter().collect()
}

/// One UDP flow in the kernel's conntrack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    /// Original direction source.
    pub src: (Ipv4Addr, u16),
    /// Original direction destination (a frontend, for flows of ours).
    pub dst: (Ipv4Addr, u16),
    /// Reply direction source (the backend, for a translated flow).
    pub reply_src: (Ipv4Addr, u16),
}

/// Parses `conntrack -L -p udp` output (`udp 17 29 src=.. dst=.. sport=.. dport=.. [UNREPLIED]
/// src=.. dst=.. sport=.. dport=.. ...`; the first tuple is the original direction, the second
/// the reply). Lines that do not parse are skipped.
pub fn parse_udp_flows(listing: &str) -> Vec<UdpFlow> {
    listing
        .lines()
        .filter_map(|line| {
            let mut addrs = Vec::new();
            let mut ports = Vec::new();
            for tok in line.split_whitespace() {
                if let Some(v) = tok
                    .strip_prefix("src=")
                    .or_else(|| tok.strip_prefix("dst="))
                {
                    addrs.push(v.parse::<Ipv4Addr>().ok()?);
                } else if let Some(v) = tok
                    .strip_prefix("sport=")
                    .or_else(|| tok.strip_prefix("dport="))
                {
                    ports.push(v.parse::<u16>().ok()?);
                }
            }
            if !line.trim_start().starts_with("udp") || addrs.len() < 4 || ports.len() < 4 {
                return None;
            }
            Some(UdpFlow {
                src: (addrs[0], ports[0]),
                dst: (addrs[1], ports[1]),
                reply_src: (addrs[2], ports[2]),
            })
        })
        .collect()
}

/// The flows to a UDP frontend of `table` whose reply source is not one of its backends.
pub fn stale_flows(flows: &[UdpFlow], table: &ServiceTable) -> Vec<UdpFlow> {
    flows
        .iter()
        .filter(|f| {
            let fe = Frontend {
                addr: f.dst.0,
                port: f.dst.1,
                proto: Proto::Udp,
            };
            table.entries.get(&fe).is_some_and(|e| {
                !reachable(e).contains(&Backend {
                    addr: f.reply_src.0,
                    port: f.reply_src.1,
                })
            })
        })
        .copied()
        .collect()
}

/// [`crate::iptables::run`], its error as text for [`ProxyError::Iptables`].
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    crate::iptables::run(cmd, args, stdin).map_err(|e| e.to_string())
}

/// Removes our Service chains from the current network namespace.
pub fn uninstall() -> Result<(), ProxyError> {
    let save = run("iptables-save", &[], None).map_err(ProxyError::Iptables)?;
    if let Some(input) = uninstall_input(&save) {
        run("iptables-restore", &["--noflush", "-w", "5"], Some(&input))
            .map_err(ProxyError::Iptables)?;
    }
    Ok(())
}

/// The iptables proxier; see the module documentation.
#[derive(Debug)]
pub struct IptablesProxier {
    cluster: Option<Ipv4Network>,
    /// The table of the last successful sync (for the conntrack cleanup).
    last: Option<ServiceTable>,
    /// `iptables-restore` runs so far (tests and metrics: an unchanged table writes nothing).
    restores: u64,
    /// Our chains and jumps as the last successful restore left them (`None`: unknown, read
    /// `iptables-save` at the next sync).
    state: Option<State>,
    /// Syncs since `iptables-save` was last read, and when it was.
    since_save: (u64, Instant),
    /// `iptables-save` reads so far (tests: a partial sync reads none).
    saves: u64,
    /// Whether `conntrack` is usable (checked once; warned once).
    conntrack: Option<bool>,
}

impl IptablesProxier {
    /// A proxier for a cluster whose pod network is `cluster`.
    pub fn new(cluster: Option<Ipv4Network>) -> IptablesProxier {
        IptablesProxier {
            cluster,
            last: None,
            restores: 0,
            state: None,
            since_save: (0, Instant::now()),
            saves: 0,
            conntrack: None,
        }
    }

    /// How many times a sync read `iptables-save` (the first sync, after a failed restore, and
    /// every full resync).
    pub fn saves(&self) -> u64 {
        self.saves
    }

    /// The known state, read from `iptables-save` when there is none or a full resync is due
    /// ([`FULL_RESYNC_SYNCS`] syncs or [`FULL_RESYNC_INTERVAL`] since the last read).
    fn known_state(&mut self) -> Result<State, ProxyError> {
        let (syncs, at) = self.since_save;
        let due = syncs >= FULL_RESYNC_SYNCS || at.elapsed() >= FULL_RESYNC_INTERVAL;
        match self.state.take() {
            Some(state) if !due => {
                self.since_save.0 += 1;
                Ok(state)
            }
            _ => {
                let save = run("iptables-save", &[], None).map_err(ProxyError::Iptables)?;
                self.saves += 1;
                self.since_save = (1, Instant::now());
                Ok(State::from_save(&save))
            }
        }
    }

    /// How many times a sync had to run `iptables-restore`.
    pub fn restores(&self) -> u64 {
        self.restores
    }

    /// Whether the `conntrack` tool runs (checked once, warned once).
    fn conntrack_available(&mut self) -> bool {
        if self.conntrack.is_none() {
            let ok = Command::new("conntrack")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                tracing::warn!(
                    "conntrack not installed: stale UDP flows to changed Services are not deleted"
                );
            }
            self.conntrack = Some(ok);
        }
        self.conntrack == Some(true)
    }

    /// First sync of this process: one level-triggered pass over the kernel's UDP flows.
    /// Flows to a frontend answered by something that is not one of its backends now (the
    /// endpoints changed while no agent ran) are deleted one by one; working flows stay (a
    /// restart must not disturb them).
    fn conntrack_adopt(&mut self, table: &ServiceTable) {
        if !table.entries.keys().any(|f| f.proto == Proto::Udp) || !self.conntrack_available() {
            return;
        }
        let listing = match run("conntrack", &["-L", "-p", "udp"], None) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing UDP flows failed");
                return;
            }
        };
        for f in stale_flows(&parse_udp_flows(&listing), table) {
            let [src, dst, sport, dport] = [
                f.src.0.to_string(),
                f.dst.0.to_string(),
                f.src.1.to_string(),
                f.dst.1.to_string(),
            ];
            let args = [
                "-D",
                "-p",
                "udp",
                "--orig-src",
                &src,
                "--orig-dst",
                &dst,
                "--orig-port-src",
                &sport,
                "--orig-port-dst",
                &dport,
            ];
            match run("conntrack", &args, None) {
                Ok(_) => {}
                Err(e) if e.contains("0 flow entries") => {}
                Err(e) => tracing::warn!(error = %e, "deleting a stale UDP flow failed"),
            }
        }
    }

    fn conntrack_cleanup(&mut self, new: &ServiceTable) {
        let Some(old) = self.last.as_ref() else {
            self.conntrack_adopt(new);
            return;
        };
        let stale = stale_udp(old, new);
        if stale.is_empty() || !self.conntrack_available() {
            return;
        }
        for d in stale {
            let args = d.args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // Exit status 1 with "0 flow entries": nothing to delete.
            match run("conntrack", &args, None) {
                Ok(_) => {}
                Err(e) if e.contains("0 flow entries") => {}
                Err(e) => {
                    tracing::warn!(delete = ?d, error = %e, "deleting stale UDP flows failed")
                }
            }
        }
    }
}

impl Proxier for IptablesProxier {
    fn mode(&self) -> ProxyMode {
        ProxyMode::Iptables
    }

    fn sync(&mut self, table: &ServiceTable) -> Result<SyncStats, ProxyError> {
        // `state` stays `None` until this sync has succeeded: any error below makes the next
        // sync read `iptables-save` again.
        let known = self.known_state()?;
        let rules = render(table, self.cluster);
        let mut stats = SyncStats::default();
        if let Some(input) = restore_input_from(&rules, &known) {
            run("iptables-restore", &["--noflush", "-w", "5"], Some(&input))
                .map_err(ProxyError::Iptables)?;
            self.restores += 1;
            let have = &known.nat.chains;
            let differs = |c: &String| have.get(c) != rules.nat.get(c);
            stats.changed = table
                .entries
                .iter()
                .filter(|(_, e)| !e.backends.is_empty())
                .filter(|(fe, e)| {
                    differs(&svc_chain(fe, e))
                        || (e.external_local
                            && (differs(&ext_chain(fe, e)) || differs(&svl_chain(fe, e))))
                })
                .count();
            stats.removed = have
                .keys()
                .filter(|c| c.starts_with(SVC_PREFIX) && !rules.nat.contains_key(*c))
                .count();
        }
        self.state = Some(State::written(rules));
        self.conntrack_cleanup(table);
        self.last = Some(table.clone());
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServicePortName;

    fn entry(name: &str, kind: FrontendKind, backends: &[(&str, u16)], aff: Option<u32>) -> Entry {
        Entry {
            service: ServicePortName {
                namespace: "default".into(),
                name: name.into(),
                port: String::new(),
            },
            kind,
            backends: backends
                .iter()
                .map(|(a, p)| Backend {
                    addr: a.parse().unwrap(),
                    port: *p,
                })
                .collect(),
            local_backends: Vec::new(),
            external_local: false,
            affinity_timeout: aff,
        }
    }

    fn fe(addr: &str, port: u16, proto: Proto) -> Frontend {
        Frontend {
            addr: addr.parse().unwrap(),
            port,
            proto,
        }
    }

    fn table() -> ServiceTable {
        let mut t = ServiceTable::default();
        t.entries.insert(
            fe("10.96.0.10", 80, Proto::Tcp),
            entry(
                "web",
                FrontendKind::ClusterIp,
                &[
                    ("10.244.1.2", 8080),
                    ("10.244.1.3", 8080),
                    ("10.244.1.4", 8080),
                ],
                None,
            ),
        );
        t.entries.insert(
            fe("10.96.0.11", 53, Proto::Udp),
            entry(
                "dns",
                FrontendKind::ClusterIp,
                &[("10.244.1.5", 53)],
                Some(60),
            ),
        );
        t.entries.insert(
            fe("10.96.0.12", 80, Proto::Tcp),
            entry("empty", FrontendKind::ClusterIp, &[], None),
        );
        t.entries.insert(
            fe("10.0.0.1", 30080, Proto::Tcp),
            entry("np", FrontendKind::NodePort, &[("10.244.1.2", 8080)], None),
        );
        t.entries.insert(
            fe("10.0.0.2", 30080, Proto::Tcp),
            entry("np", FrontendKind::NodePort, &[("10.244.1.2", 8080)], None),
        );
        t.entries.insert(
            fe("10.0.0.1", 30081, Proto::Udp),
            entry("np-empty", FrontendKind::NodePort, &[], None),
        );
        t
    }

    fn cluster() -> Option<Ipv4Network> {
        Some("10.244.0.0/16".parse().unwrap())
    }

    #[test]
    fn probabilities_print_as_iptables_save_does() {
        // Seen in `iptables-save` after restoring 0.3333333333 and 0.5.
        assert_eq!(probability(1.0 / 3.0), "0.33333333349");
        assert_eq!(probability(0.5), "0.50000000000");
        assert_eq!(probability(0.25), "0.25000000000");
    }

    #[test]
    fn renders_kube_proxy_style_chains() {
        let t = table();
        let r = render(&t, cluster());
        let web_fe = fe("10.96.0.10", 80, Proto::Tcp);
        let web = svc_chain(&web_fe, &t.entries[&web_fe]);
        assert!(web.len() <= 28 && web.starts_with("FERRY-SVC-"), "{web}");
        let seps: Vec<String> = t.entries[&web_fe]
            .backends
            .iter()
            .map(|b| sep_chain(&web_fe, &t.entries[&web_fe], b))
            .collect();
        assert_eq!(
            r.nat[&web],
            vec![
                format!("! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j FERRY-MARK-MASQ"),
                format!("-m statistic --mode random --probability 0.33333333349 -j {}", seps[0]),
                format!("-m statistic --mode random --probability 0.50000000000 -j {}", seps[1]),
                format!("-j {}", seps[2]),
            ]
        );
        assert_eq!(
            r.nat[&seps[1]],
            vec![
                "-s 10.244.1.3/32 -j FERRY-MARK-MASQ".to_owned(),
                "-p tcp -m tcp -j DNAT --to-destination 10.244.1.3:8080".to_owned(),
            ]
        );
        // Affinity: a recent check per endpoint before the random pick, and the set at DNAT.
        let dns_fe = fe("10.96.0.11", 53, Proto::Udp);
        let dns = svc_chain(&dns_fe, &t.entries[&dns_fe]);
        let dsep = sep_chain(
            &dns_fe,
            &t.entries[&dns_fe],
            &t.entries[&dns_fe].backends[0],
        );
        assert_eq!(
            r.nat[&dns][1],
            format!("-m recent --rcheck --seconds 60 --reap --name {dsep} --mask 255.255.255.255 --rsource -j {dsep}")
        );
        assert_eq!(
            r.nat[&dsep][1],
            format!("-p udp -m recent --set --name {dsep} --mask 255.255.255.255 --rsource -m udp -j DNAT --to-destination 10.244.1.5:53")
        );
        // Entry chain: one jump per frontend with endpoints, NodePorts last via LOCAL.
        let np_fe = fe("10.0.0.1", 30080, Proto::Tcp);
        let np = svc_chain(&np_fe, &t.entries[&np_fe]);
        assert_eq!(
            r.nat[SERVICES].last().unwrap(),
            "-m addrtype --dst-type LOCAL -j FERRY-NODEPORTS"
        );
        assert_eq!(r.nat[SERVICES].len(), 5, "{:?}", r.nat[SERVICES]);
        assert_eq!(
            r.nat[NODEPORTS],
            vec![format!("-p tcp -m tcp --dport 30080 -j {np}")]
        );
        // NodePort: marked whatever the source and whatever local address it came to.
        assert_eq!(r.nat[&np][0], "-j FERRY-MARK-MASQ");
        // No endpoints: rejected in filter, the NodePort also on any local address.
        assert_eq!(
            r.filter[SERVICES],
            vec![
                "-d 10.0.0.1/32 -p udp -m udp --dport 30081 -j REJECT --reject-with icmp-port-unreachable",
                "-p udp -m addrtype --dst-type LOCAL -m udp --dport 30081 -j REJECT --reject-with icmp-port-unreachable",
                "-d 10.96.0.12/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        assert_eq!(
            r.nat[POSTROUTING],
            vec![
                "-m mark ! --mark 0x20000/0x20000 -j RETURN",
                "-j MARK --set-xmark 0x0/0x20000",
                "-j MASQUERADE",
            ]
        );
    }

    /// `iptables-save` output holding exactly `rules` (and foreign chains), as the kernel
    /// prints it back.
    fn saved(rules: &Rules) -> String {
        let mut s = String::from("# Generated by iptables-save\n");
        for (t, chains, hooks) in [
            ("filter", &rules.filter, &["INPUT", "FORWARD", "OUTPUT"][..]),
            (
                "nat",
                &rules.nat,
                &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"][..],
            ),
        ] {
            let _ = writeln!(s, "*{t}");
            for h in hooks {
                let _ = writeln!(s, ":{h} ACCEPT [0:0]");
            }
            let _ = writeln!(s, ":KUBE-SERVICES - [0:0]");
            for c in chains.keys() {
                let _ = writeln!(s, ":{c} - [0:0]");
            }
            for (tt, hook, chain) in JUMPS {
                if tt == t {
                    let _ = writeln!(s, "-A {hook} -j {chain}");
                }
            }
            let _ = writeln!(s, "-A OUTPUT -j KUBE-SERVICES");
            for (c, rs) in chains {
                for r in rs {
                    let _ = writeln!(s, "-A {c} {r}");
                }
            }
            s.push_str("COMMIT\n");
        }
        s
    }

    #[test]
    fn unchanged_rules_write_nothing_and_changes_touch_only_their_chains() {
        let t = table();
        let r = render(&t, cluster());
        let save = saved(&r);
        assert_eq!(installed(&save, "nat").chains, r.nat);
        assert_eq!(restore_input(&r, &save), None);
        // From nothing: every chain declared, jumps inserted, nothing deleted.
        let fresh = restore_input(&r, "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").unwrap();
        assert!(fresh.contains("-I PREROUTING -j FERRY-SERVICES\n"));
        assert!(fresh.contains("-I POSTROUTING -j FERRY-SERVICES-POST\n"));
        assert!(fresh.contains("-I FORWARD -j FERRY-SERVICES\n"));
        assert!(!fresh.contains("-X "));
        // One endpoint removed from web: its SVC chain and FERRY-SERVICES unchanged, its
        // SVC chain rewritten, the stale SEP chain deleted; the KUBE chain never touched.
        let mut t2 = t.clone();
        let web_fe = fe("10.96.0.10", 80, Proto::Tcp);
        let gone = t2.entries.get_mut(&web_fe).unwrap().backends.pop().unwrap();
        let r2 = render(&t2, cluster());
        let input = restore_input(&r2, &save).unwrap();
        let web = svc_chain(&web_fe, &t.entries[&web_fe]);
        let stale = sep_chain(&web_fe, &t.entries[&web_fe], &gone);
        assert!(input.starts_with("*nat\n"), "{input}");
        assert!(input.contains(&format!(":{web} - [0:0]\n")));
        assert!(input.contains(&format!(":{stale} - [0:0]\n")));
        assert!(input.ends_with(&format!("-X {stale}\nCOMMIT\n")), "{input}");
        assert!(!input.contains(":FERRY-SERVICES"), "{input}");
        assert!(!input.contains("KUBE"), "{input}");
        assert_eq!(input.matches("COMMIT").count(), 1);
        // Uninstall removes jumps, then flushes and deletes every chain of ours.
        let un = uninstall_input(&save).unwrap();
        assert!(un.contains("-D PREROUTING -j FERRY-SERVICES\n"));
        assert!(un.contains(&format!("-X {web}\n")));
        assert!(!un.contains("KUBE"));
        assert_eq!(uninstall_input("*nat\nCOMMIT\n"), None);
    }

    #[test]
    fn partial_restore_writes_only_the_changed_service_and_the_dispatch_lines() {
        let t = table();
        let r = render(&t, cluster());
        // What a restore leaves is what `iptables-save` would show afterwards.
        let state = State::written(r.clone());
        assert_eq!(state, State::from_save(&saved(&r)));
        assert_eq!(restore_input_from(&r, &state), None);
        // One new Service: its SVC and SEP chains declared and filled, FERRY-SERVICES
        // rewritten with its dispatch line; no other chain, no jump, no filter table.
        let mut t2 = t.clone();
        let new_fe = fe("10.96.0.20", 80, Proto::Tcp);
        let new = entry(
            "new",
            FrontendKind::ClusterIp,
            &[("10.244.2.2", 80), ("10.244.2.3", 80)],
            None,
        );
        t2.entries.insert(new_fe, new.clone());
        let r2 = render(&t2, cluster());
        let input = restore_input_from(&r2, &state).unwrap();
        let svc = svc_chain(&new_fe, &new);
        let seps: Vec<String> = new
            .backends
            .iter()
            .map(|b| sep_chain(&new_fe, &new, b))
            .collect();
        let mut changed: Vec<&String> = seps.iter().chain([&svc]).collect();
        changed.sort();
        let mut body = String::new();
        for (c, rules) in &r2.nat {
            if c == SERVICES || changed.contains(&c) {
                for rule in rules {
                    body.push_str(&format!("-A {c} {rule}\n"));
                }
            }
        }
        // Declarations first, in chain order, then the rules, in one COMMIT.
        let mut want = String::from("*nat\n");
        for c in r2.nat.keys() {
            if c == SERVICES || changed.contains(&c) {
                want.push_str(&format!(":{c} - [0:0]\n"));
            }
        }
        want.push_str(&body);
        want.push_str("COMMIT\n");
        assert_eq!(input, want);
        assert!(input.contains(&format!(
            "-A {SERVICES} -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j {svc}\n"
        )));
        // After that restore, the same table writes nothing; removing the Service again
        // rewrites the dispatch lines and flushes and deletes exactly its chains.
        let state2 = State::written(r2.clone());
        assert_eq!(restore_input_from(&r2, &state2), None);
        let back = restore_input_from(&r, &state2).unwrap();
        for c in &changed {
            assert!(back.contains(&format!(":{c} - [0:0]\n")), "{back}");
            assert!(back.contains(&format!("-X {c}\n")), "{back}");
            assert!(!back.contains(&format!("-A {c} ")), "{back}");
        }
        assert!(back.contains(&format!(":{SERVICES} - [0:0]\n")));
        assert_eq!(back.matches("-X ").count(), 3, "{back}");
        assert_eq!(back.matches(" - [0:0]\n").count(), 4, "{back}");
        assert!(!back.contains("*filter"));
        // Unknown state (a failed restore): everything declared and every jump inserted.
        let fresh = restore_input_from(&r, &State::default()).unwrap();
        assert!(fresh.contains("-I PREROUTING -j FERRY-SERVICES\n"));
        assert!(fresh.contains("*filter\n"));
    }

    #[test]
    fn duplicate_jumps_are_removed() {
        let r = render(&ServiceTable::default(), cluster());
        let save = saved(&r).replace(
            "-A PREROUTING -j FERRY-SERVICES\n",
            "-A PREROUTING -j FERRY-SERVICES\n-A PREROUTING -j FERRY-SERVICES\n",
        );
        let input = restore_input(&r, &save).unwrap();
        assert_eq!(input, "*nat\n-D PREROUTING -j FERRY-SERVICES\nCOMMIT\n");
    }

    #[test]
    fn parses_conntrack_listings_and_finds_stale_flows() {
        let listing = "\
udp      17 29 src=10.244.1.10 dst=10.96.0.11 sport=40000 dport=53 src=10.244.1.5 dst=10.244.1.10 sport=53 dport=40000 mark=0 use=1
udp      17 25 src=10.244.1.11 dst=10.96.0.11 sport=40001 dport=53 [UNREPLIED] src=10.244.1.9 dst=10.244.1.11 sport=53 dport=40001 mark=0 use=1
udp      17 20 src=10.244.1.12 dst=10.96.0.99 sport=40002 dport=53 src=10.244.1.9 dst=10.244.1.12 sport=53 dport=40002 mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2 src=10.0.0.2 dst=10.0.0.1 sport=2 dport=1 [ASSURED] mark=0 use=1
garbage
";
        let flows = parse_udp_flows(listing);
        assert_eq!(flows.len(), 3, "{flows:?}");
        assert_eq!(
            flows[1],
            UdpFlow {
                src: ("10.244.1.11".parse().unwrap(), 40001),
                dst: ("10.96.0.11".parse().unwrap(), 53),
                reply_src: ("10.244.1.9".parse().unwrap(), 53),
            }
        );
        // 10.96.0.11:53 is served by 10.244.1.5:53 only: the flow answered by .9 is stale;
        // 10.96.0.99 is not ours: left alone.
        assert_eq!(stale_flows(&flows, &table()), vec![flows[1]]);
    }

    fn del(dst: Option<&str>, port: u16, reply: Option<(&str, u16)>) -> UdpDelete {
        UdpDelete {
            orig_dst: dst.map(|d| d.parse().unwrap()),
            port,
            reply_src: reply.map(|(a, p)| (a.parse().unwrap(), p)),
        }
    }

    #[test]
    fn stale_udp_flows_on_every_transition() {
        let t = table();
        let dns_fe = fe("10.96.0.11", 53, Proto::Udp);
        // N -> 0.
        let mut none = t.clone();
        none.entries.get_mut(&dns_fe).unwrap().backends.clear();
        let gone_ep = del(Some("10.96.0.11"), 53, Some(("10.244.1.5", 53)));
        assert_eq!(stale_udp(&t, &none), vec![gone_ep]);
        assert_eq!(
            gone_ep.args(),
            [
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                "10.96.0.11",
                "--orig-port-dst",
                "53",
                "--reply-src",
                "10.244.1.5",
                "--reply-port-src",
                "53"
            ]
        );
        // 0 -> 1: untranslated flows (answered by the frontend itself) go.
        assert_eq!(
            stale_udp(&none, &t),
            vec![del(Some("10.96.0.11"), 53, Some(("10.96.0.11", 53)))]
        );
        // Service deleted: every flow to it.
        let mut gone = t.clone();
        gone.entries.remove(&dns_fe);
        let all = del(Some("10.96.0.11"), 53, None);
        assert_eq!(stale_udp(&t, &gone), vec![all]);
        assert_eq!(
            all.args(),
            [
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                "10.96.0.11",
                "--orig-port-dst",
                "53"
            ]
        );
        // TCP and unchanged frontends: nothing.
        assert_eq!(stale_udp(&t, &t), vec![]);
    }

    /// A UDP NodePort `30053` on two node addresses with externalTrafficPolicy `local`.
    fn udp_node_port(
        backends: &[(&str, u16)],
        local: &[(&str, u16)],
        etp_local: bool,
    ) -> ServiceTable {
        let mut t = ServiceTable::default();
        for addr in ["10.0.0.1", "10.0.0.2"] {
            let mut e = entry("np", FrontendKind::NodePort, backends, None);
            e.local_backends = entry("np", FrontendKind::NodePort, local, None).backends;
            e.external_local = etp_local;
            t.entries.insert(fe(addr, 30053, Proto::Udp), e);
        }
        t
    }

    #[test]
    fn stale_udp_node_port_flows_match_the_port_on_any_address() {
        // An endpoint goes: one deletion by nodePort and endpoint (not one per node address).
        let before = udp_node_port(&[("10.244.1.2", 53), ("10.244.2.2", 53)], &[], false);
        let after = udp_node_port(&[("10.244.2.2", 53)], &[], false);
        let d = del(None, 30053, Some(("10.244.1.2", 53)));
        assert_eq!(stale_udp(&before, &after), vec![d]);
        assert_eq!(
            d.args(),
            [
                "-D",
                "-p",
                "udp",
                "--orig-port-dst",
                "30053",
                "--reply-src",
                "10.244.1.2",
                "--reply-port-src",
                "53"
            ]
        );
        // externalTrafficPolicy Local: the external flows' local endpoint goes too.
        let before = udp_node_port(
            &[("10.244.1.2", 53), ("10.244.2.2", 53)],
            &[("10.244.1.2", 53), ("10.244.1.3", 53)],
            true,
        );
        let after = udp_node_port(
            &[("10.244.1.2", 53), ("10.244.2.2", 53)],
            &[("10.244.1.2", 53)],
            true,
        );
        assert_eq!(
            stale_udp(&before, &after),
            vec![del(None, 30053, Some(("10.244.1.3", 53)))]
        );
        // No local endpoint -> one: the dropped (untranslated) flows to each address go.
        let none = udp_node_port(&[("10.244.2.2", 53)], &[], true);
        let one = udp_node_port(&[("10.244.2.2", 53)], &[("10.244.1.2", 53)], true);
        assert_eq!(
            stale_udp(&none, &one),
            vec![
                del(Some("10.0.0.1"), 30053, Some(("10.0.0.1", 30053))),
                del(Some("10.0.0.2"), 30053, Some(("10.0.0.2", 30053))),
            ]
        );
        // The adoption pass accepts replies from local endpoints of an external-local frontend.
        let flow = |reply: &str| UdpFlow {
            src: ("10.99.0.254".parse().unwrap(), 40000),
            dst: ("10.0.0.1".parse().unwrap(), 30053),
            reply_src: (reply.parse().unwrap(), 53),
        };
        let flows = [flow("10.244.1.2"), flow("10.244.2.2"), flow("10.244.9.9")];
        assert_eq!(stale_flows(&flows, &one), vec![flows[2]]);
    }

    /// An externalTrafficPolicy Local NodePort and LoadBalancer IP of `web` (port 80 -> 8080) with
    /// `backends` cluster-wide, `local` of them on this node.
    fn etp_local(backends: &[&str], local: &[&str]) -> ServiceTable {
        let mut t = ServiceTable::default();
        fn with<'a>(v: &[&'a str]) -> Vec<(&'a str, u16)> {
            v.iter().map(|a| (*a, 8080)).collect()
        }
        for (f, kind) in [
            (fe("10.0.0.1", 30080, Proto::Tcp), FrontendKind::NodePort),
            (fe("192.0.2.10", 80, Proto::Tcp), FrontendKind::LoadBalancer),
        ] {
            let mut e = entry("web", kind, &with(backends), None);
            e.local_backends = entry("web", kind, &with(local), None).backends;
            e.external_local = true;
            t.entries.insert(f, e);
        }
        t
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_source_and_uses_local_endpoints() {
        let t = etp_local(&["10.244.1.2", "10.244.2.2"], &["10.244.1.2"]);
        let r = render(&t, cluster());
        let f = fe("10.0.0.1", 30080, Proto::Tcp);
        let e = &t.entries[&f];
        let (svc, ext, svl) = (svc_chain(&f, e), ext_chain(&f, e), svl_chain(&f, e));
        assert!(ext.starts_with("FERRY-EXT-") && ext.len() <= 28, "{ext}");
        let sep = |a: &str| {
            sep_chain(
                &f,
                e,
                &Backend {
                    addr: a.parse().unwrap(),
                    port: 8080,
                },
            )
        };
        // Dispatch goes to the EXT chain, for the address and for any local address.
        assert!(r.nat[SERVICES].contains(&format!(
            "-d 10.0.0.1/32 -p tcp -m tcp --dport 30080 -j {ext}"
        )));
        assert_eq!(
            r.nat[NODEPORTS],
            vec![format!("-p tcp -m tcp --dport 30080 -j {ext}")]
        );
        // Pods: every endpoint, unmarked; the node itself: every endpoint, masqueraded; the
        // rest (from outside): the local endpoints, unmarked (source kept).
        assert_eq!(
            r.nat[&ext],
            vec![
                format!("-s 10.244.0.0/16 -j {svc}"),
                "-m addrtype --src-type LOCAL -j FERRY-MARK-MASQ".to_owned(),
                format!("-m addrtype --src-type LOCAL -j {svc}"),
                format!("-j {svl}"),
            ]
        );
        assert_eq!(
            r.nat[&svc],
            vec![
                format!(
                    "-m statistic --mode random --probability 0.50000000000 -j {}",
                    sep("10.244.1.2")
                ),
                format!("-j {}", sep("10.244.2.2")),
            ]
        );
        assert_eq!(r.nat[&svl], vec![format!("-j {}", sep("10.244.1.2"))]);
        assert!(!r.nat[&svl].iter().any(|l| l.contains(MARK_MASQ)));
        // Nothing dropped or rejected while there is a local endpoint.
        assert!(r.filter[SERVICES].is_empty(), "{:?}", r.filter[SERVICES]);
        // The same Service with externalTrafficPolicy Cluster marks everything.
        let mut cl = t.clone();
        cl.entries
            .values_mut()
            .for_each(|e| e.external_local = false);
        let rc = render(&cl, cluster());
        assert_eq!(rc.nat[&svc][0], "-j FERRY-MARK-MASQ");
        assert!(!rc.nat.contains_key(&ext) && !rc.nat.contains_key(&svl));
        assert!(rc.nat[SERVICES].contains(&format!(
            "-d 10.0.0.1/32 -p tcp -m tcp --dport 30080 -j {svc}"
        )));
    }

    #[test]
    fn external_traffic_policy_local_without_local_endpoints_drops_external_traffic() {
        let t = etp_local(&["10.244.2.2"], &[]);
        let r = render(&t, cluster());
        let f = fe("10.0.0.1", 30080, Proto::Tcp);
        let e = &t.entries[&f];
        let (svc, ext, svl) = (svc_chain(&f, e), ext_chain(&f, e), svl_chain(&f, e));
        // Pods and the node still reach the remote endpoint; nothing else is translated.
        assert_eq!(
            r.nat[&ext],
            vec![
                format!("-s 10.244.0.0/16 -j {svc}"),
                "-m addrtype --src-type LOCAL -j FERRY-MARK-MASQ".to_owned(),
                format!("-m addrtype --src-type LOCAL -j {svc}"),
            ]
        );
        assert!(!r.nat.contains_key(&svl));
        // ...and the untranslated rest is dropped (not refused: the load balancer's health
        // check steers it away), on the address and on any local address.
        assert_eq!(
            r.filter[SERVICES],
            vec![
                "-d 10.0.0.1/32 -p tcp -m tcp --dport 30080 -j DROP",
                "-p tcp -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j DROP",
                "-d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DROP",
            ]
        );
        // No endpoint anywhere: refused as any Service without endpoints.
        let r = render(&etp_local(&[], &[]), cluster());
        assert!(r.filter[SERVICES]
            .iter()
            .all(|l| l.ends_with("-j REJECT --reject-with icmp-port-unreachable")));
        assert_eq!(r.filter[SERVICES].len(), 3);
        assert!(!r.nat.contains_key(&ext));
    }

    #[test]
    fn a_local_endpoint_that_is_not_a_cluster_endpoint_gets_its_own_chain() {
        // A draining (serving, terminating) local pod while ready ones run elsewhere: external
        // traffic goes to the local one, the cluster's own to the ready one.
        let t = etp_local(&["10.244.2.2"], &["10.244.1.9"]);
        let r = render(&t, cluster());
        let f = fe("10.0.0.1", 30080, Proto::Tcp);
        let e = &t.entries[&f];
        let seps: BTreeSet<&String> = r.nat.keys().filter(|c| c.starts_with(SEP_PREFIX)).collect();
        // Two endpoints on two frontends.
        assert_eq!(seps.len(), 4, "{seps:?}");
        let local_sep = sep_chain(&f, e, &e.local_backends[0]);
        assert_eq!(r.nat[&svl_chain(&f, e)], vec![format!("-j {local_sep}")]);
        assert_eq!(
            r.nat[&local_sep][1],
            "-p tcp -m tcp -j DNAT --to-destination 10.244.1.9:8080"
        );
        // The render round-trips through iptables-save.
        assert_eq!(State::from_save(&saved(&r)), State::written(r.clone()));
    }
}
