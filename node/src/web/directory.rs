//! The map's pages: the service directory, the posters of each site and the gaps in the map.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::{
    PageCtx, WebState, message, nonempty, not_joined, or_nothing, page, render, secure_headers,
};
use crate::i18n;
use crate::rpc::{self, Request};
use passerelle_core::engine::Refusal;
use passerelle_core::map::{Entry, Gap};

pub struct DirRow {
    pub(super) org: String,
    pub(super) name: String,
    category: String,
    pub(super) site: String,
    pub(super) now: String,
    pub(super) capacity: String,
    pub(super) capacity_class: String,
    pub(super) languages: String,
    contact: String,
    verified: String,
}

#[derive(Template)]
#[template(path = "directory.html")]
struct DirectoryPage {
    page: PageCtx,
    categories: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    languages: Vec<(String, String)>,
    category: String,
    site: String,
    language: String,
    open_now: bool,
    rows: Vec<DirRow>,
}

#[derive(Deserialize, Default)]
pub(super) struct DirQuery {
    #[serde(default)]
    pub(super) category: String,
    /// None when the page is first opened: the node's own site is shown, not the whole map.
    #[serde(default)]
    pub(super) site: Option<String>,
    #[serde(default)]
    pub(super) language: String,
    #[serde(default)]
    pub(super) open_now: Option<String>,
}

pub(super) async fn search_rows(
    state: &WebState,
    user: &str,
    lang: &str,
    m: &passerelle_core::config::Mechanism,
    query: Request,
) -> Vec<(String, DirRow)> {
    let found: Vec<Entry> = or_nothing("the map's services", state.call(user, query).await);
    found
        .into_iter()
        .map(|e| (e.org.clone(), dir_row(e, lang, m)))
        .collect()
}

/// A service as the directory shows it, in the page's language.
fn dir_row(e: Entry, lang: &str, m: &passerelle_core::config::Mechanism) -> DirRow {
    let svc = e.service;
    let contact = svc
        .contact
        .as_ref()
        .map(|c| {
            [c.phone.clone(), c.email.clone()]
                .into_iter()
                .flatten()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(" · ")
        })
        // No contact given: an empty cell.
        .unwrap_or_default();
    let capacity = svc.capacity.as_str();
    DirRow {
        org: e.org_name,
        name: svc.name.get(lang).to_string(),
        category: m
            .category(&svc.category)
            .map_or(svc.category.clone(), |c| c.name.get(lang).to_string()),
        site: m
            .site(&svc.site)
            .map_or(svc.site.clone(), |x| x.name.get(lang).to_string()),
        now: i18n::t(
            lang,
            if e.open_now { "open-now" } else { "closed-now" },
            &[],
        ),
        capacity: i18n::t(lang, &format!("capacity-{capacity}"), &[]),
        capacity_class: capacity.to_string(),
        languages: i18n::language_names(lang, &svc.languages),
        contact,
        verified: svc.verified,
    }
}

pub(super) fn options_categories(
    m: &passerelle_core::config::Mechanism,
    lang: &str,
) -> Vec<(String, String)> {
    m.doc
        .taxonomy
        .iter()
        .map(|c| (c.id.clone(), c.name.get(lang).to_string()))
        .collect()
}

/// The languages a person may speak, named in `lang`, for a select.
pub(super) fn options_languages(lang: &str) -> Vec<(String, String)> {
    i18n::PERSON_LANGUAGES
        .iter()
        .map(|c| (c.to_string(), i18n::language_name(lang, c)))
        .collect()
}

pub(super) fn options_sites(
    m: &passerelle_core::config::Mechanism,
    lang: &str,
) -> Vec<(String, String)> {
    m.doc
        .sites
        .iter()
        .map(|c| (c.id.clone(), c.name.get(lang).to_string()))
        .collect()
}

pub(super) async fn directory(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<DirQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-directory");
    let Some(m) = state.mechanism().await else {
        return not_joined(p);
    };
    let open_now = q.open_now.is_some();
    // First opened, the directory shows the site this organisation works at; "(any)" shows
    // the whole map.
    let site = q.site.unwrap_or_else(|| {
        m.org(&state.org)
            .and_then(|o| o.sites.first().cloned())
            .unwrap_or_default()
    });
    let request = Request::MapSearch(rpc::map::Search {
        category: nonempty(&q.category),
        site: nonempty(&site),
        language: nonempty(&q.language),
        open_now,
        capacity: None,
        org: None,
    });
    let rows = search_rows(&state, &session.user, p.lang, &m, request)
        .await
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    render(DirectoryPage {
        categories: options_categories(&m, p.lang),
        sites: options_sites(&m, p.lang),
        languages: options_languages(p.lang),
        page: p,
        category: q.category,
        site,
        language: q.language,
        open_now,
        rows,
    })
}

#[derive(Template)]
#[template(path = "posters.html")]
struct PostersPage {
    page: PageCtx,
    sites: Vec<(String, String)>,
}

pub(super) async fn posters(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-posters");
    let Some(m) = state.mechanism().await else {
        return not_joined(p);
    };
    render(PostersPage {
        sites: options_sites(&m, p.lang),
        page: p,
    })
}

#[derive(Deserialize)]
pub(super) struct PosterQuery {
    #[serde(default)]
    lang: String,
    #[serde(default)]
    size: String,
}

pub(super) async fn poster(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<PosterQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-posters");
    let Some(m) = state.mechanism().await else {
        return not_joined(p);
    };
    let profiles = match state.engine.directory().await {
        Ok(d) => (*d).clone(),
        Err(e) => {
            tracing::warn!("web: the partner map could not be read for a poster: {e}");
            let said = p.t("error-directory-unreadable");
            return message(StatusCode::SERVICE_UNAVAILABLE, p, said);
        }
    };
    let size = if q.size.is_empty() {
        "a4"
    } else {
        q.size.as_str()
    };
    if m.site(&site).is_none() {
        let said = i18n::refused(p.lang, &Refusal::naming(Refusal::UnknownSite, &site));
        return message(StatusCode::NOT_FOUND, p, said);
    }
    if crate::poster::page_size(size).is_err() {
        let said = p.t("error-poster-size");
        return message(StatusCode::NOT_FOUND, p, said);
    }
    match crate::poster::render(
        &m,
        &profiles,
        Some(&site),
        &q.lang,
        size,
        time::OffsetDateTime::now_utc(),
    ) {
        Ok(html) => {
            let mut r = Html(html).into_response();
            secure_headers(r.headers_mut());
            r
        }
        Err(e) => message(StatusCode::NOT_FOUND, p, e.to_string()),
    }
}

#[derive(Template)]
#[template(path = "gaps.html")]
struct GapsPage {
    page: PageCtx,
    categories: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    category: String,
    site: String,
    /// (site, category, how many of its services are full).
    rows: Vec<(String, String, String)>,
}

#[derive(Deserialize, Default)]
pub(super) struct GapsQuery {
    #[serde(default)]
    category: String,
    #[serde(default)]
    site: String,
}

pub(super) async fn gaps(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<GapsQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "gaps-title");
    let Some(m) = state.mechanism().await else {
        return not_joined(p);
    };
    let found: Vec<Gap> = or_nothing(
        "the map's gaps",
        state.call(&session.user, Request::MapGaps).await,
    );
    let rows = found
        .into_iter()
        .filter(|g| q.site.is_empty() || g.site == q.site)
        .filter(|g| q.category.is_empty() || g.category == q.category)
        .map(|g| {
            (
                m.site(&g.site)
                    .map_or(g.site.clone(), |x| x.name.get(p.lang).to_string()),
                m.category(&g.category)
                    .map_or(g.category.clone(), |c| c.name.get(p.lang).to_string()),
                if g.unavailable > 0 {
                    g.unavailable.to_string()
                } else {
                    String::new()
                },
            )
        })
        .collect();
    render(GapsPage {
        categories: options_categories(&m, p.lang),
        sites: options_sites(&m, p.lang),
        category: q.category,
        site: q.site,
        page: p,
        rows,
    })
}
