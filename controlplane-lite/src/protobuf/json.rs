//! Dynamic protobuf messages <-> the Kubernetes JSON form, driven by the message descriptors.
//!
//! The JSON form is what Go's `encoding/json` makes of the Go type, so:
//! - a scalar set to its zero value (`""`, `0`, `false`) is dropped unless the Go field is a
//!   pointer or has no `omitempty` ([`generated::KEEP_ZERO`]); messages present on the wire are
//!   kept (Go structs are never omitted), empty lists and maps are dropped;
//! - `int64` is a JSON number, `bytes` standard base64;
//! - the apimachinery types have their own JSON: Time and MicroTime are RFC 3339 strings (an empty
//!   Time is `null`), Duration a Go duration string, IntOrString a number or a string, Quantity a
//!   string, RawExtension and FieldsV1 embedded JSON, and Go `[]string` types an array
//!   ([`generated::STRING_SLICES`]).

use super::{generated, ProtobufError};
use base64::Engine;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value as PValue,
};
use serde_json::{Map, Number, Value};

const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

fn err(field: &str, message: impl Into<String>) -> ProtobufError {
    ProtobufError::Field {
        field: field.trim_start_matches('.').to_owned(),
        message: message.into(),
    }
}

fn child(path: &str, name: &str) -> String {
    format!("{path}.{name}")
}

fn json_name(field: &FieldDescriptor) -> &str {
    let full = field.full_name();
    generated::JSON_NAMES
        .iter()
        .find(|(f, _)| *f == full)
        .map_or(field.name(), |(_, j)| j)
}

fn is_inline(field: &FieldDescriptor) -> bool {
    generated::INLINE.binary_search(&field.full_name()).is_ok()
}

fn keeps_zero(field: &FieldDescriptor) -> bool {
    generated::KEEP_ZERO
        .binary_search(&field.full_name())
        .is_ok()
}

fn is_zero(v: &PValue) -> bool {
    match v {
        PValue::Bool(b) => !b,
        PValue::I32(n) | PValue::EnumNumber(n) => *n == 0,
        PValue::I64(n) => *n == 0,
        PValue::U32(n) => *n == 0,
        PValue::U64(n) => *n == 0,
        PValue::F32(n) => *n == 0.0,
        PValue::F64(n) => *n == 0.0,
        PValue::String(s) => s.is_empty(),
        PValue::Bytes(b) => b.is_empty(),
        PValue::Message(_) | PValue::List(_) | PValue::Map(_) => false,
    }
}

fn get<'a>(msg: &'a DynamicMessage, name: &str) -> Option<&'a PValue> {
    let field = msg.descriptor().get_field_by_name(name)?;
    msg.fields().find(|(f, _)| *f == field).map(|(_, v)| v)
}

fn get_i64(msg: &DynamicMessage, name: &str) -> i64 {
    match get(msg, name) {
        Some(PValue::I64(n)) => *n,
        Some(PValue::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn get_str(msg: &DynamicMessage, name: &str) -> String {
    match get(msg, name) {
        Some(PValue::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn get_bytes(msg: &DynamicMessage, name: &str) -> Vec<u8> {
    match get(msg, name) {
        Some(PValue::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    }
}

/// A message as Kubernetes JSON.
pub(super) fn to_json(msg: &DynamicMessage, path: &str) -> Result<Value, ProtobufError> {
    let desc = msg.descriptor();
    match desc.full_name() {
        TIME | MICRO_TIME => {
            if msg.fields().next().is_none() {
                return Ok(Value::Null);
            }
            let micro = desc.full_name() == MICRO_TIME;
            let nanos = if micro { get_i64(msg, "nanos") } else { 0 };
            return format_time(get_i64(msg, "seconds"), nanos, micro)
                .map(Value::String)
                .ok_or_else(|| err(path, "time out of range"));
        }
        DURATION => return Ok(Value::String(format_duration(get_i64(msg, "duration")))),
        INT_OR_STRING => {
            return Ok(if get_i64(msg, "type") == 1 {
                Value::String(get_str(msg, "strVal"))
            } else {
                Value::from(get_i64(msg, "intVal"))
            })
        }
        QUANTITY => return Ok(Value::String(get_str(msg, "string"))),
        RAW_EXTENSION | FIELDS_V1 => {
            let raw = get_bytes(
                msg,
                if desc.full_name() == FIELDS_V1 {
                    "Raw"
                } else {
                    "raw"
                },
            );
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&raw)
                .map_err(|e| err(path, format!("embedded object is not JSON: {e}")));
        }
        name if generated::STRING_SLICES.binary_search(&name).is_ok() => {
            return match get(msg, "items") {
                Some(PValue::List(items)) => items
                    .iter()
                    .map(|v| scalar_json(v, path))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                _ => Ok(Value::Array(Vec::new())),
            };
        }
        _ => {}
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        if let (true, PValue::Message(m)) = (is_inline(&field), value) {
            if let Value::Object(fields) = to_json(m, path)? {
                out.extend(fields);
            }
            continue;
        }
        let name = json_name(&field);
        let p = child(path, name);
        let v = match value {
            PValue::List(items) => {
                if items.is_empty() {
                    continue;
                }
                Value::Array(
                    items
                        .iter()
                        .map(|v| value_json(v, &p))
                        .collect::<Result<_, _>>()?,
                )
            }
            PValue::Map(entries) => {
                if entries.is_empty() {
                    continue;
                }
                let mut m = Map::new();
                for (k, v) in entries {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    let vp = child(&p, &key);
                    m.insert(key, value_json(v, &vp)?);
                }
                Value::Object(m)
            }
            PValue::Message(m) => to_json(m, &p)?,
            scalar => {
                if is_zero(scalar) && !keeps_zero(&field) {
                    continue;
                }
                scalar_json(scalar, &p)?
            }
        };
        out.insert(name.to_owned(), v);
    }
    Ok(Value::Object(out))
}

fn value_json(v: &PValue, path: &str) -> Result<Value, ProtobufError> {
    match v {
        PValue::Message(m) => to_json(m, path),
        other => scalar_json(other, path),
    }
}

fn scalar_json(v: &PValue, path: &str) -> Result<Value, ProtobufError> {
    Ok(match v {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(n) | PValue::EnumNumber(n) => Value::from(*n),
        PValue::I64(n) => Value::from(*n),
        PValue::U32(n) => Value::from(*n),
        PValue::U64(n) => Value::from(*n),
        PValue::F32(n) => Number::from_f64(f64::from(*n))
            .map(Value::Number)
            .ok_or_else(|| err(path, "not a finite number"))?,
        PValue::F64(n) => Number::from_f64(*n)
            .map(Value::Number)
            .ok_or_else(|| err(path, "not a finite number"))?,
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PValue::Message(_) | PValue::List(_) | PValue::Map(_) => {
            return Err(err(path, "nested list or map"))
        }
    })
}

/// A JSON value as a message of type `desc`.
pub(super) fn from_json(
    desc: &MessageDescriptor,
    v: &Value,
    path: &str,
) -> Result<DynamicMessage, ProtobufError> {
    let mut msg = DynamicMessage::new(desc.clone());
    fill(&mut msg, v, path)?;
    Ok(msg)
}

/// Sets the fields of `msg` from the JSON value `v`.
pub(super) fn fill(msg: &mut DynamicMessage, v: &Value, path: &str) -> Result<(), ProtobufError> {
    let desc = msg.descriptor();
    let name = desc.full_name().to_owned();
    let set = |msg: &mut DynamicMessage, field: &str, value: PValue| {
        msg.set_field_by_name(field, value);
    };
    match name.as_str() {
        TIME | MICRO_TIME => {
            let Some(s) = v.as_str() else {
                return Err(err(
                    path,
                    format!("expected an RFC 3339 time string, got {v}"),
                ));
            };
            let t: jiff::Timestamp = s
                .parse()
                .map_err(|e| err(path, format!("{s:?} is not an RFC 3339 time: {e}")))?;
            set(msg, "seconds", PValue::I64(t.as_second()));
            if name == MICRO_TIME {
                // Go keeps microseconds: the nanoseconds of a MicroTime are whole microseconds.
                let micros = t.subsec_nanosecond() / 1000 * 1000;
                set(msg, "nanos", PValue::I32(micros));
            }
            return Ok(());
        }
        DURATION => {
            let Some(s) = v.as_str() else {
                return Err(err(path, format!("expected a duration string, got {v}")));
            };
            let ns = parse_duration(s)
                .ok_or_else(|| err(path, format!("{s:?} is not a duration (like \"1h2m3s\")")))?;
            set(msg, "duration", PValue::I64(ns));
            return Ok(());
        }
        INT_OR_STRING => {
            match v {
                Value::String(s) => {
                    set(msg, "type", PValue::I64(1));
                    set(msg, "strVal", PValue::String(s.clone()));
                }
                Value::Number(_) => {
                    let n = v
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| err(path, format!("{v} is not a 32-bit integer")))?;
                    set(msg, "type", PValue::I64(0));
                    set(msg, "intVal", PValue::I32(n));
                }
                _ => {
                    return Err(err(
                        path,
                        format!("expected an integer or a string, got {v}"),
                    ))
                }
            }
            return Ok(());
        }
        QUANTITY => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(err(path, format!("expected a quantity, got {v}"))),
            };
            set(msg, "string", PValue::String(s));
            return Ok(());
        }
        RAW_EXTENSION | FIELDS_V1 => {
            let raw = serde_json::to_vec(v).map_err(|e| err(path, e.to_string()))?;
            let field = if name == FIELDS_V1 { "Raw" } else { "raw" };
            set(msg, field, PValue::Bytes(raw.into()));
            return Ok(());
        }
        n if generated::STRING_SLICES.binary_search(&n).is_ok() => {
            let items = v
                .as_array()
                .ok_or_else(|| err(path, format!("expected a list of strings, got {v}")))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(|s| PValue::String(s.to_owned()))
                        .ok_or_else(|| err(path, format!("expected a string, got {s}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            set(msg, "items", PValue::List(items));
            return Ok(());
        }
        _ => {}
    }
    let Value::Object(obj) = v else {
        return Err(err(path, format!("expected an object, got {v}")));
    };
    // Embedded structs take their fields from this same JSON object.
    for field in desc.fields().filter(is_inline) {
        if let Kind::Message(sub) = field.kind() {
            let inner = from_json(&sub, v, path)?;
            if inner.fields().next().is_some() {
                msg.set_field(&field, PValue::Message(inner));
            }
        }
    }
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        let field = desc
            .fields()
            .filter(|f| !is_inline(f))
            .find(|f| json_name(f) == key.as_str());
        // Fields the message does not have (`kind`/`apiVersion` of list items, fields of newer
        // releases) are dropped, as a Go client decoding the JSON would.
        let Some(field) = field else { continue };
        let p = child(path, key);
        let pv = if field.is_map() {
            let Value::Object(entries) = value else {
                return Err(err(&p, format!("expected an object, got {value}")));
            };
            let Kind::Message(entry) = field.kind() else {
                return Err(err(&p, "map field without an entry message"));
            };
            let value_field = entry.map_entry_value_field();
            let mut m = std::collections::HashMap::new();
            for (k, v) in entries {
                if v.is_null() {
                    continue;
                }
                m.insert(
                    MapKey::String(k.clone()),
                    kind_value(&value_field.kind(), v, &child(&p, k))?,
                );
            }
            PValue::Map(m)
        } else if field.is_list() {
            let Value::Array(items) = value else {
                return Err(err(&p, format!("expected a list, got {value}")));
            };
            PValue::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| kind_value(&field.kind(), v, &format!("{p}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            kind_value(&field.kind(), value, &p)?
        };
        msg.set_field(&field, pv);
    }
    Ok(())
}

fn kind_value(kind: &Kind, v: &Value, path: &str) -> Result<PValue, ProtobufError> {
    let int = || {
        v.as_i64()
            .ok_or_else(|| err(path, format!("expected an integer, got {v}")))
    };
    let wrong = |what: &str| err(path, format!("expected {what}, got {v}"));
    Ok(match kind {
        Kind::Message(desc) => PValue::Message(from_json(desc, v, path)?),
        Kind::String => PValue::String(v.as_str().ok_or_else(|| wrong("a string"))?.to_owned()),
        Kind::Bool => PValue::Bool(v.as_bool().ok_or_else(|| wrong("a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            PValue::I32(i32::try_from(int()?).map_err(|_| wrong("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => {
            PValue::U32(u32::try_from(int()?).map_err(|_| wrong("an unsigned 32-bit integer"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            PValue::U64(u64::try_from(int()?).map_err(|_| wrong("an unsigned integer"))?)
        }
        Kind::Double => PValue::F64(v.as_f64().ok_or_else(|| wrong("a number"))?),
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a protobuf float field holds an f32"
        )]
        Kind::Float => PValue::F32(v.as_f64().ok_or_else(|| wrong("a number"))? as f32),
        Kind::Bytes => {
            let s = v.as_str().ok_or_else(|| wrong("a base64 string"))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| err(path, format!("not base64: {e}")))?;
            PValue::Bytes(b.into())
        }
        Kind::Enum(_) => {
            PValue::EnumNumber(i32::try_from(int()?).map_err(|_| wrong("an enum number"))?)
        }
    })
}

/// RFC 3339 in UTC, seconds (`2026-01-02T03:04:05Z`) or microseconds (MicroTime).
fn format_time(seconds: i64, nanos: i64, micro: bool) -> Option<String> {
    let t = jiff::Timestamp::new(seconds, i32::try_from(nanos).ok()?).ok()?;
    Some(if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// Go's `time.Duration.String()`: `1h2m3s`, `1.5s`, `300ms`, `0s`.
fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let s = format!("{whole}.{rest:0digits$}");
            s.trim_end_matches('0').to_owned()
        }
    };
    if u < 1_000 {
        return format!("{neg}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{neg}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{neg}{}ms", frac(u, 1_000_000));
    }
    let secs_total = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let (h, m, s) = (secs_total / 3600, (secs_total / 60) % 60, secs_total % 60);
    let secs = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{neg}{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{neg}{m}m{secs}s")
    } else {
        format!("{neg}{secs}s")
    }
}

/// Go's `time.ParseDuration` for the units Kubernetes uses (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`).
fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3.6e12,
            "m" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 9.2e18 {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bounded above; Go truncates fractional nanoseconds too"
    )]
    let ns = total as i64;
    Some(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        for (ns, s) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (300_000_000, "300ms"),
            (3_723_000_000_000, "1h2m3s"),
            (60_000_000_000, "1m0s"),
            (-2_000_000_000, "-2s"),
            (1_500, "1.5µs"),
        ] {
            assert_eq!(format_duration(ns), s);
            assert_eq!(parse_duration(s), Some(ns), "{s}");
        }
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn times() {
        assert_eq!(
            format_time(1_767_323_045, 0, false).as_deref(),
            Some("2026-01-02T03:04:05Z")
        );
        assert_eq!(
            format_time(1_767_323_045, 123_456_000, true).as_deref(),
            Some("2026-01-02T03:04:05.123456Z")
        );
    }

    #[test]
    fn generated_tables_are_sorted() {
        assert!(generated::KEEP_ZERO.windows(2).all(|w| w[0] < w[1]));
        assert!(generated::STRING_SLICES.windows(2).all(|w| w[0] < w[1]));
        assert!(generated::INLINE.windows(2).all(|w| w[0] < w[1]));
        assert!(generated::INLINE.contains(&"k8s.io.api.core.v1.Volume.volumeSource"));
        assert!(generated::KEEP_ZERO.contains(&"k8s.io.api.apps.v1.DeploymentSpec.replicas"));
    }
}
