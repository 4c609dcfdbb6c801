//! `passerelle report`: the coordination meeting's figures, as a table, CSV or JSON.

use anyhow::{Result, bail};
use passerelle_core::report::Report;
use passerelle_core::time_fmt;
use time::OffsetDateTime;

use crate::cli::table;
use crate::client;
use crate::datadir::{DataDir, Passphrases};
use crate::rpc::Request;
use crate::util::parse_date;

pub fn run(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    from: Option<String>,
    to: Option<String>,
    format: &str,
) -> Result<()> {
    if !["table", "csv", "json"].contains(&format) {
        bail!("`{format}` is not a report format (table, csv, json)");
    }
    let now = OffsetDateTime::now_utc();
    let from = match from {
        Some(f) => parse_date(&f)?,
        None => now - time::Duration::days(30),
    };
    let to = match to {
        Some(t) => parse_date(&t)?,
        None => now + time::Duration::seconds(1),
    };
    if to <= from {
        bail!("--to must come after --from");
    }
    // Whole seconds, as the dates travel (RFC 3339) and as reports name them.
    let whole = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
    let report: Report = client::call(
        dir,
        pass,
        user,
        Request::Report {
            from: whole(from),
            to: whole(to),
        },
    )?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        "csv" => print!("{}", report.csv()),
        _ => print_table(&report),
    }
    Ok(())
}

fn print_table(r: &Report) {
    print_summary(r);
    println!();
    print_counts(r);
    println!();
    print_overdue(r);
    println!();
    print_map_health(r);
}

/// A figure with one decimal, or a dash when there is none.
fn one_decimal(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |x| format!("{x:.1}"))
}

/// A date the report wrote (RFC 3339) for a person; one it could not have written is left out.
fn readable(rfc3339: &str) -> String {
    time_fmt::parse_rfc3339(rfc3339)
        .map(time_fmt::readable)
        .unwrap_or_default()
}

/// The period, the referrals in it, and how fast and how often they were taken up.
fn print_summary(r: &Report) {
    let f = one_decimal;
    println!("{}", r.mechanism);
    println!(
        "Referrals sent {} to {}: {}",
        readable(&r.from),
        readable(&r.to),
        r.referrals
    );
    println!(
        "Accepted {}% of those decided; completed {}% of those accepted.",
        f(r.acceptance_rate_pct),
        f(r.completion_rate_pct)
    );
    for (name, t) in [
        ("acknowledge", &r.time_to_acknowledge),
        ("accept or decline", &r.time_to_accept),
    ] {
        println!(
            "Time to {name}: median {} h, 90th percentile {} h, {}% within the SOP deadline ({} referrals).",
            f(t.median_hours),
            f(t.p90_hours),
            f(t.within_deadline_pct),
            t.count
        );
    }
}

/// Referrals counted by category, sender, receiver, status and decline reason.
fn print_counts(r: &Report) {
    let rows = |v: &[(String, u64)]| -> Vec<Vec<String>> {
        v.iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect()
    };
    let by_cat: Vec<Vec<String>> = r
        .by_category
        .iter()
        .map(|(k, n)| vec![k.clone(), n.text()])
        .collect();
    print!(
        "{}",
        table::render(&["SERVICE CATEGORY", "REFERRALS"], &by_cat)
    );
    println!();
    print!(
        "{}",
        table::render(&["SENDING PARTNER", "REFERRALS"], &rows(&r.by_sender))
    );
    println!();
    print!(
        "{}",
        table::render(&["RECEIVING PARTNER", "REFERRALS"], &rows(&r.by_receiver))
    );
    println!();
    print!(
        "{}",
        table::render(&["STATUS", "REFERRALS"], &rows(&r.by_status))
    );
    if !r.declines_by_reason.is_empty() {
        println!();
        print!(
            "{}",
            table::render(
                &["DECLINE REASON", "REFERRALS"],
                &rows(&r.declines_by_reason)
            )
        );
    }
}

/// The referrals past their SOP deadline.
fn print_overdue(r: &Report) {
    if r.overdue.is_empty() {
        println!("No referral is overdue.");
    } else {
        let o: Vec<Vec<String>> = r
            .overdue
            .iter()
            .map(|o| {
                vec![
                    o.referral.clone(),
                    o.sent.clone(),
                    o.sender.clone(),
                    o.receiver.clone(),
                    o.category.clone(),
                    o.urgency.clone(),
                    o.what.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(
                &[
                    "OVERDUE", "SENT", "FROM", "TO", "CATEGORY", "URGENCY", "WHAT"
                ],
                &o
            )
        );
    }
}

/// Service gaps and map entries not verified lately.
fn print_map_health(r: &Report) {
    let g: Vec<Vec<String>> = r
        .gaps
        .iter()
        .map(|g| vec![g.site.clone(), g.category.clone()])
        .collect();
    println!(
        "Service gaps (no provider that can take people now): {}",
        g.len()
    );
    if !g.is_empty() {
        print!("{}", table::render(&["SITE", "CATEGORY"], &g));
    }
    println!();
    let s: Vec<Vec<String>> = r
        .stale
        .iter()
        .map(|s| {
            vec![
                s.org.clone(),
                s.service.clone(),
                s.site.clone(),
                s.verified.clone(),
            ]
        })
        .collect();
    println!("Map entries not verified in 90 days: {}", s.len());
    if !s.is_empty() {
        print!(
            "{}",
            table::render(&["PARTNER", "SERVICE", "SITE", "VERIFIED"], &s)
        );
    }
}
