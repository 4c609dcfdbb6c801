//! `passerelle case …`, `referral …`, `audit`, `backup`, `restore` and `bundle …`: the
//! caseworker's and operator's commands. Each builds a request and prints the answer for a
//! person (tables, dates, organisation names) or as JSON.

use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::engine::{CaseSummary, CaseView, ReferralView};
use passerelle_core::event::Transition;
use passerelle_core::payload::CaseData;

use crate::cli::table::{self, say};
use crate::cli::{BundleCmd, CaseCmd, ReferralCmd};
use crate::client::{self, absolute};
use crate::datadir::{DataDir, Passphrases};
use crate::i18n;
use crate::rpc::Request;
use crate::rpc::case::{CaseOpened, CaseStep, EventMade};
use crate::rpc::config::ConfigDocument;
use crate::rpc::operations::{AuditRow, BackedUp, Exported, Imported};
use crate::rpc::referral::{Direction, ReferralSent, Send, StepRequest, Stepped};

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
        let m = client::call::<ConfigDocument>(
            dir,
            &Passphrases::default(),
            "names",
            Request::ConfigDocument,
        )
        .ok()
        .and_then(|d| passerelle_core::config::Mechanism::from_bytes(d.document.as_bytes()).ok())
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

/// An RFC 3339 time as a person reads it (nothing when it does not read).
fn date(text: &str) -> String {
    passerelle_core::time_fmt::parse_rfc3339(text)
        .map(passerelle_core::time_fmt::readable)
        .unwrap_or_default()
}

/// Prints an answer as `--json` shows it: pretty JSON, keys in order (as a JSON object holds
/// them: the shape scripts rely on).
pub fn print_json<T: serde::Serialize>(answer: &T) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::to_value(answer)?)?
    );
    Ok(())
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

pub fn case(cmd: CaseCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    match cmd {
        CaseCmd::Open { from } => case_open(dir, pass, user, &from),
        CaseCmd::List {
            search,
            limit,
            json,
        } => case_list(dir, pass, user, (search, limit), json),
        CaseCmd::Show { id, json } => case_show(dir, pass, user, id, json),
        CaseCmd::Export { id, out, lang } => case_export(dir, pass, user, id, &out, &lang),
        CaseCmd::Note { id, note } => {
            let out: EventMade = client::call(
                dir,
                pass,
                user,
                Request::CaseAction {
                    id,
                    action: CaseStep::Note,
                    note,
                },
            )?;
            say!("Note recorded ({}).", short(&out.event));
            Ok(())
        }
        CaseCmd::Transfer { id, to, note } => {
            client::call::<EventMade>(
                dir,
                pass,
                user,
                Request::CaseAction {
                    id,
                    action: CaseStep::Transfer { to_org: to.clone() },
                    note,
                },
            )?;
            say!(
                "Case management transferred to {}.",
                Names::load(dir).org(&to)
            );
            Ok(())
        }
        CaseCmd::Close { id, note } => case_action(dir, pass, user, id, CaseStep::Close, note),
        CaseCmd::Reopen { id, note } => case_action(dir, pass, user, id, CaseStep::Reopen, note),
        CaseCmd::WithdrawConsent {
            id,
            orgs,
            categories,
        } => withdraw_consent(dir, pass, user, id, orgs, categories),
        CaseCmd::Erase { id, reason } => erase(dir, pass, user, id, reason),
        CaseCmd::Determine {
            id,
            case_type,
            not_confirmed,
            note,
        } => {
            client::call::<EventMade>(
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
            let confirmed = if not_confirmed {
                "not confirmed"
            } else {
                "confirmed"
            };
            say!("Status determination recorded: {case_type} {confirmed}.");
            Ok(())
        }
    }
}

/// `case show ID`: the person, consent, timeline and referrals.
fn case_show(dir: &DataDir, pass: &Passphrases, user: &str, id: String, json: bool) -> Result<()> {
    let out: CaseView = client::call(dir, pass, user, Request::CaseShow { id })?;
    if json {
        return print_json(&out);
    }
    print_case(&out, &Names::load(dir));
    Ok(())
}

/// `case open --from CASE.json`: prints the new case's id.
fn case_open(dir: &DataDir, pass: &Passphrases, user: &str, from: &Path) -> Result<()> {
    let data: CaseData = client::read_json(from, CASE_FILE_MAX_BYTES)?;
    data.validate()?;
    let out: CaseOpened = client::call(
        dir,
        pass,
        user,
        Request::CaseOpen {
            data: Box::new(data),
        },
    )?;
    say!("{}", out.case);
    Ok(())
}

fn case_list(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    (search, limit): (Option<String>, Option<u32>),
    json: bool,
) -> Result<()> {
    let limit = limit.map(|n| n as usize);
    let out: Vec<CaseSummary> = client::call(dir, pass, user, Request::CaseList { search, limit })?;
    if json {
        return print_json(&out);
    }
    let names = Names::load(dir);
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|c| {
            vec![
                short(&c.id),
                c.name.clone(),
                c.case_type.clone(),
                c.site.clone(),
                names.org(&c.manager),
                c.status.as_str().to_string(),
                c.referrals.to_string(),
                date(&c.last_activity),
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

/// The person's own copy of what this node holds about them, written to `out` (0600).
fn case_export(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    id: String,
    out: &std::path::Path,
    lang: &str,
) -> Result<()> {
    let view: CaseView = client::call(dir, pass, user, Request::CaseExport { id })?;
    let printed = crate::subject_access::Printed {
        user,
        org: &dir.public()?.org,
        at: time::OffsetDateTime::now_utc(),
    };
    let names = Names::load(dir);
    let html = crate::subject_access::render(&view, names.0.as_deref(), lang, &printed)?;
    crate::fsutil::write_new(out, html.as_bytes(), true)?;
    say!(
        "Written to {}: give it to the person; the export is in the audit log.",
        out.display()
    );
    Ok(())
}

fn withdraw_consent(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    id: String,
    orgs: Vec<String>,
    categories: Vec<String>,
) -> Result<()> {
    let action = CaseStep::WithdrawConsent { orgs, categories };
    let note = String::new();
    client::call::<EventMade>(dir, pass, user, Request::CaseAction { id, action, note })?;
    say!(
        "Consent withdrawn: the open referrals it covers are withdrawn, and no new one it covers is valid."
    );
    Ok(())
}

fn erase(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    id: String,
    reason: passerelle_core::event::EraseReason,
) -> Result<()> {
    let action = CaseStep::Erase { reason };
    let note = String::new();
    client::call::<EventMade>(dir, pass, user, Request::CaseAction { id, action, note })?;
    say!("Case erased: every node that holds it drops its data when the erasure reaches it.");
    Ok(())
}

fn case_action(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    id: String,
    action: CaseStep,
    note: String,
) -> Result<()> {
    let closing = action == CaseStep::Close;
    client::call::<EventMade>(dir, pass, user, Request::CaseAction { id, action, note })?;
    say!("Case {}.", if closing { "closed" } else { "reopened" });
    Ok(())
}

/// The CLI speaks English; its words come from the same translations as the web UI's.
const CLI_LANG: &str = "en";

fn print_case(c: &CaseView, names: &Names) {
    let data = &c.data;
    let person = &data.person;
    say!("Case {}  ({})", c.id, c.status.as_str());
    say!(
        "  opened      {} by {}",
        date(&c.opened_at),
        names.org(&c.opened_by)
    );
    say!("  manager     {}", names.org(&c.manager));
    say!("  type        {}   site {}", data.case_type, data.site);
    let name = [
        person.first_name.clone().unwrap_or_default(),
        person.last_name.clone().unwrap_or_default(),
    ]
    .join(" ");
    say!("  person      {}", name.trim());
    for (label, value) in [
        ("age", person.age.map(|a| a.to_string())),
        ("sex", person.sex.clone()),
        ("nationality", person.nationality.clone()),
        ("phone", person.phone.clone()),
        ("location", person.location.clone()),
        ("health", person.health.clone()),
        ("protection", person.protection.clone()),
        ("documents", person.documents.clone()),
    ] {
        let v = value.unwrap_or_default();
        if !v.is_empty() {
            say!("  {label:<11} {v}");
        }
    }
    if !person.languages.is_empty() {
        say!("  languages   {}", person.languages.join(", "));
    }
    let needs: Vec<_> = data.needs.iter().map(|n| names.category(n)).collect();
    say!("  needs       {}", needs.join(", "));
    say!(
        "  consent     {} (explained by {}, {})",
        if data.consent.given {
            "given"
        } else {
            "NOT given"
        },
        data.consent.explained_by,
        data.consent.recorded_at
    );
    let dets: Vec<_> = c.determinations.iter().map(|o| names.org(o)).collect();
    if !dets.is_empty() {
        say!("  determined  by {}", dets.join(", "));
    }
    say!();
    say!("Timeline:");
    for t in &c.timeline {
        say!(
            "  {}  {:<28} {:<10} {}{}",
            date(&t.at),
            i18n::happened(CLI_LANG, &t.happened, |o| names.org(o)),
            names.org(&t.org),
            i18n::detail(CLI_LANG, &t.detail, &str::to_string),
            match &t.invalid {
                Some(rule) => format!("  [INVALID: {rule}]"),
                None => String::new(),
            }
        );
    }
    if !c.referrals.is_empty() {
        say!();
        print_referrals(&c.referrals, names);
    }
}

fn print_referrals(list: &[ReferralView], names: &Names) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                short(&r.id),
                date(&r.sent_at),
                names.org(&r.from_org),
                names.org(&r.to_org),
                r.category.as_deref().map_or_else(
                    || i18n::t(CLI_LANG, "category-sensitive", &[]),
                    |c| names.category(c),
                ),
                r.urgency.as_str().to_string(),
                r.status.as_str().to_string(),
                // Not overdue: an empty cell.
                r.overdue
                    .map(|o| o.as_str().to_string())
                    .unwrap_or_default(),
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
                transition: Transition,
                reason: Option<String>,
                note: Option<String>,
                outcome: Option<String>| {
        Request::ReferralStep(StepRequest {
            id,
            transition,
            reason,
            note: note.unwrap_or_default(),
            outcome,
        })
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
            let send = Send {
                case,
                to_org: to,
                category,
                urgency,
                share,
                note: note.unwrap_or_default(),
                emergency_override,
            };
            let out: ReferralSent = client::call(dir, pass, user, Request::ReferralSend(send))?;
            say!("{}", out.referral);
            return Ok(());
        }
        ReferralCmd::List {
            inbox,
            outbox,
            status,
            open,
            limit,
            json,
        } => {
            let direction = match (inbox, outbox) {
                (true, false) => Direction::Inbox,
                (false, true) => Direction::Outbox,
                _ => Direction::All,
            };
            let request = Request::ReferralList {
                direction,
                status,
                open,
                limit: limit.map(|n| n as usize),
            };
            return referral_list(dir, pass, user, request, json);
        }
        ReferralCmd::Show { id, json } => return referral_show(dir, pass, user, id, json),
        ReferralCmd::Ack { id, note } => step(id, Transition::Acknowledge, None, note, None),
        ReferralCmd::Accept { id, note } => step(id, Transition::Accept, None, note, None),
        ReferralCmd::Decline { id, reason, note } => {
            step(id, Transition::Decline, Some(reason), note, None)
        }
        ReferralCmd::Complete { id, note, outcome } => {
            step(id, Transition::Complete, None, note, outcome)
        }
        ReferralCmd::Withdraw { id, note } => step(id, Transition::Withdraw, None, note, None),
    };
    let out: Stepped = client::call(dir, pass, user, request)?;
    say!("Referral now {}.", out.status.as_str());
    Ok(())
}

fn referral_list(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    request: Request,
    json: bool,
) -> Result<()> {
    let list: Vec<ReferralView> = client::call(dir, pass, user, request)?;
    if json {
        print_json(&list)?;
    } else if list.is_empty() {
        say!("No referral.");
    } else {
        print_referrals(&list, &Names::load(dir));
    }
    Ok(())
}

fn referral_show(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    id: String,
    json: bool,
) -> Result<()> {
    let out: ReferralView = client::call(dir, pass, user, Request::ReferralShow { id })?;
    if json {
        return print_json(&out);
    }
    let names = Names::load(dir);
    print_referrals(std::slice::from_ref(&out), &names);
    if out.readable {
        say!();
        for (k, v) in &out.shared {
            say!("  {k:<14} {v}");
        }
        let missing: Vec<&str> = passerelle_core::payload::SHAREABLE_FIELDS
            .iter()
            .copied()
            .filter(|f| !out.shared.contains_key(*f))
            .collect();
        if !missing.is_empty() {
            say!("  not shared     {} (or not recorded)", missing.join(", "));
        }
        say!("  note           {}", out.note.clone().unwrap_or_default());
    } else {
        say!(
            "(Encrypted for the organisations involved: this node holds only the referral's ciphertext.)"
        );
    }
    Ok(())
}

pub fn audit(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    json: bool,
    limit: usize,
) -> Result<()> {
    let out: Vec<AuditRow> = client::call(dir, pass, user, Request::Audit { limit })?;
    if json {
        return print_json(&out);
    }
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|e| {
            vec![
                date(&e.at),
                e.user.clone(),
                e.action.clone(),
                e.subject.clone(),
            ]
        })
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
    let result: BackedUp = client::call(dir, pass, user, Request::Backup { out: out.clone() })?;
    say!(
        "Backup written to {} ({} events). Keep it with the node's key file (node.key); a restored node stays read-only until it has synced with a peer.",
        out.display(),
        result.events
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
            let result: Exported =
                client::call(dir, pass, user, Request::BundleExport { out, for_node })?;
            say!(
                "Bundle written to {}: {} events and {} configuration version(s), for {}{}.",
                result.out.display(),
                result.events,
                result.config_versions,
                result.for_whom,
                if result.incremental {
                    " (only what it lacked at the last sync)"
                } else {
                    ""
                }
            );
        }
        BundleCmd::Import { file } => {
            let path = absolute(&file)?;
            let r: Imported = client::call(dir, pass, user, Request::BundleImport { path })?;
            say!(
                "Imported a bundle from {}: {} events, {} new, {} already here, {} held back (waiting for earlier events or a newer configuration), {} new configuration version(s).",
                r.from_node,
                r.events,
                r.admitted,
                r.duplicates,
                r.held_back,
                r.config_versions
            );
            for refused in &r.refused {
                say!("Refused {}: {}", refused.count, refused.reason);
            }
        }
    }
    Ok(())
}
