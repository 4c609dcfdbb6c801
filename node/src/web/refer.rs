//! The referral form: the partners the map proposes for the case, the fields to share, and
//! the referral sent.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::cases::{Typed, person_name};
use super::directory::{DirQuery, options_categories, options_sites, search_rows};
use super::session::Session;
use super::{
    PageCtx, WebState, field, form_csrf, lang_of, message, nonempty, not_joined, page, render,
};
use crate::i18n;
use crate::rpc::referral::ReferralSent;
use crate::rpc::words;
use crate::rpc::{self, Request};
use passerelle_core::engine::CaseView;
use passerelle_core::event::Urgency;

pub struct Proposal {
    org_id: String,
    org: String,
    name: String,
    site: String,
    now: String,
    capacity: String,
    capacity_class: String,
    languages: String,
}

#[derive(Template)]
#[template(path = "refer.html")]
struct ReferPage {
    page: PageCtx,
    id: String,
    name: String,
    categories: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    category: String,
    site: String,
    language: String,
    languages: Vec<(String, String)>,
    proposals: Vec<Proposal>,
    /// The other partners that provide services and can read a referral, not on the map for
    /// this search: (id, name).
    others: Vec<(String, String)>,
    /// (field id, its label in the page's language).
    shareable: Vec<(&'static str, String)>,
    /// What was chosen and typed, shown again after an error.
    typed: Typed,
    error: Option<String>,
}

async fn refer_page(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    case: &str,
    q: DirQuery,
    typed: HashMap<String, String>,
    error: Option<String>,
) -> Response {
    let p = page(headers, Some(session), &state.org, "refer-title");
    let Some(m) = state.mechanism().await else {
        return not_joined(p);
    };
    let c: CaseView = match state
        .call_in(
            p.lang,
            &session.user,
            Request::CaseShow {
                id: case.to_string(),
            },
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return message(StatusCode::NOT_FOUND, p, e),
    };
    let category = nonempty(&q.category)
        .or_else(|| c.data.needs.first().cloned())
        .unwrap_or_else(|| {
            m.doc
                .taxonomy
                .first()
                .map(|c| c.id.clone())
                // A mechanism without categories: none chosen, and the map proposes nothing.
                .unwrap_or_default()
        });
    // First opened, the map proposes partners at the case's site; "(any)" looks everywhere.
    let site = q.site.clone().unwrap_or_else(|| c.data.site.clone());
    let search = rpc::map::Search {
        category: Some(category.clone()),
        site: nonempty(&site),
        language: nonempty(&q.language),
        ..rpc::map::Search::default()
    };
    let lang = p.lang;
    let proposals = proposals(state, &session.user, lang, &m, search).await;
    let others = other_partners(&m, &state.org, &proposals);
    let mut r = render(ReferPage {
        id: c.id.clone(),
        name: person_name(&c.data.person),
        categories: options_categories(&m, lang),
        sites: options_sites(&m, lang),
        category,
        site,
        language: q.language,
        languages: super::directory::options_languages(lang),
        proposals,
        others,
        shareable: passerelle_core::payload::SHAREABLE_FIELDS
            .iter()
            .map(|f| (*f, i18n::field(lang, f)))
            .collect(),
        typed: Typed(typed),
        error: error.clone(),
        page: p,
    });
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

/// The members a referral may go to that the map does not propose here (no profile yet, no
/// service at the site): they provide services and hold a key, and are not this organisation.
fn other_partners(
    m: &passerelle_core::config::Mechanism,
    me: &str,
    proposed: &[Proposal],
) -> Vec<(String, String)> {
    m.doc
        .organisations
        .iter()
        .filter(|o| o.id != me && o.has_role(passerelle_core::config::Role::ProvideServices))
        .filter(|o| m.current_epoch(&o.id).is_some())
        .filter(|o| !proposed.iter().any(|p| p.org_id == o.id))
        .map(|o| (o.id.clone(), o.name.clone()))
        .collect()
}

/// The partners the map proposes for a referral: one service per organisation, not this one's.
async fn proposals(
    state: &WebState,
    user: &str,
    lang: &str,
    m: &passerelle_core::config::Mechanism,
    search: rpc::map::Search,
) -> Vec<Proposal> {
    let mut seen = std::collections::HashSet::new();
    search_rows(state, user, lang, m, Request::MapSearch(search))
        .await
        .into_iter()
        .filter(|(org, _)| org != state.org.as_str() && seen.insert(org.clone()))
        .map(|(org, r)| Proposal {
            org_id: org,
            org: r.org,
            name: r.name,
            site: r.site,
            now: r.now,
            capacity: r.capacity,
            capacity_class: r.capacity_class,
            languages: r.languages,
        })
        .collect()
}

pub(super) async fn refer_form(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    refer_page(&state, &headers, &session, &id, q, HashMap::new(), None).await
}

pub(super) async fn refer_send(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(mut form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(state, headers, session, form_csrf(&form));
    // The token is not typed: the page carries a fresh one.
    form.remove("csrf");
    let share: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("share_").map(str::to_string))
        .collect();
    // A field left empty is an empty text: the engine refuses an empty category or partner
    // as unknown, and its reason is shown on the form; the note may be empty.
    let category = field(&form, "category").unwrap_or_default();
    let lang = lang_of(&headers);
    if field(&form, "to_org").is_none() {
        let e = i18n::t(lang, "refer-choose-partner", &[]);
        let q = DirQuery {
            category,
            ..DirQuery::default()
        };
        return refer_page(&state, &headers, &session, &id, q, form, Some(e)).await;
    }
    let urgency = field(&form, "urgency").map_or(Ok(Urgency::Routine), |u| words::parse(&u));
    let request = urgency.map(|urgency| {
        Request::ReferralSend(rpc::referral::Send {
            case: id.clone(),
            to_org: field(&form, "to_org").unwrap_or_default(),
            category: category.clone(),
            urgency,
            share,
            note: field(&form, "note").unwrap_or_default(),
            emergency_override: field(&form, "emergency_override"),
        })
    });
    let answer = match request {
        Ok(request) => state.call_in(lang, &session.user, request).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(ReferralSent { referral }) => {
            Redirect::to(&format!("/referrals/{referral}")).into_response()
        }
        Err(e) => {
            let q = DirQuery {
                category,
                ..DirQuery::default()
            };
            refer_page(&state, &headers, &session, &id, q, form, Some(e)).await
        }
    }
}
