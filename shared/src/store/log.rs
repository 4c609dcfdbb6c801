//! The event log in the store: admission, storage and the fold, in one write transaction per
//! batch, so an event and every view it changes (log heads, verdicts, case and referral
//! records, inbox and outbox indexes, installed keys) commit together or not at all.

use std::collections::BTreeSet;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::format::{id_row, row_pos, split_row, stored};
use super::indexes::index_status;
use super::org_keys::ORG_KEYS;
use super::{Store, StoreError};
use crate::admission::{self, Admission, Hold, LogView, Refusal};
use crate::config::{ConfigState, Hash32};
use crate::event::{Event, EventId, Header, Hlc};
use crate::fold::{
    CaseRecord, Decrypted, Fold, FoldKeys, FoldStore, Link, Lookup, MapBody, MapFold,
    ReferralRecord, Verdict,
};
use crate::limits::EQUIVOCATIONS_PER_AUTHOR_MAX;

pub(crate) type Id = [u8; 32];

/// Every admitted event, under the local position it was stored at → its stored bytes.
/// Positions only rise, so the events a transaction appends fill one run of leaves.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events-2");
/// Where each event is and what the fold judged: id → [`id_row`] (its position, then its
/// verdict once folded). The only table an event adds a random-keyed row to.
pub(crate) const EVENT_IDS: TableDefinition<Id, &[u8]> = TableDefinition::new("event_ids-2");
/// Each author's log: (author key, seq) → event id.
pub(crate) const LOG: TableDefinition<(Id, u64), Id> = TableDefinition::new("log-1");
/// Each author's head: author key → (seq, event id, claimed configuration version).
pub(crate) const HEADS: TableDefinition<Id, (u64, Id, u64)> = TableDefinition::new("heads-1");
/// Events waiting for a dependency: (missing dependency, waiting event) → ().
pub(crate) const WAITING: TableDefinition<(Id, Id), ()> = TableDefinition::new("waiting-1");
/// Equivocation evidence: (author, seq, conflicting event id) → its wire bytes.
pub(crate) const EQUIVOCATIONS: TableDefinition<(Id, u64, Id), &[u8]> =
    TableDefinition::new("equivocations-1");
/// Case records (clear state): case id → postcard.
pub(crate) const CASES: TableDefinition<Id, &[u8]> = TableDefinition::new("cases-1");
/// Referral records (clear state): referral id → postcard.
pub(crate) const REFERRALS: TableDefinition<Id, &[u8]> = TableDefinition::new("referrals-1");
/// Inbox and outbox by status: (organisation, 0 = received / 1 = sent, [`super::indexes::status_code`], sent
/// ms, referral id) → (). A referral's rows move when its status does, so the open referrals
/// of an organisation (and any one status) are read without scanning the rest.
pub(crate) const BY_STATUS: TableDefinition<(&str, u8, u8, u64, Id), ()> =
    TableDefinition::new("referrals_by_status-1");
/// Cases by their last activity: (ms, counter, case id) → (), so the case list reads the most
/// recently active first and stops at a page.
pub(crate) const CASES_BY_ACTIVITY: TableDefinition<(u64, u32, Id), ()> =
    TableDefinition::new("cases_by_activity-1");
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
/// Meta key: set while a restored node has not yet learned its own latest sequence.
pub const META_READ_ONLY: &str = "restored_read_only";
/// Valid key shares seen: (target node key, epoch) → (), so a node shares each epoch once.
pub(crate) const SHARES: TableDefinition<(Id, u32), ()> = TableDefinition::new("key_shares-1");

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
    /// Cases whose retention ran out (their bodies were dropped in this transaction).
    pub purged: Vec<EventId>,
}

use super::{decode as dec, encode as enc};

/// An event read from the events table: it decodes, and it is the event it is stored under
/// (the reading end of the pair whose writing end is `Event::encode`'s round-trip check).
pub(crate) fn read_back(
    id: &EventId,
    decoded: Result<Event, crate::event::EventError>,
) -> Result<Event, StoreError> {
    let event = decoded.map_err(|e| StoreError::Corrupt(format!("event {}: {e}", id.short())))?;
    if event.id() != *id {
        return Err(StoreError::Corrupt(format!(
            "event stored under {} is {}",
            id.short(),
            event.id().short()
        )));
    }
    Ok(event)
}

/// The tables of one write transaction.
pub(crate) struct Tables<'t> {
    pub events: redb::Table<'t, u64, &'static [u8]>,
    pub ids: redb::Table<'t, Id, &'static [u8]>,
    /// The position the next event stored in this transaction takes.
    next_pos: u64,
    pub log: redb::Table<'t, (Id, u64), Id>,
    pub heads: redb::Table<'t, Id, (u64, Id, u64)>,
    pub waiting: redb::Table<'t, (Id, Id), ()>,
    pub held: redb::Table<'t, (Id, u64, Id), &'static [u8]>,
    pub held_strangers: redb::Table<'t, (Id, u64, Id), &'static [u8]>,
    pub held_times: redb::Table<'t, (u64, u8, Id, u64, Id), ()>,
    pub held_counts: redb::Table<'t, Id, u64>,
    pub equivocations: redb::Table<'t, (Id, u64, Id), &'static [u8]>,
    pub cases: redb::Table<'t, Id, &'static [u8]>,
    pub referrals: redb::Table<'t, Id, &'static [u8]>,
    pub by_status: redb::Table<'t, (&'static str, u8, u8, u64, Id), ()>,
    pub by_activity: redb::Table<'t, (u64, u32, Id), ()>,
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
        let events = tx.open_table(EVENTS)?;
        let next_pos = events.last()?.map_or(0, |(pos, _)| pos.value() + 1);
        Ok(Self {
            events,
            ids: tx.open_table(EVENT_IDS)?,
            next_pos,
            log: tx.open_table(LOG)?,
            heads: tx.open_table(HEADS)?,
            waiting: tx.open_table(WAITING)?,
            held: tx.open_table(super::held::HELD)?,
            held_strangers: tx.open_table(super::held::HELD_STRANGERS)?,
            held_times: tx.open_table(super::held::HELD_TIMES)?,
            held_counts: tx.open_table(super::held::HELD_COUNTS)?,
            equivocations: tx.open_table(EQUIVOCATIONS)?,
            cases: tx.open_table(CASES)?,
            referrals: tx.open_table(REFERRALS)?,
            by_status: tx.open_table(BY_STATUS)?,
            by_activity: tx.open_table(CASES_BY_ACTIVITY)?,
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
        match stored(&self.ids, &self.events, id)? {
            Some(bytes) => read_back(id, Event::decode_stored(bytes.value())).map(Some),
            None => Ok(None),
        }
    }

    /// Stores an admitted event at the next position.
    fn store_event(&mut self, id: &EventId, bytes: &[u8]) -> Result<(), StoreError> {
        let pos = self.next_pos;
        self.events.insert(pos, bytes)?;
        self.ids.insert(id.0, id_row(pos, None).as_slice())?;
        self.next_pos += 1;
        Ok(())
    }

    /// Rewrites a stored event in place (its body pruned), keeping its position and verdict.
    pub(crate) fn replace_event(&mut self, id: &EventId, bytes: &[u8]) -> Result<(), StoreError> {
        let pos = self.position(id)?;
        self.events.insert(pos, bytes)?;
        Ok(())
    }

    fn position(&self, id: &EventId) -> Result<u64, StoreError> {
        let row = self
            .ids
            .get(id.0)?
            .ok_or_else(|| StoreError::Corrupt(format!("event {} is not stored", id.short())))?;
        row_pos(row.value())
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
            .map(|b| decode_case(b.value()))
            .transpose()
    }

    fn referral_record(&self, id: &EventId) -> Result<Option<ReferralRecord>, StoreError> {
        self.referrals
            .get(id.0)?
            .map(|b| dec(b.value(), "referral"))
            .transpose()
    }

    fn put_case(&mut self, record: &CaseRecord) -> Result<(), StoreError> {
        let before = self
            .cases
            .insert(record.id.0, enc(record).as_slice())?
            .map(|old| decode_case(old.value()).map(|r| r.last_activity))
            .transpose()?;
        let now = record.last_activity;
        if before != Some(now) {
            if let Some(old) = before {
                self.by_activity
                    .remove((old.ms, old.counter, record.id.0))?;
            }
            self.by_activity
                .insert((now.ms, now.counter, record.id.0), ())?;
        }
        Ok(())
    }

    fn put_referral(&mut self, record: &ReferralRecord) -> Result<(), StoreError> {
        let before: Option<ReferralRecord> = self
            .referrals
            .insert(record.id.0, enc(record).as_slice())?
            .map(|old| dec(old.value(), "referral"))
            .transpose()?;
        // The rows by status move when a fact they are keyed by changes (the status, in
        // practice): the earlier rows are taken out under the earlier record's own facts.
        let key = |r: &ReferralRecord| {
            (
                r.status,
                r.sent_at.ms,
                r.sender_org.clone(),
                r.receiver_org.clone(),
            )
        };
        if before.as_ref().map(key) != Some(key(record)) {
            if let Some(old) = &before {
                index_status(&mut self.by_status, old, old.status, false)?;
            }
            index_status(&mut self.by_status, record, record.status, true)?;
        }
        let row = crate::report::ReportRow::from_record(record);
        self.report_index
            .insert((record.sent_at.ms, record.id.0), enc(&row).as_slice())?;
        Ok(())
    }

    /// Keeps the fold's verdict beside the event's position (the row the append just wrote,
    /// so in the same transaction its page is written once).
    fn put_verdict(&mut self, id: &EventId, verdict: &Verdict) -> Result<(), StoreError> {
        let pos = self.position(id)?;
        self.ids
            .insert(id.0, id_row(pos, Some(verdict)).as_slice())?;
        Ok(())
    }

    fn verdict_of(&self, id: &EventId) -> Result<Option<Verdict>, StoreError> {
        match self.ids.get(id.0)? {
            Some(row) => Ok(split_row(row.value())?.1),
            None => Ok(None),
        }
    }
}

/// Admission's view of the log, over the open tables (heads move as a batch is admitted).
struct TxLog<'a, 't>(&'a Tables<'t>);

impl LogView for TxLog<'_, '_> {
    type Error = StoreError;

    fn head(&self, author: &[u8; 32]) -> Result<Option<(u64, EventId, u64)>, StoreError> {
        Ok(self.0.heads.get(*author)?.map(|row| {
            let (seq, id, version) = row.value();
            (seq, Hash32(id), version)
        }))
    }

    fn id_at(&self, author: &[u8; 32], seq: u64) -> Result<Option<EventId>, StoreError> {
        Ok(self.0.log.get((*author, seq))?.map(|id| Hash32(id.value())))
    }
}

/// The fold's store over the open tables of one write transaction (see `fold::FoldStore`).
pub(crate) struct TxStore<'a, 't> {
    pub t: &'a mut Tables<'t>,
    /// Partner-map documents kept loaded (see `maps`).
    pub maps: &'a mut super::maps::MapCache,
    /// Organisations whose partner-map profile changed (the batch's report).
    pub maps_changed: &'a mut Vec<String>,
    /// Map events whose missing Automerge dependencies an applied event brought: to fold next.
    pub woken: Vec<EventId>,
}

impl Lookup for TxStore<'_, '_> {
    type Error = StoreError;

    fn header(&self, id: &EventId) -> Result<Option<Header>, StoreError> {
        if let Some(h) = self.t.headers.borrow().get(&id.0) {
            return Ok(Some(h.clone()));
        }
        let Some(header) = self.t.event(id)?.map(|e| e.header().clone()) else {
            return Ok(None);
        };
        self.t.remember(id, &header);
        Ok(Some(header))
    }

    fn verdict(&self, id: &EventId) -> Result<Option<Verdict>, StoreError> {
        self.t.verdict_of(id)
    }

    fn case(&self, id: &EventId) -> Result<Option<CaseRecord>, StoreError> {
        self.t.case_record(id)
    }
}

/// A stored case record. Records written before `purged` and `withdrawals` existed end two
/// fields early: read them with `None` and an empty list (two zero bytes) appended.
pub(crate) fn decode_case(bytes: &[u8]) -> Result<CaseRecord, StoreError> {
    dec(bytes, "case").or_else(|_| dec(&[bytes, &[0, 0]].concat(), "case"))
}

fn link_code(link: Link) -> u8 {
    match link {
        Link::CaseEvent => LINK_CASE_EVENT,
        Link::Referral => LINK_REFERRAL,
        Link::Step => LINK_STEP,
    }
}

impl FoldStore for TxStore<'_, '_> {
    fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.t.event(id)
    }

    fn is_folded(&self, id: &EventId) -> Result<bool, StoreError> {
        Ok(self
            .t
            .ids
            .get(id.0)?
            .is_some_and(|row| row.value().len() > 8))
    }

    fn put_verdict(&mut self, id: &EventId, verdict: &Verdict) -> Result<(), StoreError> {
        self.t.put_verdict(id, verdict)
    }

    fn put_case(&mut self, record: &CaseRecord) -> Result<(), StoreError> {
        self.t.put_case(record)
    }

    fn referral(&self, id: &EventId) -> Result<Option<ReferralRecord>, StoreError> {
        self.t.referral_record(id)
    }

    fn put_referral(&mut self, record: &ReferralRecord) -> Result<(), StoreError> {
        self.t.put_referral(record)
    }

    fn link(&mut self, entity: &EventId, event: &EventId, link: Link) -> Result<bool, StoreError> {
        self.t.link(entity, event, link_code(link))
    }

    fn linked(&self, entity: &EventId, link: Link) -> Result<Vec<EventId>, StoreError> {
        self.t.linked(entity, link_code(link))
    }

    fn wait_for(&mut self, dependency: &EventId, waiter: &EventId) -> Result<(), StoreError> {
        self.t.waiting.insert((dependency.0, waiter.0), ())?;
        Ok(())
    }

    fn take_waiters(&mut self, dependency: &EventId) -> Result<Vec<EventId>, StoreError> {
        let id = dependency.0;
        let waiters: Vec<Id> = self
            .t
            .waiting
            .range((id, [0u8; 32])..=(id, [255u8; 32]))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for waiter in &waiters {
            self.t.waiting.remove((id, *waiter))?;
        }
        Ok(waiters.into_iter().map(Hash32).collect())
    }

    fn mark_unread(&mut self, id: &EventId, epoch: u32) -> Result<(), StoreError> {
        self.t.unread.insert(id.0, epoch)?;
        Ok(())
    }

    fn take_unread(&mut self, epochs: &[u32]) -> Result<Vec<EventId>, StoreError> {
        let mut now_readable = Vec::new();
        for row in self.t.unread.iter()? {
            let (id, epoch) = row?;
            if epochs.contains(&epoch.value()) {
                now_readable.push(Hash32(id.value()));
            }
        }
        for id in &now_readable {
            self.t.unread.remove(id.0)?;
        }
        Ok(now_readable)
    }

    fn record_key_share(&mut self, to: &[u8; 32], epoch: u32) -> Result<(), StoreError> {
        self.t.shares.insert((*to, epoch), ())?;
        Ok(())
    }

    fn install_org_key(&mut self, epoch: u32, sealed: &[u8]) -> Result<(), StoreError> {
        self.t.org_keys.insert(epoch, sealed)?;
        Ok(())
    }

    fn note_map_event(
        &mut self,
        org: &str,
        id: &EventId,
        snapshot: bool,
    ) -> Result<(), StoreError> {
        self.t.map_events.insert((org, id.0), u8::from(snapshot))?;
        Ok(())
    }

    fn apply_map(&mut self, config: &ConfigState, map: MapBody<'_>) -> Result<MapFold, StoreError> {
        super::maps::apply_map(self, config, map)
    }

    fn take_woken(&mut self) -> Vec<EventId> {
        std::mem::take(&mut self.woken)
    }

    fn prune_body(&mut self, id: &EventId) -> Result<(), StoreError> {
        if let Some(event) = self.t.event(id)?
            && event.body().is_some()
        {
            self.t.replace_event(id, &event.pruned().encode())?;
        }
        Ok(())
    }
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
        )?;
        let h = event.header();
        match &admission {
            Admission::Admit => {
                self.t.store_event(&event.id(), &event.encode())?;
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

    /// Folds the event once every causal dependency is folded (see `fold::Fold`).
    fn fold_when_ready(&mut self, first: Event) -> Result<(), StoreError> {
        self.with_fold(|fold| fold.when_ready(first))
    }

    /// Re-folds every entity holding an event this node could not read with these epochs.
    pub fn reread(&mut self, epochs: &[u32]) -> Result<(), StoreError> {
        self.with_fold(|fold| fold.reread(epochs))
    }

    /// Purges the cases whose retention ran out by `now_ms` under the configuration in force
    /// (judged from clear records only, so every node that holds a case purges it alike).
    pub fn purge_due(&mut self, now_ms: u64) -> Result<(), StoreError> {
        let Some(m) = self.config.current().cloned() else {
            return Ok(());
        };
        let mut due = Vec::new();
        for row in self.t.cases.iter()? {
            let record = decode_case(row?.1.value())?;
            if crate::fold::retention_due(&record, &m.doc.sop, now_ms) {
                due.push(record);
            }
        }
        for mut record in due {
            // The moment retention ran out, the same on every node (not this node's `now`).
            let kept = if record.closed || !record.valid {
                m.doc.sop.retention_days
            } else {
                m.doc.sop.open_case_inactive_days.unwrap_or_default()
            };
            record.purged = Some(crate::fold::Purge {
                at: Hlc {
                    ms: record.last_activity.ms + u64::from(kept) * 86_400_000,
                    counter: 0,
                },
                cause: crate::fold::PurgeCause::Retention,
            });
            self.t.cases.insert(record.id.0, enc(&record).as_slice())?;
            self.with_fold(|fold| fold.purge_bodies(&record.id))?;
            self.report.purged.push(record.id);
        }
        Ok(())
    }

    fn with_fold(
        &mut self,
        f: impl FnOnce(&mut Fold<'_, TxStore<'_, '_>>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut store = TxStore {
            t: &mut *self.t,
            maps: &mut *self.maps,
            maps_changed: &mut self.report.maps_changed,
            woken: Vec::new(),
        };
        let mut fold = Fold {
            store: &mut store,
            config: self.config,
            keys: &mut *self.keys,
            known: &mut self.known,
            keys_installed: &mut self.report.keys_installed,
        };
        f(&mut fold)
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

    /// Drops the bodies of every case whose retention ran out by `now_ms`; returns them.
    pub fn purge_due(
        &mut self,
        keys: &mut FoldKeys,
        now_ms: u64,
    ) -> Result<Vec<EventId>, StoreError> {
        self.with_ingest(keys, now_ms, |ingest| ingest.purge_due(now_ms))
            .map(|report| report.purged)
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
    let (Some(heads), Some(ids), Some(events)) = (
        super::read_table(&tx, HEADS)?,
        super::read_table(&tx, EVENT_IDS)?,
        super::read_table(&tx, EVENTS)?,
    ) else {
        return Ok(Hlc::default());
    };
    let mut max = Hlc::default();
    for row in heads.iter()? {
        let (_, id, _) = row?.1.value();
        if let Some(bytes) = stored(&ids, &events, &Hash32(id))? {
            let event = Event::decode(bytes.value())
                .map_err(|e| StoreError::Corrupt(format!("event: {e}")))?;
            max = max.max(event.header().hlc);
        }
    }
    Ok(max)
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
