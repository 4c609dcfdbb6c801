//! The mechanism's rules, as pure functions of an event as the fold sees it ([`Seen`]), the
//! configuration version it claims, and what the fold may look up about other events
//! ([`Lookup`]); and the clear records they produce (`CaseRecord`, `ReferralRecord`).
//!
//! The same functions judge events at creation (`engine`), so an honest node never creates an
//! invalid event.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::ConfigState;
use crate::config::{Activation, Mechanism, Role};
use crate::event::{CaseAction, EventId, Header, Hlc, Kind, Transition, Urgency};
use crate::payload::{
    CaseOpenPayload, CaseUpdatePayload, DeterminationPayload, ReferralPayload,
    ReferralUpdatePayload,
};

/// A rule an event broke.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// The event's timestamp is not after one of its dependencies'.
    TimestampBeforeDependency,
    /// It addresses an organisation or key epoch the configuration it claims does not list.
    UnknownAddressee,
    /// The author's organisation is not among those addressed.
    AuthorNotAddressed,
    /// Opening a case needs the `identify` role under a `designated` SOP.
    NotAllowedToIdentify,
    /// Referring needs the `identify` role under a `designated` SOP.
    NotAllowedToActivate,
    /// The subject is not a validly opened case (or not a referral, for referral steps).
    BadSubject,
    /// Only an organisation holding `determine_status` may record a determination.
    NotStatusAuthority,
    /// The case type does not name this organisation as its authority.
    NotAuthorityForCaseType,
    /// The receiving organisation does not provide services or has no encryption key.
    BadReceiver,
    /// The service category is not in the taxonomy (or differs from the ciphertext's).
    UnknownCategory,
    /// No consent covers this referral and no allowed emergency override was recorded.
    NoConsent,
    /// The case type requires a status determination the referral does not depend on.
    StatusDeterminationMissing,
    /// Only the receiving organisation may acknowledge, accept, decline or complete.
    NotReceiver,
    /// Only the sending organisation may withdraw.
    NotSender,
    /// The transition is not allowed from the referral's current status.
    InvalidTransition,
    /// The decline reason code is not one the SOP lists.
    UnknownReason,
    /// Only the case manager may transfer, close, reopen or erase the case.
    NotCaseManager,
    /// The case action is not allowed in the case's current status.
    InvalidCaseAction,
    /// A key share to a node of another organisation, or to a node not endorsed.
    KeyShareNotAllowed,
    /// The payload does not decode or does not fit its kind.
    BadPayload,
    /// A change to an organisation's map profile by someone not allowed to make it.
    MapNotAllowed,
    /// A map change written under another node's Automerge actor than its signer's.
    MapWrongActor,
    /// A map change that would grow the profile's document past its bound.
    MapTooLarge,
    /// The case was erased or reached the end of its retention: nothing more is added to it.
    CaseErased,
    /// The person withdrew consent for this referral's partner or category (and no allowed
    /// emergency override was recorded).
    ConsentWithdrawn,
    /// A child's referral without a guardian's recorded consent, where the SOP needs it (the
    /// case type or the age). Judged by the referring node alone, which reads the age: it
    /// refuses the referral, and no other node sees one.
    NoGuardianConsent,
}

impl Rule {
    /// A short code for tables and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::TimestampBeforeDependency => "timestamp_before_dependency",
            Rule::UnknownAddressee => "unknown_addressee",
            Rule::AuthorNotAddressed => "author_not_addressed",
            Rule::NotAllowedToIdentify => "not_allowed_to_identify",
            Rule::NotAllowedToActivate => "not_allowed_to_activate",
            Rule::BadSubject => "bad_subject",
            Rule::NotStatusAuthority => "not_status_authority",
            Rule::NotAuthorityForCaseType => "not_authority_for_case_type",
            Rule::BadReceiver => "bad_receiver",
            Rule::UnknownCategory => "unknown_category",
            Rule::NoConsent => "no_consent",
            Rule::StatusDeterminationMissing => "status_determination_missing",
            Rule::NotReceiver => "not_receiver",
            Rule::NotSender => "not_sender",
            Rule::InvalidTransition => "invalid_transition",
            Rule::UnknownReason => "unknown_reason",
            Rule::NotCaseManager => "not_case_manager",
            Rule::InvalidCaseAction => "invalid_case_action",
            Rule::KeyShareNotAllowed => "key_share_not_allowed",
            Rule::BadPayload => "bad_payload",
            Rule::MapNotAllowed => "map_not_allowed",
            Rule::MapWrongActor => "map_wrong_actor",
            Rule::MapTooLarge => "map_too_large",
            Rule::CaseErased => "case_erased",
            Rule::NoGuardianConsent => "no_guardian_consent",
            Rule::ConsentWithdrawn => "consent_withdrawn",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Rule::TimestampBeforeDependency => "its timestamp is not after its dependencies'",
            Rule::UnknownAddressee => {
                "it addresses an organisation or key epoch the configuration does not list"
            }
            Rule::AuthorNotAddressed => "its author's organisation is not among those addressed",
            Rule::NotAllowedToIdentify => {
                "the SOP lets only designated organisations (role `identify`) open cases"
            }
            Rule::NotAllowedToActivate => {
                "the SOP lets only designated organisations (role `identify`) activate referrals"
            }
            Rule::BadSubject => "it is not about a validly opened case or a referral",
            Rule::NotStatusAuthority => "its organisation does not hold `determine_status`",
            Rule::NotAuthorityForCaseType => {
                "its organisation is not an authority for the case type"
            }
            Rule::BadReceiver => {
                "the receiving organisation does not provide services or has no key yet"
            }
            Rule::UnknownCategory => "the service category is not in the taxonomy",
            Rule::NoConsent => {
                "no consent covers it and no allowed emergency override was recorded"
            }
            Rule::StatusDeterminationMissing => {
                "the case type requires a status determination before referral"
            }
            Rule::NotReceiver => "only the receiving organisation may take this step",
            Rule::NotSender => "only the sending organisation may withdraw a referral",
            Rule::InvalidTransition => "this step is not allowed in the referral's status",
            Rule::UnknownReason => "the decline reason is not one the SOP lists",
            Rule::NotCaseManager => {
                "only the case manager may transfer, close, reopen or erase a case"
            }
            Rule::InvalidCaseAction => "this action is not allowed in the case's status",
            Rule::KeyShareNotAllowed => {
                "a key share goes only to an endorsed node of the same organisation"
            }
            Rule::BadPayload => "its payload does not fit its kind",
            Rule::MapNotAllowed => {
                "only the organisation (or a coordinator, for an organisation without nodes) may change its profile"
            }
            Rule::MapWrongActor => "its map change is written as another node's",
            Rule::MapTooLarge => "it would grow the profile's document past its bound",
            Rule::CaseErased => "the case was erased: nothing more is added to it",
            Rule::NoGuardianConsent => {
                "the person is a child under the SOP: a guardian's consent (for an unaccompanied child, the delegate's) must be recorded on the case"
            }
            Rule::ConsentWithdrawn => {
                "the person withdrew consent for this partner or category, and no allowed emergency override was recorded"
            }
        };
        f.write_str(text)
    }
}

/// The fold's judgement of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The rule broken, if any.
    pub broken: Option<Rule>,
    /// Whether this node could read the payload (and so judged the payload rules too).
    pub readable: bool,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        self.broken.is_none()
    }
}

/// A decrypted payload, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decrypted {
    CaseOpen(CaseOpenPayload),
    Determination(DeterminationPayload),
    CaseUpdate(CaseUpdatePayload),
    Referral(ReferralPayload),
    ReferralUpdate(ReferralUpdatePayload),
}

/// An event as the fold sees it.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub id: EventId,
    pub header: &'a Header,
    /// The author's organisation (from the configuration version the event claims).
    pub author_org: &'a str,
    /// The payload, when this node could read it; `Some(Err)` when it did not decode.
    pub payload: Option<Result<Decrypted, ()>>,
}

impl Seen<'_> {
    /// The deterministic replay order.
    pub fn order_key(&self) -> (Hlc, EventId) {
        (self.header.hlc, self.id)
    }
}

/// What the fold may look up about other events (all already folded: causal order). A read
/// that fails is an error, never "not there": the fold would judge on a wrong premise.
pub trait Lookup {
    /// Why a read failed (a store error), which the fold's own errors become too.
    type Error: From<super::FoldError>;

    fn header(&self, id: &EventId) -> Result<Option<Header>, Self::Error>;
    fn verdict(&self, id: &EventId) -> Result<Option<Verdict>, Self::Error>;
    fn case(&self, id: &EventId) -> Result<Option<CaseRecord>, Self::Error>;
}

/// A case's clear state: what every node knows from headers. Person data never lives here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseRecord {
    pub id: EventId,
    pub opened_by_org: String,
    pub opened_at: Hlc,
    pub valid: bool,
    pub manager_org: String,
    pub closed: bool,
    /// Organisations that can read the case (addressed by its opening or a transfer).
    pub readers: Vec<String>,
    /// Valid determinations: (event id, authority organisation).
    pub determinations: Vec<(EventId, String)>,
    /// How many referrals were sent for this case (the ids are in the store's link index).
    pub referral_count: u32,
    /// How many case-level events followed the opening, valid or not (ids in the link index).
    pub event_count: u32,
    /// The replay position: the key of the last event replayed.
    pub last: (Hlc, EventId),
    pub last_activity: Hlc,
    /// When and why the case's bodies were purged: erased by its manager, or past retention.
    /// Last, so a record stored before it existed reads with one `None` byte appended.
    #[serde(default)]
    pub purged: Option<Purge>,
    /// The person's consent withdrawals, in replay order (after `purged`, for the same reason).
    #[serde(default)]
    pub withdrawals: Vec<Withdrawal>,
}

/// A consent withdrawal recorded on a case, with its scope as the clear header names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub at: Hlc,
    /// Partners it covers; empty: every partner.
    pub orgs: Vec<String>,
    /// Service categories it covers (never a sensitive one); empty: every category.
    pub categories: Vec<String>,
}

impl Withdrawal {
    /// Whether it covers a referral to `to_org` whose clear category is `category` (`None`:
    /// sensitive, covered only by a withdrawal for every category).
    pub fn covers(&self, to_org: &str, category: Option<&str>) -> bool {
        (self.orgs.is_empty() || self.orgs.iter().any(|o| o == to_org))
            && (self.categories.is_empty()
                || category.is_some_and(|c| self.categories.iter().any(|w| w == c)))
    }
}

/// Whether a withdrawal made before `at` covers a referral to `to_org` in `category`.
pub fn withdrawn_before(case: &CaseRecord, at: Hlc, to_org: &str, category: Option<&str>) -> bool {
    case.withdrawals
        .iter()
        .any(|w| w.at < at && w.covers(to_org, category))
}

/// A case's purge: from then on, no node keeps the bodies of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// The erasure event's time, or the moment retention ran out.
    pub at: Hlc,
    pub cause: PurgeCause,
}

/// Why a case was purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurgeCause {
    /// Its case manager erased it (a valid `Erase` case action).
    Erased(crate::event::EraseReason),
    /// The SOP's retention period after closure (or its limit on inactivity) ran out.
    Retention,
}

/// A referral's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    Sent,
    Acknowledged,
    Accepted,
    Declined,
    Completed,
    Withdrawn,
    /// The referral itself broke a rule: it has no effect.
    Invalid,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Acknowledged => "acknowledged",
            Status::Accepted => "accepted",
            Status::Declined => "declined",
            Status::Completed => "completed",
            Status::Withdrawn => "withdrawn",
            Status::Invalid => "invalid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::Sent,
            Status::Acknowledged,
            Status::Accepted,
            Status::Declined,
            Status::Completed,
            Status::Withdrawn,
            Status::Invalid,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// The statuses of a referral that still waits for the receiver.
    pub const OPEN: [Status; 3] = [Status::Sent, Status::Acknowledged, Status::Accepted];

    /// Whether the referral still waits for the receiver.
    pub fn is_open(&self) -> bool {
        Status::OPEN.contains(self)
    }

    /// Whether a referral in this status may take `step` (by the organisation the step belongs
    /// to: the receiver for all but a withdrawal). The fold judges steps by this, and the UI
    /// offers only these.
    pub fn allows(&self, step: Transition) -> bool {
        use Status::*;
        match step {
            Transition::Acknowledge => *self == Sent,
            Transition::Accept | Transition::Decline => matches!(self, Sent | Acknowledged),
            Transition::Complete => *self == Accepted,
            Transition::Withdraw => self.is_open(),
        }
    }
}

/// When a referral's next SOP deadline falls: its acknowledgement while it is unacknowledged
/// and that deadline is still ahead, then its decision while it is undecided; `None` once it
/// is decided (or closed).
pub fn next_deadline(
    status: Status,
    urgency: crate::event::Urgency,
    sent: time::OffsetDateTime,
    mechanism: &Mechanism,
    now: time::OffsetDateTime,
) -> Option<time::OffsetDateTime> {
    let deadlines = mechanism.doc.sop.urgency.for_level(urgency);
    let due = |h: u32| sent + time::Duration::hours(i64::from(h));
    match status {
        Status::Sent if now <= due(deadlines.acknowledge_hours) => {
            Some(due(deadlines.acknowledge_hours))
        }
        Status::Sent | Status::Acknowledged => Some(due(deadlines.accept_hours)),
        _ => None,
    }
}

/// A referral's clear state, known to every node from headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralRecord {
    pub id: EventId,
    pub case: EventId,
    pub sender_org: String,
    pub receiver_org: String,
    /// In clear unless the category is sensitive.
    pub category: Option<String>,
    pub urgency: Urgency,
    pub config_version: u64,
    pub sent_at: Hlc,
    pub status: Status,
    pub acknowledged_at: Option<Hlc>,
    pub accepted_at: Option<Hlc>,
    pub declined_at: Option<Hlc>,
    pub completed_at: Option<Hlc>,
    pub withdrawn_at: Option<Hlc>,
    pub decline_reason: Option<String>,
    /// How many steps followed the sending, valid or not (ids in the store's link index).
    pub step_count: u32,
    pub last: (Hlc, EventId),
}

/// Which SOP deadline a referral has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overdue {
    /// Sent and not acknowledged in time.
    Acknowledgement,
    /// Not accepted or declined in time.
    Decision,
}

impl Overdue {
    /// Its word (the report's CSV and the JSON API).
    pub fn as_str(&self) -> &'static str {
        match self {
            Overdue::Acknowledgement => "acknowledgement overdue",
            Overdue::Decision => "decision overdue",
        }
    }
}

/// What is overdue about a referral at `now`, if anything: computed when read, never folded.
pub fn overdue(
    record: &ReferralRecord,
    mechanism: &Mechanism,
    now: time::OffsetDateTime,
) -> Option<Overdue> {
    overdue_at(
        record.status,
        record.urgency,
        record.sent_at.to_datetime(),
        mechanism,
        now,
    )
}

/// [`overdue`] from the few facts it needs: the status, the urgency and when the referral was
/// sent (what a report row keeps).
pub fn overdue_at(
    status: Status,
    urgency: crate::event::Urgency,
    sent: time::OffsetDateTime,
    mechanism: &Mechanism,
    now: time::OffsetDateTime,
) -> Option<Overdue> {
    let deadlines = mechanism.doc.sop.urgency.for_level(urgency);
    let hours = |h: u32| time::Duration::hours(i64::from(h));
    match status {
        Status::Sent if now > sent + hours(deadlines.acknowledge_hours) => {
            Some(Overdue::Acknowledgement)
        }
        Status::Sent | Status::Acknowledged if now > sent + hours(deadlines.accept_hours) => {
            Some(Overdue::Decision)
        }
        _ => None,
    }
}

fn org_role(m: &Mechanism, org: &str, role: Role) -> bool {
    m.org(org).is_some_and(|o| o.has_role(role))
}

/// The rules every event must follow, from its header and its dependencies' headers.
pub fn check_common<L: Lookup>(
    seen: &Seen<'_>,
    config: &ConfigState,
    lookup: &L,
) -> Result<Option<Rule>, L::Error> {
    let h = seen.header;
    let Some(m) = config.version(h.config_version) else {
        return Ok(None);
    };
    for dep in h.causal_deps() {
        if let Some(dep_header) = lookup.header(&dep)?
            && dep_header.hlc >= h.hlc
        {
            return Ok(Some(Rule::TimestampBeforeDependency));
        }
    }
    for a in &h.orgs {
        if m.epoch_recipient(&a.org, a.epoch).is_none() {
            return Ok(Some(Rule::UnknownAddressee));
        }
    }
    if h.kind.is_encrypted_to_orgs() && h.epoch_for(seen.author_org).is_none() {
        return Ok(Some(Rule::AuthorNotAddressed));
    }
    Ok(None)
}

/// Opens a case: returns its record (valid or not) and the rule broken.
pub fn case_open(seen: &Seen<'_>, m: &Mechanism) -> (CaseRecord, Option<Rule>) {
    let h = seen.header;
    let mut broken = None;
    if m.doc.sop.activation == Activation::Designated
        && !org_role(m, seen.author_org, Role::Identify)
    {
        broken = Some(Rule::NotAllowedToIdentify);
    }
    if broken.is_none() && h.subject.is_some() {
        broken = Some(Rule::BadSubject);
    }
    if broken.is_none()
        && let Some(payload) = &seen.payload
    {
        match payload {
            Ok(Decrypted::CaseOpen(p)) => {
                if m.case_type(&p.data.case_type).is_none() || m.site(&p.data.site).is_none() {
                    broken = Some(Rule::BadPayload);
                }
            }
            _ => broken = Some(Rule::BadPayload),
        }
    }
    let record = CaseRecord {
        id: seen.id,
        opened_by_org: seen.author_org.to_string(),
        opened_at: h.hlc,
        valid: broken.is_none(),
        manager_org: seen.author_org.to_string(),
        closed: false,
        readers: h.orgs.iter().map(|a| a.org.clone()).collect(),
        determinations: Vec::new(),
        referral_count: 0,
        event_count: 0,
        last: seen.order_key(),
        last_activity: h.hlc,
        purged: None,
        withdrawals: Vec::new(),
    };
    (record, broken)
}

/// Whether a case's retention has run out at `now_ms`: closed (or never validly opened) and
/// idle for the SOP's `retention_days`, or open and idle past `open_case_inactive_days`. Judged
/// from the clear record, so every node holding the case decides alike.
pub fn retention_due(record: &CaseRecord, sop: &crate::config::Sop, now_ms: u64) -> bool {
    const DAY_MS: u64 = 86_400_000;
    if record.purged.is_some() {
        return false;
    }
    let idle = now_ms.saturating_sub(record.last_activity.ms);
    if record.closed || !record.valid {
        idle >= u64::from(sop.retention_days) * DAY_MS
    } else {
        sop.open_case_inactive_days
            .is_some_and(|days| idle >= u64::from(days) * DAY_MS)
    }
}

/// Applies one case-level event (determination or case update) to a case, in replay order.
pub fn case_apply(record: &mut CaseRecord, seen: &Seen<'_>, m: &Mechanism) -> Option<Rule> {
    if !record.valid {
        return Some(Rule::BadSubject);
    }
    // After the purge in replay order (retention's moment is the same on every node).
    if record.purged.is_some_and(|p| p.at <= seen.header.hlc) {
        return Some(Rule::CaseErased);
    }
    match &seen.header.kind {
        Kind::StatusDetermination => {
            if !org_role(m, seen.author_org, Role::DetermineStatus) {
                return Some(Rule::NotStatusAuthority);
            }
            if let Some(payload) = &seen.payload {
                let Ok(Decrypted::Determination(p)) = payload else {
                    return Some(Rule::BadPayload);
                };
                let authority = m
                    .case_type(&p.case_type)
                    .is_some_and(|ct| ct.status_authorities.iter().any(|a| a == seen.author_org));
                if !authority {
                    return Some(Rule::NotAuthorityForCaseType);
                }
            }
            record
                .determinations
                .push((seen.id, seen.author_org.to_string()));
            None
        }
        Kind::CaseUpdate(action) => case_update(record, seen, m, action),
        _ => Some(Rule::BadSubject),
    }
}

/// Applies a case-management action (note, consent, transfer, close, reopen, erase).
fn case_update(
    record: &mut CaseRecord,
    seen: &Seen<'_>,
    m: &Mechanism,
    action: &CaseAction,
) -> Option<Rule> {
    if let Some(Err(())) = &seen.payload {
        return Some(Rule::BadPayload);
    }
    let manager = seen.author_org == record.manager_org;
    match action {
        CaseAction::Note | CaseAction::Consent => {
            if !record.readers.iter().any(|r| r == seen.author_org) {
                return Some(Rule::AuthorNotAddressed);
            }
        }
        CaseAction::Transfer { to_org } => {
            if !manager {
                return Some(Rule::NotCaseManager);
            }
            if record.closed {
                return Some(Rule::InvalidCaseAction);
            }
            if !org_role(m, to_org, Role::CaseManagement) || seen.header.epoch_for(to_org).is_none()
            {
                return Some(Rule::BadReceiver);
            }
            record.manager_org = to_org.clone();
            if !record.readers.contains(to_org) {
                record.readers.push(to_org.clone());
            }
        }
        CaseAction::Close => {
            if !manager {
                return Some(Rule::NotCaseManager);
            }
            if record.closed {
                return Some(Rule::InvalidCaseAction);
            }
            record.closed = true;
        }
        CaseAction::Reopen => {
            if !manager {
                return Some(Rule::NotCaseManager);
            }
            if !record.closed {
                return Some(Rule::InvalidCaseAction);
            }
            record.closed = false;
        }
        CaseAction::ConsentWithdrawn { orgs, categories } => {
            if !record.readers.iter().any(|r| r == seen.author_org) {
                return Some(Rule::AuthorNotAddressed);
            }
            let known_orgs = orgs.iter().all(|o| m.org(o).is_some());
            let clear_categories = categories
                .iter()
                .all(|c| m.category(c).is_some_and(|c| !c.sensitive));
            if !known_orgs || !clear_categories {
                return Some(Rule::InvalidCaseAction);
            }
            record.withdrawals.push(Withdrawal {
                at: seen.header.hlc,
                orgs: orgs.clone(),
                categories: categories.clone(),
            });
        }
        CaseAction::Erase { reason } => {
            if !manager {
                return Some(Rule::NotCaseManager);
            }
            record.closed = true;
            record.purged = Some(Purge {
                at: seen.header.hlc,
                cause: PurgeCause::Erased(*reason),
            });
        }
    }
    None
}

/// Sends a referral: returns its record and the rule broken. `case` is the subject's record.
pub fn referral_send<L: Lookup>(
    seen: &Seen<'_>,
    m: &Mechanism,
    case: Option<&CaseRecord>,
    lookup: &L,
) -> Result<(ReferralRecord, Option<Rule>), L::Error> {
    let h = seen.header;
    let (to_org, category, urgency) = match &h.kind {
        Kind::ReferralSend {
            to_org,
            category,
            urgency,
        } => (to_org.clone(), category.clone(), *urgency),
        _ => (String::new(), None, Urgency::Routine),
    };
    let broken = referral_rules(seen, m, case, lookup, &to_org, category.as_deref())?;
    let record = ReferralRecord {
        id: seen.id,
        case: h.subject.unwrap_or_default(),
        sender_org: seen.author_org.to_string(),
        receiver_org: to_org,
        category,
        urgency,
        config_version: h.config_version,
        sent_at: h.hlc,
        status: if broken.is_some() {
            Status::Invalid
        } else {
            Status::Sent
        },
        acknowledged_at: None,
        accepted_at: None,
        declined_at: None,
        completed_at: None,
        withdrawn_at: None,
        decline_reason: None,
        step_count: 0,
        last: seen.order_key(),
    };
    Ok((record, broken))
}

fn referral_rules<L: Lookup>(
    seen: &Seen<'_>,
    m: &Mechanism,
    case: Option<&CaseRecord>,
    lookup: &L,
    to_org: &str,
    category: Option<&str>,
) -> Result<Option<Rule>, L::Error> {
    let h = seen.header;
    if m.doc.sop.activation == Activation::Designated
        && !org_role(m, seen.author_org, Role::Identify)
    {
        return Ok(Some(Rule::NotAllowedToActivate));
    }
    let case = match case {
        Some(c) if c.valid && c.purged.is_some_and(|p| p.at < h.hlc) => {
            return Ok(Some(Rule::CaseErased));
        }
        Some(c) if c.valid => c,
        _ => return Ok(Some(Rule::BadSubject)),
    };
    if !org_role(m, to_org, Role::ProvideServices)
        || h.epoch_for(to_org).is_none()
        || to_org == seen.author_org
    {
        return Ok(Some(Rule::BadReceiver));
    }
    if let Some(cat) = category
        && m.category(cat).is_none_or(|c| c.sensitive)
    {
        // A sensitive category never travels in clear.
        return Ok(Some(Rule::UnknownCategory));
    }
    let Some(payload) = &seen.payload else {
        return Ok(None);
    };
    let Ok(Decrypted::Referral(p)) = payload else {
        return Ok(Some(Rule::BadPayload));
    };
    let Some(cat) = m.category(&p.category) else {
        return Ok(Some(Rule::UnknownCategory));
    };
    let clear_ok = if cat.sensitive {
        category.is_none()
    } else {
        category == Some(p.category.as_str())
    };
    if !clear_ok {
        return Ok(Some(Rule::UnknownCategory));
    }
    let overridden = p.emergency_override.is_some()
        && m.org(seen.author_org).is_some_and(|o| {
            m.doc
                .sop
                .emergency_override_roles
                .iter()
                .any(|r| o.has_role(*r))
        });
    if m.doc.sop.consent_required && !p.consent.covers(to_org, &p.category) && !overridden {
        return Ok(Some(Rule::NoConsent));
    }
    // Judged where the payload is read: only there is an emergency override visible.
    if withdrawn_before(case, h.hlc, to_org, category) && !overridden {
        return Ok(Some(Rule::ConsentWithdrawn));
    }
    let Some(case_type) = m.case_type(&p.case_type) else {
        return Ok(Some(Rule::BadPayload));
    };
    if case_type.requires_status_determination
        && !determined(h, m, &case_type.status_authorities, lookup)?
    {
        return Ok(Some(Rule::StatusDeterminationMissing));
    }
    Ok(None)
}

/// Whether the event depends on a valid status determination of its subject by one of the
/// case type's authorities.
fn determined<L: Lookup>(
    h: &Header,
    m: &Mechanism,
    authorities: &[String],
    lookup: &L,
) -> Result<bool, L::Error> {
    for d in &h.deps {
        let Some(dh) = lookup.header(d)? else {
            continue;
        };
        let valid = lookup.verdict(d)?.is_some_and(|v| v.is_valid());
        let author_org = m.node_by_key(&dh.author).map(|n| n.org.as_str());
        if valid
            && dh.kind == Kind::StatusDetermination
            && dh.subject == h.subject
            && author_org.is_some_and(|o| authorities.iter().any(|a| a == o))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Applies one referral step, in replay order.
pub fn referral_apply(record: &mut ReferralRecord, seen: &Seen<'_>, m: &Mechanism) -> Option<Rule> {
    if let Some(Err(())) = &seen.payload {
        return Some(Rule::BadPayload);
    }
    let Kind::ReferralUpdate { transition, reason } = &seen.header.kind else {
        return Some(Rule::BadSubject);
    };
    if record.status == Status::Invalid {
        return Some(Rule::BadSubject);
    }
    let by_receiver = seen.author_org == record.receiver_org;
    let by_sender = seen.author_org == record.sender_org;
    let at = seen.header.hlc;
    if *transition == Transition::Withdraw {
        if !by_sender {
            return Some(Rule::NotSender);
        }
    } else if !by_receiver {
        return Some(Rule::NotReceiver);
    }
    if *transition == Transition::Decline {
        let known = reason
            .as_deref()
            .is_some_and(|r| m.doc.sop.decline_reasons.iter().any(|d| d.id == r));
        if !known {
            return Some(Rule::UnknownReason);
        }
    }
    if !record.status.allows(*transition) {
        return Some(Rule::InvalidTransition);
    }
    match transition {
        Transition::Acknowledge => {
            record.status = Status::Acknowledged;
            record.acknowledged_at = Some(at);
        }
        Transition::Accept => {
            record.status = Status::Accepted;
            record.acknowledged_at.get_or_insert(at);
            record.accepted_at = Some(at);
        }
        Transition::Decline => {
            record.status = Status::Declined;
            record.acknowledged_at.get_or_insert(at);
            record.declined_at = Some(at);
            record.decline_reason = reason.clone();
        }
        Transition::Complete => {
            record.status = Status::Completed;
            record.completed_at = Some(at);
        }
        Transition::Withdraw => {
            record.status = Status::Withdrawn;
            record.withdrawn_at = Some(at);
        }
    }
    None
}

/// Judges a key share: it goes only to an endorsed node of the author's own organisation.
pub fn key_share(seen: &Seen<'_>, m: &Mechanism) -> Option<Rule> {
    let Kind::KeyShare { to, epochs } = &seen.header.kind else {
        return Some(Rule::BadPayload);
    };
    let Some(target) = m.node_by_key(to) else {
        return Some(Rule::KeyShareNotAllowed);
    };
    if target.org != seen.author_org || epochs.is_empty() || to == &seen.header.author {
        return Some(Rule::KeyShareNotAllowed);
    }
    if epochs
        .iter()
        .any(|e| m.epoch_recipient(&target.org, *e).is_none())
    {
        return Some(Rule::UnknownAddressee);
    }
    None
}
