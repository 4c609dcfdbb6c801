//! `passerelle bench`, the retention figures (issue 12): the time to erase a case holding 50
//! events — the erasure appended and every body dropped, in one durable transaction — beside one
//! plain append; and what purging 10,000 cases past their retention frees in a store (after a
//! compaction), beside the bytes their bodies held.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use passerelle_core::event::{CaseAction, EraseReason};
use passerelle_core::sim::Sim;
use time::OffsetDateTime;

use super::{Figure, report};
use crate::samples;

/// Events in the case the erasure figure erases (its opening and 49 notes).
const EVENTS_PER_CASE: usize = 50;

pub fn run(dir: &Path, quick: bool, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    erase_figure(dir, quick, figures, json)?;
    purge_figure(dir, quick, figures, json)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn erase_figure(dir: &Path, quick: bool, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let sim = Sim::new(
        samples::MECHANISM,
        &["mas", "mdm"],
        &[("mas1", "mas"), ("mdm1", "mdm")],
        now,
    )?;
    let mut engine = sim.engine("mas1", dir, true, now)?;
    let rounds = if quick { 3 } else { 7 };
    let (mut appends, mut erasures) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let case = engine.open_case(samples::bench_case(), "bench", now)?;
        for i in 1..EVENTS_PER_CASE {
            let started = Instant::now();
            engine.case_action(
                case,
                CaseAction::Note,
                &format!("visit {i}"),
                None,
                "bench",
                now,
            )?;
            appends.push(started.elapsed());
        }
        let started = Instant::now();
        engine.erase_case(case, EraseReason::PersonAsked, "bench", now)?;
        erasures.push(started.elapsed());
    }
    let (append, erase) = (median(appends), median(erasures));
    report(
        figures,
        Figure {
            section: "retention".into(),
            name: format!(
                "erase a case of {EVENTS_PER_CASE} events (the erasure appended, every body dropped, one durable commit), median"
            ),
            unit: "ms".into(),
            value: erase.as_secs_f64() * 1e3,
            baseline_name: "one case note appended, median".into(),
            baseline: append.as_secs_f64() * 1e3,
            ratio: erase.as_secs_f64() / append.as_secs_f64().max(1e-9),
            target: "(no target; measured)".into(),
            met: None,
        },
        json,
    );
    Ok(())
}

fn purge_figure(dir: &Path, quick: bool, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    let cases = if quick { 2_000 } else { 10_000 };
    let now = OffsetDateTime::now_utc();
    // Open cases are purged after a day without activity in this mechanism.
    let mechanism = samples::MECHANISM.replacen(
        "retention_days = 1825",
        "retention_days = 1825\nopen_case_inactive_days = 1",
        1,
    );
    let sim = Sim::new(
        &mechanism,
        &["mas", "mdm", "unicef"],
        &[("mas1", "mas"), ("mdm1", "mdm"), ("coordinator", "unicef")],
        now,
    )?;
    let history = sim.history(&[("mas1", "mdm1")], cases, 200, now)?;
    let body_bytes: usize = history
        .iter()
        .filter_map(|e| e.body())
        .map(<[u8]>::len)
        .sum();
    let path = dir.join("purge.redb");
    let mut engine = sim.engine_at("coordinator", &path, false, now)?;
    for chunk in history.chunks(4_000) {
        engine.receive(chunk, now)?;
    }
    drop(history);
    drop(engine);
    let mut store = passerelle_core::store::Store::open(&path)?;
    while store.compact()? {}
    drop(store);
    let size =
        |p: &Path| -> Result<u64> { Ok(std::fs::metadata(p).context("the store's size")?.len()) };
    let before = size(&path)?;
    let mut engine = sim.engine_at("coordinator", &path, false, now)?;
    let started = Instant::now();
    let purged = engine.purge_due(now + time::Duration::days(2))?;
    let took = started.elapsed();
    anyhow::ensure!(purged.len() == cases, "every case is past its retention");
    drop(engine);
    let purged_size = size(&path)?;
    let mut store = passerelle_core::store::Store::open(&path)?;
    while store.compact()? {}
    let mut bodies_left = 0;
    for (author, _, _) in store.heads()? {
        let log = store.log_range(&author, 1, usize::MAX)?;
        bodies_left += log.iter().filter(|e| e.body().is_some()).count();
    }
    anyhow::ensure!(bodies_left == 0, "{bodies_left} bodies survived the purge");
    drop(store);
    let after = size(&path)?;
    let freed = before.saturating_sub(after);
    report(
        figures,
        Figure {
            section: "retention".into(),
            name: format!(
                "bytes freed by purging {cases} cases past retention (store {:.1} MB, {:.1} MB after the purge, {:.1} MB compacted; the purge took {:.0} ms)",
                before as f64 / 1e6,
                purged_size as f64 / 1e6,
                after as f64 / 1e6,
                took.as_secs_f64() * 1e3
            ),
            unit: "bytes".into(),
            value: freed as f64,
            baseline_name: "the bytes those cases' bodies held".into(),
            baseline: body_bytes as f64,
            ratio: freed as f64 / (body_bytes as f64).max(1.0),
            target: "(no target; measured)".into(),
            met: None,
        },
        json,
    );
    Ok(())
}
