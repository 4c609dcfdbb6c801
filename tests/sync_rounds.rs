//! Sync rounds between engines in memory (the same state machine libp2p carries): logs
//! converge, idle rounds are small, forks are caught across peers, the configuration travels
//! first, and a restored node becomes writable only after learning its own log from a peer.

use passerelle_core::engine::{Engine, Which};
use passerelle_core::event::Kind;
use passerelle_core::round::run_round;
use passerelle_core::sim::Forger;

use crate::events::{boy, health_referral, now, scenario};

fn digest(e: &Engine) -> passerelle_core::config::Hash32 {
    e.version_vector().unwrap().digest()
}

#[test]
fn a_round_brings_both_sides_level_and_an_idle_round_is_small() {
    let (_sim, _dir, mut e) = scenario();
    let mut data = boy();
    data.case_type = "general".into();
    let case = e[0].open_case(data, "aicha", now()).unwrap();
    e[0].send_referral(health_referral(case), "aicha", now())
        .unwrap();
    e[3].open_case(boy(), "iom", now())
        .map(|_| ())
        .unwrap_or(());
    let (a, rest) = e.split_at_mut(1);
    let (report, _, _) = run_round(&mut a[0], &mut rest[1], now()).unwrap();
    assert_eq!(report.pushed, 2, "{report:?}");
    assert_eq!(digest(&a[0]), digest(&rest[1]));
    // The nurse now has the referral in her inbox.
    assert_eq!(
        rest[1]
            .referrals(false, Which::All, usize::MAX, false, now())
            .unwrap()
            .len(),
        1
    );
    let (report, sent, received) = run_round(&mut a[0], &mut rest[1], now()).unwrap();
    assert_eq!(report, Default::default());
    assert!(
        sent <= 256 && received <= 256,
        "idle round: {sent} / {received} bytes"
    );
}

#[test]
fn a_fork_is_caught_across_peers() {
    let (sim, _dir, mut e) = scenario();
    let m = sim.mechanism().unwrap();
    let aicha = sim.node("aicha").unwrap().clone();
    // Two different events at aicha's sequence 1, each given to a different node.
    let mut one = Forger::new(&aicha, sim.mechanism_id(), 1, now());
    let mut two = Forger::new(&aicha, sim.mechanism_id(), 1, now());
    let x = one
        .next(
            &m,
            Kind::MapChange { org: "mas".into() },
            None,
            vec![],
            &[],
            b"x",
        )
        .unwrap();
    let y = two
        .next(
            &m,
            Kind::MapChange { org: "mas".into() },
            None,
            vec![],
            &[],
            b"y",
        )
        .unwrap();
    e[1].receive(std::slice::from_ref(&x), now()).unwrap();
    e[2].receive(std::slice::from_ref(&y), now()).unwrap();
    let (a, b) = e.split_at_mut(2);
    run_round(&mut a[1], &mut b[0], now()).unwrap();
    let evidence = a[1].store().equivocations().unwrap();
    assert_eq!(evidence.len(), 1, "the fork is kept as evidence");
    assert_eq!(evidence[0].2, y.id());
}

#[test]
fn the_configuration_travels_first() {
    let (mut sim, dir, mut e) = scenario();
    let stanza = sim.add_node("aicha2", "mas").unwrap();
    sim.next_version(&[], |t| t + &stanza, now()).unwrap();
    e[0].apply_config(&sim.files, now()).unwrap();
    // The new node's own events claim version 2: a node on version 1 holds them back...
    let mut newcomer = sim.engine("aicha2", dir.path(), true, now()).unwrap();
    let mut data = boy();
    data.case_type = "general".into();
    newcomer.open_case(data, "aicha2", now()).unwrap();
    // ...until a round with a node that has version 2 brings it, config first.
    let (a, b) = e.split_at_mut(1);
    run_round(&mut b[0], &mut a[0], now()).unwrap();
    assert_eq!(b[0].store().config().highest(), 2);
    run_round(&mut b[0], &mut newcomer, now()).unwrap();
    assert_eq!(
        b[0].cases(None, usize::MAX).unwrap().len(),
        0,
        "dpe cannot read mas's general case"
    );
    assert_eq!(digest(&b[0]), digest(&newcomer));
}

#[test]
fn a_restored_node_writes_again_only_after_learning_its_own_log() {
    let (sim, dir, mut e) = scenario();
    let mut data = boy();
    data.case_type = "general".into();
    let backup = dir.path().join("aicha.bak");
    e[0].backup(&backup).unwrap();
    // After the backup, aicha writes more, and the nurse's node receives it.
    let case = e[0].open_case(data.clone(), "aicha", now()).unwrap();
    let (a, b) = e.split_at_mut(1);
    run_round(&mut a[0], &mut b[1], now()).unwrap();
    // The laptop is restored from the old backup: it must not write sequence 1 again.
    let node = sim.node("aicha").unwrap();
    let store = passerelle_core::store::Store::restore_backup(
        &backup,
        &node.secrets.signing.public(),
        &dir.path().join("restored.redb"),
        Some(sim.mechanism_id()),
    )
    .unwrap();
    let mut restored = Engine::open(store, node.secrets.clone(), "mas").unwrap();
    assert!(restored.open_case(data.clone(), "aicha", now()).is_err());
    run_round(&mut restored, &mut b[1], now()).unwrap();
    assert!(
        !restored.is_read_only().unwrap(),
        "learned its own latest sequence"
    );
    assert!(restored.store().event(&case).unwrap().is_some());
    let next = restored.open_case(data, "aicha", now()).unwrap();
    let head = restored.store().head(&node.key()).unwrap().unwrap();
    assert_eq!(
        (head.0, head.1),
        (2, next),
        "continues its log, no equivocation"
    );
    assert!(b[1].store().equivocations().unwrap().is_empty());
}
