//! The decoded event: signing, decoding, encoding and checking signatures.

use std::fmt;

use super::header::check_header_bounds;
use super::wire::{Wire, encode_wire};
use super::{EVENT_FORMAT, EventError, EventId, Header};
use crate::config::Hash32;
use crate::keys::{PublicKey, Signature, SigningKey, context};
use crate::limits::{
    EVENT_BODY_SIZE_MAX_BYTES, EVENT_HEADER_SIZE_MAX_BYTES, EVENT_WIRE_SIZE_MAX_BYTES,
};

/// A decoded event: the exact header bytes, the signature, the header, and the body unless pruned.
#[derive(Clone)]
pub struct Event {
    header_bytes: Vec<u8>,
    signature: Signature,
    header: Header,
    id: EventId,
    /// Seen by the event's tests, which tamper with it.
    pub(super) body: Option<Vec<u8>>,
    /// The outcome of checking the signature, once checked: a batch is verified on every core
    /// before admission, which then reads the result instead of verifying again.
    verified: std::sync::OnceLock<bool>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.header_bytes == other.header_bytes
            && self.signature == other.signature
            && self.body == other.body
    }
}

impl Eq for Event {}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the body: it may be a person's data (even encrypted, it has no place in logs).
        write!(
            f,
            "Event({} {} seq {} by {})",
            self.id.short(),
            self.header.kind.name(),
            self.header.seq,
            // An author that is not a key prints as nothing: `Debug` has no error to give.
            PublicKey::from_bytes(&self.header.author)
                .map(|k| k.node_id().to_string())
                .unwrap_or_default()
        )
    }
}

impl Event {
    /// Signs a header over `body` with the author's key. The header's body hash and length are
    /// set here, from the body.
    pub fn sign(mut header: Header, body: Vec<u8>, key: &SigningKey) -> Result<Self, EventError> {
        if body.len() > EVENT_BODY_SIZE_MAX_BYTES {
            return Err(EventError::BodyTooLarge);
        }
        header.body_hash = Hash32::of(&body);
        header.body_len = body.len() as u32;
        header.format = EVENT_FORMAT;
        check_header_bounds(&header)?;
        let header_bytes =
            postcard::to_stdvec(&header).map_err(|e| EventError::Malformed(e.to_string()))?;
        if header_bytes.len() > EVENT_HEADER_SIZE_MAX_BYTES {
            return Err(EventError::HeaderTooLarge);
        }
        let signature = key.sign(context::EVENT, &header_bytes);
        // The signing end of the pair whose verifying end is admission's check.
        debug_assert!(
            key.public()
                .verify(context::EVENT, &header_bytes, &signature)
                .is_ok(),
            "a signature just made verifies"
        );
        let id = Self::compute_id(&header_bytes, &signature);
        // A signature this node just made with the author's own key needs no second check;
        // a header naming another author (a test's forgery) is checked like any other.
        let verified = std::sync::OnceLock::new();
        if key.public().to_bytes() == header.author {
            // The cell was made just above, so it is empty and `set` cannot fail.
            let _ = verified.set(true);
        }
        let event = Self {
            header_bytes,
            signature,
            header,
            id,
            body: Some(body),
            verified,
        };
        Ok(event)
    }

    pub(super) fn compute_id(header_bytes: &[u8], signature: &Signature) -> EventId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(header_bytes);
        hasher.update(&signature.to_bytes());
        Hash32(*hasher.finalize().as_bytes())
    }

    /// Decodes an event from its wire bytes: bounds, canonical header encoding, body hash.
    /// The signature is not checked here (admission does it, with the author's key).
    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        Self::decode_checked(bytes, true)
    }

    /// Decodes an event this node stored after admitting it: the same bounds, without
    /// re-checking the canonical encoding and body hash that admission already checked.
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, EventError> {
        Self::decode_checked(bytes, false)
    }

    fn decode_checked(bytes: &[u8], untrusted: bool) -> Result<Self, EventError> {
        if bytes.len() > EVENT_WIRE_SIZE_MAX_BYTES {
            return Err(EventError::TooLarge);
        }
        let (wire, rest): (Wire, _) =
            postcard::take_from_bytes(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EventError::Malformed(
                "trailing bytes after the event".into(),
            ));
        }
        if wire.header.len() > EVENT_HEADER_SIZE_MAX_BYTES {
            return Err(EventError::HeaderTooLarge);
        }
        let signature: [u8; 64] = wire
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| EventError::Malformed("the signature is not 64 bytes".into()))?;
        let signature = Signature::from_bytes(&signature);
        let header: Header =
            postcard::from_bytes(&wire.header).map_err(|e| EventError::Malformed(e.to_string()))?;
        if header.format != EVENT_FORMAT {
            return Err(EventError::UnknownFormat(header.format));
        }
        if untrusted {
            // One header, one encoding: re-encoding must give the very bytes that were signed.
            let canonical =
                postcard::to_stdvec(&header).map_err(|e| EventError::Malformed(e.to_string()))?;
            if canonical != wire.header {
                return Err(EventError::Malformed(
                    "the header is not canonically encoded".into(),
                ));
            }
        }
        check_header_bounds(&header)?;
        if let Some(body) = &wire.body {
            if body.len() > EVENT_BODY_SIZE_MAX_BYTES {
                return Err(EventError::BodyTooLarge);
            }
            if untrusted
                && (body.len() != header.body_len as usize || Hash32::of(body) != header.body_hash)
            {
                return Err(EventError::BodyMismatch);
            }
        }
        let id = Self::compute_id(&wire.header, &signature);
        Ok(Self {
            header_bytes: wire.header,
            signature,
            header,
            id,
            body: wire.body,
            verified: std::sync::OnceLock::new(),
        })
    }

    /// The wire bytes (header, signature, body if held).
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            header: self.header_bytes.clone(),
            signature: self.signature.to_bytes().to_vec(),
            body: self.body.clone(),
        };
        encode_wire(&wire)
    }

    /// Checks the author's signature over the header bytes.
    pub fn verify_signature(&self) -> Result<(), crate::keys::KeyError> {
        let ok = *self.verified.get_or_init(|| {
            PublicKey::from_bytes(&self.header.author)
                .and_then(|key| key.verify(context::EVENT, &self.header_bytes, &self.signature))
                .is_ok()
        });
        if ok {
            Ok(())
        } else {
            Err(crate::keys::KeyError::SignatureMismatch)
        }
    }

    /// The exact signed header bytes and the signature (for measuring raw verification).
    pub fn signed_parts(&self) -> (&[u8], &Signature) {
        (&self.header_bytes, &self.signature)
    }

    pub fn id(&self) -> EventId {
        self.id
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// The same event without its body (after the retention period).
    pub fn pruned(&self) -> Self {
        Self {
            body: None,
            ..self.clone()
        }
    }

    /// Starts checking the signatures of many events on all cores but this one, in `scope`,
    /// so that the calling thread, admitting them in order, finds many of them checked. The
    /// helpers start from the end, so they and the caller (checking what it reaches
    /// unchecked) do not wait on each other.
    pub fn verify_ahead<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        events: &'scope [Event],
    ) {
        let helpers = crate::limits::batch_threads().saturating_sub(1);
        if events.len() < 64 || helpers == 0 {
            return;
        }
        for first in 0..helpers {
            scope.spawn(move || {
                for e in events.iter().rev().skip(first).step_by(helpers) {
                    // Only the check's side effect is wanted: the outcome stays in the event,
                    // and admission reads it (and refuses a bad signature) there.
                    let _ = e.verify_signature();
                }
            });
        }
    }

    /// Checks the signatures of many events on every core, so admission finds them checked.
    pub fn verify_all(events: &[Event]) {
        let threads = crate::limits::batch_threads();
        if events.len() < 64 || threads < 2 {
            for e in events {
                // The outcome stays in the event, where admission reads it.
                let _ = e.verify_signature();
            }
            return;
        }
        let chunk = events.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for part in events.chunks(chunk) {
                scope.spawn(move || {
                    for e in part {
                        // The outcome stays in the event, where admission reads it.
                        let _ = e.verify_signature();
                    }
                });
            }
        });
    }

    /// The size of the event on the wire, without encoding it.
    pub fn wire_len(&self) -> usize {
        self.header_bytes.len() + 64 + self.body.as_ref().map_or(0, Vec::len) + 8
    }
}
