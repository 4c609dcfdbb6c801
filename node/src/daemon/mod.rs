//! `passerelle run`: the daemon. It owns the node's database (through the engine thread), runs
//! libp2p, and serves the local API and web UI until SIGINT or SIGTERM.

mod api;
mod codec;
pub(crate) mod engine_thread;
mod guard;
pub mod hsds;
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

/// What `passerelle run` was given on its command line; [`run_blocking`] binds from it.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub listen: Vec<String>,
    pub peers: Vec<String>,
    pub api: Option<String>,
    pub mdns: bool,
    /// Serve as a circuit relay for member nodes.
    pub relay: bool,
    /// Where to serve the public directory alone (the HSDS API).
    pub hsds_listen: Option<String>,
    /// The store's page cache, in MiB.
    pub cache_mib: usize,
}

/// What the daemon listens on, from its caller.
#[derive(Debug)]
pub struct Listeners {
    /// The local API and web UI, bound on a loopback address.
    pub api: tokio::net::TcpListener,
    /// Where libp2p listens: it binds its own sockets (port 0 picks a free port), and says
    /// which through `ready`.
    pub p2p: Vec<Multiaddr>,
    /// Told where the daemon listens, once it does.
    pub ready: Option<tokio::sync::oneshot::Sender<Ready>>,
    /// The public directory (HSDS API only), on any address.
    pub hsds: Option<tokio::net::TcpListener>,
}

/// The daemon's other options.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: DataDir,
    pub pass: Passphrases,
    /// Peers to dial (with or without /p2p/NODE_ID).
    pub peers: Vec<Multiaddr>,
    /// Discover member nodes on the local network by mDNS.
    pub mdns: bool,
    /// Serve as a circuit relay for member nodes.
    pub relay: bool,
    /// The store's page cache, in MiB.
    pub cache_mib: usize,
}

/// Where a started daemon listens: what `passerelle run` prints as its ready line, and what
/// callers in this process (the demo, the benchmark) use to reach it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    /// This node's id (its libp2p peer id).
    pub node: String,
    /// The local API and web UI.
    pub api: SocketAddr,
    /// The addresses peers dial, each ending in /p2p/NODE_ID (those known once every
    /// listener reported one; a wildcard address may report more later).
    pub p2p: Vec<String>,
    /// The public directory's address, when the daemon serves one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsds: Option<SocketAddr>,
    /// The API token (also in the data directory); never printed.
    #[serde(skip)]
    pub token: String,
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

/// `passerelle run`: binds what the flags ask, then runs the daemon on a new tokio runtime
/// until SIGINT or SIGTERM. Once it listens it prints one line on standard output, the JSON
/// object `{"ready": {"node": …, "api": …, "p2p": […]}}`, for scripts and tests.
pub fn run_blocking(dir: DataDir, pass: Passphrases, flags: Flags) -> Result<()> {
    let listen = if flags.listen.is_empty() {
        DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect()
    } else {
        flags.listen
    };
    let listen = parse_addrs(&listen, "listen")?;
    let peers = parse_addrs(&flags.peers, "peer")?;
    let api_addr: SocketAddr = flags
        .api
        .as_deref()
        .unwrap_or(DEFAULT_API)
        .parse()
        .context("--api must be an address like 127.0.0.1:4011")?;
    if !api_addr.ip().is_loopback() {
        bail!("the local API listens only on a loopback address (127.0.0.1 or ::1)");
    }
    let hsds_addr: Option<SocketAddr> = flags
        .hsds_listen
        .as_deref()
        .map(|a| {
            a.parse()
                .context("--hsds-listen must be an address like 0.0.0.0:8080")
        })
        .transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let api = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot listen on {api_addr} for the local API"))?;
        let hsds = match hsds_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the public directory"))?,
            ),
            None => None,
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(print_ready(ready_rx));
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            if tx.send(true).is_err() {
                tracing::debug!("a stop signal after the daemon stopped");
            }
        });
        let listeners = Listeners {
            api,
            p2p: listen,
            ready: Some(ready_tx),
            hsds,
        };
        let options = Options {
            dir,
            pass,
            peers,
            mdns: flags.mdns,
            relay: flags.relay,
            cache_mib: flags.cache_mib,
        };
        run(listeners, options, rx).await
    })
}

/// Prints the ready line once the daemon listens.
async fn print_ready(ready: tokio::sync::oneshot::Receiver<Ready>) {
    use std::io::Write as _;
    // No answer: the daemon stopped before it listened, and says why itself.
    let Ok(ready) = ready.await else { return };
    let line = serde_json::json!({ "ready": ready });
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!("cannot print the ready line: {e}");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot wait for Ctrl-C, the daemon stops: {e}");
        }
    };
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    () = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot wait for SIGTERM (Ctrl-C still stops the daemon): {e}");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
    }
}

/// Parses `--what` addresses as libp2p multiaddrs.
pub(crate) fn parse_addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
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

/// Runs the daemon on the listeners it is given until `shutdown` turns true (mini-redis's
/// `server::run`): `passerelle run` binds them from its flags, the demo and the benchmark on
/// port 0, and learn where it listens through `listeners.ready`.
/// The line that says the node runs, naming which it is (several may run on one machine): its
/// data directory's name and its organisation's; the API's address is added once bound.
fn which_node(dir: &DataDir, engine: &passerelle_core::engine::Engine) -> String {
    let data = dir.root.file_name().map_or_else(
        || dir.root.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let org = engine.org();
    let name = engine
        .current_config()
        .map_or_else(|| org.to_string(), |m| m.org_name(org).to_string());
    format!("Passerelle node {data} ({name}) running")
}

pub async fn run(
    listeners: Listeners,
    options: Options,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let Listeners {
        api: listener,
        p2p: listen,
        ready,
        hsds: hsds_listener,
    } = listeners;
    let bound = listener
        .local_addr()
        .context("the local API's listener has no address")?;
    if !bound.ip().is_loopback() {
        bail!("the local API listens only on a loopback address (127.0.0.1 or ::1)");
    }
    let dir = options.dir;
    let engine = crate::client::open_engine(&dir, &options.pass, options.cache_mib)?;
    if engine.current_config().is_none() {
        bail!("this node has not joined a mechanism: run `passerelle join GENESIS.signed` first");
    }
    let org = engine.org().to_string();
    let running = which_node(&dir, &engine);
    let mechanism_id = engine.store().config().mechanism_id().map(|h| h.to_hex());
    let secrets = dir.secrets(options.pass.node.as_ref())?;
    let keypair = secrets.signing.to_libp2p();
    let node = keypair.public().to_peer_id().to_base58();
    let (handle, signals, engine_thread) = EngineHandle::spawn(engine);
    // Share the organisation's keys with nodes of it that lack them, from the start.
    p2p::share_keys(handle.clone()).await;

    let view = Arc::new(Mutex::new(NetworkView {
        running: true,
        api: Some(bound.to_string()),
        ..NetworkView::default()
    }));
    let token = write_api_files(&dir, bound)?;
    let http = Http {
        engine: handle.clone(),
        view: view.clone(),
        org,
        bound,
        token: token.clone(),
        mechanism_id,
    };
    let (api_task, hsds_bound) = http.serve(listener, hsds_listener, shutdown.clone());

    let (p2p_ready, listening) = tokio::sync::oneshot::channel();
    let net_options = p2p::NetOptions {
        listen,
        peers: options.peers,
        mdns: options.mdns,
        relay: options.relay,
        ready: Some(p2p_ready),
    };
    let counters = Arc::new(codec::Counters::default());
    let listen_file = dir.root.join("p2p.addrs");
    let network = p2p::Network::start(
        keypair,
        handle.clone(),
        signals,
        net_options,
        view,
        counters,
        listen_file,
    )
    .await?;
    tokio::spawn(async move {
        // No addresses: the network stopped before it listened (its error ends `run`).
        let Ok(p2p) = listening.await else { return };
        eprintln!("{running}; local API and web UI on http://{bound}/ (Ctrl-C stops it).");
        let Some(tell) = ready else { return };
        let ready = Ready {
            node,
            api: bound,
            p2p,
            hsds: hsds_bound,
            token,
        };
        if tell.send(ready).is_err() {
            tracing::debug!("nobody waits for the daemon to be ready");
        }
    });
    let result = network.run(shutdown).await;
    stopped(&dir, api_task, handle, engine_thread).await;
    result
}

/// What the local API, the web UI and the public directory are served from.
struct Http {
    engine: EngineHandle,
    view: Arc<Mutex<NetworkView>>,
    org: String,
    bound: SocketAddr,
    token: String,
    /// Hex of the genesis hash (HSDS ids derive from it).
    mechanism_id: Option<String>,
}

impl Http {
    /// Serves the local API with the web UI and the HSDS routes on `listener`, and the HSDS
    /// routes alone on `public` (without the local API's Host check: any name may reach a
    /// published directory, which holds nothing but the map). Returns the API's task and the
    /// public directory's address.
    fn serve(
        self,
        listener: tokio::net::TcpListener,
        public: Option<tokio::net::TcpListener>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> (tokio::task::JoinHandle<()>, Option<SocketAddr>) {
        let state = api::ApiState {
            engine: self.engine.clone(),
            token: Arc::new(self.token),
            hosts: Arc::new(api_hosts(self.bound.port())),
            network: self.view.clone(),
        };
        let web =
            crate::web::WebState::new(self.engine.clone(), self.view, self.org, self.bound.port());
        let directory = hsds::HsdsState::new(self.engine, self.mechanism_id.unwrap_or_default());
        let app = api::router(
            state,
            crate::web::router(web).merge(hsds::router(directory.clone())),
        )
        .layer(axum::middleware::from_fn(body_in_time));
        let cap = api_connection_cap(raise_fd_limit());
        let api_task = tokio::spawn(serve_api(listener, app, cap, shutdown.clone()));
        let public_bound = public.and_then(|l| {
            let bound = l.local_addr().ok();
            let app = hsds::router(directory).layer(axum::middleware::from_fn(body_in_time));
            tokio::spawn(serve_api(
                l,
                app,
                (cap / 2).max(API_CONNECTIONS_MIN),
                shutdown,
            ));
            bound
        });
        (api_task, public_bound)
    }
}

/// Writes the API's token (0600) and address to the data directory, where the command line
/// finds a running daemon; returns the token.
fn write_api_files(dir: &DataDir, bound: SocketAddr) -> Result<String> {
    let mut token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token);
    let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
    crate::fsutil::write_atomic(&dir.root.join("api.token"), token.as_bytes(), true)?;
    crate::fsutil::write_atomic(
        &dir.root.join("api.addr"),
        bound.to_string().as_bytes(),
        false,
    )?;
    Ok(token)
}

/// The Host header values the local server answers to.
fn api_hosts(port: u16) -> Vec<String> {
    vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// Once the network has stopped: waits for the API to finish and the engine thread to end,
/// and removes the files that say a daemon runs here.
async fn stopped(
    dir: &DataDir,
    api_task: tokio::task::JoinHandle<()>,
    handle: EngineHandle,
    engine_thread: std::thread::JoinHandle<()>,
) {
    if let Err(e) = api_task.await {
        tracing::error!("the local API's task failed: {e}");
    }
    // The last handle: the engine thread ends once the jobs already queued are done.
    drop(handle);
    let joined = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("the engine thread ended with a panic");
    }
    for file in ["api.addr", "p2p.addrs"] {
        match std::fs::remove_file(dir.root.join(file)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {file}: {e}"),
        }
    }
    tracing::info!("stopped");
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
                    if tokio::time::timeout(API_SHUTDOWN_GRACE, connection).await.is_err() {
                        tracing::debug!("a local API connection outlived the shutdown grace: closed");
                    }
                }
            }
        });
    }
    let drained = tokio::time::timeout(API_SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("local API connections outlived the shutdown grace: closed");
    }
}
