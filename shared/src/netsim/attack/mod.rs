//! Malicious members. Each is an endorsed node with a real engine (it stores and forwards like
//! any member, so honest nodes meet its events through ordinary sync), and on top of that it
//! attacks: it forges events with its own key (`sim::Forger`), keeps a second branch of its
//! log for some peers, relays events signed by outsiders or stamped ten years ahead, sends
//! garbage, and answers rounds badly. What it forges into its own log is admitted there like
//! any received event, so its own fold judges it too.

use rand::Rng;

use crate::event::{Event, EventId, Hlc, Kind as EventKind, Transition, Urgency};
use crate::keyfiles::NodeSecrets;
use crate::payload::{self, CaseOpenPayload, DeterminationPayload, ReferralPayload};
use crate::sim::{Forger, SimNode};
use crate::sync::{self, Request, Response, VersionVector};

use super::{CaseInfo, FUTURE_LEAD_MS, ReferralInfo, World, net, workload};

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

/// Forges an event into attacker `i`'s own log (admitted there like any received event).
fn forge_own(
    world: &mut World,
    i: usize,
    kind: EventKind,
    subject: Option<EventId>,
    deps: Vec<EventId>,
    orgs: &[&str],
    plain: &[u8],
) -> Option<Event> {
    let mut forger = forger_at_head(world, i)?;
    let m = world.nodes[i].engine.mechanism().ok()?.clone();
    let event = forger.next(&m, kind, subject, deps, orgs, plain).ok()?;
    let now = world.now_of(i);
    match world.nodes[i]
        .engine
        .receive(std::slice::from_ref(&event), now)
    {
        Ok(report) if report.admitted.contains(&event.id()) => {
            world.stats.attacks_made += 1;
            let name = world.nodes[i].name.clone();
            world.log(format!(
                "{name} forged {} {}",
                event.header().kind.name(),
                event.id().short()
            ));
            // Pushed at once, like the events a node creates.
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
    .unwrap_or_default()
}

/// Forks the log: the attacker's own engine takes one event at the next sequence, a chosen
/// half of the honest nodes is given another; later calls extend the second branch.
fn equivocate(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    if world.attackers.get(&i).is_some_and(State::forked) {
        if world.rng.gen_bool(0.5) {
            let plain = open_payload(world, "general");
            let Ok(m) = world.nodes[i].engine.mechanism().cloned() else {
                return;
            };
            let Some(fork) = world.attackers.get_mut(&i).and_then(|s| s.fork.as_mut()) else {
                return;
            };
            if let Ok(e) = fork.forger.next(
                &m,
                EventKind::CaseOpen,
                None,
                vec![],
                &[org.as_str()],
                &plain,
            ) {
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
    let Ok(m) = world.nodes[i].engine.mechanism().cloned() else {
        return;
    };
    let plain = open_payload(world, "general");
    let Ok(theirs) = forger.next(
        &m,
        EventKind::CaseOpen,
        None,
        vec![],
        &[org.as_str()],
        &plain,
    ) else {
        return;
    };
    let mut peers = honest_peers(world);
    peers.retain(|_| world.rng.gen_bool(0.5));
    if peers.is_empty() {
        let all = honest_peers(world);
        peers.push(all[world.rng.gen_range(0..all.len())]);
    }
    let name = world.nodes[i].name.clone();
    let selective = world.rng.gen_bool(0.5);
    world.log(format!(
        "{name} forks at seq {}: {} for itself, {} for {peers:?}{}",
        theirs.header().seq,
        ours.short(),
        theirs.id().short(),
        if selective {
            ", hiding its own from them"
        } else {
            ""
        }
    ));
    world.stats.attacks_made += 1;
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

/// Attacker `i`'s own cases (in the simulation's order).
fn own_cases(world: &World, i: usize) -> Vec<CaseInfo> {
    let org = &world.nodes[i].org;
    world
        .book
        .cases
        .iter()
        .filter(|c| {
            world.nodes[i]
                .engine
                .store()
                .case_record(&c.id)
                .ok()
                .flatten()
                .is_some_and(|r| &r.manager_org == org)
        })
        .cloned()
        .collect()
}

/// Events the fold must mark, each judged by every node that can read it.
fn break_rule(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    let cases = own_cases(world, i);
    let Some(case) =
        (!cases.is_empty()).then(|| cases[world.rng.gen_range(0..cases.len())].clone())
    else {
        // Something to break rules about first.
        return workload::step(world, i);
    };
    let providers: Vec<&str> = ["mdm", "iom", "unicef", "drs_medenine"]
        .into_iter()
        .filter(|o| *o != org)
        .collect();
    let to = providers[world.rng.gen_range(0..providers.len())];
    let consent = workload::case_data(&mut world.rng, "general", false).consent;
    let referral = |case_type: &str, consent| ReferralPayload {
        case_type: case_type.into(),
        category: "health".into(),
        shared: Default::default(),
        note: "forged".into(),
        consent,
        emergency_override: None,
        by: "attacker".into(),
    };
    let update = payload::encode(&payload::ReferralUpdatePayload {
        note: "forged".into(),
        outcome: None,
        by: "attacker".into(),
    })
    .expect("a short generated payload encodes under the payload bound");
    match world.rng.gen_range(0..7) {
        // Refers without consent.
        0 => {
            let plain = payload::encode(&referral(&case.case_type, consent))
                .expect("a short generated payload encodes under the payload bound");
            let kind = EventKind::ReferralSend {
                to_org: to.into(),
                category: Some("health".into()),
                urgency: Urgency::Urgent,
            };
            if let Some(e) = forge_own(
                world,
                i,
                kind,
                Some(case.id),
                vec![],
                &[org.as_str(), to],
                &plain,
            ) {
                world.book.referrals.push(ReferralInfo {
                    id: e.id(),
                    from_org: org.clone(),
                    to_org: to.into(),
                });
            }
        }
        // Accepts its own referral.
        1 => {
            let own: Vec<ReferralInfo> = world
                .book
                .referrals
                .iter()
                .filter(|r| r.from_org == org)
                .cloned()
                .collect();
            if own.is_empty() {
                return workload::step(world, i);
            }
            let r = own[world.rng.gen_range(0..own.len())].clone();
            let kind = EventKind::ReferralUpdate {
                transition: Transition::Accept,
                reason: None,
            };
            forge_own(
                world,
                i,
                kind,
                Some(r.id),
                vec![],
                &[r.from_org.as_str(), r.to_org.as_str()],
                &update,
            );
        }
        // Takes a step on a referral it is no party to.
        2 => {
            let others: Vec<ReferralInfo> = world
                .book
                .referrals
                .iter()
                .filter(|r| r.from_org != org && r.to_org != org)
                .cloned()
                .collect();
            if others.is_empty() {
                return workload::step(world, i);
            }
            let r = others[world.rng.gen_range(0..others.len())].clone();
            let transition = [Transition::Accept, Transition::Withdraw][world.rng.gen_range(0..2)];
            let kind = EventKind::ReferralUpdate {
                transition,
                reason: None,
            };
            forge_own(
                world,
                i,
                kind,
                Some(r.id),
                vec![],
                &[r.from_org.as_str(), r.to_org.as_str(), org.as_str()],
                &update,
            );
        }
        // Determines a status it is no authority for.
        3 => {
            let plain = payload::encode(&DeterminationPayload {
                case_type: "unaccompanied_child".into(),
                determined: true,
                note: "forged".into(),
                by: "attacker".into(),
            })
            .unwrap_or_default();
            forge_own(
                world,
                i,
                EventKind::StatusDetermination,
                Some(case.id),
                vec![],
                &[org.as_str()],
                &plain,
            );
        }
        // Refers to an organisation that provides no services.
        4 => {
            let plain = payload::encode(&referral(
                "general",
                workload::case_data(&mut world.rng, "general", true).consent,
            ))
            .unwrap_or_default();
            let kind = EventKind::ReferralSend {
                to_org: "dpe".into(),
                category: Some("health".into()),
                urgency: Urgency::Routine,
            };
            forge_own(
                world,
                i,
                kind,
                Some(case.id),
                vec![],
                &[org.as_str(), "dpe"],
                &plain,
            );
        }
        // Opens a case of a type the mechanism does not have.
        5 => {
            let plain = open_payload(world, "no_such_case_type");
            forge_own(
                world,
                i,
                EventKind::CaseOpen,
                None,
                vec![],
                &[org.as_str()],
                &plain,
            );
        }
        // Changes another organisation's profile.
        _ => {
            let target = providers[world.rng.gen_range(0..providers.len())];
            if let Some((body, deps)) = map_change(world, i, target) {
                let kind = EventKind::MapChange { org: target.into() };
                forge_own(world, i, kind, None, deps, &[], &body);
            }
        }
    }
}

/// A well-formed Automerge change to `target`'s profile written by attacker `i`, with the
/// events carrying its dependencies.
fn map_change(world: &mut World, i: usize, target: &str) -> Option<(Vec<u8>, Vec<EventId>)> {
    let store = world.nodes[i].engine.store();
    let mut doc = store.map_doc(target).ok().flatten().unwrap_or_default();
    let key = world.nodes[i].engine.node_key();
    doc.set_actor(automerge::ActorId::from(key.to_vec()));
    let heads = doc.get_heads();
    let deps = store.map_change_events(&heads).ok()?;
    let profile = workload::profile(&mut world.rng, target);
    let change = crate::map::import(&mut doc, &profile).ok()??;
    Some((change, deps))
}

/// Map changes of its own profile with bodies automerge must not choke on: mutated or
/// truncated changes, random bytes, the fuzz crashers, a change written under another
/// node's actor.
fn bad_map(world: &mut World, i: usize) {
    let org = world.nodes[i].org.clone();
    let Some((mut body, deps)) = map_change(world, i, &org) else {
        return;
    };
    match world.rng.gen_range(0..6) {
        0 => {
            for _ in 0..world.rng.gen_range(1..8) {
                let at = world.rng.gen_range(0..body.len().max(1));
                if let Some(b) = body.get_mut(at) {
                    *b ^= 1 << world.rng.gen_range(0..8);
                }
            }
        }
        1 => body.truncate(world.rng.gen_range(0..body.len().max(1))),
        2 => {
            body = (0..world.rng.gen_range(0..300))
                .map(|_| world.rng.r#gen())
                .collect();
        }
        3 if !world.options.map_bodies.is_empty() => {
            let n = world.options.map_bodies.len();
            body = world.options.map_bodies[world.rng.gen_range(0..n)].clone();
        }
        4 => {
            // The same profile change, but written as an honest node's actor.
            let honest = honest_peers(world);
            let victim = honest[world.rng.gen_range(0..honest.len())];
            let actor = world.nodes[victim].engine.node_key();
            let store = world.nodes[i].engine.store();
            let mut doc = store.map_doc(&org).ok().flatten().unwrap_or_default();
            doc.set_actor(automerge::ActorId::from(actor.to_vec()));
            let profile = workload::profile(&mut world.rng, &org);
            if let Ok(Some(change)) = crate::map::import(&mut doc, &profile) {
                body = change;
            }
        }
        _ => {
            let at = world.rng.gen_range(0..body.len().max(1));
            let junk: Vec<u8> = (0..world.rng.gen_range(1..64))
                .map(|_| world.rng.r#gen())
                .collect();
            body.splice(at..at, junk);
        }
    }
    let kind = EventKind::MapChange { org };
    forge_own(world, i, kind, None, deps, &[], &body);
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
    let Ok(m) = world.nodes[i].engine.mechanism().cloned() else {
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
    if let Ok(e) = forger.next(
        &m,
        EventKind::CaseOpen,
        None,
        vec![],
        &[org.as_str()],
        &plain,
    ) {
        events.push(e);
    }
    let events = events.clone();
    let peers = honest_peers(world);
    let to = peers[world.rng.gen_range(0..peers.len())];
    world.stats.attacks_made += 1;
    push_to(world, i, to, &events);
}

/// An event ten years ahead, at the attacker's next sequence, to an honest node.
fn future(world: &mut World, i: usize) {
    let Some(mut forger) = forger_at_head(world, i) else {
        return;
    };
    forger.hlc.ms = now_ms(world, i).saturating_add(FUTURE_LEAD_MS);
    let Ok(m) = world.nodes[i].engine.mechanism().cloned() else {
        return;
    };
    let org = world.nodes[i].org.clone();
    let plain = open_payload(world, "general");
    let Ok(e) = forger.next(
        &m,
        EventKind::CaseOpen,
        None,
        vec![],
        &[org.as_str()],
        &plain,
    ) else {
        return;
    };
    let peers = honest_peers(world);
    let to = peers[world.rng.gen_range(0..peers.len())];
    world.stats.attacks_made += 1;
    let name = world.nodes[i].name.clone();
    world.log(format!(
        "{name} sends a far-future event {}",
        e.id().short()
    ));
    push_to(world, i, to, &[e]);
}

fn random_bytes(world: &mut World, max: usize) -> Vec<u8> {
    (0..world.rng.gen_range(0..max))
        .map(|_| world.rng.r#gen())
        .collect()
}

/// A message that is not one: random bytes, a truncated or flipped real message, a push of
/// items that are not events.
fn garbage(world: &mut World, i: usize) -> Vec<u8> {
    let real = world.nodes[i]
        .engine
        .hello()
        .ok()
        .and_then(|h| sync::encode(&h).ok())
        .unwrap_or_default();
    match world.rng.gen_range(0..5) {
        0 => random_bytes(world, 300),
        1 => {
            let mut b = real;
            b.truncate(world.rng.gen_range(0..b.len().max(1)));
            b
        }
        2 => {
            let mut b = real;
            if !b.is_empty() {
                let at = world.rng.gen_range(0..b.len());
                b[at] ^= 0xff;
            }
            b
        }
        3 => {
            let items = (0..world.rng.gen_range(1..20))
                .map(|_| random_bytes(world, 400))
                .collect();
            sync::encode(&Request::Push { events: items })
                .expect("at most 19 items of 400 bytes fit a sync message")
        }
        _ => {
            // A length prefix claiming far more than follows.
            let mut b = vec![2u8, 0xff, 0xff, 0xff, 0x7f];
            b.extend(random_bytes(world, 50));
            b
        }
    }
}

fn send_garbage(world: &mut World, i: usize, to: usize) {
    let bytes = garbage(world, i);
    world.stats.attacks_made += 1;
    if world.rng.gen_bool(0.5) {
        world.next_round += 1;
        let round = world.next_round;
        world.send(
            i,
            to,
            net::Payload::Request {
                round,
                step: 0,
                bytes,
            },
        );
    } else {
        world.send(i, to, net::Payload::Push { bytes });
    }
}

/// When attacker `a` would open a round with `b`: sometimes it sends garbage instead.
pub(super) fn initiate(world: &mut World, a: usize, b: usize) -> bool {
    if shuns(world, a, b) {
        return true;
    }
    if has(world, a, Kind::Garbage) && world.rng.gen_bool(0.3) {
        send_garbage(world, a, b);
        return true;
    }
    false
}

/// How attacker `i` answers a request from `from`, when it answers badly; `None` to answer
/// like an honest node.
pub(super) fn answer(world: &mut World, i: usize, from: usize, bytes: &[u8]) -> Option<Vec<u8>> {
    if shuns(world, i, from) && !has(world, i, Kind::Endless) {
        // Silence: the round times out.
        return Some(Vec::new());
    }
    let request: Request = sync::decode(bytes).ok()?;
    if has(world, i, Kind::Garbage) && world.rng.gen_bool(0.2) {
        world.stats.attacks_made += 1;
        return Some(garbage(world, i));
    }
    let now = world.now_of(i);
    match request {
        Request::Hello { .. } if has(world, i, Kind::BadResponder) && world.rng.gen_bool(0.3) => {
            // A vector naming authors nobody has, and far sequences of real ones.
            world.stats.attacks_made += 1;
            let mut vector = world.nodes[i].engine.version_vector().ok()?;
            for (_, (seq, _)) in vector.entries.iter_mut() {
                if world.rng.gen_bool(0.5) {
                    *seq += world.rng.gen_range(1..1_000_000);
                }
            }
            for _ in 0..world.rng.gen_range(1..50) {
                let author: [u8; 32] = world.rng.r#gen();
                let head: [u8; 32] = world.rng.r#gen();
                vector.entries.insert(
                    author,
                    (
                        world.rng.gen_range(1..u64::MAX / 2),
                        crate::config::Hash32(head),
                    ),
                );
            }
            let vector = VersionVector {
                entries: vector.entries,
            };
            sync::encode(&Response::Vector {
                config_version: world.nodes[i].engine.store().config().highest(),
                vector,
            })
            .ok()
        }
        Request::Want { ranges } => {
            if has(world, i, Kind::Endless) {
                // The same batch, and `more` for ever.
                world.stats.attacks_made += 1;
                let cached = world.attackers.get(&i).and_then(|s| s.endless.clone());
                let events = match cached {
                    Some(events) => events,
                    None => {
                        let Response::Events { events, .. } =
                            world.nodes[i].engine.respond(Request::Want { ranges }, now)
                        else {
                            return None;
                        };
                        if events.is_empty() {
                            return None;
                        }
                        if let Some(s) = world.attackers.get_mut(&i) {
                            s.endless = Some(events.clone());
                        }
                        events
                    }
                };
                return sync::encode(&Response::Events { events, more: true }).ok();
            }
            if has(world, i, Kind::BadResponder) && world.rng.gen_bool(0.4) {
                // The answer's events repeated, up to the batch bound, in full form.
                world.stats.attacks_made += 1;
                let Response::Events { events, more } =
                    world.nodes[i].engine.respond(Request::Want { ranges }, now)
                else {
                    return None;
                };
                let full: Vec<Vec<u8>> = crate::event::expand_batch(&events)
                    .into_iter()
                    .filter_map(Result::ok)
                    .collect();
                if full.is_empty() {
                    return None;
                }
                let copies = world.rng.gen_range(2..=8);
                let mut out = Vec::new();
                let mut bytes = 0usize;
                'fill: for _ in 0..copies {
                    for e in &full {
                        if out.len() >= crate::limits::SYNC_BATCH_EVENTS_MAX
                            || bytes + e.len() > crate::limits::SYNC_MESSAGE_MAX_BYTES / 2
                        {
                            break 'fill;
                        }
                        bytes += e.len();
                        out.push(e.clone());
                    }
                }
                return sync::encode(&Response::Events { events: out, more }).ok();
            }
            None
        }
        _ => None,
    }
}
