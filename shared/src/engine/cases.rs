//! A case's life at this node: opening, determinations, management actions, reading its data,
//! and sharing the organisation's keys.

use time::OffsetDateTime;

use crate::event::{CaseAction, EraseReason, EventId, Kind};
use crate::fold::{CaseRecord, Decrypted};
use crate::keys::{self};
use crate::payload::{
    self, CaseData, CaseOpenPayload, CaseUpdatePayload, Consent, DeterminationPayload,
};

use super::{CASE_CACHE_MAX, Draft, Engine, EngineError, Refusal, now_ms};

impl Engine {
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
            .ok_or_else(|| Refusal::naming(Refusal::UnknownCaseType, &data.case_type))?
            .clone();
        if m.site(&data.site).is_none() {
            return Err(Refusal::naming(Refusal::UnknownSite, &data.site).into());
        }
        for need in &data.needs {
            if m.category(need).is_none() {
                return Err(Refusal::naming(Refusal::UnknownNeed, need).into());
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

    pub(super) fn readable_case_record(&self, case: &EventId) -> Result<CaseRecord, EngineError> {
        let record = self
            .store
            .case_record(case)?
            .ok_or_else(|| EngineError::NoCase(case.short()))?;
        if !record.readers.iter().any(|r| r == &self.org) {
            return Err(EngineError::NoCase(case.short()));
        }
        if let Some(purge) = record.purged {
            return Err(EngineError::Erased {
                case: case.short(),
                at: crate::time_fmt::readable(purge.at.to_datetime()),
                cause: purge.cause,
            });
        }
        Ok(record)
    }

    /// Records that the person withdrew consent for these partners and categories (both
    /// empty: for all), and withdraws the open referrals this organisation sent that it covers.
    /// Every node then refuses a referral it covers (unless an allowed emergency override is
    /// recorded) and drops what was shared under it. Returns the withdrawal and the referrals
    /// withdrawn.
    pub fn withdraw_consent(
        &mut self,
        case: EventId,
        orgs: Vec<String>,
        categories: Vec<String>,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<(EventId, Vec<EventId>), EngineError> {
        let m = self.store.config().require()?.clone();
        for org in &orgs {
            if m.org(org).is_none() {
                let org = keys::truncate_for_error(org);
                return Err(Refusal::naming(Refusal::UnknownOrg, &org).into());
            }
        }
        for category in &categories {
            match m.category(category) {
                None => {
                    return Err(Refusal::naming(Refusal::UnknownCategory, category).into());
                }
                Some(c) if c.sensitive => {
                    return Err(Refusal::SensitiveCategory(c.id.clone()).into());
                }
                Some(_) => {}
            }
        }
        let scope = crate::fold::Withdrawal {
            at: crate::event::Hlc::default(),
            orgs: orgs.clone(),
            categories: categories.clone(),
        };
        let action = CaseAction::ConsentWithdrawn { orgs, categories };
        let withdrawal = self.case_action(case, action, "", None, by, now)?;
        let mut withdrawn = Vec::new();
        for referral in self.store.case_referrals(&case)? {
            let Some(r) = self.store.referral_record(&referral)? else {
                continue;
            };
            if r.sender_org == self.org
                && r.status.is_open()
                && scope.covers(&r.receiver_org, r.category.as_deref())
            {
                let step = crate::engine::Step::new(
                    crate::event::Transition::Withdraw,
                    "consent withdrawn",
                );
                withdrawn.push(self.referral_step(referral, step, by, now)?);
            }
        }
        Ok((withdrawal, withdrawn))
    }

    /// Erases a case before its retention period ends (its manager only): every node that
    /// holds the case drops the bodies of its events once the erasure reaches it.
    pub fn erase_case(
        &mut self,
        case: EventId,
        reason: EraseReason,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        self.case_action(case, CaseAction::Erase { reason }, "", None, by, now)
    }

    /// The current data of a case this node can read (from its opening or latest transfer,
    /// with the latest consent recorded), from the cache when the case has not changed.
    pub(super) fn case_data(&self, record: &CaseRecord) -> Result<CaseData, EngineError> {
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

    pub(super) fn decrypt_case_data(&self, record: &CaseRecord) -> Result<CaseData, EngineError> {
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
}
