//! The node's operations as requests: what the command line sends to the running daemon over
//! the local API, and runs in-process when no daemon runs. One `dispatch` serves both, so the
//! two paths cannot drift apart.

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow, bail};
use passerelle_core::bundle;
use passerelle_core::config::chain::SignedFile;
use passerelle_core::engine::{Engine, ReferralRequest, Step};
use passerelle_core::event::{CaseAction, Transition, Urgency};
use passerelle_core::fold::Status;
use passerelle_core::keys::{self, NodeId};
use passerelle_core::payload::CaseData;
use passerelle_core::store::{AuditEntry, RequestId};
use passerelle_core::sync::VersionVector;
use passerelle_core::time_fmt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Longest an operator may override an expired configuration, in hours.
pub const EXPIRY_OVERRIDE_MAX_HOURS: u32 = 72;

/// A request to the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// The document text of the configuration version in force.
    ConfigDocument,
    /// Apply configuration files (signed files' JSON text).
    ConfigUpdate {
        files: Vec<String>,
    },
    /// Install the organisation's key epochs (age identity text per epoch).
    ImportKey {
        epochs: Vec<(u32, String)>,
    },
    /// Let this node create case events for a while after its configuration expired.
    OverrideExpiry {
        hours: u32,
    },
    CaseOpen {
        data: Box<CaseData>,
    },
    CaseList {
        search: Option<String>,
    },
    CaseShow {
        id: String,
    },
    CaseAction {
        id: String,
        action: String,
        to_org: Option<String>,
        note: String,
    },
    Determine {
        id: String,
        case_type: String,
        determined: bool,
        note: String,
    },
    ReferralSend {
        case: String,
        to_org: String,
        category: String,
        urgency: String,
        share: Vec<String>,
        note: String,
        emergency_override: Option<String>,
    },
    ReferralList {
        /// `inbox`, `outbox` or `all`.
        direction: String,
        status: Option<String>,
    },
    ReferralShow {
        id: String,
    },
    ReferralStep {
        id: String,
        transition: String,
        reason: Option<String>,
        note: String,
        outcome: Option<String>,
    },
    Audit {
        limit: usize,
    },
    Backup {
        out: PathBuf,
    },
    BundleExport {
        out: PathBuf,
        for_node: Option<String>,
    },
    BundleImport {
        path: PathBuf,
    },
    /// Set an organisation's partner-map profile.
    MapImport {
        profile: Box<passerelle_core::map::Profile>,
    },
    /// Change one service's capacity and/or mark it verified today.
    MapUpdate {
        org: Option<String>,
        service: String,
        capacity: Option<String>,
        verify: bool,
    },
    /// Publish a compacted save of a profile.
    MapSnapshot {
        org: Option<String>,
    },
    MapSearch {
        category: Option<String>,
        site: Option<String>,
        language: Option<String>,
        open_now: bool,
        capacity: Option<String>,
        org: Option<String>,
    },
    /// Every profile, with the configuration document (for posters and exports).
    MapDirectory,
    MapGaps,
    /// The coordination report for referrals sent in [from, to) (RFC 3339).
    Report {
        from: String,
        to: String,
    },
    /// Create or replace a web UI account.
    UserAdd {
        name: String,
        role: String,
        password: String,
    },
    UserRemove {
        name: String,
    },
    UserList,
}

impl Request {
    /// A short name for logs (never the request's content).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::ConfigDocument => "config_document",
            Request::ConfigUpdate { .. } => "config_update",
            Request::ImportKey { .. } => "import_key",
            Request::OverrideExpiry { .. } => "override_expiry",
            Request::CaseOpen { .. } => "case_open",
            Request::CaseList { .. } => "case_list",
            Request::CaseShow { .. } => "case_show",
            Request::CaseAction { .. } => "case_action",
            Request::Determine { .. } => "determine",
            Request::ReferralSend { .. } => "referral_send",
            Request::ReferralList { .. } => "referral_list",
            Request::ReferralShow { .. } => "referral_show",
            Request::ReferralStep { .. } => "referral_step",
            Request::Audit { .. } => "audit",
            Request::Backup { .. } => "backup",
            Request::BundleExport { .. } => "bundle_export",
            Request::BundleImport { .. } => "bundle_import",
            Request::MapImport { .. } => "map_import",
            Request::MapUpdate { .. } => "map_update",
            Request::MapSnapshot { .. } => "map_snapshot",
            Request::MapSearch { .. } => "map_search",
            Request::MapDirectory => "map_directory",
            Request::MapGaps => "map_gaps",
            Request::Report { .. } => "report",
            Request::UserAdd { .. } => "user_add",
            Request::UserRemove { .. } => "user_remove",
            Request::UserList => "user_list",
        }
    }
}

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

/// Who asks, and what the node around the engine looks like.
#[derive(Debug, Clone)]
pub struct Context {
    pub user: String,
    pub network: NetworkView,
    /// Shows a progress bar for long operations (bundles), when run from a terminal.
    pub progress: bool,
}

fn audit(engine: &mut Engine, ctx: &Context, action: &str, subject: &str) -> Result<()> {
    engine.store_mut().audit(&AuditEntry {
        at: time_fmt::rfc3339(OffsetDateTime::now_utc()),
        user: ctx.user.clone(),
        action: action.to_string(),
        subject: subject.to_string(),
    })?;
    Ok(())
}

fn parse_transition(s: &str) -> Result<Transition> {
    Ok(match s {
        "ack" | "acknowledge" => Transition::Acknowledge,
        "accept" => Transition::Accept,
        "decline" => Transition::Decline,
        "complete" => Transition::Complete,
        "withdraw" => Transition::Withdraw,
        other => bail!(
            "`{}` is not a referral step (ack, accept, decline, complete, withdraw)",
            keys::truncate_for_error(other)
        ),
    })
}

/// The meta key under which the last known vector of a peer is kept.
pub fn peer_vector_key(node: &NodeId) -> String {
    format!("peer_vector:{node}")
}

/// The peer's last known version vector, if a round with it ever completed here.
pub fn peer_vector(engine: &Engine, node: &NodeId) -> Option<VersionVector> {
    let bytes = engine.store().meta(&peer_vector_key(node)).ok()??;
    postcard::from_bytes(&bytes).ok()
}

/// Runs one request against the engine.
/// Carries out a request at most once per idempotency key: a key already held gives back the
/// answer recorded (or, if the node stopped before writing it, names the events the request
/// made) instead of doing the work again.
pub fn dispatch_once(
    engine: &mut Engine,
    ctx: &Context,
    request: Request,
    id: Option<RequestId>,
) -> Result<Value> {
    let Some(id) = id else {
        return dispatch(engine, ctx, request);
    };
    if let Some(record) = engine.store().request(&id)? {
        return match record.answer {
            Some(answer) => Ok(serde_json::from_str(&answer)?),
            None => bail!(
                "this request was already carried out (events {}), but its answer was lost when the node stopped: look at the result (`case list`, `referral list`) before sending it again",
                record
                    .events
                    .iter()
                    .map(|e| e.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    engine.store_mut().set_pending_request(Some(id));
    let result = dispatch(engine, ctx, request);
    engine.store_mut().set_pending_request(None);
    if let Ok(answer) = &result {
        engine
            .store_mut()
            .set_request_answer(&id, &serde_json::to_string(answer)?)?;
    }
    result
}

/// Parses an idempotency key as the API carries it (32 hex digits).
pub fn parse_request_id(text: &str) -> Result<RequestId> {
    let wrong = || anyhow!("a request id is 32 hexadecimal digits");
    if text.len() != 32 || !text.is_ascii() {
        return Err(wrong());
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| wrong())?;
    }
    Ok(id)
}

/// A fresh idempotency key, as 32 hex digits.
pub fn new_request_id() -> String {
    let id: [u8; 16] = rand::random();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn dispatch(engine: &mut Engine, ctx: &Context, request: Request) -> Result<Value> {
    let now = OffsetDateTime::now_utc();
    match request {
        Request::Status => status(engine, ctx, now),
        Request::ConfigDocument => {
            let version = engine.store().config().highest();
            let files = engine
                .store()
                .config_files_after(version.saturating_sub(1))?;
            let file = files
                .last()
                .map(|f| SignedFile::from_bytes(f))
                .transpose()?
                .context("this node has not joined a mechanism")?;
            Ok(json!({ "version": version, "document": file.document }))
        }
        Request::ConfigUpdate { files } => {
            let files = files
                .iter()
                .map(|f| SignedFile::from_bytes(f.as_bytes()))
                .collect::<Result<Vec<_>, _>>()?;
            let outcome = engine.apply_config(&files, now)?;
            let shared = if outcome.accepted.is_empty() {
                Vec::new()
            } else {
                engine.share_keys(now).unwrap_or_default()
            };
            Ok(json!({
                "accepted": outcome.accepted,
                "already_held": outcome.already_held,
                "version": engine.store().config().highest(),
                "key_shares": shared.len(),
            }))
        }
        Request::ImportKey { epochs } => {
            let epochs = epochs
                .iter()
                .map(|(e, text)| Ok((*e, keys::parse_identity(text)?)))
                .collect::<Result<Vec<_>, keys::KeyError>>()?;
            let outcome = engine.import_epochs(&epochs, now)?;
            let shared = engine.share_keys(now).unwrap_or_default();
            Ok(json!({
                "installed": outcome.installed,
                "already_held": outcome.already_held,
                "not_configured": outcome.not_configured,
                "key_shares": shared.len(),
            }))
        }
        Request::OverrideExpiry { hours } => {
            if hours == 0 || hours > EXPIRY_OVERRIDE_MAX_HOURS {
                bail!("an override lasts 1 to {EXPIRY_OVERRIDE_MAX_HOURS} hours");
            }
            let m = engine.mechanism()?;
            if !m.is_expired(now) {
                bail!(
                    "configuration version {} has not expired: there is nothing to override",
                    m.doc.version
                );
            }
            let until = time_fmt::rfc3339(now + time::Duration::hours(i64::from(hours)));
            engine.store_mut().set_meta(
                passerelle_core::engine::META_EXPIRY_OVERRIDE,
                Some(until.as_bytes()),
            )?;
            audit(engine, ctx, "expiry.override", &format!("until {until}"))?;
            tracing::warn!(until = %until, user = %ctx.user, "expired configuration overridden");
            Ok(json!({ "until": until }))
        }
        Request::CaseOpen { data } => {
            let id = engine.open_case(*data, &ctx.user, now)?;
            audit(engine, ctx, "case.open", &id.to_hex())?;
            Ok(json!({ "case": id.to_hex() }))
        }
        Request::CaseList { search } => {
            let cases = engine.cases(search.as_deref())?;
            let ids: Vec<_> = cases.iter().map(|c| c.id[..12].to_string()).collect();
            audit(
                engine,
                ctx,
                "case.list",
                &format!("{} cases: {}", ids.len(), ids.join(" ")),
            )?;
            Ok(serde_json::to_value(cases)?)
        }
        Request::CaseShow { id } => {
            let id = engine.resolve_id(&id, false)?;
            let view = engine.case(&id, now)?;
            audit(engine, ctx, "case.show", &id.to_hex())?;
            Ok(serde_json::to_value(view)?)
        }
        Request::CaseAction {
            id,
            action,
            to_org,
            note,
        } => {
            let case = engine.resolve_id(&id, false)?;
            let action = match action.as_str() {
                "note" => CaseAction::Note,
                "close" => CaseAction::Close,
                "reopen" => CaseAction::Reopen,
                "transfer" => CaseAction::Transfer {
                    to_org: to_org.context("a transfer needs --to ORG")?,
                },
                other => bail!(
                    "`{}` is not a case action (note, transfer, close, reopen)",
                    keys::truncate_for_error(other)
                ),
            };
            let event = engine.case_action(case, action, &note, None, &ctx.user, now)?;
            Ok(json!({ "event": event.to_hex() }))
        }
        Request::Determine {
            id,
            case_type,
            determined,
            note,
        } => {
            let case = engine.resolve_id(&id, false)?;
            let event =
                engine.determine_status(case, &case_type, determined, &note, &ctx.user, now)?;
            Ok(json!({ "event": event.to_hex() }))
        }
        Request::ReferralSend {
            case,
            to_org,
            category,
            urgency,
            share,
            note,
            emergency_override,
        } => {
            let case = engine.resolve_id(&case, false)?;
            let urgency = Urgency::parse(&urgency).ok_or_else(|| {
                anyhow!(
                    "`{}` is not an urgency (emergency, urgent, routine)",
                    keys::truncate_for_error(&urgency)
                )
            })?;
            let id = engine.send_referral(
                ReferralRequest {
                    case,
                    to_org,
                    category,
                    urgency,
                    share,
                    note,
                    emergency_override,
                },
                &ctx.user,
                now,
            )?;
            audit(engine, ctx, "referral.send", &id.to_hex())?;
            Ok(json!({ "referral": id.to_hex() }))
        }
        Request::ReferralList { direction, status } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(Status::parse(s).ok_or_else(|| {
                    anyhow!(
                        "`{}` is not a status (sent, acknowledged, accepted, declined, completed, withdrawn, invalid)",
                        keys::truncate_for_error(s)
                    )
                })?),
            };
            let mut list = Vec::new();
            if direction != "outbox" {
                list.extend(engine.referrals(false, status, true, now)?);
            }
            if direction != "inbox" {
                list.extend(engine.referrals(true, status, true, now)?);
            }
            if !["inbox", "outbox", "all"].contains(&direction.as_str()) {
                bail!("list the inbox, the outbox or all");
            }
            let readable: Vec<_> = list
                .iter()
                .filter(|r| r.readable)
                .map(|r| r.id[..12].to_string())
                .collect();
            if !readable.is_empty() {
                audit(engine, ctx, "referral.list", &readable.join(" "))?;
            }
            Ok(serde_json::to_value(list)?)
        }
        Request::ReferralShow { id } => {
            let id = engine.resolve_id(&id, true)?;
            let view = engine.referral(&id, now)?;
            if view.readable {
                audit(engine, ctx, "referral.show", &id.to_hex())?;
            }
            Ok(serde_json::to_value(view)?)
        }
        Request::ReferralStep {
            id,
            transition,
            reason,
            note,
            outcome,
        } => {
            let referral = engine.resolve_id(&id, true)?;
            let step = Step {
                transition: parse_transition(&transition)?,
                reason,
                note,
                outcome,
            };
            let event = engine.referral_step(referral, step, &ctx.user, now)?;
            let view = engine.referral(&referral, now)?;
            Ok(json!({ "event": event.to_hex(), "status": view.status }))
        }
        Request::Audit { limit } => {
            let entries = engine.store().audit_entries(limit.min(100_000))?;
            Ok(serde_json::to_value(
                entries
                    .into_iter()
                    .map(|(seq, e)| json!({"seq": seq, "at": e.at, "user": e.user, "action": e.action, "subject": e.subject}))
                    .collect::<Vec<_>>(),
            )?)
        }
        Request::Backup { out } => {
            let events = engine.backup(&out)?;
            audit(engine, ctx, "backup", &out.display().to_string())?;
            Ok(json!({ "events": events, "out": out }))
        }
        Request::BundleExport { out, for_node } => bundle_export(engine, ctx, &out, for_node, now),
        Request::BundleImport { path } => bundle_import(engine, ctx, &path, now),
        Request::MapImport { profile } => {
            let event = engine.map_import(&profile, now)?;
            Ok(json!({ "org": profile.org, "event": event.map(|e| e.to_hex()) }))
        }
        Request::MapUpdate {
            org,
            service,
            capacity,
            verify,
        } => {
            let org = org.unwrap_or_else(|| engine.org().to_string());
            let capacity = capacity
                .map(|c| {
                    passerelle_core::map::Capacity::parse(&c).ok_or_else(|| {
                        anyhow!(
                            "`{}` is not a capacity (available, limited, full, suspended)",
                            keys::truncate_for_error(&c)
                        )
                    })
                })
                .transpose()?;
            let event = engine.map_update(&org, &service, capacity, verify, now)?;
            Ok(json!({ "org": org, "event": event.map(|e| e.to_hex()) }))
        }
        Request::MapSnapshot { org } => {
            let org = org.unwrap_or_else(|| engine.org().to_string());
            let event = engine.map_snapshot(&org, now)?;
            Ok(json!({ "org": org, "event": event.to_hex() }))
        }
        Request::MapSearch {
            category,
            site,
            language,
            open_now,
            capacity,
            org,
        } => {
            let m = engine.mechanism()?.clone();
            let capacity = capacity
                .map(|c| {
                    passerelle_core::map::Capacity::parse(&c).ok_or_else(|| {
                        anyhow!("`{}` is not a capacity", keys::truncate_for_error(&c))
                    })
                })
                .transpose()?;
            if let Some(c) = &category
                && m.category(c).is_none()
            {
                bail!("unknown service category `{}`", keys::truncate_for_error(c));
            }
            if let Some(x) = &site
                && m.site(x).is_none()
            {
                bail!("unknown site `{}`", keys::truncate_for_error(x));
            }
            let query = passerelle_core::map::Query {
                category,
                site,
                language,
                open_now,
                capacity,
                org,
            };
            let directory = engine.directory()?;
            Ok(serde_json::to_value(passerelle_core::map::search(
                &directory, &m, &query, now,
            ))?)
        }
        Request::MapDirectory => {
            let directory = engine.directory()?;
            let version = engine.store().config().highest();
            let files = engine
                .store()
                .config_files_after(version.saturating_sub(1))?;
            let document = files
                .last()
                .map(|f| SignedFile::from_bytes(f))
                .transpose()?
                .map(|f| f.document)
                .unwrap_or_default();
            Ok(json!({ "profiles": *directory, "document": document }))
        }
        Request::Report { from, to } => {
            let parse = |s: &str| {
                time_fmt::parse_rfc3339(s)
                    .ok_or_else(|| anyhow!("`{}` is not a date", keys::truncate_for_error(s)))
            };
            let report = engine.report(parse(&from)?, parse(&to)?, now)?;
            Ok(serde_json::to_value(report)?)
        }
        Request::UserAdd {
            name,
            role,
            password,
        } => {
            let role = passerelle_core::store::UserRole::parse(&role).ok_or_else(|| {
                anyhow!(
                    "`{}` is not a role (caseworker, coordinator, admin)",
                    keys::truncate_for_error(&role)
                )
            })?;
            engine.store_mut().put_user(&name, role, &password)?;
            audit(
                engine,
                ctx,
                "user.add",
                &format!("{name} ({})", role.as_str()),
            )?;
            Ok(json!({ "name": name, "role": role.as_str() }))
        }
        Request::UserRemove { name } => {
            let existed = engine.store_mut().remove_user(&name)?;
            if !existed {
                bail!("no user `{}`", keys::truncate_for_error(&name));
            }
            audit(engine, ctx, "user.remove", &name)?;
            Ok(json!({ "removed": name }))
        }
        Request::UserList => Ok(serde_json::to_value(
            engine
                .store()
                .users()?
                .into_iter()
                .map(|u| json!({"name": u.name, "role": u.role.as_str()}))
                .collect::<Vec<_>>(),
        )?),
        Request::MapGaps => {
            let m = engine.mechanism()?.clone();
            let directory = engine.directory()?;
            Ok(serde_json::to_value(passerelle_core::map::gaps(
                &directory, &m,
            ))?)
        }
    }
}

fn status(engine: &Engine, ctx: &Context, now: OffsetDateTime) -> Result<Value> {
    let config = engine.store().config();
    let m = config.current();
    let counts = engine.store().log_counts()?;
    let equivocations: Vec<_> = engine
        .store()
        .equivocations()?
        .into_iter()
        .map(|(author, seq, id)| {
            let node = passerelle_core::keys::PublicKey::from_bytes(&author)
                .map(|k| k.node_id().to_string())
                .unwrap_or_default();
            json!({"node": node, "seq": seq, "event": id.to_hex()})
        })
        .collect();
    let ours = engine.version_vector()?;
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
    let override_until = engine
        .store()
        .meta(passerelle_core::engine::META_EXPIRY_OVERRIDE)?
        .and_then(|b| String::from_utf8(b).ok());
    Ok(json!({
        "node_id": engine.node_id().to_string(),
        "org": engine.org(),
        "mechanism_id": config.mechanism_id().map(|h| h.to_hex()),
        "mechanism": m.map(|m| m.doc.mechanism.clone()),
        "config_version": m.map(|m| m.doc.version),
        "config_expires_at": m.map(|m| time_fmt::rfc3339(m.doc.expires_at)),
        "config_expired": m.map(|m| m.is_expired(now)),
        "expiry_override_until": override_until,
        "can_create_case_events": engine.can_create_case_events(now).err().map(|e| e.to_string()),
        "read_only": engine.read_only(),
        "org_key_epochs": engine.epochs_held(),
        "events": counts.events,
        "held_back": counts.held,
        "waiting_for_dependencies": counts.waiting,
        "unreadable_yet": counts.unread,
        "equivocations": equivocations,
        "sync": sync_view(&ours),
        "network": network,
    }))
}

/// Most version-vector entries `status` lists (the digest covers all of them).
pub const STATUS_VECTOR_ENTRIES_MAX: usize = 256;

/// This node's replica at a glance: two nodes whose digests are equal hold the same logs, so an
/// operator (or a test) compares digests to see convergence.
fn sync_view(ours: &VersionVector) -> Value {
    let events: u64 = ours.entries.values().map(|(seq, _)| *seq).sum();
    let vector: Vec<Value> = ours
        .entries
        .iter()
        .take(STATUS_VECTOR_ENTRIES_MAX)
        .map(|(author, (seq, head))| {
            let node = passerelle_core::keys::PublicKey::from_bytes(author)
                .map(|k| k.node_id().to_string())
                .unwrap_or_default();
            json!({"node": node, "seq": seq, "head": head.to_hex()})
        })
        .collect();
    json!({
        "digest": ours.digest().to_hex(),
        "authors": ours.entries.len(),
        "events_in_logs": events,
        "vector": vector,
        "vector_truncated": ours.entries.len() > STATUS_VECTOR_ENTRIES_MAX,
    })
}

fn progress_bar(show: bool, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    // Drawn only once it has run more than a moment.
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

fn bundle_export(
    engine: &mut Engine,
    ctx: &Context,
    out: &std::path::Path,
    for_node: Option<String>,
    now: OffsetDateTime,
) -> Result<Value> {
    let m = engine.mechanism()?.clone();
    let (recipients, theirs, target) = match &for_node {
        Some(id) => {
            let node: NodeId = id.parse()?;
            let info = m
                .node(&node)
                .with_context(|| format!("node {node} is not in the configuration in force"))?;
            (
                vec![info.recipient.clone()],
                peer_vector(engine, &node),
                format!("node {node} ({})", info.label),
            )
        }
        None => (
            m.nodes().map(|n| n.recipient.clone()).collect::<Vec<_>>(),
            None,
            "every node of the mechanism".to_string(),
        ),
    };
    if recipients.is_empty() {
        bail!("the configuration lists no node to encrypt the bundle to");
    }
    if std::fs::symlink_metadata(out).is_ok() {
        bail!("{} already exists: refusing to overwrite it", out.display());
    }
    // A fresh name, created exclusively (never through a file or link planted there), 0600:
    // the bundle holds case ciphertext.
    let tmp = crate::fsutil::partial_path(out);
    let file = crate::fsutil::create_new(&tmp, true)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let writer = std::io::BufWriter::new(file);
    let bar = progress_bar(ctx.progress, "exporting");
    let result = bundle::export(
        engine,
        theirs.as_ref(),
        &recipients,
        writer,
        now,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    audit(
        engine,
        ctx,
        "bundle.export",
        &format!("{} events for {target}", report.events),
    )?;
    Ok(json!({
        "out": out,
        "events": report.events,
        "config_versions": report.config_versions,
        "for": target,
        "incremental": theirs.is_some(),
    }))
}

fn bundle_import(
    engine: &mut Engine,
    ctx: &Context,
    path: &std::path::Path,
    now: OffsetDateTime,
) -> Result<Value> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    let identity = engine_identity(engine)?;
    let bar = progress_bar(ctx.progress, "importing");
    let result = bundle::import(engine, &identity, reader, now, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = result?;
    let shared = engine.share_keys(now).unwrap_or_default();
    Ok(json!({
        "from_node": report.from_node,
        "events": report.events,
        "admitted": report.admitted,
        "duplicates": report.duplicates,
        "held_back": report.held,
        "refused": report.refused.iter().map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
        "config_versions": report.config_versions,
        "key_shares": shared.len(),
    }))
}

/// This node's own age identity, to open bundles addressed to it.
fn engine_identity(engine: &Engine) -> Result<age::x25519::Identity> {
    engine
        .node_identity()
        .ok_or_else(|| anyhow!("this node's identity is not loaded"))
}
