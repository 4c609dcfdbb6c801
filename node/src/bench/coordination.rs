//! `passerelle bench`, the report figure: the coordination report over a generated mechanism
//! with 1,000,000 referral events (100,000 with `--quick`), read from the store's time index,
//! beside the time it takes only to read those index rows.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use passerelle_core::sim::Sim;
use time::OffsetDateTime;

use super::{Figure, report};
use crate::samples;

pub fn run(dir: &Path, quick: bool, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    let events_n = if quick { 100_000 } else { 1_000_000 };
    let now = OffsetDateTime::now_utc();
    let sim = Sim::new(
        samples::MECHANISM,
        &["mas", "mdm", "unicef"],
        &[
            ("mas1", "mas"),
            ("mas2", "mas"),
            ("mdm1", "mdm"),
            ("mdm2", "mdm"),
            ("coordinator", "unicef"),
        ],
        now,
    )?;
    // Five events per case (opening, referral, acknowledge, accept, complete): the referral
    // events are the four of them that concern a referral.
    let cases = events_n / 5 / 2;
    let history = sim.history_with(&[("mas1", "mdm1"), ("mas2", "mdm2")], cases, 200, true, now)?;
    let mut engine = sim.engine("coordinator", dir, false, now)?;
    for chunk in history.chunks(4_000) {
        engine.receive(chunk, now)?;
    }
    drop(history);
    let (from, to) = (
        now - time::Duration::days(31),
        now + time::Duration::hours(1),
    );
    let started = Instant::now();
    let built = engine.report(from, to, OffsetDateTime::now_utc())?;
    let ours = started.elapsed();
    anyhow::ensure!(
        built.referrals as usize == cases * 2,
        "the report counts every referral"
    );
    let started = Instant::now();
    let rows = engine.store().report_rows(
        u64::try_from(from.unix_timestamp() * 1000).unwrap_or(0),
        u64::try_from(to.unix_timestamp() * 1000).unwrap_or(0),
    )?;
    let read = started.elapsed();
    std::hint::black_box(rows);
    report(
        figures,
        Figure {
            section: "report".into(),
            name: format!(
                "coordination report over {} events ({} referrals)",
                cases * 10,
                built.referrals
            ),
            unit: "ms".into(),
            value: ours.as_secs_f64() * 1e3,
            baseline_name: "reading the same rows of the time index alone".into(),
            baseline: read.as_secs_f64() * 1e3,
            ratio: ours.as_secs_f64() / read.as_secs_f64().max(1e-9),
            target: "≤ 2 s".into(),
            met: Some(ours.as_secs_f64() <= 2.0),
        },
        json,
    );
    Ok(())
}
