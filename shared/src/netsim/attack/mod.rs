//! Malicious members. Each is an endorsed node with a real engine (it stores and forwards like
//! any member, so honest nodes meet its events through ordinary sync), and on top of that it
//! attacks: it forges events with its own key (`sim::Forger`), keeps a second branch of its
//! log for some peers, relays events signed by outsiders or stamped ten years ahead, sends
//! garbage, and answers rounds badly. What it forges into its own log is admitted there like
//! any received event, so its own fold judges it too.
//!
//! Here: the attacker's state, forging into its own log, forks, outsiders and far-future
//! events; `rules` forges what the fold must mark, `answer` sends garbage and answers badly.

use rand::Rng;

use crate::config::Mechanism;
use crate::event::{Event, EventId, Hlc, Kind as EventKind};
use crate::keyfiles::NodeSecrets;
use crate::payload::{self, CaseOpenPayload};
use crate::sim::{Forger, SimNode};

use super::{FUTURE_LEAD_MS, World, net, workload};

mod answer;
mod rules;

use answer::send_garbage;
pub(super) use answer::{answer, initiate};
use rules::{bad_map, break_rule};

/// An attack a malicious member may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Equivocation,
    RuleBreaking,
    Outsider,
    UnknownVersion,
    Future,
    Garbage,
    BadResponder,
    Endless,
    BadMap,
}

/// A second branch of the attacker's log, shown only to some peers.
#[derive(Debug)]
struct Fork {
    events: Vec<Event>,
    forger: Forger,
    peers: Vec<usize>,
    /// Whether the attacker also hides its own branch from those peers (no pushes, no
    /// rounds), so they learn it only from other honest nodes.
    selective: bool,
}

/// What an attacker keeps between its attacks.
#[derive(Debug, Default)]
pub(super) struct State {
    fork: Option<Fork>,
    /// A node no organisation endorsed, and the events it signed so far.
    outsider: Option<(Forger, Vec<Event>)>,
    /// The same, claiming a configuration version nobody has.
    unknown: Option<(Forger, Vec<Event>)>,
    /// The first answer an endless responder gave, replayed for ever.
    endless: Option<Vec<Vec<u8>>>,
}

impl State {
    /// Whether this attacker forked its log.
    pub(super) fn forked(&self) -> bool {
        self.fork.is_some()
    }
}

/// Whether attacker `i` keeps its own events from node `to`: it hides its branch from the
/// peers it forked for, and an endless responder pushes nothing and opens no round, so its
/// events are had only by asking it.
pub(super) fn shuns(world: &World, i: usize, to: usize) -> bool {
    has(world, i, Kind::Endless)
        || world
            .attackers
            .get(&i)
            .and_then(|s| s.fork.as_ref())
            .is_some_and(|f| f.selective && f.peers.contains(&to))
}

fn kinds(world: &World, i: usize) -> Vec<Kind> {
    match &world.nodes[i].role {
        super::Role::Malicious(k) => k.clone(),
        super::Role::Honest => Vec::new(),
    }
}

fn has(world: &World, i: usize, kind: Kind) -> bool {
    kinds(world, i).contains(&kind)
}

fn now_ms(world: &World, i: usize) -> u64 {
    u64::try_from(world.now_of(i).unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn honest_peers(world: &World) -> Vec<usize> {
    (0..world.nodes.len())
        .filter(|j| world.nodes[*j].honest())
        .collect()
}

fn sim_node(world: &World, i: usize) -> Option<SimNode> {
    world.sim.node(&world.nodes[i].name).ok().cloned()
}

/// A forger for attacker `i`, positioned after its log's head, its clock after everything its
/// store has seen.
fn forger_at_head(world: &World, i: usize) -> Option<Forger> {
    let node = sim_node(world, i)?;
    let engine = &world.nodes[i].engine;
    let m = engine.mechanism().ok()?;
    let mut forger = Forger::new(
        &node,
        world.sim.mechanism_id(),
        m.doc.version,
        world.now_of(i),
    );
    if let Ok(Some((seq, id, _))) = engine.store().head(&node.key()) {
        forger.seq = seq;
        forger.prev = Some(id);
    }
    let clock = Hlc {
        ms: now_ms(world, i),
        counter: 0,
    };
    forger.hlc = clock.max(engine.store().hlc_seen());
    Some(forger)
}

/// An event an attacker forges into its own log.
struct Forgery {
    kind: EventKind,
    subject: Option<EventId>,
    deps: Vec<EventId>,
    /// The organisations it is addressed to.
    orgs: Vec<String>,
    plain: Vec<u8>,
}

impl Forgery {
    /// A case opened by `org`, addressed to itself.
    fn case_open(org: &str, plain: Vec<u8>) -> Self {
        Self {
            kind: EventKind::CaseOpen,
            subject: None,
            deps: vec![],
            orgs: vec![org.to_string()],
            plain,
        }
    }
}

/// Counts one attack of attacker `i`, and logs `line` (if any) under its name.
fn record(world: &mut World, i: usize, line: Option<String>) {
    world.stats.attacks_made += 1;
    if let Some(line) = line {
        let name = world.nodes[i].name.clone();
        world.log(format!("{name} {line}"));
    }
}

/// Attacker `i`'s configuration in force; `None` when its engine has none (it then does not
/// attack this time).
fn mechanism_of(world: &World, i: usize) -> Option<Mechanism> {
    world.nodes[i].engine.mechanism().ok().cloned()
}

/// Forges, with `forger`, a case opened by `org` and addressed to itself.
fn forge_case_open(forger: &mut Forger, m: &Mechanism, org: &str, plain: &[u8]) -> Option<Event> {
    forger
        .next(m, EventKind::CaseOpen, None, vec![], &[org], plain)
        .ok()
}

/// Forges an event into attacker `i`'s own log (admitted there like any received event),
/// counts and logs the attack, and pushes the event at once, like the events a node creates.
fn forge_own(world: &mut World, i: usize, forgery: Forgery) -> Option<Event> {
    let mut forger = forger_at_head(world, i)?;
    let m = mechanism_of(world, i)?;
    let orgs: Vec<&str> = forgery.orgs.iter().map(String::as_str).collect();
    let event = forger
        .next(
            &m,
            forgery.kind,
            forgery.subject,
            forgery.deps,
            &orgs,
            &forgery.plain,
        )
        .ok()?;
    let now = world.now_of(i);
    match world.nodes[i]
        .engine
        .receive(std::slice::from_ref(&event), now)
    {
        Ok(report) if report.admitted.contains(&event.id()) => {
            let line = format!(
                "forged {} {}",
                event.header().kind.name(),
                event.id().short()
            );
            record(world, i, Some(line));
            for to in 0..world.nodes.len() {
                if to != i && !shuns(world, i, to) {
                    push_to(world, i, to, std::slice::from_ref(&event));
                }
            }
            Some(event)
        }
        Ok(_) => None,
        Err(e) => {
            world.note_error(i, "forge", &e);
            None
        }
    }
}

/// One attack of malicious node `i`, drawn from the seed (or, a third of the time, an honest
/// operation, so honest nodes have its cases and referrals to act on).
pub(super) fn step(world: &mut World, i: usize) {
    let kinds = kinds(world, i);
    if kinds.is_empty() || world.rng.gen_range(0..3) == 0 {
        return workload::step(world, i);
    }
    match kinds[world.rng.gen_range(0..kinds.len())] {
        Kind::Equivocation => equivocate(world, i),
        Kind::RuleBreaking => break_rule(world, i),
        Kind::Outsider => outsider(world, i, false),
        Kind::UnknownVersion => outsider(world, i, true),
        Kind::Future => future(world, i),
        Kind::Garbage => {
            let to = honest_peers(world);
            if !to.is_empty() {
                let to = to[world.rng.gen_range(0..to.len())];
                send_garbage(world, i, to);
            }
        }
        Kind::BadMap => bad_map(world, i),
        // These act when the attacker is asked (see `answer`).
        Kind::BadResponder | Kind::Endless => workload::step(world, i),
    }
}

/// After the workload, attackers create nothing new but keep showing their fork and keep
/// sending garbage.
pub(super) fn after_workload(world: &mut World, i: usize) {
    if has(world, i, Kind::Equivocation) {
        push_fork(world, i);
    }
    if has(world, i, Kind::Garbage) {
        let to = honest_peers(world);
        if !to.is_empty() {
            let to = to[world.rng.gen_range(0..to.len())];
            send_garbage(world, i, to);
        }
    }
}

fn push_to(world: &mut World, from: usize, to: usize, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    let Some(bytes) = super::push_bytes(events) else {
        return;
    };
    world.send(from, to, net::Payload::Push { bytes });
}

fn push_fork(world: &mut World, i: usize) {
    let Some(fork) = world.attackers.get(&i).and_then(|s| s.fork.as_ref()) else {
        return;
    };
    let (events, peers) = (fork.events.clone(), fork.peers.clone());
    for p in peers {
        push_to(world, i, p, &events);
    }
}

fn open_payload(world: &mut World, case_type: &str) -> Vec<u8> {
    let data = workload::case_data(&mut world.rng, case_type, true);
    payload::encode(&CaseOpenPayload {
        data,
        by: "attacker".into(),
    })
    // A generated case encodes under the payload bound; were it not to, the empty body is
    // forged anyway and refused like any bad payload.
    .unwrap_or_default()
}

/// Forks the log: the attacker's own engine takes one event at the next sequence, a chosen
/// half of the honest nodes is given another; later calls extend the second branch.
fn equivocate(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    if world.attackers.get(&i).is_some_and(State::forked) {
        if world.rng.gen_bool(0.5) {
            extend_fork(world, i, &org);
        }
        return push_fork(world, i);
    }
    let Some(mut forger) = forger_at_head(world, i) else {
        return;
    };
    let now = world.now_of(i);
    let data = workload::case_data(&mut world.rng, "general", true);
    let ours = match world.nodes[i].engine.open_case(data, "attacker", now) {
        Ok(id) => id,
        Err(e) => return world.note_error(i, "equivocate", &e),
    };
    let Some(m) = mechanism_of(world, i) else {
        return;
    };
    let plain = open_payload(world, "general");
    let Some(theirs) = forge_case_open(&mut forger, &m, &org, &plain) else {
        return;
    };
    let mut peers = honest_peers(world);
    peers.retain(|_| world.rng.gen_bool(0.5));
    if peers.is_empty() {
        let all = honest_peers(world);
        peers.push(all[world.rng.gen_range(0..all.len())]);
    }
    let selective = world.rng.gen_bool(0.5);
    let line = format!(
        "forks at seq {}: {} for itself, {} for {peers:?}{}",
        theirs.header().seq,
        ours.short(),
        theirs.id().short(),
        if selective {
            ", hiding its own from them"
        } else {
            ""
        }
    );
    record(world, i, Some(line));
    if let Some(state) = world.attackers.get_mut(&i) {
        state.fork = Some(Fork {
            events: vec![theirs],
            forger,
            peers,
            selective,
        });
    }
    push_fork(world, i);
}

/// One more event on the second branch of attacker `i`'s log (shown with the branch).
fn extend_fork(world: &mut World, i: usize, org: &str) {
    let plain = open_payload(world, "general");
    let Some(m) = mechanism_of(world, i) else {
        return;
    };
    let Some(fork) = world.attackers.get_mut(&i).and_then(|s| s.fork.as_mut()) else {
        return;
    };
    if let Some(e) = forge_case_open(&mut fork.forger, &m, org, &plain) {
        let line = format!(
            "extends its fork to seq {}: {}",
            e.header().seq,
            e.id().short()
        );
        fork.events.push(e);
        let name = world.nodes[i].name.clone();
        world.log(format!("{name} {line}"));
    }
}

/// Relays events signed by a key no organisation endorsed (or, with `unknown_version`,
/// claiming a configuration version nobody has) to an honest node.
fn outsider(world: &mut World, i: usize, unknown_version: bool) {
    let now = world.now_of(i);
    let mechanism = world.sim.mechanism_id();
    let slot = world.attackers.get(&i).map(|s| {
        if unknown_version {
            s.unknown.is_none()
        } else {
            s.outsider.is_none()
        }
    });
    if slot == Some(true) {
        let node = SimNode {
            name: "outsider".into(),
            org: world.nodes[i].org.clone(),
            secrets: NodeSecrets::generate(),
        };
        let version = if unknown_version { 42 } else { 1 };
        let forger = Forger::new(&node, mechanism, version, now);
        if let Some(state) = world.attackers.get_mut(&i) {
            let fresh = Some((forger, Vec::new()));
            if unknown_version {
                state.unknown = fresh;
            } else {
                state.outsider = fresh;
            }
        }
    }
    let Some(m) = mechanism_of(world, i) else {
        return;
    };
    let org = world.nodes[i].org.clone();
    let plain = open_payload(world, "general");
    let Some(state) = world.attackers.get_mut(&i) else {
        return;
    };
    let Some((forger, events)) = (if unknown_version {
        state.unknown.as_mut()
    } else {
        state.outsider.as_mut()
    }) else {
        return;
    };
    if let Some(e) = forge_case_open(forger, &m, &org, &plain) {
        events.push(e);
    }
    let events = events.clone();
    let peers = honest_peers(world);
    let to = peers[world.rng.gen_range(0..peers.len())];
    record(world, i, None);
    push_to(world, i, to, &events);
}

/// An event ten years ahead, at the attacker's next sequence, to an honest node.
fn future(world: &mut World, i: usize) {
    let Some(mut forger) = forger_at_head(world, i) else {
        return;
    };
    forger.hlc.ms = now_ms(world, i).saturating_add(FUTURE_LEAD_MS);
    let Some(m) = mechanism_of(world, i) else {
        return;
    };
    let org = world.nodes[i].org.clone();
    let plain = open_payload(world, "general");
    let Some(e) = forge_case_open(&mut forger, &m, &org, &plain) else {
        return;
    };
    let peers = honest_peers(world);
    let to = peers[world.rng.gen_range(0..peers.len())];
    record(
        world,
        i,
        Some(format!("sends a far-future event {}", e.id().short())),
    );
    push_to(world, i, to, &[e]);
}
