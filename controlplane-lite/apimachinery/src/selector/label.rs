//! Label selectors (upstream `k8s.io/apimachinery/pkg/labels`): the requirement grammar
//! (`key`, `!key`, `=`, `==`, `!=`, `in`, `notin`, `>`, `<`) with upstream's messages,
//! [`LabelSelector`] matching and canonical printing, and [`label_selector_from_json`] for a
//! `metav1.LabelSelector` (`matchLabels` + `matchExpressions`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::SelectorError;
use crate::names::{is_qualified_name, is_valid_label_value};

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
}
