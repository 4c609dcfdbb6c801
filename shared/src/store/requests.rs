//! Requests carried out, by their idempotency key, so a request sent twice is carried out once.
//!
//! A command that changes the node (open a case, send a referral…) carries a key its sender
//! chose. When the request appends events, the key is written in the same transaction as the
//! events; the answer is added right after. A request arriving again with a key already held is
//! not carried out again: its answer is given back, or — if the node stopped between the two
//! writes — the events it made are named. A command whose daemon died after the request was
//! sent can then safely send it again, to the restarted daemon or in-process.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::event::EventId;
use crate::limits::REQUESTS_KEPT_MAX;

/// An idempotency key.
pub type RequestId = [u8; 16];

/// Requests carried out: key → postcard [`RequestRecord`].
pub(crate) const REQUESTS: TableDefinition<RequestId, &[u8]> = TableDefinition::new("requests-1");
/// The same by when they were carried out, to forget the oldest: (ms, key) → ().
pub(crate) const REQUESTS_BY_TIME: TableDefinition<(u64, RequestId), ()> =
    TableDefinition::new("requests_by_time-1");

/// What the node remembers of a request carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The events it appended.
    pub events: Vec<EventId>,
    /// Its answer (JSON text), once written.
    pub answer: Option<String>,
}

/// Writes the record of a request inside the transaction that appends its events, forgetting
/// the oldest records past [`REQUESTS_KEPT_MAX`].
pub(crate) fn record_in(
    tx: &WriteTransaction,
    id: RequestId,
    events: Vec<EventId>,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut table = tx.open_table(REQUESTS)?;
    let mut by_time = tx.open_table(REQUESTS_BY_TIME)?;
    let record = RequestRecord {
        at_ms: now_ms,
        events,
        answer: None,
    };
    table.insert(id, super::encode(&record).as_slice())?;
    by_time.insert((now_ms, id), ())?;
    while table.len()? > REQUESTS_KEPT_MAX {
        let Some(oldest) = by_time.first()?.map(|(k, _)| k.value()) else {
            break;
        };
        by_time.remove(oldest)?;
        table.remove(oldest.1)?;
    }
    Ok(())
}

impl Store {
    /// Sets the key of the request being carried out: the next local append records it with
    /// its events (`None` clears it).
    pub fn set_pending_request(&mut self, id: Option<RequestId>) {
        self.pending_request = id;
    }

    /// The record of a request already carried out, if any.
    pub fn request(&self, id: &RequestId) -> Result<Option<RequestRecord>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, REQUESTS)? else {
            return Ok(None);
        };
        table
            .get(*id)?
            .map(|b| {
                postcard::from_bytes(b.value())
                    .map_err(|_| StoreError::Corrupt("a request record".into()))
            })
            .transpose()
    }

    /// Adds the answer to the record of a request that appended events (no record: nothing).
    pub fn set_request_answer(&mut self, id: &RequestId, answer: &str) -> Result<(), StoreError> {
        let Some(mut record) = self.request(id)? else {
            return Ok(());
        };
        record.answer = Some(answer.to_string());
        let tx = self.db.begin_write()?;
        tx.open_table(REQUESTS)?
            .insert(*id, super::encode(&record).as_slice())?;
        tx.commit()?;
        Ok(())
    }
}
