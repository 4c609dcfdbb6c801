//! The indicators for coordinators: the report on a period, with its bar charts.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{PageCtx, WebState, message, page, render};
use crate::rpc::Request;
use passerelle_core::store::UserRole;

/// One bar, placed for the page's direction: the label at the start of the line, the bar
/// growing from the axis towards the end (right to left in Arabic), its value beyond it.
pub struct Bar {
    label: String,
    value: String,
    y: u32,
    width: u32,
    label_x: u32,
    rect_x: u32,
    value_x: u32,
}

/// The chart's width and where the bars start, in its coordinates.
const CHART_WIDTH: u32 = 640;
const AXIS_X: u32 = 230;

pub struct Chart {
    title: String,
    height: u32,
    bars: Vec<Bar>,
}

fn chart(rtl: bool, title: String, data: Vec<(String, String, u64)>) -> Chart {
    let max = data.iter().map(|d| d.2).max().unwrap_or(1).max(1);
    let bars: Vec<Bar> = data
        .into_iter()
        .enumerate()
        .map(|(i, (label, value, n))| {
            let width = ((n as f64 / max as f64) * 360.0).round().max(1.0) as u32;
            // Text anchors at its start, which is its right end in a right-to-left page.
            let (label_x, rect_x, value_x) = if rtl {
                let axis = CHART_WIDTH - AXIS_X;
                (CHART_WIDTH - 6, axis - width, axis - width - 6)
            } else {
                (6, AXIS_X, AXIS_X + width + 6)
            };
            Bar {
                label: label.chars().take(32).collect(),
                value,
                y: 8 + 22 * i as u32,
                width,
                label_x,
                rect_x,
                value_x,
            }
        })
        .collect();
    Chart {
        title,
        height: 16 + 22 * bars.len() as u32,
        bars,
    }
}

#[derive(Template)]
#[template(path = "indicators.html")]
struct IndicatorsPage {
    page: PageCtx,
    from: String,
    to: String,
    total: String,
    acceptance: String,
    completion: String,
    ack: String,
    accept: String,
    charts: Vec<Chart>,
    overdue: Vec<(String, String, String, String, String)>,
    stale: Vec<(String, String, String, String)>,
}

#[derive(Deserialize, Default)]
pub(super) struct PeriodQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// The indicators' bar charts: referrals by category, receiver, status and decline reason.
fn report_charts(
    p: &PageCtx,
    report: &passerelle_core::report::Report,
    cat_name: &dyn Fn(&str) -> String,
    reason_name: &dyn Fn(&str) -> String,
) -> Vec<Chart> {
    vec![
        chart(
            p.dir == "rtl",
            p.t("indicators-by-category"),
            report
                .by_category
                .iter()
                .map(|(c, n)| {
                    let count = match n {
                        passerelle_core::report::Shown::Count(x) => *x,
                        passerelle_core::report::Shown::Suppressed(_) => 1,
                    };
                    (cat_name(c), n.text(), count)
                })
                .collect(),
        ),
        chart(
            p.dir == "rtl",
            p.t("indicators-by-receiver"),
            report
                .by_receiver
                .iter()
                .map(|(k, n)| (k.clone(), n.to_string(), *n))
                .collect(),
        ),
        chart(
            p.dir == "rtl",
            p.t("indicators-by-status"),
            report
                .by_status
                .iter()
                .map(|(k, n)| (crate::i18n::status_word(p.lang, k), n.to_string(), *n))
                .collect(),
        ),
        chart(
            p.dir == "rtl",
            p.t("indicators-declines"),
            report
                .declines_by_reason
                .iter()
                .map(|(k, n)| (reason_name(k), n.to_string(), *n))
                .collect(),
        ),
    ]
}

/// The directory entries not verified lately: (organisation, service, site, verified).
fn stale_rows(report: &passerelle_core::report::Report) -> Vec<(String, String, String, String)> {
    report
        .stale
        .iter()
        .map(|x| {
            (
                x.org.clone(),
                x.service.clone(),
                x.site.clone(),
                x.verified.clone(),
            )
        })
        .collect()
}

pub(super) async fn indicators(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<PeriodQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    let p = page(&headers, Some(&session), &state.org, "indicators-title");
    if session.role == UserRole::Caseworker {
        let m = p.t("not-allowed");
        return message(StatusCode::FORBIDDEN, p, m);
    }
    let now = time::OffsetDateTime::now_utc();
    let from = crate::util::parse_date(&q.from).unwrap_or(now - time::Duration::days(30));
    let to = crate::util::parse_date(&q.to).unwrap_or(now + time::Duration::days(1));
    let report = state
        .call_in(
            p.lang,
            &session.user,
            Request::Report {
                from: from.replace_nanosecond(0).unwrap_or(from),
                to: to.replace_nanosecond(0).unwrap_or(to),
            },
        )
        .await;
    let report: passerelle_core::report::Report = match report {
        Ok(r) => r,
        Err(e) => return message(StatusCode::UNPROCESSABLE_ENTITY, p, e),
    };
    let m = state.mechanism().await;
    let lang = p.lang;
    let cat_name = |c: &str| {
        m.as_ref()
            .and_then(|m| m.category(c).map(|x| x.name.get(lang).to_string()))
            .unwrap_or_else(|| c.to_string())
    };
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.0} %"));
    let timing = |t: &passerelle_core::report::Timing| {
        format!(
            "{} {} h · {} {} h · {} {}",
            p.t("indicators-median"),
            t.median_hours.map_or("—".into(), |h| format!("{h:.1}")),
            p.t("indicators-p90"),
            t.p90_hours.map_or("—".into(), |h| format!("{h:.1}")),
            pct(t.within_deadline_pct),
            p.t("indicators-within"),
        )
    };
    let reason_name = |r: &str| {
        m.as_ref()
            .and_then(|m| m.doc.sop.decline_reasons.iter().find(|x| x.id == r))
            .map_or_else(|| r.to_string(), |x| x.name.get(lang).to_string())
    };
    let charts = report_charts(&p, &report, &cat_name, &reason_name);
    render(IndicatorsPage {
        from: from.date().to_string(),
        to: to.date().to_string(),
        total: report.referrals.to_string(),
        acceptance: pct(report.acceptance_rate_pct),
        completion: pct(report.completion_rate_pct),
        ack: timing(&report.time_to_acknowledge),
        accept: timing(&report.time_to_accept),
        charts,
        overdue: report
            .overdue
            .iter()
            .map(|o| {
                (
                    o.sent.clone(),
                    o.sender.clone(),
                    o.receiver.clone(),
                    cat_name(&o.category),
                    o.what.clone(),
                )
            })
            .collect(),
        stale: stale_rows(&report),
        page: p,
    })
}
