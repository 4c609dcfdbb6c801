//! The event log, end-to-end encryption and the fold, with several real engines (redb stores in
//! temp directories) exchanging their logs in process: scenario 3, admission refusals, rule
//! violations marked on every node, key shares, removal and rotation.

use passerelle_core::engine::{Engine, ReferralRequest, Step, Which};
use passerelle_core::event::{CaseAction, Event, EventId, Kind, Transition, Urgency};
use passerelle_core::fold::{Rule, Status};
use passerelle_core::payload::{self, CaseData, Consent, Person};
use passerelle_core::sim::{Forger, Sim};
use time::OffsetDateTime;

pub const SAMPLE: &str = include_str!("../config/mechanism.toml");

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The mechanism of scenario 3: the ministry's social workers (mas), the child protection
/// delegate (dpe), a health partner (mdm), and a bystander (iom) that must read nothing.
pub fn scenario() -> (Sim, tempfile::TempDir, Vec<Engine>) {
    let sim = Sim::new(
        SAMPLE,
        &["mas", "dpe", "mdm", "iom"],
        &[
            ("aicha", "mas"),
            ("delegate", "dpe"),
            ("nurse", "mdm"),
            ("iom1", "iom"),
        ],
        now(),
    )
    .unwrap_or_else(|e| panic!("sim: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let engines = ["aicha", "delegate", "nurse", "iom1"]
        .iter()
        .map(|n| {
            sim.engine(n, dir.path(), true, now())
                .unwrap_or_else(|e| panic!("engine {n}: {e}"))
        })
        .collect();
    (sim, dir, engines)
}

/// Every event every engine holds.
pub fn all_events(engines: &[Engine]) -> Vec<Event> {
    let mut out = Vec::new();
    for e in engines {
        for (author, _, _) in e.store().heads().unwrap_or_default() {
            out.extend(
                e.store()
                    .log_range(&author, 1, usize::MAX)
                    .unwrap_or_default(),
            );
        }
    }
    out
}

/// Gives every engine every event the others hold (what sync does over the network).
pub fn sync(engines: &mut [Engine]) {
    let events = all_events(engines);
    for e in engines.iter_mut() {
        e.receive(&events, now())
            .unwrap_or_else(|err| panic!("receive: {err}"));
    }
}

pub fn boy() -> CaseData {
    CaseData {
        case_type: "unaccompanied_child".into(),
        site: "medenine".into(),
        person: Person {
            first_name: Some("Youssef".into()),
            last_name: Some("B.".into()),
            age: Some(16),
            languages: vec!["ar".into()],
            health: Some("fever and cough for three days".into()),
            phone: Some("+216 00 000 000".into()),
            ..Person::default()
        },
        needs: vec!["health".into(), "shelter".into(), "child_protection".into()],
        vulnerabilities: vec!["unaccompanied".into()],
        consent: Consent {
            given: true,
            guardian_given: Some(true),
            guardian_name: Some("centre guardian".into()),
            explained_by: "Aïcha".into(),
            explained:
                "referral to a health partner, sharing first name, age, language and symptoms"
                    .into(),
            recorded_at: "2026-11-27T09:00:00Z".into(),
            ..Consent::default()
        },
        notes: "met at the centre's reception".into(),
    }
}

pub fn health_referral(case: passerelle_core::event::EventId) -> ReferralRequest {
    ReferralRequest {
        case,
        to_org: "mdm".into(),
        category: "health".into(),
        urgency: Urgency::Urgent,
        share: vec![
            "first_name".into(),
            "age".into(),
            "languages".into(),
            "health".into(),
        ],
        note: "needs to see a doctor today".into(),
        emergency_override: None,
    }
}

#[test]
fn scenario_3_identification_determination_referral_and_follow_up() {
    let (_sim, _dir, mut e) = scenario();
    let case = e[0]
        .open_case(boy(), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    let referral = step_the_referral_waits_for_the_status_determination(&mut e, case);
    step_the_nurse_sees_only_the_fields_shared(&e, case);
    step_the_nurse_acknowledges_accepts_and_completes(&mut e, referral);
    step_aicha_sees_each_step(&e, case);
    step_the_bystander_holds_only_ciphertext_and_clear_facts(&e, case, referral);
    // And every node agrees on the referral's state.
    for engine in &e {
        let r = engine
            .store()
            .referral_record(&referral)
            .unwrap_or_default();
        assert_eq!(r.map(|r| r.status), Some(Status::Completed));
    }
}

/// The case type requires status determination: no referral before it; the delegate reads
/// the case and determines its status, then aïcha's referral goes out. Returns the referral.
fn step_the_referral_waits_for_the_status_determination(
    e: &mut [Engine],
    case: EventId,
) -> EventId {
    let early = e[0].send_referral(health_referral(case), "aicha", now());
    assert!(
        matches!(&early, Err(err) if err.to_string().contains("status determination")),
        "{early:?}"
    );
    // The delegate's node can read the case (it is addressed to the authority) and records it.
    let seen_by_delegate = e[1].case(&case, now()).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(
        seen_by_delegate.data.person.first_name.as_deref(),
        Some("Youssef")
    );
    e[1].determine_status(
        case,
        "unaccompanied_child",
        true,
        "alone, 16",
        "delegate",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    sync(e);
    let referral = e[0]
        .send_referral(health_referral(case), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(e);
    referral
}

/// The nurse's inbox shows the referral, with only the fields shared; she cannot read the
/// case itself.
fn step_the_nurse_sees_only_the_fields_shared(e: &[Engine], case: EventId) {
    let inbox = e[2]
        .referrals(false, Which::All, usize::MAX, true, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(inbox.len(), 1);
    let r = &inbox[0];
    assert!(r.readable);
    assert_eq!(r.status, Status::Sent);
    assert_eq!(r.urgency, Urgency::Urgent);
    assert_eq!(
        r.shared.get("first_name").map(String::as_str),
        Some("Youssef")
    );
    assert_eq!(r.shared.get("age").map(String::as_str), Some("16"));
    assert!(
        !r.shared.contains_key("phone"),
        "data minimisation: the phone was not shared"
    );
    assert!(!r.shared.contains_key("last_name"));
    // The health partner cannot read the case itself.
    assert!(e[2].case(&case, now()).is_err());
    assert!(e[2].cases(None, usize::MAX).unwrap_or_default().is_empty());
}

fn step_the_nurse_acknowledges_accepts_and_completes(e: &mut [Engine], referral: EventId) {
    for (t, note) in [
        (Transition::Acknowledge, "seen in inbox"),
        (Transition::Accept, "appointment at 14:00"),
    ] {
        e[2].referral_step(referral, Step::new(t, note), "nurse", now())
            .unwrap_or_else(|x| panic!("{x}"));
    }
    let complete = Step {
        outcome: Some("antibiotics, follow-up in a week".into()),
        ..Step::new(Transition::Complete, "treated")
    };
    e[2].referral_step(referral, complete, "nurse", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(e);
}

/// Aïcha sees each step in her outbox and in the case's timeline.
fn step_aicha_sees_each_step(e: &[Engine], case: EventId) {
    let outbox = e[0]
        .referrals(true, Which::All, usize::MAX, true, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].status, Status::Completed);
    assert!(outbox[0].acknowledged_at.is_some() && outbox[0].accepted_at.is_some());
    let view = e[0].case(&case, now()).unwrap_or_else(|x| panic!("{x}"));
    assert!(view.timeline.iter().any(
        |t| matches!(&t.detail, passerelle_core::engine::Detail::Read(w)
            if w.outcome.as_deref().is_some_and(|o| o.contains("antibiotics")))
    ));
    assert_eq!(view.determinations, vec!["dpe".to_string()]);
}

/// The bystander holds every event, as ciphertext it cannot read; it still sees the clear
/// facts (an urgent health referral from mas to mdm, completed) for indicators.
fn step_the_bystander_holds_only_ciphertext_and_clear_facts(
    e: &[Engine],
    case: EventId,
    referral: EventId,
) {
    let iom = &e[3];
    assert!(iom.cases(None, usize::MAX).unwrap_or_default().is_empty());
    assert!(iom.case(&case, now()).is_err());
    let record = iom
        .store()
        .referral_record(&referral)
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("iom holds the referral's clear record"));
    assert_eq!(record.status, Status::Completed);
    assert_eq!(record.category.as_deref(), Some("health"));
    let event = iom
        .store()
        .event(&referral)
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("held"));
    let body = event.body().unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(body).contains("Youssef"),
        "only ciphertext"
    );
    assert!(
        iom.referral(&referral, now())
            .map(|v| !v.readable)
            .unwrap_or(false)
    );
}

#[test]
fn a_sensitive_category_never_travels_in_clear() {
    let (_sim, _dir, mut e) = scenario();
    let mut data = boy();
    data.case_type = "general".into();
    let case = e[0]
        .open_case(data, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    // GBV response is sensitive; send it to an organisation that provides services.
    let mut req = health_referral(case);
    req.category = "gbv".into();
    let referral = e[0]
        .send_referral(req, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    let event = e[3]
        .store()
        .event(&referral)
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("held"));
    match &event.header().kind {
        Kind::ReferralSend { category, .. } => assert_eq!(category, &None),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{:?}", event.header()).contains("gbv"));
    let seen = e[2]
        .referral(&referral, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(
        seen.category.as_deref(),
        Some("gbv"),
        "the receiver reads it inside the ciphertext"
    );
}

#[test]
fn an_expired_configuration_stops_new_case_events() {
    let sim = Sim::new(SAMPLE, &["mas", "mdm"], &[("aicha", "mas")], now())
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut a = sim
        .engine("aicha", dir.path(), true, now())
        .unwrap_or_else(|e| panic!("{e}"));
    let later = now() + time::Duration::days(400);
    let err = a.open_case(boy(), "aicha", later).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert!(
        a.store().case_records().unwrap_or_default().is_empty(),
        "nothing written"
    );
}

/// A malicious node's events, checked on three honest nodes.
#[test]
fn admission_refuses_forged_broken_and_out_of_bounds_events() {
    let (sim, _dir, mut e) = scenario();
    let m = sim.mechanism().unwrap_or_else(|x| panic!("{x}"));
    let aicha = sim.node("aicha").unwrap_or_else(|x| panic!("{x}")).clone();
    let mut forger = Forger::new(&aicha, sim.mechanism_id(), 1, now());
    let plain = payload::encode(&payload::CaseOpenPayload {
        data: boy(),
        by: "x".into(),
    })
    .unwrap_or_default();
    let good = forger
        .next(&m, Kind::CaseOpen, None, vec![], &["mas"], &plain)
        .unwrap_or_else(|x| panic!("{x}"));
    let forgery = Forgery {
        sim: &sim,
        m,
        aicha,
        plain,
        good,
    };
    step_forged_headers_are_refused(&forgery, &mut e[1]);
    step_a_broken_chain_is_refused(&forgery, &mut e[1]);
    // Oversized: a body past the bound cannot even be decoded.
    let huge = vec![0u8; passerelle_core::limits::EVENT_WIRE_SIZE_MAX_BYTES + 1];
    assert!(Event::decode(&huge).is_err());
    step_an_equivocation_is_kept_as_evidence(&forgery, &mut e[1]);
}

/// What the malicious node holds: aicha's identity, a case payload, and the valid first event
/// it made from them.
struct Forgery<'a> {
    sim: &'a Sim,
    m: passerelle_core::config::Mechanism,
    aicha: passerelle_core::sim::SimNode,
    plain: Vec<u8>,
    good: Event,
}

impl Forgery<'_> {
    /// A new forger writing as aicha in this mechanism, from her sequence 1.
    fn forger(&self) -> Forger {
        Forger::new(&self.aicha, self.sim.mechanism_id(), 1, now())
    }
}

/// Delivers `event` alone to `engine`, checks it is not admitted, and returns why.
fn refusal(engine: &mut Engine, event: &Event) -> String {
    let report = engine
        .receive(std::slice::from_ref(event), now())
        .unwrap_or_default();
    assert!(report.admitted.is_empty(), "not admitted: {report:?}");
    report
        .refused
        .first()
        .map(|(_, r)| r.to_string())
        .unwrap_or_else(|| format!("{report:?}"))
}

/// A forged signature, a wrong mechanism id, an author not in the configuration, and more
/// stanzas than organisations addressed.
fn step_forged_headers_are_refused(f: &Forgery<'_>, engine: &mut Engine) {
    let (m, plain, good) = (&f.m, &f.plain, &f.good);
    // Forged signature: another key signs aicha's header.
    let mut h = good.header().clone();
    h.hlc.counter += 100;
    let forged = Event::sign(
        h,
        good.body().unwrap_or_default().to_vec(),
        &passerelle_core::keys::SigningKey::generate(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    assert!(refusal(engine, &forged).contains("signature does not verify"));

    // Wrong mechanism id.
    let mut other = Forger::new(&f.aicha, passerelle_core::config::Hash32([9; 32]), 1, now());
    let foreign = other
        .next(m, Kind::CaseOpen, None, vec![], &["mas"], plain)
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(refusal(engine, &foreign).contains("another mechanism"));

    // Author not in the configuration.
    let stranger = passerelle_core::sim::SimNode {
        name: "stranger".into(),
        org: "mas".into(),
        secrets: passerelle_core::keyfiles::NodeSecrets::generate(),
    };
    let mut outsider = Forger::new(&stranger, f.sim.mechanism_id(), 1, now());
    let ev = outsider
        .next(m, Kind::CaseOpen, None, vec![], &["mas"], plain)
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(refusal(engine, &ev).contains("not an endorsed node"));

    // More stanzas than organisations addressed: encrypt to two, claim one.
    let mut h = good.header().clone();
    h.seq = 1;
    let (_, r1) = m.current_epoch("mas").unwrap_or_else(|| panic!("key"));
    let (_, r2) = m.current_epoch("iom").unwrap_or_else(|| panic!("key"));
    let body = payload::seal(plain, &[r1, r2]).unwrap_or_default();
    let ev = f.forger().sign(h, body).unwrap_or_else(|x| panic!("{x}"));
    assert!(refusal(engine, &ev).contains("2 recipient stanza(s) for 1 organisation"));
}

/// The valid first event is admitted; a second event that does not follow it is a broken chain.
fn step_a_broken_chain_is_refused(f: &Forgery<'_>, engine: &mut Engine) {
    let good = &f.good;
    let report = engine
        .receive(std::slice::from_ref(good), now())
        .unwrap_or_default();
    assert_eq!(report.admitted, vec![good.id()]);
    let mut h = good.header().clone();
    h.seq = 2;
    h.prev = Some(passerelle_core::config::Hash32([1; 32]));
    h.hlc.counter += 5;
    let broken = f
        .forger()
        .sign(h, good.body().unwrap_or_default().to_vec())
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(refusal(engine, &broken).contains("broken chain"));
}

/// Equivocation: another event with aicha's sequence 1 is kept as evidence, and her head stays
/// the first event.
fn step_an_equivocation_is_kept_as_evidence(f: &Forgery<'_>, engine: &mut Engine) {
    let twin = f
        .forger()
        .next(&f.m, Kind::CaseOpen, None, vec![], &["mas"], b"other")
        .unwrap_or_else(|x| panic!("{x}"));
    let report = engine
        .receive(std::slice::from_ref(&twin), now())
        .unwrap_or_default();
    assert_eq!(report.equivocations, vec![(twin.id(), f.good.id())]);
    assert_eq!(
        engine.store().equivocations().unwrap_or_default().len(),
        1,
        "kept as evidence"
    );
    assert_eq!(
        engine
            .store()
            .head(&f.aicha.key())
            .unwrap_or_default()
            .map(|h| h.1),
        Some(f.good.id())
    );
}

#[test]
fn a_decreasing_configuration_version_and_a_removed_author_are_refused() {
    let (mut sim, dir, mut e) = scenario();
    let iom1 = sim.node("iom1").unwrap_or_else(|x| panic!("{x}")).clone();
    // Version 2: iom1 removed after its sequence 1; iom rotates its key in the same version.
    let rotated = sim.rotate("iom").unwrap_or_else(|x| panic!("{x}"));
    sim.next_version(
        &[passerelle_core::config::template::RemovalCutoff {
            node: iom1.id(),
            last_seq: 1,
        }],
        |t| t + &rotated,
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    let files = sim.files.clone();
    for engine in e.iter_mut() {
        engine
            .apply_config(&files, now())
            .unwrap_or_else(|x| panic!("{x}"));
    }
    let m2 = sim.mechanism().unwrap_or_else(|x| panic!("{x}"));
    let m1 = sim.files[0].mechanism().unwrap_or_else(|x| panic!("{x}"));
    let mut f = Forger::new(&iom1, sim.mechanism_id(), 1, now());
    let note = |f: &mut Forger, m: &passerelle_core::config::Mechanism| {
        f.next(
            m,
            Kind::MapChange { org: "iom".into() },
            None,
            vec![],
            &[],
            b"x",
        )
        .unwrap_or_else(|x| panic!("{x}"))
    };
    let first = note(&mut f, &m1);
    let second = note(&mut f, &m1);
    let report = e[0]
        .receive(&[first.clone(), second], now())
        .unwrap_or_default();
    assert_eq!(report.admitted, vec![first.id()], "up to the cut-off only");
    assert!(
        report.refused[0]
            .1
            .to_string()
            .contains("removed from the mechanism after sequence 1")
    );

    // A decreasing claimed version, by an author still in the mechanism.
    let aicha = sim.node("aicha").unwrap_or_else(|x| panic!("{x}")).clone();
    let mut f = Forger::new(&aicha, sim.mechanism_id(), 2, now());
    let a1 = note_for(&mut f, &m2, "mas");
    f.config_version = 1;
    let a2 = note_for(&mut f, &m1, "mas");
    let report = e[1].receive(&[a1.clone(), a2], now()).unwrap_or_default();
    assert_eq!(report.admitted, vec![a1.id()]);
    assert!(
        report.refused[0]
            .1
            .to_string()
            .contains("lower than its author's previous event")
    );
    drop(dir);
}

fn note_for(f: &mut Forger, m: &passerelle_core::config::Mechanism, org: &str) -> Event {
    f.next(
        m,
        Kind::MapChange { org: org.into() },
        None,
        vec![],
        &[],
        b"x",
    )
    .unwrap_or_else(|x| panic!("{x}"))
}

/// Delivers events to every engine and returns each engine's verdict on `id`.
fn verdicts_everywhere(
    e: &mut [Engine],
    events: &[Event],
    id: passerelle_core::event::EventId,
) -> Vec<Option<Rule>> {
    for engine in e.iter_mut() {
        engine
            .receive(events, now())
            .unwrap_or_else(|x| panic!("{x}"));
    }
    e.iter()
        .map(|engine| {
            engine
                .store()
                .verdict(&id)
                .unwrap_or_default()
                .unwrap_or_else(|| panic!("folded"))
                .broken
        })
        .collect()
}

#[test]
fn rule_violations_are_marked_on_every_node_and_have_no_effect() {
    let (sim, _dir, mut e) = scenario();
    let m = sim.mechanism().unwrap_or_else(|x| panic!("{x}"));
    step_a_case_opened_by_a_provider_is_marked_and_its_chain_goes_on(&sim, &m, &mut e);

    // A real case by aicha, determined by the delegate.
    let mut data = boy();
    data.consent.given = false;
    let case = e[0]
        .open_case(data, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    let mut af = forger_after_head(&sim, &e[0], "aicha");

    let fake_det = step_a_determination_by_another_authority_is_marked(&sim, &m, &mut e, case);
    let ref_plain = referral_payload(true);
    // A referral before the required status determination (it names the fake one).
    af.hlc.ms += 3_000;
    let early = af
        .next(
            &m,
            health_referral_kind(),
            Some(case),
            vec![fake_det],
            &["mas", "mdm"],
            &ref_plain,
        )
        .unwrap_or_else(|x| panic!("{x}"));
    let v = verdicts_everywhere(&mut e, std::slice::from_ref(&early), early.id());
    // Readers (mas, mdm) judge the payload rule; the others see a header-valid referral.
    assert_eq!(v[0], Some(Rule::StatusDeterminationMissing));
    assert_eq!(v[2], Some(Rule::StatusDeterminationMissing));
    assert_eq!(v[1], None, "dpe cannot read the referral's payload");

    let det = step_a_referral_without_consent_is_marked(&m, &mut e, &mut af, case, &ref_plain);
    step_a_sender_accepting_its_own_referral_is_marked(&m, &mut e, &mut af, case, det, &ref_plain);
}

/// mdm (provide_services only) opens a case under the designated SOP: marked everywhere, and
/// the honest engine refuses to write the same; the nurse's next valid event still goes in.
fn step_a_case_opened_by_a_provider_is_marked_and_its_chain_goes_on(
    sim: &Sim,
    m: &passerelle_core::config::Mechanism,
    e: &mut [Engine],
) {
    let nurse = sim.node("nurse").unwrap_or_else(|x| panic!("{x}")).clone();
    let mut bad = Forger::new(&nurse, sim.mechanism_id(), 1, now());
    let plain = payload::encode(&payload::CaseOpenPayload {
        data: boy(),
        by: "nurse".into(),
    })
    .unwrap_or_default();
    let open = bad
        .next(m, Kind::CaseOpen, None, vec![], &["mdm"], &plain)
        .unwrap_or_else(|x| panic!("{x}"));
    let v = verdicts_everywhere(e, std::slice::from_ref(&open), open.id());
    assert!(
        v.iter().all(|r| r == &Some(Rule::NotAllowedToIdentify)),
        "{v:?}"
    );
    assert!(e.iter().all(|x| {
        x.store()
            .case_record(&open.id())
            .unwrap_or_default()
            .is_some_and(|c| !c.valid)
    }));
    // The honest engine refuses to create the same thing.
    let refused = e[2].open_case(boy(), "nurse", now());
    assert!(
        matches!(&refused, Err(x) if x.to_string().contains("designated")),
        "{refused:?}"
    );

    // The nurse's next valid event is still admitted: the chain never breaks on a rule.
    let later = bad
        .next(
            m,
            Kind::MapChange { org: "mdm".into() },
            None,
            vec![],
            &[],
            &mdm_profile_change(&nurse.key()),
        )
        .unwrap_or_else(|x| panic!("{x}"));
    let v = verdicts_everywhere(e, std::slice::from_ref(&later), later.id());
    assert!(v.iter().all(Option::is_none), "{v:?}");
}

/// A forger writing as `name` after the head `engine` holds of it, a second ahead.
fn forger_after_head(sim: &Sim, engine: &Engine, name: &str) -> Forger {
    let node = sim.node(name).unwrap_or_else(|x| panic!("{x}")).clone();
    let head = engine
        .store()
        .head(&node.key())
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("head"));
    let mut forger = Forger::new(
        &node,
        sim.mechanism_id(),
        1,
        now() + time::Duration::seconds(1),
    );
    forger.seq = head.0;
    forger.prev = Some(head.1);
    forger
}

/// A determination by an organisation that is not the case type's authority (iom), marked on
/// every node. Returns it.
fn step_a_determination_by_another_authority_is_marked(
    sim: &Sim,
    m: &passerelle_core::config::Mechanism,
    e: &mut [Engine],
    case: EventId,
) -> EventId {
    let iom1 = sim.node("iom1").unwrap_or_else(|x| panic!("{x}")).clone();
    let mut iomf = Forger::new(
        &iom1,
        sim.mechanism_id(),
        1,
        now() + time::Duration::seconds(1),
    );
    let det_plain = payload::encode(&payload::DeterminationPayload {
        case_type: "unaccompanied_child".into(),
        determined: true,
        note: String::new(),
        by: "x".into(),
    })
    .unwrap_or_default();
    let fake_det = iomf
        .next(
            m,
            Kind::StatusDetermination,
            Some(case),
            vec![],
            &["mas", "dpe", "iom"],
            &det_plain,
        )
        .unwrap_or_else(|x| panic!("{x}"));
    let v = verdicts_everywhere(e, std::slice::from_ref(&fake_det), fake_det.id());
    assert!(
        v.iter().all(|r| r == &Some(Rule::NotStatusAuthority)),
        "{v:?}"
    );
    fake_det.id()
}

/// The payload of aicha's health referral for the unaccompanied child, with consent `given`
/// or not.
fn referral_payload(given: bool) -> Vec<u8> {
    payload::encode(&payload::ReferralPayload {
        case_type: "unaccompanied_child".into(),
        category: "health".into(),
        shared: Default::default(),
        note: String::new(),
        consent: Consent {
            given,
            ..boy().consent
        },
        emergency_override: None,
        by: "aicha".into(),
    })
    .unwrap_or_default()
}

/// The header kind of an urgent health referral to mdm.
fn health_referral_kind() -> Kind {
    Kind::ReferralSend {
        to_org: "mdm".into(),
        category: Some("health".into()),
        urgency: Urgency::Urgent,
    }
}

/// The real determination, then a referral without consent: marked by its readers, and the
/// honest engine refuses to write one. Returns the real determination.
fn step_a_referral_without_consent_is_marked(
    m: &passerelle_core::config::Mechanism,
    e: &mut [Engine],
    af: &mut Forger,
    case: EventId,
    ref_plain: &[u8],
) -> EventId {
    e[1].determine_status(
        case,
        "unaccompanied_child",
        true,
        "",
        "delegate",
        now() + time::Duration::seconds(2),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    sync(e);
    let det = e[0]
        .store()
        .case_record(&case)
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("case"))
        .determinations[0]
        .0;
    let no_consent_plain = payload::encode(&payload::ReferralPayload {
        consent: Consent {
            given: false,
            ..boy().consent
        },
        ..payload::decode::<payload::ReferralPayload>(ref_plain).unwrap_or_else(|x| panic!("{x}"))
    })
    .unwrap_or_default();
    af.hlc.ms += 5_000;
    let no_consent = af
        .next(
            m,
            health_referral_kind(),
            Some(case),
            vec![det],
            &["mas", "mdm"],
            &no_consent_plain,
        )
        .unwrap_or_else(|x| panic!("{x}"));
    let v = verdicts_everywhere(e, std::slice::from_ref(&no_consent), no_consent.id());
    assert_eq!(v[0], Some(Rule::NoConsent));
    assert_eq!(v[2], Some(Rule::NoConsent));
    let honest = e[0].send_referral(
        health_referral(case),
        "aicha",
        now() + time::Duration::seconds(10),
    );
    assert!(
        matches!(&honest, Err(x) if x.to_string().contains("consent")),
        "{honest:?}"
    );
    det
}

/// A valid referral (with consent) that its own sender then tries to accept: marked, with no
/// effect; the sender's next valid event still goes in.
fn step_a_sender_accepting_its_own_referral_is_marked(
    m: &passerelle_core::config::Mechanism,
    e: &mut [Engine],
    af: &mut Forger,
    case: EventId,
    det: EventId,
    ref_plain: &[u8],
) {
    let valid = af
        .next(
            m,
            health_referral_kind(),
            Some(case),
            vec![det],
            &["mas", "mdm"],
            ref_plain,
        )
        .unwrap_or_else(|x| panic!("{x}"));
    let v = verdicts_everywhere(e, std::slice::from_ref(&valid), valid.id());
    assert!(v.iter().all(Option::is_none), "{v:?}");
    let upd = payload::encode(&payload::ReferralUpdatePayload {
        note: String::new(),
        outcome: None,
        by: "aicha".into(),
    })
    .unwrap_or_default();
    let mut update = |transition| {
        af.next(
            m,
            Kind::ReferralUpdate {
                transition,
                reason: None,
            },
            Some(valid.id()),
            vec![],
            &["mas", "mdm"],
            &upd,
        )
        .unwrap_or_else(|x| panic!("{x}"))
    };
    let self_accept = update(Transition::Accept);
    let v = verdicts_everywhere(e, std::slice::from_ref(&self_accept), self_accept.id());
    assert!(v.iter().all(|r| r == &Some(Rule::NotReceiver)), "{v:?}");
    for engine in e.iter() {
        let r = engine
            .store()
            .referral_record(&valid.id())
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("record"));
        assert_eq!(r.status, Status::Sent, "no effect");
    }
    // And the sender's next valid event still goes in.
    let withdraw = update(Transition::Withdraw);
    let v = verdicts_everywhere(e, std::slice::from_ref(&withdraw), withdraw.id());
    assert!(v.iter().all(Option::is_none), "{v:?}");
}

#[test]
fn a_new_node_reads_earlier_cases_after_the_key_share_and_a_removed_node_cannot_read_new_ones() {
    let (mut sim, dir, mut e) = scenario();
    let mut data = boy();
    data.case_type = "general".into();
    let case = e[0]
        .open_case(data.clone(), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    let mut newcomer =
        step_a_new_node_reads_earlier_cases_after_the_key_share(&mut sim, dir.path(), &mut e, case);
    step_a_removed_node_cannot_read_new_cases(&mut sim, &mut e, &mut newcomer, data);
}

/// A second mas node joins (version 2) without the organisation's keys; aicha's node shares
/// them, once, and the newcomer reads the earlier case. Returns the newcomer.
fn step_a_new_node_reads_earlier_cases_after_the_key_share(
    sim: &mut Sim,
    dir: &std::path::Path,
    e: &mut [Engine],
    case: EventId,
) -> Engine {
    let stanza = sim
        .add_node("aicha2", "mas")
        .unwrap_or_else(|x| panic!("{x}"));
    sim.next_version(&[], |t| t + &stanza, now())
        .unwrap_or_else(|x| panic!("{x}"));
    for engine in e.iter_mut() {
        engine
            .apply_config(&sim.files, now())
            .unwrap_or_else(|x| panic!("{x}"));
    }
    let mut newcomer = sim
        .engine("aicha2", dir, false, now())
        .unwrap_or_else(|x| panic!("{x}"));
    let events = all_events(e);
    newcomer
        .receive(&events, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(
        newcomer
            .cases(None, usize::MAX)
            .unwrap_or_default()
            .is_empty(),
        "no key yet"
    );
    assert!(newcomer.store().unread_count().unwrap_or(0) > 0);
    // aicha's node shares the key (checked against the configuration) with the newcomer.
    let shares = e[0].share_keys(now()).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(shares.len(), 1);
    assert!(
        e[0].share_keys(now()).unwrap_or_default().is_empty(),
        "shared once"
    );
    let events = all_events(e);
    let report = newcomer
        .receive(&events, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(report.keys_installed, vec![1]);
    let cases = newcomer.cases(None, usize::MAX).unwrap_or_default();
    assert_eq!(cases.len(), 1, "the earlier case is readable now");
    assert_eq!(cases[0].id, case.to_hex());
    // Others cannot use the key share: iom1 holds it as ciphertext addressed to another node.
    assert!(e[3].epochs_held() == vec![1]);
    newcomer
}

/// Version 3 removes aicha2 and rotates mas's key: a new case is unreadable to it, and no node
/// shares the new epoch with it.
fn step_a_removed_node_cannot_read_new_cases(
    sim: &mut Sim,
    e: &mut [Engine],
    newcomer: &mut Engine,
    data: CaseData,
) {
    let aicha2 = sim.node("aicha2").unwrap_or_else(|x| panic!("{x}")).clone();
    let rotated = sim.rotate("mas").unwrap_or_else(|x| panic!("{x}"));
    sim.next_version(
        &[passerelle_core::config::template::RemovalCutoff {
            node: aicha2.id(),
            last_seq: 0,
        }],
        |t| t + &rotated,
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    e[0].apply_config(&sim.files, now())
        .unwrap_or_else(|x| panic!("{x}"));
    newcomer
        .apply_config(&sim.files, now())
        .unwrap_or_else(|x| panic!("{x}"));
    // The administrator installs epoch 2 on aicha's node by hand.
    let epochs: Vec<_> = sim.orgs["mas"]
        .epochs
        .iter()
        .map(|x| (x.epoch, x.identity.clone()))
        .collect();
    e[0].import_epochs(&epochs, now())
        .unwrap_or_else(|x| panic!("{x}"));
    let secret = e[0]
        .open_case(data, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    let event = e[0]
        .store()
        .event(&secret)
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("event"));
    assert_eq!(
        event.header().orgs[0].epoch,
        2,
        "new case data uses the new epoch"
    );
    newcomer
        .receive(&[event], now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(
        newcomer.case(&secret, now()).is_err(),
        "the removed node cannot read it"
    );
    assert!(
        newcomer.share_keys(now()).is_err()
            || newcomer.share_keys(now()).unwrap_or_default().is_empty()
    );
    // And no node shares epoch 2 with a node the configuration no longer lists.
    assert!(e[0].share_keys(now()).unwrap_or_default().is_empty());
}

#[test]
fn a_node_without_its_organisations_endorsement_gets_no_key_share() {
    let (sim, dir, mut e) = scenario();
    // A node endorsed by iom's key but claiming to be mas's: the configuration refuses it, so
    // no mas node ever counts it among its organisation's nodes.
    let rogue = passerelle_core::keyfiles::NodeSecrets::generate();
    let stanza = Sim::node_stanza(&sim.orgs["iom"], &rogue, "rogue")
        .unwrap_or_default()
        .replace("org = \"iom\"", "org = \"mas\"");
    let mut file = passerelle_core::config::chain::SignedFile::new(
        passerelle_core::config::template::next_version(
            &sim.files[0].document,
            &sim.mechanism().unwrap_or_else(|x| panic!("{x}")),
            &[],
            now(),
        )
        .unwrap_or_default()
            + &stanza,
    );
    file.sign(&sim.root.0).unwrap_or_default();
    let mut files = sim.files.clone();
    files.push(file);
    let err = e[0].apply_config(&files, now()).map(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("endorsed by its own organisation"),
        "{err}"
    );
    assert!(e[0].share_keys(now()).unwrap_or_default().is_empty());
    drop(dir);
}

#[test]
fn case_management_transfer_close_and_reopen() {
    let (_sim, _dir, mut e) = scenario();
    let mut data = boy();
    data.case_type = "general".into();
    let case = e[0]
        .open_case(data, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    e[0].case_action(
        case,
        CaseAction::Note,
        "called the family",
        None,
        "aicha",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    // Transfer case management to the delegate (dpe holds case_management).
    e[0].case_action(
        case,
        CaseAction::Transfer {
            to_org: "dpe".into(),
        },
        "handing over",
        None,
        "aicha",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    let view = e[1].case(&case, now()).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(view.manager, "dpe");
    assert_eq!(
        view.data.person.first_name.as_deref(),
        Some("Youssef"),
        "the new manager reads the case"
    );
    // The former manager may no longer close it; the new one may.
    let refused = e[0].case_action(case, CaseAction::Close, "", None, "aicha", now());
    assert!(
        matches!(&refused, Err(x) if x.to_string().contains("case manager")),
        "{refused:?}"
    );
    e[1].case_action(case, CaseAction::Close, "done", None, "delegate", now())
        .unwrap_or_else(|x| panic!("{x}"));
    e[1].case_action(
        case,
        CaseAction::Reopen,
        "new need",
        None,
        "delegate",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    for engine in &e {
        let c = engine
            .store()
            .case_record(&case)
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("case"));
        assert_eq!(c.manager_org, "dpe");
        assert!(!c.closed);
    }
}

#[test]
fn a_backup_restores_everything_and_starts_read_only() {
    let (sim, dir, mut e) = scenario();
    let case = e[0]
        .open_case(boy(), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    let backup = dir.path().join("aicha.backup");
    let events = e[0].backup(&backup).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(events, 1);
    assert!(e[0].backup(&backup).is_err(), "never overwrites");
    let node = sim.node("aicha").unwrap_or_else(|x| panic!("{x}"));
    let key = node.secrets.signing.public();
    let restored = passerelle_core::store::Store::restore_backup(
        &backup,
        &key,
        &dir.path().join("restored.redb"),
        Some(sim.mechanism_id()),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    let mut engine =
        Engine::open(restored, node.secrets.clone(), "mas").unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(
        engine.cases(None, usize::MAX).unwrap_or_default().len(),
        1,
        "cases and keys came back"
    );
    assert!(engine.case(&case, now()).is_ok());
    let err = engine
        .open_case(boy(), "aicha", now())
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    let other =
        Sim::new(SAMPLE, &["mas"], &[("x", "mas")], now()).unwrap_or_else(|x| panic!("{x}"));
    let again = dir.path().join("again.backup");
    e[1].backup(&again).unwrap_or_else(|x| panic!("{x}"));
    let nurse = sim.node("delegate").unwrap_or_else(|x| panic!("{x}"));
    let nurse_key = nurse.secrets.signing.public();
    assert!(
        passerelle_core::store::Store::restore_backup(
            &again,
            &nurse_key,
            &dir.path().join("again.redb"),
            Some(other.mechanism_id())
        )
        .is_err(),
        "another mechanism's backup"
    );
    // Signed by another node: refused before the database is read.
    let refused = passerelle_core::store::Store::restore_backup(
        &again,
        &key,
        &dir.path().join("again2.redb"),
        Some(sim.mechanism_id()),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        refused.to_string().contains("not signed by this node"),
        "{refused}"
    );
}

/// A real first change of MdM's partner-map document, written by the node with key `actor`
/// (a map change must carry its signer's Automerge actor).
fn mdm_profile_change(actor: &[u8; 32]) -> Vec<u8> {
    let profile = passerelle_core::map::Profile::from_toml(
        "org = \"mdm\"\n[description]\nfr = \"Soins\"\nen = \"Care\"\nar = \"رعاية\"\n",
    )
    .unwrap_or_else(|x| panic!("{x}"));
    let mut doc = automerge::AutoCommit::new();
    doc.set_actor(automerge::ActorId::from(actor.to_vec()));
    passerelle_core::map::import(&mut doc, &profile)
        .unwrap_or_else(|x| panic!("{x}"))
        .unwrap_or_else(|| panic!("a change"))
}

/// Issue 10, item 4: held events are retried incrementally — one from the future when its time
/// comes, one after a gap when the gap fills — and nothing waits forever: a held event whose
/// predecessor never comes is dropped after `HELD_EXPIRY_MS`.
#[test]
fn held_events_come_in_when_their_time_comes_and_expire_otherwise() {
    let (sim, _dir, mut e) = scenario();
    let m = sim.mechanism().unwrap_or_else(|x| panic!("{x}"));
    step_an_event_from_the_future_comes_in_when_its_time_comes(&sim, &m, &mut e[0]);
    step_a_gap_fills_and_an_orphan_expires(&sim, &m, &mut e);
}

/// An hour ahead: held, then admitted once that hour has passed.
fn step_an_event_from_the_future_comes_in_when_its_time_comes(
    sim: &Sim,
    m: &passerelle_core::config::Mechanism,
    engine: &mut Engine,
) {
    let nurse = sim.node("nurse").unwrap_or_else(|x| panic!("{x}")).clone();
    let profile = mdm_profile_change(&nurse.key());
    let mut ahead = Forger::new(
        &nurse,
        sim.mechanism_id(),
        1,
        now() + time::Duration::hours(1),
    );
    let future = ahead
        .next(
            m,
            Kind::MapChange { org: "mdm".into() },
            None,
            vec![],
            &[],
            &profile,
        )
        .unwrap_or_else(|x| panic!("{x}"));
    let report = engine
        .receive(std::slice::from_ref(&future), now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(report.held.len(), 1, "{report:?}");
    let report = engine.retry_held(now()).unwrap_or_else(|x| panic!("{x}"));
    assert!(report.admitted.is_empty(), "not yet: {report:?}");
    let later = now() + time::Duration::minutes(61);
    let report = engine.retry_held(later).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(report.admitted, vec![future.id()], "{report:?}");
    assert_eq!(engine.store().log_counts().unwrap_or_default().held, 0);
}

/// The delegate's seq 2 arrives without seq 1: held, and admitted with it when it comes. On
/// another node a seq 5 whose predecessors never come: after the expiry the hold is empty again.
fn step_a_gap_fills_and_an_orphan_expires(
    sim: &Sim,
    m: &passerelle_core::config::Mechanism,
    e: &mut [Engine],
) {
    let delegate = sim
        .node("delegate")
        .unwrap_or_else(|x| panic!("{x}"))
        .clone();
    let mut gap = Forger::new(&delegate, sim.mechanism_id(), 1, now());
    let dpe_change = |f: &mut Forger, body: &[u8]| {
        f.next(
            m,
            Kind::MapChange { org: "dpe".into() },
            None,
            vec![],
            &[],
            body,
        )
        .unwrap_or_else(|x| panic!("{x}"))
    };
    let first = dpe_change(&mut gap, b"x");
    let second = dpe_change(&mut gap, b"y");
    let report = e[1]
        .receive(std::slice::from_ref(&second), now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(report.held.len(), 1, "{report:?}");
    let report = e[1]
        .receive(&[first], now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(report.admitted.len(), 2, "the gap filled: {report:?}");
    let mut gap = Forger::new(&delegate, sim.mechanism_id(), 1, now());
    gap.seq = 5;
    let orphan = dpe_change(&mut gap, b"z");
    e[2].receive(&[orphan], now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(e[2].store().log_counts().unwrap_or_default().held, 1);
    let expiry = passerelle_core::limits::HELD_EXPIRY_MS;
    let after = now() + time::Duration::milliseconds(i64::try_from(expiry).unwrap_or(0) + 1000);
    e[2].retry_held(after).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(
        e[2].store().log_counts().unwrap_or_default().held,
        0,
        "expired"
    );
}

/// Issue 13: the open referrals of a box (and those of any one status) are read from an index
/// keyed by status, which follows every step on both sides and is built again on open when
/// it does not match the referrals held (a store from before it, or one restored from such a
/// backup).
#[test]
fn the_status_and_activity_indexes_follow_every_step_and_are_built_again_when_missing() {
    let (sim, dir, mut e) = scenario();
    let sent = three_referrals_one_acknowledged_one_declined(&mut e);
    let ids = |engine: &Engine, outbox: bool, which: Which, limit: usize| -> Vec<String> {
        engine
            .referrals(outbox, which, limit, false, now())
            .unwrap_or_else(|x| panic!("{x}"))
            .into_iter()
            .map(|v| v.id)
            .collect()
    };
    let hex = |i: usize| sent[i].to_hex();
    let check = |engine: &Engine, outbox: bool| {
        // Newest first: the third referral was sent last.
        assert_eq!(
            ids(engine, outbox, Which::Open, usize::MAX),
            [hex(2), hex(0)]
        );
        assert_eq!(
            ids(engine, outbox, Which::Status(Status::Declined), 9),
            [hex(1)]
        );
        assert_eq!(
            ids(engine, outbox, Which::Status(Status::Sent), 9),
            [hex(2)]
        );
        assert_eq!(
            ids(engine, outbox, Which::Status(Status::Acknowledged), 9),
            [hex(0)]
        );
        assert_eq!(
            ids(engine, outbox, Which::All, usize::MAX),
            [hex(2), hex(1), hex(0)]
        );
        assert_eq!(ids(engine, outbox, Which::All, 2), [hex(2), hex(1)]);
        assert_eq!(ids(engine, outbox, Which::Open, 1), [hex(2)]);
        // The other box of the same organisation holds none of them.
        assert!(ids(engine, !outbox, Which::Open, usize::MAX).is_empty());
    };
    check(&e[0], true);
    check(&e[2], false);
    // A bystander's node indexes the clear facts too (its own boxes stay empty).
    assert!(ids(&e[3], true, Which::Open, usize::MAX).is_empty());

    // The nurse's store loses its index (as a store written before it): opening builds it
    // again, and the lists are as before.
    drop(e.remove(2));
    drop_tables(&dir.path().join("nurse.redb"), &["referrals_by_status-1"]);
    let nurse = sim
        .engine("nurse", dir.path(), false, now())
        .unwrap_or_else(|x| panic!("{x}"));
    check(&nurse, false);

    // The case list reads the most recently active first and stops at its limit: the
    // declined referral's case moved last, then the acknowledged one's.
    let names = |engine: &Engine, limit: usize| -> Vec<String> {
        engine
            .cases(None, limit)
            .unwrap_or_else(|x| panic!("{x}"))
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    let order = ["Badr B.", "Amal B.", "Chaima B."];
    assert_eq!(names(&e[0], usize::MAX), order);
    assert_eq!(names(&e[0], 2), order[..2]);
    let found = e[0]
        .cases(Some("chaima"), 5)
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(found.len(), 1);
    // Aïcha's store loses both indexes: opening builds them again.
    drop(e.remove(0));
    drop_tables(
        &dir.path().join("aicha.redb"),
        &["referrals_by_status-1", "cases_by_activity-1"],
    );
    let aicha = sim
        .engine("aicha", dir.path(), false, now())
        .unwrap_or_else(|x| panic!("{x}"));
    check(&aicha, true);
    assert_eq!(names(&aicha, usize::MAX), order);
}

/// Aïcha refers Amal, Badr and Chaima to the nurse, who acknowledges the first and declines
/// the second; returns the referrals in the order sent.
fn three_referrals_one_acknowledged_one_declined(e: &mut [Engine]) -> Vec<EventId> {
    let mut sent = Vec::new();
    for name in ["Amal", "Badr", "Chaima"] {
        let mut data = boy();
        data.case_type = "general".into();
        data.person.first_name = Some(name.into());
        let case = e[0]
            .open_case(data, "aicha", now())
            .unwrap_or_else(|x| panic!("{x}"));
        sent.push(
            e[0].send_referral(health_referral(case), "aicha", now())
                .unwrap_or_else(|x| panic!("{x}")),
        );
    }
    sync(e);
    e[2].referral_step(
        sent[0],
        Step::new(Transition::Acknowledge, ""),
        "nurse",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    let decline = Step {
        reason: Some("no_capacity".into()),
        ..Step::new(Transition::Decline, "full this week")
    };
    e[2].referral_step(sent[1], decline, "nurse", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(e);
    sent
}

/// Deletes tables of a store that is not open (as a store written before they existed).
fn drop_tables(path: &std::path::Path, names: &[&str]) {
    let db = redb::Database::open(path).unwrap_or_else(|x| panic!("{x}"));
    let tx = db.begin_write().unwrap_or_else(|x| panic!("{x}"));
    for name in names {
        // The key and value types do not matter to a deletion.
        let table: redb::TableDefinition<u64, ()> = redb::TableDefinition::new(name);
        assert!(
            tx.delete_table(table).unwrap_or_else(|x| panic!("{x}")),
            "{name}"
        );
    }
    tx.commit().unwrap_or_else(|x| panic!("{x}"));
}
