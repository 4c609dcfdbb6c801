//! The libp2p side of the daemon: TCP and QUIC with Noise and Yamux, identify and ping, the
//! connection allow-list built from the configuration, connection limits, redialling with
//! backoff, opt-in mDNS, circuit relay (a node run with `--relay` relays between members; every
//! node reserves a slot at the relays it dials and reaches unreachable members through them,
//! with DCUtR upgrading a relayed connection to a direct one when hole punching works), and
//! the sync protocol carried by request-response.
//!
//! The swarm lives in one task. Whatever needs the engine (answering a request, the next step
//! of a round) runs as a job on the engine's thread; the result comes back to this task
//! through a channel, so the swarm keeps being polled meanwhile.
//!
//! `behaviour` builds the swarm (transports and behaviours); `peers` keeps what this node knows
//! of each member and dials them; `events` handles what the swarm reports (listeners,
//! connections, identify, ping, mDNS, relay); `sync` drives rounds and pushes and answers
//! peers' requests.

mod behaviour;
mod events;
mod peers;
mod sync;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, Swarm};
use passerelle_core::config::Hash32;
use passerelle_core::engine::Engine;
use passerelle_core::round::{Round, Step};
use passerelle_core::sync::Response;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::codec::Counters;
use super::engine_thread::{EngineHandle, EngineSignals};
use crate::rpc::{self, NetworkView};
use behaviour::{Behaviour, build_swarm};
use peers::{Bootstrap, PeerState};

/// Most established connections.
pub const CONNECTIONS_MAX: u32 = 64;

/// Most connections kept to one peer (two when both ends dialled at once). One more may be
/// established for a moment: a peer that reconnects is never refused because this node still
/// holds its dead connections; the older ones are closed instead.
pub const CONNECTIONS_PER_PEER_MAX: u32 = 2;

/// Most outgoing connections being set up at once (dials to members; a dial hanging on a cut
/// link holds one for up to [`CONNECTION_SETUP_TIMEOUT`]). Incoming ones are bounded by
/// [`super::guard`], per address and with members preferred.
pub const PENDING_OUTGOING_MAX: u32 = 128;

/// How long a request may take before it fails. A batch is at most
/// [`passerelle_core::limits::SYNC_BATCH_MAX_BYTES`] (1 MiB): 20 s carries it at 0.5 Mbit/s,
/// and a dead connection is found sooner by pings and TCP timeouts anyway.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long setting up a connection (TCP connect, Noise, Yamux) may take, each way.
pub const CONNECTION_SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that carries no request for this long is closed (rounds run every
/// [`ROUND_INTERVAL`], so a live peer's connection is never idle this long).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// TCP keepalive: probes start after this much silence, repeat at the interval, and this many
/// unanswered ones close the connection.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);

pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);

pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Data left unacknowledged this long closes a TCP connection (`TCP_USER_TIMEOUT`): pings
/// send data every [`PING_INTERVAL`], so a cut link is noticed within about this long instead
/// of after the kernel's retransmission backoff (26–52 s seen).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(8);

/// Consecutive missed pings that close a connection.
pub const PING_FAILURES_MAX: u32 = 2;

/// A connection nothing was heard on (no ping answered, no message) for this long is closed:
/// the backstop for links TCP cannot judge (a relayed circuit whose far side is gone). Long
/// enough that a slow field link busy with a batch is not cut.
pub const CONNECTION_SILENT_MAX: Duration = Duration::from_secs(20);

/// A round this node opened that has not ended after this long is given up (a stuck
/// connection must not stall sync with that peer).
pub const ROUND_DURATION_MAX: Duration = Duration::from_secs(60);

/// Most Yamux streams open at once on one connection (the default, 512, let one
/// peer make this node buffer 512 stream windows).
pub const YAMUX_STREAMS_MAX: usize = 48;

/// Most sync streams (requests both ways) open at once on one connection; the rest of
/// [`YAMUX_STREAMS_MAX`] is left to ping, identify and the relay.
pub const SYNC_STREAMS_PER_CONNECTION_MAX: usize = 32;

/// Most pushes in flight to one peer: past it, fresh events wait for the next round (which
/// carries them anyway), so a burst of local writes cannot use up the peer's streams.
pub const PUSHES_IN_FLIGHT_PER_PEER_MAX: usize = 8;

/// Most events in one push.
pub const PUSH_EVENTS_MAX: usize = 512;

/// `Want`s served to one peer: per second, and in a burst. An honest round asks one batch at a
/// time, as fast as it can store them (a catch-up of 100,000 events on loopback asks about
/// 150, some 20 a second); a flood asked 1,900 a second.
pub const SERVE_WANTS_PER_SEC: f64 = 32.0;

pub const SERVE_WANTS_BURST: f64 = 128.0;

/// Bytes of events served to one peer: per second, and in a burst. Faster than a field link
/// and than a node stores a catch-up (about 20 MB/s here), so only a flood is slowed.
pub const SERVE_BYTES_PER_SEC: f64 = 32.0 * 1024.0 * 1024.0;

pub const SERVE_BYTES_BURST: f64 = 128.0 * 1024.0 * 1024.0;

/// Other requests (`Hello`, pushes) served to one peer: per second, and in a burst.
pub const SERVE_REQUESTS_PER_SEC: f64 = 64.0;

pub const SERVE_REQUESTS_BURST: f64 = 256.0;

/// A request over its peer's rate waits up to this long; past it, it is refused.
pub const SERVE_WAIT_MAX: Duration = Duration::from_secs(1);

/// How often a round runs with each connected peer even when nothing was pushed.
pub const ROUND_INTERVAL: Duration = Duration::from_secs(15);

/// The shortest pause between two rounds with one peer.
pub const ROUND_MIN_GAP: Duration = Duration::from_millis(500);

/// Backoff between dial attempts: first and longest. Each wait is drawn between half and all
/// of the current backoff, so both ends of a link do not redial in phase; it starts again from
/// the shortest when any connection is established or the network interfaces change (a link
/// came back). The longest bounds how long a heal can go unnoticed.
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_secs(1);

pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// When a link comes back, disconnected peers are redialled within this (jittered) delay.
pub const REDIAL_SOON_MAX: Duration = Duration::from_millis(500);

/// Listening addresses that appear later than this after start mean the interfaces changed.
pub const INTERFACES_SETTLED_AFTER: Duration = Duration::from_secs(2);

/// Messages from helper tasks waiting for the swarm task.
pub const INNER_QUEUE_MAX: usize = 1024;

/// How often each connection is pinged (liveness and the round trip `status` shows).
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// How long a ping may take before it counts as missed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(4);

/// A connected peer heard from longer ago than this is shown as `silent`, not `connected`.
pub const PEER_SILENT_AFTER: Duration = Duration::from_secs(3 * PING_INTERVAL.as_secs());

/// How often the network view (`status`) is refreshed even when nothing happened, so the
/// liveness it shows is current.
pub const VIEW_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// What the daemon asks of the network.
#[derive(Debug)]
pub struct NetOptions {
    /// Where to listen (libp2p binds the sockets; port 0 picks a free port).
    pub listen: Vec<Multiaddr>,
    pub peers: Vec<Multiaddr>,
    pub mdns: bool,
    pub relay: bool,
    /// Told the addresses this node listens on (each ending in /p2p/NODE_ID) once every
    /// listener has reported one.
    pub ready: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
}

/// Results of engine jobs, coming back to the swarm task.
enum Inner {
    Respond(ResponseChannel<Response>, Response),
    /// The next step of round number `u64` with this peer.
    RoundStep(PeerId, u64, Box<Round>, Result<Step, String>),
    /// Bytes of events this node served to the peer (charged to its rate).
    Served(PeerId, usize),
    /// A round ended complete: the digest both sides now hold (as far as this node knows).
    PeerDigest(PeerId, Hash32),
    /// A push from this peer could not all be admitted: a round will fetch what is missing.
    WantRound(PeerId),
}

enum Pending {
    Round(u64, Box<Round>),
    Push,
}

/// The network task.
pub struct Network {
    swarm: Swarm<Behaviour>,
    engine: EngineHandle,
    signals: EngineSignals,
    me: PeerId,
    peers: HashMap<PeerId, PeerState>,
    bootstrap: Vec<Bootstrap>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    inner_tx: mpsc::Sender<Inner>,
    inner_rx: mpsc::Receiver<Inner>,
    /// Fetched batches being checked or stored, and when the last of them is queued to the
    /// engine: each waits for the one before, so batches reach the engine in fetch order.
    storing: Arc<std::sync::atomic::AtomicUsize>,
    last_queued: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Member nodes that relay for us, with the address (ending in /p2p/RELAY) of our slot.
    relays: HashMap<PeerId, Multiaddr>,
    /// This node relays for members (`--relay`).
    relay_on: bool,
    view: Arc<Mutex<NetworkView>>,
    counters: Arc<Counters>,
    listen_file: std::path::PathBuf,
    /// Listeners that have not reported an address yet, and who waits until none is left.
    unready: HashSet<ListenerId>,
    ready: Option<tokio::sync::oneshot::Sender<Vec<String>>>,
    started: Instant,
    /// Rounds cut short by their bound, and peer requests refused for their rate (`status`).
    rounds_cut_short: u64,
    requests_rate_limited: u64,
}

impl Network {
    pub async fn start(
        keypair: libp2p::identity::Keypair,
        engine: EngineHandle,
        signals: EngineSignals,
        options: NetOptions,
        view: Arc<Mutex<NetworkView>>,
        counters: Arc<Counters>,
        listen_file: std::path::PathBuf,
    ) -> Result<Self> {
        let me = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair, counters.clone(), options.mdns, options.relay)?;
        let mut unready = HashSet::new();
        for addr in &options.listen {
            let id = swarm
                .listen_on(addr.clone())
                .with_context(|| format!("cannot listen on {addr}"))?;
            unready.insert(id);
        }
        let (inner_tx, inner_rx) = mpsc::channel(INNER_QUEUE_MAX);
        let now = Instant::now();
        let bootstrap = options
            .peers
            .iter()
            .map(|addr| Bootstrap {
                addr: addr.clone(),
                next_dial: now,
                backoff: DIAL_BACKOFF_MIN,
            })
            .collect();
        let mut network = Self {
            swarm,
            engine,
            signals,
            me,
            peers: HashMap::new(),
            bootstrap,
            pending: HashMap::new(),
            inner_tx,
            inner_rx,
            storing: Arc::default(),
            last_queued: None,
            relays: HashMap::new(),
            relay_on: options.relay,
            view,
            counters,
            listen_file,
            unready,
            ready: options.ready,
            started: Instant::now(),
            rounds_cut_short: 0,
            requests_rate_limited: 0,
        };
        network.refresh_members().await?;
        Ok(network)
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut held_tick = tokio::time::interval(Duration::from_secs(30));
        let mut retention_tick = tokio::time::interval(RETENTION_CHECK_INTERVAL);
        let mut view_tick = tokio::time::interval(VIEW_REFRESH_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                event = self.swarm.select_next_some() => {
                    self.note_listening(&event);
                    self.on_swarm_event(event);
                }
                Some(inner) = self.inner_rx.recv() => self.on_inner(inner),
                Some(fresh) = self.signals.fresh.recv() => self.push(fresh),
                Ok(()) = self.signals.received.changed() => {
                    // Store and forward: peers may lack what we just received. A round opens
                    // with a digest, so a peer that has it all costs a few bytes.
                    for state in self.peers.values_mut() {
                        if state.connected {
                            state.round_wanted = true;
                        }
                    }
                }
                Ok(()) = self.signals.config.changed() => {
                    if let Err(e) = self.refresh_members().await {
                        tracing::warn!("cannot refresh members: {e:#}");
                    }
                    tokio::spawn(share_keys(self.engine.clone()));
                }
                _ = tick.tick() => self.on_tick(),
                _ = view_tick.tick() => self.publish_view(),
                _ = held_tick.tick() => {
                    tokio::spawn(retry_held(self.engine.clone()));
                }
                _ = retention_tick.tick() => {
                    tokio::spawn(purge_due(self.engine.clone()));
                }
            }
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        // Connections nothing was heard on for too long are closed, and rounds that never
        // ended are given up: both ends saying `connected` must mean something.
        let mut silent = Vec::new();
        for (peer, state) in &mut self.peers {
            for (id, conn) in &state.conns {
                if now.duration_since(conn.last_heard) > CONNECTION_SILENT_MAX {
                    silent.push((*peer, *id));
                }
            }
            if state.round_active
                && state
                    .round_started
                    .is_some_and(|t| now.duration_since(t) > ROUND_DURATION_MAX)
            {
                tracing::warn!(
                    %peer,
                    "a sync round ran over {} s: given up, the next one starts now",
                    ROUND_DURATION_MAX.as_secs()
                );
                state.round_active = false;
                state.round_gen += 1;
                state.round_wanted = true;
            }
        }
        for (peer, id) in silent {
            tracing::info!(%peer, "nothing heard on a connection for {} s: closed", CONNECTION_SILENT_MAX.as_secs());
            self.swarm.close_connection(id);
            if let Some(conn) = self.peers.get_mut(&peer).and_then(|s| s.conns.get_mut(&id)) {
                // Closing takes a moment; do not ask again at every tick.
                conn.last_heard = now;
            }
        }
        self.redial(now);
        // Rounds: wanted ones, and a periodic one with every connected peer.
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                s.connected
                    && !s.round_active
                    && s.last_round.is_none_or(|t| {
                        let since = now.duration_since(t);
                        since >= ROUND_INTERVAL || (s.round_wanted && since >= ROUND_MIN_GAP)
                    })
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.start_round(peer);
        }
    }

    fn on_inner(&mut self, inner: Inner) {
        match inner {
            Inner::Respond(channel, response) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("a peer left before its answer was ready");
                }
            }
            Inner::Served(peer, bytes) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.served.take(bytes as f64, Instant::now());
                }
            }
            Inner::PeerDigest(peer, digest) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.digest = Some((digest, OffsetDateTime::now_utc()));
                }
            }
            Inner::WantRound(peer) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.round_wanted = true;
                }
            }
            Inner::RoundStep(peer, round_no, _, _)
                if self
                    .peers
                    .get(&peer)
                    .is_none_or(|s| s.round_gen != round_no) =>
            {
                // A round given up (it ran too long, or its connection closed): its late
                // results are dropped; what it fetched is fetched again by the next one.
                tracing::debug!(%peer, "a late step of an abandoned round dropped");
            }
            Inner::RoundStep(peer, round_no, round, step) => {
                self.on_round_step(peer, round_no, round, step);
            }
        }
    }

    /// The bytes moved by the sync protocol so far: (sent, received).
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.counters.sent.load(Ordering::Relaxed),
            self.counters.received.load(Ordering::Relaxed),
        )
    }
}

/// Hands a helper task's result to the swarm task; once that task has stopped (the daemon is
/// shutting down) the result is no longer wanted.
async fn to_swarm(tx: &mpsc::Sender<Inner>, message: Inner) {
    if tx.send(message).await.is_err() {
        tracing::debug!("the network task has stopped: a helper's result dropped");
    }
}

/// Shares the organisation's keys with nodes of it that lack them (at start, and when the
/// configuration changes: a new node, a new epoch), saying what came of it.
pub(super) async fn share_keys(engine: EngineHandle) {
    match engine.share_keys().await {
        Ok(0) => {}
        Ok(shares) => tracing::info!(shares, "shared the organisation's keys with its nodes"),
        // Tried again when the configuration next changes, and at the next start.
        Err(e) => tracing::warn!("cannot share the organisation's keys: {e}"),
    }
}

/// How often a node looks for cases whose retention ran out (at start, then at this pace).
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// Purges the cases whose retention ran out, saying how many (never which person).
async fn purge_due(engine: EngineHandle) {
    match engine.purge_due().await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "cases past retention purged"),
        // Tried again at the next check.
        Err(e) => tracing::warn!("cannot purge the cases past retention: {e}"),
    }
}

/// Retries the events held back at admission (their time came, or what they wait for
/// arrived by another path), saying what came of it.
async fn retry_held(engine: EngineHandle) {
    match engine.retry_held().await {
        Ok(0) => {}
        Ok(admitted) => tracing::info!(admitted, "held events admitted"),
        // Tried again at the next tick.
        Err(e) => tracing::warn!("cannot retry the held events: {e}"),
    }
}

/// After a round, what the peer is known to hold (the vector it sent, advanced by the pushes
/// it admitted whole: `Round::peer_holds`): keep that as its last known vector, for `status`
/// and for bundles of "what it lacks". Returns that vector's digest.
pub(super) fn remember_peer(
    engine: &mut Engine,
    node: &passerelle_core::keys::NodeId,
    round: &Round,
) -> Option<Hash32> {
    let holds = round.peer_holds()?;
    match postcard::to_stdvec(holds) {
        Ok(bytes) => {
            if let Err(e) = engine
                .store_mut()
                .set_meta(&rpc::peer_vector_key(node), Some(&bytes))
            {
                // `status` and bundles for the peer go on from the vector recorded before.
                tracing::warn!(%node, "cannot record the peer's vector: {e}");
            }
        }
        Err(e) => tracing::warn!(%node, "cannot encode the peer's vector: {e}"),
    }
    Some(holds.digest())
}
