//! Steps 1 to 3 of the demo: the signed configuration, every node joining and mapping its
//! services, and the partner nodes started as daemons with a web UI account each.

use std::time::{Duration, Instant};

use anyhow::Result;
use passerelle_core::sim::Sim;
use passerelle_core::store::UserRole;

use crate::datadir::DataDir;
use crate::local_daemon::LocalDaemon;
use crate::rpc::users::Account;
use crate::rpc::{Request, StatusAnswer};
use crate::samples;

use super::{Demo, FIELD, RUNNING};

/// Step 1: the ministry's configuration, signed on the spot by two officials; returns the
/// mechanism and every node as (name, organisation).
pub(super) fn configuration(demo: &mut Demo<'_>) -> Result<(Sim, Vec<(String, String)>)> {
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
pub(super) fn join_and_map(
    demo: &mut Demo<'_>,
    sim: &Sim,
    nodes: &[(String, String)],
) -> Result<()> {
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
            && !events_have_profile(&events, org)
            && let Some(profile) = samples::profile(org)?
        {
            engine.receive(&events, now)?;
            engine.map_import(&profile, now)?;
            events = all_events(&engine)?;
        }
        if org == "mas" && name == "mas-medenine" {
            engine.receive(&events, now)?;
            for o in m.doc.organisations.iter().filter(|o| !o.runs_nodes) {
                if let Some(profile) = samples::profile(&o.id)? {
                    engine.map_import(&profile, now)?;
                }
            }
            events = all_events(&engine)?;
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
pub(super) type Login = (String, String, String, String, String);

/// Step 3: five partner nodes run, the first as the hub the others dial; each gets an account.
pub(super) async fn start_daemons(demo: &mut Demo<'_>) -> Result<Vec<Login>> {
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
        let user = name.split('-').next().unwrap_or("user").to_string();
        // The story's steps at this node are its person's, under their account's name.
        if let Some((_, d)) = demo.daemons.iter_mut().find(|(n, _)| n == name) {
            d.user.clone_from(&user);
        }
        let d = demo.daemon(name);
        let password = crate::util::generate_password();
        let request = Request::UserAdd {
            name: user.clone(),
            // Each account has its person's role: every one of them works cases (an
            // administrator's account, which manages accounts, is nobody's here).
            role: UserRole::Caseworker,
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

fn events_have_profile(events: &[passerelle_core::event::Event], org: &str) -> bool {
    events.iter().any(|e| {
        matches!(&e.header().kind, passerelle_core::event::Kind::MapChange { org: o } if o == org)
    })
}

fn all_events(
    engine: &passerelle_core::engine::Engine,
) -> Result<Vec<passerelle_core::event::Event>> {
    let mut out = Vec::new();
    for (author, _, _) in engine.store().heads()? {
        out.extend(engine.store().log_range(&author, 1, usize::MAX)?);
    }
    Ok(out)
}
