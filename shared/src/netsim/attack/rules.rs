//! Events the fold must mark: rule-breaking case and referral events, another organisation's
//! profile changed, and partner-map changes with bodies automerge must not choke on.

use rand::Rng;

use super::{Forgery, forge_own, honest_peers, open_payload, workload};
use crate::event::{EventId, Kind as EventKind, Transition, Urgency};
use crate::netsim::{CaseInfo, ReferralInfo, World};
use crate::payload::{self, Consent, DeterminationPayload, ReferralPayload};

/// Attacker `i`'s own cases (in the simulation's order).
fn own_cases(world: &World, i: usize) -> Vec<CaseInfo> {
    let org = &world.nodes[i].org;
    world
        .book
        .cases
        .iter()
        .filter(|c| {
            world.nodes[i]
                .engine
                .store()
                .case_record(&c.id)
                .ok()
                .flatten()
                .is_some_and(|r| &r.manager_org == org)
        })
        .cloned()
        .collect()
}

/// Events the fold must mark, each judged by every node that can read it.
pub(super) fn break_rule(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    let cases = own_cases(world, i);
    let Some(case) =
        (!cases.is_empty()).then(|| cases[world.rng.gen_range(0..cases.len())].clone())
    else {
        // Something to break rules about first.
        return workload::step(world, i);
    };
    let providers: Vec<&'static str> = ["mdm", "iom", "unicef", "drs_medenine"]
        .into_iter()
        .filter(|o| *o != org)
        .collect();
    let to = providers[world.rng.gen_range(0..providers.len())];
    let consent = workload::case_data(&mut world.rng, "general", false).consent;
    let update = payload::encode(&payload::ReferralUpdatePayload {
        note: "forged".into(),
        outcome: None,
        by: "attacker".into(),
    })
    .expect("a short generated payload encodes under the payload bound");
    let rule = world.rng.gen_range(0..7);
    let forgery = match rule {
        0 => Some(referral_without_consent(&org, &case, to, consent)),
        1 => accept_own_referral(world, i, &org, update),
        2 => step_as_no_party(world, i, &org, update),
        3 => Some(determination_without_authority(&org, &case)),
        4 => Some(referral_to_no_provider(world, &org, &case)),
        // Opens a case of a type the mechanism does not have.
        5 => Some(Forgery::case_open(
            &org,
            open_payload(world, "no_such_case_type"),
        )),
        _ => other_orgs_map_change(world, i, &providers),
    };
    let Some(forgery) = forgery else {
        return;
    };
    if let Some(e) = forge_own(world, i, forgery)
        && rule == 0
    {
        world.book.referrals.push(ReferralInfo {
            id: e.id(),
            from_org: org,
            to_org: to.into(),
        });
    }
}

/// A forged referral's payload.
fn forged_referral(case_type: &str, consent: Consent) -> ReferralPayload {
    ReferralPayload {
        case_type: case_type.into(),
        category: "health".into(),
        shared: Default::default(),
        note: "forged".into(),
        consent,
        emergency_override: None,
        by: "attacker".into(),
    }
}

/// Refers the case without consent.
fn referral_without_consent(org: &str, case: &CaseInfo, to: &str, consent: Consent) -> Forgery {
    let plain = payload::encode(&forged_referral(&case.case_type, consent))
        .expect("a short generated payload encodes under the payload bound");
    Forgery {
        kind: EventKind::ReferralSend {
            to_org: to.into(),
            category: Some("health".into()),
            urgency: Urgency::Urgent,
        },
        subject: Some(case.id),
        deps: vec![],
        orgs: vec![org.to_string(), to.to_string()],
        plain,
    }
}

/// Accepts one of its own referrals (or, having none, takes an honest step instead).
fn accept_own_referral(world: &mut World, i: usize, org: &str, update: Vec<u8>) -> Option<Forgery> {
    let own: Vec<ReferralInfo> = world
        .book
        .referrals
        .iter()
        .filter(|r| r.from_org == org)
        .cloned()
        .collect();
    if own.is_empty() {
        workload::step(world, i);
        return None;
    }
    let r = own[world.rng.gen_range(0..own.len())].clone();
    Some(Forgery {
        kind: EventKind::ReferralUpdate {
            transition: Transition::Accept,
            reason: None,
        },
        subject: Some(r.id),
        deps: vec![],
        orgs: vec![r.from_org, r.to_org],
        plain: update,
    })
}

/// Takes a step on a referral it is no party to (or, there being none, an honest step).
fn step_as_no_party(world: &mut World, i: usize, org: &str, update: Vec<u8>) -> Option<Forgery> {
    let others: Vec<ReferralInfo> = world
        .book
        .referrals
        .iter()
        .filter(|r| r.from_org != org && r.to_org != org)
        .cloned()
        .collect();
    if others.is_empty() {
        workload::step(world, i);
        return None;
    }
    let r = others[world.rng.gen_range(0..others.len())].clone();
    let transition = [Transition::Accept, Transition::Withdraw][world.rng.gen_range(0..2)];
    Some(Forgery {
        kind: EventKind::ReferralUpdate {
            transition,
            reason: None,
        },
        subject: Some(r.id),
        deps: vec![],
        orgs: vec![r.from_org, r.to_org, org.to_string()],
        plain: update,
    })
}

/// Determines a status it is no authority for.
fn determination_without_authority(org: &str, case: &CaseInfo) -> Forgery {
    let plain = payload::encode(&DeterminationPayload {
        case_type: "unaccompanied_child".into(),
        determined: true,
        note: "forged".into(),
        by: "attacker".into(),
    })
    // A short payload encodes; an empty body would be forged and refused all the same.
    .unwrap_or_default();
    Forgery {
        kind: EventKind::StatusDetermination,
        subject: Some(case.id),
        deps: vec![],
        orgs: vec![org.to_string()],
        plain,
    }
}

/// Refers the case to an organisation that provides no services.
fn referral_to_no_provider(world: &mut World, org: &str, case: &CaseInfo) -> Forgery {
    let consent = workload::case_data(&mut world.rng, "general", true).consent;
    let plain = payload::encode(&forged_referral("general", consent))
        // A short payload encodes; an empty body would be forged and refused all the same.
        .unwrap_or_default();
    Forgery {
        kind: EventKind::ReferralSend {
            to_org: "dpe".into(),
            category: Some("health".into()),
            urgency: Urgency::Routine,
        },
        subject: Some(case.id),
        deps: vec![],
        orgs: vec![org.to_string(), "dpe".to_string()],
        plain,
    }
}

/// Changes another organisation's profile.
fn other_orgs_map_change(world: &mut World, i: usize, providers: &[&str]) -> Option<Forgery> {
    let target = providers[world.rng.gen_range(0..providers.len())];
    let (body, deps) = map_change(world, i, target)?;
    Some(Forgery {
        kind: EventKind::MapChange { org: target.into() },
        subject: None,
        deps,
        orgs: vec![],
        plain: body,
    })
}

/// A well-formed Automerge change to `target`'s profile written by attacker `i`, with the
/// events carrying its dependencies.
fn map_change(world: &mut World, i: usize, target: &str) -> Option<(Vec<u8>, Vec<EventId>)> {
    let store = world.nodes[i].engine.store();
    // No document held (or none readable): the change is written from an empty one.
    let mut doc = store.map_doc(target).ok().flatten().unwrap_or_default();
    let key = world.nodes[i].engine.node_key();
    doc.set_actor(automerge::ActorId::from(key.to_vec()));
    let heads = doc.get_heads();
    let deps = store.map_change_events(&heads).ok()?;
    let profile = workload::profile(&mut world.rng, target);
    let change = crate::map::import(&mut doc, &profile).ok()??;
    Some((change, deps))
}

/// Map changes of its own profile with bodies automerge must not choke on: mutated or
/// truncated changes, random bytes, the fuzz crashers, a change written under another
/// node's actor.
pub(super) fn bad_map(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    let Some((mut body, deps)) = map_change(world, i, &org) else {
        return;
    };
    match world.rng.gen_range(0..6) {
        0 => {
            for _ in 0..world.rng.gen_range(1..8) {
                let at = world.rng.gen_range(0..body.len().max(1));
                if let Some(b) = body.get_mut(at) {
                    *b ^= 1 << world.rng.gen_range(0..8);
                }
            }
        }
        1 => body.truncate(world.rng.gen_range(0..body.len().max(1))),
        2 => {
            body = (0..world.rng.gen_range(0..300))
                .map(|_| world.rng.r#gen())
                .collect();
        }
        3 if !world.options.map_bodies.is_empty() => {
            let n = world.options.map_bodies.len();
            body = world.options.map_bodies[world.rng.gen_range(0..n)].clone();
        }
        4 => {
            // The same profile change, but written as an honest node's actor.
            let honest = honest_peers(world);
            let victim = honest[world.rng.gen_range(0..honest.len())];
            let actor = world.nodes[victim].engine.node_key();
            let store = world.nodes[i].engine.store();
            // No document held (or none readable): the change is written from an empty one.
            let mut doc = store.map_doc(&org).ok().flatten().unwrap_or_default();
            doc.set_actor(automerge::ActorId::from(actor.to_vec()));
            let profile = workload::profile(&mut world.rng, &org);
            if let Ok(Some(change)) = crate::map::import(&mut doc, &profile) {
                body = change;
            }
        }
        _ => {
            let at = world.rng.gen_range(0..body.len().max(1));
            let junk: Vec<u8> = (0..world.rng.gen_range(1..64))
                .map(|_| world.rng.r#gen())
                .collect();
            body.splice(at..at, junk);
        }
    }
    let forgery = Forgery {
        kind: EventKind::MapChange { org },
        subject: None,
        deps,
        orgs: vec![],
        plain: body,
    };
    forge_own(world, i, forgery);
}
