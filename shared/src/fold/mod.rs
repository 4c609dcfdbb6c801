//! Validity: the mechanism's rules, judged by the fold over admitted events.
//!
//! An admitted event that breaks a rule stays in the log, marked with the rule, and has no
//! effect. Rules that need only the clear header are judged by every node; rules that need the
//! payload are judged by every node that can read it. Each case and each referral is an entity
//! whose state is the replay of its valid events in one deterministic order — (HLC, event id),
//! which every valid event's causal dependencies precede — so every node that holds the same
//! events computes the same state, whatever order they arrived in.
//!
//! `rules` holds the rules as pure functions; `replay` runs them over a [`FoldStore`]: the
//! dispatch of one event, the case and referral replays, key-share receipt. The store
//! implements [`FoldStore`] over its write transaction; tests implement it in memory
//! (`memory`), so the case state machine is tested without a database.

mod replay;
mod rules;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use replay::Fold;
pub use rules::*;

use crate::config::ConfigState;
use crate::event::{Event, EventId, Header, Kind};
use crate::payload;

/// How an event belongs to a case or a referral, in the link index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Link {
    /// A case-level event (determination, case update) of a case.
    CaseEvent,
    /// A referral sent for a case.
    Referral,
    /// A step of a referral.
    Step,
}

/// A map change or snapshot to apply to an organisation's document.
#[derive(Debug, Clone, Copy)]
pub struct MapBody<'a> {
    /// The organisation whose profile the event changes.
    pub org: &'a str,
    pub id: &'a EventId,
    pub author: &'a [u8; 32],
    /// The configuration version the event claims (who may edit is judged under it).
    pub claimed_version: u64,
    pub body: &'a [u8],
    pub snapshot: bool,
}

/// What folding a map body came to.
#[derive(Debug)]
pub enum MapFold {
    /// Judged: applied (`None`), or the rule it breaks.
    Done(Option<Rule>),
    /// Some of its Automerge dependencies are not in the document yet: it waits for them.
    Waits,
}

/// Why the fold could not go on: what the store holds contradicts what admission let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("admitted event {0} has no author in its configuration")]
    NoAuthor(String),
    #[error("missing configuration version {0}")]
    MissingVersion(u64),
    #[error("a received key could not be sealed for storage: {0}")]
    Seal(String),
}

/// What the fold reads and writes: the store's tables inside one write transaction, or a map
/// in memory. Reads of other events go through [`Lookup`]; every write is one the fold decided.
pub trait FoldStore: Lookup {
    /// An admitted event.
    fn event(&self, id: &EventId) -> Result<Option<Event>, Self::Error>;
    /// Whether the event has been folded (it has a verdict).
    fn is_folded(&self, id: &EventId) -> Result<bool, Self::Error> {
        Ok(self.verdict(id)?.is_some())
    }
    fn put_verdict(&mut self, id: &EventId, verdict: &Verdict) -> Result<(), Self::Error>;
    fn put_case(&mut self, record: &CaseRecord) -> Result<(), Self::Error>;
    fn referral(&self, id: &EventId) -> Result<Option<ReferralRecord>, Self::Error>;
    /// Writes a referral's record (and whatever the store derives from it, e.g. report rows).
    fn put_referral(&mut self, record: &ReferralRecord) -> Result<(), Self::Error>;
    /// Links an event to a case or referral; returns whether the link is new.
    fn link(&mut self, entity: &EventId, event: &EventId, link: Link) -> Result<bool, Self::Error>;
    /// The events linked to an entity with the given link, in id order.
    fn linked(&self, entity: &EventId, link: Link) -> Result<Vec<EventId>, Self::Error>;
    /// Records that `waiter` waits for `dependency` to be folded.
    fn wait_for(&mut self, dependency: &EventId, waiter: &EventId) -> Result<(), Self::Error>;
    /// Removes and returns the events that waited for `dependency`, in id order.
    fn take_waiters(&mut self, dependency: &EventId) -> Result<Vec<EventId>, Self::Error>;
    /// Records an event addressed to this node's organisation under an epoch it lacks.
    fn mark_unread(&mut self, id: &EventId, epoch: u32) -> Result<(), Self::Error>;
    /// Removes and returns the unread events under any of these epochs, in id order.
    fn take_unread(&mut self, epochs: &[u32]) -> Result<Vec<EventId>, Self::Error>;
    /// Records a valid key share of `epoch` to the node `to`.
    fn record_key_share(&mut self, to: &[u8; 32], epoch: u32) -> Result<(), Self::Error>;
    /// Keeps an organisation epoch this node received, sealed to the node's own recipient.
    fn install_org_key(&mut self, epoch: u32, sealed: &[u8]) -> Result<(), Self::Error>;
    /// Records a map event of an organisation (change or snapshot).
    fn note_map_event(
        &mut self,
        org: &str,
        id: &EventId,
        snapshot: bool,
    ) -> Result<(), Self::Error>;
    /// Applies a map body to the organisation's document (`map::apply`, panic-safe).
    fn apply_map(&mut self, config: &ConfigState, map: MapBody<'_>)
    -> Result<MapFold, Self::Error>;
    /// Map events whose missing Automerge dependencies the last applied body brought.
    fn take_woken(&mut self) -> Vec<EventId>;
    /// Keeps only the header of an event (its case was purged); nothing when already so.
    fn prune_body(&mut self, id: &EventId) -> Result<(), Self::Error>;
}

/// Whether `key` may write a snapshot of `org`'s profile under any version up to the one the
/// event claims (a snapshot carries every editor's changes).
pub fn may_write_map(config: &ConfigState, key: &[u8; 32], org: &str, claimed: u64) -> bool {
    config
        .all()
        .iter()
        .take_while(|m| m.doc.version <= claimed)
        .any(|m| {
            m.node_by_key(key)
                .is_some_and(|n| crate::map::may_edit(m, &n.org, org).is_ok())
        })
}

/// The keys the fold reads with: this node's own, and its organisation's epochs.
#[derive(Clone)]
pub struct FoldKeys {
    pub node_key: [u8; 32],
    pub node_age: age::x25519::Identity,
    pub org: String,
    pub epochs: BTreeMap<u32, age::x25519::Identity>,
}

impl std::fmt::Debug for FoldKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FoldKeys({}, epochs {:?})",
            self.org,
            self.epochs.keys().collect::<Vec<_>>()
        )
    }
}

/// Decrypts an event's payload when it is addressed to this node's organisation and the node
/// holds the epoch. Returns the payload (or `Some(Err)` if it does not open or decode) and,
/// when the node lacks the epoch, the epoch it waits for.
pub fn decrypt_event(
    event: &Event,
    keys: &FoldKeys,
) -> (Option<Result<Decrypted, ()>>, Option<u32>) {
    let h = event.header();
    if !h.kind.is_encrypted_to_orgs() {
        return (None, None);
    }
    let (Some(epoch), Some(body)) = (h.epoch_for(&keys.org), event.body()) else {
        return (None, None);
    };
    let Some(identity) = keys.epochs.get(&epoch) else {
        return (None, Some(epoch));
    };
    let Ok(plain) = payload::open(body, identity) else {
        return (Some(Err(())), None);
    };
    let plain = zeroize::Zeroizing::new(plain);
    let decoded = match &h.kind {
        Kind::CaseOpen => payload::decode(&plain).map(Decrypted::CaseOpen),
        Kind::StatusDetermination => payload::decode(&plain).map(Decrypted::Determination),
        Kind::CaseUpdate(_) => payload::decode(&plain).map(Decrypted::CaseUpdate),
        Kind::ReferralSend { .. } => payload::decode(&plain).map(Decrypted::Referral),
        Kind::ReferralUpdate { .. } => payload::decode(&plain).map(Decrypted::ReferralUpdate),
        _ => return (None, None),
    };
    (Some(decoded.map_err(|_| ())), None)
}

/// The organisation of an admitted event's author, from the version the event claims.
pub(crate) fn author_org<'c>(config: &'c ConfigState, h: &Header) -> Option<&'c str> {
    config
        .version(h.config_version)?
        .node_by_key(&h.author)
        .map(|n| n.org.as_str())
}
