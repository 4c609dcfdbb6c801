//! Configuration and keys: the document in force, applying signed versions, installing the
//! organisation's key epochs, and overriding an expired configuration for a while.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use passerelle_core::config::chain::SignedFile;
use passerelle_core::engine::Engine;
use passerelle_core::keys;
use passerelle_core::time_fmt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Context, audit};

/// Longest an operator may override an expired configuration, in hours.
pub const EXPIRY_OVERRIDE_MAX_HOURS: u32 = 72;

/// The configuration version in force and its document's text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigDocument {
    pub version: u64,
    pub document: String,
}

/// Each author's highest sequence number this node holds (node id → seq); empty when the node
/// does not hold the configuration version asked about (another mechanism).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogHeads {
    pub same_mechanism: bool,
    pub heads: BTreeMap<String, u64>,
}

/// What applying configuration files did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigUpdated {
    pub accepted: Vec<u64>,
    pub already_held: Vec<u64>,
    /// The highest version this node now holds.
    pub version: u64,
    /// Key shares made for nodes the new versions added.
    pub key_shares: usize,
}

/// What installing key epochs did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysImported {
    pub installed: Vec<u32>,
    pub already_held: Vec<u32>,
    pub not_configured: Vec<u32>,
    pub key_shares: usize,
}

/// Until when case events may be created past the expiry (RFC 3339).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpiryOverridden {
    pub until: String,
}

/// Shares the organisation's keys with the nodes that lack them; a failure is logged, not
/// returned: the operation that led here succeeded, and the next sync shares again.
pub(super) fn share_keys(engine: &mut Engine, now: OffsetDateTime) -> usize {
    match engine.share_keys(now) {
        Ok(shared) => shared.len(),
        Err(e) => {
            tracing::warn!("sharing keys failed (retried at the next sync): {e}");
            0
        }
    }
}

/// The signed file of the highest version this node holds, if it joined.
pub(super) fn current_file(engine: &Engine) -> Result<Option<(u64, SignedFile)>> {
    let version = engine.store().config().highest();
    let files = engine
        .store()
        .config_files_after(version.saturating_sub(1))?;
    let file = files
        .last()
        .map(|f| SignedFile::from_bytes(f))
        .transpose()?;
    Ok(file.map(|f| (version, f)))
}

pub(super) fn log_heads(engine: &Engine, config: &str) -> Result<LogHeads> {
    let same = engine
        .store()
        .config()
        .all()
        .iter()
        .any(|m| m.hash.to_hex() == config);
    let heads = if same {
        engine
            .store()
            .author_heads()?
            .into_iter()
            .map(|(node, seq)| (node.to_string(), seq))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(LogHeads {
        same_mechanism: same,
        heads,
    })
}

pub(super) fn document(engine: &Engine) -> Result<ConfigDocument> {
    let (version, file) = current_file(engine)?.context("this node has not joined a mechanism")?;
    Ok(ConfigDocument {
        version,
        document: file.document,
    })
}

pub(super) fn update(
    engine: &mut Engine,
    files: &[SignedFile],
    now: OffsetDateTime,
) -> Result<ConfigUpdated> {
    let outcome = engine.apply_config(files, now)?;
    let key_shares = if outcome.accepted.is_empty() {
        0
    } else {
        share_keys(engine, now)
    };
    Ok(ConfigUpdated {
        accepted: outcome.accepted,
        already_held: outcome.already_held,
        version: engine.store().config().highest(),
        key_shares,
    })
}

pub(super) fn import_key(
    engine: &mut Engine,
    epochs: &[(u32, String)],
    now: OffsetDateTime,
) -> Result<KeysImported> {
    let epochs = epochs
        .iter()
        .map(|(e, text)| Ok((*e, keys::parse_identity(text)?)))
        .collect::<Result<Vec<_>, keys::KeyError>>()?;
    let outcome = engine.import_epochs(&epochs, now)?;
    let key_shares = share_keys(engine, now);
    Ok(KeysImported {
        installed: outcome.installed,
        already_held: outcome.already_held,
        not_configured: outcome.not_configured,
        key_shares,
    })
}

pub(super) fn override_expiry(
    engine: &mut Engine,
    ctx: &Context,
    hours: u32,
    now: OffsetDateTime,
) -> Result<ExpiryOverridden> {
    if hours == 0 || hours > EXPIRY_OVERRIDE_MAX_HOURS {
        bail!("an override lasts 1 to {EXPIRY_OVERRIDE_MAX_HOURS} hours");
    }
    let m = engine.mechanism()?;
    if !m.is_expired(now) {
        bail!(
            "configuration version {} has not expired: there is nothing to override",
            m.doc.version
        );
    }
    let until = time_fmt::rfc3339(now + time::Duration::hours(i64::from(hours)));
    engine.store_mut().set_meta(
        passerelle_core::engine::META_EXPIRY_OVERRIDE,
        Some(until.as_bytes()),
    )?;
    audit(engine, ctx, "expiry.override", &format!("until {until}"))?;
    tracing::warn!(until = %until, user = %ctx.user, "expired configuration overridden");
    Ok(ExpiryOverridden { until })
}

/// Serde for signed files in a request: each travels as its file's text and is read with the
/// same checks as a file on disk (`SignedFile::from_bytes`).
pub mod signed_files {
    use passerelle_core::config::chain::SignedFile;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(files: &[SignedFile], s: S) -> Result<S::Ok, S::Error> {
        let texts = files
            .iter()
            .map(|f| String::from_utf8(f.to_bytes()).map_err(serde::ser::Error::custom))
            .collect::<Result<Vec<_>, _>>()?;
        s.collect_seq(texts)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SignedFile>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| SignedFile::from_bytes(t.as_bytes()).map_err(serde::de::Error::custom))
            .collect()
    }
}
