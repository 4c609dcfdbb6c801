//! This node's own commands: `init`, `id`, `join` and `status`.

use std::path::PathBuf;

use crate::rpc::StatusAnswer;
use anyhow::{Result, bail};
use passerelle_core::time_fmt;
use time::OffsetDateTime;

use crate::cli::cmd_mechanism::{apply, read_chain};

use crate::cli::cmd_org::{NodeStanza, node_stanza_text};
use crate::datadir::{DataDir, Passphrases, check_cli_id};

pub fn init(dir: &DataDir, org: &str, label: &str, pass: &Passphrases) -> Result<()> {
    check_cli_id("organisation id", org)?;
    check_cli_id("label", label)?;
    let public = dir.create(org, label, pass.node.as_ref())?;
    println!("Node id: {}", public.id);
    println!();
    print!("{}", node_stanza_text(&stanza(&public))?);
    eprintln!(
        "Node created in {}{}. Save the stanza above as NODE.toml (`passerelle id --toml > NODE.toml`) for your organisation's administrator to endorse.",
        dir.root.display(),
        if pass.node.is_some() {
            ", secret key sealed with the passphrase"
        } else {
            ""
        }
    );
    Ok(())
}

fn stanza(public: &crate::datadir::NodePublic) -> NodeStanza {
    NodeStanza {
        id: public.id,
        org: public.org.clone(),
        label: public.label.clone(),
        recipient: public.recipient.clone(),
        addresses: Vec::new(),
        endorsement: None,
    }
}

pub fn id(dir: &DataDir, toml: bool) -> Result<()> {
    let public = dir.public()?;
    if toml {
        print!("{}", node_stanza_text(&stanza(&public))?);
    } else {
        println!("{}", public.id);
        println!("{}", public.recipient);
    }
    Ok(())
}

pub fn join(dir: &DataDir, paths: &[PathBuf], pass: &Passphrases, user: &str) -> Result<()> {
    let public = dir.public()?;
    // The secrets must open: a node that cannot read its own key cannot take part.
    dir.secrets(pass.node.as_ref())?;
    let files = read_chain(paths)?;
    let status: StatusAnswer = crate::client::call(dir, pass, user, crate::rpc::Request::Status)?;
    if let (Some(held), Some(first)) = (status.mechanism_id.as_deref(), files.first())
        && held != first.hash().to_hex()
    {
        bail!(
            "this node already belongs to mechanism {}: {} is the genesis of another mechanism",
            &held[..12.min(held.len())],
            paths[0].display()
        );
    }
    // Check the chain before anything is written: the newest version must list this node,
    // endorsed for its organisation, with its own recipient.
    let checked = passerelle_core::config::chain::check_chain(&files, OffsetDateTime::now_utc())?;
    let newest = checked
        .last()
        .ok_or_else(|| anyhow::anyhow!("no configuration files were given"))?;
    let Some(entry) = newest.node(&public.id) else {
        bail!(
            "this node ({}) is not in version {} of the configuration: have `{}` endorse it (`passerelle org endorse`) and the ministry add the stanza",
            public.id,
            newest.doc.version,
            public.org
        );
    };
    if entry.org != public.org || entry.recipient.to_string() != public.recipient {
        bail!(
            "the configuration lists this node for `{}` with another key or organisation than this node's own",
            entry.org
        );
    }
    apply(dir, &files, pass, user)?;
    println!(
        "Joined {} (mechanism {}), version {} in force until {}.",
        newest.doc.mechanism,
        // `newest` above is its last version, so the checked chain is not empty.
        checked.first().map(|m| m.hash.to_hex()).unwrap_or_default(),
        newest.doc.version,
        time_fmt::readable(newest.doc.expires_at)
    );
    Ok(())
}

pub fn status(dir: &DataDir, pass: &Passphrases, user: &str, as_json: bool) -> Result<()> {
    let public = dir.public()?;
    let s: StatusAnswer = crate::client::call(dir, pass, user, crate::rpc::Request::Status)?;
    if as_json {
        /// `status --json`: the answer, with this node's label and whether it joined.
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            status: &'a StatusAnswer,
            label: &'a str,
            joined: bool,
        }
        return crate::cli::cmd_case::print_json(&Shown {
            status: &s,
            label: &public.label,
            joined: s.config_version.is_some(),
        });
    }
    crate::cli::status_view::print(&public, &s);
    Ok(())
}
