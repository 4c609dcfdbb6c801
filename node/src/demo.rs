//! `passerelle demo`: a whole local mechanism on loopback. Two ministry officials sign the
//! configuration on the spot; every partner of the sample mechanism gets keys and a node; the
//! partner map is filled from the sample profiles; five partner nodes run as real daemons;
//! scenario 3 (identification, status determination, an urgent health referral, follow-up)
//! moves through its lifecycle through the nodes' own APIs; the Zarzis shelter fills up; a
//! field-site node nobody can reach catches up by a bundle. It prints each step and a web UI
//! address and login for each node, then runs until Ctrl-C (`--exit` stops when it is done).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use passerelle_core::bundle;
use passerelle_core::map::Profile;
use passerelle_core::sim::Sim;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::cmd_mechanism::SAMPLE_MECHANISM;
use crate::datadir::DataDir;
use crate::local_daemon::LocalDaemon;

/// The sample profiles, embedded (the demo runs from any directory).
const PROFILES: &[(&str, &str)] = &[
    ("asi", include_str!("../../config/profiles/asi.toml")),
    ("ataj", include_str!("../../config/profiles/ataj.toml")),
    (
        "clinique_sud",
        include_str!("../../config/profiles/clinique_sud.toml"),
    ),
    ("crt", include_str!("../../config/profiles/crt.toml")),
    ("dpe", include_str!("../../config/profiles/dpe.toml")),
    (
        "drs_medenine",
        include_str!("../../config/profiles/drs_medenine.toml"),
    ),
    ("inltp", include_str!("../../config/profiles/inltp.toml")),
    ("iom", include_str!("../../config/profiles/iom.toml")),
    (
        "jeunesse_sud",
        include_str!("../../config/profiles/jeunesse_sud.toml"),
    ),
    ("mas", include_str!("../../config/profiles/mas.toml")),
    ("mdm", include_str!("../../config/profiles/mdm.toml")),
    ("nour", include_str!("../../config/profiles/nour.toml")),
    ("onfp", include_str!("../../config/profiles/onfp.toml")),
    ("onm", include_str!("../../config/profiles/onm.toml")),
    (
        "savoir_pour_tous",
        include_str!("../../config/profiles/savoir_pour_tous.toml"),
    ),
    (
        "terre_ecoute",
        include_str!("../../config/profiles/terre_ecoute.toml"),
    ),
    ("unhcr", include_str!("../../config/profiles/unhcr.toml")),
    ("unicef", include_str!("../../config/profiles/unicef.toml")),
    ("wfp", include_str!("../../config/profiles/wfp.toml")),
];

/// The nodes that run as daemons: (node name, organisation, who uses it).
const RUNNING: &[(&str, &str, &str)] = &[
    (
        "mas-medenine",
        "mas",
        "Aïcha, social worker of the Ministry of Social Affairs at Médenine",
    ),
    ("dpe-medenine", "dpe", "the child protection delegate"),
    ("mdm-medenine", "mdm", "the nurse of the health partner"),
    (
        "crt-zarzis",
        "crt",
        "the Red Crescent focal point at Zarzis",
    ),
    ("unhcr-tunis", "unhcr", "UNHCR's protection officer"),
];
/// The field site nobody can reach (scenario 4).
const FIELD: (&str, &str) = ("iom-ras-jedir", "iom");

fn step(n: &mut u32, text: impl AsRef<str>) {
    *n += 1;
    println!("\n[{n}] {}", text.as_ref());
}

pub fn run(dir: Option<PathBuf>, exit: bool) -> Result<()> {
    let keep;
    let root = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            if std::fs::read_dir(&d)?.next().is_some() {
                bail!(
                    "{} is not empty: give an empty or new directory",
                    d.display()
                );
            }
            keep = None;
            d
        }
        None => {
            let t = tempfile::tempdir().context("a temporary directory for the demo")?;
            let p = t.path().to_path_buf();
            keep = Some(t);
            p
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(scenario(&root, exit));
    drop(keep);
    result
}

async fn scenario(root: &Path, exit: bool) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    let mut n = 0;
    println!("Passerelle demo — a whole referral mechanism on this machine (loopback only).");
    println!("Working directory: {}", root.display());

    // 1. The ministry's configuration, signed on the spot by two officials.
    let m0 = passerelle_core::config::Mechanism::from_bytes(SAMPLE_MECHANISM.as_bytes())?;
    let orgs: Vec<String> = m0
        .doc
        .organisations
        .iter()
        .filter(|o| o.runs_nodes)
        .map(|o| o.id.clone())
        .collect();
    let mut nodes: Vec<(String, String)> = RUNNING
        .iter()
        .map(|(n, o, _)| (n.to_string(), o.to_string()))
        .collect();
    nodes.push((FIELD.0.into(), FIELD.1.into()));
    for org in &orgs {
        if !nodes.iter().any(|(_, o)| o == org) {
            nodes.push((format!("{org}-office"), org.clone()));
        }
    }
    let org_refs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    let node_refs: Vec<(&str, &str)> = nodes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let sim = Sim::with_officials(SAMPLE_MECHANISM, 2, 2, &org_refs, &node_refs, now)?;
    let m = sim.mechanism()?;
    step(
        &mut n,
        format!(
            "The Ministry of Social Affairs' two officials signed configuration version 1 (threshold 2): {} organisations, {} endorsed nodes, {} service categories. Mechanism id {}.",
            m.doc.organisations.len(),
            m.doc.nodes.len(),
            m.doc.taxonomy.len(),
            sim.mechanism_id().short()
        ),
    );
    std::fs::write(root.join("mechanism.signed"), sim.files[0].to_bytes())?;

    // 2. Every node joins; every organisation maps its services.
    let mut events = Vec::new();
    for (name, org) in &nodes {
        let dir = DataDir {
            root: root.join(name),
        };
        let node = sim.node(name)?;
        dir.materialize(&node.secrets, org, name)?;
        let mut engine = sim.engine_at(name, &dir.store_path(), true, now)?;
        let maps_here = name.ends_with("-office") || RUNNING.iter().any(|(n, _, _)| n == name);
        if maps_here
            && let Some((_, text)) = PROFILES.iter().find(|(o, _)| o == org)
            && !events_have_profile(&events, org)
        {
            let profile = Profile::from_toml(text)?;
            engine.receive(&events, now)?;
            engine.map_import(&profile, now)?;
            events = all_events(&engine);
        }
        if org == "mas" && name == "mas-medenine" {
            engine.receive(&events, now)?;
            for o in m.doc.organisations.iter().filter(|o| !o.runs_nodes) {
                if let Some((_, text)) = PROFILES.iter().find(|(p, _)| *p == o.id) {
                    engine.map_import(&Profile::from_toml(text)?, now)?;
                }
            }
            events = all_events(&engine);
        }
    }
    // Everyone starts with the whole map (as a first sync would bring).
    for (name, _) in &nodes {
        if name == FIELD.0 {
            continue;
        }
        let mut engine = sim.engine_at(name, &root.join(name).join("store.redb"), true, now)?;
        engine.receive(&events, now)?;
    }
    step(
        &mut n,
        format!(
            "{} nodes joined; every partner published its profile from config/profiles ({} map events).",
            nodes.len(),
            events.len()
        ),
    );

    // 3. Five partner nodes run, the first as the hub the others dial.
    let mut daemons: Vec<(String, LocalDaemon)> = Vec::new();
    let first = LocalDaemon::start(
        DataDir {
            root: root.join(RUNNING[0].0),
        },
        vec![],
    )
    .await?;
    let hub_addr = first.addr.clone();
    daemons.push((RUNNING[0].0.into(), first));
    for (name, _, _) in &RUNNING[1..] {
        let d = LocalDaemon::start(
            DataDir {
                root: root.join(name),
            },
            vec![hub_addr.clone()],
        )
        .await?;
        daemons.push((name.to_string(), d));
    }
    let daemon = |name: &str| -> &LocalDaemon {
        daemons
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .unwrap_or(&daemons[0].1)
    };
    let mut logins = Vec::new();
    for (name, org, who) in RUNNING {
        let d = daemon(name);
        let user = name.split('-').next().unwrap_or("user").to_string();
        let password = crate::cmd_user::generate_password();
        d.call(json!({"op": "user_add", "name": user, "role": "admin", "password": password}))
            .await?;
        logins.push((
            format!("http://{}/", d.api),
            user,
            password,
            org.to_string(),
            who.to_string(),
        ));
    }
    // Wait until everyone is connected to the hub.
    let started = Instant::now();
    loop {
        let st = daemon(RUNNING[0].0).call(json!({"op": "status"})).await?;
        let connected = st["network"]["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|x| x["connected"] == true).count());
        if connected >= RUNNING.len() - 1 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step(
        &mut n,
        format!(
            "{} partner nodes run on loopback and are connected, peer to peer.",
            RUNNING.len()
        ),
    );

    // 4. Scenario 3.
    let aicha = daemon("mas-medenine");
    let case = aicha
        .call(json!({"op": "case_open", "data": {
            "case_type": "unaccompanied_child", "site": "medenine",
            "person": {"first_name": "Youssef", "last_name": "B.", "age": 16, "sex": "m", "nationality": "SD",
                       "languages": ["ar"], "health": "fever and cough for three days", "phone": "+216 00 000 000"},
            "needs": ["health", "shelter", "child_protection"], "vulnerabilities": ["unaccompanied"],
            "consent": {"given": true, "guardian_given": true, "guardian_name": "centre guardian",
                        "explained_by": "Aïcha", "explained": "referral to a health partner; only first name, age, language and symptoms are shared",
                        "recorded_at": passerelle_core::time_fmt::rfc3339(now)},
            "notes": "met at the centre's reception"
        }}))
        .await?;
    let case_id = case["case"].as_str().unwrap_or_default().to_string();
    step(
        &mut n,
        format!(
            "Aïcha opens a case for a 16-year-old boy travelling alone, with his and his guardian's consent: case {}.",
            &case_id[..12]
        ),
    );
    let early = aicha
        .call(json!({"op": "referral_send", "case": case_id, "to_org": "mdm", "category": "health", "urgency": "urgent",
                     "share": ["first_name", "age", "languages", "health"], "note": "needs a doctor today", "emergency_override": null}))
        .await;
    if let Err(e) = early {
        step(
            &mut n,
            format!("A referral before status determination is refused: {e}"),
        );
    }
    // The delegate's node receives the case (it is addressed to the authority) and records it.
    let started = Instant::now();
    loop {
        match daemon("dpe-medenine")
            .call(json!({"op": "determine", "id": case_id, "case_type": "unaccompanied_child", "determined": true, "note": "alone, 16, confirmed"}))
            .await
        {
            Ok(_) => break,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    step(
        &mut n,
        "The child protection delegate's node records the status determination: unaccompanied child.",
    );
    let search = aicha
        .call(json!({"op": "map_search", "category": "health", "site": "medenine", "language": "ar", "open_now": false, "capacity": null, "org": null}))
        .await?;
    let first_hit = search
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null);
    step(
        &mut n,
        format!(
            "Aïcha searches the map for health care in Médenine in Arabic: {} services; first: {} — {}.",
            search.as_array().map_or(0, Vec::len),
            first_hit["org_name"].as_str().unwrap_or("?"),
            first_hit["service"]["name"]["en"].as_str().unwrap_or("?")
        ),
    );
    let referral = loop {
        match aicha
            .call(json!({"op": "referral_send", "case": case_id, "to_org": "mdm", "category": "health", "urgency": "urgent",
                         "share": ["first_name", "age", "languages", "health"], "note": "needs a doctor today", "emergency_override": null}))
            .await
        {
            Ok(v) => break v["referral"].as_str().unwrap_or_default().to_string(),
            Err(e) if e.to_string().contains("status determination") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let sent_at = Instant::now();
    step(
        &mut n,
        format!(
            "Aïcha sends an urgent referral to Médecins du Monde, sharing only first name, age, language and symptoms: referral {}.",
            &referral[..12]
        ),
    );
    let nurse = daemon("mdm-medenine");
    loop {
        let inbox = nurse
            .call(json!({"op": "referral_list", "direction": "inbox", "status": null}))
            .await?;
        if inbox.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step(
        &mut n,
        format!(
            "The nurse sees it in her inbox {} ms later; she reads only what was shared.",
            sent_at.elapsed().as_millis()
        ),
    );
    for (t, note) in [("acknowledge", "seen"), ("accept", "appointment at 14:00")] {
        nurse
            .call(json!({"op": "referral_step", "id": referral, "transition": t, "reason": null, "note": note, "outcome": null}))
            .await?;
    }
    nurse
        .call(json!({"op": "referral_step", "id": referral, "transition": "complete", "reason": null, "note": "seen by the doctor", "outcome": "treated; follow-up in a week"}))
        .await?;
    step(
        &mut n,
        "She acknowledges, accepts, and records the outcome after the visit.",
    );
    loop {
        let out = aicha
            .call(json!({"op": "referral_show", "id": referral}))
            .await?;
        if out["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step(
        &mut n,
        "Aïcha sees each step. No other partner can read anything about him.",
    );
    let started = Instant::now();
    let unhcr_view = loop {
        match daemon("unhcr-tunis")
            .call(json!({"op": "referral_show", "id": referral}))
            .await
        {
            Ok(v) if v["status"] == "completed" => break Some(v),
            _ if started.elapsed() > Duration::from_secs(20) => break None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    if let Some(v) = unhcr_view {
        step(
            &mut n,
            format!(
                "UNHCR's node holds the referral only as ciphertext (readable: {}), but counts it: {} {} referral, {}.",
                v["readable"],
                v["urgency"].as_str().unwrap_or(""),
                v["category"].as_str().unwrap_or(""),
                v["status"].as_str().unwrap_or("")
            ),
        );
    }

    // 5. Scenario 2: the Zarzis shelter fills up.
    daemon("crt-zarzis")
        .call(json!({"op": "map_update", "org": null, "service": "crt-shelter-zarzis", "capacity": "full", "verify": true}))
        .await?;
    step(
        &mut n,
        "The Red Crescent at Zarzis marks its shelter full; the change reaches every node.",
    );

    // 6. Scenario 4: the field site catches up by a bundle on a USB stick.
    let field_dir = root.join(FIELD.0);
    let field_node = sim.node(FIELD.0)?.clone();
    let to_field = root.join("to-field.bundle");
    aicha
        .call(json!({"op": "bundle_export", "out": to_field, "for_node": field_node.id().to_string()}))
        .await?;
    let (imported, field_case) = {
        let mut engine = sim.engine_at(FIELD.0, &field_dir.join("store.redb"), true, now)?;
        let input = std::io::BufReader::new(std::fs::File::open(&to_field)?);
        let report = bundle::import(
            &mut engine,
            &field_node.secrets.age,
            input,
            OffsetDateTime::now_utc(),
            &mut |_, _| {},
        )?;
        let data: passerelle_core::payload::CaseData = serde_json::from_value(json!({
            "case_type": "general", "site": "ras_jedir",
            "person": {"first_name": "Amadou", "age": 31, "languages": ["fr", "bm"]},
            "needs": ["avrr"], "consent": {"given": true, "explained_by": "IOM field team", "recorded_at": passerelle_core::time_fmt::rfc3339(now)}
        }))?;
        let case = engine.open_case(data, "iom-field", OffsetDateTime::now_utc())?;
        let back = root.join("from-field.bundle");
        let out = std::io::BufWriter::new(std::fs::File::create(&back)?);
        bundle::export(
            &engine,
            None,
            &m.nodes().map(|x| x.recipient.clone()).collect::<Vec<_>>(),
            out,
            OffsetDateTime::now_utc(),
            &mut |_, _| {},
        )?;
        (report, case)
    };
    step(
        &mut n,
        format!(
            "The field site at Ras Jedir, reachable by nobody, imports a bundle carried by a driver: {} events, {} new.",
            imported.events, imported.admitted
        ),
    );
    let back = aicha
        .call(json!({"op": "bundle_import", "path": root.join("from-field.bundle")}))
        .await?;
    step(
        &mut n,
        format!(
            "Its own work comes back the same way: {} new event(s) at Médenine, including IOM's case {} (which only IOM can read).",
            back["admitted"],
            &field_case.to_hex()[..12]
        ),
    );

    // 7. The coordination report.
    let report = aicha
        .call(json!({"op": "report", "from": passerelle_core::time_fmt::rfc3339(now - time::Duration::days(1)), "to": passerelle_core::time_fmt::rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(1))}))
        .await?;
    let gap = report["gaps"].as_array().is_some_and(|g| {
        g.iter()
            .any(|x| x["site"] == "zarzis" && x["category"] == "mental_health")
    });
    step(
        &mut n,
        format!(
            "The coordination report counts {} referral(s), acceptance {}%; the gap view shows {} mental health care in Zarzis.",
            report["referrals"],
            report["acceptance_rate_pct"]
                .as_f64()
                .map_or("—".into(), |x| format!("{x:.0}")),
            if gap { "no" } else { "some" }
        ),
    );

    println!("\nThe web UI of each running node (log in with the account shown):");
    for (url, user, password, org, who) in &logins {
        println!("  {url:<28} user {user:<8} password {password}   ({org}: {who})");
    }
    println!(
        "Posters: open a node's UI, then Posters. Commands: passerelle --data-dir {}/mas-medenine status",
        root.display()
    );
    if exit {
        println!("\nDemo finished (--exit).");
    } else {
        println!("\nThe mechanism keeps running. Press Ctrl-C to stop it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    for (_, d) in daemons {
        d.stop().await?;
    }
    Ok(())
}

fn events_have_profile(events: &[passerelle_core::event::Event], org: &str) -> bool {
    events.iter().any(|e| {
        matches!(&e.header().kind, passerelle_core::event::Kind::MapChange { org: o } if o == org)
    })
}

fn all_events(engine: &passerelle_core::engine::Engine) -> Vec<passerelle_core::event::Event> {
    let mut out = Vec::new();
    for (author, _, _) in engine.store().heads().unwrap_or_default() {
        out.extend(
            engine
                .store()
                .log_range(&author, 1, usize::MAX)
                .unwrap_or_default(),
        );
    }
    out
}
