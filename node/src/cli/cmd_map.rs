//! `passerelle map …`: the partner map — import a profile, update a service, search the
//! directory, print posters, export Open Referral (HSDS) files, list coverage gaps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::config::Mechanism;
use passerelle_core::limits::PROFILE_FILE_SIZE_MAX_BYTES;
use passerelle_core::map::hsds::ImportOptions;
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

/// The node's whole directory answer, with its configuration parsed.
fn directory_full(dir: &DataDir, pass: &Passphrases, user: &str) -> Result<(Mechanism, Directory)> {
    let out: Directory = client::call(dir, pass, user, Request::MapDirectory)?;
    let m = Mechanism::from_bytes(out.document.as_bytes()).context("the configuration in force")?;
    Ok((m, out))
}

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
        cmd @ MapCmd::Import { .. } => import_cmd(cmd, dir, pass, user)?,
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
            let (m, directory) = directory_full(dir, pass, user)?;
            super::cmd_hsds::export(&m, &directory, &out)?;
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

/// `map import`, of a profile file or (`--hsds`) an HSDS package.
fn import_cmd(cmd: MapCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    let MapCmd::Import {
        profile,
        hsds,
        org,
        hsds_org,
        site,
        category,
        language,
        dry_run,
    } = cmd
    else {
        bail!("not a map import");
    };
    match (profile, hsds) {
        (_, Some(path)) => {
            let (m, out) = directory_full(dir, pass, user)?;
            let options = ImportOptions {
                org: org.unwrap_or_else(|| out.org.clone()),
                mechanism_id: out.mechanism_id.clone(),
                source_org: hsds_org,
                site,
                category,
                language,
                today: OffsetDateTime::now_utc().date().to_string(),
            };
            let profile = super::cmd_hsds::read_profile(&path, &m, &options)?;
            if dry_run {
                print!("{}", toml::to_string_pretty(&profile)?);
            } else {
                send_profile(dir, pass, user, profile, &path.display().to_string())?;
            }
        }
        (Some(profile), None) => import(dir, pass, user, &profile)?,
        (None, None) => bail!("name a profile file, or an HSDS package with --hsds"),
    }
    Ok(())
}

/// `map import`: sets this organisation's profile from a file.
fn import(dir: &DataDir, pass: &Passphrases, user: &str, profile: &Path) -> Result<()> {
    let bytes = fsutil::read_bounded(profile, PROFILE_FILE_SIZE_MAX_BYTES)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text", profile.display()))?;
    let parsed = Profile::from_toml(&text).with_context(|| profile.display().to_string())?;
    send_profile(dir, pass, user, parsed, &profile.display().to_string())
}

/// Sets a profile through the node, and says what changed.
pub(super) fn send_profile(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
    parsed: Profile,
    source: &str,
) -> Result<()> {
    let out: MapChanged = client::call(
        dir,
        pass,
        user,
        Request::MapImport {
            profile: Box::new(parsed.clone()),
        },
    )
    .with_context(|| source.to_string())?;
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
