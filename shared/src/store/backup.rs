//! Backups: a consistent snapshot of every table, copied from one read transaction (redb's
//! MVCC snapshot) into a fresh database file. A restored database is marked read-only until the
//! node has learned its own latest events from a peer, so a restore never makes it equivocate.
//! Every table of the store is listed in `Store::backup`: a new table must be added there.
//!
//! A backup file is signed by the node that made it: [`BACKUP_MAGIC`], then the node's
//! signature (under `keys::context::BACKUP`) over the BLAKE3 hash of the database bytes that
//! follow. `restore` checks the signature with the node's own key before it reads a byte of
//! the database, so a backup altered on its USB stick — an account added, a configuration
//! version replaced, an event planted — is refused whole. The database's configuration chain is
//! checked again when it is opened (`config_store::load`), as on every open.

use std::io::{Read, Write};
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::META_READ_ONLY;
use super::audit::AUDIT;
use super::config_store::CONFIG;
use super::log::{
    CASES, EQUIVOCATIONS, EVENT_IDS, EVENTS, HEADS, LINKS, LOG, MAP_EVENTS, MAP_HASHES, MAPS, META,
    REFERRALS, REPORT_INDEX, SHARES, UNREAD, WAITING,
};
use super::org_keys::ORG_KEYS;
use super::users::USERS;
use super::{Store, StoreError};
use crate::keys::{PublicKey, Signature, SigningKey, context};

/// The first bytes of a backup file (a format version in its name).
pub const BACKUP_MAGIC: &[u8; 20] = b"passerelle-backup-1\n";
/// Length of the signature that follows the magic, in bytes.
const BACKUP_SIGNATURE_BYTES: usize = 64;

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Refused(format!("{}: {e}", path.display()))
}

/// Creates a new file for writing, never through an existing file or a planted link
/// (`create_new` fails on any existing path, a symbolic link included), readable by the owner
/// alone.
pub fn create_new_private(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| io(path, e))
}

fn hash_file(path: &Path) -> Result<blake3::Hash, StoreError> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| io(path, e))?;
    Ok(hasher.finalize())
}

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
    /// Writes a consistent snapshot of the whole database to a new file at `to`, signed with the
    /// node's key; returns the number of events it holds. Nothing is left at `to` on failure.
    pub fn backup(&self, to: &Path, signing: &SigningKey) -> Result<u64, StoreError> {
        if std::fs::symlink_metadata(to).is_ok() {
            return Err(StoreError::Refused(format!(
                "{} already exists: refusing to overwrite it",
                to.display()
            )));
        }
        let name = to.file_name().map(|n| n.to_string_lossy().into_owned());
        let partial = to.with_file_name(format!(".{}.db-partial", name.unwrap_or_default()));
        // Created exclusively first, so a link planted at that name is refused, not followed.
        drop(create_new_private(&partial)?);
        let result = self
            .backup_db(&partial)
            .and_then(|events| seal(&partial, to, signing).map(|()| events));
        if let Err(e) = std::fs::remove_file(&partial)
            && result.is_ok()
        {
            return Err(io(&partial, e));
        }
        if result.is_err() && std::fs::symlink_metadata(to).is_ok_and(|m| m.is_file()) {
            // Ours (created exclusively by `seal`) and incomplete.
            let _ = std::fs::remove_file(to);
        }
        result
    }

    fn backup_db(&self, to: &Path) -> Result<u64, StoreError> {
        let dst = redb::Database::create(to)?;
        let src = self.db.begin_read()?;
        let tx = dst.begin_write()?;
        copy(&src, &tx, CONFIG)?;
        copy(&src, &tx, ORG_KEYS)?;
        let events = copy(&src, &tx, EVENTS)?;
        copy(&src, &tx, EVENT_IDS)?;
        copy(&src, &tx, LOG)?;
        copy(&src, &tx, HEADS)?;
        copy(&src, &tx, WAITING)?;
        copy(&src, &tx, super::held::HELD)?;
        copy(&src, &tx, super::requests::REQUESTS)?;
        copy(&src, &tx, super::requests::REQUESTS_BY_TIME)?;
        copy(&src, &tx, super::held::HELD_STRANGERS)?;
        copy(&src, &tx, super::held::HELD_TIMES)?;
        copy(&src, &tx, super::held::HELD_COUNTS)?;
        copy(&src, &tx, EQUIVOCATIONS)?;
        copy(&src, &tx, CASES)?;
        copy(&src, &tx, REFERRALS)?;
        copy(&src, &tx, super::log::BY_STATUS)?;
        copy(&src, &tx, super::log::CASES_BY_ACTIVITY)?;
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
        copy(&src, &tx, super::maps::MAP_WAITING)?;
        copy(&src, &tx, REPORT_INDEX)?;
        copy(&src, &tx, USERS)?;
        tx.commit()?;
        Ok(events)
    }

    /// Checks a backup file's signature against the node's key and writes the database it holds
    /// to `db` (a new file). Refused whole if the file was not signed by this node or was
    /// altered after.
    pub fn unseal_backup(file: &Path, node: &PublicKey, db: &Path) -> Result<(), StoreError> {
        let mut input = std::fs::File::open(file).map_err(|e| io(file, e))?;
        let mut head = [0u8; BACKUP_MAGIC.len() + BACKUP_SIGNATURE_BYTES];
        let not_backup = || {
            StoreError::Refused(format!(
                "{} is not a Passerelle backup (made by `passerelle backup`)",
                file.display()
            ))
        };
        input.read_exact(&mut head).map_err(|_| not_backup())?;
        if &head[..BACKUP_MAGIC.len()] != BACKUP_MAGIC {
            return Err(not_backup());
        }
        let mut signature = [0u8; BACKUP_SIGNATURE_BYTES];
        signature.copy_from_slice(&head[BACKUP_MAGIC.len()..]);
        let signature = Signature::from_bytes(&signature);
        {
            let mut out = create_new_private(db)?;
            std::io::copy(&mut input, &mut out).map_err(|e| io(db, e))?;
            out.sync_all().map_err(|e| io(db, e))?;
        }
        let hash = hash_file(db)?;
        if node
            .verify(context::BACKUP, hash.as_bytes(), &signature)
            .is_err()
        {
            let _ = std::fs::remove_file(db);
            return Err(StoreError::Refused(format!(
                "{} was not signed by this node, or was altered after it was made: refusing to restore it",
                file.display()
            )));
        }
        Ok(())
    }

    /// Restores a signed backup file: checks its signature with the node's key, writes its
    /// database to `db` (a new file) and opens it as [`Store::prepare_restore`] does.
    pub fn restore_backup(
        file: &Path,
        node: &PublicKey,
        db: &Path,
        expected: Option<crate::config::Hash32>,
    ) -> Result<Store, StoreError> {
        Self::unseal_backup(file, node, db)?;
        let restored = Self::prepare_restore(db, expected);
        if restored.is_err() {
            // As above: the refusal is what the caller needs; the copy is ours to drop.
            let _ = std::fs::remove_file(db);
        }
        restored
    }

    /// Opens a restored database, checks it is a node database of the same mechanism as `expected`
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

/// Writes the signed backup file `to` from the database file `db`.
fn seal(db: &Path, to: &Path, signing: &SigningKey) -> Result<(), StoreError> {
    let hash = hash_file(db)?;
    let signature = signing.sign(context::BACKUP, hash.as_bytes());
    let mut out = create_new_private(to)?;
    let mut input = std::fs::File::open(db).map_err(|e| io(db, e))?;
    out.write_all(BACKUP_MAGIC)
        .and_then(|()| out.write_all(&signature.to_bytes()))
        .and_then(|()| std::io::copy(&mut input, &mut out).map(|_| ()))
        .and_then(|()| out.sync_all())
        .map_err(|e| io(to, e))
}
