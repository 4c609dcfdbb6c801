//! Keys and their text encodings: ed25519 signing keys (ministry roots, organisations, nodes),
//! signatures with domain-separation contexts, node ids (libp2p peer ids), and age X25519
//! recipients and identities.
//!
//! Text forms: public keys are `ed25519:` followed by unpadded URL-safe base64 of the 32 key
//! bytes; signatures are unpadded URL-safe base64 of the 64 signature bytes; node ids are the
//! base58 libp2p peer id of the node's ed25519 key; age keys use age's own bech32 strings.

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Why a key, signature or node id could not be read or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a public key must look like `ed25519:` followed by 43 base64 characters")]
    BadPublicKey,
    #[error("a signature must be 86 base64 characters")]
    BadSignature,
    #[error("`{0}` is not a node id (a libp2p peer id of an ed25519 key, like 12D3KooW…)")]
    BadNodeId(String),
    #[error("`{0}` is not an age recipient (age1…)")]
    BadRecipient(String),
    #[error("the age identity is not valid (AGE-SECRET-KEY-1…)")]
    BadIdentity,
    #[error("the secret key is not valid")]
    BadSecret,
    #[error("the signature does not verify")]
    SignatureMismatch,
}

/// Domain-separation contexts: a signature made for one purpose never verifies for another.
pub mod context {
    /// A ministry official's signature over a configuration document.
    pub const MECHANISM_DOCUMENT: &[u8] = b"passerelle/v1/mechanism-document";
    /// An organisation's signature over one of its nodes (id, recipient, organisation).
    pub const NODE_ENDORSEMENT: &[u8] = b"passerelle/v1/node-endorsement";
    /// An organisation's previous signing key endorsing its next one.
    pub const ORG_SIGNING_KEY: &[u8] = b"passerelle/v1/org-signing-key";
    /// An organisation's signing key vouching for one of its encryption key epochs.
    pub const ORG_ENCRYPTION_KEY: &[u8] = b"passerelle/v1/org-encryption-key";
    /// A node's signature over an event header.
    pub const EVENT: &[u8] = b"passerelle/v1/event";
    /// A node's signature over the hash of a backup of its database.
    pub const BACKUP: &[u8] = b"passerelle/v1/backup";
}

fn contextualise(context: &[u8], message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(context.len() + 1 + message.len());
    bytes.extend_from_slice(context);
    bytes.push(0);
    bytes.extend_from_slice(message);
    bytes
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Reads the 32 key bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::BadPublicKey)
    }

    /// Verifies `signature` over `message` under `context` (strict verification: no malleable
    /// or small-order encodings).
    pub fn verify(
        &self,
        context: &[u8],
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), KeyError> {
        self.0
            .verify_strict(&contextualise(context, message), &signature.0)
            .map_err(|_| KeyError::SignatureMismatch)
    }

    /// The libp2p peer id of this key: the node id when it is a node's key.
    pub fn node_id(&self) -> NodeId {
        // The key bytes came from a valid VerifyingKey, so libp2p accepts them.
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.to_bytes())
            .map(libp2p_identity::PublicKey::from);
        match key {
            Ok(key) => NodeId(key.to_peer_id()),
            Err(_) => unreachable_peer_id(),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_peer_id() -> NodeId {
    // libp2p and ed25519-dalek accept the same 32-byte encodings; a failure here is a bug in
    // one of them, not something input can cause.
    panic!("libp2p refused an ed25519 key that ed25519-dalek accepted")
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let b64 = s.strip_prefix("ed25519:").ok_or(KeyError::BadPublicKey)?;
        if b64.len() != 43 {
            return Err(KeyError::BadPublicKey);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| KeyError::BadPublicKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadPublicKey)?;
        Self::from_bytes(&bytes)
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub ed25519_dalek::Signature);

impl Signature {
    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }

    /// Reads 64 signature bytes.
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        Self(ed25519_dalek::Signature::from_bytes(bytes))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.len() != 86 {
            return Err(KeyError::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| KeyError::BadSignature)?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| KeyError::BadSignature)?;
        Ok(Self::from_bytes(&bytes))
    }
}

/// An ed25519 signing key. The secret bytes are wiped when it is dropped (ed25519-dalek's
/// `SigningKey` zeroizes itself).
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public())
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        Self(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// The key from its 32 secret bytes.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes (wiped when the returned value is dropped).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The secret as unpadded URL-safe base64, for key files.
    pub fn secret_text(&self) -> Zeroizing<String> {
        let secret = self.secret_bytes();
        Zeroizing::new(URL_SAFE_NO_PAD.encode(&secret[..]))
    }

    /// Reads the secret from its key-file text.
    pub fn from_secret_text(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|_| KeyError::BadSecret)?,
        );
        let secret: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::BadSecret)?;
        Ok(Self::from_secret_bytes(secret))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message` under `context`.
    pub fn sign(&self, context: &[u8], message: &[u8]) -> Signature {
        Signature(self.0.sign(&contextualise(context, message)))
    }

    /// The libp2p keypair with the same secret: a node's network identity.
    pub fn to_libp2p(&self) -> libp2p_identity::Keypair {
        let mut bytes = self.secret_bytes();
        match libp2p_identity::Keypair::ed25519_from_bytes(&mut bytes[..]) {
            Ok(keypair) => keypair,
            Err(_) => {
                #[allow(clippy::panic)]
                {
                    panic!("libp2p refused a 32-byte ed25519 secret")
                }
            }
        }
    }
}

/// A node id: the libp2p peer id of the node's ed25519 key. The key itself can be read back
/// from the id (ed25519 peer ids inline the key), which is how signatures by a node are checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub libp2p_identity::PeerId);

impl NodeId {
    /// The node's ed25519 public key, read from the peer id.
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::BadNodeId(self.0.to_base58());
        let multihash = self.0.as_ref();
        if multihash.code() != 0 {
            return Err(bad());
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| bad())?;
        let key = key.try_into_ed25519().map_err(|_| bad())?;
        PublicKey::from_bytes(&key.to_bytes()).map_err(|_| bad())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_base58())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NodeId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        if s.is_empty() || s.len() > 128 {
            return Err(KeyError::BadNodeId(truncate_for_error(s)));
        }
        let peer = libp2p_identity::PeerId::from_str(s)
            .map_err(|_| KeyError::BadNodeId(truncate_for_error(s)))?;
        let id = NodeId(peer);
        // Only ed25519 peer ids are node ids: the key must be readable from the id.
        id.public_key()?;
        Ok(id)
    }
}

/// Shortens a piece of input quoted in an error, so a huge input never becomes a huge message.
pub fn truncate_for_error(s: &str) -> String {
    const QUOTE_MAX_CHARS: usize = 60;
    if s.chars().count() <= QUOTE_MAX_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(QUOTE_MAX_CHARS).collect();
        format!("{head}…")
    }
}

/// Parses an age X25519 recipient (`age1…`).
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, KeyError> {
    if s.len() > 128 {
        return Err(KeyError::BadRecipient(truncate_for_error(s)));
    }
    age::x25519::Recipient::from_str(s).map_err(|_| KeyError::BadRecipient(truncate_for_error(s)))
}

/// Parses an age X25519 identity (`AGE-SECRET-KEY-1…`).
pub fn parse_identity(s: &str) -> Result<age::x25519::Identity, KeyError> {
    age::x25519::Identity::from_str(s.trim()).map_err(|_| KeyError::BadIdentity)
}

/// The text of an age identity, wiped when dropped.
pub fn identity_text(identity: &age::x25519::Identity) -> Zeroizing<String> {
    Zeroizing::new(identity.to_string().expose_secret().to_string())
}

macro_rules! serde_via_str {
    ($ty:ty, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_str!(PublicKey, "public key");
serde_via_str!(Signature, "signature");
serde_via_str!(NodeId, "node id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() -> Result<(), KeyError> {
        let key = SigningKey::generate();
        let public = key.public();
        assert_eq!(public.to_string().parse::<PublicKey>()?, public);
        let sig = key.sign(context::EVENT, b"hello");
        assert_eq!(sig.to_string().parse::<Signature>()?, sig);
        public.verify(context::EVENT, b"hello", &sig)?;
        assert_eq!(
            public.verify(context::MECHANISM_DOCUMENT, b"hello", &sig),
            Err(KeyError::SignatureMismatch)
        );
        let node = public.node_id();
        let parsed: NodeId = node.to_string().parse()?;
        assert_eq!(parsed, node);
        assert_eq!(parsed.public_key()?, public);
        assert_eq!(
            key.to_libp2p().public().to_peer_id(),
            node.0,
            "node id is the libp2p peer id"
        );
        let again = SigningKey::from_secret_text(&key.secret_text())?;
        assert_eq!(again.public(), public);
        Ok(())
    }

    #[test]
    fn bad_text_is_refused() {
        assert!("ed25519:abc".parse::<PublicKey>().is_err());
        assert!("nope".parse::<NodeId>().is_err());
        assert!(
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
                .parse::<NodeId>()
                .is_err()
        );
        assert!(parse_recipient("age1xyz").is_err());
        assert!("x".repeat(86).parse::<Signature>().is_err());
    }
}
