//! Coordination reports: what each node may see of the referrals — the clear facts every node
//! holds — counted by category, partner, status and decline reason; acceptance and completion
//! rates; time to acknowledge and to accept against the SOP deadlines; the overdue list; and,
//! from the partner map, the coverage gaps and the entries not verified in 90 days.
//!
//! No figure names or describes a person. Sensitive categories never appear in clear: they are
//! counted together as `(sensitive)`, and a count under five in a sensitive bucket is shown as
//! "< 5" so no figure points at a person. Reports read the store's time index of referrals
//! (`store::log`), never the events themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Mechanism;
use crate::event::Urgency;
use crate::fold::{ReferralRecord, Status};

/// The bucket sensitive categories are counted in.
pub const SENSITIVE: &str = "(sensitive)";
/// Counts below this in a sensitive bucket are suppressed.
pub const SUPPRESS_BELOW: u64 = 5;

/// A referral as reports need it: the clear facts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    pub id: [u8; 32],
    pub sender: String,
    pub receiver: String,
    /// `None` when the category is sensitive (not in clear).
    pub category: Option<String>,
    pub urgency: Urgency,
    pub status: Status,
    pub config_version: u64,
    pub sent_ms: u64,
    pub acknowledged_ms: Option<u64>,
    pub accepted_ms: Option<u64>,
    pub declined_ms: Option<u64>,
    pub completed_ms: Option<u64>,
    pub reason: Option<String>,
}

impl ReportRow {
    pub fn from_record(r: &ReferralRecord) -> Self {
        Self {
            id: r.id.0,
            sender: r.sender_org.clone(),
            receiver: r.receiver_org.clone(),
            category: r.category.clone(),
            urgency: r.urgency,
            status: r.status,
            config_version: r.config_version,
            sent_ms: r.sent_at.ms,
            acknowledged_ms: r.acknowledged_at.map(|h| h.ms),
            accepted_ms: r.accepted_at.map(|h| h.ms),
            declined_ms: r.declined_at.map(|h| h.ms),
            completed_ms: r.completed_at.map(|h| h.ms),
            reason: r.decline_reason.clone(),
        }
    }
}

/// A count as shown: exact, or suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Shown {
    Count(u64),
    /// Fewer than five, in a sensitive bucket: "< 5".
    Suppressed(String),
}

impl Shown {
    fn of(n: u64, sensitive: bool) -> Self {
        if sensitive && n > 0 && n < SUPPRESS_BELOW {
            Shown::Suppressed("< 5".into())
        } else {
            Shown::Count(n)
        }
    }

    pub fn text(&self) -> String {
        match self {
            Shown::Count(n) => n.to_string(),
            Shown::Suppressed(s) => s.clone(),
        }
    }
}

/// Durations in hours: median, 90th percentile, and the share within the SOP deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub count: u64,
    pub median_hours: Option<f64>,
    pub p90_hours: Option<f64>,
    pub within_deadline_pct: Option<f64>,
}

/// An overdue referral, by its pseudonymous id and clear facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overdue {
    pub referral: String,
    pub sender: String,
    pub receiver: String,
    pub category: String,
    pub urgency: String,
    pub sent: String,
    pub what: String,
}

/// A stale map entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stale {
    pub org: String,
    pub service: String,
    pub site: String,
    pub verified: String,
}

/// A coordination report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mechanism: String,
    pub from: String,
    pub to: String,
    pub generated: String,
    pub referrals: u64,
    pub by_category: Vec<(String, Shown)>,
    pub by_sender: Vec<(String, u64)>,
    pub by_receiver: Vec<(String, u64)>,
    pub by_status: Vec<(String, u64)>,
    pub by_urgency: Vec<(String, u64)>,
    pub declines_by_reason: Vec<(String, u64)>,
    /// Accepted (or completed) among those decided.
    pub acceptance_rate_pct: Option<f64>,
    /// Completed among those accepted.
    pub completion_rate_pct: Option<f64>,
    pub time_to_acknowledge: Timing,
    pub time_to_accept: Timing,
    pub overdue: Vec<Overdue>,
    pub gaps: Vec<crate::map::Gap>,
    pub stale: Vec<Stale>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn timing(mut samples: Vec<(f64, f64)>) -> Timing {
    // (hours taken, deadline hours)
    let count = samples.len() as u64;
    let within = samples.iter().filter(|(h, d)| h <= d).count();
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let hours: Vec<f64> = samples.iter().map(|s| s.0).collect();
    Timing {
        count,
        median_hours: percentile(&hours, 0.5),
        p90_hours: percentile(&hours, 0.9),
        within_deadline_pct: (count > 0).then(|| 100.0 * within as f64 / count as f64),
    }
}

fn sorted_counts(map: BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

fn ms_to_time(ms: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The counts and timings of a report, row by row.
#[derive(Default)]
struct Tally {
    total: u64,
    decided: u64,
    accepted: u64,
    completed: u64,
    by_category: BTreeMap<String, u64>,
    by_sender: BTreeMap<String, u64>,
    by_receiver: BTreeMap<String, u64>,
    by_status: BTreeMap<String, u64>,
    by_urgency: BTreeMap<String, u64>,
    reasons: BTreeMap<String, u64>,
    /// (hours taken, hours the SOP allows) to acknowledge, and to accept or decline.
    ack: Vec<(f64, f64)>,
    acc: Vec<(f64, f64)>,
    overdue: Vec<Overdue>,
}

impl Tally {
    /// Counts one referral (invalid ones count nowhere).
    fn add(&mut self, row: &ReportRow, m: &Mechanism, now: OffsetDateTime) {
        if row.status == Status::Invalid {
            return;
        }
        self.total += 1;
        let category = row
            .category
            .clone()
            .unwrap_or_else(|| SENSITIVE.to_string());
        *self.by_category.entry(category.clone()).or_default() += 1;
        *self
            .by_sender
            .entry(m.org_name(&row.sender).to_string())
            .or_default() += 1;
        *self
            .by_receiver
            .entry(m.org_name(&row.receiver).to_string())
            .or_default() += 1;
        *self
            .by_status
            .entry(row.status.as_str().to_string())
            .or_default() += 1;
        *self
            .by_urgency
            .entry(row.urgency.as_str().to_string())
            .or_default() += 1;
        if let Some(r) = &row.reason {
            *self.reasons.entry(r.clone()).or_default() += 1;
        }
        let is_accepted = row.accepted_ms.is_some();
        if is_accepted || row.declined_ms.is_some() {
            self.decided += 1;
        }
        if is_accepted {
            self.accepted += 1;
            if row.completed_ms.is_some() {
                self.completed += 1;
            }
        }
        self.time(row, m);
        if let Some(what) =
            crate::fold::overdue_at(row.status, row.urgency, ms_to_time(row.sent_ms), m, now)
        {
            self.overdue.push(Overdue {
                referral: crate::config::Hash32(row.id).short(),
                sender: m.org_name(&row.sender).to_string(),
                receiver: m.org_name(&row.receiver).to_string(),
                category,
                urgency: row.urgency.as_str().into(),
                sent: crate::time_fmt::readable(ms_to_time(row.sent_ms)),
                what: what.as_str().into(),
            });
        }
    }

    /// The time the receiver took to acknowledge and to decide, beside what the SOP allows.
    fn time(&mut self, row: &ReportRow, m: &Mechanism) {
        let deadlines = m.doc.sop.urgency.for_level(row.urgency);
        let hours = |at: u64| at.saturating_sub(row.sent_ms) as f64 / 3_600_000.0;
        if let Some(a) = row.acknowledged_ms {
            self.ack
                .push((hours(a), f64::from(deadlines.acknowledge_hours)));
        }
        if let Some(a) = row.accepted_ms.or(row.declined_ms) {
            self.acc.push((hours(a), f64::from(deadlines.accept_hours)));
        }
    }
}

/// Builds the report of the referrals sent in [from, to) from the time index's rows.
pub fn build(
    rows: impl IntoIterator<Item = ReportRow>,
    m: &Mechanism,
    profiles: &BTreeMap<String, crate::map::Profile>,
    from: OffsetDateTime,
    to: OffsetDateTime,
    now: OffsetDateTime,
) -> Report {
    let mut t = Tally::default();
    for row in rows {
        t.add(&row, m, now);
    }
    let mut by_category: Vec<(String, Shown)> = sorted_counts(t.by_category)
        .into_iter()
        .map(|(c, n)| {
            let sensitive = c == SENSITIVE;
            (c, Shown::of(n, sensitive))
        })
        .collect();
    by_category.sort_by(|a, b| a.0.cmp(&b.0));
    let rate = |part: u64, of: u64| (of > 0).then(|| 100.0 * part as f64 / of as f64);
    Report {
        mechanism: m.doc.mechanism.clone(),
        from: crate::time_fmt::rfc3339(from),
        to: crate::time_fmt::rfc3339(to),
        generated: crate::time_fmt::rfc3339(now),
        referrals: t.total,
        by_category,
        by_sender: sorted_counts(t.by_sender),
        by_receiver: sorted_counts(t.by_receiver),
        by_status: sorted_counts(t.by_status),
        by_urgency: sorted_counts(t.by_urgency),
        declines_by_reason: sorted_counts(t.reasons),
        acceptance_rate_pct: rate(t.accepted, t.decided),
        completion_rate_pct: rate(t.completed, t.accepted),
        time_to_acknowledge: timing(t.ack),
        time_to_accept: timing(t.acc),
        overdue: t.overdue,
        gaps: crate::map::gaps(profiles, m),
        stale: stale_entries(profiles, m, now),
    }
}

/// The map's entries not verified for too long.
fn stale_entries(
    profiles: &BTreeMap<String, crate::map::Profile>,
    m: &Mechanism,
    now: OffsetDateTime,
) -> Vec<Stale> {
    profiles
        .values()
        .flat_map(|p| p.services.iter().map(move |s| (p, s)))
        .filter(|(_, s)| crate::map::stale(s, now))
        .map(|(p, s)| Stale {
            org: m.org_name(&p.org).to_string(),
            service: s.name.en.clone(),
            site: s.site.clone(),
            verified: s.verified.clone(),
        })
        .collect()
}

impl Report {
    /// The report as CSV sections (one table after another), for meeting minutes.
    pub fn csv(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "mechanism,{}\nfrom,{}\nto,{}\nreferrals,{}\n\n",
            esc(&self.mechanism),
            self.from,
            self.to,
            self.referrals
        ));
        let shown = self.by_category.iter().map(|(k, v)| (k.clone(), v.text()));
        csv_section(&mut out, "category", shown);
        for (title, counts) in [
            ("sending partner", &self.by_sender),
            ("receiving partner", &self.by_receiver),
            ("status", &self.by_status),
            ("urgency", &self.by_urgency),
            ("decline reason", &self.declines_by_reason),
        ] {
            let rows = counts.iter().map(|(k, v)| (k.clone(), v.to_string()));
            csv_section(&mut out, title, rows);
        }
        self.csv_indicators(&mut out);
        self.csv_lists(&mut out);
        out
    }

    /// The rates and timings.
    fn csv_indicators(&self, out: &mut String) {
        let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.1}"));
        out.push_str("indicator,value\n");
        out.push_str(&format!(
            "acceptance rate %,{}\n",
            f(self.acceptance_rate_pct)
        ));
        out.push_str(&format!(
            "completion rate %,{}\n",
            f(self.completion_rate_pct)
        ));
        for (name, t) in [
            ("acknowledge", &self.time_to_acknowledge),
            ("accept", &self.time_to_accept),
        ] {
            out.push_str(&format!("time to {name} median h,{}\n", f(t.median_hours)));
            out.push_str(&format!("time to {name} p90 h,{}\n", f(t.p90_hours)));
            out.push_str(&format!(
                "time to {name} within SOP deadline %,{}\n",
                f(t.within_deadline_pct)
            ));
        }
    }

    /// The overdue referrals, the gaps and the stale entries.
    fn csv_lists(&self, out: &mut String) {
        out.push_str("\noverdue referral,sender,receiver,category,urgency,sent,what\n");
        for o in &self.overdue {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                o.referral,
                esc(&o.sender),
                esc(&o.receiver),
                esc(&o.category),
                o.urgency,
                o.sent,
                esc(&o.what)
            ));
        }
        out.push_str("\ngap site,category,listed but unavailable\n");
        for g in &self.gaps {
            out.push_str(&format!("{},{},{}\n", g.site, g.category, g.unavailable));
        }
        out.push_str("\nstale entry partner,service,site,verified\n");
        for s in &self.stale {
            out.push_str(&format!(
                "{},{},{},{}\n",
                esc(&s.org),
                esc(&s.service),
                s.site,
                s.verified
            ));
        }
    }
}

/// A CSV cell, formulas neutralised.
fn esc(s: &str) -> String {
    crate::csv::cell(s).into_owned()
}

/// One titled table of counts.
fn csv_section(out: &mut String, title: &str, rows: impl Iterator<Item = (String, String)>) {
    out.push_str(&format!("{title},count\n"));
    for (k, v) in rows {
        out.push_str(&format!("{},{}\n", esc(&k), v));
    }
    out.push('\n');
}
