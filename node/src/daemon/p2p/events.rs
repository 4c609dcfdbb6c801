//! What the swarm reports: listening addresses, connections opened and closed, what a peer
//! says it is (identify), pings, mDNS discoveries, relay reservations and hole punching.

use std::time::Instant;

use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, dcutr, identify, mdns, multiaddr::Protocol, ping, relay};

use super::behaviour::BehaviourEvent;
use super::peers::{Conn, jittered, without_peer_id};
use super::{
    CONNECTION_SETUP_TIMEOUT, CONNECTIONS_PER_PEER_MAX, DIAL_BACKOFF_MIN, INTERFACES_SETTLED_AFTER,
    Network, PING_FAILURES_MAX,
};

impl Network {
    /// The addresses this node listens on, each ending in /p2p/NODE_ID.
    pub(super) fn listening(&self) -> Vec<String> {
        self.swarm
            .listeners()
            .map(|a| format!("{a}/p2p/{}", self.me))
            .collect()
    }

    /// Tells whoever waits for the node to listen, once every listener asked for at start
    /// has reported an address (or closed).
    pub(super) fn note_listening(&mut self, event: &SwarmEvent<BehaviourEvent>) {
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

    /// Writes this node's listening addresses to its data directory (for tests and scripts).
    pub(super) fn write_listen_file(&self) {
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

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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

    /// The swarm listens on a new address.
    pub(super) fn on_listen_addr(&mut self, address: &Multiaddr) {
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
    pub(super) fn on_connected(
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
    pub(super) fn on_closed(
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
    pub(super) fn on_identified(&mut self, peer_id: PeerId, info: identify::Info) {
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
    pub(super) fn on_ping(&mut self, event: ping::Event) {
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

    /// Asks a member that relays for a slot, at the address this node dialled it at: members
    /// that cannot reach this node directly can then reach it through the relay.
    pub(super) fn reserve_at(&mut self, relay: PeerId) {
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
}
