//! `passerelle mechanism …`: the ministry's commands — root keys, the template, signing, the
//! next version, verifying, showing, and applying newer versions to this node.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use passerelle_core::config::Mechanism;
use passerelle_core::config::chain::{self, SignedFile};
use passerelle_core::config::template::{self, RemovalCutoff};
use passerelle_core::keyfiles::{self, RootKey};
use passerelle_core::keys::{NodeId, PublicKey, SigningKey};
use passerelle_core::limits::{
    CHAIN_FILES_MAX, DOCUMENT_SIZE_MAX_BYTES, KEY_FILE_SIZE_MAX_BYTES, ROOT_KEYS_MAX,
    SIGNED_FILE_SIZE_MAX_BYTES,
};
use passerelle_core::time_fmt;
use serde_json::json;
use time::OffsetDateTime;

use crate::cli::MechanismCmd;
use crate::client;
use crate::datadir::{DataDir, Passphrases};
use crate::fsutil;
use crate::rpc::Request;
use crate::rpc::config::LogHeads;
use crate::samples;

pub fn run(
    cmd: MechanismCmd,
    data_dir: impl Fn() -> Result<DataDir>,
    pass: &Passphrases,
    user: &str,
) -> Result<()> {
    match cmd {
        MechanismCmd::Keygen { out } => keygen(&out, pass),
        MechanismCmd::Template {
            root_keys,
            threshold,
            out,
        } => template_cmd(&root_keys, threshold, &out),
        MechanismCmd::Sign { file, keys, out } => sign(&file, &keys, &out, pass),
        MechanismCmd::Next {
            current,
            remove_nodes,
            cutoffs,
            out,
        } => next(&current, &remove_nodes, &cutoffs, &out, data_dir),
        MechanismCmd::Verify { files } => verify(&files),
        MechanismCmd::Show { file, json } => show(&file, json),
        MechanismCmd::Update { files } => update(&data_dir()?, &files, pass, user),
        MechanismCmd::OverrideExpiry { hours } => {
            let out: crate::rpc::config::ExpiryOverridden = crate::client::call(
                &data_dir()?,
                pass,
                user,
                crate::rpc::Request::OverrideExpiry { hours },
            )?;
            println!(
                "This node may create case events until {} although its configuration has expired; the override is in the audit log.",
                out.until
            );
            Ok(())
        }
    }
}

fn keygen(out: &Path, pass: &Passphrases) -> Result<()> {
    let key = RootKey(SigningKey::generate());
    let sealed = keyfiles::seal(key.to_text().as_bytes(), pass.key.as_ref())?;
    fsutil::write_new(out, &sealed, true)?;
    crate::util::warn_if_unsealed(out, pass.key.as_ref());
    println!("{}", key.0.public());
    eprintln!(
        "Root key written to {} (keep it offline). Its public key is above: give it to the coordinator.",
        out.display()
    );
    Ok(())
}

fn template_cmd(root_keys: &[String], threshold: Option<u32>, out: &Path) -> Result<()> {
    if root_keys.len() > ROOT_KEYS_MAX {
        bail!("at most {ROOT_KEYS_MAX} root keys");
    }
    let keys = root_keys
        .iter()
        .map(|k| {
            k.parse::<PublicKey>().with_context(|| {
                format!(
                    "--root-key {}",
                    passerelle_core::keys::truncate_for_error(k)
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let threshold = threshold.unwrap_or(keys.len() as u32);
    let text = template::from_sample(
        samples::MECHANISM,
        &keys,
        threshold,
        OffsetDateTime::now_utc(),
    )?;
    fsutil::write_atomic(out, text.as_bytes(), false)?;
    eprintln!(
        "Wrote {} (version 1, {} root key(s), threshold {threshold}). Append the partners' stanzas, then sign it with `passerelle mechanism sign`.",
        out.display(),
        keys.len()
    );
    Ok(())
}

/// Reads a signed configuration file.
pub fn read_signed(path: &Path) -> Result<SignedFile> {
    let bytes = fsutil::read_bounded(path, SIGNED_FILE_SIZE_MAX_BYTES)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    SignedFile::from_bytes(&bytes).with_context(|| path.display().to_string())
}

/// Reads several signed files (a chain), bounded in number.
pub fn read_chain(paths: &[PathBuf]) -> Result<Vec<SignedFile>> {
    if paths.len() > CHAIN_FILES_MAX {
        bail!("at most {CHAIN_FILES_MAX} configuration files at once");
    }
    paths.iter().map(|p| read_signed(p)).collect()
}

fn read_root_key(path: &Path, pass: &Passphrases) -> Result<RootKey> {
    let bytes = fsutil::read_bounded(path, KEY_FILE_SIZE_MAX_BYTES)?;
    let text = crate::util::open_key_file(&bytes, pass.key.as_ref(), crate::util::Sealed::NamedKey)
        .with_context(|| path.display().to_string())?;
    RootKey::from_text(&text).with_context(|| path.display().to_string())
}

fn sign(file: &Path, key_paths: &[PathBuf], out: &Path, pass: &Passphrases) -> Result<()> {
    let bytes = fsutil::read_bounded(file, SIGNED_FILE_SIZE_MAX_BYTES)?;
    let looks_signed = bytes.trim_ascii_start().starts_with(b"{");
    let mut signed = if looks_signed {
        SignedFile::from_bytes(&bytes).with_context(|| file.display().to_string())?
    } else {
        if bytes.len() > DOCUMENT_SIZE_MAX_BYTES {
            bail!(
                "{} is larger than {DOCUMENT_SIZE_MAX_BYTES} bytes",
                file.display()
            );
        }
        let text = String::from_utf8(bytes)
            .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
        SignedFile::new(text)
    };
    // Never sign a document that is not valid on its own.
    let mechanism = signed
        .mechanism()
        .with_context(|| file.display().to_string())?;
    let keys = key_paths
        .iter()
        .map(|p| read_root_key(p, pass))
        .collect::<Result<Vec<_>>>()?;
    for key in &keys {
        let public = key.0.public();
        let added = signed.sign(&key.0)?;
        let role = if mechanism.doc.roots.keys.contains(&public) {
            "a root key of this version"
        } else {
            "not a root key of this version (a previous version's key, if the roots are changing)"
        };
        if added {
            eprintln!("Signed with {public}: {role}.");
        } else {
            eprintln!("{public} had already signed; its signature counts once.");
        }
    }
    fsutil::write_atomic(out, &signed.to_bytes(), false)?;
    let own = signed
        .signatures
        .iter()
        .filter(|s| mechanism.doc.roots.keys.contains(&s.key))
        .count();
    eprintln!(
        "Wrote {}: version {}, {own} of {} required signature(s) by its own root keys.",
        out.display(),
        mechanism.doc.version,
        mechanism.doc.roots.threshold
    );
    Ok(())
}

fn parse_cutoffs(cutoffs: &[String]) -> Result<BTreeMap<NodeId, u64>> {
    let mut map = BTreeMap::new();
    for item in cutoffs {
        let (node, seq) = item
            .split_once('=')
            .with_context(|| format!("--cutoff `{item}` must look like NODE_ID=SEQ"))?;
        let node: NodeId = node.parse()?;
        let seq: u64 = seq
            .parse()
            .with_context(|| format!("--cutoff `{item}`: `{seq}` is not a sequence number"))?;
        map.insert(node, seq);
    }
    Ok(map)
}

fn prompt_cutoff(node: &NodeId, org: &str) -> Result<u64> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "no cut-off known for node {node}: no node of this mechanism on this machine (--data-dir) holds its log; give --cutoff {node}=SEQ (the last of its sequence numbers to accept)"
        );
    }
    eprint!("Last sequence number to accept from node {node} ({org}): ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin.lock().take_line(&mut line)?;
    line.trim()
        .parse()
        .with_context(|| format!("`{}` is not a sequence number", line.trim()))
}

trait TakeLine {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize>;
}

impl<R: BufRead> TakeLine for R {
    fn take_line(&mut self, line: &mut String) -> std::io::Result<usize> {
        let mut limited = std::io::Read::take(self, 64);
        limited.read_line(line)
    }
}

fn next(
    current_path: &Path,
    remove_nodes: &[String],
    cutoffs: &[String],
    out: &Path,
    data_dir: impl Fn() -> Result<DataDir>,
) -> Result<()> {
    let current = read_signed(current_path)?;
    let mechanism = current
        .mechanism()
        .with_context(|| current_path.display().to_string())?;
    let given = parse_cutoffs(cutoffs)?;
    // The local node's view of each author's log, when this machine runs a node that joined
    // the same mechanism.
    let local_heads = local_heads(data_dir, &mechanism);
    let mut removals = Vec::new();
    for id in remove_nodes {
        let node: NodeId = id.parse()?;
        let info = mechanism.node(&node).with_context(|| {
            format!(
                "node {node} is not in version {} of the configuration",
                mechanism.doc.version
            )
        })?;
        let last_seq = match (given.get(&node), local_heads.get(&node)) {
            (Some(seq), _) => *seq,
            (None, Some(seq)) => {
                eprintln!("Cut-off for {node}: sequence {seq}, from this node's view of its log.");
                *seq
            }
            (None, None) => prompt_cutoff(&node, &info.org)?,
        };
        removals.push(RemovalCutoff { node, last_seq });
    }
    let text = template::next_version(
        &current.document,
        &mechanism,
        &removals,
        OffsetDateTime::now_utc(),
    )?;
    fsutil::write_atomic(out, text.as_bytes(), false)?;
    eprintln!(
        "Wrote {}: version {} following {}.",
        out.display(),
        mechanism.doc.version + 1,
        mechanism.hash.short()
    );
    let mut orgs: Vec<&str> = removals
        .iter()
        .filter_map(|r| mechanism.node(&r.node).map(|n| n.org.as_str()))
        .collect();
    orgs.dedup();
    for org in orgs {
        if mechanism.current_epoch(org).is_some() {
            eprintln!(
                "Removing a node of `{org}`: append the stanza of its next key epoch (`passerelle org rotate-key`) before signing."
            );
        }
    }
    Ok(())
}

/// Each author's highest sequence number as this machine's node sees it, if there is a node
/// here that belongs to the same mechanism: asked of its daemon when one runs (it holds the
/// database), read from the database otherwise.
fn local_heads(
    data_dir: impl Fn() -> Result<DataDir>,
    mechanism: &Mechanism,
) -> BTreeMap<NodeId, u64> {
    let Ok(dir) = data_dir() else {
        return BTreeMap::new();
    };
    if !dir.store_path().exists() {
        return BTreeMap::new();
    }
    let request = Request::LogHeads {
        config: mechanism.hash.to_hex(),
    };
    if let Some(answer) = client::ask_daemon::<LogHeads>(&dir, "operator", request) {
        return match answer {
            Ok(answer) => answer
                .heads
                .into_iter()
                .filter_map(|(node, seq)| Some((node.parse().ok()?, seq)))
                .collect(),
            Err(e) => {
                // Without this node's view, the cut-off is asked for instead.
                tracing::debug!("the daemon did not give its log heads: {e}");
                BTreeMap::new()
            }
        };
    }
    let Ok(store) = dir.store() else {
        return BTreeMap::new();
    };
    let same = store
        .config()
        .all()
        .iter()
        .any(|m| m.hash == mechanism.hash);
    if !same {
        return BTreeMap::new();
    }
    match store.author_heads() {
        Ok(heads) => heads,
        Err(e) => {
            // Without this node's view, the cut-off is asked for instead.
            tracing::debug!("cannot read this node's log heads: {e}");
            BTreeMap::new()
        }
    }
}

fn verify(paths: &[PathBuf]) -> Result<()> {
    let files = read_chain(paths)?;
    let now = OffsetDateTime::now_utc();
    let accepted = chain::check_chain(&files, now)?;
    for (m, path) in accepted.iter().zip(paths) {
        println!(
            "version {}: ok ({}, hash {})",
            m.doc.version,
            path.display(),
            m.hash.short()
        );
    }
    if let (Some(first), Some(last)) = (accepted.first(), accepted.last()) {
        println!(
            "Chain valid: mechanism {} ({}), version {} in force until {}.",
            first.hash,
            last.doc.mechanism,
            last.doc.version,
            time_fmt::readable(last.doc.expires_at)
        );
    }
    Ok(())
}

fn show(path: &Path, as_json: bool) -> Result<()> {
    let file = read_signed(path)?;
    let m = file
        .mechanism()
        .with_context(|| path.display().to_string())?;
    let signatures = signature_checks(&file, &m);
    if as_json {
        show_json(&m, &signatures)
    } else {
        show_text(&m, &signatures);
        Ok(())
    }
}

/// Each signature of a file: (key, whether it is a root key of this version, whether it
/// verifies).
fn signature_checks(file: &SignedFile, m: &Mechanism) -> Vec<(PublicKey, bool, bool)> {
    let d = &m.doc;
    file.signatures
        .iter()
        .map(|s| {
            let valid = s
                .key
                .verify(
                    passerelle_core::keys::context::MECHANISM_DOCUMENT,
                    file.document.as_bytes(),
                    &s.signature,
                )
                .is_ok();
            (s.key, d.roots.keys.contains(&s.key), valid)
        })
        .collect()
}

/// `mechanism show --json`.
fn show_json(m: &Mechanism, signatures: &[(PublicKey, bool, bool)]) -> Result<()> {
    let d = &m.doc;
    let value = json!({
        "mechanism": d.mechanism,
        "country": d.country,
        "lead_org": d.lead_org,
        "version": d.version,
        "document_hash": m.hash.to_hex(),
        "mechanism_id": if d.version == 1 { Some(m.hash.to_hex()) } else { None },
        "previous": d.previous,
        "issued_at": time_fmt::rfc3339(d.issued_at),
        "expires_at": time_fmt::rfc3339(d.expires_at),
        "threshold": d.roots.threshold,
        "root_keys": d.roots.keys.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "signatures": signatures.iter().map(|(k, root, valid)| json!({
            "key": k.to_string(), "root_key": root, "valid": valid
        })).collect::<Vec<_>>(),
        "sites": d.sites.len(),
        "organisations": d.organisations.len(),
        "nodes": d.nodes.iter().map(|n| json!({"id": n.id.to_string(), "org": n.org, "label": n.label})).collect::<Vec<_>>(),
        "removals": d.removals.iter().map(|r| json!({"node": r.node.to_string(), "org": r.org, "last_seq": r.last_seq})).collect::<Vec<_>>(),
        "categories": d.taxonomy.len(),
        "case_types": d.case_types.len(),
    });
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `mechanism show` for a person.
fn show_text(m: &Mechanism, signatures: &[(PublicKey, bool, bool)]) {
    let d = &m.doc;
    println!("{} ({})", d.mechanism, d.country);
    println!("  version        {}", d.version);
    println!("  document hash  {}", m.hash);
    if d.version == 1 {
        println!("  mechanism id   {} (this is the genesis)", m.hash);
    }
    if let Some(p) = &d.previous {
        println!("  previous       {p}");
    }
    println!("  lead           {}", m.org_name(&d.lead_org));
    println!(
        "  valid          {} to {}{}",
        time_fmt::readable(d.issued_at),
        time_fmt::readable(d.expires_at),
        if m.is_expired(OffsetDateTime::now_utc()) {
            " (EXPIRED)"
        } else {
            ""
        }
    );
    println!(
        "  root keys      {} (threshold {})",
        d.roots.keys.len(),
        d.roots.threshold
    );
    for (key, root, valid) in signatures {
        println!(
            "  signed by      {key}{}{}",
            if *root {
                ""
            } else {
                " (not a root key of this version)"
            },
            if *valid { "" } else { " (DOES NOT VERIFY)" }
        );
    }
    println!(
        "  {} sites, {} organisations, {} service categories, {} case types",
        d.sites.len(),
        d.organisations.len(),
        d.taxonomy.len(),
        d.case_types.len()
    );
    println!("  {} endorsed nodes", d.nodes.len());
    for n in &d.nodes {
        println!("    {}  {} ({})", n.id, n.label, m.org_name(&n.org));
    }
    for r in &d.removals {
        println!(
            "  removed        {} ({}) after sequence {}",
            r.node,
            m.org_name(&r.org),
            r.last_seq
        );
    }
}

/// Applies signed files to this node (through the daemon when it runs) and says what changed.
pub fn apply(
    dir: &DataDir,
    files: &[SignedFile],
    pass: &Passphrases,
    user: &str,
) -> Result<crate::rpc::config::ConfigUpdated> {
    let out: crate::rpc::config::ConfigUpdated = crate::client::call(
        dir,
        pass,
        user,
        crate::rpc::Request::ConfigUpdate {
            files: files.to_vec(),
        },
    )?;
    for v in &out.already_held {
        eprintln!("Version {v} was already in force here.");
    }
    Ok(out)
}

fn update(dir: &DataDir, paths: &[PathBuf], pass: &Passphrases, user: &str) -> Result<()> {
    let files = read_chain(paths)?;
    let out = apply(dir, &files, pass, user)?;
    match out.accepted.last() {
        Some(v) => println!("Version {v} accepted and in force."),
        None => println!("Nothing new: version {} stays in force.", out.version),
    }
    Ok(())
}
