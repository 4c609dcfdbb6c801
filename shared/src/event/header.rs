//! The signed header: what an event holds in clear.

use serde::{Deserialize, Serialize};

use super::{EventError, EventId, Hlc, Kind};
use crate::config::Hash32;
use crate::keys::PublicKey;
use crate::limits::{EVENT_BODY_SIZE_MAX_BYTES, EVENT_DEPS_MAX, EVENT_ORGS_MAX};

/// An organisation an event is addressed to, and which of its key epochs the body uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Addressed {
    pub org: String,
    pub epoch: u32,
}

/// The signed part of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u8,
    /// The mechanism id (genesis document hash).
    pub mechanism: Hash32,
    /// The author node's ed25519 public key.
    pub author: [u8; 32],
    /// Position in the author's log, from 1.
    pub seq: u64,
    /// The id of the author's previous event; `None` for sequence 1.
    pub prev: Option<EventId>,
    /// The configuration version the author claims (never lower than its previous event's).
    pub config_version: u64,
    pub hlc: Hlc,
    pub kind: Kind,
    /// The case or referral this event is about (also a dependency).
    pub subject: Option<EventId>,
    /// Other authors' events this one builds on (e.g. a referral names its determination).
    pub deps: Vec<EventId>,
    /// Organisations addressed, each with the key epoch used: one age stanza each.
    pub orgs: Vec<Addressed>,
    pub body_hash: Hash32,
    pub body_len: u32,
}

impl Header {
    /// Every event this one depends on: the author's previous event, the subject, the deps.
    pub fn causal_deps(&self) -> impl Iterator<Item = EventId> + '_ {
        self.prev
            .iter()
            .chain(self.subject.iter())
            .chain(self.deps.iter())
            .copied()
    }

    pub fn author_key(&self) -> Result<PublicKey, EventError> {
        PublicKey::from_bytes(&self.author)
            .map_err(|_| EventError::Malformed("the author key is not an ed25519 key".into()))
    }

    /// Whether the organisation is addressed, and with which epoch.
    pub fn epoch_for(&self, org: &str) -> Option<u32> {
        self.orgs.iter().find(|a| a.org == org).map(|a| a.epoch)
    }
}

/// The counts and sizes a header may name, checked when signing and when decoding.
pub(super) fn check_header_bounds(header: &Header) -> Result<(), EventError> {
    if header.deps.len() > EVENT_DEPS_MAX {
        return Err(EventError::TooManyDeps);
    }
    if header.orgs.len() > EVENT_ORGS_MAX {
        return Err(EventError::TooManyOrgs);
    }
    if header.body_len as usize > EVENT_BODY_SIZE_MAX_BYTES {
        return Err(EventError::BodyTooLarge);
    }
    Ok(())
}
