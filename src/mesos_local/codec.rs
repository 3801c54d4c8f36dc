//! The two wire encodings of the Mesos v1 APIs, exactly as the master and agent accept them:
//! `application/x-protobuf` (the serialized message) and `application/json` (Mesos' own
//! mapping: proto field names in snake_case, enum names as strings, base64 bytes, 64-bit
//! integers as plain numbers). JSON is transcoded through `prost-reflect` with the
//! descriptors `build.rs` writes, so every message of our proto subset has a JSON form
//! without hand-written mapping code.
//!
//! Also owns the media-type rules: the exact `Content-Type` match (anything else is 415) and
//! the `Accept` negotiation of a SUBSCRIBE (JSON first, then protobuf, else 406).

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

/// The descriptors of our proto subset, written by `build.rs`.
static FDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mesos.fds.bin"));

/// Fully qualified names of the messages we transcode.
pub const SCHEDULER_CALL: &str = "mesos.v1.scheduler.Call";
pub const SCHEDULER_EVENT: &str = "mesos.v1.scheduler.Event";
pub const EXECUTOR_CALL: &str = "mesos.v1.executor.Call";
pub const EXECUTOR_EVENT: &str = "mesos.v1.executor.Event";

/// Why a body cannot be decoded or an event encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("invalid protobuf")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),
    #[error("no descriptor for {0}")]
    UnknownMessage(&'static str),
}

/// A request or stream encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// The media type, as sent in `Content-Type`.
    pub fn media_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }

    /// The encoding of a request body, from its `Content-Type`. Mesos compares the whole
    /// header value, so `application/json; charset=utf-8` is refused.
    pub fn from_content_type(value: &str) -> Option<Self> {
        match value {
            "application/json" => Some(Encoding::Json),
            "application/x-protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// The stream encoding a SUBSCRIBE asks for: JSON if `Accept` allows it (or is absent),
    /// else protobuf if allowed, else `None` (406). Mirrors `Request::acceptsMediaType`.
    pub fn negotiate(accept: Option<&str>) -> Option<Self> {
        let Some(accept) = accept else {
            return Some(Encoding::Json);
        };
        [Encoding::Json, Encoding::Protobuf]
            .into_iter()
            .find(|e| accepts(accept, e.media_type()))
    }
}

/// Whether an `Accept` header value admits `media`: the most specific matching range
/// (`type/subtype` over `type/*` over `*/*`) decides, and `q=0` refuses.
fn accepts(accept: &str, media: &str) -> bool {
    let (ty, _) = media.split_once('/').unwrap_or((media, ""));
    let mut best: Option<(u8, bool)> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let range = parts.next().unwrap_or_default().to_ascii_lowercase();
        let specificity = if range == media {
            2
        } else if range == format!("{ty}/*") {
            1
        } else if range == "*/*" {
            0
        } else {
            continue;
        };
        let allowed = !parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, allowed));
        }
    }
    best.is_some_and(|(_, allowed)| allowed)
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // invariant: build.rs encoded this set from the same protos prost compiled; a
        // failure here is a build defect, caught by every test that decodes JSON.
        DescriptorPool::decode(FDS).expect("descriptor set written by build.rs decodes")
    })
}

/// Decodes a request body of message `name` into `T`.
///
/// JSON names are the proto field names (lowerCamelCase is also accepted); unknown fields
/// are ignored, as Mesos ignores them.
///
/// # Errors
/// [`CodecError`] when the body is not a valid message of that encoding.
pub fn decode<T: Message + Default>(
    encoding: Encoding,
    name: &'static str,
    body: &[u8],
) -> Result<T, CodecError> {
    match encoding {
        Encoding::Protobuf => Ok(T::decode(body)?),
        Encoding::Json => {
            let desc = pool()
                .get_message_by_name(name)
                .ok_or(CodecError::UnknownMessage(name))?;
            let mut de = serde_json::Deserializer::from_slice(body);
            let dm = DynamicMessage::deserialize_with_options(
                desc,
                &mut de,
                &DeserializeOptions::new().deny_unknown_fields(false),
            )?;
            de.end()?;
            Ok(T::decode(dm.encode_to_vec().as_slice())?)
        }
    }
}

/// Encodes message `msg` (of proto type `name`) for the wire.
///
/// # Errors
/// [`CodecError`] if the message cannot be transcoded to JSON (a descriptor mismatch).
pub fn encode<T: Message>(
    encoding: Encoding,
    name: &'static str,
    msg: &T,
) -> Result<Bytes, CodecError> {
    match encoding {
        Encoding::Protobuf => Ok(Bytes::from(msg.encode_to_vec())),
        Encoding::Json => {
            let desc = pool()
                .get_message_by_name(name)
                .ok_or(CodecError::UnknownMessage(name))?;
            let dm = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())?;
            let mut out = Vec::new();
            let mut ser = serde_json::Serializer::new(&mut out);
            dm.serialize_with_options(
                &mut ser,
                &SerializeOptions::new()
                    .use_proto_field_name(true)
                    .stringify_64_bit_integers(false),
            )?;
            Ok(Bytes::from(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mesos::v1 as mesos;
    use crate::proto::mesos::v1::scheduler::{Call, Event, call, event};

    #[test]
    fn content_type_is_matched_exactly() {
        assert_eq!(
            Encoding::from_content_type("application/json"),
            Some(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type("application/json; charset=utf-8"),
            None
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(Encoding::negotiate(None), Some(Encoding::Json));
        assert_eq!(Encoding::negotiate(Some("*/*")), Some(Encoding::Json));
        assert_eq!(
            Encoding::negotiate(Some("application/x-protobuf")),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::negotiate(Some("application/json;q=0, application/*")),
            Some(Encoding::Protobuf)
        );
        assert_eq!(Encoding::negotiate(Some("text/html")), None);
    }

    #[test]
    fn json_call_uses_mesos_names_and_base64() {
        let body = br#"{"framework_id":{"value":"f"},"type":"ACKNOWLEDGE","unknown_field":1,
            "acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"AAECAwQFBgcICQoLDA0ODw=="}}"#;
        let c: Call = decode(Encoding::Json, SCHEDULER_CALL, body).unwrap();
        assert_eq!(c.r#type, Some(call::Type::Acknowledge as i32));
        assert_eq!(c.acknowledge.unwrap().uuid, (0u8..16).collect::<Vec<_>>());
    }

    #[test]
    fn json_event_has_snake_case_enum_names_and_plain_numbers() {
        let ev = Event {
            r#type: Some(event::Type::Update as i32),
            update: Some(event::Update {
                status: mesos::TaskStatus {
                    task_id: "t".into(),
                    state: mesos::TaskState::TaskStarting as i32,
                    uuid: Some(vec![0xff; 16]),
                    unreachable_time: Some(mesos::TimeInfo {
                        nanoseconds: 1_700_000_000_000_000_000,
                    }),
                    ..Default::default()
                },
            }),
            ..Default::default()
        };
        let json = encode(Encoding::Json, SCHEDULER_EVENT, &ev).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["type"], "UPDATE");
        // A required enum holding 0 is still written.
        assert_eq!(v["update"]["status"]["state"], "TASK_STARTING");
        assert_eq!(v["update"]["status"]["task_id"]["value"], "t");
        assert_eq!(v["update"]["status"]["uuid"], "/////////////////////w==");
        assert_eq!(
            v["update"]["status"]["unreachable_time"]["nanoseconds"],
            1_700_000_000_000_000_000i64
        );
        let back: Event = decode(Encoding::Json, SCHEDULER_EVENT, &json).unwrap();
        assert_eq!(back, ev);
    }
}
