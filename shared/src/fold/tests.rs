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

/// A history whose steps conflict, as nodes that did not see each other produce it: one case,
/// two referrals. On the first, the receiver acknowledges, then accepts while the sender
/// withdraws (neither saw the other), then completes; the sender also tries to complete it (not
/// its step). On the second, the receiver completes without accepting, then declines twice.
/// The fold must pick the same winner and mark the same losers whatever arrives first.
fn conflicts() -> &'static History {
    static CONFLICTS: OnceLock<History> = OnceLock::new();
    CONFLICTS.get_or_init(|| {
        use crate::event::Transition::{Accept, Acknowledge, Complete, Decline, Withdraw};
        use crate::sim::EventWriter;

        let base = history();
        let m = base.sim.mechanism().expect("genesis");
        let (version, id) = (m.doc.version, base.sim.mechanism_id());
        let node = |n: &str| base.sim.node(n).expect("a node");
        let mut mas = EventWriter::new(node("mas1"), id, version, base.now);
        let mut mdm = EventWriter::new(node("mdm1"), id, version, base.now);
        let [open, first, second] = case_with_two_referrals(&m, &mut mas);
        mdm.hlc = mdm.hlc.max(mas.hlc);
        let ack = step(&m, &mut mdm, &first, Acknowledge);
        mas.hlc = mas.hlc.max(mdm.hlc);
        // Concurrent: neither writer saw the other's step.
        let accept = step(&m, &mut mdm, &first, Accept);
        let withdraw = step(&m, &mut mas, &first, Withdraw);
        let complete = step(&m, &mut mdm, &first, Complete);
        let sender_completes = step(&m, &mut mas, &first, Complete);
        let early = step(&m, &mut mdm, &second, Complete);
        let decline = step(&m, &mut mdm, &second, Decline);
        let again = step(&m, &mut mdm, &second, Decline);
        let events = vec![
            open,
            first,
            second,
            ack,
            accept,
            withdraw,
            complete,
            sender_completes,
            early,
            decline,
            again,
        ];
        History {
            sim: Sim::new(SAMPLE, &["mas", "mdm"], &[], base.now).expect("an empty sim"),
            now: base.now,
            config: base.config.clone(),
            events,
            reader: base.reader.clone(),
        }
    })
}

/// A case opened by `mas`, and two referrals of it to `mdm`.
fn case_with_two_referrals(
    m: &crate::config::Mechanism,
    mas: &mut crate::sim::EventWriter,
) -> [Event; 3] {
    use crate::event::{Kind, Urgency};
    use crate::payload::{CaseOpenPayload, ReferralPayload, encode};
    let data = crate::payload::CaseData {
        case_type: "general".into(),
        site: "medenine".into(),
        consent: crate::payload::Consent {
            given: true,
            explained_by: "aicha".into(),
            explained: "referral to health care".into(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        },
        needs: vec!["health".into()],
        person: Default::default(),
        vulnerabilities: vec![],
        notes: String::new(),
    };
    let opening = encode(&CaseOpenPayload {
        data: data.clone(),
        by: "aicha".into(),
    })
    .expect("encodes");
    let open = mas
        .next(m, Kind::CaseOpen, None, vec![], &["mas"], &opening)
        .expect("an opening");
    let mut send = |note: &str| {
        let body = encode(&ReferralPayload {
            case_type: "general".into(),
            category: "health".into(),
            shared: Default::default(),
            note: note.into(),
            consent: data.consent.clone(),
            emergency_override: None,
            by: "aicha".into(),
        })
        .expect("encodes");
        let kind = Kind::ReferralSend {
            to_org: "mdm".into(),
            category: Some("health".into()),
            urgency: Urgency::Urgent,
        };
        mas.next(m, kind, Some(open.id()), vec![], &["mas", "mdm"], &body)
            .expect("a referral")
    };
    let (first, second) = (send("first"), send("second"));
    [open, first, second]
}

/// A step on a referral, written by `w` (a decline gives a reason).
fn step(
    m: &crate::config::Mechanism,
    w: &mut crate::sim::EventWriter,
    on: &Event,
    transition: crate::event::Transition,
) -> Event {
    use crate::event::{Kind, Transition};
    let reason = (transition == Transition::Decline).then(|| "no_capacity".to_string());
    let body = crate::payload::encode(&crate::payload::ReferralUpdatePayload {
        note: transition.as_str().into(),
        outcome: None,
        by: w.node.org.clone(),
    })
    .expect("encodes");
    let kind = Kind::ReferralUpdate { transition, reason };
    w.next(m, kind, Some(on.id()), vec![], &["mas", "mdm"], &body)
        .expect("a step")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn conflicting_steps_fold_to_the_same_state_in_any_order(
        order in Just((0..11usize).collect::<Vec<_>>()).prop_shuffle()
    ) {
        let h = conflicts();
        let in_order: Vec<usize> = (0..h.events.len()).collect();
        let expected = state(&fold_in_memory(h, &in_order));
        let got = fold_in_memory(h, &order);
        prop_assert_eq!(got.verdicts.len(), h.events.len(), "every event is folded");
        prop_assert_eq!(state(&got), expected);
    }
}

/// The conflicting history is not trivially valid: the steps that lose are marked with the
/// rule they break, and each referral ends in the status the winning steps give it.
#[test]
fn the_conflicting_history_has_losers() {
    let h = conflicts();
    let in_order: Vec<usize> = (0..h.events.len()).collect();
    let store = fold_in_memory(h, &in_order);
    let broken = |i: usize| store.verdicts[&h.events[i].id()].broken.clone();
    use super::{Rule, Status};
    // The opening, both referrals and the acknowledgement stand.
    for i in 0..4 {
        assert_eq!(broken(i), None, "event {i}");
    }
    // Accept (4) and withdraw (5) raced. The sender may withdraw an accepted referral, so
    // the withdrawal stands either way; the accept stands only if the fold orders it first.
    // The completion (6) comes after both in the fold's order: the referral is withdrawn.
    assert_eq!(broken(5), None, "the withdrawal stands");
    assert!(
        matches!(broken(4), None | Some(Rule::InvalidTransition)),
        "{:?}",
        broken(4)
    );
    assert_eq!(
        broken(6),
        Some(Rule::InvalidTransition),
        "no completion once withdrawn"
    );
    let first = store.referrals[&h.events[1].id()].status;
    let second = store.referrals[&h.events[2].id()].status;
    assert_eq!(first, Status::Withdrawn);
    assert_eq!(
        broken(7),
        Some(Rule::NotReceiver),
        "the sender cannot complete"
    );
    assert_eq!(
        broken(8),
        Some(Rule::InvalidTransition),
        "complete before accept"
    );
    assert_eq!(broken(9), None, "the decline stands");
    assert_eq!(
        broken(10),
        Some(Rule::InvalidTransition),
        "a second decline"
    );
    assert_eq!(second, Status::Declined);
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
