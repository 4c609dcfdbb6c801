//! The sync protocol: a pure state machine. libp2p streams and bundle files only move its
//! messages; nothing here does I/O.
//!
//! A round, driven by the initiator:
//! 1. `Hello` carries the initiator's configuration version and a digest of its version vector
//!    (a few dozen bytes whatever the number of authors). Equal digests end the round: `InSync`.
//! 2. Otherwise the responder answers with its configuration chain if the initiator is behind
//!    (the configuration travels first), else with its whole vector: (author, highest seq,
//!    head id) per author, so a fork — two different heads at one sequence — is seen.
//! 3. The initiator asks (`Want`) for what it lacks, in bounded batches in log order, and
//!    pushes (`Push`) what the responder lacks, also in bounded batches.
//!
//! Everything received goes through the same admission as everything else.
//!
//! `round` runs one round between this node's engine and a peer (`Round`, `Engine::respond`).

pub mod round;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Hash32;
use crate::event::{Event, EventId};

use crate::limits::{
    SYNC_AUTHORS_MAX, SYNC_BATCH_EVENTS_MAX, SYNC_BATCH_MAX_BYTES, SYNC_MESSAGE_MAX_BYTES,
};

/// The protocol version carried in `Hello` (2: event batches travel compacted, see
/// [`crate::event::compact_batch`]).
pub const SYNC_VERSION: u16 = 2;

/// Why a sync message was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    #[error("the sync message is larger than {SYNC_MESSAGE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("the sync message is malformed")]
    Malformed,
    #[error("the peer speaks sync version {0}, this node speaks {SYNC_VERSION}")]
    Version(u16),
    #[error("the peer belongs to another mechanism")]
    OtherMechanism,
    #[error("the peer sent more than the protocol allows: {0}")]
    OverBound(&'static str),
}

/// Each author's highest sequence number and head event id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    pub entries: BTreeMap<[u8; 32], (u64, EventId)>,
}

impl VersionVector {
    pub fn from_heads(heads: impl IntoIterator<Item = ([u8; 32], u64, EventId)>) -> Self {
        Self {
            entries: heads
                .into_iter()
                .map(|(author, seq, id)| (author, (seq, id)))
                .collect(),
        }
    }

    /// A digest of the whole vector: equal digests mean equal logs.
    pub fn digest(&self) -> Hash32 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"passerelle/v1/version-vector");
        for (author, (seq, head)) in &self.entries {
            hasher.update(author);
            hasher.update(&seq.to_le_bytes());
            hasher.update(&head.0);
        }
        Hash32(*hasher.finalize().as_bytes())
    }

    pub fn seq(&self, author: &[u8; 32]) -> u64 {
        self.entries.get(author).map_or(0, |(s, _)| *s)
    }
}

/// A range of one author's log: from `from` to `to` (inclusive; `None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub author: [u8; 32],
    pub from: u64,
    pub to: Option<u64>,
}

/// What the initiator sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Hello {
        version: u16,
        mechanism: Hash32,
        config_version: u64,
        digest: Hash32,
    },
    /// Ranges the initiator lacks.
    Want { ranges: Vec<Range> },
    /// Events the responder lacks, in log order, compacted ([`crate::event::compact_batch`]).
    Push { events: Vec<Vec<u8>> },
    /// Configuration versions the responder lacks (signed files, JSON bytes), ascending.
    PushConfig { files: Vec<Vec<u8>> },
}

/// What the responder answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Same digest: nothing to do.
    InSync,
    /// The responder's vector and configuration version.
    Vector {
        config_version: u64,
        vector: VersionVector,
    },
    /// The initiator is behind on the configuration: the versions it lacks, ascending.
    Config { files: Vec<Vec<u8>> },
    /// Events asked for, in log order, compacted; `more` when the batch bound cut the answer
    /// short.
    Events { events: Vec<Vec<u8>>, more: bool },
    /// A push was received: how many events were admitted.
    Received { admitted: u32 },
    /// The request was refused, with the reason.
    Refused { reason: String },
}

/// Encodes a message with its bound.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, SyncError> {
    let bytes = postcard::to_stdvec(message).map_err(|_| SyncError::Malformed)?;
    if bytes.len() > SYNC_MESSAGE_MAX_BYTES {
        return Err(SyncError::TooLarge);
    }
    Ok(bytes)
}

/// Decodes a message, refusing trailing bytes and anything past the bounds.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, SyncError> {
    if bytes.len() > SYNC_MESSAGE_MAX_BYTES {
        return Err(SyncError::TooLarge);
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|_| SyncError::Malformed)?;
    if !rest.is_empty() {
        return Err(SyncError::Malformed);
    }
    Ok(value)
}

/// Checks the bounds of a received request (beyond the message size).
pub fn check_request(request: &Request) -> Result<(), SyncError> {
    match request {
        Request::Hello { version, .. } if *version != SYNC_VERSION => {
            Err(SyncError::Version(*version))
        }
        Request::Want { ranges } if ranges.len() > SYNC_AUTHORS_MAX => {
            Err(SyncError::OverBound("too many ranges"))
        }
        Request::Push { events } if events.len() > SYNC_BATCH_EVENTS_MAX => {
            Err(SyncError::OverBound("too many events in one push"))
        }
        Request::PushConfig { files } if files.len() > crate::limits::CHAIN_FILES_MAX => {
            Err(SyncError::OverBound("too many configuration files"))
        }
        _ => Ok(()),
    }
}

/// Checks the bounds of a received response.
pub fn check_response(response: &Response) -> Result<(), SyncError> {
    match response {
        Response::Vector { vector, .. } if vector.entries.len() > SYNC_AUTHORS_MAX => {
            Err(SyncError::OverBound("too many authors"))
        }
        Response::Events { events, .. } if events.len() > SYNC_BATCH_EVENTS_MAX => {
            Err(SyncError::OverBound("too many events in one batch"))
        }
        Response::Config { files } if files.len() > crate::limits::CHAIN_FILES_MAX => {
            Err(SyncError::OverBound("too many configuration files"))
        }
        _ => Ok(()),
    }
}

/// Where the responder reads events from.
pub trait EventSource {
    /// Why the source could not read (a store error): the answer fails rather than leaving
    /// events out, so a peer never takes a failed read for an empty log.
    type Error;

    /// An author's events from `from` to `to` (inclusive), at most `max`, in log order, as
    /// (sequence, wire bytes) — stored events already are wire bytes, so nothing is re-encoded.
    fn range(
        &self,
        author: &[u8; 32],
        from: u64,
        to: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, Self::Error>;
}

/// Answers a `Want`: the events asked for, in log order, within the batch bounds.
pub fn answer_want<S: EventSource>(ranges: &[Range], source: &S) -> Result<Response, S::Error> {
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    'ranges: for range in ranges {
        let mut from = range.from.max(1);
        loop {
            let room = SYNC_BATCH_EVENTS_MAX.saturating_sub(events.len());
            if room == 0 {
                more = true;
                break 'ranges;
            }
            let chunk = source.range(&range.author, from, range.to, room.min(256))?;
            if chunk.is_empty() {
                break;
            }
            for (seq, wire) in chunk {
                if bytes + wire.len() > SYNC_BATCH_MAX_BYTES && !events.is_empty() {
                    more = true;
                    break 'ranges;
                }
                bytes += wire.len();
                from = seq + 1;
                events.push(wire);
            }
            if range.to.is_some_and(|to| from > to) {
                break;
            }
        }
    }
    Ok(Response::Events {
        events: crate::event::compact_batch(events),
        more,
    })
}

/// What the initiator's side wants and must push, given both vectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ranges to fetch from the responder (including single events that show a fork).
    pub want: Vec<Range>,
    /// Ranges of our own log to push to the responder.
    pub push: Vec<Range>,
}

/// Compares our vector with the peer's. `our_id_at` gives the id of our event at a sequence,
/// to see forks where the peer's head sits below ours.
pub fn plan(
    ours: &VersionVector,
    theirs: &VersionVector,
    our_id_at: impl Fn(&[u8; 32], u64) -> Option<EventId>,
) -> Plan {
    let mut plan = Plan::default();
    for (author, (their_seq, their_head)) in &theirs.entries {
        match ours.entries.get(author) {
            None => plan.want.push(Range {
                author: *author,
                from: 1,
                to: None,
            }),
            Some((our_seq, _)) if their_seq > our_seq => plan.want.push(Range {
                author: *author,
                from: our_seq + 1,
                to: None,
            }),
            Some(_) => {
                if our_id_at(author, *their_seq) != Some(*their_head) {
                    // Two different events at one sequence: fetch theirs as evidence.
                    plan.want.push(Range {
                        author: *author,
                        from: *their_seq,
                        to: Some(*their_seq),
                    });
                }
            }
        }
    }
    for (author, (our_seq, _)) in &ours.entries {
        let their_seq = theirs.seq(author);
        if *our_seq > their_seq {
            plan.push.push(Range {
                author: *author,
                from: their_seq + 1,
                to: None,
            });
        }
    }
    plan
}

/// After a batch of events for `want`, the ranges still to fetch (from just past the last
/// event received for each author), when the responder said there was more.
pub fn remaining(want: &[Range], received: &[Event]) -> Vec<Range> {
    let mut last: BTreeMap<[u8; 32], u64> = BTreeMap::new();
    for e in received {
        let h = e.header();
        let entry = last.entry(h.author).or_insert(0);
        *entry = (*entry).max(h.seq);
    }
    want.iter()
        .filter_map(|r| {
            let from = last.get(&r.author).map_or(r.from, |s| s + 1);
            if r.to.is_some_and(|to| from > to) {
                None
            } else {
                Some(Range {
                    author: r.author,
                    from,
                    to: r.to,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(entries: &[(u8, u64, u8)]) -> VersionVector {
        VersionVector::from_heads(
            entries
                .iter()
                .map(|(a, s, h)| ([*a; 32], *s, Hash32([*h; 32]))),
        )
    }

    #[test]
    fn equal_logs_have_equal_digests_and_an_idle_hello_is_small() -> Result<(), SyncError> {
        let a = vv(&[(1, 5, 9), (2, 3, 8)]);
        let b = vv(&[(2, 3, 8), (1, 5, 9)]);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), vv(&[(1, 5, 9), (2, 4, 8)]).digest());
        let hello = encode(&Request::Hello {
            version: SYNC_VERSION,
            mechanism: Hash32([1; 32]),
            config_version: 3,
            digest: a.digest(),
        })?;
        assert!(hello.len() <= 80, "{} bytes", hello.len());
        assert!(encode(&Response::InSync)?.len() <= 2);
        Ok(())
    }

    #[test]
    fn plan_finds_what_each_side_lacks_and_forks() {
        let ours = vv(&[(1, 5, 9), (2, 3, 8), (4, 2, 2)]);
        let theirs = vv(&[(1, 7, 1), (2, 3, 7), (3, 1, 3)]);
        let plan = plan(&ours, &theirs, |author, seq| {
            (author == &[2; 32] && seq == 3).then_some(Hash32([8; 32]))
        });
        assert!(plan.want.contains(&Range {
            author: [1; 32],
            from: 6,
            to: None
        }));
        assert!(plan.want.contains(&Range {
            author: [3; 32],
            from: 1,
            to: None
        }));
        assert!(
            plan.want.contains(&Range {
                author: [2; 32],
                from: 3,
                to: Some(3)
            }),
            "the fork at author 2 seq 3 is fetched as evidence"
        );
        assert_eq!(
            plan.push,
            vec![Range {
                author: [4; 32],
                from: 1,
                to: None
            }]
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(
            decode::<Request>(&[0xff, 0xff, 0xff]),
            Err(SyncError::Malformed)
        );
        let mut bytes = encode(&Response::InSync).expect("InSync encodes");
        bytes.push(0);
        assert_eq!(decode::<Response>(&bytes), Err(SyncError::Malformed));
        assert_eq!(
            check_request(&Request::Hello {
                version: 99,
                mechanism: Hash32::default(),
                config_version: 1,
                digest: Hash32::default()
            }),
            Err(SyncError::Version(99))
        );
    }
}
