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
    assert!(!instances.is_empty(), "nothing to check against {}", schema.display());
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
    run(&["map", "export", "--format", "hsds", "--out", out.to_str().unwrap()]);
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
    for file in ["services_full.json", "organizations_full.json", "services.csv"] {
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
    for t in ["services.csv", "service_at_location.csv", "taxonomy_terms.csv", "metadata.csv"] {
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
    assert!(services.len() >= 45, "every partner's services ({})", services.len());
    let work = dir.join("instances");
    let service_files = write_each(&work, "service", services);
    let org_files = write_each(&work, "organization", orgs);
    assert_valid(&spec().join("schema/compiled/service.json"), &service_files);
    assert_valid(&spec().join("schema/compiled/organization.json"), &org_files);
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
        ("location", write_each(&work, "loc", &nested["location"].values().cloned().collect::<Vec<_>>())),
        ("taxonomy_term", write_each(&work, "term", &nested["taxonomy_term"].values().cloned().collect::<Vec<_>>())),
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
            assert_eq!(location["redacted"], true, "a confidential place is redacted");
            assert!(location.get("latitude").is_none() && location["addresses"] == serde_json::json!([]));
            assert!(s["eligible_case_types"].as_array().unwrap().contains(&"gbv_survivor".into()));
            assert!(codes.contains(&"case_type:gbv_survivor"));
        }
    }
    let addresses = std::fs::read_to_string(package.join("addresses.csv")).unwrap();
    assert!(addresses.contains("4100"), "addresses with a postal code are exported");
}
