//! Referrals: send one, list the inbox and outbox, show one, take a step in its life.

use anyhow::{Result, bail};
use passerelle_core::engine::{Engine, ReferralRequest, ReferralView, Step, Which};
use passerelle_core::event::Transition;
use passerelle_core::fold::Status;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Context, audit};

/// Which referrals a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received by this organisation.
    Inbox,
    /// Sent by this organisation.
    Outbox,
    All,
}

/// What a referral to send says: the case (an id or its prefix), the receiver and service, and
/// what is shared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    pub case: String,
    pub to_org: String,
    pub category: String,
    #[serde(with = "super::words::one")]
    pub urgency: passerelle_core::event::Urgency,
    /// Which of the person's fields to share.
    pub share: Vec<String>,
    pub note: String,
    /// An emergency override of consent, with its reason.
    pub emergency_override: Option<String>,
}

/// The referral a `referral send` created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferralSent {
    /// The referral id (hex).
    pub referral: String,
}

/// The event a step created and the referral's status after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stepped {
    pub event: String,
    #[serde(with = "super::words::one")]
    pub status: Status,
}

pub(super) fn send(
    engine: &mut Engine,
    ctx: &Context,
    send: Send,
    now: OffsetDateTime,
) -> Result<ReferralSent> {
    let case = engine.resolve_id(&send.case, false)?;
    // An override of consent is audited as such (its reason stays in the ciphertext).
    let action = if send.emergency_override.is_some() {
        "referral.send.emergency_override"
    } else {
        "referral.send"
    };
    let id = engine.send_referral(
        ReferralRequest {
            case,
            to_org: send.to_org,
            category: send.category,
            urgency: send.urgency,
            share: send.share,
            note: send.note,
            emergency_override: send.emergency_override,
        },
        &ctx.user,
        now,
    )?;
    audit(engine, ctx, action, &id.to_hex())?;
    Ok(ReferralSent {
        referral: id.to_hex(),
    })
}

/// Which referrals a list request asks for: one status, the open ones, or all.
pub(super) fn which(status: Option<Status>, open: bool) -> Result<Which> {
    Ok(match (status, open) {
        (Some(_), true) => bail!("ask for one status or for the open referrals, not both"),
        (Some(s), false) => Which::Status(s),
        (None, true) => Which::Open,
        (None, false) => Which::All,
    })
}

pub(super) fn list(
    engine: &mut Engine,
    ctx: &Context,
    direction: Direction,
    which: Which,
    limit: usize,
    now: OffsetDateTime,
) -> Result<Vec<ReferralView>> {
    let mut list = Vec::new();
    if direction != Direction::Outbox {
        list.extend(engine.referrals(false, which, limit, true, now)?);
    }
    if direction != Direction::Inbox {
        list.extend(engine.referrals(true, which, limit, true, now)?);
    }
    let readable: Vec<_> = list
        .iter()
        .filter(|r| r.readable)
        .map(|r| r.id[..12].to_string())
        .collect();
    if !readable.is_empty() {
        audit(engine, ctx, "referral.list", &readable.join(" "))?;
    }
    Ok(list)
}

pub(super) fn show(
    engine: &mut Engine,
    ctx: &Context,
    id: &str,
    now: OffsetDateTime,
) -> Result<ReferralView> {
    let id = engine.resolve_id(id, true)?;
    let view = engine.referral(&id, now)?;
    if view.readable {
        audit(engine, ctx, "referral.show", &id.to_hex())?;
    }
    Ok(view)
}

/// A step in a referral's life, as a request names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// The referral (an id or its prefix).
    pub id: String,
    #[serde(with = "super::words::one")]
    pub transition: Transition,
    /// The decline reason code.
    pub reason: Option<String>,
    pub note: String,
    /// The outcome, on completion.
    pub outcome: Option<String>,
}

pub(super) fn step(
    engine: &mut Engine,
    ctx: &Context,
    request: StepRequest,
    now: OffsetDateTime,
) -> Result<Stepped> {
    let referral = engine.resolve_id(&request.id, true)?;
    let step = Step {
        transition: request.transition,
        reason: request.reason,
        note: request.note,
        outcome: request.outcome,
    };
    let event = engine.referral_step(referral, step, &ctx.user, now)?;
    let view = engine.referral(&referral, now)?;
    Ok(Stepped {
        event: event.to_hex(),
        status: view.status,
    })
}
