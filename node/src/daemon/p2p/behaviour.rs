//! The swarm: TCP (tuned keepalive and user timeout) and QUIC with Noise and Yamux, and the
//! behaviours in the order they judge a connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{
    Swarm, allow_block_list, connection_limits, dcutr, identify, mdns, noise, ping, relay, tcp,
    yamux,
};

use super::{
    CONNECTION_SETUP_TIMEOUT, CONNECTIONS_MAX, CONNECTIONS_PER_PEER_MAX, IDLE_CONNECTION_TIMEOUT,
    PENDING_OUTGOING_MAX, PING_INTERVAL, PING_TIMEOUT, REQUEST_TIMEOUT,
    SYNC_STREAMS_PER_CONNECTION_MAX, TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL,
    TCP_KEEPALIVE_RETRIES, TCP_USER_TIMEOUT, YAMUX_STREAMS_MAX,
};
use crate::daemon::codec::{Counters, PROTOCOL, SyncCodec};

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// First: an incoming connection is judged by its address before anything else.
    pub(super) guard: crate::daemon::guard::Behaviour,
    pub(super) allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) sync: request_response::Behaviour<SyncCodec>,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) relay_client: relay::client::Behaviour,
    pub(super) relay: Toggle<relay::Behaviour>,
    pub(super) dcutr: dcutr::Behaviour,
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

/// Builds the swarm with this node's identity.
pub(super) fn build_swarm(
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
                guard: crate::daemon::guard::Behaviour::default(),
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
