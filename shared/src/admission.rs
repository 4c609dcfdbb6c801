//! Admission: the one function that decides whether an event enters the log, used by every
//! entry path (created here, received from a peer, imported from a bundle).
//!
//! Admission checks what can be checked from the event and the author's log alone: mechanism
//! id, signature, chain continuity, that the author is an endorsed node not past its removal
//! cut-off, that the claimed configuration version never decreases along the author's chain,
//! and the size and stanza-count bounds. An event that claims a configuration version this node
//! does not hold yet, that comes before its author's previous events, or whose timestamp is
//! beyond the clock-skew bound, is held back, not refused. Whether an admitted event follows
//! the mechanism's rules is the fold's business (`fold`), not admission's.

use crate::config::ConfigState;
use crate::config::Mechanism;
use crate::event::{Event, EventError, EventId, Kind};
use crate::payload::count_x25519_stanzas;

/// What the log holds about an author, as admission needs it.
pub trait LogView {
    /// Why the log could not be read: admission then decides nothing (a failed read is never
    /// taken for an empty log, which would refuse or hold an event the log continues).
    type Error;

    /// The author's last admitted event: (sequence, id, claimed configuration version).
    fn head(&self, author: &[u8; 32]) -> Result<Option<(u64, EventId, u64)>, Self::Error>;
    /// The id of the author's event at `seq`, if admitted.
    fn id_at(&self, author: &[u8; 32], seq: u64) -> Result<Option<EventId>, Self::Error>;
}

/// Why an event waits outside the log for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// It claims a configuration version this node does not hold yet.
    ConfigVersion(u64),
    /// Its timestamp is ahead of this node's clock by more than the skew bound; it becomes
    /// admissible at `due_ms`.
    Future { ahead_ms: u64, due_ms: u64 },
    /// The author's earlier events have not arrived: the log holds up to `have`.
    Gap { have: u64 },
}

/// Why an event was refused; it never enters the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Malformed(#[from] EventError),
    #[error("it belongs to another mechanism")]
    WrongMechanism,
    #[error("its signature does not verify")]
    BadSignature,
    #[error("its author is not an endorsed node of configuration version {version}")]
    NotEndorsed { version: u64 },
    #[error("its author was removed from the mechanism after sequence {cutoff}")]
    PastCutoff { cutoff: u64 },
    #[error(
        "it claims configuration version {claimed}, lower than its author's previous event ({previous})"
    )]
    ConfigVersionDecreasing { previous: u64, claimed: u64 },
    #[error(
        "its ciphertext has {stanzas} recipient stanza(s) for {orgs} organisation(s) addressed"
    )]
    StanzaCount { stanzas: usize, orgs: usize },
    #[error("it does not follow its author's previous event (broken chain)")]
    BrokenChain,
    #[error(
        "too many events of its author (or of authors this node does not know) wait already: not held now, it will come again with a later sync"
    )]
    HoldFull,
}

/// Admission's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Enters the log.
    Admit,
    /// Already in the log.
    Duplicate,
    /// Waits outside the log.
    Hold(Hold),
    /// Never enters the log.
    Refuse(Refusal),
    /// Another event holds this author's sequence number: evidence, never merged.
    Equivocation { existing: EventId },
}

impl Admission {
    pub fn is_admit(&self) -> bool {
        matches!(self, Admission::Admit)
    }
}

/// Decides on one event. `now_ms` is this node's clock (Unix milliseconds). Fails only when
/// the log cannot be read.
pub fn admit<L: LogView>(
    event: &Event,
    mechanism_id: &crate::config::Hash32,
    config: &ConfigState,
    log: &L,
    now_ms: u64,
) -> Result<Admission, L::Error> {
    let decision = decide(event, mechanism_id, config, log, now_ms)?;
    // An admitted event was checked against its signature (the verifying end of the pair
    // whose signing end is `Event::sign`).
    debug_assert!(
        !decision.is_admit() || event.verify_signature().is_ok(),
        "an admitted event's signature verifies"
    );
    Ok(decision)
}

fn decide<L: LogView>(
    event: &Event,
    mechanism_id: &crate::config::Hash32,
    config: &ConfigState,
    log: &L,
    now_ms: u64,
) -> Result<Admission, L::Error> {
    let h = event.header();
    if &h.mechanism != mechanism_id {
        return Ok(Admission::Refuse(Refusal::WrongMechanism));
    }
    if event.verify_signature().is_err() {
        return Ok(Admission::Refuse(Refusal::BadSignature));
    }
    // Removal cut-offs come from the newest version held: a removal applies to every event
    // of the node, whatever version the event claims.
    let Some(newest) = config.current() else {
        return Ok(Admission::Hold(Hold::ConfigVersion(h.config_version)));
    };
    if let Some(cutoff) = newest.removal_cutoff_by_key(&h.author)
        && h.seq > cutoff
    {
        return Ok(Admission::Refuse(Refusal::PastCutoff { cutoff }));
    }
    let Some(claimed) = config.version(h.config_version) else {
        return Ok(Admission::Hold(Hold::ConfigVersion(h.config_version)));
    };
    if !author_endorsed(claimed, &h.author) {
        return Ok(Admission::Refuse(Refusal::NotEndorsed {
            version: h.config_version,
        }));
    }
    if let Some(refusal) = check_stanzas(event) {
        return Ok(Admission::Refuse(refusal));
    }
    // Chain continuity and equivocation.
    match log.head(&h.author)? {
        Some((seq, _, _)) if h.seq <= seq => {
            return Ok(match log.id_at(&h.author, h.seq)? {
                Some(existing) if existing == event.id() => Admission::Duplicate,
                Some(existing) => Admission::Equivocation { existing },
                None => Admission::Refuse(Refusal::BrokenChain),
            });
        }
        Some((seq, head_id, head_version)) if h.seq == seq + 1 => {
            if h.prev != Some(head_id) {
                return Ok(Admission::Refuse(Refusal::BrokenChain));
            }
            if h.config_version < head_version {
                return Ok(Admission::Refuse(Refusal::ConfigVersionDecreasing {
                    previous: head_version,
                    claimed: h.config_version,
                }));
            }
        }
        Some((seq, _, _)) => return Ok(Admission::Hold(Hold::Gap { have: seq })),
        None if h.seq == 1 => {
            if h.prev.is_some() {
                return Ok(Admission::Refuse(Refusal::BrokenChain));
            }
        }
        None if h.seq == 0 => return Ok(Admission::Refuse(Refusal::BrokenChain)),
        None => return Ok(Admission::Hold(Hold::Gap { have: 0 })),
    }
    let skew_ms = u64::from(claimed.doc.sop.clock_skew_secs) * 1000;
    if h.hlc.ms > now_ms.saturating_add(skew_ms) {
        return Ok(Admission::Hold(Hold::Future {
            ahead_ms: h.hlc.ms - now_ms,
            due_ms: h.hlc.ms - skew_ms,
        }));
    }
    Ok(Admission::Admit)
}

/// Whether the author is an endorsed node of the version its event claims. A removed node's
/// events up to its cut-off stay admissible under the versions that listed it.
fn author_endorsed(version: &Mechanism, author: &[u8; 32]) -> bool {
    version.node_by_key(author).is_some()
}

fn check_stanzas(event: &Event) -> Option<Refusal> {
    let h = event.header();
    let body = event.body()?;
    let expected = match &h.kind {
        Kind::KeyShare { .. } => {
            if !h.orgs.is_empty() {
                return Some(Refusal::StanzaCount {
                    stanzas: count_x25519_stanzas(body).unwrap_or(0),
                    orgs: h.orgs.len(),
                });
            }
            1
        }
        k if k.is_encrypted_to_orgs() => h.orgs.len(),
        _ => return None,
    };
    match count_x25519_stanzas(body) {
        Some(n) if n == expected && n > 0 => None,
        other => Some(Refusal::StanzaCount {
            stanzas: other.unwrap_or(0),
            orgs: h.orgs.len(),
        }),
    }
}
