//! The kubectl Quick Reference ("cheat sheet", kubernetes.io/docs/reference/kubectl/quick-reference)
//! against a `ferry up` cluster with the real kubectl: a representative subset of its commands,
//! each with the output shape kube-apiserver gives (table headers, `-o
//! jsonpath/custom-columns/go-template/yaml`, describe, events, rollouts, logs, exec, cp, run -i)
//! and, for kinds ferry-server does not serve, kubectl's own error. It keeps the table in
//! docs/apiserver.md ("kubectl Quick Reference") true: a line that changes there changes here.

mod common;

use common::{binaries, text, Cluster};
use ferry_tests::{privileged, RootSnapshot};
use std::process::Command;

/// One cheat-sheet command (a shell line; `$KUBECONFIG` is set) and what it must give.
struct Case {
    /// The command line, as on the page (names adapted to the objects below).
    cmd: &'static str,
    /// Its exit code.
    rc: i32,
    /// Fragments the combined stdout + stderr must contain, whitespace runs collapsed to one
    /// space (so a table header is one fragment).
    want: &'static [&'static str],
}

const fn case(cmd: &'static str, rc: i32, want: &'static [&'static str]) -> Case {
    Case { cmd, rc, want }
}

/// The objects the commands work on: a pod with labels and a program (images are not pulled),
/// a Deployment, a Service, a ConfigMap with a dotted key, a Secret with a dashed key.
const SETUP: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: my-pod
  labels: {name: myLabel, app: cassandra, version: v1}
spec:
  containers:
  - name: my-container
    image: busybox:1.28
    command: ["sh", "-c", "echo my-pod-says-hello; exec sleep 100000"]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
spec:
  replicas: 1
  selector: {matchLabels: {app: frontend}}
  template:
    metadata: {labels: {app: frontend}}
    spec:
      containers:
      - name: www
        image: image:v1
        command: ["sh", "-c", "echo frontend-log; exec sleep 100000"]
---
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector: {app: frontend}
  ports: [{name: my-service-port, port: 5000, targetPort: 6000}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: myconfig}
data: {ca.crt: "the-ca"}
---
apiVersion: v1
kind: Secret
metadata: {name: my-secret}
stringData: {key-name-with-dashes: "dashed-value"}
"#;

/// In page order. `rc` 1 with kubectl's error: a kind or API ferry-server does not serve.
const CASES: &[Case] = &[
    // Kubectl context and configuration
    case("kubectl config get-contexts", 0, &["CURRENT NAME CLUSTER AUTHINFO NAMESPACE"]),
    // Creating objects
    case("kubectl create deployment nginx --image=nginx", 0, &["deployment.apps/nginx created"]),
    case(
        "kubectl create job hello --image=busybox:1.28 -- echo 'Hello World'",
        1,
        &["the server could not find the requested resource"],
    ),
    case("kubectl explain pods", 0, &["KIND: Pod", "VERSION: v1", "FIELDS:"]),
    case(
        "printf 'apiVersion: v1\\nkind: Secret\\nmetadata:\\n  name: mysecret\\ntype: Opaque\\ndata:\\n  password: %s\\n' $(echo -n s33msi4 | base64 -w0) | kubectl apply -f -",
        0,
        &["secret/mysecret created"],
    ),
    // Viewing and finding resources
    case("kubectl get services", 0, &["NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE", "my-service ClusterIP"]),
    case("kubectl get pods --all-namespaces", 0, &["NAMESPACE NAME READY STATUS RESTARTS AGE", "default my-pod 1/1 Running"]),
    case("kubectl get pods -o wide", 0, &["NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES"]),
    case("kubectl get deployment frontend", 0, &["NAME READY UP-TO-DATE AVAILABLE AGE", "frontend 1/1 1 1"]),
    // (Interacting with Deployments and Services, before the rollouts below replace its pod.)
    case("kubectl logs deploy/frontend", 0, &["frontend-log"]),
    case("kubectl exec deploy/frontend -- sh -c 'echo in-$HOSTNAME'", 0, &["in-frontend-"]),
    case("kubectl get pod my-pod -o yaml", 0, &["kind: Pod", "name: my-pod", "phase: Running"]),
    case("kubectl describe nodes node-1", 0, &["Name: node-1", "Conditions:", "PodCIDR:"]),
    case("kubectl describe pods my-pod", 0, &["Name: my-pod", "Status: Running", "Events:"]),
    case("kubectl get services --sort-by=.metadata.name", 0, &["kubernetes ClusterIP 10.96.0.1"]),
    case("kubectl get pv --sort-by=.spec.capacity.storage", 1, &["the server doesn't have a resource type \"pv\""]),
    case("kubectl get pods --selector=app=cassandra -o jsonpath='{.items[*].metadata.labels.version}'", 0, &["v1"]),
    case("kubectl get configmap myconfig -o jsonpath='{.data.ca\\.crt}'", 0, &["the-ca"]),
    case(
        "kubectl get secret my-secret --template='{{index .data \"key-name-with-dashes\"}}'",
        0,
        &["ZGFzaGVkLXZhbHVl"],
    ),
    case("kubectl get node --selector='!node-role.kubernetes.io/control-plane'", 0, &["NAME STATUS ROLES AGE VERSION", "node-1 Ready"]),
    case("kubectl get pods --field-selector=status.phase=Running", 0, &["my-pod 1/1 Running"]),
    case("kubectl get rc my-rc --output=json", 1, &["the server doesn't have a resource type \"rc\""]),
    case("kubectl get pods --show-labels", 0, &["LABELS", "app=cassandra,name=myLabel,version=v1"]),
    case(
        "kubectl get node -o custom-columns='NODE_NAME:.metadata.name,STATUS:.status.conditions[?(@.type==\"Ready\")].status'",
        0,
        &["NODE_NAME STATUS", "node-1 True", "node-2 True"],
    ),
    case(
        "kubectl get secret my-secret -o go-template='{{range $k,$v := .data}}{{\"### \"}}{{$k}}{{\"\\n\"}}{{$v|base64decode}}{{\"\\n\\n\"}}{{end}}'",
        0,
        &["### key-name-with-dashes dashed-value"],
    ),
    case("kubectl get events --sort-by=.metadata.creationTimestamp", 0, &["LAST SEEN TYPE REASON OBJECT MESSAGE", "Started pod/my-pod"]),
    case(
        "kubectl get deployment frontend --subresource=status",
        0,
        &["NAME READY UP-TO-DATE AVAILABLE AGE", "frontend 1/1 1 1"],
    ),
    // Updating resources
    case("kubectl set image deployment/frontend www=image:v2", 0, &["deployment.apps/frontend image updated"]),
    case("kubectl rollout status -w deployment/frontend --timeout=90s", 0, &["deployment \"frontend\" successfully rolled out"]),
    case("kubectl rollout history deployment/frontend", 0, &["REVISION CHANGE-CAUSE", "1 <none>", "2 <none>"]),
    case("kubectl rollout undo deployment/frontend", 0, &["deployment.apps/frontend rolled back"]),
    case("kubectl rollout restart deployment/frontend", 0, &["deployment.apps/frontend restarted"]),
    case("kubectl expose rc nginx --port=80 --target-port=8000", 1, &["the server doesn't have a resource type \"rc\""]),
    case("kubectl expose deployment frontend --name=frontend-svc --port=80 --target-port=8000", 0, &["service/frontend-svc exposed"]),
    case("kubectl label pods my-pod new-label=awesome", 0, &["pod/my-pod labeled"]),
    case("kubectl label pods my-pod new-label=new-value --overwrite", 0, &["pod/my-pod labeled"]),
    case("kubectl annotate pods my-pod icon-url=http://goo.gl/XXBTWq", 0, &["pod/my-pod annotated"]),
    case("kubectl autoscale deployment frontend --min=2 --max=10", 1, &["the server could not find the requested resource"]),
    // Patching resources
    case("kubectl patch node node-2 -p '{\"spec\":{\"unschedulable\":true}}'", 0, &["node/node-2 patched"]),
    case("kubectl patch pod my-pod --type='json' -p='[{\"op\": \"replace\", \"path\": \"/spec/containers/0/image\", \"value\":\"new-image\"}]'", 0, &["pod/my-pod patched"]),
    case("kubectl patch deployment frontend --subresource='scale' --type='merge' -p '{\"spec\":{\"replicas\":2}}'", 0, &["scale.autoscaling/frontend patched"]),
    // Editing resources
    case("KUBE_EDITOR=true kubectl edit svc/my-service", 0, &["Edit cancelled, no changes made."]),
    // Scaling resources
    case("kubectl scale --current-replicas=2 --replicas=3 deployment/frontend", 0, &["deployment.apps/frontend scaled"]),
    case("kubectl scale --replicas=5 rc/foo rc/bar rc/baz", 1, &["the server doesn't have a resource type \"rc\""]),
    // Deleting resources
    case("kubectl delete pod,service baz foo", 1, &["Error from server (NotFound): pods \"baz\" not found"]),
    case("kubectl delete pods,services -l name=nolabel", 0, &["No resources found"]),
    // Interacting with running Pods
    case("kubectl logs my-pod", 0, &["my-pod-says-hello"]),
    case("kubectl logs -l name=myLabel -c my-container", 0, &["my-pod-says-hello"]),
    case("kubectl logs my-pod --previous", 1, &["previous terminated container \"my-container\" in pod \"my-pod\" not found"]),
    case(
        "echo hello | kubectl run -i --rm --restart=Never --image=busybox:1.28 t -- sh -c 'read l; echo got $l'",
        0,
        &["got hello", "pod \"t\" deleted"],
    ),
    case("kubectl exec my-pod -- ls /", 0, &["etc"]),
    case("kubectl exec my-pod -c my-container -- sh -c 'echo $HOSTNAME'", 0, &["my-pod"]),
    case("kubectl debug my-pod -it --image=busybox:1.28", 1, &["ephemeral containers are disabled for this cluster"]),
    case("kubectl top pod", 1, &["Metrics API not available"]),
    // Copying files and directories to and from containers
    case(
        "echo copied > $TMP/foo && kubectl cp $TMP/foo default/my-pod:$TMP/bar && kubectl cp my-pod:$TMP/bar $TMP/back && cat $TMP/back",
        0,
        &["copied"],
    ),
    // Interacting with Nodes and cluster
    case("kubectl cordon node-1", 0, &["node/node-1 cordoned"]),
    case("kubectl uncordon node-1", 0, &["node/node-1 uncordoned"]),
    case("kubectl uncordon node-2", 0, &["node/node-2 uncordoned"]),
    case("kubectl cluster-info", 0, &["Kubernetes control plane is running at https://127.0.0.1:"]),
    case("kubectl taint nodes node-1 dedicated=special-user:NoSchedule", 0, &["node/node-1 tainted"]),
    case(
        "kubectl get nodes -o='custom-columns=NodeName:.metadata.name,TaintKey:.spec.taints[*].key,TaintEffect:.spec.taints[*].effect'",
        0,
        &["NodeName TaintKey TaintEffect", "node-1 dedicated NoSchedule", "node-2 <none> <none>"],
    ),
    case("kubectl taint nodes node-1 dedicated=special-user:NoSchedule-", 0, &["node/node-1 untainted"]),
    // Resource types
    case("kubectl api-resources", 0, &["NAME SHORTNAMES APIVERSION NAMESPACED KIND", "pods po v1 true Pod", "deployments deploy apps/v1 true Deployment"]),
    case("kubectl api-resources --namespaced=false -o name", 0, &["nodes", "namespaces"]),
    case("kubectl api-resources --verbs=list,get -o wide", 0, &["VERBS", "secrets v1 true Secret"]),
    // Formatting output
    case(
        "kubectl get pods --namespace default --output=custom-columns='NAME:.metadata.name,IMAGE:.spec.containers[*].image'",
        0,
        &["NAME IMAGE", "my-pod new-image"],
    ),
    case("kubectl get pods -A -o=custom-columns='DATA:metadata.name'", 0, &["DATA", "my-pod"]),
];

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_kubectl_quick_reference_against_ferry_up() {
    if !privileged("the_kubectl_quick_reference_against_ferry_up") {
        return;
    }
    binaries(&["ferry-server", "ferry-kubelet", "ferry-agent", "ferry-cni"]);
    let root = RootSnapshot::take();
    let c = Cluster::new();
    let out = c.up(&["--nodes", "2"]);
    assert!(out.status.success(), "ferry up failed: {}", text(&out));
    let kubeconfig = c.dir().join("kubeconfig");
    let tmp = tempfile::tempdir().unwrap();
    let sh = |cmd: &str| {
        Command::new("timeout")
            .args(["120", "bash", "-c", cmd])
            .env("KUBECONFIG", &kubeconfig)
            .env("TMP", tmp.path())
            .output()
            .unwrap()
    };
    let out = ferry_tests::output_with_stdin(
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "-f", "-"]),
        Some(SETUP),
    );
    assert!(out.status.success(), "setup: {}", text(&out));
    let out = sh(
        "kubectl wait --for=condition=Ready pod/my-pod --timeout=60s && \
                  kubectl rollout status deployment/frontend --timeout=60s",
    );
    assert!(out.status.success(), "setup: {}", text(&out));

    let mut failed = Vec::new();
    for c in CASES {
        let out = sh(c.cmd);
        let all = collapse(&format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        let missing: Vec<_> = c.want.iter().filter(|w| !all.contains(*w)).collect();
        if out.status.code() != Some(c.rc) || !missing.is_empty() {
            failed.push(format!(
                "{}\n  exit {:?} (want {}), missing {missing:?}\n  output: {all}",
                c.cmd,
                out.status.code(),
                c.rc
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cheat-sheet commands differ:\n{}",
        failed.len(),
        CASES.len(),
        failed.join("\n")
    );
    println!("{} cheat-sheet commands as documented", CASES.len());
    drop(c);
    root.assert_unchanged();
}
