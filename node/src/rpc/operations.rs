//! Operations on the node as a whole: the audit log, backups, bundles (sneakernet) and the
//! coordination report.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use passerelle_core::bundle;
use passerelle_core::engine::Engine;
use passerelle_core::keys::NodeId;
use passerelle_core::report::Report;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Context, audit, config::share_keys, status::peer_vector};

/// Most audit entries one request lists.
pub const AUDIT_LIST_MAX_ENTRIES: usize = 100_000;

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: u64,
    pub at: String,
    pub user: String,
    pub action: String,
    pub subject: String,
}

/// A backup written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackedUp {
    pub events: u64,
    pub out: PathBuf,
}

/// A bundle written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    pub out: PathBuf,
    pub events: u64,
    pub config_versions: usize,
    /// Whom it is for, in words ("node … (label)" or "every node of the mechanism").
    #[serde(rename = "for")]
    pub for_whom: String,
    /// Only what the node lacked at the last sync.
    pub incremental: bool,
}

/// A bundle read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Imported {
    pub from_node: String,
    pub events: u64,
    pub admitted: u64,
    pub duplicates: u64,
    pub held_back: u64,
    pub refused: Vec<RefusedCount>,
    pub config_versions: usize,
    pub key_shares: usize,
}

/// How many events of a bundle admission refused for one reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedCount {
    pub reason: String,
    pub count: u64,
}

pub(super) fn audit_list(engine: &Engine, limit: usize) -> Result<Vec<AuditRow>> {
    let entries = engine
        .store()
        .audit_entries(limit.min(AUDIT_LIST_MAX_ENTRIES))?;
    Ok(entries
        .into_iter()
        .map(|(seq, e)| AuditRow {
            seq,
            at: e.at,
            user: e.user,
            action: e.action,
            subject: e.subject,
        })
        .collect())
}

pub(super) fn backup(engine: &mut Engine, ctx: &Context, out: PathBuf) -> Result<BackedUp> {
    let events = engine.backup(&out)?;
    audit(engine, ctx, "backup", &out.display().to_string())?;
    Ok(BackedUp { events, out })
}

pub(super) fn report(
    engine: &Engine,
    from: OffsetDateTime,
    to: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Report> {
    Ok(engine.report(from, to, now)?)
}

fn progress_bar(show: bool, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    // Drawn only once it has run more than a moment.
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

pub(super) fn bundle_export(
    engine: &mut Engine,
    ctx: &Context,
    out: &Path,
    for_node: Option<NodeId>,
    now: OffsetDateTime,
) -> Result<Exported> {
    let m = engine.mechanism()?.clone();
    let (recipients, theirs, target) = match &for_node {
        Some(node) => {
            let node = *node;
            let info = m
                .node(&node)
                .with_context(|| format!("node {node} is not in the configuration in force"))?;
            (
                vec![info.recipient.clone()],
                peer_vector(engine, &node),
                format!("node {node} ({})", info.label),
            )
        }
        None => (
            m.nodes().map(|n| n.recipient.clone()).collect::<Vec<_>>(),
            None,
            "every node of the mechanism".to_string(),
        ),
    };
    if recipients.is_empty() {
        bail!("the configuration lists no node to encrypt the bundle to");
    }
    if std::fs::symlink_metadata(out).is_ok() {
        bail!("{} already exists: refusing to overwrite it", out.display());
    }
    // A fresh name, created exclusively (never through a file or link planted there), 0600:
    // the bundle holds case ciphertext.
    let tmp = crate::fsutil::partial_path(out);
    let file = crate::fsutil::create_new(&tmp, true)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let writer = std::io::BufWriter::new(file);
    let bar = progress_bar(ctx.progress, "exporting");
    let result = bundle::export(
        engine,
        theirs.as_ref(),
        &recipients,
        writer,
        now,
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    audit(
        engine,
        ctx,
        "bundle.export",
        &format!("{} events for {target}", report.events),
    )?;
    Ok(Exported {
        out: out.to_path_buf(),
        events: report.events,
        config_versions: report.config_versions,
        for_whom: target,
        incremental: theirs.is_some(),
    })
}

pub(super) fn bundle_import(
    engine: &mut Engine,
    ctx: &Context,
    path: &Path,
    now: OffsetDateTime,
) -> Result<Imported> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    let identity = engine_identity(engine)?;
    let bar = progress_bar(ctx.progress, "importing");
    let result = bundle::import(engine, &identity, reader, now, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = result?;
    let key_shares = share_keys(engine, now);
    Ok(Imported {
        from_node: report.from_node,
        events: report.events,
        admitted: report.admitted,
        duplicates: report.duplicates,
        held_back: report.held,
        refused: report
            .refused
            .into_iter()
            .map(|(reason, count)| RefusedCount { reason, count })
            .collect(),
        config_versions: report.config_versions,
        key_shares,
    })
}

/// This node's own age identity, to open bundles addressed to it.
fn engine_identity(engine: &Engine) -> Result<age::x25519::Identity> {
    engine
        .node_identity()
        .ok_or_else(|| anyhow!("this node's identity is not loaded"))
}
