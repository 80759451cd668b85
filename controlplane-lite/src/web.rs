//! HTTP plumbing shared by the handlers: bodies, JSON and Status responses, query parsing and
//! content negotiation (Table, aggregated discovery).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use serde_json::Value;
use std::collections::HashMap;

/// The response body type: full bodies and streamed watches alike.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A JSON content type.
pub const JSON: &str = "application/json";
/// The Table content type kubectl asks for.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response with `content_type`.
pub fn json_with(status: StatusCode, value: &Value, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    json_with(status, value, JSON)
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(full(body.to_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// An API error: an HTTP status and a Kubernetes `Status` body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `Status` object.
    pub status: Value,
}

impl ApiError {
    /// From an apimachinery `(code, Status)` pair.
    pub fn from_pair((code, status): (u16, Value)) -> ApiError {
        ApiError { code, status }
    }

    /// A Status with an arbitrary reason.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError {
            code,
            status: serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code,
            }),
        }
    }

    /// 404 for a path that names no served resource, as kube-apiserver answers it: with empty
    /// `details` (kubectl tells it from a missing object by `details.name == ""`, and `kubectl
    /// debug` reads `details` without a nil check).
    pub fn no_such_resource() -> ApiError {
        let mut e = ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        e.status["details"] = serde_json::json!({});
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The HTTP response.
    pub fn response(&self) -> Response<Body> {
        json(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &self.status,
        )
    }
}

/// Query parameters; empty components (`?&watch=true`) are ignored, later values win.
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for part in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

/// Decodes `%XX` escapes and `+` (as a space).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the client asked for a `meta.k8s.io` Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    accept(headers).split(',').any(|p| {
        let p = p.replace(' ', "");
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

/// The Accept header (empty when absent).
pub fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Whether anything in Accept can be answered with JSON.
pub fn accepts_json(headers: &HeaderMap) -> bool {
    let a = accept(headers);
    a.is_empty()
        || a.split(',').any(|p| {
            let p = p.trim();
            p.starts_with("application/json")
                || p.starts_with("*/*")
                || p.starts_with("application/*")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some(
            "&watch=true&labelSelector=app%3Dweb%2Ctier+in+(a)&limit=500&",
        ));
        assert_eq!(q["watch"], "true");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "500");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
