//! The node's status: its configuration, its log and its peers.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{PageCtx, WebState, message, page, readable, render, zone};
use crate::i18n;
use crate::rpc::{Request, StatusAnswer};

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    page: PageCtx,
    config: String,
    expired: bool,
    log: String,
    peers: Vec<(String, String, String, String, String)>,
    /// (node, organisation, what its removal means here).
    removed: Vec<(String, String, String)>,
}

pub(super) async fn status(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-status");
    let st: StatusAnswer = match state.call_in(p.lang, &session.user, Request::Status).await {
        Ok(st) => st,
        Err(e) => return message(StatusCode::SERVICE_UNAVAILABLE, p, e),
    };
    let lang = p.lang;
    let m = state.mechanism().await;
    let zone = zone(m.as_deref(), &state.org);
    // A number the node does not know (not joined, a peer never heard from): an empty cell.
    let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    render(StatusPage {
        config: format!(
            "{} — {} — {}",
            // Not joined to a mechanism: no name.
            st.mechanism.clone().unwrap_or_default(),
            i18n::t(lang, "status-version", &[("n", &count(st.config_version))]),
            i18n::t(
                lang,
                "status-expires",
                &[("at", &readable(st.config_expires_at.as_deref(), zone))]
            ),
        ),
        expired: st.config_expired == Some(true),
        log: i18n::t(
            lang,
            "status-log",
            &[
                ("events", &st.events.to_string()),
                ("held", &st.held_back.to_string()),
                ("waiting", &st.waiting_for_dependencies.to_string()),
                ("unreadable", &st.unreadable_yet.to_string()),
                ("equivocations", &st.equivocations.len().to_string()),
            ],
        ),
        peers: st
            .network
            .peers
            .iter()
            .map(|peer| {
                (
                    peer.label.clone(),
                    peer.org.clone(),
                    i18n::t(
                        lang,
                        if peer.connected {
                            "status-connected"
                        } else {
                            "status-disconnected"
                        },
                        &[],
                    ),
                    readable(peer.last_seen.as_deref(), zone),
                    format!("↑{} ↓{}", count(peer.they_lack), count(peer.we_lack)),
                )
            })
            .collect(),
        removed: st
            .removed_nodes
            .iter()
            .map(|r| {
                (
                    r.node.chars().take(16).collect(),
                    m.as_deref()
                        .map_or(r.org.clone(), |m| m.org_name(&r.org).to_string()),
                    i18n::t(
                        lang,
                        "status-removed-detail",
                        &[
                            ("last", &r.last_seq.to_string()),
                            ("held", &r.held_seq.to_string()),
                        ],
                    ),
                )
            })
            .collect(),
        page: p,
    })
}
