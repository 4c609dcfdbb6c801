//! The referrals: the inbox and the outbox, one referral and the steps taken on it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Session;
use super::{
    PageCtx, WebState, field, form_csrf, lang_of, message, or_nothing, page, readable, render,
};
use crate::i18n;
use crate::rpc::referral::Direction;
use crate::rpc::words;
use crate::rpc::{self, Request};
use passerelle_core::engine::ReferralView;
use passerelle_core::event::Transition;
use passerelle_core::fold::Status;

#[derive(Template)]
#[template(path = "referrals.html")]
struct ReferralsPage {
    page: PageCtx,
    heading: String,
    rows: Vec<RefRow>,
}

#[derive(Deserialize)]
pub(super) struct BoxQuery {
    #[serde(default)]
    r#box: String,
}

pub(super) async fn referrals(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<BoxQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let outbox = q.r#box == "outbox";
    let p = page(
        &headers,
        Some(&session),
        &state.org,
        if outbox { "nav-outbox" } else { "nav-inbox" },
    );
    let m = state.mechanism().await;
    let list: Vec<ReferralView> = or_nothing(
        "the referral list",
        state
            .call(
                &session.user,
                Request::ReferralList {
                    direction: if outbox {
                        Direction::Outbox
                    } else {
                        Direction::Inbox
                    },
                    status: None,
                },
            )
            .await,
    );
    let lang = p.lang;
    render(ReferralsPage {
        heading: p.title.clone(),
        rows: list
            .iter()
            .map(|r| ref_row(r, m.as_deref(), lang))
            .collect(),
        page: p,
    })
}

#[derive(Template)]
#[template(path = "referral.html")]
struct ReferralPage {
    page: PageCtx,
    r: RefRow,
    readable: bool,
    shared: Vec<(String, String)>,
    /// The fields this partner did not receive, named in the page's language.
    not_shared: String,
    /// Why nothing can be shown, when this node cannot read the referral.
    sealed: String,
    note: String,
    can_receive: bool,
    can_withdraw: bool,
    reasons: Vec<(String, String)>,
}

/// "Not shared (or not recorded): …" with the fields a readable referral lacks; empty when it
/// carries them all.
fn not_shared(lang: &str, v: &ReferralView) -> String {
    let missing: Vec<String> = passerelle_core::payload::SHAREABLE_FIELDS
        .iter()
        .filter(|f| !v.shared.contains_key(**f))
        .map(|f| i18n::field(lang, f))
        .collect();
    if missing.is_empty() {
        return String::new();
    }
    i18n::t(
        lang,
        "referral-not-shared",
        &[("fields", &missing.join(", "))],
    )
}

async fn referral_page(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    id: &str,
    error: Option<String>,
) -> Response {
    let mut p = page(headers, Some(session), &state.org, "nav-inbox");
    p.flash = error.clone();
    let m = state.mechanism().await;
    let v: ReferralView = match state
        .call(&session.user, Request::ReferralShow { id: id.to_string() })
        .await
    {
        Ok(v) => v,
        Err(e) => return message(StatusCode::NOT_FOUND, p, e),
    };
    let lang = p.lang;
    let open = matches!(
        v.status,
        Status::Sent | Status::Acknowledged | Status::Accepted
    );
    let mut r = render(ReferralPage {
        r: ref_row(&v, m.as_deref(), lang),
        readable: v.readable,
        shared: v
            .shared
            .iter()
            .map(|(k, value)| (i18n::field(lang, k), value.clone()))
            .collect(),
        not_shared: not_shared(lang, &v),
        sealed: if v.from_org == *state.org || v.to_org == *state.org {
            p.t("detail-awaiting-key")
        } else {
            p.t("detail-not-addressed")
        },
        // No note: nothing shown.
        note: v.note.clone().unwrap_or_default(),
        can_receive: open && v.to_org == *state.org,
        can_withdraw: open && v.from_org == *state.org,
        reasons: m
            .as_ref()
            .map(|m| {
                m.doc
                    .sop
                    .decline_reasons
                    .iter()
                    .map(|r| (r.id.clone(), r.name.get(lang).to_string()))
                    .collect()
            })
            // Not joined to a mechanism: no decline reasons to offer.
            .unwrap_or_default(),
        page: p,
    });
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

pub(super) async fn referral_show(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    referral_page(&state, &headers, &session, &id, None).await
}

pub(super) async fn referral_step(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(state, headers, session, form_csrf(&form));
    // No transition given: the empty word, which `words::parse` refuses with its reason, shown
    // on the page; the note may be empty.
    let transition = words::parse::<Transition>(&field(&form, "transition").unwrap_or_default());
    let request = transition.map(|transition| {
        Request::ReferralStep(rpc::referral::StepRequest {
            id: id.clone(),
            transition,
            reason: field(&form, "reason"),
            note: field(&form, "note").unwrap_or_default(),
            outcome: field(&form, "outcome"),
        })
    });
    let answer = match request {
        Ok(request) => {
            state
                .call_in::<rpc::referral::Stepped>(Some(lang_of(&headers)), &session.user, request)
                .await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(_) => Redirect::to(&format!("/referrals/{id}")).into_response(),
        Err(e) => referral_page(&state, &headers, &session, &id, Some(e)).await,
    }
}

pub struct RefRow {
    pub(super) id: String,
    pub(super) sent: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) category: String,
    pub(super) urgency: String,
    pub(super) urgency_class: String,
    pub(super) status: String,
    pub(super) status_class: String,
    pub(super) overdue: String,
}

pub(super) fn ref_row(
    r: &ReferralView,
    m: Option<&passerelle_core::config::Mechanism>,
    lang: &str,
) -> RefRow {
    let org = |o: &str| m.map_or(o.to_string(), |m| m.org_name(o).to_string());
    RefRow {
        id: r.id.clone(),
        sent: readable(Some(&r.sent_at)),
        from: org(&r.from_org),
        to: org(&r.to_org),
        category: match &r.category {
            Some(code) => m
                .and_then(|m| m.category(code).map(|c| c.name.get(lang).to_string()))
                .unwrap_or_else(|| code.clone()),
            None => i18n::t(lang, "category-sensitive", &[]),
        },
        urgency: i18n::urgency(lang, r.urgency),
        urgency_class: r.urgency.as_str().to_string(),
        status: i18n::status(lang, r.status),
        status_class: r.status.as_str().to_string(),
        // Not overdue: no badge (the template shows none for an empty text).
        overdue: r
            .overdue
            .map(|o| i18n::overdue(lang, o))
            .unwrap_or_default(),
    }
}
