//! A deterministic network simulator: several real engines (redb stores in a directory the
//! caller gives) exchanging the real sync messages — encoded and decoded, so the codec is
//! exercised — through a simulated network that drops, duplicates, delays, reorders and
//! partitions, all drawn from one seed. Honest nodes run a workload of the operations a
//! caseworker takes (cases, determinations, referrals and their steps, case actions, partner-map
//! edits, key shares); malicious members among them equivocate, break the rules, relay
//! outsiders' and far-future events, send garbage and answer rounds badly.
//!
//! After the workload the partitions heal, the network keeps misbehaving until the honest nodes
//! agree, a last sweep of rounds runs on a perfect network, and `check` verifies what
//! Passerelle promises: every honest node holds the same logs, every event an honest node
//! acknowledged is on every honest node exactly once, forks are flagged, the fold's state is
//! the same wherever the same events can be read, nothing panicked or failed in storage, and
//! no honest clock was pushed ahead.
//!
//! Determinism: the schedule — who does what when, which message is lost or late — comes from
//! the seed. Keys and age ciphertexts draw their own randomness, so event ids differ between
//! two runs of one seed; the simulator never decides anything from an id's value (it keeps its
//! own lists in creation order), so the same seed replays the same story.

mod attack;
mod build;
mod check;
mod net;
mod rounds;
mod schedule;
mod workload;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use rand::rngs::StdRng;
use time::OffsetDateTime;

use crate::engine::{Engine, EngineError};
use crate::event::{Event, EventId};
use crate::sim::Sim;
use crate::store::StoreError;
use crate::sync::round::Round;
use crate::sync::{self, Request};

pub use net::{Faults, NetStats, Partition};

/// The sample mechanism the simulated one is built from.
const SAMPLE: &str = include_str!("../../../config/mechanism.toml");

/// One tick of the virtual clock, in milliseconds.
const TICK_MS: u64 = 10;
/// How long an initiator waits for an answer before it gives the round up, in milliseconds.
const ROUND_TIMEOUT_MS: u64 = 3_000;
/// Most requests one round may send before the simulator gives it up and reports it: an
/// honest round here takes fewer than ten (a seed's whole history fits a few batches), so one
/// still asking after this many is held open by its responder (`more = true` for ever).
const ROUND_STEPS_MAX: u32 = 32;
/// Shortest and longest workload a seed draws, in milliseconds of virtual time.
const WORKLOAD_MIN_MS: u64 = 1_000;
const WORKLOAD_MAX_MS: u64 = 3_000;
/// How long after the workload the honest nodes have to agree, on the faulty network, in
/// milliseconds of virtual time.
const CONVERGE_MAX_MS: u64 = 120_000;
/// How often a node retries its held events, in milliseconds (the daemon: every 30 s).
const RETRY_HELD_EVERY_MS: u64 = 1_000;
/// How many trace lines are kept for a report.
const TRACE_LINES_MAX: usize = 400;
/// Lead of a far-future event over the clock, in milliseconds (ten years).
const FUTURE_LEAD_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Which attacks malicious members may draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attacks {
    /// Two events at one sequence, each sent to different peers, and both branches extended.
    pub equivocation: bool,
    /// Events the fold must mark: accepting one's own referral, referring without consent,
    /// steps by a non-party, determinations by a non-authority, another organisation's map.
    pub rule_breaking: bool,
    /// Events signed by a key no organisation endorsed, relayed to honest nodes.
    pub outsider: bool,
    /// Outsiders' events claiming a configuration version nobody has (they are held).
    pub unknown_version: bool,
    /// Events ten years ahead of every clock.
    pub future: bool,
    /// Random and truncated messages, as requests, pushes and answers.
    pub garbage: bool,
    /// Answers with duplicated or huge batches, and bogus version vectors.
    pub bad_responder: bool,
    /// A responder that answers `more = true` forever.
    pub endless: bool,
    /// Partner-map changes with malformed bodies, or written under another node's actor.
    pub bad_map: bool,
}

impl Attacks {
    /// Every attack.
    pub fn all() -> Self {
        Self {
            equivocation: true,
            rule_breaking: true,
            outsider: true,
            unknown_version: true,
            future: true,
            garbage: true,
            bad_responder: true,
            endless: true,
            bad_map: true,
        }
    }

    /// No attack: honest nodes only.
    pub fn none() -> Self {
        Self {
            equivocation: false,
            rule_breaking: false,
            outsider: false,
            unknown_version: false,
            future: false,
            garbage: false,
            bad_responder: false,
            endless: false,
            bad_map: false,
        }
    }

    fn list(&self) -> Vec<attack::Kind> {
        use attack::Kind as K;
        [
            (self.equivocation, K::Equivocation),
            (self.rule_breaking, K::RuleBreaking),
            (self.outsider, K::Outsider),
            (self.unknown_version, K::UnknownVersion),
            (self.future, K::Future),
            (self.garbage, K::Garbage),
            (self.bad_responder, K::BadResponder),
            (self.endless, K::Endless),
            (self.bad_map, K::BadMap),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect()
    }
}

impl Default for Attacks {
    /// The attacks core withstands today: all but the endless responder, which holds a round
    /// open for ever until `round` bounds a round's work (issue 10, item 14).
    fn default() -> Self {
        Self {
            endless: false,
            ..Self::all()
        }
    }
}

/// What one run simulates.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub attacks: Attacks,
    /// Map-change bodies for the malformed-map attack besides the generated ones (the fuzz
    /// crashers, read by the caller).
    pub map_bodies: Vec<Vec<u8>>,
    /// How long the workload runs, in milliseconds of virtual time; drawn from the seed when
    /// `None`.
    pub workload_ms: Option<u64>,
    /// Whether an honest author's log left unfolded behind an event built on a fork's
    /// branch is a violation. Off by default: the fold takes each author's chain in order, so
    /// today it is what happens (reported as a finding; see the test that sets it).
    pub strict_forks: bool,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            attacks: Attacks::default(),
            map_bodies: Vec::new(),
            workload_ms: None,
            strict_forks: false,
        }
    }
}

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (a short stable name).
    pub invariant: &'static str,
    pub detail: String,
}

/// Counters of what a run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub honest: usize,
    pub malicious: usize,
    pub attacks: Vec<String>,
    pub events_acknowledged: usize,
    /// Acknowledged events by operation.
    pub ops: BTreeMap<String, usize>,
    pub ops_refused: usize,
    pub attacks_made: usize,
    pub rounds_done: u64,
    pub rounds_failed: u64,
    pub rounds_timed_out: u64,
    pub rounds_cut_off: u64,
    pub garbage_refused: u64,
    pub partitions: usize,
    pub virtual_ms: u64,
    pub converged_after_ms: Option<u64>,
    /// What the checks saw: forks among honest views, forks flagged, cases compared and left
    /// out (a forked author's events reach them), events the fold marked on the first honest
    /// node, events still held or waiting at the end there.
    pub forks_seen: usize,
    pub fork_flags: usize,
    pub cases_compared: usize,
    pub cases_tainted: usize,
    pub marked: usize,
    /// Honest authors whose later events stay unfolded on some honest node because one of
    /// theirs was built on a fork's branch that node lacks (see `Options::strict_forks`).
    pub authors_blocked_by_fork: usize,
    pub held_at_end: u64,
    pub waiting_at_end: u64,
    pub net: NetStats,
}

/// What one seed gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    /// The last lines of the run's trace (for a report).
    pub trace: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// A report for a person: the seed, what was violated, and the end of the trace.
    pub fn report(&self) -> String {
        let mut out = format!(
            "netsim seed {}: {} violation(s)\n",
            self.seed,
            self.violations.len()
        );
        for v in &self.violations {
            out.push_str(&format!("  [{}] {}\n", v.invariant, v.detail));
        }
        out.push_str(&format!(
            "  stats: {:?}\n  trace (last lines):\n",
            self.stats
        ));
        for line in &self.trace {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// Why a run could not even be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetsimError {
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Io(String),
}

/// Whether a node plays by the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Honest,
    Malicious(Vec<attack::Kind>),
}

/// A round this node opened and waits on.
#[derive(Debug)]
struct Pending {
    peer: usize,
    round: Round,
    /// The step of the request in flight (answers for other steps are stale).
    step: u32,
    deadline_ms: u64,
}

/// One simulated node.
#[derive(Debug)]
struct Node {
    name: String,
    org: String,
    role: Role,
    engine: Engine,
    /// Offset of this node's clock from the simulation's, in milliseconds.
    clock_offset_ms: i64,
    rounds: BTreeMap<u64, Pending>,
    /// Peers this node has a round open with (one at a time per peer, as the daemon does).
    busy: BTreeSet<usize>,
}

impl Node {
    fn honest(&self) -> bool {
        self.role == Role::Honest
    }
}

/// A case the simulation knows of, in creation order.
#[derive(Debug, Clone)]
struct CaseInfo {
    id: EventId,
    case_type: String,
}

/// A referral the simulation knows of, in creation order.
#[derive(Debug, Clone)]
struct ReferralInfo {
    id: EventId,
    from_org: String,
    to_org: String,
}

/// The simulation's own lists (never read back from a store in id order, see the module doc).
#[derive(Debug, Default)]
struct Book {
    cases: Vec<CaseInfo>,
    referrals: Vec<ReferralInfo>,
    /// Events honest nodes created and were told were written: (node, event).
    acknowledged: Vec<(usize, EventId)>,
}

/// The whole simulated world.
struct World {
    sim: Sim,
    nodes: Vec<Node>,
    net: net::Network,
    rng: StdRng,
    book: Book,
    attackers: BTreeMap<usize, attack::State>,
    base: OffsetDateTime,
    now_ms: u64,
    next_round: u64,
    violations: Vec<Violation>,
    trace: VecDeque<String>,
    stats: Stats,
    options: Options,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World(t={} ms, {} nodes)", self.now_ms, self.nodes.len())
    }
}

/// Honest nodes, in the order a seed takes them: (organisation, holds the organisation's key
/// from the start). The second `mas` node receives the key by a key share.
const HONEST_POOL: [(&str, bool); 7] = [
    ("mas", true),
    ("mdm", true),
    ("dpe", true),
    ("iom", true),
    ("mas", false),
    ("unicef", true),
    ("drs_medenine", true),
];

/// Most honest nodes a seed draws (at least three; each more costs every push once more).
const HONEST_MAX: usize = 5;

/// Organisations of malicious members.
const MALICIOUS_POOL: [&str; 2] = ["crt", "unhcr"];

/// The simulation's start: a fixed instant, so every seed's clocks are the same.
fn base_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_300_800).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Runs one seed in `dir` (one store per node is created there).
pub fn run(dir: &Path, options: &Options) -> Result<Outcome, NetsimError> {
    let mut world = World::build(dir, options)?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world.simulate();
        world.finish();
    }));
    if let Err(panic) = result {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        world.violate("no_panic", format!("t={} ms: {message}", world.now_ms));
    }
    world.stats.net = world.net.stats.clone();
    world.stats.virtual_ms = world.now_ms;
    Ok(Outcome {
        seed: options.seed,
        violations: world.violations,
        stats: world.stats,
        trace: world.trace.into_iter().collect(),
    })
}

/// Runs seeds `from..from + count`, each in its own directory under `dir` (removed after the
/// run unless it failed), calling `progress` after each. Returns the outcomes that failed.
pub fn run_seeds(
    dir: &Path,
    from: u64,
    count: u64,
    attacks: Attacks,
    map_bodies: &[Vec<u8>],
    mut progress: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, NetsimError> {
    let mut failed = Vec::new();
    for seed in from..from.saturating_add(count) {
        let seed_dir = dir.join(format!("seed-{seed}"));
        std::fs::create_dir_all(&seed_dir).map_err(|e| NetsimError::Io(e.to_string()))?;
        let mut options = Options::new(seed);
        options.attacks = attacks;
        options.map_bodies = map_bodies.to_vec();
        let outcome = run(&seed_dir, &options)?;
        progress(&outcome);
        if outcome.ok() {
            std::fs::remove_dir_all(&seed_dir).map_err(|e| NetsimError::Io(e.to_string()))?;
        } else {
            failed.push(outcome);
        }
    }
    Ok(failed)
}

/// Whether an engine error means storage failed (never acceptable), rather than a refusal.
fn storage_failure(e: &EngineError) -> bool {
    matches!(e, EngineError::Store(s) if s.is_storage_failure() || matches!(s, StoreError::Refused(_)))
}
impl World {
    fn log(&mut self, line: String) {
        if self.trace.len() >= TRACE_LINES_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={} {line}", self.now_ms));
    }

    fn violate(&mut self, invariant: &'static str, detail: String) {
        self.log(format!("VIOLATION [{invariant}] {detail}"));
        self.violations.push(Violation { invariant, detail });
    }

    /// Node `i`'s clock.
    fn now_of(&self, i: usize) -> OffsetDateTime {
        let offset = self.nodes.get(i).map_or(0, |n| n.clock_offset_ms);
        let ms = i64::try_from(self.now_ms).unwrap_or(i64::MAX) + offset;
        self.base + time::Duration::milliseconds(ms)
    }

    /// Records a storage failure of node `i` (any other error is a refusal, which is fine).
    fn note_error(&mut self, i: usize, what: &str, e: &EngineError) {
        if storage_failure(e) {
            let name = self.nodes[i].name.clone();
            self.violate("no_storage_error", format!("{name} {what}: {e}"));
        }
    }
}

/// An encoded push of events (compacted, as the daemon sends them); `None` past the message
/// bound (rounds carry them instead).
fn push_bytes(events: &[Event]) -> Option<Vec<u8>> {
    let wire = events.iter().map(Event::encode).collect();
    sync::encode(&Request::Push {
        events: crate::event::compact_batch(wire),
    })
    .ok()
}

/// The skew bound of the configuration `engine` holds, in milliseconds.
fn skew_ms(engine: &Engine) -> u64 {
    engine
        .mechanism()
        .map_or(0, |m| u64::from(m.doc.sop.clock_skew_secs) * 1000)
}

#[cfg(test)]
mod tests;
