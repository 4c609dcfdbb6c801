//! The HSDS 3.0 API, read-only, under `/hsds/`: the partner map as Open Referral's API serves
//! it (`hsds/spec/schema/openapi.json`). No token: the directory is public, like the posters.
//! It reads only the directory and the configuration in force, through the engine's two jobs
//! that hand out their cached `Arc`s; nothing else of the node is reachable from here. The
//! compiled directory is built once per change of either and kept.
//!
//! Served on the local API's address, and on its own listener with `run --hsds-listen`, for
//! publishing the directory beyond loopback (that listener serves nothing else).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use passerelle_core::config::Mechanism;
use passerelle_core::map::Profile;
use passerelle_core::map::hsds::{self, Hsds, Row};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::engine_thread::EngineHandle;

/// Largest query string accepted, in bytes.
pub const QUERY_MAX_BYTES: usize = 2048;
/// Largest `search` text, in characters.
pub const SEARCH_MAX_CHARS: usize = 200;
/// Largest page asked for; the default page size.
pub const PER_PAGE_MAX: usize = 100;
pub const PER_PAGE_DEFAULT: usize = 50;

type Built = (Arc<BTreeMap<String, Profile>>, Arc<Mechanism>, Arc<Hsds>);

/// What the HSDS handlers share.
#[derive(Clone)]
pub struct HsdsState {
    engine: EngineHandle,
    mechanism_id: Arc<String>,
    /// The directory compiled from these profiles and this configuration (held, so their
    /// pointers cannot be reused while the cache compares them).
    cache: Arc<Mutex<Option<Built>>>,
}

impl std::fmt::Debug for HsdsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsdsState").finish_non_exhaustive()
    }
}

impl HsdsState {
    pub fn new(engine: EngineHandle, mechanism_id: String) -> Self {
        HsdsState {
            engine,
            mechanism_id: Arc::new(mechanism_id),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The compiled directory of the map and configuration in force.
    async fn directory(&self) -> Result<Arc<Hsds>, Response> {
        let unavailable = |_| {
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is busy or stopping",
            )
        };
        let profiles = self.engine.directory().await.map_err(unavailable)?;
        let m = self
            .engine
            .mechanism()
            .await
            .map_err(unavailable)?
            .ok_or_else(|| failure(StatusCode::SERVICE_UNAVAILABLE, "no configuration in force"))?;
        if let Ok(cache) = self.cache.lock()
            && let Some((p, c, h)) = cache.as_ref()
            && Arc::ptr_eq(p, &profiles)
            && Arc::ptr_eq(c, &m)
        {
            return Ok(h.clone());
        }
        let built = Arc::new(hsds::build(&profiles, &m, &self.mechanism_id));
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((profiles, m, built.clone()));
        }
        Ok(built)
    }
}

/// The `/hsds/` routes. GET only (axum answers 405 to any other method).
pub fn router(state: HsdsState) -> Router {
    Router::new()
        .route("/hsds", get(root))
        .route("/hsds/", get(root))
        .route("/hsds/openapi.json", get(openapi))
        .route("/hsds/profile", get(profile_index))
        .route("/hsds/profile/", get(profile_index))
        .route("/hsds/profile/{file}", get(profile_file))
        .route("/hsds/services", get(services))
        .route("/hsds/services/{id}", get(service))
        .route("/hsds/organizations", get(organizations))
        .route("/hsds/organizations/{id}", get(organization))
        .route("/hsds/service_at_locations", get(service_at_locations))
        .route("/hsds/taxonomies", get(taxonomies))
        .route("/hsds/taxonomies/{id}", get(taxonomy))
        .route("/hsds/taxonomy_terms", get(taxonomy_terms))
        .route("/hsds/taxonomy_terms/{id}", get(taxonomy_term))
        .with_state(state)
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

fn not_found(what: &str) -> Response {
    failure(StatusCode::NOT_FOUND, &format!("no {what} with this id"))
}

/// The base of this server's URLs, from the Host header when it is a plain host name.
fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    format!("http://{host}/hsds")
}

async fn root(headers: HeaderMap) -> Response {
    let base = base(&headers);
    axum::Json(json!({
        "version": hsds::HSDS_VERSION,
        "profile": format!("{base}/profile/"),
        "openapi_url": format!("{base}/openapi.json"),
    }))
    .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], hsds::OPENAPI).into_response()
}

async fn profile_index(headers: HeaderMap) -> Response {
    let base = base(&headers);
    let files: Vec<Value> = hsds::PROFILE_FILES
        .iter()
        .map(|(name, _)| json!({ "name": name, "url": format!("{base}/profile/{name}") }))
        .collect();
    axum::Json(json!({
        "name": "Passerelle HSDS profile",
        "base": format!("HSDS {}", hsds::HSDS_VERSION),
        "description": "JSON Merge Patches over the HSDS 3.0 schemas: names in fr/en/ar, capacity, eligible case types, redacted locations.",
        "files": files,
    }))
    .into_response()
}

async fn profile_file(Path(file): Path<String>) -> Response {
    match hsds::PROFILE_FILES.iter().find(|(name, _)| *name == file) {
        Some((name, text)) => {
            let kind = if name.ends_with(".json") {
                "application/json"
            } else {
                "text/markdown; charset=utf-8"
            };
            ([(header::CONTENT_TYPE, kind)], *text).into_response()
        }
        None => failure(StatusCode::NOT_FOUND, "no such file in the profile"),
    }
}

/// A list request's parameters, checked: unknown ones are refused, as are those of the
/// specification this server does not implement.
#[derive(Debug, Default)]
struct ListQuery {
    search: Vec<String>,
    taxonomy_term_id: Option<String>,
    taxonomy_id: Option<String>,
    organization_id: Option<String>,
    parent_id: Option<String>,
    modified_after: Option<OffsetDateTime>,
    page: usize,
    per_page: usize,
    full: bool,
}

fn bool_param(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(format!("`{key}` must be true or false")),
    }
}

fn number_param(key: &str, v: &str, max: usize) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("`{key}` must be a whole number from 1 to {max}"))
}

fn modified_after(v: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(v, &Rfc3339)
        .ok()
        .or_else(|| passerelle_core::map::parse_date(v).map(|d| d.midnight().assume_utc()))
        .ok_or_else(|| {
            "`modified_after` must be a date-time like 2026-11-01T00:00:00Z, or a date".into()
        })
}

impl ListQuery {
    fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, String> {
        // No query string is an empty one.
        let raw = raw.unwrap_or_default();
        if raw.len() > QUERY_MAX_BYTES {
            return Err(format!("the query is longer than {QUERY_MAX_BYTES} bytes"));
        }
        let mut q = ListQuery {
            page: 1,
            per_page: PER_PAGE_DEFAULT,
            ..ListQuery::default()
        };
        for (key, value) in form_urlencoded(raw)? {
            if !allowed.contains(&key.as_str()) {
                return Err(match key.as_str() {
                    "format" | "minimal" | "postcode" | "proximity" | "full_service"
                    | "top_only" => format!("`{key}` is not supported by this server"),
                    _ => format!(
                        "unknown parameter `{}`",
                        passerelle_core::keys::truncate_for_error(&key)
                    ),
                });
            }
            let id = |v: &str| {
                (v.len() <= 64)
                    .then(|| v.to_string())
                    .ok_or(format!("`{key}` is too long"))
            };
            match key.as_str() {
                "search" => {
                    if value.chars().count() > SEARCH_MAX_CHARS {
                        return Err(format!(
                            "`search` is longer than {SEARCH_MAX_CHARS} characters"
                        ));
                    }
                    q.search = value
                        .to_lowercase()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                }
                "taxonomy_term_id" => q.taxonomy_term_id = Some(id(&value)?),
                "taxonomy_id" => q.taxonomy_id = Some(id(&value)?),
                "organization_id" => q.organization_id = Some(id(&value)?),
                "parent_id" => q.parent_id = Some(id(&value)?),
                "modified_after" => q.modified_after = Some(modified_after(&value)?),
                "page" => q.page = number_param("page", &value, 1_000_000)?,
                "per_page" => q.per_page = number_param("per_page", &value, PER_PAGE_MAX)?,
                "full" => q.full = bool_param("full", &value)?,
                _ => {}
            }
        }
        Ok(q)
    }

    fn matches_text(&self, text: &str) -> bool {
        self.search.iter().all(|w| text.contains(w.as_str()))
    }

    /// One page of `items`, with HSDS's page fields.
    fn page<T: serde::Serialize>(&self, items: Vec<T>) -> Response {
        let total = items.len();
        let pages = total.div_ceil(self.per_page);
        let contents: Vec<T> = items
            .into_iter()
            .skip((self.page - 1).saturating_mul(self.per_page))
            .take(self.per_page)
            .collect();
        axum::Json(json!({
            "total_items": total,
            "total_pages": pages,
            "page_number": self.page,
            "size": contents.len(),
            "first_page": self.page == 1,
            "last_page": self.page >= pages,
            "empty": contents.is_empty(),
            "contents": contents,
        }))
        .into_response()
    }
}

/// Decodes `a=1&b=x%20y` (with `+` for a space); refuses broken escapes and non-UTF-8.
fn form_urlencoded(raw: &str) -> Result<Vec<(String, String)>, String> {
    fn decode(s: &str) -> Result<String, String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s
                        .get(i + 1..i + 3)
                        .ok_or("a broken %-escape in the query")?;
                    out.push(
                        u8::from_str_radix(hex, 16)
                            .map_err(|_| "a broken %-escape in the query")?,
                    );
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| "the query is not UTF-8".to_string())
    }
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

const SERVICE_PARAMS: &[&str] = &[
    "search",
    "taxonomy_term_id",
    "taxonomy_id",
    "organization_id",
    "modified_after",
    "page",
    "per_page",
    "full",
];

/// The services that pass every filter (AND), in the directory's order.
fn filtered<'a>(
    h: &'a Hsds,
    q: &'a ListQuery,
) -> impl Iterator<Item = &'a hsds::CompiledService> + 'a {
    h.services.iter().filter(move |s| {
        q.matches_text(&s.text)
            && q.organization_id
                .as_ref()
                .is_none_or(|o| *o == s.organization_id)
            && q.taxonomy_term_id
                .as_ref()
                .is_none_or(|t| s.taxonomy_term_ids.contains(t))
            && q.taxonomy_id
                .as_ref()
                .is_none_or(|t| s.taxonomy_ids.contains(t))
            && q.modified_after.is_none_or(|after| {
                OffsetDateTime::parse(&s.last_modified, &Rfc3339).is_ok_and(|m| m >= after)
            })
    })
}

macro_rules! query_or_400 {
    ($raw:expr, $allowed:expr) => {
        match ListQuery::parse($raw.as_deref(), $allowed) {
            Ok(q) => q,
            Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
        }
    };
}

macro_rules! directory_or_503 {
    ($state:expr) => {
        match $state.directory().await {
            Ok(h) => h,
            Err(response) => return response,
        }
    };
}

async fn services(State(state): State<HsdsState>, RawQuery(raw): RawQuery) -> Response {
    let q = query_or_400!(raw, SERVICE_PARAMS);
    let h = directory_or_503!(state);
    // References: only the page's items are serialised, none copied.
    let items: Vec<&Value> = filtered(&h, &q)
        .map(|s| if q.full { &s.full } else { &s.list })
        .collect();
    q.page(items)
}

async fn service(State(state): State<HsdsState>, Path(id): Path<String>) -> Response {
    let h = directory_or_503!(state);
    match h.services.iter().find(|s| s.id == id) {
        Some(s) => axum::Json(&s.full).into_response(),
        None => not_found("service"),
    }
}

async fn service_at_locations(State(state): State<HsdsState>, RawQuery(raw): RawQuery) -> Response {
    let q = query_or_400!(raw, SERVICE_PARAMS);
    let h = directory_or_503!(state);
    let ids: std::collections::HashSet<&str> = filtered(&h, &q).map(|s| s.id.as_str()).collect();
    let items: Vec<&Value> = h
        .service_at_locations
        .iter()
        .filter(|sal| {
            sal["service_id"]
                .as_str()
                .is_some_and(|id| ids.contains(id))
        })
        .collect();
    q.page(items)
}

fn flat(o: &Value, table: &str) -> Value {
    let Some(t) = hsds::table(table) else {
        return Value::Null;
    };
    let Value::Object(map) = o else {
        return Value::Null;
    };
    Value::Object(
        map.iter()
            .filter(|(k, _)| t.columns.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Row>(),
    )
}

async fn organizations(State(state): State<HsdsState>, RawQuery(raw): RawQuery) -> Response {
    let q = query_or_400!(raw, &["search", "page", "per_page", "full"]);
    let h = directory_or_503!(state);
    let items = h
        .organizations
        .iter()
        .filter(|o| {
            // A field an object lacks is no text to match.
            let text = format!(
                "{}\n{}\n{}",
                o["name"].as_str().unwrap_or_default(),
                o["alternate_name"].as_str().unwrap_or_default(),
                o["description"].as_str().unwrap_or_default()
            )
            .to_lowercase();
            q.matches_text(&text)
        })
        .map(|o| {
            if q.full {
                o.clone()
            } else {
                flat(o, "organization")
            }
        })
        .collect::<Vec<Value>>();
    q.page(items)
}

async fn organization(State(state): State<HsdsState>, Path(id): Path<String>) -> Response {
    let h = directory_or_503!(state);
    match h
        .organizations
        .iter()
        .find(|o| o["id"].as_str() == Some(id.as_str()))
    {
        Some(o) => axum::Json(o).into_response(),
        None => not_found("organization"),
    }
}

fn rows_page(rows: &[Row], q: &ListQuery, keep: impl Fn(&Row) -> bool) -> Response {
    let items = rows
        .iter()
        .filter(|r| {
            // A field a row lacks is no text to match.
            let text = format!(
                "{}\n{}\n{}",
                r.get("name").and_then(Value::as_str).unwrap_or_default(),
                r.get("code").and_then(Value::as_str).unwrap_or_default(),
                r.get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )
            .to_lowercase();
            q.matches_text(&text) && keep(r)
        })
        .map(|r| Value::Object(r.clone()))
        .collect::<Vec<Value>>();
    q.page(items)
}

async fn taxonomies(State(state): State<HsdsState>, RawQuery(raw): RawQuery) -> Response {
    let q = query_or_400!(raw, &["search", "page", "per_page"]);
    let h = directory_or_503!(state);
    rows_page(h.taxonomies(), &q, |_| true)
}

async fn taxonomy_terms(State(state): State<HsdsState>, RawQuery(raw): RawQuery) -> Response {
    let q = query_or_400!(
        raw,
        &["search", "page", "per_page", "taxonomy_id", "parent_id"]
    );
    let h = directory_or_503!(state);
    let field = |r: &Row, k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
    rows_page(h.taxonomy_terms(), &q, |r| {
        q.taxonomy_id
            .as_ref()
            .is_none_or(|t| field(r, "taxonomy_id").as_ref() == Some(t))
            && q.parent_id
                .as_ref()
                .is_none_or(|p| field(r, "parent_id").as_ref() == Some(p))
    })
}

fn row_by_id(rows: &[Row], id: &str, what: &str) -> Response {
    match rows
        .iter()
        .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
    {
        Some(r) => axum::Json(r).into_response(),
        None => not_found(what),
    }
}

async fn taxonomy(State(state): State<HsdsState>, Path(id): Path<String>) -> Response {
    let h = directory_or_503!(state);
    row_by_id(h.taxonomies(), &id, "taxonomy")
}

async fn taxonomy_term(State(state): State<HsdsState>, Path(id): Path<String>) -> Response {
    let h = directory_or_503!(state);
    row_by_id(h.taxonomy_terms(), &id, "taxonomy term")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded_bounded_and_checked() {
        let q = ListQuery::parse(
            Some("search=H%C3%A9bergement+urgence&per_page=5&page=2"),
            SERVICE_PARAMS,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.search, vec!["hébergement", "urgence"]);
        assert_eq!((q.page, q.per_page), (2, 5));
        for bad in [
            "per_page=0",
            "per_page=101",
            "page=x",
            "search=%zz",
            "nope=1",
            "format=ndjson",
        ] {
            assert!(
                ListQuery::parse(Some(bad), SERVICE_PARAMS).is_err(),
                "{bad}"
            );
        }
        let long = format!("search={}", "a".repeat(QUERY_MAX_BYTES));
        assert!(ListQuery::parse(Some(&long), SERVICE_PARAMS).is_err());
        assert!(ListQuery::parse(Some("modified_after=2026-11-01"), SERVICE_PARAMS).is_ok());
        assert!(ListQuery::parse(Some("modified_after=yesterday"), SERVICE_PARAMS).is_err());
    }
}
