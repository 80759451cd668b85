//! Field selectors (upstream `k8s.io/apimachinery/pkg/fields`): `field=value`, `field==value`,
//! `field!=value` terms with `\,`, `\=` and `\\` escapes, over the fields each kind supports
//! ([`supported_field_labels`]); values are read from the object as strings ([`field_value`]).

use serde_json::Value;

use super::SelectorError;

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
