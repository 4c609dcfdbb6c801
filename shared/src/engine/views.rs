//! The decrypted views of what this node may read: cases, their timelines and referrals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Mechanism;
use crate::event::{CaseAction, EventId, Kind, Transition, Urgency};
use crate::fold::{self, CaseRecord, Decrypted, Overdue, ReferralRecord, Rule, Status, Verdict};
use crate::payload::CaseData;

use super::{Engine, EngineError, Refusal, hlc_text};

/// Whether a case is open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseStatus {
    Open,
    Closed,
}

impl CaseStatus {
    fn of(closed: bool) -> Self {
        if closed {
            CaseStatus::Closed
        } else {
            CaseStatus::Open
        }
    }

    /// Its word (`open`, `closed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            CaseStatus::Open => "open",
            CaseStatus::Closed => "closed",
        }
    }
}

/// One line of a case's timeline: what happened, from the event's clear header, and what this
/// node could read of its encrypted payload. Data only: the words a person reads come from the
/// node's translations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub id: String,
    pub at: String,
    pub org: String,
    pub happened: Happened,
    /// The rule the event broke, if any.
    pub invalid: Option<Rule>,
    pub detail: Detail,
}

/// What a timeline entry records, read from the event's clear header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Happened {
    CaseOpened,
    Determination,
    Note,
    Transferred {
        to_org: String,
    },
    Closed,
    Reopened,
    Consent,
    Erased {
        #[serde(with = "crate::words::one")]
        reason: crate::event::EraseReason,
    },
    /// Consent withdrawn for these partners and categories (both empty: for all).
    ConsentWithdrawn {
        orgs: Vec<String>,
        categories: Vec<String>,
    },
    ReferralSent {
        to_org: String,
    },
    ReferralStep {
        #[serde(with = "crate::words::one")]
        transition: Transition,
        reason: Option<String>,
    },
    /// Any other kind of event, by its kind's name.
    Other {
        name: String,
    },
}

impl Happened {
    fn of(kind: &Kind) -> Self {
        match kind {
            Kind::CaseOpen => Happened::CaseOpened,
            Kind::StatusDetermination => Happened::Determination,
            Kind::CaseUpdate(CaseAction::Note) => Happened::Note,
            Kind::CaseUpdate(CaseAction::Transfer { to_org }) => Happened::Transferred {
                to_org: to_org.clone(),
            },
            Kind::CaseUpdate(CaseAction::Close) => Happened::Closed,
            Kind::CaseUpdate(CaseAction::Reopen) => Happened::Reopened,
            Kind::CaseUpdate(CaseAction::Consent) => Happened::Consent,
            Kind::CaseUpdate(CaseAction::Erase { reason }) => Happened::Erased { reason: *reason },
            Kind::CaseUpdate(CaseAction::ConsentWithdrawn { orgs, categories }) => {
                Happened::ConsentWithdrawn {
                    orgs: orgs.clone(),
                    categories: categories.clone(),
                }
            }
            Kind::ReferralSend { to_org, .. } => Happened::ReferralSent {
                to_org: to_org.clone(),
            },
            Kind::ReferralUpdate { transition, reason } => Happened::ReferralStep {
                transition: *transition,
                reason: reason.clone(),
            },
            other => Happened::Other {
                name: other.name().into(),
            },
        }
    }
}

/// What this node could read of an event's encrypted payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "payload", rename_all = "snake_case")]
pub enum Detail {
    /// The event carries nothing encrypted.
    Clear,
    /// Encrypted for the organisations involved; this node's organisation is not one of them.
    NotAddressed,
    /// Addressed to this organisation under a key epoch the node does not hold yet.
    AwaitingKey { epoch: u32 },
    /// Addressed here, but it did not open or decode.
    Unreadable,
    /// Read: who wrote it and what they wrote.
    Read(Written),
}

/// What a caseworker wrote into an event, as this node read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The account that wrote it.
    pub by: String,
    pub note: String,
    /// A referral's category.
    pub category: Option<String>,
    /// A determination: the case type and whether it was confirmed.
    pub determination: Option<(String, bool)>,
    /// A completed referral's outcome.
    pub outcome: Option<String>,
}

impl Detail {
    fn of(payload: Option<Result<Decrypted, ()>>, awaiting: Option<u32>, encrypted: bool) -> Self {
        let written = |by: &str, note: &str| Written {
            by: by.to_string(),
            note: note.to_string(),
            category: None,
            determination: None,
            outcome: None,
        };
        match (payload, awaiting) {
            (None, Some(epoch)) => Detail::AwaitingKey { epoch },
            (None, None) if encrypted => Detail::NotAddressed,
            (None, None) => Detail::Clear,
            (Some(Err(())), _) => Detail::Unreadable,
            (Some(Ok(p)), _) => Detail::Read(match p {
                Decrypted::CaseOpen(p) => written(&p.by, &p.data.notes),
                Decrypted::Determination(d) => Written {
                    determination: Some((d.case_type.clone(), d.determined)),
                    ..written(&d.by, &d.note)
                },
                Decrypted::CaseUpdate(u) => written(&u.by, &u.note),
                Decrypted::Referral(r) => Written {
                    category: Some(r.category.clone()),
                    ..written(&r.by, &r.note)
                },
                Decrypted::ReferralUpdate(u) => Written {
                    outcome: u.outcome.clone(),
                    ..written(&u.by, &u.note)
                },
            }),
        }
    }
}

/// Which of an organisation's referrals a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    /// Those in one status.
    Status(Status),
    /// Those still waiting for the receiver ([`Status::OPEN`]).
    Open,
}

/// A referral as a caseworker sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferralView {
    pub id: String,
    pub case: String,
    pub from_org: String,
    pub to_org: String,
    /// Its category; `None` when the category is sensitive and this node cannot read it.
    pub category: Option<String>,
    #[serde(with = "crate::words::one")]
    pub urgency: Urgency,
    #[serde(with = "crate::words::one")]
    pub status: Status,
    pub sent_at: String,
    pub acknowledged_at: Option<String>,
    pub accepted_at: Option<String>,
    pub decided_at: Option<String>,
    pub completed_at: Option<String>,
    pub decline_reason: Option<String>,
    #[serde(with = "crate::words::opt", default)]
    pub overdue: Option<Overdue>,
    /// Whether this node can read the referral's contents.
    pub readable: bool,
    /// The shared fields, when readable.
    pub shared: BTreeMap<String, String>,
    pub note: Option<String>,
    pub invalid: Option<Rule>,
    /// When its next SOP deadline falls (RFC 3339): the acknowledgement, then the decision;
    /// absent once it is decided.
    #[serde(default)]
    pub deadline: Option<String>,
    /// The steps taken on it, oldest first; filled only in the view of one referral.
    #[serde(default)]
    pub steps: Vec<StepView>,
    /// A completed referral's outcome, when this node can read it (view of one referral).
    #[serde(default)]
    pub outcome: Option<String>,
}

/// One step taken on a referral: when, by which organisation, and what this node could read
/// of it (who took it, the note, the outcome).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub id: String,
    pub at: String,
    pub org: String,
    #[serde(with = "crate::words::one")]
    pub transition: Transition,
    /// A decline's reason (its id in the SOP's list).
    pub reason: Option<String>,
    /// The account that took the step, when readable here.
    pub by: Option<String>,
    pub note: Option<String>,
    pub outcome: Option<String>,
    /// The rule the step broke, if any (then it had no effect).
    pub invalid: Option<Rule>,
}

/// A case as this node may read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseView {
    pub id: String,
    pub opened_at: String,
    pub opened_by: String,
    pub manager: String,
    pub status: CaseStatus,
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
    pub status: CaseStatus,
    pub case_type: String,
    pub site: String,
    pub name: String,
    pub needs: Vec<String>,
    pub referrals: usize,
    pub last_activity: String,
}

impl Engine {
    // ----- Views -----

    pub(super) fn referral_view(
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
            category: record.category.clone(),
            urgency: record.urgency,
            status: record.status,
            sent_at: hlc_text(record.sent_at),
            acknowledged_at: record.acknowledged_at.map(hlc_text),
            accepted_at: record.accepted_at.map(hlc_text),
            decided_at: record.accepted_at.or(record.declined_at).map(hlc_text),
            completed_at: record.completed_at.map(hlc_text),
            decline_reason: record.decline_reason.clone(),
            overdue: fold::overdue(record, m, now),
            readable: false,
            shared: BTreeMap::new(),
            note: None,
            invalid: verdict.and_then(|v| v.broken),
            deadline: fold::next_deadline(
                record.status,
                record.urgency,
                record.sent_at.to_datetime(),
                m,
                now,
            )
            .map(crate::time_fmt::rfc3339),
            steps: Vec::new(),
            outcome: None,
        };
        if decrypt
            && let Some(event) = self.store.event(&record.id)?
            && let (Some(Ok(Decrypted::Referral(p))), _) =
                crate::store::decrypt_event(&event, &self.keys)
        {
            view.readable = true;
            view.category = Some(p.category);
            view.shared = p.shared;
            view.note = Some(p.note);
        }
        Ok(view)
    }

    /// Referrals in this organisation's inbox (`sent = false`) or outbox, newest first, at
    /// most `limit` of them. With `decrypt`, the shared fields are opened (the caller records
    /// that in the audit log). A status filter reads only that status's rows of the index.
    pub fn referrals(
        &self,
        sent: bool,
        which: Which,
        limit: usize,
        decrypt: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<ReferralView>, EngineError> {
        let m = self.store.config().require()?.clone();
        let ids = match which {
            Which::All => self.store.referrals_of_org(&self.org, sent, limit)?,
            Which::Status(s) => self
                .store
                .referrals_of_org_in(&self.org, sent, &[s], limit)?,
            Which::Open => self
                .store
                .referrals_of_org_in(&self.org, sent, &Status::OPEN, limit)?,
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.store.referral_record(&id)? {
                out.push(self.referral_view(&record, &m, now, decrypt)?);
            }
        }
        Ok(out)
    }

    /// One referral's clear facts (nothing decrypted, no steps), if this node holds it.
    pub fn referral_brief(
        &self,
        id: &EventId,
        now: OffsetDateTime,
    ) -> Result<Option<ReferralView>, EngineError> {
        let m = self.store.config().require()?.clone();
        match self.store.referral_record(id)? {
            Some(record) => Ok(Some(self.referral_view(&record, &m, now, false)?)),
            None => Ok(None),
        }
    }

    /// One referral, decrypted where this node may read it.
    pub fn referral(&self, id: &EventId, now: OffsetDateTime) -> Result<ReferralView, EngineError> {
        let m = self.store.config().require()?.clone();
        let record = self
            .store
            .referral_record(id)?
            .ok_or_else(|| EngineError::NoReferral(id.short()))?;
        let mut view = self.referral_view(&record, &m, now, true)?;
        view.steps = self.step_views(&record.id, &m)?;
        view.outcome = view
            .steps
            .iter()
            .rev()
            .find(|s| s.transition == Transition::Complete && s.invalid.is_none())
            .and_then(|s| s.outcome.clone());
        Ok(view)
    }

    /// The steps taken on a referral, in the order they happened (their clocks), each with
    /// what this node can read of it.
    fn step_views(&self, referral: &EventId, m: &Mechanism) -> Result<Vec<StepView>, EngineError> {
        let mut steps = Vec::new();
        for sid in self.store.referral_steps(referral)? {
            let Some(event) = self.store.event(&sid)? else {
                continue;
            };
            let h = event.header();
            let Kind::ReferralUpdate { transition, reason } = &h.kind else {
                continue;
            };
            let verdict: Option<Verdict> = self.store.verdict(&sid)?;
            let read = match crate::store::decrypt_event(&event, &self.keys) {
                (Some(Ok(Decrypted::ReferralUpdate(u))), _) => Some(u),
                // Not addressed here, no key yet or unreadable: when and by whom still show.
                _ => None,
            };
            steps.push((
                h.hlc,
                StepView {
                    id: sid.to_hex(),
                    at: hlc_text(h.hlc),
                    org: self.author_org(m, h),
                    transition: *transition,
                    reason: reason.clone(),
                    by: read.as_ref().map(|u| u.by.clone()),
                    note: read
                        .as_ref()
                        .map(|u| u.note.clone())
                        .filter(|n| !n.is_empty()),
                    outcome: read.and_then(|u| u.outcome),
                    invalid: verdict.and_then(|v| v.broken),
                },
            ));
        }
        steps.sort_by_key(|(hlc, _)| *hlc);
        Ok(steps.into_iter().map(|(_, s)| s).collect())
    }

    /// The organisation of an event's author node, in the version in force or the one the
    /// event names (a node removed since); empty when neither knows it.
    fn author_org(&self, m: &Mechanism, h: &crate::event::Header) -> String {
        m.node_by_key(&h.author)
            .map(|n| n.org.clone())
            .or_else(|| {
                self.store
                    .config()
                    .version(h.config_version)
                    .and_then(|v| v.node_by_key(&h.author).map(|n| n.org.clone()))
            })
            // Known to neither: the timeline shows no organisation rather than guess one.
            .unwrap_or_default()
    }

    /// Finds a referral or case id from a prefix of its hex id (as printed in tables).
    pub fn resolve_id(&self, prefix: &str, referral: bool) -> Result<EventId, EngineError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.len() < 6 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Refusal::naming(Refusal::NotAnId, &prefix).into());
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
            _ => Err(Refusal::AmbiguousId(prefix.to_string()).into()),
        }
    }

    /// The cases this organisation reads, the most recently active first, at most `limit` of
    /// them; with `search`, only those whose clear text contains it. The list walks the index
    /// of last activity and stops at `limit`, so a page costs `limit` decryptions, not one per
    /// case held (a search still opens each case until it has found `limit`).
    pub fn cases(
        &self,
        search: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CaseSummary>, EngineError> {
        let needle = search.map(|s| s.to_lowercase());
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.store.cases_by_activity(|record| {
            if let Some(summary) = self.case_summary(&record, needle.as_deref()) {
                out.push(summary);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// A case's line in the case list, if this organisation reads it and it matches `needle`.
    fn case_summary(&self, record: &CaseRecord, needle: Option<&str>) -> Option<CaseSummary> {
        if !record.valid
            || record.purged.is_some()
            || !record.readers.iter().any(|r| r == &self.org)
        {
            return None;
        }
        // Addressed to us but not readable yet (no key): not listed.
        let data = self.case_data(record).ok()?;
        if let Some(needle) = needle {
            let haystack = format!(
                "{} {} {} {} {}",
                data.person.search_text(),
                data.case_type,
                data.site,
                data.needs.join(" "),
                record.id.to_hex()
            )
            .to_lowercase();
            if !haystack.contains(needle) {
                return None;
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
        Some(CaseSummary {
            id: record.id.to_hex(),
            opened_at: hlc_text(record.opened_at),
            manager: record.manager_org.clone(),
            status: CaseStatus::of(record.closed),
            case_type: data.case_type,
            site: data.site,
            name,
            needs: data.needs,
            referrals: record.referral_count as usize,
            last_activity: hlc_text(record.last_activity),
        })
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
            let org = self.author_org(&m, h);
            let (payload, awaiting) = crate::store::decrypt_event(&event, &self.keys);
            timeline.push((
                h.hlc,
                TimelineEntry {
                    id: eid.to_hex(),
                    at: hlc_text(h.hlc),
                    org,
                    happened: Happened::of(&h.kind),
                    invalid: verdict.and_then(|v| v.broken),
                    detail: Detail::of(payload, awaiting, h.kind.is_encrypted_to_orgs()),
                },
            ));
        }
        // In the order things happened: by the events' clocks (milliseconds and a counter),
        // not by their texts, which are to the second.
        timeline.sort_by_key(|(hlc, _)| *hlc);
        let timeline: Vec<TimelineEntry> = timeline.into_iter().map(|(_, e)| e).collect();
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
            status: CaseStatus::of(record.closed),
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
