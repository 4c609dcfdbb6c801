//! `passerelle run`: the daemon. It owns the node's database (through the engine thread), runs
//! libp2p, and serves the local API and web UI until SIGINT or SIGTERM.

mod api;
mod codec;
pub(crate) mod engine_thread;
mod p2p;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
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
    let app = api::router(state, crate::web::router(web));
    let mut api_shutdown = shutdown.clone();
    let api_task = tokio::spawn(async move {
        // With each connection's peer address: the web UI throttles failed logins per client.
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = api_shutdown.changed().await;
        })
        .await
    });

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
