//! The node's redb database: the only module that touches redb.
//!
//! One database per node, one owner of it in the process (the daemon, or a command run while no
//! daemon is running). Table names carry a schema version. Every change that belongs together —
//! an event and the views it changes, a configuration version and the chain head — commits in
//! one write transaction, so a crash never leaves half of it.

mod audit;
mod backup;
mod config_store;
mod format;
mod held;
mod indexes;
mod log;
mod maps;
mod org_keys;
mod reads;
mod requests;
mod users;

use std::path::Path;

use crate::config::ConfigState;

pub use crate::fold::{FoldKeys, decrypt_event};
pub use audit::AuditEntry;
pub use backup::BACKUP_MAGIC;
pub use config_store::ApplyOutcome;
pub use format::{FormatReport, MOVE_CHUNK_EVENTS, STORE_FORMAT};
#[cfg(feature = "sim")]
pub use format::{move_state, write_back_to_format_1};
pub use log::{IngestReport, LocalRefusal, LogCounts, META_READ_ONLY};
pub use org_keys::ImportOutcome;
pub use reads::TableSize;
pub use requests::{RequestId, RequestRecord};
pub use users::{USER_NAME_MAX_BYTES, User, UserRole, verify_password};

/// Encodes a value for a table. postcard fails only on a sequence of unknown length or a
/// `Serialize` impl that errs, which none of the stored types has: a failure is a bug. In debug
/// builds the bytes are decoded again before they are written (the write end of the pair
/// assertion whose read end is `decode`).
pub(crate) fn encode<T>(value: &T) -> Vec<u8>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = postcard::to_stdvec(value)
        .expect("stored types have sized sequences and derived Serialize impls");
    debug_assert_eq!(
        postcard::from_bytes::<T>(&bytes).ok().as_ref(),
        Some(value),
        "a stored value decodes to itself"
    );
    bytes
}

/// Decodes a value read from a table; bytes that do not decode are a corrupt store.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt(format!("a stored {what}")))
}

/// Opens a table for reading; `None` when it was never written to (a store that holds none of
/// it yet), which readers treat as empty.
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match tx.open_table(def) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The rows of a table (0 when it does not exist yet).
fn table_len<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    use redb::ReadableTableMetadata;
    match read_table(tx, def)? {
        Some(t) => Ok(t.len()?),
        None => Ok(0),
    }
}

/// Why the store could not do what was asked. redb's own errors are kept whole (with their
/// sources), one variant per redb error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the node's database is in use by another Passerelle process (is `passerelle run` running?)"
    )]
    InUse,
    #[error("the node's database could not be opened: {0}")]
    Open(#[source] redb::DatabaseError),
    #[error("the node's database could not begin a transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("the node's database could not open a table: {0}")]
    Table(#[from] redb::TableError),
    #[error("the node's database could not be read or written: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("the node's database could not commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("the node's database failed: {0}")]
    Redb(#[source] redb::Error),
    #[error("the node's database holds data it cannot read ({0}): restore it from a backup")]
    Corrupt(String),
    #[error("the node's database could not be compacted: {0}")]
    Compaction(#[from] redb::CompactionError),
    #[error(transparent)]
    Chain(#[from] crate::config::chain::ChainError),
    #[error(
        "the configuration version {version} stored in the node's database does not verify ({reason}): the database was altered; restore a backup this node signed"
    )]
    ChainStored { version: u64, reason: String },
    #[error("this node has not joined a mechanism yet: run `passerelle join GENESIS.signed`")]
    NotJoined,
    #[error("{0}")]
    Refused(String),
}

impl StoreError {
    /// Whether the database itself failed (as opposed to a refusal or a missing join).
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Open(_)
                | StoreError::Transaction(_)
                | StoreError::Table(_)
                | StoreError::Storage(_)
                | StoreError::Commit(_)
                | StoreError::Redb(_)
                | StoreError::Corrupt(_)
        )
    }
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Open(other),
        }
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Redb(other),
        }
    }
}

impl From<crate::fold::FoldError> for StoreError {
    fn from(e: crate::fold::FoldError) -> Self {
        match e {
            crate::fold::FoldError::Seal(reason) => StoreError::Refused(reason),
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

impl From<crate::config::NotJoined> for StoreError {
    fn from(_: crate::config::NotJoined) -> Self {
        StoreError::NotJoined
    }
}

/// The node's database.
#[derive(Debug)]
pub struct Store {
    pub(crate) db: redb::Database,
    /// The configuration chain as accepted so far, parsed once.
    pub(crate) config: ConfigState,
    /// The highest hybrid-logical-clock timestamp written or admitted, so a restarted node's
    /// clock never goes back.
    pub(crate) hlc_seen: crate::event::Hlc,
    /// Partner-map documents kept loaded between events (see `maps`).
    pub(crate) map_cache: maps::MapCache,
    /// The idempotency key of the request being carried out, recorded with its events.
    pub(crate) pending_request: Option<requests::RequestId>,
    /// What opening did to the store's format.
    pub(crate) opened: FormatReport,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    /// Rewrites the database file without its free pages (after a purge, say), so the file
    /// shrinks to what it holds and the pages that held purged ciphertext are gone from it.
    /// Returns whether anything was compacted. No transaction may be open.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        Ok(self.db.compact()?)
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, crate::limits::STORE_CACHE_MIB_DEFAULT)
    }

    /// [`Store::open`] with a page cache of `cache_mib` MiB (bounded by
    /// [`crate::limits::STORE_CACHE_MIB_MIN`] and [`crate::limits::STORE_CACHE_MIB_MAX`]).
    pub fn open_with_cache(path: &Path, cache_mib: usize) -> Result<Self, StoreError> {
        let mib = cache_mib.clamp(
            crate::limits::STORE_CACHE_MIB_MIN,
            crate::limits::STORE_CACHE_MIB_MAX,
        );
        let db = redb::Database::builder()
            .set_cache_size(mib * 1024 * 1024)
            .create(path)?;
        let moved = format::bring_up(&db)?;
        held::drop_v1(&db)?;
        indexes::drop_unused(&db)?;
        indexes::build_indexes(&db)?;
        let config = config_store::load(&db)?;
        let hlc_seen = log::max_hlc(&db)?;
        Ok(Self {
            db,
            config,
            hlc_seen,
            map_cache: maps::MapCache::default(),
            pending_request: None,
            opened: moved,
        })
    }

    /// What opening did to the store's format (events moved from format 1).
    pub fn format_report(&self) -> FormatReport {
        self.opened
    }

    /// The configuration chain held.
    pub fn config(&self) -> &ConfigState {
        &self.config
    }

    /// Drops what the store keeps loaded in memory (it is reloaded from disk when needed).
    pub fn forget_cached(&mut self) {
        self.map_cache = maps::MapCache::default();
    }
}

impl Store {
    /// Each author's highest sequence number held, by node id.
    pub fn author_heads(
        &self,
    ) -> Result<std::collections::BTreeMap<crate::keys::NodeId, u64>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for (author, seq, _) in self.heads()? {
            if let Ok(key) = crate::keys::PublicKey::from_bytes(&author) {
                out.insert(key.node_id(), seq);
            }
        }
        Ok(out)
    }
}
