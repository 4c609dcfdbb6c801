//! Found by the network simulator (`passerelle_core::netsim`, issue 10): a fork must be flagged
//! also on the node that holds the shorter branch. Its peer's events past its head follow an
//! event it does not have and are refused as a broken chain, so without asking for the peer's
//! event at its own head's sequence, the two events at one sequence never met there.

use passerelle_core::event::{Event, Kind};
use passerelle_core::round::run_round;
use passerelle_core::sim::Forger;

use crate::events::{now, scenario};

#[test]
fn a_fork_is_flagged_on_the_node_holding_the_shorter_branch() {
    let (sim, _dir, mut e) = scenario();
    let m = sim.mechanism().unwrap();
    let member = sim.node("iom1").unwrap().clone();
    let change = |f: &mut Forger, body: &[u8]| -> Event {
        let kind = Kind::MapChange { org: "iom".into() };
        f.next(&m, kind, None, vec![], &[], body).unwrap()
    };
    // The member signs two branches of its log: two events for aicha, another first event for
    // the delegate.
    let mut long = Forger::new(&member, sim.mechanism_id(), 1, now());
    let mut short = Forger::new(&member, sim.mechanism_id(), 1, now());
    let x1 = change(&mut long, b"x1");
    let x2 = change(&mut long, b"x2");
    let y1 = change(&mut short, b"y1");
    e[0].receive(&[x1.clone(), x2], now()).unwrap();
    e[1].receive(std::slice::from_ref(&y1), now()).unwrap();
    // The delegate (one event) opens a round with aicha (two events).
    let (a, b) = e.split_at_mut(1);
    run_round(&mut b[0], &mut a[0], now()).unwrap();
    let evidence = b[0].store().equivocations().unwrap();
    assert_eq!(
        evidence
            .iter()
            .map(|(_, seq, id)| (*seq, *id))
            .collect::<Vec<_>>(),
        vec![(1, x1.id())],
        "the shorter branch's holder keeps the other event at its head's sequence"
    );
    // And aicha, opening a round with the delegate, flags it too.
    run_round(&mut a[0], &mut b[0], now()).unwrap();
    let evidence = a[0].store().equivocations().unwrap();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert_eq!(evidence[0].2, y1.id());
    // A round between nodes whose logs only lag behind costs no evidence.
    let (c, d) = e.split_at_mut(3);
    run_round(&mut d[0], &mut c[2], now()).unwrap();
    assert!(d[0].store().equivocations().unwrap().is_empty());
}
