//! The sync protocol over request-response: rounds this node opens (each step computed on the
//! engine thread, fetched batches checked and stored while the next travels), pushes of fresh
//! events, and the answers to peers' requests at a bounded rate per peer.

use std::time::Instant;

use anyhow::Result;
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use passerelle_core::event::Event;
use passerelle_core::round::{Round, Step};
use passerelle_core::sync::{Request, Response};
use time::OffsetDateTime;

use super::{
    Inner, Network, PUSH_EVENTS_MAX, PUSHES_IN_FLIGHT_PER_PEER_MAX, Pending, SERVE_WAIT_MAX,
    to_swarm,
};

/// Fetched batches a round may have in hand (being checked or waiting to be queued to the
/// engine) before it waits for them to be queued before fetching more.
const STORING_AHEAD_MAX: usize = 4;

impl Network {
    pub(super) fn start_round(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.round_active = true;
        state.round_wanted = false;
        state.last_round = Some(Instant::now());
        state.round_started = state.last_round;
        state.round_gen += 1;
        let round_no = state.round_gen;
        let engine = self.engine.clone();
        let tx = self.inner_tx.clone();
        tokio::spawn(async move {
            let message = match engine.round_start().await {
                Ok((round, request)) => {
                    Inner::RoundStep(peer, round_no, round, Ok(Step::Send(request)))
                }
                Err(e) => {
                    Inner::RoundStep(peer, round_no, Box::new(Round::idle()), Err(e.to_string()))
                }
            };
            to_swarm(&tx, message).await;
        });
    }

    pub(super) fn push(&mut self, events: Vec<Event>) {
        let wire: Vec<Vec<u8>> = events.iter().map(Event::encode).collect();
        let connected: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(p, _)| *p)
            .collect();
        // Chunks within the batch bounds (events and bytes), so every push fits a message.
        let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut bytes = 0usize;
        for w in wire {
            let full = chunks.last().is_none_or(|c| {
                c.len() >= PUSH_EVENTS_MAX
                    || (bytes + w.len() > passerelle_core::limits::SYNC_BATCH_MAX_BYTES
                        && !c.is_empty())
            });
            if full {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += w.len();
            if let Some(c) = chunks.last_mut() {
                c.push(w);
            }
        }
        for chunk in chunks {
            let events = passerelle_core::event::compact_batch(chunk);
            for peer in &connected {
                let Some(state) = self.peers.get_mut(peer) else {
                    continue;
                };
                if state.pushes_in_flight >= PUSHES_IN_FLIGHT_PER_PEER_MAX {
                    state.round_wanted = true;
                    continue;
                }
                state.pushes_in_flight += 1;
                let id = self.swarm.behaviour_mut().sync.send_request(
                    peer,
                    Request::Push {
                        events: events.clone(),
                    },
                );
                self.pending.insert(id, (*peer, Pending::Push));
            }
        }
    }

    /// The next step of the current round with `peer`.
    pub(super) fn on_round_step(
        &mut self,
        peer: PeerId,
        round_no: u64,
        round: Box<Round>,
        step: Result<Step, String>,
    ) {
        match step {
            Ok(Step::SendAndAdmit(request, events)) => {
                self.admit_then_send(peer, round_no, round, request, events);
            }
            Ok(Step::Send(request)) => {
                if self.peers.get(&peer).is_some_and(|s| s.connected) {
                    let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                    self.pending
                        .insert(id, (peer, Pending::Round(round_no, round)));
                } else {
                    self.round_over(peer);
                }
            }
            Ok(Step::Done(report)) => {
                if let Some(cut) = report.cut_short {
                    tracing::warn!(%peer, fetched = report.fetched, "sync round cut short: {cut}");
                    self.rounds_cut_short += 1;
                    if let Some(state) = self.peers.get_mut(&peer)
                        && cut.resume_soon()
                    {
                        state.round_wanted = true;
                    }
                }
                self.publish_view();
                if report.admitted + report.pushed > 0 {
                    tracing::info!(
                        %peer,
                        fetched = report.fetched,
                        admitted = report.admitted,
                        pushed = report.pushed,
                        "sync round"
                    );
                }
                self.round_over(peer);
            }
            Err(e) => {
                tracing::warn!(%peer, "sync round failed: {e}");
                self.round_over(peer);
            }
        }
    }

    /// A round's next request goes out while the batch it fetched is checked and stored.
    pub(super) fn admit_then_send(
        &mut self,
        peer: PeerId,
        round_no: u64,
        round: Box<Round>,
        request: Request,
        events: Vec<Event>,
    ) {
        // Signatures are checked off the engine thread (the one writer, on all
        // cores) while the next batch travels and the engine stores the one before;
        // batches are queued to the engine in the order they were fetched. When
        // too many are in hand, the next is asked for once this one is queued.
        use std::sync::atomic::Ordering;
        let before = self.last_queued.take();
        let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
        self.last_queued = Some(queued_rx);
        let storing = self.storing.clone();
        let ahead = storing.fetch_add(1, Ordering::SeqCst) < STORING_AHEAD_MAX;
        let mut later = Some((round, request));
        if ahead && let Some((round, request)) = later.take() {
            self.on_inner(Inner::RoundStep(
                peer,
                round_no,
                round,
                Ok(Step::Send(request)),
            ));
        }
        let engine = self.engine.clone();
        let inner = self.inner_tx.clone();
        tokio::spawn(async move {
            let checked = tokio::task::spawn_blocking(move || {
                Event::verify_all(&events);
                events
            })
            .await;
            if let Some(before) = before
                && before.await.is_err()
            {
                // The batch before ended without being queued (its round failed):
                // nothing to wait for.
                tracing::debug!(%peer, "the batch before this one was not queued");
            }
            let queued = match checked {
                Ok(events) => engine.receive(events).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if queued_tx.send(()).is_err() {
                tracing::debug!(%peer, "no batch waits behind this one");
            }
            storing.fetch_sub(1, Ordering::SeqCst);
            if let Some((round, request)) = later {
                let step = queued.map(|()| Step::Send(request));
                to_swarm(&inner, Inner::RoundStep(peer, round_no, round, step)).await;
            }
        });
    }

    pub(super) fn push_answered(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.pushes_in_flight = state.pushes_in_flight.saturating_sub(1);
        }
    }

    pub(super) fn round_over(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.round_active = false;
        }
    }

    pub(super) fn on_sync(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message,
            } => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.heard(None);
                    if let Some(conn) = state.conns.get_mut(&connection_id) {
                        conn.last_heard = Instant::now();
                    }
                    if let request_response::Message::Request {
                        request: Request::Hello { digest, .. },
                        ..
                    } = &message
                    {
                        state.digest = Some((*digest, OffsetDateTime::now_utc()));
                    }
                }
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.answer(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.on_response(request_id, response),
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, "sync request failed: {error}");
                match self.pending.remove(&request_id) {
                    Some((peer, Pending::Round(round_no, _)))
                        if self
                            .peers
                            .get(&peer)
                            .is_some_and(|s| s.round_gen == round_no) =>
                    {
                        self.round_over(peer);
                    }
                    Some((peer, Pending::Push)) => self.push_answered(peer),
                    _ => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound sync request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn answer(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        let pushed = match &request {
            Request::Push { events } => events.len(),
            _ => 0,
        };
        // Each peer is served at a bounded rate: a member asking the same ranges again and
        // again gets slowed down (a short wait), then refused, instead of taking the engine
        // thread and the link. Bytes served are charged once the answer is known.
        let now = Instant::now();
        let is_want = matches!(request, Request::Want { .. });
        let wait = self.peers.get_mut(&peer).map(|state| {
            let wait = if is_want {
                state.wants.take(1.0, now).max(state.served.deficit(now))
            } else {
                state.requests.take(1.0, now)
            };
            if wait > SERVE_WAIT_MAX {
                // Refused: the request is not charged.
                if is_want {
                    state.wants.give_back(1.0);
                } else {
                    state.requests.give_back(1.0);
                }
            }
            wait
        });
        let Some(wait) = wait.filter(|w| *w <= SERVE_WAIT_MAX) else {
            self.requests_rate_limited += 1;
            if self.requests_rate_limited.is_power_of_two() {
                tracing::warn!(%peer, refused = self.requests_rate_limited, "a peer asks faster than it is served: requests refused");
            }
            let refused = Response::Refused {
                reason: "rate limited: this peer asks faster than it is served".into(),
            };
            if self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, refused)
                .is_err()
            {
                tracing::debug!(%peer, "a peer left before its refusal was sent");
            }
            return;
        };
        let engine = self.engine.clone();
        let tx = self.inner_tx.clone();
        tokio::spawn(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let response = engine
                .respond(request)
                .await
                .unwrap_or_else(|e| Response::Refused {
                    reason: e.to_string(),
                });
            // A push that could not all be admitted (a gap, or a configuration version not
            // held yet) asks for a round with that peer, to fetch what is missing.
            let short = match &response {
                Response::Received { admitted } => (*admitted as usize) < pushed,
                _ => false,
            };
            if let Response::Events { events, .. } = &response {
                let bytes = events.iter().map(Vec::len).sum::<usize>();
                to_swarm(&tx, Inner::Served(peer, bytes)).await;
            }
            to_swarm(&tx, Inner::Respond(channel, response)).await;
            if short {
                to_swarm(&tx, Inner::WantRound(peer)).await;
            }
        });
    }

    pub(super) fn on_response(&mut self, request_id: OutboundRequestId, response: Response) {
        let Some((peer, pending)) = self.pending.remove(&request_id) else {
            return;
        };
        match pending {
            Pending::Push => {
                self.push_answered(peer);
                if let Response::Refused { reason } = response {
                    tracing::debug!(%peer, "a push was refused: {reason}");
                }
            }
            Pending::Round(round_no, round) => {
                let engine = self.engine.clone();
                let tx = self.inner_tx.clone();
                let node = passerelle_core::keys::NodeId(peer);
                tokio::spawn(async move {
                    let message = match engine.round_step(node, round, response).await {
                        Ok(stepped) => {
                            if let Some(digest) = stepped.digest {
                                to_swarm(&tx, Inner::PeerDigest(peer, digest)).await;
                            }
                            Inner::RoundStep(peer, round_no, stepped.round, stepped.step)
                        }
                        Err(e) => Inner::RoundStep(
                            peer,
                            round_no,
                            Box::new(Round::idle()),
                            Err(e.to_string()),
                        ),
                    };
                    to_swarm(&tx, message).await;
                });
            }
        }
    }
}
