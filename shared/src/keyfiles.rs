//! Secret key files: a node's identity, an organisation's keys, a ministry official's root key.
//!
//! Each is a small TOML text with a `kind` line, optionally encrypted with a passphrase using
//! age's scrypt recipient (ASCII-armored, so the file stays text). The functions here take and
//! return bytes and strings; writing files with mode 0600 is the caller's business, because
//! `passerelle-core` knows nothing about paths.

use std::io::{Read, Write};

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{self, KeyError, PublicKey, Signature, SigningKey, context};
use crate::limits::{
    KEY_EPOCHS_MAX, KEY_FILE_SIZE_MAX_BYTES, PASSPHRASE_SCRYPT_LOG_N, PASSPHRASE_SCRYPT_LOG_N_MAX,
};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("the key file is larger than {KEY_FILE_SIZE_MAX_BYTES} bytes")]
    TooLarge,
    /// The command line names the flag that gives it (a node's own key or a key file named on
    /// the command line have different ones).
    #[error("the key file is protected by a passphrase")]
    NeedsPassphrase,
    #[error("the passphrase does not open this key file")]
    WrongPassphrase,
    #[error("the key file is damaged: {0}")]
    Damaged(String),
    #[error("this is a {found} file, not a {expected} file")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("organisation {org} already has {KEY_EPOCHS_MAX} encryption key epochs")]
    TooManyEpochs { org: String },
}

const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// Whether the bytes of a key file are passphrase-protected.
pub fn is_protected(bytes: &[u8]) -> bool {
    bytes.trim_ascii_start().starts_with(ARMOR_BEGIN.as_bytes())
}

/// Seals a key file's plaintext with a passphrase when one is given; otherwise returns it as is.
pub fn seal(
    plaintext: &[u8],
    passphrase: Option<&SecretString>,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let Some(passphrase) = passphrase else {
        return Ok(Zeroizing::new(plaintext.to_vec()));
    };
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    recipient.set_work_factor(PASSPHRASE_SCRYPT_LOG_N);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(|e| KeyFileError::Damaged(e.to_string()))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| KeyFileError::Damaged(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armor)
        .map_err(|e| KeyFileError::Damaged(e.to_string()))?;
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish())
        .and_then(|armor| armor.finish())
        .map_err(|e| KeyFileError::Damaged(e.to_string()))?;
    Ok(Zeroizing::new(out))
}

/// Opens a key file's bytes, decrypting them with the passphrase when they are protected.
pub fn open(
    bytes: &[u8],
    passphrase: Option<&SecretString>,
) -> Result<Zeroizing<String>, KeyFileError> {
    if bytes.len() > KEY_FILE_SIZE_MAX_BYTES {
        return Err(KeyFileError::TooLarge);
    }
    let plaintext = if is_protected(bytes) {
        let passphrase = passphrase.ok_or(KeyFileError::NeedsPassphrase)?;
        let mut identity = age::scrypt::Identity::new(passphrase.clone());
        identity.set_max_work_factor(PASSPHRASE_SCRYPT_LOG_N_MAX);
        let reader = age::armor::ArmoredReader::new(bytes);
        let decryptor =
            age::Decryptor::new(reader).map_err(|e| KeyFileError::Damaged(e.to_string()))?;
        let mut plain = Zeroizing::new(Vec::new());
        let mut stream = decryptor
            .decrypt(std::iter::once(&identity as _))
            .map_err(|_| KeyFileError::WrongPassphrase)?;
        stream
            .by_ref()
            .take(KEY_FILE_SIZE_MAX_BYTES as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| KeyFileError::Damaged(e.to_string()))?;
        if plain.len() > KEY_FILE_SIZE_MAX_BYTES {
            return Err(KeyFileError::TooLarge);
        }
        plain
    } else {
        Zeroizing::new(bytes.to_vec())
    };
    let text = String::from_utf8(plaintext.to_vec())
        .map_err(|_| KeyFileError::Damaged("it is not UTF-8 text".into()))?;
    Ok(Zeroizing::new(text))
}

fn parse_kind<T: for<'de> Deserialize<'de>>(
    text: &str,
    expected: &'static str,
) -> Result<T, KeyFileError> {
    #[derive(Deserialize)]
    struct KindOnly {
        kind: Option<String>,
    }
    let kind: KindOnly = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| KeyFileError::Damaged("it is not a Passerelle key file".into()))?;
    match kind.kind {
        Some(k) if k == expected => {}
        Some(k) => {
            return Err(KeyFileError::WrongKind {
                found: keys::truncate_for_error(&k),
                expected,
            });
        }
        None => return Err(KeyFileError::Damaged("it has no `kind` line".into())),
    }
    toml::from_str(text).map_err(|e| KeyFileError::Damaged(e.message().to_string()))
}

fn to_toml<T: Serialize>(value: &T) -> Zeroizing<String> {
    // An empty text here would be a key file written without its secret: never default it.
    Zeroizing::new(
        toml::to_string(value)
            .expect("key files are plain structs of strings and integers, which TOML encodes"),
    )
}

/// A node's two secrets: its ed25519 key (libp2p identity, event signatures) and its own age
/// X25519 identity (to receive its organisation's keys).
#[derive(Clone)]
pub struct NodeSecrets {
    pub signing: SigningKey,
    pub age: age::x25519::Identity,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeSecrets({})", self.signing.public().node_id())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSecretsFile {
    kind: String,
    ed25519: String,
    age: String,
}

impl Drop for NodeSecretsFile {
    fn drop(&mut self) {
        self.ed25519.zeroize();
        self.age.zeroize();
    }
}

impl NodeSecrets {
    pub const KIND: &'static str = "passerelle-node-identity";

    /// Fresh secrets for a new node.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(),
            age: age::x25519::Identity::generate(),
        }
    }

    /// The plaintext TOML of the secrets file.
    pub fn to_text(&self) -> Zeroizing<String> {
        to_toml(&NodeSecretsFile {
            kind: Self::KIND.into(),
            ed25519: self.signing.secret_text().to_string(),
            age: keys::identity_text(&self.age).to_string(),
        })
    }

    /// Reads the secrets file text.
    pub fn from_text(text: &str) -> Result<Self, KeyFileError> {
        let file: NodeSecretsFile = parse_kind(text, Self::KIND)?;
        Ok(Self {
            signing: SigningKey::from_secret_text(&file.ed25519)?,
            age: keys::parse_identity(&file.age)?,
        })
    }
}

/// A ministry official's root signing key.
#[derive(Debug, Clone)]
pub struct RootKey(pub SigningKey);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootKeyFile {
    kind: String,
    public: String,
    secret: String,
}

impl Drop for RootKeyFile {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl RootKey {
    pub const KIND: &'static str = "passerelle-mechanism-root-key";

    pub fn to_text(&self) -> Zeroizing<String> {
        to_toml(&RootKeyFile {
            kind: Self::KIND.into(),
            public: self.0.public().to_string(),
            secret: self.0.secret_text().to_string(),
        })
    }

    pub fn from_text(text: &str) -> Result<Self, KeyFileError> {
        let file: RootKeyFile = parse_kind(text, Self::KIND)?;
        let key = SigningKey::from_secret_text(&file.secret)?;
        if key.public().to_string() != file.public {
            return Err(KeyFileError::Damaged(
                "its public key does not match its secret".into(),
            ));
        }
        Ok(Self(key))
    }
}

/// One encryption key epoch of an organisation.
#[derive(Clone)]
pub struct Epoch {
    pub epoch: u32,
    pub identity: age::x25519::Identity,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epoch({}, {})", self.epoch, self.identity.to_public())
    }
}

/// An organisation's keys, held by its administrator: the chain of signing keys (oldest first;
/// the last is current) and every encryption key epoch.
#[derive(Debug, Clone)]
pub struct OrgKeys {
    pub org: String,
    pub signing_keys: Vec<SigningKey>,
    pub epochs: Vec<Epoch>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgKeysFile {
    kind: String,
    org: String,
    signing_keys: Vec<String>,
    epochs: Vec<EpochFile>,
}

impl Drop for OrgKeysFile {
    fn drop(&mut self) {
        self.signing_keys.iter_mut().for_each(Zeroize::zeroize);
        self.epochs.iter_mut().for_each(|e| e.identity.zeroize());
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochFile {
    epoch: u32,
    identity: String,
}

/// The `[[org_signing_keys]]` stanza an organisation hands the ministry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSigningKeyStanza {
    pub org: String,
    pub key: PublicKey,
    /// The key this one replaces, absent for the organisation's first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<PublicKey>,
    /// The previous key's signature over this key (see [`org_signing_key_message`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<Signature>,
}

/// The `[[org_encryption_keys]]` stanza an organisation hands the ministry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgEncryptionKeyStanza {
    pub org: String,
    pub epoch: u32,
    pub recipient: String,
    /// The organisation's signing key's signature over (org, epoch, recipient), so nobody but
    /// the organisation can put a key of their own into its place.
    pub signature: Signature,
}

/// The bytes an organisation's previous signing key signs to endorse the next one.
pub fn org_signing_key_message(org: &str, key: &PublicKey) -> Vec<u8> {
    format!("{org}\n{key}").into_bytes()
}

/// The bytes an organisation signs to vouch for one of its encryption key epochs.
pub fn org_encryption_key_message(org: &str, epoch: u32, recipient: &str) -> Vec<u8> {
    format!("{org}\n{epoch}\n{recipient}").into_bytes()
}

/// The bytes an organisation signs to endorse one of its nodes.
pub fn node_endorsement_message(org: &str, node_id: &keys::NodeId, recipient: &str) -> Vec<u8> {
    format!("{org}\n{node_id}\n{recipient}").into_bytes()
}

impl OrgKeys {
    pub const KIND: &'static str = "passerelle-organisation-keys";

    /// A new organisation's keys: one signing key and encryption epoch 1.
    pub fn generate(org: &str) -> Self {
        Self {
            org: org.to_string(),
            signing_keys: vec![SigningKey::generate()],
            epochs: vec![Epoch {
                epoch: 1,
                identity: age::x25519::Identity::generate(),
            }],
        }
    }

    /// The current signing key.
    pub fn signing_key(&self) -> Result<&SigningKey, KeyFileError> {
        self.signing_keys
            .last()
            .ok_or_else(|| KeyFileError::Damaged("it holds no signing key".into()))
    }

    /// The stanza for the current signing key.
    pub fn signing_key_stanza(&self) -> Result<OrgSigningKeyStanza, KeyFileError> {
        let current = self.signing_key()?;
        let previous = self
            .signing_keys
            .len()
            .checked_sub(2)
            .and_then(|i| self.signing_keys.get(i));
        Ok(OrgSigningKeyStanza {
            org: self.org.clone(),
            key: current.public(),
            previous_key: previous.map(SigningKey::public),
            endorsement: previous.map(|p| {
                p.sign(
                    context::ORG_SIGNING_KEY,
                    &org_signing_key_message(&self.org, &current.public()),
                )
            }),
        })
    }

    /// The stanza for one encryption epoch, signed with the current signing key.
    pub fn epoch_stanza(&self, epoch: &Epoch) -> Result<OrgEncryptionKeyStanza, KeyFileError> {
        let recipient = epoch.identity.to_public().to_string();
        let signature = self.signing_key()?.sign(
            context::ORG_ENCRYPTION_KEY,
            &org_encryption_key_message(&self.org, epoch.epoch, &recipient),
        );
        Ok(OrgEncryptionKeyStanza {
            org: self.org.clone(),
            epoch: epoch.epoch,
            recipient,
            signature,
        })
    }

    /// Adds the next encryption epoch and returns it.
    pub fn rotate_encryption(&mut self) -> Result<&Epoch, KeyFileError> {
        let next = self.epochs.iter().map(|e| e.epoch).max().unwrap_or(0) + 1;
        if next > KEY_EPOCHS_MAX {
            return Err(KeyFileError::TooManyEpochs {
                org: self.org.clone(),
            });
        }
        self.epochs.push(Epoch {
            epoch: next,
            identity: age::x25519::Identity::generate(),
        });
        self.epochs
            .last()
            .ok_or_else(|| KeyFileError::Damaged("no epoch".into()))
    }

    /// Adds a new signing key, endorsed by the current one.
    pub fn rotate_signing(&mut self) {
        self.signing_keys.push(SigningKey::generate());
    }

    pub fn to_text(&self) -> Zeroizing<String> {
        to_toml(&OrgKeysFile {
            kind: Self::KIND.into(),
            org: self.org.clone(),
            signing_keys: self
                .signing_keys
                .iter()
                .map(|k| k.secret_text().to_string())
                .collect(),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochFile {
                    epoch: e.epoch,
                    identity: keys::identity_text(&e.identity).to_string(),
                })
                .collect(),
        })
    }

    pub fn from_text(text: &str) -> Result<Self, KeyFileError> {
        let file: OrgKeysFile = parse_kind(text, Self::KIND)?;
        let signing_keys = file
            .signing_keys
            .iter()
            .map(|s| SigningKey::from_secret_text(s))
            .collect::<Result<Vec<_>, _>>()?;
        if signing_keys.is_empty() {
            return Err(KeyFileError::Damaged("it holds no signing key".into()));
        }
        let epochs = file
            .epochs
            .iter()
            .map(|e| {
                Ok(Epoch {
                    epoch: e.epoch,
                    identity: keys::parse_identity(&e.identity)?,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        Ok(Self {
            org: file.org.clone(),
            signing_keys,
            epochs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_need_the_passphrase() -> Result<(), KeyFileError> {
        let secrets = NodeSecrets::generate();
        let text = secrets.to_text();
        let pass = SecretString::from("correct horse".to_string());
        let sealed = seal(text.as_bytes(), Some(&pass))?;
        assert!(is_protected(&sealed));
        assert!(matches!(
            open(&sealed, None),
            Err(KeyFileError::NeedsPassphrase)
        ));
        let wrong = SecretString::from("wrong".to_string());
        assert!(matches!(
            open(&sealed, Some(&wrong)),
            Err(KeyFileError::WrongPassphrase)
        ));
        let opened = NodeSecrets::from_text(&open(&sealed, Some(&pass))?)?;
        assert_eq!(opened.signing.public(), secrets.signing.public());
        assert_eq!(
            opened.age.to_public().to_string(),
            secrets.age.to_public().to_string()
        );
        Ok(())
    }

    #[test]
    fn org_keys_round_trip_and_rotate() -> Result<(), KeyFileError> {
        let mut keys = OrgKeys::generate("irc");
        keys.rotate_encryption()?;
        keys.rotate_signing();
        let again = OrgKeys::from_text(&keys.to_text())?;
        assert_eq!(again.epochs.len(), 2);
        let stanza = again.signing_key_stanza()?;
        let previous = stanza.previous_key.ok_or(KeyError::BadSecret)?;
        let endorsement = stanza.endorsement.ok_or(KeyError::BadSecret)?;
        previous.verify(
            context::ORG_SIGNING_KEY,
            &org_signing_key_message("irc", &stanza.key),
            &endorsement,
        )?;
        assert!(matches!(
            RootKey::from_text(&keys.to_text()),
            Err(KeyFileError::WrongKind { .. })
        ));
        Ok(())
    }
}
