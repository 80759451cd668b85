//! The Event printer (upstream `printEvent`, core/v1): last seen (or the series' last
//! observation), type, reason, object, message, and the wide subobject, source, first seen,
//! count and name.

use jiff::Timestamp;
use serde_json::Value;

use super::time::{parse_time, translate_timestamp_since};
use super::{i, name_of, s, Printer, NAME_DOC};

/// `kubectl get events`.
#[rustfmt::skip] // one line per column, as upstream lists them
pub(super) const EVENT: Printer = Printer {
    kind: "Event",
    columns: &[
        ("Last Seen", "string", "", 0, "The time at which the most recent occurrence of this event was recorded."),
        ("Type", "string", "", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
        ("Reason", "string", "", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        ("Object", "string", "", 0, "The object that this event is about."),
        ("Subobject", "string", "", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
        ("Source", "string", "", 1, "The component reporting this event. Should be a short machine understandable string."),
        ("Message", "string", "", 0, "A human-readable description of the status of this operation."),
        ("First Seen", "string", "", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
        ("Count", "string", "", 1, "The number of times this event has occurred."),
        ("Name", "string", "name", 1, NAME_DOC),
    ],
    cells: |ev, now| (event_cells(ev, now), None),
};

fn event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = if parse_time(ev.get("firstTimestamp")).is_some() {
        translate_timestamp_since(ev.get("firstTimestamp"), now)
    } else {
        translate_timestamp_since(ev.get("eventTime"), now)
    };
    let mut last = if parse_time(ev.get("lastTimestamp")).is_some() {
        translate_timestamp_since(ev.get("lastTimestamp"), now)
    } else {
        first.clone()
    };
    let mut count = i(ev, "/count");
    if let Some(series) = ev.get("series").filter(|v| v.is_object()) {
        last = translate_timestamp_since(series.get("lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let target = match s(ev, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = match s(ev, "/source/component") {
        "" => s(ev, "/reportingComponent"),
        c => c,
    };
    let instance = match s(ev, "/source/host") {
        "" => s(ev, "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        Value::from(last),
        Value::from(s(ev, "/type")),
        Value::from(s(ev, "/reason")),
        Value::from(target),
        Value::from(s(ev, "/involvedObject/fieldPath")),
        Value::from(source),
        Value::from(s(ev, "/message").trim()),
        Value::from(first),
        Value::from(count),
        name_of(ev),
    ]
}
