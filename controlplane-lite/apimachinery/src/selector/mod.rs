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
//!
//! | File | What |
//! |---|---|
//! | `label.rs` | [`LabelSelector`]: parsing, matching, canonical printing, `metav1.LabelSelector` |
//! | `field.rs` | [`FieldSelector`]: parsing, the per-kind field labels, matching |

mod field;
mod label;

pub use field::{
    field_value, parse_field_selector, supported_field_labels, FieldOperator, FieldRequirement,
    FieldSelector,
};
pub use label::{
    label_selector_from_json, labels_from_value, parse_label_selector, LabelOperator,
    LabelSelector, Requirement,
};

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
