//! Cases: open, list, show, notes and management actions, status determinations.

use anyhow::Result;
use passerelle_core::engine::{CaseSummary, CaseView, Engine};
use passerelle_core::event::{CaseAction, EraseReason};
use passerelle_core::payload::CaseData;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Context, audit};

/// The case a `case open` created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseOpened {
    /// The case id (hex).
    pub case: String,
}

/// The event a case action or a determination created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMade {
    /// The event id (hex).
    pub event: String,
}

pub(super) fn open(
    engine: &mut Engine,
    ctx: &Context,
    data: CaseData,
    now: OffsetDateTime,
) -> Result<CaseOpened> {
    let id = engine.open_case(data, &ctx.user, now)?;
    audit(engine, ctx, "case.open", &id.to_hex())?;
    Ok(CaseOpened { case: id.to_hex() })
}

pub(super) fn list(
    engine: &mut Engine,
    ctx: &Context,
    search: Option<&str>,
    limit: usize,
) -> Result<Vec<CaseSummary>> {
    let cases = engine.cases(search, limit)?;
    let ids: Vec<_> = cases.iter().map(|c| c.id[..12].to_string()).collect();
    audit(
        engine,
        ctx,
        "case.list",
        &format!("{} cases: {}", ids.len(), ids.join(" ")),
    )?;
    Ok(cases)
}

pub(super) fn show(
    engine: &mut Engine,
    ctx: &Context,
    id: &str,
    now: OffsetDateTime,
) -> Result<CaseView> {
    let id = engine.resolve_id(id, false)?;
    let view = engine.case(&id, now)?;
    audit(engine, ctx, "case.show", &id.to_hex())?;
    Ok(view)
}

/// The case for the person's own copy: the same view, audited as an export.
pub(super) fn export(
    engine: &mut Engine,
    ctx: &Context,
    id: &str,
    now: OffsetDateTime,
) -> Result<CaseView> {
    let id = engine.resolve_id(id, false)?;
    let view = engine.case(&id, now)?;
    audit(engine, ctx, "case.export", &id.to_hex())?;
    Ok(view)
}

pub(super) fn action(
    engine: &mut Engine,
    ctx: &Context,
    id: &str,
    action: CaseStep,
    note: &str,
    now: OffsetDateTime,
) -> Result<EventMade> {
    let case = engine.resolve_id(id, false)?;
    if let CaseStep::WithdrawConsent { orgs, categories } = action {
        let scope = format!(
            "orgs [{}] categories [{}]",
            orgs.join(" "),
            categories.join(" ")
        );
        let (event, withdrawn) = engine.withdraw_consent(case, orgs, categories, &ctx.user, now)?;
        let detail = format!(
            "{} {scope}, {} referrals withdrawn",
            case.to_hex(),
            withdrawn.len()
        );
        audit(engine, ctx, "case.consent_withdrawn", &detail)?;
        return Ok(EventMade {
            event: event.to_hex(),
        });
    }
    let erase = match &action {
        CaseStep::Erase { reason } => Some(*reason),
        _ => None,
    };
    let event = engine.case_action(case, action.into(), note, None, &ctx.user, now)?;
    if let Some(reason) = erase {
        let detail = format!("{} reason {}", case.to_hex(), reason.as_str());
        audit(engine, ctx, "case.erase", &detail)?;
    }
    Ok(EventMade {
        event: event.to_hex(),
    })
}

pub(super) fn determine(
    engine: &mut Engine,
    ctx: &Context,
    id: &str,
    case_type: &str,
    determined: bool,
    note: &str,
    now: OffsetDateTime,
) -> Result<EventMade> {
    let case = engine.resolve_id(id, false)?;
    let event = engine.determine_status(case, case_type, determined, note, &ctx.user, now)?;
    Ok(EventMade {
        event: event.to_hex(),
    })
}

/// What a caseworker may do to a case through a request (consent is recorded with the case).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStep {
    Note,
    /// Case management moves to another organisation.
    Transfer {
        to_org: String,
    },
    Close,
    Reopen,
    /// The person withdrew consent for these partners and categories (both empty: for all).
    WithdrawConsent {
        #[serde(default)]
        orgs: Vec<String>,
        #[serde(default)]
        categories: Vec<String>,
    },
    /// Erase the case now (its manager only): every node drops its events' bodies.
    Erase {
        #[serde(with = "passerelle_core::words::one")]
        reason: EraseReason,
    },
}

impl From<CaseStep> for CaseAction {
    fn from(step: CaseStep) -> Self {
        match step {
            CaseStep::Note => CaseAction::Note,
            CaseStep::Transfer { to_org } => CaseAction::Transfer { to_org },
            CaseStep::Close => CaseAction::Close,
            CaseStep::Reopen => CaseAction::Reopen,
            CaseStep::Erase { reason } => CaseAction::Erase { reason },
            CaseStep::WithdrawConsent { orgs, categories } => {
                CaseAction::ConsentWithdrawn { orgs, categories }
            }
        }
    }
}
