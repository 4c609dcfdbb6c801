//! Why the engine refuses what a person asked before anything is written, typed: the web UI
//! says it in the page's language (`refusal-CODE` in `node/i18n`, with `$id` the value named),
//! the command line prints `Display`, its English.
//!
//! Values a person typed are cut (`keys::truncate_for_error`) before they are kept here: a
//! refusal is shown and may be logged, and must not carry a pasted paragraph.

use crate::keys;
use crate::payload::SHAREABLE_FIELDS;

/// A refused request, with the value it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown case type `{0}`")]
    UnknownCaseType(String),
    #[error("unknown site `{0}`")]
    UnknownSite(String),
    #[error("needs: unknown service category `{0}`")]
    UnknownNeed(String),
    #[error("unknown service category `{0}`")]
    UnknownCategory(String),
    #[error("unknown organisation `{0}`")]
    UnknownOrg(String),
    #[error("`{0}` is this node's own organisation: a referral goes to another partner")]
    OwnOrg(String),
    #[error("`{0}` does not provide services in this mechanism")]
    NotAProvider(String),
    #[error("`{0}` has no encryption key in the configuration yet: it cannot be sent case data")]
    NoKeyYet(String),
    #[error(
        "`{0}` is sensitive and is never named in clear: withdraw consent for the partner, or for all"
    )]
    SensitiveCategory(String),
    #[error("--share: unknown field `{0}` (fields: {fields})", fields = SHAREABLE_FIELDS.join(", "))]
    UnknownSharedField(String),
    #[error("the note is too long")]
    NoteTooLong,
    #[error("a decline needs a reason code (--reason)")]
    DeclineNeedsReason,
    #[error("`{0}` is not an id (at least 6 hex digits, as printed in lists)")]
    NotAnId(String),
    #[error("`{0}` matches several; give more digits")]
    AmbiguousId(String),
    #[error(
        "this node may not change the profile of `{0}`: only its own nodes may, or a coordinator for an organisation without nodes"
    )]
    NotProfileEditor(String),
    #[error("the profile of `{0}` is larger than an event may carry")]
    ProfileTooLarge(String),
}

impl Refusal {
    /// A refusal that names `value`, a person's input, cut to what an error may show.
    pub fn naming(make: fn(String) -> Refusal, value: &str) -> Refusal {
        make(keys::truncate_for_error(value))
    }

    /// The refusal's code, as catalogues name it (`refusal-CODE`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownCaseType(_) => "unknown_case_type",
            Refusal::UnknownSite(_) => "unknown_site",
            Refusal::UnknownNeed(_) | Refusal::UnknownCategory(_) => "unknown_category",
            Refusal::UnknownOrg(_) => "unknown_org",
            Refusal::OwnOrg(_) => "own_org",
            Refusal::NotAProvider(_) => "not_a_provider",
            Refusal::NoKeyYet(_) => "no_key_yet",
            Refusal::SensitiveCategory(_) => "sensitive_category",
            Refusal::UnknownSharedField(_) => "unknown_shared_field",
            Refusal::NoteTooLong => "note_too_long",
            Refusal::DeclineNeedsReason => "decline_needs_reason",
            Refusal::NotAnId(_) => "not_an_id",
            Refusal::AmbiguousId(_) => "ambiguous_id",
            Refusal::NotProfileEditor(_) => "not_profile_editor",
            Refusal::ProfileTooLarge(_) => "profile_too_large",
        }
    }

    /// The value the refusal names (an id, a code), if any: `$id` in catalogues.
    pub fn value(&self) -> Option<&str> {
        match self {
            Refusal::UnknownCaseType(v)
            | Refusal::UnknownSite(v)
            | Refusal::UnknownNeed(v)
            | Refusal::UnknownCategory(v)
            | Refusal::UnknownOrg(v)
            | Refusal::OwnOrg(v)
            | Refusal::NotAProvider(v)
            | Refusal::NoKeyYet(v)
            | Refusal::SensitiveCategory(v)
            | Refusal::UnknownSharedField(v)
            | Refusal::NotAnId(v)
            | Refusal::AmbiguousId(v)
            | Refusal::NotProfileEditor(v)
            | Refusal::ProfileTooLarge(v) => Some(v),
            Refusal::NoteTooLong | Refusal::DeclineNeedsReason => None,
        }
    }

    /// One of each kind, for the catalogues' tests: every code must have a sentence in every
    /// language.
    pub fn one_of_each() -> Vec<Refusal> {
        let v = || "x".to_string();
        vec![
            Refusal::UnknownCaseType(v()),
            Refusal::UnknownSite(v()),
            Refusal::UnknownNeed(v()),
            Refusal::UnknownCategory(v()),
            Refusal::UnknownOrg(v()),
            Refusal::OwnOrg(v()),
            Refusal::NotAProvider(v()),
            Refusal::NoKeyYet(v()),
            Refusal::SensitiveCategory(v()),
            Refusal::UnknownSharedField(v()),
            Refusal::NoteTooLong,
            Refusal::DeclineNeedsReason,
            Refusal::NotAnId(v()),
            Refusal::AmbiguousId(v()),
            Refusal::NotProfileEditor(v()),
            Refusal::ProfileTooLarge(v()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_cut_before_it_is_kept() {
        let long = "a".repeat(10_000);
        let r = Refusal::naming(Refusal::UnknownOrg, &long);
        assert!(r.to_string().len() < 300, "{}", r.to_string().len());
    }
}
