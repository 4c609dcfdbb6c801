//! The directory: search, opening hours, staleness and coverage gaps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, Weekday};

use super::{Capacity, Profile, Service, parse_date, ranges};
use crate::config::Mechanism;

/// A service with its organisation, as search and posters use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub org: String,
    pub org_name: String,
    pub service: Service,
    pub open_now: bool,
    /// Not verified in 90 days.
    pub stale: bool,
}

/// Whether a service is open at `now` (in the site's local time).
pub fn open_at(service: &Service, m: &Mechanism, now: OffsetDateTime) -> bool {
    let offset = m
        .site(&service.site)
        .map_or(0, |s| i32::from(s.utc_offset_minutes));
    let local = now.to_offset(
        time::UtcOffset::from_whole_seconds(offset * 60).unwrap_or(time::UtcOffset::UTC),
    );
    let day = match local.weekday() {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    };
    let minute = u32::from(local.hour()) * 60 + u32::from(local.minute());
    service
        .hours
        .get(day)
        .and_then(|spec| ranges(spec))
        .is_some_and(|rs| rs.iter().any(|(a, b)| minute >= *a && minute < *b))
}

/// Entries older than this are marked on posters and in reports.
pub const STALE_AFTER_DAYS: i64 = 90;

/// Whether an entry was not verified in the last 90 days.
pub fn stale(service: &Service, now: OffsetDateTime) -> bool {
    parse_date(&service.verified).is_none_or(|d| (now.date() - d).whole_days() > STALE_AFTER_DAYS)
}

/// What a search asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub category: Option<String>,
    pub site: Option<String>,
    pub language: Option<String>,
    pub open_now: bool,
    pub capacity: Option<Capacity>,
    /// Only services of this organisation.
    pub org: Option<String>,
}

/// Searches the directory and ranks the results: open now first, then capacity (available,
/// limited, full, suspended), then the most recently verified, then by name.
pub fn search(
    profiles: &BTreeMap<String, Profile>,
    m: &Mechanism,
    query: &Query,
    now: OffsetDateTime,
) -> Vec<Entry> {
    let mut out = Vec::new();
    for (org, profile) in profiles {
        if query.org.as_ref().is_some_and(|o| o != org) {
            continue;
        }
        for s in &profile.services {
            if query.category.as_ref().is_some_and(|c| c != &s.category)
                || query.site.as_ref().is_some_and(|x| x != &s.site)
                || query
                    .language
                    .as_ref()
                    .is_some_and(|l| !s.languages.contains(l))
                || query.capacity.is_some_and(|c| c != s.capacity)
            {
                continue;
            }
            let open_now = open_at(s, m, now);
            if query.open_now && !open_now {
                continue;
            }
            out.push(Entry {
                org: org.clone(),
                org_name: m.org_name(org).to_string(),
                service: s.clone(),
                open_now,
                stale: stale(s, now),
            });
        }
    }
    out.sort_by(|a, b| {
        b.open_now
            .cmp(&a.open_now)
            .then(a.service.capacity.cmp(&b.service.capacity))
            .then(b.service.verified.cmp(&a.service.verified))
            .then(a.service.name.en.cmp(&b.service.name.en))
    });
    out
}

/// A site and category with no provider that can take people now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gap {
    pub site: String,
    pub category: String,
    /// Services listed there but full or suspended.
    pub unavailable: usize,
}

/// For each site and category of the configuration, whether any service can take people now.
pub fn gaps(profiles: &BTreeMap<String, Profile>, m: &Mechanism) -> Vec<Gap> {
    let mut out = Vec::new();
    for site in &m.doc.sites {
        for cat in &m.doc.taxonomy {
            let here: Vec<&Service> = profiles
                .values()
                .flat_map(|p| &p.services)
                .filter(|s| s.site == site.id && s.category == cat.id)
                .collect();
            if !here.iter().any(|s| s.capacity.takes_people()) {
                out.push(Gap {
                    site: site.id.clone(),
                    category: cat.id.clone(),
                    unavailable: here.len(),
                });
            }
        }
    }
    out
}
