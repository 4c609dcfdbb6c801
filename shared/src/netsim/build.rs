//! Building a seed's world: who plays (honest nodes and attackers, drawn from the seed), their
//! engines and clocks, the network's faults and partitions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

use super::{
    Book, Faults, HONEST_MAX, HONEST_POOL, MALICIOUS_POOL, NetsimError, Node, Options, Partition,
    Role, SAMPLE, Stats, WORKLOAD_MAX_MS, WORKLOAD_MIN_MS, World, attack, base_time, net,
};
use crate::sim::Sim;

impl World {
    pub(super) fn build(dir: &Path, options: &Options) -> Result<Self, NetsimError> {
        let mut rng = StdRng::seed_from_u64(options.seed);
        let base = base_time();
        let (layout, honest, malicious) = draw_layout(&mut rng, options);
        let mut orgs: Vec<&str> = HONEST_POOL.iter().map(|(o, _)| *o).collect();
        orgs.extend(MALICIOUS_POOL);
        orgs.sort_unstable();
        orgs.dedup();
        let pairs: Vec<(&str, &str)> = layout
            .iter()
            .map(|(n, o, _, _)| (n.as_str(), o.as_str()))
            .collect();
        let sim = Sim::new(SAMPLE, &orgs, &pairs, base)?;
        let nodes = start_nodes(&sim, dir, layout, base, &mut rng)?;
        let workload_ms = options
            .workload_ms
            .unwrap_or_else(|| rng.gen_range(WORKLOAD_MIN_MS..=WORKLOAD_MAX_MS));
        let faults = Faults::draw(&mut rng);
        let partitions = draw_partitions(&mut rng, workload_ms, nodes.len());
        let mut stats = Stats {
            honest,
            malicious,
            partitions: partitions.len(),
            ..Stats::default()
        };
        let mut attackers = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if let Role::Malicious(kinds) = &node.role {
                stats.attacks.push(format!("{}: {kinds:?}", node.name));
                attackers.insert(i, attack::State::default());
            }
        }
        let mut world = Self {
            sim,
            nodes,
            net: net::Network::new(faults, partitions),
            rng,
            book: Book::default(),
            attackers,
            base,
            now_ms: 0,
            next_round: 0,
            violations: Vec::new(),
            trace: VecDeque::new(),
            stats,
            options: options.clone(),
        };
        world.options.workload_ms = Some(workload_ms);
        let layout: Vec<String> = world
            .nodes
            .iter()
            .map(|n| format!("{}({:+} ms)", n.name, n.clock_offset_ms))
            .collect();
        world.log(format!(
            "seed {}: nodes {layout:?}, faults {:?}, partitions {:?}, workload {workload_ms} ms",
            options.seed, world.net.faults, world.net.partitions
        ));
        Ok(world)
    }
}

/// A node to start: its name, organisation, whether it holds the organisation's key from the
/// start, and its role.
type Seat = (String, String, bool, Role);

/// Who plays: three to [`HONEST_MAX`] honest nodes and, when attacks are on, up to one
/// attacker per organisation of [`MALICIOUS_POOL`], each with some of the attacks. Returns the
/// seats and how many of each.
fn draw_layout(rng: &mut StdRng, options: &Options) -> (Vec<Seat>, usize, usize) {
    let honest = rng.gen_range(3..=HONEST_MAX);
    let kinds = options.attacks.list();
    let malicious = if kinds.is_empty() {
        0
    } else {
        rng.gen_range(0..=MALICIOUS_POOL.len())
    };
    let mut layout: Vec<Seat> = Vec::new();
    for (i, (org, keys)) in HONEST_POOL.iter().take(honest).enumerate() {
        layout.push((format!("h{i}-{org}"), org.to_string(), *keys, Role::Honest));
    }
    for (i, org) in MALICIOUS_POOL.iter().take(malicious).enumerate() {
        let mut mine: Vec<attack::Kind> = kinds
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.5))
            .collect();
        if mine.is_empty() {
            mine.push(kinds[rng.gen_range(0..kinds.len())]);
        }
        layout.push((
            format!("m{i}-{org}"),
            org.to_string(),
            true,
            Role::Malicious(mine),
        ));
    }
    (layout, honest, malicious)
}

/// Up to three partitions during the workload, each splitting the nodes into two or three
/// groups for a while.
fn draw_partitions(rng: &mut StdRng, workload_ms: u64, nodes: usize) -> Vec<Partition> {
    let mut partitions = Vec::new();
    for _ in 0..rng.gen_range(0..=3) {
        let start_ms = rng.gen_range(0..workload_ms);
        let end_ms = (start_ms + rng.gen_range(200..4_000)).min(workload_ms);
        let groups = rng.gen_range(2..=3u8);
        let group = (0..nodes).map(|_| rng.gen_range(0..groups)).collect();
        partitions.push(Partition {
            start_ms,
            end_ms,
            group,
        });
    }
    partitions
}

/// Each seat's node: its engine with a store in `dir`, and its clock's offset.
fn start_nodes(
    sim: &Sim,
    dir: &Path,
    layout: Vec<Seat>,
    base: OffsetDateTime,
    rng: &mut StdRng,
) -> Result<Vec<Node>, NetsimError> {
    let mut nodes = Vec::new();
    for (name, org, keys, role) in layout {
        let engine = sim.engine(&name, dir, keys, base)?;
        // Honest clocks disagree by up to two minutes, well within the skew bound (300 s).
        let clock_offset_ms = if rng.gen_bool(0.2) {
            rng.gen_range(-120_000..=120_000)
        } else {
            rng.gen_range(-2_000..=2_000)
        };
        nodes.push(Node {
            name,
            org,
            role,
            engine,
            clock_offset_ms,
            rounds: BTreeMap::new(),
            busy: BTreeSet::new(),
        });
    }
    Ok(nodes)
}
