//! A `passerelle run` daemon inside this process, on loopback: the demo and the benchmark run
//! several of them, and talk to each through its local API as the command line would. Each
//! binds port 0 and learns where it listens from the daemon itself (no polling of files).

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::json;

use crate::daemon::{Listeners, Options, Ready};
use crate::datadir::{DataDir, Passphrases};
use crate::rpc::{Answer, Request, Response};

/// How long a daemon may take to listen.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon running in this process.
#[derive(Debug)]
pub struct LocalDaemon {
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    pub api: String,
    pub token: String,
    pub addr: String,
    /// The user its API calls are made as (what timelines and the audit log name).
    pub user: String,
}

impl LocalDaemon {
    pub async fn start(dir: DataDir, peers: Vec<String>) -> Result<Self> {
        let api = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on loopback for a local daemon's API")?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let listeners = Listeners {
            api,
            p2p: crate::daemon::parse_addrs(&["/ip4/127.0.0.1/tcp/0".into()], "listen")?,
            ready: Some(ready_tx),
            hsds: None,
        };
        let options = Options {
            dir,
            pass: Passphrases::default(),
            peers: crate::daemon::parse_addrs(&peers, "peer")?,
            mdns: false,
            relay: false,
            cache_mib: passerelle_core::limits::STORE_CACHE_MIB_DEFAULT,
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(crate::daemon::run(listeners, options, rx));
        let ready: Ready = match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(ready)) => ready,
            // The daemon stopped before it listened: its own error says why.
            Ok(Err(_)) => {
                return Err(match task.await {
                    Ok(Err(e)) => e.context("a local daemon did not start"),
                    Ok(Ok(())) => anyhow!("a local daemon stopped before it listened"),
                    Err(e) => anyhow!("a local daemon failed: {e}"),
                });
            }
            Err(_) => bail!("a local daemon did not listen within {START_TIMEOUT:?}"),
        };
        let addr = ready
            .p2p
            .first()
            .cloned()
            .context("a local daemon listens on no p2p address")?;
        Ok(Self {
            api: ready.api.to_string(),
            addr,
            token: ready.token,
            user: "bench".into(),
            shutdown: tx,
            task,
        })
    }

    /// Calls the daemon's API (blocking, from a blocking thread).
    pub fn rpc(api: &str, token: &str, user: &str, request: &Request) -> Result<Response> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut response = agent
            .post(format!("http://{api}/api/v1/rpc"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(json!({ "user": user, "request": request }))?;
        /// The API's envelope.
        #[derive(serde::Deserialize)]
        struct Envelope {
            ok: bool,
            #[serde(default)]
            result: serde_json::Value,
            #[serde(default)]
            error: String,
        }
        let answer: Envelope = response.body_mut().read_json()?;
        if !answer.ok {
            bail!("{}", answer.error);
        }
        Ok(Response::decode(request, answer.result)?)
    }

    /// Sends a request to the daemon and returns its typed answer.
    pub async fn call<T: Answer + Send + 'static>(&self, request: Request) -> Result<T> {
        let (api, token, user) = (self.api.clone(), self.token.clone(), self.user.clone());
        tokio::task::spawn_blocking(move || Self::rpc(&api, &token, &user, &request))
            .await??
            .into_answer()
    }

    pub async fn stop(self) -> Result<()> {
        if self.shutdown.send(true).is_err() {
            // The daemon has stopped already: its result says why.
            tracing::debug!("a local daemon had stopped before it was asked to");
        }
        self.task.await??;
        Ok(())
    }
}
