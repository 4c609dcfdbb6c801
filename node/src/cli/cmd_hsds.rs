//! Open Referral HSDS 3.0 on the command line: `map export --format hsds` writes the package,
//! `map import --hsds` reads one into a profile.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use passerelle_core::config::Mechanism;
use passerelle_core::limits::HSDS_FILE_SIZE_MAX_BYTES;
use passerelle_core::map::Profile;
use passerelle_core::map::hsds::{self, ImportOptions};
use serde_json::Value;

use crate::cli::table::say;
use crate::fsutil;
use crate::rpc::map::Directory;

/// The compiled files an export writes beside the tables.
pub const SERVICES_FULL: &str = "services_full.json";
pub const ORGANIZATIONS_FULL: &str = "organizations_full.json";

/// Writes the package into `out`: `datapackage.json` (the specification's, unchanged), every
/// table it names as CSV, and the compiled services and organizations as JSON arrays.
pub fn export(m: &Mechanism, d: &Directory, out: &Path) -> Result<()> {
    if d.mechanism_id.is_empty() {
        bail!("the node did not give the mechanism's id (is it older than this command?)");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let h = hsds::build(&d.profiles, m, &d.mechanism_id);
    fsutil::write_atomic(
        &out.join("datapackage.json"),
        hsds::DATAPACKAGE.as_bytes(),
        false,
    )?;
    for t in hsds::tables() {
        let csv = hsds::csv(t, h.table_rows(&t.name));
        fsutil::write_atomic(&out.join(&t.path), csv.as_bytes(), false)?;
    }
    let services: Vec<&Value> = h.services.iter().map(|s| &s.full).collect();
    fsutil::write_atomic(
        &out.join(SERVICES_FULL),
        serde_json::to_string_pretty(&services)?.as_bytes(),
        false,
    )?;
    fsutil::write_atomic(
        &out.join(ORGANIZATIONS_FULL),
        serde_json::to_string_pretty(&h.organizations)?.as_bytes(),
        false,
    )?;
    say!(
        "Open Referral (HSDS {}) package written to {}: {} organizations, {} services, {} locations, {} taxonomy terms (datapackage.json, {} CSV tables, {SERVICES_FULL}, {ORGANIZATIONS_FULL}).",
        hsds::HSDS_VERSION,
        out.display(),
        h.organizations.len(),
        h.services.len(),
        h.table_rows("location").len(),
        h.table_rows("taxonomy_term").len(),
        hsds::tables().len(),
    );
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fsutil::read_bounded(path, HSDS_FILE_SIZE_MAX_BYTES)?;
    crate::json_input::parse::<Value>(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Reads an HSDS package or compiled file into the profile of `options.org`, validated. Every
/// refused record is named; nothing is returned if any is.
pub fn read_profile(path: &Path, m: &Mechanism, options: &ImportOptions) -> Result<Profile> {
    let read = if path.is_dir() {
        let services = path.join(SERVICES_FULL);
        if services.is_file() {
            let mut docs = vec![read_json(&services)?];
            let orgs = path.join(ORGANIZATIONS_FULL);
            if orgs.is_file() {
                docs.push(read_json(&orgs)?);
            }
            hsds::from_compiled(&docs, m, options)
        } else {
            let mut tables = BTreeMap::new();
            for t in hsds::tables() {
                let file = path.join(&t.path);
                if file.is_file() {
                    let bytes = fsutil::read_bounded(&file, HSDS_FILE_SIZE_MAX_BYTES)?;
                    let text = String::from_utf8(bytes)
                        .with_context(|| format!("{} is not UTF-8 text", file.display()))?;
                    tables.insert(t.name.clone(), text);
                }
            }
            if !tables.contains_key("service") {
                bail!(
                    "{} holds neither {SERVICES_FULL} nor services.csv: not an HSDS package",
                    path.display()
                );
            }
            hsds::from_dir(&tables, m, options)
        }
    } else {
        hsds::from_compiled(&[read_json(path)?], m, options)
    };
    match read {
        Ok(imported) => {
            for note in &imported.notes {
                say!("note: {note}");
            }
            Ok(imported.profile)
        }
        Err(errors) => {
            let n = errors.len();
            bail!(
                "{}: {n} record{} refused, nothing imported:\n  {}",
                path.display(),
                if n == 1 { "" } else { "s" },
                errors.join("\n  ")
            )
        }
    }
}
