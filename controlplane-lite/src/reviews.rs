//! The create-only review kinds behind `kubectl auth can-i` and `kubectl auth whoami`:
//!
//! | POST | kind | answer |
//! |---|---|---|
//! | `/apis/authorization.k8s.io/v1/selfsubjectaccessreviews` | SelfSubjectAccessReview | [`crate::auth::authorize`] on the asked attributes (`can-i VERB RESOURCE`) |
//! | `/apis/authorization.k8s.io/v1/selfsubjectrulesreviews` | SelfSubjectRulesReview | [`crate::auth::rules`] in the asked namespace (`can-i --list`) |
//! | `/apis/authentication.k8s.io/v1/selfsubjectreviews` | SelfSubjectReview | the caller's user name and groups (`whoami`) |
//!
//! They are answered from the caller's identity by the server's real authorizer and never
//! stored; any authenticated caller may create them (upstream's `system:basic-user`). A node's
//! permission that depends on the object (pods bound to it) is checked against the stored pod
//! when the review names one.

use crate::api::Api;
use crate::auth::{authorize, rules, Attributes, Identity};
use crate::request::Req;
use crate::resources::{self, Resource, REVIEWS, VERBS};
use crate::web::{self, ApiError, Body};
use http::{Method, Response, StatusCode};
use k8s_openapi::api::authentication::v1 as authn;
use k8s_openapi::api::authorization::v1 as authz;
use serde::de::DeserializeOwned;
use serde_json::Value;

type ApiResult<T> = Result<T, ApiError>;

/// The review resource `path` addresses, if any (`/apis/authorization.k8s.io/v1/selfsubject...`).
pub fn find(path: &str) -> Option<&'static Resource> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", g, v, plural] => REVIEWS
            .iter()
            .find(|r| r.group == *g && r.version == *v && r.plural == *plural),
        _ => None,
    }
}

/// Answers one request to the review resource `res`.
pub async fn handle(api: &Api, res: &'static Resource, r: &Req) -> ApiResult<Response<Body>> {
    if r.method != Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is create-only: {} is not allowed", res.plural, r.method),
        ));
    }
    let answer = match res.kind {
        "SelfSubjectAccessReview" => access_review(api, r, decode(res, r)?).await?,
        "SelfSubjectRulesReview" => rules_review(r, decode(res, r)?)?,
        "SelfSubjectReview" => self_review(r, decode(res, r)?),
        other => return Err(ApiError::internal(format!("no handler for {other}"))),
    };
    Ok(web::json(StatusCode::CREATED, &answer))
}

/// The request body as `T`, checking that it names the kind being created.
fn decode<T: DeserializeOwned>(res: &Resource, r: &Req) -> ApiResult<T> {
    let content_type = r
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(web::JSON);
    // kubectl's typed clients (`auth can-i`, `auth whoami`) send protobuf.
    let body: Value = if crate::protobuf::is_protobuf(content_type) {
        crate::protobuf::decode(&r.body)
            .map_err(|e| ApiError::bad_request(format!("decoding the protobuf body: {e}")))?
    } else if r.body.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))?
    };
    for (field, want) in [
        ("kind", res.kind.to_owned()),
        ("apiVersion", res.api_version()),
    ] {
        if let Some(got) = body.get(field).and_then(Value::as_str) {
            if got != want {
                return Err(ApiError::bad_request(format!(
                    "the body's {field} is {got:?}; {} takes {want:?}",
                    res.plural
                )));
            }
        }
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("decoding the {}: {e}", res.kind)))
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        format!(
            "{kind}.{} \"\" is invalid: {field}: Invalid value: {message}",
            kind_group(kind)
        ),
    );
    e.status["details"] = serde_json::json!({
        "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
    });
    e
}

fn kind_group(kind: &str) -> &'static str {
    resources::REVIEWS
        .iter()
        .find(|r| r.kind == kind)
        .map_or("", |r| r.group)
}

/// `kubectl auth can-i`: one decision of the real authorizer.
async fn access_review(
    api: &Api,
    r: &Req,
    mut review: authz::SelfSubjectAccessReview,
) -> ApiResult<Value> {
    let kind = "SelfSubjectAccessReview";
    let spec = &review.spec;
    let (allowed, reason) = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(ra), None) => resource_decision(api, &r.who, ra).await?,
        (None, Some(nra)) => {
            let verb = nra.verb.as_deref().unwrap_or_default();
            match &r.who {
                Identity::Admin => (true, String::new()),
                // Every non-resource URL ferry-server serves (discovery, OpenAPI, version,
                // health) is readable by any authenticated caller, and nothing else is.
                Identity::Node(_) if verb == "get" => (true, String::new()),
                Identity::Node(n) => (false, format!("node {n:?} may only get non-resource URLs")),
            }
        }
        _ => {
            return Err(invalid(
                kind,
                "spec.resourceAttributes",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ))
        }
    };
    review.status = Some(authz::SubjectAccessReviewStatus {
        allowed,
        denied: None,
        evaluation_error: None,
        reason: Some(reason).filter(|r| !r.is_empty()),
    });
    to_value(&review)
}

/// The authorizer's answer for resource attributes; `*` verbs and resources mean "all of them".
async fn resource_decision(
    api: &Api,
    who: &Identity,
    ra: &authz::ResourceAttributes,
) -> ApiResult<(bool, String)> {
    let verb = ra.verb.as_deref().unwrap_or_default();
    let resource = ra.resource.as_deref().unwrap_or_default();
    if verb.is_empty() || resource.is_empty() {
        return Err(invalid(
            "SelfSubjectAccessReview",
            if verb.is_empty() {
                "spec.resourceAttributes.verb"
            } else {
                "spec.resourceAttributes.resource"
            },
            "a verb and a resource are required",
        ));
    }
    fn nonempty(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    let verbs: Vec<&str> = if verb == "*" {
        VERBS.to_vec()
    } else {
        vec![verb]
    };
    for v in verbs {
        let attrs = Attributes {
            verb: v,
            resource,
            subresource: nonempty(&ra.subresource),
            namespace: nonempty(&ra.namespace),
            name: nonempty(&ra.name),
        };
        match api.decide(authorize(who, &attrs), &attrs, None).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Ok((false, why)),
            // The named pod does not exist: not bound to the node.
            Err(e) if e.code == 404 => {
                return Ok((
                    false,
                    format!(
                        "{} {}/{} is not bound to the node: it does not exist",
                        resource,
                        attrs.namespace.unwrap_or_default(),
                        attrs.name.unwrap_or_default()
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok((true, String::new()))
}

/// `kubectl auth can-i --list`: the authorizer's rules in one namespace.
fn rules_review(r: &Req, mut review: authz::SelfSubjectRulesReview) -> ApiResult<Value> {
    let ns = review.spec.namespace.clone().unwrap_or_default();
    let list = rules(&r.who, &ns);
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    review.status = Some(authz::SubjectRulesReviewStatus {
        resource_rules: list
            .resource
            .iter()
            .map(|rule| authz::ResourceRule {
                verbs: strings(&rule.verbs),
                api_groups: Some(strings(&rule.api_groups)),
                resources: Some(rule.resources.clone()),
                resource_names: Some(rule.resource_names.clone()).filter(|n| !n.is_empty()),
            })
            .collect(),
        non_resource_rules: vec![authz::NonResourceRule {
            verbs: strings(&list.non_resource_verbs),
            non_resource_urls: Some(vec!["*".to_owned()]),
        }],
        incomplete: list.conditional.is_some(),
        evaluation_error: list.conditional,
    });
    to_value(&review)
}

/// `kubectl auth whoami`.
fn self_review(r: &Req, mut review: authn::SelfSubjectReview) -> Value {
    review.status = Some(authn::SelfSubjectReviewStatus {
        user_info: Some(k8s_openapi::api::authentication::v1::UserInfo {
            username: Some(r.who.user()),
            groups: Some(r.who.groups()),
            extra: None,
            uid: None,
        }),
    });
    serde_json::to_value(&review).unwrap_or_default()
}

fn to_value<T: serde::Serialize>(v: &T) -> ApiResult<Value> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(format!("encoding the review: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_paths() {
        assert_eq!(
            find("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").map(|r| r.kind),
            Some("SelfSubjectAccessReview")
        );
        assert_eq!(
            find("/apis/authentication.k8s.io/v1/selfsubjectreviews/").map(|r| r.kind),
            Some("SelfSubjectReview")
        );
        assert!(find("/apis/authentication.k8s.io/v1beta1/selfsubjectreviews").is_none());
        assert!(find("/api/v1/pods").is_none());
    }
}
