//! The one owner of the node's store: a dedicated thread that holds the engine and runs the
//! jobs the network and the API send it, one at a time, from a bounded queue. After each job it
//! hands freshly admitted events to the network (to push to peers) and says when the
//! configuration changed.

use anyhow::{Result, anyhow};
use passerelle_core::engine::Engine;
use passerelle_core::event::Event;
use tokio::sync::{mpsc, oneshot, watch};

/// Jobs waiting for the engine before callers are told it is busy.
pub const ENGINE_QUEUE_MAX: usize = 512;
/// Batches of fresh events waiting to be pushed before older ones are left to sync rounds.
pub const FRESH_QUEUE_MAX: usize = 256;

type Job = Box<dyn FnOnce(&mut Engine) + Send>;

/// A handle to send jobs to the engine's thread.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    tx: mpsc::Sender<Job>,
}

/// What the engine thread tells the rest of the daemon.
#[derive(Debug)]
pub struct EngineSignals {
    /// Events this node created in the last jobs, to push to connected peers.
    pub fresh: mpsc::Receiver<Vec<Event>>,
    /// Set when events received from a peer were admitted: other peers may lack them.
    pub received: watch::Receiver<u64>,
    /// The configuration version in force, updated when it changes.
    pub config: watch::Receiver<u64>,
}

impl EngineHandle {
    /// Starts the engine's thread.
    pub fn spawn(mut engine: Engine) -> (Self, EngineSignals, std::thread::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(ENGINE_QUEUE_MAX);
        let (fresh_tx, fresh_rx) = mpsc::channel(FRESH_QUEUE_MAX);
        let (config_tx, config_rx) = watch::channel(engine.store().config().highest());
        let (received_tx, received_rx) = watch::channel(0u64);
        let thread = std::thread::Builder::new()
            .name("passerelle-engine".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut engine);
                    let fresh = engine.take_fresh();
                    if !fresh.is_empty() {
                        // A full queue drops the batch: sync rounds will carry those events.
                        let _ = fresh_tx.try_send(fresh);
                    }
                    if engine.take_received() {
                        received_tx.send_modify(|n| *n += 1);
                    }
                    let version = engine.store().config().highest();
                    if *config_tx.borrow() != version {
                        let _ = config_tx.send(version);
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the engine thread: {e}"));
        (
            Self { tx },
            EngineSignals {
                fresh: fresh_rx,
                config: config_rx,
                received: received_rx,
            },
            thread,
        )
    }

    /// Runs `f` on the engine and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |engine| {
            let _ = reply_tx.send(f(engine));
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| anyhow!("the node is shutting down"))?;
        reply_rx
            .await
            .map_err(|_| anyhow!("the node's engine stopped while answering"))
    }
}
