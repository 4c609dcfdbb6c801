//! `passerelle bench`, the partner-map figures: a map of 300 organisations × 20 services —
//! load time (beside Automerge's own load of the same documents), search latency (beside a bare
//! scan of the same services), the HSDS API's pages over a running daemon (beside that search:
//! `hsds.rs`), and the bytes our sync needs to bring a fresh node up to date
//! (beside Automerge's own sync protocol on the same documents).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use automerge::sync::SyncDoc;
use passerelle_core::config::{Mechanism, Names};
use passerelle_core::engine::Engine;
use passerelle_core::event::{Event, Kind};
use passerelle_core::map::{self, Capacity, Profile, Service};
use passerelle_core::round::run_round;
use passerelle_core::sim::{EventWriter, Sim};
use time::OffsetDateTime;

use super::{Figure, report};
use crate::samples;

const CATEGORIES: [&str; 8] = [
    "shelter",
    "food",
    "health",
    "mental_health",
    "education",
    "legal",
    "administrative",
    "child_protection",
];
const SITES: [&str; 4] = ["medenine", "zarzis", "tunis", "sfax"];
const LANGS: [&str; 4] = ["fr", "ar", "en", "bm"];

fn names(s: &str) -> Names {
    Names {
        fr: format!("{s} (fr)"),
        en: s.to_string(),
        ar: Some(format!("{s} (ar)")),
    }
}

/// A synthetic profile of 20 services.
fn profile(org: &str, i: usize) -> Profile {
    let services = (0..20)
        .map(|j| {
            let k = i * 20 + j;
            let mut hours = BTreeMap::new();
            for d in ["mon", "tue", "wed", "thu", "fri"] {
                hours.insert(d.to_string(), "08:00-12:00,13:00-17:00".to_string());
            }
            Service {
                id: format!("s{j}"),
                category: CATEGORIES[k % CATEGORIES.len()].into(),
                site: SITES[k % SITES.len()].into(),
                name: names(&format!("Service {j} of {org}")),
                description: Some(names(
                    "A service described in a sentence or two for the directory.",
                )),
                eligibility: Some("Any person referred by a member.".into()),
                languages: vec![LANGS[k % 4].into(), LANGS[(k + 1) % 4].into()],
                address: Some(format!("{k} rue de l'exemple")),
                latitude: Some(33.35),
                longitude: Some(10.5),
                postal_code: None,
                confidential: false,
                case_types: Vec::new(),
                capacity: [Capacity::Available, Capacity::Limited, Capacity::Full][k % 3],
                verified: "2026-11-01".into(),
                hours,
                contact: Some(map::Contact {
                    phone: Some(format!("+216 00 {k:06}")),
                    email: Some(format!("{org}@example.org")),
                    focal_point: Some("A. B.".into()),
                }),
            }
        })
        .collect();
    Profile {
        org: org.into(),
        description: names("An organisation of the benchmark"),
        focal_points: vec![],
        services,
    }
}

/// The `p` quantile of `samples`, in milliseconds.
pub(super) fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub fn run(dir: &Path, quick: bool, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    let orgs_n = if quick { 60 } else { 300 };
    let now = OffsetDateTime::now_utc();
    let (sim, ids, node_names) = mechanism_with_orgs(orgs_n, now)?;
    let m = sim.mechanism()?;
    let (events, saved) = published_profiles(&sim, &m, &ids, &node_names, now)?;
    let mut hub = sim.engine("hub", dir, false, now)?;
    hub.receive(&events, now)?;
    // Load time: a new engine builds the directory from its store.
    drop(hub);
    let (hub, directory, figure) = load_figure(dir, &sim, &saved, orgs_n)?;
    report(figures, figure, json);
    let search = search_figure(&directory, &m, now);
    let search_p99 = search.value;
    report(figures, search, json);
    let services = directory.values().map(|p| p.services.len()).sum();
    let figure = super::hsds::figure(dir, &sim, &events, services, search_p99)?;
    report(figures, figure, json);
    // Bytes to bring a fresh node up to date: our sync (snapshots, pruned changes) beside
    // Automerge's own sync protocol for the same documents.
    let figure = fresh_node_figure(dir, &sim, hub, &saved, orgs_n, now)?;
    report(figures, figure, json);
    deep_document(dir, &sim, &node_names[0], &ids[0], quick, figures, json)?;
    Ok(())
}

/// A mechanism of the sample's sites and taxonomy with `orgs_n` extra organisations, one node
/// each, and three nodes of `mas` (the hub, a fresh node, the deep document's reader): the
/// mechanism, the extra organisations' ids and their nodes' names.
fn mechanism_with_orgs(
    orgs_n: usize,
    now: OffsetDateTime,
) -> Result<(Sim, Vec<String>, Vec<String>)> {
    let mut text = samples::MECHANISM.to_string();
    let ids: Vec<String> = (0..orgs_n).map(|i| format!("org{i}")).collect();
    for id in &ids {
        text.push_str(&format!(
            "\n[[organisations]]\nid = \"{id}\"\nname = \"Organisation {id}\"\nkind = \"national_ngo\"\nroles = [\"provide_services\"]\n"
        ));
    }
    let node_names: Vec<String> = ids.iter().map(|i| format!("{i}n")).collect();
    let mut nodes: Vec<(&str, &str)> = node_names
        .iter()
        .zip(&ids)
        .map(|(n, o)| (n.as_str(), o.as_str()))
        .collect();
    nodes.push(("hub", "mas"));
    nodes.push(("fresh", "mas"));
    nodes.push(("deep", "mas"));
    nodes.push(("web", "mas"));
    let mut orgs: Vec<&str> = ids.iter().map(String::as_str).collect();
    orgs.push("mas");
    let sim = Sim::new(&text, &orgs, &nodes, now)?;
    Ok((sim, ids, node_names))
}

/// Each organisation's node imports its profile, then publishes a snapshot: the events, and
/// each snapshot's bytes.
fn published_profiles(
    sim: &Sim,
    m: &Mechanism,
    ids: &[String],
    node_names: &[String],
    now: OffsetDateTime,
) -> Result<(Vec<Event>, Vec<Vec<u8>>)> {
    let mut events: Vec<Event> = Vec::new();
    let mut saved: Vec<Vec<u8>> = Vec::new();
    for (i, (node, org)) in node_names.iter().zip(ids).enumerate() {
        let sim_node = sim.node(node)?;
        let mut doc = automerge::AutoCommit::new();
        doc.set_actor(automerge::ActorId::from(sim_node.key().to_vec()));
        // A fresh document always differs from the profile, so there is a change; were there
        // none, the event would carry an empty one.
        let change = map::import(&mut doc, &profile(org, i))?.unwrap_or_default();
        let mut forger = EventWriter::new(sim_node, sim.mechanism_id(), 1, now);
        let first = forger.next(
            m,
            Kind::MapChange { org: org.clone() },
            None,
            vec![],
            &[],
            &change,
        )?;
        let snapshot = doc.save();
        let second = forger.next(
            m,
            Kind::MapSnapshot { org: org.clone() },
            None,
            vec![], // its dependency is the author's previous event: the chain names it
            &[],
            &snapshot,
        )?;
        events.push(first);
        events.push(second);
        saved.push(snapshot);
    }
    Ok((events, saved))
}

/// The partner map as an engine holds it: every organisation's profile.
type Directory = Arc<BTreeMap<String, Profile>>;

/// How long a new engine takes to build the directory from its store, beside Automerge's own
/// load of the same documents; returns the hub's engine and directory for the next figures.
fn load_figure(
    dir: &Path,
    sim: &Sim,
    saved: &[Vec<u8>],
    orgs_n: usize,
) -> Result<(Engine, Directory, Figure)> {
    let started = Instant::now();
    let hub_store = passerelle_core::store::Store::open(&dir.join("hub.redb"))?;
    let hub =
        passerelle_core::engine::Engine::open(hub_store, sim.node("hub")?.secrets.clone(), "mas")?;
    let directory = hub.directory()?;
    let load = started.elapsed();
    anyhow::ensure!(
        directory.len() == orgs_n,
        "the directory holds every organisation"
    );
    let started = Instant::now();
    for bytes in saved {
        let doc = automerge::AutoCommit::load(bytes)?;
        std::hint::black_box(doc);
    }
    let raw_load = started.elapsed();
    let figure = Figure {
        section: "map".into(),
        name: format!(
            "load the directory of {orgs_n} organisations × 20 services (open store, load documents, read profiles)"
        ),
        unit: "ms".into(),
        value: load.as_secs_f64() * 1e3,
        baseline_name: "Automerge's own load of the same documents".into(),
        baseline: raw_load.as_secs_f64() * 1e3,
        ratio: load.as_secs_f64() / raw_load.as_secs_f64().max(1e-9),
        target: "(no target; measured)".into(),
        met: None,
    };
    Ok((hub, directory, figure))
}

/// Search latency over the directory, beside a bare filter over the same services.
fn search_figure(
    directory: &BTreeMap<String, Profile>,
    m: &Mechanism,
    now: OffsetDateTime,
) -> Figure {
    let flat: Vec<&Service> = directory.values().flat_map(|p| &p.services).collect();
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for q in 0..500 {
        let query = map::Query {
            category: Some(CATEGORIES[q % CATEGORIES.len()].into()),
            site: (q % 3 != 0).then(|| SITES[q % SITES.len()].into()),
            language: (q % 2 == 0).then(|| LANGS[q % LANGS.len()].into()),
            open_now: q % 5 == 0,
            ..map::Query::default()
        };
        let started = Instant::now();
        let found = map::search(directory, m, &query, now);
        ours.push(started.elapsed());
        std::hint::black_box(found);
        let started = Instant::now();
        let found: Vec<&&Service> = flat
            .iter()
            .filter(|s| {
                Some(&s.category) == query.category.as_ref()
                    && query.site.as_ref().is_none_or(|x| x == &s.site)
                    && query
                        .language
                        .as_ref()
                        .is_none_or(|l| s.languages.contains(l))
            })
            .collect();
        bare.push(started.elapsed());
        std::hint::black_box(found);
    }
    let (p50, p99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    let bare99 = percentile(&mut bare, 0.99);
    Figure {
        section: "map".into(),
        name: format!(
            "directory search over {} services, p50 {p50:.2} ms / p99 (shown)",
            flat.len()
        ),
        unit: "ms".into(),
        value: p99,
        baseline_name: "a bare filter over the same services (no ranking, no open-now), p99".into(),
        baseline: bare99,
        ratio: p99 / bare99.max(1e-9),
        target: "p99 ≤ 5 ms".into(),
        met: Some(p99 <= 5.0),
    }
}

/// The bytes a fresh node's round with the hub moves, beside Automerge's own sync protocol on
/// the same documents.
fn fresh_node_figure(
    dir: &Path,
    sim: &Sim,
    mut hub: Engine,
    saved: &[Vec<u8>],
    orgs_n: usize,
    now: OffsetDateTime,
) -> Result<Figure> {
    let mut fresh = sim.engine("fresh", dir, false, now)?;
    let (_, sent, received) = run_round(&mut fresh, &mut hub, now)?;
    anyhow::ensure!(
        fresh.directory()?.len() == orgs_n,
        "the fresh node caught up"
    );
    let ours_bytes = sent + received;
    let automerge_bytes = automerge_sync_bytes(saved)?;
    Ok(Figure {
        section: "map".into(),
        name: format!(
            "bytes to bring a fresh node up to date on {orgs_n} profiles (snapshots; signed events, both ways)"
        ),
        unit: "bytes".into(),
        value: ours_bytes as f64,
        baseline_name: "Automerge's own sync protocol on the same documents".into(),
        baseline: automerge_bytes as f64,
        ratio: ours_bytes as f64 / automerge_bytes.max(1) as f64,
        target: "ratio ≤ 1.1".into(),
        met: Some((ours_bytes as f64) <= 1.1 * automerge_bytes as f64),
    })
}

/// The bytes Automerge's own sync protocol moves to bring an empty document level with each of
/// `saved`.
fn automerge_sync_bytes(saved: &[Vec<u8>]) -> Result<usize> {
    let mut automerge_bytes = 0usize;
    for bytes in saved {
        let mut full = automerge::AutoCommit::load(bytes)?;
        let mut empty = automerge::AutoCommit::new();
        let (mut a, mut b) = (automerge::sync::State::new(), automerge::sync::State::new());
        loop {
            let mut moved = false;
            if let Some(msg) = full.sync().generate_sync_message(&mut a) {
                automerge_bytes += msg.clone().encode().len();
                empty.sync().receive_sync_message(&mut b, msg)?;
                moved = true;
            }
            if let Some(msg) = empty.sync().generate_sync_message(&mut b) {
                automerge_bytes += msg.clone().encode().len();
                full.sync().receive_sync_message(&mut a, msg)?;
                moved = true;
            }
            if !moved {
                break;
            }
        }
    }
    Ok(automerge_bytes)
}

/// The cost of one more change to a profile whose document holds thousands of changes, beside
/// the cost of one change to a fresh profile, both through the real path (admission, fold,
/// durable commit). Before documents were kept loaded and appended to, each change loaded and
/// saved the whole document: 8 ms on a fresh profile, 421 ms at 7.4 MiB.
fn deep_document(
    dir: &Path,
    sim: &Sim,
    node: &str,
    org: &str,
    quick: bool,
    figures: &mut Vec<Figure>,
    json: bool,
) -> Result<()> {
    let depth = if quick { 1_000 } else { 5_000 };
    const TIMED: usize = 20;
    let now = OffsetDateTime::now_utc();
    let m = sim.mechanism()?;
    let author = sim.node(node)?;
    let mut doc = automerge::AutoCommit::new();
    doc.set_actor(automerge::ActorId::from(author.key().to_vec()));
    let mut forger = EventWriter::new(author, sim.mechanism_id(), 1, now);
    let mut events = Vec::new();
    let mut current = profile(org, 0);
    let mut change = map::import(&mut doc, &current)?;
    let mut k = 0usize;
    while events.len() < depth + 2 * TIMED {
        if let Some(body) = change.take() {
            events.push(forger.next(
                &m,
                Kind::MapChange { org: org.into() },
                None,
                vec![],
                &[],
                &body,
            )?);
        }
        // Each change rewrites one service's description: the document grows with every one.
        // (A reference number in each revision keeps the text from compressing away.)
        k += 1;
        let reference: String = (0..8)
            .map(|i| {
                format!(
                    "{:016x}",
                    (k as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .rotate_left(i * 8)
                )
            })
            .collect();
        current.services[k % 20].description = Some(names(&format!(
            "Revision {k} ({reference}) of this service's description, as a coordinator would rewrite it after a meeting."
        )));
        change = map::import(&mut doc, &current)?;
    }
    let saved_bytes = doc.save().len();
    let mut engine = sim.engine("deep", dir, false, now)?;
    let timed = |engine: &mut passerelle_core::engine::Engine, batch: &[Event]| -> Result<f64> {
        let started = Instant::now();
        for event in batch {
            let report = engine.receive(std::slice::from_ref(event), now)?;
            anyhow::ensure!(report.admitted.len() == 1, "a change was not admitted");
        }
        Ok(started.elapsed().as_secs_f64() * 1e3 / batch.len() as f64)
    };
    let early = timed(&mut engine, &events[..TIMED])?;
    for chunk in events[TIMED..TIMED + depth].chunks(1_000) {
        engine.receive(chunk, now)?;
    }
    let deep = timed(&mut engine, &events[TIMED + depth..])?;
    report(
        figures,
        Figure {
            section: "map".into(),
            name: format!(
                "one change to a profile holding {depth} changes ({} KiB saved), admitted, folded and committed",
                saved_bytes / 1024
            ),
            unit: "ms".into(),
            value: deep,
            baseline_name: "one change to a fresh profile, the same way".into(),
            baseline: early,
            ratio: deep / early.max(1e-9),
            target: "ratio ≤ 2 (the cost does not grow with the document)".into(),
            met: Some(deep <= 2.0 * early),
        },
        json,
    );
    Ok(())
}
