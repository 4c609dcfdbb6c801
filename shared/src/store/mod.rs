//! The node's redb database: the only module that touches redb.
//!
//! One database per node, one owner of it in the process (the daemon, or a command run while no
//! daemon is running). Table names carry a schema version. Every change that belongs together —
//! an event and the views it changes, a configuration version and the chain head — commits in
//! one write transaction, so a crash never leaves half of it.

mod audit;
mod backup;
mod config_store;
mod held;
mod log;
mod maps;
mod org_keys;
mod requests;
mod users;

use std::path::Path;

pub use audit::AuditEntry;
pub use backup::BACKUP_MAGIC;
pub use config_store::{ApplyOutcome, ConfigState};
pub use log::{FoldKeys, IngestReport, LocalRefusal, LogCounts, decrypt_event};
pub use org_keys::ImportOutcome;
pub use requests::{RequestId, RequestRecord};
pub use users::{USER_NAME_MAX_BYTES, User, UserRole, verify_password};

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

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the node's database is in use by another Passerelle process (is `passerelle run` running?)"
    )]
    InUse,
    #[error("the node's database could not be used: {0}")]
    Db(String),
    #[error("the node's database holds data it cannot read ({0}): restore it from a backup")]
    Corrupt(String),
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

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => StoreError::InUse,
            other => StoreError::Db(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {
        $(impl From<$ty> for StoreError {
            fn from(e: $ty) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        })*
    };
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

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
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Database::builder().create(path)?;
        held::drop_v1(&db)?;
        let config = config_store::load(&db)?;
        let hlc_seen = log::max_hlc(&db)?;
        Ok(Self {
            db,
            config,
            hlc_seen,
            map_cache: maps::MapCache::default(),
            pending_request: None,
        })
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
