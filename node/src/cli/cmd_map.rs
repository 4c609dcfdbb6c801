//! `passerelle map …`: the partner map — import a profile, update a service, search the
//! directory, print posters, export Open Referral (HSDS) files, list coverage gaps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::config::Mechanism;
use passerelle_core::limits::PROFILE_FILE_SIZE_MAX_BYTES;
use passerelle_core::map::{self, Entry, Gap, Profile};
use time::OffsetDateTime;

use crate::cli::MapCmd;
use crate::cli::cmd_case::print_json;
use crate::cli::table::{self, say};
use crate::client;
use crate::datadir::{DataDir, Passphrases};
use crate::fsutil;
use crate::rpc::Request;
use crate::rpc::map::{Directory, MapChanged, MapSnapshot, Search};

/// Every profile and the configuration in force, from the node.
fn directory(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
) -> Result<(Mechanism, BTreeMap<String, Profile>)> {
    let out: Directory = client::call(dir, pass, user, Request::MapDirectory)?;
    let m = Mechanism::from_bytes(out.document.as_bytes()).context("the configuration in force")?;
    Ok((m, out.profiles))
}

pub fn run(cmd: MapCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    match cmd {
        MapCmd::Import { profile } => import(dir, pass, user, &profile)?,
        MapCmd::Capacity {
            service,
            capacity,
            org,
        } => update(dir, pass, user, &service, Some(capacity), org)?,
        MapCmd::Verify { service, org } => update(dir, pass, user, &service, None, org)?,
        MapCmd::Snapshot { org } => {
            let out: MapSnapshot = client::call(dir, pass, user, Request::MapSnapshot { org })?;
            say!("Snapshot of `{}` published.", out.org);
        }
        MapCmd::Search {
            category,
            site,
            language,
            open_now,
            capacity,
            org,
            json,
        } => {
            let search = Search {
                category,
                site,
                language,
                open_now,
                capacity,
                org,
            };
            let out: Vec<Entry> = client::call(dir, pass, user, Request::MapSearch(search))?;
            if json {
                return print_json(&out);
            }
            print_entries(&out);
        }
        MapCmd::Show { org, json } => show(dir, pass, user, org, json)?,
        MapCmd::Poster {
            site,
            lang,
            size,
            out,
        } => {
            let (m, profiles) = directory(dir, pass, user)?;
            let html = crate::poster::render(
                &m,
                &profiles,
                site.as_deref(),
                &lang,
                &size,
                OffsetDateTime::now_utc(),
            )?;
            fsutil::write_atomic(&out, html.as_bytes(), false)?;
            say!(
                "Poster written to {} (open it in a browser and print).",
                out.display()
            );
        }
        MapCmd::Export { format, out } => {
            if format != "hsds" {
                bail!("`{format}` is not an export format (hsds)");
            }
            let (m, profiles) = directory(dir, pass, user)?;
            export_hsds(&m, &profiles, &out)?;
        }
        MapCmd::Gaps { json } => gaps(dir, pass, user, json)?,
    }
    Ok(())
}

/// `map capacity` (which also marks the service verified) and `map verify`.
fn update(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    service: &str,
    capacity: Option<map::Capacity>,
    org: Option<String>,
) -> Result<()> {
    let request = Request::MapUpdate {
        org,
        service: service.to_string(),
        capacity,
        verify: true,
    };
    let out: MapChanged = client::call(dir, pass, user, request)?;
    match capacity {
        Some(c) => say!(
            "{service} of `{}` is now {} (and marked verified today).",
            out.org,
            c.as_str()
        ),
        None => say!("{service} of `{}` marked verified today.", out.org),
    }
    Ok(())
}

/// `map import`: sets this organisation's profile from a file.
fn import(dir: &DataDir, pass: &Passphrases, user: &str, profile: &Path) -> Result<()> {
    let bytes = fsutil::read_bounded(profile, PROFILE_FILE_SIZE_MAX_BYTES)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", profile.display()))?;
    let parsed = Profile::from_toml(&text).with_context(|| profile.display().to_string())?;
    let out: MapChanged = client::call(
        dir,
        pass,
        user,
        Request::MapImport {
            profile: Box::new(parsed.clone()),
        },
    )
    .with_context(|| profile.display().to_string())?;
    if let Some(event) = &out.event {
        say!(
            "Profile of `{}` updated: {} services ({}).",
            parsed.org,
            parsed.services.len(),
            event.chars().take(12).collect::<String>()
        );
    } else {
        say!(
            "The profile of `{}` already says exactly this: nothing changed.",
            parsed.org
        );
    }
    Ok(())
}

/// `map show`: the profiles, all or one organisation's.
fn show(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    org: Option<String>,
    json: bool,
) -> Result<()> {
    let (m, profiles) = directory(dir, pass, user)?;
    let selected: Vec<&Profile> = profiles
        .values()
        .filter(|p| org.as_ref().is_none_or(|o| o == &p.org))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&selected)?);
        return Ok(());
    }
    for p in selected {
        say!("{} — {} services", m.org_name(&p.org), p.services.len());
        say!("  {}", p.description.en);
        for fp in &p.focal_points {
            // A focal point may give no phone or no email: left blank.
            say!(
                "  focal point: {} {} {}",
                fp.name,
                fp.phone.clone().unwrap_or_default(),
                fp.email.clone().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `map gaps`: where no provider can take people now.
fn gaps(dir: &DataDir, pass: &Passphrases, user: &str, json: bool) -> Result<()> {
    let out: Vec<Gap> = client::call(dir, pass, user, Request::MapGaps)?;
    if json {
        return print_json(&out);
    }
    let (m, _) = directory(dir, pass, user)?;
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|g| {
            vec![
                m.site(&g.site)
                    .map_or(g.site.clone(), |x| x.name.en.clone()),
                m.category(&g.category)
                    .map_or(g.category.clone(), |c| c.name.en.clone()),
                if g.unavailable > 0 {
                    format!("{} listed, all full or suspended", g.unavailable)
                } else {
                    "no provider".into()
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        say!("Every service category has an available provider at every site.");
    } else {
        print!(
            "{}",
            table::render(&["SITE", "SERVICE CATEGORY", "GAP"], &rows)
        );
    }
    Ok(())
}

/// The search results as a table.
fn print_entries(out: &[Entry]) {
    let rows: Vec<Vec<String>> = out
        .iter()
        .map(|e| {
            let svc = &e.service;
            vec![
                e.org_name.clone(),
                svc.name.en.clone(),
                svc.category.clone(),
                svc.site.clone(),
                if e.open_now { "open now" } else { "closed" }.into(),
                svc.capacity.as_str().into(),
                svc.languages.join(","),
                // A service without a phone shows a blank cell.
                svc.contact
                    .as_ref()
                    .and_then(|c| c.phone.clone())
                    .unwrap_or_default(),
                if e.stale {
                    format!("{} (STALE)", svc.verified)
                } else {
                    svc.verified.clone()
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        say!("No service matches.");
    } else {
        print!(
            "{}",
            table::render(
                &[
                    "PARTNER",
                    "SERVICE",
                    "CATEGORY",
                    "SITE",
                    "NOW",
                    "CAPACITY",
                    "LANGUAGES",
                    "PHONE",
                    "VERIFIED"
                ],
                &rows
            )
        );
    }
}

/// Writes the HSDS tables as JSON and CSV files in `out`.
pub fn export_hsds(m: &Mechanism, profiles: &BTreeMap<String, Profile>, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let tables = map::hsds(profiles, m);
    for t in &tables {
        fsutil::write_atomic(
            &out.join(format!("{}.json", t.name)),
            serde_json::to_string_pretty(&t.json())?.as_bytes(),
            false,
        )?;
        fsutil::write_atomic(
            &out.join(format!("{}.csv", t.name)),
            t.csv().as_bytes(),
            false,
        )?;
    }
    say!(
        "Open Referral (HSDS) export written to {}: {}.",
        out.display(),
        tables
            .iter()
            .map(|t| format!("{} {}", t.rows.len(), t.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
