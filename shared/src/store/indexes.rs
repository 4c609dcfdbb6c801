//! The indexes derived from the fold's records, and their rebuild when a store lacks them: the
//! referrals of a box by status, the cases by last activity.

use redb::ReadableTable;

use super::log::{BY_STATUS, CASES, CASES_BY_ACTIVITY, Id, REFERRALS, decode_case};
use super::{StoreError, decode as dec};
use crate::fold::{ReferralRecord, Status};

/// Every status code [`status_code`] gives (a new status takes the next code and widens this).
pub(crate) const STATUS_CODES: std::ops::RangeInclusive<u8> = 0..=6;

/// A referral's status as the [`BY_STATUS`] index keys it (stable: stored on disk).
pub(crate) fn status_code(status: Status) -> u8 {
    match status {
        Status::Sent => 0,
        Status::Acknowledged => 1,
        Status::Accepted => 2,
        Status::Declined => 3,
        Status::Completed => 4,
        Status::Withdrawn => 5,
        Status::Invalid => 6,
    }
}

/// Puts (`insert`) or takes out a referral's two [`BY_STATUS`] rows under `status`: the
/// receiver's inbox and the sender's outbox.
pub(crate) fn index_status(
    table: &mut redb::Table<'_, (&'static str, u8, u8, u64, Id), ()>,
    record: &ReferralRecord,
    status: Status,
    insert: bool,
) -> Result<(), StoreError> {
    let (code, ms, id) = (status_code(status), record.sent_at.ms, record.id.0);
    for key in [
        (record.receiver_org.as_str(), 0, code, ms, id),
        (record.sender_org.as_str(), 1, code, ms, id),
    ] {
        if insert {
            table.insert(key, ())?;
        } else {
            table.remove(key)?;
        }
    }
    Ok(())
}

/// Builds an index again when it does not hold as many rows as it must: [`BY_STATUS`] two per
/// referral, [`CASES_BY_ACTIVITY`] one per case (a store written before they existed, or
/// restored from such a backup). One transaction, so a store killed half-way builds them again
/// on the next open. Returns the rows written.
pub(crate) fn build_indexes(db: &redb::Database) -> Result<u64, StoreError> {
    use redb::ReadableDatabase;
    let (statuses_ok, activity_ok) = {
        let tx = db.begin_read()?;
        (
            super::table_len(&tx, BY_STATUS)? == 2 * super::table_len(&tx, REFERRALS)?,
            super::table_len(&tx, CASES_BY_ACTIVITY)? == super::table_len(&tx, CASES)?,
        )
    };
    if statuses_ok && activity_ok {
        return Ok(0);
    }
    let tx = db.begin_write()?;
    let mut rows = 0;
    if !statuses_ok {
        tx.delete_table(BY_STATUS)?;
        let referrals = tx.open_table(REFERRALS)?;
        let mut by_status = tx.open_table(BY_STATUS)?;
        for row in referrals.iter()? {
            let record: ReferralRecord = dec(row?.1.value(), "referral")?;
            index_status(&mut by_status, &record, record.status, true)?;
            rows += 2;
        }
    }
    if !activity_ok {
        tx.delete_table(CASES_BY_ACTIVITY)?;
        let cases = tx.open_table(CASES)?;
        let mut by_activity = tx.open_table(CASES_BY_ACTIVITY)?;
        for row in cases.iter()? {
            let record = decode_case(row?.1.value())?;
            let at = record.last_activity;
            by_activity.insert((at.ms, at.counter, record.id.0), ())?;
            rows += 1;
        }
    }
    tx.commit()?;
    Ok(rows)
}

/// The index of an earlier format 2: (organisation, box, sent ms, id) → (), now answered by
/// the rows by status. Dropped on open.
const BY_ORG_V1: redb::TableDefinition<(&str, u8, u64, Id), ()> =
    redb::TableDefinition::new("referrals_by_org-1");

/// Drops the tables no view reads any more; returns whether there was one.
pub(crate) fn drop_unused(db: &redb::Database) -> Result<bool, StoreError> {
    use redb::{ReadableDatabase, TableHandle};
    let present = db
        .begin_read()?
        .list_tables()?
        .any(|t| t.name() == BY_ORG_V1.name());
    if present {
        let tx = db.begin_write()?;
        tx.delete_table(BY_ORG_V1)?;
        tx.commit()?;
    }
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_code_in_the_range_the_boxes_read() {
        let all = <Status as crate::words::Word>::ALL;
        let mut codes: Vec<u8> = all.iter().map(|s| status_code(*s)).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes, STATUS_CODES.collect::<Vec<_>>());
    }
}
