//! The one owner of the node's store: a dedicated thread that holds the engine and runs the
//! jobs the network, the API and the web UI send it, one at a time, from a bounded queue. The
//! jobs are a closed set ([`Job`]): each names what it does, with typed arguments and a typed
//! answer, so what reaches the store from outside is listed here. After each job the thread
//! hands freshly admitted events to the network (to push to peers) and says when the
//! configuration changed.
//!
//! Each job runs under `catch_unwind`: a panic (a bug reached by some input) drops the job's
//! transaction, its caller hears that it failed, the engine reloads its memory from the store
//! (`Engine::recover`) and the thread goes on; [`EngineHandle::health`] counts such failures.
//!
//! Received batches queued one after another are stored in one transaction (group commit): a
//! durable commit rewrites every B-tree page the batch touched, and event ids are hashes spread
//! over the whole tree, so one commit of several sync batches costs little more than one of a
//! single batch. Signatures are checked before a batch is queued (off this thread).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Result;
use libp2p::PeerId;
use passerelle_core::config::{Hash32, Mechanism};
use passerelle_core::engine::{Engine, Which};
use passerelle_core::event::Event;
use passerelle_core::keys::NodeId;
use passerelle_core::map::Profile;
use passerelle_core::round::{Round, Step};
use passerelle_core::store::{LogCounts, RequestId, User};
use passerelle_core::sync;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};

use crate::rpc;

/// Jobs waiting for the engine before callers are told it is busy.
pub const ENGINE_QUEUE_MAX: usize = 512;
/// Batches of fresh events waiting to be pushed before older ones are left to sync rounds.
pub const FRESH_QUEUE_MAX: usize = 256;
/// Most events stored in one group commit of queued received batches.
pub const GROUP_EVENTS_MAX: usize = 8_192;

/// How a group of received batches ended (an error names what the engine refused).
pub type Stored = std::result::Result<(), String>;

/// What `rpc::dispatch_once` answers to a request of the API or the web UI.
pub type RpcAnswer = rpc::Response;

/// Where a job's answer goes: the job's result, or why the engine refused it.
type Reply<T> = oneshot::Sender<Result<T>>;

/// Why a job sent to the engine has no answer.
#[derive(Debug)]
pub enum JobError {
    /// The engine's queue is closed: the daemon is stopping.
    ShuttingDown,
    /// The job panicked (caught, and the engine recovered) or the engine stopped while it ran.
    Failed,
    /// The engine ran the job and refused it: the reason, for the caller to show.
    Refused(anyhow::Error),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShuttingDown => f.write_str("the node is shutting down"),
            Self::Failed => {
                f.write_str("the node's engine failed while answering (see the daemon's log)")
            }
            Self::Refused(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for JobError {}

/// One step of a sync round run on the engine: the round goes back to the network task with
/// what to do next and, when the round ended complete, the digest of the version vector the
/// peer now holds.
#[derive(Debug)]
pub struct RoundStepped {
    pub round: Box<Round>,
    pub step: std::result::Result<Step, String>,
    pub digest: Option<Hash32>,
}

/// A member node of the configuration in force, as the network's allow-list needs it.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: PeerId,
    pub org: String,
    pub label: String,
    /// The addresses the configuration gives for it (dialled as they are).
    pub addresses: Vec<String>,
}

/// Every job the engine thread runs: the closed set of what the rest of the daemon may ask
/// of the store.
enum Job {
    /// A request of the local API or the web UI, carried out once per request id.
    Rpc {
        ctx: Box<rpc::Context>,
        request: Box<rpc::Request>,
        id: Option<RequestId>,
        reply: Reply<RpcAnswer>,
    },
    /// Events received from a peer, to admit and store (possibly with the batches queued
    /// right behind, in one transaction).
    Receive {
        events: Vec<Event>,
        reply: Option<oneshot::Sender<Stored>>,
    },
    /// A peer's sync request, answered.
    Respond {
        request: Box<sync::Request>,
        reply: Reply<sync::Response>,
    },
    /// Opens a sync round with a peer: the round and its first request.
    RoundStart {
        reply: Reply<(Box<Round>, sync::Request)>,
    },
    /// A peer answered a round's request: the round's next step.
    RoundStep {
        peer: NodeId,
        round: Box<Round>,
        response: Box<sync::Response>,
        reply: Reply<RoundStepped>,
    },
    /// Shares the organisation's keys with nodes of it that lack them: how many shares.
    ShareKeys { reply: Reply<usize> },
    /// Retries events held back at admission: how many were admitted.
    RetryHeld { reply: Reply<usize> },
    /// Purges the cases whose retention ran out; how many.
    PurgeDue { reply: Reply<usize> },
    /// The member nodes of the configuration in force.
    Members { reply: Reply<Vec<Member>> },
    /// A web UI account (its password is checked off this thread).
    Account {
        name: String,
        reply: Reply<Option<User>>,
    },
    /// The configuration version in force.
    Mechanism {
        reply: Reply<Option<Arc<Mechanism>>>,
    },
    /// The partner map: every organisation's profile.
    Directory {
        reply: Reply<Arc<BTreeMap<String, Profile>>>,
    },
    /// What the log holds (the benchmark, tests).
    LogCounts { reply: Reply<LogCounts> },
    /// This organisation's referrals, from their headers (the web UI's notifications).
    Watched {
        known: Vec<Hash32>,
        reply: Reply<Vec<Watched>>,
    },
    /// Answers at once: the health check asks whether the engine answers at all.
    Ping { reply: Reply<()> },
    /// Panics inside the engine (tests of the recovery).
    #[cfg(test)]
    Panic { reply: Reply<()> },
}

/// One of this organisation's referrals as the web UI's notifications compare them.
#[derive(Debug, Clone)]
pub struct Watched {
    pub view: passerelle_core::engine::ReferralView,
    /// Received by this organisation (else sent by it).
    pub inbox: bool,
}

/// The open referrals of this organisation, and those of `known` (the ones open at the last
/// look) that have closed since: read from the index of open referrals, not a scan of all.
fn watched(engine: &Engine, known: &[Hash32], now: OffsetDateTime) -> Result<Vec<Watched>> {
    if engine.current_config().is_none() {
        // Not joined yet: no referrals to watch.
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (sent, inbox) in [(false, true), (true, false)] {
        for view in engine.referrals(sent, Which::Open, usize::MAX, false, now)? {
            out.push(Watched { view, inbox });
        }
    }
    let open: std::collections::HashSet<String> = out.iter().map(|w| w.view.id.clone()).collect();
    for id in known {
        if open.contains(&id.to_hex()) {
            continue;
        }
        if let Some(view) = engine.referral_brief(id, now)? {
            let inbox = view.to_org == engine.org();
            out.push(Watched { view, inbox });
        }
    }
    Ok(out)
}

/// A handle to send jobs to the engine's thread.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    tx: mpsc::Sender<Job>,
    health: Arc<Health>,
    /// Bumped after every job that stored events (made here or received).
    changes: watch::Receiver<u64>,
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

/// Sends a job's answer; a caller that stopped waiting (a closed connection, a round given
/// up) needs nothing more.
fn answer<T>(reply: Reply<T>, result: Result<T>) {
    if reply.send(result).is_err() {
        tracing::debug!("a job's caller stopped waiting for its answer");
    }
}

/// Runs one job (a received batch takes the batches queued right behind it into the same
/// transaction); returns a job it took from the queue but did not run.
fn run_job(engine: &mut Engine, job: Job, rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    let now = OffsetDateTime::now_utc();
    match job {
        Job::Rpc {
            ctx,
            request,
            id,
            reply,
        } => answer(reply, rpc::dispatch_once(engine, &ctx, *request, id)),
        Job::Receive { events, reply } => return receive_group(engine, events, reply, rx),
        Job::Respond { request, reply } => answer(reply, Ok(engine.respond(*request, now))),
        Job::RoundStart { reply } => {
            let started = Round::start(engine).map(|(round, request)| (Box::new(round), request));
            answer(reply, started.map_err(Into::into));
        }
        Job::RoundStep {
            peer,
            round,
            response,
            reply,
        } => answer(reply, Ok(round_step(engine, &peer, round, *response, now))),
        Job::ShareKeys { reply } => {
            let shared = engine.share_keys(now).map(|ids| ids.len());
            answer(reply, shared.map_err(Into::into));
        }
        Job::RetryHeld { reply } => {
            let retried = engine.retry_held(now).map(|report| report.admitted.len());
            answer(reply, retried.map_err(Into::into));
        }
        Job::PurgeDue { reply } => answer(reply, purge_due(engine, now).map_err(Into::into)),
        Job::Members { reply } => answer(reply, Ok(members(engine))),
        Job::Account { name, reply } => answer(reply, engine.user(&name).map_err(Into::into)),
        Job::Mechanism { reply } => answer(reply, Ok(engine.current_config())),
        Job::Directory { reply } => answer(reply, engine.directory().map_err(Into::into)),
        Job::LogCounts { reply } => answer(reply, engine.log_counts().map_err(Into::into)),
        Job::Watched { known, reply } => answer(reply, watched(engine, &known, now)),
        Job::Ping { reply } => answer(reply, Ok(())),
        #[cfg(test)]
        Job::Panic { reply } => {
            let _unanswered = reply;
            panic!("a test job panics inside the engine");
        }
    }
    None
}

/// Stores a received batch with the batches queued right behind it, in one transaction;
/// returns the job behind them.
fn receive_group(
    engine: &mut Engine,
    mut events: Vec<Event>,
    reply: Option<oneshot::Sender<Stored>>,
    rx: &mut mpsc::Receiver<Job>,
) -> Option<Job> {
    let mut replies = vec![reply];
    let mut next = None;
    while events.len() < GROUP_EVENTS_MAX {
        match rx.try_recv() {
            Ok(Job::Receive {
                events: more,
                reply,
            }) => {
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
        .receive(&events, OffsetDateTime::now_utc())
        .map(|_| ())
        .map_err(|e| e.to_string());
    if let Err(e) = &stored {
        tracing::warn!("received events not stored: {e}");
    }
    for reply in replies.into_iter().flatten() {
        if reply.send(stored.clone()).is_err() {
            tracing::debug!("a receiver of a batch's outcome stopped waiting");
        }
    }
    next
}

/// A round's next step after the peer's response; a round that ended complete records what
/// the peer now holds.
fn round_step(
    engine: &mut Engine,
    peer: &NodeId,
    mut round: Box<Round>,
    response: sync::Response,
    now: OffsetDateTime,
) -> RoundStepped {
    let step = round
        .on_response(engine, response, now)
        .map_err(|e| e.to_string());
    let digest = match &step {
        Ok(Step::Done(_)) => super::p2p::remember_peer(engine, peer, &round),
        _ => None,
    };
    RoundStepped {
        round,
        step,
        digest,
    }
}

/// The member nodes of the configuration in force (none before the node joins).
fn members(engine: &Engine) -> Vec<Member> {
    let Some(mechanism) = engine.current_config() else {
        return Vec::new();
    };
    mechanism
        .doc
        .nodes
        .iter()
        .map(|n| Member {
            id: n.id.0,
            org: n.org.clone(),
            label: n.label.clone(),
            addresses: n.addresses.clone(),
        })
        .collect()
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

/// The senders behind [`EngineSignals`], held by the engine thread.
struct Outputs {
    fresh: mpsc::Sender<Vec<Event>>,
    received: watch::Sender<u64>,
    config: watch::Sender<u64>,
    changes: watch::Sender<u64>,
}

impl Outputs {
    /// After a job: fresh events to push, received ones to forward, a new configuration.
    fn publish(&self, engine: &mut Engine) {
        let fresh = engine.take_fresh();
        let made = !fresh.is_empty();
        if made && self.fresh.try_send(fresh).is_err() {
            // A full queue (or a network task gone): sync rounds will carry those events.
            tracing::debug!("fresh events not queued for a push: sync rounds carry them");
        }
        let received = engine.take_received();
        if received {
            self.received.send_modify(|n| *n += 1);
        }
        if made || received {
            // The web UI's notifications look again (no one watching is fine).
            self.changes.send_modify(|n| *n += 1);
        }
        let version = engine.config_version();
        if *self.config.borrow() != version && self.config.send(version).is_err() {
            tracing::debug!("a new configuration version, and no network task to tell");
        }
    }
}

/// The engine thread: runs jobs until the queue closes, or the engine cannot recover from a
/// failed job.
fn engine_loop(
    mut engine: Engine,
    mut rx: mpsc::Receiver<Job>,
    outputs: Outputs,
    health: Arc<Health>,
) {
    // Whatever ends this thread (the queue closing, or a failure to recover), the daemon's
    // health says the engine is gone.
    let _stopped = StopGuard(health.clone());
    let mut next = None;
    while let Some(job) = next.take().or_else(|| rx.blocking_recv()) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(&mut engine, job, &mut rx)
        }));
        match outcome {
            Ok(queued) => next = queued,
            Err(_) => {
                // A bug of ours, reached by some input: the job's transaction was dropped
                // (nothing half-written), its caller hears that it failed, and the engine
                // reloads its memory from the store and goes on.
                health.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "a job failed inside the engine (a bug); its changes were not written, the engine goes on"
                );
                if let Err(e) = engine.recover() {
                    tracing::error!("the engine cannot recover and stops: {e}");
                    return;
                }
            }
        }
        outputs.publish(&mut engine);
    }
}

impl EngineHandle {
    /// Starts the engine's thread.
    pub fn spawn(engine: Engine) -> (Self, EngineSignals, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>(ENGINE_QUEUE_MAX);
        let (fresh_tx, fresh_rx) = mpsc::channel(FRESH_QUEUE_MAX);
        let (config_tx, config_rx) = watch::channel(engine.config_version());
        let (received_tx, received_rx) = watch::channel(0u64);
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let health = Arc::new(Health::default());
        let outputs = Outputs {
            fresh: fresh_tx,
            received: received_tx,
            config: config_tx,
            changes: changes_tx,
        };
        let thread_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("passerelle-engine".into())
            .spawn(move || engine_loop(engine, rx, outputs, thread_health))
            .unwrap_or_else(|e| panic!("cannot start the engine thread: {e}"));
        let signals = EngineSignals {
            fresh: fresh_rx,
            config: config_rx,
            received: received_rx,
        };
        (
            Self {
                tx,
                health,
                changes: changes_rx,
            },
            signals,
            thread,
        )
    }

    /// A watch that changes after every job that stored events: the web UI's notifications
    /// look at the referrals again then.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// This organisation's open referrals as the notifications compare them, with those of
    /// `known` that closed since: clear headers only (nothing decrypted, so nothing for the
    /// audit log).
    pub async fn watched(&self, known: Vec<Hash32>) -> Result<Vec<Watched>, JobError> {
        self.ask(|reply| Job::Watched { known, reply }).await
    }

    /// Whether the engine's thread is running, and how many jobs failed inside it.
    pub fn health(&self) -> (bool, u64) {
        (
            !self.health.stopped.load(Ordering::Relaxed),
            self.health.panics.load(Ordering::Relaxed),
        )
    }

    /// Sends the job `make` builds around its reply channel, and waits for the answer.
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, JobError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(make(reply_tx))
            .await
            .map_err(|_| JobError::ShuttingDown)?;
        match reply_rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(refused)) => Err(JobError::Refused(refused)),
            Err(_) => Err(JobError::Failed),
        }
    }

    /// Carries out a request of the API or the web UI (once per request id).
    pub async fn rpc(
        &self,
        ctx: rpc::Context,
        request: rpc::Request,
        id: Option<RequestId>,
    ) -> Result<RpcAnswer, JobError> {
        let (ctx, request) = (Box::new(ctx), Box::new(request));
        self.ask(|reply| Job::Rpc {
            ctx,
            request,
            id,
            reply,
        })
        .await
    }

    /// Answers a peer's sync request.
    pub async fn respond(&self, request: sync::Request) -> Result<sync::Response, JobError> {
        let request = Box::new(request);
        self.ask(|reply| Job::Respond { request, reply }).await
    }

    /// Opens a sync round: the round and its first request.
    pub async fn round_start(&self) -> Result<(Box<Round>, sync::Request), JobError> {
        self.ask(|reply| Job::RoundStart { reply }).await
    }

    /// The next step of `round` with `peer`, which answered `response`.
    pub async fn round_step(
        &self,
        peer: NodeId,
        round: Box<Round>,
        response: sync::Response,
    ) -> Result<RoundStepped, JobError> {
        let response = Box::new(response);
        self.ask(|reply| Job::RoundStep {
            peer,
            round,
            response,
            reply,
        })
        .await
    }

    /// Shares the organisation's keys with nodes of it that lack them: how many shares.
    pub async fn share_keys(&self) -> Result<usize, JobError> {
        self.ask(|reply| Job::ShareKeys { reply }).await
    }

    /// Retries the events held back at admission: how many were admitted.
    pub async fn retry_held(&self) -> Result<usize, JobError> {
        self.ask(|reply| Job::RetryHeld { reply }).await
    }

    /// Purges the cases whose retention period ran out: how many.
    pub async fn purge_due(&self) -> Result<usize, JobError> {
        self.ask(|reply| Job::PurgeDue { reply }).await
    }

    /// The member nodes of the configuration in force.
    pub async fn members(&self) -> Result<Vec<Member>, JobError> {
        self.ask(|reply| Job::Members { reply }).await
    }

    /// A web UI account, by name.
    pub async fn account(&self, name: String) -> Result<Option<User>, JobError> {
        self.ask(|reply| Job::Account { name, reply }).await
    }

    /// The configuration version in force.
    pub async fn mechanism(&self) -> Result<Option<Arc<Mechanism>>, JobError> {
        self.ask(|reply| Job::Mechanism { reply }).await
    }

    /// The partner map: every organisation's profile.
    pub async fn directory(&self) -> Result<Arc<BTreeMap<String, Profile>>, JobError> {
        self.ask(|reply| Job::Directory { reply }).await
    }

    /// What the log holds.
    pub async fn log_counts(&self) -> Result<LogCounts, JobError> {
        self.ask(|reply| Job::LogCounts { reply }).await
    }

    /// Whether the engine answers at all (the health check).
    pub async fn ping(&self) -> Result<(), JobError> {
        self.ask(|reply| Job::Ping { reply }).await
    }

    /// Queues received events (their signatures already checked, or not) to be admitted and
    /// stored, possibly in one transaction with batches queued behind them.
    pub async fn receive(&self, events: Vec<Event>) -> Result<(), JobError> {
        self.tx
            .send(Job::Receive {
                events,
                reply: None,
            })
            .await
            .map_err(|_| JobError::ShuttingDown)
    }

    /// The same from a plain thread (not in the async runtime): returns where the group's
    /// outcome will be sent.
    pub fn receive_blocking(
        &self,
        events: Vec<Event>,
    ) -> Result<oneshot::Receiver<Stored>, JobError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .blocking_send(Job::Receive {
                events,
                reply: Some(reply_tx),
            })
            .map_err(|_| JobError::ShuttingDown)?;
        Ok(reply_rx)
    }

    /// A job that panics inside the engine.
    #[cfg(test)]
    async fn panic(&self) -> Result<(), JobError> {
        self.ask(|reply| Job::Panic { reply }).await
    }
}

/// Purges what retention says is due (the engine writes one audit entry per case: its id,
/// never its data).
fn purge_due(
    engine: &mut Engine,
    now: time::OffsetDateTime,
) -> Result<usize, passerelle_core::engine::EngineError> {
    Ok(engine.purge_due(now)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_core::sim::Sim;

    /// A mechanism's history between two nodes, and the engine of a third node (an observer
    /// of the same mechanism) on a store in `dir`.
    fn observer(dir: &std::path::Path) -> (Vec<Event>, Engine) {
        let now = OffsetDateTime::now_utc();
        let sim = Sim::new(
            crate::samples::MECHANISM,
            &["mas", "mdm", "unicef"],
            &[("mas1", "mas"), ("mdm1", "mdm"), ("observer", "unicef")],
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let history = sim
            .history(&[("mas1", "mdm1")], 40, 600, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let engine = sim
            .engine("observer", dir, false, now)
            .unwrap_or_else(|e| panic!("{e}"));
        (history, engine)
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(future)
    }

    #[test]
    fn queued_batches_are_stored_in_order_and_every_caller_hears_the_outcome() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (history, engine) = observer(dir.path());
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
        let counts = block_on(handle.log_counts()).unwrap_or_else(|e| panic!("{e}"));
        // Every event admitted, none held back for a predecessor that came later.
        assert!(counts.events >= history.len() as u64, "{counts:?}");
        assert_eq!((counts.held, counts.waiting), (0, 0), "{counts:?}");
        drop(handle);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the engine thread panicked"));
    }

    /// Issue 11: a panic inside a job is caught and reported (its caller gets an error, the
    /// health check counts it), and the engine goes on serving on the same store.
    #[test]
    fn a_panic_inside_a_job_is_caught_reported_and_the_engine_goes_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (history, engine) = observer(dir.path());
        let (handle, _signals, thread) = EngineHandle::spawn(engine);
        let (first, rest) = history.split_at(history.len() / 2);
        let stored = handle
            .receive_blocking(first.to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.blocking_recv().ok(), Some(Ok(())));
        assert_eq!(handle.health(), (true, 0));

        let failed = block_on(handle.panic());
        assert!(matches!(failed, Err(JobError::Failed)), "{failed:?}");
        // The engine still answers (the failure is counted before the next job runs), and
        // still writes: the rest of the history is stored.
        block_on(handle.ping()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(handle.health(), (true, 1), "the failure is counted");
        let stored = handle
            .receive_blocking(rest.to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.blocking_recv().ok(), Some(Ok(())));
        let counts = block_on(handle.log_counts()).unwrap_or_else(|e| panic!("{e}"));
        assert!(counts.events >= history.len() as u64, "{counts:?}");
        let members = block_on(handle.members()).unwrap_or_else(|e| panic!("{e}"));
        assert!(members.iter().any(|m| m.label == "observer"), "{members:?}");
        assert_eq!(handle.health(), (true, 1));
        drop(handle);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the engine thread panicked"));
    }

    /// Issue 11, over HTTP: the real API router on a loopback socket. A job that panics shows
    /// in `/api/v1/health` (`jobs_failed`), the engine is still `running`, and the API goes on
    /// answering requests.
    #[test]
    fn over_http_a_failed_job_shows_in_health_and_the_api_keeps_answering() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_history, engine) = observer(dir.path());
        let (handle, _signals, thread) = EngineHandle::spawn(engine);
        let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let state = crate::daemon::api::ApiState {
            engine: handle.clone(),
            token: std::sync::Arc::new("token-for-the-test".into()),
            hosts: std::sync::Arc::new(vec![addr.to_string()]),
            network: Default::default(),
        };
        let app = crate::daemon::api::router(state, axum::Router::new());
        runtime.spawn(async move { axum::serve(listener, app).await });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let health = || -> (u16, serde_json::Value) {
            let mut r = agent
                .get(&format!("http://{addr}/api/v1/health"))
                .call()
                .unwrap_or_else(|e| panic!("{e}"));
            let body = r.body_mut().read_json().unwrap_or_else(|e| panic!("{e}"));
            (r.status().as_u16(), body)
        };
        let expect = |failed: u64| serde_json::json!({ "ok": true, "engine": "running", "jobs_failed": failed });
        assert_eq!(health(), (200, expect(0)));

        let failed = block_on(handle.panic());
        assert!(matches!(failed, Err(JobError::Failed)), "{failed:?}");
        assert_eq!(health(), (200, expect(1)), "the failure is reported");

        // The API still answers a request that needs the engine.
        let mut r = agent
            .post(&format!("http://{addr}/api/v1/rpc"))
            .header("Authorization", "Bearer token-for-the-test")
            .send_json(serde_json::json!({ "user": "operator", "request": { "op": "status" } }))
            .unwrap_or_else(|e| panic!("{e}"));
        let answer: serde_json::Value = r.body_mut().read_json().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200, "{answer}");
        assert_eq!(answer["ok"], true, "{answer}");
        assert_eq!(answer["result"]["org"], "unicef", "{answer}");
        assert_eq!(answer["result"]["config_version"], 1, "{answer}");
        assert_eq!(health(), (200, expect(1)));
        drop(runtime);
        drop(handle);
        thread
            .join()
            .unwrap_or_else(|_| panic!("the engine thread panicked"));
    }
}
