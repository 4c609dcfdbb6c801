//! The sample assets in one place: the Tunisian mechanism and the partners' profiles shipped
//! in `config/` (embedded, so the binary runs from any directory), and the cases the demo and
//! the benchmark open. `mechanism template` starts from [`MECHANISM`]; the demo, the benchmark
//! and tests build their mechanisms from it.

use anyhow::{Context, Result};
use passerelle_core::map::Profile;
use passerelle_core::payload::{CaseData, Consent, Person};
use time::OffsetDateTime;

/// The sample mechanism shipped in `config/`, the base of `mechanism template`.
pub const MECHANISM: &str = include_str!("../../config/mechanism.toml");

/// The sample profiles, embedded (the demo runs from any directory).
const PROFILES: &[(&str, &str)] = &[
    ("asi", include_str!("../../config/profiles/asi.toml")),
    ("ataj", include_str!("../../config/profiles/ataj.toml")),
    (
        "clinique_sud",
        include_str!("../../config/profiles/clinique_sud.toml"),
    ),
    ("crt", include_str!("../../config/profiles/crt.toml")),
    ("dpe", include_str!("../../config/profiles/dpe.toml")),
    (
        "drs_medenine",
        include_str!("../../config/profiles/drs_medenine.toml"),
    ),
    ("inltp", include_str!("../../config/profiles/inltp.toml")),
    ("iom", include_str!("../../config/profiles/iom.toml")),
    (
        "jeunesse_sud",
        include_str!("../../config/profiles/jeunesse_sud.toml"),
    ),
    ("mas", include_str!("../../config/profiles/mas.toml")),
    ("mdm", include_str!("../../config/profiles/mdm.toml")),
    ("nour", include_str!("../../config/profiles/nour.toml")),
    ("onfp", include_str!("../../config/profiles/onfp.toml")),
    ("onm", include_str!("../../config/profiles/onm.toml")),
    (
        "savoir_pour_tous",
        include_str!("../../config/profiles/savoir_pour_tous.toml"),
    ),
    (
        "terre_ecoute",
        include_str!("../../config/profiles/terre_ecoute.toml"),
    ),
    ("unhcr", include_str!("../../config/profiles/unhcr.toml")),
    ("unicef", include_str!("../../config/profiles/unicef.toml")),
    ("wfp", include_str!("../../config/profiles/wfp.toml")),
];

/// An organisation's sample profile, parsed, when `config/profiles` has one.
pub fn profile(org: &str) -> Result<Option<Profile>> {
    let Some((_, text)) = PROFILES.iter().find(|(o, _)| *o == org) else {
        return Ok(None);
    };
    let profile =
        Profile::from_toml(text).with_context(|| format!("the sample profile of `{org}`"))?;
    Ok(Some(profile))
}

/// Youssef's case, as Aïcha records it.
pub fn youssef(now: OffsetDateTime) -> CaseData {
    CaseData {
        case_type: "unaccompanied_child".into(),
        site: "medenine".into(),
        person: Person {
            first_name: Some("Youssef".into()),
            last_name: Some("B.".into()),
            age: Some(16),
            sex: Some("m".into()),
            nationality: Some("SD".into()),
            languages: vec!["ar".into()],
            health: Some("fever and cough for three days".into()),
            phone: Some("+216 00 000 000".into()),
            ..Person::default()
        },
        needs: vec!["health".into(), "shelter".into(), "child_protection".into()],
        vulnerabilities: vec!["unaccompanied".into()],
        consent: Consent {
            given: true,
            guardian_given: Some(true),
            guardian_name: Some("centre guardian".into()),
            explained_by: "Aïcha".into(),
            explained: "referral to a health partner; only first name, age, language and symptoms are shared".into(),
            recorded_at: passerelle_core::time_fmt::rfc3339(now),
            ..Consent::default()
        },
        notes: "met at the centre's reception".into(),
    }
}

/// Amadou's case, opened at the field site of Ras Jedir that only a bundle reaches.
pub fn field_case(now: OffsetDateTime) -> CaseData {
    CaseData {
        case_type: "general".into(),
        site: "ras_jedir".into(),
        person: Person {
            first_name: Some("Amadou".into()),
            age: Some(31),
            languages: vec!["fr".into(), "bm".into()],
            ..Person::default()
        },
        needs: vec!["avrr".into()],
        vulnerabilities: Vec::new(),
        consent: Consent {
            given: true,
            explained_by: "IOM field team".into(),
            recorded_at: passerelle_core::time_fmt::rfc3339(now),
            ..Consent::default()
        },
        notes: String::new(),
    }
}

/// The case the benchmark opens: a small case with a fixed consent date.
pub fn bench_case() -> CaseData {
    CaseData {
        case_type: "general".into(),
        site: "medenine".into(),
        person: Person {
            first_name: Some("Amadou".into()),
            age: Some(24),
            languages: vec!["fr".into(), "bm".into()],
            health: Some("sprained ankle".into()),
            ..Person::default()
        },
        needs: vec!["health".into(), "shelter".into()],
        vulnerabilities: vec![],
        consent: Consent {
            given: true,
            explained_by: "bench".into(),
            explained: "benchmark".into(),
            recorded_at: "2026-11-27T09:00:00Z".into(),
            ..Consent::default()
        },
        notes: String::new(),
    }
}

/// The case the benchmark's sync latency measurement opens, again and again.
pub fn latency_case() -> CaseData {
    CaseData {
        case_type: "general".into(),
        site: "medenine".into(),
        person: Person {
            first_name: Some("Latency".into()),
            ..Person::default()
        },
        needs: vec!["health".into()],
        vulnerabilities: Vec::new(),
        consent: Consent {
            given: true,
            explained_by: "bench".into(),
            recorded_at: "2026-11-27T09:00:00Z".into(),
            ..Consent::default()
        },
        notes: String::new(),
    }
}
