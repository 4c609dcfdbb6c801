//! The referrals: the inbox and the outbox, one referral and the steps taken on it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::Session;
use super::{
    PageCtx, WebState, field, form_csrf, lang_of, message, or_nothing, page, readable, render, zone,
};
use crate::i18n;
use crate::rpc::referral::Direction;
use crate::rpc::words;
use crate::rpc::{self, Request};
use passerelle_core::engine::{ReferralView, StepView};
use passerelle_core::event::Transition;
use passerelle_core::limits::REFERRAL_PAGE_ROWS;

#[derive(Template)]
#[template(path = "referrals.html")]
struct ReferralsPage {
    page: PageCtx,
    heading: String,
    rows: Vec<RefRow>,
    /// `box=…` of this page, for the filter's links.
    which_box: &'static str,
    /// Only the referrals still waiting for the receiver.
    open: bool,
    /// "Only the newest N are shown", when the page is full.
    cut: String,
}

#[derive(Deserialize)]
pub(super) struct BoxQuery {
    #[serde(default)]
    r#box: String,
    /// `1`: only the referrals still waiting for the receiver.
    #[serde(default)]
    open: String,
}

pub(super) async fn referrals(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<BoxQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let outbox = q.r#box == "outbox";
    let open = q.open == "1";
    let p = page(
        &headers,
        Some(&session),
        &state.org,
        if outbox { "nav-outbox" } else { "nav-inbox" },
    );
    let m = state.mechanism().await;
    let list: Vec<ReferralView> = or_nothing(
        "the referral list",
        state
            .call(
                &session.user,
                Request::ReferralList {
                    direction: if outbox {
                        Direction::Outbox
                    } else {
                        Direction::Inbox
                    },
                    status: None,
                    open,
                    limit: Some(REFERRAL_PAGE_ROWS),
                },
            )
            .await,
    );
    let lang = p.lang;
    let zone = zone(m.as_deref(), &state.org);
    let cut = if list.len() >= REFERRAL_PAGE_ROWS {
        i18n::t(
            lang,
            "referrals-newest",
            &[("n", &REFERRAL_PAGE_ROWS.to_string())],
        )
    } else {
        String::new()
    };
    render(ReferralsPage {
        heading: p.title.clone(),
        rows: list
            .iter()
            .map(|r| ref_row(r, m.as_deref(), lang, zone))
            .collect(),
        which_box: if outbox { "outbox" } else { "inbox" },
        open,
        cut,
        page: p,
    })
}

#[derive(Template)]
#[template(path = "referral.html")]
struct ReferralPage {
    page: PageCtx,
    r: RefRow,
    readable: bool,
    shared: Vec<(String, String, bool)>,
    /// The fields this partner did not receive, named in the page's language.
    not_shared: String,
    /// Why nothing can be shown, when this node cannot read the referral.
    sealed: String,
    note: String,
    /// The steps taken, oldest first.
    steps: Vec<StepRow>,
    /// A completed referral's outcome, when readable here.
    outcome: String,
    /// The case behind it, when this organisation holds it (the sender's).
    case_link: Option<String>,
    /// Where the case is kept, when it is not here.
    case_elsewhere: String,
    /// The steps the referral's status lets this organisation take now.
    can: Can,
    reasons: Vec<(String, String)>,
}

/// Which step buttons the page offers: only those `Status::allows`, to the organisation the
/// step belongs to.
struct Can {
    ack: bool,
    accept: bool,
    decline: bool,
    complete: bool,
    withdraw: bool,
}

impl Can {
    fn any_receiver_step(&self) -> bool {
        self.ack || self.accept || self.decline || self.complete
    }
}

/// One row of the step history: when, which organisation and account, what, and its note.
struct StepRow {
    at: String,
    org: String,
    what: String,
    by: String,
    note: String,
    invalid: String,
}

/// "Not shared (or not recorded): …" with the fields a readable referral lacks; empty when it
/// carries them all.
fn not_shared(lang: &str, v: &ReferralView) -> String {
    let missing: Vec<String> = passerelle_core::payload::SHAREABLE_FIELDS
        .iter()
        .filter(|f| !v.shared.contains_key(**f))
        .map(|f| i18n::field(lang, f))
        .collect();
    if missing.is_empty() {
        return String::new();
    }
    i18n::t(
        lang,
        "referral-not-shared",
        &[("fields", &missing.join(", "))],
    )
}

async fn referral_page(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    id: &str,
    said: Said,
) -> Response {
    let mut p = page(headers, Some(session), &state.org, "nav-inbox");
    let m = state.mechanism().await;
    let v: ReferralView = match state
        .call_in(
            p.lang,
            &session.user,
            Request::ReferralShow { id: id.to_string() },
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return message(StatusCode::NOT_FOUND, p, e),
    };
    let lang = p.lang;
    let failed = matches!(said, Said::Error(_));
    match said {
        Said::Error(e) => p.flash = Some(e),
        Said::Done(t) => {
            p.notice = Some(i18n::t(
                lang,
                &format!("timeline-referral-{}", t.as_str()),
                &[],
            ));
        }
        Said::Nothing => {}
    }
    let zone = zone(m.as_deref(), &state.org);
    let receiver = v.to_org == *state.org;
    let sender = v.from_org == *state.org;
    let can = Can {
        ack: receiver && v.status.allows(Transition::Acknowledge),
        accept: receiver && v.status.allows(Transition::Accept),
        decline: receiver && v.status.allows(Transition::Decline),
        complete: receiver && v.status.allows(Transition::Complete),
        withdraw: sender && v.status.allows(Transition::Withdraw),
    };
    let org = |o: &str| {
        m.as_deref()
            .map_or(o.to_string(), |m| m.org_name(o).to_string())
    };
    let reasons = decline_reasons(m.as_deref(), lang);
    let mut r = render(ReferralPage {
        r: ref_row(&v, m.as_deref(), lang, zone),
        readable: v.readable,
        shared: shared_rows(lang, &v),
        not_shared: not_shared(lang, &v),
        sealed: if sender || receiver {
            p.t("detail-awaiting-key")
        } else {
            p.t("detail-not-addressed")
        },
        // No note: nothing shown.
        note: v.note.clone().unwrap_or_default(),
        steps: v
            .steps
            .iter()
            .map(|s| step_row(s, lang, zone, &org, &reasons))
            .collect(),
        // Not completed, or not readable here: no outcome line.
        outcome: v.outcome.clone().unwrap_or_default(),
        case_link: sender.then(|| format!("/cases/{}", v.case)),
        // Said to the receiver only: a bystander holds nothing sent to it.
        case_elsewhere: if sender || !receiver {
            String::new()
        } else {
            i18n::t(
                lang,
                "referral-case-elsewhere",
                &[("org", &org(&v.from_org))],
            )
        },
        can,
        reasons,
        page: p,
    });
    if failed {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

/// The shared fields: (label, value, whether it reads left to right), in the page's language.
fn shared_rows(lang: &str, v: &ReferralView) -> Vec<(String, String, bool)> {
    // In the order the case page lists a person's fields, not the keys' alphabetical one.
    let rank = |k: &str| {
        passerelle_core::payload::SHAREABLE_FIELDS
            .iter()
            .position(|f| *f == k)
            .unwrap_or(usize::MAX)
    };
    let mut fields: Vec<(&String, &String)> = v.shared.iter().collect();
    fields.sort_by_key(|(k, _)| rank(k));
    fields
        .into_iter()
        .map(|(k, value)| {
            (
                i18n::field(lang, k),
                shared_value(lang, k, value),
                super::reads_ltr(k),
            )
        })
        .collect()
}

/// A shared field's value as the page shows it: languages and sex named in the page's
/// language, the rest as the sender recorded it.
fn shared_value(lang: &str, field: &str, value: &str) -> String {
    match field {
        "languages" => {
            let codes: Vec<String> = value.split(',').map(|c| c.trim().to_string()).collect();
            i18n::language_names(lang, &codes)
        }
        "sex" => i18n::sex(lang, value),
        _ => value.to_string(),
    }
}

/// What the page says above itself: nothing, the step just taken, or why it was refused.
enum Said {
    Nothing,
    Done(Transition),
    Error(String),
}

/// The SOP's decline reasons, (id, name in `lang`).
fn decline_reasons(
    m: Option<&passerelle_core::config::Mechanism>,
    lang: &str,
) -> Vec<(String, String)> {
    m.map(|m| {
        m.doc
            .sop
            .decline_reasons
            .iter()
            .map(|r| (r.id.clone(), r.name.get(lang).to_string()))
            .collect()
    })
    // Not joined to a mechanism: no decline reasons to offer.
    .unwrap_or_default()
}

fn step_row(
    s: &StepView,
    lang: &str,
    zone: i16,
    org: &impl Fn(&str) -> String,
    reasons: &[(String, String)],
) -> StepRow {
    let mut what = i18n::t(
        lang,
        &format!("timeline-referral-{}", s.transition.as_str()),
        &[],
    );
    if let Some(reason) = &s.reason {
        let name = reasons
            .iter()
            .find(|(id, _)| id == reason)
            .map_or(reason.as_str(), |(_, n)| n.as_str());
        what.push_str(&format!(" ({name})"));
    }
    let mut note = s.note.clone().unwrap_or_default();
    if let Some(outcome) = &s.outcome {
        let said = i18n::t(lang, "detail-outcome", &[("outcome", outcome)]);
        note = if note.is_empty() {
            said
        } else {
            format!("{note} — {said}")
        };
    }
    StepRow {
        at: readable(Some(&s.at), zone),
        org: org(&s.org),
        what,
        // Not readable here: who took it inside the organisation is not shown.
        by: s.by.clone().unwrap_or_default(),
        note,
        invalid: s
            .invalid
            .as_ref()
            .map(|rule| {
                i18n::t(
                    lang,
                    "timeline-invalid",
                    &[("rule", &i18n::rule(lang, rule))],
                )
            })
            .unwrap_or_default(),
    }
}

#[derive(Deserialize)]
pub(super) struct DoneQuery {
    #[serde(default)]
    done: String,
}

pub(super) async fn referral_show(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    // A step just taken (the redirect after it names it): confirmed above the page. Any other
    // word is ignored: the page shows without a confirmation.
    let said = words::parse::<Transition>(&q.done).map_or(Said::Nothing, Said::Done);
    referral_page(&state, &headers, &session, &id, said).await
}

pub(super) async fn referral_step(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(state, headers, session, form_csrf(&form));
    // No transition given: the empty word, which `words::parse` refuses with its reason, shown
    // on the page; the note may be empty.
    let transition = words::parse::<Transition>(&field(&form, "transition").unwrap_or_default());
    if matches!(transition, Ok(Transition::Withdraw))
        && field(&form, "confirm").as_deref() != Some("yes")
    {
        let said = Said::Error(i18n::t(lang_of(&headers), "withdraw-confirm-missing", &[]));
        return referral_page(&state, &headers, &session, &id, said).await;
    }
    let request = transition.clone().map(|transition| {
        Request::ReferralStep(rpc::referral::StepRequest {
            id: id.clone(),
            transition,
            reason: field(&form, "reason"),
            note: field(&form, "note").unwrap_or_default(),
            outcome: field(&form, "outcome"),
        })
    });
    let answer = match request {
        Ok(request) => {
            state
                .call_in::<rpc::referral::Stepped>(lang_of(&headers), &session.user, request)
                .await
        }
        Err(e) => Err(e),
    };
    match (answer, transition) {
        (Ok(_), Ok(t)) => {
            // The step found the referral, so its id is hex; kept to hex digits all the same,
            // since it goes into a header.
            let id: String = id.chars().filter(char::is_ascii_hexdigit).collect();
            Redirect::to(&format!("/referrals/{id}?done={}", t.as_str())).into_response()
        }
        (Err(e), _) | (_, Err(e)) => {
            referral_page(&state, &headers, &session, &id, Said::Error(e)).await
        }
    }
}

pub struct RefRow {
    pub(super) id: String,
    pub(super) sent: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) category: String,
    pub(super) urgency: String,
    pub(super) urgency_class: String,
    pub(super) status: String,
    pub(super) status_class: String,
    pub(super) overdue: String,
    /// The person's first name, where this node can read it and it was shared.
    pub(super) person: String,
    /// The next SOP deadline, in the site's time zone; empty once decided.
    pub(super) due: String,
    /// How long until it ("5 h left") or since it ("2 h late").
    pub(super) left: String,
    pub(super) late: bool,
}

pub(super) fn ref_row(
    r: &ReferralView,
    m: Option<&passerelle_core::config::Mechanism>,
    lang: &str,
    zone: i16,
) -> RefRow {
    let org = |o: &str| m.map_or(o.to_string(), |m| m.org_name(o).to_string());
    let deadline = r
        .deadline
        .as_deref()
        .and_then(passerelle_core::time_fmt::parse_rfc3339);
    let (left, late) = deadline.map_or((String::new(), false), |d| {
        time_left(lang, d - time::OffsetDateTime::now_utc())
    });
    RefRow {
        id: r.id.clone(),
        sent: readable(Some(&r.sent_at), zone),
        person: r.shared.get("first_name").cloned().unwrap_or_default(),
        due: readable(r.deadline.as_deref(), zone),
        left,
        late,
        from: org(&r.from_org),
        to: org(&r.to_org),
        category: match &r.category {
            Some(code) => m
                .and_then(|m| m.category(code).map(|c| c.name.get(lang).to_string()))
                .unwrap_or_else(|| code.clone()),
            None => i18n::t(lang, "category-sensitive", &[]),
        },
        urgency: i18n::urgency(lang, r.urgency),
        urgency_class: r.urgency.as_str().to_string(),
        status: i18n::status(lang, r.status),
        status_class: r.status.as_str().to_string(),
        // Not overdue: no badge (the template shows none for an empty text).
        overdue: r
            .overdue
            .map(|o| i18n::overdue(lang, o))
            .unwrap_or_default(),
    }
}

/// "5 h left" or "2 h late" (days past two days), and whether it is late.
fn time_left(lang: &str, left: time::Duration) -> (String, bool) {
    let late = left.is_negative();
    let hours = left.whole_hours().unsigned_abs();
    let (key, n) = match (late, hours) {
        (false, h) if h < 48 => ("time-left-hours", h),
        (false, h) => ("time-left-days", h / 24),
        (true, h) if h < 48 => ("time-late-hours", h),
        (true, h) => ("time-late-days", h / 24),
    };
    (i18n::t(lang, key, &[("n", &n.to_string())]), late)
}
