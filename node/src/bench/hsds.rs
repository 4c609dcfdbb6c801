//! `passerelle bench`, the HSDS API figure: `/hsds/services?per_page=50` over the real HTTP
//! path of a running daemon that holds the 300-organisation map, beside the directory search
//! it is built on (measured in the same run).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use passerelle_core::event::Event;
use passerelle_core::sim::Sim;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Figure;
use super::map::percentile;
use crate::datadir::DataDir;
use crate::local_daemon::LocalDaemon;

/// Requests timed (after one that builds the compiled directory).
const REQUESTS: usize = 300;

/// One GET on a kept-alive connection: the status and the body's length.
async fn get(stream: &mut tokio::net::TcpStream, host: &str, path: &str) -> Result<(u16, usize)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let (head_end, length) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the daemon closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .context("a response without content-length")?;
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the daemon closed the connection mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0);
    Ok((status, length))
}

/// Starts a daemon (node `web`) holding `events`, and times pages of `/hsds/services`.
pub fn figure(
    dir: &Path,
    sim: &Sim,
    events: &[Event],
    services: usize,
    search_p99_ms: f64,
) -> Result<Figure> {
    let now = OffsetDateTime::now_utc();
    let web_dir = DataDir {
        root: dir.join("web"),
    };
    let web = sim.node("web")?;
    web_dir.materialize(&web.secrets, &web.org, "web")?;
    let mut engine = sim.engine_at("web", &web_dir.store_path(), true, now)?;
    engine.receive(events, now)?;
    drop(engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut times, bytes) = runtime.block_on(async {
        let daemon = LocalDaemon::start(web_dir, vec![]).await?;
        let mut stream = tokio::net::TcpStream::connect(&daemon.api).await?;
        let pages = services.div_ceil(50).max(1);
        let (status, _) = get(&mut stream, &daemon.api, "/hsds/services?per_page=50").await?;
        if status != 200 {
            bail!("/hsds/services answered {status}");
        }
        let mut times = Vec::with_capacity(REQUESTS);
        let mut bytes = 0;
        for i in 0..REQUESTS {
            let path = match i % 3 {
                0 => format!("/hsds/services?per_page=50&page={}", i % pages + 1),
                1 => "/hsds/services?per_page=50&search=service".to_string(),
                _ => format!(
                    "/hsds/services?per_page=50&page={}&search=of",
                    i % pages + 1
                ),
            };
            let started = Instant::now();
            let (status, n) = get(&mut stream, &daemon.api, &path).await?;
            times.push(started.elapsed());
            if status != 200 {
                bail!("{path} answered {status}");
            }
            bytes += n;
        }
        daemon.stop().await?;
        Ok((times, bytes / REQUESTS))
    })?;
    let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
    Ok(Figure {
        section: "map".into(),
        name: format!(
            "HSDS API /services?per_page=50 over {services} services (HTTP, kept-alive; pages, search), p50 {p50:.2} ms / p99 (shown), {bytes} bytes a page"
        ),
        unit: "ms".into(),
        value: p99,
        baseline_name: "the directory search it is built on, p99".into(),
        baseline: search_p99_ms,
        ratio: p99 / search_p99_ms.max(1e-9),
        target: "p99 ≤ 20 ms".into(),
        met: Some(p99 <= 20.0),
    })
}
