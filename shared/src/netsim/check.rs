//! The invariants checked once the network is quiet.
//!
//! A forked author (an equivocator) is the one place where honest nodes may hold different
//! logs by design: each keeps the branch it admitted first and holds the other as evidence. So
//! the logs compared are every other author's, and the fold's state is compared for every case
//! (with its referrals and steps) and every map profile that no forked author's event reaches.
//! Nodes that can read different parts of a case judge payload rules differently by design,
//! so a case is compared between nodes that read the same events of it.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{Event, EventId, Kind};
use crate::store::Store;

use super::World;

type Author = [u8; 32];

fn honest(world: &World) -> Vec<usize> {
    (0..world.nodes.len())
        .filter(|i| world.nodes[*i].honest())
        .collect()
}

/// The authors of attackers that forked their logs.
fn forkers(world: &World) -> BTreeSet<Author> {
    world
        .attackers
        .iter()
        .filter(|(_, s)| s.forked())
        .map(|(i, _)| world.nodes[*i].engine.node_key())
        .collect()
}

/// A store that cannot be read shows no heads, which the comparisons report as differing
/// from the other nodes' (and a storage failure is reported as such by the run).
fn heads(store: &Store) -> BTreeMap<Author, (u64, EventId)> {
    store
        .heads()
        .unwrap_or_default()
        .into_iter()
        .map(|(a, s, id)| (a, (s, id)))
        .collect()
}

/// Whether every honest node holds the same log of every author that did not fork.
pub(super) fn honest_logs_agree(world: &World) -> bool {
    let skip = forkers(world);
    let mut first: Option<BTreeMap<Author, (u64, EventId)>> = None;
    for i in honest(world) {
        let mut h = heads(world.nodes[i].engine.store());
        h.retain(|a, _| !skip.contains(a));
        match &first {
            None => first = Some(h),
            Some(f) if *f != h => return false,
            Some(_) => {}
        }
    }
    true
}

fn short(author: &Author) -> String {
    crate::config::Hash32(*author).short()
}

/// An author's whole log; one that cannot be read is empty here (the heads compared above
/// show the difference).
fn log_of(store: &Store, author: &Author) -> Vec<Event> {
    store.log_range(author, 1, usize::MAX).unwrap_or_default()
}

/// The case (or, for an orphan step, the referral) an event belongs to, as `store` sees it;
/// `None` for events outside cases (key shares, map changes).
fn root(store: &Store, e: &Event) -> Option<EventId> {
    let h = e.header();
    match &h.kind {
        Kind::CaseOpen => Some(e.id()),
        Kind::StatusDetermination | Kind::CaseUpdate(_) | Kind::ReferralSend { .. } => {
            Some(h.subject.unwrap_or(e.id()))
        }
        Kind::ReferralUpdate { .. } => {
            let referral = h.subject.unwrap_or(e.id());
            match store.event(&referral).ok().flatten() {
                Some(r) => Some(r.header().subject.unwrap_or(referral)),
                None => Some(referral),
            }
        }
        Kind::KeyShare { .. } | Kind::MapChange { .. } | Kind::MapSnapshot { .. } => None,
    }
}

/// Runs every check; violations go into the world.
pub(super) fn all(world: &mut World) {
    let honest = honest(world);
    let Some(&first) = honest.first() else {
        return;
    };
    let mut checker = Checker::new(world, honest);
    // 1. The same logs, but for forked authors, whose branches differ by design.
    let all_heads = checker.all_heads();
    let divergent = checker.same_logs(&all_heads);
    // 2. Every acknowledged event on every honest node, in its author's log at its sequence.
    checker.acknowledged_everywhere();
    // 3. Forks: never an honest author's; a fork among honest views is flagged everywhere.
    let evidence = checker.forks_flagged(&all_heads, &divergent);
    // 4. Only endorsed authors, nothing beyond the skew bound, in any honest log.
    checker.only_endorsed_and_not_future(first);
    // 5. The fold's state.
    let fold = checker.fold_state(first);
    let violations = checker.violations;
    world.stats.authors_blocked_by_fork = fold.stuck;
    // A store that cannot count its log shows zero held and waiting in the stats (the
    // invariants above read the same store and report what it fails to give).
    let counts = world.nodes[first]
        .engine
        .store()
        .log_counts()
        .unwrap_or_default();
    world.stats.forks_seen = divergent.len();
    world.stats.fork_flags = evidence.iter().map(BTreeSet::len).sum();
    world.stats.cases_compared = fold.compared;
    world.stats.cases_tainted = fold.tainted;
    world.stats.marked = fold.marked;
    world.stats.held_at_end = counts.held;
    world.stats.waiting_at_end = counts.waiting;

    for (invariant, detail) in violations {
        world.violate(invariant, detail);
    }
}

/// Heads of every author, as one node holds them.
type Heads = BTreeMap<Author, (u64, EventId)>;

/// The checks' common ground: the world (read only), its honest nodes, the forked authors,
/// the nodes' names, and the violations found so far.
struct Checker<'w> {
    world: &'w World,
    honest: Vec<usize>,
    forked: BTreeSet<Author>,
    names: Vec<String>,
    violations: Vec<(&'static str, String)>,
}

/// What the fold check counted.
struct FoldCounts {
    compared: usize,
    tainted: usize,
    marked: usize,
    stuck: usize,
}

/// What a forked author's events reach: the events at a fork, and the cases and map
/// profiles whose fold may differ between nodes by design.
#[derive(Default)]
struct Taint {
    forked_ids: BTreeSet<EventId>,
    roots: BTreeSet<EventId>,
    maps: BTreeSet<String>,
}

impl<'w> Checker<'w> {
    fn new(world: &'w World, honest: Vec<usize>) -> Self {
        Self {
            world,
            honest,
            forked: forkers(world),
            names: world.nodes.iter().map(|n| n.name.clone()).collect(),
            violations: Vec::new(),
        }
    }

    fn store(&self, n: usize) -> &'w Store {
        self.world.nodes[n].engine.store()
    }

    /// Each honest node's heads, in the order of `honest`.
    fn all_heads(&self) -> Vec<Heads> {
        self.honest.iter().map(|i| heads(self.store(*i))).collect()
    }

    /// Reports the authors whose heads differ between honest nodes, but for forked authors;
    /// returns every author whose heads differ.
    fn same_logs(&mut self, all_heads: &[Heads]) -> BTreeSet<Author> {
        let authors: BTreeSet<Author> = all_heads.iter().flat_map(|h| h.keys().copied()).collect();
        let mut divergent = BTreeSet::new();
        for author in &authors {
            let views: Vec<Option<&(u64, EventId)>> =
                all_heads.iter().map(|h| h.get(author)).collect();
            if views.iter().any(|v| *v != views[0]) {
                divergent.insert(*author);
                if !self.forked.contains(author) {
                    let detail: Vec<String> = self
                        .honest
                        .iter()
                        .zip(&views)
                        .map(|(i, v)| match v {
                            Some((s, id)) => format!("{} seq {s} {}", self.names[*i], id.short()),
                            None => format!("{} nothing", self.names[*i]),
                        })
                        .collect();
                    self.violations.push((
                        "same_logs",
                        format!("author {}: {}", short(author), detail.join(", ")),
                    ));
                }
            }
        }
        divergent
    }

    fn acknowledged_everywhere(&mut self) {
        let world = self.world;
        for (n, id) in &world.book.acknowledged {
            let author = world.nodes[*n].engine.node_key();
            for &h in &self.honest {
                let store = self.store(h);
                let Ok(Some(event)) = store.event(id) else {
                    self.violations.push((
                        "acknowledged_everywhere",
                        format!(
                            "{}'s event {} is missing on {}",
                            self.names[*n],
                            id.short(),
                            self.names[h]
                        ),
                    ));
                    continue;
                };
                let seq = event.header().seq;
                let at = store
                    .log_range(&author, seq, 1)
                    .ok()
                    .and_then(|v| v.first().map(Event::id));
                if at != Some(*id) {
                    self.violations.push((
                        "acknowledged_everywhere",
                        format!(
                            "{}'s event {} is not at seq {seq} of its log on {}",
                            self.names[*n],
                            id.short(),
                            self.names[h]
                        ),
                    ));
                }
            }
        }
    }

    /// Reports honest authors flagged as equivocators, and forks (`divergent` authors) some
    /// honest node does not flag; returns each honest node's flagged authors.
    fn forks_flagged(
        &mut self,
        all_heads: &[Heads],
        divergent: &BTreeSet<Author>,
    ) -> Vec<BTreeSet<Author>> {
        let honest_keys: BTreeSet<Author> = self
            .honest
            .iter()
            .map(|i| self.world.nodes[*i].engine.node_key())
            .collect();
        // A store that cannot list its evidence flags nobody: the check then reports the
        // forks it should have flagged.
        let evidence: Vec<BTreeSet<Author>> = self
            .honest
            .iter()
            .map(|i| {
                self.store(*i)
                    .equivocations()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(a, _, _)| a)
                    .collect()
            })
            .collect();
        for (k, flagged) in evidence.iter().enumerate() {
            for a in flagged.intersection(&honest_keys) {
                self.violations.push((
                    "honest_never_flagged",
                    format!(
                        "{} flags honest {} as an equivocator",
                        self.names[self.honest[k]],
                        short(a)
                    ),
                ));
            }
        }
        for author in divergent {
            let missing: Vec<String> = self
                .honest
                .iter()
                .zip(&evidence)
                .filter(|(_, e)| !e.contains(author))
                .map(|(i, _)| self.names[*i].clone())
                .collect();
            if !missing.is_empty() {
                let views: Vec<String> = self
                    .honest
                    .iter()
                    .zip(all_heads)
                    .map(|(i, h)| match h.get(author) {
                        Some((s, id)) => format!("{} seq {s} {}", self.names[*i], id.short()),
                        None => format!("{} nothing", self.names[*i]),
                    })
                    .collect();
                self.violations.push((
                    "equivocation_flagged",
                    format!(
                        "the fork of {} is not flagged on {} (heads: {})",
                        short(author),
                        missing.join(", "),
                        views.join(", ")
                    ),
                ));
            }
        }
        evidence
    }

    fn only_endorsed_and_not_future(&mut self, first: usize) {
        let world = self.world;
        // Nothing stamped past the last clock plus the skew bound can have been admitted.
        let end_ms = u64::try_from(world.now_of(first).unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(0)
            + super::skew_ms(&world.nodes[first].engine) * 2;
        for &h in &self.honest {
            let store = self.store(h);
            let Ok(m) = world.nodes[h].engine.mechanism() else {
                continue;
            };
            for author in heads(store).keys() {
                if m.node_by_key(author).is_none() {
                    self.violations.push((
                        "only_endorsed",
                        format!(
                            "{} holds events of non-endorsed {}",
                            self.names[h],
                            short(author)
                        ),
                    ));
                }
                for e in log_of(store, author) {
                    if e.header().hlc.ms > end_ms {
                        self.violations.push((
                            "no_far_future",
                            format!(
                                "{} admitted {} from the future",
                                self.names[h],
                                e.id().short()
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// The fold's state: the same for every case and map profile no fork reaches, between
    /// nodes that read the same events.
    fn fold_state(&mut self, first: usize) -> FoldCounts {
        let mut taint = self.taint();
        // Every event of the authors all honest nodes agree on.
        let store = self.store(first);
        let mut common = Vec::new();
        for author in heads(store).keys() {
            if !self.forked.contains(author) {
                common.extend(log_of(store, author));
            }
        }
        let (blocked, blocked_from) = blocked_by_forks(&common, &taint.forked_ids);
        for e in common.iter().filter(|e| blocked.contains(&e.id())) {
            for &n in &self.honest {
                if let Some(r) = root(self.store(n), e) {
                    taint.roots.insert(r);
                }
            }
            if let Kind::MapChange { org } | Kind::MapSnapshot { org } = &e.header().kind {
                taint.maps.insert(org.clone());
            }
        }
        let stuck = self.stuck_authors(&common, &blocked_from);
        if self.world.options.strict_forks && !stuck.is_empty() {
            self.violations.push((
                "fork_blocks_honest_fold",
                format!(
                    "honest logs built on a fork's branch stay unfolded past that point where the other branch is held: {}",
                    stuck.join(", ")
                ),
            ));
        }
        let mut trees: BTreeMap<EventId, Vec<EventId>> = BTreeMap::new();
        let mut outside = Vec::new();
        for e in &common {
            match root(store, e) {
                Some(r) => trees.entry(r).or_default().push(e.id()),
                None => outside.push(e.id()),
            }
        }
        let marked = common
            .iter()
            .filter(|e| {
                store
                    .verdict(&e.id())
                    .ok()
                    .flatten()
                    .is_some_and(|v| !v.is_valid())
            })
            .count();
        let (compared, tainted) = self.same_cases(&trees, &taint.roots);
        self.same_verdicts_outside_cases(&outside, &blocked);
        self.same_maps(&taint.maps);
        FoldCounts {
            compared,
            tainted,
            marked,
            stuck: stuck.len(),
        }
    }

    /// What a forked author's events reach, on any node: tainted cases and map profiles.
    fn taint(&self) -> Taint {
        let mut taint = Taint::default();
        for &h in &self.honest {
            let store = self.store(h);
            for author in &self.forked {
                for e in log_of(store, author) {
                    taint.forked_ids.insert(e.id());
                    taint.roots.insert(e.id());
                    if let Some(r) = root(store, &e) {
                        taint.roots.insert(r);
                    }
                    if let Kind::MapChange { org } | Kind::MapSnapshot { org } = &e.header().kind {
                        taint.maps.insert(org.clone());
                    }
                }
            }
            // A store that cannot list its evidence adds no forked ids: the fold check then
            // compares more, and reports what differs.
            for (_, _, id) in store.equivocations().unwrap_or_default() {
                taint.forked_ids.insert(id);
            }
        }
        taint
    }

    /// The authors blocked from a sequence on (`blocked_from`) whose later events some honest
    /// node has not folded, named for the report.
    fn stuck_authors(&self, common: &[Event], blocked_from: &BTreeMap<Author, u64>) -> Vec<String> {
        blocked_from
            .iter()
            .filter(|(author, seq)| {
                // Only what is unfolded somewhere counts: an author that built on the branch all
                // honest nodes hold is not blocked anywhere.
                common.iter().any(|e| {
                    e.header().author == **author
                        && e.header().seq > **seq
                        && self
                            .honest
                            .iter()
                            .any(|n| self.store(*n).verdict(&e.id()).ok().flatten().is_none())
                })
            })
            .map(|(author, seq)| {
                let name = self
                    .world
                    .nodes
                    .iter()
                    .find(|n| n.engine.node_key() == *author)
                    .map_or_else(|| short(author), |n| n.name.clone());
                format!("{name} from seq {seq}")
            })
            .collect()
    }

    /// Compares every case tree no fork reaches between nodes that read the same events of
    /// it; returns how many were compared and how many were tainted.
    fn same_cases(
        &mut self,
        trees: &BTreeMap<EventId, Vec<EventId>>,
        tainted_roots: &BTreeSet<EventId>,
    ) -> (usize, usize) {
        let (mut compared, mut tainted) = (0, 0);
        for (root_id, events) in trees {
            if tainted_roots.contains(root_id) || events.iter().any(|e| tainted_roots.contains(e)) {
                tainted += 1;
                continue;
            }
            compared += 1;
            self.same_case(root_id, events);
        }
        (compared, tainted)
    }

    /// Nodes that read the same events of the case must agree on all of it.
    fn same_case(&mut self, root_id: &EventId, events: &[EventId]) {
        let mut groups: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for &n in &self.honest {
            let s = self.store(n);
            let signature: Vec<Option<bool>> = events
                .iter()
                .map(|id| s.verdict(id).ok().flatten().map(|v| v.readable))
                .collect();
            groups
                .entry(format!("{signature:?}"))
                .or_default()
                .push((n, snapshot(s, root_id, events)));
        }
        for members in groups.values() {
            let (n0, s0) = &members[0];
            for (n, s) in &members[1..] {
                if s != s0 {
                    self.violations.push((
                        "same_fold",
                        format!(
                            "case {}: {} and {} differ:\n{s0}\n---\n{s}",
                            root_id.short(),
                            self.names[*n0],
                            self.names[*n]
                        ),
                    ));
                }
            }
        }
    }

    /// Events outside cases (and not blocked by a fork) have the same verdict everywhere.
    fn same_verdicts_outside_cases(&mut self, outside: &[EventId], blocked: &BTreeSet<EventId>) {
        for id in outside.iter().filter(|id| !blocked.contains(id)) {
            let verdicts: Vec<_> = self
                .honest
                .iter()
                .map(|n| self.store(*n).verdict(id).ok().flatten())
                .collect();
            if verdicts.iter().any(|v| *v != verdicts[0]) {
                self.violations.push((
                    "same_fold",
                    format!("event {}: verdicts {verdicts:?}", id.short()),
                ));
            }
        }
    }

    /// The partner map: the same profile wherever no forked author touched it.
    fn same_maps(&mut self, tainted_maps: &BTreeSet<String>) {
        let mut orgs = BTreeSet::new();
        for &n in &self.honest {
            // A store that cannot list its profiles adds none here; another node's list
            // still brings the organisation in, and its missing document then differs.
            orgs.extend(self.store(n).map_orgs().unwrap_or_default());
        }
        for org in orgs.difference(tainted_maps) {
            let views: Vec<String> = self
                .honest
                .iter()
                .map(|n| {
                    let doc = self.store(*n).map_doc(org).ok().flatten();
                    match doc {
                        Some(mut doc) => {
                            let mut heads = doc.get_heads();
                            heads.sort();
                            format!("{:?} {heads:?}", crate::map::read(&doc))
                        }
                        None => "no document".into(),
                    }
                })
                .collect();
            if views.iter().any(|v| *v != views[0]) {
                self.violations.push((
                    "same_map",
                    format!("the profile of {org} differs between honest nodes"),
                ));
            }
        }
    }
}

/// Events built on a forked author's events are blocked — and so is everything their authors
/// wrote after them: the fold takes an author's chain in order, so where the branch an event
/// was built on never arrives, every later event of its author waits there too (and whatever
/// is built on those). This is reported when `strict_forks`. Returns the blocked events and,
/// per author, the first sequence blocked.
fn blocked_by_forks(
    common: &[Event],
    forked_ids: &BTreeSet<EventId>,
) -> (BTreeSet<EventId>, BTreeMap<Author, u64>) {
    let mut blocked: BTreeSet<EventId> = BTreeSet::new();
    let mut blocked_from: BTreeMap<Author, u64> = BTreeMap::new();
    loop {
        let before = blocked.len();
        for e in common {
            let h = e.header();
            let built_on = h
                .subject
                .iter()
                .chain(h.deps.iter())
                .any(|d| forked_ids.contains(d) || blocked.contains(d));
            let after_blocked = blocked_from.get(&h.author).is_some_and(|s| h.seq >= *s);
            if built_on || after_blocked {
                blocked.insert(e.id());
                let from = blocked_from.entry(h.author).or_insert(h.seq);
                *from = (*from).min(h.seq);
            }
        }
        if blocked.len() == before {
            break;
        }
    }
    (blocked, blocked_from)
}

/// A comparable snapshot of one case tree on one node: the records and every verdict.
fn snapshot(store: &Store, root: &EventId, events: &[EventId]) -> String {
    let case = store.case_record(root).ok().flatten();
    let mut referrals = Vec::new();
    let mut verdicts = Vec::new();
    for id in events {
        if let Ok(Some(r)) = store.referral_record(id) {
            referrals.push(r);
        }
        verdicts.push((id.short(), store.verdict(id).ok().flatten()));
    }
    format!("case {case:?}\nreferrals {referrals:?}\nverdicts {verdicts:?}")
}
