//! The mechanism configuration document: the types that mirror the TOML, field by field.
//!
//! `config/README.md` documents every field for the people who write the document; keep the
//! two in step. Every struct refuses unknown fields: within a schema version an unknown field is
//! an error, never silently ignored.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::keyfiles::{OrgEncryptionKeyStanza, OrgSigningKeyStanza};
use crate::keys::{NodeId, PublicKey, Signature};

/// The configuration schema version this build of Passerelle understands.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole configuration document, one version of the mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Schema version of this document; a newer one than [`SCHEMA_VERSION`] is refused.
    pub schema: u32,
    /// The mechanism's name, as printed on posters and reports.
    pub mechanism: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: String,
    /// The organisation that leads the mechanism (a ministry).
    pub lead_org: String,
    /// Version number: 1 for the genesis, then each next version exactly one more.
    pub version: u64,
    /// Hex BLAKE3 document hash of the previous version; absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// After this instant a node that holds no newer version creates no new case events.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub roots: Roots,
    pub sites: Vec<Site>,
    pub organisations: Vec<Organisation>,
    pub taxonomy: Vec<Category>,
    pub case_types: Vec<CaseType>,
    pub sop: Sop,
    /// Organisations' signing keys, as handed over by `org keygen` / `org rotate-signing-key`.
    #[serde(default)]
    pub org_signing_keys: Vec<OrgSigningKeyStanza>,
    /// Organisations' encryption key epochs, as handed over by `org keygen` / `org rotate-key`.
    #[serde(default)]
    pub org_encryption_keys: Vec<OrgEncryptionKeyStanza>,
    /// Endorsed nodes, as handed over by `org endorse`.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// Removed nodes with the last sequence number of theirs to accept; kept in every later version.
    #[serde(default)]
    pub removals: Vec<Removal>,
}

/// The ministry's root keys and how many of them must sign each version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roots {
    pub threshold: u32,
    pub keys: Vec<PublicKey>,
}

/// A name in the mechanism's languages. French and English are required; Arabic falls back to
/// French where it is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Names {
    pub fr: String,
    pub en: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ar: Option<String>,
}

impl Names {
    /// The name in `lang` (`fr`, `en` or `ar`), falling back to French.
    pub fn get(&self, lang: &str) -> &str {
        match lang {
            "en" => &self.en,
            "ar" => self.ar.as_deref().unwrap_or(&self.fr),
            _ => &self.fr,
        }
    }
}

/// A place of the mechanism: a migrant centre, a regional office, a border post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub name: Names,
    /// Governorate, province or region.
    pub region: String,
    pub kind: SiteKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// The site's offset from UTC, in minutes (opening hours are local time).
    #[serde(default)]
    pub utc_offset_minutes: i16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    MigrantCentre,
    Office,
    BorderPost,
    City,
}

/// A member organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    /// Acronym or short name, for tables and posters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_name: Option<String>,
    pub kind: OrgKind,
    pub roles: Vec<Role>,
    /// Whether the organisation runs nodes of its own; if not, a coordinator keeps its profile.
    #[serde(default = "default_true")]
    pub runs_nodes: bool,
    /// Sites where the organisation works.
    #[serde(default)]
    pub sites: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Organisation {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The short name when there is one, else the name.
    pub fn display_name(&self) -> &str {
        self.short_name.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgKind {
    UnAgency,
    Government,
    InternationalNgo,
    NationalNgo,
    RedCrescent,
    CivilSociety,
    Private,
}

/// What an organisation may do in the mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Identify needs and open cases (and, under a `designated` SOP, activate referrals).
    Identify,
    /// Determine a person's status or case type, where a case type names it as authority.
    DetermineStatus,
    /// Manage complex cases across agencies.
    CaseManagement,
    /// Provide services and receive referrals.
    ProvideServices,
    /// Coordinate the mechanism: reports, and profiles of organisations without nodes.
    Coordinate,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Identify => "identify",
            Role::DetermineStatus => "determine_status",
            Role::CaseManagement => "case_management",
            Role::ProvideServices => "provide_services",
            Role::Coordinate => "coordinate",
        }
    }
}

/// A service category of the taxonomy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub id: String,
    pub name: Names,
    /// A sensitive category never appears in clear in event headers, and its small counts are
    /// suppressed in reports.
    #[serde(default)]
    pub sensitive: bool,
}

/// A case type (a vulnerable category), and who must determine it before a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseType {
    pub id: String,
    pub name: Names,
    #[serde(default)]
    pub requires_status_determination: bool,
    /// Organisations that may determine this status; each must hold `determine_status`.
    #[serde(default)]
    pub status_authorities: Vec<String>,
    /// Cases of this type are children's whatever the recorded age: a referral needs a
    /// guardian's consent (for an unaccompanied child, the delegate's) recorded on the case.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guardian_consent: bool,
}

impl CaseType {
    /// Whether a referral of a person of `age` (when recorded) under this case type needs a
    /// guardian's consent, by the case type or by the SOP's age of majority.
    pub fn needs_guardian(&self, sop: &Sop, age: Option<u32>) -> bool {
        self.guardian_consent
            || matches!((sop.guardian_consent_under_age, age), (Some(adult), Some(a)) if a < adult)
    }
}

/// The standard operating procedures the ministry sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sop {
    /// Who may open cases and activate referrals.
    pub activation: Activation,
    /// Whether a referral needs the person's recorded consent.
    pub consent_required: bool,
    /// Roles whose holders may record an emergency override of consent.
    #[serde(default)]
    pub emergency_override_roles: Vec<Role>,
    /// The age below which a person's referral also needs a guardian's consent (none: only
    /// the case types marked `guardian_consent`). Checked by the node that refers, which alone
    /// reads the age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian_consent_under_age: Option<u32>,
    /// Days after a closed case's last activity before every node drops the bodies of its
    /// events (headers stay; the clear facts reports need stay).
    pub retention_days: u32,
    /// Days without activity after which an open case is purged the same way (none: open cases
    /// are kept until closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_case_inactive_days: Option<u32>,
    /// Largest accepted lead of an event's timestamp over this node's clock, in seconds.
    pub clock_skew_secs: u32,
    pub urgency: Urgencies,
    /// Reason codes a partner may give when it declines a referral.
    pub decline_reasons: Vec<DeclineReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Any member organisation may open a case and refer.
    AnyMember,
    /// Only organisations holding the `identify` role.
    Designated,
}

/// Deadlines for each urgency level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Urgencies {
    pub emergency: Deadlines,
    pub urgent: Deadlines,
    pub routine: Deadlines,
}

impl Urgencies {
    /// The deadlines of an urgency level.
    pub fn for_level(&self, level: crate::event::Urgency) -> Deadlines {
        match level {
            crate::event::Urgency::Emergency => self.emergency,
            crate::event::Urgency::Urgent => self.urgent,
            crate::event::Urgency::Routine => self.routine,
        }
    }
}

/// How long a receiving partner has to acknowledge and to accept (or decline) a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    pub acknowledge_hours: u32,
    pub accept_hours: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclineReason {
    pub id: String,
    pub name: Names,
}

/// An endorsed node of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node id (libp2p peer id of its ed25519 key).
    pub id: NodeId,
    pub org: String,
    pub label: String,
    /// The node's own age recipient, to which its organisation's keys are shared.
    pub recipient: String,
    /// Where the node can usually be reached (libp2p multiaddrs); hints only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The organisation's current signing key's signature over (org, id, recipient).
    pub endorsement: Signature,
}

/// A node removed from the mechanism: its events past `last_seq` are refused everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removal {
    pub node: NodeId,
    pub org: String,
    /// The last sequence number of the node's log that is still accepted (0: none).
    pub last_seq: u64,
}
