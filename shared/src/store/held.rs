//! Events held back at admission (`admission::Hold`): they wait outside the log for an earlier
//! event of their author, for a configuration version this node lacks, or for their time.
//!
//! Every one was signed by its author (admission checks the signature before holding), but
//! anyone can make a key, so the hold is bounded per author and in total, and events from
//! authors no configuration held endorses ("strangers": possibly nodes of a version still to
//! come) wait in a small table of their own with a much smaller bound. An event the hold has
//! no room for is not held — reported as [`Refusal::HoldFull`], it comes again with a later
//! sync — and the rest of its batch goes on: a full hold never refuses an honest batch.
//!
//! Nothing waits forever ([`HELD_EXPIRY_MS`]), and retrying is incremental: an event waiting
//! for its author's earlier events is retried when that author's log moves, one waiting for a
//! configuration version when a version arrives, one from the future when its time comes (a
//! time index says when), at most [`HELD_RETRY_PER_CALL_MAX`] at a time.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use super::StoreError;
use super::log::{Id, Ingest};
use crate::admission::{Hold, Refusal};
use crate::event::Event;
use crate::limits::{
    HELD_EVENTS_MAX, HELD_EXPIRY_MS, HELD_PER_AUTHOR_MAX, HELD_PER_STRANGER_MAX,
    HELD_RETRY_PER_CALL_MAX, HELD_STRANGERS_MAX,
};

/// Held events of endorsed authors: (author, seq, id) → [`Held`] bytes.
pub(crate) const HELD: TableDefinition<(Id, u64, Id), &[u8]> = TableDefinition::new("held-2");
/// Held events of authors no configuration held endorses, same layout.
pub(crate) const HELD_STRANGERS: TableDefinition<(Id, u64, Id), &[u8]> =
    TableDefinition::new("held_strangers-1");
/// When to look at a held event again: (ms, [`WHEN_DUE`] or [`WHEN_EXPIRED`], author, seq, id).
pub(crate) const HELD_TIMES: TableDefinition<(u64, u8, Id, u64, Id), ()> =
    TableDefinition::new("held_times-1");
/// Events held per author (both tables).
pub(crate) const HELD_COUNTS: TableDefinition<Id, u64> = TableDefinition::new("held_counts-1");
/// The table of an earlier version of the store, dropped when the store opens (its events come
/// again with the next sync).
pub(crate) const HELD_V1: TableDefinition<(Id, u64, Id), &[u8]> = TableDefinition::new("held-1");

/// A future event's time to be retried.
const WHEN_DUE: u8 = 0;
/// A held event's time to be dropped.
const WHEN_EXPIRED: u8 = 1;

type Key = (Id, u64, Id);

/// What the hold keeps of an event: when it arrived, when it is due (0: not waiting for time),
/// and the event.
struct Held<'b> {
    received_ms: u64,
    due_ms: u64,
    bytes: &'b [u8],
}

impl<'b> Held<'b> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.bytes.len());
        out.extend_from_slice(&self.received_ms.to_le_bytes());
        out.extend_from_slice(&self.due_ms.to_le_bytes());
        out.extend_from_slice(self.bytes);
        out
    }

    fn decode(bytes: &'b [u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("a held event".into());
        let received_ms = u64::from_le_bytes(
            bytes
                .get(..8)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        let due_ms = u64::from_le_bytes(
            bytes
                .get(8..16)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        );
        Ok(Self {
            received_ms,
            due_ms,
            bytes: &bytes[16..],
        })
    }
}

impl Ingest<'_, '_> {
    /// Holds an event (or, if the hold has no room for it, reports it refused).
    pub(crate) fn hold(&mut self, event: &Event, hold: &Hold) -> Result<(), StoreError> {
        let h = event.header();
        let key = (h.author, h.seq, event.id().0);
        if self.t.held.get(key)?.is_some() || self.t.held_strangers.get(key)?.is_some() {
            self.report.held.push((event.id(), hold.clone()));
            return Ok(());
        }
        let stranger = self
            .config
            .all()
            .iter()
            .all(|m| m.node_by_key(&h.author).is_none());
        let count = self.t.held_counts.get(h.author)?.map_or(0, |c| c.value());
        let full = if stranger {
            count >= HELD_PER_STRANGER_MAX || self.t.held_strangers.len()? >= HELD_STRANGERS_MAX
        } else {
            count >= HELD_PER_AUTHOR_MAX || self.t.held.len()? >= HELD_EVENTS_MAX
        };
        if full {
            self.report.refused.push((event.id(), Refusal::HoldFull));
            return Ok(());
        }
        let due_ms = match hold {
            Hold::Future { due_ms, .. } => (*due_ms).max(1),
            _ => 0,
        };
        let received_ms = self.retrying_since.unwrap_or(self.now_ms);
        let held = Held {
            received_ms,
            due_ms,
            bytes: &event.encode(),
        }
        .encode();
        if stranger {
            self.t.held_strangers.insert(key, held.as_slice())?;
        } else {
            self.t.held.insert(key, held.as_slice())?;
        }
        self.t.held_counts.insert(h.author, count + 1)?;
        let expires = received_ms.saturating_add(HELD_EXPIRY_MS);
        self.t
            .held_times
            .insert((expires, WHEN_EXPIRED, key.0, key.1, key.2), ())?;
        if due_ms > 0 {
            self.t
                .held_times
                .insert((due_ms, WHEN_DUE, key.0, key.1, key.2), ())?;
        }
        self.report.held.push((event.id(), hold.clone()));
        Ok(())
    }

    /// Takes an event out of the hold, if it is there (admitted, refused, or expired).
    pub(crate) fn unhold(&mut self, key: Key) -> Result<(), StoreError> {
        let removed = match self.t.held.remove(key)? {
            Some(v) => Some(v.value().to_vec()),
            None => self
                .t
                .held_strangers
                .remove(key)?
                .map(|v| v.value().to_vec()),
        };
        let Some(bytes) = removed else {
            return Ok(());
        };
        let held = Held::decode(&bytes)?;
        let expires = held.received_ms.saturating_add(HELD_EXPIRY_MS);
        self.t
            .held_times
            .remove((expires, WHEN_EXPIRED, key.0, key.1, key.2))?;
        if held.due_ms > 0 {
            self.t
                .held_times
                .remove((held.due_ms, WHEN_DUE, key.0, key.1, key.2))?;
        }
        let count = self.t.held_counts.get(key.0)?.map_or(0, |c| c.value());
        if count <= 1 {
            self.t.held_counts.remove(key.0)?;
        } else {
            self.t.held_counts.insert(key.0, count - 1)?;
        }
        Ok(())
    }

    /// Retries held events: with `all`, every held event (after a configuration version
    /// arrived); then, until nothing more moves, those next in line for authors whose logs
    /// moved.
    pub fn retry_held(&mut self, all: bool) -> Result<(), StoreError> {
        if all {
            let mut candidates = Vec::new();
            for row in self.t.held.iter()?.chain(self.t.held_strangers.iter()?) {
                let row = row?;
                let held = Held::decode(row.1.value())?;
                candidates.push((held.received_ms, held.bytes.to_vec()));
            }
            self.retry(candidates)?;
        }
        loop {
            let authors = std::mem::take(&mut self.advanced);
            if authors.is_empty() {
                return Ok(());
            }
            let mut candidates = Vec::new();
            for author in authors {
                let next = self
                    .t
                    .heads
                    .get(author)?
                    .map(|r| r.value().0 + 1)
                    .unwrap_or(1);
                let range = (author, next, [0u8; 32])..=(author, next, [255u8; 32]);
                for row in self
                    .t
                    .held
                    .range(range.clone())?
                    .chain(self.t.held_strangers.range(range)?)
                {
                    let row = row?;
                    let held = Held::decode(row.1.value())?;
                    candidates.push((held.received_ms, held.bytes.to_vec()));
                }
            }
            self.retry(candidates)?;
        }
    }

    /// As time passes: retries the events whose time has come and drops those that waited
    /// too long, at most [`HELD_RETRY_PER_CALL_MAX`] of them.
    pub fn retry_due(&mut self) -> Result<(), StoreError> {
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for row in self
            .t
            .held_times
            .range(..=(self.now_ms, u8::MAX, [255u8; 32], u64::MAX, [255u8; 32]))?
            .take(HELD_RETRY_PER_CALL_MAX)
        {
            let (when, kind, author, seq, id) = row?.0.value();
            if kind == WHEN_DUE {
                due.push((when, (author, seq, id)));
            } else {
                expired.push((author, seq, id));
            }
        }
        for key in expired {
            self.unhold(key)?;
        }
        let mut candidates = Vec::new();
        for (when, key) in due {
            // Retried once: if still early (a clock moved back), it waits for its expiry or the
            // next configuration version.
            self.t
                .held_times
                .remove((when, WHEN_DUE, key.0, key.1, key.2))?;
            let bytes = match self.t.held.get(key)? {
                Some(v) => Some(v.value().to_vec()),
                None => self.t.held_strangers.get(key)?.map(|v| v.value().to_vec()),
            };
            if let Some(bytes) = bytes {
                let held = Held::decode(&bytes)?;
                candidates.push((held.received_ms, held.bytes.to_vec()));
            }
        }
        self.retry(candidates)?;
        self.retry_held(false)
    }

    fn retry(&mut self, candidates: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        for (received_ms, bytes) in candidates {
            let Ok(event) = Event::decode(&bytes) else {
                continue;
            };
            let h = event.header();
            // Taken out first; held again below if it still must wait, keeping the time it
            // first arrived (so it still expires on time).
            self.unhold((h.author, h.seq, event.id().0))?;
            let before = self.report.held.len();
            self.retrying_since = Some(received_ms);
            let outcome = self.ingest(&event);
            self.retrying_since = None;
            outcome?;
            // Still held: it was reported once already.
            self.report.held.truncate(before);
        }
        Ok(())
    }
}

/// Drops the hold of an earlier version of the store (no expiry times, no bounds per author):
/// its events come again with the next sync.
pub(crate) fn drop_v1(db: &redb::Database) -> Result<(), StoreError> {
    use redb::ReadableDatabase;
    let exists = {
        let tx = db.begin_read()?;
        super::read_table(&tx, HELD_V1)?.is_some()
    };
    if exists {
        let tx = db.begin_write()?;
        tx.delete_table(HELD_V1)?;
        tx.commit()?;
    }
    Ok(())
}
