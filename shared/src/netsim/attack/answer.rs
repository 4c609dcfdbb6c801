//! Garbage, and bad answers to rounds: bogus vectors, endless and repeated batches.

use rand::Rng;
use time::OffsetDateTime;

use super::{Kind, has, net, record, shuns};
use crate::netsim::World;
use crate::sync::{self, Range, Request, Response, VersionVector};

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
        // No hello to mangle: the mangling cases then send (mangled) nothing.
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

pub(super) fn send_garbage(world: &mut World, i: usize, to: usize) {
    let bytes = garbage(world, i);
    record(world, i, None);
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
pub(in crate::netsim) fn initiate(world: &mut World, a: usize, b: usize) -> bool {
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
pub(in crate::netsim) fn answer(
    world: &mut World,
    i: usize,
    from: usize,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    if shuns(world, i, from) && !has(world, i, Kind::Endless) {
        // Silence: the round times out.
        return Some(Vec::new());
    }
    let request: Request = sync::decode(bytes).ok()?;
    if has(world, i, Kind::Garbage) && world.rng.gen_bool(0.2) {
        record(world, i, None);
        return Some(garbage(world, i));
    }
    let now = world.now_of(i);
    match request {
        Request::Hello { .. } if has(world, i, Kind::BadResponder) && world.rng.gen_bool(0.3) => {
            bogus_vector(world, i)
        }
        Request::Want { ranges } => {
            if has(world, i, Kind::Endless) {
                return endless_batch(world, i, ranges, now);
            }
            if has(world, i, Kind::BadResponder) && world.rng.gen_bool(0.4) {
                return repeated_batch(world, i, ranges, now);
            }
            None
        }
        _ => None,
    }
}

/// A vector naming authors nobody has, and far sequences of real ones.
fn bogus_vector(world: &mut World, i: usize) -> Option<Vec<u8>> {
    record(world, i, None);
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

/// The same batch (the first answer, kept), and `more` for ever.
fn endless_batch(
    world: &mut World,
    i: usize,
    ranges: Vec<Range>,
    now: OffsetDateTime,
) -> Option<Vec<u8>> {
    record(world, i, None);
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
    sync::encode(&Response::Events { events, more: true }).ok()
}

/// The answer's events repeated, up to the batch bound, in full form.
fn repeated_batch(
    world: &mut World,
    i: usize,
    ranges: Vec<Range>,
    now: OffsetDateTime,
) -> Option<Vec<u8>> {
    record(world, i, None);
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
    sync::encode(&Response::Events { events: out, more }).ok()
}
