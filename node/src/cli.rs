//! The command line (clap): the contract in DESIGN.md, and the dispatch to each command.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::datadir::{self, DataDir, Passphrases};
use crate::{cmd_mechanism, cmd_node, cmd_org};

/// Passerelle: a referral mechanism between the organisations that assist migrants, with
/// ministry-signed configuration, end-to-end encrypted referrals and peer-to-peer sync.
#[derive(Debug, Parser)]
#[command(name = "passerelle", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The node's data directory (default: the platform data directory).
    #[arg(long, global = true, env = "PASSERELLE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A file whose first line is the passphrase of this node's secret key file
    /// (or set PASSERELLE_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// A file whose first line is the passphrase of the key file named on the command line
    /// (root key, organisation key; or set PASSERELLE_KEY_PASSPHRASE).
    #[arg(long, global = true, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The ministry's side: root keys, the configuration document, signing and the chain.
    #[command(subcommand)]
    Mechanism(MechanismCmd),
    /// Create this node's identity (ed25519 key and age identity); prints its [[nodes]] stanza.
    Init {
        /// The organisation this node belongs to (its id in the configuration).
        #[arg(long)]
        org: String,
        /// A label for this node, such as medenine-laptop-1.
        #[arg(long)]
        label: String,
    },
    /// Print this node's id and age recipient, or its [[nodes]] stanza.
    Id {
        /// Print the [[nodes]] stanza for `org endorse`.
        #[arg(long)]
        toml: bool,
    },
    /// An organisation administrator's side: organisation keys and node endorsements.
    #[command(subcommand)]
    Org(OrgCmd),
    /// Make this node a member: check the signed configuration chain and keep it as the trust anchor.
    Join {
        /// The genesis (version 1) signed file, then any later versions in order.
        #[arg(required = true, value_name = "SIGNED")]
        files: Vec<PathBuf>,
    },
    /// This node's configuration version, expiry and keys.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The performance figures, each beside a baseline measured in the same run.
    Bench {
        /// Smaller sizes: about a minute.
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MechanismCmd {
    /// Create a ministry official's root signing key; prints the public key.
    Keygen {
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Write a complete, valid configuration document from the shipped sample mechanism.
    Template {
        /// The officials' public keys (ed25519:…), as printed by `mechanism keygen`.
        #[arg(long = "root-key", required = true, value_name = "PUB")]
        root_keys: Vec<String>,
        /// How many root keys must sign each version (default: all of them).
        #[arg(long)]
        threshold: Option<u32>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a document (TOML) or add a signature to a signed file.
    Sign {
        /// mechanism.toml, or a .signed file to add signatures to.
        file: PathBuf,
        /// Root key files to sign with.
        #[arg(long = "key", required = true, value_name = "KEY")]
        keys: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the next version's document: version + 1, previous hash, removal cut-offs.
    Next {
        /// The current version's signed file.
        current: PathBuf,
        /// A node to remove; its cut-off comes from this node's view, --cutoff, or a prompt.
        #[arg(long = "remove-node", value_name = "NODE_ID")]
        remove_nodes: Vec<String>,
        /// The last sequence number to accept from a removed node, as NODE_ID=SEQ.
        #[arg(long = "cutoff", value_name = "NODE_ID=SEQ")]
        cutoffs: Vec<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Check a chain of signed files, genesis first; exits non-zero with the reason.
    Verify {
        #[arg(required = true, value_name = "SIGNED")]
        files: Vec<PathBuf>,
    },
    /// Show what a signed file says and who signed it.
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Apply newer versions to this node.
    Update {
        #[arg(required = true, value_name = "SIGNED")]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCmd {
    /// Create an organisation's signing key and encryption epoch 1; prints the stanzas.
    Keygen {
        #[arg(long)]
        org: String,
        #[arg(long, value_name = "ORGKEY")]
        out: PathBuf,
    },
    /// Add the next encryption key epoch; prints its stanza.
    RotateKey {
        #[arg(value_name = "ORGKEY")]
        key: PathBuf,
    },
    /// Replace the signing key, endorsed by the current one; prints its stanza.
    RotateSigningKey {
        #[arg(value_name = "ORGKEY")]
        key: PathBuf,
    },
    /// Endorse a node of this organisation; prints its stanza for the ministry.
    Endorse {
        /// The node's stanza, as printed by `passerelle id --toml`.
        #[arg(value_name = "NODE.toml")]
        node: PathBuf,
        #[arg(long, value_name = "ORGKEY")]
        key: PathBuf,
        /// An address where the node can be reached (libp2p multiaddr); may repeat.
        #[arg(long = "address", value_name = "MULTIADDR")]
        addresses: Vec<String>,
    },
    /// Install the organisation's encryption epochs on this node by hand.
    ImportKey {
        #[arg(value_name = "ORGKEY")]
        key: PathBuf,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let passphrases = Passphrases {
        node: datadir::passphrase(
            cli.global.passphrase_file.as_deref(),
            "PASSERELLE_PASSPHRASE",
        )?,
        key: datadir::passphrase(
            cli.global.key_passphrase_file.as_deref(),
            "PASSERELLE_KEY_PASSPHRASE",
        )?,
    };
    let data_dir = || DataDir::resolve(cli.global.data_dir.clone());
    match cli.command {
        Command::Mechanism(cmd) => cmd_mechanism::run(cmd, data_dir, &passphrases),
        Command::Init { org, label } => cmd_node::init(&data_dir()?, &org, &label, &passphrases),
        Command::Id { toml } => cmd_node::id(&data_dir()?, toml),
        Command::Org(cmd) => cmd_org::run(cmd, data_dir, &passphrases),
        Command::Join { files } => cmd_node::join(&data_dir()?, &files, &passphrases),
        Command::Status { json } => cmd_node::status(&data_dir()?, json),
        Command::Bench { quick, json } => crate::bench::run(quick, json),
    }
}
