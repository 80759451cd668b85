//! Label and field selectors (`labelSelector=` / `fieldSelector=` on LIST and WATCH).
//!
//! Label selectors follow upstream `k8s.io/apimachinery/pkg/labels` grammar: comma-separated
//! requirements, each `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`,
//! `key notin (a,b)`, `key>N`, `key<N`. Keys must be qualified names and values valid label
//! values, with upstream's messages. [`LabelSelector`] prints back in upstream's canonical form
//! (requirements sorted by key, set values sorted), which is what the Deployment/ReplicaSet table
//! `Selector` column and `Scale.status.selector` show. [`label_selector_from_json`] converts a
//! `metav1.LabelSelector` (`matchLabels` + `matchExpressions`) with upstream's nil/empty rules.
//!
//! Field selectors follow `k8s.io/apimachinery/pkg/fields`: comma-separated `field=value`,
//! `field==value`, `field!=value`, with `\,`, `\=` and `\\` escapes. The supported fields are
//! per kind ([`supported_field_labels`]); anything else is
//! [`SelectorError::UnsupportedField`] (`field label not supported: X`, a 400). Values are read
//! from the object as strings; an absent field reads as `""` (booleans as `"false"`), so
//! `spec.nodeName=` selects unscheduled pods as upstream.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::names::{is_qualified_name, is_valid_label_value};

/// A selector could not be parsed. The message is what the server returns in a 400 Status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A malformed label selector (syntax, invalid key or value).
    #[error("{0}")]
    InvalidLabelSelector(String),
    /// A malformed field selector (no operator, bad escape).
    #[error("{0}")]
    InvalidFieldSelector(String),
    /// A field the kind does not index.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

/// A label requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOperator {
    /// `key=value` (also every `matchLabels` entry).
    Equals,
    /// `key==value`.
    DoubleEquals,
    /// `key!=value` (matches when the label is absent too).
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)` (matches when the label is absent too).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>N` (integer comparison).
    GreaterThan,
    /// `key<N` (integer comparison).
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: LabelOperator,
    /// The values, sorted and deduplicated (empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement with upstream's validation (`labels.NewRequirement`).
    pub fn new(
        key: &str,
        operator: LabelOperator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key_errors = is_qualified_name(key);
        if !key_errors.is_empty() {
            return Err(SelectorError::InvalidLabelSelector(format!(
                "key: Invalid value: {key:?}: {}",
                key_errors.join("; ")
            )));
        }
        let values_path = "values";
        match operator {
            LabelOperator::In | LabelOperator::NotIn if values.is_empty() => {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "{values_path}: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                )));
            }
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::NotEquals
                if values.len() != 1 =>
            {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "{values_path}: Invalid value: {values:?}: exact-match compatibility requires one single value"
                )));
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "{values_path}: Invalid value: {values:?}: values set must be empty for exists and does not exist"
                )));
            }
            LabelOperator::GreaterThan | LabelOperator::LessThan
                if values.len() != 1 || values[0].parse::<i64>().is_err() =>
            {
                return Err(SelectorError::InvalidLabelSelector(format!(
                    "{values_path}: Invalid value: {values:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                )));
            }
            _ => {}
        }
        let mut values = values;
        if !matches!(
            operator,
            LabelOperator::GreaterThan | LabelOperator::LessThan
        ) {
            for (i, value) in values.iter().enumerate() {
                let errors = is_valid_label_value(value);
                if !errors.is_empty() {
                    return Err(SelectorError::InvalidLabelSelector(format!(
                        "values[{i}][{key}]: Invalid value: {value:?}: {}",
                        errors.join("; ")
                    )));
                }
            }
        }
        values.sort();
        values.dedup();
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::In => {
                value.is_some_and(|v| self.values.contains(v))
            }
            LabelOperator::NotEquals | LabelOperator::NotIn => {
                value.is_none_or(|v| !self.values.contains(v))
            }
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let (Some(Ok(have)), Some(Ok(want))) = (
                    value.map(|v| v.parse::<i64>()),
                    self.values.first().map(|v| v.parse::<i64>()),
                ) else {
                    return false;
                };
                if self.operator == LabelOperator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == LabelOperator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            LabelOperator::Equals => "=",
            LabelOperator::DoubleEquals => "==",
            LabelOperator::NotEquals => "!=",
            LabelOperator::In => " in ",
            LabelOperator::NotIn => " notin ",
            LabelOperator::GreaterThan => ">",
            LabelOperator::LessThan => "<",
            LabelOperator::Exists | LabelOperator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, LabelOperator::In | LabelOperator::NotIn);
        if set {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: all requirements must hold. The empty selector matches everything;
/// [`LabelSelector::nothing`] matches nothing (a nil `metav1.LabelSelector`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Matches no object.
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// A selector from requirements (sorted by key, as upstream).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            nothing: false,
        }
    }

    /// `key=value` for every entry (a Service selector, `matchLabels`).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = map
            .iter()
            .map(|(k, v)| Requirement::new(k, LabelOperator::Equals, vec![v.clone()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True for the match-everything selector.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether a JSON labels map (`metadata.labels`, possibly absent) matches. Non-string values
    /// are ignored.
    pub fn matches_labels_value(&self, labels: Option<&Value>) -> bool {
        self.matches(&labels_from_value(labels))
    }

    /// Whether an object's `metadata.labels` match.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches_labels_value(obj.pointer("/metadata/labels"))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Converts a JSON labels map to a `BTreeMap`, skipping non-string values.
pub fn labels_from_value(labels: Option<&Value>) -> BTreeMap<String, String> {
    labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    DoesNotExist,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenPar,
    ClosePar,
    Comma,
    End,
}

impl Token {
    fn literal(&self) -> &str {
        match self {
            Self::Identifier(s) => s,
            Self::DoesNotExist => "!",
            Self::Equals => "=",
            Self::DoubleEquals => "==",
            Self::NotEquals => "!=",
            Self::GreaterThan => ">",
            Self::LessThan => "<",
            Self::OpenPar => "(",
            Self::ClosePar => ")",
            Self::Comma => ",",
            Self::End => "",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (token, len) = match (c, next) {
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', _) => (Token::DoesNotExist, 1),
                ('=', _) => (Token::Equals, 1),
                ('(', _) => (Token::OpenPar, 1),
                (')', _) => (Token::ClosePar, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            tokens.push(token);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        tokens.push(Token::Identifier(chars[start..i].iter().collect()));
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.position).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        token
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                Token::Identifier(_) | Token::DoesNotExist => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    match self.next() {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let next = self.peek();
                            if !matches!(next, Token::Identifier(_) | Token::DoesNotExist) {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    next.literal()
                                ));
                            }
                        }
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            ))
                        }
                    }
                }
                Token::End => return Ok(requirements),
                other => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut token = self.next();
        let negated = token == Token::DoesNotExist;
        if negated {
            token = self.next();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        if let Some(msg) = is_qualified_name(&key).first() {
            return Err(format!("key: Invalid value: {key:?}: {msg}"));
        }
        if negated {
            // `!key` stands alone; whatever follows is reported by the caller.
            return Requirement::new(&key, LabelOperator::DoesNotExist, Vec::new())
                .map_err(|e| e.to_string());
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Requirement::new(&key, LabelOperator::Exists, Vec::new())
                .map_err(|e| e.to_string());
        }
        let operator = match self.next() {
            Token::Identifier(s) if s == "in" => LabelOperator::In,
            Token::Identifier(s) if s == "notin" => LabelOperator::NotIn,
            Token::Equals => LabelOperator::Equals,
            Token::DoubleEquals => LabelOperator::DoubleEquals,
            Token::NotEquals => LabelOperator::NotEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                ))
            }
        };
        let values = match operator {
            LabelOperator::In | LabelOperator::NotIn => self.set_values()?,
            _ => self.exact_value()?,
        };
        Requirement::new(&key, operator, values).map_err(|e| e.to_string())
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next() {
            Token::Identifier(v) => Ok(vec![v]),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }

    fn set_values(&mut self) -> Result<Vec<String>, String> {
        let open = self.next();
        if open != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        match self.peek() {
            Token::ClosePar => {
                self.next();
                return Ok(vec![String::new()]);
            }
            Token::Identifier(_) | Token::Comma => {}
            other => {
                return Err(format!(
                    "found '{}', expected: ',', ')' or identifier",
                    other.literal()
                ))
            }
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Token::Identifier(v) => {
                    values.push(v);
                    match self.peek() {
                        Token::Comma => {}
                        Token::ClosePar => {
                            self.next();
                            return Ok(values);
                        }
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ))
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek() {
                        Token::ClosePar => {
                            self.next();
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => values.push(String::new()),
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ))
                }
            }
        }
    }
}

/// Parses a `labelSelector` query parameter. The empty string matches everything.
pub fn parse_label_selector(input: &str) -> Result<LabelSelector, SelectorError> {
    let mut parser = Parser {
        tokens: lex(input),
        position: 0,
    };
    parser
        .selector()
        .map(LabelSelector::from_requirements)
        .map_err(SelectorError::InvalidLabelSelector)
}

/// Converts a `metav1.LabelSelector` JSON value (`matchLabels` + `matchExpressions`) as
/// upstream `LabelSelectorAsSelector` does: `null`/absent matches nothing, `{}` matches
/// everything.
pub fn label_selector_from_json(selector: Option<&Value>) -> Result<LabelSelector, SelectorError> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(LabelSelector::nothing());
    };
    let invalid = |m: String| SelectorError::InvalidLabelSelector(m);
    let Value::Object(map) = selector else {
        return Err(invalid("a label selector must be an object".to_owned()));
    };
    let mut requirements = Vec::new();
    if let Some(labels) = map.get("matchLabels").filter(|v| !v.is_null()) {
        let Value::Object(labels) = labels else {
            return Err(invalid("matchLabels must be an object".to_owned()));
        };
        for (key, value) in labels {
            let Some(value) = value.as_str() else {
                return Err(invalid(format!("matchLabels[{key}] must be a string")));
            };
            requirements.push(Requirement::new(
                key,
                LabelOperator::Equals,
                vec![value.to_owned()],
            )?);
        }
    }
    if let Some(expressions) = map.get("matchExpressions").filter(|v| !v.is_null()) {
        let Value::Array(expressions) = expressions else {
            return Err(invalid("matchExpressions must be a list".to_owned()));
        };
        for expression in expressions {
            let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
            let operator = expression
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("");
            let operator = match operator {
                "In" => LabelOperator::In,
                "NotIn" => LabelOperator::NotIn,
                "Exists" => LabelOperator::Exists,
                "DoesNotExist" => LabelOperator::DoesNotExist,
                other => {
                    return Err(invalid(format!(
                        "{other:?} is not a valid label selector operator"
                    )))
                }
            };
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            requirements.push(Requirement::new(key, operator, values)?);
        }
    }
    Ok(LabelSelector::from_requirements(requirements))
}

/// A field requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label (`spec.nodeName`).
    pub field: String,
    /// The operator.
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector for one kind: all terms must hold. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector {
    kind: String,
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The terms, sorted like upstream (by their text).
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when there are no terms.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `obj` satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let have = field_value(&self.kind, obj, &r.field);
            match r.operator {
                FieldOperator::Equals => have == r.value,
                FieldOperator::NotEquals => have != r.value,
            }
        })
    }

    /// The value `field` must equal, if the selector pins it (upstream `RequiresExactMatch`);
    /// handy for `metadata.name=` (single-object lists) and `spec.nodeName=` (kubelet).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

/// Field labels `kind` supports in field selectors (upstream's per-kind conversion functions).
pub fn supported_field_labels(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Node" => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        "Event" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Namespace" => &["metadata.name", "metadata.namespace", "status.phase"],
        "ReplicaSet" => &["metadata.name", "metadata.namespace", "status.replicas"],
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The string value of field label `field` in `obj` (`""` when absent; booleans default to
/// `"false"`, integers to `"0"`). `source` on events reads `source.component`.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> String {
    let pointer = match (kind, field) {
        ("Event", "source") => "/source/component".to_owned(),
        _ => format!("/{}", field.replace('.', "/")),
    };
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) | None => match field {
            "spec.hostNetwork" | "spec.unschedulable" => "false".to_owned(),
            "status.replicas" => "0".to_owned(),
            _ => String::new(),
        },
    }
}

/// Splits on commas not escaped with a backslash.
fn split_terms(input: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(other) => {
                    return Err(SelectorError::InvalidFieldSelector(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )))
                }
                None => {
                    return Err(SelectorError::InvalidFieldSelector(
                        "invalid field selector: invalid escape sequence: \\".to_owned(),
                    ))
                }
            },
            ',' | '=' => {
                return Err(SelectorError::InvalidFieldSelector(format!(
                    "invalid field selector: unescaped character in value: {c:?}"
                )))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Parses a `fieldSelector` query parameter for objects of `kind`.
pub fn parse_field_selector(kind: &str, input: &str) -> Result<FieldSelector, SelectorError> {
    let mut terms = split_terms(input);
    terms.sort();
    let supported = supported_field_labels(kind);
    let mut requirements = Vec::new();
    for term in terms.iter().filter(|t| !t.is_empty()) {
        // Upstream splits at the first position where any operator starts.
        let split = term.char_indices().find_map(|(i, _)| {
            let rest = &term[i..];
            ["!=", "==", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .map(|op| (i, op))
        });
        let Some((at, op)) = split else {
            return Err(SelectorError::InvalidFieldSelector(format!(
                "invalid selector: '{input}'; can't understand '{term}'"
            )));
        };
        let field = &term[..at];
        let value = unescape(&term[at + op.len()..])?;
        if !supported.contains(&field) {
            return Err(SelectorError::UnsupportedField(field.to_owned()));
        }
        requirements.push(FieldRequirement {
            field: field.to_owned(),
            operator: if op == "!=" {
                FieldOperator::NotEquals
            } else {
                FieldOperator::Equals
            },
            value,
        });
    }
    Ok(FieldSelector {
        kind: kind.to_owned(),
        requirements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        parse_label_selector(s).expect("valid selector")
    }

    #[test]
    fn label_operators() {
        let l = labels(&[("app", "web"), ("tier", "fe"), ("n", "5")]);
        assert!(sel("").matches(&l));
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("env!=prod").matches(&l));
        assert!(sel("app in (web, api)").matches(&l));
        assert!(!sel("app notin (web)").matches(&l));
        assert!(sel("env notin (prod)").matches(&l));
        assert!(sel("app").matches(&l));
        assert!(!sel("env").matches(&l));
        assert!(sel("!env").matches(&l));
        assert!(!sel("!app").matches(&l));
        assert!(sel("app=web,tier=fe").matches(&l));
        assert!(!sel("app=web,tier=be").matches(&l));
        assert!(sel("n>3,n<6").matches(&l));
        assert!(!sel("n>5").matches(&l));
        assert!(sel("  app = web , !env ").matches(&l));
        assert!(sel("x=").matches(&labels(&[("x", "")])));
        assert!(!sel("x=").matches(&l));
        assert!(sel("example.com/role in (a,b)").matches(&labels(&[("example.com/role", "b")])));
    }

    #[test]
    fn label_selector_canonical_string() {
        assert_eq!(
            sel("tier in (b,a),app=web,!x,y").to_string(),
            "app=web,tier in (a,b),!x,y"
        );
        assert_eq!(sel("a notin (z),b!=c").to_string(), "a notin (z),b!=c");
        assert_eq!(sel("").to_string(), "");
    }

    #[test]
    fn label_selector_errors() {
        for bad in [
            "app=web,",
            "app in (a",
            "=web",
            "app=(web)",
            "app web",
            "app in",
            "a b=c",
            ",app",
            "!app=x",
        ] {
            let err = parse_label_selector(bad).expect_err(bad);
            assert!(
                matches!(err, SelectorError::InvalidLabelSelector(_)),
                "{bad}: {err}"
            );
        }
        let err = parse_label_selector("app=we b").expect_err("space");
        assert!(err.to_string().contains("expected"), "{err}");
        let err = parse_label_selector("app=-web").expect_err("bad value");
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: values[0][app]: Invalid value: \"-web\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let err = parse_label_selector("-app=web").expect_err("bad key");
        assert!(err.to_string().starts_with("unable to parse requirement: key: Invalid value: \"-app\": name part must consist of alphanumeric characters"), "{err}");
        let err = parse_label_selector("n>x").expect_err("gt needs int");
        assert!(err.to_string().contains("must be an integer"));
    }

    #[test]
    fn label_selector_from_metav1_json() {
        let s = label_selector_from_json(Some(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        })))
        .expect("valid");
        assert_eq!(s.to_string(), "app=web,!canary,tier in (be,fe)");
        let mut sorted = s
            .requirements()
            .iter()
            .map(|r| r.key.clone())
            .collect::<Vec<_>>();
        sorted.sort();
        assert_eq!(sorted, vec!["app", "canary", "tier"]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("canary", "1")])));
        assert!(s.matches_object(&json!({"metadata":{"labels":{"app":"web","tier":"be"}}})));

        let everything = label_selector_from_json(Some(&json!({}))).expect("empty");
        assert!(everything.is_everything());
        assert!(everything.matches(&BTreeMap::new()));
        let nothing = label_selector_from_json(None).expect("nil");
        assert!(!nothing.matches(&BTreeMap::new()));
        assert!(!label_selector_from_json(Some(&Value::Null))
            .expect("null")
            .matches(&BTreeMap::new()));

        let err = label_selector_from_json(Some(
            &json!({"matchExpressions":[{"key":"a","operator":"Foo"}]}),
        ))
        .expect_err("bad operator");
        assert_eq!(
            err.to_string(),
            "\"Foo\" is not a valid label selector operator"
        );
        assert!(label_selector_from_json(Some(
            &json!({"matchExpressions":[{"key":"a","operator":"In","values":[]}]})
        ))
        .is_err());
        assert!(label_selector_from_json(Some(
            &json!({"matchExpressions":[{"key":"a","operator":"Exists","values":["x"]}]})
        ))
        .is_err());
    }

    #[test]
    fn label_selector_from_map_for_services() {
        let s = LabelSelector::from_map(&labels(&[("b", "2"), ("a", "1")])).expect("valid");
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(s.matches_labels_value(Some(&json!({"a":"1","b":"2","c":"3"}))));
        assert!(!s.matches_labels_value(None));
    }

    #[test]
    fn field_selector_pods() {
        let pod = json!({"metadata":{"name":"web","namespace":"default"},
            "spec":{"nodeName":"n1","schedulerName":"default-scheduler","restartPolicy":"Always"},
            "status":{"phase":"Running","podIP":"10.0.0.5"}});
        let unscheduled = json!({"metadata":{"name":"p2","namespace":"default"},"spec":{},"status":{"phase":"Pending"}});
        let f = parse_field_selector("Pod", "spec.nodeName=n1").expect("valid");
        assert!(f.matches(&pod));
        assert!(!f.matches(&unscheduled));
        assert_eq!(f.exact_match("spec.nodeName"), Some("n1"));
        let f = parse_field_selector("Pod", "spec.nodeName=").expect("valid");
        assert!(f.matches(&unscheduled));
        assert!(!f.matches(&pod));
        let f = parse_field_selector("Pod", "status.phase!=Succeeded,status.phase!=Failed")
            .expect("valid");
        assert!(f.matches(&pod) && f.matches(&unscheduled));
        let f = parse_field_selector("Pod", "metadata.name==web,metadata.namespace=default")
            .expect("valid");
        assert!(f.matches(&pod));
        assert!(!f.matches(&unscheduled));
        assert!(parse_field_selector("Pod", "status.podIP=10.0.0.5")
            .expect("ok")
            .matches(&pod));
        assert!(parse_field_selector("Pod", "spec.hostNetwork=false")
            .expect("ok")
            .matches(&pod));
        assert!(parse_field_selector("Pod", "")
            .expect("empty")
            .is_everything());
    }

    #[test]
    fn field_selector_kind_awareness_and_errors() {
        let err = parse_field_selector("Service", "spec.nodeName=n1").expect_err("unsupported");
        assert_eq!(
            err,
            SelectorError::UnsupportedField("spec.nodeName".to_owned())
        );
        assert_eq!(err.to_string(), "field label not supported: spec.nodeName");
        let err = parse_field_selector("Pod", "spec.foo=x").expect_err("unsupported");
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
        let err = parse_field_selector("Pod", "metadata.name").expect_err("no operator");
        assert_eq!(
            err.to_string(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert!(parse_field_selector("Pod", "metadata.name=a\\qb").is_err());
        let node = json!({"metadata":{"name":"n1"},"spec":{"unschedulable":true}});
        assert!(parse_field_selector("Node", "spec.unschedulable=true")
            .expect("ok")
            .matches(&node));
        assert!(parse_field_selector("Node", "spec.unschedulable=false")
            .expect("ok")
            .matches(&json!({"metadata":{"name":"n2"}})));
    }

    #[test]
    fn field_selector_events_and_escapes() {
        let event = json!({"metadata":{"name":"e","namespace":"default"},
            "involvedObject":{"kind":"Pod","name":"web","namespace":"default","uid":"u1"},
            "reason":"Scheduled","type":"Normal","source":{"component":"default-scheduler"}});
        let f = parse_field_selector(
            "Event",
            "involvedObject.kind=Pod,involvedObject.name=web,type=Normal,reason=Scheduled,source=default-scheduler",
        )
        .expect("valid");
        assert!(f.matches(&event));
        assert!(!parse_field_selector("Event", "type=Warning")
            .expect("ok")
            .matches(&event));
        let cm = json!({"metadata":{"name":"a,b=c"}});
        let f = parse_field_selector("ConfigMap", "metadata.name=a\\,b\\=c").expect("escaped");
        assert!(f.matches(&cm));
    }
}
