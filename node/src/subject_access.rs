//! The person's right to know (issue 12): a printable page, in the person's language, of
//! everything this node holds about them — their recorded information, every referral made for
//! them with what each partner received, their consent and its history, and what happened to
//! the case. Built from the typed case view; the request that fetches it is audited.

use anyhow::Result;
use askama::Template;
use passerelle_core::config::Mechanism;
use passerelle_core::engine::{CaseView, Happened};
use passerelle_core::payload::Consent;

use crate::i18n::{self, t};

#[derive(Template)]
#[template(path = "case_export.html")]
struct ExportPage {
    lang: &'static str,
    dir: &'static str,
    title: String,
    mechanism: String,
    intro: String,
    person_title: String,
    person: Vec<(String, String)>,
    consent_title: String,
    consent: Vec<String>,
    referrals_title: String,
    nothing: String,
    referrals: Vec<ExportReferral>,
    timeline_title: String,
    timeline: Vec<(String, String, String)>,
    printed: String,
}

struct ExportReferral {
    to: String,
    category: String,
    status: String,
    sent: String,
    received_title: String,
    nothing_shared: String,
    shared: Vec<(String, String)>,
}

/// Who asks, from which node, and when: for the page's footer.
pub struct Printed<'a> {
    pub user: &'a str,
    pub org: &'a str,
    pub at: time::OffsetDateTime,
}

/// The page, in `lang` (French when the language is not one Passerelle speaks).
pub fn render(
    view: &CaseView,
    m: Option<&Mechanism>,
    lang: &str,
    printed: &Printed<'_>,
) -> Result<String> {
    let lang = i18n::lang(lang);
    let org = |o: &str| m.map_or(o.to_string(), |m| m.org_name(o).to_string());
    let category = |c: &str| {
        m.and_then(|m| m.category(c))
            .map_or(c.to_string(), |c| c.name.get(lang).to_string())
    };
    let mechanism = m.map_or(String::new(), |m| m.doc.mechanism.clone());
    let person = person_rows(&view.data, lang, &category);
    let referrals = view
        .referrals
        .iter()
        .map(|r| ExportReferral {
            to: org(&r.to_org),
            category: r.category.as_deref().map_or(String::new(), category),
            status: i18n::status(lang, r.status),
            sent: r.sent_at.clone(),
            received_title: t(lang, "export-received", &[("org", &org(&r.to_org))]),
            nothing_shared: t(lang, "export-nothing-shared", &[]),
            shared: r
                .shared
                .iter()
                .map(|(k, v)| (i18n::field(lang, k), v.clone()))
                .collect(),
        })
        .collect();
    let timeline = view
        .timeline
        .iter()
        .map(|e| {
            (
                e.at.clone(),
                i18n::happened(lang, &e.happened, org),
                org(&e.org),
            )
        })
        .collect();
    let page = ExportPage {
        lang,
        dir: if i18n::rtl(lang) { "rtl" } else { "ltr" },
        title: t(lang, "export-title", &[]),
        intro: t(
            lang,
            "export-intro",
            &[("org", &org(printed.org)), ("mechanism", &mechanism)],
        ),
        mechanism,
        person_title: t(lang, "case-person", &[]),
        person,
        consent_title: t(lang, "consent-title", &[]),
        consent: consent_history(view, lang, &org),
        referrals_title: t(lang, "case-referrals", &[]),
        nothing: t(lang, "nothing", &[]),
        referrals,
        timeline_title: t(lang, "case-timeline", &[]),
        timeline,
        printed: t(
            lang,
            "export-printed",
            &[
                ("at", &passerelle_core::time_fmt::readable(printed.at)),
                ("user", printed.user),
                ("org", &org(printed.org)),
            ],
        ),
    };
    Ok(page.render()?)
}

/// The person's recorded information, each field with its label in `lang`.
fn person_rows(
    data: &passerelle_core::payload::CaseData,
    lang: &str,
    category: &impl Fn(&str) -> String,
) -> Vec<(String, String)> {
    let mut person: Vec<(String, String)> = passerelle_core::payload::SHAREABLE_FIELDS
        .iter()
        .filter_map(|f| match *f {
            "needs" | "vulnerabilities" => None,
            field => data
                .person
                .field(field)
                .map(|v| (i18n::field(lang, field), v)),
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !data.needs.is_empty() {
        let needs: Vec<String> = data.needs.iter().map(|n| category(n)).collect();
        person.push((i18n::field(lang, "needs"), needs.join(", ")));
    }
    if !data.vulnerabilities.is_empty() {
        let label = i18n::field(lang, "vulnerabilities");
        person.push((label, data.vulnerabilities.join(", ")));
    }
    person
}

/// The consent in force, then each time it was recorded again or withdrawn.
fn consent_history(view: &CaseView, lang: &str, org: &impl Fn(&str) -> String) -> Vec<String> {
    let mut lines = consent_lines(&view.data.consent, lang, org);
    for entry in &view.timeline {
        if matches!(
            entry.happened,
            Happened::Consent | Happened::ConsentWithdrawn { .. }
        ) {
            let what = i18n::happened(lang, &entry.happened, org);
            lines.push(format!("{} — {what}", entry.at));
        }
    }
    lines
}

fn consent_lines(c: &Consent, lang: &str, org: &impl Fn(&str) -> String) -> Vec<String> {
    let at = [("at", c.recorded_at.as_str())];
    let mut lines = vec![if c.given {
        t(lang, "export-consent-given", &at)
    } else {
        t(lang, "export-consent-refused", &at)
    }];
    match c.guardian_given {
        Some(true) => lines.push(t(lang, "export-guardian-given", &[])),
        Some(false) => lines.push(t(lang, "export-guardian-refused", &[])),
        None => {}
    }
    let mut scope: Vec<String> = c.scope_orgs.iter().map(|o| org(o)).collect();
    scope.extend(c.scope_categories.iter().cloned());
    if !scope.is_empty() {
        lines.push(t(lang, "export-scope", &[("scope", &scope.join(", "))]));
    }
    lines
}
