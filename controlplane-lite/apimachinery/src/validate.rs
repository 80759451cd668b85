//! Validation: name formats, `generateName`, strict unknown-field detection and per-kind checks.
//!
//! - Name checks return upstream's messages (`k8s.io/apimachinery/pkg/util/validation`):
//!   [`is_dns1123_subdomain`], [`is_dns1123_label`], [`is_dns1035_label`],
//!   [`is_qualified_name`] (label/annotation keys), [`is_valid_label_value`].
//! - [`generate_name`] resolves `metadata.generateName` as upstream (base cut to 58 bytes plus 5
//!   characters from `bcdfghjklmnpqrstvwxz2456789`).
//! - [`strict_unknown_fields`] implements `fieldValidation=Strict|Warn`: the object is decoded
//!   into its k8s-openapi type, re-encoded, and every input path missing from the round trip is
//!   reported (`spec.foo`, `spec.containers[0].imagee`); decode failures (wrong JSON types) are
//!   a [`DecodeError`], a 400 whatever the validation mode.
//! - [`validate_object`] returns the [`FieldError`]s of a create/update (the `details.causes` of a
//!   422 Invalid): object metadata for every kind, plus per-kind rules from a table
//!   ([`kind_validators`]) that is easy to extend.
//! - [`resolve_namespace`] applies the request namespace to the body as upstream `BeforeCreate`
//!   does (400 on mismatch).

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

// ----------------------------------------------------------------------------------------------
// Name formats
// ----------------------------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Maximum length of a DNS-1123 / DNS-1035 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a label value and of a qualified name's name part.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;

/// Upstream `RegexError`: `msg (e.g. 'a',  or 'b', regex used for validation is 'fmt')`.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(matches_dns1123_label)
}

fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let ext = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| ext(c))
}

/// Errors for a DNS-1123 subdomain (most object names). Empty when valid.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errors.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// Errors for a DNS-1123 label (namespace names, container names). Empty when valid.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errors.push("must not contain dots".to_owned());
        } else {
            errors.push(regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

/// Errors for a DNS-1035 label (Service names). Empty when valid.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    let b = value.as_bytes();
    let ok = matches_dns1123_label(value) && b[0].is_ascii_lowercase();
    if !ok {
        errors.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errors
}

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Errors for a qualified name (`[prefix/]name`: label and annotation keys). Empty when valid.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(format!(
            "name part {}",
            max_len_error(LABEL_VALUE_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// Errors for a label value (may be empty). Empty when valid.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errors.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

// ----------------------------------------------------------------------------------------------
// generateName
// ----------------------------------------------------------------------------------------------

/// Characters upstream's `utilrand.String` draws from (no vowels, no look-alikes).
pub const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Number of random characters appended.
pub const GENERATE_NAME_RANDOM_LENGTH: usize = 5;
const MAX_GENERATED_BASE: usize = 63 - GENERATE_NAME_RANDOM_LENGTH;

/// `base` (cut to 58 bytes) followed by 5 random characters, drawn from `rng`.
pub fn generate_name_with<R: rand::Rng + ?Sized>(base: &str, rng: &mut R) -> String {
    let mut cut = base.len().min(MAX_GENERATED_BASE);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut name = base[..cut].to_owned();
    for _ in 0..GENERATE_NAME_RANDOM_LENGTH {
        let i = rng.random_range(0..GENERATE_NAME_ALPHABET.len());
        name.push(char::from(GENERATE_NAME_ALPHABET[i]));
    }
    name
}

/// [`generate_name_with`] using the thread-local RNG.
pub fn generate_name(base: &str) -> String {
    generate_name_with(base, &mut rand::rng())
}

/// If `obj` has no `metadata.name` but a `generateName`, sets a generated name and returns it.
/// The server retries with a fresh name when the create hits AlreadyExists (upstream retries
/// up to 7 times since 1.30).
pub fn resolve_generate_name(obj: &mut Value) -> Option<String> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if has_name {
        return None;
    }
    let base = meta.get("generateName")?.as_str()?.to_owned();
    if base.is_empty() {
        return None;
    }
    let name = generate_name(&base);
    meta.insert("name".to_owned(), Value::from(name.clone()));
    Some(name)
}

// ----------------------------------------------------------------------------------------------
// Namespaces
// ----------------------------------------------------------------------------------------------

/// Whether objects of `kind` live in a namespace (false for `Namespace`, `Node` and the other
/// cluster-scoped kinds upstream has).
pub fn is_namespaced(kind: &str) -> bool {
    !matches!(
        kind,
        "Namespace"
            | "Node"
            | "PersistentVolume"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "StorageClass"
            | "CustomResourceDefinition"
            | "PriorityClass"
            | "RuntimeClass"
            | "APIService"
    )
}

/// Upstream's message when the body's namespace differs from the URL's (400 BadRequest).
pub const NAMESPACE_MISMATCH: &str =
    "the namespace of the provided object does not match the namespace sent on the request";

/// Applies the request namespace to `obj` as upstream `BeforeCreate`/`BeforeUpdate`:
/// namespaced kinds get `metadata.namespace` from the URL when the body has none, and a
/// different one is an error (the [`NAMESPACE_MISMATCH`] message, for a 400); cluster-scoped
/// kinds have any namespace cleared.
pub fn resolve_namespace(
    obj: &mut Value,
    request_namespace: Option<&str>,
    namespaced: bool,
) -> Result<(), String> {
    let Some(root) = obj.as_object_mut() else {
        return Err("the object must be a JSON object".to_owned());
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return Err("metadata must be an object".to_owned());
    };
    let body = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    if !namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match (body, request_namespace.filter(|s| !s.is_empty())) {
        (Some(b), Some(r)) if b != r => Err(NAMESPACE_MISMATCH.to_owned()),
        (None, Some(r)) => {
            meta.insert("namespace".to_owned(), Value::from(r));
            Ok(())
        }
        _ => Ok(()),
    }
}

// ----------------------------------------------------------------------------------------------
// Field errors
// ----------------------------------------------------------------------------------------------

/// Upstream `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `FieldValueNotFound`.
    NotFound,
    /// `FieldValueRequired`.
    Required,
    /// `FieldValueDuplicate`.
    Duplicate,
    /// `FieldValueInvalid`.
    Invalid,
    /// `FieldValueNotSupported`.
    NotSupported,
    /// `FieldValueForbidden`.
    Forbidden,
    /// `FieldValueTooLong`.
    TooLong,
    /// `FieldValueTooMany`.
    TooMany,
    /// `InternalError`.
    Internal,
}

impl ErrorType {
    /// The `details.causes[].reason` string.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
        }
    }

    /// The human text starting the message (`Required value`, `Invalid value`, ...).
    pub fn text(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
        }
    }
}

/// The offending value of an error, rendered like Go's `%q` / `%v` / `%#v`.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    /// A string, printed quoted.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Already rendered (Go `%#v` of maps and structs).
    Raw(String),
}

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Raw(s) => f.write_str(s),
        }
    }
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        Self::Str(s.to_owned())
    }
}

impl From<String> for BadValue {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<i64> for BadValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<i32> for BadValue {
    fn from(i: i32) -> Self {
        Self::Int(i64::from(i))
    }
}

/// Go's `%#v` of a `map[string]string`: `map[string]string{"a":"1", "b":"2"}` (sorted keys).
pub fn go_string_map(map: Option<&Value>) -> String {
    let Some(Value::Object(map)) = map else {
        return "map[string]string(nil)".to_owned();
    };
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", parts.join(", "))
}

/// One validation failure: a `details.causes` entry of a 422 Invalid Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path (`spec.containers[0].image`).
    pub field: String,
    /// Cause type (`FieldValueRequired`, ...), serialized as the cause's `reason`.
    pub reason: String,
    /// Upstream `ErrorBody()` (`Required value`, `Invalid value: "x": detail`).
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl FieldError {
    fn with(field: impl Into<String>, kind: ErrorType, body: String, detail: &str) -> Self {
        let message = if detail.is_empty() {
            body
        } else {
            format!("{body}: {detail}")
        };
        Self {
            field: field.into(),
            reason: kind.reason().to_owned(),
            message,
        }
    }

    /// The `details.causes[]` entry: `{"reason", "message", "field"}`.
    pub fn to_cause(&self) -> Value {
        serde_json::json!({"reason": self.reason, "message": self.message, "field": self.field})
    }

    /// `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::with(
            field,
            ErrorType::Required,
            ErrorType::Required.text().to_owned(),
            detail,
        )
    }

    /// `Invalid value: <value>[: detail]`.
    pub fn invalid(field: impl Into<String>, value: impl Into<BadValue>, detail: &str) -> Self {
        let body = format!("{}: {}", ErrorType::Invalid.text(), value.into());
        Self::with(field, ErrorType::Invalid, body, detail)
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        let body = format!("{}: {}", ErrorType::Duplicate.text(), value.into());
        Self::with(field, ErrorType::Duplicate, body, "")
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        supported: &[&str],
    ) -> Self {
        let mut quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        quoted.sort();
        let body = format!("{}: {}", ErrorType::NotSupported.text(), value.into());
        let detail = format!("supported values: {}", quoted.join(", "));
        Self::with(field, ErrorType::NotSupported, body, &detail)
    }

    /// `Forbidden[: detail]`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::with(
            field,
            ErrorType::Forbidden,
            ErrorType::Forbidden.text().to_owned(),
            detail,
        )
    }

    /// `Too many: <actual>: must have at most <max> items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let body = format!("{}: {actual}", ErrorType::TooMany.text());
        Self::with(
            field,
            ErrorType::TooMany,
            body,
            &format!("must have at most {max} items"),
        )
    }
}

// ----------------------------------------------------------------------------------------------
// Strict decoding
// ----------------------------------------------------------------------------------------------

/// The object could not be decoded into its type (wrong JSON types, wrong `apiVersion`/`kind`).
/// The apiserver answers 400 BadRequest with this message in every validation mode.
#[derive(Debug, thiserror::Error)]
#[error("{kind} in version {version:?} cannot be handled as a {kind}: {source}")]
pub struct DecodeError {
    /// The kind.
    pub kind: String,
    /// The version part of `apiVersion`.
    pub version: String,
    /// The serde error.
    #[source]
    pub source: serde_json::Error,
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(obj.clone())?;
    serde_json::to_value(typed)
}

/// Whether [`strict_unknown_fields`] knows a typed schema for `(kind, api_version)`.
pub fn has_typed_schema(kind: &str, api_version: &str) -> bool {
    typed_round_trip(kind, api_version, &Value::Null).is_some()
}

fn typed_round_trip(
    kind: &str,
    api_version: &str,
    obj: &Value,
) -> Option<Result<Value, serde_json::Error>> {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery};
    let f: fn(&Value) -> Result<Value, serde_json::Error> = match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>,
        ("v1", "Node") => round_trip::<core::v1::Node>,
        ("v1", "Pod") => round_trip::<core::v1::Pod>,
        ("v1", "Service") => round_trip::<core::v1::Service>,
        ("v1", "Endpoints") => round_trip::<core::v1::Endpoints>,
        ("v1", "Event") => round_trip::<core::v1::Event>,
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>,
        ("v1", "Binding") => round_trip::<core::v1::Binding>,
        ("discovery.k8s.io/v1", "EndpointSlice") => round_trip::<discovery::v1::EndpointSlice>,
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>,
        ("apps/v1", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>,
        ("coordination.k8s.io/v1", "Lease") => round_trip::<coordination::v1::Lease>,
        ("autoscaling/v1", "Scale") => round_trip::<autoscaling::v1::Scale>,
        _ => return None,
    };
    Some(if obj.is_null() {
        Ok(Value::Null)
    } else {
        f(obj)
    })
}

/// Paths present in `obj` but dropped by a round trip through the k8s-openapi type for
/// `(kind, api_version)`: what `fieldValidation=Strict` reports as `unknown field "<path>"`
/// (list positions as `[i]`, e.g. `spec.containers[0].imagee`). Fields whose value is `null`
/// are not reported (the round trip cannot tell a dropped `null` from a known one). Kinds without
/// a typed schema yield no unknown fields.
pub fn strict_unknown_fields(
    kind: &str,
    api_version: &str,
    obj: &Value,
) -> Result<Vec<String>, DecodeError> {
    let Some(result) = typed_round_trip(kind, api_version, obj) else {
        return Ok(Vec::new());
    };
    let round = result.map_err(|source| DecodeError {
        kind: kind.to_owned(),
        version: api_version
            .rsplit('/')
            .next()
            .unwrap_or(api_version)
            .to_owned(),
        source,
    })?;
    let mut unknown = Vec::new();
    diff_unknown(obj, &round, String::new(), &mut unknown);
    Ok(unknown)
}

fn diff_unknown(input: &Value, round: &Value, path: String, out: &mut Vec<String>) {
    match (input, round) {
        (Value::Object(input), Value::Object(round)) => {
            for (key, value) in input {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match round.get(key) {
                    None => out.push(child),
                    Some(r) => diff_unknown(value, r, child, out),
                }
            }
        }
        (Value::Array(input), Value::Array(round)) => {
            for (i, (value, r)) in input.iter().zip(round).enumerate() {
                diff_unknown(value, r, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The message of a Strict failure: `strict decoding error: unknown field "a", unknown field "b"`.
pub fn strict_error_message(unknown: &[String]) -> String {
    let parts: Vec<String> = unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    format!("strict decoding error: {}", parts.join(", "))
}

// ----------------------------------------------------------------------------------------------
// Object validation
// ----------------------------------------------------------------------------------------------

/// A per-kind validation rule: appends errors for `obj`.
pub type Validator = fn(obj: &Value, errors: &mut Vec<FieldError>);

/// The per-kind rules run by [`validate_object`] after the metadata checks. Extend here.
pub fn kind_validators(kind: &str) -> &'static [Validator] {
    match kind {
        "Pod" => &[validate_pod],
        "Service" => &[validate_service],
        "Deployment" => &[validate_deployment],
        "ReplicaSet" => &[validate_replica_set],
        "EndpointSlice" => &[validate_endpoint_slice],
        _ => &[],
    }
}

/// Which name format `kind` requires.
fn name_validator(kind: &str) -> fn(&str) -> Vec<String> {
    match kind {
        "Namespace" => is_dns1123_label,
        "Service" => is_dns1035_label,
        _ => is_dns1123_subdomain,
    }
}

/// Validation errors of `obj` (a complete object of `kind`, after namespace and generateName
/// resolution). Empty when valid; otherwise answer 422 with `status::invalid`.
pub fn validate_object(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_object_meta(kind, obj, &mut errors);
    for validator in kind_validators(kind) {
        validator(obj, &mut errors);
    }
    errors
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn validate_object_meta(kind: &str, obj: &Value, errors: &mut Vec<FieldError>) {
    let name = str_at(obj, "/metadata/name");
    let generate_name = str_at(obj, "/metadata/generateName");
    let check = name_validator(kind);
    if !generate_name.is_empty() {
        // Upstream masks a trailing '-' of a prefix before checking it.
        let masked = match generate_name.strip_suffix('-') {
            Some(stem) => format!("{stem}a"),
            None => generate_name.to_owned(),
        };
        for msg in check(&masked) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                &msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errors.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in check(name) {
            errors.push(FieldError::invalid("metadata.name", name, &msg));
        }
    }

    let namespace = str_at(obj, "/metadata/namespace");
    if is_namespaced(kind) {
        if namespace.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errors.push(FieldError::invalid("metadata.namespace", namespace, &msg));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }

    if let Some(Value::Object(labels)) = obj.pointer("/metadata/labels") {
        for (key, value) in labels {
            for msg in is_qualified_name(key) {
                errors.push(FieldError::invalid("metadata.labels", key.as_str(), &msg));
            }
            let value = value.as_str().unwrap_or_default();
            for msg in is_valid_label_value(value) {
                errors.push(FieldError::invalid("metadata.labels", value, &msg));
            }
        }
    }
    if let Some(Value::Object(annotations)) = obj.pointer("/metadata/annotations") {
        for key in annotations.keys() {
            for msg in is_qualified_name(&key.to_ascii_lowercase()) {
                errors.push(FieldError::invalid(
                    "metadata.annotations",
                    key.as_str(),
                    &msg,
                ));
            }
        }
    }
}

const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const PROTOCOLS: [&str; 3] = ["SCTP", "TCP", "UDP"];

fn validate_containers(
    list: Option<&Value>,
    path: &str,
    required: bool,
    seen: &mut BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) {
    use k8s_openapi::api::core::v1::Container;
    let containers: Vec<Container> = match list {
        None | Some(Value::Null) => Vec::new(),
        // Decoding problems are reported by `strict_unknown_fields` / the decode step.
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_default(),
    };
    if containers.is_empty() {
        if required {
            errors.push(FieldError::required(path, ""));
        }
        return;
    }
    for (i, container) in containers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if container.name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name"), ""));
        } else {
            for msg in is_dns1123_label(&container.name) {
                errors.push(FieldError::invalid(
                    format!("{at}.name"),
                    container.name.as_str(),
                    &msg,
                ));
            }
            if !seen.insert(container.name.clone()) {
                errors.push(FieldError::duplicate(
                    format!("{at}.name"),
                    container.name.as_str(),
                ));
            }
        }
        if container.image.as_deref().unwrap_or("").trim().is_empty() {
            errors.push(FieldError::required(format!("{at}.image"), ""));
        }
        for (j, port) in container.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&port.container_port) {
                errors.push(FieldError::invalid(
                    format!("{at}.ports[{j}].containerPort"),
                    port.container_port,
                    PORT_RANGE_MSG,
                ));
            }
            if let Some(protocol) = &port.protocol {
                if !PROTOCOLS.contains(&protocol.as_str()) {
                    errors.push(FieldError::not_supported(
                        format!("{at}.ports[{j}].protocol"),
                        protocol.as_str(),
                        &PROTOCOLS,
                    ));
                }
            }
        }
    }
}

/// Pod-spec rules shared by Pods and pod templates; `path` is where the spec lives.
fn validate_pod_spec(spec: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    let spec = spec.filter(|s| s.is_object());
    validate_containers(
        spec.and_then(|s| s.get("containers")),
        &format!("{path}.containers"),
        true,
        &mut seen,
        errors,
    );
    validate_containers(
        spec.and_then(|s| s.get("initContainers")),
        &format!("{path}.initContainers"),
        false,
        &mut seen,
        errors,
    );
    if let Some(policy) = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
    {
        const POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
        if !POLICIES.contains(&policy) {
            errors.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                policy,
                &POLICIES,
            ));
        }
    }
}

fn validate_pod(obj: &Value, errors: &mut Vec<FieldError>) {
    validate_pod_spec(obj.get("spec"), "spec", errors);
}

fn validate_service(obj: &Value, errors: &mut Vec<FieldError>) {
    use k8s_openapi::api::core::v1::ServicePort;
    let spec = obj.get("spec");
    let service_type = spec
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&service_type) {
        errors.push(FieldError::not_supported("spec.type", service_type, &TYPES));
    }
    let headless = spec
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        == Some("None");
    let ports: Vec<ServicePort> = spec
        .and_then(|s| s.get("ports"))
        .filter(|p| !p.is_null())
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = port.name.as_deref().unwrap_or("");
        if ports.len() > 1 {
            if name.is_empty() {
                errors.push(FieldError::required(format!("{at}.name"), ""));
            } else if !names.insert(name.to_owned()) {
                errors.push(FieldError::duplicate(format!("{at}.name"), name));
            }
        }
        if !name.is_empty() {
            for msg in is_dns1123_label(name) {
                errors.push(FieldError::invalid(format!("{at}.name"), name, &msg));
            }
        }
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(
                format!("{at}.port"),
                port.port,
                PORT_RANGE_MSG,
            ));
        }
        if let Some(protocol) = &port.protocol {
            if !PROTOCOLS.contains(&protocol.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("{at}.protocol"),
                    protocol.as_str(),
                    &PROTOCOLS,
                ));
            }
        }
        if let Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(target)) =
            &port.target_port
        {
            if !(1..=65535).contains(target) {
                errors.push(FieldError::invalid(
                    format!("{at}.targetPort"),
                    *target,
                    PORT_RANGE_MSG,
                ));
            }
        }
    }
}

/// Shared Deployment / ReplicaSet rules (upstream `ValidateDeploymentSpec` /
/// `ValidateReplicaSetSpec`; both say "deployment" in the empty-selector message).
fn validate_replicated(obj: &Value, errors: &mut Vec<FieldError>) {
    let spec = obj.get("spec");
    if let Some(replicas) = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64) {
        if replicas < 0 {
            errors.push(FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            ));
        }
    }
    let selector_json = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    let template = spec
        .and_then(|s| s.get("template"))
        .filter(|t| !t.is_null());
    let selector = match selector_json {
        None => {
            errors.push(FieldError::required("spec.selector", ""));
            None
        }
        Some(json) => match crate::selector::label_selector_from_json(Some(json)) {
            Ok(selector) => {
                if selector.is_everything() {
                    errors.push(FieldError::invalid(
                        "spec.selector",
                        BadValue::Raw(
                            "&v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
                                .to_owned(),
                        ),
                        "empty selector is invalid for deployment",
                    ));
                }
                Some(selector)
            }
            Err(e) => {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    BadValue::Raw(json.to_string()),
                    &e.to_string(),
                ));
                None
            }
        },
    };
    let Some(template) = template else {
        errors.push(FieldError::required("spec.template", ""));
        return;
    };
    let labels = template.pointer("/metadata/labels");
    if let Some(selector) = selector.filter(|s| !s.is_everything()) {
        if !selector.matches_labels_value(labels) {
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels",
                BadValue::Raw(go_string_map(labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    validate_pod_spec(template.get("spec"), "spec.template.spec", errors);
    if let Some(policy) = template
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
    {
        if policy != "Always" {
            // validate_pod_spec already flagged unknown values; this is the template rule.
            if ["OnFailure", "Never"].contains(&policy) {
                errors.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    &["Always"],
                ));
            }
        }
    }
}

fn validate_deployment(obj: &Value, errors: &mut Vec<FieldError>) {
    validate_replicated(obj, errors);
}

fn validate_replica_set(obj: &Value, errors: &mut Vec<FieldError>) {
    validate_replicated(obj, errors);
}

/// Maximum endpoints per EndpointSlice.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;

fn validate_endpoint_slice(obj: &Value, errors: &mut Vec<FieldError>) {
    const ADDRESS_TYPES: [&str; 3] = ["FQDN", "IPv4", "IPv6"];
    match obj.get("addressType").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required("addressType", "")),
        Some(t) if !ADDRESS_TYPES.contains(&t) => {
            errors.push(FieldError::not_supported("addressType", t, &ADDRESS_TYPES));
        }
        Some(_) => {}
    }
    let endpoints = obj.get("endpoints").and_then(Value::as_array);
    if let Some(endpoints) = endpoints {
        if endpoints.len() > MAX_ENDPOINTS_PER_SLICE {
            errors.push(FieldError::too_many(
                "endpoints",
                endpoints.len(),
                MAX_ENDPOINTS_PER_SLICE,
            ));
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            let addresses = endpoint.get("addresses").and_then(Value::as_array);
            match addresses.map(Vec::len).unwrap_or(0) {
                0 => errors.push(FieldError::required(
                    format!("endpoints[{i}].addresses"),
                    "must contain at least 1 address",
                )),
                n if n > 100 => errors.push(FieldError::too_many(
                    format!("endpoints[{i}].addresses"),
                    n,
                    100,
                )),
                _ => {}
            }
        }
    }
    if let Some(ports) = obj.get("ports").and_then(Value::as_array) {
        if ports.len() > 100 {
            errors.push(FieldError::too_many("ports", ports.len(), 100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    #[test]
    fn dns_subdomain_messages() {
        assert!(is_dns1123_subdomain("web-1.example").is_empty());
        assert_eq!(
            is_dns1123_subdomain("Web"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_owned()]
        );
        assert!(!is_dns1123_subdomain("a..b").is_empty());
        assert!(!is_dns1123_subdomain("").is_empty());
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254))[0],
            "must be no more than 253 characters"
        );
    }

    #[test]
    fn dns_label_messages() {
        assert!(is_dns1123_label("my-name").is_empty());
        assert!(is_dns1123_label("123-abc").is_empty());
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_owned()]
        );
        assert_eq!(
            is_dns1123_label("-a"),
            vec!["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_owned()]
        );
        assert_eq!(
            is_dns1123_label(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
        assert!(is_dns1035_label("web").is_empty());
        assert_eq!(
            is_dns1035_label("1web"),
            vec!["a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_owned()]
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("app").is_empty());
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("node-role.kubernetes.io/control-plane").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty".to_owned()]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert_eq!(
            is_qualified_name("Bad_Prefix/x")[0].split(' ').next(),
            Some("prefix")
        );
        assert_eq!(
            is_qualified_name("a b"),
            vec!["name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_owned()]
        );
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("My_Value-1.2").is_empty());
        assert_eq!(is_valid_label_value("-x").len(), 1);
        assert_eq!(is_valid_label_value(&"a".repeat(64)).len(), 1);
    }

    #[test]
    fn generate_name_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let name = generate_name_with("web-", &mut rng);
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
        assert!(name[4..]
            .bytes()
            .all(|b| GENERATE_NAME_ALPHABET.contains(&b)));
        let long = "x".repeat(80);
        assert_eq!(generate_name(&long).len(), 63);

        let mut obj = json!({"metadata":{"generateName":"job-"}});
        let name = resolve_generate_name(&mut obj).expect("generated");
        assert_eq!(obj["metadata"]["name"], name.as_str());
        assert!(resolve_generate_name(&mut obj).is_none());
    }

    #[test]
    fn namespace_resolution() {
        let mut obj = json!({"metadata":{"name":"a"}});
        resolve_namespace(&mut obj, Some("default"), true).expect("ok");
        assert_eq!(obj["metadata"]["namespace"], "default");
        let mut obj = json!({"metadata":{"name":"a","namespace":"other"}});
        assert_eq!(
            resolve_namespace(&mut obj, Some("default"), true),
            Err(NAMESPACE_MISMATCH.to_owned())
        );
        let mut node = json!({"metadata":{"name":"n","namespace":"x"}});
        resolve_namespace(&mut node, None, false).expect("ok");
        assert!(node["metadata"].get("namespace").is_none());
        assert!(is_namespaced("Pod"));
        assert!(!is_namespaced("Node"));
    }

    #[test]
    fn strict_unknown_fields_reports_paths() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1, "creationTimestamp": null},
            "spec": {"foo": true, "containers": [
                {"name": "c", "image": "i", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}},
                {"name": "d", "imagee": "x", "ports": [{"containerPort": 80, "hostPortt": 1}]}
            ]},
            "status": {}
        });
        let unknown = strict_unknown_fields("Pod", "v1", &pod).expect("decodes");
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.containers[1].imagee",
                "spec.containers[1].ports[0].hostPortt",
                "spec.foo"
            ]
        );
        assert_eq!(
            strict_error_message(&unknown[..1]),
            "strict decoding error: unknown field \"metadata.bogus\""
        );
    }

    #[test]
    fn strict_unknown_fields_clean_objects_for_every_kind() {
        let cases = [
            (
                "v1",
                "Namespace",
                json!({"metadata":{"name":"n"},"spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}),
            ),
            (
                "v1",
                "Node",
                json!({"metadata":{"name":"n"},"spec":{"podCIDR":"10.0.0.0/24","unschedulable":true},
                "status":{"nodeInfo":{"kubeletVersion":"v1.32.0","machineID":"","systemUUID":"","bootID":"","kernelVersion":"","osImage":"","containerRuntimeVersion":"","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}),
            ),
            (
                "v1",
                "Service",
                json!({"metadata":{"name":"s"},"spec":{"ports":[{"port":80,"targetPort":"http"}],"selector":{"a":"b"}}}),
            ),
            (
                "v1",
                "Endpoints",
                json!({"metadata":{"name":"s"},"subsets":[{"addresses":[{"ip":"10.0.0.1"}],"ports":[{"port":80}]}]}),
            ),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                json!({"metadata":{"name":"s"},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}}],"ports":[{"port":80}]}),
            ),
            (
                "apps/v1",
                "Deployment",
                json!({"metadata":{"name":"d"},"spec":{"replicas":1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                json!({"metadata":{"name":"r"},"spec":{"selector":{"matchLabels":{"a":"b"}}}}),
            ),
            (
                "coordination.k8s.io/v1",
                "Lease",
                json!({"metadata":{"name":"l"},"spec":{"holderIdentity":"x","leaseDurationSeconds":15,"renewTime":"2025-01-01T00:00:00.000000Z"}}),
            ),
            (
                "v1",
                "Event",
                json!({"metadata":{"name":"e"},"involvedObject":{"kind":"Pod","name":"p"},"reason":"R","message":"m","type":"Normal","count":1}),
            ),
            (
                "v1",
                "ConfigMap",
                json!({"metadata":{"name":"c"},"data":{"a":"b"},"binaryData":{"x":"AAE="}}),
            ),
            (
                "v1",
                "Binding",
                json!({"metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}),
            ),
            (
                "autoscaling/v1",
                "Scale",
                json!({"metadata":{"name":"d"},"spec":{"replicas":3},"status":{"replicas":2,"selector":"a=b"}}),
            ),
        ];
        for (api_version, kind, mut obj) in cases {
            obj["apiVersion"] = json!(api_version);
            obj["kind"] = json!(kind);
            assert!(has_typed_schema(kind, api_version), "{kind}");
            let unknown = strict_unknown_fields(kind, api_version, &obj).expect(kind);
            assert!(unknown.is_empty(), "{kind}: {unknown:?}");
            obj["spec2"] = json!(1);
            assert_eq!(
                strict_unknown_fields(kind, api_version, &obj).expect(kind),
                vec!["spec2"]
            );
        }
        assert!(!has_typed_schema("Widget", "example.com/v1"));
        assert!(
            strict_unknown_fields("Widget", "example.com/v1", &json!({"x":1}))
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn strict_tolerates_nulls_and_missing_required_fields() {
        let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":null},
            "spec":{"containers":[{"image":"i","resources":null,"env":null}],"volumes":null,"nodeSelector":null}});
        assert_eq!(
            strict_unknown_fields("Pod", "v1", &pod).expect("decodes"),
            Vec::<String>::new()
        );
        let no_kind = json!({"metadata":{"name":"p"},"spec":{"containers":[]}});
        assert!(strict_unknown_fields("Pod", "v1", &no_kind)
            .expect("decodes")
            .is_empty());
    }

    #[test]
    fn strict_decode_errors() {
        let bad = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":"three"}});
        let err = strict_unknown_fields("Deployment", "apps/v1", &bad).expect_err("type error");
        assert!(
            err.to_string()
                .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment: "),
            "{err}"
        );
        let wrong_kind = json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}});
        assert!(strict_unknown_fields("Pod", "v1", &wrong_kind).is_err());
    }

    fn pod(containers: Value) -> Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},"spec":{"containers":containers}})
    }

    #[test]
    fn pod_validation() {
        assert!(validate_object("Pod", &pod(json!([{"name":"c","image":"i"}]))).is_empty());
        let errors = validate_object("Pod", &pod(json!([])));
        assert_eq!(errors, vec![FieldError::required("spec.containers", "")]);
        assert_eq!(errors[0].reason, "FieldValueRequired");
        assert_eq!(errors[0].to_string(), "spec.containers: Required value");
        assert_eq!(
            errors[0].to_cause(),
            json!({"reason":"FieldValueRequired","message":"Required value","field":"spec.containers"})
        );
        let errors = validate_object(
            "Pod",
            &pod(
                json!([{"name":"c","image":"i"},{"name":"c"},{"image":"x","ports":[{"containerPort":0}]}]),
            ),
        );
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            vec![
                "spec.containers[1].name: Duplicate value: \"c\"",
                "spec.containers[1].image: Required value",
                "spec.containers[2].name: Required value",
                "spec.containers[2].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]
        );
        assert_eq!(errors[0].reason, "FieldValueDuplicate");
    }

    #[test]
    fn metadata_validation() {
        let obj = json!({"metadata":{"namespace":"default"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        let errors = validate_object("Pod", &obj);
        assert_eq!(
            errors[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let obj = json!({"metadata":{"name":"Bad_Name","namespace":"default","labels":{"a b":"c"}},"spec":{"containers":[{"name":"c","image":"i"}]}});
        let errors = validate_object("Pod", &obj);
        assert_eq!(errors.len(), 2);
        assert!(errors[0]
            .message
            .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        assert_eq!(errors[1].field, "metadata.labels");
        let svc =
            json!({"metadata":{"name":"1svc","namespace":"d"},"spec":{"ports":[{"port":80}]}});
        assert!(validate_object("Service", &svc)[0]
            .message
            .contains("DNS-1035"));
        let node = json!({"metadata":{"name":"n1","namespace":"x"}});
        assert_eq!(
            validate_object("Node", &node),
            vec![FieldError::forbidden(
                "metadata.namespace",
                "not allowed on this type"
            )]
        );
        let pod_no_ns =
            json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        assert_eq!(
            validate_object("Pod", &pod_no_ns),
            vec![FieldError::required("metadata.namespace", "")]
        );
        let generated = json!({"metadata":{"generateName":"web-","namespace":"d"},"spec":{"containers":[{"name":"c","image":"i"}]}});
        assert!(validate_object("Pod", &generated).is_empty());
    }

    #[test]
    fn service_validation() {
        let svc =
            |ports: Value| json!({"metadata":{"name":"s","namespace":"d"},"spec":{"ports":ports}});
        assert!(validate_object("Service", &svc(json!([{"port":80}]))).is_empty());
        let rendered: Vec<String> = validate_object(
            "Service",
            &svc(json!([{"port":0,"name":"a"},{"port":70000},{"port":81,"name":"a","protocol":"FOO"}])),
        )
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            rendered,
            vec![
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[1].name: Required value",
                "spec.ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ports[2].name: Duplicate value: \"a\"",
                "spec.ports[2].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]
        );
        assert_eq!(
            validate_object("Service", &svc(json!([]))),
            vec![FieldError::required("spec.ports", "")]
        );
        let headless = json!({"metadata":{"name":"s","namespace":"d"},"spec":{"clusterIP":"None"}});
        assert!(validate_object("Service", &headless).is_empty());
    }

    fn deployment(selector: Value, labels: Value, replicas: i64) -> Value {
        json!({"metadata":{"name":"d","namespace":"default"},"spec":{"replicas":replicas,"selector":selector,
            "template":{"metadata":{"labels":labels},"spec":{"containers":[{"name":"c","image":"i"}]}}}})
    }

    #[test]
    fn deployment_and_replicaset_validation() {
        let ok = deployment(
            json!({"matchLabels":{"app":"web"}}),
            json!({"app":"web","x":"y"}),
            2,
        );
        assert!(validate_object("Deployment", &ok).is_empty());
        assert!(validate_object("ReplicaSet", &ok).is_empty());
        let bad = deployment(
            json!({"matchLabels":{"app":"web"}}),
            json!({"app":"api"}),
            -1,
        );
        let rendered: Vec<String> = validate_object("Deployment", &bad)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rendered,
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`",
            ]
        );
        let empty = deployment(json!({}), json!({"app":"web"}), 1);
        assert!(validate_object("ReplicaSet", &empty)[0]
            .message
            .ends_with("empty selector is invalid for deployment"));
        let mut none = ok.clone();
        none["spec"].as_object_mut().map(|s| s.remove("selector"));
        assert_eq!(
            validate_object("Deployment", &none),
            vec![FieldError::required("spec.selector", "")]
        );
        let mut never = ok;
        never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            validate_object("Deployment", &never)[0].to_string(),
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        );
    }

    #[test]
    fn endpoint_slice_validation() {
        let slice = |address_type: Value, n: usize| {
            let endpoints: Vec<Value> = (0..n)
                .map(|i| json!({"addresses":[format!("10.0.{}.{}", i / 250, i % 250)]}))
                .collect();
            json!({"metadata":{"name":"s","namespace":"d"},"addressType":address_type,"endpoints":endpoints})
        };
        assert!(validate_object("EndpointSlice", &slice(json!("IPv4"), 3)).is_empty());
        assert_eq!(
            validate_object("EndpointSlice", &slice(json!("IPv5"), 1))[0].to_string(),
            "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        );
        assert_eq!(
            validate_object("EndpointSlice", &slice(json!("IPv4"), 1001))[0].to_string(),
            "endpoints: Too many: 1001: must have at most 1000 items"
        );
        assert_eq!(
            validate_object("EndpointSlice", &slice(Value::Null, 0)),
            vec![FieldError::required("addressType", "")]
        );
        let no_addr = json!({"metadata":{"name":"s","namespace":"d"},"addressType":"IPv4","endpoints":[{"addresses":[]}]});
        assert_eq!(
            validate_object("EndpointSlice", &no_addr)[0].field,
            "endpoints[0].addresses"
        );
    }
}
