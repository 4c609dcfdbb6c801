//! A `passerelle run` daemon inside this process, on loopback: the demo and the benchmark run
//! several of them, and talk to each through its local API as the command line would.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use crate::datadir::{DataDir, Passphrases};
use crate::rpc::{Answer, Request, Response};

/// A daemon running in this process.
#[derive(Debug)]
pub struct LocalDaemon {
    pub dir: DataDir,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    pub api: String,
    pub token: String,
    pub addr: String,
}

impl LocalDaemon {
    pub async fn start(dir: DataDir, peers: Vec<String>) -> Result<Self> {
        let _ = std::fs::remove_file(dir.root.join("api.addr"));
        let _ = std::fs::remove_file(dir.root.join("p2p.addrs"));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let options = crate::daemon::Options {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            peers,
            api: Some("127.0.0.1:0".into()),
            mdns: false,
            relay: false,
        };
        let task = tokio::spawn(crate::daemon::run(
            dir.clone(),
            Passphrases::default(),
            options,
            rx,
        ));
        let started = Instant::now();
        loop {
            let api = std::fs::read_to_string(dir.root.join("api.addr")).ok();
            let addr = std::fs::read_to_string(dir.root.join("p2p.addrs")).ok();
            let token = std::fs::read_to_string(dir.root.join("api.token")).ok();
            if let (Some(api), Some(addr), Some(token)) = (api, addr, token)
                && let Some(addr) = addr.lines().next().filter(|a| !a.is_empty())
            {
                return Ok(Self {
                    api: api.trim().to_string(),
                    addr: addr.to_string(),
                    token: token.trim().to_string(),
                    dir,
                    shutdown: tx,
                    task,
                });
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("a benchmark daemon did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Calls the daemon's API (blocking, from a blocking thread).
    pub fn rpc(api: &str, token: &str, request: &Request) -> Result<Response> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut response = agent
            .post(format!("http://{api}/api/v1/rpc"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(json!({ "user": "bench", "request": request }))?;
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
        let (api, token) = (self.api.clone(), self.token.clone());
        tokio::task::spawn_blocking(move || Self::rpc(&api, &token, &request))
            .await??
            .into_answer()
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await??;
        let _ = &self.dir;
        Ok(())
    }
}
