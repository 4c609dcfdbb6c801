//! Translations with Project Fluent: French, English and Arabic (right to left), embedded in
//! the binary so nothing needs the internet.

use std::collections::HashMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use passerelle_core::engine::{CaseStatus, Detail, Happened};
use passerelle_core::event::Urgency;
use passerelle_core::fold::{Overdue, Rule, Status};
use unic_langid::LanguageIdentifier;

/// The languages Passerelle speaks.
pub const LANGS: [&str; 3] = ["fr", "en", "ar"];

const SOURCES: [(&str, &str); 3] = [
    ("fr", include_str!("../i18n/fr.ftl")),
    ("en", include_str!("../i18n/en.ftl")),
    ("ar", include_str!("../i18n/ar.ftl")),
];

fn bundles() -> &'static HashMap<&'static str, FluentBundle<FluentResource>> {
    static BUNDLES: OnceLock<HashMap<&'static str, FluentBundle<FluentResource>>> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        SOURCES
            .iter()
            .filter_map(|(lang, source)| {
                let id: LanguageIdentifier = lang.parse().ok()?;
                let resource = FluentResource::try_new(source.to_string()).ok()?;
                let mut bundle = FluentBundle::new_concurrent(vec![id]);
                // No Unicode isolation marks around arguments: they would show in plain text.
                bundle.set_use_isolating(false);
                bundle.add_resource(resource).ok()?;
                Some((*lang, bundle))
            })
            .collect()
    })
}

/// A supported language, or French.
pub fn lang(requested: &str) -> &'static str {
    LANGS
        .iter()
        .find(|l| **l == requested)
        .copied()
        .unwrap_or("fr")
}

/// The label of a person's field (a `--share` name) in `lang`.
pub fn field(lang: &str, field: &str) -> String {
    let key = match field {
        "first_name" => "field-first-name",
        "last_name" => "field-last-name",
        "age" => "field-age",
        "date_of_birth" => "field-date-of-birth",
        "sex" => "field-sex",
        "nationality" => "field-nationality",
        "languages" => "col-languages",
        "phone" => "field-phone",
        "location" => "field-location",
        "health" => "field-health",
        "protection" => "field-protection",
        "documents" => "field-documents",
        "needs" => "field-needs",
        "vulnerabilities" => "export-vulnerabilities",
        other => return other.to_string(),
    };
    t(lang, key, &[])
}

/// The languages a person may speak, as the new-case form lists them (ISO 639-1 codes, each
/// named by `language-CODE` in every catalogue). Others are typed as codes.
pub const PERSON_LANGUAGES: [&str; 18] = [
    "ar", "fr", "en", "ti", "am", "so", "om", "bm", "wo", "ff", "ha", "ln", "sw", "ps", "fa", "ur",
    "bn", "ku",
];

/// The answers the form offers for a person's sex (stored as these codes).
pub const SEX_CODES: [&str; 3] = ["f", "m", "x"];

/// A language code's name in `lang`, or the code itself when it is not in the list.
pub fn language_name(lang: &str, code: &str) -> String {
    if PERSON_LANGUAGES.contains(&code) {
        t(lang, &format!("language-{code}"), &[])
    } else {
        code.to_string()
    }
}

/// Language codes named in `lang`, comma-separated.
pub fn language_names(lang: &str, codes: &[String]) -> String {
    codes
        .iter()
        .map(|c| language_name(lang, c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A recorded sex in `lang`: one of the form's answers named, anything else as recorded.
pub fn sex(lang: &str, value: &str) -> String {
    if SEX_CODES.contains(&value) {
        t(lang, &format!("sex-{value}"), &[])
    } else {
        value.to_string()
    }
}

/// Whether a language is written right to left.
pub fn rtl(lang: &str) -> bool {
    lang == "ar"
}

/// The message `key` in `lang`, with arguments; the key itself if it is missing.
pub fn t(lang: &str, key: &str, args: &[(&str, &str)]) -> String {
    let Some(bundle) = bundles().get(self::lang(lang)) else {
        return key.to_string();
    };
    let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) else {
        return key.to_string();
    };
    let mut fargs = FluentArgs::new();
    for (k, v) in args {
        fargs.set(*k, FluentValue::from(v.to_string()));
    }
    let mut errors = Vec::new();
    bundle
        .format_pattern(pattern, Some(&fargs), &mut errors)
        .into_owned()
}

/// A referral's status in a person's language.
pub fn status(lang: &str, status: Status) -> String {
    t(lang, &format!("referral-status-{}", status.as_str()), &[])
}

/// A referral status given as its word (`accepted`, as reports carry it) in `lang`; a word
/// that is not a status stays as it is.
pub fn status_word(lang: &str, word: &str) -> String {
    let key = format!("referral-status-{word}");
    let text = t(lang, &key, &[]);
    if text == key { word.to_string() } else { text }
}

/// A case's status in a person's language.
pub fn case_status(lang: &str, status: CaseStatus) -> String {
    t(lang, &format!("case-status-{}", status.as_str()), &[])
}

/// An urgency in a person's language.
pub fn urgency(lang: &str, urgency: Urgency) -> String {
    t(lang, &format!("urgency-{}", urgency.as_str()), &[])
}

/// The SOP deadline a referral has passed, in a person's language.
pub fn overdue(lang: &str, overdue: Overdue) -> String {
    let key = match overdue {
        Overdue::Acknowledgement => "overdue-acknowledgement",
        Overdue::Decision => "overdue-decision",
    };
    t(lang, key, &[])
}

/// Why an event or a request broke a rule of the mechanism, in a person's language.
pub fn rule(lang: &str, rule: &Rule) -> String {
    t(lang, &format!("rule-{}", rule.code()), &[])
}

/// What a timeline entry records; `org` names an organisation for a person.
pub fn happened(lang: &str, happened: &Happened, org: impl Fn(&str) -> String) -> String {
    match happened {
        Happened::CaseOpened => t(lang, "timeline-case-opened", &[]),
        Happened::Determination => t(lang, "timeline-determination", &[]),
        Happened::Note => t(lang, "timeline-note", &[]),
        Happened::Transferred { to_org } => {
            t(lang, "timeline-transferred", &[("org", &org(to_org))])
        }
        Happened::Closed => t(lang, "timeline-closed", &[]),
        Happened::Reopened => t(lang, "timeline-reopened", &[]),
        Happened::Consent => t(lang, "timeline-consent", &[]),
        Happened::ConsentWithdrawn { orgs, categories } => {
            if orgs.is_empty() && categories.is_empty() {
                t(lang, "timeline-consent-withdrawn-all", &[])
            } else {
                let mut scope: Vec<String> = orgs.iter().map(|o| org(o)).collect();
                scope.extend(categories.iter().cloned());
                t(
                    lang,
                    "timeline-consent-withdrawn",
                    &[("scope", &scope.join(", "))],
                )
            }
        }
        Happened::Erased { reason } => {
            let reason = t(lang, &format!("erase-reason-{}", reason.as_str()), &[]);
            t(lang, "timeline-erased", &[("reason", &reason)])
        }
        Happened::ReferralSent { to_org } => {
            t(lang, "timeline-referral-sent", &[("org", &org(to_org))])
        }
        Happened::ReferralStep { transition, reason } => {
            let step = t(
                lang,
                &format!("timeline-referral-{}", transition.as_str()),
                &[],
            );
            match reason {
                Some(reason) => format!("{step} ({reason})"),
                None => step,
            }
        }
        Happened::Other { name } => name.clone(),
    }
}

/// What this node could read of a timeline entry, in a person's language: who wrote what, or
/// why it cannot be shown (never a blank where something was written).
/// `name` gives a category's or a case type's name for its id (the CLI passes the id back).
pub fn detail(lang: &str, detail: &Detail, name: &dyn Fn(&str) -> String) -> String {
    match detail {
        Detail::Clear => String::new(),
        Detail::NotAddressed => t(lang, "detail-not-addressed", &[]),
        Detail::AwaitingKey { .. } => t(lang, "detail-awaiting-key", &[]),
        Detail::Unreadable => t(lang, "detail-unreadable", &[]),
        Detail::Read(w) => {
            let mut text = t(lang, "detail-by", &[("by", &w.by)]);
            if let Some(category) = &w.category {
                text.push_str(&format!(" ({})", name(category)));
            }
            if let Some((case_type, determined)) = &w.determination {
                let key = if *determined {
                    "detail-confirmed"
                } else {
                    "detail-not-confirmed"
                };
                let case_type = name(case_type);
                text.push_str(&format!(" {}", t(lang, key, &[("type", &case_type)])));
            }
            if !w.note.is_empty() {
                text.push_str(&format!(": {}", w.note));
            }
            if let Some(outcome) = &w.outcome {
                text.push_str(&format!(
                    " — {}",
                    t(lang, "detail-outcome", &[("outcome", outcome)])
                ));
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_exists_in_every_language() {
        let keys = |source: &str| -> Vec<String> {
            source
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains(" = "))
                .filter_map(|l| l.split(" = ").next().map(|k| k.trim().to_string()))
                .collect()
        };
        let fr = keys(SOURCES[0].1);
        for (lang, source) in SOURCES {
            assert_eq!(keys(source), fr, "{lang} has the same keys as fr");
            for key in &fr {
                assert_ne!(
                    t(lang, key, &[("date", "x"), ("version", "1"), ("site", "s")]),
                    *key
                );
            }
        }
        assert_eq!(
            t("en", "poster-site", &[("site", "Zarzis")]),
            "Site: Zarzis"
        );
    }
}
