//! `status`: this node's configuration, keys, log and sync state, with what the daemon knows
//! of its peers.

use anyhow::Result;
use passerelle_core::config::Mechanism;
use passerelle_core::engine::Engine;
use passerelle_core::keys::NodeId;
use passerelle_core::sync::VersionVector;
use passerelle_core::time_fmt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Context;

/// What the daemon knows that the engine does not: its peers and listening addresses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkView {
    pub running: bool,
    pub listen: Vec<String>,
    pub api: Option<String>,
    pub peers: Vec<PeerView>,
    /// Bytes the sync protocol sent and received since the daemon started.
    pub sync_bytes_sent: u64,
    pub sync_bytes_received: u64,
    /// Sync rounds this node opened that were cut short by a bound (a peer that would not stop
    /// sending), since the daemon started.
    #[serde(default)]
    pub rounds_cut_short: u64,
    /// Requests from peers refused because the peer was over its rate, since the start.
    #[serde(default)]
    pub requests_rate_limited: u64,
}

/// A peer as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerView {
    pub node_id: String,
    pub org: String,
    pub label: String,
    /// At least one connection is open. Whether it still carries anything is `state`.
    pub connected: bool,
    /// When the peer was last heard from (a ping answered, a sync message), RFC 3339.
    pub last_seen: Option<String>,
    /// `connected`, `silent` (connected, but nothing heard for a while: the link may be
    /// down and the connection not yet declared dead) or `not connected`.
    #[serde(default)]
    pub state: String,
    /// Open connections to the peer.
    #[serde(default)]
    pub connections: u32,
    /// The last ping round trip, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// The digest of the peer's version vector as it last told it (hex), and when.
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub digest_at: Option<String>,
    /// Seconds since the peer was last heard from (filled in by `status`).
    #[serde(default)]
    pub heard_secs_ago: Option<u64>,
    /// Whether the peer's last known digest equals this node's (filled in by `status`).
    #[serde(default)]
    pub in_sync: Option<bool>,
    /// Events this node holds that the peer lacked at the last round.
    pub they_lack: Option<u64>,
    /// Events the peer held that this node lacked at the last round.
    pub we_lack: Option<u64>,
}

/// The answer to `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub node_id: String,
    pub org: String,
    /// The genesis hash (hex), once joined.
    pub mechanism_id: Option<String>,
    /// The mechanism's name and the version in force, once joined.
    pub mechanism: Option<String>,
    pub config_version: Option<u64>,
    pub config_expires_at: Option<String>,
    pub config_expired: Option<bool>,
    /// Until when an operator allowed case events past the expiry (RFC 3339).
    pub expiry_override_until: Option<String>,
    /// Why this node may not create case events now, if it may not.
    pub can_create_case_events: Option<String>,
    pub read_only: bool,
    pub org_key_epochs: Vec<u32>,
    pub events: u64,
    pub held_back: u64,
    pub waiting_for_dependencies: u64,
    pub unreadable_yet: u64,
    pub equivocations: Vec<Equivocation>,
    /// Nodes the ministry removed from the mechanism (a stolen laptop, a partner that left).
    #[serde(default)]
    pub removed_nodes: Vec<RemovedNode>,
    pub sync: SyncView,
    pub network: NetworkView,
}

/// A node removed from the mechanism: its events up to `last_seq` stand, later ones are refused
/// everywhere, and it is disconnected and refused as a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovedNode {
    pub node: String,
    pub org: String,
    /// The last of its events still accepted (0: none).
    pub last_seq: u64,
    /// How far this node holds its log.
    pub held_seq: u64,
}

/// Two events one author signed at the same sequence (the evidence is kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Equivocation {
    pub node: String,
    pub seq: u64,
    pub event: String,
}

/// This node's replica at a glance: two nodes whose digests are equal hold the same logs, so an
/// operator (or a test) compares digests to see convergence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncView {
    pub digest: String,
    pub authors: usize,
    pub events_in_logs: u64,
    pub vector: Vec<VectorEntry>,
    pub vector_truncated: bool,
}

/// One author's position in this node's version vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorEntry {
    pub node: String,
    pub seq: u64,
    pub head: String,
}

/// Most version-vector entries `status` lists (the digest covers all of them).
pub const STATUS_VECTOR_ENTRIES_MAX: usize = 256;

/// The meta key under which the last known vector of a peer is kept.
pub fn peer_vector_key(node: &NodeId) -> String {
    format!("peer_vector:{node}")
}

/// The peer's last known version vector, if a round with it ever completed here.
pub fn peer_vector(engine: &Engine, node: &NodeId) -> Option<VersionVector> {
    let bytes = engine.store().meta(&peer_vector_key(node)).ok()??;
    postcard::from_bytes(&bytes).ok()
}

fn node_of(author: &[u8; 32]) -> String {
    passerelle_core::keys::PublicKey::from_bytes(author)
        .map(|k| k.node_id().to_string())
        .unwrap_or_default()
}

pub(super) fn status(engine: &Engine, ctx: &Context, now: OffsetDateTime) -> Result<StatusAnswer> {
    let config = engine.store().config();
    let m = config.current();
    let counts = engine.store().log_counts()?;
    let equivocations = engine
        .store()
        .equivocations()?
        .into_iter()
        .map(|(author, seq, id)| Equivocation {
            node: node_of(&author),
            seq,
            event: id.to_hex(),
        })
        .collect();
    let ours = engine.version_vector()?;
    let network = network_view(engine, ctx, &ours, now);
    let expiry_override_until = engine
        .store()
        .meta(passerelle_core::engine::META_EXPIRY_OVERRIDE)?
        .and_then(|b| String::from_utf8(b).ok());
    Ok(StatusAnswer {
        node_id: engine.node_id().to_string(),
        org: engine.org().to_string(),
        mechanism_id: config.mechanism_id().map(|h| h.to_hex()),
        mechanism: m.map(|m| m.doc.mechanism.clone()),
        config_version: m.map(|m| m.doc.version),
        config_expires_at: m.map(|m| time_fmt::rfc3339(m.doc.expires_at)),
        config_expired: m.map(|m| m.is_expired(now)),
        expiry_override_until,
        can_create_case_events: engine
            .can_create_case_events(now)
            .err()
            .map(|e| e.to_string()),
        read_only: engine.is_read_only()?,
        org_key_epochs: engine.epochs_held(),
        events: counts.events,
        held_back: counts.held,
        waiting_for_dependencies: counts.waiting,
        unreadable_yet: counts.unread,
        equivocations,
        removed_nodes: m.map(|m| removed_nodes(m, &ours)).unwrap_or_default(),
        sync: sync_view(&ours),
        network,
    })
}

/// The configuration's removals, each with how much of the removed node's log is held here.
fn removed_nodes(m: &Mechanism, ours: &VersionVector) -> Vec<RemovedNode> {
    m.doc
        .removals
        .iter()
        .map(|r| {
            let node = r.node.to_string();
            let held_seq = ours
                .entries
                .iter()
                .find(|(author, _)| node_of(author) == node)
                .map_or(0, |(_, (seq, _))| *seq);
            RemovedNode {
                node,
                org: r.org.clone(),
                last_seq: r.last_seq,
                held_seq,
            }
        })
        .collect()
}

/// The daemon's view of its peers, with what `status` adds: how long ago each was heard, whether
/// it holds the same logs, and how many events each side lacked at the last round.
fn network_view(
    engine: &Engine,
    ctx: &Context,
    ours: &VersionVector,
    now: OffsetDateTime,
) -> NetworkView {
    let digest = ours.digest().to_hex();
    let mut network = ctx.network.clone();
    for peer in &mut network.peers {
        peer.heard_secs_ago = peer
            .last_seen
            .as_deref()
            .and_then(time_fmt::parse_rfc3339)
            .map(|t| u64::try_from((now - t).whole_seconds()).unwrap_or(0));
        peer.in_sync = peer.digest.as_ref().map(|d| *d == digest);
        let Ok(node) = peer.node_id.parse::<NodeId>() else {
            continue;
        };
        if let Some(theirs) = peer_vector(engine, &node) {
            let (mut they_lack, mut we_lack) = (0u64, 0u64);
            for (author, (seq, _)) in &ours.entries {
                they_lack += seq.saturating_sub(theirs.seq(author));
            }
            for (author, (seq, _)) in &theirs.entries {
                we_lack += seq.saturating_sub(ours.seq(author));
            }
            peer.they_lack = Some(they_lack);
            peer.we_lack = Some(we_lack);
        }
    }
    network
}

fn sync_view(ours: &VersionVector) -> SyncView {
    SyncView {
        digest: ours.digest().to_hex(),
        authors: ours.entries.len(),
        events_in_logs: ours.entries.values().map(|(seq, _)| *seq).sum(),
        vector: ours
            .entries
            .iter()
            .take(STATUS_VECTOR_ENTRIES_MAX)
            .map(|(author, (seq, head))| VectorEntry {
                node: node_of(author),
                seq: *seq,
                head: head.to_hex(),
            })
            .collect(),
        vector_truncated: ours.entries.len() > STATUS_VECTOR_ENTRIES_MAX,
    }
}
