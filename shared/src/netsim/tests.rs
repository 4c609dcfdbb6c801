//! The simulator's tests: a few hundred seeds (CI), the seeds that once found a bug, a long
//! run on demand, and checks that the checks catch what they are for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::sim::Forger;

/// Seeds CI runs, unless `PASSERELLE_NETSIM_SEEDS` says otherwise (split over two tests, so
/// the harness runs them on two cores).
const CI_SEEDS: u64 = 200;

/// Seeds that found a bug, each with what it found (with this version of the simulator: a
/// change to how the simulator draws its story changes what a seed tells).
const REGRESSION_SEEDS: &[(u64, &str)] = &[
    (
        25,
        "a fork was not flagged on the nodes holding the shorter branch (fixed in round.rs: fork evidence)",
    ),
    (
        27,
        "the same, the shorter branch's holder being the only one of three",
    ),
    (66, "the same, on four of five honest nodes"),
    (
        1166,
        "an attacker's malformed map change (its own profile, body 154 bytes) was judged BadPayload on two honest nodes and valid on the two others, by what had arrived first (fixed in map::apply: a change whose dependencies are missing waits for them)",
    ),
];

/// A directory on tmpfs when there is one: the stores commit durably, and fsync on tmpfs
/// costs nothing, so seeds run several times faster with the same storage semantics.
pub(super) fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The bodies that once made automerge panic inside the fold (issue 10), for the malformed-map
/// attack.
fn crashers() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashers/automerge");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

/// Runs seeds on `threads` threads; returns the failed outcomes and the time taken.
fn run_many(
    seeds: &[u64],
    attacks: Attacks,
    strict_forks: bool,
    threads: usize,
) -> (Vec<Outcome>, Duration) {
    let started = Instant::now();
    let bodies = crashers();
    let verbose = std::env::var("PASSERELLE_NETSIM_VERBOSE").is_ok();
    let failed = std::sync::Mutex::new(Vec::new());
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..threads.max(1) {
            let (bodies, failed, done) = (&bodies, &failed, &done);
            scope.spawn(move || {
                let dir = scratch();
                for seed in seeds.iter().skip(t).step_by(threads.max(1)) {
                    let seed_dir = dir.path().join(format!("seed-{seed}"));
                    std::fs::create_dir_all(&seed_dir).unwrap_or_else(|e| panic!("{e}"));
                    let mut options = Options::new(*seed);
                    options.attacks = attacks;
                    options.map_bodies = bodies.clone();
                    options.strict_forks = strict_forks;
                    let outcome = run(&seed_dir, &options).unwrap_or_else(|e| panic!("{e}"));
                    let _ = std::fs::remove_dir_all(&seed_dir);
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if verbose || !outcome.ok() || n % 500 == 0 {
                        eprintln!(
                            "[{n}/{}] seed {}: {} violation(s), {:?}",
                            seeds.len(),
                            outcome.seed,
                            outcome.violations.len(),
                            outcome.stats
                        );
                    }
                    if !outcome.ok() {
                        eprintln!("{}", outcome.report());
                        if let Ok(mut f) = failed.lock() {
                            f.push(outcome);
                        }
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_default();
    (failed, started.elapsed())
}

fn assert_seeds(seeds: &[u64], attacks: Attacks, threads: usize) {
    assert_seeds_with(seeds, attacks, false, threads);
}

fn assert_seeds_with(seeds: &[u64], attacks: Attacks, strict_forks: bool, threads: usize) {
    let (failed, elapsed) = run_many(seeds, attacks, strict_forks, threads);
    eprintln!(
        "netsim: {} seeds in {:.1} s ({:.2} seeds/s), {} failed: {:?}",
        seeds.len(),
        elapsed.as_secs_f64(),
        seeds.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        failed.len(),
        failed.iter().map(|o| o.seed).collect::<Vec<_>>()
    );
    assert!(failed.is_empty(), "{} seed(s) failed", failed.len());
}

fn ci_half(half: u64) {
    let n = env_u64("PASSERELLE_NETSIM_SEEDS", CI_SEEDS);
    let from = env_u64("PASSERELLE_NETSIM_FROM", 0);
    let seeds: Vec<u64> = (from..from + n).filter(|s| s % 2 == half).collect();
    assert_seeds(&seeds, Attacks::default(), 1);
}

#[test]
fn seeds_hold_every_invariant_even() {
    ci_half(0);
}

#[test]
fn seeds_hold_every_invariant_odd() {
    ci_half(1);
}

#[test]
fn regression_seeds_hold_every_invariant() {
    let seeds: Vec<u64> = REGRESSION_SEEDS.iter().map(|(s, _)| *s).collect();
    assert_seeds(&seeds, Attacks::default(), 1);
}

/// The long run: `PASSERELLE_NETSIM_SEEDS` seeds from `PASSERELLE_NETSIM_FROM` on
/// `PASSERELLE_NETSIM_THREADS` threads, e.g.
/// `PASSERELLE_NETSIM_SEEDS=10000 cargo test --release -p passerelle-core --lib long_run -- --ignored --nocapture`.
#[test]
#[ignore = "long: run by hand (see the doc comment)"]
fn long_run() {
    let n = env_u64("PASSERELLE_NETSIM_SEEDS", 10_000);
    let from = env_u64("PASSERELLE_NETSIM_FROM", 0);
    let threads = env_u64("PASSERELLE_NETSIM_THREADS", 2) as usize;
    let seeds: Vec<u64> = (from..from + n).collect();
    assert_seeds(&seeds, Attacks::default(), threads);
}

/// Builds seed `seed` and runs it up to (not including) the checks.
fn simulated(dir: &Path, seed: u64, attacks: Attacks) -> World {
    let mut options = Options::new(seed);
    options.attacks = attacks;
    let mut world = World::build(dir, &options).unwrap_or_else(|e| panic!("{e}"));
    world.simulate();
    world
}

fn invariants(world: &World) -> Vec<&'static str> {
    world.violations.iter().map(|v| v.invariant).collect()
}

#[test]
fn the_checks_catch_an_acknowledged_event_that_never_left() {
    let dir = scratch();
    let mut world = simulated(dir.path(), 5, Attacks::none());
    // An honest node writes a case and is told so, but the event never leaves it.
    let now = world.now_of(0);
    let data = workload::case_data(&mut world.rng, "general", true);
    let id = world.nodes[0]
        .engine
        .open_case(data, "caseworker", now)
        .unwrap_or_else(|e| panic!("{e}"));
    world.nodes[0].engine.take_fresh();
    world.book.acknowledged.push((0, id));
    world.finish();
    let found = invariants(&world);
    assert!(found.contains(&"same_logs"), "{found:?}");
    assert!(found.contains(&"acknowledged_everywhere"), "{found:?}");
}

#[test]
fn the_checks_catch_a_fork_left_unflagged() {
    let dir = scratch();
    let mut world = simulated(dir.path(), 5, Attacks::none());
    // Two honest nodes each take a different event at an honest author's next sequence —
    // what a restored node that forgot its log could do — and nobody syncs again.
    let node = world
        .sim
        .node(&world.nodes[2].name)
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    let m = world.nodes[0]
        .engine
        .mechanism()
        .unwrap_or_else(|e| panic!("{e}"))
        .clone();
    let head = world.nodes[0]
        .engine
        .store()
        .head(&node.key())
        .unwrap_or_else(|e| panic!("{e}"));
    let now = world.now_of(0);
    let mut forks = Vec::new();
    for body in [b"x".as_slice(), b"y".as_slice()] {
        let mut f = Forger::new(&node, world.sim.mechanism_id(), m.doc.version, now);
        if let Some((seq, id, _)) = head {
            f.seq = seq;
            f.prev = Some(id);
        }
        f.hlc = world.nodes[0].engine.store().hlc_seen();
        let kind = crate::event::Kind::MapChange {
            org: node.org.clone(),
        };
        forks.push(
            f.next(&m, kind, None, vec![], &[], body)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    for (k, e) in forks.iter().enumerate() {
        world.nodes[k]
            .engine
            .receive(std::slice::from_ref(e), now)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    world.finish();
    let found = invariants(&world);
    assert!(found.contains(&"same_logs"), "{found:?}");
    assert!(found.contains(&"equivocation_flagged"), "{found:?}");
}

/// A responder that answers `more = true` for ever must not hold an honest round open for
/// ever (issue 10, item 14): `Round` bounds a round's batches and bytes (`RoundReport::cut_short`),
/// before the simulator's own cut-off would end the round and report it.
#[test]
fn an_endless_responder_does_not_hold_rounds_open() {
    let mut only = Attacks::none();
    only.endless = true;
    let seeds: Vec<u64> = (0..20).collect();
    assert_seeds(&seeds, only, 1);
}

/// An honest node that acts on an equivocator's case or referral (it cannot know of the fork
/// yet) builds on one branch. Where the other branch is held, that event waits for a
/// dependency that never comes — and, because the fold takes each author's chain in order,
/// so does every later event of the honest author (its map changes, its steps on unrelated
/// referrals), and everything built on those. Fails today (a finding of the simulator, not
/// fixed here: the fold's ordering is `store::log`'s).
#[test]
#[ignore = "finding: an honest log built on a fork's branch stays unfolded behind it"]
fn an_honest_log_built_on_a_fork_is_folded_everywhere() {
    let seeds: Vec<u64> = (0..40).collect();
    assert_seeds_with(&seeds, Attacks::default(), true, 1);
}
