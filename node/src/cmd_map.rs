//! `passerelle map …`: the partner map — import a profile, update a service, search the
//! directory, print posters, export Open Referral (HSDS) files, list coverage gaps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::config::Mechanism;
use passerelle_core::limits::PROFILE_FILE_SIZE_MAX_BYTES;
use passerelle_core::map::{self, Profile};
use serde_json::Value;
use time::OffsetDateTime;

use crate::cli::MapCmd;
use crate::client;
use crate::datadir::{DataDir, Passphrases};
use crate::fsutil;
use crate::rpc::Request;
use crate::table::{self, say};

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Every profile and the configuration in force, from the node.
fn directory(
    dir: &DataDir,
    pass: &Passphrases,
    user: &str,
) -> Result<(Mechanism, BTreeMap<String, Profile>)> {
    let out = client::call(dir, pass, user, Request::MapDirectory)?;
    let m = Mechanism::from_bytes(s(&out["document"]).as_bytes())
        .context("the configuration in force")?;
    let profiles: BTreeMap<String, Profile> = serde_json::from_value(out["profiles"].clone())?;
    Ok((m, profiles))
}

pub fn run(cmd: MapCmd, dir: &DataDir, pass: &Passphrases, user: &str) -> Result<()> {
    match cmd {
        MapCmd::Import { profile } => {
            let bytes = fsutil::read_bounded(&profile, PROFILE_FILE_SIZE_MAX_BYTES)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", profile.display()))?;
            let parsed =
                Profile::from_toml(&text).with_context(|| profile.display().to_string())?;
            let out = client::call(
                dir,
                pass,
                user,
                Request::MapImport {
                    profile: Box::new(parsed.clone()),
                },
            )
            .with_context(|| profile.display().to_string())?;
            if out["event"].is_null() {
                say!(
                    "The profile of `{}` already says exactly this: nothing changed.",
                    parsed.org
                );
            } else {
                say!(
                    "Profile of `{}` updated: {} services ({}).",
                    parsed.org,
                    parsed.services.len(),
                    s(&out["event"]).chars().take(12).collect::<String>()
                );
            }
        }
        MapCmd::Capacity {
            service,
            capacity,
            org,
        } => {
            let out = client::call(
                dir,
                pass,
                user,
                Request::MapUpdate {
                    org,
                    service: service.clone(),
                    capacity: Some(capacity.clone()),
                    verify: true,
                },
            )?;
            say!(
                "{service} of `{}` is now {capacity} (and marked verified today).",
                s(&out["org"])
            );
        }
        MapCmd::Verify { service, org } => {
            let out = client::call(
                dir,
                pass,
                user,
                Request::MapUpdate {
                    org,
                    service: service.clone(),
                    capacity: None,
                    verify: true,
                },
            )?;
            say!("{service} of `{}` marked verified today.", s(&out["org"]));
        }
        MapCmd::Snapshot { org } => {
            let out = client::call(dir, pass, user, Request::MapSnapshot { org })?;
            say!("Snapshot of `{}` published.", s(&out["org"]));
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
            let out = client::call(
                dir,
                pass,
                user,
                Request::MapSearch {
                    category,
                    site,
                    language,
                    open_now,
                    capacity,
                    org,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = out
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let svc = &e["service"];
                    vec![
                        s(&e["org_name"]),
                        s(&svc["name"]["en"]),
                        s(&svc["category"]),
                        s(&svc["site"]),
                        if e["open_now"] == true {
                            "open now".into()
                        } else {
                            "closed".into()
                        },
                        s(&svc["capacity"]),
                        svc["languages"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(s)
                            .collect::<Vec<_>>()
                            .join(","),
                        s(&svc["contact"]["phone"]),
                        if e["stale"] == true {
                            format!("{} (STALE)", s(&svc["verified"]))
                        } else {
                            s(&svc["verified"])
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
        MapCmd::Show { org, json } => {
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
                    say!(
                        "  focal point: {} {} {}",
                        fp.name,
                        fp.phone.clone().unwrap_or_default(),
                        fp.email.clone().unwrap_or_default()
                    );
                }
            }
        }
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
        MapCmd::Gaps { json } => {
            let out = client::call(dir, pass, user, Request::MapGaps)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            let (m, _) = directory(dir, pass, user)?;
            let rows: Vec<Vec<String>> = out
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    let site = s(&g["site"]);
                    let cat = s(&g["category"]);
                    vec![
                        m.site(&site).map_or(site.clone(), |x| x.name.en.clone()),
                        m.category(&cat).map_or(cat.clone(), |c| c.name.en.clone()),
                        if g["unavailable"].as_u64() > Some(0) {
                            format!("{} listed, all full or suspended", g["unavailable"])
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
        }
    }
    Ok(())
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
