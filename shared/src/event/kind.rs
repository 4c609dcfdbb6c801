//! What an event is about: its kind, with the fields of that kind that travel in clear.

use serde::{Deserialize, Serialize};

/// How urgent a referral is; the SOP gives each level its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Urgency {
    Emergency,
    Urgent,
    Routine,
}

impl Urgency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Urgency::Emergency => "emergency",
            Urgency::Urgent => "urgent",
            Urgency::Routine => "routine",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "emergency" => Some(Urgency::Emergency),
            "urgent" => Some(Urgency::Urgent),
            "routine" => Some(Urgency::Routine),
            _ => None,
        }
    }
}

/// A step in a referral's life after it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transition {
    Acknowledge,
    Accept,
    Decline,
    Complete,
    Withdraw,
}

impl Transition {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transition::Acknowledge => "acknowledge",
            Transition::Accept => "accept",
            Transition::Decline => "decline",
            Transition::Complete => "complete",
            Transition::Withdraw => "withdraw",
        }
    }
}

/// A case-management action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CaseAction {
    Note,
    /// Case management moves to another organisation.
    Transfer {
        to_org: String,
    },
    Close,
    Reopen,
    /// The person's consent was recorded again (given, withdrawn or its scope changed).
    Consent,
    /// The case is erased before its retention period ends, for the reason given in clear: every
    /// node drops the bodies of the case's events (headers stay, so logs stay verifiable).
    Erase {
        reason: EraseReason,
    },
    /// The person withdrew consent, for the partners and service categories named in clear
    /// (both empty: for every referral). From then on no referral it covers is valid, open
    /// ones are withdrawn, and what was shared under it is dropped on every node. A sensitive
    /// category is never named here: withdraw for the partner, or for all.
    ConsentWithdrawn {
        orgs: Vec<String>,
        categories: Vec<String>,
    },
}

/// Why a case manager erases a case before its retention period ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EraseReason {
    /// The person asked for their data to be erased.
    PersonAsked,
    /// The case duplicates another.
    Duplicate,
    /// The case was opened in error.
    Error,
}

impl EraseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EraseReason::PersonAsked => "person_asked",
            EraseReason::Duplicate => "duplicate",
            EraseReason::Error => "error",
        }
    }
}

/// The kind of an event, with the fields of that kind that travel in clear.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// An organisation's key epochs, shared with another endorsed node of the organisation;
    /// the body is age-encrypted to that node's own recipient.
    KeyShare { to: [u8; 32], epochs: Vec<u32> },
    /// A case is opened; its id is this event's id.
    CaseOpen,
    /// An authority records a status / case-type determination for the case in `subject`.
    StatusDetermination,
    /// A case-management action on the case in `subject`.
    CaseUpdate(CaseAction),
    /// A referral of the case in `subject` to another organisation. The category is `None` in
    /// clear when it is sensitive (it then travels inside the ciphertext).
    ReferralSend {
        to_org: String,
        category: Option<String>,
        urgency: Urgency,
    },
    /// A step of the referral in `subject`; a decline carries its reason code in clear.
    ReferralUpdate {
        transition: Transition,
        reason: Option<String>,
    },
    /// A change to an organisation's partner-map profile (plain body: an Automerge change).
    MapChange { org: String },
    /// A compacted save of an organisation's partner-map profile.
    MapSnapshot { org: String },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::KeyShare { .. } => "key_share",
            Kind::CaseOpen => "case_open",
            Kind::StatusDetermination => "status_determination",
            Kind::CaseUpdate(_) => "case_update",
            Kind::ReferralSend { .. } => "referral_send",
            Kind::ReferralUpdate { .. } => "referral_update",
            Kind::MapChange { .. } => "map_change",
            Kind::MapSnapshot { .. } => "map_snapshot",
        }
    }

    /// Whether the body is age ciphertext (one stanza per organisation addressed).
    pub fn is_encrypted_to_orgs(&self) -> bool {
        matches!(
            self,
            Kind::CaseOpen
                | Kind::StatusDetermination
                | Kind::CaseUpdate(_)
                | Kind::ReferralSend { .. }
                | Kind::ReferralUpdate { .. }
        )
    }

    /// Whether this is a case event (refused while the configuration in force has expired).
    pub fn is_case_event(&self) -> bool {
        self.is_encrypted_to_orgs()
    }
}
