//! Sessions, login and logout: a session per login in an HttpOnly SameSite=Strict cookie,
//! checked against the account on every request; a login checked off the engine thread,
//! behind the throttle of [`super::throttle`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use passerelle_core::store::{User, UserRole};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::throttle::{LOGIN_DELAY_FIRST, ThrottleKey, Waiting};
use super::{PageCtx, WebState, cookie, lang_of, message, page, random_token, render, same};
use crate::i18n;

/// How long a session lasts without being used.
pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// How long a session lasts at most, however busy: a working day and a half, so a session
/// left open on a shared computer does not live for ever.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once (the oldest go first).
pub const SESSIONS_MAX: usize = 1_000;

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) role: UserRole,
    /// The account's credential stamp when the session began: a removal, a new role or a new
    /// password changes it, and the session ends.
    stamp: u64,
    pub(super) csrf: String,
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

impl WebState {
    /// The request's session, if it is live and its account is still what it was when the
    /// session began: asked of the store on every request, so removing an account, giving it
    /// another role or a new password (`passerelle user …`, through the daemon) ends its
    /// sessions at once.
    pub(super) async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.session_touched(headers, true).await
    }

    /// The session, as [`Self::session`] finds it, without counting this as use: a page's
    /// notification stream must not keep an idle session alive.
    pub(super) async fn session_untouched(&self, headers: &HeaderMap) -> Option<Session> {
        self.session_touched(headers, false).await
    }

    async fn session_touched(&self, headers: &HeaderMap, touch: bool) -> Option<Session> {
        let id = cookie(headers, &self.session_cookie)?;
        let now = Instant::now();
        let session = {
            let mut sessions = self.sessions.lock().ok()?;
            let session = sessions.get_mut(&id)?;
            if !session.live(now) {
                sessions.remove(&id);
                return None;
            }
            if touch {
                session.last_used = now;
            }
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

pub(super) async fn login_form(State(state): State<WebState>, headers: HeaderMap) -> Response {
    login_page(&state, &headers, StatusCode::OK, String::new())
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

/// Checks a login without holding up the engine: the throttle first (no work for a blocked
/// account or address), then a quick engine call for the stored hash, then Argon2id on a
/// blocking thread, a bounded number at a time.
pub(super) async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    // Login CSRF: the form's nonce must match the cookie set with the form (double submit).
    // No cookie reads as an empty nonce, which is refused right here.
    let nonce = cookie(&headers, &state.login_cookie).unwrap_or_default();
    if nonce.is_empty() || !same(&nonce, &form.csrf) {
        let p = page(&headers, None, &state.org, "error-title");
        let m = p.t("csrf-refused");
        return message(StatusCode::FORBIDDEN, p, m);
    }
    let keys = throttle_keys(&form.user, peer);
    if let Some(wait) = state.login.wait(&keys) {
        return throttled(&state, &headers, wait);
    }
    let permit = match verification_slot(&state, &headers).await {
        Ok(permit) => permit,
        Err(refused) => return refused,
    };
    // Failures recorded while this login waited for its turn count against it too: a burst
    // of parallel guesses is cut off as soon as the free ones are spent.
    if let Some(wait) = state.login.wait(&keys) {
        return throttled(&state, &headers, wait);
    }
    let Ok(account) = state.engine.account(form.user.clone()).await else {
        return unavailable(&state, &headers);
    };
    let account = match verify(account, form.password, permit).await {
        Ok(Some(account)) => account,
        Ok(None) => {
            state.login.failed(&keys);
            let error = i18n::t(lang_of(&headers), "login-failed", &[]);
            return login_page(&state, &headers, StatusCode::UNAUTHORIZED, error);
        }
        Err(_) => return unavailable(&state, &headers),
    };
    state.login.succeeded(&keys[0]);
    let id = open_session(&state, &account);
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/",
        state.session_cookie
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// What a login's failures count against: the account typed, and the client's address when
/// it is known.
fn throttle_keys(user: &str, peer: Option<Extension<ConnectInfo<SocketAddr>>>) -> Vec<ThrottleKey> {
    let mut keys = vec![ThrottleKey::account(user)];
    if let Some(Extension(ConnectInfo(addr))) = peer {
        keys.push(ThrottleKey::Address(addr.ip()));
    }
    keys
}

/// Waits for a turn to verify a password; the answer to give instead when too many logins
/// already wait (come back later) or the verifiers are gone (shutting down).
async fn verification_slot(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<OwnedSemaphorePermit, Response> {
    let Some(_waiting) = Waiting::enter(&state.login.waiting) else {
        return Err(throttled(state, headers, LOGIN_DELAY_FIRST));
    };
    match state.login.verifiers.clone().acquire_owned().await {
        Ok(permit) => Ok(permit),
        Err(_) => Err(unavailable(state, headers)),
    }
}

/// Checks `password` against the stored account on a blocking thread, holding the
/// verification slot until done: the account when it is right, `None` when it is wrong or
/// there is no such account.
async fn verify(
    account: Option<User>,
    password: String,
    permit: OwnedSemaphorePermit,
) -> Result<Option<User>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        passerelle_core::store::verify_password(account.as_ref(), &password)
            .then_some(account)
            .flatten()
    })
    .await
}

/// A new session for `account`, among the live ones (the least recently used goes when they
/// are too many); its id.
fn open_session(state: &WebState, account: &User) -> String {
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
    id
}

/// The engine could not be asked (shutting down, or stopped): 503, and no failure counted.
fn unavailable(state: &WebState, headers: &HeaderMap) -> Response {
    let error = i18n::t(lang_of(headers), "login-unavailable", &[]);
    login_page(state, headers, StatusCode::SERVICE_UNAVAILABLE, error)
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    csrf: String,
}

pub(super) async fn logout(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
