//! `passerelle bench --only scale --events N`: how a node's costs grow with its store. A node of
//! the referring organisation (`mas3`, holding its keys) receives a generated history through
//! the real receive path — signatures checked on all cores, then `Engine::receive` in chunks as
//! a sync cuts them — until it holds N events (1,000,000 by default, 200,000 with `--quick`).
//!
//! It prints a row per checkpoint (the first 100,000 events, then every million, or every fifth
//! of N below two million): the ingest rate of the events since the last checkpoint (the time
//! spent checking and receiving them; generating them is not counted), the store
//! file's bytes per event beside the encoded bytes per event, and the process's resident memory
//! (the engine runs in this process, as in the daemon). Then each figure at N beside the same
//! figure measured at 100,000 events in the same run: ingest rate, bytes on disk, memory,
//! start-up (opening the store and the engine, what `passerelle run` does before it serves),
//! the open referrals of the outbox and a page of it, a case's timeline, a page of the case list
//! and the report over the last month. Before each measure of the reads the reader sends a
//! hundred referrals itself, so its outbox holds some waiting among the closed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use passerelle_core::engine::{Engine, Which};
use passerelle_core::event::Event;
use passerelle_core::sim::{HistoryStream, Sim};
use passerelle_core::store::Store;
use time::OffsetDateTime;

use super::{Figure, report};
use crate::samples;

/// The first checkpoint, and the baseline of every figure.
const FIRST: u64 = 100_000;
/// Cases per pair in one generated chunk: 2 pairs × 5 events × 820 ≈ 8,200 events.
const CASES_PER_CHUNK: usize = 820;
/// Simulated time between two cases of a pair.
const STEP_MS: u64 = 10_000;
/// The reading node, of the referring organisation.
const READER: &str = "mas3";
/// Referrals the reader sends itself before each measure of the reads: the generated history
/// is all completed, and an outbox holds some waiting ones among the closed.
const OPEN_REFERRALS: usize = 100;
/// Rows of a page of the outbox and of the case list (what the web UI shows).
const PAGE: usize = passerelle_core::limits::REFERRAL_PAGE_ROWS;

/// What was measured at one checkpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    events: u64,
    /// Events per second since the previous checkpoint.
    rate: f64,
    file_bytes: u64,
    encoded_bytes: u64,
    rss_bytes: u64,
    startup: Duration,
    /// Every open referral of the outbox.
    outbox: Duration,
    /// The outbox page: the newest [`PAGE`], decrypted.
    outbox_page: Duration,
    timeline: Duration,
    /// The case list's page: the [`PAGE`] most recently active, decrypted.
    case_page: Duration,
    report: Duration,
}

struct Fill {
    sim: Sim,
    stream: HistoryStream,
    path: std::path::PathBuf,
    now: OffsetDateTime,
    held: u64,
    encoded_bytes: u64,
    a_case: Option<passerelle_core::event::EventId>,
    /// The store's page cache, MiB.
    cache_mib: usize,
}

pub fn run(
    dir: &Path,
    events: u64,
    cache_mib: usize,
    figures: &mut Vec<Figure>,
    json: bool,
) -> Result<()> {
    let events = events.max(FIRST * 2);
    let now = OffsetDateTime::now_utc();
    let mut fill = Fill::new(dir, events, cache_mib, now)?;
    let step = if events >= 2_000_000 {
        1_000_000
    } else {
        (events / 5).max(FIRST)
    };
    let mut engine = fill
        .sim
        .engine_with_cache(READER, &fill.path, true, cache_mib, now)?;
    if !json {
        eprintln!(
            "[scale] filling {READER}'s store to {events} events (events held | ingest rate since the last row | bytes on disk per event (encoded) | resident memory)"
        );
    }
    let mut points = Vec::new();
    let mut target = FIRST;
    loop {
        let before = fill.held;
        let (e, receiving) = fill.to(engine, target)?;
        engine = e;
        let rate = (fill.held - before) as f64 / receiving.as_secs_f64().max(1e-9);
        let first_or_last = points.is_empty() || fill.held >= events;
        let (e, point) = measure(&fill, engine, rate, first_or_last)?;
        engine = e;
        if !json {
            eprintln!(
                "[scale] {:>10} events | {:>9.0} events/s | {:>6.0} B ({:.0} B encoded, {:.2}×) | {:>5.0} MB",
                point.events,
                point.rate,
                point.file_bytes as f64 / point.events as f64,
                point.encoded_bytes as f64 / point.events as f64,
                point.file_bytes as f64 / point.encoded_bytes.max(1) as f64,
                point.rss_bytes as f64 / 1e6
            );
        }
        points.push(point);
        if fill.held >= events {
            break;
        }
        // The first checkpoint is 100,000; then the multiples of the step.
        target = ((target / step + 1) * step).min(events);
    }
    if !json {
        print_table_sizes(&engine, &fill.path)?;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    for figure in figures_of(first, last) {
        report(figures, figure, json);
    }
    Ok(())
}

impl Fill {
    /// A reader's store to fill at `dir`, and the history stream that fills it: cases of two
    /// pairs ending before `now`.
    fn new(dir: &Path, events: u64, cache_mib: usize, now: OffsetDateTime) -> Result<Self> {
        let sim = Sim::new(
            samples::MECHANISM,
            &["mas", "mdm"],
            &[
                ("mas1", "mas"),
                ("mas2", "mas"),
                ("mdm1", "mdm"),
                ("mdm2", "mdm"),
                (READER, "mas"),
            ],
            now,
        )?;
        // The history ends before now: cases every STEP_MS per pair (two pairs, five events a
        // case), back from the present, with room for the last chunk's overshoot and an hour.
        let cases_per_pair = events / 10 + CASES_PER_CHUNK as u64;
        let span_ms = cases_per_pair * STEP_MS + 3_600_000;
        let start = now - time::Duration::milliseconds(i64::try_from(span_ms).unwrap_or(i64::MAX));
        let stream = HistoryStream::new(
            &sim,
            &[("mas1", "mdm1"), ("mas2", "mdm2")],
            200,
            start,
            STEP_MS,
        )?;
        let path = dir.join("scale.redb");
        Ok(Fill {
            stream,
            path,
            now,
            held: 0,
            encoded_bytes: 0,
            a_case: None,
            sim,
            cache_mib,
        })
    }

    /// Receives generated events until the store holds at least `target`: the engine, and the
    /// time spent receiving (checking signatures and `Engine::receive`; generating is not
    /// counted).
    fn to(&mut self, mut engine: Engine, target: u64) -> Result<(Engine, Duration)> {
        let mut receiving = Duration::ZERO;
        while self.held < target {
            let generated = self.stream.next_cases(CASES_PER_CHUNK)?;
            // Fresh copies, nothing verified yet, as they arrive from the network.
            let mut batch = Vec::with_capacity(generated.len());
            for e in &generated {
                let bytes = e.encode();
                self.encoded_bytes += bytes.len() as u64;
                batch.push(Event::decode(&bytes)?);
            }
            drop(generated);
            if self.a_case.is_none() {
                self.a_case = batch.first().map(Event::id);
            }
            let started = Instant::now();
            Event::verify_all(&batch);
            let got = engine.receive(&batch, self.now)?;
            receiving += started.elapsed();
            anyhow::ensure!(
                got.admitted.len() == batch.len(),
                "the generated history was not all admitted ({} of {}; {} duplicates, {} held, first {:?}; {} refused, first {:?})",
                got.admitted.len(),
                batch.len(),
                got.duplicates,
                got.held.len(),
                got.held.first().map(|(_, h)| h),
                got.refused.len(),
                got.refused.first().map(|(_, r)| r.to_string()),
            );
            self.held += batch.len() as u64;
        }
        Ok((engine, receiving))
    }
}

/// The figures of one checkpoint; with `reads`, the start-up and the reads too.
fn measure(fill: &Fill, engine: Engine, rate: f64, reads: bool) -> Result<(Engine, Point)> {
    let mut point = Point {
        events: fill.held,
        rate,
        file_bytes: std::fs::metadata(&fill.path)?.len(),
        encoded_bytes: fill.encoded_bytes,
        rss_bytes: rss_bytes(),
        ..Point::default()
    };
    if !reads {
        return Ok((engine, point));
    }
    let mut engine = engine;
    send_open_referrals(&mut engine, fill.now)?;
    drop(engine);
    let node = fill.sim.node(READER)?;
    let started = Instant::now();
    let store = Store::open_with_cache(&fill.path, fill.cache_mib)?;
    let engine = Engine::open(store, node.secrets.clone(), &node.org)?;
    point.startup = started.elapsed();
    let now = OffsetDateTime::now_utc();
    let timed = |f: &dyn Fn() -> Result<usize>| -> Result<(Duration, usize)> {
        let started = Instant::now();
        let n = f()?;
        Ok((started.elapsed(), n))
    };
    let open;
    (point.outbox, open) = timed(&|| {
        Ok(engine
            .referrals(true, Which::Open, usize::MAX, false, now)?
            .len())
    })?;
    anyhow::ensure!(
        open % OPEN_REFERRALS == 0 && open > 0,
        "the open outbox holds the referrals sent (found {open})"
    );
    let page;
    (point.outbox_page, page) =
        timed(&|| Ok(engine.referrals(true, Which::All, PAGE, true, now)?.len()))?;
    anyhow::ensure!(page == PAGE, "a full page of the outbox");
    let case = fill.a_case.context("a case was generated")?;
    (point.timeline, _) = timed(&|| Ok(engine.case(&case, now)?.timeline.len()))?;
    let cases;
    (point.case_page, cases) = timed(&|| Ok(engine.cases(None, PAGE)?.len()))?;
    anyhow::ensure!(cases == PAGE, "a full page of the case list");
    let month = now - time::Duration::days(30);
    (point.report, _) = timed(&|| Ok(engine.report(month, now, now)?.referrals as usize))?;
    Ok((engine, point))
}

/// The reader opens [`OPEN_REFERRALS`] cases and refers each to the provider, through the
/// engine as a caseworker would: its outbox then holds that many waiting referrals.
fn send_open_referrals(engine: &mut Engine, now: OffsetDateTime) -> Result<()> {
    for _ in 0..OPEN_REFERRALS {
        let case = engine.open_case(
            passerelle_core::sim::generated_case("medenine"),
            "bench",
            now,
        )?;
        let request = passerelle_core::engine::ReferralRequest {
            case,
            to_org: "mdm".into(),
            category: "health".into(),
            urgency: passerelle_core::event::Urgency::Urgent,
            share: vec!["first_name".into()],
            note: String::new(),
            emergency_override: None,
        };
        engine.send_referral(request, "bench", now)?;
    }
    Ok(())
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    // A system without /proc has no figure to give: the row shows 0 MB.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A latency figure: its name, where a point keeps it, and its target in ms.
type Latency = (&'static str, fn(Point) -> Duration, f64);

fn figures_of(first: Point, last: Point) -> Vec<Figure> {
    let at = |p: Point| format!("at {} events", p.events);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let latency = |name: &str, of: fn(Point) -> Duration, target_ms: f64, target: &str| Figure {
        section: "scale".into(),
        name: format!("{name} {}", at(last)),
        unit: "ms".into(),
        value: ms(of(last)),
        baseline_name: format!("the same {}", at(first)),
        baseline: ms(of(first)),
        ratio: ms(of(last)) / ms(of(first)).max(1e-6),
        target: target.into(),
        met: Some(ms(of(last)) <= target_ms),
    };
    let per_event = |p: Point| p.file_bytes as f64 / p.events as f64;
    let encoded = last.encoded_bytes as f64 / last.events as f64;
    let mut figures = vec![
        Figure {
            section: "scale".into(),
            name: format!("ingest rate of the last events received, {}", at(last)),
            unit: "events/s".into(),
            value: last.rate,
            baseline_name: "the rate of the first 100,000".into(),
            baseline: first.rate,
            ratio: last.rate / first.rate.max(1e-9),
            target: "ratio ≥ 0.8".into(),
            met: Some(last.rate >= 0.8 * first.rate),
        },
        Figure {
            section: "scale".into(),
            name: format!("bytes on disk per event {}", at(last)),
            unit: "B".into(),
            value: per_event(last),
            baseline_name: "the encoded bytes per event".into(),
            baseline: encoded,
            ratio: per_event(last) / encoded.max(1e-9),
            target: "ratio ≤ 1.3".into(),
            met: Some(per_event(last) <= 1.3 * encoded),
        },
        Figure {
            section: "scale".into(),
            name: format!("resident memory of the process {}", at(last)),
            unit: "MB".into(),
            value: last.rss_bytes as f64 / 1e6,
            baseline_name: format!("the same {}", at(first)),
            baseline: first.rss_bytes as f64 / 1e6,
            ratio: last.rss_bytes as f64 / (first.rss_bytes as f64).max(1.0),
            target: "≤ 300 MB".into(),
            met: Some(last.rss_bytes <= 300_000_000),
        },
    ];
    let latencies: [Latency; 6] = [
        ("start-up (store and engine opened)", |p| p.startup, 2_000.0),
        (
            "the open referrals of the outbox (waiting among the closed)",
            |p| p.outbox,
            50.0,
        ),
        (
            "a page of the outbox (newest 200, decrypted)",
            |p| p.outbox_page,
            50.0,
        ),
        ("a case's timeline", |p| p.timeline, 50.0),
        (
            "a page of the case list (200 most recently active, decrypted)",
            |p| p.case_page,
            50.0,
        ),
        ("the report over the last month", |p| p.report, 2_000.0),
    ];
    figures.extend(latencies.into_iter().map(|(name, of, target_ms)| {
        let target = if target_ms >= 1_000.0 {
            format!("≤ {} s", target_ms / 1_000.0)
        } else {
            format!("≤ {target_ms} ms")
        };
        latency(name, of, target_ms, &target)
    }));
    figures
}

/// Where the file's bytes are: each table's rows, the bytes its leaves hold, the pages it takes
/// and the unused bytes in them (redb's accounting), then the file beside the pages in tables.
fn print_table_sizes(engine: &Engine, path: &Path) -> Result<()> {
    const PAGE_BYTES: u64 = 4096;
    let sizes = engine.store().table_sizes()?;
    eprintln!(
        "[scale] where the bytes are (table | rows | bytes stored | pages × 4 KiB | unused in those pages)"
    );
    let mb = |b: u64| b as f64 / 1e6;
    for t in sizes.iter().filter(|t| t.rows > 0) {
        eprintln!(
            "[scale]   {:<24} {:>10} | {:>9.1} MB | {:>9.1} MB | {:>8.1} MB",
            t.name,
            t.rows,
            mb(t.stored_bytes),
            mb(t.pages * PAGE_BYTES),
            mb(t.fragmented_bytes)
        );
    }
    let in_tables: u64 = sizes.iter().map(|t| t.pages * PAGE_BYTES).sum();
    let stored: u64 = sizes.iter().map(|t| t.stored_bytes).sum();
    eprintln!(
        "[scale]   file {:.1} MB; pages in tables {:.1} MB, holding {:.1} MB; the rest is free pages and redb's own",
        mb(std::fs::metadata(path)?.len()),
        mb(in_tables),
        mb(stored)
    );
    Ok(())
}
