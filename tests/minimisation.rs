//! Data protection (issue 12). Minimisation, judged by the receiver's key: after referrals with several
//! `--share` choices, every ciphertext the receiving organisation holds is opened with its own
//! epoch keys, and what it reads is exactly the fields chosen plus the consent facts — no other
//! field of the person, no guardian's name, no caseworker's explanation, no case note. Erasure
//! and retention: every node, one of them offline during the erasure, drops the bodies of the
//! case's events and keeps the headers and clear facts.

use std::collections::BTreeMap;

use passerelle_core::engine::{Engine, ReferralRequest};
use passerelle_core::event::{Kind, Urgency};
use passerelle_core::payload::{self, CaseData, Consent, Person, ReferralPayload};

use crate::events::{now, scenario, sync};

/// Every text field of the case holds a value of its own, to be looked for in the bytes.
fn planted_case(tag: &str) -> CaseData {
    let v = |field: &str| Some(format!("canary-{tag}-{field}"));
    CaseData {
        case_type: "general".into(),
        site: "medenine".into(),
        person: Person {
            first_name: v("first_name"),
            last_name: v("last_name"),
            age: Some(29),
            date_of_birth: Some("1997-03-04".into()),
            sex: v("sex"),
            nationality: v("nationality"),
            languages: vec![format!("canary-{tag}-languages")],
            phone: v("phone"),
            location: v("location"),
            health: v("health"),
            protection: v("protection"),
            documents: v("documents"),
        },
        needs: vec!["health".into()],
        vulnerabilities: vec![format!("canary-{tag}-vulnerabilities")],
        consent: Consent {
            given: true,
            guardian_given: Some(true),
            guardian_name: v("guardian_name"),
            explained_by: format!("canary-{tag}-explained_by"),
            explained: format!("canary-{tag}-explained"),
            recorded_at: "2026-11-27T09:00:00Z".into(),
            scope_orgs: vec!["mdm".into()],
            scope_categories: vec!["health".into()],
        },
        notes: format!("canary-{tag}-notes"),
    }
}

/// The fields a case file holds, by their `--share` names, with the planted text of each.
fn planted_values(data: &CaseData) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = payload::SHAREABLE_FIELDS
        .iter()
        .filter_map(|f| match *f {
            "needs" => None,
            "vulnerabilities" => Some((f.to_string(), data.vulnerabilities.join(", "))),
            other => data.person.field(other).map(|v| (other.to_string(), v)),
        })
        .collect();
    let c = &data.consent;
    out.insert(
        "guardian_name".into(),
        c.guardian_name.clone().unwrap_or_default(),
    );
    out.insert("explained_by".into(), c.explained_by.clone());
    out.insert("explained".into(), c.explained.clone());
    out.insert("notes".into(), data.notes.clone());
    out
}

/// Every payload `org`'s epoch keys open among the events `engine` holds, with its plaintext.
fn readable_by(engine: &Engine, keys: &passerelle_core::keyfiles::OrgKeys) -> Vec<(Kind, Vec<u8>)> {
    let mut out = Vec::new();
    for event in crate::events::all_events(std::slice::from_ref(engine)) {
        let h = event.header();
        let (Some(epoch), Some(body)) = (h.epoch_for(&keys.org), event.body()) else {
            continue;
        };
        let identity = keys
            .epochs
            .iter()
            .find(|e| e.epoch == epoch)
            .unwrap_or_else(|| panic!("{} holds epoch {epoch}", keys.org));
        let plain = payload::open(body, &identity.identity)
            .unwrap_or_else(|e| panic!("addressed to {} but does not open: {e}", keys.org));
        out.push((h.kind.clone(), plain));
    }
    out
}

#[test]
fn the_receiver_decrypts_exactly_the_fields_shared_and_the_consent_facts() {
    let (sim, _dir, mut e) = scenario();
    let choices: [&[&str]; 4] = [
        &["first_name", "age", "health"],
        &[],
        &["last_name", "phone", "documents", "vulnerabilities"],
        &[
            "languages",
            "location",
            "protection",
            "date_of_birth",
            "sex",
            "nationality",
        ],
    ];
    // By the note each referral carries (chosen, so readable).
    let mut sent: BTreeMap<String, (CaseData, Vec<String>)> = BTreeMap::new();
    for (i, choice) in choices.iter().enumerate() {
        let data = planted_case(&format!("c{i}"));
        let case = e[0]
            .open_case(data.clone(), "aicha", now())
            .unwrap_or_else(|x| panic!("open: {x}"));
        let share: Vec<String> = choice.iter().map(|s| s.to_string()).collect();
        let request = ReferralRequest {
            case,
            to_org: "mdm".into(),
            category: "health".into(),
            urgency: Urgency::Routine,
            share: share.clone(),
            note: format!("note chosen for c{i}"),
            emergency_override: None,
        };
        e[0].send_referral(request, "aicha", now())
            .unwrap_or_else(|x| panic!("send {choice:?}: {x}"));
        sent.insert(format!("note chosen for c{i}"), (data, share));
    }
    sync(&mut e);

    let mdm = sim.orgs.get("mdm").unwrap_or_else(|| panic!("mdm keys"));
    let read = readable_by(&e[2], mdm);
    let referrals: Vec<&Vec<u8>> = read
        .iter()
        .filter(|(k, _)| matches!(k, Kind::ReferralSend { .. }))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        referrals.len(),
        choices.len(),
        "one referral per choice reaches mdm"
    );
    assert!(
        read.iter()
            .all(|(k, _)| matches!(k, Kind::ReferralSend { .. })),
        "mdm can open nothing but the referrals: {:?}",
        read.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    for plain in &referrals {
        only_what_was_chosen(plain, &sent);
    }
}

/// One referral's plaintext holds the fields chosen and the consent facts, nothing else planted.
fn only_what_was_chosen(plain: &[u8], sent: &BTreeMap<String, (CaseData, Vec<String>)>) {
    let p: ReferralPayload = payload::decode(plain).unwrap_or_else(|x| panic!("{x}"));
    let (data, share) = sent
        .get(&p.note)
        .unwrap_or_else(|| panic!("a referral we sent: {}", p.note));
    let planted = planted_values(data);
    // The shared fields are exactly those chosen, with the case's values.
    let expected: BTreeMap<String, String> = share
        .iter()
        .map(|f| (f.clone(), planted[f].clone()))
        .collect();
    assert_eq!(p.shared, expected, "shared for {share:?}");
    // The consent facts, and nothing of the consent that names or describes anyone.
    assert_eq!(p.consent, data.consent.facts());
    assert!(p.consent.given && p.consent.guardian_given == Some(true));
    assert_eq!(p.consent.scope_orgs, vec!["mdm".to_string()]);
    // No planted value that was not chosen is anywhere in the plaintext.
    let text = String::from_utf8_lossy(plain);
    // (The age, 29, is too short to look for in bytes; the shared map covers it.)
    for (field, value) in planted.iter().filter(|(f, _)| *f != "age") {
        if share.contains(field) {
            assert!(text.contains(value.as_str()), "{field} was shared");
        } else {
            assert!(
                !text.contains(value.as_str()),
                "{field} was not shared but is readable"
            );
        }
    }
}

/// Every event of a case: its opening, case-level events, referrals and their steps.
fn case_event_ids(
    engine: &Engine,
    case: &passerelle_core::event::EventId,
) -> Vec<passerelle_core::event::EventId> {
    let s = engine.store();
    let mut ids = vec![*case];
    ids.extend(s.case_events(case).unwrap_or_else(|x| panic!("{x}")));
    for r in s.case_referrals(case).unwrap_or_else(|x| panic!("{x}")) {
        ids.push(r);
        ids.extend(s.referral_steps(&r).unwrap_or_else(|x| panic!("{x}")));
    }
    ids
}

/// Whether any event of the case still has a body on this engine; every header is still held.
fn holds_a_body(engine: &Engine, case: &passerelle_core::event::EventId) -> bool {
    case_event_ids(engine, case).iter().any(|id| {
        engine
            .store()
            .event(id)
            .unwrap_or_else(|x| panic!("{x}"))
            .unwrap_or_else(|| panic!("the header of {} stays", id.short()))
            .body()
            .is_some()
    })
}

/// Every file under `dir`, read raw, holds none of the planted values.
fn no_file_holds(dir: &std::path::Path, planted: &BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|x| panic!("{x}")) {
        let path = entry.unwrap_or_else(|x| panic!("{x}")).path();
        if path.is_dir() {
            no_file_holds(&path, planted);
        } else {
            file_holds_none(&path, planted);
        }
    }
}

/// The file's raw bytes hold none of the planted texts (the age, a bare number, aside).
fn file_holds_none(path: &std::path::Path, planted: &BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|x| panic!("{}: {x}", path.display()));
    for (field, value) in planted.iter().filter(|(f, _)| *f != "age") {
        let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
        assert!(!found, "{} holds the {field} in clear", path.display());
    }
}

fn referral_to_mdm(case: passerelle_core::event::EventId) -> ReferralRequest {
    ReferralRequest {
        case,
        to_org: "mdm".into(),
        category: "health".into(),
        urgency: Urgency::Urgent,
        share: vec!["first_name".into(), "health".into()],
        note: "chosen note".into(),
        emergency_override: None,
    }
}

#[test]
fn an_erased_case_loses_its_bodies_on_every_node_including_one_that_was_offline() {
    use passerelle_core::engine::{EngineError, Step};
    use passerelle_core::event::{EraseReason, Transition};
    let (_sim, dir, mut e) = scenario();
    let data = planted_case("erase");
    let case = e[0]
        .open_case(data.clone(), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    let referral = e[0]
        .send_referral(referral_to_mdm(case), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    e[2].referral_step(
        referral,
        Step::new(Transition::Accept, "seen"),
        "nurse",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    assert!(e.iter().all(|n| holds_a_body(n, &case)));

    // Only the case manager erases: the health partner cannot even read the case.
    let refused = e[2].erase_case(case, EraseReason::PersonAsked, "nurse", now());
    assert!(
        matches!(refused, Err(EngineError::NoCase(_))),
        "{refused:?}"
    );
    e[0].erase_case(case, EraseReason::PersonAsked, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(
        !holds_a_body(&e[0], &case),
        "the manager's node purges at once"
    );
    assert!(matches!(
        e[0].case(&case, now()),
        Err(EngineError::Erased { .. })
    ));
    assert!(e[0].cases(None, usize::MAX).unwrap_or_default().is_empty());
    let again = e[0].send_referral(referral_to_mdm(case), "aicha", now());
    assert!(again.is_err(), "no referral for an erased case");

    // The health partner syncs now; the delegate and the bystander were offline and catch up
    // later, from a peer that already dropped the bodies, or from one that had not.
    let (first, later) = e.split_at_mut(2);
    let erasure = crate::events::all_events(&first[..1]);
    later[0]
        .receive(&erasure, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(
        !holds_a_body(&later[0], &case),
        "mdm purged on receipt of the erasure"
    );
    // mdm completes the referral after the erasure: the step is stored without its body.
    later[0]
        .referral_step(
            referral,
            Step::new(Transition::Complete, "treated"),
            "nurse",
            now(),
        )
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(!holds_a_body(&later[0], &case));
    sync(&mut e);
    for (i, node) in e.iter().enumerate() {
        assert!(
            !holds_a_body(node, &case),
            "node {i} still holds a body of the erased case"
        );
        let record = node
            .store()
            .referral_record(&referral)
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("node {i} keeps the referral's clear facts"));
        assert_eq!(record.status, passerelle_core::fold::Status::Completed);
    }
    let timeline_kinds = case_event_ids(&e[3], &case).len();
    assert_eq!(
        timeline_kinds, 5,
        "open, referral, accept, erase, complete: headers all kept"
    );
    no_file_holds(dir.path(), &planted_values(&data));
}

#[test]
fn retention_purges_a_closed_case_on_every_node_and_no_sooner() {
    use passerelle_core::event::CaseAction;
    let (_sim, _dir, mut e) = scenario();
    let closed = e[0]
        .open_case(planted_case("closed"), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    e[0].send_referral(referral_to_mdm(closed), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    e[0].case_action(closed, CaseAction::Close, "done", None, "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    let open = e[0]
        .open_case(planted_case("open"), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    // The sample SOP keeps closed cases 1,825 days after their last activity.
    let day = time::Duration::days(1);
    for node in e.iter_mut() {
        let early = node
            .purge_due(now() + day * 1824)
            .unwrap_or_else(|x| panic!("{x}"));
        assert!(
            early.is_empty(),
            "nothing is due before the retention period ends"
        );
        assert!(holds_a_body(node, &closed));
    }
    for (i, node) in e.iter_mut().enumerate() {
        let due = node
            .purge_due(now() + day * 1826)
            .unwrap_or_else(|x| panic!("{x}"));
        assert_eq!(
            due,
            vec![closed],
            "node {i} purges the closed case, and only it"
        );
        assert!(!holds_a_body(node, &closed), "node {i}");
        assert!(holds_a_body(node, &open), "node {i}: an open case is kept");
    }
    assert!(matches!(
        e[0].case(&closed, now()),
        Err(passerelle_core::engine::EngineError::Erased { .. })
    ));
    assert!(e[0].case(&open, now()).is_ok());
}

/// The unix permission bits of a path.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|x| panic!("{}: {x}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The person's right to know: everything held about them, in their language (audited).
fn the_person_reads_everything_held_in_arabic(setup: &passerelle_tests::Setup, case: &str) {
    setup
        .node_run(
            "aicha",
            &["case", "export", case, "--out", "lina.html", "--lang", "ar"],
        )
        .expect_ok();
    assert_eq!(mode(&setup.file("lina.html")), 0o600);
    let page = setup.read("lina.html");
    for expected in [
        "dir=\"rtl\"",
        "ما نحتفظ به عنك",
        "Lina",
        "الاسم",
        "ما تلقته",
        "وافقت على الإحالة",
    ] {
        assert!(page.contains(expected), "the export lacks {expected:?}");
    }
    assert!(
        page.contains("fever and cough"),
        "all the person's data, health included"
    );
}

#[test]
fn the_command_line_echoes_no_value_writes_private_files_and_erases_a_case() {
    use passerelle_tests::{ReferralSend, mechanism};
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    // A wrongly typed field: the error names it, never the person's value.
    setup.write(
        "bad.json",
        r#"{"case_type":"general","site":"medenine","needs":["health"],
            "consent":{"given":true,"explained_by":"a","recorded_at":"2026-11-27T09:00:00Z"},
            "person":{"first_name":"Zainab-canary","age":"Zainab-canary-age"}}"#,
    );
    let refused = setup
        .node_run("aicha", &["case", "open", "--from", "bad.json"])
        .expect_refused("person.age");
    assert!(!refused.stderr.contains("canary"), "{}", refused.stderr);

    let case = setup.open_case("aicha", "Lina", "general");
    let referral = ReferralSend::new(&case, "mdm", "health").share("first_name");
    let sent = setup.send_referral("aicha", &referral).expect_ok().stdout;
    let shown = setup
        .node_run("aicha", &["referral", "show", sent.trim()])
        .expect_ok()
        .stdout;
    assert!(
        shown.contains("not shared") && shown.contains("phone"),
        "what mdm did not receive is named: {shown}"
    );
    setup
        .node_run("aicha", &["backup", "--out", "aicha.backup"])
        .expect_ok();
    setup
        .node_run("aicha", &["bundle", "export", "--out", "aicha.bundle"])
        .expect_ok();
    let data = setup.file("node-aicha");
    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in ["store.redb", "node.key", "node.toml"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for file in ["aicha.backup", "aicha.bundle"] {
        assert_eq!(mode(&setup.file(file)), 0o600, "{file}");
    }

    the_person_reads_everything_held_in_arabic(&setup, &case);

    // Only the case manager erases; the erasure is audited with its reason.
    let unknown = setup.node_run("aicha", &["case", "erase", &case, "--reason", "because"]);
    assert_eq!(unknown.code, Some(2), "a usage error");
    assert!(
        unknown.stderr.contains("person_asked"),
        "{}",
        unknown.stderr
    );
    setup
        .node_run(
            "aicha",
            &["case", "erase", &case, "--reason", "person_asked"],
        )
        .expect_ok();
    setup
        .node_run("aicha", &["case", "show", &case])
        .expect_refused("erased: the person asked");
    let audit = setup.node_run("aicha", &["audit"]).expect_ok();
    assert!(audit.stdout.contains("case.erase"), "{}", audit.stdout);
    assert!(audit.stdout.contains("case.export"), "{}", audit.stdout);
    let listed = setup.node_run("aicha", &["case", "list"]).expect_ok();
    assert!(!listed.stdout.contains("Lina"), "{}", listed.stdout);
}

/// Each referral's status and each event's verdict, as one node holds them.
fn fold_state(engine: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    for r in engine.store().referral_records().unwrap_or_default() {
        out.push(format!("{} {:?}", r.id.short(), r.status));
    }
    for e in crate::events::all_events(std::slice::from_ref(engine)) {
        let v = engine.store().verdict(&e.id()).unwrap_or_default();
        out.push(format!("{} {:?}", e.id().short(), v.map(|v| v.broken)));
    }
    out.sort();
    out
}

#[test]
fn a_withdrawal_withdraws_open_referrals_refuses_new_ones_and_drops_what_was_shared() {
    use passerelle_core::engine::{EngineError, Step};
    use passerelle_core::event::Transition;
    use passerelle_core::fold::{Rule, Status};
    let (sim, dir, mut e) = scenario();
    let data = planted_case("withdraw");
    let case = e[0]
        .open_case(data.clone(), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    let first = e[0]
        .send_referral(referral_to_mdm(case), "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    e[2].referral_step(
        first,
        Step::new(Transition::Acknowledge, "seen"),
        "nurse",
        now(),
    )
    .unwrap_or_else(|x| panic!("{x}"));
    sync(&mut e);
    assert!(
        e[2].referral(&first, now())
            .is_ok_and(|r| r.shared.contains_key("first_name"))
    );

    // A category that is sensitive is never named in clear.
    let sensitive = e[0].withdraw_consent(case, vec![], vec!["gbv".into()], "aicha", now());
    assert!(sensitive.is_err(), "{sensitive:?}");
    let (_, withdrawn) = e[0]
        .withdraw_consent(case, vec!["mdm".into()], vec![], "aicha", now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(withdrawn.len(), 1, "the open referral to mdm is withdrawn");
    sync(&mut e);
    for (i, node) in e.iter().enumerate() {
        let r = node.store().referral_record(&first).unwrap_or_default();
        assert_eq!(r.map(|r| r.status), Some(Status::Withdrawn), "node {i}");
        let send = node.store().event(&first).unwrap_or_default();
        assert!(
            send.is_some_and(|s| s.body().is_none()),
            "node {i} dropped the shared fields"
        );
    }
    let view = e[2]
        .referral(&first, now())
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(
        view.shared.is_empty() && !view.readable,
        "mdm reads nothing shared any more"
    );

    // A new referral it covers is refused, with its rule; an allowed override goes through.
    let refused = e[0].send_referral(referral_to_mdm(case), "aicha", now());
    assert!(
        matches!(refused, Err(EngineError::Rule(Rule::ConsentWithdrawn))),
        "{refused:?}"
    );
    let overridden = ReferralRequest {
        emergency_override: Some("life at risk, the doctor must see him now".into()),
        ..referral_to_mdm(case)
    };
    let emergency = e[0]
        .send_referral(overridden, "aicha", now())
        .unwrap_or_else(|x| panic!("override: {x}"));
    sync(&mut e);
    let r = e[2].store().referral_record(&emergency).unwrap_or_default();
    assert_eq!(
        r.map(|r| r.status),
        Some(Status::Sent),
        "mdm judges the override valid"
    );
    assert!(
        holds_a_body(&e[0], &case),
        "the case itself is kept: only what was shared goes"
    );

    // A fresh node of mdm that receives the partner's events before the case's judges alike.
    a_late_node_judges_alike(&sim, dir.path(), &e, &first);
}

/// A fresh node of mdm fed the partner's events before the case's reaches the same verdicts,
/// statuses and dropped bodies as the one that saw them in order.
fn a_late_node_judges_alike(
    sim: &passerelle_core::sim::Sim,
    dir: &std::path::Path,
    e: &[Engine],
    first: &passerelle_core::event::EventId,
) {
    let all = crate::events::all_events(e);
    let (theirs, ours): (Vec<_>, Vec<_>) = all.into_iter().partition(|ev| {
        ev.header().author == sim.node("nurse").map(|n| n.key()).unwrap_or_default()
    });
    let late_dir = dir.join("late");
    std::fs::create_dir_all(&late_dir).unwrap_or_else(|x| panic!("{x}"));
    let mut late = sim
        .engine("nurse", &late_dir, true, now())
        .unwrap_or_else(|x| panic!("{x}"));
    late.receive(&theirs, now())
        .unwrap_or_else(|x| panic!("{x}"));
    late.receive(&ours, now()).unwrap_or_else(|x| panic!("{x}"));
    late.retry_held(now()).unwrap_or_else(|x| panic!("{x}"));
    assert_eq!(fold_state(&late), fold_state(&e[2]));
    assert!(
        late.store()
            .event(first)
            .unwrap_or_default()
            .is_some_and(|s| s.body().is_none())
    );
}

/// A referral as `node` shows it, in JSON.
/// The referral as `node` shows it; `null` while it has not reached that node yet (a wait
/// then goes on polling rather than fail on the first look).
fn referral_json(setup: &passerelle_tests::Setup, node: &str, id: &str) -> serde_json::Value {
    let out = setup.node_run(node, &["referral", "show", &id[..12], "--json"]);
    if !out.ok() && out.stderr.contains("no referral") {
        return serde_json::Value::Null;
    }
    setup.node_json(node, &["referral", "show", &id[..12], "--json"])
}

/// Aïcha opens a case for `first_name` and refers it to mdm, sharing the first name; returns
/// once the nurse's running node reads it: (case, referral).
fn referred_to_mdm(setup: &passerelle_tests::Setup, first_name: &str) -> (String, String) {
    use passerelle_tests::{ReferralSend, wait_for};
    let case = setup.open_case("aicha", first_name, "general");
    let referral = ReferralSend::new(&case[..12], "mdm", "health").share("first_name");
    let referral = setup
        .send_referral("aicha", &referral)
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    wait_for(30, "the referral readable at the nurse's node", || {
        let r = referral_json(setup, "nurse", &referral);
        (r["shared"]["first_name"] == first_name).then_some(())
    });
    (case, referral)
}

#[test]
fn an_erasure_reaches_running_daemons_and_a_node_that_was_offline_by_bundle() {
    use passerelle_tests::{Daemon, mechanism, wait_for};
    let setup = mechanism(
        &["mas", "mdm", "iom"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("iom1", "iom")],
        &[],
    );
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let (case, referral) = referred_to_mdm(&setup, "Canaryname");
    // The bystander is offline: a bundle made now, with every body, waits on a USB stick.
    setup
        .node_run("aicha", &["bundle", "export", "--out", "before.bundle"])
        .expect_ok();

    setup
        .node_run(
            "aicha",
            &["case", "erase", &case[..12], "--reason", "person_asked"],
        )
        .expect_ok();
    wait_for(30, "the nurse's node to drop what was shared", || {
        let r = referral_json(&setup, "nurse", &referral);
        (r["readable"] == false && r["shared"].as_object().is_some_and(|s| s.is_empty()))
            .then_some(())
    });
    setup
        .node_run("aicha", &["bundle", "export", "--out", "after.bundle"])
        .expect_ok();
    hub.stop();
    nurse.stop();

    // The bystander catches up later: first the old bundle (bodies included), then the new.
    for bundle in ["before.bundle", "after.bundle"] {
        setup
            .node_run("iom1", &["bundle", "import", bundle])
            .expect_ok();
    }
    let states: Vec<String> = ["aicha", "nurse", "iom1"]
        .iter()
        .map(|n| {
            let r = referral_json(&setup, n, &referral);
            format!("{} {}", r["status"], r["shared"])
        })
        .collect();
    assert!(states.iter().all(|s| *s == states[0]), "{states:?}");
    setup
        .node_run("aicha", &["case", "show", &case[..12]])
        .expect_refused("erased");
    // No file of any node holds the person's name, and the stores hold no body of the case.
    for node in ["aicha", "nurse", "iom1"] {
        let planted = BTreeMap::from([("first_name".to_string(), "Canaryname".to_string())]);
        no_file_holds(&setup.file(&format!("node-{node}")), &planted);
        let store =
            passerelle_core::store::Store::open(&setup.file(&format!("node-{node}/store.redb")))
                .unwrap_or_else(|x| panic!("{node}: {x}"));
        for id in [&case, &referral] {
            let id = passerelle_core::event::EventId::from_hex(id)
                .unwrap_or_else(|| panic!("an event id: {id}"));
            let event = store.event(&id).unwrap_or_default();
            assert!(
                event.is_some_and(|e| e.body().is_none()),
                "{node} keeps a body"
            );
        }
    }
}

/// The planted texts of a case that are its own (not the age or the date of birth, which
/// other bytes may spell by chance).
fn canaries(data: &CaseData) -> BTreeMap<String, String> {
    planted_values(data)
        .into_iter()
        .filter(|(_, v)| v.contains("canary"))
        .collect()
}

/// `text` holds none of the planted values; `what` names where it came from.
fn text_holds_none(what: &str, text: &str, planted: &BTreeMap<String, String>) {
    for (field, value) in planted {
        assert!(
            !text.contains(value.as_str()),
            "{what} shows the {field}:\n{text}"
        );
    }
}

/// Runs `passerelle` at `node`, logging at trace.
fn trace_at(setup: &passerelle_tests::Setup, node: &str, args: &[&str]) -> passerelle_tests::Run {
    let data = format!("node-{node}");
    let mut all = vec!["--data-dir", data.as_str(), "--user", "tester"];
    all.extend_from_slice(args);
    passerelle_tests::run_env(setup.path(), &all, &[("RUST_LOG", "trace")])
}

/// A wrongly typed field, on the command line and in an API body: the refusal names the field
/// and the problem, never a value.
fn refusals_name_no_value(
    setup: &passerelle_tests::Setup,
    hub: &passerelle_tests::Daemon,
    data: &CaseData,
    planted: &BTreeMap<String, String>,
) {
    let mut bad = serde_json::to_value(data).unwrap_or_else(|x| panic!("{x}"));
    bad["person"]["age"] = serde_json::json!("canary-k-age-as-text");
    bad["consent"]["given"] = serde_json::json!("canary-k-given-as-text");
    setup.write("bad.json", &bad.to_string());
    let refused = trace_at(setup, "aicha", &["case", "open", "--from", "bad.json"]);
    let named = |text: &str| {
        text.contains("wrong type")
            && (text.contains("person.age") || text.contains("consent.given"))
    };
    assert!(named(&refused.stderr), "{}", refused.stderr);
    let mut with_bad = planted.clone();
    with_bad.insert("bad age".into(), "canary-k-age-as-text".into());
    with_bad.insert("bad consent".into(), "canary-k-given-as-text".into());
    let said = format!("{}{}", refused.stdout, refused.stderr);
    text_holds_none("the refusal", &said, &with_bad);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let body = serde_json::json!({"user": "t", "request": {"op": "case_open", "data": bad}});
    let mut answer = agent
        .post(&format!("http://{}/api/v1/rpc", hub.api))
        .header("Authorization", &format!("Bearer {}", hub.token()))
        .send_json(&body)
        .unwrap_or_else(|x| panic!("the API: {x}"));
    let answer = answer
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|x| panic!("{x}"));
    assert!(named(&answer), "a refusal naming the field: {answer}");
    text_holds_none("the API's refusal", &answer, &with_bad);
}

/// After the daemons stopped: no backup, bundle, trace log or file of any node holds a canary.
fn nothing_written_holds_a_canary(
    setup: &passerelle_tests::Setup,
    planted: &BTreeMap<String, String>,
) {
    for node in ["aicha", "nurse", "iom1"] {
        for file in [format!("{node}.backup"), format!("{node}.bundle")] {
            file_holds_none(&setup.file(&file), planted);
        }
        let log = setup.read(&format!("{node}.log"));
        assert!(log.contains("TRACE"), "{node} logged at trace");
        text_holds_none(&format!("{node}'s trace log"), &log, planted);
        no_file_holds(&setup.file(&format!("node-{node}")), planted);
    }
}

/// What a node outside the recipients shows of the case and its referral: no planted text.
fn a_bystander_shows_none(
    setup: &passerelle_tests::Setup,
    referral: &str,
    planted: &BTreeMap<String, String>,
) {
    for args in [
        &["case", "list"][..],
        &["referral", "list", "--json"],
        &["referral", "show", &referral[..12], "--json"],
        &["status"],
        &["audit"],
    ] {
        let out = trace_at(setup, "iom1", args).expect_ok();
        text_holds_none(&format!("iom1 {args:?}"), &out.stdout, planted);
    }
}

#[test]
fn a_canary_in_every_field_shows_in_no_error_log_bundle_backup_or_bystander() {
    use passerelle_tests::{Daemon, ReferralSend, mechanism, wait_for};
    let setup = mechanism(
        &["mas", "mdm", "iom"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("iom1", "iom")],
        &[],
    );
    let hub = Daemon::start_logged(setup.path(), "aicha", &[], &[], "trace");
    let nurse = Daemon::start_logged(setup.path(), "nurse", &[&hub.addr], &[], "trace");
    let iom = Daemon::start_logged(setup.path(), "iom1", &[&hub.addr], &[], "trace");
    let at = |node: &str, args: &[&str]| trace_at(&setup, node, args);
    let data = planted_case("k");
    let planted = canaries(&data);
    setup.write(
        "canary.json",
        &serde_json::to_string(&data).unwrap_or_else(|x| panic!("{x}")),
    );
    let case = at("aicha", &["case", "open", "--from", "canary.json"])
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    text_holds_none("case open", &case, &planted);
    refusals_name_no_value(&setup, &hub, &data, &planted);

    // A referral sharing two fields with mdm; the nurse reads them, and notes a step.
    let referral = ReferralSend::new(&case[..12], "mdm", "health").share("first_name,health");
    let referral = at("aicha", &referral.args())
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    wait_for(30, "the referral readable at the nurse's node", || {
        let r = referral_json(&setup, "nurse", &referral);
        (r["shared"]["health"] == "canary-k-health").then_some(())
    });
    at("nurse", &["referral", "ack", &referral[..12]]).expect_ok();
    // The check below can fail: the case manager's own view shows every planted text.
    let own = at("aicha", &["case", "show", &case[..12], "--json"]).expect_ok();
    for value in planted.values() {
        assert!(
            own.stdout.contains(value.as_str()),
            "case show lacks {value}"
        );
    }
    wait_for(30, "the bystander to hold the referral", || {
        let r = referral_json(&setup, "iom1", &referral);
        (r["status"] == "acknowledged").then_some(())
    });

    a_bystander_shows_none(&setup, &referral, &planted);
    let audit = at("aicha", &["audit"]).expect_ok();
    text_holds_none("aicha's audit log", &audit.stdout, &planted);
    for node in ["aicha", "nurse", "iom1"] {
        at(node, &["backup", "--out", &format!("{node}.backup")]).expect_ok();
        at(
            node,
            &["bundle", "export", "--out", &format!("{node}.bundle")],
        )
        .expect_ok();
    }
    hub.stop();
    nurse.stop();
    iom.stop();
    nothing_written_holds_a_canary(&setup, &planted);
}

#[test]
fn a_withdrawal_reaches_running_daemons_and_a_node_that_was_offline_by_bundle() {
    use passerelle_tests::{Daemon, ReferralSend, mechanism, wait_for};
    let setup = mechanism(
        &["mas", "mdm", "iom"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("iom1", "iom")],
        &[],
    );
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let case = setup.open_case("aicha", "Withdrawer", "general");
    let to_mdm = ReferralSend::new(&case[..12], "mdm", "health").share("first_name");
    let first = setup
        .send_referral("aicha", &to_mdm)
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    wait_for(30, "the referral readable at the nurse's node", || {
        let r = referral_json(&setup, "nurse", &first);
        (r["shared"]["first_name"] == "Withdrawer").then_some(())
    });
    setup
        .node_run("aicha", &["bundle", "export", "--out", "before.bundle"])
        .expect_ok();

    // The person withdraws consent for mdm: the open referral is withdrawn on both daemons,
    // and what the nurse's node read is gone.
    setup
        .node_run(
            "aicha",
            &["case", "withdraw-consent", &case[..12], "--org", "mdm"],
        )
        .expect_ok();
    wait_for(30, "the nurse's node to see the withdrawal", || {
        let r = referral_json(&setup, "nurse", &first);
        (r["status"] == "withdrawn" && r["shared"].as_object().is_some_and(|s| s.is_empty()))
            .then_some(())
    });
    // A new referral in its scope is refused, with its rule; an override is allowed, audited.
    setup
        .send_referral("aicha", &to_mdm)
        .expect_refused("withdrew consent");
    let mut args = to_mdm.args();
    args.extend(["--emergency-override", "life at risk"]);
    let emergency = setup
        .node_run("aicha", &args)
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    wait_for(30, "the override at the nurse's node", || {
        let r = referral_json(&setup, "nurse", &emergency);
        (r["status"] == "sent" && r["invalid"].is_null()).then_some(())
    });
    let audit = setup.node_run("aicha", &["audit"]).expect_ok().stdout;
    for action in ["case.consent_withdrawn", "referral.send.emergency_override"] {
        assert!(
            audit.contains(action),
            "aicha's audit lacks {action}: {audit}"
        );
    }
    let audit = setup.node_run("nurse", &["audit"]).expect_ok().stdout;
    assert!(
        audit.contains("case.consent_withdrawn.received"),
        "the nurse's node audits the withdrawal it received: {audit}"
    );
    setup
        .node_run("aicha", &["bundle", "export", "--out", "after.bundle"])
        .expect_ok();
    hub.stop();
    nurse.stop();

    the_offline_node_catches_up_alike(&setup, &first, &emergency);
}

/// The offline node imports the bundles, old first: each referral ends with one status and
/// verdict everywhere, and the offline node keeps no body of the one the withdrawal covers.
fn the_offline_node_catches_up_alike(
    setup: &passerelle_tests::Setup,
    first: &str,
    emergency: &str,
) {
    // The offline node catches up, old bundle first: it ends where the others are.
    for bundle in ["before.bundle", "after.bundle"] {
        setup
            .node_run("iom1", &["bundle", "import", bundle])
            .expect_ok();
    }
    // Each referral has one status and verdict everywhere (the bystander reads no field).
    for referral in [first, emergency] {
        let states: Vec<String> = ["aicha", "nurse", "iom1"]
            .iter()
            .map(|n| {
                let r = referral_json(setup, n, referral);
                format!("{} {}", r["status"], r["invalid"])
            })
            .collect();
        assert!(states.iter().all(|s| *s == states[0]), "{states:?}");
    }
    assert_eq!(
        referral_json(setup, "nurse", emergency)["shared"]["first_name"],
        "Withdrawer",
        "the override shares what it chose"
    );
    let store = passerelle_core::store::Store::open(&setup.file("node-iom1/store.redb"))
        .unwrap_or_else(|x| panic!("{x}"));
    let first = passerelle_core::event::EventId::from_hex(first)
        .unwrap_or_else(|| panic!("an event id: {first}"));
    let send = store.event(&first).unwrap_or_else(|x| panic!("{x}"));
    assert!(
        send.is_some_and(|e| e.body().is_none()),
        "the offline node dropped what was shared under the withdrawn consent"
    );
}

/// The environment that runs a program two days ahead of the real clock (libfaketime).
fn two_days_later() -> [(&'static str, &'static str); 2] {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(LIB).exists(),
        "{LIB} is missing: install Debian's faketime (.ci/run does)"
    );
    [("LD_PRELOAD", LIB), ("FAKETIME", "+2d")]
}

#[test]
fn retention_purges_on_running_daemons_and_on_a_node_that_was_offline() {
    use passerelle_tests::{Daemon, mechanism_edited, run_env, wait_for};
    let setup = mechanism_edited(
        &["mas", "mdm", "iom"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("iom1", "iom")],
        &[],
        |doc| doc.replace("retention_days = 1825", "retention_days = 1"),
    );
    assert!(setup.read("v1.toml").contains("retention_days = 1\n"));
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let (case, referral) = referred_to_mdm(&setup, "Retained");
    setup
        .node_run("aicha", &["case", "close", &case[..12]])
        .expect_ok();
    // Retention runs from the clear record: the nurse's node must hold the closure too.
    let events = |node: &str| setup.node_json(node, &["status", "--json"])["events"].clone();
    wait_for(30, "the closure at the nurse's node", || {
        (events("nurse") == events("aicha")).then_some(())
    });
    setup
        .node_run("aicha", &["bundle", "export", "--out", "before.bundle"])
        .expect_ok();
    hub.stop();
    nurse.stop();

    // Two days later (retention: one day after closure), the daemons purge as they start.
    let later = two_days_later();
    let hub = Daemon::start_env(setup.path(), "aicha", &[], &[], &later);
    let nurse = Daemon::start_env(setup.path(), "nurse", &[&hub.addr], &[], &later);
    wait_for(30, "both daemons to purge the case", || {
        let gone = |node: &str| {
            let r = referral_json(&setup, node, &referral);
            r["readable"] == false && r["shared"].as_object().is_some_and(|s| s.is_empty())
        };
        (gone("aicha") && gone("nurse")).then_some(())
    });
    setup
        .node_run("aicha", &["case", "show", &case[..12]])
        .expect_refused("purged");
    hub.stop();
    nurse.stop();

    // The node that was offline gets the old bundle (every body) and purges once it runs.
    let at_iom1 = |args: &[&str]| {
        let mut all = vec!["--data-dir", "node-iom1", "--user", "tester"];
        all.extend_from_slice(args);
        run_env(setup.path(), &all, &later)
    };
    at_iom1(&["bundle", "import", "before.bundle"]).expect_ok();
    let iom = Daemon::start_env(setup.path(), "iom1", &[], &[], &later);
    wait_for(30, "the offline node to purge", || {
        let audit = at_iom1(&["audit"]);
        audit.stdout.contains("case.purge").then_some(())
    });
    iom.stop();
    for node in ["aicha", "nurse", "iom1"] {
        let planted = BTreeMap::from([("first_name".to_string(), "Retained".to_string())]);
        no_file_holds(&setup.file(&format!("node-{node}")), &planted);
        let audit = setup.node_run(node, &["audit"]).expect_ok().stdout;
        assert!(
            audit.contains("case.purge"),
            "{node} audits the purge: {audit}"
        );
    }
}
