//! What this node knows of each member (connections, liveness, rates it is served at, where to
//! dial it) and the dialling with backoff.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use libp2p::swarm::{ConnectionId, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use passerelle_core::config::Hash32;
use time::OffsetDateTime;

use super::{
    DIAL_BACKOFF_MAX, DIAL_BACKOFF_MIN, Network, PEER_SILENT_AFTER, REDIAL_SOON_MAX,
    SERVE_BYTES_BURST, SERVE_BYTES_PER_SEC, SERVE_REQUESTS_BURST, SERVE_REQUESTS_PER_SEC,
    SERVE_WANTS_BURST, SERVE_WANTS_PER_SEC,
};
use crate::daemon::engine_thread::Member;
use crate::rpc::PeerView;

#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) org: String,
    pub(super) label: String,
    pub(super) connected: bool,
    /// When the peer was last heard from (a ping answered, a sync message): what `status`
    /// shows, so a connection that carries nothing any more is not called alive.
    pub(super) last_seen: Option<OffsetDateTime>,
    pub(super) last_heard: Option<Instant>,
    /// The last ping round trip.
    pub(super) rtt: Option<Duration>,
    /// Open connections.
    pub(super) connections: u32,
    /// Each open connection: when it was established and last heard from.
    pub(super) conns: HashMap<ConnectionId, Conn>,
    /// The current round's number: results of a round given up (or of a connection gone)
    /// come back with an older number and are dropped.
    pub(super) round_gen: u64,
    pub(super) round_started: Option<Instant>,
    /// Pushes sent to the peer and not yet answered.
    pub(super) pushes_in_flight: usize,
    /// What this node serves the peer, each at a bounded rate: its `Want`s, the bytes of
    /// events they cost, and its other requests.
    pub(super) wants: TokenBucket,
    pub(super) served: TokenBucket,
    pub(super) requests: TokenBucket,
    /// The digest of the peer's version vector as it last told it (its `Hello`, or the end of
    /// a round with it), and when: `status` compares it with this node's.
    pub(super) digest: Option<(Hash32, OffsetDateTime)>,
    pub(super) addrs: Vec<Multiaddr>,
    pub(super) next_dial: Instant,
    pub(super) backoff: Duration,
    pub(super) round_active: bool,
    pub(super) round_wanted: bool,
    pub(super) last_round: Option<Instant>,
    /// The address this node last dialled the peer at directly (to reserve a relay slot there).
    pub(super) dialed: Option<Multiaddr>,
}

impl PeerState {
    /// A member not heard from yet, to be dialled at once.
    fn new(org: String, label: String, now: Instant) -> Self {
        Self {
            org,
            label,
            connected: false,
            last_seen: None,
            last_heard: None,
            rtt: None,
            connections: 0,
            conns: HashMap::new(),
            round_gen: 0,
            round_started: None,
            pushes_in_flight: 0,
            wants: TokenBucket::new(SERVE_WANTS_PER_SEC, SERVE_WANTS_BURST),
            served: TokenBucket::new(SERVE_BYTES_PER_SEC, SERVE_BYTES_BURST),
            requests: TokenBucket::new(SERVE_REQUESTS_PER_SEC, SERVE_REQUESTS_BURST),
            digest: None,
            addrs: Vec::new(),
            next_dial: now,
            backoff: DIAL_BACKOFF_MIN,
            round_active: false,
            round_wanted: false,
            last_round: None,
            dialed: None,
        }
    }

    /// The peer was just heard from.
    pub(super) fn heard(&mut self, rtt: Option<Duration>) {
        self.last_heard = Some(Instant::now());
        self.last_seen = Some(OffsetDateTime::now_utc());
        if rtt.is_some() {
            self.rtt = rtt;
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` held. Taking more than is held
/// leaves a debt, which is the wait the next request must make.
#[derive(Debug)]
pub(super) struct TokenBucket {
    pub(super) tokens: f64,
    pub(super) rate: f64,
    pub(super) burst: f64,
    pub(super) last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            last: Instant::now(),
        }
    }

    pub(super) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until the debt (if any) is paid.
    pub(super) fn deficit(&mut self, now: Instant) -> Duration {
        self.refill(now);
        Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }

    /// Takes `cost` tokens; returns how long the taker should wait for them.
    pub(super) fn take(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= cost;
        Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }

    pub(super) fn give_back(&mut self, cost: f64) {
        self.tokens = (self.tokens + cost).min(self.burst);
    }
}

/// One open connection to a peer.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) established: Instant,
    pub(super) last_heard: Instant,
    pub(super) ping_failures: u32,
}

/// A --peer address without a node id: dialled with its own backoff until it connects.
#[derive(Debug)]
pub(super) struct Bootstrap {
    pub(super) addr: Multiaddr,
    pub(super) next_dial: Instant,
    pub(super) backoff: Duration,
}

/// A wait drawn between half and all of `backoff`: two ends of a link never redial in phase.
pub(super) fn jittered(backoff: Duration) -> Duration {
    use rand::Rng;
    backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// The next backoff after a failed attempt.
pub(super) fn doubled(backoff: Duration) -> Duration {
    (backoff * 2).min(DIAL_BACKOFF_MAX)
}

/// An address without its trailing /p2p/PEER.
pub(super) fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

impl Network {
    /// Rebuilds the allow-list and the peer table from the configuration in force: a node
    /// that left is disconnected and refused from now on.
    pub(super) async fn refresh_members(&mut self) -> Result<()> {
        let members = self.engine.members().await?;
        let now = Instant::now();
        let wanted: HashSet<PeerId> = members
            .iter()
            .map(|m| m.id)
            .filter(|p| *p != self.me)
            .collect();
        let gone: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|p| !wanted.contains(p))
            .copied()
            .collect();
        for peer in gone {
            self.swarm.behaviour_mut().allow.disallow_peer(peer);
            self.peers.remove(&peer);
            tracing::info!(%peer, "node left the configuration: disconnected and refused");
        }
        let configured: Vec<Multiaddr> = members
            .iter()
            .flat_map(|m| m.addresses.iter().filter_map(|a| a.parse().ok()))
            .collect();
        self.swarm.behaviour_mut().guard.set_configured(&configured);
        for Member {
            id: peer,
            org,
            label,
            addresses,
        } in members
        {
            if peer == self.me {
                continue;
            }
            self.swarm.behaviour_mut().allow.allow_peer(peer);
            let addrs: Vec<Multiaddr> = addresses.iter().filter_map(|a| a.parse().ok()).collect();
            let state = self
                .peers
                .entry(peer)
                .or_insert_with(|| PeerState::new(org.clone(), label.clone(), now));
            state.org = org;
            state.label = label;
            for a in addrs {
                if !state.addrs.contains(&a) {
                    state.addrs.push(a);
                }
            }
        }
        self.publish_view();
        Ok(())
    }

    pub(super) fn publish_view(&self) {
        let now = Instant::now();
        let peers = self
            .peers
            .iter()
            .map(|(id, p)| PeerView {
                node_id: id.to_base58(),
                org: p.org.clone(),
                label: p.label.clone(),
                connected: p.connected,
                last_seen: p.last_seen.map(passerelle_core::time_fmt::rfc3339),
                state: if !p.connected {
                    "not connected"
                } else if p
                    .last_heard
                    .is_none_or(|t| now.duration_since(t) > PEER_SILENT_AFTER)
                {
                    "silent"
                } else {
                    "connected"
                }
                .into(),
                connections: p.connections,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
                digest: p.digest.map(|(d, _)| d.to_hex()),
                digest_at: p
                    .digest
                    .map(|(_, at)| passerelle_core::time_fmt::rfc3339(at)),
                ..PeerView::default()
            })
            .collect();
        let (sent, received) = self.bytes();
        if let Ok(mut view) = self.view.lock() {
            view.peers = peers;
            view.running = true;
            view.sync_bytes_sent = sent;
            view.sync_bytes_received = received;
            view.rounds_cut_short = self.rounds_cut_short;
            view.requests_rate_limited = self.requests_rate_limited;
            view.listen = self.listening();
        }
    }

    /// Redials members with known addresses, and through the relays that hold a slot for us
    /// (a member behind NAT is reachable there if it holds one too), with backoff.
    pub(super) fn redial(&mut self, now: Instant) {
        let mut dials = Vec::new();
        for (peer, state) in &mut self.peers {
            if state.connected || now < state.next_dial {
                continue;
            }
            let mut addrs = state.addrs.clone();
            for (relay, slot) in &self.relays {
                let circuit = slot
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(*peer));
                if relay != peer && !addrs.contains(&circuit) {
                    addrs.push(circuit);
                }
            }
            if addrs.is_empty() {
                continue;
            }
            state.next_dial = now + jittered(state.backoff);
            state.backoff = doubled(state.backoff);
            // A dial still hanging on a cut link (a SYN unanswered) must not hold back a new
            // one once the link is back: each attempt is bounded by CONNECTION_SETUP_TIMEOUT.
            dials.push(
                DialOpts::peer_id(*peer)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Disconnected)
                    .addresses(addrs)
                    .build(),
            );
        }
        let connected_addrs: HashSet<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.connected)
            .map(|(p, _)| *p)
            .collect();
        for b in &mut self.bootstrap {
            let known = b.addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            });
            if known.is_some_and(|id| connected_addrs.contains(&id)) {
                continue;
            }
            if now >= b.next_dial {
                b.next_dial = now + jittered(b.backoff);
                b.backoff = doubled(b.backoff);
                dials.push(DialOpts::unknown_peer_id().address(b.addr.clone()).build());
            }
        }
        for d in dials {
            if let Err(e) = self.swarm.dial(d) {
                tracing::debug!("dial: {e}");
            }
        }
    }

    /// A link came back (a connection was established, the interfaces changed): peers still
    /// disconnected are redialled shortly, from the shortest backoff, instead of waiting out
    /// a backoff grown while the network was down.
    pub(super) fn redial_soon(&mut self) {
        let soon = Instant::now() + jittered(REDIAL_SOON_MAX);
        for state in self.peers.values_mut().filter(|s| !s.connected) {
            state.backoff = DIAL_BACKOFF_MIN;
            state.next_dial = state.next_dial.min(soon);
        }
        for b in &mut self.bootstrap {
            b.backoff = DIAL_BACKOFF_MIN;
            b.next_dial = b.next_dial.min(soon);
        }
    }
}
