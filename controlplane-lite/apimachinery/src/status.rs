//! `Status` bodies (section 8 of the control-plane notes), shaped like the real apiserver's
//! (`k8s.io/apimachinery/pkg/api/errors`). Every builder returns `(http status, body)`.
//!
//! Builders about one resource take the API group (`""` for core) and the plural resource
//! (`"pods"`) or kind (`"Pod"`, for [`invalid`]); messages qualify them like upstream
//! (`deployments.apps "web" not found`, `Deployment.apps "web" is invalid`) and `details` carries
//! `{name, group, kind}`.

use serde_json::{json, Map, Value};

use crate::patch::{conflict_message, ConflictCause};
use crate::validate::FieldError;

/// An HTTP status code and the `Status` JSON to send with it.
pub type StatusResponse = (u16, Value);

/// Upstream's message for a stale `resourceVersion` (used with [`conflict`]).
pub const OBJECT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Upstream's message for an expired `continue` token (use with [`expired`]).
pub const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// `resource.group`, or `resource` for the core group (upstream `GroupResource.String()`).
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Map<String, Value> {
    let mut map = Map::new();
    for (key, value) in [("name", name), ("group", group), ("kind", kind)] {
        if !value.is_empty() {
            map.insert(key.to_owned(), Value::from(value));
        }
    }
    map
}

fn failure(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Map<String, Value>>,
) -> StatusResponse {
    let mut body = Map::new();
    body.insert("kind".to_owned(), Value::from("Status"));
    body.insert("apiVersion".to_owned(), Value::from("v1"));
    body.insert("metadata".to_owned(), json!({}));
    body.insert("status".to_owned(), Value::from("Failure"));
    body.insert("message".to_owned(), Value::from(message));
    if !reason.is_empty() {
        body.insert("reason".to_owned(), Value::from(reason));
    }
    if let Some(details) = details.filter(|d| !d.is_empty()) {
        body.insert("details".to_owned(), Value::Object(details));
    }
    body.insert("code".to_owned(), Value::from(code));
    (code, Value::Object(body))
}

/// 404 NotFound: `pods "web" not found`.
pub fn not_found(group: &str, resource: &str, name: &str) -> StatusResponse {
    failure(
        404,
        "NotFound",
        &format!("{} {name:?} not found", qualified(group, resource)),
        Some(details(name, group, resource)),
    )
}

/// 409 AlreadyExists (create of an existing key): `pods "web" already exists`.
pub fn already_exists(group: &str, resource: &str, name: &str) -> StatusResponse {
    failure(
        409,
        "AlreadyExists",
        &format!("{} {name:?} already exists", qualified(group, resource)),
        Some(details(name, group, resource)),
    )
}

/// 409 Conflict: `Operation cannot be fulfilled on pods "web": <why>` ([`OBJECT_MODIFIED`] for
/// a stale resourceVersion, or a failed precondition's message).
pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> StatusResponse {
    failure(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            qualified(group, resource)
        ),
        Some(details(name, group, resource)),
    )
}

/// 409 Conflict for server-side apply, with `FieldManagerConflict` causes.
pub fn apply_conflict(causes: &[ConflictCause]) -> StatusResponse {
    let causes_json: Vec<Value> = causes
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", c.manager_description()),
                "field": c.field,
            })
        })
        .collect();
    let mut d = Map::new();
    d.insert("causes".to_owned(), Value::Array(causes_json));
    failure(409, "Conflict", &conflict_message(causes), Some(d))
}

/// 422 Invalid: `Pod "web" is invalid: spec.containers: Required value` (several errors are
/// listed as `[a, b]`), with one `details.causes` entry per error.
pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> StatusResponse {
    let qualified_kind = qualified(group, kind);
    let mut rendered: Vec<String> = Vec::new();
    for e in errors {
        let s = e.to_string();
        if !rendered.contains(&s) {
            rendered.push(s);
        }
    }
    let message = match rendered.as_slice() {
        [] => format!("{qualified_kind} {name:?} is invalid"),
        [one] => format!("{qualified_kind} {name:?} is invalid: {one}"),
        many => format!(
            "{qualified_kind} {name:?} is invalid: [{}]",
            many.join(", ")
        ),
    };
    let mut d = details(name, group, kind);
    let causes: Vec<Value> = errors.iter().map(FieldError::to_cause).collect();
    d.insert("causes".to_owned(), Value::Array(causes));
    failure(422, "Invalid", &message, Some(d))
}

/// 422 Invalid as upstream answers a JSON patch that does not apply: generic message, the
/// real error as an `UnexpectedServerResponse` cause.
pub fn unprocessable(server_message: &str) -> StatusResponse {
    let mut d = Map::new();
    d.insert(
        "causes".to_owned(),
        json!([{"reason": "UnexpectedServerResponse", "message": server_message}]),
    );
    failure(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        Some(d),
    )
}

/// 400 BadRequest with `message` (selector parse errors, namespace mismatch, decode errors,
/// strict field validation).
pub fn bad_request(message: &str) -> StatusResponse {
    failure(400, "BadRequest", message, None)
}

/// 410 Expired: the in-stream watch ERROR object, or a compacted `continue` token (see
/// [`CONTINUE_EXPIRED`]). Upstream uses reason `Expired` for both.
pub fn expired(message: &str) -> StatusResponse {
    failure(410, "Expired", message, None)
}

/// 410 Expired for a watch from a compacted revision: `too old resource version: N (M)`.
pub fn too_old_resource_version(requested: i64, oldest: i64) -> StatusResponse {
    expired(&format!("too old resource version: {requested} ({oldest})"))
}

/// 410 Gone (reason `Gone`), for callers that need it.
pub fn gone(message: &str) -> StatusResponse {
    failure(410, "Gone", message, None)
}

/// 405 MethodNotAllowed: `create is not supported on resources of kind "nodes/proxy"`.
pub fn method_not_allowed(group: &str, resource: &str, action: &str) -> StatusResponse {
    failure(
        405,
        "MethodNotAllowed",
        &format!(
            "{action} is not supported on resources of kind {:?}",
            qualified(group, resource)
        ),
        Some(details("", group, resource)),
    )
}

/// 415 UnsupportedMediaType listing the accepted types (for PATCH:
/// [`crate::patch::PATCH_CONTENT_TYPES`]).
pub fn unsupported_media_type(accepted: &[&str]) -> StatusResponse {
    failure(
        415,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        None,
    )
}

/// 406 NotAcceptable listing the media types the server can produce.
pub fn not_acceptable(accepted: &[&str]) -> StatusResponse {
    failure(
        406,
        "NotAcceptable",
        &format!(
            "only the following media types are accepted: {}",
            accepted.join(", ")
        ),
        None,
    )
}

/// 429 TooManyRequests; also send `Retry-After: <retry_after_seconds>`.
pub fn too_many_requests(message: &str, retry_after_seconds: u32) -> StatusResponse {
    let mut d = Map::new();
    d.insert(
        "retryAfterSeconds".to_owned(),
        Value::from(retry_after_seconds),
    );
    failure(429, "TooManyRequests", message, Some(d))
}

/// 500 InternalError: `Internal error occurred: <error>`.
pub fn internal(error: &str) -> StatusResponse {
    let mut d = Map::new();
    d.insert("causes".to_owned(), json!([{"message": error}]));
    failure(
        500,
        "InternalError",
        &format!("Internal error occurred: {error}"),
        Some(d),
    )
}

/// 504 Timeout with `retryAfterSeconds`.
pub fn timeout(message: &str, retry_after_seconds: u32) -> StatusResponse {
    let mut d = Map::new();
    d.insert(
        "retryAfterSeconds".to_owned(),
        Value::from(retry_after_seconds),
    );
    failure(504, "Timeout", message, Some(d))
}

/// 504 Timeout for a LIST/WATCH at a revision newer than the store's:
/// `Too large resource version: N, current: M`.
pub fn too_large_resource_version(
    requested: i64,
    current: i64,
    retry_after_seconds: u32,
) -> StatusResponse {
    let mut d = Map::new();
    d.insert(
        "causes".to_owned(),
        json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]),
    );
    d.insert(
        "retryAfterSeconds".to_owned(),
        Value::from(retry_after_seconds),
    );
    failure(
        504,
        "Timeout",
        &format!("Too large resource version: {requested}, current: {current}"),
        Some(d),
    )
}

/// The request an authorizer refused, for [`forbidden`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ForbiddenRequest<'a> {
    /// User name (`system:anonymous`).
    pub user: &'a str,
    /// Verb (`get`, `list`, `create`, ...).
    pub verb: &'a str,
    /// Resource (plural), empty for a non-resource request.
    pub resource: &'a str,
    /// Subresource (`status`), if any.
    pub subresource: &'a str,
    /// API group (`""` for core).
    pub group: &'a str,
    /// Namespace, empty for cluster scope.
    pub namespace: &'a str,
    /// Object name, if any.
    pub name: &'a str,
    /// Request path, for non-resource requests.
    pub path: &'a str,
    /// Authorizer's reason, appended after `: ` when non-empty.
    pub reason: &'a str,
}

/// 403 Forbidden: `pods "web" is forbidden: User "bob" cannot get resource "pods" in API group
/// "" in the namespace "default"`.
pub fn forbidden(req: &ForbiddenRequest<'_>) -> StatusResponse {
    let mut why = if req.resource.is_empty() {
        format!(
            "User {:?} cannot {} path {:?}",
            req.user, req.verb, req.path
        )
    } else {
        let resource = if req.subresource.is_empty() {
            req.resource.to_owned()
        } else {
            format!("{}/{}", req.resource, req.subresource)
        };
        if req.namespace.is_empty() {
            format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                req.user, req.verb, req.group
            )
        } else {
            format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                req.user, req.verb, req.group, req.namespace
            )
        }
    };
    if !req.reason.is_empty() {
        why = format!("{why}: {}", req.reason);
    }
    let qualified = qualified(req.group, req.resource);
    let message = if req.resource.is_empty() {
        format!("forbidden: {why}")
    } else if req.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", req.name)
    };
    failure(
        403,
        "Forbidden",
        &message,
        Some(details(req.name, req.group, req.resource)),
    )
}

/// 401 Unauthorized, as the authentication filter sends it.
pub fn unauthorized() -> StatusResponse {
    failure(401, "Unauthorized", "Unauthorized", None)
}

/// A `Success` Status (DELETE answered with a Status, binding create): `details` may be
/// `{name, group, kind, uid}`.
pub fn success(code: u16, details: Option<Value>) -> StatusResponse {
    let mut body = Map::new();
    body.insert("kind".to_owned(), Value::from("Status"));
    body.insert("apiVersion".to_owned(), Value::from("v1"));
    body.insert("metadata".to_owned(), json!({}));
    body.insert("status".to_owned(), Value::from("Success"));
    if let Some(details) = details {
        body.insert("details".to_owned(), details);
    }
    body.insert("code".to_owned(), Value::from(code));
    (code, Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_notes() {
        let (code, body) = not_found("", "pods", "web");
        assert_eq!(code, 404);
        assert_eq!(
            body,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"pods \"web\" not found","reason":"NotFound",
                "details":{"name":"web","kind":"pods"},"code":404})
        );
        let (_, body) = not_found("apps", "deployments", "d");
        assert_eq!(body["message"], "deployments.apps \"d\" not found");
        assert_eq!(
            body["details"],
            json!({"name":"d","group":"apps","kind":"deployments"})
        );
    }

    #[test]
    fn conflicts() {
        let (code, body) = already_exists("", "namespaces", "dev");
        assert_eq!(
            (code, body["reason"].clone()),
            (409, json!("AlreadyExists"))
        );
        assert_eq!(body["message"], "namespaces \"dev\" already exists");
        let (code, body) = conflict("", "pods", "web", OBJECT_MODIFIED);
        assert_eq!(code, 409);
        assert_eq!(body["reason"], "Conflict");
        assert_eq!(
            body["message"],
            "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn apply_conflict_shape() {
        let causes = vec![ConflictCause {
            manager: "kube-controller-manager".to_owned(),
            operation: "Update".to_owned(),
            api_version: "apps/v1".to_owned(),
            subresource: String::new(),
            field: ".spec.replicas".to_owned(),
        }];
        let (code, body) = apply_conflict(&causes);
        assert_eq!(code, 409);
        assert_eq!(body["reason"], "Conflict");
        assert_eq!(
            body["message"],
            "Apply failed with 1 conflict: conflict with \"kube-controller-manager\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            body["details"]["causes"],
            json!([{"reason":"FieldManagerConflict","message":"conflict with \"kube-controller-manager\" using apps/v1","field":".spec.replicas"}])
        );
    }

    #[test]
    fn invalid_shape() {
        let errors = vec![FieldError::required("spec.containers", "")];
        let (code, body) = invalid("", "Pod", "web", &errors);
        assert_eq!(code, 422);
        assert_eq!(body["reason"], "Invalid");
        assert_eq!(
            body["message"],
            "Pod \"web\" is invalid: spec.containers: Required value"
        );
        assert_eq!(
            body["details"],
            json!({"name":"web","kind":"Pod","causes":[{"reason":"FieldValueRequired","message":"Required value","field":"spec.containers"}]})
        );
        let two = vec![
            FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
            FieldError::required("spec.selector", ""),
        ];
        let (_, body) = invalid("apps", "Deployment", "d", &two);
        assert_eq!(
            body["message"],
            "Deployment.apps \"d\" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.selector: Required value]"
        );
        assert_eq!(body["details"]["group"], "apps");
        assert_eq!(body["details"]["kind"], "Deployment");
        let (code, body) = unprocessable("testing value /spec/replicas failed");
        assert_eq!((code, body["reason"].clone()), (422, json!("Invalid")));
    }

    #[test]
    fn simple_codes_and_reasons() {
        let cases = [
            (bad_request("bad"), 400, "BadRequest"),
            (expired("too old resource version: 5 (10)"), 410, "Expired"),
            (too_old_resource_version(5, 10), 410, "Expired"),
            (gone("x"), 410, "Gone"),
            (
                method_not_allowed("", "nodes", "deletecollection"),
                405,
                "MethodNotAllowed",
            ),
            (
                unsupported_media_type(&crate::patch::PATCH_CONTENT_TYPES),
                415,
                "UnsupportedMediaType",
            ),
            (not_acceptable(&["application/json"]), 406, "NotAcceptable"),
            (
                too_many_requests("Too many requests, please try again later.", 1),
                429,
                "TooManyRequests",
            ),
            (internal("boom"), 500, "InternalError"),
            (timeout("slow", 1), 504, "Timeout"),
            (too_large_resource_version(20, 10, 1), 504, "Timeout"),
            (unauthorized(), 401, "Unauthorized"),
        ];
        for ((code, body), want_code, want_reason) in cases {
            assert_eq!(code, want_code, "{body}");
            assert_eq!(body["code"], want_code);
            assert_eq!(body["reason"], want_reason);
            assert_eq!(body["kind"], "Status");
            assert_eq!(body["status"], "Failure");
        }
        assert_eq!(
            too_old_resource_version(5, 10).1["message"],
            "too old resource version: 5 (10)"
        );
        assert_eq!(
            method_not_allowed("", "nodes", "deletecollection").1["message"],
            "deletecollection is not supported on resources of kind \"nodes\""
        );
        assert_eq!(
            unsupported_media_type(&["application/json"]).1["message"],
            "the body of the request was in an unknown format - accepted media types include: application/json"
        );
        assert_eq!(
            too_large_resource_version(20, 10, 1).1["message"],
            "Too large resource version: 20, current: 10"
        );
        assert_eq!(
            internal("boom").1["message"],
            "Internal error occurred: boom"
        );
        assert_eq!(
            too_many_requests("x", 3).1["details"]["retryAfterSeconds"],
            3
        );
    }

    #[test]
    fn forbidden_messages() {
        let (code, body) = forbidden(&ForbiddenRequest {
            user: "system:anonymous",
            verb: "list",
            resource: "pods",
            namespace: "default",
            ..ForbiddenRequest::default()
        });
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let (_, body) = forbidden(&ForbiddenRequest {
            user: "bob",
            verb: "patch",
            resource: "deployments",
            subresource: "scale",
            group: "apps",
            name: "web",
            ..ForbiddenRequest::default()
        });
        assert_eq!(
            body["message"],
            "deployments.apps \"web\" is forbidden: User \"bob\" cannot patch resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(
            body["details"],
            json!({"name":"web","group":"apps","kind":"deployments"})
        );
        let (_, body) = forbidden(&ForbiddenRequest {
            user: "bob",
            verb: "get",
            path: "/metrics",
            ..ForbiddenRequest::default()
        });
        assert_eq!(
            body["message"],
            "forbidden: User \"bob\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn success_status() {
        let (code, body) = success(201, None);
        assert_eq!(code, 201);
        assert_eq!(
            body,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201})
        );
        let (_, body) = success(200, Some(json!({"name":"web","kind":"pods","uid":"u"})));
        assert_eq!(body["details"]["uid"], "u");
    }
}
