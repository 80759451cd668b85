//! Validation: name formats, `generateName`, strict unknown-field detection and per-kind checks.
//!
//! - Name checks return upstream's messages (`k8s.io/apimachinery/pkg/util/validation`):
//!   [`is_dns1123_subdomain`], [`is_dns1123_label`], [`is_dns1035_label`],
//!   [`is_qualified_name`] (label/annotation keys), [`is_valid_label_value`]. They live in the
//!   leaf module [`crate::names`] (also used by [`crate::selector`]) and are re-exported here.
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
//!
//! | File | What |
//! |---|---|
//! | `generate_name.rs` | `metadata.generateName` |
//! | `namespace.rs` | namespaced kinds, request namespace vs body namespace |
//! | `field.rs` | [`FieldError`], [`ErrorType`], [`BadValue`] (upstream `util/validation/field`) |
//! | `strict.rs` | strict decoding: unknown fields, [`DecodeError`] |
//! | `kinds.rs` | [`validate_object`]: metadata and per-kind rules |
//! | `config.rs` | ConfigMap and Secret: config keys, sizes, base64, Secret types |

mod config;
mod field;
mod generate_name;
mod kinds;
mod namespace;
mod strict;

pub use crate::names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, DNS1123_LABEL_MAX_LENGTH, DNS1123_SUBDOMAIN_MAX_LENGTH,
    LABEL_VALUE_MAX_LENGTH,
};
pub use config::{config_key_errors, MAX_CONFIG_SIZE};
pub use field::{go_string_map, BadValue, ErrorType, FieldError};
pub use generate_name::{
    generate_name, generate_name_with, resolve_generate_name, GENERATE_NAME_ALPHABET,
    GENERATE_NAME_RANDOM_LENGTH,
};
pub use kinds::{kind_validators, validate_object, Validator, MAX_ENDPOINTS_PER_SLICE};
pub use namespace::{is_namespaced, resolve_namespace, NAMESPACE_MISMATCH};
pub use strict::{has_typed_schema, strict_error_message, strict_unknown_fields, DecodeError};
