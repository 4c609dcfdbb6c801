//! The store's format, and the move of a store from the format before it.
//!
//! Format 2 keeps each event under a local position that only rises (`events-2`) and one index
//! from its id to that position and the fold's verdict (`event_ids-2`); format 1 kept it under
//! its id (`events-1`, a random key for every append) and the verdict in a table of its own
//! (`verdicts-1`). See ARCHITECTURE.md, "Storage layout".
//!
//! The move runs when the store opens, before anything else reads it:
//! 1. One transaction renames the two format-1 tables aside, leaves a marker table under the
//!    old events table's name, and records format 2. From this commit on, a binary that knows
//!    only format 1 fails to open the store with an error naming the newer format (redb refuses
//!    a table opened with other types than it holds), whatever is left to move.
//! 2. Chunks of events move from the renamed tables to the new ones, each chunk taken out of
//!    the old table in the transaction that writes it to the new: a kill between two commits
//!    leaves every event in exactly one of them, and the next open goes on from there.
//! 3. The emptied old tables are deleted in the transaction that moves the last chunk.

use std::cmp::Ordering;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, TypeName};

use super::log::{EVENT_IDS, EVENTS, Id, META};
use super::{StoreError, decode as dec, encode as enc};
use crate::event::EventId;
use crate::fold::Verdict;

/// The format this binary writes and reads.
pub const STORE_FORMAT: u64 = 2;
/// Meta key: the store's format (8 bytes, big-endian). Absent: format 1.
const META_FORMAT: &str = "store_format";
/// Events moved per transaction.
pub const MOVE_CHUNK_EVENTS: usize = 4_096;

const EVENTS_V1: TableDefinition<Id, &[u8]> = TableDefinition::new("events-1");
const VERDICTS_V1: TableDefinition<Id, &[u8]> = TableDefinition::new("verdicts-1");
const EVENTS_MOVING: TableDefinition<Id, &[u8]> = TableDefinition::new("events-1-moving");
const VERDICTS_MOVING: TableDefinition<Id, &[u8]> = TableDefinition::new("verdicts-1-moving");
/// Left under the format-1 events table's name, typed so that a format-1 binary cannot open it.
const EVENTS_V1_MARKER: TableDefinition<Moved, Moved> = TableDefinition::new("events-1");

/// The key and value type of the marker table: no bytes, a name that says what happened.
#[derive(Debug)]
pub(crate) struct Moved;

impl redb::Value for Moved {
    type SelfType<'a> = Moved;
    type AsBytes<'a> = [u8; 0];

    fn fixed_width() -> Option<usize> {
        Some(0)
    }

    fn from_bytes<'a>(_: &'a [u8]) -> Moved
    where
        Self: 'a,
    {
        Moved
    }

    fn as_bytes<'a, 'b: 'a>(_: &'a Moved) -> [u8; 0]
    where
        Self: 'b,
    {
        []
    }

    fn type_name() -> TypeName {
        TypeName::new(
            "passerelle store format 2 (this database was upgraded by a newer Passerelle: run that version or a later one)",
        )
    }
}

impl redb::Key for Moved {
    fn compare(_: &[u8], _: &[u8]) -> Ordering {
        Ordering::Equal
    }
}

/// An [`EVENT_IDS`] value: the event's position (8 bytes, big-endian), then the postcard
/// verdict once it is folded (nothing before).
pub(crate) fn id_row(pos: u64, verdict: Option<&Verdict>) -> Vec<u8> {
    let mut row = pos.to_be_bytes().to_vec();
    if let Some(verdict) = verdict {
        row.extend_from_slice(&enc(verdict));
    }
    row
}

/// An [`EVENT_IDS`] value read back: (position, verdict if folded).
pub(crate) fn split_row(row: &[u8]) -> Result<(u64, Option<Verdict>), StoreError> {
    let verdict = &row[8.min(row.len())..];
    let verdict = (!verdict.is_empty())
        .then(|| dec(verdict, "verdict"))
        .transpose()?;
    Ok((row_pos(row)?, verdict))
}

/// The position in an [`EVENT_IDS`] value.
pub(crate) fn row_pos(row: &[u8]) -> Result<u64, StoreError> {
    row.first_chunk::<8>()
        .map(|pos| u64::from_be_bytes(*pos))
        .ok_or_else(|| StoreError::Corrupt("an event's position".into()))
}

/// An event's stored bytes, found through its id (works on read-only and open tables alike).
pub(crate) fn stored<'e>(
    ids: &impl ReadableTable<Id, &'static [u8]>,
    events: &'e impl ReadableTable<u64, &'static [u8]>,
    id: &EventId,
) -> Result<Option<redb::AccessGuard<'e, &'static [u8]>>, StoreError> {
    let Some(row) = ids.get(id.0)? else {
        return Ok(None);
    };
    let pos = row_pos(row.value())?;
    Ok(Some(events.get(pos)?.ok_or_else(|| {
        StoreError::Corrupt(format!("event {} has no bytes", id.short()))
    })?))
}

/// What opening did to the store's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FormatReport {
    /// Events moved from format 1 by this open.
    pub moved: u64,
}

fn has_table(names: impl Iterator<Item = impl TableHandle>, name: &str) -> bool {
    names.into_iter().any(|t| t.name() == name)
}

/// The store's format as recorded (1 when not recorded).
fn recorded(db: &Database) -> Result<u64, StoreError> {
    let tx = db.begin_read()?;
    let Some(meta) = super::read_table(&tx, META)? else {
        return Ok(1);
    };
    match meta.get(META_FORMAT)? {
        None => Ok(1),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("the store's format".into()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

/// Brings the store to [`STORE_FORMAT`]: refuses a newer one, moves a format-1 store (going on
/// from wherever an earlier open was stopped), and leaves the marker that keeps format-1
/// binaries out.
pub(crate) fn bring_up(db: &Database) -> Result<FormatReport, StoreError> {
    let format = recorded(db)?;
    if format > STORE_FORMAT {
        return Err(StoreError::Refused(format!(
            "this node's database is in store format {format}, written by a newer Passerelle; this binary reads format {STORE_FORMAT}: run that version or a later one"
        )));
    }
    let tables: Vec<String> = {
        let tx = db.begin_read()?;
        tx.list_tables()?.map(|t| t.name().to_string()).collect()
    };
    let named = |name: &str| tables.iter().any(|t| t == name);
    if format < STORE_FORMAT || !named(EVENTS_V1.name()) {
        let tx = db.begin_write()?;
        if format < STORE_FORMAT {
            if has_table(tx.list_tables()?, EVENTS_V1.name()) {
                tx.rename_table(EVENTS_V1, EVENTS_MOVING)?;
            }
            if has_table(tx.list_tables()?, VERDICTS_V1.name()) {
                tx.rename_table(VERDICTS_V1, VERDICTS_MOVING)?;
            }
            tx.open_table(META)?
                .insert(META_FORMAT, STORE_FORMAT.to_be_bytes().as_slice())?;
        }
        tx.open_table(EVENTS_V1_MARKER)?;
        tx.commit()?;
    }
    let mut report = FormatReport::default();
    let moving = named(EVENTS_MOVING.name()) || (format < STORE_FORMAT && named(EVENTS_V1.name()));
    while moving && move_chunk(db, &mut report)? {}
    Ok(report)
}

/// Moves one chunk of format-1 events; false when none was left to move.
fn move_chunk(db: &Database, report: &mut FormatReport) -> Result<bool, StoreError> {
    let tx = db.begin_write()?;
    if !has_table(tx.list_tables()?, EVENTS_MOVING.name()) {
        return Ok(false);
    }
    let rows: Vec<(Id, Vec<u8>)> = {
        let old = tx.open_table(EVENTS_MOVING)?;
        old.iter()?
            .take(MOVE_CHUNK_EVENTS)
            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()?
    };
    {
        let mut old = tx.open_table(EVENTS_MOVING)?;
        let mut old_verdicts = tx.open_table(VERDICTS_MOVING)?;
        let mut events = tx.open_table(EVENTS)?;
        let mut ids = tx.open_table(EVENT_IDS)?;
        let mut next = events.last()?.map_or(0, |(k, _)| k.value() + 1);
        for (id, bytes) in &rows {
            let verdict: Option<Verdict> = old_verdicts
                .remove(*id)?
                .map(|v| dec(v.value(), "verdict"))
                .transpose()?;
            if ids.get(*id)?.is_none() {
                events.insert(next, bytes.as_slice())?;
                ids.insert(*id, id_row(next, verdict.as_ref()).as_slice())?;
                next += 1;
            }
            old.remove(*id)?;
        }
    }
    let done = rows.len() < MOVE_CHUNK_EVENTS;
    if done {
        tx.delete_table(EVENTS_MOVING)?;
        tx.delete_table(VERDICTS_MOVING)?;
    }
    tx.commit()?;
    report.moved += rows.len() as u64;
    Ok(!done)
}

/// Test and bench fixture: writes a format-2 store back in format 1 (the tables a format-1
/// binary wrote), so the move can be exercised on stores this binary made.
#[cfg(any(test, feature = "sim"))]
pub fn write_back_to_format_1(path: &std::path::Path) -> Result<u64, StoreError> {
    let db = Database::create(path)?;
    let tx = db.begin_write()?;
    let mut moved = 0;
    {
        tx.delete_table(EVENTS_V1_MARKER)?;
        let events = tx.open_table(EVENTS)?;
        let ids = tx.open_table(EVENT_IDS)?;
        let mut old = tx.open_table(EVENTS_V1)?;
        let mut old_verdicts = tx.open_table(VERDICTS_V1)?;
        for row in ids.iter()? {
            let (id, value) = row?;
            let (pos, verdict) = split_row(value.value())?;
            let Some(bytes) = events.get(pos)? else {
                return Err(StoreError::Corrupt("an event's position".into()));
            };
            old.insert(id.value(), bytes.value())?;
            if let Some(verdict) = verdict {
                old_verdicts.insert(id.value(), enc(&verdict).as_slice())?;
            }
            moved += 1;
        }
        tx.open_table(META)?.remove(META_FORMAT)?;
    }
    tx.delete_table(EVENTS)?;
    tx.delete_table(EVENT_IDS)?;
    tx.commit()?;
    Ok(moved)
}

/// Where a store's move stands, read without opening it as a store: (events still in format
/// 1, events in format 2). For the kill test.
#[cfg(any(test, feature = "sim"))]
pub fn move_state(path: &std::path::Path) -> Result<(u64, u64), StoreError> {
    use redb::ReadableTableMetadata;
    let db = Database::create(path)?;
    let tx = db.begin_read()?;
    let mut old = 0;
    for def in [EVENTS_V1, EVENTS_MOVING] {
        match tx.open_table(def) {
            Ok(t) => old += t.len()?,
            Err(
                redb::TableError::TableDoesNotExist(_) | redb::TableError::TableTypeMismatch { .. },
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((old, super::table_len(&tx, EVENT_IDS)?))
}
