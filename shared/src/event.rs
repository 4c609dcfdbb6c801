//! The event: the only unit that is stored and synced.
//!
//! An event is a signed header and a body. The header is encoded with postcard (a compact,
//! deterministic serde format) and its exact bytes are what the author signs, under
//! [`context::EVENT`]; the event id is the BLAKE3 hash of the signed header (header bytes and
//! signature). The header carries the BLAKE3 hash and length of the body, so a body can be
//! pruned after the retention period while the log stays verifiable. Each author's events form
//! a hash chain (`seq`, `prev`).
//!
//! What the header holds in clear is exactly what routing, deadlines and indicators need and
//! nothing that names or describes a person: kind, author, organisations addressed, service
//! category unless sensitive, status transitions, decline reason codes, urgency, timestamps.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Hash32;
use crate::keys::{PublicKey, Signature, SigningKey, context};
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

/// A hybrid logical clock timestamp: wall-clock milliseconds and a counter that orders events
/// within one millisecond (and after a clock that went back).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    pub ms: u64,
    pub counter: u32,
}

impl Hlc {
    /// The wall-clock part as an instant.
    pub fn to_datetime(&self) -> time::OffsetDateTime {
        let nanos = i128::from(self.ms) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

/// A node's hybrid logical clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn new(last: Hlc) -> Self {
        Self { last }
    }

    /// A timestamp after every one this clock has issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.ms {
            Hlc {
                ms: now_ms,
                counter: 0,
            }
        } else {
            Hlc {
                ms: self.last.ms,
                counter: self.last.counter.saturating_add(1),
            }
        };
        self.last
    }

    /// Takes a received timestamp into account, so what this node writes next comes after it.
    pub fn observe(&mut self, seen: Hlc) {
        if seen > self.last {
            self.last = seen;
        }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }
}

/// How urgent a referral is; the SOP gives each level its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Urgency {
    Emergency,
    Urgent,
    Routine,
}

impl Urgency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Urgency::Emergency => "emergency",
            Urgency::Urgent => "urgent",
            Urgency::Routine => "routine",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "emergency" => Some(Urgency::Emergency),
            "urgent" => Some(Urgency::Urgent),
            "routine" => Some(Urgency::Routine),
            _ => None,
        }
    }
}

/// A step in a referral's life after it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transition {
    Acknowledge,
    Accept,
    Decline,
    Complete,
    Withdraw,
}

impl Transition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transition::Acknowledge => "acknowledge",
            Transition::Accept => "accept",
            Transition::Decline => "decline",
            Transition::Complete => "complete",
            Transition::Withdraw => "withdraw",
        }
    }
}

/// A case-management action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CaseAction {
    Note,
    /// Case management moves to another organisation.
    Transfer {
        to_org: String,
    },
    Close,
    Reopen,
    /// The person's consent was recorded again (given, withdrawn or its scope changed).
    Consent,
}

/// The kind of an event, with the fields of that kind that travel in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// An organisation's key epochs, shared with another endorsed node of the organisation;
    /// the body is age-encrypted to that node's own recipient.
    KeyShare { to: [u8; 32], epochs: Vec<u32> },
    /// A case is opened; its id is this event's id.
    CaseOpen,
    /// An authority records a status / case-type determination for the case in `subject`.
    StatusDetermination,
    /// A case-management action on the case in `subject`.
    CaseUpdate(CaseAction),
    /// A referral of the case in `subject` to another organisation. The category is `None` in
    /// clear when it is sensitive (it then travels inside the ciphertext).
    ReferralSend {
        to_org: String,
        category: Option<String>,
        urgency: Urgency,
    },
    /// A step of the referral in `subject`; a decline carries its reason code in clear.
    ReferralUpdate {
        transition: Transition,
        reason: Option<String>,
    },
    /// A change to an organisation's partner-map profile (plain body: an Automerge change).
    MapChange { org: String },
    /// A compacted save of an organisation's partner-map profile.
    MapSnapshot { org: String },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::KeyShare { .. } => "key_share",
            Kind::CaseOpen => "case_open",
            Kind::StatusDetermination => "status_determination",
            Kind::CaseUpdate(_) => "case_update",
            Kind::ReferralSend { .. } => "referral_send",
            Kind::ReferralUpdate { .. } => "referral_update",
            Kind::MapChange { .. } => "map_change",
            Kind::MapSnapshot { .. } => "map_snapshot",
        }
    }

    /// Whether the body is age ciphertext (one stanza per organisation addressed).
    pub fn is_encrypted_to_orgs(&self) -> bool {
        matches!(
            self,
            Kind::CaseOpen
                | Kind::StatusDetermination
                | Kind::CaseUpdate(_)
                | Kind::ReferralSend { .. }
                | Kind::ReferralUpdate { .. }
        )
    }

    /// Whether this is a case event (refused while the configuration in force has expired).
    pub fn is_case_event(&self) -> bool {
        self.is_encrypted_to_orgs()
    }
}

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

/// The form an event travels and is stored in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Wire {
    header: Vec<u8>,
    signature: Vec<u8>,
    body: Option<Vec<u8>>,
}

/// An event's wire form: three byte strings, which postcard always encodes (it fails only on
/// sequences of unknown length or on a `Serialize` impl that errs). In debug builds the bytes
/// are decoded again, so the encoder and the decoder are checked against each other.
fn encode_wire(wire: &Wire) -> Vec<u8> {
    let bytes = postcard::to_stdvec(wire).expect("postcard encodes byte strings");
    debug_assert!(
        postcard::from_bytes::<Wire>(&bytes).is_ok_and(|back| &back == wire),
        "an event's wire form decodes to itself"
    );
    bytes
}

/// Sync batches travel compacted: an event leaves out the header fields the event before it in
/// the same batch lets the receiver rebuild — the mechanism id, the author key, and `prev` when
/// it is that event's id — about 96 bytes of a ~230-byte header in a run of one author's
/// events. Only the transport changes: the receiver rebuilds the exact signed bytes, so ids and
/// signatures are untouched and a wrong rebuild fails the signature check like any tampering.
mod compact {
    /// The mechanism id is the previous event's.
    pub const MECHANISM: u8 = 1;
    /// The author key is the previous event's.
    pub const AUTHOR: u8 = 2;
    /// `prev` is the previous event's id.
    pub const PREV: u8 = 4;
    /// Where fields sit in an encoded header: format (1 byte), mechanism (32), author (32),
    /// sequence (varint), `prev` (tag byte, then 32 bytes when present).
    pub const MECHANISM_AT: usize = 1;
    pub const AUTHOR_AT: usize = 33;
    pub const SEQ_AT: usize = 65;

    /// The length of the varint at the start of `bytes`.
    pub fn varint_len(bytes: &[u8]) -> Option<usize> {
        bytes
            .iter()
            .take(10)
            .position(|b| b & 0x80 == 0)
            .map(|i| i + 1)
    }

    /// The index of `prev`'s tag byte: just after the sequence number's varint.
    pub fn prev_tag_at(header: &[u8]) -> Option<usize> {
        Some(SEQ_AT + varint_len(header.get(SEQ_AT..)?)?)
    }
}

impl Wire {
    fn id(&self) -> Option<EventId> {
        let signature: [u8; 64] = self.signature.as_slice().try_into().ok()?;
        Some(Event::compute_id(
            &self.header,
            &Signature::from_bytes(&signature),
        ))
    }
}

/// Compacts a batch of events (wire bytes, in the order they will be sent) for one sync message.
/// Bytes that do not parse as an event pass unchanged (the receiver refuses them).
pub fn compact_batch(events: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    use compact::{AUTHOR, AUTHOR_AT, MECHANISM, MECHANISM_AT, PREV, SEQ_AT};
    let mut before: Option<(Vec<u8>, EventId)> = None;
    let mut out = Vec::with_capacity(events.len());
    for bytes in events {
        let parsed = postcard::from_bytes::<Wire>(&bytes).ok().and_then(|w| {
            let tag = compact::prev_tag_at(&w.header)?;
            let id = w.id()?;
            Some((w, tag, id))
        });
        let Some((mut wire, tag, id)) = parsed else {
            before = None;
            out.push([&[0u8][..], &bytes].concat());
            continue;
        };
        let full = std::mem::take(&mut wire.header);
        let mut flags = 0u8;
        if let Some((h, prev_id)) = &before {
            if full.get(MECHANISM_AT..AUTHOR_AT) == h.get(MECHANISM_AT..AUTHOR_AT) {
                flags |= MECHANISM;
            }
            if full.get(AUTHOR_AT..SEQ_AT) == h.get(AUTHOR_AT..SEQ_AT) {
                flags |= AUTHOR;
            }
            if full.get(tag) == Some(&1) && full.get(tag + 1..tag + 33) == Some(&prev_id.0[..]) {
                flags |= PREV;
            }
        }
        let mut header = Vec::with_capacity(full.len());
        header.extend_from_slice(full.get(..MECHANISM_AT).unwrap_or_default());
        if flags & MECHANISM == 0 {
            header.extend_from_slice(full.get(MECHANISM_AT..AUTHOR_AT).unwrap_or_default());
        }
        if flags & AUTHOR == 0 {
            header.extend_from_slice(full.get(AUTHOR_AT..SEQ_AT).unwrap_or_default());
        }
        header.extend_from_slice(full.get(SEQ_AT..=tag).unwrap_or_default());
        let rest = if flags & PREV == 0 { tag + 1 } else { tag + 33 };
        header.extend_from_slice(full.get(rest..).unwrap_or_default());
        wire.header = header;
        let mut item = vec![flags];
        item.extend(encode_wire(&wire));
        out.push(item);
        before = Some((full, id));
    }
    out
}

/// Rebuilds the wire bytes of a compacted batch. An item that cannot be rebuilt gives an error in
/// its place (and so does any later item that leans on it).
pub fn expand_batch(items: &[Vec<u8>]) -> Vec<Result<Vec<u8>, EventError>> {
    use compact::{AUTHOR, AUTHOR_AT, MECHANISM, MECHANISM_AT, PREV, SEQ_AT};
    let bad = |what: &str| EventError::Malformed(format!("compacted event: {what}"));
    let mut before: Option<(Vec<u8>, EventId)> = None;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if item.len() > EVENT_WIRE_SIZE_MAX_BYTES + 1 {
            before = None;
            out.push(Err(EventError::TooLarge));
            continue;
        }
        let rebuilt = (|| {
            let (&flags, rest) = item.split_first().ok_or_else(|| bad("empty"))?;
            let (mut wire, trailing): (Wire, _) =
                postcard::take_from_bytes(rest).map_err(|e| bad(&e.to_string()))?;
            if !trailing.is_empty() {
                return Err(bad("trailing bytes"));
            }
            if flags & !(MECHANISM | AUTHOR | PREV) != 0 {
                return Err(bad("unknown flags"));
            }
            let c = std::mem::take(&mut wire.header);
            if flags == 0 {
                wire.header = c;
            } else {
                let (h, prev_id) = before.as_ref().ok_or_else(|| bad("no event before it"))?;
                let mut full = Vec::with_capacity(c.len() + 96);
                let mut at = MECHANISM_AT;
                full.extend_from_slice(c.get(..at).ok_or_else(|| bad("too short"))?);
                for (flag, field) in [
                    (MECHANISM, MECHANISM_AT..AUTHOR_AT),
                    (AUTHOR, AUTHOR_AT..SEQ_AT),
                ] {
                    if flags & flag != 0 {
                        full.extend_from_slice(h.get(field).ok_or_else(|| bad("too short"))?);
                    } else {
                        let end = at + 32;
                        full.extend_from_slice(c.get(at..end).ok_or_else(|| bad("too short"))?);
                        at = end;
                    }
                }
                // The sequence number and prev's tag, as they came.
                let seq_len = c
                    .get(at..)
                    .and_then(compact::varint_len)
                    .ok_or_else(|| bad("sequence number"))?;
                let tag_end = at + seq_len + 1;
                let seq_tag = c.get(at..tag_end).ok_or_else(|| bad("too short"))?;
                full.extend_from_slice(seq_tag);
                if flags & PREV != 0 {
                    if seq_tag.last() != Some(&1) {
                        return Err(bad("prev left out but absent"));
                    }
                    full.extend_from_slice(&prev_id.0);
                }
                full.extend_from_slice(c.get(tag_end..).unwrap_or_default());
                if full.len() > EVENT_HEADER_SIZE_MAX_BYTES {
                    return Err(EventError::HeaderTooLarge);
                }
                wire.header = full;
            }
            let id = wire.id().ok_or_else(|| bad("signature"))?;
            let bytes = postcard::to_stdvec(&wire).map_err(|e| bad(&e.to_string()))?;
            Ok((wire.header, id, bytes))
        })();
        match rebuilt {
            Ok((header, id, bytes)) => {
                before = Some((header, id));
                out.push(Ok(bytes));
            }
            Err(e) => {
                before = None;
                out.push(Err(e));
            }
        }
    }
    out
}

/// A decoded event: the exact header bytes, the signature, the header, and the body unless pruned.
#[derive(Clone)]
pub struct Event {
    header_bytes: Vec<u8>,
    signature: Signature,
    header: Header,
    id: EventId,
    body: Option<Vec<u8>>,
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
            PublicKey::from_bytes(&self.header.author)
                .map(|k| k.node_id().to_string())
                .unwrap_or_default()
        )
    }
}

fn check_header_bounds(header: &Header) -> Result<(), EventError> {
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

    fn compute_id(header_bytes: &[u8], signature: &Signature) -> EventId {
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
                let _ = e.verify_signature();
            }
            return;
        }
        let chunk = events.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for part in events.chunks(chunk) {
                scope.spawn(move || {
                    for e in part {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(seq: u64, kind: Kind) -> Header {
        Header {
            format: EVENT_FORMAT,
            mechanism: Hash32([7; 32]),
            author: [0; 32],
            seq,
            prev: None,
            config_version: 1,
            hlc: Hlc {
                ms: 1_700_000_000_000,
                counter: 0,
            },
            kind,
            subject: None,
            deps: vec![],
            orgs: vec![Addressed {
                org: "crt".into(),
                epoch: 1,
            }],
            body_hash: Hash32([0; 32]),
            body_len: 0,
        }
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::CaseOpen),
            Just(Kind::StatusDetermination),
            "[a-z]{1,12}".prop_map(|o| Kind::MapChange { org: o }),
            ("[a-z]{1,12}", proptest::option::of("[a-z_]{1,12}")).prop_map(|(o, c)| {
                Kind::ReferralSend {
                    to_org: o,
                    category: c,
                    urgency: Urgency::Urgent,
                }
            }),
            proptest::option::of("[a-z_]{1,12}").prop_map(|r| Kind::ReferralUpdate {
                transition: Transition::Decline,
                reason: r
            }),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(seq in 1u64..u64::MAX, kind in arb_kind(),
                                    body in proptest::collection::vec(any::<u8>(), 0..2048),
                                    deps in proptest::collection::vec(any::<[u8; 32]>(), 0..4)) {
            let key = SigningKey::generate();
            let mut h = header(seq, kind);
            h.author = key.public().to_bytes();
            h.deps = deps.into_iter().map(Hash32).collect();
            let event = Event::sign(h, body, &key).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoded = Event::decode(&event.encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(decoded.verify_signature().is_ok());
            prop_assert_eq!(decoded.id(), event.id());
            prop_assert_eq!(&decoded, &event);
            let pruned = Event::decode(&event.pruned().encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(pruned.id(), event.id(), "pruning keeps the id");
        }

        #[test]
        fn a_compacted_batch_expands_to_the_same_events(
            runs in proptest::collection::vec((0usize..3, 1usize..5), 1..6),
            mechanisms in proptest::collection::vec(0u8..2, 1..6),
        ) {
            // Runs of events by a few authors, chained, some under another mechanism id.
            let keys: Vec<SigningKey> = (0..3).map(|_| SigningKey::generate()).collect();
            let mut heads: Vec<(u64, Option<EventId>)> = vec![(0, None); 3];
            let mut events = Vec::new();
            for (i, (author, len)) in runs.into_iter().enumerate() {
                for _ in 0..len {
                    let (seq, prev) = heads[author];
                    let mut h = header(seq + 1, Kind::CaseOpen);
                    h.author = keys[author].public().to_bytes();
                    h.prev = prev;
                    h.mechanism = Hash32([mechanisms[i % mechanisms.len()]; 32]);
                    let e = Event::sign(h, vec![i as u8; 40], &keys[author])
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    heads[author] = (seq + 1, Some(e.id()));
                    events.push(e);
                }
            }
            let wire: Vec<Vec<u8>> = events.iter().map(Event::encode).collect();
            let compacted = compact_batch(wire.clone());
            let before: usize = wire.iter().map(Vec::len).sum();
            let after: usize = compacted.iter().map(Vec::len).sum();
            prop_assert!(after <= before + events.len());
            let expanded: Vec<Vec<u8>> = expand_batch(&compacted)
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(expanded, wire);
        }

        #[test]
        fn tampered_compacted_items_are_refused_or_fail_their_signature(
            flip in 0usize..400, bit in 0u8..8, junk in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let key = SigningKey::generate();
            let mut prev = None;
            let mut wire = Vec::new();
            for seq in 1..4 {
                let mut h = header(seq, Kind::CaseOpen);
                h.author = key.public().to_bytes();
                h.prev = prev;
                let e = Event::sign(h, b"ciphertext".to_vec(), &key)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prev = Some(e.id());
                wire.push(e.encode());
            }
            let mut compacted = compact_batch(wire.clone());
            let item = &mut compacted[1];
            let i = flip % item.len();
            item[i] ^= 1 << bit;
            compacted.push(junk);
            for (i, rebuilt) in expand_batch(&compacted).into_iter().enumerate() {
                if let Ok(bytes) = rebuilt {
                    let ok = Event::decode(&bytes).is_ok_and(|e| e.verify_signature().is_ok());
                    // Whatever is rebuilt from a tampered item never passes as a signed event,
                    // unless the flip hit a byte the rebuild ignores and gave the original back.
                    prop_assert!(!ok || wire.get(i) == Some(&bytes), "item {i}");
                }
            }
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = Event::decode(&bytes);
        }

        #[test]
        fn flipped_bytes_never_verify_as_the_same_event(flip in 0usize..200, bit in 0u8..8) {
            let key = SigningKey::generate();
            let mut h = header(3, Kind::CaseOpen);
            h.author = key.public().to_bytes();
            let event = Event::sign(h, b"ciphertext".to_vec(), &key).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut bytes = event.encode();
            let i = flip % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(decoded) = Event::decode(&bytes) {
                prop_assert!(decoded.verify_signature().is_err() || decoded.id() != event.id() || decoded == event);
            }
        }
    }

    #[test]
    fn a_changed_body_is_refused() -> Result<(), EventError> {
        let key = SigningKey::generate();
        let mut h = header(1, Kind::CaseOpen);
        h.author = key.public().to_bytes();
        let event = Event::sign(h, b"abc".to_vec(), &key)?;
        let mut tampered = event.clone();
        tampered.body = Some(b"abd".to_vec());
        assert_eq!(
            Event::decode(&tampered.encode()),
            Err(EventError::BodyMismatch)
        );
        Ok(())
    }

    #[test]
    fn the_clock_moves_forward() {
        let mut clock = HlcClock::default();
        let a = clock.tick(100);
        let b = clock.tick(100);
        let c = clock.tick(50);
        assert!(a < b && b < c);
        clock.observe(Hlc {
            ms: 500,
            counter: 3,
        });
        assert!(
            clock.tick(200)
                > Hlc {
                    ms: 500,
                    counter: 3
                }
        );
    }
}
