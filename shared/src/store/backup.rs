//! Backups: a consistent snapshot of every table, copied from one read transaction (redb's
//! MVCC snapshot) into a fresh database file. A restored database is marked read-only until the
//! node has learned its own latest events from a peer, so a restore never makes it equivocate.
//! Every table of the store is listed in `Store::backup`: a new table must be added there.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::audit::AUDIT;
use super::config_store::CONFIG;
use super::log::{
    BY_ORG, CASES, EQUIVOCATIONS, EVENTS, HEADS, HELD, LINKS, LOG, MAP_EVENTS, MAP_HASHES, MAPS,
    META, REFERRALS, REPORT_INDEX, SHARES, UNREAD, VERDICTS, WAITING,
};
use super::org_keys::ORG_KEYS;
use super::users::USERS;
use super::{Store, StoreError};
use crate::engine::META_READ_ONLY;

fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let Some(table) = super::read_table(src, def)? else {
        return Ok(0);
    };
    let mut out = dst.open_table(def)?;
    let mut rows = 0;
    for row in table.iter()? {
        let (k, v) = row?;
        out.insert(k.value(), v.value())?;
        rows += 1;
    }
    Ok(rows)
}

impl Store {
    /// Writes a consistent snapshot of the whole database to a new file at `to`; returns the
    /// number of events it holds.
    pub fn backup(&self, to: &Path) -> Result<u64, StoreError> {
        if to.exists() {
            return Err(StoreError::Refused(format!(
                "{} already exists: refusing to overwrite it",
                to.display()
            )));
        }
        let dst = redb::Database::create(to)?;
        let src = self.db.begin_read()?;
        let tx = dst.begin_write()?;
        copy(&src, &tx, CONFIG)?;
        copy(&src, &tx, ORG_KEYS)?;
        let events = copy(&src, &tx, EVENTS)?;
        copy(&src, &tx, LOG)?;
        copy(&src, &tx, HEADS)?;
        copy(&src, &tx, VERDICTS)?;
        copy(&src, &tx, WAITING)?;
        copy(&src, &tx, HELD)?;
        copy(&src, &tx, EQUIVOCATIONS)?;
        copy(&src, &tx, CASES)?;
        copy(&src, &tx, REFERRALS)?;
        copy(&src, &tx, BY_ORG)?;
        copy(&src, &tx, UNREAD)?;
        copy(&src, &tx, META)?;
        copy(&src, &tx, SHARES)?;
        copy(&src, &tx, LINKS)?;
        copy(&src, &tx, AUDIT)?;
        copy(&src, &tx, MAPS)?;
        copy(&src, &tx, MAP_HASHES)?;
        copy(&src, &tx, MAP_EVENTS)?;
        copy(&src, &tx, super::maps::MAP_CHUNKS)?;
        copy(&src, &tx, super::maps::MAP_SEQS)?;
        copy(&src, &tx, REPORT_INDEX)?;
        copy(&src, &tx, USERS)?;
        tx.commit()?;
        Ok(events)
    }

    /// Opens a backup file, checks it is a node database of the same mechanism as `expected`
    /// (when given), and marks it read-only until the node learns its own latest events.
    pub fn prepare_restore(
        path: &Path,
        expected: Option<crate::config::Hash32>,
    ) -> Result<Store, StoreError> {
        let mut store = Store::open(path)?;
        let id = store.config().mechanism_id().ok_or_else(|| {
            StoreError::Refused("the backup holds no mechanism configuration".into())
        })?;
        if let Some(expected) = expected
            && expected != id
        {
            return Err(StoreError::Refused(format!(
                "the backup belongs to mechanism {}, not to this node's {}",
                id.short(),
                expected.short()
            )));
        }
        store.set_meta(META_READ_ONLY, Some(b"1"))?;
        Ok(store)
    }
}
