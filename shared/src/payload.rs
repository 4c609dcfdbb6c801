//! What case events carry inside their ciphertext, and the encryption around it.
//!
//! Case payloads are encoded with postcard, padded to a multiple of [`PAD_BYTES`] (so the
//! ciphertext length says little about the person), and age-encrypted to the current recipient
//! of each organisation addressed — one X25519 stanza per organisation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::{
    LIST_ITEMS_MAX, PAYLOAD_SIZE_MAX_BYTES, SHORT_FIELD_MAX_CHARS, TEXT_FIELD_MAX_CHARS,
};

/// Payloads are padded to a multiple of this many bytes before encryption.
pub const PAD_BYTES: usize = 256;

/// Why a payload could not be built, sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: Problem },
    #[error("the payload is larger than {PAYLOAD_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("the payload could not be encrypted: {0}")]
    Encrypt(String),
    #[error("this node holds no key that opens the payload")]
    CannotDecrypt,
    #[error("the payload is malformed")]
    Malformed,
}

/// What is wrong with a field of a payload, typed: interfaces say it in a person's language
/// (`problem-*` in `node/i18n`); `Display` is the command line's English.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error("longer than {0} characters")]
    LongerThan(usize),
    #[error("must not contain control characters")]
    ControlCharacters,
    #[error("more than {0} items")]
    MoreItemsThan(usize),
    #[error("must be at most {0}")]
    AtMost(u32),
    #[error("say who explained the referral to the person")]
    NoExplainer,
    #[error("must be an RFC 3339 time such as 2026-11-27T09:30:00Z")]
    NotATime,
}

impl Problem {
    /// The problem's code, as catalogues name it (`problem-CODE`).
    pub fn code(self) -> &'static str {
        match self {
            Problem::LongerThan(_) => "longer_than",
            Problem::ControlCharacters => "control_characters",
            Problem::MoreItemsThan(_) => "more_items_than",
            Problem::AtMost(_) => "at_most",
            Problem::NoExplainer => "no_explainer",
            Problem::NotATime => "not_a_time",
        }
    }

    /// The number a problem's sentence carries, if any (`$n` in catalogues).
    pub fn number(self) -> Option<u64> {
        match self {
            Problem::LongerThan(n) | Problem::MoreItemsThan(n) => u64::try_from(n).ok(),
            Problem::AtMost(n) => Some(u64::from(n)),
            Problem::ControlCharacters | Problem::NoExplainer | Problem::NotATime => None,
        }
    }
}

fn invalid(field: &str, problem: Problem) -> PayloadError {
    PayloadError::Invalid {
        field: field.to_string(),
        problem,
    }
}

/// The person a case is about. Every field is optional; a caseworker records what is needed.
/// (No `skip_serializing_if` in payload types: postcard is not self-describing, every field is
/// always written.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub age: Option<u32>,
    #[serde(default)]
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub sex: Option<String>,
    #[serde(default)]
    pub nationality: Option<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub phone: Option<String>,
    /// Where the person can be found (a centre, a room, an address).
    #[serde(default)]
    pub location: Option<String>,
    /// Health: symptoms, conditions, treatment.
    #[serde(default)]
    pub health: Option<String>,
    /// Protection concerns.
    #[serde(default)]
    pub protection: Option<String>,
    /// Documents held (passport, registration card…).
    #[serde(default)]
    pub documents: Option<String>,
}

/// The person's fields a referral may share, by name.
pub const SHAREABLE_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "age",
    "date_of_birth",
    "sex",
    "nationality",
    "languages",
    "phone",
    "location",
    "health",
    "protection",
    "documents",
    "needs",
    "vulnerabilities",
];

impl Person {
    /// The value of a shareable field, as text; `None` when not recorded.
    pub fn field(&self, name: &str) -> Option<String> {
        match name {
            "first_name" => self.first_name.clone(),
            "last_name" => self.last_name.clone(),
            "age" => self.age.map(|a| a.to_string()),
            "date_of_birth" => self.date_of_birth.clone(),
            "sex" => self.sex.clone(),
            "nationality" => self.nationality.clone(),
            "languages" => (!self.languages.is_empty()).then(|| self.languages.join(", ")),
            "phone" => self.phone.clone(),
            "location" => self.location.clone(),
            "health" => self.health.clone(),
            "protection" => self.protection.clone(),
            "documents" => self.documents.clone(),
            _ => None,
        }
    }

    /// Every recorded field's text, for the local case search.
    pub fn search_text(&self) -> String {
        SHAREABLE_FIELDS
            .iter()
            .filter_map(|f| self.field(f))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn validate(&self) -> Result<(), PayloadError> {
        for (name, value) in [
            ("person.first_name", &self.first_name),
            ("person.last_name", &self.last_name),
            ("person.date_of_birth", &self.date_of_birth),
            ("person.sex", &self.sex),
            ("person.nationality", &self.nationality),
            ("person.phone", &self.phone),
            ("person.location", &self.location),
        ] {
            short(name, value.as_deref())?;
        }
        for (name, value) in [
            ("person.health", &self.health),
            ("person.protection", &self.protection),
            ("person.documents", &self.documents),
        ] {
            text(name, value.as_deref())?;
        }
        list("person.languages", &self.languages)?;
        if self.age.is_some_and(|a| a > 130) {
            return Err(invalid("person.age", Problem::AtMost(130)));
        }
        Ok(())
    }
}

fn short(field: &str, value: Option<&str>) -> Result<(), PayloadError> {
    if let Some(v) = value {
        if v.chars().count() > SHORT_FIELD_MAX_CHARS {
            return Err(invalid(field, Problem::LongerThan(SHORT_FIELD_MAX_CHARS)));
        }
        if v.chars().any(char::is_control) {
            return Err(invalid(field, Problem::ControlCharacters));
        }
    }
    Ok(())
}

fn text(field: &str, value: Option<&str>) -> Result<(), PayloadError> {
    if let Some(v) = value
        && v.chars().count() > TEXT_FIELD_MAX_CHARS
    {
        return Err(invalid(field, Problem::LongerThan(TEXT_FIELD_MAX_CHARS)));
    }
    Ok(())
}

fn list(field: &str, items: &[String]) -> Result<(), PayloadError> {
    if items.len() > LIST_ITEMS_MAX {
        return Err(invalid(field, Problem::MoreItemsThan(LIST_ITEMS_MAX)));
    }
    for item in items {
        short(field, Some(item))?;
    }
    Ok(())
}

/// The person's consent to the referral, as recorded by the caseworker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Whether the person consents to being referred.
    pub given: bool,
    /// A guardian's consent, for a child: `None` when no guardian is involved.
    #[serde(default)]
    pub guardian_given: Option<bool>,
    #[serde(default)]
    pub guardian_name: Option<String>,
    /// Who explained the referral and the data sharing to the person.
    pub explained_by: String,
    /// What was explained, in the caseworker's words.
    #[serde(default)]
    pub explained: String,
    /// RFC 3339 time the consent was recorded.
    pub recorded_at: String,
    /// Organisations the person agreed to be referred to; empty means any member.
    #[serde(default)]
    pub scope_orgs: Vec<String>,
    /// Service categories the person agreed to; empty means any.
    #[serde(default)]
    pub scope_categories: Vec<String>,
}

impl Consent {
    /// Whether this consent covers a referral to `org` for `category`.
    pub fn covers(&self, org: &str, category: &str) -> bool {
        let person_and_guardian = self.given && self.guardian_given != Some(false);
        person_and_guardian
            && (self.scope_orgs.is_empty() || self.scope_orgs.iter().any(|o| o == org))
            && (self.scope_categories.is_empty()
                || self.scope_categories.iter().any(|c| c == category))
    }

    /// What a referral's receiver needs to know of this consent: whether the person (and a
    /// guardian) gave it, when, and its scope. The names and the caseworker's words are left out:
    /// a referral carries nothing that names or describes anyone unless it was chosen. The wire
    /// shape stays [`Consent`]'s (payloads are postcard, not self-describing: a referral signed
    /// before this reads the same on every node), with those fields empty.
    pub fn facts(&self) -> Consent {
        Consent {
            given: self.given,
            guardian_given: self.guardian_given,
            guardian_name: None,
            explained_by: String::new(),
            explained: String::new(),
            recorded_at: self.recorded_at.clone(),
            scope_orgs: self.scope_orgs.clone(),
            scope_categories: self.scope_categories.clone(),
        }
    }

    fn validate(&self) -> Result<(), PayloadError> {
        short("consent.explained_by", Some(&self.explained_by))?;
        if self.explained_by.trim().is_empty() {
            return Err(invalid("consent.explained_by", Problem::NoExplainer));
        }
        text("consent.explained", Some(&self.explained))?;
        short("consent.guardian_name", self.guardian_name.as_deref())?;
        if crate::time_fmt::parse_rfc3339(&self.recorded_at).is_none() {
            return Err(invalid("consent.recorded_at", Problem::NotATime));
        }
        list("consent.scope_orgs", &self.scope_orgs)?;
        list("consent.scope_categories", &self.scope_categories)
    }
}

/// What a caseworker enters to open a case (the `case open --from CASE.json` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseData {
    pub case_type: String,
    /// The site where the person was met.
    pub site: String,
    pub person: Person,
    /// Service categories needed.
    pub needs: Vec<String>,
    #[serde(default)]
    pub vulnerabilities: Vec<String>,
    pub consent: Consent,
    #[serde(default)]
    pub notes: String,
}

impl CaseData {
    pub fn validate(&self) -> Result<(), PayloadError> {
        short("case_type", Some(&self.case_type))?;
        short("site", Some(&self.site))?;
        self.person.validate()?;
        list("needs", &self.needs)?;
        list("vulnerabilities", &self.vulnerabilities)?;
        self.consent.validate()?;
        text("notes", Some(&self.notes))
    }
}

/// A case payload: opening, or the case data handed to a new case manager on transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseOpenPayload {
    pub data: CaseData,
    /// The user who recorded it.
    pub by: String,
}

/// A status / case-type determination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeterminationPayload {
    /// The case type determined.
    pub case_type: String,
    /// Whether the person was found to belong to that case type.
    pub determined: bool,
    pub note: String,
    pub by: String,
}

/// A case-management action's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseUpdatePayload {
    pub note: String,
    /// On transfer: the case data, so the new case manager can read the case.
    pub data: Option<CaseData>,
    /// On a consent update: the new consent.
    pub consent: Option<Consent>,
    pub by: String,
}

/// An emergency override of consent, recorded with who and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyOverride {
    pub reason: String,
    pub by: String,
}

/// A referral: only what the receiving partner needs (data minimisation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralPayload {
    pub case_type: String,
    /// Always here, also when it is sensitive and absent from the clear header.
    pub category: String,
    /// The person's fields the caseworker chose to share, by name.
    pub shared: BTreeMap<String, String>,
    pub note: String,
    /// The consent facts as recorded on the case when the referral was sent
    /// ([`Consent::facts`]: no names, no explanation).
    pub consent: Consent,
    pub emergency_override: Option<EmergencyOverride>,
    pub by: String,
}

/// A referral step's payload: free text stays encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralUpdatePayload {
    pub note: String,
    /// On completion: the outcome.
    pub outcome: Option<String>,
    pub by: String,
}

/// Encodes a payload, padded to a multiple of [`PAD_BYTES`].
pub fn encode<T: Serialize>(payload: &T) -> Result<Vec<u8>, PayloadError> {
    let mut bytes = postcard::to_stdvec(payload).map_err(|_| PayloadError::Malformed)?;
    if bytes.len() > PAYLOAD_SIZE_MAX_BYTES {
        return Err(PayloadError::TooLarge);
    }
    let padded = bytes.len().div_ceil(PAD_BYTES).max(1) * PAD_BYTES;
    bytes.resize(padded, 0);
    Ok(bytes)
}

/// Decodes a padded payload.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, PayloadError> {
    if bytes.len() > PAYLOAD_SIZE_MAX_BYTES + PAD_BYTES {
        return Err(PayloadError::TooLarge);
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|_| PayloadError::Malformed)?;
    if rest.iter().any(|b| *b != 0) {
        return Err(PayloadError::Malformed);
    }
    Ok(value)
}

/// Encrypts bytes to age X25519 recipients.
pub fn seal(plain: &[u8], recipients: &[&age::x25519::Recipient]) -> Result<Vec<u8>, PayloadError> {
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| *r as _))
        .map_err(|e| PayloadError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + 100 + 100 * recipients.len());
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| PayloadError::Encrypt(e.to_string()))?;
    std::io::Write::write_all(&mut writer, plain)
        .and_then(|()| writer.finish().map(|_| ()))
        .map_err(|e| PayloadError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Decrypts age ciphertext with an identity, bounded.
pub fn open(ciphertext: &[u8], identity: &age::x25519::Identity) -> Result<Vec<u8>, PayloadError> {
    use std::io::Read;
    let decryptor = age::Decryptor::new(ciphertext).map_err(|_| PayloadError::Malformed)?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|_| PayloadError::CannotDecrypt)?;
    let mut plain = Vec::new();
    reader
        .by_ref()
        .take((PAYLOAD_SIZE_MAX_BYTES + PAD_BYTES) as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|_| PayloadError::Malformed)?;
    if plain.len() > PAYLOAD_SIZE_MAX_BYTES + PAD_BYTES {
        return Err(PayloadError::TooLarge);
    }
    Ok(plain)
}

/// Counts the X25519 recipient stanzas in an age file's header; `None` when the header is not
/// an age v1 header of X25519 stanzas (and at most one grease stanza). Admission uses it to check that an event carries
/// exactly one stanza per organisation addressed.
pub fn count_x25519_stanzas(ciphertext: &[u8]) -> Option<usize> {
    const HEADER_SCAN_MAX_BYTES: usize = 16 * 1024;
    let scan = &ciphertext[..ciphertext.len().min(HEADER_SCAN_MAX_BYTES)];
    let mut lines = scan.split(|b| *b == b'\n');
    if lines.next()? != b"age-encryption.org/v1" {
        return None;
    }
    let (mut count, mut grease) = (0, 0);
    for line in lines {
        if line.starts_with(b"--- ") {
            return Some(count);
        }
        if let Some(rest) = line.strip_prefix(b"-> ") {
            let tag = rest.split(|b| *b == b' ').next().unwrap_or_default();
            if tag == b"X25519" {
                count += 1;
            } else if tag.ends_with(b"-grease") && grease == 0 {
                // age adds one random "grease" stanza to keep parsers tolerant; it carries
                // no key and is not counted.
                grease += 1;
            } else {
                return None;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_only_for_their_recipients() -> Result<(), PayloadError> {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let c = age::x25519::Identity::generate();
        let payload = ReferralUpdatePayload {
            note: "seen today".into(),
            outcome: None,
            by: "nurse".into(),
        };
        let plain = encode(&payload)?;
        assert_eq!(plain.len() % PAD_BYTES, 0);
        let sealed = seal(&plain, &[&a.to_public(), &b.to_public()])?;
        assert_eq!(count_x25519_stanzas(&sealed), Some(2));
        let opened: ReferralUpdatePayload = decode(&open(&sealed, &b)?)?;
        assert_eq!(opened, payload);
        assert_eq!(open(&sealed, &c), Err(PayloadError::CannotDecrypt));
        Ok(())
    }

    #[test]
    fn consent_scope_is_respected() {
        let mut consent = Consent {
            given: true,
            explained_by: "Aïcha".into(),
            recorded_at: "2026-11-27T09:00:00Z".into(),
            ..Consent::default()
        };
        assert!(consent.covers("mdm", "health"));
        consent.scope_categories = vec!["shelter".into()];
        assert!(!consent.covers("mdm", "health"));
        consent.scope_categories.clear();
        consent.guardian_given = Some(false);
        assert!(
            !consent.covers("mdm", "health"),
            "a refusing guardian blocks it"
        );
    }
}
