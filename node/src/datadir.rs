//! The node's data directory: where it is, what lives in it, and opening what it holds.
//!
//! ```text
//! DATA_DIR/
//!   node.toml     public: node id, organisation, label, age recipient
//!   node.key      secret (0600): ed25519 key and age identity, maybe passphrase-sealed
//!   store.redb    the node's database (one owner: the daemon, or one command at a time)
//! ```

use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use anyhow::{Context, Result, bail};
use passerelle_core::keyfiles::{self, NodeSecrets};
use passerelle_core::keys::{self, NodeId};
use passerelle_core::limits::{KEY_FILE_SIZE_MAX_BYTES, PASSPHRASE_FILE_SIZE_MAX_BYTES};
use passerelle_core::store::Store;
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Passphrases given on the command line or in the environment.
#[derive(Debug, Default, Clone)]
pub struct Passphrases {
    /// Protects this node's own secret file.
    pub node: Option<SecretString>,
    /// Protects key files named on the command line (root keys, organisation keys).
    pub key: Option<SecretString>,
}

/// Reads a passphrase from a file (first line) or from an environment variable.
pub fn passphrase(file: Option<&Path>, env: &str) -> Result<Option<SecretString>> {
    if let Some(path) = file {
        let bytes = fsutil::read_bounded(path, PASSPHRASE_FILE_SIZE_MAX_BYTES)?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        let line = text.lines().next().unwrap_or_default().to_string();
        if line.is_empty() {
            bail!("the passphrase file {} is empty", path.display());
        }
        return Ok(Some(SecretString::from(line)));
    }
    match std::env::var(env) {
        Ok(v) if !v.is_empty() => Ok(Some(SecretString::from(v))),
        _ => Ok(None),
    }
}

/// The public description of this node, kept in `node.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePublic {
    pub kind: String,
    pub id: NodeId,
    pub org: String,
    pub label: String,
    pub recipient: String,
}

impl NodePublic {
    pub const KIND: &'static str = "passerelle-node";
}

/// The data directory of one node.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    /// `--data-dir`, else `PASSERELLE_DATA_DIR` (clap reads it), else the platform data dir.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Self> {
        if let Some(root) = flag {
            return Ok(Self { root });
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .context("no data directory: give --data-dir or set PASSERELLE_DATA_DIR")?;
        Ok(Self {
            root: base.join("passerelle"),
        })
    }

    pub fn public_path(&self) -> PathBuf {
        self.root.join("node.toml")
    }

    pub fn secret_path(&self) -> PathBuf {
        self.root.join("node.key")
    }

    pub fn store_path(&self) -> PathBuf {
        self.root.join("store.redb")
    }

    /// Whether this directory holds a node identity.
    pub fn is_initialised(&self) -> bool {
        self.public_path().exists() || self.secret_path().exists()
    }

    /// The node's public description.
    pub fn public(&self) -> Result<NodePublic> {
        let path = self.public_path();
        if !path.exists() {
            bail!(
                "no node in {}: run `passerelle init --org ORG --label LABEL` first",
                self.root.display()
            );
        }
        let bytes = fsutil::read_bounded(&path, KEY_FILE_SIZE_MAX_BYTES)?;
        let text = String::from_utf8(bytes).context("node.toml is not UTF-8 text")?;
        let public: NodePublic =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("node.toml: {}", e.message()))?;
        if public.kind != NodePublic::KIND {
            bail!("node.toml is not a Passerelle node description");
        }
        Ok(public)
    }

    /// The node's secrets, opened with the passphrase when they are sealed.
    pub fn secrets(&self, passphrase: Option<&SecretString>) -> Result<NodeSecrets> {
        let bytes = fsutil::read_bounded(&self.secret_path(), KEY_FILE_SIZE_MAX_BYTES)?;
        let text = crate::util::open_key_file(&bytes, passphrase, crate::util::Sealed::NodeKey)
            .context("node.key")?;
        let secrets = NodeSecrets::from_text(&text).context("node.key")?;
        let public = self.public()?;
        if secrets.signing.public().node_id() != public.id
            || secrets.age.to_public().to_string() != public.recipient
        {
            bail!("node.key does not belong to the node described in node.toml");
        }
        Ok(secrets)
    }

    /// Opens the node's database. A directory or store made before files were kept private
    /// (0700 and 0600) is tightened first.
    pub fn store(&self) -> Result<Store> {
        self.store_with_cache(passerelle_core::limits::STORE_CACHE_MIB_DEFAULT)
    }

    /// [`DataDir::store`] with a page cache of `cache_mib` MiB.
    pub fn store_with_cache(&self, cache_mib: usize) -> Result<Store> {
        self.public()?;
        self.keep_private()?;
        let store = Store::open_with_cache(&self.store_path(), cache_mib)?;
        let moved = store.format_report().moved;
        if moved > 0 {
            // Once per node, on the first open by this version: a count, nothing personal.
            eprintln!(
                "passerelle: the node's database moved to store format {} ({moved} events)",
                passerelle_core::store::STORE_FORMAT
            );
        }
        Ok(store)
    }

    /// The directory 0700, the files directly in it 0600: only this node's user reads them.
    pub fn keep_private(&self) -> Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let tighten = |path: &std::path::Path, mode: u32| -> Result<()> {
                let meta = std::fs::symlink_metadata(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if !meta.file_type().is_symlink() && meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .with_context(|| format!("cannot protect {}", path.display()))?;
                }
                Ok(())
            };
            tighten(&self.root, 0o700)?;
            let entries = std::fs::read_dir(&self.root)
                .with_context(|| format!("cannot list {}", self.root.display()))?;
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    tighten(&entry.path(), 0o600)?;
                }
            }
        }
        Ok(())
    }

    /// Writes an identity made elsewhere (the demo and the benchmark build whole mechanisms
    /// in memory) into a new data directory.
    pub fn materialize(&self, secrets: &NodeSecrets, org: &str, label: &str) -> Result<NodePublic> {
        if self.is_initialised() {
            bail!("{} already holds a node identity", self.root.display());
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        let public = NodePublic {
            kind: NodePublic::KIND.into(),
            id: secrets.signing.public().node_id(),
            org: org.to_string(),
            label: label.to_string(),
            recipient: secrets.age.to_public().to_string(),
        };
        fsutil::write_new(&self.secret_path(), secrets.to_text().as_bytes(), true)?;
        fsutil::write_new(
            &self.public_path(),
            toml::to_string(&public)?.as_bytes(),
            false,
        )?;
        Ok(public)
    }

    /// Creates a new node identity here; refuses if one exists.
    pub fn create(
        &self,
        org: &str,
        label: &str,
        passphrase: Option<&SecretString>,
    ) -> Result<NodePublic> {
        if self.is_initialised() {
            bail!(
                "{} already holds a node identity: refusing to overwrite it",
                self.root.display()
            );
        }
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot protect {}", self.root.display()))?;
        }
        let secrets = NodeSecrets::generate();
        let sealed = keyfiles::seal(secrets.to_text().as_bytes(), passphrase)?;
        let public = NodePublic {
            kind: NodePublic::KIND.into(),
            id: secrets.signing.public().node_id(),
            org: org.to_string(),
            label: label.to_string(),
            recipient: secrets.age.to_public().to_string(),
        };
        fsutil::write_new(&self.secret_path(), &sealed, true)?;
        let text = toml::to_string(&public)?;
        fsutil::write_new(&self.public_path(), text.as_bytes(), false)?;
        Ok(public)
    }
}

/// Checks an identifier given on the command line (organisation id, label).
pub fn check_cli_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= passerelle_core::limits::ID_LENGTH_MAX_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "`{}` is not a valid {what} (a-z, 0-9, - and _, at most {} characters)",
            keys::truncate_for_error(id),
            passerelle_core::limits::ID_LENGTH_MAX_CHARS
        );
    }
    Ok(())
}
