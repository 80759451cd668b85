//! The real `kubectl` against a real `ferry-server` (embedded store): discovery, create/apply
//! (client-side and server-side) without `--validate=false`, get -o wide with Tables, get -w,
//! scale, label, patch (three types), wait, delete, Service allocation, bad input, authorization,
//! and the upgrade from client-side to server-side apply (and back).

mod common;

use common::Server;
use std::time::Duration;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: busybox:1.36
    command: ["sleep", "3600"]
    ports:
    - containerPort: 80
"#;

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: example/api:1
"#;

const SVC: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  type: NodePort
  selector: {app: api}
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

#[test]
fn discovery_version_and_namespaces() {
    let s = Server::start();
    let v = s.ok(&["version", "-o", "json"]);
    assert!(v.contains("\"serverVersion\""), "{v}");
    let ns = s.ok(&["get", "namespaces"]);
    for n in ["default", "kube-system", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }
    assert!(ns.contains("Active"), "Table STATUS column: {ns}");
    let res = s.ok(&["api-resources"]);
    for r in [
        "pods",
        "deployments",
        "endpointslices",
        "leases",
        "services",
    ] {
        assert!(res.contains(r), "{res}");
    }
}

#[test]
fn create_get_wide_label_patch_delete() {
    let s = Server::start();
    assert!(s
        .ok_stdin(&["create", "-f", "-"], POD)
        .contains("pod/web created"));
    let wide = s.ok(&["get", "pods", "-o", "wide"]);
    let header = wide.lines().next().unwrap();
    for col in [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ] {
        assert!(header.contains(col), "{wide}");
    }
    assert!(wide.contains("web") && wide.contains("Pending"), "{wide}");
    // Duplicate create is a clear 409.
    let err = s.fails(&["create", "-f", "-"], Some(POD));
    assert!(
        err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
    // Labels, selectors.
    assert!(s
        .ok(&["label", "pod", "web", "tier=frontend"])
        .contains("labeled"));
    assert!(s
        .ok(&["get", "pods", "-l", "tier=frontend", "--no-headers"])
        .contains("web"));
    assert!(s
        .ok(&[
            "get",
            "pods",
            "-l",
            "tier notin (frontend)",
            "--no-headers",
            "--ignore-not-found"
        ])
        .trim()
        .is_empty());
    assert!(s
        .ok(&["get", "pods", "--show-labels"])
        .contains("tier=frontend"));
    // Three patch types.
    s.ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"annotations":{"a":"1"}}}"#,
    ]);
    s.ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/annotations/b","value":"2"}]"#,
    ]);
    s.ok(&[
        "patch",
        "pod",
        "web",
        "-p",
        r#"{"spec":{"containers":[{"name":"web","image":"busybox:1.37"}]}}"#,
    ]);
    let pod: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "pod", "web", "-o", "json"])).unwrap();
    assert_eq!(pod["metadata"]["annotations"]["a"], "1");
    assert_eq!(pod["metadata"]["annotations"]["b"], "2");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox:1.37");
    assert_eq!(
        pod["spec"]["containers"][0]["command"][0], "sleep",
        "strategic merge kept the container's other fields"
    );
    assert!(!pod["metadata"]["uid"].as_str().unwrap().is_empty());
    // A failing json-patch test is a clear error.
    let err = s.fails(
        &[
            "patch",
            "pod",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/metadata/name","value":"nope"}]"#,
        ],
        None,
    );
    assert!(!err.is_empty());
    // An unscheduled pod is deleted at once; wait --for=delete sees it.
    assert!(s
        .ok(&["delete", "pod", "web", "--wait=false"])
        .contains("deleted"));
    s.ok(&["wait", "--for=delete", "pod/web", "--timeout=20s"]);
    assert!(s
        .ok(&["get", "pods", "--no-headers", "--ignore-not-found"])
        .trim()
        .is_empty());
}

#[test]
fn apply_client_side_server_side_and_scale() {
    let s = Server::start();
    assert!(s
        .ok_stdin(&["apply", "-f", "-"], DEPLOY)
        .contains("deployment.apps/api created"));
    assert!(s
        .ok_stdin(&["apply", "-f", "-"], DEPLOY)
        .contains("unchanged"));
    let changed = DEPLOY.replace("example/api:1", "example/api:2");
    assert!(s
        .ok_stdin(&["apply", "-f", "-"], &changed)
        .contains("configured"));
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "api", "-o", "json"])).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/api:2"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(s
        .ok(&["scale", "deployment", "api", "--replicas=5"])
        .contains("scaled"));
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "api", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    let rv = d["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    s.ok(&[
        "scale",
        "deployment",
        "api",
        "--current-replicas=5",
        "--replicas=4",
    ]);
    let err = s.fails(
        &[
            "scale",
            "deployment",
            "api",
            "--current-replicas=9",
            "--replicas=1",
        ],
        None,
    );
    assert!(err.contains("9") || err.contains("precondition"), "{err}");
    let wide = s.ok(&["get", "deploy", "-o", "wide"]);
    for col in [
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ] {
        assert!(wide.contains(col), "{wide}");
    }
    assert!(
        wide.contains("example/api:2") && wide.contains("app=api"),
        "{wide}"
    );
    // Server-side apply on a fresh object and an update.
    let ss = DEPLOY.replace("name: api\nspec", "name: api2\nspec");
    assert!(s
        .ok_stdin(&["apply", "--server-side", "-f", "-"], &ss)
        .contains("serverside-applied"));
    let ss2 = ss.replace("replicas: 2", "replicas: 3");
    assert!(s
        .ok_stdin(&["apply", "--server-side", "-f", "-"], &ss2)
        .contains("serverside-applied"));
    let d2: serde_json::Value = serde_json::from_str(&s.ok(&[
        "get",
        "deploy",
        "api2",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(d2["spec"]["replicas"], 3);
    assert!(d2["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|m| !m.is_empty()));
    assert_ne!(rv, d2["metadata"]["resourceVersion"]);
}

#[test]
fn services_get_cluster_ips_and_node_ports() {
    let s = Server::start();
    s.ok_stdin(&["apply", "-f", "-"], SVC);
    let svc: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "svc", "api", "-o", "json"])).unwrap();
    let ip: std::net::Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    let cidr: ipnetwork::Ipv4Network = "10.96.0.0/12".parse().unwrap();
    assert!(cidr.contains(ip), "{ip}");
    let np = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&np), "{np}");
    let wide = s.ok(&["get", "svc", "api", "-o", "wide"]);
    assert!(
        wide.contains(&format!("80:{np}/TCP")) && wide.contains("app=api"),
        "{wide}"
    );
    // Asking for the same node port on another service is a 422 naming the field.
    let clash = SVC.replace("name: api\n", "name: api-b\n").replace(
        "targetPort: 8080",
        &format!("targetPort: 8080\n    nodePort: {np}"),
    );
    let err = s.fails(&["apply", "-f", "-"], Some(&clash));
    assert!(
        err.contains("already allocated") && err.contains("nodePort"),
        "{err}"
    );
    // Headless.
    let headless = "apiVersion: v1\nkind: Service\nmetadata: {name: hl}\nspec:\n  clusterIP: None\n  selector: {app: x}\n  ports: [{port: 53}]\n";
    s.ok_stdin(&["create", "-f", "-"], headless);
    assert!(s.ok(&["get", "svc", "hl"]).contains("None"));
    // Deleting releases the IP and port: a new service can take them explicitly.
    s.ok(&["delete", "svc", "api"]);
    let again = clash.replace("name: api-b", "name: api-c").replace(
        "type: NodePort",
        &format!("type: NodePort\n  clusterIP: {ip}"),
    );
    s.ok_stdin(&["apply", "-f", "-"], &again);
}

#[test]
fn watch_streams_changes_to_kubectl() {
    let s = Server::start();
    let mut watcher = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        .args(["get", "pods", "-w", "--request-timeout=20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    s.ok_stdin(&["create", "-f", "-"], POD);
    s.ok(&["label", "pod", "web", "x=y"]);
    std::thread::sleep(Duration::from_millis(800));
    let _ = watcher.kill();
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.matches("web").count() >= 2,
        "watch saw the create and the label: {text}"
    );
}

#[test]
fn bad_input_is_rejected_and_nothing_is_stored() {
    let s = Server::start();
    let unknown = POD.replace("  - name: web\n", "  - name: web\n    imagee: typo\n");
    let err = s.fails(&["create", "-f", "-"], Some(&unknown));
    assert!(
        err.contains("unknown field") && err.contains("imagee"),
        "{err}"
    );
    let bad_name = POD.replace("name: web\n  labels", "name: Web_Bad\n  labels");
    let err = s.fails(&["create", "-f", "-"], Some(&bad_name));
    assert!(err.contains("Invalid") || err.contains("invalid"), "{err}");
    let no_containers =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: empty}\nspec: {containers: []}\n";
    let err = s.fails(&["create", "-f", "-"], Some(no_containers));
    assert!(err.contains("containers"), "{err}");
    let err = s.fails(&["get", "pods", "-l", "a in (b"], None);
    assert!(!err.is_empty());
    let err = s.fails(&["get", "pods", "--field-selector", "spec.bogus=x"], None);
    assert!(err.contains("not supported"), "{err}");
    let err = s.fails(&["create", "-f", "-", "-n", "nope"], Some(POD));
    assert!(err.contains("not found"), "{err}");
    assert!(
        s.ok(&["get", "pods", "-A", "--no-headers", "--ignore-not-found"])
            .trim()
            .is_empty(),
        "nothing stored"
    );
    // The server keeps serving.
    s.ok(&["get", "ns"]);
}

#[test]
fn node_tokens_are_confined_to_their_node() {
    let s = Server::start();
    let kc = s.kubeconfig_for("n1", &s.node_token("n1"));
    let kc = kc.to_str().unwrap();
    let as_node = |args: &[&str], stdin: Option<&str>| {
        let mut full = vec!["--kubeconfig", kc];
        full.extend_from_slice(args);
        s.kubectl_stdin(&full, stdin)
    };
    let node = |n: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n");
    assert!(as_node(&["create", "-f", "-"], Some(&node("n1")))
        .status
        .success());
    let other = as_node(&["create", "-f", "-"], Some(&node("n2")));
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(
        !as_node(&["create", "-f", "-"], Some(POD)).status.success(),
        "nodes do not create pods"
    );
    let watched = as_node(&["get", "nodes,services,endpointslices", "-A"], None);
    assert!(
        watched.status.success(),
        "nodes read what the agent watches: {}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let all_pods = as_node(&["get", "pods", "-A"], None);
    assert!(
        String::from_utf8_lossy(&all_pods.stderr).contains("Forbidden"),
        "nodes read only their own pods: {}",
        String::from_utf8_lossy(&all_pods.stderr)
    );
    assert!(
        as_node(
            &["get", "pods", "-A", "--field-selector", "spec.nodeName=n1"],
            None
        )
        .status
        .success(),
        "nodes list the pods bound to them"
    );
    // No token: 401.
    let anon = s.kubeconfig_for("anon", "not-a-token");
    let out = s.kubectl(&["--kubeconfig", anon.to_str().unwrap(), "get", "pods"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wide_tables_for_nodes_and_endpointslices() {
    let s = Server::start();
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"node-role.kubernetes.io/worker":""}},
      "status":{"conditions":[{"type":"Ready","status":"True"}],"addresses":[{"type":"InternalIP","address":"192.0.2.10"}],
      "nodeInfo":{"kubeletVersion":"v1.33.0-ferry","osImage":"Debian GNU/Linux 12","kernelVersion":"6.18","containerRuntimeVersion":"ferry://0.1",
      "machineID":"","systemUUID":"","bootID":"","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}"#;
    s.ok_stdin(&["create", "-f", "-"], node);
    // Status is a subresource: create keeps what was sent, a kubelet would use /status later.
    let wide = s.ok(&["get", "nodes", "-o", "wide"]);
    for col in [
        "STATUS",
        "ROLES",
        "VERSION",
        "INTERNAL-IP",
        "EXTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ] {
        assert!(wide.contains(col), "{wide}");
    }
    assert!(wide.contains("n1") && wide.contains("worker"), "{wide}");
    let slice = r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-abc","labels":{"kubernetes.io/service-name":"web"}},
      "addressType":"IPv4","endpoints":[{"addresses":["10.244.1.5"],"conditions":{"ready":true}},{"addresses":["10.244.2.7"]}],
      "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}"#;
    s.ok_stdin(&["create", "-f", "-"], slice);
    let out = s.ok(&["get", "endpointslices", "-o", "wide"]);
    for want in [
        "ADDRESSTYPE",
        "PORTS",
        "ENDPOINTS",
        "IPv4",
        "8080",
        "10.244.1.5,10.244.2.7",
    ] {
        assert!(out.contains(want), "{out}");
    }
    assert!(s
        .ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "--no-headers"
        ])
        .contains("web-abc"));
}

/// A Deployment managed with client-side `kubectl apply` first, for the upgrade tests.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: backend}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web:1
"#;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `kubectl get deploy NAME -o json --show-managed-fields`.
fn deployment_json(s: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["get", "deploy", name, "-o", "json", "--show-managed-fields"]))
        .unwrap()
}

/// The `metadata.managedFields` entry of `manager`.
fn managed_entry<'a>(obj: &'a serde_json::Value, manager: &str) -> Option<&'a serde_json::Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

/// Whether `entry`'s `fieldsV1` has `path` (a list of `f:`/`k:` keys).
fn owns(entry: &serde_json::Value, path: &[&str]) -> bool {
    path.iter()
        .try_fold(&entry["fieldsV1"], |node, key| node.get(key))
        .is_some()
}

const REPLICAS: &[&str] = &["f:spec", "f:replicas"];
const IMAGE: &[&str] = &[
    "f:spec",
    "f:template",
    "f:spec",
    "f:containers",
    "k:{\"name\":\"web\"}",
    "f:image",
];

fn last_applied(obj: &serde_json::Value) -> serde_json::Value {
    let text = obj["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .unwrap_or_else(|| panic!("no last-applied annotation: {obj}"));
    serde_json::from_str(text).unwrap()
}

/// The documented upgrade path: `kubectl apply` (client-side), then `kubectl apply --server-side`
/// with changed fields succeeds without `--force-conflicts`, and `kubectl` owns the fields
/// `kubectl-client-side-apply` owned. The server keeps the last-applied annotation up to date, so
/// the downgrade back to client-side `kubectl apply` (and a second upgrade) work too.
#[test]
fn server_side_apply_upgrades_from_client_side_apply_and_back() {
    // No deployment controller. kubectl migrates the managed fields with a JSON patch that names
    // the resourceVersion it read; each write in between answers 409, and after five of them
    // kubectl gives up without a warning (its retry loop ends on a successful re-read), leaving
    // the migration to the next apply. The rollout each upgrade starts writes the Deployment's
    // status many times in those milliseconds (upstream's controller too), so with controllers
    // the migration this test checks happened in three runs of four.
    let s = Server::start_with(&["--controllers", "false"]);
    assert!(s
        .ok_stdin(&["apply", "-f", "-"], WEB)
        .contains("deployment.apps/web created"));
    let d = deployment_json(&s, "web");
    let csa = managed_entry(&d, "kubectl-client-side-apply").expect("client-side apply entry");
    assert_eq!(csa["operation"], "Update");
    assert!(owns(csa, REPLICAS) && owns(csa, IMAGE), "{csa}");

    // Upgrade, changing two fields and adding a label.
    let v2 = WEB
        .replace("example/web:1", "example/web:2")
        .replace("replicas: 2", "replicas: 3")
        .replace("tier: backend}", "tier: backend, track: stable}");
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&v2));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("deployment.apps/web serverside-applied"),
        "{stdout}\n{stderr}\nserver log:\n{}",
        s.log()
    );
    // kubectl's managedFields migration and annotation save did not fail.
    assert!(!stderr.contains("arning"), "{stderr}");
    let d = deployment_json(&s, "web");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/web:2"
    );
    assert_eq!(d["metadata"]["labels"]["track"], "stable");
    let kubectl = managed_entry(&d, "kubectl").expect("kubectl entry");
    assert_eq!(kubectl["operation"], "Apply");
    for path in [
        REPLICAS,
        IMAGE,
        &["f:metadata", "f:labels", "f:tier"],
        &["f:metadata", "f:labels", "f:track"],
    ] {
        assert!(owns(kubectl, path), "{path:?}: {kubectl}");
    }
    assert!(
        managed_entry(&d, "kubectl-client-side-apply").is_none(),
        "client-side apply no longer owns anything: {}",
        d["metadata"]["managedFields"]
    );
    for entry in d["metadata"]["managedFields"].as_array().unwrap() {
        if entry["manager"] != "kubectl" {
            assert!(!owns(entry, REPLICAS) && !owns(entry, IMAGE), "{entry}");
        }
    }
    // The server rewrote the annotation with what was applied.
    let la = last_applied(&d);
    assert_eq!(la["spec"]["replicas"], 3);
    assert_eq!(
        la["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/web:2"
    );
    assert_eq!(la["metadata"]["labels"]["track"], "stable");

    // Applying the same configuration again is not a conflict either.
    assert!(s
        .ok_stdin(&["apply", "--server-side", "-f", "-"], &v2)
        .contains("serverside-applied"));

    // Downgrade: client-side apply diffs against the annotation the server kept, so dropping the
    // label that only the server-side apply set removes it.
    let v3 = WEB
        .replace("example/web:1", "example/web:3")
        .replace("replicas: 2", "replicas: 3");
    assert!(s
        .ok_stdin(&["apply", "-f", "-"], &v3)
        .contains("deployment.apps/web configured"));
    let d = deployment_json(&s, "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/web:3"
    );
    assert!(d["metadata"]["labels"].get("track").is_none(), "{d}");
    assert_eq!(d["spec"]["replicas"], 3);
    let csa = managed_entry(&d, "kubectl-client-side-apply").expect("client-side apply entry");
    assert!(owns(csa, IMAGE), "{csa}");

    // And up again.
    let v4 = v3.replace("example/web:3", "example/web:4");
    assert!(s
        .ok_stdin(&["apply", "--server-side", "-f", "-"], &v4)
        .contains("serverside-applied"));
    let d = deployment_json(&s, "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "example/web:4"
    );
    assert!(owns(managed_entry(&d, "kubectl").unwrap(), IMAGE));
    assert!(managed_entry(&d, "kubectl-client-side-apply").is_none());
}

/// Only what client-side apply still stands behind transfers: fields changed since by other
/// managers (`kubectl scale`, `kubectl patch`) conflict, and the refused request changes nothing.
#[test]
fn server_side_apply_upgrade_still_conflicts_on_fields_changed_since() {
    // No deployment controller: the object changes only through the requests below, so "nothing
    // changed" can compare whole objects, resourceVersion included.
    let s = Server::start_with(&["--controllers", "false"]);
    s.ok_stdin(&["apply", "-f", "-"], WEB);
    s.ok(&["scale", "deployment", "web", "--replicas=5"]);
    s.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"example/web:hotfix"}]}}}}"#,
    ]);
    let before = deployment_json(&s, "web");

    // The label change alone would transfer; replicas and image no longer do.
    let v2 = WEB
        .replace("example/web:1", "example/web:2")
        .replace("tier: backend", "tier: frontend");
    let err = s.fails(&["apply", "--server-side", "-f", "-"], Some(&v2));
    assert!(err.contains("Apply failed with 2 conflicts"), "{err}");
    assert!(err.contains(".spec.replicas"), "{err}");
    assert!(
        err.contains(".spec.template.spec.containers[name=\"web\"].image"),
        "{err}"
    );
    // kubectl scale sends no field manager: the server names it `kubectl` after the user agent,
    // as upstream does, and that updater is another manager than the applier `kubectl`.
    assert!(
        err.contains("\"kubectl\" with subresource \"scale\" using apps/v1"),
        "{err}"
    );
    assert!(err.contains("\"kubectl-patch\" using apps/v1"), "{err}");
    assert!(!err.contains("tier"), "{err}");
    assert_eq!(deployment_json(&s, "web"), before, "nothing changed");

    // Another field manager opts out of the upgrade: the label conflicts with client-side apply.
    let label_only = WEB
        .replace("tier: backend", "tier: frontend")
        .replace("  replicas: 2\n", "")
        .replace("example/web:1", "example/web:hotfix");
    let err = s.fails(
        &[
            "apply",
            "--server-side",
            "--field-manager=deployer",
            "-f",
            "-",
        ],
        Some(&label_only),
    );
    assert!(
        err.contains("\"kubectl-client-side-apply\"") && err.contains(".metadata.labels.tier"),
        "{err}"
    );
    assert_eq!(deployment_json(&s, "web"), before, "nothing changed");

    // kubectl, leaving replicas alone and agreeing on the image, takes the label over.
    assert!(s
        .ok_stdin(&["apply", "--server-side", "-f", "-"], &label_only)
        .contains("serverside-applied"));
    let d = deployment_json(&s, "web");
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["spec"]["replicas"], 5);
    assert!(owns(
        managed_entry(&d, "kubectl").unwrap(),
        &["f:metadata", "f:labels", "f:tier"]
    ));
}
