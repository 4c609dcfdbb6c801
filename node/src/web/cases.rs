//! The cases: the list, the new-case form and one case with its referrals and timeline.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::directory::{options_categories, options_sites};
use super::referrals::{RefRow, ref_row};
use super::session::Session;
use super::{
    PageCtx, WebState, field, form_csrf, lang_of, list, message, nonempty, not_joined, or_nothing,
    page, readable, render, zone,
};
use crate::i18n;
use crate::rpc::Request;
use crate::rpc::case::{CaseOpened, CaseStep, EventMade};
use passerelle_core::engine::{CaseSummary, CaseView, TimelineEntry};
use passerelle_core::event::EraseReason;
use passerelle_core::limits::CASE_PAGE_ROWS;
use passerelle_core::payload::{CaseData, Consent, Person};
use passerelle_core::words::{self, Word};

pub struct CaseRow {
    id: String,
    short: String,
    name: String,
    case_type: String,
    site: String,
    manager: String,
    status: String,
}

#[derive(Template)]
#[template(path = "cases.html")]
struct CasesPage {
    page: PageCtx,
    search: String,
    rows: Vec<CaseRow>,
    /// "Only the N most recently active are shown", when the page is full.
    cut: String,
}

#[derive(Deserialize, Default)]
pub(super) struct SearchQuery {
    #[serde(default)]
    search: String,
}

pub(super) async fn cases(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let p = page(&headers, Some(&session), &state.org, "nav-cases");
    let m = state.mechanism().await;
    let list: Vec<CaseSummary> = or_nothing(
        "the case list",
        state
            .call(
                &session.user,
                Request::CaseList {
                    search: nonempty(&q.search),
                    limit: Some(CASE_PAGE_ROWS),
                },
            )
            .await,
    );
    let rows: Vec<CaseRow> = list
        .into_iter()
        .map(|c| {
            let ct = c.case_type;
            let site = c.site;
            CaseRow {
                short: c.id.chars().take(12).collect(),
                id: c.id,
                name: c.name,
                case_type: m
                    .as_ref()
                    .and_then(|m| m.case_type(&ct).map(|x| x.name.get(p.lang).to_string()))
                    .unwrap_or(ct),
                site: m
                    .as_ref()
                    .and_then(|m| m.site(&site).map(|x| x.name.get(p.lang).to_string()))
                    .unwrap_or(site),
                manager: m
                    .as_ref()
                    .map_or(c.manager.clone(), |m| m.org_name(&c.manager).to_string()),
                status: i18n::case_status(p.lang, c.status),
            }
        })
        .collect();
    let cut = if rows.len() >= CASE_PAGE_ROWS {
        i18n::t(
            p.lang,
            "cases-newest",
            &[("n", &CASE_PAGE_ROWS.to_string())],
        )
    } else {
        String::new()
    };
    render(CasesPage {
        page: p,
        search: q.search,
        rows,
        cut,
    })
}

#[derive(Template)]
#[template(path = "case_new.html")]
struct CaseNewPage {
    page: PageCtx,
    /// (id, name, whether its people are children whatever their age).
    case_types: Vec<(String, String, bool)>,
    sites: Vec<(String, String)>,
    categories: Vec<(String, String)>,
    languages: Vec<(String, String)>,
    sexes: Vec<(String, String)>,
    /// The SOP's age below which a guardian's consent is needed (empty: none).
    guardian_age: String,
    consent_required: bool,
    /// What was typed, shown again after an error.
    typed: Typed,
    warn_consent: bool,
    warn_guardian: bool,
    error: Option<String>,
}

/// What the caseworker typed in a form, to show it again after an error: nothing typed is lost.
pub(super) struct Typed(pub(super) HashMap<String, String>);

impl Typed {
    /// A text field's value, empty when none was typed.
    pub(super) fn v(&self, k: &str) -> &str {
        self.0.get(k).map_or("", String::as_str)
    }

    /// Whether a select or a radio had this value.
    pub(super) fn is(&self, k: &str, value: &str) -> bool {
        self.v(k) == value
    }

    /// Whether a checkbox was ticked.
    pub(super) fn on(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    /// Whether the checkbox `prefix` + `id` (a need, a language) was ticked.
    pub(super) fn on_in(&self, prefix: &str, id: &str) -> bool {
        self.on(&format!("{prefix}{id}"))
    }
}

/// The consent rules the form checks as it is filled: (no consent of the person while the SOP
/// needs it, a child's case without the guardian's consent).
fn consent_warnings(
    m: &passerelle_core::config::Mechanism,
    form: &HashMap<String, String>,
) -> (bool, bool) {
    let sop = &m.doc.sop;
    let age = field(form, "age").and_then(|a| a.parse::<u32>().ok());
    let child = field(form, "case_type")
        .and_then(|ct| m.case_type(&ct))
        .is_some_and(|ct| ct.needs_guardian(sop, age));
    (
        sop.consent_required && !form.contains_key("consent_given"),
        sop.consent_required && child && !form.contains_key("guardian_given"),
    )
}

async fn case_new_page(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    typed: HashMap<String, String>,
    error: Option<String>,
) -> Response {
    let p = page(headers, Some(session), &state.org, "nav-new-case");
    let Some(m) = state.mechanism().await else {
        return not_joined(p);
    };
    let lang = p.lang;
    // A new form: nothing to warn of before anything is typed.
    let (warn_consent, warn_guardian) = if error.is_some() {
        consent_warnings(&m, &typed)
    } else {
        (false, false)
    };
    let mut r = render(CaseNewPage {
        case_types: m
            .doc
            .case_types
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    c.name.get(lang).to_string(),
                    c.guardian_consent,
                )
            })
            .collect(),
        sites: options_sites(&m, lang),
        categories: options_categories(&m, lang),
        languages: super::directory::options_languages(lang),
        sexes: i18n::SEX_CODES
            .iter()
            .map(|c| (c.to_string(), i18n::sex(lang, c)))
            .collect(),
        guardian_age: m
            .doc
            .sop
            .guardian_consent_under_age
            .map(|a| a.to_string())
            // No age rule: the form checks the case type alone.
            .unwrap_or_default(),
        consent_required: m.doc.sop.consent_required,
        typed: Typed(typed),
        warn_consent,
        warn_guardian,
        error: error.clone(),
        page: p,
    });
    if error.is_some() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

pub(super) async fn case_new(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let typed = HashMap::from([("explained_by".to_string(), session.user.clone())]);
    case_new_page(&state, &headers, &session, typed, None).await
}

pub(super) async fn case_create(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(mut form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(state, headers, session, form_csrf(&form));
    // The token is not typed: the page carries a fresh one.
    form.remove("csrf");
    let lang = lang_of(&headers);
    let data = case_data(&form);
    if let Err(e) = data.validate() {
        let said = i18n::payload(lang, &e).unwrap_or_else(|| e.to_string());
        return case_new_page(&state, &headers, &session, form, Some(said)).await;
    }
    if let Some(m) = state.mechanism().await
        && consent_warnings(&m, &form).1
        && !form.contains_key("save_without_guardian")
    {
        let e = i18n::t(lang, "consent-confirm-missing", &[]);
        return case_new_page(&state, &headers, &session, form, Some(e)).await;
    }
    match state
        .call_in::<CaseOpened>(
            lang,
            &session.user,
            Request::CaseOpen {
                data: Box::new(data),
            },
        )
        .await
    {
        Ok(CaseOpened { case }) => Redirect::to(&format!("/cases/{case}")).into_response(),
        Err(e) => case_new_page(&state, &headers, &session, form, Some(e)).await,
    }
}

/// The languages ticked in the form, then those typed as codes.
fn form_languages(form: &HashMap<String, String>) -> Vec<String> {
    let mut codes: Vec<String> = i18n::PERSON_LANGUAGES
        .iter()
        .filter(|c| form.contains_key(&format!("lang_{c}")))
        .map(|c| c.to_string())
        .collect();
    for other in list(form, "languages_other") {
        if !codes.contains(&other) {
            codes.push(other);
        }
    }
    codes
}

/// The case the new-case form describes.
fn case_data(form: &HashMap<String, String>) -> CaseData {
    let needs: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("need_").map(str::to_string))
        .collect();
    let guardian_given = (form.contains_key("guardian_given")
        || field(form, "guardian_name").is_some())
    .then(|| form.contains_key("guardian_given"));
    // A field left empty is an empty text: the engine refuses an empty case type, site or
    // explainer with its own reason, shown above the form; the other texts may be empty.
    CaseData {
        case_type: field(form, "case_type").unwrap_or_default(),
        site: field(form, "site").unwrap_or_default(),
        person: Person {
            first_name: field(form, "first_name"),
            last_name: field(form, "last_name"),
            age: field(form, "age").and_then(|a| a.parse::<u32>().ok()),
            sex: field(form, "sex"),
            nationality: field(form, "nationality"),
            languages: form_languages(form),
            phone: field(form, "phone"),
            location: field(form, "location"),
            health: field(form, "health"),
            protection: field(form, "protection"),
            ..Person::default()
        },
        needs,
        vulnerabilities: list(form, "vulnerabilities"),
        consent: Consent {
            given: form.contains_key("consent_given"),
            guardian_given,
            guardian_name: field(form, "guardian_name"),
            explained_by: field(form, "explained_by").unwrap_or_default(),
            explained: field(form, "explained").unwrap_or_default(),
            recorded_at: passerelle_core::time_fmt::rfc3339(time::OffsetDateTime::now_utc()),
            ..Consent::default()
        },
        notes: field(form, "notes").unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "case.html")]
struct CasePage {
    page: PageCtx,
    id: String,
    short: String,
    name: String,
    person: Vec<(String, String, bool)>,
    consent: String,
    determinations: String,
    referrals: Vec<RefRow>,
    timeline: Vec<(String, String, String, String)>,
    /// The other organisations (id, name), for a withdrawal's scope.
    partners: Vec<(String, String)>,
    /// The erasure reasons (word, words in the page's language).
    erase_reasons: Vec<(String, String)>,
}

pub(super) async fn case_show(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let p = page(&headers, Some(&session), &state.org, "nav-cases");
    let m = state.mechanism().await;
    let c: CaseView = match state
        .call_in(p.lang, &session.user, Request::CaseShow { id })
        .await
    {
        Ok(c) => c,
        Err(e) => return message(StatusCode::NOT_FOUND, p, e),
    };
    let person = &c.data.person;
    let lang = p.lang;
    let zone = zone(m.as_deref(), &state.org);
    let org = |o: &str| {
        m.as_ref()
            .map_or(o.to_string(), |m| m.org_name(o).to_string())
    };
    // A category or case type named in the timeline: its name in the page's language.
    let names = |id: &str| {
        m.as_ref()
            .and_then(|m| {
                m.category(id)
                    .map(|c| c.name.get(lang).to_string())
                    .or_else(|| m.case_type(id).map(|t| t.name.get(lang).to_string()))
            })
            .unwrap_or_else(|| id.to_string())
    };
    render(CasePage {
        short: c.id.chars().take(12).collect(),
        name: person_name(person),
        id: c.id.clone(),
        person: person_fields(&p, person),
        consent: consent_text(&p, zone, &c.data.consent),
        determinations: c
            .determinations
            .iter()
            .map(|o| org(o))
            .collect::<Vec<_>>()
            .join(", "),
        referrals: c
            .referrals
            .iter()
            .map(|r| ref_row(r, m.as_deref(), lang, zone))
            .collect(),
        timeline: c
            .timeline
            .iter()
            .map(|t| timeline_row(lang, zone, t, org, &names))
            .collect(),
        partners: m.as_ref().map_or_else(Vec::new, |m| {
            m.doc
                .organisations
                .iter()
                .filter(|o| o.id != *state.org)
                .map(|o| (o.id.clone(), o.display_name().to_string()))
                .collect()
        }),
        erase_reasons: EraseReason::ALL
            .iter()
            .map(|r| {
                let word = r.as_str();
                (word.to_string(), p.t(&format!("erase-reason-{word}")))
            })
            .collect(),
        page: p,
    })
}

/// The person withdrew consent: for the partners ticked, or every partner when none is.
pub(super) async fn case_withdraw_consent(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let value = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    check_csrf!(state, headers, session, value("csrf"));
    let orgs = form
        .iter()
        .filter(|(k, _)| k == "org")
        .map(|(_, v)| v.clone())
        .collect();
    let step = CaseStep::WithdrawConsent {
        orgs,
        categories: Vec::new(),
    };
    case_step(&state, &headers, &session, id, step).await
}

/// The case manager erases the case, with its reason, once the box saying so is ticked.
pub(super) async fn case_erase(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    check_csrf!(state, headers, session, form_csrf(&form));
    let p = page(&headers, Some(&session), &state.org, "nav-cases");
    if field(&form, "confirm").is_none() {
        let m = p.t("erase-confirm-missing");
        return message(StatusCode::BAD_REQUEST, p, m);
    }
    let reason = match words::parse::<EraseReason>(&field(&form, "reason").unwrap_or_default()) {
        Ok(reason) => reason,
        Err(e) => return message(StatusCode::BAD_REQUEST, p, e),
    };
    case_step(&state, &headers, &session, id, CaseStep::Erase { reason }).await
}

/// Records a step of a case and shows the case again (or, once erased, the list of cases).
async fn case_step(
    state: &WebState,
    headers: &HeaderMap,
    session: &Session,
    id: String,
    action: CaseStep,
) -> Response {
    let erase = matches!(action, CaseStep::Erase { .. });
    let request = Request::CaseAction {
        id: id.clone(),
        action,
        note: String::new(),
    };
    let answer = state
        .call_in::<EventMade>(lang_of(headers), &session.user, request)
        .await;
    match answer {
        Ok(_) if erase => Redirect::to("/cases").into_response(),
        Ok(_) => Redirect::to(&format!("/cases/{id}")).into_response(),
        Err(e) => {
            let p = page(headers, Some(session), &state.org, "error-title");
            message(StatusCode::CONFLICT, p, e)
        }
    }
}

/// The person's own copy of everything this node holds about them, printable, in the page's
/// language (the request is audited as an export).
pub(super) async fn case_export(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = session_or_login!(state, headers);
    require_cases!(state, headers, session);
    let p = page(&headers, Some(&session), &state.org, "nav-cases");
    let m = state.mechanism().await;
    let c: CaseView = match state
        .call_in(p.lang, &session.user, Request::CaseExport { id })
        .await
    {
        Ok(c) => c,
        Err(e) => return message(StatusCode::NOT_FOUND, p, e),
    };
    let printed = crate::subject_access::Printed {
        user: &session.user,
        org: &state.org,
        at: time::OffsetDateTime::now_utc(),
    };
    match crate::subject_access::render(&c, m.as_deref(), p.lang, &printed) {
        Ok(text) => super::html(text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("template: {e}")).into_response(),
    }
}

/// The person's recorded fields, each with its label in the page's language (empty ones left
/// out).
fn person_fields(p: &PageCtx, person: &Person) -> Vec<(String, String, bool)> {
    let mut fields = Vec::new();
    for (k, label) in [
        ("first_name", "field-first-name"),
        ("last_name", "field-last-name"),
        ("age", "field-age"),
        ("sex", "field-sex"),
        ("nationality", "field-nationality"),
        ("phone", "field-phone"),
        ("location", "field-location"),
        ("health", "field-health"),
        ("protection", "field-protection"),
    ] {
        if let Some(v) = person.field(k).filter(|v| !v.is_empty()) {
            let v = if k == "sex" { i18n::sex(p.lang, &v) } else { v };
            fields.push((p.t(label), v, super::reads_ltr(k)));
        }
    }
    if !person.languages.is_empty() {
        let names = i18n::language_names(p.lang, &person.languages);
        fields.push((p.t("col-languages"), names, false));
    }
    fields
}

/// The consent in one line: given or not, who explained it, when it was recorded (in the
/// site's time zone), and the guardian's where one is involved.
fn consent_text(p: &PageCtx, zone: i16, consent: &Consent) -> String {
    let mark = |given: bool| if given { "✓" } else { "✗" };
    let mut text = format!(
        "{} — {} ({})",
        mark(consent.given),
        consent.explained_by,
        readable(Some(&consent.recorded_at), zone)
    );
    if let Some(guardian) = consent.guardian_given {
        text.push_str(&format!(
            " · {} {}",
            p.t("consent-guardian"),
            mark(guardian)
        ));
    }
    text
}

/// One step of the case's timeline in `lang`: (when, what happened, by which organisation,
/// the detail); a step the mechanism's rules refused says which rule.
fn timeline_row(
    lang: &str,
    zone: i16,
    t: &TimelineEntry,
    org: impl Fn(&str) -> String + Copy,
    names: &dyn Fn(&str) -> String,
) -> (String, String, String, String) {
    let mut what = i18n::happened(lang, &t.happened, org);
    if let Some(rule) = &t.invalid {
        what.push_str(&format!(
            " — {}",
            i18n::t(
                lang,
                "timeline-invalid",
                &[("rule", &i18n::rule(lang, rule))]
            )
        ));
    }
    (
        readable(Some(&t.at), zone),
        what,
        org(&t.org),
        i18n::detail(lang, &t.detail, names),
    )
}

/// The person's first and last names, as far as they were recorded.
pub(super) fn person_name(person: &Person) -> String {
    // A name not recorded is left out.
    [
        person.first_name.clone().unwrap_or_default(),
        person.last_name.clone().unwrap_or_default(),
    ]
    .join(" ")
    .trim()
    .to_string()
}
