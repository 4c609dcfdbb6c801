//! Writing configuration documents from others: the template from the shipped sample, and the
//! next version from the current one. Both edit the TOML text with `toml_edit`, so comments and
//! layout survive and the ministry's people can read what changed.

use time::{Duration, OffsetDateTime};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};

use super::{ConfigError, Hash32, Mechanism};
use crate::keys::{NodeId, PublicKey};
use crate::time_fmt::rfc3339;

/// How long a new version stays valid by default.
pub const DEFAULT_VALIDITY_DAYS: i64 = 365;

fn edit_error(e: toml_edit::TomlError) -> ConfigError {
    ConfigError::Toml(e.message().to_string())
}

/// The genesis document built from the shipped sample: the given root keys and threshold,
/// version 1, issued now, valid for [`DEFAULT_VALIDITY_DAYS`]. The result is validated.
pub fn from_sample(
    sample: &str,
    roots: &[PublicKey],
    threshold: u32,
    now: OffsetDateTime,
) -> Result<String, ConfigError> {
    let mut doc: DocumentMut = sample.parse().map_err(edit_error)?;
    doc["version"] = value(1);
    doc.remove("previous");
    doc["issued_at"] = value(rfc3339(now));
    doc["expires_at"] = value(rfc3339(now + Duration::days(DEFAULT_VALIDITY_DAYS)));
    let mut keys = toml_edit::Array::new();
    for key in roots {
        keys.push(key.to_string());
    }
    let roots_table = doc
        .entry("roots")
        .or_insert(Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| ConfigError::Toml("`roots` must be a table".into()))?;
    roots_table["threshold"] = value(i64::from(threshold));
    roots_table["keys"] = value(keys);
    let text = doc.to_string();
    Mechanism::from_bytes(text.as_bytes())?;
    Ok(text)
}

/// A node to remove in the next version, with the last of its sequence numbers to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalCutoff {
    pub node: NodeId,
    pub last_seq: u64,
}

/// The next version's document: version + 1, the previous hash filled in, issued now with the
/// same validity period as the current one, the removed nodes taken out of `[[nodes]]` and
/// their cut-offs added to `[[removals]]`.
pub fn next_version(
    current_text: &str,
    current: &Mechanism,
    removals: &[RemovalCutoff],
    now: OffsetDateTime,
) -> Result<String, ConfigError> {
    let mut doc: DocumentMut = current_text.parse().map_err(edit_error)?;
    let validity = current.doc.expires_at - current.doc.issued_at;
    let validity = if validity.is_positive() {
        validity
    } else {
        Duration::days(DEFAULT_VALIDITY_DAYS)
    };
    let version = i64::try_from(current.doc.version + 1)
        .map_err(|_| ConfigError::Toml("version out of range".into()))?;
    doc["version"] = value(version);
    doc["previous"] = value(current.hash.to_hex());
    doc["issued_at"] = value(rfc3339(now));
    // The period is carried over from a version a ministry signed: a long one must not
    // overflow the date (it once panicked here).
    let expires_at = now
        .checked_add(validity)
        .ok_or_else(|| ConfigError::Invalid {
            field: "expires_at".into(),
            problem: "the current version's validity period is too long to carry over".into(),
        })?;
    doc["expires_at"] = value(rfc3339(expires_at));

    for removal in removals {
        let node = current
            .node(&removal.node)
            .ok_or_else(|| ConfigError::Invalid {
                field: "--remove-node".into(),
                problem: format!(
                    "node {} is not in version {}",
                    removal.node, current.doc.version
                ),
            })?;
        let org = node.org.clone();
        if let Some(nodes) = doc.get_mut("nodes").and_then(Item::as_array_of_tables_mut) {
            let id = removal.node.to_string();
            nodes.retain(|t| t.get("id").and_then(Item::as_str) != Some(id.as_str()));
        }
        let mut entry = Table::new();
        entry["node"] = value(removal.node.to_string());
        entry["org"] = value(org);
        entry["last_seq"] = value(
            i64::try_from(removal.last_seq)
                .map_err(|_| ConfigError::Toml("sequence out of range".into()))?,
        );
        match doc
            .get_mut("removals")
            .and_then(Item::as_array_of_tables_mut)
        {
            Some(list) => list.push(entry),
            None => {
                let mut list = ArrayOfTables::new();
                list.push(entry);
                doc.insert("removals", Item::ArrayOfTables(list));
            }
        }
    }
    let text = doc.to_string();
    // The result must at least parse; validation of rotations comes when it is signed and applied.
    super::parse_document(text.as_bytes())?;
    Ok(text)
}

/// The document hash a text would have.
pub fn document_hash(text: &str) -> Hash32 {
    Hash32::of(text.as_bytes())
}
