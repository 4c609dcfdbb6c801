//! The chain of configuration versions a node has accepted, parsed once: what admission, the
//! fold and the engine read the mechanism through. Which versions are accepted is decided by
//! `config::chain`; keeping them on disk is the store's business.

use std::sync::Arc;

use super::{Hash32, Mechanism};

/// The chain of accepted configuration versions, parsed.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    /// Index i holds version i + 1.
    versions: Vec<Arc<Mechanism>>,
}

/// The node holds no configuration version: it has not joined a mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node has not joined a mechanism yet: run `passerelle join GENESIS.signed`")]
pub struct NotJoined;

impl ConfigState {
    /// The mechanism id: the genesis document hash.
    pub fn mechanism_id(&self) -> Option<Hash32> {
        self.versions.first().map(|m| m.hash)
    }

    /// The version in force (the highest accepted).
    pub fn current(&self) -> Option<&Arc<Mechanism>> {
        self.versions.last()
    }

    /// The version in force, or the error that says the node has not joined.
    pub fn require(&self) -> Result<&Arc<Mechanism>, NotJoined> {
        self.current().ok_or(NotJoined)
    }

    /// A given version, if held.
    pub fn version(&self, version: u64) -> Option<&Arc<Mechanism>> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.versions.get(index)
    }

    /// The highest version held (0 when none).
    pub fn highest(&self) -> u64 {
        self.versions.len() as u64
    }

    /// Every version held, oldest first.
    pub fn all(&self) -> &[Arc<Mechanism>] {
        &self.versions
    }

    /// Appends the next version, which `config::chain` has accepted after the highest held.
    pub(crate) fn push(&mut self, mechanism: Mechanism) {
        assert_eq!(
            mechanism.doc.version,
            self.highest() + 1,
            "configuration versions are held without gaps"
        );
        self.versions.push(Arc::new(mechanism));
    }
}
