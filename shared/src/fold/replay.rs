//! The fold over a [`FoldStore`]: an admitted event is folded once every causal dependency is
//! (it waits otherwise), judged by `rules`, and applied to its case or referral; an event that
//! comes before the entity's replay position makes the entity replay in (HLC, id) order. Key
//! shares addressed to this node install their epochs and re-read what they open.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::{
    CaseRecord, Decrypted, FoldError, FoldKeys, FoldStore, Link, MapBody, MapFold, ReferralRecord,
    Rule, Seen, Status, Verdict, author_org, decrypt_event, rules,
};
use crate::config::{ConfigState, Mechanism};
use crate::event::{CaseAction, Event, EventId, Header, Hlc, Kind};
use crate::{keys, payload};

/// One run of the fold over a store, with the keys it reads with.
pub struct Fold<'a, S: FoldStore> {
    pub store: &'a mut S,
    pub config: &'a ConfigState,
    pub keys: &'a mut FoldKeys,
    /// Payloads of events this node just created, so the fold reads them without decrypting.
    pub known: &'a mut HashMap<EventId, Decrypted>,
    /// Key epochs this node received through key shares in this run.
    pub keys_installed: &'a mut Vec<u32>,
}

impl<S: FoldStore> std::fmt::Debug for Fold<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fold({:?})", self.keys)
    }
}

/// An event with its author's organisation and what this node can read of it.
struct Judged {
    org: String,
    payload: Option<Result<Decrypted, ()>>,
    unread: Option<u32>,
}

impl<S: FoldStore> Fold<'_, S> {
    /// Folds `first` if every causal dependency is folded (otherwise it waits), then everything
    /// that waited for what was folded.
    pub fn when_ready(&mut self, first: Event) -> Result<(), S::Error> {
        let mut queue = VecDeque::from([first]);
        while let Some(event) = queue.pop_front() {
            let id = event.id();
            if self.store.is_folded(&id)? {
                continue;
            }
            let mut missing = false;
            for dep in event.header().causal_deps() {
                if !self.store.is_folded(&dep)? {
                    self.store.wait_for(&dep, &id)?;
                    missing = true;
                }
            }
            if missing {
                continue;
            }
            self.fold_now(&event)?;
            // Map changes that waited for Automerge changes this event brought, then
            // everything that waited for this event: either may be ready now.
            let woken = self.store.take_woken();
            let waiters = self.store.take_waiters(&id)?;
            for waiter in woken.into_iter().chain(waiters) {
                if let Some(event) = self.store.event(&waiter)? {
                    queue.push_back(event);
                }
            }
        }
        Ok(())
    }

    fn mechanism(&self, version: u64) -> Result<Mechanism, S::Error> {
        let m = self.config.version(version);
        Ok(m.ok_or(FoldError::MissingVersion(version))?
            .as_ref()
            .clone())
    }

    /// The author's organisation and the payload as this node reads it.
    fn judge(&mut self, event: &Event) -> Result<Judged, S::Error> {
        let id = event.id();
        let org = author_org(self.config, event.header())
            .ok_or_else(|| FoldError::NoAuthor(id.short()))?
            .to_string();
        let (payload, unread) = match self.known.remove(&id) {
            Some(known) => (Some(Ok(known)), None),
            None => decrypt_event(event, self.keys),
        };
        Ok(Judged {
            org,
            payload,
            unread,
        })
    }

    /// Folds one event whose dependencies are all folded.
    /// Folds one event, then drops bodies if the event belongs to a purged case (the erasure
    /// itself, or anything arriving after it: stored without its body).
    fn fold_now(&mut self, event: &Event) -> Result<(), S::Error> {
        self.fold_event(event)?;
        let Some(case_id) = self.case_of(event.header())? else {
            return Ok(());
        };
        let Some(case) = self.store.case(&case_id)? else {
            return Ok(());
        };
        if case.purged.is_some() {
            self.purge_bodies(&case_id)?;
        } else if !case.withdrawals.is_empty() {
            let referral = match event.header().kind {
                Kind::ReferralSend { .. } => Some(event.id()),
                Kind::ReferralUpdate { .. } => event.header().subject,
                _ => None,
            };
            if let Some(referral) = referral {
                self.prune_withdrawn(&case, &referral)?;
            }
        }
        Ok(())
    }

    /// After a consent withdrawal is folded: what was shared under it is dropped, and the
    /// referrals sent after it are judged again (one folded before the withdrawal arrived
    /// comes out as it does on every node).
    fn after_withdrawals(&mut self, case_id: &EventId) -> Result<(), S::Error> {
        let Some(case) = self.store.case(case_id)? else {
            return Ok(());
        };
        for referral in self.store.linked(case_id, Link::Referral)? {
            let Some(h) = self.store.header(&referral)? else {
                continue;
            };
            let Kind::ReferralSend {
                to_org, category, ..
            } = &h.kind
            else {
                continue;
            };
            if rules::withdrawn_before(&case, h.hlc, to_org, category.as_deref()) {
                self.replay_referral(&referral, true)?;
            }
            self.prune_withdrawn(&case, &referral)?;
        }
        Ok(())
    }

    /// Drops the bodies of a referral sent before a withdrawal that covers it (the fields
    /// shared under that consent) and of its steps.
    fn prune_withdrawn(&mut self, case: &CaseRecord, referral: &EventId) -> Result<(), S::Error> {
        let Some(h) = self.store.header(referral)? else {
            return Ok(());
        };
        let Kind::ReferralSend {
            to_org, category, ..
        } = &h.kind
        else {
            return Ok(());
        };
        let covered = case
            .withdrawals
            .iter()
            .any(|w| h.hlc < w.at && w.covers(to_org, category.as_deref()));
        if covered {
            self.store.prune_body(referral)?;
            for step in self.store.linked(referral, Link::Step)? {
                self.store.prune_body(&step)?;
            }
        }
        Ok(())
    }

    /// The case an event belongs to, from its clear header.
    fn case_of(&self, h: &Header) -> Result<Option<EventId>, S::Error> {
        Ok(match &h.kind {
            Kind::StatusDetermination | Kind::CaseUpdate(_) | Kind::ReferralSend { .. } => {
                h.subject
            }
            Kind::ReferralUpdate { .. } => match h.subject {
                Some(referral) => self.store.referral(&referral)?.map(|r| r.case),
                None => None,
            },
            _ => None,
        })
    }

    /// Drops the bodies of every event of a case (its opening, case-level events, referrals
    /// and their steps); headers stay, so every log stays verifiable. Idempotent.
    pub fn purge_bodies(&mut self, case_id: &EventId) -> Result<(), S::Error> {
        let mut ids = vec![*case_id];
        ids.extend(self.store.linked(case_id, Link::CaseEvent)?);
        for referral in self.store.linked(case_id, Link::Referral)? {
            ids.push(referral);
            ids.extend(self.store.linked(&referral, Link::Step)?);
        }
        for id in &ids {
            self.store.prune_body(id)?;
        }
        Ok(())
    }

    fn fold_event(&mut self, event: &Event) -> Result<(), S::Error> {
        let h = event.header();
        let id = event.id();
        let m = self.mechanism(h.config_version)?;
        let judged = self.judge(event)?;
        if let Some(epoch) = judged.unread {
            self.store.mark_unread(&id, epoch)?;
        }
        let readable = judged.payload.is_some() || matches!(h.kind, Kind::KeyShare { .. });
        let seen = Seen {
            id,
            header: h,
            author_org: &judged.org,
            payload: judged.payload,
        };
        let common = rules::check_common(&seen, self.config, &*self.store)?;
        let broken = match &h.kind {
            Kind::CaseOpen => {
                let (mut record, broken) = rules::case_open(&seen, &m);
                let broken = common.or(broken);
                record.valid = broken.is_none();
                self.store.put_case(&record)?;
                broken
            }
            Kind::StatusDetermination | Kind::CaseUpdate(_) => {
                match self.case_event(&seen, &m, common, readable)? {
                    Some(broken) => broken,
                    None => return Ok(()),
                }
            }
            Kind::ReferralSend { .. } => self.referral_send(&seen, &m, common)?,
            Kind::ReferralUpdate { .. } => {
                match self.referral_step(&seen, &m, common, readable)? {
                    Some(broken) => broken,
                    None => return Ok(()),
                }
            }
            Kind::KeyShare { to, epochs } => {
                let broken = common.or(rules::key_share(&seen, &m));
                if broken.is_none() {
                    for epoch in epochs {
                        self.store.record_key_share(to, *epoch)?;
                    }
                    self.receive_key_share(event)?;
                }
                broken
            }
            Kind::MapChange { org: target } | Kind::MapSnapshot { org: target } => {
                match self.map_event(event, &seen, &m, target, common)? {
                    MapFold::Done(broken) => broken,
                    // Its Automerge dependencies have not arrived: it is judged when they do
                    // (as Automerge itself would queue it), never before.
                    MapFold::Waits => return Ok(()),
                }
            }
        };
        self.put_verdict(&id, broken, readable)
    }

    fn put_verdict(
        &mut self,
        id: &EventId,
        broken: Option<Rule>,
        readable: bool,
    ) -> Result<(), S::Error> {
        self.store.put_verdict(id, &Verdict { broken, readable })
    }

    /// A determination or case update. `Some(broken)` when judged in place; `None` when it
    /// came before the case's replay position and the case was replayed (verdicts written).
    fn case_event(
        &mut self,
        seen: &Seen<'_>,
        m: &Mechanism,
        common: Option<Rule>,
        readable: bool,
    ) -> Result<Option<Option<Rule>>, S::Error> {
        let h = seen.header;
        let case_id = h.subject.unwrap_or_default();
        let Some(mut record) = self.store.case(&case_id)? else {
            return Ok(Some(common.or(Some(Rule::BadSubject))));
        };
        if self.store.link(&case_id, &seen.id, Link::CaseEvent)? {
            record.event_count += 1;
        }
        if seen.order_key() > record.last {
            let broken = match common {
                Some(rule) => Some(rule),
                None => rules::case_apply(&mut record, seen, m),
            };
            record.last = seen.order_key();
            record.last_activity = record.last_activity.max(h.hlc);
            self.store.put_case(&record)?;
            let withdrawal = matches!(
                h.kind,
                Kind::CaseUpdate(CaseAction::ConsentWithdrawn { .. })
            );
            if broken.is_none() && withdrawal {
                self.after_withdrawals(&case_id)?;
            }
            return Ok(Some(broken));
        }
        self.store.put_case(&record)?;
        self.put_verdict(&seen.id, common, readable)?;
        self.replay_case(&case_id)?;
        Ok(None)
    }

    fn referral_send(
        &mut self,
        seen: &Seen<'_>,
        m: &Mechanism,
        common: Option<Rule>,
    ) -> Result<Option<Rule>, S::Error> {
        let h = seen.header;
        let case_id = h.subject.unwrap_or_default();
        let case = self.store.case(&case_id)?;
        let (mut record, broken) = rules::referral_send(seen, m, case.as_ref(), &*self.store)?;
        let broken = common.or(broken);
        if broken.is_some() {
            record.status = Status::Invalid;
        }
        self.store.put_referral(&record)?;
        if let Some(mut case) = case
            && self.store.link(&case_id, &seen.id, Link::Referral)?
        {
            case.referral_count += 1;
            case.last_activity = case.last_activity.max(h.hlc);
            self.store.put_case(&case)?;
        }
        Ok(broken)
    }

    /// A referral step; `None` when the referral was replayed instead (see [`Self::case_event`]).
    fn referral_step(
        &mut self,
        seen: &Seen<'_>,
        m: &Mechanism,
        common: Option<Rule>,
        readable: bool,
    ) -> Result<Option<Option<Rule>>, S::Error> {
        let h = seen.header;
        let referral_id = h.subject.unwrap_or_default();
        let Some(mut record) = self.store.referral(&referral_id)? else {
            return Ok(Some(common.or(Some(Rule::BadSubject))));
        };
        if self.store.link(&referral_id, &seen.id, Link::Step)? {
            record.step_count += 1;
        }
        if seen.order_key() > record.last {
            let broken = match common {
                Some(rule) => Some(rule),
                None => rules::referral_apply(&mut record, seen, m),
            };
            record.last = seen.order_key();
            self.store.put_referral(&record)?;
            self.touch_case(&record.case, h.hlc)?;
            return Ok(Some(broken));
        }
        self.store.put_referral(&record)?;
        self.put_verdict(&seen.id, common, readable)?;
        self.replay_referral(&referral_id, false)?;
        Ok(None)
    }

    fn map_event(
        &mut self,
        event: &Event,
        seen: &Seen<'_>,
        m: &Mechanism,
        target: &str,
        common: Option<Rule>,
    ) -> Result<MapFold, S::Error> {
        let h = seen.header;
        let broken = common.or(crate::map::may_edit(m, seen.author_org, target).err());
        let snapshot = matches!(h.kind, Kind::MapSnapshot { .. });
        self.store.note_map_event(target, &seen.id, snapshot)?;
        match (broken, event.body()) {
            (None, Some(body)) => self.store.apply_map(
                self.config,
                MapBody {
                    org: target,
                    id: &seen.id,
                    author: &h.author,
                    claimed_version: h.config_version,
                    body,
                    snapshot,
                },
            ),
            (broken, _) => Ok(MapFold::Done(broken)),
        }
    }

    fn touch_case(&mut self, case_id: &EventId, at: Hlc) -> Result<(), S::Error> {
        if let Some(mut case) = self.store.case(case_id)?
            && at > case.last_activity
        {
            case.last_activity = at;
            self.store.put_case(&case)?;
        }
        Ok(())
    }

    /// Loads the given events with their authors' organisations, sorted in replay order.
    fn load_sorted(&self, ids: &[EventId]) -> Result<Vec<(Event, String)>, S::Error> {
        let mut events = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(event) = self.store.event(id)? {
                let org = author_org(self.config, event.header())
                    .unwrap_or_default()
                    .to_string();
                events.push((event, org));
            }
        }
        events.sort_by_key(|(e, _)| (e.header().hlc, e.id()));
        Ok(events)
    }

    /// Judges a replayed event: its common rules, then `apply` unless they broke.
    fn rejudge(
        &mut self,
        event: &Event,
        org: &str,
        apply: impl FnOnce(&Seen<'_>, &Mechanism) -> Option<Rule>,
    ) -> Result<Option<(Option<Rule>, bool)>, S::Error> {
        let Some(m) = self.config.version(event.header().config_version).cloned() else {
            return Ok(None);
        };
        let (payload, _) = decrypt_event(event, self.keys);
        let readable = payload.is_some();
        let seen = Seen {
            id: event.id(),
            header: event.header(),
            author_org: org,
            payload,
        };
        let broken = match rules::check_common(&seen, self.config, &*self.store)? {
            Some(rule) => Some(rule),
            None => apply(&seen, &m),
        };
        Ok(Some((broken, readable)))
    }

    /// Replays a whole case from its opening: every case-level event re-judged in replay order.
    fn replay_case(&mut self, case_id: &EventId) -> Result<(), S::Error> {
        let Some(old) = self.store.case(case_id)? else {
            return Ok(());
        };
        let Some(open) = self.store.event(case_id)? else {
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
        let common = rules::check_common(&seen, self.config, &*self.store)?;
        let (mut record, broken) = rules::case_open(&seen, &m);
        let broken = common.or(broken);
        record.valid = broken.is_none();
        record.referral_count = old.referral_count;
        record.event_count = old.event_count;
        self.put_verdict(case_id, broken, readable)?;
        let events = self.store.linked(case_id, Link::CaseEvent)?;
        for (event, org) in self.load_sorted(&events)? {
            let judged = self.rejudge(&event, &org, |seen, m| {
                rules::case_apply(&mut record, seen, m)
            })?;
            let Some((broken, readable)) = judged else {
                continue;
            };
            record.last = (event.header().hlc, event.id());
            record.last_activity = record.last_activity.max(event.header().hlc);
            self.put_verdict(&event.id(), broken, readable)?;
        }
        for referral in &self.store.linked(case_id, Link::Referral)? {
            if let Some(r) = self.store.referral(referral)? {
                record.last_activity = record.last_activity.max(r.last.0);
            }
        }
        // A purge past retention has no event to replay: it stays once reached.
        if record.purged.is_none() {
            record.purged = old
                .purged
                .filter(|p| p.cause == rules::PurgeCause::Retention);
        }
        let purged = record.purged.is_some();
        let withdrawn = !record.withdrawals.is_empty();
        self.store.put_case(&record)?;
        if purged {
            self.purge_bodies(case_id)?;
        } else if withdrawn {
            self.after_withdrawals(case_id)?;
        }
        Ok(())
    }

    /// The record a referral replays from: judged again from its sending event (after this
    /// node gained the key to read it), or its clear facts reset to the sending.
    fn referral_base(
        &mut self,
        old: &ReferralRecord,
        send: &Event,
        rejudge_send: bool,
    ) -> Result<Option<ReferralRecord>, S::Error> {
        if !rejudge_send {
            let valid = self
                .store
                .verdict(&send.id())?
                .is_some_and(|v| v.is_valid());
            return Ok(Some(ReferralRecord {
                status: if valid { Status::Sent } else { Status::Invalid },
                acknowledged_at: None,
                accepted_at: None,
                declined_at: None,
                completed_at: None,
                withdrawn_at: None,
                decline_reason: None,
                last: (send.header().hlc, send.id()),
                ..old.clone()
            }));
        }
        let Some(m) = self.config.version(send.header().config_version).cloned() else {
            return Ok(None);
        };
        let org = author_org(self.config, send.header())
            .unwrap_or_default()
            .to_string();
        let (payload, _) = decrypt_event(send, self.keys);
        let readable = payload.is_some();
        let seen = Seen {
            id: send.id(),
            header: send.header(),
            author_org: &org,
            payload,
        };
        let case = self.store.case(&old.case)?;
        let common = rules::check_common(&seen, self.config, &*self.store)?;
        let (mut record, broken) = rules::referral_send(&seen, &m, case.as_ref(), &*self.store)?;
        let broken = common.or(broken);
        if broken.is_some() {
            record.status = Status::Invalid;
        }
        self.put_verdict(&send.id(), broken, readable)?;
        Ok(Some(record))
    }

    /// Replays a referral: its steps re-judged in replay order; with `rejudge_send`, the
    /// sending event is judged again too.
    fn replay_referral(
        &mut self,
        referral_id: &EventId,
        rejudge_send: bool,
    ) -> Result<(), S::Error> {
        let Some(old) = self.store.referral(referral_id)? else {
            return Ok(());
        };
        let Some(send) = self.store.event(referral_id)? else {
            return Ok(());
        };
        if self.config.version(send.header().config_version).is_none() {
            return Ok(());
        }
        let Some(mut record) = self.referral_base(&old, &send, rejudge_send)? else {
            return Ok(());
        };
        record.step_count = old.step_count;
        let steps = self.store.linked(referral_id, Link::Step)?;
        for (event, org) in self.load_sorted(&steps)? {
            let judged = self.rejudge(&event, &org, |seen, m| {
                rules::referral_apply(&mut record, seen, m)
            })?;
            let Some((broken, readable)) = judged else {
                continue;
            };
            record.last = (event.header().hlc, event.id());
            self.put_verdict(&event.id(), broken, readable)?;
        }
        self.store.put_referral(&record)
    }

    /// A key share addressed to this node: open it with the node's own identity, check every
    /// epoch against the recipient the configuration lists, install them, and re-read what
    /// could not be read before.
    fn receive_key_share(&mut self, event: &Event) -> Result<(), S::Error> {
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
            .map_err(|e| FoldError::Seal(e.to_string()))?;
            self.store.install_org_key(*epoch, &sealed)?;
            self.keys.epochs.insert(*epoch, identity);
            installed.push(*epoch);
        }
        if installed.is_empty() {
            return Ok(());
        }
        self.keys_installed.extend(installed.iter().copied());
        self.reread(&installed)
    }

    /// Re-folds every entity holding an event this node could not read with these epochs.
    pub fn reread(&mut self, epochs: &[u32]) -> Result<(), S::Error> {
        let now_readable = self.store.take_unread(epochs)?;
        let mut cases = BTreeSet::new();
        let mut referrals = BTreeSet::new();
        for id in &now_readable {
            let Some(event) = self.store.event(id)? else {
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
