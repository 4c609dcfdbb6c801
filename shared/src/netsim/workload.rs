//! The honest nodes' workload: what caseworkers and coordinators do, through the engine's
//! operations only — so every event is one the engine judged valid when it was written. An
//! operation the engine refuses (the case is not readable here yet, the referral moved on
//! meanwhile) is what a person would be told; it is counted, not a failure.

use rand::Rng;

use crate::config::Role;
use crate::engine::{EngineError, ReferralRequest, Step};
use crate::event::{CaseAction, EventId, Transition, Urgency};
use crate::fold::Status;
use crate::map::{Capacity, Profile, Service};
use crate::payload::{CaseData, Consent, Person};

use super::{CaseInfo, ReferralInfo, World};

/// Case types honest nodes open (repeated for weight).
const CASE_TYPES: [&str; 6] = [
    "general",
    "general",
    "general",
    "unaccompanied_child",
    "medical_condition",
    "gbv_survivor",
];
/// Categories of needs and referrals (`gbv` is sensitive: it never travels in clear).
const CATEGORIES: [&str; 6] = [
    "health",
    "shelter",
    "food",
    "legal",
    "child_protection",
    "gbv",
];
/// Organisations that provide services and hold keys in the simulation.
const PROVIDERS: [&str; 6] = ["mdm", "iom", "unicef", "drs_medenine", "crt", "unhcr"];
/// Organisations that may take over case management.
const CASE_MANAGERS: [&str; 4] = ["mas", "dpe", "iom", "crt"];
const DECLINE_REASONS: [&str; 3] = ["no_capacity", "out_of_mandate", "not_eligible"];
const SITES: [&str; 2] = ["medenine", "zarzis"];

/// A person's case data, drawn from the seed.
pub(super) fn case_data(rng: &mut impl Rng, case_type: &str, consent: bool) -> CaseData {
    let needs: Vec<String> = CATEGORIES
        .iter()
        .filter(|_| rng.gen_bool(0.4))
        .map(|c| c.to_string())
        .collect();
    let mut data = CaseData {
        case_type: case_type.into(),
        site: SITES[rng.gen_range(0..SITES.len())].into(),
        person: Person {
            first_name: Some(format!("Person{}", rng.gen_range(0..1000))),
            age: Some(rng.gen_range(1..80)),
            languages: vec!["ar".into(), "fr".into()],
            health: rng.gen_bool(0.5).then(|| "cough".to_string()),
            ..Person::default()
        },
        needs: if needs.is_empty() {
            vec!["health".into()]
        } else {
            needs
        },
        vulnerabilities: vec![],
        consent: Consent {
            given: consent,
            explained_by: "caseworker".into(),
            explained: "referral to a partner".into(),
            recorded_at: "2026-06-01T08:00:00Z".into(),
            ..Consent::default()
        },
        notes: String::new(),
    };
    // A child's consent goes with a guardian's, as the SOP asks (the referring node checks it).
    if data.person.age.is_some_and(|a| a < 18) || case_type == "unaccompanied_child" {
        data.consent.guardian_given = Some(consent);
    }
    data
}

/// Records the outcome of an operation: an acknowledged event, a refusal, or a storage failure.
fn outcome(world: &mut World, i: usize, what: &str, result: Result<EventId, EngineError>) {
    let name = world.nodes[i].name.clone();
    match result {
        Ok(id) => {
            // What a malicious member was told counts for nothing.
            if world.nodes[i].honest() {
                world.book.acknowledged.push((i, id));
                world.stats.events_acknowledged += 1;
                *world.stats.ops.entry(what.to_string()).or_default() += 1;
            }
            world.log(format!("{name} {what}: {}", id.short()));
        }
        Err(e) => {
            world.stats.ops_refused += 1;
            world.note_error(i, what, &e);
        }
    }
}

/// One operation of honest node `i`, drawn from the seed.
pub(super) fn step(world: &mut World, i: usize) {
    match world.rng.gen_range(0..100) {
        0..=19 => open_case(world, i),
        20..=29 => determine(world, i),
        30..=49 => refer(world, i),
        50..=74 => referral_step(world, i),
        75..=84 => case_action(world, i),
        85..=94 => map_edit(world, i),
        _ => share_keys(world, i),
    }
}

fn has_role(world: &World, i: usize, role: Role) -> bool {
    let org = &world.nodes[i].org;
    world.nodes[i]
        .engine
        .mechanism()
        .is_ok_and(|m| m.org(org).is_some_and(|o| o.has_role(role)))
}

fn open_case(world: &mut World, i: usize) {
    if !has_role(world, i, Role::Identify) {
        return map_edit(world, i);
    }
    let case_type = CASE_TYPES[world.rng.gen_range(0..CASE_TYPES.len())];
    let consent = world.rng.gen_bool(0.9);
    let data = case_data(&mut world.rng, case_type, consent);
    let now = world.now_of(i);
    let result = world.nodes[i].engine.open_case(data, "caseworker", now);
    if let Ok(id) = &result {
        world.book.cases.push(CaseInfo {
            id: *id,
            case_type: case_type.into(),
        });
    }
    outcome(world, i, "open case", result);
}

/// A case node `i` can read (a caseworker acts on the cases they see), in the simulation's
/// order; `None` if there is none yet.
fn random_case(world: &mut World, i: usize) -> Option<CaseInfo> {
    let org = world.nodes[i].org.clone();
    let store = world.nodes[i].engine.store();
    let readable: Vec<CaseInfo> = world
        .book
        .cases
        .iter()
        .filter(|c| {
            store
                .case_record(&c.id)
                .ok()
                .flatten()
                .is_some_and(|r| r.valid && r.readers.contains(&org))
        })
        .cloned()
        .collect();
    (!readable.is_empty()).then(|| readable[world.rng.gen_range(0..readable.len())].clone())
}

fn determine(world: &mut World, i: usize) {
    let Some(case) = random_case(world, i) else {
        return;
    };
    let org = world.nodes[i].org.clone();
    let authority = world.nodes[i].engine.mechanism().is_ok_and(|m| {
        m.case_type(&case.case_type)
            .is_some_and(|ct| ct.status_authorities.contains(&org))
    });
    if !authority {
        return refer(world, i);
    }
    let now = world.now_of(i);
    let result = world.nodes[i].engine.determine_status(
        case.id,
        &case.case_type,
        true,
        "determined",
        "authority",
        now,
    );
    outcome(world, i, "determine status", result);
}

fn refer(world: &mut World, i: usize) {
    let Some(case) = random_case(world, i) else {
        return;
    };
    let org = world.nodes[i].org.clone();
    let to_org = PROVIDERS[world.rng.gen_range(0..PROVIDERS.len())];
    if to_org == org {
        return;
    }
    let share = ["first_name", "age", "languages", "health"]
        .iter()
        .filter(|_| world.rng.gen_bool(0.5))
        .map(|s| s.to_string())
        .collect();
    let request = ReferralRequest {
        case: case.id,
        to_org: to_org.into(),
        category: CATEGORIES[world.rng.gen_range(0..CATEGORIES.len())].into(),
        urgency: [Urgency::Emergency, Urgency::Urgent, Urgency::Routine][world.rng.gen_range(0..3)],
        share,
        note: "please see this person".into(),
        emergency_override: world
            .rng
            .gen_bool(0.05)
            .then(|| "immediate danger".to_string()),
    };
    let now = world.now_of(i);
    let result = world.nodes[i]
        .engine
        .send_referral(request, "caseworker", now);
    if let Ok(id) = &result {
        world.book.referrals.push(ReferralInfo {
            id: *id,
            from_org: org,
            to_org: to_org.into(),
        });
    }
    outcome(world, i, "refer", result);
}

fn referral_step(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    let mine: Vec<ReferralInfo> = world
        .book
        .referrals
        .iter()
        .filter(|r| r.to_org == org || r.from_org == org)
        .cloned()
        .collect();
    if mine.is_empty() {
        return refer(world, i);
    }
    let referral = mine[world.rng.gen_range(0..mine.len())].clone();
    let Ok(Some(record)) = world.nodes[i].engine.store().referral_record(&referral.id) else {
        return;
    };
    let receiver = record.receiver_org == org;
    let roll = world.rng.gen_range(0..100);
    let transition = match (receiver, record.status) {
        (true, Status::Sent) if roll < 40 => Transition::Acknowledge,
        (true, Status::Sent | Status::Acknowledged) if roll < 75 => Transition::Accept,
        (true, Status::Sent | Status::Acknowledged) => Transition::Decline,
        (true, Status::Accepted) => Transition::Complete,
        (false, s) if s.is_open() && roll < 30 => Transition::Withdraw,
        _ => return,
    };
    let mut step = Step::new(transition, "done");
    if transition == Transition::Decline {
        step.reason =
            Some(DECLINE_REASONS[world.rng.gen_range(0..DECLINE_REASONS.len())].to_string());
    }
    if transition == Transition::Complete {
        step.outcome = Some("served".into());
    }
    let now = world.now_of(i);
    let result = world.nodes[i]
        .engine
        .referral_step(referral.id, step, "caseworker", now);
    outcome(world, i, transition.as_str(), result);
}

fn case_action(world: &mut World, i: usize) {
    let Some(case) = random_case(world, i) else {
        return;
    };
    let org = world.nodes[i].org.clone();
    let Ok(Some(record)) = world.nodes[i].engine.store().case_record(&case.id) else {
        return;
    };
    let manager = record.manager_org == org;
    let action = match world.rng.gen_range(0..10) {
        0..=4 => CaseAction::Note,
        5..=6 if manager && !record.closed => CaseAction::Close,
        7 if manager && record.closed => CaseAction::Reopen,
        8 if manager && !record.closed => {
            let to = CASE_MANAGERS[world.rng.gen_range(0..CASE_MANAGERS.len())];
            if to == org {
                return;
            }
            CaseAction::Transfer { to_org: to.into() }
        }
        _ => CaseAction::Note,
    };
    let consent = (action == CaseAction::Note && world.rng.gen_bool(0.1)).then(|| Consent {
        given: world.rng.gen_bool(0.7),
        explained_by: "caseworker".into(),
        explained: "asked again".into(),
        recorded_at: "2026-06-01T09:00:00Z".into(),
        ..Consent::default()
    });
    let action = if consent.is_some() {
        CaseAction::Consent
    } else {
        action
    };
    let now = world.now_of(i);
    let what = format!("case {action:?}");
    let result =
        world.nodes[i]
            .engine
            .case_action(case.id, action, "follow-up", consent, "caseworker", now);
    outcome(world, i, &what, result);
}

/// A profile of `org` with a few services at the sites, drawn from the seed.
pub(super) fn profile(rng: &mut impl Rng, org: &str) -> Profile {
    let names = |s: &str| crate::config::model::Names {
        fr: s.to_string(),
        en: s.to_string(),
        ar: None,
    };
    let services = (0..rng.gen_range(1..=3))
        .map(|k| Service {
            id: format!("{org}-svc-{k}"),
            category: CATEGORIES[rng.gen_range(0..4)].into(),
            site: SITES[rng.gen_range(0..SITES.len())].into(),
            name: names(&format!("Service {k} of {org}")),
            description: None,
            eligibility: None,
            languages: vec!["fr".into()],
            address: None,
            latitude: None,
            longitude: None,
            postal_code: None,
            confidential: false,
            case_types: Vec::new(),
            capacity: [Capacity::Available, Capacity::Limited, Capacity::Full][rng.gen_range(0..3)],
            verified: "2026-05-20".into(),
            hours: Default::default(),
            contact: None,
        })
        .collect();
    Profile {
        org: org.into(),
        description: names(&format!("The profile of {org}")),
        focal_points: vec![],
        services,
    }
}

fn map_edit(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    let now = world.now_of(i);
    let result = if world.rng.gen_bool(0.5) {
        let profile = profile(&mut world.rng, &org);
        world.nodes[i].engine.map_import(&profile, now)
    } else {
        let service = format!("{org}-svc-{}", world.rng.gen_range(0..3));
        let capacity =
            [Capacity::Available, Capacity::Limited, Capacity::Full][world.rng.gen_range(0..3)];
        world.nodes[i]
            .engine
            .map_update(&org, &service, Some(capacity), true, now)
    };
    match result {
        Ok(Some(id)) => outcome(world, i, "map", Ok(id)),
        Ok(None) => {}
        Err(e) => outcome(world, i, "map", Err(e)),
    }
}

/// The node shares its organisation's keys with the organisation's other nodes.
pub(super) fn share_keys(world: &mut World, i: usize) {
    let now = world.now_of(i);
    match world.nodes[i].engine.share_keys(now) {
        Ok(ids) => {
            for id in ids {
                outcome(world, i, "share keys", Ok(id));
            }
        }
        Err(e) => outcome(world, i, "share keys", Err(e)),
    }
}

/// A map change every honest node can make at the end: its own profile, changed so there is a
/// change to write. Fails (with why) if the engine cannot write it.
pub(super) fn final_map_change(world: &mut World, i: usize) -> Result<(), String> {
    let org = world.nodes[i].org.clone();
    let now = world.now_of(i);
    let mut profile = profile(&mut world.rng, &org);
    profile.description.fr = format!("Final profile of {org} at {}", world.now_ms);
    match world.nodes[i].engine.map_import(&profile, now) {
        Ok(Some(id)) => {
            outcome(world, i, "final map change", Ok(id));
            let event = world.nodes[i]
                .engine
                .store()
                .event(&id)
                .map_err(|e| e.to_string())?
                .ok_or("the event just written is not in the store")?;
            let skew_ms = super::skew_ms(&world.nodes[i].engine);
            let now_ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            let hlc = event.header().hlc.ms;
            if hlc > now_ms + skew_ms {
                return Err(format!("its clock is {} ms ahead", hlc - now_ms));
            }
            Ok(())
        }
        Ok(None) => Err("the profile did not change".into()),
        Err(e) => {
            world.note_error(i, "final map change", &e);
            Err(e.to_string())
        }
    }
}
