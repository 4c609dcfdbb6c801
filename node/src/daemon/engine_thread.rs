//! The one owner of the node's store: a dedicated thread that holds the engine and runs the
//! jobs the network and the API send it, one at a time, from a bounded queue. After each job it
//! hands freshly admitted events to the network (to push to peers) and says when the
//! configuration changed.
//!
//! Received batches queued one after another are stored in one transaction (group commit): a
//! durable commit rewrites every B-tree page the batch touched, and event ids are hashes spread
//! over the whole tree, so one commit of several sync batches costs little more than one of a
//! single batch. Signatures are checked before a batch is queued (off this thread).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{Result, anyhow};
use passerelle_core::engine::Engine;
use passerelle_core::event::Event;
use tokio::sync::{mpsc, oneshot, watch};

/// Jobs waiting for the engine before callers are told it is busy.
pub const ENGINE_QUEUE_MAX: usize = 512;
/// Batches of fresh events waiting to be pushed before older ones are left to sync rounds.
pub const FRESH_QUEUE_MAX: usize = 256;
/// Most events stored in one group commit of queued received batches.
pub const GROUP_EVENTS_MAX: usize = 8_192;

/// How a group of received batches ended (an error names what the engine refused).
pub type Stored = std::result::Result<(), String>;

enum Job {
    Call(Box<dyn FnOnce(&mut Engine) + Send>),
    Receive(Vec<Event>, Option<oneshot::Sender<Stored>>),
}

/// A handle to send jobs to the engine's thread.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    tx: mpsc::Sender<Job>,
    health: Arc<Health>,
}

/// What the daemon's health check reads of the engine's thread.
#[derive(Debug, Default)]
struct Health {
    /// Set when the thread has ended.
    stopped: AtomicBool,
    /// Jobs that panicked and were recovered from.
    panics: AtomicU64,
}

/// Marks the engine stopped when the thread ends, however it ends.
struct StopGuard(Arc<Health>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Relaxed);
    }
}

/// Runs one job (a received batch takes the batches queued right behind it into the same
/// transaction); returns a job it took from the queue but did not run.
fn run_job(engine: &mut Engine, job: Job, rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    match job {
        Job::Call(f) => {
            f(engine);
            None
        }
        Job::Receive(mut events, reply) => {
            let mut replies = vec![reply];
            let mut next = None;
            while events.len() < GROUP_EVENTS_MAX {
                match rx.try_recv() {
                    Ok(Job::Receive(more, reply)) => {
                        events.extend(more);
                        replies.push(reply);
                    }
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let stored = engine
                .receive(&events, time::OffsetDateTime::now_utc())
                .map(|_| ())
                .map_err(|e| e.to_string());
            if let Err(e) = &stored {
                tracing::warn!("received events not stored: {e}");
            }
            for reply in replies.into_iter().flatten() {
                // The caller may have given up waiting; nothing else needs the outcome.
                let _ = reply.send(stored.clone());
            }
            next
        }
    }
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
        let health = Arc::new(Health::default());
        let thread_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("passerelle-engine".into())
            .spawn(move || {
                // Whatever ends this thread (the queue closing, or a failure to recover), the
                // daemon's health says the engine is gone.
                let _stopped = StopGuard(thread_health.clone());
                let mut next = None;
                while let Some(job) = next.take().or_else(|| rx.blocking_recv()) {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_job(&mut engine, job, &mut rx)
                    }));
                    match outcome {
                        Ok(queued) => next = queued,
                        Err(_) => {
                            // A bug of ours, reached by some input: the job's transaction was
                            // dropped (nothing half-written), its caller hears that it failed,
                            // and the engine reloads its memory from the store and goes on.
                            thread_health.panics.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                "a job failed inside the engine (a bug); its changes were not written, the engine goes on"
                            );
                            if let Err(e) = engine.recover() {
                                tracing::error!("the engine cannot recover and stops: {e}");
                                return;
                            }
                        }
                    }
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
            Self { tx, health },
            EngineSignals {
                fresh: fresh_rx,
                config: config_rx,
                received: received_rx,
            },
            thread,
        )
    }

    /// Whether the engine's thread is running, and how many jobs failed inside it.
    pub fn health(&self) -> (bool, u64) {
        (
            !self.health.stopped.load(Ordering::Relaxed),
            self.health.panics.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` on the engine and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job = Job::Call(Box::new(move |engine| {
            let _ = reply_tx.send(f(engine));
        }));
        self.tx
            .send(job)
            .await
            .map_err(|_| anyhow!("the node is shutting down"))?;
        reply_rx
            .await
            .map_err(|_| anyhow!("the node's engine failed while answering (see the daemon's log)"))
    }

    /// Queues received events (their signatures already checked, or not) to be admitted and
    /// stored, possibly in one transaction with batches queued behind them.
    pub async fn receive(&self, events: Vec<Event>) -> Result<()> {
        self.tx
            .send(Job::Receive(events, None))
            .await
            .map_err(|_| anyhow!("the node is shutting down"))
    }

    /// The same from a plain thread (not in the async runtime): returns where the group's
    /// outcome will be sent.
    pub fn receive_blocking(&self, events: Vec<Event>) -> Result<oneshot::Receiver<Stored>> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .blocking_send(Job::Receive(events, Some(reply_tx)))
            .map_err(|_| anyhow!("the node is shutting down"))?;
        Ok(reply_rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_core::sim::Sim;

    #[test]
    fn queued_batches_are_stored_in_order_and_every_caller_hears_the_outcome() {
        let now = time::OffsetDateTime::now_utc();
        let sim = Sim::new(
            crate::cmd_mechanism::SAMPLE_MECHANISM,
            &["mas", "mdm", "unicef"],
            &[("mas1", "mas"), ("mdm1", "mdm"), ("observer", "unicef")],
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let history = sim
            .history(&[("mas1", "mdm1")], 40, 600, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let engine = sim
            .engine("observer", dir.path(), false, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let (handle, _signals, thread) = EngineHandle::spawn(engine);
        // Many small batches queued at once: the engine thread takes several per transaction.
        let outcomes: Vec<_> = history
            .chunks(7)
            .map(|batch| {
                handle
                    .receive_blocking(batch.to_vec())
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        for outcome in outcomes {
            assert_eq!(outcome.blocking_recv().ok(), Some(Ok(())));
        }
        let counts = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(handle.call(|e| e.store().log_counts()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        // Every event admitted, none held back for a predecessor that came later.
        assert!(counts.events >= history.len() as u64, "{counts:?}");
        assert_eq!((counts.held, counts.waiting), (0, 0), "{counts:?}");
        drop(handle);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the engine thread panicked"));
    }
}
