//! The web UI for caseworkers and coordinators, served by `passerelle run` on the local API
//! address: server-rendered pages (askama templates, checked at compile time), every asset
//! embedded, French, English and Arabic (right to left). Per-user accounts with roles; sessions
//! in HttpOnly SameSite=Strict cookies; a CSRF token in every form; the Host header checked by
//! the API's guard (DNS rebinding); no secret ever in a URL. Every page that shows decrypted
//! personal data goes through `rpc::dispatch`, which writes the audit log with the user.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use passerelle_core::store::UserRole;
use rand::RngCore;
use serde::Deserialize;

use crate::daemon::engine_thread::{EngineHandle, JobError};
use crate::i18n;
use crate::rpc::case::CaseOpened;
use crate::rpc::referral::{Direction, ReferralSent};
use crate::rpc::words;
use crate::rpc::{self, Answer, NetworkView, Request, StatusAnswer};
use passerelle_core::engine::{CaseSummary, CaseView, EngineError, ReferralView};
use passerelle_core::event::{Transition, Urgency};
use passerelle_core::fold::{Rule, Status};
use passerelle_core::map::{Entry, Gap};
use passerelle_core::payload::{CaseData, Consent, Person};

/// How long a session lasts without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// How long a session lasts at most, however busy: a working day and a half, so a session
/// left open on a shared computer does not live for ever.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once (the oldest go first).
pub const SESSIONS_MAX: usize = 1_000;
const LANG_COOKIE: &str = "passerelle_lang";

/// Failed logins to one account before each further failure makes it wait.
pub const LOGIN_FREE_FAILURES_PER_ACCOUNT: u32 = 5;
/// Failed logins from one client address before each further failure makes it wait. Higher
/// than per account: the UI listens on loopback, so every person at this computer shares it.
pub const LOGIN_FREE_FAILURES_PER_ADDRESS: u32 = 50;
/// The wait after the first failure beyond the free ones; it doubles with each further one.
pub const LOGIN_DELAY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait imposed on an account.
pub const LOGIN_DELAY_MAX_PER_ACCOUNT: Duration = Duration::from_secs(15 * 60);
/// Longest wait imposed on a client address (short: it locks out everyone at this computer).
pub const LOGIN_DELAY_MAX_PER_ADDRESS: Duration = Duration::from_secs(60);
/// Failures older than this are forgotten (longer than either longest wait).
pub const LOGIN_FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);
/// Most accounts and addresses whose failures are counted at once.
pub const LOGIN_THROTTLE_ENTRIES_MAX: usize = 10_000;
/// Password verifications (Argon2id, tens of milliseconds of one core each) run at once, on
/// blocking threads: one core stays free for the engine and other pages.
pub const LOGIN_VERIFICATIONS_CONCURRENT_MAX: usize = 1;
/// Logins waiting for a verification slot before more are told to come back later.
pub const LOGIN_WAITING_MAX: usize = 32;

#[derive(Debug, Clone)]
struct Session {
    user: String,
    role: UserRole,
    /// The account's credential stamp when the session began: a removal, a new role or a new
    /// password changes it, and the session ends.
    stamp: u64,
    csrf: String,
    started: Instant,
    last_used: Instant,
}

impl Session {
    /// Whether neither the idle timeout nor the absolute lifetime has passed.
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_used) <= SESSION_IDLE
            && now.saturating_duration_since(self.started) <= SESSION_LIFETIME
    }
}

/// What failed logins are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    /// The account name typed (cut to the longest name an account may have).
    Account(String),
    /// The client's address.
    Address(IpAddr),
}

impl ThrottleKey {
    fn account(name: &str) -> Self {
        let mut end = name.len().min(passerelle_core::store::USER_NAME_MAX_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        ThrottleKey::Account(name[..end].to_string())
    }

    /// (failures allowed before waits begin, longest wait)
    fn policy(&self) -> (u32, Duration) {
        match self {
            ThrottleKey::Account(_) => {
                (LOGIN_FREE_FAILURES_PER_ACCOUNT, LOGIN_DELAY_MAX_PER_ACCOUNT)
            }
            ThrottleKey::Address(_) => {
                (LOGIN_FREE_FAILURES_PER_ADDRESS, LOGIN_DELAY_MAX_PER_ADDRESS)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No login on this key is checked before then.
    blocked_until: Option<Instant>,
}

/// Failed logins per account and per client address, bounded: past the free failures each
/// failure doubles the wait before the next attempt is even checked.
#[derive(Debug, Default)]
struct LoginThrottle {
    entries: HashMap<ThrottleKey, Failures>,
}

impl LoginThrottle {
    /// How long a login on these keys must still wait, if it must.
    fn wait(&self, keys: &[ThrottleKey], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|k| self.entries.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    fn failed(&mut self, keys: &[ThrottleKey], now: Instant) {
        for key in keys {
            if !self.entries.contains_key(key) && self.entries.len() >= LOGIN_THROTTLE_ENTRIES_MAX {
                self.make_room(now);
            }
            let (free, max) = key.policy();
            let entry = self.entries.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                blocked_until: None,
            });
            if now.saturating_duration_since(entry.last) > LOGIN_FAILURES_FORGOTTEN_AFTER {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            if entry.count > free {
                let doublings = (entry.count - free - 1).min(20);
                let delay = LOGIN_DELAY_FIRST.saturating_mul(1u32 << doublings).min(max);
                entry.blocked_until = Some(now + delay);
            }
        }
    }

    /// A right password: the account's failures are forgotten (the address's are not, or one
    /// account of the attacker's own would reset the count of its guesses at others).
    fn succeeded(&mut self, account: &ThrottleKey) {
        self.entries.remove(account);
    }

    /// Forgets what has expired, or else the entry whose last failure is oldest.
    fn make_room(&mut self, now: Instant) {
        self.entries
            .retain(|_, f| now.saturating_duration_since(f.last) <= LOGIN_FAILURES_FORGOTTEN_AFTER);
        if self.entries.len() >= LOGIN_THROTTLE_ENTRIES_MAX
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

/// What every login shares: the throttle, the bound on verifications running at once, and the
/// number of logins waiting for one.
#[derive(Debug)]
struct LoginGate {
    throttle: Mutex<LoginThrottle>,
    verifiers: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
}

impl Default for LoginGate {
    fn default() -> Self {
        Self {
            throttle: Mutex::default(),
            verifiers: Arc::new(tokio::sync::Semaphore::new(
                LOGIN_VERIFICATIONS_CONCURRENT_MAX,
            )),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl LoginGate {
    fn wait(&self, keys: &[ThrottleKey]) -> Option<Duration> {
        self.throttle
            .lock()
            .ok()
            .and_then(|t| t.wait(keys, Instant::now()))
    }

    fn failed(&self, keys: &[ThrottleKey]) {
        if let Ok(mut t) = self.throttle.lock() {
            t.failed(keys, Instant::now());
        }
    }

    fn succeeded(&self, account: &ThrottleKey) {
        if let Ok(mut t) = self.throttle.lock() {
            t.succeeded(account);
        }
    }
}

/// Counts a login among those waiting for a verification slot while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// `None` when too many already wait.
    fn enter(counter: &'a AtomicUsize) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        let guard = Waiting(counter);
        (before < LOGIN_WAITING_MAX).then_some(guard)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The web UI's shared state.
#[derive(Clone, Debug)]
pub struct WebState {
    pub engine: EngineHandle,
    pub network: Arc<Mutex<NetworkView>>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    login: Arc<LoginGate>,
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
    pub flash: Option<String>,
}

impl PageCtx {
    pub fn t(&self, key: &str) -> String {
        i18n::t(self.lang, key, &[])
    }
}

fn lang_of(headers: &HeaderMap) -> &'static str {
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
        csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
        sees_cases: session.is_some_and(|s| s.role.sees_cases()),
        sees_indicators: session.is_some_and(|s| s.role != UserRole::Caseworker),
        flash: None,
    }
}

fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => {
            let mut r = Html(html).into_response();
            secure_headers(r.headers_mut());
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("template: {e}")).into_response(),
    }
}

/// Headers every page carries: no framing (clickjacking), no sniffing, no referrer leaks, and
/// a content security policy that allows only this server (all assets are inline or embedded).
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
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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
        .route("/referrals", get(referrals))
        .route("/referrals/{id}", get(referral_show))
        .route("/referrals/{id}/step", post(referral_step))
        .route("/status", get(status))
        .route("/indicators", get(indicators))
        .with_state(state)
}

impl WebState {
    /// The request's session, if it is live and its account is still what it was when the
    /// session began: asked of the store on every request, so removing an account, giving it
    /// another role or a new password (`passerelle user …`, through the daemon) ends its
    /// sessions at once.
    async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, &self.session_cookie)?;
        let now = Instant::now();
        let session = {
            let mut sessions = self.sessions.lock().ok()?;
            let session = sessions.get_mut(&id)?;
            if !session.live(now) {
                sessions.remove(&id);
                return None;
            }
            session.last_used = now;
            session.clone()
        };
        let name = session.user.clone();
        match self.engine.account(name).await {
            Ok(Some(account)) if account.role == session.role && account.stamp == session.stamp => {
                Some(session)
            }
            Ok(_) => {
                if let Ok(mut sessions) = self.sessions.lock() {
                    sessions.remove(&id);
                }
                None
            }
            // The engine did not answer: refuse this request, keep the session for the next.
            Err(_) => None,
        }
    }

    /// Runs a request as the session's user and returns its typed answer (`T`); a refusal is
    /// the node's own sentence.
    async fn call<T: Answer>(&self, user: &str, request: Request) -> Result<T, String> {
        self.call_in(None, user, request).await
    }

    /// Runs a request that creates events: a rule of the mechanism that refuses it is told in
    /// `lang`, the page's language.
    async fn call_in<T: Answer>(
        &self,
        lang: Option<&str>,
        user: &str,
        request: Request,
    ) -> Result<T, String> {
        let network = self.network.lock().map(|v| v.clone()).unwrap_or_default();
        let ctx = rpc::Context {
            user: user.to_string(),
            network,
            progress: false,
        };
        match self.engine.rpc(ctx, request, None).await {
            Ok(answer) => answer.into_answer().map_err(|e| e.to_string()),
            Err(JobError::Refused(e)) => Err(match (lang, rule_of(&e)) {
                (Some(lang), Some(rule)) => say_rule(lang, rule),
                _ => crate::one_sentence(&e),
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn mechanism(&self) -> Option<Arc<passerelle_core::config::Mechanism>> {
        self.engine.mechanism().await.ok().flatten()
    }
}

/// The rule of the mechanism that refused a request, if that is why it failed.
fn rule_of(e: &anyhow::Error) -> Option<Rule> {
    match e.downcast_ref::<EngineError>() {
        Some(EngineError::Rule(rule)) => Some(rule.clone()),
        _ => None,
    }
}

/// A rule violation in a person's language.
fn say_rule(lang: &str, rule: Rule) -> String {
    i18n::t(lang, "rule-refused", &[("rule", &i18n::rule(lang, &rule))])
}

/// The session, or a redirect to the login page.
macro_rules! session_or_login {
    ($state:expr, $headers:expr) => {
        match $state.session(&$headers).await {
            Some(s) => s,
            None => return Redirect::to("/login").into_response(),
        }
    };
}

/// Refuses a POST whose form token is not the session's.
macro_rules! check_csrf {
    ($state:expr, $headers:expr, $session:expr, $token:expr) => {
        if !same(&$token, &$session.csrf) {
            let p = page(&$headers, Some(&$session), &$state.org, "error-title");
            let m = p.t("csrf-refused");
            return message(StatusCode::FORBIDDEN, p, m);
        }
    };
}

macro_rules! require_cases {
    ($state:expr, $headers:expr, $session:expr) => {
        if !$session.role.sees_cases() {
            let p = page(&$headers, Some(&$session), &$state.org, "error-title");
            let m = p.t("not-allowed");
            return message(StatusCode::FORBIDDEN, p, m);
        }
    };
}

async fn home(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    if session.role.sees_cases() {
        Redirect::to("/referrals?box=inbox").into_response()
    } else {
        Redirect::to("/indicators").into_response()
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    page: PageCtx,
    nonce: String,
    /// Why the last attempt did not log in (empty on a fresh form).
    error: String,
}

/// The login form with a fresh double-submit nonce, its cookie, and `error` shown above it.
fn login_page(
    state: &WebState,
    headers: &HeaderMap,
    status: StatusCode,
    error: String,
) -> Response {
    let nonce = random_token();
    let mut r = render(LoginPage {
        page: page(headers, None, &state.org, "login-title"),
        nonce: nonce.clone(),
        error,
    });
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}={nonce}; HttpOnly; SameSite=Strict; Path=/login",
        state.login_cookie
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// A login refused by the throttle, before any password work: 429 with when to come back.
fn throttled(state: &WebState, headers: &HeaderMap, wait: Duration) -> Response {
    // Whole seconds, rounded up, at least one: Retry-After has no fractions.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1).to_string();
    let lang = lang_of(headers);
    let error = i18n::t(lang, "login-throttled", &[("seconds", &seconds)]);
    let mut r = login_page(state, headers, StatusCode::TOO_MANY_REQUESTS, error);
    if let Ok(v) = HeaderValue::from_str(&seconds) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn login_form(State(state): State<WebState>, headers: HeaderMap) -> Response {
    login_page(&state, &headers, StatusCode::OK, String::new())
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

/// Checks a login without holding up the engine: the throttle first (no work for a blocked
/// account or address), then a quick engine call for the stored hash, then Argon2id on a
/// blocking thread, a bounded number at a time.
async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    // Login CSRF: the form's nonce must match the cookie set with the form (double submit).
    let nonce = cookie(&headers, &state.login_cookie).unwrap_or_default();
    if nonce.is_empty() || !same(&nonce, &form.csrf) {
        let p = page(&headers, None, &state.org, "error-title");
        let m = p.t("csrf-refused");
        return message(StatusCode::FORBIDDEN, p, m);
    }
    let mut keys = vec![ThrottleKey::account(&form.user)];
    if let Some(Extension(ConnectInfo(addr))) = peer {
        keys.push(ThrottleKey::Address(addr.ip()));
    }
    if let Some(wait) = state.login.wait(&keys) {
        return throttled(&state, &headers, wait);
    }
    let permit = {
        let Some(_waiting) = Waiting::enter(&state.login.waiting) else {
            return throttled(&state, &headers, LOGIN_DELAY_FIRST);
        };
        match state.login.verifiers.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return unavailable(&state, &headers),
        }
    };
    // Failures recorded while this login waited for its turn count against it too: a burst
    // of parallel guesses is cut off as soon as the free ones are spent.
    if let Some(wait) = state.login.wait(&keys) {
        return throttled(&state, &headers, wait);
    }
    let Ok(account) = state.engine.account(form.user.clone()).await else {
        return unavailable(&state, &headers);
    };
    let password = form.password;
    let verified = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        passerelle_core::store::verify_password(account.as_ref(), &password)
            .then_some(account)
            .flatten()
    })
    .await;
    let account = match verified {
        Ok(Some(account)) => account,
        Ok(None) => {
            state.login.failed(&keys);
            let error = i18n::t(lang_of(&headers), "login-failed", &[]);
            return login_page(&state, &headers, StatusCode::UNAUTHORIZED, error);
        }
        Err(_) => return unavailable(&state, &headers),
    };
    state.login.succeeded(&keys[0]);
    let id = random_token();
    let now = Instant::now();
    if let Ok(mut sessions) = state.sessions.lock() {
        sessions.retain(|_, s| s.live(now));
        if sessions.len() >= SESSIONS_MAX
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                user: account.name.clone(),
                role: account.role,
                stamp: account.stamp,
                csrf: random_token(),
                started: now,
                last_used: now,
            },
        );
    }
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/",
        state.session_cookie
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The engine could not be asked (shutting down, or stopped): 503, and no failure counted.
fn unavailable(state: &WebState, headers: &HeaderMap) -> Response {
    let error = i18n::t(lang_of(headers), "login-unavailable", &[]);
    login_page(state, headers, StatusCode::SERVICE_UNAVAILABLE, error)
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    let session = session_or_login!(state, headers);
    check_csrf!(state, headers, session, form.csrf);
    if let (Some(id), Ok(mut sessions)) = (
        cookie(&headers, &state.session_cookie),
        state.sessions.lock(),
    ) {
        sessions.remove(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    // The cookie's own name (it carries the port), so the browser really drops it.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        state.session_cookie
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
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
fn readable(text: Option<&str>) -> String {
    text.and_then(passerelle_core::time_fmt::parse_rfc3339)
        .map(passerelle_core::time_fmt::readable)
        .unwrap_or_default()
}

// ----- Directory, posters, gaps -----

pub struct DirRow {
    org: String,
    name: String,
    category: String,
    site: String,
    now: String,
    capacity: String,
    capacity_class: String,
    languages: String,
    contact: String,
    verified: String,
}

#[derive(Template)]
#[template(path = "directory.html")]
struct DirectoryPage {
    page: PageCtx,
    categories: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    category: String,
    site: String,
    language: String,
    open_now: bool,
    rows: Vec<DirRow>,
}

#[derive(Deserialize, Default)]
struct DirQuery {
    #[serde(default)]
    category: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    language: String,
    #[serde(default)]
    open_now: Option<String>,
}

fn nonempty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

async fn search_rows(
    state: &WebState,
    user: &str,
    lang: &str,
    m: &passerelle_core::config::Mechanism,
    query: Request,
) -> Vec<(String, DirRow)> {
    let found: Vec<Entry> = state.call(user, query).await.unwrap_or_default();
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
        languages: svc.languages.join(", "),
        contact,
        verified: svc.verified,
    }
}

fn options_categories(m: &passerelle_core::config::Mechanism, lang: &str) -> Vec<(String, String)> {
    m.doc
        .taxonomy
        .iter()
        .map(|c| (c.id.clone(), c.name.get(lang).to_string()))
        .collect()
}

fn options_sites(m: &passerelle_core::config::Mechanism, lang: &str) -> Vec<(String, String)> {
    m.doc
        .sites
        .iter()
        .map(|c| (c.id.clone(), c.name.get(lang).to_string()))
        .collect()
}

async fn directory(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<DirQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-directory");
    let Some(m) = state.mechanism().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "not joined".into());
    };
    let open_now = q.open_now.is_some();
    let request = Request::MapSearch(rpc::map::Search {
        category: nonempty(&q.category),
        site: nonempty(&q.site),
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
        page: p,
        category: q.category,
        site: q.site,
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

async fn posters(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-posters");
    let Some(m) = state.mechanism().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "not joined".into());
    };
    render(PostersPage {
        sites: options_sites(&m, p.lang),
        page: p,
    })
}

#[derive(Deserialize)]
struct PosterQuery {
    #[serde(default)]
    lang: String,
    #[serde(default)]
    size: String,
}

async fn poster(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<PosterQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-posters");
    let Some(m) = state.mechanism().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "not joined".into());
    };
    let profiles = state.engine.directory().await.map(|d| (*d).clone());
    let Ok(profiles) = profiles else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "directory".into());
    };
    let size = if q.size.is_empty() {
        "a4"
    } else {
        q.size.as_str()
    };
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
    rows: Vec<(String, String, String)>,
}

async fn gaps(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "gaps-title");
    let Some(m) = state.mechanism().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "not joined".into());
    };
    let found: Vec<Gap> = state
        .call(&session.user, Request::MapGaps)
        .await
        .unwrap_or_default();
    let rows = found
        .into_iter()
        .map(|g| {
            (
                m.site(&g.site)
                    .map_or(g.site.clone(), |x| x.name.get(p.lang).to_string()),
                m.category(&g.category)
                    .map_or(g.category.clone(), |c| c.name.get(p.lang).to_string()),
                if g.unavailable > 0 {
                    format!(
                        "{} ({})",
                        g.unavailable,
                        i18n::t(p.lang, "capacity-full", &[])
                    )
                } else {
                    String::new()
                },
            )
        })
        .collect();
    render(GapsPage { page: p, rows })
}

// ----- Cases -----

pub struct CaseRow {
    id: String,
    short: String,
    name: String,
    case_type: String,
    site: String,
    manager: String,
    status: String,
}

#[derive(Template)]
#[template(path = "cases.html")]
struct CasesPage {
    page: PageCtx,
    search: String,
    rows: Vec<CaseRow>,
}

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    search: String,
}

async fn cases(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let p = page(&headers, Some(&session), &state.org, "nav-cases");
    let m = state.mechanism().await;
    let list: Vec<CaseSummary> = state
        .call(
            &session.user,
            Request::CaseList {
                search: nonempty(&q.search),
            },
        )
        .await
        .unwrap_or_default();
    let rows = list
        .into_iter()
        .map(|c| {
            let ct = c.case_type;
            let site = c.site;
            CaseRow {
                short: c.id.chars().take(12).collect(),
                id: c.id,
                name: c.name,
                case_type: m
                    .as_ref()
                    .and_then(|m| m.case_type(&ct).map(|x| x.name.get(p.lang).to_string()))
                    .unwrap_or(ct),
                site: m
                    .as_ref()
                    .and_then(|m| m.site(&site).map(|x| x.name.get(p.lang).to_string()))
                    .unwrap_or(site),
                manager: m
                    .as_ref()
                    .map_or(c.manager.clone(), |m| m.org_name(&c.manager).to_string()),
                status: i18n::case_status(p.lang, c.status),
            }
        })
        .collect();
    render(CasesPage {
        page: p,
        search: q.search,
        rows,
    })
}

#[derive(Template)]
#[template(path = "case_new.html")]
struct CaseNewPage {
    page: PageCtx,
    case_types: Vec<(String, String)>,
    sites: Vec<(String, String)>,
    categories: Vec<(String, String)>,
    user: String,
    error: Option<String>,
}

async fn case_new_page(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    error: Option<String>,
) -> Response {
    let p = page(headers, Some(session), &state.org, "nav-new-case");
    let Some(m) = state.mechanism().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "not joined".into());
    };
    let lang = p.lang;
    let mut r = render(CaseNewPage {
        case_types: m
            .doc
            .case_types
            .iter()
            .map(|c| (c.id.clone(), c.name.get(lang).to_string()))
            .collect(),
        sites: options_sites(&m, lang),
        categories: options_categories(&m, lang),
        user: session.user.clone(),
        error: error.clone(),
        page: p,
    });
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

async fn case_new(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    case_new_page(&state, &headers, &session, None).await
}

fn field(form: &HashMap<String, String>, k: &str) -> Option<String> {
    form.get(k).and_then(|v| nonempty(v))
}

fn list(form: &HashMap<String, String>, k: &str) -> Vec<String> {
    form.get(k)
        .map(|v| v.split(',').filter_map(nonempty).collect())
        .unwrap_or_default()
}

async fn case_create(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(
        state,
        headers,
        session,
        form.get("csrf").cloned().unwrap_or_default()
    );
    let needs: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("need_").map(str::to_string))
        .collect();
    let data = case_data(&form, needs);
    if let Err(e) = data.validate() {
        return case_new_page(&state, &headers, &session, Some(e.to_string())).await;
    }
    match state
        .call_in::<CaseOpened>(
            Some(lang_of(&headers)),
            &session.user,
            Request::CaseOpen {
                data: Box::new(data),
            },
        )
        .await
    {
        Ok(CaseOpened { case }) => Redirect::to(&format!("/cases/{case}")).into_response(),
        Err(e) => case_new_page(&state, &headers, &session, Some(e)).await,
    }
}

/// The case the new-case form describes.
fn case_data(form: &HashMap<String, String>, needs: Vec<String>) -> CaseData {
    let guardian_given = (form.contains_key("guardian_given")
        || field(form, "guardian_name").is_some())
    .then(|| form.contains_key("guardian_given"));
    CaseData {
        case_type: field(form, "case_type").unwrap_or_default(),
        site: field(form, "site").unwrap_or_default(),
        person: Person {
            first_name: field(form, "first_name"),
            last_name: field(form, "last_name"),
            age: field(form, "age").and_then(|a| a.parse::<u32>().ok()),
            sex: field(form, "sex"),
            nationality: field(form, "nationality"),
            languages: list(form, "languages"),
            phone: field(form, "phone"),
            location: field(form, "location"),
            health: field(form, "health"),
            protection: field(form, "protection"),
            ..Person::default()
        },
        needs,
        vulnerabilities: list(form, "vulnerabilities"),
        consent: Consent {
            given: form.contains_key("consent_given"),
            guardian_given,
            guardian_name: field(form, "guardian_name"),
            explained_by: field(form, "explained_by").unwrap_or_default(),
            explained: field(form, "explained").unwrap_or_default(),
            recorded_at: passerelle_core::time_fmt::rfc3339(time::OffsetDateTime::now_utc()),
            ..Consent::default()
        },
        notes: field(form, "notes").unwrap_or_default(),
    }
}

pub struct RefRow {
    id: String,
    sent: String,
    from: String,
    to: String,
    category: String,
    urgency: String,
    urgency_class: String,
    status: String,
    status_class: String,
    overdue: String,
}

fn ref_row(r: &ReferralView, m: Option<&passerelle_core::config::Mechanism>, lang: &str) -> RefRow {
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

#[derive(Template)]
#[template(path = "case.html")]
struct CasePage {
    page: PageCtx,
    id: String,
    short: String,
    name: String,
    person: Vec<(String, String)>,
    consent: String,
    determinations: String,
    referrals: Vec<RefRow>,
    timeline: Vec<(String, String, String, String)>,
}

async fn case_show(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let p = page(&headers, Some(&session), &state.org, "nav-cases");
    let m = state.mechanism().await;
    let c: CaseView = match state.call(&session.user, Request::CaseShow { id }).await {
        Ok(c) => c,
        Err(e) => return message(StatusCode::NOT_FOUND, p, e),
    };
    let person = &c.data.person;
    let mut fields = Vec::new();
    for (k, label) in [
        ("first_name", "field-first-name"),
        ("last_name", "field-last-name"),
        ("age", "field-age"),
        ("sex", "field-sex"),
        ("nationality", "field-nationality"),
        ("phone", "field-phone"),
        ("location", "field-location"),
        ("health", "field-health"),
        ("protection", "field-protection"),
    ] {
        if let Some(v) = person.field(k).filter(|v| !v.is_empty()) {
            fields.push((p.t(label), v));
        }
    }
    if !person.languages.is_empty() {
        fields.push((p.t("col-languages"), person.languages.join(", ")));
    }
    let consent = &c.data.consent;
    let consent_text = format!(
        "{} — {} ({})",
        if consent.given { "✓" } else { "✗" },
        consent.explained_by,
        consent.recorded_at
    );
    let lang = p.lang;
    let org = |o: &str| {
        m.as_ref()
            .map_or(o.to_string(), |m| m.org_name(o).to_string())
    };
    render(CasePage {
        short: c.id.chars().take(12).collect(),
        name: person_name(person),
        id: c.id.clone(),
        person: fields,
        consent: consent_text,
        determinations: c
            .determinations
            .iter()
            .map(|o| org(o))
            .collect::<Vec<_>>()
            .join(", "),
        referrals: c
            .referrals
            .iter()
            .map(|r| ref_row(r, m.as_deref(), lang))
            .collect(),
        timeline: c
            .timeline
            .iter()
            .map(|t| {
                let mut what = i18n::happened(lang, &t.happened, org);
                if let Some(rule) = &t.invalid {
                    what.push_str(&format!(
                        " — {}",
                        i18n::t(
                            lang,
                            "timeline-invalid",
                            &[("rule", &i18n::rule(lang, rule))]
                        )
                    ));
                }
                (
                    readable(Some(&t.at)),
                    what,
                    org(&t.org),
                    i18n::detail(lang, &t.detail),
                )
            })
            .collect(),
        page: p,
    })
}

/// The person's first and last names, as far as they were recorded.
fn person_name(person: &Person) -> String {
    [
        person.first_name.clone().unwrap_or_default(),
        person.last_name.clone().unwrap_or_default(),
    ]
    .join(" ")
    .trim()
    .to_string()
}

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
    proposals: Vec<Proposal>,
    /// (field id, its label in the page's language).
    shareable: Vec<(&'static str, String)>,
    error: Option<String>,
}

async fn refer_page(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    case: &str,
    q: DirQuery,
    error: Option<String>,
) -> Response {
    let p = page(headers, Some(session), &state.org, "refer-title");
    let Some(m) = state.mechanism().await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, p, "not joined".into());
    };
    let c: CaseView = match state
        .call(
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
                .unwrap_or_default()
        });
    let site = if q.site.is_empty() && q.category.is_empty() {
        c.data.site.clone()
    } else {
        q.site.clone()
    };
    let search = rpc::map::Search {
        category: Some(category.clone()),
        site: nonempty(&site),
        language: nonempty(&q.language),
        ..rpc::map::Search::default()
    };
    let lang = p.lang;
    let proposals = proposals(state, &session.user, lang, &m, search).await;
    let mut r = render(ReferPage {
        id: c.id.clone(),
        name: person_name(&c.data.person),
        categories: options_categories(&m, lang),
        sites: options_sites(&m, lang),
        category,
        site,
        language: q.language,
        proposals,
        shareable: passerelle_core::payload::SHAREABLE_FIELDS
            .iter()
            .map(|f| (*f, share_label(lang, f)))
            .collect(),
        error: error.clone(),
        page: p,
    });
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
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

/// The label of a shareable field in `lang`.
fn share_label(lang: &str, field: &str) -> String {
    let key = match field {
        "first_name" => "field-first-name",
        "last_name" => "field-last-name",
        "age" => "field-age",
        "sex" => "field-sex",
        "nationality" => "field-nationality",
        "languages" => "col-languages",
        "phone" => "field-phone",
        "location" => "field-location",
        "health" => "field-health",
        "protection" => "field-protection",
        "needs" => "field-needs",
        "vulnerabilities" => "field-vulnerabilities",
        other => return other.to_string(),
    };
    i18n::t(lang, key, &[])
}

async fn refer_form(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    refer_page(&state, &headers, &session, &id, q, None).await
}

async fn refer_send(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(
        state,
        headers,
        session,
        form.get("csrf").cloned().unwrap_or_default()
    );
    let share: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("share_").map(str::to_string))
        .collect();
    let category = field(&form, "category").unwrap_or_default();
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
        Ok(request) => {
            state
                .call_in(Some(lang_of(&headers)), &session.user, request)
                .await
        }
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
            refer_page(&state, &headers, &session, &id, q, Some(e)).await
        }
    }
}

// ----- Referrals -----

#[derive(Template)]
#[template(path = "referrals.html")]
struct ReferralsPage {
    page: PageCtx,
    heading: String,
    rows: Vec<RefRow>,
}

#[derive(Deserialize)]
struct BoxQuery {
    #[serde(default)]
    r#box: String,
}

async fn referrals(
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
    let list: Vec<ReferralView> = state
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
        .await
        .unwrap_or_default();
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
    note: String,
    can_receive: bool,
    can_withdraw: bool,
    reasons: Vec<(String, String)>,
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
        shared: v.shared.clone().into_iter().collect(),
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
            .unwrap_or_default(),
        page: p,
    });
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

async fn referral_show(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    referral_page(&state, &headers, &session, &id, None).await
}

async fn referral_step(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(
        state,
        headers,
        session,
        form.get("csrf").cloned().unwrap_or_default()
    );
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

// ----- Status and indicators -----

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    page: PageCtx,
    config: String,
    expired: bool,
    log: String,
    peers: Vec<(String, String, String, String, String)>,
}

async fn status(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "nav-status");
    let st: StatusAnswer = match state.call(&session.user, Request::Status).await {
        Ok(st) => st,
        Err(e) => return message(StatusCode::SERVICE_UNAVAILABLE, p, e),
    };
    let lang = p.lang;
    let count = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    render(StatusPage {
        config: format!(
            "{} — version {} — {}",
            st.mechanism.clone().unwrap_or_default(),
            count(st.config_version),
            readable(st.config_expires_at.as_deref())
        ),
        expired: st.config_expired == Some(true),
        log: format!(
            "{} events · {} held back · {} waiting for dependencies · {} not readable yet · {} equivocations",
            st.events,
            st.held_back,
            st.waiting_for_dependencies,
            st.unreadable_yet,
            st.equivocations.len()
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
                    readable(peer.last_seen.as_deref()),
                    format!("↑{} ↓{}", count(peer.they_lack), count(peer.we_lack)),
                )
            })
            .collect(),
        page: p,
    })
}

pub struct Bar {
    label: String,
    value: String,
    y: u32,
    width: u32,
}

pub struct Chart {
    title: String,
    height: u32,
    bars: Vec<Bar>,
}

fn chart(title: String, data: Vec<(String, String, u64)>) -> Chart {
    let max = data.iter().map(|d| d.2).max().unwrap_or(1).max(1);
    let bars: Vec<Bar> = data
        .into_iter()
        .enumerate()
        .map(|(i, (label, value, n))| Bar {
            label: label.chars().take(32).collect(),
            value,
            y: 8 + 22 * i as u32,
            width: ((n as f64 / max as f64) * 360.0).round().max(1.0) as u32,
        })
        .collect();
    Chart {
        title,
        height: 16 + 22 * bars.len() as u32,
        bars,
    }
}

#[derive(Template)]
#[template(path = "indicators.html")]
struct IndicatorsPage {
    page: PageCtx,
    from: String,
    to: String,
    total: String,
    acceptance: String,
    completion: String,
    ack: String,
    accept: String,
    charts: Vec<Chart>,
    overdue: Vec<(String, String, String, String, String)>,
    stale: Vec<(String, String, String, String)>,
}

#[derive(Deserialize, Default)]
struct PeriodQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// The indicators' bar charts: referrals by category, receiver, status and decline reason.
fn report_charts(
    p: &PageCtx,
    report: &passerelle_core::report::Report,
    cat_name: &dyn Fn(&str) -> String,
) -> Vec<Chart> {
    vec![
        chart(
            p.t("indicators-by-category"),
            report
                .by_category
                .iter()
                .map(|(c, n)| {
                    let count = match n {
                        passerelle_core::report::Shown::Count(x) => *x,
                        passerelle_core::report::Shown::Suppressed(_) => 1,
                    };
                    (cat_name(c), n.text(), count)
                })
                .collect(),
        ),
        chart(
            p.t("indicators-by-receiver"),
            report
                .by_receiver
                .iter()
                .map(|(k, n)| (k.clone(), n.to_string(), *n))
                .collect(),
        ),
        chart(
            p.t("indicators-by-status"),
            report
                .by_status
                .iter()
                .map(|(k, n)| (k.clone(), n.to_string(), *n))
                .collect(),
        ),
        chart(
            p.t("indicators-declines"),
            report
                .declines_by_reason
                .iter()
                .map(|(k, n)| (k.clone(), n.to_string(), *n))
                .collect(),
        ),
    ]
}

/// The directory entries not verified lately: (organisation, service, site, verified).
fn stale_rows(report: &passerelle_core::report::Report) -> Vec<(String, String, String, String)> {
    report
        .stale
        .iter()
        .map(|x| {
            (
                x.org.clone(),
                x.service.clone(),
                x.site.clone(),
                x.verified.clone(),
            )
        })
        .collect()
}

async fn indicators(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<PeriodQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "indicators-title");
    if session.role == UserRole::Caseworker {
        let m = p.t("not-allowed");
        return message(StatusCode::FORBIDDEN, p, m);
    }
    let now = time::OffsetDateTime::now_utc();
    let from = crate::cmd_report::parse_date(&q.from).unwrap_or(now - time::Duration::days(30));
    let to = crate::cmd_report::parse_date(&q.to).unwrap_or(now + time::Duration::days(1));
    let report = state
        .call(
            &session.user,
            Request::Report {
                from: from.replace_nanosecond(0).unwrap_or(from),
                to: to.replace_nanosecond(0).unwrap_or(to),
            },
        )
        .await;
    let report: passerelle_core::report::Report = match report {
        Ok(r) => r,
        Err(e) => return message(StatusCode::UNPROCESSABLE_ENTITY, p, e),
    };
    let m = state.mechanism().await;
    let lang = p.lang;
    let cat_name = |c: &str| {
        m.as_ref()
            .and_then(|m| m.category(c).map(|x| x.name.get(lang).to_string()))
            .unwrap_or_else(|| c.to_string())
    };
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.0} %"));
    let timing = |t: &passerelle_core::report::Timing| {
        format!(
            "{} {} h · {} {} h · {} {}",
            p.t("indicators-median"),
            t.median_hours.map_or("—".into(), |h| format!("{h:.1}")),
            p.t("indicators-p90"),
            t.p90_hours.map_or("—".into(), |h| format!("{h:.1}")),
            pct(t.within_deadline_pct),
            p.t("indicators-within"),
        )
    };
    let charts = report_charts(&p, &report, &cat_name);
    render(IndicatorsPage {
        from: from.date().to_string(),
        to: to.date().to_string(),
        total: report.referrals.to_string(),
        acceptance: pct(report.acceptance_rate_pct),
        completion: pct(report.completion_rate_pct),
        ack: timing(&report.time_to_acknowledge),
        accept: timing(&report.time_to_accept),
        charts,
        overdue: report
            .overdue
            .iter()
            .map(|o| {
                (
                    o.sent.clone(),
                    o.sender.clone(),
                    o.receiver.clone(),
                    cat_name(&o.category),
                    o.what.clone(),
                )
            })
            .collect(),
        stale: stale_rows(&report),
        page: p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> ThrottleKey {
        ThrottleKey::account(name)
    }

    fn address(last: u8) -> ThrottleKey {
        ThrottleKey::Address(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn failures_past_the_free_ones_make_an_account_wait_longer_each_time() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        let keys = [account("aicha"), address(1)];
        for _ in 0..LOGIN_FREE_FAILURES_PER_ACCOUNT {
            assert_eq!(t.wait(&keys, now), None);
            t.failed(&keys, now);
        }
        assert_eq!(t.wait(&keys, now), None, "the free failures impose no wait");
        let mut expected = LOGIN_DELAY_FIRST;
        for _ in 0..4 {
            t.failed(&keys, now);
            assert_eq!(t.wait(&keys, now), Some(expected));
            expected *= 2;
        }
        // Another account from another address is not held up.
        assert_eq!(t.wait(&[account("nurse"), address(2)], now), None);
        // The wait passes; a right password then forgets the account's failures.
        let later = now + Duration::from_secs(60);
        assert_eq!(t.wait(&keys, later), None);
        t.succeeded(&keys[0]);
        t.failed(&keys, later);
        assert_eq!(t.wait(&[account("aicha")], later), None);
    }

    #[test]
    fn waits_are_capped_and_old_failures_forgotten() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        let keys = [account("aicha")];
        for _ in 0..200 {
            t.failed(&keys, now);
        }
        assert_eq!(t.wait(&keys, now), Some(LOGIN_DELAY_MAX_PER_ACCOUNT));
        let much_later = now + LOGIN_FAILURES_FORGOTTEN_AFTER + Duration::from_secs(1);
        t.failed(&keys, much_later);
        assert_eq!(t.wait(&keys, much_later), None, "counted afresh");
    }

    #[test]
    fn one_address_guessing_across_accounts_is_held_up_too() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..LOGIN_FREE_FAILURES_PER_ADDRESS {
            let keys = [account(&format!("user{i}")), address(1)];
            assert_eq!(t.wait(&keys, now), None);
            t.failed(&keys, now);
        }
        t.failed(&[account("one-more"), address(1)], now);
        assert_eq!(
            t.wait(&[account("fresh"), address(1)], now),
            Some(LOGIN_DELAY_FIRST)
        );
        for _ in 0..50 {
            t.failed(&[account("x"), address(1)], now);
        }
        assert_eq!(
            t.wait(&[address(1)], now),
            Some(LOGIN_DELAY_MAX_PER_ADDRESS),
            "an address waits at most a minute: everyone at this computer shares it"
        );
    }

    #[test]
    fn the_throttle_table_stays_bounded() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..LOGIN_THROTTLE_ENTRIES_MAX + 100 {
            t.failed(
                &[account(&format!("u{i}"))],
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(t.entries.len(), LOGIN_THROTTLE_ENTRIES_MAX);
        // Names longer than any account are counted under their first bytes.
        assert_eq!(account(&"é".repeat(100)), account(&"é".repeat(40)));
    }

    #[test]
    fn a_session_ends_when_idle_or_at_its_absolute_lifetime() {
        let now = Instant::now();
        let session = Session {
            user: "aicha".into(),
            role: UserRole::Caseworker,
            stamp: 1,
            csrf: String::new(),
            started: now,
            last_used: now,
        };
        assert!(session.live(now + SESSION_IDLE));
        assert!(!session.live(now + SESSION_IDLE + Duration::from_secs(1)));
        // Used all along, it still ends at its lifetime.
        let busy = Session {
            last_used: now + SESSION_LIFETIME,
            ..session.clone()
        };
        assert!(busy.live(now + SESSION_LIFETIME));
        assert!(!busy.live(now + SESSION_LIFETIME + Duration::from_secs(1)));
    }

    #[test]
    fn too_many_waiting_logins_are_turned_away() {
        let counter = AtomicUsize::new(0);
        let held: Vec<_> = (0..LOGIN_WAITING_MAX)
            .map(|_| Waiting::enter(&counter))
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert!(Waiting::enter(&counter).is_none());
        drop(held);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        assert!(Waiting::enter(&counter).is_some());
    }
}
