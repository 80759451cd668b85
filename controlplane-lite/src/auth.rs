//! Authentication (bearer tokens) and authorization.
//!
//! Tokens live in `<data-dir>/tokens.json` (mode 0600): one admin token and one token per node.
//! Admin tokens may do everything. A node token authenticates as `system:node:<name>` and may
//! read only what its kubelet and agent need: Nodes, Services, Endpoints and EndpointSlices
//! ([`NODE_READS`]); the pods bound to it (by name, with their status and logs; lists and
//! watches only with `fieldSelector=spec.nodeName=<node>`); the Secrets and ConfigMaps those
//! pods use (by name); the heartbeat Leases in `kube-node-lease` (the agents judge each other's
//! L2 announcer Lease). Never the pod streams (exec, attach, port-forward). It
//! writes only its own Node (and its status; what it may change there is
//! `crate::admission::node_restriction`), its own Leases (`<node>` and `ferry-l2-<node>`,
//! [`ferry_kube::lease`]), Events, and the pods bound to it (their
//! status, and the final deletion that confirms termination); every other request is 403.
//! Tokens never appear in logs; comparisons are constant-time. [`rules`] lists the same decisions as rules (for
//! `kubectl auth can-i --list`); `crate::reviews` answers `kubectl auth can-i` / `whoami` from them.

use anyhow::{Context, Result};
use ferry_kube::lease;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Cluster admin.
    Admin,
    /// A node's kubelet / agent: `system:node:<name>`.
    Node(String),
}

impl Identity {
    /// The user name as Kubernetes spells it.
    pub fn user(&self) -> String {
        match self {
            Identity::Admin => "admin".to_owned(),
            Identity::Node(n) => format!("system:node:{n}"),
        }
    }

    /// The groups Kubernetes would report (`kubectl auth whoami`): the admin is in
    /// `system:masters` (the superuser group), a node in `system:nodes`.
    pub fn groups(&self) -> Vec<String> {
        let own = match self {
            Identity::Admin => "system:masters",
            Identity::Node(_) => "system:nodes",
        };
        vec![own.to_owned(), "system:authenticated".to_owned()]
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TokenFile {
    admin: String,
    #[serde(default)]
    nodes: BTreeMap<String, String>,
}

/// The token file.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    file: std::sync::RwLock<(TokenFile, Option<std::time::SystemTime>)>,
}

fn random_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn ct_eq(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    // Compare digests so timing depends on neither length nor content.
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

impl Tokens {
    /// Loads `<dir>/tokens.json`, creating it with a fresh admin token if absent.
    pub fn load_or_init(dir: &Path) -> Result<Tokens> {
        let path = dir.join("tokens.json");
        if !path.exists() {
            let file = TokenFile {
                admin: random_token(),
                nodes: BTreeMap::new(),
            };
            write(&path, &file)?;
        }
        let t = Tokens {
            path,
            file: std::sync::RwLock::new((TokenFile::default(), None)),
        };
        t.reload()?;
        Ok(t)
    }

    fn reload(&self) -> Result<()> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let file: TokenFile = serde_json::from_slice(
            &std::fs::read(&self.path)
                .with_context(|| format!("reading {}", self.path.display()))?,
        )
        .with_context(|| format!("parsing {}", self.path.display()))?;
        if file.admin.len() < 16 {
            anyhow::bail!("{}: the admin token is too short", self.path.display());
        }
        *self
            .file
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (file, mtime);
        Ok(())
    }

    fn refresh_if_changed(&self) {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let current = self
            .file
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1;
        if mtime != current {
            if let Err(e) = self.reload() {
                tracing::warn!("token file not reloaded: {e:#}");
            }
        }
    }

    /// The admin token.
    pub fn admin(&self) -> String {
        self.file
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .admin
            .clone()
    }

    /// The token of `node`, created if absent.
    pub fn node_token(&self, node: &str) -> Result<String> {
        self.refresh_if_changed();
        let mut guard = self
            .file
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = guard.0.nodes.get(node) {
            return Ok(t.clone());
        }
        let token = random_token();
        guard.0.nodes.insert(node.to_owned(), token.clone());
        write(&self.path, &guard.0)?;
        guard.1 = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        Ok(token)
    }

    /// The token of `node` if it has one (never creates one).
    pub fn existing_node_token(&self, node: &str) -> Option<String> {
        self.refresh_if_changed();
        self.file
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .nodes
            .get(node)
            .cloned()
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Option<Identity> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        self.refresh_if_changed();
        let guard = self
            .file
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ct_eq(token, &guard.0.admin) {
            return Some(Identity::Admin);
        }
        guard
            .0
            .nodes
            .iter()
            .find(|(_, t)| ct_eq(token, t))
            .map(|(n, _)| Identity::Node(n.clone()))
    }
}

fn write(path: &Path, file: &TokenFile) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(file)?;
    ferry_sys::fs::write_atomic(path, &bytes, ferry_sys::fs::WriteOptions::private())
        .with_context(|| format!("writing {}", path.display()))
}

/// The first impersonation header of a request (`Impersonate-User`, `-Group`, `-Uid`,
/// `-Extra-*`: `kubectl --as`), if any. ferry-server does not impersonate; the caller refuses
/// such requests rather than silently running them (or answering `can-i`) as the real caller.
pub fn impersonation(headers: &http::HeaderMap) -> Option<String> {
    headers
        .keys()
        .find(|k| k.as_str().starts_with("impersonate-"))
        .map(|k| k.as_str().to_owned())
}

/// What a request wants to do.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'a str,
    /// Resource plural.
    pub resource: &'a str,
    /// Subresource, if any.
    pub subresource: Option<&'a str>,
    /// Namespace, if any.
    pub namespace: Option<&'a str>,
    /// Object name, if any.
    pub name: Option<&'a str>,
}

/// The authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Allowed if the pod the request touches is bound to this node (checked by the handler).
    IfPodBoundTo(String),
    /// Allowed if a pod bound to this node, in the object's namespace, uses the named object
    /// (a Secret or ConfigMap: env, envFrom, volumes, image pull secrets; checked with
    /// [`used_on_node`]).
    IfUsedByPodOn(String),
    /// Allowed if the list or watch selects only this node's pods (`fieldSelector` with
    /// `spec.nodeName=<node>`; checked with [`selects_node`]).
    IfSelectsNode(String),
    /// Forbidden, with the reason.
    Deny(String),
}

/// Decides whether `who` may do `what`.
pub fn authorize(who: &Identity, what: &Attributes<'_>) -> Decision {
    let node = match who {
        Identity::Admin => return Decision::Allow,
        Identity::Node(n) => n,
    };
    // Streams into pods (exec, attach, port-forward) are never a node's business, whatever the
    // verb (a WebSocket exec is a GET).
    if what.resource == "pods"
        && matches!(what.subresource, Some("exec" | "attach" | "portforward"))
    {
        return Decision::Deny(format!(
            "node {node:?} may not {} pods/{}",
            what.verb,
            what.subresource.unwrap_or_default()
        ));
    }
    // Secrets and ConfigMaps: only those the pods bound to the node use, one by name
    // (upstream's node authorizer); no list or watch.
    if matches!(what.resource, "secrets" | "configmaps") {
        return match (what.verb, what.name, what.subresource) {
            ("get", Some(_), None) => Decision::IfUsedByPodOn(node.clone()),
            _ => Decision::Deny(format!(
                "node {node:?} may only get, by name, {} used by pods bound to it, not {} them",
                what.resource, what.verb
            )),
        };
    }
    let own = what.name == Some(node.as_str());
    if matches!(what.verb, "get" | "list" | "watch") {
        return match (what.resource, what.subresource, what.verb) {
            (r, _, _) if NODE_READS.contains(&r) => Decision::Allow,
            ("pods", None, "list" | "watch") => Decision::IfSelectsNode(node.clone()),
            ("pods", None | Some("status" | "log"), "get") => Decision::IfPodBoundTo(node.clone()),
            // Every heartbeat Lease: the agents judge each other's L2 announcer Leases.
            ("leases", None, _) if what.namespace == Some(lease::NAMESPACE) => Decision::Allow,
            _ => Decision::Deny(format!(
                "node {node:?} may not {} {}{}: a node reads only nodes, services, endpoints, \
                 endpointslices, the leases in {}, and the pods bound to it and what they use",
                what.verb,
                what.resource,
                what.subresource
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default(),
                lease::NAMESPACE
            )),
        };
    }
    let own_lease = own || what.name == Some(lease::announcer_lease(node).as_str());
    match (what.resource, what.subresource) {
        ("nodes", None | Some("status")) if own && what.verb != "delete" => Decision::Allow,
        ("leases", None) if own_lease && what.namespace == Some(lease::NAMESPACE) => {
            Decision::Allow
        }
        ("events", None) if matches!(what.verb, "create" | "update" | "patch") => Decision::Allow,
        ("pods", Some("status")) if matches!(what.verb, "update" | "patch") => {
            Decision::IfPodBoundTo(node.clone())
        }
        ("pods", None) if what.verb == "delete" => Decision::IfPodBoundTo(node.clone()),
        _ => Decision::Deny(format!(
            "node {node:?} may not {} {}{}",
            what.verb,
            what.resource,
            what.subresource
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        )),
    }
}

/// The resources a node may get, list and watch without condition (with their subresources):
/// what the agent watches (Nodes, Services, EndpointSlices) and the kubelet reads (its Node).
pub const NODE_READS: [&str; 4] = ["nodes", "services", "endpoints", "endpointslices"];

/// Whether a list or watch `fieldSelector` pins `spec.nodeName` to `node` (an `=` or `==`
/// requirement), so it returns only that node's pods. Parsed by the same parser the list itself
/// uses, so the authorizer and the list read the selector alike.
pub fn selects_node(field_selector: Option<&str>, node: &str) -> bool {
    field_selector
        .and_then(|s| ferry_apimachinery::selector::parse_field_selector("Pod", s).ok())
        .is_some_and(|f| f.exact_match("spec.nodeName") == Some(node))
}

/// Whether `pod` (JSON) uses the `resource` (`secrets` or `configmaps`) object `name` of its
/// namespace: env `valueFrom`, `envFrom` of any container, volumes, projected volume sources,
/// and (Secrets) `imagePullSecrets`.
pub fn pod_uses(pod: &serde_json::Value, resource: &str, name: &str) -> bool {
    use serde_json::Value;
    let (key_ref, from_ref, volume, projected) = match resource {
        "secrets" => (
            "/valueFrom/secretKeyRef/name",
            "/secretRef/name",
            "/secret/secretName",
            "/secret/name",
        ),
        "configmaps" => (
            "/valueFrom/configMapKeyRef/name",
            "/configMapRef/name",
            "/configMap/name",
            "/configMap/name",
        ),
        _ => return false,
    };
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    let spec = &pod["spec"];
    fn list(v: &Value) -> &[Value] {
        v.as_array().map_or(&[][..], Vec::as_slice)
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| list(&spec[*k]));
    for c in containers {
        if list(&c["env"]).iter().any(|e| is(e.pointer(key_ref)))
            || list(&c["envFrom"]).iter().any(|e| is(e.pointer(from_ref)))
        {
            return true;
        }
    }
    list(&spec["volumes"]).iter().any(|v| {
        is(v.pointer(volume))
            || list(&v["projected"]["sources"])
                .iter()
                .any(|s| is(s.pointer(projected)))
    }) || (resource == "secrets"
        && list(&spec["imagePullSecrets"])
            .iter()
            .any(|s| is(s.get("name"))))
}

/// Whether a pod bound to `node` in namespace `ns` uses the `resource` (`secrets` or
/// `configmaps`) object `name` (the check behind [`Decision::IfUsedByPodOn`]).
pub async fn used_on_node(
    store: &dyn ferry_store::Store,
    node: &str,
    resource: &str,
    ns: &str,
    name: &str,
) -> Result<bool, ferry_store::StoreError> {
    let Some(pods) = crate::resources::by_kind("Pod") else {
        return Ok(false);
    };
    let prefix = pods.key_prefix(Some(ns));
    let mut after: Option<String> = None;
    let mut at = None;
    loop {
        let page = store.list(&prefix, at, after.as_deref(), Some(500)).await?;
        for kv in &page.kvs {
            let Ok(pod) = serde_json::from_slice::<serde_json::Value>(&kv.value) else {
                continue;
            };
            if pod
                .pointer("/spec/nodeName")
                .and_then(serde_json::Value::as_str)
                == Some(node)
                && pod_uses(&pod, resource, name)
            {
                return Ok(true);
            }
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                after = Some(last.key.clone());
                at = Some(page.rev);
            }
            _ => return Ok(false),
        }
    }
}

/// One rule of [`rules`], in `authorization.k8s.io/v1` `ResourceRule` terms (`*` matches all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRule {
    /// Verbs.
    pub verbs: Vec<&'static str>,
    /// API groups (`""` core, `*` any).
    pub api_groups: Vec<&'static str>,
    /// Resources, `resource/subresource` for subresources.
    pub resources: Vec<String>,
    /// Object names; empty means any.
    pub resource_names: Vec<String>,
}

/// What [`authorize`] allows `who` in `namespace`, as a list of rules (`kubectl auth can-i --list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Rules on resources.
    pub resource: Vec<ResourceRule>,
    /// Verbs allowed on non-resource URLs (`*` = every URL): discovery, OpenAPI, health.
    pub non_resource_verbs: Vec<&'static str>,
    /// Set when some permissions depend on the object and cannot be listed as rules; says which.
    pub conditional: Option<String>,
}

fn rule(
    verbs: &[&'static str],
    groups: &[&'static str],
    resources: &[&'static str],
    names: &[&str],
) -> ResourceRule {
    ResourceRule {
        verbs: verbs.to_vec(),
        api_groups: groups.to_vec(),
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
    }
}

/// The rules [`authorize`] applies to `who` in `namespace` (cluster-scoped rules included), kept
/// beside it so the two cannot drift (a test checks one against the other).
pub fn rules(who: &Identity, namespace: &str) -> Rules {
    let node = match who {
        Identity::Admin => {
            return Rules {
                resource: vec![rule(&["*"], &["*"], &["*"], &[])],
                non_resource_verbs: vec!["*"],
                conditional: None,
            }
        }
        Identity::Node(n) => n.as_str(),
    };
    // Unconditional reads: NODE_READS and their subresources.
    let mut resource: Vec<ResourceRule> = crate::resources::group_versions()
        .into_iter()
        .map(|(g, _)| g)
        .fold(Vec::<&'static str>::new(), |mut gs, g| {
            if !gs.contains(&g) {
                gs.push(g);
            }
            gs
        })
        .into_iter()
        .filter_map(|g| {
            let mut names = Vec::new();
            for r in crate::resources::RESOURCES
                .iter()
                .filter(|r| r.group == g && NODE_READS.contains(&r.plural))
            {
                names.push(r.plural.to_owned());
                for sub in r.subresources {
                    names.push(format!("{}/{}", r.plural, sub.name()));
                }
            }
            (!names.is_empty()).then(|| ResourceRule {
                verbs: vec!["get", "list", "watch"],
                api_groups: vec![g],
                resources: names,
                resource_names: Vec::new(),
            })
        })
        .collect();
    resource.extend([
        rule(
            &["create", "update", "patch"],
            &[""],
            &["nodes", "nodes/status"],
            &[node],
        ),
        rule(&["create", "update", "patch"], &[""], &["events"], &[]),
    ]);
    if namespace == lease::NAMESPACE {
        resource.push(rule(
            &["get", "list", "watch"],
            &["coordination.k8s.io"],
            &["leases"],
            &[],
        ));
        let announcer = lease::announcer_lease(node);
        resource.push(rule(
            &["*"],
            &["coordination.k8s.io"],
            &["leases"],
            &[node, announcer.as_str()],
        ));
    }
    Rules {
        resource,
        non_resource_verbs: vec!["get"],
        conditional: Some(format!(
            "get of pods (and pods/status, pods/log), update/patch of pods/status and delete of \
             pods are allowed only for pods bound to node {node:?}; list/watch of pods only with \
             fieldSelector spec.nodeName={node}; get of secrets and configmaps only for those \
             such pods use"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(
        verb: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        ns: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            resource,
            subresource: sub,
            namespace: ns,
            name,
        }
    }

    #[test]
    fn node_authorization_matrix() {
        let n1 = Identity::Node("n1".into());
        let cases = [
            (
                attrs("get", "configmaps", None, Some("x"), Some("s")),
                Decision::IfUsedByPodOn("n1".into()),
            ),
            (attrs("watch", "nodes", None, None, None), Decision::Allow),
            (
                attrs("list", "endpointslices", None, None, None),
                Decision::Allow,
            ),
            (
                attrs("list", "pods", None, None, None),
                Decision::IfSelectsNode("n1".into()),
            ),
            (
                attrs("get", "pods", Some("log"), Some("x"), Some("p")),
                Decision::IfPodBoundTo("n1".into()),
            ),
            (
                attrs("get", "leases", None, Some("kube-node-lease"), Some("n1")),
                Decision::Allow,
            ),
            (
                attrs("get", "leases", None, Some("kube-node-lease"), Some("n2")),
                Decision::Allow,
            ),
            (
                attrs("watch", "leases", None, Some("kube-node-lease"), None),
                Decision::Allow,
            ),
            (
                attrs(
                    "create",
                    "leases",
                    None,
                    Some("kube-node-lease"),
                    Some("ferry-l2-n1"),
                ),
                Decision::Allow,
            ),
            (
                attrs(
                    "patch",
                    "leases",
                    None,
                    Some("kube-node-lease"),
                    Some("ferry-l2-n1"),
                ),
                Decision::Allow,
            ),
            (
                attrs("update", "nodes", Some("status"), None, Some("n1")),
                Decision::Allow,
            ),
            (
                attrs("patch", "nodes", None, None, Some("n1")),
                Decision::Allow,
            ),
            (
                attrs("create", "nodes", None, None, Some("n1")),
                Decision::Allow,
            ),
            (
                attrs(
                    "update",
                    "leases",
                    None,
                    Some("kube-node-lease"),
                    Some("n1"),
                ),
                Decision::Allow,
            ),
            (
                attrs("patch", "pods", Some("status"), Some("default"), Some("p")),
                Decision::IfPodBoundTo("n1".into()),
            ),
            (
                attrs("delete", "pods", None, Some("default"), Some("p")),
                Decision::IfPodBoundTo("n1".into()),
            ),
            (
                attrs("create", "events", None, Some("default"), None),
                Decision::Allow,
            ),
        ];
        for (a, want) in cases {
            assert_eq!(authorize(&n1, &a), want, "{a:?}");
        }
        assert_eq!(
            authorize(&n1, &attrs("get", "secrets", None, Some("x"), Some("s"))),
            Decision::IfUsedByPodOn("n1".into())
        );
        for a in [
            attrs("list", "secrets", None, Some("x"), None),
            attrs("list", "configmaps", None, Some("x"), None),
            attrs("list", "deployments", None, None, None),
            attrs("get", "namespaces", None, None, Some("x")),
            attrs("list", "events", None, None, None),
            attrs("list", "leases", None, Some("default"), None),
            attrs(
                "patch",
                "leases",
                None,
                Some("kube-node-lease"),
                Some("ferry-l2-n2"),
            ),
            attrs(
                "create",
                "leases",
                None,
                Some("default"),
                Some("ferry-l2-n1"),
            ),
            attrs("watch", "secrets", None, None, None),
            attrs("get", "pods", Some("exec"), Some("x"), Some("p")),
            attrs("create", "pods", Some("portforward"), Some("x"), Some("p")),
            attrs("update", "nodes", Some("status"), None, Some("n2")),
            attrs("delete", "nodes", None, None, Some("n1")),
            attrs(
                "update",
                "leases",
                None,
                Some("kube-node-lease"),
                Some("n2"),
            ),
            attrs("update", "leases", None, Some("default"), Some("n1")),
            attrs("create", "pods", None, Some("default"), Some("p")),
            attrs("update", "pods", None, Some("default"), Some("p")),
            attrs("create", "services", None, Some("default"), None),
        ] {
            assert!(matches!(authorize(&n1, &a), Decision::Deny(_)), "{a:?}");
        }
        assert_eq!(
            authorize(
                &Identity::Admin,
                &attrs("delete", "nodes", None, None, Some("n1"))
            ),
            Decision::Allow
        );
    }

    /// Whether a rule list allows `a` (the evaluation `kubectl auth can-i --list` implies).
    fn rules_allow(r: &Rules, a: &Attributes<'_>) -> bool {
        let res = match a.subresource {
            Some(s) => format!("{}/{s}", a.resource),
            None => a.resource.to_owned(),
        };
        r.resource.iter().any(|rule| {
            (rule.verbs.contains(&"*") || rule.verbs.contains(&a.verb))
                && rule.resources.iter().any(|x| x == "*" || *x == res)
                && (rule.resource_names.is_empty()
                    || a.name
                        .is_some_and(|n| rule.resource_names.iter().any(|x| x == n)))
        })
    }

    #[test]
    fn rules_agree_with_the_authorizer() {
        let verbs = [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ];
        let targets = [
            ("pods", None),
            ("pods", Some("status")),
            ("pods", Some("binding")),
            ("nodes", None),
            ("nodes", Some("status")),
            ("leases", None),
            ("events", None),
            ("services", None),
            ("secrets", None),
            ("deployments", Some("scale")),
            ("pods", Some("exec")),
            ("pods", Some("portforward")),
            ("pods", Some("log")),
        ];
        for who in [Identity::Admin, Identity::Node("n1".into())] {
            for ns in ["default", "kube-node-lease", ""] {
                let r = rules(&who, ns);
                for verb in verbs {
                    for (resource, sub) in targets {
                        // A collection verb never names an object.
                        let names: &[Option<&str>] = if verb == "deletecollection" {
                            &[None]
                        } else {
                            &[
                                None,
                                Some("n1"),
                                Some("n2"),
                                Some("ferry-l2-n1"),
                                Some("ferry-l2-n2"),
                            ]
                        };
                        for &name in names {
                            let a = attrs(
                                verb,
                                resource,
                                sub,
                                Some(ns).filter(|n| !n.is_empty()),
                                name,
                            );
                            let decision = authorize(&who, &a);
                            match decision {
                                Decision::Allow => assert!(rules_allow(&r, &a), "{who:?} {a:?}"),
                                Decision::Deny(_) => assert!(!rules_allow(&r, &a), "{who:?} {a:?}"),
                                Decision::IfPodBoundTo(_)
                                | Decision::IfUsedByPodOn(_)
                                | Decision::IfSelectsNode(_) => {
                                    assert!(!rules_allow(&r, &a), "{a:?}");
                                    assert!(r.conditional.is_some());
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(
            Identity::Node("n1".into()).groups(),
            vec!["system:nodes", "system:authenticated"]
        );
    }

    #[test]
    fn secret_references() {
        let pod = serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "from"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "A", "value": "x"},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "key", "key": "k"}}},
            ]}],
            "volumes": [
                {"name": "v", "secret": {"secretName": "vol"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "proj"}}]}},
            ],
            "imagePullSecrets": [{"name": "pull"}],
        }});
        for used in ["from", "key", "vol", "proj", "pull"] {
            assert!(pod_uses(&pod, "secrets", used), "{used}");
        }
        assert!(!pod_uses(&pod, "secrets", "other"));
        let pod = serde_json::json!({"spec": {
            "containers": [{"name": "c", "env": [
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "key", "key": "k"}}},
            ], "envFrom": [{"configMapRef": {"name": "from"}}]}],
            "volumes": [
                {"name": "v", "configMap": {"name": "vol"}},
                {"name": "p", "projected": {"sources": [{"configMap": {"name": "proj"}}]}},
            ],
            "imagePullSecrets": [{"name": "pull"}],
        }});
        for used in ["from", "key", "vol", "proj"] {
            assert!(pod_uses(&pod, "configmaps", used), "{used}");
            assert!(!pod_uses(&pod, "secrets", used), "{used}");
        }
        assert!(!pod_uses(&pod, "configmaps", "pull"));
        assert!(!pod_uses(&pod, "pods", "key"));
        assert!(!pod_uses(&serde_json::json!({}), "secrets", "x"));
    }

    #[test]
    fn node_field_selectors() {
        for s in [
            "spec.nodeName=n1",
            "spec.nodeName==n1",
            "status.phase!=Failed,spec.nodeName=n1",
        ] {
            assert!(selects_node(Some(s), "n1"), "{s}");
        }
        for s in [
            "spec.nodeName=n2",
            "spec.nodeName!=n1",
            "spec.nodeName=n1x",
            "metadata.name=n1",
            "",
        ] {
            assert!(!selects_node(Some(s), "n1"), "{s}");
        }
        assert!(!selects_node(None, "n1"));
    }

    #[test]
    fn impersonation_headers_are_found() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(impersonation(&h), None);
        h.insert("impersonate-group", "system:nodes".parse().unwrap());
        assert_eq!(impersonation(&h).as_deref(), Some("impersonate-group"));
    }

    #[test]
    fn tokens_authenticate_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::load_or_init(dir.path()).unwrap();
        let admin = t.admin();
        assert_eq!(
            t.authenticate(Some(&format!("Bearer {admin}"))),
            Some(Identity::Admin)
        );
        let n = t.node_token("n1").unwrap();
        assert_eq!(t.node_token("n1").unwrap(), n);
        assert_eq!(
            t.authenticate(Some(&format!("Bearer {n}"))),
            Some(Identity::Node("n1".into()))
        );
        assert_eq!(t.authenticate(Some("Bearer wrong")), None);
        assert_eq!(t.authenticate(None), None);
        assert_eq!(
            t.authenticate(Some(&admin)),
            None,
            "needs the Bearer scheme"
        );
        let again = Tokens::load_or_init(dir.path()).unwrap();
        assert_eq!(again.admin(), admin);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
