//! The local HTTP/JSON API (and, later, the web UI) on 127.0.0.1: every request must name this
//! server in its Host header (against DNS rebinding) and carry the token written in the data
//! directory. Bodies are bounded.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::engine_thread::{EngineHandle, JobError};
use crate::rpc::{self, NetworkView, Request};

/// Largest API request body, in bytes.
pub const API_BODY_MAX_BYTES: usize = 2 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub engine: EngineHandle,
    pub token: Arc<String>,
    /// The Host header values this server answers to.
    pub hosts: Arc<Vec<String>>,
    pub network: Arc<Mutex<NetworkView>>,
}

/// The API routes and the web UI's, behind one guard (Host header; token for the API).
pub fn router(state: ApiState, web: Router) -> Router {
    Router::new()
        .route("/api/v1/rpc", post(rpc_handler))
        .route("/api/v1/health", get(health_handler))
        .with_state(state.clone())
        .merge(web)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(API_BODY_MAX_BYTES))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "ok": false, "error": message }))).into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Host check (DNS rebinding) and the token check, before any handler runs.
async fn guard(State(state): State<ApiState>, request: HttpRequest<Body>, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !state.hosts.iter().any(|h| h == &host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this local server answers only to its own address (Host header refused)",
        );
    }
    let path = request.uri().path();
    if path.starts_with("/api/") && path != "/api/v1/health" {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(token.as_bytes(), state.token.as_bytes()) {
            return refuse(StatusCode::UNAUTHORIZED, "a valid API token is required");
        }
    }
    next.run(request).await
}

/// How long the health check waits for the engine to answer before calling it busy.
pub const HEALTH_ENGINE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Health says whether the engine answers, not only whether HTTP does: 200 with
/// `engine: "running"`, or 503 with `"stopped"` (its thread ended) or `"busy"` (no answer in
/// [`HEALTH_ENGINE_WAIT`]). `jobs_failed` counts jobs that panicked and were recovered from.
async fn health_handler(State(state): State<ApiState>) -> Response {
    let (alive, _) = state.engine.health();
    let answered = alive
        && tokio::time::timeout(HEALTH_ENGINE_WAIT, state.engine.ping())
            .await
            .is_ok_and(|r| r.is_ok());
    // Counted after the ping: the engine counts a failed job before it takes the next one,
    // and a failed job's caller may hear of it (its reply dropped while unwinding) before it
    // is counted — read first, the count could miss a failure its caller already reported.
    let (_, failed) = state.engine.health();
    let engine = match (alive, answered) {
        (true, true) => "running",
        (true, false) => "busy",
        (false, _) => "stopped",
    };
    let status = if answered {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ok": answered, "engine": engine, "jobs_failed": failed })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RpcBody {
    user: String,
    request: Request,
    /// The idempotency key: a request sent again with the same key is carried out once.
    #[serde(default)]
    request_id: Option<String>,
}

/// Where a refused `case_open` body went wrong inside the case: the tagged request enum reads
/// its variant from a buffer, which loses the path (`request` only), so the case is read again
/// on its own to name the field (`request.data.person.age`), still never its value.
fn case_data_problem(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let request = value.get("request")?;
    if request.get("op")?.as_str()? != "case_open" {
        return None;
    }
    let data = serde_json::to_vec(request.get("data")?).ok()?;
    let e = crate::json_input::parse::<passerelle_core::payload::CaseData>(&data).err()?;
    // The line and column are of the case read again, not of the body: keep the path only.
    let (path, problem) = e.split_once(": ")?;
    let path = path
        .split_once(" (")
        .map_or(path, |(p, _)| p)
        .trim_matches('`');
    Some(format!("`request.data.{path}`: {problem}"))
}

async fn rpc_handler(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let body: RpcBody = match crate::json_input::parse(&body) {
        Ok(b) => b,
        Err(e) => {
            let e = case_data_problem(&body).unwrap_or(e);
            return refuse(StatusCode::BAD_REQUEST, &format!("malformed request: {e}"));
        }
    };
    if body.user.chars().any(char::is_control) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the user name must not contain control characters",
        );
    }
    let network = state.network.lock().map(|v| v.clone()).unwrap_or_default();
    let name = body.request.name();
    let ctx = rpc::Context {
        user: passerelle_core::keys::truncate_for_error(&body.user),
        network,
        progress: false,
    };
    let request = body.request;
    let id = match body
        .request_id
        .as_deref()
        .map(rpc::parse_request_id)
        .transpose()
    {
        Ok(id) => id,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match state.engine.rpc(ctx, request, id).await {
        Ok(answer) => axum::Json(json!({ "ok": true, "result": answer })).into_response(),
        Err(JobError::Refused(e)) => {
            tracing::debug!(request = name, "refused: {e:#}");
            refuse(StatusCode::UNPROCESSABLE_ENTITY, &crate::one_sentence(&e))
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
