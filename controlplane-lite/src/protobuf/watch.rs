//! Watch streams in protobuf (`application/vnd.kubernetes.protobuf;stream=watch`), for clients
//! that list protobuf first (kubectl's typed watches: `kubectl events -w`, `kubectl run -i`).
//!
//! The JSON stream of [`crate::watch`] (one `{"type", "object"}` per line) is re-framed as
//! kube-apiserver frames it: each event is a 4-byte big-endian length followed by a
//! `meta.v1.WatchEvent` (plain protobuf, no magic) whose `object.raw` is the object encoded as a
//! whole protobuf body (magic and `runtime.Unknown` envelope, as [`super::encode`] makes).

use super::{encode, POOL};
use crate::web::Body;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use prost_reflect::{DynamicMessage, Value as PValue};
use serde_json::Value;
use std::io;

/// The Content-Type of a protobuf watch stream.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

const WATCH_EVENT: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.WatchEvent";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// One JSON watch event line as a length-prefixed protobuf frame.
pub fn frame(line: &[u8]) -> Result<Bytes, io::Error> {
    let event: Value = serde_json::from_slice(line).map_err(invalid)?;
    let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
    let object = encode(event.get("object").unwrap_or(&Value::Null)).map_err(invalid)?;
    let desc = |name: &str| {
        POOL.get_message_by_name(name)
            .ok_or_else(|| invalid(format!("{name} is not in the descriptors")))
    };
    let mut raw = DynamicMessage::new(desc(RAW_EXTENSION)?);
    raw.set_field_by_name("raw", PValue::Bytes(object.into()));
    let mut msg = DynamicMessage::new(desc(WATCH_EVENT)?);
    msg.set_field_by_name("type", PValue::String(ty.to_owned()));
    msg.set_field_by_name("object", PValue::Message(raw));
    let body = msg.encode_to_vec();
    let len = u32::try_from(body.len()).map_err(invalid)?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend(len.to_be_bytes());
    out.extend(body);
    Ok(out.into())
}

/// Re-frames a JSON watch stream as a protobuf one. An event that cannot be encoded ends the
/// stream with an error (the client re-watches from its last resourceVersion).
pub fn transcode(body: Body) -> Body {
    let frames = body
        .into_data_stream()
        .scan(Vec::<u8>::new(), |buf, chunk| {
            let mut out: Vec<Result<Bytes, io::Error>> = Vec::new();
            match chunk {
                Err(e) => out.push(Err(e)),
                Ok(bytes) => {
                    buf.extend_from_slice(&bytes);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let framed = frame(&line);
                        if let Err(e) = &framed {
                            tracing::warn!(error = %e, "encoding a watch event as protobuf");
                        }
                        out.push(framed);
                    }
                }
            }
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
        .map(|r| r.map(hyper::body::Frame::data));
    BodyExt::boxed(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_length_prefixed_watch_events() {
        let line = json!({"type": "ADDED", "object": {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "resourceVersion": "7"}, "data": {"a": "b"}}})
        .to_string();
        let f = frame(line.as_bytes()).unwrap();
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len, f.len() - 4);
        let event = DynamicMessage::decode(POOL.get_message_by_name(WATCH_EVENT).unwrap(), &f[4..])
            .unwrap();
        assert_eq!(
            event.get_field_by_name("type").unwrap().as_str(),
            Some("ADDED")
        );
        let object = event.get_field_by_name("object").unwrap();
        let raw = object
            .as_message()
            .unwrap()
            .get_field_by_name("raw")
            .unwrap();
        let decoded = super::super::decode(raw.as_bytes().unwrap()).unwrap();
        assert_eq!(decoded["data"], json!({"a": "b"}));
        assert_eq!(decoded["metadata"]["resourceVersion"], "7");
        assert!(frame(b"{not json").is_err());
    }
}
