//! The partner map: concurrent edits converge, only an organisation (or a coordinator, for one
//! without nodes) changes its profile, bad profiles are refused with the field named, snapshots
//! prune old changes, and posters, gaps and search run on the sample mechanism (the HSDS export: `hsds.rs`)
//! — the poster checked in headless Chromium, with a screenshot saved.

use std::path::{Path, PathBuf};

use passerelle_core::engine::Engine;
use passerelle_core::event::Kind;
use passerelle_core::fold::Rule;
use passerelle_core::map::{Capacity, Profile};
use passerelle_core::sim::{Forger, Sim};
use passerelle_tests::{mechanism, run_in};

use crate::events::{SAMPLE, all_events, now};

fn profile(org: &str) -> Profile {
    let path = format!(
        "{}/../config/profiles/{org}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    Profile::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn exchange(a: &mut Engine, b: &mut Engine) {
    let from_a: Vec<_> = all_events(std::slice::from_ref(a));
    let from_b: Vec<_> = all_events(std::slice::from_ref(b));
    a.receive(&from_b, now()).unwrap();
    b.receive(&from_a, now()).unwrap();
}

fn capacity(e: &Engine, org: &str, service: &str) -> Option<Capacity> {
    e.directory().unwrap()[org]
        .services
        .iter()
        .find(|s| s.id == service)
        .map(|s| s.capacity)
}

#[test]
fn two_nodes_of_one_organisation_edit_concurrently_and_converge() {
    let sim = Sim::new(
        SAMPLE,
        &["crt", "mas"],
        &[("crt1", "crt"), ("crt2", "crt"), ("mas1", "mas")],
        now(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = sim.engine("crt1", dir.path(), true, now()).unwrap();
    let mut b = sim.engine("crt2", dir.path(), true, now()).unwrap();
    a.map_import(&profile("crt"), now()).unwrap().unwrap();
    exchange(&mut a, &mut b);
    assert_eq!(a.directory().unwrap(), b.directory().unwrap());
    // Offline from each other: the Zarzis site marks its shelter full; Médenine edits another
    // service, and both touch the same field of a third.
    a.map_update(
        "crt",
        "crt-food-medenine",
        Some(Capacity::Limited),
        true,
        now(),
    )
    .unwrap();
    b.map_update(
        "crt",
        "crt-shelter-zarzis",
        Some(Capacity::Available),
        false,
        now(),
    )
    .unwrap();
    a.map_update("crt", "crt-nfi-zarzis", Some(Capacity::Full), false, now())
        .unwrap();
    b.map_update(
        "crt",
        "crt-nfi-zarzis",
        Some(Capacity::Suspended),
        false,
        now(),
    )
    .unwrap();
    exchange(&mut a, &mut b);
    assert_eq!(
        a.directory().unwrap(),
        b.directory().unwrap(),
        "both converge"
    );
    assert_eq!(
        capacity(&a, "crt", "crt-food-medenine"),
        Some(Capacity::Limited)
    );
    assert_eq!(
        capacity(&a, "crt", "crt-shelter-zarzis"),
        Some(Capacity::Available)
    );
    let both = capacity(&a, "crt", "crt-nfi-zarzis");
    assert!(matches!(both, Some(Capacity::Full | Capacity::Suspended)));
    // A third node that receives everything in any order agrees.
    let mut c = sim.engine("mas1", dir.path(), true, now()).unwrap();
    let mut events = all_events(&[a]);
    events.reverse();
    c.receive(&events, now()).unwrap();
    assert_eq!(*c.directory().unwrap(), *b.directory().unwrap());
}

#[test]
fn another_organisation_cannot_change_a_profile_and_a_coordinator_keeps_those_without_nodes() {
    let sim = Sim::new(
        SAMPLE,
        &["crt", "mas", "mdm"],
        &[("crt1", "crt"), ("mas1", "mas"), ("mdm1", "mdm")],
        now(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut crt = sim.engine("crt1", dir.path(), true, now()).unwrap();
    let mut mas = sim.engine("mas1", dir.path(), true, now()).unwrap();
    let mut mdm = sim.engine("mdm1", dir.path(), true, now()).unwrap();
    crt.map_import(&profile("crt"), now()).unwrap();
    let crt_events = all_events(std::slice::from_ref(&crt));
    mas.receive(&crt_events, now()).unwrap();
    mdm.receive(&crt_events, now()).unwrap();
    let before = mas.directory().unwrap();

    // The honest engine refuses; a malicious mdm node forges a change to crt's document.
    let refused = mdm.map_import(&profile("crt"), now());
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("may not change the profile of `crt`"))
    );
    let mut doc = mdm.store().map_doc("crt").unwrap().unwrap();
    let mut tampered = (*before)["crt"].clone();
    tampered.services[0].capacity = Capacity::Suspended;
    let change = passerelle_core::map::import(&mut doc, &tampered)
        .unwrap()
        .unwrap();
    let m = sim.mechanism().unwrap();
    let mut forger = Forger::new(sim.node("mdm1").unwrap(), sim.mechanism_id(), 1, now());
    let forged = forger
        .next(
            &m,
            Kind::MapChange { org: "crt".into() },
            None,
            vec![],
            &[],
            &change,
        )
        .unwrap();
    for engine in [&mut crt, &mut mas, &mut mdm] {
        engine
            .receive(std::slice::from_ref(&forged), now())
            .unwrap();
        let verdict = engine.store().verdict(&forged.id()).unwrap().unwrap();
        assert_eq!(verdict.broken, Some(Rule::MapNotAllowed));
        assert_eq!(
            engine.directory().unwrap()["crt"],
            before["crt"],
            "no effect"
        );
    }

    // Savoir pour tous runs no node: the coordinator (mas) keeps its profile; crt may not.
    assert!(crt.map_import(&profile("savoir_pour_tous"), now()).is_err());
    mas.map_import(&profile("savoir_pour_tous"), now())
        .unwrap()
        .unwrap();
    crt.receive(&all_events(std::slice::from_ref(&mas)), now())
        .unwrap();
    assert!(crt.directory().unwrap().contains_key("savoir_pour_tous"));
}

#[test]
fn a_snapshot_prunes_old_changes_and_a_fresh_node_loads_it() {
    let sim = Sim::new(
        SAMPLE,
        &["crt", "mas"],
        &[("crt1", "crt"), ("mas1", "mas"), ("fresh", "mas")],
        now(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut crt = sim.engine("crt1", dir.path(), true, now()).unwrap();
    crt.map_import(&profile("crt"), now()).unwrap();
    for c in [Capacity::Full, Capacity::Limited, Capacity::Available] {
        crt.map_update("crt", "crt-shelter-medenine", Some(c), true, now())
            .unwrap();
    }
    let before: usize = all_events(std::slice::from_ref(&crt))
        .iter()
        .map(|e| e.encode().len())
        .sum();
    crt.map_snapshot("crt", now()).unwrap();
    let events = all_events(std::slice::from_ref(&crt));
    let pruned = events.iter().filter(|e| e.body().is_none()).count();
    assert_eq!(pruned, 4, "the four changes' bodies were pruned");
    let after: usize = events.iter().map(|e| e.encode().len()).sum();
    assert!(after < before, "{after} < {before}");
    let mut fresh = sim.engine("fresh", dir.path(), true, now()).unwrap();
    fresh.receive(&events, now()).unwrap();
    assert_eq!(fresh.directory().unwrap(), crt.directory().unwrap());
    assert_eq!(
        capacity(&fresh, "crt", "crt-shelter-medenine"),
        Some(Capacity::Available)
    );
}

#[test]
fn a_malformed_profile_is_refused_with_the_field_named_and_nothing_changes() {
    let setup = mechanism(&["crt"], &[("crt1", "crt")], &[]);
    let good = format!("{}/../config/profiles/crt.toml", env!("CARGO_MANIFEST_DIR"));
    setup
        .node_run("crt1", &["map", "import", &good])
        .expect_ok();
    let shown = setup
        .node_run("crt1", &["map", "show", "--json"])
        .expect_ok()
        .stdout;
    let text = std::fs::read_to_string(&good).unwrap();
    for (broken, needle) in [
        (
            text.replacen("category = \"shelter\"", "category = \"spa\"", 1),
            "unknown service category `spa`",
        ),
        (text.replacen("08:00-20:00", "20:00-08:00", 1), "hours."),
        (
            text.replacen("capacity = \"limited\"", "capacity = \"plenty\"", 1),
            "unknown variant `plenty`",
        ),
        (
            text.replacen("[[services]]", "[[services]]\nstars = 5", 1),
            "unknown field `stars`",
        ),
        (
            text.replacen("verified = \"2026-11-12\"", "verified = \"yesterday\"", 1),
            "verified: must be a date",
        ),
        (
            text.replacen("org = \"crt\"", "org = \"nobody\"", 1),
            "unknown organisation `nobody`",
        ),
    ] {
        setup.write("broken.toml", &broken);
        setup
            .node_run("crt1", &["map", "import", "broken.toml"])
            .expect_refused(needle);
    }
    let after = setup
        .node_run("crt1", &["map", "show", "--json"])
        .expect_ok()
        .stdout;
    assert_eq!(shown, after, "nothing changed");
}

/// Writes a node's data directory from a simulated mechanism (identity files and a store that
/// holds `events`), so the real command line can work on it.
pub(crate) fn materialize(
    sim: &Sim,
    name: &str,
    root: &Path,
    events: &[passerelle_core::event::Event],
) -> PathBuf {
    let node = sim.node(name).unwrap();
    let dir = root.join(format!("node-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("node.toml"),
        format!(
            "kind = \"passerelle-node\"\nid = \"{}\"\norg = \"{}\"\nlabel = \"{name}\"\nrecipient = \"{}\"\n",
            node.id(),
            node.org,
            node.secrets.age.to_public()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("node.key"), node.secrets.to_text().as_bytes()).unwrap();
    let mut engine = sim
        .engine_at(name, &dir.join("store.redb"), true, now())
        .unwrap();
    engine.receive(events, now()).unwrap();
    dir
}

/// The whole sample mechanism with every partner's profile imported by its own node (or by the
/// coordinator for those without nodes); returns the sim and every event.
pub fn sample_map() -> (Sim, tempfile::TempDir, Vec<passerelle_core::event::Event>) {
    sample_map_except(&[])
}

/// The sample map without the profiles of `skip` (organisations that publish none yet).
pub fn sample_map_except(
    skip: &[&str],
) -> (Sim, tempfile::TempDir, Vec<passerelle_core::event::Event>) {
    let m = passerelle_core::config::Mechanism::from_bytes(SAMPLE.as_bytes()).unwrap();
    let orgs: Vec<String> = m.doc.organisations.iter().map(|o| o.id.clone()).collect();
    let with_nodes: Vec<(String, String)> = m
        .doc
        .organisations
        .iter()
        .filter(|o| o.runs_nodes)
        .map(|o| (format!("{}1", o.id), o.id.clone()))
        .collect();
    let org_refs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    let node_refs: Vec<(&str, &str)> = with_nodes
        .iter()
        .map(|(n, o)| (n.as_str(), o.as_str()))
        .collect();
    let sim = Sim::new(SAMPLE, &org_refs, &node_refs, now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    for org in m
        .doc
        .organisations
        .iter()
        .filter(|o| !skip.contains(&o.id.as_str()))
    {
        let author = if org.runs_nodes {
            format!("{}1", org.id)
        } else {
            "mas1".to_string()
        };
        let mut engine = sim.engine(&author, dir.path(), false, now()).unwrap();
        engine.receive(&events, now()).unwrap();
        engine.map_import(&profile(&org.id), now()).unwrap();
        events = all_events(std::slice::from_ref(&engine));
    }
    (sim, dir, events)
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Renders a page in headless Chromium: its DOM after layout, and a PNG screenshot.
pub fn chromium(url: &str, png: &Path, width: u32, height: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    let shot = std::process::Command::new("chromium")
        .args(&common)
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(url)
        .output()
        .expect("chromium (Debian's `chromium` package; .ci/run installs it)");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let dom = std::process::Command::new("chromium")
        .args(&common)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

#[test]
fn posters_gaps_and_search_run_on_the_sample_mechanism() {
    let (sim, dir, events) = sample_map();
    let node = materialize(&sim, "mas1", dir.path(), &events);
    let run = |args: &[&str]| {
        let mut all = vec!["--data-dir", node.to_str().unwrap()];
        all.extend_from_slice(args);
        run_in(dir.path(), &all).expect_ok().stdout
    };
    check_gaps_and_search(&run);
    check_posters(&run, dir.path(), &sim);
}

/// Gaps and search on the sample map.
fn check_gaps_and_search(run: &dyn Fn(&[&str]) -> String) {
    // Gaps: no mental health care in Zarzis (the coordination meeting's finding).
    let gaps: serde_json::Value = serde_json::from_str(&run(&["map", "gaps", "--json"])).unwrap();
    assert!(
        gaps.as_array()
            .unwrap()
            .iter()
            .any(|g| g["site"] == "zarzis" && g["category"] == "mental_health"),
        "{gaps:#}"
    );
    // Search: health care in Médenine, in Arabic, ranked.
    let found: serde_json::Value = serde_json::from_str(&run(&[
        "map",
        "search",
        "--category",
        "health",
        "--site",
        "medenine",
        "--language",
        "ar",
        "--json",
    ]))
    .unwrap();
    let found = found.as_array().unwrap();
    assert!(found.len() >= 2);
    let ranks: Vec<(bool, String)> = found
        .iter()
        .map(|e| {
            (
                e["open_now"].as_bool().unwrap(),
                e["service"]["capacity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = ranks.clone();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.0));
    assert_eq!(
        ranks.iter().map(|r| r.0).collect::<Vec<_>>(),
        sorted.iter().map(|r| r.0).collect::<Vec<_>>(),
        "open now first"
    );
}

/// Posters in three languages and two sizes, checked in Chromium; stale entries marked.
fn check_posters(run: &dyn Fn(&[&str]) -> String, dir: &std::path::Path, sim: &Sim) {
    // Posters: French A4 and Arabic A3 (right to left), in headless Chromium.
    let shots = screenshot_dir();
    for (lang, size, site) in [
        ("fr", "a4", "medenine"),
        ("ar", "a3", "zarzis"),
        ("en", "a4", "medenine"),
    ] {
        let file = dir.join(format!("poster-{site}-{lang}.html"));
        run(&[
            "map",
            "poster",
            "--site",
            site,
            "--lang",
            lang,
            "--size",
            size,
            "--out",
            file.to_str().unwrap(),
        ]);
        let html = std::fs::read_to_string(&file).unwrap();
        assert!(
            html.contains(&format!("size: {}", size.to_uppercase())),
            "@page size"
        );
        let png = shots.join(format!("poster-{site}-{lang}.png"));
        let dom = chromium(&format!("file://{}", file.display()), &png, 1240, 1754);
        assert!(dom.contains(&format!(
            "dir=\"{}\"",
            if lang == "ar" { "rtl" } else { "ltr" }
        )));
        assert!(dom.contains("class=\"category\""), "sections by category");
        assert!(dom.contains("class=\"service\""), "a card per service");
        assert!(
            dom.contains(
                &sim.mechanism()
                    .unwrap()
                    .doc
                    .mechanism
                    .replace('\'', "&#39;")
            ) || dom.contains("Mécanisme")
        );
        assert!(
            std::fs::metadata(&png).unwrap().len() > 20_000,
            "a real screenshot: {}",
            png.display()
        );
        if site == "medenine" && lang == "fr" {
            assert!(
                dom.contains("Hébergement d'urgence") || dom.contains("Hébergement d&#39;urgence")
            );
        }
        if site == "zarzis" {
            assert!(
                dom.contains("ممتلئ"),
                "the full shelter is shown as full, in Arabic"
            );
        }
    }
    // Stale entries are marked.
    let file = dir.join("poster-all.html");
    run(&[
        "map",
        "poster",
        "--lang",
        "en",
        "--out",
        file.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(
        html.contains("Not verified since"),
        "stale entries are marked"
    );
    assert_eq!(html.matches("class=\"site\"").count(), 6, "a page per site");
}
