//! The event: the only unit that is stored and synced.
//!
//! An event is a signed header and a body. The header is encoded with postcard (a compact,
//! deterministic serde format) and its exact bytes are what the author signs, under
//! [`context::EVENT`](crate::keys::context::EVENT); the event id is the BLAKE3 hash of the signed header (header bytes and
//! signature). The header carries the BLAKE3 hash and length of the body, so a body can be
//! pruned after the retention period while the log stays verifiable. Each author's events form
//! a hash chain (`seq`, `prev`).
//!
//! What the header holds in clear is exactly what routing, deadlines and indicators need and
//! nothing that names or describes a person: kind, author, organisations addressed, service
//! category unless sensitive, status transitions, decline reason codes, urgency, timestamps.
//!
//! Along its seams: the clock (`hlc`), the kinds with their clear fields (`kind`),
//! the signed header (`header`), the decoded event and its signature (`signed`), the wire form
//! (`wire`) and the compacted form sync batches travel in (`compact`).

mod compact;
mod header;
mod hlc;
mod kind;
mod signed;
#[cfg(test)]
mod tests;
mod wire;

pub use compact::{compact_batch, expand_batch};
pub use header::{Addressed, Header};
pub use hlc::{Hlc, HlcClock};
pub use kind::{CaseAction, EraseReason, Kind, Transition, Urgency};
pub use signed::Event;

use crate::config::Hash32;
use crate::limits::{
    EVENT_BODY_SIZE_MAX_BYTES, EVENT_DEPS_MAX, EVENT_HEADER_SIZE_MAX_BYTES, EVENT_ORGS_MAX,
    EVENT_WIRE_SIZE_MAX_BYTES,
};

/// The envelope format this build writes and reads.
pub const EVENT_FORMAT: u8 = 1;

/// An event id: BLAKE3 of the signed header.
pub type EventId = Hash32;

/// Why bytes are not a well-formed event.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the event is larger than {EVENT_WIRE_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("the event header is larger than {EVENT_HEADER_SIZE_MAX_BYTES} bytes")]
    HeaderTooLarge,
    #[error("the event body is larger than {EVENT_BODY_SIZE_MAX_BYTES} bytes")]
    BodyTooLarge,
    #[error("the event is malformed: {0}")]
    Malformed(String),
    #[error(
        "the event uses envelope format {0}, which this Passerelle does not know: upgrade Passerelle"
    )]
    UnknownFormat(u8),
    #[error("the event names more than {EVENT_DEPS_MAX} dependencies")]
    TooManyDeps,
    #[error("the event addresses more than {EVENT_ORGS_MAX} organisations")]
    TooManyOrgs,
    #[error("the event's body does not match the hash its header carries")]
    BodyMismatch,
}
