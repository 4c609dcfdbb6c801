//! The fold gives the same state for every delivery order: referral before the determination
//! it depends on, concurrent accept and withdraw, steps before their referral, any batch sizes.
//! Checked on a node that can read the cases and on one that cannot.

use std::collections::BTreeMap;

use passerelle_core::engine::{Engine, Step};
use passerelle_core::event::{CaseAction, Event, Transition};
use passerelle_core::sim::Sim;
use proptest::prelude::*;

use crate::events::{SAMPLE, boy, health_referral, now, sync};

/// A comparable snapshot of everything the fold computed.
fn snapshot(engine: &Engine, events: &[Event]) -> String {
    let store = engine.store();
    let mut cases: Vec<_> = store
        .case_records()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let mut events = store.case_events(&c.id).unwrap_or_default();
            let mut referrals = store.case_referrals(&c.id).unwrap_or_default();
            events.sort();
            referrals.sort();
            (c, events, referrals)
        })
        .collect();
    cases.sort_by_key(|c| c.0.id);
    let mut referrals: Vec<_> = store
        .referral_records()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let mut steps = store.referral_steps(&r.id).unwrap_or_default();
            steps.sort();
            (r, steps)
        })
        .collect();
    referrals.sort_by_key(|r| r.0.id);
    let verdicts: BTreeMap<_, _> = events
        .iter()
        .map(|e| (e.id(), store.verdict(&e.id()).unwrap_or_default()))
        .collect();
    format!("{cases:?}\n{referrals:?}\n{verdicts:?}")
}

struct World {
    sim: Sim,
    events: Vec<Event>,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let sim = Sim::new(
        SAMPLE,
        &["mas", "dpe", "mdm", "iom"],
        &[
            ("aicha", "mas"),
            ("delegate", "dpe"),
            ("nurse", "mdm"),
            ("reader", "mas"),
            ("bystander", "iom"),
        ],
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut e: Vec<Engine> = ["aicha", "delegate", "nurse"]
        .iter()
        .map(|n| {
            sim.engine(n, dir.path(), true, now())
                .unwrap_or_else(|x| panic!("{x}"))
        })
        .collect();
    let ok =
        |r: Result<_, passerelle_core::engine::EngineError>| r.unwrap_or_else(|x| panic!("{x}"));
    let case1 = ok(e[0].open_case(boy(), "aicha", now()));
    let mut general = boy();
    general.case_type = "general".into();
    let case2 = ok(e[0].open_case(general, "aicha", now()));
    let ref2 = ok(e[0].send_referral(health_referral(case2), "aicha", now()));
    sync(&mut e);
    ok(e[1].determine_status(case1, "unaccompanied_child", true, "", "delegate", now()));
    sync(&mut e);
    let ref1 = ok(e[0].send_referral(health_referral(case1), "aicha", now()));
    sync(&mut e);
    // Concurrent, unsynced: the nurse accepts while aicha withdraws.
    ok(e[2].referral_step(ref1, Step::new(Transition::Acknowledge, ""), "nurse", now()));
    ok(e[2].referral_step(ref1, Step::new(Transition::Accept, ""), "nurse", now()));
    let decline = Step {
        reason: Some("no_capacity".into()),
        ..Step::new(Transition::Decline, "full")
    };
    ok(e[2].referral_step(ref2, decline, "nurse", now()));
    let withdraw = Step::new(Transition::Withdraw, "no longer needed");
    ok(e[0].referral_step(ref1, withdraw, "aicha", now()));
    ok(e[0].case_action(
        case1,
        CaseAction::Note,
        "family found",
        None,
        "aicha",
        now(),
    ));
    ok(e[0].case_action(
        case2,
        CaseAction::Transfer {
            to_org: "dpe".into(),
        },
        "",
        None,
        "aicha",
        now(),
    ));
    let events = crate::events::all_events(&e);
    World {
        sim,
        events,
        _dir: dir,
    }
}

fn deliver(world: &World, node: &str, order: &[usize], batch: usize) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut engine = world
        .sim
        .engine(node, dir.path(), true, now())
        .unwrap_or_else(|e| panic!("{e}"));
    let ordered: Vec<Event> = order.iter().map(|&i| world.events[i].clone()).collect();
    for chunk in ordered.chunks(batch.max(1)) {
        engine
            .receive(chunk, now())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    snapshot(&engine, &world.events)
}

fn shuffled(n: usize, seed: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for (i, s) in seed.iter().enumerate().take(n) {
        let j = i + (*s as usize) % (n - i);
        order.swap(i, j);
    }
    order
}

#[test]
fn every_delivery_order_gives_the_same_state() {
    let world = world();
    let n = world.events.len();
    assert!(n >= 12, "a rich enough history: {n} events");
    let in_order: Vec<usize> = (0..n).collect();
    let reference_reader = deliver(&world, "reader", &in_order, n);
    let reference_bystander = deliver(&world, "bystander", &in_order, n);
    // The reader sees the referral withdrawn or accepted — the same either way everywhere.
    assert!(reference_reader.contains("Withdrawn") || reference_reader.contains("Accepted"));
    let config = ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    };
    proptest!(config, |(seed in proptest::collection::vec(any::<u32>(), n), batch in 1usize..6)| {
        let order = shuffled(n, &seed);
        prop_assert_eq!(&deliver(&world, "reader", &order, batch), &reference_reader);
        prop_assert_eq!(&deliver(&world, "bystander", &order, batch), &reference_bystander);
    });
}
