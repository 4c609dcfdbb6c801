//! How a command reaches the node: over the local API when the daemon runs (it owns the
//! database), or in-process otherwise. Either way the same `rpc::dispatch` does the work.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use passerelle_core::engine::Engine;
use passerelle_core::store::StoreError;

use crate::datadir::{DataDir, Passphrases};
use crate::fsutil;
use crate::rpc::{self, Answer, Request, Response};

/// How long to wait for the database when another command holds it for a moment.
pub const STORE_BUSY_WAIT: Duration = Duration::from_secs(10);

/// Largest API response the command line accepts, in bytes.
pub const API_RESPONSE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The user recorded in the audit log for commands: `--user`, `PASSERELLE_USER`, or the
/// operating-system user.
pub fn user(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("PASSERELLE_USER").ok())
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.trim().is_empty())
        .map(|u| passerelle_core::keys::truncate_for_error(&clean_user(u.trim())))
        .unwrap_or_else(|| "unknown".into())
}

/// An audit user name without control characters (each becomes U+FFFD): it is printed in
/// the audit log's listing and must not carry terminal escapes.
pub fn clean_user(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// Where the running daemon's API listens and its token, if a daemon runs for this data dir.
pub fn daemon_api(dir: &DataDir) -> Option<(String, String)> {
    let addr = std::fs::read_to_string(dir.root.join("api.addr")).ok()?;
    let token = std::fs::read_to_string(dir.root.join("api.token")).ok()?;
    Some((addr.trim().to_string(), token.trim().to_string()))
}

/// Sends a request to the node and returns its typed answer (`T` is the kind of answer the
/// request gives, or [`Response`] for any).
///
/// The request carries an idempotency key, and is carried out at most once: when the daemon
/// cannot be reached at all, it runs in-process; when the connection broke after the request
/// was sent (the daemon may have carried it out, then died), it is sent again with the same key
/// — to the daemon once it answers again, or in-process once the database is free — and the
/// node gives back the first answer instead of doing the work twice.
pub fn call<T: Answer>(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    request: Request,
) -> Result<T> {
    call_any(dir, pass, user, request)?.into_answer()
}

/// Asks the node's running daemon, if one answers (None: no daemon runs, or it is unreachable).
/// For requests that change nothing: an answer lost on the way is not sent again.
pub fn ask_daemon<T: Answer>(dir: &DataDir, user: &str, request: Request) -> Option<Result<T>> {
    let (addr, token) = daemon_api(dir)?;
    match call_daemon(&addr, &token, user, &request, &rpc::new_request_id()) {
        Ok(answer) => Some(answer.into_answer()),
        Err(CallError::Unreachable) => None,
        Err(CallError::MaybeSent(reason)) => Some(Err(anyhow::anyhow!(
            "the node's daemon stopped answering: {reason}"
        ))),
        Err(CallError::Refused(message)) => Some(Err(anyhow::anyhow!("{message}"))),
    }
}

fn call_any(dir: &DataDir, pass: &Passphrases, user: &str, request: Request) -> Result<Response> {
    let id_text = rpc::new_request_id();
    let id = rpc::parse_request_id(&id_text)?;
    let deadline = std::time::Instant::now() + STORE_BUSY_WAIT;
    let mut maybe_sent: Option<String> = None;
    let mut engine = loop {
        if let Some((addr, token)) = daemon_api(dir) {
            match call_daemon(&addr, &token, user, &request, &id_text) {
                Ok(v) => return Ok(v),
                // Nothing was sent: a stale api.addr, the daemon is gone.
                Err(CallError::Unreachable) => {}
                Err(CallError::MaybeSent(reason)) => {
                    if std::time::Instant::now() > deadline {
                        bail!(
                            "the node's daemon stopped answering after the request was sent ({reason}): it may have been carried out; check (`case list`, `referral list`) before sending it again"
                        );
                    }
                    maybe_sent = Some(reason);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(CallError::Refused(message)) => bail!("{message}"),
            }
        }
        match open_engine_once(dir, pass) {
            Ok(engine) => break engine,
            // A daemon starting up holds the database before its API is ready; another
            // command may hold it for a moment: try again shortly.
            Err(e) if is_in_use(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if is_in_use(&e) => match maybe_sent {
                Some(reason) => bail!(
                    "the node's daemon stopped answering after the request was sent ({reason}): it may have been carried out; check (`case list`, `referral list`) before sending it again"
                ),
                None => bail!(
                    "the node's database is in use by another Passerelle process (a running `passerelle run` whose API could not be reached?)"
                ),
            },
            Err(e) => return Err(e),
        }
    };
    let ctx = rpc::Context {
        user: user.to_string(),
        network: rpc::NetworkView::default(),
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    rpc::dispatch_once(&mut engine, &ctx, request, Some(id))
}

fn is_in_use(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<StoreError>(), Some(StoreError::InUse))
}

fn open_engine_once(dir: &DataDir, pass: &Passphrases) -> Result<Engine> {
    let public = dir.public()?;
    let store = dir.store()?;
    let secrets = dir.secrets(pass.node.as_ref())?;
    Ok(Engine::open(store, secrets, &public.org)?)
}

/// Opens this node's engine in-process, with a store page cache of `cache_mib` MiB
/// (`passerelle run --cache-mib`), waiting a little if another command holds the database for a
/// moment.
pub fn open_engine(dir: &DataDir, pass: &Passphrases, cache_mib: usize) -> Result<Engine> {
    let public = dir.public()?;
    // Another command may hold the database for a moment: wait a little before giving up.
    let deadline = std::time::Instant::now() + STORE_BUSY_WAIT;
    let store = loop {
        match dir.store_with_cache(cache_mib) {
            Ok(s) => break s,
            Err(e) => {
                let in_use = matches!(e.downcast_ref::<StoreError>(), Some(StoreError::InUse));
                if !in_use {
                    return Err(e);
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "the node's database is in use by another Passerelle process (a running `passerelle run` whose API could not be reached?)"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let secrets = dir.secrets(pass.node.as_ref())?;
    Ok(Engine::open(store, secrets, &public.org)?)
}

enum CallError {
    /// The request never left: nobody listens at the address.
    Unreachable,
    /// The connection broke after the request may have been sent.
    MaybeSent(String),
    /// The node answered with a refusal.
    Refused(String),
}

/// The API's envelope; `result` is read as the request's answer once `ok` says there is one.
#[derive(serde::Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    result: serde_json::Value,
    #[serde(default)]
    error: String,
}

/// How long to wait for the daemon's API to accept a connection.
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn call_daemon(
    addr: &str,
    token: &str,
    user: &str,
    request: &Request,
    request_id: &str,
) -> Result<Response, CallError> {
    // Connect first, apart: a refused connection means nothing was sent, so running the
    // request elsewhere is safe; any failure after this point may follow a request the
    // daemon received.
    let socket: std::net::SocketAddr = addr.parse().map_err(|_| CallError::Unreachable)?;
    drop(
        std::net::TcpStream::connect_timeout(&socket, API_CONNECT_TIMEOUT)
            .map_err(|_| CallError::Unreachable)?,
    );
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("http://{addr}/api/v1/rpc");
    let body = serde_json::json!({ "user": user, "request": request, "request_id": request_id });
    let response = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(&body)
        .map_err(|e| CallError::MaybeSent(e.to_string()))?;
    let status = response.status();
    let mut body = response.into_body();
    let answer: ApiAnswer = body
        .with_config()
        .limit(API_RESPONSE_MAX_BYTES)
        .read_json()
        .map_err(|e| match e {
            ureq::Error::Io(e) => CallError::MaybeSent(e.to_string()),
            e => CallError::Refused(format!("the daemon answered {status}: {e}")),
        })?;
    if answer.ok {
        Response::decode(request, answer.result)
            .map_err(|e| CallError::Refused(format!("the daemon's answer does not read: {e}")))
    } else if status == 503 {
        // The engine stopped while answering: it may have done the work.
        Err(CallError::MaybeSent(answer.error))
    } else {
        Err(CallError::Refused(answer.error))
    }
}

/// An absolute path for a request the daemon carries out (it may run in another directory).
pub fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("the current directory")?
        .join(path))
}

/// Reads a small JSON input file, bounded.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path, max: usize) -> Result<T> {
    let bytes = fsutil::read_bounded(path, max)?;
    crate::json_input::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
