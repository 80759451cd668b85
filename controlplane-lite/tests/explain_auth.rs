//! The real `kubectl` against a real `ferry-server`: `kubectl explain` to any depth from the
//! generated OpenAPI v3 schemas, `create -f` validation (unknown fields rejected by strict field
//! validation, valid manifests accepted), `kubectl auth can-i` (and `--list`) as the admin and as a
//! node, `kubectl auth whoami`, and bad review bodies.

mod common;

use common::Server;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kubectl explain` output must name the kind and list (or describe) the fields asked for.
#[test]
fn explain_to_any_depth() {
    let s = Server::start();
    let pod = s.ok(&["explain", "pod"]);
    assert!(pod.contains("KIND:       Pod"), "{pod}");
    assert!(pod.contains("VERSION:    v1"), "{pod}");
    assert!(
        pod.contains("Pod is a collection of containers that can run on a host"),
        "{pod}"
    );
    for f in [
        "spec\t<PodSpec>",
        "status\t<PodStatus>",
        "metadata\t<ObjectMeta>",
    ] {
        assert!(pod.contains(f), "{f}: {pod}");
    }
    // `metadata` is not required upstream (k8s-openapi marks it so; the server drops that).
    assert!(!pod.contains("<ObjectMeta> -required-"), "{pod}");

    let spec = s.ok(&["explain", "pod.spec"]);
    assert!(spec.contains("FIELD: spec <PodSpec>"), "{spec}");
    assert!(
        spec.contains("containers\t<[]Container> -required-"),
        "{spec}"
    );

    let containers = s.ok(&["explain", "pod.spec.containers"]);
    assert!(
        containers.contains("FIELD: containers <[]Container>"),
        "{containers}"
    );
    assert!(
        containers.contains("A single application container that you want to run within a pod."),
        "{containers}"
    );
    assert!(
        containers.contains("ports\t<[]ContainerPort>"),
        "{containers}"
    );

    let deploy = s.ok(&["explain", "deployment"]);
    assert!(deploy.contains("GROUP:      apps"), "{deploy}");
    assert!(deploy.contains("KIND:       Deployment"), "{deploy}");
    let template = s.ok(&["explain", "deployment.spec.template"]);
    assert!(
        template.contains("FIELD: template <PodTemplateSpec>"),
        "{template}"
    );
    let ports = s.ok(&["explain", "deployment.spec.template.spec.containers.ports"]);
    assert!(ports.contains("FIELD: ports <[]ContainerPort>"), "{ports}");
    assert!(
        ports.contains("containerPort\t<integer> -required-"),
        "{ports}"
    );
    assert!(ports.contains("protocol\t<string>"), "{ports}");

    // Other served kinds, by short name, and --recursive.
    let svc = s.ok(&["explain", "svc.spec.ports.targetPort"]);
    assert!(svc.contains("FIELD: targetPort <IntOrString>"), "{svc}");
    let slices = s.ok(&["explain", "endpointslices.endpoints.conditions"]);
    assert!(slices.contains("ready\t<boolean>"), "{slices}");
    let rec = s.ok(&["explain", "deployment.spec", "--recursive"]);
    assert!(rec.contains("containerPort\t<integer> -required-"), "{rec}");

    // A field that does not exist is kubectl's own error, not a download failure.
    let err = s.fails(&["explain", "pod.spec.nope"], None);
    assert!(err.contains("\"nope\" does not exist"), "{err}");
}

/// The `Date` header of the response to the first request whose URL contains `url_part`, in a
/// `kubectl -v=8` log.
fn response_date(log: &str, url_part: &str) -> String {
    let from = log
        .find(url_part)
        .unwrap_or_else(|| panic!("no request for {url_part}: {log}"));
    let rest = &log[from..];
    let resp = rest.find("\"Response\"").expect("a response");
    let rest = &rest[resp..];
    assert!(
        rest[..rest.find(" >").unwrap()].contains("Cache-Control: public, immutable"),
        "{rest}"
    );
    let date = rest.find("Date: ").expect("a Date header");
    rest[date..].lines().next().unwrap().to_owned()
}

/// kubectl keeps the documents in its HTTP cache (`--cache-dir`): the hashed URL is immutable, so a
/// second `explain` is answered from the cache (same `Date`) without a round trip to the server.
#[test]
fn openapi_documents_are_cached_by_kubectl() {
    let s = Server::start();
    let first = s.kubectl(&["explain", "deployment.spec", "-v=8"]);
    assert!(first.status.success(), "{}", stderr(&first));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = s.kubectl(&["explain", "deployment.spec", "-v=8"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let url = "/openapi/v3/apis/apps/v1?hash=";
    assert_eq!(
        response_date(&stderr(&first), url),
        response_date(&stderr(&second), url),
        "the second explain re-downloaded the document"
    );
}

const BAD_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: typo
spec:
  containers:
  - name: c
    image: busybox:1.36
    portz:
    - containerPort: 80
"#;

#[test]
fn create_validates_with_full_schemas() {
    let s = Server::start();
    // The unknown field is reported as kube-apiserver reports it (strict field validation).
    let err = s.fails(&["create", "-f", "-"], Some(BAD_POD));
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.containers[0].portz""#),
        "{err}"
    );
    let out = s.kubectl(&["get", "pod", "typo"]);
    assert!(!out.status.success(), "the invalid pod was not created");
    // The same manifest without the typo passes validation, as do apply and a deployment.
    let good = BAD_POD.replace("portz", "ports");
    s.ok_stdin(&["create", "-f", "-"], &good);
    s.ok_stdin(&["apply", "-f", "-"], &good);
    let deploy = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx, ports: [{containerPort: 80}]}
"#;
    s.ok_stdin(&["create", "-f", "-"], deploy);
    // Client-side apply computes its strategic merge patch from these schemas: with the merge
    // keys marked, an unchanged manifest is "unchanged" (not a resent container list).
    s.ok_stdin(&["apply", "-f", "-"], deploy);
    let again = s.ok_stdin(&["apply", "-f", "-"], deploy);
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");
    let err = s.fails(
        &["create", "-f", "-"],
        Some(
            &deploy
                .replace("name: web}", "name: web2}")
                .replace("selector:", "selectr:"),
        ),
    );
    assert!(err.contains(r#"unknown field "spec.selectr""#), "{err}");
    // The OpenAPI index lists every served group-version, the review groups included.
    let idx = s.ok(&["get", "--raw", "/openapi/v3"]);
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/discovery.k8s.io/v1",
        "apis/authorization.k8s.io/v1",
        "apis/authentication.k8s.io/v1",
    ] {
        assert!(idx.contains(&format!("\"{gv}\"")), "{gv}: {idx}");
    }
}

#[test]
fn can_i_and_whoami_as_admin() {
    let s = Server::start();
    assert_eq!(s.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(s.ok(&["auth", "can-i", "delete", "nodes/n1"]).trim(), "yes");
    assert_eq!(
        s.ok(&["auth", "can-i", "*", "*", "--all-namespaces"])
            .trim(),
        "yes"
    );
    assert_eq!(s.ok(&["auth", "can-i", "get", "/healthz"]).trim(), "yes");
    // Impersonation is refused, not silently answered (or executed) as the admin.
    let o = s.kubectl(&["auth", "can-i", "create", "pods", "--as", "system:node:n1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("impersonation is not supported by ferry-server"),
        "{}",
        stderr(&o)
    );
    let err = s.fails(&["get", "pods", "--as", "someone"], None);
    assert!(err.contains("impersonate-user"), "{err}");
    let list = s.ok(&["auth", "can-i", "--list"]);
    assert!(list.contains("*.*"), "{list}");
    let who = s.ok(&["auth", "whoami"]);
    assert!(who.contains("Username    admin"), "{who}");
    assert!(
        who.contains("Groups      [system:masters system:authenticated]"),
        "{who}"
    );
    let json = s.ok(&["auth", "whoami", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "SelfSubjectReview");
    assert_eq!(v["status"]["userInfo"]["username"], "admin");
    // The review groups are in discovery, create-only.
    let res = s.ok(&[
        "api-resources",
        "--api-group",
        "authorization.k8s.io",
        "-o",
        "wide",
    ]);
    let row = res
        .lines()
        .find(|l| l.starts_with("selfsubjectaccessreviews "))
        .unwrap_or_else(|| panic!("{res}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            "selfsubjectaccessreviews",
            "authorization.k8s.io/v1",
            "false",
            "SelfSubjectAccessReview",
            "create"
        ],
        "{res}"
    );
}

#[test]
fn can_i_as_a_node_follows_the_node_authorizer() {
    let s = Server::start();
    let kc = s.kubeconfig_for("n1", &s.node_token("n1"));
    let kc = kc.to_str().unwrap();
    let as_node = |args: &[&str]| {
        let mut full = vec!["--kubeconfig", kc, "auth", "can-i"];
        full.extend_from_slice(args);
        s.kubectl(&full)
    };
    let yes = |args: &[&str]| {
        let o = as_node(args);
        assert!(
            o.status.success(),
            "{args:?}: {} {}",
            stdout(&o),
            stderr(&o)
        );
        assert_eq!(stdout(&o).trim(), "yes", "{args:?}");
    };
    let no = |args: &[&str], why: &str| {
        let o = as_node(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stdout(&o));
        let out = stdout(&o);
        assert!(out.starts_with("no"), "{args:?}: {out}");
        assert!(out.contains(why), "{args:?}: {out}");
    };
    yes(&["patch", "nodes/n1", "--subresource=status"]);
    yes(&["update", "nodes/n1"]);
    yes(&["list", "nodes"]);
    yes(&[
        "watch",
        "endpointslices.discovery.k8s.io",
        "--all-namespaces",
    ]);
    no(
        &["list", "pods", "--all-namespaces"],
        "only its own pods, with fieldSelector spec.nodeName=n1",
    );
    no(&["list", "deployments"], "a node reads only");
    yes(&["update", "leases/n1", "-n", "kube-node-lease"]);
    yes(&["update", "leases/ferry-l2-n1", "-n", "kube-node-lease"]);
    yes(&["watch", "leases", "-n", "kube-node-lease"]);
    no(
        &["update", "leases/ferry-l2-n2", "-n", "kube-node-lease"],
        "may not update leases",
    );
    yes(&["create", "events", "-n", "default"]);
    yes(&["get", "/openapi/v3"]);
    no(
        &["create", "pods", "-n", "kube-system"],
        "may not create pods",
    );
    no(&["update", "nodes/n2"], "may not update nodes");
    no(&["delete", "nodes/n1"], "may not delete nodes");
    no(
        &["update", "leases/n1", "-n", "default"],
        "may not update leases",
    );
    no(&["create", "deployments"], "may not create deployments");
    no(&["*", "pods"], "may not");
    no(&["post", "/healthz"], "may only get non-resource URLs");

    // Pod status: only for pods bound to this node, checked against the stored pod.
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: busybox}}]\n"
        )
    };
    s.ok_stdin(&["create", "-f", "-"], &pod("mine", "n1"));
    s.ok_stdin(&["create", "-f", "-"], &pod("theirs", "n2"));
    yes(&["update", "pods/mine", "--subresource=status"]);
    yes(&["get", "pods/mine", "--subresource=log"]);
    no(&["get", "pods/theirs"], "only pods bound to it");
    yes(&["delete", "pods/mine"]);
    no(
        &["update", "pods/theirs", "--subresource=status"],
        "only pods bound to it",
    );
    no(&["update", "pods/ghost", "--subresource=status"], "is not");
    no(
        &["update", "pods", "--subresource=status"],
        "name one to check",
    );

    // Secrets: only those a pod bound to this node uses, by name; pod streams never.
    let secret = |name: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{k: v}}\n")
    };
    s.ok_stdin(&["create", "-f", "-"], &secret("used"));
    s.ok_stdin(&["create", "-f", "-"], &secret("unused"));
    let user = "apiVersion: v1\nkind: Pod\nmetadata: {name: user}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n    env: [{name: K, valueFrom: {secretKeyRef: {name: used, key: k}}}]\n";
    s.ok_stdin(&["create", "-f", "-"], user);
    yes(&["get", "secrets/used"]);
    no(
        &["get", "secrets/unused"],
        "no pod bound to node \"n1\" uses secret default/unused",
    );
    no(
        &["list", "secrets"],
        "may only get, by name, secrets used by pods bound to it",
    );
    no(
        &["create", "pods/mine", "--subresource=exec"],
        "may not create pods/exec",
    );
    no(
        &["get", "pods/mine", "--subresource=portforward"],
        "may not get pods/portforward",
    );
    let got = s.kubectl(&[
        "--kubeconfig",
        kc,
        "get",
        "secret",
        "used",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(stdout(&got), "dg==");
    let denied = s.kubectl(&["--kubeconfig", kc, "get", "secret", "unused"]);
    assert!(
        stderr(&denied).contains("no pod bound to node \"n1\" uses secret default/unused"),
        "{}",
        stderr(&denied)
    );
    let denied = s.kubectl(&["--kubeconfig", kc, "get", "secrets"]);
    assert!(stderr(&denied).contains("Forbidden"), "{}", stderr(&denied));

    let list = as_node(&["--list", "-n", "kube-node-lease"]);
    let out = stdout(&list);
    assert!(out.contains("nodes/status"), "{out}");
    assert!(out.contains("[n1]"), "{out}");
    assert!(out.contains("leases.coordination.k8s.io"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("nodes ") && l.contains("[get list watch]")),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("pods ")),
        "pods are not readable wholesale: {out}"
    );
    assert!(
        !out.contains("secrets"),
        "secrets are not readable wholesale: {out}"
    );
    assert!(!out.contains("pods/exec"), "{out}");
    assert!(
        stderr(&list).contains("only for pods bound to node"),
        "the conditional rule is reported: {}",
        stderr(&list)
    );

    let who = s.kubectl(&["--kubeconfig", kc, "auth", "whoami"]);
    let out = stdout(&who);
    assert!(out.contains("Username    system:node:n1"), "{out}");
    assert!(
        out.contains("Groups      [system:nodes system:authenticated]"),
        "{out}"
    );
}

#[test]
fn bad_review_bodies_are_rejected() {
    let s = Server::start();
    let post =
        |path: &str, body: &str| s.kubectl_stdin(&["create", "--raw", path, "-f", "-"], Some(body));
    let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let o = post(
        ssar,
        r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{}}"#,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("exactly one of nonResourceAttributes or resourceAttributes"),
        "{}",
        stderr(&o)
    );
    let o = post(
        ssar,
        r#"{"apiVersion":"v1","kind":"Pod","spec":{"resourceAttributes":{"verb":"get","resource":"pods"}}}"#,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            r#"(BadRequest): the body's kind is "Pod"; selfsubjectaccessreviews takes "SelfSubjectAccessReview""#
        ),
        "{}",
        stderr(&o)
    );
    let o = post(ssar, "{not json");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("(BadRequest): decoding the body:"),
        "{}",
        stderr(&o)
    );
    // A well-formed raw review is answered with the decision (JSON in, JSON out).
    let ok = post(
        ssar,
        r#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"verb":"list","resource":"pods","namespace":"default"}}}"#,
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["status"]["allowed"], true);
    // The reviews are create-only.
    let o = s.kubectl(&["get", "--raw", ssar]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "(MethodNotAllowed): selfsubjectaccessreviews is create-only: GET is not allowed"
        ),
        "{}",
        stderr(&o)
    );
}
