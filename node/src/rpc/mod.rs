//! The node's operations as typed requests and answers: what the command line sends to the
//! running daemon over the local API, and runs in-process when no daemon runs; what the web
//! UI, the demo and the benchmark ask. One `dispatch` serves them all, so the paths cannot
//! drift apart.
//!
//! A [`Request`] carries core types (urgencies, transitions, statuses, capacities, roles,
//! dates, node ids), parsed once where the bytes came in: clap for the command line, serde for
//! the HTTP API, form parsing in the web UI. A [`Response`] holds one typed answer per request;
//! it becomes JSON only where it leaves the process (the API body, `--json` output, the
//! idempotency record), and its JSON is the answer's own shape, with no envelope.
//!
//! One file per area: `case`, `referral`, `map`, `config` (and keys), `users`, `operations`
//! (audit, backup, bundles, report) and `status`; `words` holds the words that name the enums.

pub mod case;
pub mod config;
pub mod map;
pub mod operations;
pub mod referral;
pub mod status;
pub mod users;
pub mod words;

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use passerelle_core::config::chain::SignedFile;
use passerelle_core::engine::{CaseSummary, CaseView, Engine, ReferralView};
use passerelle_core::fold::Status;
use passerelle_core::keys::NodeId;
use passerelle_core::map::{Capacity, Entry, Gap, Profile};
use passerelle_core::payload::CaseData;
use passerelle_core::report::Report;
use passerelle_core::store::{AuditEntry, RequestId, UserRole};
use passerelle_core::time_fmt;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

pub use status::{NetworkView, PeerView, StatusAnswer, peer_vector_key};

/// A request to the node. On the wire (the API body) it is an object whose `op` names the
/// request; the enums inside travel as their words (`"urgency": "urgent"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    /// The document text of the configuration version in force.
    ConfigDocument,
    /// Apply configuration files (each travels as its signed file's JSON text).
    ConfigUpdate {
        #[serde(with = "config::signed_files")]
        files: Vec<SignedFile>,
    },
    /// Install the organisation's key epochs (age identity text per epoch).
    ImportKey {
        epochs: Vec<(u32, String)>,
    },
    /// Let this node create case events for a while after its configuration expired.
    OverrideExpiry {
        hours: u32,
    },
    /// Each author's highest sequence number in this node's log, if the node holds the
    /// configuration version `config` (its hash, hex): what `mechanism next` proposes as a
    /// removed node's cut-off.
    LogHeads {
        config: String,
    },
    CaseOpen {
        data: Box<CaseData>,
    },
    CaseList {
        search: Option<String>,
        /// At most this many, the most recently active first (all when absent).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// A case by its id or an id prefix (resolved against this node's cases).
    CaseShow {
        id: String,
    },
    /// Everything this node holds about the person of a case, for them to read (audited).
    CaseExport {
        id: String,
    },
    CaseAction {
        id: String,
        action: case::CaseStep,
        note: String,
    },
    Determine {
        id: String,
        case_type: String,
        determined: bool,
        note: String,
    },
    ReferralSend(referral::Send),
    ReferralList {
        direction: referral::Direction,
        #[serde(with = "words::opt", default)]
        status: Option<Status>,
        /// Only the referrals still waiting for the receiver (not with `status`).
        #[serde(default)]
        open: bool,
        /// At most this many of each box, newest first (all when absent).
        #[serde(default)]
        limit: Option<usize>,
    },
    ReferralShow {
        id: String,
    },
    ReferralStep(referral::StepRequest),
    Audit {
        limit: usize,
    },
    Backup {
        out: PathBuf,
    },
    BundleExport {
        out: PathBuf,
        #[serde(with = "words::node_opt", default)]
        for_node: Option<NodeId>,
    },
    BundleImport {
        path: PathBuf,
    },
    /// Set an organisation's partner-map profile.
    MapImport {
        profile: Box<Profile>,
    },
    /// Change one service's capacity and/or mark it verified today.
    MapUpdate {
        org: Option<String>,
        service: String,
        #[serde(with = "words::opt", default)]
        capacity: Option<Capacity>,
        verify: bool,
    },
    /// Publish a compacted save of a profile.
    MapSnapshot {
        org: Option<String>,
    },
    MapSearch(map::Search),
    /// Every profile, with the configuration document (for posters and exports).
    MapDirectory,
    MapGaps,
    /// The coordination report for referrals sent in [from, to).
    Report {
        #[serde(with = "words::date")]
        from: OffsetDateTime,
        #[serde(with = "words::date")]
        to: OffsetDateTime,
    },
    /// Create or replace a web UI account.
    UserAdd {
        name: String,
        #[serde(with = "words::one")]
        role: UserRole,
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
            Request::LogHeads { .. } => "log_heads",
            Request::ConfigUpdate { .. } => "config_update",
            Request::ImportKey { .. } => "import_key",
            Request::OverrideExpiry { .. } => "override_expiry",
            Request::CaseOpen { .. } => "case_open",
            Request::CaseList { .. } => "case_list",
            Request::CaseShow { .. } => "case_show",
            Request::CaseExport { .. } => "case_export",
            Request::CaseAction { .. } => "case_action",
            Request::Determine { .. } => "determine",
            Request::ReferralSend(_) => "referral_send",
            Request::ReferralList { .. } => "referral_list",
            Request::ReferralShow { .. } => "referral_show",
            Request::ReferralStep(_) => "referral_step",
            Request::Audit { .. } => "audit",
            Request::Backup { .. } => "backup",
            Request::BundleExport { .. } => "bundle_export",
            Request::BundleImport { .. } => "bundle_import",
            Request::MapImport { .. } => "map_import",
            Request::MapUpdate { .. } => "map_update",
            Request::MapSnapshot { .. } => "map_snapshot",
            Request::MapSearch(_) => "map_search",
            Request::MapDirectory => "map_directory",
            Request::MapGaps => "map_gaps",
            Request::Report { .. } => "report",
            Request::UserAdd { .. } => "user_add",
            Request::UserRemove { .. } => "user_remove",
            Request::UserList => "user_list",
        }
    }
}

/// The node's answer to a request: one variant per kind of answer. It serializes as the
/// answer itself (no tag); reading one back needs the request it answers
/// ([`Response::decode`]).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Response {
    Status(Box<StatusAnswer>),
    ConfigDocument(config::ConfigDocument),
    LogHeads(config::LogHeads),
    ConfigUpdated(config::ConfigUpdated),
    KeysImported(config::KeysImported),
    ExpiryOverridden(config::ExpiryOverridden),
    CaseOpened(case::CaseOpened),
    Cases(Vec<CaseSummary>),
    Case(Box<CaseView>),
    /// A case action or a determination.
    EventMade(case::EventMade),
    ReferralSent(referral::ReferralSent),
    Referrals(Vec<ReferralView>),
    Referral(Box<ReferralView>),
    Stepped(referral::Stepped),
    Audit(Vec<operations::AuditRow>),
    BackedUp(operations::BackedUp),
    Exported(operations::Exported),
    Imported(operations::Imported),
    /// A profile set or a service changed.
    MapChanged(map::MapChanged),
    MapSnapshot(map::MapSnapshot),
    Services(Vec<Entry>),
    Directory(Box<map::Directory>),
    Gaps(Vec<Gap>),
    Report(Box<Report>),
    Account(users::Account),
    Removed(users::Removed),
    Accounts(Vec<users::Account>),
}

impl Response {
    /// Reads the answer to `request` from its JSON (the API body, an idempotency record).
    pub fn decode<'de, D: Deserializer<'de>>(request: &Request, d: D) -> Result<Self, D::Error> {
        use Response as R;
        Ok(match request {
            Request::Status => R::Status(Deserialize::deserialize(d)?),
            Request::ConfigDocument => R::ConfigDocument(Deserialize::deserialize(d)?),
            Request::LogHeads { .. } => R::LogHeads(Deserialize::deserialize(d)?),
            Request::ConfigUpdate { .. } => R::ConfigUpdated(Deserialize::deserialize(d)?),
            Request::ImportKey { .. } => R::KeysImported(Deserialize::deserialize(d)?),
            Request::OverrideExpiry { .. } => R::ExpiryOverridden(Deserialize::deserialize(d)?),
            Request::CaseOpen { .. } => R::CaseOpened(Deserialize::deserialize(d)?),
            Request::CaseList { .. } => R::Cases(Deserialize::deserialize(d)?),
            Request::CaseShow { .. } | Request::CaseExport { .. } => {
                R::Case(Deserialize::deserialize(d)?)
            }
            Request::CaseAction { .. } | Request::Determine { .. } => {
                R::EventMade(Deserialize::deserialize(d)?)
            }
            Request::ReferralSend(_) => R::ReferralSent(Deserialize::deserialize(d)?),
            Request::ReferralList { .. } => R::Referrals(Deserialize::deserialize(d)?),
            Request::ReferralShow { .. } => R::Referral(Deserialize::deserialize(d)?),
            Request::ReferralStep(_) => R::Stepped(Deserialize::deserialize(d)?),
            Request::Audit { .. } => R::Audit(Deserialize::deserialize(d)?),
            Request::Backup { .. } => R::BackedUp(Deserialize::deserialize(d)?),
            Request::BundleExport { .. } => R::Exported(Deserialize::deserialize(d)?),
            Request::BundleImport { .. } => R::Imported(Deserialize::deserialize(d)?),
            Request::MapImport { .. } | Request::MapUpdate { .. } => {
                R::MapChanged(Deserialize::deserialize(d)?)
            }
            Request::MapSnapshot { .. } => R::MapSnapshot(Deserialize::deserialize(d)?),
            Request::MapSearch(_) => R::Services(Deserialize::deserialize(d)?),
            Request::MapDirectory => R::Directory(Deserialize::deserialize(d)?),
            Request::MapGaps => R::Gaps(Deserialize::deserialize(d)?),
            Request::Report { .. } => R::Report(Deserialize::deserialize(d)?),
            Request::UserAdd { .. } => R::Account(Deserialize::deserialize(d)?),
            Request::UserRemove { .. } => R::Removed(Deserialize::deserialize(d)?),
            Request::UserList => R::Accounts(Deserialize::deserialize(d)?),
        })
    }

    /// The typed answer inside, when it is of the kind asked for.
    pub fn into_answer<T: Answer>(self) -> Result<T> {
        T::from_response(self).ok_or_else(|| {
            anyhow!("the node gave another kind of answer than the request asked for (a bug)")
        })
    }
}

/// A typed answer that a [`Response`] may hold: what callers ask `client::call` for.
pub trait Answer: Sized {
    fn from_response(response: Response) -> Option<Self>;
}

macro_rules! answers {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl Answer for $ty {
            fn from_response(response: Response) -> Option<Self> {
                match response {
                    Response::$variant(answer) => Some(answer),
                    _ => None,
                }
            }
        }
    )*};
}

macro_rules! boxed_answers {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl Answer for $ty {
            fn from_response(response: Response) -> Option<Self> {
                match response {
                    Response::$variant(answer) => Some(*answer),
                    _ => None,
                }
            }
        }
    )*};
}

answers! {
    ConfigDocument => config::ConfigDocument,
    LogHeads => config::LogHeads,
    ConfigUpdated => config::ConfigUpdated,
    KeysImported => config::KeysImported,
    ExpiryOverridden => config::ExpiryOverridden,
    CaseOpened => case::CaseOpened,
    Cases => Vec<CaseSummary>,
    EventMade => case::EventMade,
    ReferralSent => referral::ReferralSent,
    Referrals => Vec<ReferralView>,
    Stepped => referral::Stepped,
    Audit => Vec<operations::AuditRow>,
    BackedUp => operations::BackedUp,
    Exported => operations::Exported,
    Imported => operations::Imported,
    MapChanged => map::MapChanged,
    MapSnapshot => map::MapSnapshot,
    Services => Vec<Entry>,
    Gaps => Vec<Gap>,
    Account => users::Account,
    Removed => users::Removed,
    Accounts => Vec<users::Account>,
}

boxed_answers! {
    Status => StatusAnswer,
    Case => CaseView,
    Referral => ReferralView,
    Directory => map::Directory,
    Report => Report,
}

impl Answer for Response {
    fn from_response(response: Response) -> Option<Self> {
        Some(response)
    }
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

/// Carries out a request at most once per idempotency key: a key already held gives back the
/// answer recorded (or, if the node stopped before writing it, names the events the request
/// made) instead of doing the work again. The record holds the answer's JSON, as the API
/// sends it.
pub fn dispatch_once(
    engine: &mut Engine,
    ctx: &Context,
    request: Request,
    id: Option<RequestId>,
) -> Result<Response> {
    let Some(id) = id else {
        return dispatch(engine, ctx, request);
    };
    if let Some(record) = engine.store().request(&id)? {
        return match record.answer {
            Some(answer) => Ok(Response::decode(
                &request,
                &mut serde_json::Deserializer::from_str(&answer),
            )?),
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

/// Runs one request against the engine.
pub fn dispatch(engine: &mut Engine, ctx: &Context, request: Request) -> Result<Response> {
    let now = OffsetDateTime::now_utc();
    Ok(match request {
        Request::Status => Response::Status(Box::new(status::status(engine, ctx, now)?)),
        Request::ConfigDocument => Response::ConfigDocument(config::document(engine)?),
        Request::LogHeads { config } => Response::LogHeads(config::log_heads(engine, &config)?),
        Request::ConfigUpdate { files } => {
            Response::ConfigUpdated(config::update(engine, &files, now)?)
        }
        Request::ImportKey { epochs } => {
            Response::KeysImported(config::import_key(engine, &epochs, now)?)
        }
        Request::OverrideExpiry { hours } => {
            Response::ExpiryOverridden(config::override_expiry(engine, ctx, hours, now)?)
        }
        Request::Audit { limit } => Response::Audit(operations::audit_list(engine, limit)?),
        Request::Backup { out } => Response::BackedUp(operations::backup(engine, ctx, out)?),
        Request::BundleExport { out, for_node } => {
            Response::Exported(operations::bundle_export(engine, ctx, &out, for_node, now)?)
        }
        Request::BundleImport { path } => {
            Response::Imported(operations::bundle_import(engine, ctx, &path, now)?)
        }
        Request::Report { from, to } => {
            Response::Report(Box::new(operations::report(engine, from, to, now)?))
        }
        Request::UserAdd {
            name,
            role,
            password,
        } => Response::Account(users::add(engine, ctx, name, role, &password)?),
        Request::UserRemove { name } => Response::Removed(users::remove(engine, ctx, name)?),
        Request::UserList => Response::Accounts(users::list(engine)?),
        other => return dispatch_cases_and_map(engine, ctx, other, now),
    })
}

/// The case, referral and map requests.
fn dispatch_cases_and_map(
    engine: &mut Engine,
    ctx: &Context,
    request: Request,
    now: OffsetDateTime,
) -> Result<Response> {
    Ok(match request {
        Request::CaseOpen { data } => Response::CaseOpened(case::open(engine, ctx, *data, now)?),
        Request::CaseList { search, limit } => Response::Cases(case::list(
            engine,
            ctx,
            search.as_deref(),
            limit.unwrap_or(usize::MAX),
        )?),
        Request::CaseShow { id } => Response::Case(Box::new(case::show(engine, ctx, &id, now)?)),
        Request::CaseExport { id } => {
            Response::Case(Box::new(case::export(engine, ctx, &id, now)?))
        }
        Request::CaseAction { id, action, note } => {
            Response::EventMade(case::action(engine, ctx, &id, action, &note, now)?)
        }
        Request::Determine {
            id,
            case_type,
            determined,
            note,
        } => Response::EventMade(case::determine(
            engine, ctx, &id, &case_type, determined, &note, now,
        )?),
        Request::ReferralSend(send) => {
            Response::ReferralSent(referral::send(engine, ctx, send, now)?)
        }
        Request::ReferralList {
            direction,
            status,
            open,
            limit,
        } => {
            let which = referral::which(status, open)?;
            let limit = limit.unwrap_or(usize::MAX);
            Response::Referrals(referral::list(engine, ctx, direction, which, limit, now)?)
        }
        Request::ReferralShow { id } => {
            Response::Referral(Box::new(referral::show(engine, ctx, &id, now)?))
        }
        Request::ReferralStep(step) => Response::Stepped(referral::step(engine, ctx, step, now)?),
        Request::MapImport { profile } => Response::MapChanged(map::import(engine, &profile, now)?),
        Request::MapUpdate {
            org,
            service,
            capacity,
            verify,
        } => Response::MapChanged(map::update(engine, org, &service, capacity, verify, now)?),
        Request::MapSnapshot { org } => Response::MapSnapshot(map::snapshot(engine, org, now)?),
        Request::MapSearch(search) => Response::Services(map::search(engine, search, now)?),
        Request::MapDirectory => Response::Directory(Box::new(map::directory(engine)?)),
        Request::MapGaps => Response::Gaps(map::gaps(engine)?),
        other => bail!("request `{}` is not dispatched here (a bug)", other.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_the_api_carries_them() {
        let send: Request = serde_json::from_str(
            r#"{"op": "referral_send", "case": "abcdef12", "to_org": "mdm", "category": "health",
                "urgency": "urgent", "share": ["age"], "note": "", "emergency_override": null}"#,
        )
        .expect("a referral to send");
        let Request::ReferralSend(send) = send else {
            panic!("not a referral_send: {send:?}");
        };
        assert_eq!(send.urgency, passerelle_core::event::Urgency::Urgent);
        let refused = |text: &str| serde_json::from_str::<Request>(text).is_err();
        assert!(refused(
            r#"{"op": "referral_send", "case": "a", "to_org": "m",
            "category": "c", "urgency": "soon", "share": [], "note": ""}"#
        ));
        assert!(refused(
            r#"{"op": "map_search", "open_now": false, "surprise": true}"#
        ));
        let list: Request =
            serde_json::from_str(r#"{"op": "referral_list", "direction": "inbox"}"#)
                .expect("a list with no status");
        assert!(matches!(
            list,
            Request::ReferralList {
                direction: referral::Direction::Inbox,
                status: None,
                open: false,
                limit: None,
            }
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op": "status"}"#).is_ok());
    }

    #[test]
    fn an_answer_reads_back_with_the_request_it_answers() {
        let request = Request::ReferralStep(referral::StepRequest {
            id: "abcdef12".into(),
            transition: passerelle_core::event::Transition::Accept,
            reason: None,
            note: String::new(),
            outcome: None,
        });
        let answer = Response::Stepped(referral::Stepped {
            event: "00ff".into(),
            status: passerelle_core::fold::Status::Accepted,
        });
        let text = serde_json::to_string(&answer).expect("an answer encodes");
        assert_eq!(text, r#"{"event":"00ff","status":"accepted"}"#);
        let back = Response::decode(&request, &mut serde_json::Deserializer::from_str(&text))
            .expect("the answer reads back");
        let stepped: referral::Stepped = back.into_answer().expect("a step's answer");
        assert_eq!(stepped.status, passerelle_core::fold::Status::Accepted);
        let wrong = Response::decode(
            &Request::Status,
            &mut serde_json::Deserializer::from_str(&text),
        );
        assert!(wrong.is_err(), "a step's answer is not a status");
    }
}
