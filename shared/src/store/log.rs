//! The event log in the store: admission, storage and the fold, in one write transaction per
//! batch, so an event and every view it changes (log heads, verdicts, case and referral
//! records, inbox and outbox indexes, installed keys) commit together or not at all.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::org_keys::ORG_KEYS;
use super::{Store, StoreError};
use crate::admission::{self, Admission, Hold, LogView, Refusal};
use crate::config::Hash32;
use crate::event::{Event, EventId, Header, Hlc, Kind};
use crate::fold::{
    self, CaseRecord, Decrypted, Lookup, ReferralRecord, Rule, Seen, Status, Verdict,
};
use crate::keys;
use crate::limits::EQUIVOCATIONS_PER_AUTHOR_MAX;
use crate::payload;
use crate::store::ConfigState;

pub(crate) type Id = [u8; 32];

/// Every admitted event: id → wire bytes.
pub(crate) const EVENTS: TableDefinition<Id, &[u8]> = TableDefinition::new("events-1");
/// Each author's log: (author key, seq) → event id.
pub(crate) const LOG: TableDefinition<(Id, u64), Id> = TableDefinition::new("log-1");
/// Each author's head: author key → (seq, event id, claimed configuration version).
pub(crate) const HEADS: TableDefinition<Id, (u64, Id, u64)> = TableDefinition::new("heads-1");
/// The fold's verdict on each folded event (presence means folded).
pub(crate) const VERDICTS: TableDefinition<Id, &[u8]> = TableDefinition::new("verdicts-1");
/// Events waiting for a dependency: (missing dependency, waiting event) → ().
pub(crate) const WAITING: TableDefinition<(Id, Id), ()> = TableDefinition::new("waiting-1");
/// Equivocation evidence: (author, seq, conflicting event id) → its wire bytes.
pub(crate) const EQUIVOCATIONS: TableDefinition<(Id, u64, Id), &[u8]> =
    TableDefinition::new("equivocations-1");
/// Case records (clear state): case id → postcard.
pub(crate) const CASES: TableDefinition<Id, &[u8]> = TableDefinition::new("cases-1");
/// Referral records (clear state): referral id → postcard.
pub(crate) const REFERRALS: TableDefinition<Id, &[u8]> = TableDefinition::new("referrals-1");
/// Inbox and outbox: (organisation, 0 = received / 1 = sent, sent ms, referral id) → ().
pub(crate) const BY_ORG: TableDefinition<(&str, u8, u64, Id), ()> =
    TableDefinition::new("referrals_by_org-1");
/// Events addressed to this node's organisation that it cannot read yet: id → key epoch.
pub(crate) const UNREAD: TableDefinition<Id, u32> = TableDefinition::new("unread-1");
/// What belongs to a case or referral: (case or referral id, event id) → link kind
/// ([`LINK_CASE_EVENT`], [`LINK_REFERRAL`] or [`LINK_STEP`]).
pub(crate) const LINKS: TableDefinition<(Id, Id), u8> = TableDefinition::new("links-1");
/// A case-level event (determination, case update) of a case.
pub(crate) const LINK_CASE_EVENT: u8 = 0;
/// A referral sent for a case.
pub(crate) const LINK_REFERRAL: u8 = 1;
/// A step of a referral.
pub(crate) const LINK_STEP: u8 = 2;
/// Referrals by the time they were sent, with the clear facts reports need:
/// (sent ms, referral id) → postcard `report::ReportRow`.
pub(crate) const REPORT_INDEX: TableDefinition<(u64, Id), &[u8]> =
    TableDefinition::new("report_index-1");
/// Partner-map documents: organisation → saved Automerge document.
pub(crate) const MAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("maps-1");
/// Which event carried each Automerge change: change hash → event id (to name dependencies).
pub(crate) const MAP_HASHES: TableDefinition<[u8; 32], Id> = TableDefinition::new("map_hashes-1");
/// An organisation's map events: (organisation, event id) → 0 change / 1 snapshot.
pub(crate) const MAP_EVENTS: TableDefinition<(&str, Id), u8> = TableDefinition::new("map_events-1");
/// Node-local settings: name → bytes.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");
/// Valid key shares seen: (target node key, epoch) → (), so a node shares each epoch once.
pub(crate) const SHARES: TableDefinition<(Id, u32), ()> = TableDefinition::new("key_shares-1");

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

/// What ingesting a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub admitted: Vec<EventId>,
    pub duplicates: usize,
    pub held: Vec<(EventId, Hold)>,
    pub refused: Vec<(EventId, Refusal)>,
    /// (the new event, the event already holding that author's sequence number).
    pub equivocations: Vec<(EventId, EventId)>,
    /// Key epochs this node received through key shares.
    pub keys_installed: Vec<u32>,
    /// Organisations whose partner-map profile changed.
    pub maps_changed: Vec<String>,
    /// The latest timestamp among the events admitted (the only ones that may move the clock).
    pub latest_hlc: Hlc,
}

fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

fn dec<T: for<'de> serde::Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt(format!("a stored {what}")))
}

/// The tables of one write transaction.
pub(crate) struct Tables<'t> {
    pub events: redb::Table<'t, Id, &'static [u8]>,
    pub log: redb::Table<'t, (Id, u64), Id>,
    pub heads: redb::Table<'t, Id, (u64, Id, u64)>,
    pub verdicts: redb::Table<'t, Id, &'static [u8]>,
    pub waiting: redb::Table<'t, (Id, Id), ()>,
    pub held: redb::Table<'t, (Id, u64, Id), &'static [u8]>,
    pub held_strangers: redb::Table<'t, (Id, u64, Id), &'static [u8]>,
    pub held_times: redb::Table<'t, (u64, u8, Id, u64, Id), ()>,
    pub held_counts: redb::Table<'t, Id, u64>,
    pub equivocations: redb::Table<'t, (Id, u64, Id), &'static [u8]>,
    pub cases: redb::Table<'t, Id, &'static [u8]>,
    pub referrals: redb::Table<'t, Id, &'static [u8]>,
    pub by_org: redb::Table<'t, (&'static str, u8, u64, Id), ()>,
    pub unread: redb::Table<'t, Id, u32>,
    pub org_keys: redb::Table<'t, u32, &'static [u8]>,
    pub shares: redb::Table<'t, (Id, u32), ()>,
    pub links: redb::Table<'t, (Id, Id), u8>,
    pub maps: redb::Table<'t, &'static str, &'static [u8]>,
    pub report_index: redb::Table<'t, (u64, Id), &'static [u8]>,
    pub map_hashes: redb::Table<'t, [u8; 32], Id>,
    pub map_events: redb::Table<'t, (&'static str, Id), u8>,
    pub map_chunks: redb::Table<'t, (&'static str, u32), &'static [u8]>,
    pub map_seqs: redb::Table<'t, (&'static str, Id), u64>,
    pub map_waiting: redb::Table<'t, ([u8; 32], Id), ()>,
    /// Headers read or written in this transaction, so the fold's lookups of dependencies do
    /// not decode whole events again.
    headers: std::cell::RefCell<std::collections::HashMap<Id, Header>>,
}

/// Most headers one transaction keeps in its lookup cache.
const HEADER_CACHE_MAX: usize = 65_536;

impl<'t> Tables<'t> {
    pub fn open(tx: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            events: tx.open_table(EVENTS)?,
            log: tx.open_table(LOG)?,
            heads: tx.open_table(HEADS)?,
            verdicts: tx.open_table(VERDICTS)?,
            waiting: tx.open_table(WAITING)?,
            held: tx.open_table(super::held::HELD)?,
            held_strangers: tx.open_table(super::held::HELD_STRANGERS)?,
            held_times: tx.open_table(super::held::HELD_TIMES)?,
            held_counts: tx.open_table(super::held::HELD_COUNTS)?,
            equivocations: tx.open_table(EQUIVOCATIONS)?,
            cases: tx.open_table(CASES)?,
            referrals: tx.open_table(REFERRALS)?,
            by_org: tx.open_table(BY_ORG)?,
            unread: tx.open_table(UNREAD)?,
            org_keys: tx.open_table(ORG_KEYS)?,
            shares: tx.open_table(SHARES)?,
            links: tx.open_table(LINKS)?,
            maps: tx.open_table(MAPS)?,
            report_index: tx.open_table(REPORT_INDEX)?,
            map_hashes: tx.open_table(MAP_HASHES)?,
            map_events: tx.open_table(MAP_EVENTS)?,
            map_chunks: tx.open_table(super::maps::MAP_CHUNKS)?,
            map_seqs: tx.open_table(super::maps::MAP_SEQS)?,
            map_waiting: tx.open_table(super::maps::MAP_WAITING)?,
            headers: Default::default(),
        })
    }

    pub(crate) fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        match self.events.get(id.0)? {
            Some(bytes) => Event::decode_stored(bytes.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", id.short()))),
            None => Ok(None),
        }
    }

    /// The events linked to a case or referral with the given link kind.
    fn linked(&self, entity: &EventId, kind: u8) -> Result<Vec<EventId>, StoreError> {
        let mut out = Vec::new();
        for row in self
            .links
            .range((entity.0, [0u8; 32])..=(entity.0, [255u8; 32]))?
        {
            let (key, value) = row?;
            if value.value() == kind {
                out.push(Hash32(key.value().1));
            }
        }
        Ok(out)
    }

    fn link(&mut self, entity: &EventId, event: &EventId, kind: u8) -> Result<bool, StoreError> {
        Ok(self.links.insert((entity.0, event.0), kind)?.is_none())
    }

    fn remember(&self, id: &EventId, header: &Header) {
        let mut cache = self.headers.borrow_mut();
        if cache.len() >= HEADER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(id.0, header.clone());
    }

    fn case_record(&self, id: &EventId) -> Result<Option<CaseRecord>, StoreError> {
        self.cases
            .get(id.0)?
            .map(|b| dec(b.value(), "case"))
            .transpose()
    }

    fn referral_record(&self, id: &EventId) -> Result<Option<ReferralRecord>, StoreError> {
        self.referrals
            .get(id.0)?
            .map(|b| dec(b.value(), "referral"))
            .transpose()
    }

    fn put_case(&mut self, record: &CaseRecord) -> Result<(), StoreError> {
        self.cases.insert(record.id.0, enc(record).as_slice())?;
        Ok(())
    }

    fn put_referral(&mut self, record: &ReferralRecord) -> Result<(), StoreError> {
        self.referrals.insert(record.id.0, enc(record).as_slice())?;
        let row = crate::report::ReportRow::from_record(record);
        self.report_index
            .insert((record.sent_at.ms, record.id.0), enc(&row).as_slice())?;
        Ok(())
    }

    fn put_verdict(&mut self, id: &EventId, verdict: &Verdict) -> Result<(), StoreError> {
        self.verdicts.insert(id.0, enc(verdict).as_slice())?;
        Ok(())
    }

    fn verdict_of(&self, id: &EventId) -> Result<Option<Verdict>, StoreError> {
        self.verdicts
            .get(id.0)?
            .map(|b| dec(b.value(), "verdict"))
            .transpose()
    }
}

/// Admission's view of the log, over the open tables (heads move as a batch is admitted).
struct TxLog<'a, 't>(&'a Tables<'t>);

impl LogView for TxLog<'_, '_> {
    fn head(&self, author: &[u8; 32]) -> Option<(u64, EventId, u64)> {
        let row = self.0.heads.get(*author).ok()??;
        let (seq, id, version) = row.value();
        Some((seq, Hash32(id), version))
    }

    fn id_at(&self, author: &[u8; 32], seq: u64) -> Option<EventId> {
        self.0
            .log
            .get((*author, seq))
            .ok()?
            .map(|id| Hash32(id.value()))
    }
}

/// The fold's lookups over the open tables. Errors read as "not there": the fold then waits
/// or judges conservatively, and the transaction's own error surfaces on the next write.
struct TxLookup<'a, 't>(&'a Tables<'t>);

impl Lookup for TxLookup<'_, '_> {
    fn header(&self, id: &EventId) -> Option<Header> {
        if let Some(h) = self.0.headers.borrow().get(&id.0) {
            return Some(h.clone());
        }
        let header = self
            .0
            .event(id)
            .ok()
            .flatten()
            .map(|e| e.header().clone())?;
        self.0.remember(id, &header);
        Some(header)
    }

    fn verdict(&self, id: &EventId) -> Option<Verdict> {
        self.0.verdict_of(id).ok().flatten()
    }

    fn case(&self, id: &EventId) -> Option<CaseRecord> {
        self.0.case_record(id).ok().flatten()
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
fn author_org<'c>(config: &'c ConfigState, h: &Header) -> Option<&'c str> {
    config
        .version(h.config_version)?
        .node_by_key(&h.author)
        .map(|n| n.org.as_str())
}

/// Runs admission, storage and the fold for a batch inside an open transaction.
pub(crate) struct Ingest<'a, 't> {
    pub t: &'a mut Tables<'t>,
    pub config: &'a ConfigState,
    pub mechanism_id: Hash32,
    pub keys: &'a mut FoldKeys,
    pub now_ms: u64,
    pub report: IngestReport,
    /// Authors whose heads moved: their held events may now be admissible.
    pub(crate) advanced: BTreeSet<Id>,
    /// While a held event is retried: when it first arrived (it keeps its expiry).
    pub(crate) retrying_since: Option<u64>,
    /// Map events whose missing Automerge dependencies an applied event brought: to fold next.
    pub(crate) woken: Vec<EventId>,
    /// Payloads of events this node just created, so the fold reads them without decrypting.
    pub known: std::collections::HashMap<EventId, Decrypted>,
    /// Partner-map documents kept loaded: taken from the store for this transaction and given
    /// back only if it commits.
    pub(crate) maps: &'a mut super::maps::MapCache,
}

impl<'a, 't> Ingest<'a, 't> {
    pub fn new(
        t: &'a mut Tables<'t>,
        config: &'a ConfigState,
        mechanism_id: Hash32,
        keys: &'a mut FoldKeys,
        now_ms: u64,
        maps: &'a mut super::maps::MapCache,
    ) -> Self {
        Self {
            t,
            config,
            mechanism_id,
            keys,
            now_ms,
            report: IngestReport::default(),
            advanced: BTreeSet::new(),
            retrying_since: None,
            woken: Vec::new(),
            known: std::collections::HashMap::new(),
            maps,
        }
    }

    /// Admits one event, stores it if admitted, and folds what can be folded.
    pub fn ingest(&mut self, event: &Event) -> Result<Admission, StoreError> {
        let admission = admission::admit(
            event,
            &self.mechanism_id,
            self.config,
            &TxLog(self.t),
            self.now_ms,
        );
        let h = event.header();
        match &admission {
            Admission::Admit => {
                let bytes = event.encode();
                self.t.events.insert(event.id().0, bytes.as_slice())?;
                self.t.log.insert((h.author, h.seq), event.id().0)?;
                self.t
                    .heads
                    .insert(h.author, (h.seq, event.id().0, h.config_version))?;
                // An event that was held and is now admitted leaves the hold.
                self.unhold((h.author, h.seq, event.id().0))?;
                self.advanced.insert(h.author);
                self.report.admitted.push(event.id());
                self.report.latest_hlc = self.report.latest_hlc.max(h.hlc);
                self.t.remember(&event.id(), h);
                self.fold_when_ready(event.clone())?;
            }
            Admission::Duplicate => {
                self.report.duplicates += 1;
                self.unhold((h.author, h.seq, event.id().0))?;
            }
            Admission::Hold(hold) => self.hold(event, hold)?,
            Admission::Refuse(refusal) => {
                self.unhold((h.author, h.seq, event.id().0))?;
                self.report.refused.push((event.id(), refusal.clone()));
            }
            Admission::Equivocation { existing } => {
                self.unhold((h.author, h.seq, event.id().0))?;
                let evidence = self
                    .t
                    .equivocations
                    .range((h.author, 0, [0u8; 32])..=(h.author, u64::MAX, [255u8; 32]))?
                    .count();
                if evidence < EQUIVOCATIONS_PER_AUTHOR_MAX {
                    self.t
                        .equivocations
                        .insert((h.author, h.seq, event.id().0), event.encode().as_slice())?;
                }
                self.report.equivocations.push((event.id(), *existing));
            }
        }
        Ok(admission)
    }

    /// Folds `id` now if every causal dependency is folded; otherwise registers it as waiting.
    fn fold_when_ready(&mut self, first: Event) -> Result<(), StoreError> {
        let mut queue = VecDeque::from([first]);
        while let Some(event) = queue.pop_front() {
            let id = event.id();
            if self.t.verdicts.get(id.0)?.is_some() {
                continue;
            }
            let mut missing = false;
            for dep in event.header().causal_deps() {
                if self.t.verdicts.get(dep.0)?.is_none() {
                    self.t.waiting.insert((dep.0, id.0), ())?;
                    missing = true;
                }
            }
            if missing {
                continue;
            }
            self.fold_now(&event)?;
            // Map changes that waited for Automerge changes this event brought.
            for waiter in std::mem::take(&mut self.woken) {
                if let Some(event) = self.t.event(&waiter)? {
                    queue.push_back(event);
                }
            }
            // Everything that waited for this event may be ready now.
            let waiters: Vec<Id> = self
                .t
                .waiting
                .range((id.0, [0u8; 32])..=(id.0, [255u8; 32]))?
                .map(|r| r.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for waiter in waiters {
                self.t.waiting.remove((id.0, waiter))?;
                if let Some(event) = self.t.event(&Hash32(waiter))? {
                    queue.push_back(event);
                }
            }
        }
        Ok(())
    }

    /// Folds one event whose dependencies are all folded.
    fn fold_now(&mut self, event: &Event) -> Result<(), StoreError> {
        let h = event.header();
        let id = event.id();
        let Some(org) = author_org(self.config, h) else {
            return Err(StoreError::Corrupt(format!(
                "admitted event {} has no author in its configuration",
                id.short()
            )));
        };
        let org = org.to_string();
        let Some(m) = self.config.version(h.config_version).cloned() else {
            return Err(StoreError::Corrupt("missing configuration version".into()));
        };
        let (payload, unread) = match self.known.remove(&id) {
            Some(known) => (Some(Ok(known)), None),
            None => decrypt_event(event, self.keys),
        };
        if let Some(epoch) = unread {
            self.t.unread.insert(id.0, epoch)?;
        }
        let readable = payload.is_some();
        let seen = Seen {
            id,
            header: h,
            author_org: &org,
            payload,
        };
        let common = fold::check_common(&seen, self.config, &TxLookup(self.t));
        let broken = match &h.kind {
            Kind::CaseOpen => {
                let (mut record, broken) = fold::case_open(&seen, &m);
                let broken = common.or(broken);
                record.valid = broken.is_none();
                self.t.put_case(&record)?;
                broken
            }
            Kind::StatusDetermination | Kind::CaseUpdate(_) => {
                let case_id = h.subject.unwrap_or_default();
                match self.t.case_record(&case_id)? {
                    None => common.or(Some(Rule::BadSubject)),
                    Some(mut record) => {
                        if self.t.link(&case_id, &id, LINK_CASE_EVENT)? {
                            record.event_count += 1;
                        }
                        if seen.order_key() > record.last {
                            let broken = match common {
                                Some(rule) => Some(rule),
                                None => fold::case_apply(&mut record, &seen, &m),
                            };
                            record.last = seen.order_key();
                            record.last_activity = record.last_activity.max(h.hlc);
                            self.t.put_case(&record)?;
                            broken
                        } else {
                            self.t.put_case(&record)?;
                            self.put_verdict(&id, common.clone(), readable)?;
                            self.replay_case(&case_id)?;
                            return Ok(());
                        }
                    }
                }
            }
            Kind::ReferralSend { .. } => {
                let case_id = h.subject.unwrap_or_default();
                let case = self.t.case_record(&case_id)?;
                let (mut record, broken) =
                    fold::referral_send(&seen, &m, case.as_ref(), &TxLookup(self.t));
                let broken = common.or(broken);
                if broken.is_some() {
                    record.status = Status::Invalid;
                }
                self.t.put_referral(&record)?;
                self.index_referral(&record)?;
                if let Some(mut case) = case
                    && self.t.link(&case_id, &id, LINK_REFERRAL)?
                {
                    case.referral_count += 1;
                    case.last_activity = case.last_activity.max(h.hlc);
                    self.t.put_case(&case)?;
                }
                broken
            }
            Kind::ReferralUpdate { .. } => {
                let referral_id = h.subject.unwrap_or_default();
                match self.t.referral_record(&referral_id)? {
                    None => common.or(Some(Rule::BadSubject)),
                    Some(mut record) => {
                        if self.t.link(&referral_id, &id, LINK_STEP)? {
                            record.step_count += 1;
                        }
                        if seen.order_key() > record.last {
                            let broken = match common {
                                Some(rule) => Some(rule),
                                None => fold::referral_apply(&mut record, &seen, &m),
                            };
                            record.last = seen.order_key();
                            self.t.put_referral(&record)?;
                            self.touch_case(&record.case, h.hlc)?;
                            broken
                        } else {
                            self.t.put_referral(&record)?;
                            self.put_verdict(&id, common.clone(), readable)?;
                            self.replay_referral(&referral_id, false)?;
                            return Ok(());
                        }
                    }
                }
            }
            Kind::KeyShare { .. } => {
                let broken = common.or(fold::key_share(&seen, &m));
                if broken.is_none() {
                    if let Kind::KeyShare { to, epochs } = &h.kind {
                        for epoch in epochs {
                            self.t.shares.insert((*to, *epoch), ())?;
                        }
                    }
                    self.receive_key_share(event)?;
                }
                broken
            }
            Kind::MapChange { org: target } | Kind::MapSnapshot { org: target } => {
                let broken = common.or(crate::map::may_edit(&m, &org, target).err());
                let snapshot = matches!(h.kind, Kind::MapSnapshot { .. });
                self.t
                    .map_events
                    .insert((target.as_str(), id.0), u8::from(snapshot))?;
                match (broken, event.body()) {
                    (None, Some(body)) => {
                        match self.apply_map(
                            target,
                            &id,
                            &h.author,
                            h.config_version,
                            body,
                            snapshot,
                        )? {
                            super::maps::MapFold::Done(broken) => broken,
                            // Its Automerge dependencies have not arrived: it is judged when
                            // they do (as Automerge itself would queue it), never before.
                            super::maps::MapFold::Waits => return Ok(()),
                        }
                    }
                    (broken, _) => broken,
                }
            }
        };
        let readable = readable || matches!(h.kind, Kind::KeyShare { .. });
        self.put_verdict(&id, broken, readable)
    }

    fn put_verdict(
        &mut self,
        id: &EventId,
        broken: Option<Rule>,
        readable: bool,
    ) -> Result<(), StoreError> {
        self.t.put_verdict(id, &Verdict { broken, readable })
    }

    fn touch_case(&mut self, case_id: &EventId, at: Hlc) -> Result<(), StoreError> {
        if let Some(mut case) = self.t.case_record(case_id)?
            && at > case.last_activity
        {
            case.last_activity = at;
            self.t.put_case(&case)?;
        }
        Ok(())
    }

    fn index_referral(&mut self, record: &ReferralRecord) -> Result<(), StoreError> {
        let ms = record.sent_at.ms;
        self.t
            .by_org
            .insert((record.receiver_org.as_str(), 0, ms, record.id.0), ())?;
        self.t
            .by_org
            .insert((record.sender_org.as_str(), 1, ms, record.id.0), ())?;
        Ok(())
    }

    /// Loads, decrypts and judges the common rules of a list of events, sorted in replay order.
    fn load_sorted(&self, ids: &[EventId]) -> Result<Vec<(Event, String)>, StoreError> {
        let mut events = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(event) = self.t.event(id)? {
                let org = author_org(self.config, event.header())
                    .unwrap_or_default()
                    .to_string();
                events.push((event, org));
            }
        }
        events.sort_by_key(|(e, _)| (e.header().hlc, e.id()));
        Ok(events)
    }

    /// Replays a whole case from its opening: every case-level event re-judged in replay order.
    fn replay_case(&mut self, case_id: &EventId) -> Result<(), StoreError> {
        let Some(old) = self.t.case_record(case_id)? else {
            return Ok(());
        };
        let Some(open) = self.t.event(case_id)? else {
            return Ok(());
        };
        let open_org = author_org(self.config, open.header())
            .unwrap_or_default()
            .to_string();
        let Some(m) = self.config.version(open.header().config_version).cloned() else {
            return Ok(());
        };
        let (payload, _) = decrypt_event(&open, self.keys);
        let readable = payload.is_some();
        let seen = Seen {
            id: open.id(),
            header: open.header(),
            author_org: &open_org,
            payload,
        };
        let common = fold::check_common(&seen, self.config, &TxLookup(self.t));
        let (mut record, broken) = fold::case_open(&seen, &m);
        let broken = common.or(broken);
        record.valid = broken.is_none();
        record.referral_count = old.referral_count;
        record.event_count = old.event_count;
        self.put_verdict(case_id, broken, readable)?;
        let events = self.t.linked(case_id, LINK_CASE_EVENT)?;
        for (event, org) in self.load_sorted(&events)? {
            let (payload, _) = decrypt_event(&event, self.keys);
            let readable = payload.is_some();
            let Some(m) = self.config.version(event.header().config_version).cloned() else {
                continue;
            };
            let seen = Seen {
                id: event.id(),
                header: event.header(),
                author_org: &org,
                payload,
            };
            let common = fold::check_common(&seen, self.config, &TxLookup(self.t));
            let broken = match common {
                Some(rule) => Some(rule),
                None => fold::case_apply(&mut record, &seen, &m),
            };
            record.last = seen.order_key();
            record.last_activity = record.last_activity.max(event.header().hlc);
            self.put_verdict(&event.id(), broken, readable)?;
        }
        for referral in &self.t.linked(case_id, LINK_REFERRAL)? {
            if let Some(r) = self.t.referral_record(referral)? {
                record.last_activity = record.last_activity.max(r.last.0);
            }
        }
        self.t.put_case(&record)
    }

    /// Replays a referral: its steps re-judged in replay order; with `rejudge_send`, the
    /// sending event is judged again too (after this node gained the key to read it).
    fn replay_referral(
        &mut self,
        referral_id: &EventId,
        rejudge_send: bool,
    ) -> Result<(), StoreError> {
        let Some(old) = self.t.referral_record(referral_id)? else {
            return Ok(());
        };
        let Some(send) = self.t.event(referral_id)? else {
            return Ok(());
        };
        let Some(m) = self.config.version(send.header().config_version).cloned() else {
            return Ok(());
        };
        let mut record = if rejudge_send {
            let org = author_org(self.config, send.header())
                .unwrap_or_default()
                .to_string();
            let (payload, _) = decrypt_event(&send, self.keys);
            let readable = payload.is_some();
            let seen = Seen {
                id: send.id(),
                header: send.header(),
                author_org: &org,
                payload,
            };
            let case = self.t.case_record(&old.case)?;
            let common = fold::check_common(&seen, self.config, &TxLookup(self.t));
            let (mut record, broken) =
                fold::referral_send(&seen, &m, case.as_ref(), &TxLookup(self.t));
            let broken = common.or(broken);
            if broken.is_some() {
                record.status = Status::Invalid;
            }
            self.put_verdict(referral_id, broken, readable)?;
            record
        } else {
            let valid = self
                .t
                .verdict_of(referral_id)?
                .is_some_and(|v| v.is_valid());
            ReferralRecord {
                status: if valid { Status::Sent } else { Status::Invalid },
                acknowledged_at: None,
                accepted_at: None,
                declined_at: None,
                completed_at: None,
                withdrawn_at: None,
                decline_reason: None,
                last: (send.header().hlc, send.id()),
                ..old.clone()
            }
        };
        record.step_count = old.step_count;
        let steps = self.t.linked(referral_id, LINK_STEP)?;
        for (event, org) in self.load_sorted(&steps)? {
            let Some(m) = self.config.version(event.header().config_version).cloned() else {
                continue;
            };
            let (payload, _) = decrypt_event(&event, self.keys);
            let readable = payload.is_some();
            let seen = Seen {
                id: event.id(),
                header: event.header(),
                author_org: &org,
                payload,
            };
            let common = fold::check_common(&seen, self.config, &TxLookup(self.t));
            let broken = match common {
                Some(rule) => Some(rule),
                None => fold::referral_apply(&mut record, &seen, &m),
            };
            record.last = seen.order_key();
            self.put_verdict(&event.id(), broken, readable)?;
        }
        self.t.put_referral(&record)
    }

    /// A key share addressed to this node: open it with the node's own identity, check every
    /// epoch against the recipient the configuration lists, install them, and re-read what
    /// could not be read before.
    fn receive_key_share(&mut self, event: &Event) -> Result<(), StoreError> {
        let Kind::KeyShare { to, .. } = &event.header().kind else {
            return Ok(());
        };
        if *to != self.keys.node_key {
            return Ok(());
        }
        let Some(body) = event.body() else {
            return Ok(());
        };
        let Ok(plain) = payload::open(body, &self.keys.node_age) else {
            return Ok(());
        };
        let plain = zeroize::Zeroizing::new(plain);
        let Ok(shared) = payload::decode::<Vec<(u32, String)>>(&plain) else {
            return Ok(());
        };
        let node_recipient = self.keys.node_age.to_public();
        let mut installed = Vec::new();
        for (epoch, text) in shared.iter() {
            let Ok(identity) = keys::parse_identity(text) else {
                continue;
            };
            let matches = self.config.all().iter().any(|m| {
                m.epoch_recipient(&self.keys.org, *epoch)
                    .is_some_and(|r| r.to_string() == identity.to_public().to_string())
            });
            if !matches || self.keys.epochs.contains_key(epoch) {
                continue;
            }
            let sealed = payload::seal(
                keys::identity_text(&identity).as_bytes(),
                &[&node_recipient],
            )
            .map_err(|e| StoreError::Refused(e.to_string()))?;
            self.t.org_keys.insert(*epoch, sealed.as_slice())?;
            self.keys.epochs.insert(*epoch, identity);
            installed.push(*epoch);
        }
        if installed.is_empty() {
            return Ok(());
        }
        self.report.keys_installed.extend(installed.iter().copied());
        self.reread(&installed)
    }

    /// Re-folds every entity holding an event this node could not read with these epochs.
    pub fn reread(&mut self, epochs: &[u32]) -> Result<(), StoreError> {
        let mut now_readable = Vec::new();
        for row in self.t.unread.iter()? {
            let (id, epoch) = row?;
            if epochs.contains(&epoch.value()) {
                now_readable.push(Hash32(id.value()));
            }
        }
        let mut cases = BTreeSet::new();
        let mut referrals = BTreeSet::new();
        for id in &now_readable {
            self.t.unread.remove(id.0)?;
            let Some(event) = self.t.event(id)? else {
                continue;
            };
            match &event.header().kind {
                Kind::CaseOpen => {
                    cases.insert(*id);
                }
                Kind::StatusDetermination | Kind::CaseUpdate(_) => {
                    cases.insert(event.header().subject.unwrap_or_default());
                }
                Kind::ReferralSend { .. } => {
                    referrals.insert(*id);
                }
                Kind::ReferralUpdate { .. } => {
                    referrals.insert(event.header().subject.unwrap_or_default());
                }
                _ => {}
            }
        }
        for case in cases {
            self.replay_case(&case)?;
        }
        for referral in referrals {
            self.replay_referral(&referral, true)?;
        }
        Ok(())
    }
}

/// Reads what the store holds, for admission outside a write transaction (creation checks).
impl Store {
    /// The ids of events this node could not read yet (addressed to its organisation).
    pub fn unread_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        match super::read_table(&tx, UNREAD)? {
            Some(t) => Ok(t.len()?),
            None => Ok(0),
        }
    }
}

/// Reads and writes of the log outside the fold.
impl Store {
    /// Admits, stores and folds a batch of received events in one durable transaction.
    pub fn ingest(
        &mut self,
        events: &[Event],
        keys: &mut FoldKeys,
        now_ms: u64,
    ) -> Result<IngestReport, StoreError> {
        let mechanism_id = self.config.mechanism_id().ok_or(StoreError::NotJoined)?;
        let saved_keys = keys.clone();
        // Signatures are checked on the other cores while this thread runs the transaction:
        // admission finds most of them checked, and checks itself any a helper has not reached.
        let mut maps = std::mem::take(&mut self.map_cache);
        let result = std::thread::scope(|scope| {
            Event::verify_ahead(scope, events);
            let tx = self.db.begin_write()?;
            let report = {
                let mut tables = Tables::open(&tx)?;
                let mut ingest = Ingest::new(
                    &mut tables,
                    &self.config,
                    mechanism_id,
                    keys,
                    now_ms,
                    &mut maps,
                );
                for event in events {
                    ingest.ingest(event)?;
                }
                ingest.retry_held(false)?;
                ingest.report
            };
            tx.commit()?;
            Ok(report)
        });
        if let Ok(report) = &result {
            // Only admitted events move the clock (a refused or held one never does).
            observe_hlc(&mut self.hlc_seen, report.latest_hlc);
            self.map_cache = maps;
        }
        if result.is_err() {
            *keys = saved_keys;
        }
        result
    }

    /// As time passes: retries the held events whose time has come and drops those that
    /// waited too long (a bounded amount of work per call).
    pub fn retry_due(
        &mut self,
        keys: &mut FoldKeys,
        now_ms: u64,
    ) -> Result<IngestReport, StoreError> {
        self.with_ingest(keys, now_ms, |ingest| ingest.retry_due())
    }

    /// Runs `f` in one write transaction with an `Ingest` over it; commits if `f` succeeds.
    fn with_ingest(
        &mut self,
        keys: &mut FoldKeys,
        now_ms: u64,
        f: impl FnOnce(&mut Ingest<'_, '_>) -> Result<(), StoreError>,
    ) -> Result<IngestReport, StoreError> {
        let mechanism_id = self.config.mechanism_id().ok_or(StoreError::NotJoined)?;
        let saved_keys = keys.clone();
        let mut maps = std::mem::take(&mut self.map_cache);
        let result = (|| {
            let tx = self.db.begin_write()?;
            let report = {
                let mut tables = Tables::open(&tx)?;
                let mut ingest = Ingest::new(
                    &mut tables,
                    &self.config,
                    mechanism_id,
                    keys,
                    now_ms,
                    &mut maps,
                );
                f(&mut ingest)?;
                ingest.report
            };
            tx.commit()?;
            Ok(report)
        })();
        match &result {
            Ok(report) => {
                observe_hlc(&mut self.hlc_seen, report.latest_hlc);
                self.map_cache = maps;
            }
            Err(_) => *keys = saved_keys,
        }
        result
    }

    /// Retries every held event (after a configuration version arrived).
    pub fn retry_all_held(
        &mut self,
        keys: &mut FoldKeys,
        now_ms: u64,
    ) -> Result<IngestReport, StoreError> {
        self.with_ingest(keys, now_ms, |ingest| ingest.retry_held(true))
    }

    /// Re-folds what the given (newly installed) epochs open.
    pub fn reread(
        &mut self,
        epochs: &[u32],
        keys: &mut FoldKeys,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.with_ingest(keys, now_ms, |ingest| ingest.reread(epochs))
            .map(|_| ())
    }

    /// Appends events this node created, with their payloads in clear (so the fold need not
    /// decrypt what it just encrypted): admitted and folded like any other, in one durable
    /// transaction, committed only if admission let every one in and the fold found every one
    /// valid. Otherwise nothing is written and the reason is returned.
    pub fn append_local_batch(
        &mut self,
        events: Vec<(Event, Option<Decrypted>)>,
        keys: &mut FoldKeys,
        now_ms: u64,
    ) -> Result<Result<(), LocalRefusal>, StoreError> {
        let mechanism_id = self.config.mechanism_id().ok_or(StoreError::NotJoined)?;
        let saved_keys = keys.clone();
        let tx = self.db.begin_write()?;
        let mut outcome = Ok(());
        let mut maps = std::mem::take(&mut self.map_cache);
        {
            let mut tables = Tables::open(&tx)?;
            let mut ingest = Ingest::new(
                &mut tables,
                &self.config,
                mechanism_id,
                keys,
                now_ms,
                &mut maps,
            );
            for (event, known) in &events {
                if let Some(payload) = known {
                    ingest.known.insert(event.id(), payload.clone());
                }
                let admission = ingest.ingest(event)?;
                let verdict = ingest.t.verdict_of(&event.id())?;
                let problem = match (admission, verdict) {
                    (Admission::Admit, Some(v)) if v.is_valid() => None,
                    (Admission::Admit, Some(v)) => Some(match v.broken {
                        Some(rule) => LocalRefusal::Broken(rule),
                        None => LocalRefusal::NotAccepted("invalid".into()),
                    }),
                    (Admission::Admit, None) => Some(LocalRefusal::NotAccepted(
                        "it waits for a dependency this node does not hold".into(),
                    )),
                    (Admission::Refuse(r), _) => Some(LocalRefusal::NotAccepted(r.to_string())),
                    (other, _) => Some(LocalRefusal::NotAccepted(format!(
                        "it was not admitted ({other:?})"
                    ))),
                };
                if let Some(problem) = problem {
                    outcome = Err(problem);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => {
                if let Some(request) = self.pending_request.take() {
                    let ids = events.iter().map(|(e, _)| e.id()).collect();
                    super::requests::record_in(&tx, request, ids, now_ms)?;
                }
                tx.commit()?;
                if let Some((last, _)) = events.last() {
                    observe_hlc(&mut self.hlc_seen, last.header().hlc);
                }
                self.map_cache = maps;
                Ok(Ok(()))
            }
            Err(reason) => {
                tx.abort()?;
                *keys = saved_keys;
                Ok(Err(reason))
            }
        }
    }

    /// The author's head: (seq, id, claimed configuration version).
    pub fn head(&self, author: &[u8; 32]) -> Result<Option<(u64, EventId, u64)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, HEADS)? else {
            return Ok(None);
        };
        Ok(table.get(*author)?.map(|r| {
            let (seq, id, v) = r.value();
            (seq, Hash32(id), v)
        }))
    }

    /// Every author's head.
    pub fn heads(&self) -> Result<Vec<([u8; 32], u64, EventId)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, HEADS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (author, value) = row?;
            let (seq, id, _) = value.value();
            out.push((author.value(), seq, Hash32(id)));
        }
        Ok(out)
    }

    /// One stored event.
    pub fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, EVENTS)? else {
            return Ok(None);
        };
        match table.get(id.0)? {
            Some(bytes) => Event::decode(bytes.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", id.short()))),
            None => Ok(None),
        }
    }

    /// An author's events from `from_seq` on, at most `max` of them, in log order.
    pub fn log_range(
        &self,
        author: &[u8; 32],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.log_range_raw(author, from_seq, max)?
            .iter()
            .map(|(_, bytes)| {
                Event::decode(bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
            })
            .collect()
    }

    /// An author's events from `from_seq` on, as stored (wire bytes), at most `max`.
    pub fn log_range_raw(
        &self,
        author: &[u8; 32],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let (Some(log), Some(events)) = (
            super::read_table(&tx, LOG)?,
            super::read_table(&tx, EVENTS)?,
        ) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in log.range((*author, from_seq)..=(*author, u64::MAX))? {
            if out.len() >= max {
                break;
            }
            let (key, id) = row?;
            if let Some(bytes) = events.get(id.value())? {
                out.push((key.value().1, bytes.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// The fold's verdict on an event, if folded.
    pub fn verdict(&self, id: &EventId) -> Result<Option<Verdict>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, VERDICTS)? else {
            return Ok(None);
        };
        table
            .get(id.0)?
            .map(|b| dec(b.value(), "verdict"))
            .transpose()
    }

    /// A case's clear record.
    pub fn case_record(&self, id: &EventId) -> Result<Option<CaseRecord>, StoreError> {
        self.read_record(CASES, id, "case")
    }

    /// A referral's clear record.
    pub fn referral_record(&self, id: &EventId) -> Result<Option<ReferralRecord>, StoreError> {
        self.read_record(REFERRALS, id, "referral")
    }

    fn read_record<T: for<'de> serde::Deserialize<'de>>(
        &self,
        table: TableDefinition<Id, &[u8]>,
        id: &EventId,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, table)? else {
            return Ok(None);
        };
        table.get(id.0)?.map(|b| dec(b.value(), what)).transpose()
    }

    /// Every case record.
    pub fn case_records(&self) -> Result<Vec<CaseRecord>, StoreError> {
        self.all_records(CASES, "case")
    }

    /// Every referral record.
    pub fn referral_records(&self) -> Result<Vec<ReferralRecord>, StoreError> {
        self.all_records(REFERRALS, "referral")
    }

    fn all_records<T: for<'de> serde::Deserialize<'de>>(
        &self,
        table: TableDefinition<Id, &[u8]>,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, table)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(dec(row?.1.value(), what)?);
        }
        Ok(out)
    }

    /// Referral ids in an organisation's inbox (`sent = false`) or outbox, newest first.
    pub fn referrals_of_org(&self, org: &str, sent: bool) -> Result<Vec<EventId>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, BY_ORG)? else {
            return Ok(Vec::new());
        };
        let dir = u8::from(sent);
        let mut out = Vec::new();
        for row in table.range((org, dir, 0, [0u8; 32])..=(org, dir, u64::MAX, [255u8; 32]))? {
            out.push(Hash32(row?.0.value().3));
        }
        out.reverse();
        Ok(out)
    }

    /// Counts for `status`: events held back, events waiting for dependencies, equivocation
    /// evidence, events this node cannot read yet, events in the log.
    pub fn log_counts(&self) -> Result<LogCounts, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        fn count<K: redb::Key + 'static, V: redb::Value + 'static>(
            tx: &redb::ReadTransaction,
            def: TableDefinition<K, V>,
        ) -> Result<u64, StoreError> {
            match super::read_table(tx, def)? {
                Some(t) => Ok(t.len()?),
                None => Ok(0),
            }
        }
        Ok(LogCounts {
            events: count(&tx, EVENTS)?,
            held: count(&tx, super::held::HELD)? + count(&tx, super::held::HELD_STRANGERS)?,
            waiting: count(&tx, WAITING)? + count(&tx, super::maps::MAP_WAITING)?,
            equivocations: count(&tx, EQUIVOCATIONS)?,
            unread: count(&tx, UNREAD)?,
        })
    }

    /// The authors flagged for equivocation, with the sequence numbers involved.
    pub fn equivocations(&self) -> Result<Vec<([u8; 32], u64, EventId)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, EQUIVOCATIONS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (author, seq, id) = row?.0.value();
            out.push((author, seq, Hash32(id)));
        }
        Ok(out)
    }

    /// The highest HLC this store has written or seen.
    pub fn hlc_seen(&self) -> Hlc {
        self.hlc_seen
    }
}

/// Counts of what the log holds, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogCounts {
    pub events: u64,
    pub held: u64,
    pub waiting: u64,
    pub equivocations: u64,
    pub unread: u64,
}

fn observe_hlc(seen: &mut Hlc, hlc: Hlc) {
    if hlc > *seen {
        *seen = hlc;
    }
}

/// The highest HLC among the authors' head events.
pub(crate) fn max_hlc(db: &redb::Database) -> Result<Hlc, StoreError> {
    use redb::ReadableDatabase;
    let tx = db.begin_read()?;
    let (Some(heads), Some(events)) = (
        super::read_table(&tx, HEADS)?,
        super::read_table(&tx, EVENTS)?,
    ) else {
        return Ok(Hlc::default());
    };
    let mut max = Hlc::default();
    for row in heads.iter()? {
        let (_, id, _) = row?.1.value();
        if let Some(bytes) = events.get(id)? {
            let event = Event::decode(bytes.value())
                .map_err(|e| StoreError::Corrupt(format!("event: {e}")))?;
            max = max.max(event.header().hlc);
        }
    }
    Ok(max)
}

impl Store {
    /// Whether a valid key share of `epoch` to the node `to` is in the log.
    pub fn key_shared(&self, to: &[u8; 32], epoch: u32) -> Result<bool, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        match super::read_table(&tx, SHARES)? {
            Some(t) => Ok(t.get((*to, epoch))?.is_some()),
            None => Ok(false),
        }
    }

    /// A node-local setting.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        match super::read_table(&tx, META)? {
            Some(t) => Ok(t.get(name)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        }
    }

    /// Sets (or, with `None`, clears) a node-local setting.
    pub fn set_meta(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(META)?;
            match value {
                Some(v) => {
                    table.insert(name, v)?;
                }
                None => {
                    table.remove(name)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// The case-level events of a case (determinations, case updates), in arrival order.
    pub fn case_events(&self, case: &EventId) -> Result<Vec<EventId>, StoreError> {
        self.linked(case, LINK_CASE_EVENT)
    }

    /// The referrals sent for a case.
    pub fn case_referrals(&self, case: &EventId) -> Result<Vec<EventId>, StoreError> {
        self.linked(case, LINK_REFERRAL)
    }

    /// The steps of a referral.
    pub fn referral_steps(&self, referral: &EventId) -> Result<Vec<EventId>, StoreError> {
        self.linked(referral, LINK_STEP)
    }

    fn linked(&self, entity: &EventId, kind: u8) -> Result<Vec<EventId>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, LINKS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.range((entity.0, [0u8; 32])..=(entity.0, [255u8; 32]))? {
            let (key, value) = row?;
            if value.value() == kind {
                out.push(Hash32(key.value().1));
            }
        }
        Ok(out)
    }
}

impl Store {
    /// The report rows of the referrals sent in [from_ms, to_ms), from the time index.
    pub fn report_rows(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::report::ReportRow>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, REPORT_INDEX)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return Ok(out);
        }
        for row in table.range((from_ms, [0u8; 32])..(to_ms, [0u8; 32]))? {
            out.push(dec(row?.1.value(), "report row")?);
        }
        Ok(out)
    }
}

/// Why this node's own new events were not written (`append_local_batch`): the rule one of
/// them broke, kept typed so the interfaces can say it in the user's language, or another
/// reason admission gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalRefusal {
    /// An event broke a rule of the mechanism.
    Broken(crate::fold::Rule),
    /// An event was not admitted, or waits for an event this node does not hold.
    NotAccepted(String),
}
