//! Issue 10: attacks by a malicious member, an outsider with a bundle and a tampered backup,
//! replayed through the real paths (sync between daemons, `bundle import`, `restore`), with
//! what must hold afterwards: the node keeps serving, the event is judged or refused with a
//! reason, nothing else changes.

use std::path::Path;

use passerelle_core::config::Mechanism;
use passerelle_core::engine::Engine;
use passerelle_core::event::{Event, EventId, Hlc, Kind};
use passerelle_core::keyfiles::NodeSecrets;
use passerelle_core::sim::{Forger, SimNode};
use passerelle_core::store::Store;

use passerelle_tests::{Daemon, Setup, mechanism, wait_for};

/// The secrets of a node of the setup, read from its data directory (unprotected in tests).
fn secrets(setup: &Setup, node: &str) -> NodeSecrets {
    let bytes = std::fs::read(setup.file(&format!("node-{node}/node.key"))).unwrap();
    let text = passerelle_core::keyfiles::open(&bytes, None).unwrap();
    NodeSecrets::from_text(&text).unwrap()
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Signs events as node `node` of organisation `org` — what a malicious member's own node can
/// do with its key — chained after its log's head, and puts them in its own log (admitted like
/// any received event: the fold marks what breaks a rule), so its daemon syncs them.
fn forge_as(
    setup: &Setup,
    node: &str,
    org: &str,
    make: impl FnOnce(&mut Forger, &Mechanism) -> Vec<Event>,
) -> Vec<Event> {
    let secrets = secrets(setup, node);
    let store = Store::open(&setup.file(&format!("node-{node}/store.redb"))).unwrap();
    let m = store.config().current().unwrap().as_ref().clone();
    let sim_node = SimNode {
        name: node.into(),
        org: org.into(),
        secrets: secrets.clone(),
    };
    let mut forger = Forger::new(&sim_node, m.hash, m.doc.version, now());
    if let Some((seq, id, _)) = store.head(&sim_node.key()).unwrap() {
        forger.seq = seq;
        forger.prev = Some(id);
    }
    forger.hlc = Hlc {
        ms: forger.hlc.ms.max(store.hlc_seen().ms + 1),
        counter: 0,
    };
    let events = make(&mut forger, &m);
    let mut engine = Engine::open(store, secrets, org).unwrap();
    let report = engine.receive(&events, now()).unwrap();
    assert_eq!(
        report.admitted.len(),
        events.len(),
        "forged events not admitted in the forger's own log: {report:?}"
    );
    events
}

/// The bodies that once made automerge panic inside the fold.
fn automerge_crashers() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fuzz/crashers/automerge");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// The fold's verdict on each event, read from a stopped node's store.
fn verdicts(setup: &Setup, node: &str, ids: &[EventId]) -> Vec<Option<String>> {
    let store = Store::open(&setup.file(&format!("node-{node}/store.redb"))).unwrap();
    ids.iter()
        .map(|id| {
            let verdict = store.verdict(id).unwrap();
            verdict.map(|v| {
                v.broken
                    .map(|r| r.code().to_string())
                    .unwrap_or_else(|| "valid".into())
            })
        })
        .collect()
}

/// GET /api/v1/health on a running daemon.
fn health(daemon: &Daemon) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{}/api/v1/health", daemon.api))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// Issue 10, item 1: a member's map events whose bodies make automerge panic, sent over sync
/// and in a bundle, are judged invalid with their rule on every node; the receiving daemon
/// keeps serving (health, status, a new case), and an honest change made afterwards by the
/// same organisation still applies everywhere.
#[test]
fn map_bodies_that_panic_automerge_are_judged_invalid_over_sync_and_bundle() {
    let setup = mechanism(
        &["mas", "crt"],
        &[("mas1", "mas"), ("crt1", "crt"), ("mas2", "mas")],
        &[],
    );
    let bodies = automerge_crashers();
    assert!(bodies.len() >= 9);
    let forged = forge_as(&setup, "crt1", "crt", |forger, m| {
        bodies
            .iter()
            .map(|body| {
                forger
                    .next(
                        m,
                        Kind::MapChange { org: "crt".into() },
                        None,
                        vec![],
                        &[],
                        body,
                    )
                    .unwrap()
            })
            .collect()
    });
    let ids: Vec<EventId> = forged.iter().map(Event::id).collect();

    // Over sync: the victim's daemon receives the whole log of the malicious member.
    let crt1 = Daemon::start(setup.path(), "crt1", &[], &[]);
    let mas1 = Daemon::start(setup.path(), "mas1", &[&crt1.addr], &[]);
    let want = forged.len() as u64;
    wait_for(60, "mas1 to receive the forged map events", || {
        (setup.status("mas1")["events"].as_u64() >= Some(want)).then_some(())
    });
    let (code, body) = health(&mas1);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["engine"], "running", "{body}");
    setup.open_case("mas1", "Amal", "general");
    // An honest profile published by the same organisation afterwards still applies.
    let profile = format!("{}/../config/profiles/crt.toml", env!("CARGO_MANIFEST_DIR"));
    setup
        .node_run("crt1", &["map", "import", &profile])
        .expect_ok();
    wait_for(60, "mas1 to see crt's honest profile", || {
        let out = setup.node_json("mas1", &["map", "show", "--org", "crt", "--json"]);
        (!out.as_array()?.is_empty()).then_some(())
    });
    mas1.stop();
    crt1.stop();
    for (id, verdict) in ids.iter().zip(verdicts(&setup, "mas1", &ids)) {
        let verdict = verdict.unwrap_or_else(|| panic!("{} not folded", id.short()));
        assert!(
            verdict == "bad_payload" || verdict == "map_wrong_actor",
            "{}: {verdict}",
            id.short()
        );
    }

    // By bundle: a node that never met the member imports everything it published.
    let mas2_id = setup.status("mas2")["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    setup
        .node_run(
            "crt1",
            &[
                "bundle",
                "export",
                "--out",
                "../all.bundle",
                "--for",
                &mas2_id,
            ],
        )
        .expect_ok();
    setup
        .node_run("mas2", &["bundle", "import", "../all.bundle"])
        .expect_ok();
    let mas2 = Daemon::start(setup.path(), "mas2", &[], &[]);
    assert_eq!(health(&mas2).0, 200);
    setup.open_case("mas2", "Samir", "general");
    mas2.stop();
    let on_mas2 = verdicts(&setup, "mas2", &ids);
    let on_mas1 = verdicts(&setup, "mas1", &ids);
    assert_eq!(
        on_mas1, on_mas2,
        "the two nodes judged the bodies differently"
    );
}
