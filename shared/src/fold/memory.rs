//! A [`FoldStore`] in memory, for tests: the fold's state machine without a database. Reads
//! never fail; map documents are applied through `map::apply` as the store does (without the
//! store's compaction and pruning, which change no verdict).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::AutoCommit;

use super::{
    CaseRecord, FoldError, FoldStore, Link, Lookup, MapBody, MapFold, ReferralRecord, Verdict,
};
use crate::config::ConfigState;
use crate::event::{Event, EventId, Header};
use crate::map::apply::{self, Writers};

/// Everything the fold writes, in ordered maps (so two stores compare with `==`).
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    pub events: BTreeMap<EventId, Event>,
    pub verdicts: BTreeMap<EventId, Verdict>,
    pub cases: BTreeMap<EventId, CaseRecord>,
    pub referrals: BTreeMap<EventId, ReferralRecord>,
    pub links: BTreeMap<(EventId, EventId), Link>,
    waiting: BTreeSet<(EventId, EventId)>,
    unread: BTreeMap<EventId, u32>,
    pub shares: BTreeSet<([u8; 32], u32)>,
    pub org_keys: BTreeMap<u32, Vec<u8>>,
    map_events: BTreeSet<(String, EventId, bool)>,
    maps: HashMap<String, AutoCommit>,
    map_waiting: BTreeSet<([u8; 32], EventId)>,
    woken: Vec<EventId>,
}

impl Lookup for MemoryStore {
    type Error = FoldError;

    fn header(&self, id: &EventId) -> Result<Option<Header>, FoldError> {
        Ok(self.events.get(id).map(|e| e.header().clone()))
    }

    fn verdict(&self, id: &EventId) -> Result<Option<Verdict>, FoldError> {
        Ok(self.verdicts.get(id).cloned())
    }

    fn case(&self, id: &EventId) -> Result<Option<CaseRecord>, FoldError> {
        Ok(self.cases.get(id).cloned())
    }
}

impl FoldStore for MemoryStore {
    fn event(&self, id: &EventId) -> Result<Option<Event>, FoldError> {
        Ok(self.events.get(id).cloned())
    }

    fn put_verdict(&mut self, id: &EventId, verdict: &Verdict) -> Result<(), FoldError> {
        self.verdicts.insert(*id, verdict.clone());
        Ok(())
    }

    fn put_case(&mut self, record: &CaseRecord) -> Result<(), FoldError> {
        self.cases.insert(record.id, record.clone());
        Ok(())
    }

    fn referral(&self, id: &EventId) -> Result<Option<ReferralRecord>, FoldError> {
        Ok(self.referrals.get(id).cloned())
    }

    fn put_referral(&mut self, record: &ReferralRecord) -> Result<(), FoldError> {
        self.referrals.insert(record.id, record.clone());
        Ok(())
    }

    fn link(&mut self, entity: &EventId, event: &EventId, link: Link) -> Result<bool, FoldError> {
        Ok(self.links.insert((*entity, *event), link).is_none())
    }

    fn linked(&self, entity: &EventId, link: Link) -> Result<Vec<EventId>, FoldError> {
        Ok(self
            .links
            .iter()
            .filter(|((e, _), l)| e == entity && **l == link)
            .map(|((_, event), _)| *event)
            .collect())
    }

    fn wait_for(&mut self, dependency: &EventId, waiter: &EventId) -> Result<(), FoldError> {
        self.waiting.insert((*dependency, *waiter));
        Ok(())
    }

    fn take_waiters(&mut self, dependency: &EventId) -> Result<Vec<EventId>, FoldError> {
        let waiters: Vec<EventId> = self
            .waiting
            .iter()
            .filter(|(d, _)| d == dependency)
            .map(|(_, w)| *w)
            .collect();
        for w in &waiters {
            self.waiting.remove(&(*dependency, *w));
        }
        Ok(waiters)
    }

    fn mark_unread(&mut self, id: &EventId, epoch: u32) -> Result<(), FoldError> {
        self.unread.insert(*id, epoch);
        Ok(())
    }

    fn take_unread(&mut self, epochs: &[u32]) -> Result<Vec<EventId>, FoldError> {
        let ids: Vec<EventId> = self
            .unread
            .iter()
            .filter(|(_, e)| epochs.contains(e))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.unread.remove(id);
        }
        Ok(ids)
    }

    fn record_key_share(&mut self, to: &[u8; 32], epoch: u32) -> Result<(), FoldError> {
        self.shares.insert((*to, epoch));
        Ok(())
    }

    fn install_org_key(&mut self, epoch: u32, sealed: &[u8]) -> Result<(), FoldError> {
        self.org_keys.insert(epoch, sealed.to_vec());
        Ok(())
    }

    fn note_map_event(&mut self, org: &str, id: &EventId, snapshot: bool) -> Result<(), FoldError> {
        self.map_events.insert((org.to_string(), *id, snapshot));
        Ok(())
    }

    fn apply_map(&mut self, config: &ConfigState, map: MapBody<'_>) -> Result<MapFold, FoldError> {
        let mut doc = self.maps.remove(map.org).unwrap_or_default();
        if !map.snapshot {
            let missing = apply::missing_deps(&mut doc, map.body);
            if !missing.is_empty() {
                for hash in missing {
                    self.map_waiting.insert((hash.0, *map.id));
                }
                self.maps.insert(map.org.to_string(), doc);
                return Ok(MapFold::Waits);
            }
        }
        let seqs = apply::actor_seqs(&mut doc);
        let seq_of = |actor: &[u8; 32]| seqs.get(actor).copied().unwrap_or(0);
        let editors =
            |key: &[u8; 32]| super::may_write_map(config, key, map.org, map.claimed_version);
        let writers = if map.snapshot {
            Writers::Editors(&editors)
        } else {
            Writers::Author(map.author)
        };
        let applied = match apply::apply_body(&mut doc, map.body, map.snapshot, writers, &seq_of) {
            Ok(applied) => applied,
            Err(rule) => return Ok(MapFold::Done(Some(rule))),
        };
        for hash in &applied.hashes {
            let woken: Vec<_> = self
                .map_waiting
                .iter()
                .filter(|(h, _)| *h == hash.0)
                .copied()
                .collect();
            for (h, waiter) in woken {
                self.map_waiting.remove(&(h, waiter));
                self.woken.push(waiter);
            }
        }
        self.maps.insert(map.org.to_string(), doc);
        Ok(MapFold::Done(None))
    }

    fn take_woken(&mut self) -> Vec<EventId> {
        std::mem::take(&mut self.woken)
    }

    fn prune_body(&mut self, id: &EventId) -> Result<(), FoldError> {
        if let Some(event) = self.events.get_mut(id) {
            *event = event.pruned();
        }
        Ok(())
    }
}
