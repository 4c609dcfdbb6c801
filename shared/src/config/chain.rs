//! Signed configuration files and the chain of versions (TUF-style).
//!
//! A signed file keeps the document's exact bytes and, beside them, the signatures; the
//! document hash covers the bytes alone, so adding a signature never changes it. Version N+1 is
//! accepted only when it is exactly N+1, names N's hash, carries a threshold of N's root keys'
//! signatures **and** a threshold of its own, keeps the organisations' key histories, and, when
//! it is the newest version being applied, has not expired at the time fixed when the check
//! started. Every function here is pure: the caller passes `now` and persists the result.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ConfigError, Hash32, Mechanism, Roots};
use crate::keys::{KeyError, PublicKey, Signature, SigningKey, context};
use crate::limits::{SIGNATURES_PER_DOCUMENT_MAX, SIGNED_FILE_SIZE_MAX_BYTES};

/// The `format` value of a signed configuration file.
pub const SIGNED_FORMAT: &str = "passerelle-signed-mechanism/1";

/// Why a signed file or a version of the chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("the signed file is larger than {SIGNED_FILE_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    #[error("this is not a signed Passerelle configuration file: {0}")]
    NotSigned(String),
    #[error("the signed file carries more than {SIGNATURES_PER_DOCUMENT_MAX} signatures")]
    TooManySignatures,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "the signature by root key {key} does not verify over this document: the document was changed after signing, or the signature belongs to another document"
    )]
    BadSignature { key: String },
    #[error("{0}")]
    BelowThreshold(String),
    #[error(
        "version {found} cannot be the first version of a mechanism: a node joins with version 1 (the genesis)"
    )]
    NotGenesis { found: u64 },
    #[error("version {found} skips version {expected}: versions must follow one another")]
    Skipped { found: u64, expected: u64 },
    #[error(
        "version {found} is not newer than version {held} already in force: a configuration never goes back (rollback refused)"
    )]
    Rollback { found: u64, held: u64 },
    #[error(
        "version {version} names previous version hash {found}, but the hash of version {prev_version} is {expected}"
    )]
    WrongPrevious {
        version: u64,
        prev_version: u64,
        found: String,
        expected: String,
    },
    #[error(
        "version {version} expired at {expires_at}: ask the ministry for a newer version (checked at {now})"
    )]
    Expired {
        version: u64,
        expires_at: String,
        now: String,
    },
    #[error(
        "version {version} replaces the signing key of `{org}` without the previous key's endorsement"
    )]
    SigningKeyReplaced { version: u64, org: String },
    #[error(
        "version {version} changes or drops encryption key epoch {epoch} of `{org}`: epochs are never rewritten"
    )]
    EpochRewritten {
        version: u64,
        org: String,
        epoch: u32,
    },
    #[error(
        "version {version} drops or changes the removal of node {node}: a removal is permanent"
    )]
    RemovalDropped { version: u64, node: String },
    #[error(
        "version {version} removes node {node} of `{org}` but carries no new encryption key epoch for `{org}`: the organisation must rotate its key (org rotate-key) in the same version"
    )]
    RemovalWithoutRotation {
        version: u64,
        node: String,
        org: String,
    },
    #[error(
        "this is a different mechanism (mechanism id {found}, this node belongs to {expected})"
    )]
    OtherMechanism { found: String, expected: String },
    #[error("a different version {version} (hash {found}) is already in force (hash {held})")]
    Conflict {
        version: u64,
        found: String,
        held: String,
    },
    #[error("no configuration files were given")]
    Empty,
}

/// One official's signature beside the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocSignature {
    pub key: PublicKey,
    pub signature: Signature,
}

/// A signed configuration file: the document's exact bytes and the signatures beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedFile {
    pub format: String,
    /// The exact document text; its bytes are what is hashed and signed.
    pub document: String,
    pub signatures: Vec<DocSignature>,
}

impl SignedFile {
    /// A new, unsigned file around the document text.
    pub fn new(document: String) -> Self {
        Self {
            format: SIGNED_FORMAT.into(),
            document,
            signatures: Vec::new(),
        }
    }

    /// Reads a signed file's bytes, bounded.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        if bytes.len() > SIGNED_FILE_SIZE_MAX_BYTES {
            return Err(ChainError::TooLarge);
        }
        let file: SignedFile =
            serde_json::from_slice(bytes).map_err(|e| ChainError::NotSigned(e.to_string()))?;
        if file.format != SIGNED_FORMAT {
            return Err(ChainError::NotSigned(format!(
                "unknown format `{}`",
                crate::keys::truncate_for_error(&file.format)
            )));
        }
        if file.signatures.len() > SIGNATURES_PER_DOCUMENT_MAX {
            return Err(ChainError::TooManySignatures);
        }
        Ok(file)
    }

    /// The file's bytes (pretty JSON, so a person can read the document in it).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings and lists of strings: serde_json fails only on maps with non-string keys or
        // a `Serialize` impl that errs, which a signed file has neither of.
        let mut out = serde_json::to_vec_pretty(self).expect("a signed file is strings and lists");
        debug_assert!(
            serde_json::from_slice::<SignedFile>(&out).is_ok_and(|back| &back == self),
            "a signed file decodes to itself"
        );
        out.push(b'\n');
        out
    }

    /// The document hash: BLAKE3 of the document bytes alone.
    pub fn hash(&self) -> Hash32 {
        Hash32::of(self.document.as_bytes())
    }

    /// Adds `key`'s signature; a key that already signed is not added twice.
    /// Returns whether a signature was added.
    pub fn sign(&mut self, key: &SigningKey) -> Result<bool, ChainError> {
        let public = key.public();
        if self.signatures.iter().any(|s| s.key == public) {
            return Ok(false);
        }
        if self.signatures.len() >= SIGNATURES_PER_DOCUMENT_MAX {
            return Err(ChainError::TooManySignatures);
        }
        self.signatures.push(DocSignature {
            key: public,
            signature: key.sign(context::MECHANISM_DOCUMENT, self.document.as_bytes()),
        });
        Ok(true)
    }

    /// Parses and validates the document (no signature check).
    pub fn mechanism(&self) -> Result<Mechanism, ChainError> {
        Ok(Mechanism::from_bytes(self.document.as_bytes())?)
    }

    /// How each signature relates to `roots`: (valid root signatures, keys not in roots, repeated keys).
    fn count(&self, roots: &Roots) -> Result<(usize, usize, usize), ChainError> {
        let roots: HashSet<[u8; 32]> = roots.keys.iter().map(PublicKey::to_bytes).collect();
        let mut counted = HashSet::new();
        let (mut foreign, mut repeated) = (0, 0);
        for sig in &self.signatures {
            let key = sig.key.to_bytes();
            if !roots.contains(&key) {
                foreign += 1;
                continue;
            }
            sig.key
                .verify(
                    context::MECHANISM_DOCUMENT,
                    self.document.as_bytes(),
                    &sig.signature,
                )
                .map_err(|_: KeyError| ChainError::BadSignature {
                    key: sig.key.to_string(),
                })?;
            if !counted.insert(key) {
                repeated += 1;
            }
        }
        Ok((counted.len(), foreign, repeated))
    }

    /// Checks that a threshold of `roots` signed; `whose` names the root set in the message.
    fn check_threshold(&self, roots: &Roots, version: u64, whose: &str) -> Result<(), ChainError> {
        let (valid, foreign, repeated) = self.count(roots)?;
        if valid >= roots.threshold as usize {
            return Ok(());
        }
        let mut message = format!(
            "version {version} has {valid} valid signature(s) by {whose} root keys, {} required",
            roots.threshold
        );
        if repeated > 0 {
            message.push_str(&format!(
                "; {repeated} repeated signature(s) by the same key counted once"
            ));
        }
        if foreign > 0 {
            message.push_str(&format!(
                "; {foreign} signature(s) by keys that are not {whose} root keys not counted"
            ));
        }
        Err(ChainError::BelowThreshold(message))
    }
}

fn check_expiry(mechanism: &Mechanism, now: OffsetDateTime) -> Result<(), ChainError> {
    if mechanism.is_expired(now) {
        return Err(ChainError::Expired {
            version: mechanism.doc.version,
            expires_at: crate::time_fmt::rfc3339(mechanism.doc.expires_at),
            now: crate::time_fmt::rfc3339(now),
        });
    }
    Ok(())
}

/// Checks a genesis (version 1) file. `newest` says whether it is the newest version being
/// applied, the only one whose expiry matters.
pub fn check_genesis(
    file: &SignedFile,
    now: OffsetDateTime,
    newest: bool,
) -> Result<Mechanism, ChainError> {
    let mechanism = file.mechanism()?;
    if mechanism.doc.version != 1 {
        return Err(ChainError::NotGenesis {
            found: mechanism.doc.version,
        });
    }
    file.check_threshold(&mechanism.doc.roots, 1, "its own")?;
    if newest {
        check_expiry(&mechanism, now)?;
    }
    Ok(mechanism)
}

/// Checks version N+1 against the accepted version N.
pub fn check_next(
    prev: &Mechanism,
    file: &SignedFile,
    now: OffsetDateTime,
    newest: bool,
) -> Result<Mechanism, ChainError> {
    let next = file.mechanism()?;
    let (held, version) = (prev.doc.version, next.doc.version);
    if version <= held {
        return Err(ChainError::Rollback {
            found: version,
            held,
        });
    }
    if version != held + 1 {
        return Err(ChainError::Skipped {
            found: version,
            expected: held + 1,
        });
    }
    let named = next.doc.previous.clone().unwrap_or_default();
    if Hash32::from_hex(&named.to_ascii_lowercase()) != Some(prev.hash) {
        return Err(ChainError::WrongPrevious {
            version,
            prev_version: held,
            found: named,
            expected: prev.hash.to_hex(),
        });
    }
    file.check_threshold(&prev.doc.roots, version, "the previous version's")?;
    file.check_threshold(&next.doc.roots, version, "its own")?;
    check_histories(prev, &next)?;
    if newest {
        check_expiry(&next, now)?;
    }
    Ok(next)
}

/// The rules between two versions that a single document cannot show: organisations' key
/// histories only grow, removals are permanent, and a removal comes with a key rotation.
fn check_histories(prev: &Mechanism, next: &Mechanism) -> Result<(), ChainError> {
    let version = next.doc.version;
    for org in &prev.doc.organisations {
        if next.org(&org.id).is_none() {
            continue; // The organisation left; nothing of it is carried on.
        }
        let old: Vec<_> = prev
            .doc
            .org_signing_keys
            .iter()
            .filter(|k| k.org == org.id)
            .map(|k| k.key)
            .collect();
        let new: Vec<_> = next
            .doc
            .org_signing_keys
            .iter()
            .filter(|k| k.org == org.id)
            .map(|k| k.key)
            .collect();
        if !new.starts_with(&old) {
            return Err(ChainError::SigningKeyReplaced {
                version,
                org: org.id.clone(),
            });
        }
        let new_epochs = next.epochs_of(&org.id);
        for (epoch, recipient) in prev.epochs_of(&org.id) {
            if !new_epochs.contains(&(epoch, recipient)) {
                return Err(ChainError::EpochRewritten {
                    version,
                    org: org.id.clone(),
                    epoch,
                });
            }
        }
    }
    for removal in &prev.doc.removals {
        if next.removal_cutoff(&removal.node) != Some(removal.last_seq) {
            return Err(ChainError::RemovalDropped {
                version,
                node: removal.node.to_string(),
            });
        }
    }
    for removal in &next.doc.removals {
        if prev.removal_cutoff(&removal.node).is_some() {
            continue;
        }
        // A newly removed node: its organisation, if it stays and has keys, must rotate.
        let org = &removal.org;
        let (Some(_), Some((old_epoch, _))) = (next.org(org), prev.current_epoch(org)) else {
            continue;
        };
        let new_epoch = next.current_epoch(org).map(|(e, _)| e).unwrap_or(0);
        if new_epoch <= old_epoch {
            return Err(ChainError::RemovalWithoutRotation {
                version,
                node: removal.node.to_string(),
                org: org.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a whole chain from its genesis; returns every accepted version, oldest first.
pub fn check_chain(
    files: &[SignedFile],
    now: OffsetDateTime,
) -> Result<Vec<Mechanism>, ChainError> {
    let (first, rest) = files.split_first().ok_or(ChainError::Empty)?;
    let mut accepted = vec![check_genesis(first, now, rest.is_empty())?];
    for (i, file) in rest.iter().enumerate() {
        let newest = i + 1 == rest.len();
        let prev = accepted.last().ok_or(ChainError::Empty)?;
        let next = check_next(prev, file, now, newest)?;
        accepted.push(next);
    }
    Ok(accepted)
}
