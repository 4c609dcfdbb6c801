//! Messages and sync rounds between simulated nodes: pushes, the initiator's and the
//! responder's sides of a round, timeouts.

use rand::Rng;
use time::OffsetDateTime;

use super::{Pending, ROUND_STEPS_MAX, ROUND_TIMEOUT_MS, World, attack, net, push_bytes};
use crate::event::Event;
use crate::sync::round::{Round, RoundReport, Step};
use crate::sync::{self, Request, Response};

impl World {
    pub(super) fn random_peer(&mut self, i: usize) -> usize {
        let n = self.nodes.len();
        (i + self.rng.gen_range(1..n)) % n
    }

    /// Pushes the events node `i` created since the last push to every other node.
    pub(super) fn push_fresh(&mut self, i: usize) {
        let fresh = self.nodes[i].engine.take_fresh();
        if fresh.is_empty() {
            return;
        }
        let Some(bytes) = push_bytes(&fresh) else {
            return;
        };
        for to in 0..self.nodes.len() {
            if to != i && !attack::shuns(self, i, to) {
                self.send(
                    i,
                    to,
                    net::Payload::Push {
                        bytes: bytes.clone(),
                    },
                );
            }
        }
    }

    pub(super) fn send(&mut self, from: usize, to: usize, payload: net::Payload) {
        let message = net::Message { from, to, payload };
        self.net.send(&mut self.rng, self.now_ms, message);
    }

    /// Node `a` opens a round with `b`, unless one is open already.
    pub(super) fn start_round(&mut self, a: usize, b: usize) {
        if a == b || self.nodes[a].busy.contains(&b) {
            return;
        }
        if !self.nodes[a].honest() && attack::initiate(self, a, b) {
            return;
        }
        let (round, hello) = match Round::start(&self.nodes[a].engine) {
            Ok(x) => x,
            Err(e) => {
                self.note_error(a, "round start", &e);
                return;
            }
        };
        let Ok(bytes) = sync::encode(&hello) else {
            return;
        };
        self.next_round += 1;
        let id = self.next_round;
        let deadline_ms = self.now_ms + ROUND_TIMEOUT_MS;
        let node = &mut self.nodes[a];
        node.busy.insert(b);
        node.rounds.insert(
            id,
            Pending {
                peer: b,
                round,
                step: 0,
                deadline_ms,
            },
        );
        self.send(
            a,
            b,
            net::Payload::Request {
                round: id,
                step: 0,
                bytes,
            },
        );
    }

    pub(super) fn expire_rounds(&mut self, i: usize) {
        let now = self.now_ms;
        let expired: Vec<u64> = self.nodes[i]
            .rounds
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_round(i, id);
            self.stats.rounds_timed_out += 1;
        }
    }

    fn end_round(&mut self, i: usize, id: u64) {
        if let Some(p) = self.nodes[i].rounds.remove(&id) {
            self.nodes[i].busy.remove(&p.peer);
        }
    }

    pub(super) fn deliver(&mut self, message: net::Message) {
        let net::Message { from, to, payload } = message;
        match payload {
            net::Payload::Request { round, step, bytes } => {
                let answer = if self.nodes[to].honest() {
                    None
                } else {
                    attack::answer(self, to, from, &bytes)
                };
                let answer = match answer {
                    Some(answer) => Some(answer),
                    None => self.respond(to, from, &bytes),
                };
                if let Some(bytes) = answer.filter(|b| !b.is_empty()) {
                    self.send(to, from, net::Payload::Response { round, step, bytes });
                }
            }
            net::Payload::Push { bytes } => {
                self.respond(to, from, &bytes);
            }
            net::Payload::Response { round, step, bytes } => {
                self.on_response(to, round, step, &bytes);
            }
        }
    }

    /// The responder's side: decode, answer with the engine, encode. `None` when the request
    /// does not decode (a transport would reset the stream) or the answer cannot be encoded.
    fn respond(&mut self, i: usize, from: usize, bytes: &[u8]) -> Option<Vec<u8>> {
        let request: Request = match sync::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.stats.garbage_refused += 1;
                if self.nodes[from].honest() {
                    let (a, b) = (self.nodes[from].name.clone(), self.nodes[i].name.clone());
                    self.violate(
                        "honest_messages_decode",
                        format!("{b} could not decode a request from honest {a}: {e}"),
                    );
                }
                return None;
            }
        };
        let now = self.now_of(i);
        let response = self.nodes[i].engine.respond(request, now);
        if let Response::Refused { reason } = &response
            && (reason.starts_with("the node's database")
                || reason.starts_with("more than")
                || reason.contains("cannot read ("))
        {
            let name = self.nodes[i].name.clone();
            self.violate("no_storage_error", format!("{name} answering: {reason}"));
        }
        sync::encode(&response).ok()
    }

    /// The initiator's side: feed the answer to the round, send what it asks next.
    fn on_response(&mut self, i: usize, round: u64, step: u32, bytes: &[u8]) {
        let Some(pending) = self.nodes[i].rounds.get(&round) else {
            return; // A late or duplicated answer to a round already over.
        };
        if pending.step != step {
            return; // A duplicated answer to an earlier step.
        }
        let peer = pending.peer;
        let response: Response = match sync::decode(bytes) {
            Ok(r) => r,
            Err(_) => {
                self.stats.garbage_refused += 1;
                self.stats.rounds_failed += 1;
                self.end_round(i, round);
                return;
            }
        };
        let now = self.now_of(i);
        let Some((request, events)) = self.feed_round(i, round, peer, response, now) else {
            return;
        };
        if !events.is_empty()
            && let Err(e) = self.nodes[i].engine.receive(&events, now)
        {
            self.note_error(i, "receive", &e);
        }
        self.ask_next(i, round, peer, &request);
    }

    /// Feeds the answer to node `i`'s round with `peer`: the request it asks next and the
    /// events to admit meanwhile, or `None` when the round is over (done or failed).
    fn feed_round(
        &mut self,
        i: usize,
        round: u64,
        peer: usize,
        response: Response,
        now: OffsetDateTime,
    ) -> Option<(Request, Vec<Event>)> {
        let node = &mut self.nodes[i];
        let pending = node.rounds.get_mut(&round)?;
        let result = pending.round.on_response(&mut node.engine, response, now);
        match result {
            Ok(Step::Send(request)) => Some((request, Vec::new())),
            Ok(Step::SendAndAdmit(request, events)) => Some((request, events)),
            Ok(Step::Done(report)) => {
                self.stats.rounds_done += 1;
                if report != RoundReport::default() {
                    let (a, b) = (self.nodes[i].name.clone(), self.nodes[peer].name.clone());
                    self.log(format!(
                        "round {a} -> {b}: fetched {}, admitted {}, pushed {}",
                        report.fetched, report.admitted, report.pushed
                    ));
                }
                self.end_round(i, round);
                None
            }
            Err(e) => {
                self.stats.rounds_failed += 1;
                let (a, b) = (self.nodes[i].name.clone(), self.nodes[peer].name.clone());
                self.log(format!("round {a} -> {b} failed: {e}"));
                self.note_error(i, "round", &e);
                self.end_round(i, round);
                None
            }
        }
    }

    /// Sends the round's next request, unless the round asked too many times already (a
    /// responder holding it open) or the request does not encode.
    fn ask_next(&mut self, i: usize, round: u64, peer: usize, request: &Request) {
        let Some(pending) = self.nodes[i].rounds.get_mut(&round) else {
            return;
        };
        pending.step += 1;
        pending.deadline_ms = self.now_ms + ROUND_TIMEOUT_MS;
        if pending.step >= ROUND_STEPS_MAX {
            self.stats.rounds_cut_off += 1;
            let (a, b) = (self.nodes[i].name.clone(), self.nodes[peer].name.clone());
            if self.nodes[i].honest() {
                self.violate(
                    "rounds_end",
                    format!(
                        "{a}'s round with {b} asked {ROUND_STEPS_MAX} times and still wanted more"
                    ),
                );
            }
            self.end_round(i, round);
            return;
        }
        let step = pending.step;
        match sync::encode(request) {
            Ok(bytes) => self.send(i, peer, net::Payload::Request { round, step, bytes }),
            Err(e) => {
                let a = self.nodes[i].name.clone();
                if self.nodes[i].honest() {
                    self.violate("honest_messages_encode", format!("{a}: {e}"));
                }
                self.end_round(i, round);
            }
        }
    }
}
