//! `passerelle demo`: a whole local mechanism on loopback. Two ministry officials sign the
//! configuration on the spot; every partner of the sample mechanism gets keys and a node; the
//! partner map is filled from the sample profiles; five partner nodes run as real daemons;
//! scenario 3 (identification, status determination, an urgent health referral, follow-up)
//! moves through its lifecycle through the nodes' own APIs; the Zarzis shelter fills up; a
//! field-site node nobody can reach catches up by a bundle. It prints each step and a web UI
//! address and login for each node, then runs until Ctrl-C (`--exit` stops when it is done).

mod setup;
mod story;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use time::OffsetDateTime;

use crate::local_daemon::LocalDaemon;
use setup::{configuration, join_and_map, start_daemons};
use story::{coordination_report, follow_up, scenario_three, shelter_and_field};

/// The nodes that run as daemons: (node name, organisation, who uses it).
const RUNNING: &[(&str, &str, &str)] = &[
    (
        "mas-medenine",
        "mas",
        "Aïcha, social worker of the Ministry of Social Affairs at Médenine",
    ),
    ("dpe-medenine", "dpe", "the child protection delegate"),
    ("mdm-medenine", "mdm", "the nurse of the health partner"),
    (
        "crt-zarzis",
        "crt",
        "the Red Crescent focal point at Zarzis",
    ),
    ("unhcr-tunis", "unhcr", "UNHCR's protection officer"),
];
/// The field site nobody can reach (scenario 4).
const FIELD: (&str, &str) = ("iom-ras-jedir", "iom");

fn step(n: &mut u32, text: impl AsRef<str>) {
    *n += 1;
    println!("\n[{n}] {}", text.as_ref());
}

pub fn run(dir: Option<PathBuf>, exit: bool) -> Result<()> {
    let keep;
    let root = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            if std::fs::read_dir(&d)?.next().is_some() {
                bail!(
                    "{} is not empty: give an empty or new directory",
                    d.display()
                );
            }
            keep = None;
            d
        }
        None => {
            let t = tempfile::tempdir().context("a temporary directory for the demo")?;
            let p = t.path().to_path_buf();
            keep = Some(t);
            p
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(scenario(&root, exit));
    drop(keep);
    result
}

/// The story as it unfolds: where it runs, the step counter, and the running daemons.
struct Demo<'a> {
    root: &'a Path,
    now: OffsetDateTime,
    step: u32,
    daemons: Vec<(String, LocalDaemon)>,
}

impl Demo<'_> {
    fn step(&mut self, text: impl AsRef<str>) {
        step(&mut self.step, text);
    }

    /// The running daemon of a node (the hub when the name is unknown).
    fn daemon(&self, name: &str) -> &LocalDaemon {
        self.daemons
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&self.daemons[0].1, |(_, d)| d)
    }
}

async fn scenario(root: &Path, exit: bool) -> Result<()> {
    let mut demo = Demo {
        root,
        now: OffsetDateTime::now_utc(),
        step: 0,
        daemons: Vec::new(),
    };
    println!("Passerelle demo — a whole referral mechanism on this machine (loopback only).");
    println!("Working directory: {}", root.display());
    let (sim, nodes) = configuration(&mut demo)?;
    join_and_map(&mut demo, &sim, &nodes)?;
    let logins = start_daemons(&mut demo).await?;
    let referral = scenario_three(&mut demo).await?;
    follow_up(&mut demo, &referral).await?;
    shelter_and_field(&mut demo, &sim).await?;
    coordination_report(&mut demo).await?;

    // The binary this demo runs from: `cargo run` puts no `passerelle` on PATH.
    let bin =
        std::env::current_exe().map_or_else(|_| "passerelle".into(), |p| p.display().to_string());
    if exit {
        println!("\nDemo finished (--exit): the nodes stop now. Run it without --exit to log in.");
        println!(
            "Their data stays in {}: {bin} --data-dir {}/mas-medenine case list",
            root.display(),
            root.display()
        );
    } else {
        println!("\nThe web UI of each running node (log in with the account shown):");
        for (url, user, password, org, who) in &logins {
            println!("  {url:<28} user {user:<8} password {password}   ({org}: {who})");
        }
        println!(
            "Posters: open a node's UI, then Posters. Commands, in another terminal:\n  {bin} --data-dir {}/mas-medenine status",
            root.display()
        );
        println!("\nThe mechanism keeps running. Press Ctrl-C to stop it.");
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("Cannot wait for Ctrl-C ({e}): stopping the demo now.");
        }
    }
    for (_, d) in demo.daemons {
        d.stop().await?;
    }
    Ok(())
}
