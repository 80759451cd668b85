//! The `healthCheckNodePort` server, as kube-proxy's service health server: for every
//! LoadBalancer Service with `externalTrafficPolicy: Local` ([`ServiceTable::health_checks`]),
//! an HTTP listener on its `healthCheckNodePort` on the node's addresses, telling a load
//! balancer whether to send this node the Service's traffic. Both proxy modes run it.
//!
//! ```text
//! any request ──► 200 when the node has ready local endpoints and the last proxier sync worked,
//!                 503 otherwise; kube-proxy's headers and JSON body:
//!   Content-Type: application/json
//!   X-Content-Type-Options: nosniff
//!   {"service": {"namespace": "..", "name": ".."}, "localEndpoints": N, "serviceProxyHealthy": true}
//! ```
//!
//! kube-proxy answers every path and method the same way, and so does this server (a `HEAD`
//! gets the headers only). Terminating endpoints are not counted
//! ([`super::table::HealthCheck::local_endpoints`]), so a draining node fails its check while it
//! still serves the connections it has.
//!
//! [`HealthServer::sync`] runs after each proxier sync: listeners are opened for new ports and
//! closed (their accept task aborted, the socket closed) for ports no Service needs any more;
//! the answer of an open one is swapped in place. A port that cannot be bound (another process
//! holds it) is logged once per distinct error and retried at every sync; the other ports are
//! served. Each listener is bounded like the metrics server ([`crate::http`]): a few connections
//! at once, a bounded request head, timeouts, one request per connection.

use super::table::{HealthCheck, ServiceTable};
use crate::http;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Connections one health-check listener serves at once (more wait in the listen backlog).
const MAX_CONNECTIONS: usize = 4;

/// What a listener answers now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    check: HealthCheck,
    /// The last proxier sync succeeded (kube-proxy's `serviceProxyHealthy`).
    proxy_healthy: bool,
}

impl Answer {
    /// The status code and kube-proxy's JSON body.
    fn render(&self) -> (u16, String) {
        let code = if self.check.local_endpoints > 0 && self.proxy_healthy {
            200
        } else {
            503
        };
        let q = |s: &str| serde_json::Value::from(s).to_string();
        let body = format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {}\n}}",
            q(&self.check.namespace),
            q(&self.check.name),
            self.check.local_endpoints,
            self.proxy_healthy
        );
        (code, body)
    }
}

/// The response to any request on a health-check port.
fn respond(req: &http::Request, answer: &Answer) -> Vec<u8> {
    let (code, body) = answer.render();
    http::reply(
        code,
        "application/json",
        &[("X-Content-Type-Options", "nosniff")],
        &body,
        req.method != "HEAD",
    )
}

/// One open listener.
#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Dropping the accept loop drops the socket: the port closes.
        self.task.abort();
    }
}

/// The health-check listeners of this node; see the module documentation.
#[derive(Debug)]
pub struct HealthServer {
    listen: Ipv4Addr,
    open: BTreeMap<u16, Listener>,
    /// Ports that could not be bound, with the error last logged.
    failed: BTreeMap<u16, String>,
}

impl HealthServer {
    /// A server listening on `listen` (`0.0.0.0`: every address of the node, as kube-proxy
    /// without `--nodeport-addresses`), with no listener yet.
    pub fn new(listen: Ipv4Addr) -> HealthServer {
        HealthServer {
            listen,
            open: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Makes the listeners match `table`'s health checks, answering with `proxy_healthy` (the
    /// last proxier sync worked). Must be called inside a tokio runtime, in the node's network
    /// namespace. Returns the ports that could not be opened (logged; retried next time).
    pub fn sync(&mut self, table: &ServiceTable, proxy_healthy: bool) -> Vec<u16> {
        let checks = &table.health_checks;
        self.open.retain(|port, l| {
            let keep = checks.contains_key(port);
            if !keep {
                tracing::info!(port, address = %l.addr, "closing health check");
            }
            keep
        });
        self.failed.retain(|port, _| checks.contains_key(port));
        let mut failed = Vec::new();
        for (port, check) in checks {
            let answer = Answer {
                check: check.clone(),
                proxy_healthy,
            };
            if let Some(l) = self.open.get(port) {
                *l.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
                continue;
            }
            match self.listen_on(*port, answer) {
                Ok(l) => {
                    tracing::info!(
                        port, address = %l.addr, service = %format!("{}/{}", check.namespace, check.name),
                        "serving health check"
                    );
                    self.failed.remove(port);
                    self.open.insert(*port, l);
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.failed.get(port) != Some(&e) {
                        tracing::warn!(
                            port, error = %e, service = %format!("{}/{}", check.namespace, check.name),
                            "cannot listen for a health check (retried at every sync)"
                        );
                        self.failed.insert(*port, e);
                    }
                    failed.push(*port);
                }
            }
        }
        failed
    }

    fn listen_on(&self, port: u16, answer: Answer) -> std::io::Result<Listener> {
        let l = std::net::TcpListener::bind((self.listen, port))?;
        l.set_nonblocking(true)?;
        let l = TcpListener::from_std(l)?;
        let addr = l.local_addr()?;
        let answer = Arc::new(Mutex::new(answer));
        let shared = answer.clone();
        let task = tokio::spawn(http::serve(
            l,
            MAX_CONNECTIONS,
            "health check",
            move |req| {
                let a = shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                async move { respond(&req, &a) }
            },
        ));
        Ok(Listener { addr, answer, task })
    }

    /// The open listeners: port -> the address bound.
    pub fn listening(&self) -> BTreeMap<u16, SocketAddr> {
        self.open.iter().map(|(p, l)| (*p, l.addr)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::request;

    fn check(name: &str, n: usize) -> HealthCheck {
        HealthCheck {
            namespace: "default".into(),
            name: name.into(),
            local_endpoints: n,
        }
    }

    fn table(checks: &[(u16, HealthCheck)]) -> ServiceTable {
        ServiceTable {
            health_checks: checks.iter().cloned().collect(),
            ..ServiceTable::default()
        }
    }

    /// A loopback port nobody listens on now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn split(r: &str) -> (&str, &str) {
        r.split_once("\r\n\r\n").unwrap()
    }

    #[test]
    fn the_body_is_kube_proxys() {
        let a = Answer {
            check: check("web", 2),
            proxy_healthy: true,
        };
        let (code, body) = a.render();
        assert_eq!(code, 200);
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["service"]["name"], "web");
        // No local endpoint, or an unhealthy proxy: 503 with the same body shape.
        let (code, body) = Answer {
            check: check("web", 0),
            proxy_healthy: true,
        }
        .render();
        assert_eq!(code, 503);
        assert!(body.contains("\"localEndpoints\": 0"));
        let (code, body) = Answer {
            check: check("web", 3),
            proxy_healthy: false,
        }
        .render();
        assert_eq!(code, 503);
        assert!(body.contains("\"serviceProxyHealthy\": false"));
    }

    #[tokio::test]
    async fn listeners_follow_the_table_and_answer_like_kube_proxy() {
        let mut s = HealthServer::new(Ipv4Addr::LOCALHOST);
        let (p1, p2) = (free_port(), free_port());
        let failed = s.sync(&table(&[(p1, check("web", 2)), (p2, check("db", 0))]), true);
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(s.listening().keys().copied().collect::<Vec<_>>(), {
            let mut v = vec![p1, p2];
            v.sort();
            v
        });
        let a1 = SocketAddr::from((Ipv4Addr::LOCALHOST, p1));
        let a2 = SocketAddr::from((Ipv4Addr::LOCALHOST, p2));
        let r = request(a1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = split(&r);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            head.contains("\r\nContent-Type: application/json\r\n"),
            "{r}"
        );
        assert!(
            head.contains("\r\nX-Content-Type-Options: nosniff\r\n"),
            "{r}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service": {"namespace": "default", "name": "web"},
                               "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        // Any path; 503 and a count of 0 without local endpoints.
        let r = request(a2, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("\"localEndpoints\": 0"), "{r}");
        // HEAD: headers only.
        let r = request(a1, b"HEAD / HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        // Counts change in place; a Service that goes closes its port.
        s.sync(&table(&[(p1, check("web", 0))]), true);
        let r = request(a1, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert_eq!(s.listening().len(), 1);
        let closed = crate::http::tests::wait_refused(a2).await;
        assert!(closed, "port {p2} still open after its Service left");
        // A failed proxier sync turns every check to 503.
        s.sync(&table(&[(p1, check("web", 1))]), false);
        let r = request(a1, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.contains("\"serviceProxyHealthy\": false"), "{r}");
        // Bad requests are still bounded and answered.
        let r = request(a1, b"NONSENSE\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        drop(s);
        assert!(crate::http::tests::wait_refused(a1).await);
    }

    #[tokio::test]
    async fn a_port_held_by_someone_else_is_reported_and_retried() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut s = HealthServer::new(Ipv4Addr::LOCALHOST);
        let t = table(&[(port, check("web", 1))]);
        assert_eq!(s.sync(&t, true), vec![port]);
        assert!(s.listening().is_empty());
        drop(held);
        assert_eq!(s.sync(&t, true), Vec::<u16>::new());
        let r = request(
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            b"GET / HTTP/1.1\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    }
}
