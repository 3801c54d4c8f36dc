//! The ACCEPT call of a launch as bytes, each TaskInfo measured and encoded once.
//!
//! prost caches no sizes: it writes an embedded message as key, length, bytes, and computes
//! that length afresh, walking the whole sub-tree, at every level of nesting. A TaskInfo
//! sits five levels deep in a `scheduler::Call` (Call → Accept → Operation → Launch →
//! TaskInfo) and its executor's resources seven, so encoding the generated `Call` measured
//! the same resources over and over: encoding an ACCEPT cost about as much as building its
//! tasks.
//!
//! Here each TaskInfo is encoded on its own (written directly by
//! [`super::tasks::encode_task_info`]), and the envelope around the bytes is a
//! wire-compatible copy of `Call` declaring only what an ACCEPT of launches sets, with
//! `task_infos` as `repeated bytes` under the same field number: on the wire an embedded
//! message and a bytes field are the same key, length and bytes. prost writes fields in
//! ascending number, so the result is byte for byte what `Call::encode_to_vec` writes (a
//! test holds them equal).
//!
//! It also holds the few field writers that TaskInfo and its resources are written with
//! ([`delimited`] and the string fields); what goes into the call is [`super::launch`]'s.

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::offer::operation;
use crate::proto::mesos::v1::scheduler::call;

/// `mesos.v1.scheduler.Call` as an ACCEPT of launches fills it.
#[derive(Clone, PartialEq, Message)]
struct AcceptCallWire {
    #[prost(message, required, tag = "1")]
    framework_id: mesos::FrameworkId,
    /// Always `ACCEPT`.
    #[prost(enumeration = "call::Type", required, tag = "2")]
    r#type: i32,
    #[prost(message, required, tag = "4")]
    accept: AcceptWire,
}

/// `Call.Accept`.
#[derive(Clone, PartialEq, Message)]
struct AcceptWire {
    #[prost(message, repeated, tag = "1")]
    offer_ids: Vec<mesos::OfferId>,
    /// `repeated Operation operations = 2` holding the one LAUNCH: a repeated field of one
    /// element is on the wire what a single field is.
    #[prost(message, required, tag = "2")]
    operation: LaunchOperationWire,
    #[prost(message, required, tag = "3")]
    filters: mesos::Filters,
}

/// `Offer.Operation` of type `LAUNCH`.
#[derive(Clone, PartialEq, Message)]
struct LaunchOperationWire {
    /// Always `LAUNCH`.
    #[prost(enumeration = "operation::Type", required, tag = "1")]
    r#type: i32,
    #[prost(message, required, tag = "2")]
    launch: LaunchWire,
}

/// `Offer.Operation.Launch`, its TaskInfos already encoded.
#[derive(Clone, PartialEq, Message)]
struct LaunchWire {
    #[prost(bytes = "vec", repeated, tag = "1")]
    task_infos: Vec<Vec<u8>>,
}

/// The encoded `scheduler::Call` of framework `framework_id` accepting `offer_ids` to launch
/// `tasks` (each an encoded TaskInfo), with `refuse_seconds` for what the launches leave of
/// the offers.
pub fn accept_call(
    framework_id: mesos::FrameworkId,
    offer_ids: Vec<String>,
    tasks: Vec<Vec<u8>>,
    refuse_seconds: f64,
) -> Vec<u8> {
    AcceptCallWire {
        framework_id,
        r#type: call::Type::Accept as i32,
        accept: AcceptWire {
            offer_ids: offer_ids
                .into_iter()
                .map(|value| mesos::OfferId { value })
                .collect(),
            operation: LaunchOperationWire {
                r#type: operation::Type::Launch as i32,
                launch: LaunchWire { task_infos: tasks },
            },
            filters: mesos::Filters {
                refuse_seconds: Some(refuse_seconds),
            },
        },
    }
    .encode_to_vec()
}

/// Writes field `tag` as key, length and what `body` appends: an embedded message or a
/// string, written once, in place, without measuring it first.
///
/// One byte is kept for the length, which is enough below 128 bytes; a longer body is moved
/// up by the length's extra bytes, a copy far cheaper than measuring the body's sub-tree
/// beforehand as prost does.
pub(super) fn delimited<R>(buf: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    encode_key(tag, WireType::LengthDelimited, buf);
    let at = buf.len();
    buf.push(0);
    let out = body(buf);
    let len = (buf.len() - at - 1) as u64;
    let width = encoded_len_varint(len);
    if width == 1 {
        buf[at] = len as u8;
    } else {
        let mut varint = [0u8; 10];
        encode_varint(len, &mut &mut varint[..]);
        buf.splice(at..=at, varint[..width].iter().copied());
    }
    out
}

/// Writes string field `tag`.
pub(super) fn str_field(buf: &mut Vec<u8>, tag: u32, s: &str) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.extend_from_slice(s.as_bytes());
}

/// Writes string field `tag` as `args` formats it, without an intermediate `String`.
pub(super) fn fmt_field(buf: &mut Vec<u8>, tag: u32, args: std::fmt::Arguments<'_>) {
    delimited(buf, tag, |buf| {
        // invariant: writing to a Vec cannot fail (it grows or aborts).
        std::io::Write::write_fmt(buf, args).expect("a Vec takes every byte");
    });
}
