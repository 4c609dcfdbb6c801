//! The configuration chain in the store: every accepted version's signed file, highest last.
//! The highest accepted version is persisted and never goes back, across restarts too.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use time::OffsetDateTime;

use super::{Store, StoreError};
use crate::config::chain::{self, ChainError, SignedFile};
use crate::config::{ConfigState, Mechanism};

/// Accepted configuration versions: version → signed file bytes.
pub(crate) const CONFIG: TableDefinition<u64, &[u8]> = TableDefinition::new("config-1");

/// What applying configuration files did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Versions newly accepted, ascending.
    pub accepted: Vec<u64>,
    /// Versions given that were already held, byte for byte.
    pub already_held: Vec<u64>,
}

pub(crate) fn load(db: &redb::Database) -> Result<ConfigState, StoreError> {
    let tx = db.begin_read()?;
    let Some(table) = super::read_table(&tx, CONFIG)? else {
        return Ok(ConfigState::default());
    };
    let mut state = ConfigState::default();
    for (i, row) in table.iter()?.enumerate() {
        let (version, bytes) = row?;
        if version.value() != i as u64 + 1 {
            return Err(StoreError::Corrupt(format!(
                "configuration version {} stored where {} was expected",
                version.value(),
                i + 1
            )));
        }
        // These bytes were checked before they were stored, but the file they are read from
        // may not be the one written (a tampered backup, a damaged disk): every version runs
        // the chain checks again — signatures, thresholds, the previous hash, the histories.
        // Expiry is not checked here: an expired version in force still holds the data.
        let file = SignedFile::from_bytes(bytes.value())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let checked = match state.current() {
            None => chain::check_genesis(&file, OffsetDateTime::UNIX_EPOCH, false),
            Some(prev) => {
                chain::check_next(prev.as_ref(), &file, OffsetDateTime::UNIX_EPOCH, false)
            }
        };
        let mechanism = checked.map_err(|e| StoreError::ChainStored {
            version: version.value(),
            reason: e.to_string(),
        })?;
        // After reading: the document stored under a version number is that version.
        if mechanism.doc.version != version.value() {
            return Err(StoreError::ChainStored {
                version: version.value(),
                reason: format!("its document is version {}", mechanism.doc.version),
            });
        }
        state.push(mechanism);
    }
    Ok(state)
}

impl Store {
    /// The signed files of the configuration versions after `after`, ascending (as stored).
    pub fn config_files_after(&self, after: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, CONFIG)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..)? {
            out.push(row?.1.value().to_vec());
        }
        Ok(out)
    }

    /// Applies configuration files (a genesis and/or next versions, ascending): each new version
    /// is checked against the one before it, expiry against `now` for the newest; all accepted
    /// versions commit together, or none does.
    pub fn apply_config(
        &mut self,
        files: &[SignedFile],
        now: OffsetDateTime,
    ) -> Result<ApplyOutcome, StoreError> {
        let (new_versions, outcome) = plan_apply(&self.config, files, now)?;
        if new_versions.is_empty() {
            return Ok(outcome);
        }
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(CONFIG)?;
            for (mechanism, file) in &new_versions {
                if table.get(mechanism.doc.version)?.is_some() {
                    return Err(StoreError::Corrupt(format!(
                        "configuration version {} is stored but was not loaded",
                        mechanism.doc.version
                    )));
                }
                table.insert(mechanism.doc.version, file.to_bytes().as_slice())?;
            }
        }
        tx.commit()?;
        for (mechanism, _) in new_versions {
            self.config.push(mechanism);
        }
        Ok(outcome)
    }
}

/// A newly checked version and the file it came from.
type Checked<'f> = (Mechanism, &'f SignedFile);

/// Decides, without writing, which of `files` are new versions and checks each of them.
fn plan_apply<'f>(
    held: &ConfigState,
    files: &'f [SignedFile],
    now: OffsetDateTime,
) -> Result<(Vec<Checked<'f>>, ApplyOutcome), StoreError> {
    if files.is_empty() {
        return Err(ChainError::Empty.into());
    }
    let mut outcome = ApplyOutcome::default();
    let mut accepted: Vec<(Mechanism, &SignedFile)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let newest = i + 1 == files.len();
        let mechanism = file.mechanism()?;
        let version = mechanism.doc.version;
        if let Some(existing) = held.version(version) {
            if version == 1 && existing.hash != file.hash() {
                return Err(ChainError::OtherMechanism {
                    found: file.hash().to_hex(),
                    expected: existing.hash.to_hex(),
                }
                .into());
            }
            if existing.hash == file.hash() {
                outcome.already_held.push(version);
                continue;
            }
            if version < held.highest() {
                return Err(ChainError::Rollback {
                    found: version,
                    held: held.highest(),
                }
                .into());
            }
            return Err(ChainError::Conflict {
                version,
                found: file.hash().short(),
                held: existing.hash.short(),
            }
            .into());
        }
        let prev = accepted
            .last()
            .map(|(m, _)| m)
            .or_else(|| held.current().map(|m| m.as_ref()));
        let checked = match prev {
            None => chain::check_genesis(file, now, newest)?,
            Some(prev) => chain::check_next(prev, file, now, newest)?,
        };
        outcome.accepted.push(version);
        accepted.push((checked, file));
    }
    Ok((accepted, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_store_has_no_mechanism() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store.redb"))?;
        assert!(store.config().current().is_none());
        assert!(matches!(
            store.config().require(),
            Err(crate::config::NotJoined)
        ));
        Ok(())
    }
}
