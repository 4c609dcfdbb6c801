//! The local audit log: every view or export of decrypted personal data is recorded — which
//! user, what, when, about which case or referral — never the data itself. Append-only: the
//! store offers no way to change or delete an entry.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Audit entries: sequence → postcard entry.
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit-1");

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 time.
    pub at: String,
    /// The user (a web UI account, or the operating-system user of a command).
    pub user: String,
    /// What was done: `case.show`, `case.list`, `referral.list`, `bundle.export`, …
    pub action: String,
    /// The case or referral ids concerned, or a short description; never personal data.
    pub subject: String,
}

impl Store {
    /// Appends an entry to the audit log (durably, before the data is shown).
    pub fn audit(&mut self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let tx = self.db.begin_write()?;
        let seq = {
            let mut table = tx.open_table(AUDIT)?;
            let next = table.last()?.map_or(1, |(k, _)| k.value() + 1);
            let bytes = postcard::to_stdvec(entry)
                .map_err(|_| StoreError::Refused("an audit entry did not encode".into()))?;
            table.insert(next, bytes.as_slice())?;
            next
        };
        tx.commit()?;
        Ok(seq)
    }

    /// The newest `limit` audit entries, oldest first.
    pub fn audit_entries(&self, limit: usize) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, AUDIT)? else {
            return Ok(Vec::new());
        };
        let total = table.len()?;
        let skip = total.saturating_sub(limit as u64) as usize;
        let mut out = Vec::new();
        for row in table.iter()?.skip(skip) {
            let (k, v) = row?;
            let entry = postcard::from_bytes(v.value())
                .map_err(|_| StoreError::Corrupt("an audit entry".into()))?;
            out.push((k.value(), entry));
        }
        Ok(out)
    }
}
