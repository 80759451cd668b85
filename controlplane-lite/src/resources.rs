//! The static table of resources `ferry-server` serves. Discovery (legacy and aggregated), the
//! OpenAPI index, routing and storage keys are all derived from it, so adding a resource is one
//! entry here plus its kind-specific hooks.

/// A subresource of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// `/status`: writes touch only `.status`.
    Status,
    /// `/scale` (`autoscaling/v1` Scale).
    Scale,
    /// `pods/binding` (create only).
    Binding,
    /// `pods/log` (get only; proxied to the pod's kubelet).
    Log,
    /// `pods/exec` (a WebSocket or SPDY upgrade, relayed to the pod's kubelet).
    Exec,
    /// `pods/attach` (an upgrade relayed to the pod's kubelet, which joins the container's stdio).
    Attach,
    /// `pods/portforward` (an upgrade relayed to the pod's kubelet).
    PortForward,
    /// `pods/eviction` (create only; `policy/v1` Eviction: what `kubectl drain` calls).
    Eviction,
}

impl Sub {
    /// Path segment.
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Binding => "binding",
            Sub::Log => "log",
            Sub::Exec => "exec",
            Sub::Attach => "attach",
            Sub::PortForward => "portforward",
            Sub::Eviction => "eviction",
        }
    }
}

/// One served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural name (URL segment).
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`po`, `svc`, ...).
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Sub],
}

/// Verbs every resource supports.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const ALL: &[&str] = &["all"];

/// Everything served.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &[Sub::Status],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &[Sub::Status],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &[
            Sub::Status,
            Sub::Binding,
            Sub::Log,
            Sub::Exec,
            Sub::Attach,
            Sub::PortForward,
            Sub::Eviction,
        ],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &[Sub::Status],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &[Sub::Status, Sub::Scale],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &[Sub::Status, Sub::Scale],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
];

/// The create-only review resources: answered from the caller's identity by the real authorizer
/// and never stored (`crate::reviews`). In discovery and OpenAPI, not in storage or routing.
pub static REVIEWS: &[Resource] = &[
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        kind: "SelfSubjectReview",
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
    },
];

impl Resource {
    /// `group/version` (`v1` for core).
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        self.group_version()
    }

    /// URL prefix of its group-version (`/api/v1`, `/apis/apps/v1`).
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            "/api/v1".to_owned()
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Whether `sub` is served.
    pub fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// Storage key prefix of all objects (`/registry/pods/`), or of one namespace.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.plural, ns),
            _ => format!("/registry/{}/", self.plural),
        }
    }

    /// Storage key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{}/{}", self.plural, namespace, name)
        } else {
            format!("/registry/{}/{}", self.plural, name)
        }
    }

    /// Verbs served: [`VERBS`], or only `create` for the [`REVIEWS`].
    pub fn verbs(&self) -> &'static [&'static str] {
        if REVIEWS.contains(self) {
            &["create"]
        } else {
            VERBS
        }
    }

    /// List kind (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by kind.
pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The served group-versions (stored kinds, then [`REVIEWS`]), core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().chain(REVIEWS) {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_keys() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key("default", "web"), "/registry/pods/default/web");
        assert_eq!(pods.key_prefix(Some("default")), "/registry/pods/default/");
        let nodes = by_kind("Node").unwrap();
        assert_eq!(nodes.key("", "n1"), "/registry/nodes/n1");
        assert_eq!(nodes.key_prefix(Some("x")), "/registry/nodes/");
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().prefix(),
            "/apis/apps/v1"
        );
        assert_eq!(group_versions()[0], ("", "v1"));
        assert!(group_versions().contains(&("discovery.k8s.io", "v1")));
        // Plurals are unique per group, so keys never collide.
        for a in RESOURCES {
            assert_eq!(
                RESOURCES.iter().filter(|b| b.plural == a.plural).count(),
                1,
                "{}",
                a.plural
            );
        }
    }
}
