//! The organisation's encryption key epochs held by this node, each sealed (age) to the node's
//! own recipient, so they are no easier to steal from the disk than the node's own key.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Store, StoreError};
use crate::keys;

/// Organisation key epochs: epoch → the age identity text, age-encrypted to this node.
pub(crate) const ORG_KEYS: TableDefinition<u32, &[u8]> = TableDefinition::new("org_keys-1");

/// What installing key epochs did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub installed: Vec<u32>,
    pub already_held: Vec<u32>,
    /// Epochs the configuration in force does not list yet; not installed.
    pub not_configured: Vec<u32>,
}

impl Store {
    /// Installs encryption epochs of this node's organisation after checking each against the
    /// recipient the configuration in force lists for it. A key that does not match is refused
    /// and nothing is installed.
    pub fn import_org_epochs(
        &mut self,
        org: &str,
        node_recipient: &str,
        epochs: &[(u32, age::x25519::Identity)],
    ) -> Result<ImportOutcome, StoreError> {
        let mechanism = self.config.require()?.clone();
        let seal_to = keys::parse_recipient(node_recipient)
            .map_err(|e| StoreError::Refused(e.to_string()))?;
        let held = self.org_epochs_held()?;
        let mut outcome = ImportOutcome::default();
        let mut to_write = Vec::new();
        for (epoch, identity) in epochs {
            let Some(configured) = mechanism.epoch_recipient(org, *epoch) else {
                outcome.not_configured.push(*epoch);
                continue;
            };
            if configured.to_string() != identity.to_public().to_string() {
                return Err(StoreError::Refused(format!(
                    "epoch {epoch} of this key does not match the key the configuration lists for `{org}`: nothing was installed"
                )));
            }
            if held.contains(epoch) {
                outcome.already_held.push(*epoch);
                continue;
            }
            let text = keys::identity_text(identity);
            let sealed = age::encrypt(&seal_to, text.as_bytes())
                .map_err(|e| StoreError::Refused(format!("cannot seal the key: {e}")))?;
            to_write.push((*epoch, sealed));
            outcome.installed.push(*epoch);
        }
        if !to_write.is_empty() {
            let tx = self.db.begin_write()?;
            {
                let mut table = tx.open_table(ORG_KEYS)?;
                for (epoch, sealed) in &to_write {
                    table.insert(*epoch, sealed.as_slice())?;
                }
            }
            tx.commit()?;
        }
        Ok(outcome)
    }

    /// The epochs of the organisation's key this node holds.
    pub fn org_epochs_held(&self) -> Result<Vec<u32>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, ORG_KEYS)? else {
            return Ok(Vec::new());
        };
        let mut epochs = Vec::new();
        for row in table.iter()? {
            epochs.push(row?.0.value());
        }
        Ok(epochs)
    }

    /// The organisation's key epochs, opened with this node's own age identity.
    pub fn org_epoch_identities(
        &self,
        node_identity: &age::x25519::Identity,
    ) -> Result<BTreeMap<u32, age::x25519::Identity>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, ORG_KEYS)? else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for row in table.iter()? {
            let (epoch, sealed) = row?;
            let plain = zeroize::Zeroizing::new(
                age::decrypt(node_identity, sealed.value())
                    .map_err(|e| StoreError::Corrupt(format!("organisation key epoch: {e}")))?,
            );
            let text = std::str::from_utf8(&plain)
                .map_err(|_| StoreError::Corrupt("organisation key epoch".into()))?;
            let identity =
                keys::parse_identity(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.insert(epoch.value(), identity);
        }
        Ok(out)
    }
}
