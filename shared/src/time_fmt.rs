//! Time helpers: RFC 3339 text for documents and messages, and readable dates for people.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 text of an instant, in UTC, to the second.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses RFC 3339 text.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339).ok()
}

/// A readable UTC date and time for tables: `2026-11-27 14:05`.
pub fn readable(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    date_minute(t)
}

/// A readable date and time in a site's time zone, the zone named: `2026-11-27 15:05 UTC+1`
/// (`UTC+5:30`, `UTC-3`, `UTC`). An offset out of range reads as UTC (validation refuses it).
pub fn readable_in(t: OffsetDateTime, offset_minutes: i16) -> String {
    let offset = time::UtcOffset::from_whole_seconds(i32::from(offset_minutes) * 60)
        .unwrap_or(time::UtcOffset::UTC);
    format!(
        "{} {}",
        date_minute(t.to_offset(offset)),
        zone_name(offset.whole_minutes())
    )
}

/// `UTC`, `UTC+1`, `UTC-3`, `UTC+5:30`.
pub fn zone_name(offset_minutes: i16) -> String {
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let (h, m) = (
        offset_minutes.unsigned_abs() / 60,
        offset_minutes.unsigned_abs() % 60,
    );
    match (h, m) {
        (0, 0) => "UTC".into(),
        (h, 0) => format!("UTC{sign}{h}"),
        (h, m) => format!("UTC{sign}{h}:{m:02}"),
    }
}

fn date_minute(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_in_the_sites_zone_with_the_zone_named() {
        let t = parse_rfc3339("2026-11-27T23:35:00Z").expect("a valid RFC 3339 time");
        assert_eq!(readable_in(t, 60), "2026-11-28 00:35 UTC+1");
        assert_eq!(readable_in(t, 0), "2026-11-27 23:35 UTC");
        assert_eq!(readable_in(t, -180), "2026-11-27 20:35 UTC-3");
        assert_eq!(readable_in(t, 330), "2026-11-28 05:05 UTC+5:30");
        assert_eq!(readable(t), "2026-11-27 23:35");
    }
}
