//! The ministry-signed mechanism configuration: parsing, validation and the indexes the rest of
//! the core reads it through.
//!
//! `model` mirrors the TOML; `validate` turns a parsed [`Document`] into a [`Mechanism`] or says
//! which field is wrong and why; `chain` checks signatures and version-to-version rules.

pub mod chain;
pub mod model;
mod state;
pub mod template;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use time::OffsetDateTime;

pub use model::*;
pub use state::{ConfigState, NotJoined};
pub use validate::is_valid_id;
use validate::validate;

use crate::keys::{NodeId, PublicKey};
use crate::limits::DOCUMENT_SIZE_MAX_BYTES;

/// Why a configuration document was refused. Each names the field and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("the configuration document is larger than {DOCUMENT_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("the configuration document is not UTF-8 text")]
    NotUtf8,
    #[error("the configuration document is not valid: {0}")]
    Toml(String),
    #[error(
        "the configuration uses schema version {found}, newer than version {supported} that this Passerelle understands: upgrade Passerelle"
    )]
    SchemaTooNew { found: u64, supported: u32 },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A 32-byte BLAKE3 hash, written as 64 hex digits: document hashes, the mechanism id, event ids.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        blake3::Hash::from_hex(s).ok().map(|h| Self(*h.as_bytes()))
    }

    /// The first 12 hex digits, for people reading tables.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

/// Parses a document's bytes: size, UTF-8, schema version, then the strict TOML schema.
pub fn parse_document(bytes: &[u8]) -> Result<Document, ConfigError> {
    if bytes.len() > DOCUMENT_SIZE_MAX_BYTES {
        return Err(ConfigError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?;
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(&e))?;
    let schema = match table.get("schema") {
        None => return Err(invalid("schema", "missing")),
        Some(toml::Value::Integer(n)) if *n >= 1 => *n as u64,
        Some(_) => return Err(invalid("schema", "must be a whole number from 1")),
    };
    if schema > u64::from(SCHEMA_VERSION) {
        return Err(ConfigError::SchemaTooNew {
            found: schema,
            supported: SCHEMA_VERSION,
        });
    }
    toml::from_str(text).map_err(|e| toml_error(&e))
}

/// Turns a TOML error into one line that names the place (line, column) and the problem.
fn toml_error(e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(_) => {
            // The Display form carries "TOML parse error at line L, column C" then a snippet;
            // keep the first line and the message.
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            let place = first
                .strip_prefix("TOML parse error at ")
                .unwrap_or(&first)
                .to_string();
            ConfigError::Toml(format!("{place}: {message}"))
        }
        None => ConfigError::Toml(message),
    }
}

/// A validated configuration version, with the indexes every other part reads it through.
#[derive(Debug, Clone)]
pub struct Mechanism {
    pub doc: Document,
    /// BLAKE3 of the document bytes.
    pub hash: Hash32,
    orgs: HashMap<String, usize>,
    nodes: HashMap<NodeId, NodeInfo>,
    nodes_by_key: HashMap<[u8; 32], NodeId>,
    /// Each organisation's signing keys, oldest first.
    signing_keys: HashMap<String, Vec<PublicKey>>,
    /// Each organisation's encryption epochs, ascending.
    epochs: HashMap<String, BTreeMap<u32, age::x25519::Recipient>>,
    removals: HashMap<NodeId, u64>,
    /// The same cut-offs by the removed node's key bytes: admission looks a cut-off up for every
    /// event, and turning an author key into a node id costs a point decompression.
    removals_by_key: HashMap<[u8; 32], u64>,
}

/// What the rest of the core needs to know about an endorsed node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: NodeId,
    pub key: PublicKey,
    pub org: String,
    pub label: String,
    pub recipient: age::x25519::Recipient,
}

impl Mechanism {
    /// The organisation with this id.
    pub fn org(&self, id: &str) -> Option<&Organisation> {
        self.orgs
            .get(id)
            .and_then(|&i| self.doc.organisations.get(i))
    }

    /// The endorsed node with this id.
    pub fn node(&self, id: &NodeId) -> Option<&NodeInfo> {
        self.nodes.get(id)
    }

    /// The endorsed node whose ed25519 key is `key`.
    pub fn node_by_key(&self, key: &[u8; 32]) -> Option<&NodeInfo> {
        self.nodes_by_key.get(key).and_then(|id| self.nodes.get(id))
    }

    /// Every endorsed node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    /// The endorsed nodes of one organisation.
    pub fn nodes_of<'a>(&'a self, org: &'a str) -> impl Iterator<Item = &'a NodeInfo> + 'a {
        self.nodes.values().filter(move |n| n.org == org)
    }

    /// The removal cut-off of a node: the last of its sequence numbers still accepted.
    pub fn removal_cutoff(&self, node: &NodeId) -> Option<u64> {
        self.removals.get(node).copied()
    }

    /// The removal cut-off of the node with this ed25519 key.
    pub fn removal_cutoff_by_key(&self, key: &[u8; 32]) -> Option<u64> {
        self.removals_by_key.get(key).copied()
    }

    /// The organisation's current signing key.
    pub fn org_signing_key(&self, org: &str) -> Option<&PublicKey> {
        self.signing_keys.get(org).and_then(|keys| keys.last())
    }

    /// The organisation's current (highest) encryption epoch and its recipient.
    pub fn current_epoch(&self, org: &str) -> Option<(u32, &age::x25519::Recipient)> {
        self.epochs
            .get(org)
            .and_then(|epochs| epochs.iter().next_back())
            .map(|(e, r)| (*e, r))
    }

    /// The recipient of one of the organisation's epochs.
    pub fn epoch_recipient(&self, org: &str, epoch: u32) -> Option<&age::x25519::Recipient> {
        self.epochs.get(org).and_then(|epochs| epochs.get(&epoch))
    }

    /// Every epoch of the organisation, ascending.
    pub fn epochs_of(&self, org: &str) -> Vec<(u32, String)> {
        self.epochs
            .get(org)
            .map(|e| e.iter().map(|(n, r)| (*n, r.to_string())).collect())
            .unwrap_or_default()
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.doc.taxonomy.iter().find(|c| c.id == id)
    }

    pub fn case_type(&self, id: &str) -> Option<&CaseType> {
        self.doc.case_types.iter().find(|c| c.id == id)
    }

    pub fn site(&self, id: &str) -> Option<&Site> {
        self.doc.sites.iter().find(|s| s.id == id)
    }

    /// The display name of an organisation, or its id when unknown.
    pub fn org_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.org(id).map(Organisation::display_name).unwrap_or(id)
    }

    /// Whether this version has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.doc.expires_at
    }

    /// Validates a parsed document whose bytes hash to `hash`.
    pub fn from_document(doc: Document, hash: Hash32) -> Result<Self, ConfigError> {
        validate(doc, hash)
    }

    /// Parses and validates a document's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let doc = parse_document(bytes)?;
        validate(doc, Hash32::of(bytes))
    }
}
