//! The ACCEPT call of a launch as bytes, each TaskInfo measured and encoded once.
//!
//! prost caches no sizes: it writes an embedded message as key, length, bytes, and computes
//! that length afresh, walking the whole sub-tree, at every level of nesting. A TaskInfo
//! sits five levels deep in a `scheduler::Call` (Call → Accept → Operation → Launch →
//! TaskInfo) and its executor's resources seven, so encoding the generated `Call` measured
//! the same resources over and over: encoding an ACCEPT cost about as much as building its
//! tasks.
//!
//! Here each TaskInfo is encoded on its own, and the envelope around the bytes is a
//! wire-compatible copy of `Call` declaring only what an ACCEPT of launches sets, with
//! `task_infos` as `repeated bytes` under the same field number: on the wire an embedded
//! message and a bytes field are the same key, length and bytes. prost writes fields in
//! ascending number, so the result is byte for byte what `Call::encode_to_vec` writes (a
//! test holds them equal).
//!
//! It owns nothing else: what goes into the call is [`super::launch`]'s.

use prost::Message;

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
/// `tasks`, with `refuse_seconds` for what the launches leave of the offers.
pub fn accept_call<'a>(
    framework_id: mesos::FrameworkId,
    offer_ids: Vec<String>,
    tasks: impl IntoIterator<Item = &'a mesos::TaskInfo>,
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
                launch: LaunchWire {
                    task_infos: tasks.into_iter().map(Message::encode_to_vec).collect(),
                },
            },
            filters: mesos::Filters {
                refuse_seconds: Some(refuse_seconds),
            },
        },
    }
    .encode_to_vec()
}
