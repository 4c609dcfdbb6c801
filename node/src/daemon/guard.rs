//! Which incoming connections may start their handshake. Before Noise, nothing says who is
//! dialling but the address, so a flood of connections that never finish their handshake
//! could fill every pending slot and keep members out. Pending incoming connections are
//! bounded per source IP and in total for addresses not known to be members'; addresses known
//! to be members' (in the configuration, or seen on an established member connection, which
//! only the allow-list lets through) have their own, larger, bound, so a flood from elsewhere
//! never keeps a member out. Outgoing dials are not counted here.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

use libp2p::PeerId;
use libp2p::core::{Endpoint, Multiaddr, multiaddr::Protocol, transport::PortUse};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// Most pending incoming connections from one IP address not known to be a member's.
pub const PENDING_INCOMING_PER_IP_MAX: usize = 4;
/// Most pending incoming connections, in total, from addresses not known to be members'.
pub const PENDING_INCOMING_UNKNOWN_MAX: usize = 64;
/// Most pending incoming connections, in total, from members' addresses (a member has one or
/// two at a time; this only bounds file descriptors if a member's address is shared).
pub const PENDING_INCOMING_MEMBERS_MAX: usize = 256;
/// Most member addresses remembered from established connections (the oldest are forgotten).
pub const MEMBER_ADDRESSES_SEEN_MAX: usize = 4096;

/// Why an incoming connection was refused before its handshake.
#[derive(Debug)]
pub struct PendingRefused(&'static str);

impl std::fmt::Display for PendingRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many pending incoming connections {}", self.0)
    }
}

impl std::error::Error for PendingRefused {}

/// The guard of pending incoming connections.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Each pending incoming connection: its source IP and whether it is a member's.
    pending: HashMap<ConnectionId, (Option<IpAddr>, bool)>,
    per_ip: HashMap<IpAddr, usize>,
    unknown: usize,
    members: usize,
    /// Members' addresses from the configuration.
    configured: HashSet<IpAddr>,
    /// Addresses established member connections came from or went to, and when last.
    seen: HashMap<IpAddr, Instant>,
    /// Connections refused so far (for the log).
    pub refused: u64,
}

/// The IP address a multiaddr starts with, if it does.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl Behaviour {
    /// Replaces the members' addresses named by the configuration.
    pub fn set_configured(&mut self, addrs: &[Multiaddr]) {
        self.configured = addrs.iter().filter_map(ip_of).collect();
    }

    fn is_member(&self, ip: &IpAddr) -> bool {
        self.configured.contains(ip) || self.seen.contains_key(ip)
    }

    fn remember(&mut self, addr: &Multiaddr) {
        // A relayed connection's address names the relay, not the member.
        if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            return;
        }
        let Some(ip) = ip_of(addr) else {
            return;
        };
        if !self.seen.contains_key(&ip)
            && self.seen.len() >= MEMBER_ADDRESSES_SEEN_MAX
            && let Some(oldest) = self.seen.iter().min_by_key(|(_, t)| **t).map(|(ip, _)| *ip)
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(ip, Instant::now());
    }

    fn release(&mut self, id: ConnectionId) {
        let Some((ip, member)) = self.pending.remove(&id) else {
            return;
        };
        if member {
            self.members = self.members.saturating_sub(1);
            return;
        }
        self.unknown = self.unknown.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn refuse(&mut self, why: &'static str) -> Result<(), ConnectionDenied> {
        self.refused += 1;
        if self.refused.is_power_of_two() {
            tracing::warn!(
                refused = self.refused,
                "incoming connections refused {why}: a flood?"
            );
        }
        Err(ConnectionDenied::new(PendingRefused(why)))
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let ip = ip_of(remote);
        let member = ip.as_ref().is_some_and(|ip| self.is_member(ip));
        if member {
            if self.members >= PENDING_INCOMING_MEMBERS_MAX {
                return self.refuse("from members' addresses");
            }
            self.members += 1;
        } else {
            if self.unknown >= PENDING_INCOMING_UNKNOWN_MAX {
                return self.refuse("from unknown addresses");
            }
            if let Some(ip) = ip {
                let n = self.per_ip.entry(ip).or_default();
                if *n >= PENDING_INCOMING_PER_IP_MAX {
                    return self.refuse("from one address");
                }
                *n += 1;
            }
            self.unknown += 1;
        }
        self.pending.insert(connection_id, (ip, member));
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection_id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Every behaviour accepted it, the allow-list included: a member's connection.
            FromSwarm::ConnectionEstablished(e) => {
                self.release(e.connection_id);
                self.remember(e.endpoint.get_remote_address());
            }
            FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap_or_else(|_| Multiaddr::empty())
    }

    #[test]
    fn a_flood_from_strangers_never_takes_a_members_slot() {
        let mut guard = Behaviour::default();
        guard.set_configured(&[addr("/ip4/192.0.2.7/tcp/4010")]);
        let local = addr("/ip4/0.0.0.0/tcp/4010");
        let mut admitted = 0;
        for i in 0..10_000u32 {
            let ip = format!("/ip4/198.51.{}.{}/tcp/{}", i % 50, i % 7, 1000 + i);
            if guard
                .handle_pending_inbound_connection(
                    ConnectionId::new_unchecked(i as usize),
                    &local,
                    &addr(&ip),
                )
                .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, PENDING_INCOMING_UNKNOWN_MAX);
        let member = addr("/ip4/192.0.2.7/tcp/51000");
        assert!(
            guard
                .handle_pending_inbound_connection(
                    ConnectionId::new_unchecked(20_000),
                    &local,
                    &member
                )
                .is_ok()
        );
    }
}
