//! `passerelle org …`: an organisation administrator's commands — the organisation's keys, its
//! key rotations, endorsing its nodes, and installing its encryption epochs on a node by hand.

use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::keyfiles::{self, OrgKeys, node_endorsement_message};
use passerelle_core::keys::{self, NodeId, context};
use passerelle_core::limits::{KEY_FILE_SIZE_MAX_BYTES, STANZA_FILE_SIZE_MAX_BYTES};
use serde::{Deserialize, Serialize};

use crate::cli::OrgCmd;
use crate::datadir::{DataDir, Passphrases, check_cli_id};
use crate::fsutil;

pub fn run(
    cmd: OrgCmd,
    data_dir: impl Fn() -> Result<DataDir>,
    pass: &Passphrases,
    user: &str,
) -> Result<()> {
    match cmd {
        OrgCmd::Keygen { org, out } => keygen(&org, &out, pass),
        OrgCmd::RotateKey { key } => rotate_key(&key, pass),
        OrgCmd::RotateSigningKey { key } => rotate_signing_key(&key, pass),
        OrgCmd::Endorse {
            node,
            key,
            addresses,
        } => endorse(&node, &key, &addresses, pass),
        OrgCmd::ImportKey { key } => import_key(&data_dir()?, &key, pass, user),
    }
}

fn read_org_keys(path: &Path, pass: &Passphrases) -> Result<OrgKeys> {
    let bytes = fsutil::read_bounded(path, KEY_FILE_SIZE_MAX_BYTES)?;
    let text = crate::util::open_key_file(&bytes, pass.key.as_ref(), crate::util::Sealed::NamedKey)
        .with_context(|| path.display().to_string())?;
    OrgKeys::from_text(&text).with_context(|| path.display().to_string())
}

/// Rewrites an organisation key file, sealed again if it was sealed.
fn write_org_keys(path: &Path, keys: &OrgKeys, pass: &Passphrases, new: bool) -> Result<()> {
    let sealed = keyfiles::seal(keys.to_text().as_bytes(), pass.key.as_ref())?;
    if new {
        fsutil::write_new(path, &sealed, true)
    } else {
        fsutil::write_atomic(path, &sealed, true)
    }
}

/// A stanza as the ministry appends it: `[[name]]` and the fields.
fn stanza<T: Serialize>(name: &str, value: &T) -> Result<String> {
    let body = toml::to_string(value)?;
    Ok(format!("[[{name}]]\n{body}"))
}

fn keygen(org: &str, out: &Path, pass: &Passphrases) -> Result<()> {
    check_cli_id("organisation id", org)?;
    let keys = OrgKeys::generate(org);
    write_org_keys(out, &keys, pass, true)?;
    crate::util::warn_if_unsealed(out, pass.key.as_ref());
    print!(
        "{}",
        stanza("org_signing_keys", &keys.signing_key_stanza()?)?
    );
    for epoch in &keys.epochs {
        println!();
        print!(
            "{}",
            stanza("org_encryption_keys", &keys.epoch_stanza(epoch)?)?
        );
    }
    eprintln!(
        "Organisation keys for `{org}` written to {}. Send the stanzas above to the mechanism's coordinator.",
        out.display()
    );
    Ok(())
}

fn rotate_key(path: &Path, pass: &Passphrases) -> Result<()> {
    let mut keys = read_org_keys(path, pass)?;
    let epoch = keys.rotate_encryption()?.clone();
    write_org_keys(path, &keys, pass, false)?;
    print!(
        "{}",
        stanza("org_encryption_keys", &keys.epoch_stanza(&epoch)?)?
    );
    eprintln!(
        "Encryption key epoch {} added to {}. Send the stanza above to the coordinator; once the new version is in force, new case data for `{}` uses it.",
        epoch.epoch,
        path.display(),
        keys.org
    );
    Ok(())
}

fn rotate_signing_key(path: &Path, pass: &Passphrases) -> Result<()> {
    let mut keys = read_org_keys(path, pass)?;
    keys.rotate_signing();
    write_org_keys(path, &keys, pass, false)?;
    print!(
        "{}",
        stanza("org_signing_keys", &keys.signing_key_stanza()?)?
    );
    eprintln!(
        "New signing key of `{}`, endorsed by the previous one, written to {}. Endorse each of your nodes again (`passerelle org endorse`) and send those stanzas with this one.",
        keys.org,
        path.display()
    );
    Ok(())
}

/// A node's stanza as `passerelle id --toml` prints it (and `org endorse` completes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStanza {
    pub id: NodeId,
    pub org: String,
    pub label: String,
    pub recipient: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<keys::Signature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeStanzaFile {
    nodes: Vec<NodeStanza>,
}

pub fn node_stanza_text(stanza: &NodeStanza) -> Result<String> {
    self::stanza("nodes", stanza)
}

fn endorse(
    node_path: &Path,
    key_path: &Path,
    addresses: &[String],
    pass: &Passphrases,
) -> Result<()> {
    let bytes = fsutil::read_bounded(node_path, STANZA_FILE_SIZE_MAX_BYTES)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", node_path.display()))?;
    let file: NodeStanzaFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", node_path.display(), e.message()))?;
    let [mut node] = <[NodeStanza; 1]>::try_from(file.nodes).map_err(|_| {
        anyhow::anyhow!(
            "{} must hold exactly one [[nodes]] stanza (from `passerelle id --toml`)",
            node_path.display()
        )
    })?;
    keys::parse_recipient(&node.recipient)?;
    check_cli_id("organisation id", &node.org)?;
    let keys = read_org_keys(key_path, pass)?;
    if keys.org != node.org {
        bail!(
            "the node belongs to `{}` but {} holds the keys of `{}`: an organisation endorses only its own nodes",
            node.org,
            key_path.display(),
            keys.org
        );
    }
    for addr in addresses {
        if !addr.starts_with('/') || addr.len() > 256 {
            bail!(
                "--address `{}` is not a libp2p multiaddr (like /ip4/192.0.2.10/tcp/4010)",
                keys::truncate_for_error(addr)
            );
        }
        if !node.addresses.contains(addr) {
            node.addresses.push(addr.clone());
        }
    }
    let signature = keys.signing_key()?.sign(
        context::NODE_ENDORSEMENT,
        &node_endorsement_message(&node.org, &node.id, &node.recipient),
    );
    node.endorsement = Some(signature);
    print!("{}", node_stanza_text(&node)?);
    eprintln!(
        "Node {} ({}) endorsed by `{}`. Send the stanza above to the coordinator.",
        node.id, node.label, node.org
    );
    Ok(())
}

fn import_key(dir: &DataDir, key_path: &Path, pass: &Passphrases, user: &str) -> Result<()> {
    let public = dir.public()?;
    let keys = read_org_keys(key_path, pass)?;
    if keys.org != public.org {
        bail!(
            "this node belongs to `{}` but {} holds the keys of `{}`",
            public.org,
            key_path.display(),
            keys.org
        );
    }
    let epochs: Vec<(u32, String)> = keys
        .epochs
        .iter()
        .map(|e| (e.epoch, keys::identity_text(&e.identity).to_string()))
        .collect();
    let out: crate::rpc::config::KeysImported =
        crate::client::call(dir, pass, user, crate::rpc::Request::ImportKey { epochs })?;
    for epoch in &out.installed {
        println!(
            "Installed encryption key epoch {epoch} of `{}`.",
            public.org
        );
    }
    for epoch in &out.already_held {
        println!("Epoch {epoch} was already installed.");
    }
    for epoch in &out.not_configured {
        println!(
            "Epoch {epoch} is not in the configuration in force yet: import it again once the version that lists it has arrived."
        );
    }
    Ok(())
}
