//! The fold's state machine without a database: any delivery order of a history gives the same
//! records and verdicts on the in-memory store, and the redb store gives the same answer.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use proptest::prelude::*;
use time::OffsetDateTime;

use super::memory::MemoryStore;
use super::{Fold, FoldKeys};
use crate::config::ConfigState;
use crate::event::Event;
use crate::sim::Sim;

const SAMPLE: &str = include_str!("../../../config/mechanism.toml");

/// A history of three cases (five events each, two authors), the configuration, a reader's
/// keys, and the simulated mechanism's start time.
struct History {
    sim: Sim,
    now: OffsetDateTime,
    config: ConfigState,
    events: Vec<Event>,
    reader: FoldKeys,
}

fn history() -> &'static History {
    static HISTORY: OnceLock<History> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let now = OffsetDateTime::now_utc();
        let sim = Sim::new(
            SAMPLE,
            &["mas", "mdm"],
            &[("mas1", "mas"), ("mdm1", "mdm")],
            now,
        )
        .expect("the sample mechanism builds");
        let events = sim
            .history(&[("mas1", "mdm1")], 3, 0, now)
            .expect("a history");
        let mut config = ConfigState::default();
        config.push(sim.mechanism().expect("genesis"));
        let node = sim.node("mdm1").expect("mdm1");
        let reader = FoldKeys {
            node_key: node.key(),
            node_age: node.secrets.age.clone(),
            org: "mdm".into(),
            epochs: sim.orgs["mdm"]
                .epochs
                .iter()
                .map(|e| (e.epoch, e.identity.clone()))
                .collect(),
        };
        History {
            sim,
            now,
            config,
            events,
            reader,
        }
    })
}

/// Folds the events in the given order on a fresh in-memory store.
fn fold_in_memory(h: &History, order: &[usize]) -> MemoryStore {
    let mut store = MemoryStore::default();
    let mut keys = h.reader.clone();
    let mut known = HashMap::new();
    let mut installed = Vec::new();
    for &i in order {
        let event = h.events[i].clone();
        store.events.insert(event.id(), event.clone());
        let mut fold = Fold {
            store: &mut store,
            config: &h.config,
            keys: &mut keys,
            known: &mut known,
            keys_installed: &mut installed,
        };
        fold.when_ready(event).expect("memory never fails");
    }
    store
}

/// What the fold computed, comparable between stores.
type State = (
    BTreeMap<crate::event::EventId, super::CaseRecord>,
    BTreeMap<crate::event::EventId, super::ReferralRecord>,
    BTreeMap<crate::event::EventId, super::Verdict>,
);

fn state(store: &MemoryStore) -> State {
    (
        store.cases.clone(),
        store.referrals.clone(),
        store.verdicts.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_delivery_order_gives_the_same_state(
        order in Just((0..15usize).collect::<Vec<_>>()).prop_shuffle()
    ) {
        let h = history();
        let in_order: Vec<usize> = (0..h.events.len()).collect();
        let expected = state(&fold_in_memory(h, &in_order));
        let got = fold_in_memory(h, &order);
        prop_assert_eq!(got.verdicts.len(), h.events.len(), "every event is folded");
        prop_assert!(got.verdicts.values().all(super::Verdict::is_valid), "a valid history");
        prop_assert_eq!(state(&got), expected);
    }
}

#[test]
fn the_redb_store_folds_as_the_memory_store_does() {
    let h = history();
    let mut reversed: Vec<usize> = (0..h.events.len()).collect();
    reversed.reverse();
    let memory = state(&fold_in_memory(h, &reversed));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut engine = h
        .sim
        .engine("mdm1", dir.path(), true, h.now)
        .expect("an engine");
    engine.receive(&h.events, h.now).expect("received");
    let store = engine.store();
    let cases = store.case_records().expect("cases");
    let referrals = store.referral_records().expect("referrals");
    let mut verdicts = BTreeMap::new();
    for e in &h.events {
        verdicts.insert(
            e.id(),
            store.verdict(&e.id()).expect("read").expect("folded"),
        );
    }
    let redb: State = (
        cases.into_iter().map(|c| (c.id, c)).collect(),
        referrals.into_iter().map(|r| (r.id, r)).collect(),
        verdicts,
    );
    assert_eq!(redb, memory);
    assert_eq!(memory.0.len(), 3);
}
