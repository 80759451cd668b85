//! The server's bridge to `ferry-apimachinery`: Status bodies, selectors from query parameters,
//! patches, validation and Tables, in the shapes the handlers use.

use crate::resources::Resource;
use crate::web::ApiError;
use ferry_apimachinery::validate::FieldError;
use ferry_apimachinery::{patch, selector, status, table, validate};
use serde_json::Value;
use std::collections::HashMap;

/// 404 for `res`/`name`.
pub fn not_found(res: &Resource, name: &str) -> (u16, Value) {
    status::not_found(res.group, res.plural, name)
}

/// 409 AlreadyExists.
pub fn already_exists(res: &Resource, name: &str) -> (u16, Value) {
    status::already_exists(res.group, res.plural, name)
}

/// 409 Conflict.
pub fn conflict(res: &Resource, name: &str, msg: &str) -> (u16, Value) {
    status::conflict(res.group, res.plural, name, msg)
}

/// One `details.causes` entry.
pub fn cause(field: &str, reason: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

/// 422 Invalid with causes.
pub fn invalid(res: &Resource, name: &str, causes: Vec<FieldError>) -> (u16, Value) {
    status::invalid(res.group, res.kind, name, &causes)
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Clone)]
pub struct Selectors {
    labels: selector::LabelSelector,
    fields: selector::FieldSelector,
}

impl Selectors {
    /// From `labelSelector` and `fieldSelector`; a parse error is a 400 message.
    pub fn from_query(kind: &str, q: &HashMap<String, String>) -> Result<Selectors, String> {
        let labels = match q.get("labelSelector") {
            Some(s) if !s.is_empty() => {
                selector::parse_label_selector(s).map_err(|e| e.to_string())?
            }
            _ => selector::LabelSelector::everything(),
        };
        let fields = selector::parse_field_selector(
            kind,
            q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        )
        .map_err(|e| e.to_string())?;
        Ok(Selectors { labels, fields })
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }
}

/// Decodes a request body (JSON; YAML is accepted when it is JSON, which is all kubectl sends).
pub fn decode_body(body: &[u8], content_type: &str) -> Result<Value, String> {
    if body.is_empty() {
        return Err("the request body is empty".into());
    }
    serde_json::from_slice(body).map_err(|e| {
        if content_type.contains("yaml") {
            format!("the body must be JSON (a YAML subset): {e}")
        } else {
            format!("couldn't decode the request body as JSON: {e}")
        }
    })
}

/// A 400 BadRequest or 422 Invalid for a patch that is malformed or does not apply.
fn patch_status(code: u16, msg: String) -> ApiError {
    ApiError::new(
        code,
        if code == 422 { "Invalid" } else { "BadRequest" },
        msg,
    )
}

fn patch_error(e: &patch::PatchError) -> ApiError {
    patch_status(e.http_status(), e.to_string())
}

/// RFC 6902.
pub fn json_patch(cur: &Value, p: &Value) -> Result<Value, ApiError> {
    patch::json_patch(cur, p).map_err(|e| patch_error(&e))
}

/// RFC 7386.
pub fn merge_patch(cur: &Value, p: &Value) -> Result<Value, ApiError> {
    patch::merge_patch(cur, p).map_err(|e| patch_error(&e))
}

/// Strategic merge patch.
pub fn strategic_merge(kind: &str, cur: &Value, p: &Value) -> Result<Value, ApiError> {
    patch::strategic_merge(kind, cur, p).map_err(|e| patch_error(&e))
}

/// Server-side apply; returns the object and whether it is new.
pub fn apply(
    res: &Resource,
    existing: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<(Value, bool), ApiError> {
    let now = crate::objects::now_rfc3339();
    match patch::apply(res.kind, existing, applied, manager, force, &now) {
        Ok(out) => Ok((out.object, out.created)),
        Err(patch::ApplyError::Conflict { causes }) => {
            Err(ApiError::from_pair(status::apply_conflict(&causes)))
        }
        Err(e) => Err(patch_status(e.http_status(), e.to_string())),
    }
}

/// Records an ordinary write in `metadata.managedFields` (so appliers conflict with it).
pub fn track_update(
    res: &Resource,
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    sub: Option<&str>,
) -> Value {
    patch::track_update(
        res.kind,
        old,
        new,
        manager,
        sub,
        &crate::objects::now_rfc3339(),
    )
}

/// The shape check every write runs before anything reads or writes into the body (admission,
/// defaulting, metadata): the object is a JSON object and decodes into its Kubernetes type
/// (objects where objects belong, lists where lists belong: `metadata`, `spec`, `ports[]`...).
/// A mismatch is a 400 BadRequest, as upstream's decoding answers, whatever `fieldValidation`
/// says. `kind` and `api_version` name the type (`Scale`/`autoscaling/v1` for `/scale`).
pub fn check_shape(kind: &str, api_version: &str, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        let what = match obj {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object ({kind}), not {what}"
        )));
    }
    validate::strict_unknown_fields(kind, api_version, obj)
        .map(drop)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The shape check of a DELETE's `DeleteOptions`: an object decoding into the type, so that a
/// precondition or policy the server cannot read is a 400, never silently dropped.
pub fn check_delete_options(opts: &Value) -> Result<(), ApiError> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
    if !opts.is_object() {
        return Err(ApiError::bad_request(
            "invalid DeleteOptions: the body must be a JSON object",
        ));
    }
    serde_json::from_value::<DeleteOptions>(opts.clone())
        .map(drop)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))
}

/// [`check_shape`] for an object of `res`.
pub fn check_object_shape(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    check_shape(res.kind, &res.api_version(), obj)
}

/// Unknown fields of `obj` (for `fieldValidation`); a type mismatch is a 400 message.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Result<Vec<String>, String> {
    validate::strict_unknown_fields(res.kind, &res.api_version(), obj).map_err(|e| e.to_string())
}

/// `generateName` + 5 random characters.
pub fn generate_name(prefix: &str) -> String {
    validate::generate_name(prefix)
}

/// Validation causes (empty when valid); Nodes also get ferry's own checks
/// ([`crate::admission::validate_node`]: `ferry.dev/mtu`, podCIDRs).
pub fn validate(res: &Resource, obj: &Value) -> Vec<FieldError> {
    validate_update(res, None, obj)
}

/// [`validate`] of an update from `old` (`None`: a create); ferry's Node checks skip values the
/// update leaves as they were.
pub fn validate_update(res: &Resource, old: Option<&Value>, obj: &Value) -> Vec<FieldError> {
    let mut causes = validate::validate_object(res.kind, obj);
    if res.kind == "Node" {
        causes.extend(crate::admission::validate_node(obj, old));
    }
    causes
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table(kind: &str, objects: &[Value], rv: &str, cont: &str) -> Value {
    table::to_table(kind, objects, jiff::Timestamp::now(), rv, cont)
}
