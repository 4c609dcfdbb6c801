//! Reads of the event log and its views outside the fold, each in its own read transaction:
//! heads, events and log ranges, verdicts, case and referral records, inboxes and outboxes,
//! counts, equivocation evidence, key shares, node-local settings, links and report rows.

use redb::{ReadableTable, TableDefinition};

use super::format::{split_row, stored};
use super::log::{
    CASES, EQUIVOCATIONS, EVENT_IDS, EVENTS, HEADS, Id, LINK_CASE_EVENT, LINK_REFERRAL, LINK_STEP,
    LINKS, LOG, LogCounts, META, REFERRALS, REPORT_INDEX, SHARES, UNREAD, WAITING, read_back,
};
use super::{Store, StoreError, decode as dec};
use crate::config::Hash32;
use crate::event::{Event, EventId, Hlc};
use crate::fold::{CaseRecord, ReferralRecord, Verdict};

impl Store {
    /// The author's head: (seq, id, claimed configuration version).
    pub fn head(&self, author: &[u8; 32]) -> Result<Option<(u64, EventId, u64)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, HEADS)? else {
            return Ok(None);
        };
        Ok(table.get(*author)?.map(|r| {
            let (seq, id, v) = r.value();
            (seq, Hash32(id), v)
        }))
    }

    /// Every author's head.
    pub fn heads(&self) -> Result<Vec<([u8; 32], u64, EventId)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, HEADS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (author, value) = row?;
            let (seq, id, _) = value.value();
            out.push((author.value(), seq, Hash32(id)));
        }
        Ok(out)
    }

    /// One stored event.
    pub fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let (Some(ids), Some(events)) = (
            super::read_table(&tx, EVENT_IDS)?,
            super::read_table(&tx, EVENTS)?,
        ) else {
            return Ok(None);
        };
        match stored(&ids, &events, id)? {
            Some(bytes) => read_back(id, Event::decode(bytes.value())).map(Some),
            None => Ok(None),
        }
    }

    /// An author's events from `from_seq` on, at most `max` of them, in log order.
    pub fn log_range(
        &self,
        author: &[u8; 32],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.log_range_raw(author, from_seq, max)?
            .iter()
            .map(|(_, bytes)| {
                Event::decode(bytes).map_err(|e| StoreError::Corrupt(format!("event: {e}")))
            })
            .collect()
    }

    /// An author's events from `from_seq` on, as stored (wire bytes), at most `max`.
    pub fn log_range_raw(
        &self,
        author: &[u8; 32],
        from_seq: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let (Some(log), Some(ids), Some(events)) = (
            super::read_table(&tx, LOG)?,
            super::read_table(&tx, EVENT_IDS)?,
            super::read_table(&tx, EVENTS)?,
        ) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in log.range((*author, from_seq)..=(*author, u64::MAX))? {
            if out.len() >= max {
                break;
            }
            let (key, id) = row?;
            if let Some(bytes) = stored(&ids, &events, &Hash32(id.value()))? {
                out.push((key.value().1, bytes.value().to_vec()));
            }
        }
        Ok(out)
    }

    /// The fold's verdict on an event, if folded.
    pub fn verdict(&self, id: &EventId) -> Result<Option<Verdict>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, EVENT_IDS)? else {
            return Ok(None);
        };
        match table.get(id.0)? {
            Some(row) => Ok(split_row(row.value())?.1),
            None => Ok(None),
        }
    }

    /// A case's clear record.
    pub fn case_record(&self, id: &EventId) -> Result<Option<CaseRecord>, StoreError> {
        self.read_record(CASES, id, super::log::decode_case)
    }

    /// A referral's clear record.
    pub fn referral_record(&self, id: &EventId) -> Result<Option<ReferralRecord>, StoreError> {
        self.read_record(REFERRALS, id, |b| dec(b, "referral"))
    }

    fn read_record<T>(
        &self,
        table: TableDefinition<Id, &[u8]>,
        id: &EventId,
        decode: fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, table)? else {
            return Ok(None);
        };
        table.get(id.0)?.map(|b| decode(b.value())).transpose()
    }

    /// Every case record.
    pub fn case_records(&self) -> Result<Vec<CaseRecord>, StoreError> {
        self.all_records(CASES, super::log::decode_case)
    }

    /// Case records, the most recently active first, handed to `visit` until it returns false
    /// (the case list stops at a page without reading the rest).
    pub fn cases_by_activity(
        &self,
        mut visit: impl FnMut(CaseRecord) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let (Some(index), Some(cases)) = (
            super::read_table(&tx, super::log::CASES_BY_ACTIVITY)?,
            super::read_table(&tx, CASES)?,
        ) else {
            return Ok(());
        };
        for row in index.iter()?.rev() {
            let (_, _, id) = row?.0.value();
            let Some(bytes) = cases.get(id)? else {
                return Err(StoreError::Corrupt(format!(
                    "case {} is indexed but not held",
                    Hash32(id).short()
                )));
            };
            if !visit(super::log::decode_case(bytes.value())?)? {
                break;
            }
        }
        Ok(())
    }

    /// Every referral record.
    pub fn referral_records(&self) -> Result<Vec<ReferralRecord>, StoreError> {
        self.all_records(REFERRALS, |b| dec(b, "referral"))
    }

    fn all_records<T>(
        &self,
        table: TableDefinition<Id, &[u8]>,
        decode: fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, table)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode(row?.1.value())?);
        }
        Ok(out)
    }

    /// Referral ids in an organisation's inbox (`sent = false`) or outbox, newest first; at
    /// most `limit` of them (the rows by status of every status, merged).
    pub fn referrals_of_org(
        &self,
        org: &str,
        sent: bool,
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        self.referrals_by_codes(org, sent, super::indexes::STATUS_CODES, limit)
    }

    /// Referral ids in an organisation's inbox (`sent = false`) or outbox whose status is one
    /// of `statuses`, newest first; at most `limit` of them. Reads only those statuses' rows.
    pub fn referrals_of_org_in(
        &self,
        org: &str,
        sent: bool,
        statuses: &[crate::fold::Status],
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        let codes = statuses.iter().map(|s| super::indexes::status_code(*s));
        self.referrals_by_codes(org, sent, codes, limit)
    }

    /// The newest `limit` rows by status of a box among the given status codes: the newest
    /// `limit` of each code's range, merged.
    fn referrals_by_codes(
        &self,
        org: &str,
        sent: bool,
        codes: impl IntoIterator<Item = u8>,
        limit: usize,
    ) -> Result<Vec<EventId>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, super::log::BY_STATUS)? else {
            return Ok(Vec::new());
        };
        let dir = u8::from(sent);
        let mut found: Vec<(u64, Id)> = Vec::new();
        for code in codes {
            let rows = table
                .range((org, dir, code, 0, [0u8; 32])..=(org, dir, code, u64::MAX, [255u8; 32]))?;
            for row in rows.rev().take(limit) {
                let (_, _, _, ms, id) = row?.0.value();
                found.push((ms, id));
            }
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        found.dedup();
        found.truncate(limit);
        Ok(found.into_iter().map(|(_, id)| Hash32(id)).collect())
    }

    /// Counts for `status`: events held back, events waiting for dependencies, equivocation
    /// evidence, events this node cannot read yet, events in the log.
    pub fn log_counts(&self) -> Result<LogCounts, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        Ok(LogCounts {
            events: super::table_len(&tx, EVENT_IDS)?,
            held: super::table_len(&tx, super::held::HELD)?
                + super::table_len(&tx, super::held::HELD_STRANGERS)?,
            waiting: super::table_len(&tx, WAITING)?
                + super::table_len(&tx, super::maps::MAP_WAITING)?,
            equivocations: super::table_len(&tx, EQUIVOCATIONS)?,
            unread: super::table_len(&tx, UNREAD)?,
        })
    }

    /// What each table takes in the file, largest first (redb's own accounting: the bytes
    /// stored in leaves, the pages the tree takes, and the bytes in them that hold nothing).
    pub fn table_sizes(&self) -> Result<Vec<TableSize>, StoreError> {
        use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
        let tx = self.db.begin_read()?;
        let mut out = Vec::new();
        for handle in tx.list_tables()? {
            let name = handle.name().to_string();
            let table = tx.open_untyped_table(handle)?;
            let stats = table.stats()?;
            out.push(TableSize {
                name,
                rows: table.len()?,
                stored_bytes: stats.stored_bytes(),
                pages: stats.leaf_pages() + stats.branch_pages(),
                fragmented_bytes: stats.fragmented_bytes(),
            });
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.pages));
        Ok(out)
    }

    /// The authors flagged for equivocation, with the sequence numbers involved.
    pub fn equivocations(&self) -> Result<Vec<([u8; 32], u64, EventId)>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, EQUIVOCATIONS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (author, seq, id) = row?.0.value();
            out.push((author, seq, Hash32(id)));
        }
        Ok(out)
    }

    /// The highest HLC this store has written or seen.
    pub fn hlc_seen(&self) -> Hlc {
        self.hlc_seen
    }
}

impl Store {
    /// Whether a valid key share of `epoch` to the node `to` is in the log.
    pub fn key_shared(&self, to: &[u8; 32], epoch: u32) -> Result<bool, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        match super::read_table(&tx, SHARES)? {
            Some(t) => Ok(t.get((*to, epoch))?.is_some()),
            None => Ok(false),
        }
    }

    /// A node-local setting.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        match super::read_table(&tx, META)? {
            Some(t) => Ok(t.get(name)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        }
    }

    /// Sets (or, with `None`, clears) a node-local setting.
    pub fn set_meta(&mut self, name: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(META)?;
            match value {
                Some(v) => {
                    table.insert(name, v)?;
                }
                None => {
                    table.remove(name)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// The case-level events of a case (determinations, case updates), in arrival order.
    pub fn case_events(&self, case: &EventId) -> Result<Vec<EventId>, StoreError> {
        self.linked(case, LINK_CASE_EVENT)
    }

    /// The referrals sent for a case.
    pub fn case_referrals(&self, case: &EventId) -> Result<Vec<EventId>, StoreError> {
        self.linked(case, LINK_REFERRAL)
    }

    /// The steps of a referral.
    pub fn referral_steps(&self, referral: &EventId) -> Result<Vec<EventId>, StoreError> {
        self.linked(referral, LINK_STEP)
    }

    fn linked(&self, entity: &EventId, kind: u8) -> Result<Vec<EventId>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, LINKS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table.range((entity.0, [0u8; 32])..=(entity.0, [255u8; 32]))? {
            let (key, value) = row?;
            if value.value() == kind {
                out.push(Hash32(key.value().1));
            }
        }
        Ok(out)
    }
}

impl Store {
    /// The report rows of the referrals sent in [from_ms, to_ms), from the time index.
    pub fn report_rows(
        &self,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<crate::report::ReportRow>, StoreError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let Some(table) = super::read_table(&tx, REPORT_INDEX)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return Ok(out);
        }
        for row in table.range((from_ms, [0u8; 32])..(to_ms, [0u8; 32]))? {
            out.push(dec(row?.1.value(), "report row")?);
        }
        Ok(out)
    }
}

/// What one table takes in the store's file ([`Store::table_sizes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSize {
    pub name: String,
    pub rows: u64,
    /// Keys and values as stored in the leaves.
    pub stored_bytes: u64,
    /// Leaf and branch pages.
    pub pages: u64,
    /// Bytes in those pages that hold nothing.
    pub fragmented_bytes: u64,
}
