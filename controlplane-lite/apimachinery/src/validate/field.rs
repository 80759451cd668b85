//! Field errors: upstream `k8s.io/apimachinery/pkg/util/validation/field`. A [`FieldError`] is
//! one `details.causes` entry of a 422 Invalid Status, with its [`ErrorType`] reason and a
//! message rendering the offending [`BadValue`] as Go does.

use std::fmt;

use serde_json::Value;

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
