//! `passerelle bench`, the network figures: catch-up of a node that missed many events (beside a
//! local bundle import of the same events), idle sync rounds (beside the size of the version
//! vector they avoid sending), and propagation latency on a connected pair (beside a raw
//! loopback TCP round trip). Real daemons run in this process, on loopback.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use passerelle_core::bundle;
use passerelle_core::event::{Event, Kind};
use passerelle_core::round::run_round;
use passerelle_core::sim::{EventWriter, Sim};
use passerelle_core::sync::{self, Response};
use time::OffsetDateTime;

use super::{Figure, report};
use crate::datadir::DataDir;
use crate::local_daemon::LocalDaemon;
use crate::rpc::case::CaseOpened;
use crate::rpc::{Request, StatusAnswer};
use crate::samples;

/// Sizes of the network figures.
#[derive(Debug, Clone, Copy)]
pub struct NetSizes {
    pub catch_up_events: usize,
    pub latency_samples: usize,
}

impl NetSizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                catch_up_events: 10_000,
                latency_samples: 60,
            }
        } else {
            Self {
                catch_up_events: 100_000,
                latency_samples: 300,
            }
        }
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub fn run(dir: &Path, quick: bool, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    let sizes = NetSizes::new(quick);
    idle_rounds(dir, figures, json)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(catch_up_and_latency(dir, sizes, figures, json))
}

/// Idle rounds between up-to-date nodes with 50 and 500 authors.
fn idle_rounds(dir: &Path, figures: &mut Vec<Figure>, json: bool) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let names: Vec<String> = (0..500).map(|i| format!("crt{i}")).collect();
    let mut nodes: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "crt")).collect();
    nodes.push(("left", "mas"));
    nodes.push(("right", "mas"));
    let sim = Sim::new(samples::MECHANISM, &["crt", "mas"], &nodes, now)?;
    let m = sim.mechanism()?;
    let mut events: Vec<Event> = Vec::new();
    for name in &names {
        let mut f = EventWriter::new(sim.node(name)?, sim.mechanism_id(), 1, now);
        events.push(f.next(
            &m,
            Kind::MapChange { org: "crt".into() },
            None,
            vec![],
            &[],
            b"p",
        )?);
    }
    for authors in [50usize, 500] {
        let sub = dir.join(format!("idle-{authors}"));
        std::fs::create_dir_all(&sub)?;
        let mut left = sim.engine("left", &sub, false, now)?;
        let mut right = sim.engine("right", &sub, false, now)?;
        left.receive(&events[..authors], now)?;
        right.receive(&events[..authors], now)?;
        let (round, sent, received) = run_round(&mut left, &mut right, now)?;
        anyhow::ensure!(round == Default::default(), "the idle round moved events");
        let vector = sync::encode(&Response::Vector {
            config_version: 1,
            vector: left.version_vector()?,
        })?
        .len();
        report(
            figures,
            Figure {
                section: "sync".into(),
                name: format!(
                    "idle round, {authors} authors: bytes sent / received (1 round trip)"
                ),
                unit: "bytes".into(),
                value: (sent.max(received)) as f64,
                baseline_name: format!("the version vector it avoids sending ({vector} bytes)"),
                baseline: vector as f64,
                ratio: vector as f64 / sent.max(received).max(1) as f64,
                target: format!("≤ 256 bytes each way (sent {sent}, received {received})"),
                met: Some(sent <= 256 && received <= 256),
            },
            json,
        );
    }
    Ok(())
}

async fn catch_up_and_latency(
    dir: &Path,
    sizes: NetSizes,
    figures: &mut Vec<Figure>,
    json: bool,
) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let sim = Sim::new(
        samples::MECHANISM,
        &["mas", "mdm", "unicef"],
        &[
            ("mas1", "mas"),
            ("mas2", "mas"),
            ("mdm1", "mdm"),
            ("mdm2", "mdm"),
            ("hub", "mas"),
            ("late", "unicef"),
            ("bundled", "unicef"),
        ],
        now,
    )?;
    let cases = sizes.catch_up_events / 5 / 2;
    let history = sim.history(&[("mas1", "mdm1"), ("mas2", "mdm2")], cases, 1_200, now)?;
    let event_bytes: usize = history.iter().map(|e| e.encode().len()).sum();

    let (hub_dir, bundle_time) = hub_and_bundle(dir, &sim, &history, now)?;

    // The late node catches up over libp2p.
    let late_dir = DataDir {
        root: dir.join("late"),
    };
    let late = sim.node("late")?;
    late_dir.materialize(&late.secrets, &late.org, "late")?;
    drop(sim.engine_at("late", &late_dir.store_path(), true, now)?);
    let hub_daemon = LocalDaemon::start(hub_dir, vec![]).await?;
    let started = Instant::now();
    let late_daemon = LocalDaemon::start(late_dir, vec![hub_daemon.addr.clone()]).await?;
    let total = history.len() as u64;
    let status = loop {
        let status: StatusAnswer = late_daemon.call(Request::Status).await?;
        if status.events >= total {
            break status;
        }
        if started.elapsed() > Duration::from_secs(3_600) {
            bail!("the late node did not catch up within an hour");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let net_time = started.elapsed();
    // Let the round's last bytes be counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = late_daemon
        .call::<StatusAnswer>(Request::Status)
        .await
        .unwrap_or(status);
    let wire = status.network.sync_bytes_sent + status.network.sync_bytes_received;
    let catch_up = CatchUp {
        total,
        wire,
        event_bytes,
        net_time,
        bundle_time,
    };
    report_catch_up(figures, &catch_up, json);
    latency(
        &hub_daemon,
        &late_daemon,
        total,
        sizes.latency_samples,
        figures,
        json,
    )
    .await?;
    late_daemon.stop().await?;
    hub_daemon.stop().await?;
    Ok(())
}

/// What the catch-up measured.
#[derive(Clone, Copy)]
struct CatchUp {
    /// Events the late node lacked.
    total: u64,
    /// Sync bytes sent and received.
    wire: u64,
    /// The bytes of the events themselves.
    event_bytes: usize,
    net_time: Duration,
    bundle_time: Duration,
}

fn report_catch_up(figures: &mut Vec<Figure>, c: &CatchUp, json: bool) {
    let CatchUp {
        total,
        wire,
        event_bytes,
        net_time,
        bundle_time,
    } = *c;
    report(
        figures,
        Figure {
            section: "sync".into(),
            name: format!("catch-up of a node that missed {total} events: bytes on the wire"),
            unit: "bytes".into(),
            value: wire as f64,
            baseline_name: "the bytes of the events themselves".into(),
            baseline: event_bytes as f64,
            ratio: wire as f64 / event_bytes as f64,
            target: "ratio ≤ 1.05".into(),
            met: Some((wire as f64) <= 1.05 * event_bytes as f64),
        },
        json,
    );
    report(
        figures,
        Figure {
            section: "sync".into(),
            name: format!("catch-up of {total} events over libp2p on loopback: time"),
            unit: "s".into(),
            value: net_time.as_secs_f64(),
            baseline_name: "a local bundle import of the same events".into(),
            baseline: bundle_time.as_secs_f64(),
            ratio: net_time.as_secs_f64() / bundle_time.as_secs_f64().max(1e-9),
            target: "ratio ≤ 1.25".into(),
            met: Some(net_time.as_secs_f64() <= 1.25 * bundle_time.as_secs_f64()),
        },
        json,
    );
}

/// The hub, which holds every event of the history, and the baseline: how long a fresh node
/// takes to import the same events from a bundle.
fn hub_and_bundle(
    dir: &Path,
    sim: &Sim,
    history: &[Event],
    now: OffsetDateTime,
) -> Result<(DataDir, Duration)> {
    // The hub holds everything.
    let hub_dir = DataDir {
        root: dir.join("hub"),
    };
    let hub = sim.node("hub")?;
    hub_dir.materialize(&hub.secrets, &hub.org, "hub")?;
    {
        // The hub holds no organisation key: it stores everything as ciphertext, as the late
        // node and the bundle's importer do, so all three do the same work per event.
        let mut engine = sim.engine_at("hub", &hub_dir.store_path(), false, now)?;
        for chunk in history.chunks(2_000) {
            engine.receive(chunk, now)?;
        }
        // Baseline: a bundle of the same events, imported by a fresh node.
        let bundled = sim.node("bundled")?;
        let file = dir.join("catch-up.bundle");
        let out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        bundle::export(
            &engine,
            None,
            &[bundled.secrets.age.to_public()],
            out,
            now,
            &mut |_, _| {},
        )?;
    }
    let bundled = sim.node("bundled")?;
    let mut fresh = sim.engine_at("bundled", &dir.join("bundled.redb"), true, now)?;
    let started = Instant::now();
    let input = std::io::BufReader::new(std::fs::File::open(dir.join("catch-up.bundle"))?);
    let imported = bundle::import(&mut fresh, &bundled.secrets.age, input, now, &mut |_, _| {})?;
    let bundle_time = started.elapsed();
    anyhow::ensure!(
        imported.admitted as usize == history.len(),
        "the bundle import fell short"
    );
    drop(fresh);
    Ok((hub_dir, bundle_time))
}

/// Propagation latency: a case opened at the hub (a node of mas, which may open cases), until it
/// is stored at the late node, which holds `held` events before; `count` samples.
async fn latency(
    hub_daemon: &LocalDaemon,
    late_daemon: &LocalDaemon,
    held: u64,
    count: usize,
    figures: &mut Vec<Figure>,
    json: bool,
) -> Result<()> {
    let case = Request::CaseOpen {
        data: Box::new(samples::latency_case()),
    };
    let mut samples = Vec::with_capacity(count);
    let mut have = held;
    for _ in 0..count {
        let started = Instant::now();
        hub_daemon.call::<CaseOpened>(case.clone()).await?;
        have += 1;
        loop {
            let status: StatusAnswer = late_daemon.call(Request::Status).await?;
            if status.events >= have {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("an event did not propagate within 30 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(started.elapsed());
    }
    let (p50, p99) = (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    );
    let (raw50, raw99) = tokio::task::spawn_blocking(move || raw_tcp(1_000)).await??;
    report(
        figures,
        Figure {
            section: "sync".into(),
            name: format!(
                "propagation append-to-stored on a connected pair, p50 {p50:.1} ms / p99 (shown) [includes the hub's durable append and the API call]"
            ),
            unit: "ms".into(),
            value: p99,
            baseline_name: format!("raw loopback TCP round trip of 2 KiB, p50 {raw50:.3} / p99"),
            baseline: raw99,
            ratio: p99 / raw99.max(1e-9),
            target: "p99 ≤ 50 ms".into(),
            met: Some(p99 <= 50.0),
        },
        json,
    );
    Ok(())
}

/// Raw loopback TCP round trips of a 2 KiB message: (p50, p99) in ms.
pub fn raw_tcp(samples: usize) -> Result<(f64, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; 2048];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf[..8])?;
        }
    });
    let mut client = std::net::TcpStream::connect(addr).context("loopback TCP")?;
    client.set_nodelay(true)?;
    let msg = vec![7u8; 2048];
    let mut reply = [0u8; 8];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        client.write_all(&msg)?;
        client.read_exact(&mut reply)?;
        times.push(started.elapsed());
    }
    drop(client);
    match server.join() {
        Ok(served) => served.context("the loopback echo server")?,
        Err(_) => bail!("the loopback echo server panicked"),
    }
    Ok((percentile(&mut times, 0.5), percentile(&mut times, 0.99)))
}
