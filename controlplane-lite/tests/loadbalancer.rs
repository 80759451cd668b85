//! LoadBalancer Services against a real `ferry-server`: addresses from `--loadbalancer-pool`
//! (assigned, pending with an `AllocationFailed` Event when the pool is exhausted, given as soon
//! as one is freed, released on a type change, unchanged across a server restart), the pool's
//! validation, and the `healthCheckNodePort` of `externalTrafficPolicy: Local` Services.

mod common;

use common::Server;
use std::process::Command;
use std::time::Duration;

const POOL: &str = "10.99.0.192/31";

fn lb_svc(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n{extra_spec}"
    )
}

fn json(s: &Server, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&s.ok(args)).unwrap()
}

/// The Service's ingress IP, once it has one (waits up to 15 s; `None` if it never does).
fn ingress(s: &Server, name: &str) -> Option<String> {
    let mut ip = None;
    ferry_tests::wait_until(Duration::from_secs(15), || {
        let v = json(s, &["get", "svc", name, "-o", "json"]);
        ip = v
            .pointer("/status/loadBalancer/ingress/0/ip")
            .and_then(|i| i.as_str())
            .map(str::to_owned);
        ip.is_some()
    });
    ip
}

fn current_ingress(s: &Server, name: &str) -> Option<String> {
    let v = json(s, &["get", "svc", name, "-o", "json"]);
    v.pointer("/status/loadBalancer/ingress/0/ip")
        .and_then(|i| i.as_str())
        .map(str::to_owned)
}

/// Whether a Warning `AllocationFailed` Event about Service `name` whose message contains
/// `text` appears within 15 s.
fn warning(s: &Server, name: &str, text: &str) -> bool {
    ferry_tests::wait_until(Duration::from_secs(15), || {
        let ev = json(s, &["get", "events", "-o", "json"]);
        ev["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["involvedObject"]["name"] == name
                    && e["involvedObject"]["kind"] == "Service"
                    && e["reason"] == "AllocationFailed"
                    && e["type"] == "Warning"
                    && e["message"].as_str().is_some_and(|m| m.contains(text))
            })
        })
    })
}

#[test]
fn pool_addresses_assigned_pending_freed_and_kept_across_restart() {
    let mut s = Server::start_with(&[
        "--service-cidr",
        "10.96.0.0/16",
        "--loadbalancer-pool",
        POOL,
    ]);
    s.ok_stdin(&["apply", "-f", "-"], &lb_svc("a", ""));
    let a = ingress(&s, "a").expect("a gets an address");
    assert_eq!(a, "10.99.0.192", "the lowest free address");
    // Asking for the address a holds: pending; asking for a free one: granted.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("b", "  loadBalancerIP: 10.99.0.192\n"),
    );
    assert!(
        warning(&s, "b", "already assigned to default/a"),
        "{}",
        s.log()
    );
    assert_eq!(current_ingress(&s, "b"), None);
    s.ok(&[
        "patch",
        "svc",
        "b",
        "--type=merge",
        "-p",
        r#"{"spec":{"loadBalancerIP":"10.99.0.193"}}"#,
    ]);
    let b = ingress(&s, "b").expect("b gets an address");
    assert_eq!(b, "10.99.0.193");
    // Not LoadBalancer / another class: never touched.
    s.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: example.com/lb\n  ports: [{port: 80}]\n",
    );
    // Exhausted: c stays pending, with a Warning event.
    s.ok_stdin(&["apply", "-f", "-"], &lb_svc("c", ""));
    assert!(
        warning(&s, "c", "no address left"),
        "no AllocationFailed event for c:\n{}",
        s.log()
    );
    assert_eq!(current_ingress(&s, "c"), None);
    assert_eq!(current_ingress(&s, "other"), None);
    assert!(s.ok(&["get", "svc", "c"]).contains("<pending>"));

    // Restart: every Service keeps its address; c is still pending.
    s.kill();
    s.spawn();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(current_ingress(&s, "a").as_ref(), Some(&a));
    assert_eq!(current_ingress(&s, "b").as_ref(), Some(&b));
    assert_eq!(current_ingress(&s, "c"), None);

    // a becomes ClusterIP: its address is released and c gets it.
    s.ok(&[
        "patch",
        "svc",
        "a",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert_eq!(ingress(&s, "c").as_ref(), Some(&a), "{}", s.log());
    let released = ferry_tests::wait_until(Duration::from_secs(10), || {
        current_ingress(&s, "a").is_none()
    });
    assert!(released, "a kept its ingress after leaving LoadBalancer");
    // b deleted: a new Service asking for b's address gets it.
    s.ok(&["delete", "svc", "b"]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("d", &format!("  loadBalancerIP: {b}\n")),
    );
    assert_eq!(ingress(&s, "d").as_ref(), Some(&b));
}

#[test]
fn bad_pools_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (pool, want) in [
        ("10.96.5.0/24", "overlaps the service CIDR 10.96.0.0/16"),
        ("10.244.9.0/24", "overlaps the cluster CIDR 10.244.0.0/16"),
        (
            "10.99.0.0/24,10.99.0.128/25",
            "overlaps --loadbalancer-pool",
        ),
        ("fd00::/64", "--loadbalancer-pool"),
    ] {
        let out = Command::new(common::SERVER)
            .args([
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--service-cidr",
                "10.96.0.0/16",
                "--loadbalancer-pool",
                pool,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{pool} accepted");
        assert!(err.contains(want), "{pool}: {err}");
    }
}

fn hcnp(s: &Server, name: &str) -> Option<u64> {
    json(s, &["get", "svc", name, "-o", "json"])
        .pointer("/spec/healthCheckNodePort")
        .and_then(serde_json::Value::as_u64)
}

#[test]
fn health_check_node_port_allocated_kept_released_and_validated() {
    let s = Server::start();
    let local = "  externalTrafficPolicy: Local\n";
    s.ok_stdin(&["apply", "-f", "-"], &lb_svc("web", local));
    let port = hcnp(&s, "web").expect("a healthCheckNodePort");
    assert!((30000..=32767).contains(&port), "{port}");
    let node_port = json(&s, &["get", "svc", "web", "-o", "json"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap();
    assert_ne!(port, node_port);
    // An update that does not mention it keeps it.
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("web", local).replace(
            "metadata: {name: web}",
            "metadata: {name: web, labels: {tier: web}}",
        ),
    );
    assert_eq!(hcnp(&s, "web"), Some(port));
    // Its own healthCheckNodePort is not a free node port for its ports.
    let err = s.fails(
        &[
            "patch",
            "svc",
            "web",
            "--type=json",
            "-p",
            &format!(r#"[{{"op":"replace","path":"/spec/ports/0/nodePort","value":{port}}}]"#),
        ],
        None,
    );
    assert!(err.contains("already allocated"), "{err}");
    assert_eq!(
        json(&s, &["get", "svc", "web", "-o", "json"])["spec"]["ports"][0]["nodePort"].as_u64(),
        Some(node_port)
    );
    // Taken, out of range, or on a Service that does not need one: 422 naming the field.
    let err = s.fails(
        &["apply", "-f", "-"],
        Some(&lb_svc(
            "clash",
            &format!("{local}  healthCheckNodePort: {port}\n"),
        )),
    );
    assert!(
        err.contains("spec.healthCheckNodePort") && err.contains("already allocated"),
        "{err}"
    );
    let err = s.fails(
        &["apply", "-f", "-"],
        Some(&lb_svc(
            "low",
            &format!("{local}  healthCheckNodePort: 1000\n"),
        )),
    );
    assert!(err.contains("not in the valid range"), "{err}");
    let err = s.fails(
        &["apply", "-f", "-"],
        Some(&lb_svc("cluster", "  healthCheckNodePort: 31999\n")),
    );
    assert!(err.contains("may only be set when"), "{err}");
    // A free requested one is honoured.
    let want = if port == 32767 { 32766 } else { port + 1 };
    let want = if want == node_port { want - 2 } else { want };
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("asked", &format!("{local}  healthCheckNodePort: {want}\n")),
    );
    assert_eq!(hcnp(&s, "asked"), Some(want));
    // Back to Cluster: dropped and released (another Service can take it).
    s.ok(&[
        "patch",
        "svc",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
    ]);
    assert_eq!(hcnp(&s, "web"), None);
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("reuse", &format!("{local}  healthCheckNodePort: {port}\n")),
    );
    assert_eq!(hcnp(&s, "reuse"), Some(port));
    // Local again: a fresh one. Type change away from LoadBalancer: dropped and released.
    s.ok(&[
        "patch",
        "svc",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let again = hcnp(&s, "web").expect("allocated again");
    assert!(again != port && again != want, "{again}");
    s.ok(&[
        "patch",
        "svc",
        "asked",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"NodePort","externalTrafficPolicy":"Cluster"}}"#,
    ]);
    assert_eq!(hcnp(&s, "asked"), None);
    // Deleting releases.
    s.ok(&["delete", "svc", "web"]);
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("after", &format!("{local}  healthCheckNodePort: {again}\n")),
    );
    s.ok_stdin(
        &["apply", "-f", "-"],
        &lb_svc("after2", &format!("{local}  healthCheckNodePort: {want}\n")),
    );
    assert_eq!(hcnp(&s, "after2"), Some(want));
}
