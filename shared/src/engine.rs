//! The engine: one node's store, keys and clock, and the operations a caseworker's actions
//! become — open a case, record a determination, refer, take a referral through its life,
//! manage the case, share the organisation's keys — plus the decrypted views of what this node
//! may read.
//!
//! Every created event goes through the same admission and fold as a received one
//! (`Store::append_local`), so an honest node never creates an invalid event: if the fold would
//! mark it, it is not written and the caller gets the rule it would break.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Mechanism, Role};
use crate::event::{
    Addressed, CaseAction, EVENT_FORMAT, Event, EventId, Header, HlcClock, Kind, Transition,
    Urgency,
};
use crate::fold::{self, CaseRecord, Decrypted, ReferralRecord, Status, Verdict};
use crate::keyfiles::NodeSecrets;
use crate::keys::{self, NodeId};
use crate::payload::{
    self, CaseData, CaseOpenPayload, CaseUpdatePayload, Consent, DeterminationPayload,
    EmergencyOverride, ReferralPayload, ReferralUpdatePayload, SHAREABLE_FIELDS,
};
use crate::store::{ApplyOutcome, FoldKeys, IngestReport, Store, StoreError};
use crate::time_fmt;

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
    #[error("{0}")]
    Invalid(String),
    #[error("no case {0} that this node can read")]
    NoCase(String),
    #[error("no referral {0} known to this node")]
    NoReferral(String),
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

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

/// A new referral as the caseworker asks for it.
#[derive(Debug, Clone)]
pub struct ReferralRequest {
    pub case: EventId,
    pub to_org: String,
    pub category: String,
    pub urgency: Urgency,
    /// Which of the person's fields to share (data minimisation).
    pub share: Vec<String>,
    pub note: String,
    /// An emergency override of consent, with its reason.
    pub emergency_override: Option<String>,
}

/// An event about to be created: its kind, what it is about, whom it is addressed to, and
/// its payload (encrypted to the current epochs of `orgs`).
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: Kind,
    pub subject: Option<EventId>,
    pub deps: Vec<EventId>,
    pub orgs: Vec<String>,
    pub payload: Decrypted,
}

impl Draft {
    pub fn new(
        kind: Kind,
        subject: Option<EventId>,
        orgs: Vec<String>,
        payload: Decrypted,
    ) -> Self {
        Self {
            kind,
            subject,
            deps: Vec::new(),
            orgs,
            payload,
        }
    }
}

fn encode_payload(p: &Decrypted) -> Result<Vec<u8>, payload::PayloadError> {
    match p {
        Decrypted::CaseOpen(x) => payload::encode(x),
        Decrypted::Determination(x) => payload::encode(x),
        Decrypted::CaseUpdate(x) => payload::encode(x),
        Decrypted::Referral(x) => payload::encode(x),
        Decrypted::ReferralUpdate(x) => payload::encode(x),
    }
}

/// One step of a referral, as the receiving (or sending) caseworker takes it.
#[derive(Debug, Clone)]
pub struct Step {
    pub transition: Transition,
    /// The decline reason code (required for a decline).
    pub reason: Option<String>,
    pub note: String,
    /// The outcome, on completion.
    pub outcome: Option<String>,
}

impl Step {
    /// A step with a note and nothing else.
    pub fn new(transition: Transition, note: &str) -> Self {
        Self {
            transition,
            reason: None,
            note: note.to_string(),
            outcome: None,
        }
    }
}

/// One line of a case's timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub id: String,
    pub at: String,
    pub kind: String,
    pub org: String,
    /// The rule the event broke, if any.
    pub invalid: Option<String>,
    /// A readable description (decrypted text where this node may read it).
    pub text: String,
}

/// A referral as a caseworker sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferralView {
    pub id: String,
    pub case: String,
    pub from_org: String,
    pub to_org: String,
    pub category: String,
    pub urgency: String,
    pub status: String,
    pub sent_at: String,
    pub acknowledged_at: Option<String>,
    pub accepted_at: Option<String>,
    pub decided_at: Option<String>,
    pub completed_at: Option<String>,
    pub decline_reason: Option<String>,
    pub overdue: Option<String>,
    /// Whether this node can read the referral's contents.
    pub readable: bool,
    /// The shared fields, when readable.
    pub shared: BTreeMap<String, String>,
    pub note: Option<String>,
    pub invalid: Option<String>,
}

/// A case as this node may read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseView {
    pub id: String,
    pub opened_at: String,
    pub opened_by: String,
    pub manager: String,
    pub status: String,
    pub data: CaseData,
    pub determinations: Vec<String>,
    pub timeline: Vec<TimelineEntry>,
    pub referrals: Vec<ReferralView>,
}

/// A case in a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: String,
    pub opened_at: String,
    pub manager: String,
    pub status: String,
    pub case_type: String,
    pub site: String,
    pub name: String,
    pub needs: Vec<String>,
    pub referrals: usize,
    pub last_activity: String,
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
        Ok(report)
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

    /// Whether this node may create case events now; the reason if not.
    pub fn can_create_case_events(&self, now: OffsetDateTime) -> Result<(), EngineError> {
        if self.store.meta(META_READ_ONLY)?.is_some() {
            return Err(EngineError::ReadOnly);
        }
        let m = self.mechanism()?;
        if m.is_expired(now) {
            let override_until = self
                .store
                .meta(META_EXPIRY_OVERRIDE)?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| time_fmt::parse_rfc3339(&s));
            if override_until.is_none_or(|until| now >= until) {
                return Err(EngineError::ConfigExpired {
                    version: m.doc.version,
                    expired: time_fmt::rfc3339(m.doc.expires_at),
                });
            }
        }
        Ok(())
    }

    /// Builds, signs and appends an event; nothing is written if a rule would be broken.
    fn append(&mut self, draft: Draft, now: OffsetDateTime) -> Result<EventId, EngineError> {
        let ids = self.append_batch(vec![draft], now)?;
        ids.into_iter()
            .next()
            .ok_or_else(|| invalid("nothing was appended"))
    }

    /// Builds, encrypts (on every core), signs and appends several events in one durable
    /// transaction. All are written, or — if any would break a rule — none is.
    pub fn append_batch(
        &mut self,
        drafts: Vec<Draft>,
        now: OffsetDateTime,
    ) -> Result<Vec<EventId>, EngineError> {
        let m = self.store.config().require()?.clone();
        if drafts.iter().any(|d| d.kind.is_case_event()) {
            self.can_create_case_events(now)?;
        }
        struct Prepared {
            draft: Draft,
            addressed: Vec<Addressed>,
            recipients: Vec<age::x25519::Recipient>,
            plain: zeroize::Zeroizing<Vec<u8>>,
        }
        let mut prepared = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let mut addressed = Vec::new();
            let mut recipients = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for org in &draft.orgs {
                if !seen.insert(org.clone()) {
                    continue;
                }
                let (epoch, recipient) = m.current_epoch(org).ok_or_else(|| {
                    invalid(format!(
                        "`{org}` has no encryption key in the configuration yet: it cannot be sent case data"
                    ))
                })?;
                addressed.push(Addressed {
                    org: org.clone(),
                    epoch,
                });
                recipients.push(recipient.clone());
            }
            let plain = zeroize::Zeroizing::new(encode_payload(&draft.payload)?);
            prepared.push(Prepared {
                draft,
                addressed,
                recipients,
                plain,
            });
        }
        // Encryption dominates: spread it over the cores.
        let bodies: Vec<Result<Vec<u8>, payload::PayloadError>> = {
            let seal = |p: &Prepared| {
                let refs: Vec<&age::x25519::Recipient> = p.recipients.iter().collect();
                payload::seal(&p.plain, &refs)
            };
            let threads = crate::limits::batch_threads();
            if prepared.len() < 4 || threads < 2 {
                prepared.iter().map(seal).collect()
            } else {
                let chunk = prepared.len().div_ceil(threads);
                std::thread::scope(|scope| {
                    let handles: Vec<_> = prepared
                        .chunks(chunk)
                        .map(|part| scope.spawn(move || part.iter().map(seal).collect::<Vec<_>>()))
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| {
                            h.join().unwrap_or_else(|_| {
                                vec![Err(payload::PayloadError::Encrypt(
                                    "an encryption thread failed".into(),
                                ))]
                            })
                        })
                        .collect()
                })
            }
        };
        // Signing chains each event to the previous one: in order, on one core.
        let head = self.store.head(&self.keys.node_key)?;
        let first_seq = head.map(|h| h.0).unwrap_or(0) + 1;
        let mut prev = head.map(|h| h.1);
        let config_version = m.doc.version.max(head.map(|h| h.2).unwrap_or(0));
        let mut events = Vec::with_capacity(prepared.len());
        for (seq, (p, body)) in (first_seq..).zip(prepared.into_iter().zip(bodies)) {
            let event = self.sign(
                p.draft.kind,
                p.draft.subject,
                p.draft.deps,
                p.addressed,
                body?,
                (seq, prev, config_version),
                now,
            )?;
            prev = Some(event.id());
            events.push((event, Some(p.draft.payload)));
        }
        let ids: Vec<EventId> = events.iter().map(|(e, _)| e.id()).collect();
        match self
            .store
            .append_local_batch(events, &mut self.keys, now_ms(now))?
        {
            Ok(()) => {
                self.note_fresh(&ids);
                Ok(ids)
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Signs a header at the given position of this node's log.
    #[allow(clippy::too_many_arguments)]
    fn sign(
        &mut self,
        kind: Kind,
        subject: Option<EventId>,
        deps: Vec<EventId>,
        orgs: Vec<Addressed>,
        body: Vec<u8>,
        (seq, prev, config_version): (u64, Option<EventId>, u64),
        now: OffsetDateTime,
    ) -> Result<Event, EngineError> {
        let mechanism = self
            .store
            .config()
            .mechanism_id()
            .ok_or(StoreError::NotJoined)?;
        let header = Header {
            format: EVENT_FORMAT,
            mechanism,
            author: self.keys.node_key,
            seq,
            prev,
            config_version,
            hlc: self.clock.tick(now_ms(now)),
            kind,
            subject,
            deps,
            orgs,
            body_hash: Default::default(),
            body_len: 0,
        };
        Ok(Event::sign(header, body, &self.secrets.signing)?)
    }

    /// Signs the next event of this node's log.
    fn sign_next(
        &mut self,
        kind: Kind,
        body: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<Event, EngineError> {
        let m = self.store.config().require()?.clone();
        let head = self.store.head(&self.keys.node_key)?;
        let position = (
            head.map(|h| h.0).unwrap_or(0) + 1,
            head.map(|h| h.1),
            m.doc.version.max(head.map(|h| h.2).unwrap_or(0)),
        );
        self.sign(kind, None, vec![], vec![], body, position, now)
    }

    /// Opens a case. The case is addressed to this organisation (its first case manager) and,
    /// when its type requires a status determination, to the type's authorities.
    pub fn open_case(
        &mut self,
        data: CaseData,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        data.validate()?;
        let m = self.store.config().require()?.clone();
        let case_type = m
            .case_type(&data.case_type)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown case type `{}`",
                    keys::truncate_for_error(&data.case_type)
                ))
            })?
            .clone();
        if m.site(&data.site).is_none() {
            return Err(invalid(format!(
                "unknown site `{}`",
                keys::truncate_for_error(&data.site)
            )));
        }
        for need in &data.needs {
            if m.category(need).is_none() {
                return Err(invalid(format!(
                    "needs: unknown service category `{}`",
                    keys::truncate_for_error(need)
                )));
            }
        }
        let mut orgs = vec![self.org.clone()];
        if case_type.requires_status_determination {
            orgs.extend(
                case_type
                    .status_authorities
                    .iter()
                    .filter(|a| m.current_epoch(a).is_some())
                    .cloned(),
            );
        }
        let payload = Decrypted::CaseOpen(CaseOpenPayload {
            data,
            by: by.to_string(),
        });
        self.append(Draft::new(Kind::CaseOpen, None, orgs, payload), now)
    }

    /// Records a status / case-type determination for a case (by an authority).
    pub fn determine_status(
        &mut self,
        case: EventId,
        case_type: &str,
        determined: bool,
        note: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let record = self.readable_case_record(&case)?;
        let payload = Decrypted::Determination(DeterminationPayload {
            case_type: case_type.to_string(),
            determined,
            note: note.to_string(),
            by: by.to_string(),
        });
        self.append(
            Draft::new(
                Kind::StatusDetermination,
                Some(case),
                record.readers.clone(),
                payload,
            ),
            now,
        )
    }

    fn readable_case_record(&self, case: &EventId) -> Result<CaseRecord, EngineError> {
        let record = self
            .store
            .case_record(case)?
            .ok_or_else(|| EngineError::NoCase(case.short()))?;
        if !record.readers.iter().any(|r| r == &self.org) {
            return Err(EngineError::NoCase(case.short()));
        }
        Ok(record)
    }

    /// The current data of a case this node can read (from its opening or latest transfer,
    /// with the latest consent recorded), from the cache when the case has not changed.
    fn case_data(&self, record: &CaseRecord) -> Result<CaseData, EngineError> {
        let key = (record.last, record.event_count);
        if let Ok(cache) = self.case_cache.lock()
            && let Some((k, data)) = cache.get(&record.id)
            && *k == key
        {
            return Ok(data.clone());
        }
        let data = self.decrypt_case_data(record)?;
        if let Ok(mut cache) = self.case_cache.lock() {
            if cache.len() >= CASE_CACHE_MAX {
                cache.clear();
            }
            cache.insert(record.id, (key, data.clone()));
        }
        Ok(data)
    }

    fn decrypt_case_data(&self, record: &CaseRecord) -> Result<CaseData, EngineError> {
        let mut data = None;
        let mut consent = None;
        let mut events = vec![record.id];
        events.extend(self.store.case_events(&record.id)?);
        let mut decoded = Vec::new();
        for id in events {
            if let Some(event) = self.store.event(&id)? {
                let valid = self.store.verdict(&id)?.is_some_and(|v| v.is_valid());
                if valid && let (Some(Ok(p)), _) = crate::store::decrypt_event(&event, &self.keys) {
                    decoded.push((event.header().hlc, id, p));
                }
            }
        }
        decoded.sort_by_key(|(h, id, _)| (*h, *id));
        for (_, _, p) in decoded {
            match p {
                Decrypted::CaseOpen(p) => data = Some(p.data),
                Decrypted::CaseUpdate(u) => {
                    if let Some(d) = u.data {
                        data = Some(d);
                    }
                    if let Some(c) = u.consent {
                        consent = Some(c);
                    }
                }
                _ => {}
            }
        }
        let mut data = data.ok_or_else(|| EngineError::NoCase(record.id.short()))?;
        if let Some(latest) = consent {
            data.consent = latest;
        }
        Ok(data)
    }

    /// Sends a referral, sharing only the chosen fields.
    pub fn send_referral(
        &mut self,
        request: ReferralRequest,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let draft = self.referral_draft(request, by)?;
        self.append(draft, now)
    }

    /// Sends several referrals in one transaction (all or none), encrypting on every core.
    pub fn send_referrals(
        &mut self,
        requests: Vec<ReferralRequest>,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<EventId>, EngineError> {
        let drafts = requests
            .into_iter()
            .map(|r| self.referral_draft(r, by))
            .collect::<Result<Vec<_>, _>>()?;
        self.append_batch(drafts, now)
    }

    fn referral_draft(&self, request: ReferralRequest, by: &str) -> Result<Draft, EngineError> {
        let m = self.store.config().require()?.clone();
        let record = self.readable_case_record(&request.case)?;
        let data = self.case_data(&record)?;
        let category = m.category(&request.category).ok_or_else(|| {
            invalid(format!(
                "unknown service category `{}`",
                keys::truncate_for_error(&request.category)
            ))
        })?;
        let receiver = m.org(&request.to_org).ok_or_else(|| {
            invalid(format!(
                "unknown organisation `{}`",
                keys::truncate_for_error(&request.to_org)
            ))
        })?;
        if !receiver.has_role(Role::ProvideServices) {
            return Err(invalid(format!(
                "`{}` does not provide services in this mechanism",
                receiver.id
            )));
        }
        let mut shared = BTreeMap::new();
        for field in &request.share {
            if !SHAREABLE_FIELDS.contains(&field.as_str()) {
                return Err(invalid(format!(
                    "--share: unknown field `{}` (fields: {})",
                    keys::truncate_for_error(field),
                    SHAREABLE_FIELDS.join(", ")
                )));
            }
            let value = match field.as_str() {
                "needs" => Some(data.needs.join(", ")),
                "vulnerabilities" => Some(data.vulnerabilities.join(", ")),
                other => data.person.field(other),
            };
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                shared.insert(field.clone(), v);
            }
        }
        if request.note.chars().count() > crate::limits::TEXT_FIELD_MAX_CHARS {
            return Err(invalid("the note is too long"));
        }
        // The status determinations this referral relies on.
        let deps: Vec<EventId> = record
            .determinations
            .iter()
            .filter(|(_, org)| {
                m.case_type(&data.case_type)
                    .is_some_and(|ct| ct.status_authorities.contains(org))
            })
            .map(|(id, _)| *id)
            .collect();
        let clear_category = (!category.sensitive).then(|| category.id.clone());
        let payload = Decrypted::Referral(ReferralPayload {
            case_type: data.case_type.clone(),
            category: category.id.clone(),
            shared,
            note: request.note,
            consent: data.consent.clone(),
            emergency_override: request.emergency_override.map(|reason| EmergencyOverride {
                reason,
                by: by.to_string(),
            }),
            by: by.to_string(),
        });
        let mut orgs = vec![self.org.clone(), request.to_org.clone()];
        if record.manager_org != self.org {
            orgs.push(record.manager_org.clone());
        }
        Ok(Draft {
            kind: Kind::ReferralSend {
                to_org: request.to_org,
                category: clear_category,
                urgency: request.urgency,
            },
            subject: Some(request.case),
            deps,
            orgs,
            payload,
        })
    }

    /// Takes a referral one step: acknowledge, accept, decline (with a reason code), complete
    /// (with an outcome) or withdraw.
    pub fn referral_step(
        &mut self,
        referral: EventId,
        step: Step,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let record = self
            .store
            .referral_record(&referral)?
            .ok_or_else(|| EngineError::NoReferral(referral.short()))?;
        if step.transition == Transition::Decline && step.reason.is_none() {
            return Err(invalid("a decline needs a reason code (--reason)"));
        }
        if step.note.chars().count() > crate::limits::TEXT_FIELD_MAX_CHARS {
            return Err(invalid("the note is too long"));
        }
        let payload = Decrypted::ReferralUpdate(ReferralUpdatePayload {
            note: step.note,
            outcome: step.outcome,
            by: by.to_string(),
        });
        let orgs = vec![record.sender_org.clone(), record.receiver_org.clone()];
        let kind = Kind::ReferralUpdate {
            transition: step.transition,
            reason: step.reason,
        };
        self.append(Draft::new(kind, Some(referral), orgs, payload), now)
    }

    /// A case-management action: a note, a transfer, closing, reopening, or new consent.
    pub fn case_action(
        &mut self,
        case: EventId,
        action: CaseAction,
        note: &str,
        consent: Option<Consent>,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let record = self.readable_case_record(&case)?;
        let mut orgs = record.readers.clone();
        let data = match &action {
            CaseAction::Transfer { to_org } => {
                orgs.push(to_org.clone());
                Some(self.case_data(&record)?)
            }
            _ => None,
        };
        let payload = Decrypted::CaseUpdate(CaseUpdatePayload {
            note: note.to_string(),
            data,
            consent,
            by: by.to_string(),
        });
        self.append(
            Draft::new(Kind::CaseUpdate(action), Some(case), orgs, payload),
            now,
        )
    }

    /// Shares every epoch of the organisation's key this node holds with each other endorsed
    /// node of the organisation that has not received it, after checking each key matches the
    /// configured recipient. Returns the key-share events created.
    pub fn share_keys(&mut self, now: OffsetDateTime) -> Result<Vec<EventId>, EngineError> {
        let m = self.store.config().require()?.clone();
        let mut created = Vec::new();
        let mut targets: Vec<_> = m
            .nodes_of(&self.org)
            .filter(|n| n.key.to_bytes() != self.keys.node_key)
            .cloned()
            .collect();
        targets.sort_by_key(|n| n.id);
        for target in targets {
            let target_key = target.key.to_bytes();
            let mut epochs = Vec::new();
            for (epoch, identity) in &self.keys.epochs {
                let configured = m
                    .epoch_recipient(&self.org, *epoch)
                    .is_some_and(|r| r.to_string() == identity.to_public().to_string());
                if configured && !self.store.key_shared(&target_key, *epoch)? {
                    epochs.push((*epoch, keys::identity_text(identity).to_string()));
                }
            }
            if epochs.is_empty() {
                continue;
            }
            let plain = zeroize::Zeroizing::new(payload::encode(&epochs)?);
            let body = payload::seal(&plain, &[&target.recipient])?;
            let kind = Kind::KeyShare {
                to: target_key,
                epochs: epochs.iter().map(|(e, _)| *e).collect(),
            };
            let event = self.sign_next(kind, body, now)?;
            match self.store.append_local_batch(
                vec![(event.clone(), None)],
                &mut self.keys,
                now_ms(now),
            )? {
                Ok(()) => created.push(event.id()),
                Err(refusal) => return Err(refusal.into()),
            }
        }
        self.note_fresh(&created);
        Ok(created)
    }

    /// Appends an event whose body the caller built (partner-map changes), with the events it
    /// depends on.
    pub fn append_plain(
        &mut self,
        kind: Kind,
        body: Vec<u8>,
        deps: Vec<EventId>,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let m = self.store.config().require()?.clone();
        let head = self.store.head(&self.keys.node_key)?;
        let position = (
            head.map(|h| h.0).unwrap_or(0) + 1,
            head.map(|h| h.1),
            m.doc.version.max(head.map(|h| h.2).unwrap_or(0)),
        );
        // This node's previous event is a dependency already (the chain): not named twice.
        let deps = deps
            .into_iter()
            .filter(|d| Some(*d) != position.1)
            .collect();
        let event = self.sign(kind, None, deps, vec![], body, position, now)?;
        match self.store.append_local_batch(
            vec![(event.clone(), None)],
            &mut self.keys,
            now_ms(now),
        )? {
            Ok(()) => {
                self.note_fresh(&[event.id()]);
                Ok(event.id())
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    // ----- The partner map -----

    fn forget_directory(&self) {
        if let Ok(mut d) = self.directory.lock() {
            *d = None;
        }
    }

    /// The partner map: every organisation's profile, read from its document (cached).
    pub fn directory(
        &self,
    ) -> Result<std::sync::Arc<BTreeMap<String, crate::map::Profile>>, EngineError> {
        if let Ok(d) = self.directory.lock()
            && let Some(d) = d.as_ref()
        {
            return Ok(d.clone());
        }
        let mut profiles = BTreeMap::new();
        for org in self.store.map_orgs()? {
            if let Some(doc) = self.store.map_doc(&org)?
                && let Some(profile) = crate::map::read(&doc)
                && profile.org == org
            {
                profiles.insert(org, profile);
            }
        }
        let profiles = std::sync::Arc::new(profiles);
        if let Ok(mut d) = self.directory.lock() {
            *d = Some(profiles.clone());
        }
        Ok(profiles)
    }

    /// Appends a map change or snapshot of `org`'s document, naming as dependencies the events
    /// that carried the document's heads before it.
    fn append_map(
        &mut self,
        kind: Kind,
        body: Vec<u8>,
        heads_before: &[automerge::ChangeHash],
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let mut deps = self.store.map_change_events(heads_before)?;
        deps.truncate(crate::limits::EVENT_DEPS_MAX);
        let id = self.append_plain(kind, body, deps, now)?;
        self.forget_directory();
        Ok(id)
    }

    fn map_doc_for(&self, org: &str) -> Result<automerge::AutoCommit, EngineError> {
        let m = self.store.config().require()?.clone();
        crate::map::may_edit(&m, &self.org, org).map_err(|_| {
            invalid(format!(
                "this node (of `{}`) may not change the profile of `{org}`: only its own nodes may, or a coordinator for an organisation without nodes",
                self.org
            ))
        })?;
        let mut doc = self.store.map_doc(org)?.unwrap_or_default();
        doc.set_actor(automerge::ActorId::from(self.keys.node_key.to_vec()));
        Ok(doc)
    }

    /// Sets an organisation's profile from a file's contents: the difference from the current
    /// document becomes one change. Returns the event, or `None` when nothing changed.
    pub fn map_import(
        &mut self,
        profile: &crate::map::Profile,
        now: OffsetDateTime,
    ) -> Result<Option<EventId>, EngineError> {
        let m = self.store.config().require()?.clone();
        profile.validate(&m).map_err(|e| invalid(e.to_string()))?;
        let mut doc = self.map_doc_for(&profile.org)?;
        let heads = doc.get_heads();
        let Some(change) =
            crate::map::import(&mut doc, profile).map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        let kind = Kind::MapChange {
            org: profile.org.clone(),
        };
        self.append_map(kind, change, &heads, now).map(Some)
    }

    /// Changes one service's capacity and/or marks it verified today.
    pub fn map_update(
        &mut self,
        org: &str,
        service: &str,
        capacity: Option<crate::map::Capacity>,
        verify: bool,
        now: OffsetDateTime,
    ) -> Result<Option<EventId>, EngineError> {
        let mut doc = self.map_doc_for(org)?;
        let heads = doc.get_heads();
        let today = verify.then_some(now.date());
        let Some(change) = crate::map::update_service(&mut doc, service, capacity, today)
            .map_err(|e| invalid(e.to_string()))?
        else {
            return Ok(None);
        };
        self.append_map(
            Kind::MapChange {
                org: org.to_string(),
            },
            change,
            &heads,
            now,
        )
        .map(Some)
    }

    /// Publishes a compacted save of an organisation's document: nodes that hold it prune the
    /// bodies of the changes it contains, and a fresh node loads it instead of every change.
    pub fn map_snapshot(&mut self, org: &str, now: OffsetDateTime) -> Result<EventId, EngineError> {
        let mut doc = self.map_doc_for(org)?;
        let heads = doc.get_heads();
        let body = doc.save();
        if body.len() > crate::limits::EVENT_BODY_SIZE_MAX_BYTES {
            return Err(invalid(format!(
                "the profile of `{org}` is larger than an event may carry"
            )));
        }
        self.append_map(
            Kind::MapSnapshot {
                org: org.to_string(),
            },
            body,
            &heads,
            now,
        )
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

    // ----- Views -----

    fn referral_view(
        &self,
        record: &ReferralRecord,
        m: &Mechanism,
        now: OffsetDateTime,
        decrypt: bool,
    ) -> Result<ReferralView, EngineError> {
        let verdict = self.store.verdict(&record.id)?;
        let mut view = ReferralView {
            id: record.id.to_hex(),
            case: record.case.to_hex(),
            from_org: record.sender_org.clone(),
            to_org: record.receiver_org.clone(),
            category: record
                .category
                .clone()
                .unwrap_or_else(|| "(sensitive)".into()),
            urgency: record.urgency.as_str().into(),
            status: record.status.as_str().into(),
            sent_at: hlc_text(record.sent_at),
            acknowledged_at: record.acknowledged_at.map(hlc_text),
            accepted_at: record.accepted_at.map(hlc_text),
            decided_at: record.accepted_at.or(record.declined_at).map(hlc_text),
            completed_at: record.completed_at.map(hlc_text),
            decline_reason: record.decline_reason.clone(),
            overdue: fold::overdue(record, m, now).map(str::to_string),
            readable: false,
            shared: BTreeMap::new(),
            note: None,
            invalid: verdict.and_then(|v| v.broken).map(|r| r.to_string()),
        };
        if decrypt
            && let Some(event) = self.store.event(&record.id)?
            && let (Some(Ok(Decrypted::Referral(p))), _) =
                crate::store::decrypt_event(&event, &self.keys)
        {
            view.readable = true;
            view.category = p.category;
            view.shared = p.shared;
            view.note = Some(p.note);
        }
        Ok(view)
    }

    /// Referrals in this organisation's inbox (`sent = false`) or outbox, newest first.
    /// With `decrypt`, the shared fields are opened (the caller records that in the audit log).
    pub fn referrals(
        &self,
        sent: bool,
        status: Option<Status>,
        decrypt: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<ReferralView>, EngineError> {
        let m = self.store.config().require()?.clone();
        let mut out = Vec::new();
        for id in self.store.referrals_of_org(&self.org, sent)? {
            let Some(record) = self.store.referral_record(&id)? else {
                continue;
            };
            if status.is_some_and(|s| s != record.status) {
                continue;
            }
            out.push(self.referral_view(&record, &m, now, decrypt)?);
        }
        Ok(out)
    }

    /// One referral, decrypted where this node may read it.
    pub fn referral(&self, id: &EventId, now: OffsetDateTime) -> Result<ReferralView, EngineError> {
        let m = self.store.config().require()?.clone();
        let record = self
            .store
            .referral_record(id)?
            .ok_or_else(|| EngineError::NoReferral(id.short()))?;
        self.referral_view(&record, &m, now, true)
    }

    /// Finds a referral or case id from a prefix of its hex id (as printed in tables).
    pub fn resolve_id(&self, prefix: &str, referral: bool) -> Result<EventId, EngineError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.len() < 6 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "`{}` is not an id (at least 6 hex digits, as printed in lists)",
                keys::truncate_for_error(&prefix)
            )));
        }
        let ids: Vec<EventId> = if referral {
            self.store
                .referral_records()?
                .into_iter()
                .map(|r| r.id)
                .collect()
        } else {
            self.store
                .case_records()?
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        let matches: Vec<_> = ids
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&prefix))
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] if referral => Err(EngineError::NoReferral(prefix)),
            [] => Err(EngineError::NoCase(prefix)),
            _ => Err(invalid(format!(
                "`{prefix}` matches several; give more digits"
            ))),
        }
    }

    /// The cases this node can read, optionally filtered by a search over their data.
    pub fn cases(&self, search: Option<&str>) -> Result<Vec<CaseSummary>, EngineError> {
        let needle = search.map(|s| s.to_lowercase());
        let mut out = Vec::new();
        for record in self.store.case_records()? {
            if !record.valid || !record.readers.iter().any(|r| r == &self.org) {
                continue;
            }
            let Ok(data) = self.case_data(&record) else {
                continue; // Addressed to us but not readable yet (no key).
            };
            if let Some(needle) = &needle {
                let haystack = format!(
                    "{} {} {} {} {}",
                    data.person.search_text(),
                    data.case_type,
                    data.site,
                    data.needs.join(" "),
                    record.id.to_hex()
                )
                .to_lowercase();
                if !haystack.contains(needle.as_str()) {
                    continue;
                }
            }
            let name = [
                data.person.first_name.clone(),
                data.person.last_name.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            out.push(CaseSummary {
                id: record.id.to_hex(),
                opened_at: hlc_text(record.opened_at),
                manager: record.manager_org.clone(),
                status: if record.closed { "closed" } else { "open" }.into(),
                case_type: data.case_type,
                site: data.site,
                name,
                needs: data.needs,
                referrals: record.referral_count as usize,
                last_activity: hlc_text(record.last_activity),
            });
        }
        out.sort_by(|a, b| b.last_activity.cmp(&a.last_activity));
        Ok(out)
    }

    /// One case with its timeline and referrals, decrypted.
    pub fn case(&self, id: &EventId, now: OffsetDateTime) -> Result<CaseView, EngineError> {
        let m = self.store.config().require()?.clone();
        let record = self.readable_case_record(id)?;
        let data = self.case_data(&record)?;
        let mut timeline = Vec::new();
        let mut ids = vec![record.id];
        let referral_ids = self.store.case_referrals(&record.id)?;
        ids.extend(self.store.case_events(&record.id)?);
        ids.extend(referral_ids.iter().copied());
        for referral in &referral_ids {
            ids.extend(self.store.referral_steps(referral)?);
        }
        for eid in ids {
            let Some(event) = self.store.event(&eid)? else {
                continue;
            };
            let verdict: Option<Verdict> = self.store.verdict(&eid)?;
            let h = event.header();
            let org = m
                .node_by_key(&h.author)
                .map(|n| n.org.clone())
                .or_else(|| {
                    self.store
                        .config()
                        .version(h.config_version)
                        .and_then(|v| v.node_by_key(&h.author).map(|n| n.org.clone()))
                })
                .unwrap_or_default();
            let (payload, _) = crate::store::decrypt_event(&event, &self.keys);
            timeline.push(TimelineEntry {
                id: eid.to_hex(),
                at: hlc_text(h.hlc),
                kind: describe_kind(&h.kind),
                org,
                invalid: verdict.and_then(|v| v.broken).map(|r| r.to_string()),
                text: describe_payload(payload),
            });
        }
        timeline.sort_by(|a, b| a.at.cmp(&b.at));
        let mut referrals = Vec::new();
        for rid in &referral_ids {
            if let Some(r) = self.store.referral_record(rid)? {
                referrals.push(self.referral_view(&r, &m, now, true)?);
            }
        }
        Ok(CaseView {
            id: record.id.to_hex(),
            opened_at: hlc_text(record.opened_at),
            opened_by: record.opened_by_org.clone(),
            manager: record.manager_org.clone(),
            status: if record.closed { "closed" } else { "open" }.into(),
            data,
            determinations: record
                .determinations
                .iter()
                .map(|(_, org)| org.clone())
                .collect(),
            timeline,
            referrals,
        })
    }
}

fn describe_kind(kind: &Kind) -> String {
    match kind {
        Kind::CaseOpen => "case opened".into(),
        Kind::StatusDetermination => "status determination".into(),
        Kind::CaseUpdate(CaseAction::Note) => "note".into(),
        Kind::CaseUpdate(CaseAction::Transfer { to_org }) => format!("transferred to {to_org}"),
        Kind::CaseUpdate(CaseAction::Close) => "case closed".into(),
        Kind::CaseUpdate(CaseAction::Reopen) => "case reopened".into(),
        Kind::CaseUpdate(CaseAction::Consent) => "consent recorded".into(),
        Kind::ReferralSend { to_org, .. } => format!("referral sent to {to_org}"),
        Kind::ReferralUpdate { transition, reason } => match reason {
            Some(r) => format!("referral {} ({r})", transition.as_str()),
            None => format!("referral {}", transition.as_str()),
        },
        other => other.name().into(),
    }
}

fn describe_payload(payload: Option<Result<Decrypted, ()>>) -> String {
    match payload {
        None => String::new(),
        Some(Err(())) => "(unreadable payload)".into(),
        Some(Ok(p)) => match p {
            Decrypted::CaseOpen(p) => format!("by {}: {}", p.by, p.data.notes),
            Decrypted::Determination(d) => format!(
                "by {}: {} {}: {}",
                d.by,
                d.case_type,
                if d.determined {
                    "confirmed"
                } else {
                    "not confirmed"
                },
                d.note
            ),
            Decrypted::CaseUpdate(u) => format!("by {}: {}", u.by, u.note),
            Decrypted::Referral(r) => format!("by {} ({}): {}", r.by, r.category, r.note),
            Decrypted::ReferralUpdate(u) => match u.outcome {
                Some(o) => format!("by {}: {} — outcome: {o}", u.by, u.note),
                None => format!("by {}: {}", u.by, u.note),
            },
        },
    }
}
