//! The engine: one node's store, keys and clock, and the operations a caseworker's actions
//! become — open a case, record a determination, refer, take a referral through its life,
//! manage the case, share the organisation's keys — plus the decrypted views of what this node
//! may read.
//!
//! Every created event goes through the same admission and fold as a received one
//! (`Store::append_local`), so an honest node never creates an invalid event: if the fold would
//! mark it, it is not written and the caller gets the rule it would break.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::config::Mechanism;
use crate::event::{CaseAction, Event, EventId, HlcClock, Kind};
use crate::keyfiles::NodeSecrets;
use crate::keys::NodeId;
use crate::payload::{self, CaseData};
use crate::store::{ApplyOutcome, FoldKeys, IngestReport, Store, StoreError};
use crate::time_fmt;

mod append;
mod cases;
mod map;
mod referrals;
mod refusal;
mod views;

pub use append::Draft;
pub use referrals::{ReferralRequest, Step};
pub use refusal::Refusal;
pub use views::{
    CaseStatus, CaseSummary, CaseView, Detail, Happened, ReferralView, StepView, TimelineEntry,
    Which, Written,
};

/// Why an operation was refused. Each is one sentence for a caseworker.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "configuration version {version} in force expired at {expired}: this node creates no new case events until the ministry's next version arrives"
    )]
    ConfigExpired { version: u64, expired: String },
    #[error(
        "this node was restored from a backup and stays read-only until it has learned its own latest events from a peer"
    )]
    ReadOnly,
    /// A request refused for what it asks (an unknown id, a note too long…), typed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no case {0} that this node can read (a partner that received a referral reads what was shared with `referral show REF`)"
    )]
    NoCase(String),
    #[error("no referral {0} known to this node")]
    NoReferral(String),
    /// The case was purged (erased by its manager, or past retention): no node keeps its data.
    #[error("case {case} was purged on {at} ({why}): no node keeps its data", why = purge_why(*cause))]
    Erased {
        case: String,
        at: String,
        cause: crate::fold::PurgeCause,
    },
    /// The rule of the mechanism the event would break, typed: interfaces translate it.
    #[error("the event would break a rule of the mechanism: {0}")]
    Rule(crate::fold::Rule),
    /// The event would not be admitted, or would wait for an event this node lacks.
    #[error("the event would break a rule of the mechanism: {0}")]
    NotAccepted(String),
    #[error(transparent)]
    Payload(#[from] payload::PayloadError),
    #[error(transparent)]
    Event(#[from] crate::event::EventError),
}

impl From<crate::config::NotJoined> for EngineError {
    fn from(e: crate::config::NotJoined) -> Self {
        EngineError::Store(e.into())
    }
}

impl From<crate::store::LocalRefusal> for EngineError {
    fn from(refusal: crate::store::LocalRefusal) -> Self {
        match refusal {
            crate::store::LocalRefusal::Broken(rule) => EngineError::Rule(rule),
            crate::store::LocalRefusal::NotAccepted(reason) => EngineError::NotAccepted(reason),
        }
    }
}

/// Why a case was purged, in the command line's English.
fn purge_why(cause: crate::fold::PurgeCause) -> &'static str {
    use crate::event::EraseReason;
    use crate::fold::PurgeCause;
    match cause {
        PurgeCause::Erased(EraseReason::PersonAsked) => "erased: the person asked",
        PurgeCause::Erased(EraseReason::Duplicate) => "erased: a duplicate",
        PurgeCause::Erased(EraseReason::Error) => "erased: opened in error",
        PurgeCause::Retention => "its retention period ran out",
    }
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

/// A node's engine.
pub struct Engine {
    store: Store,
    secrets: NodeSecrets,
    node_id: NodeId,
    org: String,
    keys: FoldKeys,
    clock: HlcClock,
    /// Decrypted case data by case, keyed by the case's replay position: repeated actions on a
    /// case do not decrypt its history again. In memory only, bounded by [`CASE_CACHE_MAX`].
    case_cache: std::sync::Mutex<std::collections::HashMap<EventId, (CaseCacheKey, CaseData)>>,
    /// Events this node created since the daemon last took them, to push to connected peers.
    fresh: Vec<EventId>,
    /// Whether events received from a peer were admitted since the daemon last asked: other
    /// peers may lack them, and a sync round (a digest first) finds out cheaply.
    received: bool,
    /// The partner map read from the documents, rebuilt when a document changes.
    directory: std::sync::Mutex<Option<std::sync::Arc<BTreeMap<String, crate::map::Profile>>>>,
}

/// Most fresh events kept for pushing; past it, sync rounds carry them instead.
pub const FRESH_EVENTS_MAX: usize = 10_000;

type CaseCacheKey = ((crate::event::Hlc, EventId), u32);

/// Most cases whose decrypted data the engine keeps in memory.
pub const CASE_CACHE_MAX: usize = 256;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({} of {})", self.node_id, self.org)
    }
}

pub use crate::store::META_READ_ONLY;
/// Meta key: an operator's override of an expired configuration, until this RFC 3339 time.
pub const META_EXPIRY_OVERRIDE: &str = "expiry_override_until";

fn now_ms(now: OffsetDateTime) -> u64 {
    u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn hlc_text(h: crate::event::Hlc) -> String {
    time_fmt::rfc3339(h.to_datetime())
}

impl Engine {
    /// Opens the engine over a store, with this node's secrets and organisation.
    pub fn open(store: Store, secrets: NodeSecrets, org: &str) -> Result<Self, EngineError> {
        let epochs = store.org_epoch_identities(&secrets.age)?;
        let keys = FoldKeys {
            node_key: secrets.signing.public().to_bytes(),
            node_age: secrets.age.clone(),
            org: org.to_string(),
            epochs,
        };
        let clock = HlcClock::new(store.hlc_seen());
        Ok(Self {
            node_id: secrets.signing.public().node_id(),
            store,
            secrets,
            org: org.to_string(),
            keys,
            clock,
            case_cache: Default::default(),
            fresh: Vec::new(),
            received: false,
            directory: Default::default(),
        })
    }

    /// Rebuilds what the engine keeps in memory from the store, after a job failed halfway (a
    /// panic unwound out of it: its write transaction was dropped, so the store holds only what
    /// committed). Keys, caches and the list of fresh events are read or cleared again.
    pub fn recover(&mut self) -> Result<(), EngineError> {
        self.keys.epochs = self.store.org_epoch_identities(&self.secrets.age)?;
        self.case_cache = Default::default();
        self.directory = Default::default();
        self.fresh.clear();
        self.store.forget_cached();
        if self.store.hlc_seen() > self.clock.last() {
            self.clock.observe(self.store.hlc_seen());
        }
        Ok(())
    }

    /// Writes a backup of the whole database to a new file at `to`, signed with this node's
    /// key (only this node's key restores it); returns the number of events it holds.
    pub fn backup(&self, to: &std::path::Path) -> Result<u64, EngineError> {
        Ok(self.store.backup(to, &self.secrets.signing)?)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn node_key(&self) -> [u8; 32] {
        self.keys.node_key
    }

    pub fn org(&self) -> &str {
        &self.org
    }

    /// This node's own age identity (to open bundles addressed to it).
    pub fn node_identity(&self) -> Option<age::x25519::Identity> {
        Some(self.secrets.age.clone())
    }

    /// The key epochs of the organisation this node holds.
    pub fn epochs_held(&self) -> Vec<u32> {
        self.keys.epochs.keys().copied().collect()
    }

    /// The configuration version in force.
    pub fn mechanism(&self) -> Result<&Mechanism, EngineError> {
        Ok(self.store.config().require()?.as_ref())
    }

    /// The configuration version in force, shared (`None` before the node joins).
    pub fn current_config(&self) -> Option<std::sync::Arc<Mechanism>> {
        self.store.config().current().cloned()
    }

    /// The highest configuration version held (0 before the node joins).
    pub fn config_version(&self) -> u64 {
        self.store.config().highest()
    }

    /// A local account of the web UI (its password hash is checked by the caller).
    pub fn user(&self, name: &str) -> Result<Option<crate::store::User>, EngineError> {
        Ok(self.store.user(name)?)
    }

    /// How many events, held events and waiting events the log holds.
    pub fn log_counts(&self) -> Result<crate::store::LogCounts, EngineError> {
        Ok(self.store.log_counts()?)
    }

    /// Admits, stores and folds received events.
    pub fn receive(
        &mut self,
        events: &[Event],
        now: OffsetDateTime,
    ) -> Result<IngestReport, EngineError> {
        let report = self.store.ingest(events, &mut self.keys, now_ms(now))?;
        // Only admitted events move the clock: admission holds back any event beyond the skew
        // bound, and a refused one (an outsider's bundle ten years ahead) never counts.
        self.observe(report.latest_hlc, now);
        self.received |= !report.admitted.is_empty();
        if !report.maps_changed.is_empty() {
            self.forget_directory();
        }
        self.note_purges(&report, now)?;
        Ok(report)
    }

    /// After a receipt: a case erased, withdrawn or past retention by what arrived leaves no
    /// decrypted copy in the cache, and each such purge is in the audit log (the case id, the
    /// author's organisation, the reason in clear; never the data).
    fn note_purges(
        &mut self,
        report: &IngestReport,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        let mut entries = Vec::new();
        for id in &report.admitted {
            let Some(event) = self.store.event(id)? else {
                continue;
            };
            let h = event.header();
            let (action, why) = match &h.kind {
                Kind::CaseUpdate(CaseAction::Erase { reason }) => {
                    ("case.erase.received", reason.as_str().to_string())
                }
                Kind::CaseUpdate(CaseAction::ConsentWithdrawn { .. }) => {
                    ("case.consent_withdrawn.received", String::new())
                }
                _ => continue,
            };
            let Some(case) = h.subject else { continue };
            let from = self
                .store
                .config()
                .version(h.config_version)
                .and_then(|m| m.node_by_key(&h.author).map(|n| n.org.clone()))
                .unwrap_or_else(|| "?".into());
            entries.push((case, action, format!("from {from}"), why));
        }
        for case in &report.purged {
            entries.push((*case, "case.purge", "retention".into(), "retention".into()));
        }
        self.audit_purges(entries, now)
    }

    /// Forgets the cached decrypted data of purged cases and writes one audit entry for each:
    /// (case, action, user, reason in clear).
    fn audit_purges(
        &mut self,
        entries: Vec<(EventId, &str, String, String)>,
        now: OffsetDateTime,
    ) -> Result<(), EngineError> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Ok(mut cache) = self.case_cache.lock() {
            for (case, ..) in &entries {
                cache.remove(case);
            }
        }
        for (case, action, user, why) in entries {
            self.store.audit(&crate::store::AuditEntry {
                at: time_fmt::rfc3339(now),
                user,
                action: action.into(),
                subject: format!("{} {why}", case.to_hex()).trim_end().to_string(),
            })?;
        }
        Ok(())
    }

    /// Moves the clock past an admitted timestamp, never past the skew bound from `now`.
    fn observe(&mut self, seen: crate::event::Hlc, now: OffsetDateTime) {
        let skew_ms = self
            .store
            .config()
            .current()
            .map_or(0, |m| u64::from(m.doc.sop.clock_skew_secs) * 1000);
        if seen.ms <= now_ms(now).saturating_add(skew_ms) {
            self.clock.observe(seen);
        }
    }

    fn note_fresh(&mut self, ids: &[EventId]) {
        if self.fresh.len() + ids.len() > FRESH_EVENTS_MAX {
            self.fresh.clear();
        } else {
            self.fresh.extend_from_slice(ids);
        }
    }

    /// Whether events from peers were admitted since the last call.
    pub fn take_received(&mut self) -> bool {
        std::mem::take(&mut self.received)
    }

    /// The events this node created since the last call, to push to connected peers.
    pub fn take_fresh(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.fresh)
            .iter()
            .filter_map(|id| self.store.event(id).ok().flatten())
            .collect()
    }

    /// Applies configuration files, then retries events held for a version not held before.
    pub fn apply_config(
        &mut self,
        files: &[crate::config::chain::SignedFile],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, EngineError> {
        let outcome = self.store.apply_config(files, now)?;
        if !outcome.accepted.is_empty() {
            let report = self.store.retry_all_held(&mut self.keys, now_ms(now))?;
            self.observe(report.latest_hlc, now);
        }
        Ok(outcome)
    }

    /// Retries the held events whose time has come and drops those that waited too long (call
    /// as time passes; incremental and bounded).
    pub fn retry_held(&mut self, now: OffsetDateTime) -> Result<IngestReport, EngineError> {
        let report = self.store.retry_due(&mut self.keys, now_ms(now))?;
        self.observe(report.latest_hlc, now);
        Ok(report)
    }

    /// Purges the cases whose retention period ran out (the SOP's `retention_days` after a
    /// closed case's last activity, or `open_case_inactive_days` for an open one): the bodies
    /// of their events are dropped. Returns the cases purged.
    pub fn purge_due(&mut self, now: OffsetDateTime) -> Result<Vec<EventId>, EngineError> {
        let purged = self.store.purge_due(&mut self.keys, now_ms(now))?;
        let entries = purged
            .iter()
            .map(|case| (*case, "case.purge", "retention".into(), "retention".into()))
            .collect();
        self.audit_purges(entries, now)?;
        Ok(purged)
    }

    /// Installs organisation epochs imported by hand, and re-reads what they open.
    pub fn import_epochs(
        &mut self,
        epochs: &[(u32, age::x25519::Identity)],
        now: OffsetDateTime,
    ) -> Result<crate::store::ImportOutcome, EngineError> {
        let recipient = self.secrets.age.to_public().to_string();
        let outcome = self
            .store
            .import_org_epochs(&self.org, &recipient, epochs)?;
        if !outcome.installed.is_empty() {
            self.keys.epochs = self.store.org_epoch_identities(&self.secrets.age)?;
            self.store
                .reread(&outcome.installed, &mut self.keys, now_ms(now))?;
        }
        Ok(outcome)
    }

    /// The coordination report for referrals sent in [from, to).
    pub fn report(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<crate::report::Report, EngineError> {
        let m = self.store.config().require()?.clone();
        let rows = self.store.report_rows(now_ms(from), now_ms(to))?;
        let directory = self.directory()?;
        Ok(crate::report::build(rows, &m, &directory, from, to, now))
    }
}
