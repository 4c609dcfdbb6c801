//! Translations with Project Fluent: French, English and Arabic (right to left), embedded in
//! the binary so nothing needs the internet.

use std::collections::HashMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use passerelle_core::engine::{CaseStatus, Detail, EngineError, Happened, Refusal};
use passerelle_core::event::EraseReason;
use passerelle_core::event::Urgency;
use passerelle_core::fold::{Overdue, Rule, Status};
use passerelle_core::payload::{PayloadError, Problem};
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

/// An engine's refusal in a person's language, when it is one a person can act on (a rule of
/// the mechanism, an unknown id, a field too long…); `None` for a fault of the node, which
/// stays in the node's own words.
pub fn refusal(lang: &str, e: &EngineError) -> Option<String> {
    let said = match e {
        EngineError::Rule(rule) => t(lang, "rule-refused", &[("rule", &self::rule(lang, rule))]),
        EngineError::Refused(r) => refused(lang, r),
        EngineError::NoCase(id) => t(lang, "refusal-no_case", &[("id", id)]),
        EngineError::NoReferral(id) => t(lang, "refusal-no_referral", &[("id", id)]),
        EngineError::Erased { case, at, cause } => {
            let why = match cause {
                passerelle_core::fold::PurgeCause::Erased(reason) => erase_reason(lang, *reason),
                passerelle_core::fold::PurgeCause::Retention => t(lang, "purge-retention", &[]),
            };
            t(
                lang,
                "refusal-erased",
                &[("id", case), ("at", at), ("why", &why)],
            )
        }
        EngineError::ConfigExpired { version, expired } => t(
            lang,
            "refusal-config_expired",
            &[("version", &version.to_string()), ("at", expired)],
        ),
        EngineError::ReadOnly => t(lang, "refusal-read_only", &[]),
        EngineError::Payload(p) => payload(lang, p)?,
        // Faults of the node or of a peer, not of what a person asked: the node's own words.
        EngineError::Store(_)
        | EngineError::Invalid(_)
        | EngineError::NotAccepted(_)
        | EngineError::Event(_) => return None,
    };
    Some(said)
}

/// A typed refusal of the engine in `lang`.
pub fn refused(lang: &str, r: &Refusal) -> String {
    let key = format!("refusal-{}", r.code());
    match r.value() {
        Some(value) => t(lang, &key, &[("id", value)]),
        None => t(lang, &key, &[]),
    }
}

/// Why a case's data is refused, in `lang` (`None`: a fault of the node, not of what was typed).
pub fn payload(lang: &str, e: &PayloadError) -> Option<String> {
    Some(match e {
        PayloadError::Invalid { field, problem } => {
            let problem = self::problem(lang, *problem);
            t(
                lang,
                "refusal-field",
                &[
                    ("field", &payload_field(lang, field)),
                    ("problem", &problem),
                ],
            )
        }
        PayloadError::TooLarge => t(lang, "refusal-payload_too_large", &[]),
        PayloadError::CannotDecrypt => t(lang, "refusal-cannot_decrypt", &[]),
        PayloadError::Encrypt(_) | PayloadError::Malformed => return None,
    })
}

/// A payload field's problem in `lang`.
pub fn problem(lang: &str, problem: Problem) -> String {
    let key = format!("problem-{}", problem.code());
    match problem.number() {
        Some(n) => t(lang, &key, &[("n", &n.to_string())]),
        None => t(lang, &key, &[]),
    }
}

/// The label of a payload's field (`person.first_name`, `consent.explained_by`, `needs`) in
/// `lang`, as the forms name it.
fn payload_field(lang: &str, field: &str) -> String {
    let key = match field {
        "consent.explained_by" => "consent-explained-by",
        "consent.explained" => "consent-explained",
        "consent.guardian_name" => "consent-guardian-name",
        "consent.recorded_at" => "consent-recorded-at",
        "consent.scope_orgs" => "consent-scope-orgs",
        "consent.scope_categories" => "consent-scope-categories",
        "case_type" => "field-case-type",
        "site" => "field-site",
        "notes" => "field-notes",
        other => return self::field(lang, other.strip_prefix("person.").unwrap_or(other)),
    };
    t(lang, key, &[])
}

/// Why a case was erased, in `lang`.
pub fn erase_reason(lang: &str, reason: EraseReason) -> String {
    t(lang, &format!("erase-reason-{}", reason.as_str()), &[])
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
            let reason = erase_reason(lang, *reason);
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

    /// Every refusal a person can act on is said in each language, with the value it names,
    /// and the French and Arabic sentences are not the English one.
    #[test]
    fn every_refusal_is_said_in_every_language() {
        let mut refusals: Vec<EngineError> = Refusal::one_of_each()
            .into_iter()
            .map(EngineError::Refused)
            .collect();
        for problem in [
            Problem::LongerThan(120),
            Problem::ControlCharacters,
            Problem::MoreItemsThan(64),
            Problem::AtMost(130),
            Problem::NoExplainer,
            Problem::NotATime,
        ] {
            refusals.push(EngineError::Payload(PayloadError::Invalid {
                field: "person.first_name".into(),
                problem,
            }));
        }
        refusals.push(EngineError::Payload(PayloadError::TooLarge));
        refusals.push(EngineError::NoCase("abc123".into()));
        refusals.push(EngineError::ReadOnly);
        for e in &refusals {
            let en = refusal("en", e).unwrap_or_else(|| panic!("{e:?} is not said"));
            assert!(!en.contains("refusal-") && !en.contains("problem-"), "{en}");
            for lang in ["fr", "ar"] {
                let said =
                    refusal(lang, e).unwrap_or_else(|| panic!("{e:?} is not said in {lang}"));
                assert!(
                    !said.contains("refusal-") && !said.contains("problem-"),
                    "{said}"
                );
                assert_ne!(said, en, "{e:?} in {lang}");
            }
        }
        let e = EngineError::Refused(Refusal::UnknownOrg("mdm".into()));
        assert_eq!(
            refusal("fr", &e).as_deref(),
            Some("Organisation inconnue : mdm.")
        );
        let e = EngineError::Payload(PayloadError::Invalid {
            field: "consent.explained_by".into(),
            problem: Problem::LongerThan(120),
        });
        assert_eq!(
            refusal("fr", &e).as_deref(),
            Some("Expliqué par : plus de 120 caractères.")
        );
    }
}
