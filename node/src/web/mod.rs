//! The web UI for caseworkers and coordinators, served by `passerelle run` on the local API
//! address: server-rendered pages (askama templates, checked at compile time), every asset
//! embedded, French, English and Arabic (right to left). Per-user accounts with roles; sessions
//! in HttpOnly SameSite=Strict cookies; a CSRF token in every form; the Host header checked by
//! the API's guard (DNS rebinding); no secret ever in a URL. Every page that shows decrypted
//! personal data goes through `rpc::dispatch`, which writes the audit log with the user.
//!
//! This module holds the router, the shared state and what every page uses (its layout's
//! context, rendering, the secure headers, error messages, the session and CSRF checks); the
//! pages live in one file per area:
//!
//! - [`session`]: sessions, login and logout; [`throttle`]: how failed logins are held up;
//! - [`cases`]: the case list, the new-case form, one case;
//! - [`refer`]: the referral form with the partners the map proposes;
//! - [`referrals`]: the inbox and outbox, one referral and its steps;
//! - [`directory`]: the service directory, the posters and the gaps in the map;
//! - [`status`]: the node's status; [`indicators`]: the coordinators' report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use passerelle_core::engine::EngineError;
use passerelle_core::store::UserRole;
use rand::RngCore;

use crate::daemon::engine_thread::{EngineHandle, JobError};
use crate::i18n;
use crate::rpc::{self, Answer, NetworkView, Request};

/// The session, or a redirect to the login page.
macro_rules! session_or_login {
    ($state:expr, $headers:expr) => {
        match $state.session(&$headers).await {
            Some(s) => s,
            None => {
                return ::axum::response::IntoResponse::into_response(
                    ::axum::response::Redirect::to("/login"),
                );
            }
        }
    };
}

/// Refuses a POST whose form token is not the session's.
macro_rules! check_csrf {
    ($state:expr, $headers:expr, $session:expr, $token:expr) => {
        if !$crate::web::same(&$token, &$session.csrf) {
            let p = $crate::web::page(&$headers, Some(&$session), &$state.org, "error-title");
            let m = p.t("csrf-refused");
            return $crate::web::message(::axum::http::StatusCode::FORBIDDEN, p, m);
        }
    };
}

/// Refuses a page with case data to a role that sees none.
macro_rules! require_cases {
    ($state:expr, $headers:expr, $session:expr) => {
        if !$session.role.sees_cases() {
            let p = $crate::web::page(&$headers, Some(&$session), &$state.org, "error-title");
            let m = p.t("not-allowed");
            return $crate::web::message(::axum::http::StatusCode::FORBIDDEN, p, m);
        }
    };
}

mod cases;
mod directory;
mod indicators;
mod notify;
mod refer;
mod referrals;
mod session;
mod status;
mod throttle;

use cases::{
    case_create, case_erase, case_export, case_new, case_show, case_withdraw_consent, cases,
};
use directory::{directory, gaps, poster, posters};
use indicators::indicators;
use refer::{refer_form, refer_send};
use referrals::{referral_show, referral_step, referrals};
use session::{Session, login, login_form, logout};
use status::status;
use throttle::LoginGate;

const LANG_COOKIE: &str = "passerelle_lang";

/// The web UI's shared state.
#[derive(Clone, Debug)]
pub struct WebState {
    pub engine: EngineHandle,
    pub network: Arc<Mutex<NetworkView>>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    login: Arc<LoginGate>,
    /// The notification streams open (bounded).
    streams: Arc<notify::Streams>,
    org: Arc<String>,
    /// Cookie names carry the port: browsers share cookies across the ports of one host, and
    /// several nodes may run on one machine.
    session_cookie: Arc<String>,
    login_cookie: Arc<String>,
}

impl WebState {
    pub fn new(
        engine: EngineHandle,
        network: Arc<Mutex<NetworkView>>,
        org: String,
        port: u16,
    ) -> Self {
        Self {
            engine,
            network,
            sessions: Arc::default(),
            login: Arc::default(),
            streams: Arc::default(),
            org: Arc::new(org),
            session_cookie: Arc::new(format!("passerelle_session_{port}")),
            login_cookie: Arc::new(format!("passerelle_login_{port}")),
        }
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What every page's layout needs.
pub struct PageCtx {
    pub lang: &'static str,
    pub dir: &'static str,
    pub title: String,
    pub user: Option<String>,
    pub org: String,
    pub csrf: String,
    pub sees_cases: bool,
    pub sees_indicators: bool,
    /// What went wrong with the last request, shown above the page.
    pub flash: Option<String>,
    /// What the last request did, confirmed above the page.
    pub notice: Option<String>,
}

impl PageCtx {
    pub fn t(&self, key: &str) -> String {
        i18n::t(self.lang, key, &[])
    }
}

fn lang_of(headers: &HeaderMap) -> &'static str {
    // No language cookie yet: the empty name, which `i18n::lang` reads as the default language.
    i18n::lang(&cookie(headers, LANG_COOKIE).unwrap_or_default())
}

fn page(headers: &HeaderMap, session: Option<&Session>, org: &str, title_key: &str) -> PageCtx {
    let lang = lang_of(headers);
    PageCtx {
        lang,
        dir: if i18n::rtl(lang) { "rtl" } else { "ltr" },
        title: i18n::t(lang, title_key, &[]),
        user: session.map(|s| s.user.clone()),
        org: org.to_string(),
        // No session, no token: the only form then is the login's, which has its own nonce.
        csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
        sees_cases: session.is_some_and(|s| s.role.sees_cases()),
        sees_indicators: session.is_some_and(|s| s.role != UserRole::Caseworker),
        flash: None,
        notice: None,
    }
}

fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(text) => html(text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("template: {e}")).into_response(),
    }
}

/// A whole page already rendered, with the headers every page carries.
fn html(text: String) -> Response {
    let mut r = Html(text).into_response();
    secure_headers(r.headers_mut());
    r
}

/// Headers every page carries: no framing (clickjacking), no sniffing, no referrer leaks, and
/// a content security policy that allows only this server (all assets are inline or embedded;
/// the one script is `/assets/app.js`, served from the binary, and it talks only to `/events`).
fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    page: PageCtx,
    heading: String,
    message: String,
}

fn message(status: StatusCode, page: PageCtx, message: String) -> Response {
    let heading = page.t("error-title");
    let mut r = render(MessagePage {
        page,
        heading,
        message,
    });
    *r.status_mut() = status;
    r
}

/// The page shown while this node has joined no mechanism.
pub(super) fn not_joined(page: PageCtx) -> Response {
    let said = page.t("error-not-joined");
    message(StatusCode::SERVICE_UNAVAILABLE, page, said)
}

/// A refusal of the engine in the page's language, when it is one a person can act on.
fn say_refusal(lang: &str, e: &anyhow::Error) -> Option<String> {
    i18n::refusal(lang, e.downcast_ref::<EngineError>()?)
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/lang/{lang}", get(set_lang))
        .route("/directory", get(directory))
        .route("/posters", get(posters))
        .route("/posters/{site}", get(poster))
        .route("/gaps", get(gaps))
        .route("/cases", get(cases).post(case_create))
        .route("/cases/new", get(case_new))
        .route("/cases/{id}", get(case_show))
        .route("/cases/{id}/refer", get(refer_form).post(refer_send))
        .route("/cases/{id}/export", get(case_export))
        .route("/cases/{id}/withdraw-consent", post(case_withdraw_consent))
        .route("/cases/{id}/erase", post(case_erase))
        .route("/referrals", get(referrals))
        .route("/referrals/{id}", get(referral_show))
        .route("/referrals/{id}/step", post(referral_step))
        .route("/status", get(status))
        .route("/indicators", get(indicators))
        .route("/events", get(notify::events))
        .route("/assets/app.js", get(app_js))
        .with_state(state)
}

impl WebState {
    /// Runs a request as the session's user and returns its typed answer (`T`); a refusal is
    /// the node's own sentence.
    async fn call<T: Answer>(&self, user: &str, request: Request) -> Result<T, String> {
        self.call_in("en", user, request).await
    }

    /// Runs a request that creates events: a rule of the mechanism that refuses it is told in
    /// `lang`, the page's language.
    async fn call_in<T: Answer>(
        &self,
        lang: &str,
        user: &str,
        request: Request,
    ) -> Result<T, String> {
        let network = match self.network.lock() {
            Ok(view) => view.clone(),
            Err(e) => {
                // A writer panicked while holding it: the request still runs, without a view
                // of the peers, rather than fail.
                tracing::warn!("web: the network view is not readable ({e}); asked without it");
                NetworkView::default()
            }
        };
        let ctx = rpc::Context {
            user: user.to_string(),
            network,
            progress: false,
        };
        match self.engine.rpc(ctx, request, None).await {
            Ok(answer) => answer.into_answer().map_err(|e| e.to_string()),
            Err(JobError::Refused(e)) => {
                Err(say_refusal(lang, &e).unwrap_or_else(|| crate::one_sentence(&e)))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn mechanism(&self) -> Option<Arc<passerelle_core::config::Mechanism>> {
        self.engine.mechanism().await.ok().flatten()
    }
}

/// The UTC offset, in minutes, of this node's organisation's first site: the time zone every
/// page shows times in. No mechanism, or an organisation with no site: UTC.
fn zone(m: Option<&passerelle_core::config::Mechanism>, org: &str) -> i16 {
    m.and_then(|m| {
        let site = m.org(org)?.sites.first()?;
        m.site(site).map(|s| s.utc_offset_minutes)
    })
    .unwrap_or(0)
}

/// The UI's one script (the notifications), embedded in the binary.
async fn app_js() -> Response {
    let mut r = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/app.js"),
    )
        .into_response();
    secure_headers(r.headers_mut());
    r
}

async fn home(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    if session.role.sees_cases() {
        Redirect::to("/referrals?box=inbox").into_response()
    } else {
        Redirect::to("/indicators").into_response()
    }
}

async fn set_lang(Path(lang): Path<String>) -> Response {
    let lang = i18n::lang(&lang);
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={lang}; SameSite=Strict; Path=/; Max-Age=31536000"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// An RFC 3339 time as a person reads it (nothing when absent or unreadable).
fn readable(text: Option<&str>, zone: i16) -> String {
    text.and_then(passerelle_core::time_fmt::parse_rfc3339)
        .map(|t| passerelle_core::time_fmt::readable_in(t, zone))
        // Absent or unreadable: an empty cell, as documented above.
        .unwrap_or_default()
}

/// Whether a person's field reads left to right whatever the page's direction: a phone
/// number or a date in an Arabic page must not be mirrored ("+216 …" with its "+" on the
/// right is a misdialing risk). Names and free text take their own direction (`<bdi>`).
fn reads_ltr(field: &str) -> bool {
    matches!(field, "phone" | "date_of_birth" | "age")
}

fn nonempty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

fn field(form: &HashMap<String, String>, k: &str) -> Option<String> {
    form.get(k).and_then(|v| nonempty(v))
}

fn list(form: &HashMap<String, String>, k: &str) -> Vec<String> {
    form.get(k)
        .map(|v| v.split(',').filter_map(nonempty).collect())
        // A field left out of the form is an empty list.
        .unwrap_or_default()
}

/// The CSRF token a form carries; none reads as an empty one, which `check_csrf!` refuses.
fn form_csrf(form: &HashMap<String, String>) -> String {
    form.get("csrf").cloned().unwrap_or_default()
}

/// What a page lists, or nothing when the engine could not answer: the page still shows (its
/// navigation, its filters), and the reason goes to the log.
fn or_nothing<T: Default>(what: &str, answer: Result<T, String>) -> T {
    answer.unwrap_or_else(|e| {
        tracing::warn!("web: {what} not shown: {e}");
        T::default()
    })
}
