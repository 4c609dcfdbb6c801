//! The harness's own tests: panics are caught and kept, runs are reproducible, and the
//! generated seeds reach past the first checks of their targets.

use super::*;

#[test]
fn a_panic_is_caught_with_its_location_and_the_campaign_keeps_going() {
    let canary = target("canary").map(|t| t as &Target);
    let Some(canary) = canary else {
        panic!("the canary target exists");
    };
    let caught = execute(canary, b"canary!");
    let Err(p) = caught else {
        panic!("the canary input panics: {caught:?}");
    };
    assert!(p.message.contains("the canary sang"), "{p}");
    assert!(p.location.contains("targets.rs"), "{p}");
    assert!(execute(canary, b"a song").is_ok());
    // The mutator finds the crash from a harmless seed (the token is in its dictionary) and
    // keeps one input per panic location, whatever the number of panicking inputs.
    let report = run(
        canary,
        &[b"a song".to_vec()],
        1,
        &Budget {
            execs: Some(20_000),
            deadline: None,
        },
        None,
    );
    assert_eq!(report.execs, 20_000);
    assert_eq!(report.crashes.len(), 1, "{report:?}");
    assert!(report.panics >= 1);
    assert!(report.crashes[0].input.starts_with(b"canary"));
    assert!(execute(canary, &report.crashes[0].input).is_err());
}

#[test]
fn the_same_seed_gives_the_same_campaign() {
    let Some(t) = target("sync-request") else {
        panic!("the target exists");
    };
    let seeds = vec![
        crate::sync::encode(&crate::sync::Request::Want { ranges: vec![] })
            .expect("an empty Want encodes"),
        vec![0, 2, 0, 0],
    ];
    let budget = Budget {
        execs: Some(3_000),
        deadline: None,
    };
    let a = run(t, &seeds, 42, &budget, None);
    let b = run(t, &seeds, 42, &budget, None);
    assert_eq!((a.corpus, a.outcomes), (b.corpus, b.outcomes));
    assert!(a.outcomes > 2, "mutations find new outcomes: {a:?}");
}

#[test]
fn frames_split_and_join() {
    let joined = targets::join_frames([&b"ab"[..], &b""[..], &b"xyz"[..]]);
    assert_eq!(
        targets::frames(&joined),
        vec![&b"ab"[..], &b""[..], &b"xyz"[..]]
    );
    // A frame cut short ends the list.
    assert_eq!(targets::frames(&joined[..joined.len() - 1]).len(), 2);
}

#[test]
fn the_map_base_document_holds_the_sample_profile() -> Result<(), crate::sim::SimError> {
    let mut doc = automerge::AutoCommit::new();
    let change = automerge::Change::from_bytes(targets::MAP_BASE_CHANGE.to_vec())
        .map_err(|e| crate::sim::SimError::Other(e.to_string()))?;
    doc.apply_changes([change])
        .map_err(|e| crate::sim::SimError::Other(e.to_string()))?;
    let profile = crate::map::read(&doc);
    assert_eq!(profile.map(|p| p.org), Some("crt".to_string()));
    Ok(())
}

#[test]
fn generated_seeds_run_clean_and_get_past_the_first_check() -> Result<(), crate::sim::SimError> {
    let seeds = seeds::generate()?;
    for t in TARGETS.iter().filter(|t| t.in_all) {
        let inputs = seeds.get(t.name).cloned().unwrap_or_default();
        assert!(!inputs.is_empty(), "{} has seeds", t.name);
        // An input that stops at the very first check: garbage.
        let garbage = execute(t, b"\xff\xff\xff\xff garbage");
        for input in &inputs {
            let outcome = execute(t, input);
            assert!(outcome.is_ok(), "{}: a seed panicked: {outcome:?}", t.name);
            assert_ne!(
                outcome.ok(),
                garbage.clone().ok(),
                "{}: a seed goes further than garbage",
                t.name
            );
        }
    }
    Ok(())
}

#[test]
fn the_automerge_fixup_makes_a_mutated_snapshot_pass_its_checksum() {
    let mut doc = automerge::AutoCommit::new();
    if let Ok(change) = automerge::Change::from_bytes(targets::MAP_BASE_CHANGE.to_vec()) {
        let _ = doc.apply_changes([change]);
    }
    let saved = doc.save();
    let mut damaged = saved.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    damaged.extend_from_slice(b"more");
    let checksum_error = |bytes: &[u8]| {
        automerge::AutoCommit::load(bytes)
            .err()
            .is_some_and(|e| e.to_string().contains("checksum"))
    };
    assert!(
        checksum_error(&damaged),
        "the damage is caught by the checksum"
    );
    let Some(t) = target("map-snapshot") else {
        panic!("the target exists");
    };
    let Some(fixup) = t.fixup else {
        panic!("the snapshot target repairs checksums");
    };
    let mut repaired = saved.clone();
    fixup(&mut repaired);
    assert_eq!(repaired, saved, "a sound chunk is left as it is");
    let mut repaired = damaged;
    fixup(&mut repaired);
    assert!(!checksum_error(&repaired), "the repaired chunk passes");
}

/// The configuration documents a target once panicked on (`shared/fuzz/crashers/config-document/`):
/// a validity period too long to carry over to the next version, a deadline that overflows a
/// referral's date. Both are refused now, with the field named.
#[test]
fn overflowing_configuration_dates_are_refused_not_panicked() {
    let Some(t) = target("config-document") else {
        panic!("the target exists");
    };
    let validity =
        include_bytes!("../../fuzz/crashers/config-document/next-version-validity-overflows.toml");
    let deadline =
        include_bytes!("../../fuzz/crashers/config-document/deadline-overflows-the-date.toml");
    for input in [&validity[..], &deadline[..]] {
        assert!(execute(t, input).is_ok());
    }
    let m = crate::config::Mechanism::from_bytes(validity).map_err(|e| e.to_string());
    let Ok(m) = m else {
        panic!("a long validity is valid: {m:?}");
    };
    let text = String::from_utf8_lossy(validity);
    let next = crate::config::template::next_version(&text, &m, &[], targets::now());
    assert!(
        next.as_ref()
            .is_err_and(|e| e.to_string().contains("expires_at")),
        "{next:?}"
    );
    let refused = crate::config::Mechanism::from_bytes(deadline).map(|_| ());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("accept_hours")),
        "{refused:?}"
    );
}
