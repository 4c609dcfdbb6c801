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
use passerelle_core::engine::ReferralView;
use passerelle_core::event::{Transition, Urgency};
use passerelle_core::map::{Capacity, Entry, Profile};
use passerelle_core::report::Report;
use passerelle_core::sim::Sim;
use passerelle_core::store::UserRole;
use time::OffsetDateTime;

use crate::datadir::DataDir;
use crate::local_daemon::LocalDaemon;
use crate::rpc::case::{CaseOpened, EventMade};
use crate::rpc::map::{MapChanged, Search};
use crate::rpc::operations::{Exported, Imported};
use crate::rpc::referral::{Direction, ReferralSent, Send, StepRequest, Stepped};
use crate::rpc::users::Account;
use crate::rpc::{Request, StatusAnswer};
use crate::samples;

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

/// The story as it unfolds: where it runs, the step counter, and the running daemons.
struct Demo<'a> {
    root: &'a Path,
    now: OffsetDateTime,
    step: u32,
    daemons: Vec<(String, LocalDaemon)>,
}

impl Demo<'_> {
    fn step(&mut self, text: impl AsRef<str>) {
        step(&mut self.step, text);
    }

    /// The running daemon of a node (the hub when the name is unknown).
    fn daemon(&self, name: &str) -> &LocalDaemon {
        self.daemons
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&self.daemons[0].1, |(_, d)| d)
    }
}

async fn scenario(root: &Path, exit: bool) -> Result<()> {
    let mut demo = Demo {
        root,
        now: OffsetDateTime::now_utc(),
        step: 0,
        daemons: Vec::new(),
    };
    println!("Passerelle demo — a whole referral mechanism on this machine (loopback only).");
    println!("Working directory: {}", root.display());
    let (sim, nodes) = configuration(&mut demo)?;
    join_and_map(&mut demo, &sim, &nodes)?;
    let logins = start_daemons(&mut demo).await?;
    let referral = scenario_three(&mut demo).await?;
    follow_up(&mut demo, &referral).await?;
    shelter_and_field(&mut demo, &sim).await?;
    coordination_report(&mut demo).await?;

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
    for (_, d) in demo.daemons {
        d.stop().await?;
    }
    Ok(())
}

/// Step 1: the ministry's configuration, signed on the spot by two officials; returns the
/// mechanism and every node as (name, organisation).
fn configuration(demo: &mut Demo<'_>) -> Result<(Sim, Vec<(String, String)>)> {
    let m0 = passerelle_core::config::Mechanism::from_bytes(samples::MECHANISM.as_bytes())?;
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
    let sim = Sim::with_officials(samples::MECHANISM, 2, 2, &org_refs, &node_refs, demo.now)?;
    let m = sim.mechanism()?;
    demo.step(format!(
        "The Ministry of Social Affairs' two officials signed configuration version 1 (threshold 2): {} organisations, {} endorsed nodes, {} service categories. Mechanism id {}.",
        m.doc.organisations.len(),
        m.doc.nodes.len(),
        m.doc.taxonomy.len(),
        sim.mechanism_id().short()
    ));
    std::fs::write(demo.root.join("mechanism.signed"), sim.files[0].to_bytes())?;
    Ok((sim, nodes))
}

/// Step 2: every node joins; every organisation maps its services.
fn join_and_map(demo: &mut Demo<'_>, sim: &Sim, nodes: &[(String, String)]) -> Result<()> {
    let (root, now) = (demo.root, demo.now);
    let m = sim.mechanism()?;
    let mut events = Vec::new();
    for (name, org) in nodes {
        let dir = DataDir {
            root: root.join(name),
        };
        let node = sim.node(name)?;
        dir.materialize(&node.secrets, org, name)?;
        let mut engine = sim.engine_at(name, &dir.store_path(), true, now)?;
        let maps_here = name.ends_with("-office") || RUNNING.iter().any(|(n, _, _)| n == name);
        if maps_here
            && let Some((_, text)) = samples::PROFILES.iter().find(|(o, _)| o == org)
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
                if let Some((_, text)) = samples::PROFILES.iter().find(|(p, _)| *p == o.id) {
                    engine.map_import(&Profile::from_toml(text)?, now)?;
                }
            }
            events = all_events(&engine);
        }
    }
    // Everyone starts with the whole map (as a first sync would bring).
    for (name, _) in nodes {
        if name == FIELD.0 {
            continue;
        }
        let mut engine = sim.engine_at(name, &root.join(name).join("store.redb"), true, now)?;
        engine.receive(&events, now)?;
    }
    demo.step(format!(
        "{} nodes joined; every partner published its profile from config/profiles ({} map events).",
        nodes.len(),
        events.len()
    ));
    Ok(())
}

/// A web UI login: (address, user, password, organisation, who uses it).
type Login = (String, String, String, String, String);

/// Step 3: five partner nodes run, the first as the hub the others dial; each gets an account.
async fn start_daemons(demo: &mut Demo<'_>) -> Result<Vec<Login>> {
    let first = LocalDaemon::start(
        DataDir {
            root: demo.root.join(RUNNING[0].0),
        },
        vec![],
    )
    .await?;
    let hub_addr = first.addr.clone();
    demo.daemons.push((RUNNING[0].0.into(), first));
    for (name, _, _) in &RUNNING[1..] {
        let d = LocalDaemon::start(
            DataDir {
                root: demo.root.join(name),
            },
            vec![hub_addr.clone()],
        )
        .await?;
        demo.daemons.push((name.to_string(), d));
    }
    let mut logins = Vec::new();
    for (name, org, who) in RUNNING {
        let d = demo.daemon(name);
        let user = name.split('-').next().unwrap_or("user").to_string();
        let password = crate::util::generate_password();
        let request = Request::UserAdd {
            name: user.clone(),
            role: UserRole::Admin,
            password: password.clone(),
        };
        d.call::<Account>(request).await?;
        let url = format!("http://{}/", d.api);
        logins.push((url, user, password, org.to_string(), who.to_string()));
    }
    // Wait until everyone is connected to the hub.
    let started = Instant::now();
    loop {
        let st: StatusAnswer = demo.daemon(RUNNING[0].0).call(Request::Status).await?;
        let connected = st.network.peers.iter().filter(|p| p.connected).count();
        if connected >= RUNNING.len() - 1 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    demo.step(format!(
        "{} partner nodes run on loopback and are connected, peer to peer.",
        RUNNING.len()
    ));
    Ok(logins)
}

/// The urgent health referral for Youssef's case.
fn health_referral(case: &str) -> Request {
    Request::ReferralSend(Send {
        case: case.to_string(),
        to_org: "mdm".into(),
        category: "health".into(),
        urgency: Urgency::Urgent,
        share: ["first_name", "age", "languages", "health"]
            .map(String::from)
            .to_vec(),
        note: "needs a doctor today".into(),
        emergency_override: None,
    })
}

/// Step 4, scenario 3: the case, the status determination, the search and the referral;
/// returns the referral's id.
async fn scenario_three(demo: &mut Demo<'_>) -> Result<String> {
    let aicha = demo.daemon("mas-medenine");
    let data = Box::new(samples::youssef(demo.now));
    let case: CaseOpened = aicha.call(Request::CaseOpen { data }).await?;
    let case_id = case.case;
    let early = aicha.call::<ReferralSent>(health_referral(&case_id)).await;
    demo.step(format!(
        "Aïcha opens a case for a 16-year-old boy travelling alone, with his and his guardian's consent: case {}.",
        &case_id[..12]
    ));
    if let Err(e) = early {
        demo.step(format!(
            "A referral before status determination is refused: {e}"
        ));
    }
    determine(demo, &case_id).await?;
    let search = Search {
        category: Some("health".into()),
        site: Some("medenine".into()),
        language: Some("ar".into()),
        ..Search::default()
    };
    let hits: Vec<Entry> = demo
        .daemon("mas-medenine")
        .call(Request::MapSearch(search))
        .await?;
    demo.step(format!(
        "Aïcha searches the map for health care in Médenine in Arabic: {} services; first: {} — {}.",
        hits.len(),
        hits.first().map_or("?", |h| h.org_name.as_str()),
        hits.first().map_or("?", |h| h.service.name.en.as_str())
    ));
    let referral = loop {
        match demo
            .daemon("mas-medenine")
            .call::<ReferralSent>(health_referral(&case_id))
            .await
        {
            Ok(sent) => break sent.referral,
            Err(e) if e.to_string().contains("status determination") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    demo.step(format!(
        "Aïcha sends an urgent referral to Médecins du Monde, sharing only first name, age, language and symptoms: referral {}.",
        &referral[..12]
    ));
    Ok(referral)
}

/// The delegate's node receives the case (it is addressed to the authority) and records the
/// status determination.
async fn determine(demo: &mut Demo<'_>, case_id: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let request = Request::Determine {
            id: case_id.to_string(),
            case_type: "unaccompanied_child".into(),
            determined: true,
            note: "alone, 16, confirmed".into(),
        };
        match demo.daemon("dpe-medenine").call::<EventMade>(request).await {
            Ok(_) => break,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    demo.step(
        "The child protection delegate's node records the status determination: unaccompanied child.",
    );
    Ok(())
}

/// A step of the referral's life with a note.
fn referral_step(id: &str, transition: Transition, note: &str, outcome: Option<&str>) -> Request {
    Request::ReferralStep(StepRequest {
        id: id.to_string(),
        transition,
        reason: None,
        note: note.to_string(),
        outcome: outcome.map(str::to_string),
    })
}

/// The nurse sees the referral, takes it through its life; Aïcha and UNHCR see the outcome.
async fn follow_up(demo: &mut Demo<'_>, referral: &str) -> Result<()> {
    let sent_at = Instant::now();
    let nurse = demo.daemon("mdm-medenine");
    loop {
        let inbox: Vec<ReferralView> = nurse
            .call(Request::ReferralList {
                direction: Direction::Inbox,
                status: None,
            })
            .await?;
        if !inbox.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = sent_at.elapsed().as_millis();
    for (t, note, outcome) in [
        (Transition::Acknowledge, "seen", None),
        (Transition::Accept, "appointment at 14:00", None),
        (
            Transition::Complete,
            "seen by the doctor",
            Some("treated; follow-up in a week"),
        ),
    ] {
        nurse
            .call::<Stepped>(referral_step(referral, t, note, outcome))
            .await?;
    }
    demo.step(format!(
        "The nurse sees it in her inbox {seen} ms later; she reads only what was shared."
    ));
    demo.step("She acknowledges, accepts, and records the outcome after the visit.");
    let show = || Request::ReferralShow {
        id: referral.to_string(),
    };
    loop {
        let out: ReferralView = demo.daemon("mas-medenine").call(show()).await?;
        if out.status == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    demo.step("Aïcha sees each step. No other partner can read anything about him.");
    let started = Instant::now();
    let unhcr_view = loop {
        match demo
            .daemon("unhcr-tunis")
            .call::<ReferralView>(show())
            .await
        {
            Ok(v) if v.status == "completed" => break Some(v),
            _ if started.elapsed() > Duration::from_secs(20) => break None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    if let Some(v) = unhcr_view {
        demo.step(format!(
            "UNHCR's node holds the referral only as ciphertext (readable: {}), but counts it: {} {} referral, {}.",
            v.readable, v.urgency, v.category, v.status
        ));
    }
    Ok(())
}

/// Steps 5 and 6, scenarios 2 and 4: the Zarzis shelter fills up; the field site catches up
/// by a bundle on a USB stick, and its work comes back the same way.
async fn shelter_and_field(demo: &mut Demo<'_>, sim: &Sim) -> Result<()> {
    let full = Request::MapUpdate {
        org: None,
        service: "crt-shelter-zarzis".into(),
        capacity: Some(Capacity::Full),
        verify: true,
    };
    demo.daemon("crt-zarzis").call::<MapChanged>(full).await?;
    demo.step("The Red Crescent at Zarzis marks its shelter full; the change reaches every node.");
    let root = demo.root;
    let field_node = sim.node(FIELD.0)?.clone();
    let to_field = root.join("to-field.bundle");
    let export = Request::BundleExport {
        out: to_field.clone(),
        for_node: Some(field_node.id()),
    };
    demo.daemon("mas-medenine").call::<Exported>(export).await?;
    let (imported, field_case) = field_site(sim, &root.join(FIELD.0), &to_field, demo.now)?;
    demo.step(format!(
        "The field site at Ras Jedir, reachable by nobody, imports a bundle carried by a driver: {} events, {} new.",
        imported.events, imported.admitted
    ));
    let import = Request::BundleImport {
        path: root.join("from-field.bundle"),
    };
    let back: Imported = demo.daemon("mas-medenine").call(import).await?;
    demo.step(format!(
        "Its own work comes back the same way: {} new event(s) at Médenine, including IOM's case {} (which only IOM can read).",
        back.admitted,
        &field_case.to_hex()[..12]
    ));
    Ok(())
}

/// The field site's node, in this process: imports the bundle, opens a case, and writes a
/// bundle of everything for the way back (`from-field.bundle` beside the one it read).
fn field_site(
    sim: &Sim,
    field_dir: &Path,
    to_field: &Path,
    now: OffsetDateTime,
) -> Result<(bundle::ImportReport, passerelle_core::event::EventId)> {
    let m = sim.mechanism()?;
    let field_node = sim.node(FIELD.0)?.clone();
    let mut engine = sim.engine_at(FIELD.0, &field_dir.join("store.redb"), true, now)?;
    let input = std::io::BufReader::new(std::fs::File::open(to_field)?);
    let report = bundle::import(
        &mut engine,
        &field_node.secrets.age,
        input,
        OffsetDateTime::now_utc(),
        &mut |_, _| {},
    )?;
    let data = samples::field_case(now);
    let case = engine.open_case(data, "iom-field", OffsetDateTime::now_utc())?;
    let back = to_field.with_file_name("from-field.bundle");
    let out = std::io::BufWriter::new(std::fs::File::create(&back)?);
    bundle::export(
        &engine,
        None,
        &m.nodes().map(|x| x.recipient.clone()).collect::<Vec<_>>(),
        out,
        OffsetDateTime::now_utc(),
        &mut |_, _| {},
    )?;
    Ok((report, case))
}

/// Step 7: the coordination report.
async fn coordination_report(demo: &mut Demo<'_>) -> Result<()> {
    let request = Request::Report {
        from: whole_seconds(demo.now - time::Duration::days(1)),
        to: whole_seconds(OffsetDateTime::now_utc() + time::Duration::hours(1)),
    };
    let report: Report = demo.daemon("mas-medenine").call(request).await?;
    let gap = report
        .gaps
        .iter()
        .any(|x| x.site == "zarzis" && x.category == "mental_health");
    demo.step(format!(
        "The coordination report counts {} referral(s), acceptance {}%; the gap view shows {} mental health care in Zarzis.",
        report.referrals,
        report
            .acceptance_rate_pct
            .map_or("—".into(), |x| format!("{x:.0}")),
        if gap { "no" } else { "some" }
    ));
    Ok(())
}

/// A time to the second, as dates travel in requests.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
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
