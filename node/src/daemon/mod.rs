//! `passerelle run`: the daemon. It owns the node's database (through the engine thread), runs
//! libp2p, and serves the local API and web UI until SIGINT or SIGTERM.

mod api;
mod codec;
pub(crate) mod engine_thread;
mod guard;
mod p2p;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::connect_info::ConnectInfo;
use axum::response::IntoResponse;
use libp2p::Multiaddr;
use rand::RngCore;

use crate::daemon::engine_thread::EngineHandle;
use crate::datadir::{DataDir, Passphrases};
use crate::rpc::NetworkView;

/// The daemon's options, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub listen: Vec<String>,
    pub peers: Vec<String>,
    pub api: Option<String>,
    pub mdns: bool,
    /// Serve as a circuit relay for member nodes.
    pub relay: bool,
}

/// Default address of the local API and web UI.
pub const DEFAULT_API: &str = "127.0.0.1:4011";
/// Default peer-to-peer listening addresses.
pub const DEFAULT_LISTEN: &[&str] = &["/ip4/0.0.0.0/tcp/4010", "/ip4/0.0.0.0/udp/4010/quic-v1"];
/// Most connections the local API and web UI hold at once; past it, new ones wait in the
/// kernel's backlog (costing no file descriptor) until one closes.
pub const API_CONNECTIONS_MAX: usize = 256;
/// File descriptors kept for everything but the API: p2p connections (established and
/// pending), the database, the log, listeners. The API's cap is lowered to fit under the
/// limit with these left over, so idle API sockets can never starve p2p.
pub const FDS_RESERVED_FOR_NODE: u64 = 768;
/// The fewest API connections the cap is lowered to (a tiny descriptor limit still serves the
/// command line).
pub const API_CONNECTIONS_MIN: usize = 8;
/// A request's headers must arrive within this; it is also how long an idle keep-alive
/// connection is kept.
pub const API_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this.
pub const API_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body read at all (the API's and the web UI's own bounds are lower).
pub const API_BODY_READ_MAX_BYTES: usize = 4 * 1024 * 1024;
/// How long requests still running may take once the daemon stops.
pub const API_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the daemon on a new tokio runtime until a shutdown signal.
pub fn run_blocking(dir: DataDir, pass: Passphrases, options: Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = tx.send(true);
        });
        run(dir, pass, options, rx).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn parse_addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>().with_context(|| {
                format!(
                    "--{what} `{}` is not a libp2p multiaddr (like /ip4/192.0.2.10/tcp/4010)",
                    passerelle_core::keys::truncate_for_error(a)
                )
            })
        })
        .collect()
}

/// Runs the daemon until `shutdown` turns true. Takes its listeners from `options`, so tests
/// can run it on ports of their choosing.
pub async fn run(
    dir: DataDir,
    pass: Passphrases,
    options: Options,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let listen = if options.listen.is_empty() {
        parse_addrs(
            &DEFAULT_LISTEN
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            "listen",
        )?
    } else {
        parse_addrs(&options.listen, "listen")?
    };
    let peers = parse_addrs(&options.peers, "peer")?;
    let api_addr: SocketAddr = options
        .api
        .as_deref()
        .unwrap_or(DEFAULT_API)
        .parse()
        .context("--api must be an address like 127.0.0.1:4011")?;
    if !api_addr.ip().is_loopback() {
        bail!("the local API listens only on a loopback address (127.0.0.1 or ::1)");
    }

    let engine = crate::client::open_engine(&dir, &pass)?;
    if engine.store().config().current().is_none() {
        bail!("this node has not joined a mechanism: run `passerelle join GENESIS.signed` first");
    }
    let secrets = dir.secrets(pass.node.as_ref())?;
    let keypair = secrets.signing.to_libp2p();
    let (handle, signals, engine_thread) = EngineHandle::spawn(engine);
    // Share the organisation's keys with nodes of it that lack them, from the start.
    let _ = handle
        .call(|e| e.share_keys(time::OffsetDateTime::now_utc()))
        .await;

    let view = Arc::new(Mutex::new(NetworkView {
        running: true,
        ..NetworkView::default()
    }));
    let counters = Arc::new(codec::Counters::default());

    // The local API.
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("cannot listen on {api_addr} for the local API"))?;
    let bound = listener.local_addr()?;
    let mut token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    crate::fsutil::write_atomic(&dir.root.join("api.token"), token.as_bytes(), true)?;
    crate::fsutil::write_atomic(
        &dir.root.join("api.addr"),
        bound.to_string().as_bytes(),
        false,
    )?;
    if let Ok(mut v) = view.lock() {
        v.api = Some(bound.to_string());
    }
    let port = bound.port();
    let hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    let state = api::ApiState {
        engine: handle.clone(),
        token: Arc::new(token),
        hosts: Arc::new(hosts),
        network: view.clone(),
    };
    let org = handle.call(|e| e.org().to_string()).await?;
    let web = crate::web::WebState::new(handle.clone(), view.clone(), org, port);
    let app =
        api::router(state, crate::web::router(web)).layer(axum::middleware::from_fn(body_in_time));
    let cap = api_connection_cap(raise_fd_limit());
    let api_task = tokio::spawn(serve_api(listener, app, cap, shutdown.clone()));

    let network = p2p::Network::start(
        keypair,
        handle.clone(),
        signals,
        p2p::NetOptions {
            listen,
            peers,
            mdns: options.mdns,
            relay: options.relay,
        },
        view,
        counters,
        dir.root.join("p2p.addrs"),
    )
    .await?;
    eprintln!(
        "Passerelle node running; local API and web UI on http://{bound}/ (Ctrl-C stops it)."
    );
    let result = network.run(shutdown).await;
    let _ = api_task.await;
    drop(handle);
    let _ = engine_thread.join();
    let _ = std::fs::remove_file(dir.root.join("api.addr"));
    let _ = std::fs::remove_file(dir.root.join("p2p.addrs"));
    tracing::info!("stopped");
    result
}

/// Raises the soft limit on open files to the hard one (the soft default, often 1,024, is
/// the one idle sockets exhausted), and returns the limit now in force.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current.unwrap_or(u64::MAX), limit.maximum);
    match hard {
        Some(hard) if hard > soft => {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => hard,
                Err(e) => {
                    tracing::debug!("cannot raise the open-file limit: {e}");
                    soft
                }
            }
        }
        None => u64::MAX,
        _ => soft,
    }
}

/// The API's connection cap under a descriptor limit: [`API_CONNECTIONS_MAX`], lowered so
/// [`FDS_RESERVED_FOR_NODE`] stay free for p2p and the store.
fn api_connection_cap(fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(FDS_RESERVED_FOR_NODE) / 2;
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(API_CONNECTIONS_MIN, API_CONNECTIONS_MAX)
}

/// Reads a request's whole body within [`API_BODY_READ_TIMEOUT`] before any handler runs, so a
/// client that sends its body slowly cannot hold a connection (and a handler) open.
async fn body_in_time(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, API_BODY_READ_MAX_BYTES);
    match tokio::time::timeout(API_BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Ok(Err(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large or broken",
        )
            .into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
            .into_response(),
    }
}

/// Serves the local API and web UI: at most `cap` connections at once (the rest wait in the
/// backlog), each closed if a request's headers take longer than [`API_HEADER_READ_TIMEOUT`]
/// or it sits idle that long between requests. Until `shutdown`.
async fn serve_api(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cap: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait a moment rather than spin.
                    tracing::warn!("the local API cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(remote))),
        );
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(API_HEADER_READ_TIMEOUT);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("local API connection: {e}");
                    }
                }
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(API_SHUTDOWN_GRACE, connection).await;
                }
            }
        });
    }
    let _ = tokio::time::timeout(API_SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}
