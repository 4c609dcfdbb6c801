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

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{
    ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle, dial_opts::DialOpts,
};
use libp2p::{
    Multiaddr, PeerId, Swarm, allow_block_list, connection_limits, dcutr, identify, mdns,
    multiaddr::Protocol, noise, ping, relay, tcp, yamux,
};
use passerelle_core::config::Hash32;
use passerelle_core::engine::Engine;
use passerelle_core::event::Event;
use passerelle_core::round::{Round, Step};
use passerelle_core::sync::{Request, Response};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::codec::{Counters, PROTOCOL, SyncCodec};
use super::engine_thread::{EngineHandle, EngineSignals, Member};
use crate::rpc::{self, NetworkView, PeerView};

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

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First: an incoming connection is judged by its address before anything else.
    guard: super::guard::Behaviour,
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay_client: relay::client::Behaviour,
    relay: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
}

/// Limits of the relay a node run with `--relay` serves. Only member nodes can connect to it
/// (the allow-list), so a circuit may carry a whole catch-up; the defaults of libp2p (2 minutes,
/// 128 KiB) suit public relays of strangers, not a mechanism's own.
fn relay_config() -> relay::Config {
    relay::Config {
        max_reservations: 256,
        max_reservations_per_peer: 4,
        reservation_duration: Duration::from_secs(3600),
        max_circuits: 64,
        max_circuits_per_peer: 8,
        max_circuit_duration: Duration::from_secs(3600),
        max_circuit_bytes: 1 << 30,
        ..relay::Config::default()
    }
}

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

#[derive(Debug)]
struct PeerState {
    org: String,
    label: String,
    connected: bool,
    /// When the peer was last heard from (a ping answered, a sync message): what `status`
    /// shows, so a connection that carries nothing any more is not called alive.
    last_seen: Option<OffsetDateTime>,
    last_heard: Option<Instant>,
    /// The last ping round trip.
    rtt: Option<Duration>,
    /// Open connections.
    connections: u32,
    /// Each open connection: when it was established and last heard from.
    conns: HashMap<ConnectionId, Conn>,
    /// The current round's number: results of a round given up (or of a connection gone)
    /// come back with an older number and are dropped.
    round_gen: u64,
    round_started: Option<Instant>,
    /// Pushes sent to the peer and not yet answered.
    pushes_in_flight: usize,
    /// What this node serves the peer, each at a bounded rate: its `Want`s, the bytes of
    /// events they cost, and its other requests.
    wants: TokenBucket,
    served: TokenBucket,
    requests: TokenBucket,
    /// The digest of the peer's version vector as it last told it (its `Hello`, or the end of
    /// a round with it), and when: `status` compares it with this node's.
    digest: Option<(Hash32, OffsetDateTime)>,
    addrs: Vec<Multiaddr>,
    next_dial: Instant,
    backoff: Duration,
    round_active: bool,
    round_wanted: bool,
    last_round: Option<Instant>,
    /// The address this node last dialled the peer at directly (to reserve a relay slot there).
    dialed: Option<Multiaddr>,
}

/// A token bucket: `rate` tokens a second, at most `burst` held. Taking more than is held
/// leaves a debt, which is the wait the next request must make.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until the debt (if any) is paid.
    fn deficit(&mut self, now: Instant) -> Duration {
        self.refill(now);
        Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }

    /// Takes `cost` tokens; returns how long the taker should wait for them.
    fn take(&mut self, cost: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= cost;
        Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }

    fn give_back(&mut self, cost: f64) {
        self.tokens = (self.tokens + cost).min(self.burst);
    }
}

/// One open connection to a peer.
#[derive(Debug)]
struct Conn {
    established: Instant,
    last_heard: Instant,
    ping_failures: u32,
}

/// A wait drawn between half and all of `backoff`: two ends of a link never redial in phase.
fn jittered(backoff: Duration) -> Duration {
    use rand::Rng;
    backoff.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// The next backoff after a failed attempt.
fn doubled(backoff: Duration) -> Duration {
    (backoff * 2).min(DIAL_BACKOFF_MAX)
}

/// Sets TCP keepalive and the user timeout on a connection's socket, so a connection across a
/// cut link is declared dead in seconds, not left to the kernel's retransmission backoff.
fn tune_tcp(stream: &tokio::net::TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!("TCP keepalive: {e}");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT)) {
        tracing::debug!("TCP user timeout: {e}");
    }
}

/// Yamux with a bounded number of streams per connection.
fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(YAMUX_STREAMS_MAX);
    config
}

/// A --peer address without a node id: dialled with its own backoff until it connects.
#[derive(Debug)]
struct Bootstrap {
    addr: Multiaddr,
    next_dial: Instant,
    backoff: Duration,
}

/// An address without its trailing /p2p/PEER.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Builds the swarm with this node's identity.
fn build_swarm(
    keypair: libp2p::identity::Keypair,
    counters: Arc<Counters>,
    mdns_on: bool,
    relay_on: bool,
) -> Result<Swarm<Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| {
            // TCP built by hand (not `with_tcp`) to set keepalive and the user timeout on each
            // socket, and to bound how long a connection may take to set up.
            use libp2p::Transport as _;
            let noise = noise::Config::new(key)?;
            let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .map(|stream: tcp::tokio::TcpStream, _| {
                    tune_tcp(&stream.0);
                    stream
                })
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux_config())
                .timeout(CONNECTION_SETUP_TIMEOUT);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .map_err(|e| anyhow::anyhow!("TCP transport: {e}"))?
        .with_relay_client(noise::Config::new, yamux_config)
        .context("relay transport")?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    peer_id,
                )?)
            } else {
                None
            };
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(CONNECTIONS_MAX))
                .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX + 1))
                .with_max_pending_outgoing(Some(PENDING_OUTGOING_MAX));
            Ok(Behaviour {
                guard: super::guard::Behaviour::default(),
                allow: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/passerelle/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(PING_INTERVAL)
                        .with_timeout(PING_TIMEOUT),
                ),
                sync: request_response::Behaviour::with_codec(
                    SyncCodec::new(counters),
                    [(PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(SYNC_STREAMS_PER_CONNECTION_MAX),
                ),
                mdns: Toggle::from(mdns),
                relay_client,
                relay: Toggle::from(relay_on.then(|| {
                    // The operator says this node is reachable (`--relay`): advertise the relay
                    // at once, without waiting for an external address to be confirmed.
                    let mut relay = relay::Behaviour::new(peer_id, relay_config());
                    relay.set_status(Some(relay::Status::Enable));
                    relay
                })),
                dcutr: dcutr::Behaviour::new(peer_id),
            })
        })
        .map_err(|e| anyhow::anyhow!("network behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Fetched batches a round may have in hand (being checked or waiting to be queued to the
/// engine) before it waits for them to be queued before fetching more.
const STORING_AHEAD_MAX: usize = 4;

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

    /// Rebuilds the allow-list and the peer table from the configuration in force: a node
    /// that left is disconnected and refused from now on.
    async fn refresh_members(&mut self) -> Result<()> {
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
            let state = self.peers.entry(peer).or_insert_with(|| PeerState {
                org: org.clone(),
                label: label.clone(),
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
            });
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

    /// The addresses this node listens on, each ending in /p2p/NODE_ID.
    fn listening(&self) -> Vec<String> {
        self.swarm
            .listeners()
            .map(|a| format!("{a}/p2p/{}", self.me))
            .collect()
    }

    /// Tells whoever waits for the node to listen, once every listener asked for at start
    /// has reported an address (or closed).
    fn note_listening(&mut self, event: &SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { listener_id, .. }
            | SwarmEvent::ListenerClosed { listener_id, .. } => {
                self.unready.remove(listener_id);
            }
            _ => return,
        }
        if self.unready.is_empty()
            && let Some(ready) = self.ready.take()
            && ready.send(self.listening()).is_err()
        {
            tracing::debug!("nobody waits for this node's listening addresses any more");
        }
    }

    fn publish_view(&self) {
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

    /// Runs until `shutdown` resolves.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut held_tick = tokio::time::interval(Duration::from_secs(30));
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

    /// Redials members with known addresses, and through the relays that hold a slot for us
    /// (a member behind NAT is reachable there if it holds one too), with backoff.
    fn redial(&mut self, now: Instant) {
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

    fn start_round(&mut self, peer: PeerId) {
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

    fn push(&mut self, events: Vec<Event>) {
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

    /// The next step of the current round with `peer`.
    fn on_round_step(
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
    fn admit_then_send(
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

    /// Writes this node's listening addresses to its data directory (for tests and scripts).
    fn write_listen_file(&self) {
        let lines = self.listening();
        if let Err(e) =
            crate::fsutil::write_atomic(&self.listen_file, lines.join("\n").as_bytes(), false)
        {
            tracing::warn!(
                "cannot write the listening addresses to {}: {e:#}",
                self.listen_file.display()
            );
        }
    }

    /// A link came back (a connection was established, the interfaces changed): peers still
    /// disconnected are redialled shortly, from the shortest backoff, instead of waiting out
    /// a backoff grown while the network was down.
    fn redial_soon(&mut self) {
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

    fn push_answered(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.pushes_in_flight = state.pushes_in_flight.saturating_sub(1);
        }
    }

    fn round_over(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.round_active = false;
        }
    }

    /// The swarm listens on a new address.
    fn on_listen_addr(&mut self, address: &Multiaddr) {
        tracing::info!("listening on {address}/p2p/{}", self.me);
        if self.started.elapsed() > INTERFACES_SETTLED_AFTER {
            // A new address after start: the network interfaces changed (a cable, a
            // Wi-Fi network, a VPN), so links may be back.
            self.redial_soon();
        }
        // A relay hands its address to the nodes that reserve a slot; `--relay` says
        // this node is reachable where it listens.
        let relayed = address.iter().any(|p| p == Protocol::P2pCircuit);
        if self.relay_on && !relayed {
            self.swarm.add_external_address(address.clone());
        }
        self.publish_view();
        self.write_listen_file();
    }

    /// A connection to a peer is established.
    fn on_connected(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: &libp2p::core::ConnectedPoint,
        num_established: u32,
    ) {
        let now = Instant::now();
        let mut superseded = Vec::new();
        if let Some(state) = self.peers.get_mut(&peer_id) {
            state.connected = true;
            state.connections = num_established;
            state.heard(None);
            state.backoff = DIAL_BACKOFF_MIN;
            // The peer dialled us, so it held no connection to us when it started: the
            // ones this node holds that are older than a connection setup are dead at
            // its end (it restarted, or the link failed silently). Keep the new one.
            if !endpoint.is_dialer() {
                for (id, conn) in &state.conns {
                    if now.duration_since(conn.established) > CONNECTION_SETUP_TIMEOUT {
                        superseded.push(*id);
                    }
                }
            }
            state.conns.insert(
                connection_id,
                Conn {
                    established: now,
                    last_heard: now,
                    ping_failures: 0,
                },
            );
            // Past the per-peer bound, the least recently heard one goes.
            let kept = state.conns.len() - superseded.len();
            if kept > CONNECTIONS_PER_PEER_MAX as usize
                && let Some((id, _)) = state
                    .conns
                    .iter()
                    .filter(|(id, _)| **id != connection_id && !superseded.contains(id))
                    .min_by_key(|(_, c)| c.last_heard)
            {
                superseded.push(*id);
            }
            let addr = endpoint.get_remote_address().clone();
            let relayed = addr.iter().any(|p| p == Protocol::P2pCircuit);
            if endpoint.is_dialer() && !relayed {
                state.dialed = Some(without_peer_id(&addr));
            }
            if endpoint.is_dialer() && !state.addrs.contains(&addr) {
                state.addrs.push(addr);
            }
            // The dialling side opens the first round; a round carries both ways, so
            // two at once would move everything twice.
            if endpoint.is_dialer() {
                state.round_wanted = true;
                state.last_round = None;
            } else {
                state.last_round = Some(Instant::now());
            }
            tracing::info!(peer = %peer_id, label = %state.label, "connected");
        }
        for id in superseded {
            tracing::info!(peer = %peer_id, "a newer connection supersedes an older one: the older is closed");
            self.swarm.close_connection(id);
        }
        // A link came back: whoever is still disconnected may be reachable again.
        self.redial_soon();
        self.publish_view();
    }

    /// A connection to a peer closed.
    fn on_closed(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        num_established: u32,
        cause: Option<&libp2p::swarm::ConnectionError>,
    ) {
        if num_established == 0 {
            self.relays.remove(&peer_id);
        }
        if let Some(state) = self.peers.get_mut(&peer_id) {
            state.connections = num_established;
            state.conns.remove(&connection_id);
            if let Some(cause) = cause {
                tracing::debug!(peer = %peer_id, "connection closed: {cause}");
            }
        }
        if num_established == 0
            && let Some(state) = self.peers.get_mut(&peer_id)
        {
            state.connected = false;
            state.round_active = false;
            // Whatever the round had in flight is abandoned with the connection.
            state.round_gen += 1;
            state.next_dial = Instant::now() + jittered(state.backoff);
            tracing::info!(peer = %peer_id, "disconnected");
        }
        self.publish_view();
    }

    /// A peer told what it is: its protocols (a relay?) and where it listens.
    fn on_identified(&mut self, peer_id: PeerId, info: identify::Info) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.reserve_at(peer_id);
        }
        if let Some(state) = self.peers.get_mut(&peer_id) {
            for addr in info.listen_addrs {
                let local = addr.iter().any(
                    |p| matches!(p, libp2p::multiaddr::Protocol::Ip4(ip) if ip.is_unspecified()),
                );
                if !local && !state.addrs.contains(&addr) && state.addrs.len() < 16 {
                    state.addrs.push(addr);
                }
            }
        }
    }

    /// A ping answered or missed.
    fn on_ping(&mut self, event: ping::Event) {
        let ping::Event {
            peer,
            connection,
            result,
        } = event;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        match result {
            Ok(rtt) => {
                state.heard(Some(rtt));
                if let Some(conn) = state.conns.get_mut(&connection) {
                    conn.last_heard = Instant::now();
                    conn.ping_failures = 0;
                }
            }
            Err(e) => {
                let dead = state.conns.get_mut(&connection).is_some_and(|conn| {
                    conn.ping_failures += 1;
                    conn.ping_failures >= PING_FAILURES_MAX
                });
                if dead {
                    tracing::info!(%peer, "{PING_FAILURES_MAX} pings missed ({e}): connection closed");
                    self.swarm.close_connection(connection);
                }
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.on_listen_addr(&address),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => self.on_closed(peer_id, connection_id, num_established, cause.as_ref()),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!("incoming connection refused: {error}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        if !state.addrs.contains(&addr) {
                            state.addrs.push(addr);
                        }
                        if !state.connected {
                            state.next_dial = Instant::now();
                        }
                        tracing::info!(%peer, "found on the local network by mDNS");
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.on_ping(event),
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!("no longer listening on {address}: redialling disconnected peers");
                self.redial_soon();
                self.write_listen_file();
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => {
                tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                // Members nobody could reach may be reachable through it now.
                let now = Instant::now();
                for state in self.peers.values_mut().filter(|s| !s.connected) {
                    state.next_dial = now;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => tracing::info!(peer = %remote_peer_id, "relayed connection made direct"),
                Err(e) => tracing::debug!(peer = %remote_peer_id, "hole punching failed: {e}"),
            },
            _ => {}
        }
    }

    /// Asks a member that relays for a slot, at the address this node dialled it at: members
    /// that cannot reach this node directly can then reach it through the relay.
    fn reserve_at(&mut self, relay: PeerId) {
        if self.relays.contains_key(&relay) {
            return;
        }
        let Some(addr) = self.peers.get(&relay).and_then(|s| s.dialed.clone()) else {
            return;
        };
        let slot = addr.with(Protocol::P2p(relay));
        match self
            .swarm
            .listen_on(slot.clone().with(Protocol::P2pCircuit))
        {
            Ok(_) => {
                self.relays.insert(relay, slot);
            }
            Err(e) => tracing::debug!(%relay, "relay reservation: {e}"),
        }
    }

    fn on_sync(&mut self, event: request_response::Event<Request, Response>) {
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

    fn answer(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
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

    fn on_response(&mut self, request_id: OutboundRequestId, response: Response) {
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

impl PeerState {
    /// The peer was just heard from.
    fn heard(&mut self, rtt: Option<Duration>) {
        self.last_heard = Some(Instant::now());
        self.last_seen = Some(OffsetDateTime::now_utc());
        if rtt.is_some() {
            self.rtt = rtt;
        }
    }
}
