//! The wire form an event travels and is stored in.

use serde::{Deserialize, Serialize};

use super::{Event, EventId};
use crate::keys::Signature;

/// The form an event travels and is stored in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Wire {
    pub(super) header: Vec<u8>,
    pub(super) signature: Vec<u8>,
    pub(super) body: Option<Vec<u8>>,
}

/// An event's wire form: three byte strings, which postcard always encodes (it fails only on
/// sequences of unknown length or on a `Serialize` impl that errs). In debug builds the bytes
/// are decoded again, so the encoder and the decoder are checked against each other.
pub(super) fn encode_wire(wire: &Wire) -> Vec<u8> {
    let bytes = postcard::to_stdvec(wire).expect("postcard encodes byte strings");
    debug_assert!(
        postcard::from_bytes::<Wire>(&bytes).is_ok_and(|back| &back == wire),
        "an event's wire form decodes to itself"
    );
    bytes
}

impl Wire {
    /// The id of the event these bytes hold (`None` when the signature is not 64 bytes).
    pub(super) fn id(&self) -> Option<EventId> {
        let signature: [u8; 64] = self.signature.as_slice().try_into().ok()?;
        Some(Event::compute_id(
            &self.header,
            &Signature::from_bytes(&signature),
        ))
    }
}
