//! `passerelle bench`: the performance figures, each printed beside a baseline measured in the
//! same run on the same machine, so a noisy or slow machine still gives an honest ratio.
//!
//! Build with `--release` for real figures. `--quick` runs smaller sizes (a minute or so).
//! This file runs the sections; `event_log`, `net`, `map` and `coordination` hold the
//! event-log, sync, map and report figures; `retention` the cost of erasure and purging;
//! `scale` how a node's costs grow as its store fills (`--events N`).

mod coordination;
mod event_log;
mod hsds;
mod map;
mod net;
mod retention;
mod scale;

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// One measured figure beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub section: String,
    pub name: String,
    pub unit: String,
    pub value: f64,
    pub baseline_name: String,
    pub baseline: f64,
    /// How the figure compares with the baseline (the direction depends on the unit).
    pub ratio: f64,
    pub target: String,
    pub met: Option<bool>,
}

/// Runs the sections (`only`: one of them); `events` is the size the scale section fills a
/// store to (default 1,000,000, or 200,000 with `quick`).
pub fn run(
    quick: bool,
    json: bool,
    only: Option<&str>,
    events: Option<u64>,
    cache_mib: usize,
) -> Result<()> {
    let dir = tempfile::tempdir().context("a temporary directory for the benchmark")?;
    let mut figures = Vec::new();
    if !json {
        eprintln!(
            "Passerelle benchmark ({}; {} cores). Each figure is beside a baseline measured now.",
            if quick { "quick" } else { "full" },
            passerelle_core::limits::batch_threads()
        );
        if cfg!(debug_assertions) {
            eprintln!("Note: this is a debug build; build with --release for real figures.");
        }
    }
    let wanted = |section: &str| only.is_none_or(|o| o == section);
    // Each section works in its own directory, removed when it ends: the files a section wrote
    // would otherwise still be flushing to disk while the next one measures.
    let section_dir = |name: &str| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(path)
    };
    type Section = fn(&Path, bool, &mut Vec<Figure>, bool) -> Result<()>;
    let sections: [(&str, Section); 5] = [
        ("event-log", |d, quick, f, json| {
            event_log::run(d, event_log::Sizes::new(quick), f, json)
        }),
        ("sync", net::run),
        ("map", map::run),
        ("report", coordination::run),
        ("retention", retention::run),
    ];
    for (name, section) in sections {
        if wanted(name) {
            let path = section_dir(name)?;
            section(&path, quick, &mut figures, json)?;
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the {name} section's files"))?;
        }
    }
    if wanted("scale") {
        let path = section_dir("scale")?;
        let events = events.unwrap_or(if quick { 200_000 } else { 1_000_000 });
        scale::run(&path, events, cache_mib, &mut figures, json)?;
        std::fs::remove_dir_all(&path).context("removing the scale section's files")?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    Ok(())
}

pub fn report(figures: &mut Vec<Figure>, figure: Figure, json: bool) {
    if !json {
        let met = match figure.met {
            Some(true) => "  target met",
            Some(false) => "  TARGET MISSED",
            None => "",
        };
        println!(
            "[{}] {}: {:.1} {}  | baseline {}: {:.1} {}  | ratio {:.2} ({}){}",
            figure.section,
            figure.name,
            figure.value,
            figure.unit,
            figure.baseline_name,
            figure.baseline,
            figure.unit,
            figure.ratio,
            figure.target,
            met
        );
    }
    figures.push(figure);
}
