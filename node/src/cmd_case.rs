//! `passerelle case …`, `referral …`, `audit`, `backup`, `restore` and `bundle …`: the
//! caseworker's and operator's commands. Each builds a request and prints the answer for a
//! person (tables, dates, organisation names) or as JSON.

use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::payload::CaseData;
use serde_json::Value;

use crate::cli::{BundleCmd, CaseCmd, ReferralCmd};
use crate::client::{self, absolute};
use crate::datadir::{DataDir, Passphrases};
use crate::rpc::Request;
use crate::table::{self, say};

/// Largest CASE.json accepted, in bytes.
pub const CASE_FILE_MAX_BYTES: usize = 256 * 1024;

/// Names for ids, read from the configuration this node holds.
struct Names(Option<std::sync::Arc<passerelle_core::config::Mechanism>>);

impl Names {
    fn load(dir: &DataDir) -> Self {
        // Read from the node's database when it is free; when the daemon holds it, ask the
        // daemon for the document (names are a nicety: ids are shown when neither works).
        if let Some(m) = dir.store().ok().and_then(|s| s.config().current().cloned()) {
            return Self(Some(m));
        }
        let m = client::call(
            dir,
            &Passphrases::default(),
            "names",
            Request::ConfigDocument,
        )
        .ok()
        .and_then(|v| v["document"].as_str().map(str::to_string))
        .and_then(|d| passerelle_core::config::Mechanism::from_bytes(d.as_bytes()).ok())
        .map(std::sync::Arc::new);
        Self(m)
    }

    fn org(&self, id: &str) -> String {
        self.0
            .as_ref()
            .map(|m| m.org_name(id).to_string())
            .unwrap_or_else(|| id.to_string())
    }

    fn category(&self, id: &str) -> String {
        self.0
            .as_ref()
            .and_then(|m| m.category(id).map(|c| c.name.en.clone()))
            .unwrap_or_else(|| id.to_string())
    }
}

fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn date(v: &Value, key: &str) -> String {
    passerelle_core::time_fmt::parse_rfc3339(&s(v, key))
        .map(passerelle_core::time_fmt::readable)
        .unwrap_or_default()
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

pub fn case(cmd: CaseCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    match cmd {
        CaseCmd::Open { from } => {
            let data: CaseData = client::read_json(&from, CASE_FILE_MAX_BYTES)?;
            data.validate()?;
            let out = client::call(
                dir,
                pass,
                user,
                Request::CaseOpen {
                    data: Box::new(data),
                },
            )?;
            say!("{}", s(&out, "case"));
            Ok(())
        }
        CaseCmd::List { search, json } => {
            let out = client::call(dir, pass, user, Request::CaseList { search })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let names = Names::load(dir);
            let rows: Vec<Vec<String>> = out
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    vec![
                        short(&s(c, "id")),
                        s(c, "name"),
                        s(c, "case_type"),
                        s(c, "site"),
                        names.org(&s(c, "manager")),
                        s(c, "status"),
                        s(c, "referrals"),
                        date(c, "last_activity"),
                    ]
                })
                .collect();
            if rows.is_empty() {
                say!("No case this node can read.");
            } else {
                print!(
                    "{}",
                    table::render(
                        &[
                            "CASE",
                            "NAME",
                            "TYPE",
                            "SITE",
                            "MANAGER",
                            "STATUS",
                            "REFERRALS",
                            "LAST ACTIVITY"
                        ],
                        &rows
                    )
                );
            }
            Ok(())
        }
        CaseCmd::Show { id, json } => {
            let out = client::call(dir, pass, user, Request::CaseShow { id })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            print_case(&out, &Names::load(dir));
            Ok(())
        }
        CaseCmd::Note { id, note } => {
            let out = client::call(
                dir,
                pass,
                user,
                Request::CaseAction {
                    id,
                    action: "note".into(),
                    to_org: None,
                    note,
                },
            )?;
            say!("Note recorded ({}).", short(&s(&out, "event")));
            Ok(())
        }
        CaseCmd::Transfer { id, to, note } => {
            client::call(
                dir,
                pass,
                user,
                Request::CaseAction {
                    id,
                    action: "transfer".into(),
                    to_org: Some(to.clone()),
                    note,
                },
            )?;
            say!(
                "Case management transferred to {}.",
                Names::load(dir).org(&to)
            );
            Ok(())
        }
        CaseCmd::Close { id, note } => case_action(dir, pass, user, id, "close", note),
        CaseCmd::Reopen { id, note } => case_action(dir, pass, user, id, "reopen", note),
        CaseCmd::Determine {
            id,
            case_type,
            not_confirmed,
            note,
        } => {
            client::call(
                dir,
                pass,
                user,
                Request::Determine {
                    id,
                    case_type: case_type.clone(),
                    determined: !not_confirmed,
                    note,
                },
            )?;
            say!(
                "Status determination recorded: {case_type} {}.",
                if not_confirmed {
                    "not confirmed"
                } else {
                    "confirmed"
                }
            );
            Ok(())
        }
    }
}

fn case_action(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    id: String,
    action: &str,
    note: String,
) -> Result<()> {
    client::call(
        dir,
        pass,
        user,
        Request::CaseAction {
            id,
            action: action.into(),
            to_org: None,
            note,
        },
    )?;
    say!(
        "Case {}.",
        if action == "close" {
            "closed"
        } else {
            "reopened"
        }
    );
    Ok(())
}

fn print_case(c: &Value, names: &Names) {
    let data = &c["data"];
    let person = &data["person"];
    say!("Case {}  ({})", s(c, "id"), s(c, "status"));
    say!(
        "  opened      {} by {}",
        date(c, "opened_at"),
        names.org(&s(c, "opened_by"))
    );
    say!("  manager     {}", names.org(&s(c, "manager")));
    say!(
        "  type        {}   site {}",
        s(data, "case_type"),
        s(data, "site")
    );
    let name = [s(person, "first_name"), s(person, "last_name")].join(" ");
    say!("  person      {}", name.trim());
    for (label, key) in [
        ("age", "age"),
        ("sex", "sex"),
        ("nationality", "nationality"),
        ("phone", "phone"),
        ("location", "location"),
        ("health", "health"),
        ("protection", "protection"),
        ("documents", "documents"),
    ] {
        let v = s(person, key);
        if !v.is_empty() {
            say!("  {label:<11} {v}");
        }
    }
    if let Some(langs) = person["languages"].as_array().filter(|l| !l.is_empty()) {
        let langs: Vec<_> = langs.iter().filter_map(Value::as_str).collect();
        say!("  languages   {}", langs.join(", "));
    }
    let needs: Vec<_> = data["needs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| names.category(n))
        .collect();
    say!("  needs       {}", needs.join(", "));
    let consent = &data["consent"];
    say!(
        "  consent     {} (explained by {}, {})",
        if consent["given"].as_bool() == Some(true) {
            "given"
        } else {
            "NOT given"
        },
        s(consent, "explained_by"),
        s(consent, "recorded_at")
    );
    let dets: Vec<_> = c["determinations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|o| names.org(o))
        .collect();
    if !dets.is_empty() {
        say!("  determined  by {}", dets.join(", "));
    }
    say!();
    say!("Timeline:");
    for t in c["timeline"].as_array().into_iter().flatten() {
        let invalid = s(t, "invalid");
        say!(
            "  {}  {:<28} {:<10} {}{}",
            date(t, "at"),
            s(t, "kind"),
            names.org(&s(t, "org")),
            s(t, "text"),
            if invalid.is_empty() {
                String::new()
            } else {
                format!("  [INVALID: {invalid}]")
            }
        );
    }
    let referrals = c["referrals"].as_array().cloned().unwrap_or_default();
    if !referrals.is_empty() {
        say!();
        print_referrals(&referrals, names);
    }
}

fn print_referrals(list: &[Value], names: &Names) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                short(&s(r, "id")),
                date(r, "sent_at"),
                names.org(&s(r, "from_org")),
                names.org(&s(r, "to_org")),
                names.category(&s(r, "category")),
                s(r, "urgency"),
                s(r, "status"),
                s(r, "overdue"),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "REFERRAL", "SENT", "FROM", "TO", "SERVICE", "URGENCY", "STATUS", "OVERDUE"
            ],
            &rows
        )
    );
}

pub fn referral(cmd: ReferralCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    let step = |id: String,
                transition: &str,
                reason: Option<String>,
                note: Option<String>,
                outcome: Option<String>| {
        Request::ReferralStep {
            id,
            transition: transition.into(),
            reason,
            note: note.unwrap_or_default(),
            outcome,
        }
    };
    let request = match cmd {
        ReferralCmd::Send {
            case,
            to,
            category,
            urgency,
            share,
            note,
            emergency_override,
        } => {
            let share: Vec<String> = share
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let out = client::call(
                dir,
                pass,
                user,
                Request::ReferralSend {
                    case,
                    to_org: to,
                    category,
                    urgency,
                    share,
                    note: note.unwrap_or_default(),
                    emergency_override,
                },
            )?;
            say!("{}", s(&out, "referral"));
            return Ok(());
        }
        ReferralCmd::List {
            inbox,
            outbox,
            status,
            json,
        } => {
            let direction = match (inbox, outbox) {
                (true, false) => "inbox",
                (false, true) => "outbox",
                _ => "all",
            };
            let out = client::call(
                dir,
                pass,
                user,
                Request::ReferralList {
                    direction: direction.into(),
                    status,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let list = out.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    say!("No referral.");
                } else {
                    print_referrals(&list, &Names::load(dir));
                }
            }
            return Ok(());
        }
        ReferralCmd::Show { id, json } => {
            let out = client::call(dir, pass, user, Request::ReferralShow { id })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                let names = Names::load(dir);
                print_referrals(std::slice::from_ref(&out), &names);
                if out["readable"].as_bool() == Some(true) {
                    say!();
                    for (k, v) in out["shared"].as_object().into_iter().flatten() {
                        say!("  {k:<14} {}", v.as_str().unwrap_or_default());
                    }
                    say!("  note           {}", s(&out, "note"));
                } else {
                    say!("(This node holds only the referral's ciphertext.)");
                }
            }
            return Ok(());
        }
        ReferralCmd::Ack { id, note } => step(id, "acknowledge", None, note, None),
        ReferralCmd::Accept { id, note } => step(id, "accept", None, note, None),
        ReferralCmd::Decline { id, reason, note } => step(id, "decline", Some(reason), note, None),
        ReferralCmd::Complete { id, note, outcome } => step(id, "complete", None, note, outcome),
        ReferralCmd::Withdraw { id, note } => step(id, "withdraw", None, note, None),
    };
    let out = client::call(dir, pass, user, request)?;
    say!("Referral now {}.", s(&out, "status"));
    Ok(())
}

pub fn audit(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    json: bool,
    limit: usize,
) -> Result<()> {
    let out = client::call(dir, pass, user, Request::Audit { limit })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = out
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| vec![date(e, "at"), s(e, "user"), s(e, "action"), s(e, "subject")])
        .collect();
    if rows.is_empty() {
        say!("The audit log is empty.");
    } else {
        print!(
            "{}",
            table::render(&["WHEN", "USER", "ACTION", "ABOUT"], &rows)
        );
    }
    Ok(())
}

pub fn backup(dir: &DataDir, pass: &Passphrases, user: &str, out: &Path) -> Result<()> {
    let out = absolute(out)?;
    if out.exists() {
        bail!("{} already exists: refusing to overwrite it", out.display());
    }
    let result = client::call(dir, pass, user, Request::Backup { out: out.clone() })?;
    say!(
        "Backup written to {} ({} events). Keep it with the node's key file (node.key); a restored node stays read-only until it has synced with a peer.",
        out.display(),
        s(&result, "events")
    );
    Ok(())
}

/// Replaces this node's database by a backup (only while no daemon runs).
pub fn restore(dir: &DataDir, file: &Path, accept_risk: bool) -> Result<()> {
    if client::daemon_api(dir).is_some() && dir.store().is_err() {
        bail!("stop `passerelle run` before restoring: the daemon holds the database");
    }
    let public = dir.public()?;
    let current = dir.store().ok();
    let expected = current.as_ref().and_then(|s| s.config().mechanism_id());
    drop(current);
    let tmp = dir.root.join("store.redb.restoring");
    if std::fs::symlink_metadata(&tmp).is_ok() {
        std::fs::remove_file(&tmp).with_context(|| {
            format!("cannot remove {} left by an earlier restore", tmp.display())
        })?;
    }
    // Only a backup this node signed is restored: the signature is checked before the
    // database is opened, and opening it checks its configuration chain again.
    let key = public.id.public_key()?;
    let mut restored = passerelle_core::store::Store::restore_backup(file, &key, &tmp, expected)?;
    if accept_risk {
        restored.set_meta(passerelle_core::engine::META_READ_ONLY, None)?;
    }
    let version = restored.config().highest();
    drop(restored);
    let store_path = dir.store_path();
    if store_path.exists() {
        let aside = dir.root.join("store.redb.before-restore");
        let _ = std::fs::remove_file(&aside);
        std::fs::rename(&store_path, &aside)
            .with_context(|| format!("cannot move {} aside", store_path.display()))?;
        eprintln!("The previous database was kept as {}.", aside.display());
    }
    std::fs::rename(&tmp, &store_path)
        .with_context(|| format!("cannot write {}", store_path.display()))?;
    say!(
        "Restored node {} (configuration version {version}).{}",
        public.id,
        if accept_risk {
            " The operator accepted the risk: it may write at once."
        } else {
            " It stays read-only until it has learned its own latest events from a peer (`passerelle run` and sync)."
        }
    );
    Ok(())
}

pub fn bundle(cmd: BundleCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    match cmd {
        BundleCmd::Export { out, for_node } => {
            let out = absolute(&out)?;
            let result = client::call(dir, pass, user, Request::BundleExport { out, for_node })?;
            say!(
                "Bundle written to {}: {} events and {} configuration version(s), for {}{}.",
                s(&result, "out"),
                s(&result, "events"),
                s(&result, "config_versions"),
                s(&result, "for"),
                if result["incremental"].as_bool() == Some(true) {
                    " (only what it lacked at the last sync)"
                } else {
                    ""
                }
            );
        }
        BundleCmd::Import { file } => {
            let path = absolute(&file)?;
            let r = client::call(dir, pass, user, Request::BundleImport { path })?;
            say!(
                "Imported a bundle from {}: {} events, {} new, {} already here, {} held back (waiting for earlier events or a newer configuration), {} new configuration version(s).",
                s(&r, "from_node"),
                s(&r, "events"),
                s(&r, "admitted"),
                s(&r, "duplicates"),
                s(&r, "held_back"),
                s(&r, "config_versions")
            );
            for refused in r["refused"].as_array().into_iter().flatten() {
                say!("Refused {}: {}", s(refused, "count"), s(refused, "reason"));
            }
        }
    }
    Ok(())
}
