//! Probes: `exec` (run in the container's network namespace and cgroup), `httpGet` (HTTP/1.1 to
//! the pod IP, 200-399 is success) and `tcpSocket` (a connect), with the Kubernetes timing knobs
//! (`initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `successThreshold`,
//! `failureThreshold`).
//!
//! A probe task runs per container and probe kind and reports each change of its verdict.

use bytes::Bytes;
use http_body_util::Empty;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::path::PathBuf;
use std::time::Duration;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// startupProbe.
    Startup,
    /// livenessProbe.
    Liveness,
    /// readinessProbe.
    Readiness,
}

impl Kind {
    /// As Kubernetes spells it in events.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A probe verdict change, sent to the pod worker.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Container.
    pub container: String,
    /// Attempt the probe ran against.
    pub attempt: u32,
    /// Probe kind.
    pub kind: Kind,
    /// Success (after thresholds).
    pub ok: bool,
    /// The last failure's message.
    pub message: String,
}

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// Pod IP (or node IP for hostNetwork pods).
    pub ip: String,
    /// The pod's network namespace (`None`: the node's).
    pub netns: Option<PathBuf>,
    /// The container's cgroup (exec probes join it).
    pub cgroup: PathBuf,
    /// Environment of the container (exec probes inherit it).
    pub env: Vec<(String, String)>,
}

/// Validates a probe: exactly one handler, a resolvable port. Returns the problem.
pub fn validate(p: &Probe, c: &Container) -> Result<(), String> {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if handlers != 1 {
        return Err(format!(
            "probe must have exactly one handler, has {handlers}"
        ));
    }
    if p.grpc.is_some() {
        return Err("grpc probes are not supported by ferry-kubelet".into());
    }
    if let Some(e) = &p.exec {
        if e.command.as_ref().is_none_or(Vec::is_empty) {
            return Err("exec probe has no command".into());
        }
    }
    if let Some(h) = &p.http_get {
        port(&h.port, c)?;
        if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err(format!(
                "httpGet scheme {:?} is not supported (HTTP only)",
                h.scheme.as_deref().unwrap_or("")
            ));
        }
    }
    if let Some(t) = &p.tcp_socket {
        port(&t.port, c)?;
    }
    Ok(())
}

/// Resolves a probe port (number or container port name).
pub fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| {
                format!(
                    "port {name:?} is not a named port of container {:?}",
                    c.name
                )
            }),
    }
}

/// One probe run: `Ok(())` on success, the failure message otherwise.
pub async fn run_once(p: &Probe, c: &Container, t: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        let argv = e.command.clone().unwrap_or_default();
        let (prog, args) = argv.split_first().ok_or("exec probe has no command")?;
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args)
            .env_clear()
            .envs(t.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let procs = crate::shim::open_procs(&t.cgroup).map_err(|e| format!("cgroup: {e}"))?;
        let netns: Option<std::os::fd::OwnedFd> = match &t.netns {
            Some(p) => Some(
                std::fs::File::open(p)
                    .map_err(|e| format!("netns: {e}"))?
                    .into(),
            ),
            None => None,
        };
        crate::shim::enter_before_exec(&mut cmd, Some(&procs), netns.as_ref())
            .map_err(|e| format!("exec setup: {e}"))?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("exec {prog:?}: {e}"))?;
        drop(procs);
        drop(netns);
        return match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => Err(format!("command {argv:?} timed out after {timeout:?}")),
            Ok(Err(e)) => Err(format!("exec {prog:?}: {e}")),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "command {argv:?} exited with {}: {}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).trim()
            )),
        };
    }
    if let Some(h) = &p.http_get {
        let port = port(&h.port, c)?;
        let host = h.host.clone().unwrap_or_else(|| t.ip.clone());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let fut = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("http handshake: {e}"))?;
            tokio::spawn(conn);
            let mut req = http::Request::get(path.as_str())
                .header("host", format!("{host}:{port}"))
                .header("user-agent", "kube-probe/1.33")
                .header("accept", "*/*");
            for hh in h.http_headers.iter().flatten() {
                req = req.header(hh.name.as_str(), hh.value.as_str());
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("request: {e}"))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
            let code = resp.status().as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| Err(format!("Get \"http://{host}:{port}{path}\": timeout")));
    }
    if let Some(s) = &p.tcp_socket {
        let port = port(&s.port, c)?;
        let host = s.host.clone().unwrap_or_else(|| t.ip.clone());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    Err("probe has no handler".into())
}

/// Runs probe `kind` of container `c` forever, sending a [`Verdict`] whenever the thresholded
/// result changes (the first verdict is always sent). Liveness and startup failures are sent
/// every time the failure threshold is reached again.
pub async fn run(
    kind: Kind,
    p: Probe,
    c: Container,
    attempt: u32,
    t: Target,
    report: impl Fn(Verdict) -> bool + Send + 'static,
) {
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let success_needed = p.success_threshold.unwrap_or(1).max(1);
    let failure_needed = p.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(Duration::from_secs(
        p.initial_delay_seconds.unwrap_or(0).max(0) as u64,
    ))
    .await;
    let mut verdict: Option<bool> = None;
    let (mut ok_streak, mut fail_streak) = (0, 0);
    loop {
        let result = run_once(&p, &c, &t).await;
        let message = result.clone().err().unwrap_or_default();
        if result.is_ok() {
            ok_streak += 1;
            fail_streak = 0;
        } else {
            fail_streak += 1;
            ok_streak = 0;
        }
        let next = if ok_streak >= success_needed {
            Some(true)
        } else if fail_streak >= failure_needed {
            Some(false)
        } else {
            verdict
        };
        let failed_again = next == Some(false) && fail_streak == failure_needed;
        if next != verdict || (failed_again && kind != Kind::Readiness) {
            verdict = next;
            if let Some(ok) = next {
                let v = Verdict {
                    container: c.name.clone(),
                    attempt,
                    kind,
                    ok,
                    message,
                };
                if !report(v) {
                    return;
                }
            }
        }
        if kind == Kind::Startup && verdict == Some(true) {
            return;
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c() -> Container {
        serde_json::from_value(
            json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    #[test]
    fn validation() {
        let p: Probe =
            serde_json::from_value(json!({"httpGet": {"port": "http", "path": "/"}})).unwrap();
        assert!(validate(&p, &c()).is_ok());
        let p: Probe = serde_json::from_value(json!({"httpGet": {"port": "nope"}})).unwrap();
        assert!(validate(&p, &c()).unwrap_err().contains("not a named port"));
        let p: Probe = serde_json::from_value(json!({})).unwrap();
        assert!(validate(&p, &c())
            .unwrap_err()
            .contains("exactly one handler"));
        let p: Probe = serde_json::from_value(json!({"exec": {"command": []}})).unwrap();
        assert!(validate(&p, &c()).unwrap_err().contains("no command"));
        let p: Probe = serde_json::from_value(json!({"tcpSocket": {"port": 0}})).unwrap();
        assert!(validate(&p, &c()).unwrap_err().contains("invalid port"));
        assert_eq!(port(&IntOrString::String("http".into()), &c()), Ok(8080));
    }
}
