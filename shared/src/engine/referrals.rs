//! Referrals: drafting one from what the caseworker chose to share, sending, taking its steps.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::config::{Mechanism, Role};
use crate::event::{EventId, Kind, Transition, Urgency};
use crate::fold::Decrypted;
use crate::payload::{
    CaseData, EmergencyOverride, ReferralPayload, ReferralUpdatePayload, SHAREABLE_FIELDS,
};

use super::{Draft, Engine, EngineError, Refusal};

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

impl Engine {
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

    /// The receiving organisation exists, is another one, and provides services.
    fn check_receiver(&self, m: &Mechanism, to_org: &str) -> Result<(), EngineError> {
        let receiver = m
            .org(to_org)
            .ok_or_else(|| Refusal::naming(Refusal::UnknownOrg, to_org))?;
        if receiver.id == self.org {
            return Err(Refusal::OwnOrg(receiver.id.clone()).into());
        }
        if !receiver.has_role(Role::ProvideServices) {
            return Err(Refusal::NotAProvider(receiver.id.clone()).into());
        }
        Ok(())
    }

    pub(super) fn referral_draft(
        &self,
        request: ReferralRequest,
        by: &str,
    ) -> Result<Draft, EngineError> {
        let m = self.store.config().require()?.clone();
        let record = self.readable_case_record(&request.case)?;
        let data = self.case_data(&record)?;
        let category = m
            .category(&request.category)
            .ok_or_else(|| Refusal::naming(Refusal::UnknownCategory, &request.category))?;
        self.check_receiver(&m, &request.to_org)?;
        check_guardian(&m, &data, request.emergency_override.is_some())?;
        let mut shared = BTreeMap::new();
        for field in &request.share {
            if !SHAREABLE_FIELDS.contains(&field.as_str()) {
                return Err(Refusal::naming(Refusal::UnknownSharedField, field).into());
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
            return Err(Refusal::NoteTooLong.into());
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
            consent: data.consent.facts(),
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
            return Err(Refusal::DeclineNeedsReason.into());
        }
        if step.note.chars().count() > crate::limits::TEXT_FIELD_MAX_CHARS {
            return Err(Refusal::NoteTooLong.into());
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
}

/// A child's referral needs a guardian's consent recorded on the case, where the SOP needs
/// consent at all: by the case type, or by an age under the SOP's (the age is read here, at the
/// referring node, and nowhere else). An emergency override stands in for it as for the person's.
fn check_guardian(m: &Mechanism, data: &CaseData, overridden: bool) -> Result<(), EngineError> {
    let child = m
        .case_type(&data.case_type)
        .is_some_and(|ct| ct.needs_guardian(&m.doc.sop, data.person.age));
    if m.doc.sop.consent_required
        && child
        && data.consent.guardian_given != Some(true)
        && !overridden
    {
        return Err(EngineError::Rule(crate::fold::Rule::NoGuardianConsent));
    }
    Ok(())
}
