//! Open Referral HSDS 3.0, judged by the standard's own tools: the export and every API
//! response are checked with `check-jsonschema` against the specification's schemas
//! (`hsds/spec/`, unchanged) and the tabular package with `frictionless validate`; the profile's
//! merge patches must yield valid JSON Schema 2020-12; the import reads our export back and the
//! specification's own examples. The tools come from PyPI: `.ci/run` installs them in a virtual
//! environment and says where with `PASSERELLE_PY_TOOLS`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use passerelle_tests::{Daemon, run_in};
use serde_json::Value;

use crate::map::{materialize, sample_map, sample_map_except};

/// The directory holding `check-jsonschema` and `frictionless`.
fn tools() -> PathBuf {
    let dir = std::env::var_os("PASSERELLE_PY_TOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/passerelle-py-tools/bin")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("check-jsonschema").exists() && dir.join("frictionless").exists(),
        "check-jsonschema and frictionless are needed in {} (.ci/run installs them: python3 -m venv DIR && DIR/bin/pip install check-jsonschema frictionless; or set PASSERELLE_PY_TOOLS)",
        dir.display()
    );
    dir
}

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hsds/spec")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs check-jsonschema; returns whether every instance validated, and what it said.
fn check_jsonschema(schema: &Path, instances: &[PathBuf]) -> (bool, String) {
    let out = Command::new(tools().join("check-jsonschema"))
        .arg("--schemafile")
        .arg(schema)
        .args(instances)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn assert_valid(schema: &Path, instances: &[PathBuf]) {
    assert!(
        !instances.is_empty(),
        "nothing to check against {}",
        schema.display()
    );
    let (ok, said) = check_jsonschema(schema, instances);
    assert!(ok, "against {}:\n{said}", schema.display());
}

/// Writes each value to its own file; returns the paths.
fn write_each(dir: &Path, prefix: &str, values: &[Value]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let p = dir.join(format!("{prefix}-{i}.json"));
            std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
            p
        })
        .collect()
}

/// RFC 7396: applies a JSON Merge Patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The profile's schema for `name`: the base schema with our patch applied, written to `dir`,
/// and checked against the JSON Schema 2020-12 metaschema.
fn patched_schema(dir: &Path, name: &str) -> PathBuf {
    let mut schema = read_json(&spec().join(format!("schema/{name}.json")));
    let patch = read_json(&repo().join(format!("hsds/profile/schema/{name}.json")));
    merge_patch(&mut schema, &patch);
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    // The base schemas refer to each other by relative file names: they sit beside it.
    let dir = dir.join("profile-schema");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(spec().join("schema")).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&schema).unwrap()).unwrap();
    let out = Command::new(tools().join("check-jsonschema"))
        .arg("--check-metaschema")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the profile's {name} is valid JSON Schema 2020-12: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    path
}

/// Every object nested in compiled ones, by the schema that describes it.
fn nested_objects(root: &Value, out: &mut BTreeMap<&'static str, BTreeMap<String, Value>>) {
    const KINDS: &[(&str, &str)] = &[
        ("phones", "phone"),
        ("schedules", "schedule"),
        ("languages", "language"),
        ("contacts", "contact"),
        ("attributes", "attribute"),
        ("service_at_locations", "service_at_location"),
        ("locations", "location"),
        ("location", "location"),
        ("addresses", "address"),
        ("organization", "organization"),
        ("taxonomy_term", "taxonomy_term"),
        ("services", "service"),
    ];
    let Value::Object(o) = root else { return };
    for (key, v) in o {
        let Some((_, kind)) = KINDS.iter().find(|(k, _)| k == key) else {
            continue;
        };
        let list = match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for item in list {
            let id = item["id"].as_str().unwrap_or_default().to_string();
            nested_objects(&item, out);
            out.entry(kind).or_default().insert(id, item);
        }
    }
}

fn export(run: &dyn Fn(&[&str]) -> String, out: &Path) {
    run(&[
        "map",
        "export",
        "--format",
        "hsds",
        "--out",
        out.to_str().unwrap(),
    ]);
}

fn frictionless(package: &Path) -> (bool, String) {
    let out = Command::new(tools().join("frictionless"))
        .arg("validate")
        .arg(package.join("datapackage.json"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_hsds_export_passes_the_standards_own_validators() {
    let (sim, dir, events) = sample_map();
    let node = materialize(&sim, "mas1", dir.path(), &events);
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", node.to_str().unwrap()];
        all.extend_from_slice(args);
        run_in(dir.path(), &all).expect_ok().stdout
    };
    let package = dir.path().join("hsds");
    export(&run, &package);
    check_tabular(&package);
    check_compiled(&package, dir.path());
    check_content(&package);

    // Every node of the mechanism exports the same ids: another organisation's node gives
    // the same files.
    let other = materialize(&sim, "crt1", dir.path(), &events);
    let again = dir.path().join("hsds-crt1");
    let out = run_in(
        dir.path(),
        &[
            "--data-dir",
            other.to_str().unwrap(),
            "map",
            "export",
            "--out",
            again.to_str().unwrap(),
        ],
    );
    out.expect_ok();
    for file in [
        "services_full.json",
        "organizations_full.json",
        "services.csv",
    ] {
        assert_eq!(
            std::fs::read(package.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file} is the same from two nodes"
        );
    }
}

/// `frictionless validate` with the specification's datapackage.json; and a package with one
/// broken id is refused (the judge can fail).
fn check_tabular(package: &Path) {
    assert_eq!(
        std::fs::read(package.join("datapackage.json")).unwrap(),
        std::fs::read(spec().join("datapackage.json")).unwrap(),
        "the package is the specification's, unchanged"
    );
    for t in [
        "services.csv",
        "service_at_location.csv",
        "taxonomy_terms.csv",
        "metadata.csv",
    ] {
        assert!(package.join(t).is_file(), "{t} is written");
    }
    let (ok, said) = frictionless(package);
    assert!(ok, "frictionless validate:\n{said}");
    let broken = package.with_file_name("hsds-broken");
    std::fs::create_dir_all(&broken).unwrap();
    for e in std::fs::read_dir(package).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), broken.join(e.file_name())).unwrap();
    }
    let services = std::fs::read_to_string(broken.join("services.csv")).unwrap();
    let mut lines: Vec<&str> = services.lines().collect();
    let bad = format!("asi:legal{}", &lines[1][36..]);
    lines[1] = &bad;
    std::fs::write(broken.join("services.csv"), lines.join("\r\n")).unwrap();
    let (ok, said) = frictionless(&broken);
    assert!(!ok, "a service id that is not a UUID is refused:\n{said}");
}

/// check-jsonschema: compiled services and organizations against `schema/compiled/`, every
/// nested object against `schema/<object>.json`, and against the profile's patched schemas.
fn check_compiled(package: &Path, dir: &Path) {
    let services = read_json(&package.join("services_full.json"));
    let orgs = read_json(&package.join("organizations_full.json"));
    let services = services.as_array().unwrap();
    let orgs = orgs.as_array().unwrap();
    assert!(
        services.len() >= 45,
        "every partner's services ({})",
        services.len()
    );
    let work = dir.join("instances");
    let service_files = write_each(&work, "service", services);
    let org_files = write_each(&work, "organization", orgs);
    assert_valid(&spec().join("schema/compiled/service.json"), &service_files);
    assert_valid(
        &spec().join("schema/compiled/organization.json"),
        &org_files,
    );
    let mut nested = BTreeMap::new();
    for v in services.iter().chain(orgs) {
        nested_objects(v, &mut nested);
    }
    for (kind, objects) in &nested {
        let values: Vec<Value> = objects.values().cloned().collect();
        let files = write_each(&work, kind, &values);
        assert_valid(&spec().join(format!("schema/{kind}.json")), &files);
    }
    for (name, files) in [
        ("service", service_files.clone()),
        ("organization", org_files),
        (
            "location",
            write_each(
                &work,
                "loc",
                &nested["location"].values().cloned().collect::<Vec<_>>(),
            ),
        ),
        (
            "taxonomy_term",
            write_each(
                &work,
                "term",
                &nested["taxonomy_term"]
                    .values()
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
        ),
    ] {
        assert_valid(&patched_schema(dir, name), &files);
    }
    // The judge can fail: a service whose id is not a UUID is refused.
    let mut bad = services[0].clone();
    bad["id"] = "asi:asi-legal-medenine".into();
    let (ok, _) = check_jsonschema(
        &spec().join("schema/compiled/service.json"),
        &write_each(&work, "bad", &[bad]),
    );
    assert!(!ok, "check-jsonschema refuses an id that is not a UUID");
}

/// What the export says: categories as taxonomy terms, capacity, confidential places.
fn check_content(package: &Path) {
    let services = read_json(&package.join("services_full.json"));
    for s in services.as_array().unwrap() {
        let codes: Vec<&str> = s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["taxonomy_term"]["code"].as_str())
            .collect();
        assert!(!codes.is_empty(), "{} has its category", s["id"]);
        let capacity = s["capacity_status"]["status"].as_str().unwrap();
        match capacity {
            "full" | "limited" => {
                assert_eq!(s["status"], "active");
                assert!(s["alert"].is_string(), "a {capacity} service says so");
            }
            "suspended" => assert_eq!(s["status"], "temporarily closed"),
            _ => assert_eq!(s["status"], "active"),
        }
        assert_eq!(s["assured_date"], s["capacity_status"]["verified"]);
        let location = &s["service_at_locations"][0]["location"];
        if s["passerelle_id"].as_str().unwrap().starts_with("nour-") {
            assert_eq!(
                location["redacted"], true,
                "a confidential place is redacted"
            );
            assert!(
                location.get("latitude").is_none()
                    && location["addresses"] == serde_json::json!([])
            );
            assert!(
                s["eligible_case_types"]
                    .as_array()
                    .unwrap()
                    .contains(&"gbv_survivor".into())
            );
            assert!(codes.contains(&"case_type:gbv_survivor"));
        }
    }
    let addresses = std::fs::read_to_string(package.join("addresses.csv")).unwrap();
    assert!(
        addresses.contains("4100"),
        "addresses with a postal code are exported"
    );
}

/// Services with every id and organisation field left out, keyed by name: what must survive a
/// round trip to another organisation.
fn comparable(services: &Value, org_name: &str) -> BTreeMap<String, Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.retain(|k, _| {
                    !(k == "id"
                        || k.ends_with("_id")
                        || k == "organization"
                        || k == "passerelle_id")
                });
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    services
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["organization"]["name"] == org_name)
        .map(|s| {
            let mut s = s.clone();
            strip(&mut s);
            (s["name"].as_str().unwrap().to_string(), s)
        })
        .collect()
}

#[test]
fn hsds_import_round_trips_refuses_whole_and_reads_the_specifications_examples() {
    // jeunesse_sud has published no profile yet; the coordinator (mas1) keeps it.
    let (sim, dir, events) = sample_map_except(&["jeunesse_sud"]);
    let node = materialize(&sim, "mas1", dir.path(), &events);
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", node.to_str().unwrap()];
        all.extend_from_slice(args);
        run_in(dir.path(), &all)
    };
    let package = dir.path().join("hsds");
    export(&|a: &[&str]| run(a).expect_ok().stdout, &package);
    check_round_trip(&run, dir.path(), &package);
    check_tabular_read(&run, dir.path(), &package);
    check_refused_whole(&run, dir.path(), &package);
    check_confidential(&run, dir.path());
    check_examples(&run);
}

/// The HSDS id of crt in our export.
fn crt_uuid(package: &Path) -> String {
    let services = read_json(&package.join("services_full.json"));
    let crt = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["passerelle_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("crt-"))
        })
        .unwrap();
    crt["organization_id"].as_str().unwrap().to_string()
}

/// `path` read as crt's profile (`--dry-run`), beside the profile the node holds.
fn read_as_crt(
    run: &dyn Fn(&[&str]) -> passerelle_tests::Run,
    path: &Path,
    uuid: &str,
) -> (Value, Value) {
    let path = path.to_str().unwrap();
    let args = [
        "map",
        "import",
        "--hsds",
        path,
        "--org",
        "crt",
        "--hsds-org",
        uuid,
        "--dry-run",
    ];
    let read: Value = toml::from_str(&run(&args).expect_ok().stdout).unwrap();
    let shown = run(&["map", "show", "--org", "crt", "--json"])
        .expect_ok()
        .stdout;
    let held: Value = serde_json::from_str(&shown).unwrap();
    (read, held)
}

/// Our package reads back as the profile the node holds, and at an organisation with no
/// profile yet it gives the same services under that organisation's name.
fn check_round_trip(run: &dyn Fn(&[&str]) -> passerelle_tests::Run, dir: &Path, package: &Path) {
    let services = read_json(&package.join("services_full.json"));
    let crt = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["passerelle_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("crt-"))
        })
        .unwrap();
    let crt_uuid = crt["organization_id"].as_str().unwrap().to_string();
    let crt_name = crt["organization"]["name"].as_str().unwrap().to_string();

    // Read back as crt's profile: exactly what the node holds.
    let pkg = package.to_str().unwrap();
    let (read, held) = read_as_crt(run, package, &crt_uuid);
    assert_eq!(
        read, held[0],
        "the package reads back as the profile the node holds"
    );

    // At an organisation with no profile: the same services, under its name.
    run(&[
        "map",
        "import",
        "--hsds",
        pkg,
        "--org",
        "jeunesse_sud",
        "--hsds-org",
        &crt_uuid,
    ])
    .expect_ok();
    let again = dir.join("hsds-again");
    export(&|a: &[&str]| run(a).expect_ok().stdout, &again);
    let after = read_json(&again.join("services_full.json"));
    let js_name = after
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["passerelle_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("crt-"))
                && s["organization"]["name"] != crt_name
        })
        .map(|s| s["organization"]["name"].as_str().unwrap().to_string())
        .unwrap();
    let before = comparable(&services, &crt_name);
    assert!(before.len() >= 3);
    assert_eq!(
        comparable(&after, &js_name),
        before,
        "export → import → export gives the same services"
    );
}

/// The CSV tables alone (base HSDS, no profile fields) read back what base HSDS can say.
fn check_tabular_read(run: &dyn Fn(&[&str]) -> passerelle_tests::Run, dir: &Path, package: &Path) {
    let tabular = dir.join("hsds-tabular");
    std::fs::create_dir_all(&tabular).unwrap();
    for e in std::fs::read_dir(package).unwrap() {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "csv") {
            std::fs::copy(e.path(), tabular.join(e.file_name())).unwrap();
        }
    }
    let (read, held) = read_as_crt(run, &tabular, &crt_uuid(package));
    let key = |s: &Value| {
        serde_json::json!([
            s["category"],
            s["site"],
            s["hours"],
            s["languages"],
            s["address"],
            s["verified"],
            s["contact"],
            s["name"]["fr"]
        ])
    };
    let mut got: Vec<Value> = read["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    let mut want: Vec<Value> = held[0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    got.sort_by_key(Value::to_string);
    want.sort_by_key(Value::to_string);
    assert_eq!(
        got, want,
        "the CSV tables read back every service's category, site, hours, languages, address, date and contact"
    );
}

/// A confidential place's address and coordinates appear nowhere in the export.
fn check_confidential(run: &dyn Fn(&[&str]) -> passerelle_tests::Run, dir: &Path) {
    let profile = dir.join("hidden.toml");
    std::fs::write(
        &profile,
        r#"org = "jeunesse_sud"
description = { fr = "Foyer", en = "Shelter" }
[[services]]
id = "foyer-secret"
category = "shelter"
site = "medenine"
name = { fr = "Foyer protégé", en = "Protected shelter" }
languages = ["fr"]
address = "12 rue des Oliviers cachée"
postal_code = "TN-4199-X"
latitude = 33.123456
longitude = 10.654321
confidential = true
capacity = "available"
verified = "2026-11-20"
"#,
    )
    .unwrap();
    run(&["map", "import", profile.to_str().unwrap()]).expect_ok();
    let out = dir.join("hsds-confidential");
    export(&|a: &[&str]| run(a).expect_ok().stdout, &out);
    for e in std::fs::read_dir(&out).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        // Secrets that cannot occur by chance inside a UUID, a date-time or
        // another number of the export (a bare "4199" could, in a UUID).
        for secret in ["Oliviers", "TN-4199-X", "33.123456", "10.654321"] {
            assert!(!text.contains(secret), "{secret} stays out of the export");
        }
    }
    let services = read_json(&out.join("services_full.json"));
    let s = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["passerelle_id"] == "foyer-secret")
        .unwrap();
    assert_eq!(s["service_at_locations"][0]["location"]["redacted"], true);
}

/// A package with two bad records is refused whole, each record named; nothing changes.
fn check_refused_whole(run: &dyn Fn(&[&str]) -> passerelle_tests::Run, dir: &Path, package: &Path) {
    let shown = || {
        run(&["map", "show", "--org", "jeunesse_sud", "--json"])
            .expect_ok()
            .stdout
    };
    let before = shown();
    let mut services = read_json(&package.join("services_full.json"));
    let list = services.as_array_mut().unwrap();
    let org = list[0]["organization_id"].clone();
    let mine: Vec<usize> = (0..list.len())
        .filter(|i| list[*i]["organization_id"] == org)
        .collect();
    assert!(mine.len() >= 2, "two services of one organisation to break");
    list[mine[0]]["languages"] = serde_json::json!([{ "id": "x", "code": "xxx" }]);
    list[mine[0]]
        .as_object_mut()
        .unwrap()
        .remove("passerelle_id");
    list[mine[1]]["attributes"] = serde_json::json!([]);
    let bad = dir.join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&services).unwrap()).unwrap();
    let org = org.as_str().unwrap();
    let refused = run(&[
        "map",
        "import",
        "--hsds",
        bad.to_str().unwrap(),
        "--org",
        "jeunesse_sud",
        "--hsds-org",
        org,
    ])
    .expect_refused("2 records refused, nothing imported");
    assert!(refused.stderr.contains("languages"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--category"), "{}", refused.stderr);
    assert_eq!(shown(), before, "a refused package changes nothing");
}

/// The specification's own examples import (with the site and category HSDS cannot say).
fn check_examples(run: &dyn Fn(&[&str]) -> passerelle_tests::Run) {
    let examples = spec().join("examples");
    for example in [
        "service_full.json",
        "organization_full.json",
        "service_at_location_full.json",
        "service_list.json",
        "csv",
    ] {
        let path = examples.join(example);
        let out = run(&[
            "map",
            "import",
            "--hsds",
            path.to_str().unwrap(),
            "--org",
            "jeunesse_sud",
            "--site",
            "medenine",
            "--category",
            "mental_health",
            "--language",
            "fr",
        ]);
        let out = out.expect_ok();
        assert!(
            out.stdout.contains("Profile of `jeunesse_sud` updated")
                || out.stdout.contains("nothing changed"),
            "{example}: {}",
            out.stdout
        );
    }
    let shown: Value = serde_json::from_str(
        &run(&["map", "show", "--org", "jeunesse_sud", "--json"])
            .expect_ok()
            .stdout,
    )
    .unwrap();
    let s = &shown[0]["services"][0];
    assert_eq!(s["name"]["fr"], "Community Counselling");
    assert_eq!(s["hours"]["thu"], "10:00-18:00");
    assert_eq!(s["languages"], serde_json::json!(["ur"]));
}

/// The schema `openapi.json` names for a path's 200 response, with its references made
/// local: the specification's URLs point at the copy in `hsds/spec/schema/`, and the page
/// fields (`#/components/schemas/Page`) are written in.
fn response_schema(dir: &Path, path: &str) -> PathBuf {
    let openapi = read_json(&spec().join("schema/openapi.json"));
    let page = openapi["components"]["schemas"]["Page"].clone();
    let mut schema =
        openapi["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            .clone();
    assert!(schema.is_object(), "openapi.json describes {path}");
    let local = format!(
        "file://{}/",
        spec().join("schema").canonicalize().unwrap().display()
    );
    let text = serde_json::to_string(&schema).unwrap().replace(
        "https://raw.githubusercontent.com/openreferral/specification/3.0/schema/",
        &local,
    );
    schema = serde_json::from_str(&text).unwrap();
    if let Some(all) = schema.get_mut("allOf").and_then(Value::as_array_mut) {
        for s in all.iter_mut() {
            if s["$ref"] == "#/components/schemas/Page" {
                *s = page.clone();
            }
        }
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    let file = dir.join(format!(
        "response{}.json",
        path.replace(['/', '{', '}'], "_")
    ));
    std::fs::write(&file, serde_json::to_vec_pretty(&schema).unwrap()).unwrap();
    file
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// GET `url`: the status and the body as JSON (null when it is not JSON).
fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn the_hsds_api_serves_the_directory_as_its_openapi_says_and_nothing_else() {
    let (sim, dir, events) = sample_map();
    materialize(&sim, "mas1", dir.path(), &events);
    let daemon = Daemon::start(dir.path(), "mas1", &[], &["--hsds-listen", "127.0.0.1:0"]);
    let public = daemon
        .hsds
        .clone()
        .expect("the ready line names the public directory");
    let work = dir.path().join("responses");
    std::fs::create_dir_all(&work).unwrap();
    // Every response, from both listeners, validated against its schema.
    let mut checked: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for base in [
        format!("http://{}/hsds", daemon.api),
        format!("http://{public}/hsds"),
    ] {
        let (status, root) = get(&format!("{base}/"));
        assert_eq!(status, 200);
        assert_eq!(root["version"], "3.0");
        let (status, profile) = get(root["profile"].as_str().unwrap());
        assert_eq!(status, 200, "the profile the root names is served");
        assert!(profile["files"].as_array().unwrap().len() >= 4);
        checked.entry("/").or_default().push(root);
        check_pages(&base, &mut checked);
        check_filters(&base, &mut checked);
    }
    for (path, responses) in &checked {
        let files = write_each(&work, &path.replace(['/', '{', '}'], "_"), responses);
        assert_valid(&response_schema(&work, path), &files);
    }
    // The judge can fail: a page whose service has no UUID is refused.
    let mut bad = checked["/services"][0].clone();
    bad["contents"][0]["id"] = "crt:crt-shelter".into();
    let files = write_each(&work, "bad-page", &[bad]);
    assert!(!check_jsonschema(&response_schema(&work, "/services"), &files).0);
    check_refusals(&daemon.api, &public);
}

/// Pages of services, organizations, service-at-locations and taxonomies; each id resolves.
fn check_pages(base: &str, checked: &mut BTreeMap<&'static str, Vec<Value>>) {
    let (_, first) = get(&format!("{base}/services?per_page=7"));
    let total = first["total_items"].as_u64().unwrap();
    assert!(total >= 45);
    assert_eq!(first["size"], 7);
    assert_eq!(first["total_pages"].as_u64().unwrap(), total.div_ceil(7));
    assert_eq!(first["first_page"], true);
    let last_n = first["total_pages"].as_u64().unwrap();
    let (_, last) = get(&format!("{base}/services?per_page=7&page={last_n}"));
    assert_eq!(last["last_page"], true);
    assert_eq!(last["size"].as_u64().unwrap(), total - 7 * (last_n - 1));
    let (_, beyond) = get(&format!("{base}/services?per_page=7&page={}", last_n + 1));
    assert_eq!(beyond["empty"], true);
    let id = first["contents"][0]["id"].as_str().unwrap().to_string();
    let (status, one) = get(&format!("{base}/services/{id}"));
    assert_eq!(status, 200);
    assert!(one["service_at_locations"].is_array(), "the whole service");
    let (_, orgs) = get(&format!("{base}/organizations?per_page=50"));
    let org = orgs["contents"][0]["id"].as_str().unwrap().to_string();
    let (status, full_org) = get(&format!("{base}/organizations/{org}"));
    assert_eq!(status, 200);
    let (_, sals) = get(&format!("{base}/service_at_locations?per_page=100"));
    assert_eq!(sals["total_items"].as_u64(), Some(total));
    let (_, taxonomies) = get(&format!("{base}/taxonomies"));
    assert_eq!(
        taxonomies["total_items"], 2,
        "service categories and case types"
    );
    let (_, terms) = get(&format!("{base}/taxonomy_terms?per_page=100"));
    assert!(terms["total_items"].as_u64().unwrap() >= 14);
    let term = terms["contents"][0]["id"].as_str().unwrap();
    assert_eq!(get(&format!("{base}/taxonomy_terms/{term}")).0, 200);
    let tax = taxonomies["contents"][0]["id"].as_str().unwrap();
    assert_eq!(get(&format!("{base}/taxonomies/{tax}")).0, 200);
    checked
        .entry("/services")
        .or_default()
        .extend([first, last, beyond]);
    checked.entry("/services/{id}").or_default().push(one);
    checked.entry("/organizations").or_default().push(orgs);
    checked
        .entry("/organizations/{id}")
        .or_default()
        .push(full_org);
    checked
        .entry("/service_at_locations")
        .or_default()
        .push(sals);
    checked.entry("/taxonomies").or_default().push(taxonomies);
    checked.entry("/taxonomy_terms").or_default().push(terms);
}

/// The ids of a page's contents, in order.
fn ids(page: &Value) -> Vec<String> {
    page["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// What a search may match in a service: its names, descriptions and eligibility.
fn searchable(s: &Value) -> String {
    format!(
        "{}{}{}",
        s["name_translations"], s["description_translations"], s["eligibility_description"]
    )
    .to_lowercase()
}

/// Each filter keeps exactly the services it names, and filters combine as AND.
fn check_filters(base: &str, checked: &mut BTreeMap<&'static str, Vec<Value>>) {
    let (_, all) = get(&format!("{base}/services?per_page=100&full=true"));
    let all = all["contents"].as_array().unwrap().clone();
    let expect = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        all.iter()
            .filter(|s| f(s))
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let crt = all
        .iter()
        .find(|s| s["passerelle_id"].as_str().unwrap().starts_with("crt-"))
        .unwrap();
    let org = crt["organization_id"].as_str().unwrap().to_string();
    let health = all
        .iter()
        .flat_map(|s| s["attributes"].as_array().unwrap().clone())
        .find(|a| a["taxonomy_term"]["code"] == "health")
        .unwrap()["taxonomy_term_id"]
        .as_str()
        .unwrap()
        .to_string();
    let has_term = |s: &Value, t: &str| {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["taxonomy_term_id"] == t)
    };
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("organization_id={org}"),
            expect(&|s| s["organization_id"] == org.as_str()),
        ),
        (
            format!("taxonomy_term_id={health}"),
            expect(&|s| has_term(s, &health)),
        ),
        (
            "search=zarzis".into(),
            expect(&|s| searchable(s).contains("zarzis")),
        ),
        (
            "modified_after=2026-11-10T00:00:00Z".into(),
            expect(&|s| s["last_modified"].as_str().unwrap() >= "2026-11-10"),
        ),
        (
            format!("organization_id={org}&search=zarzis"),
            expect(&|s| s["organization_id"] == org.as_str() && searchable(s).contains("zarzis")),
        ),
    ];
    for (query, expected) in cases {
        assert!(
            !expected.is_empty() && expected.len() < all.len(),
            "{query} selects some"
        );
        let (status, page) = get(&format!("{base}/services?per_page=100&{query}"));
        assert_eq!(status, 200, "{query}");
        assert_eq!(ids(&page), expected, "{query}");
        checked.entry("/services").or_default().push(page);
    }
}

/// GET only; bad queries, unknown ids; the public listener serves nothing but the directory.
fn check_refusals(api: &str, public: &str) {
    let status = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    for base in [api, public] {
        let url = format!("http://{base}/hsds/services");
        assert_eq!(status(agent().post(&url).send("x")), 405, "POST");
        assert_eq!(status(agent().put(&url).send("x")), 405, "PUT");
        assert_eq!(status(agent().delete(&url).call()), 405, "DELETE");
        for bad in [
            "per_page=1000",
            "page=0",
            "nope=1",
            "format=ndjson",
            "search=%ff",
        ] {
            let (code, body) = get(&format!("{url}?{bad}"));
            assert_eq!(code, 400, "{bad}");
            assert!(body["error"].is_string(), "{bad} says why");
        }
        let long = "a".repeat(3000);
        assert_eq!(get(&format!("{url}?search={long}")).0, 400);
        assert_eq!(
            get(&format!("{url}/00000000-0000-0000-0000-000000000000")).0,
            404
        );
    }
    for other in [
        "/",
        "/cases",
        "/api/v1/health",
        "/referrals",
        "/login",
        "/status",
    ] {
        assert_eq!(
            get(&format!("http://{public}{other}")).0,
            404,
            "{other} is not on the public listener"
        );
    }
    let r = agent()
        .post(&format!("http://{public}/api/v1/rpc"))
        .send("{}");
    assert_eq!(status(r), 404, "no API on the public listener");
    // Any host name reaches a published directory; the local API keeps its Host check.
    let r = agent()
        .get(&format!("http://{public}/hsds/services"))
        .header("Host", "directory.example.org")
        .call();
    assert_eq!(status(r), 200);
    let r = agent()
        .get(&format!("http://{api}/hsds/services"))
        .header("Host", "evil.example")
        .call();
    assert_eq!(status(r), 421);
}
