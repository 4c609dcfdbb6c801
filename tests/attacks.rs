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
    let bundle = setup.file("all.bundle").to_string_lossy().into_owned();
    let mas2_id = setup.status("mas2")["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    setup
        .node_run(
            "crt1",
            &["bundle", "export", "--out", &bundle, "--for", &mas2_id],
        )
        .expect_ok();
    setup
        .node_run("mas2", &["bundle", "import", &bundle])
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

/// Writes an unsigned configuration version 2 (the next document as `mechanism next` makes it,
/// with an attacker's own text appended) straight into a node database's configuration table,
/// as someone holding the file could.
fn plant_unsigned_version(setup: &Setup, db: &Path) {
    setup.next("v1.signed", "v2.toml");
    let document = setup.read("v2.toml");
    let file = passerelle_core::config::chain::SignedFile::new(document);
    let db = redb::Database::open(db).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("config-1");
        let mut table = tx.open_table(table).unwrap();
        table.insert(2, file.to_bytes().as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

/// Issue 10, item 3: a backup altered after it was made — an unsigned configuration version
/// planted in it — is refused by `restore`, and nothing changes; a database altered on disk the
/// same way is refused when the node opens it, naming the version that does not verify.
#[test]
fn a_tampered_backup_or_database_never_puts_an_unsigned_configuration_in_force() {
    let setup = mechanism(&["mas"], &[("mas1", "mas")], &[]);
    setup.open_case("mas1", "Amal", "general");
    let path = |name: &str| setup.file(name).to_string_lossy().into_owned();
    setup
        .node_run("mas1", &["backup", "--out", &path("mas1.backup")])
        .expect_ok();
    // The backup on the USB stick: header and signature, then the database.
    let sealed = std::fs::read(setup.file("mas1.backup")).unwrap();
    let header = passerelle_core::store::BACKUP_MAGIC.len() + 64;
    setup.write_bytes("inner.redb", &sealed[header..]);
    plant_unsigned_version(&setup, &setup.file("inner.redb"));
    let mut tampered = sealed[..header].to_vec();
    tampered.extend_from_slice(&std::fs::read(setup.file("inner.redb")).unwrap());
    setup.write_bytes("tampered.backup", &tampered);
    let cases_before = setup.node_json("mas1", &["case", "list", "--json"]);
    setup
        .node_run("mas1", &["restore", &path("tampered.backup")])
        .expect_refused("altered");
    // The bare database, without the signature: not a backup at all.
    setup
        .node_run("mas1", &["restore", &path("inner.redb")])
        .expect_refused("not a Passerelle backup");
    assert_eq!(setup.status("mas1")["config_version"], 1);
    assert_eq!(
        setup.node_json("mas1", &["case", "list", "--json"]),
        cases_before,
        "a refused restore changed the node's cases"
    );
    assert!(
        !setup.file("node-mas1/store.redb.restoring").exists(),
        "a refused restore left its file"
    );
    // The untouched backup restores.
    setup
        .node_run("mas1", &["restore", &path("mas1.backup")])
        .expect_ok();
    assert_eq!(setup.status("mas1")["config_version"], 1);

    // The same version planted in the live database while the node is stopped.
    plant_unsigned_version(&setup, &setup.file("node-mas1/store.redb"));
    setup
        .node_run("mas1", &["status"])
        .expect_refused("configuration version 2 stored in the node's database does not verify");
}

/// Issue 10, item 2: an outsider's bundle carrying one event ten years ahead is refused ("not
/// an endorsed node"), and it does not move the running node's clock: the caseworker's next
/// case is admitted at once, not held back as "from the future".
#[test]
fn a_refused_event_from_the_future_does_not_move_the_clock() {
    let setup = mechanism(&["mas"], &[("mas1", "mas")], &[]);
    // The outsider has the genesis (it is handed around) and keys of its own, endorsed by no one.
    setup
        .run(&[
            "--data-dir",
            "node-outsider",
            "init",
            "--org",
            "mas",
            "--label",
            "outsider",
        ])
        .expect_ok();
    let outsider = SimNode {
        name: "outsider".into(),
        org: "mas".into(),
        secrets: secrets(&setup, "outsider"),
    };
    let genesis = passerelle_core::config::chain::SignedFile::from_bytes(
        &std::fs::read(setup.file("v1.signed")).unwrap(),
    )
    .unwrap();
    let m = genesis.mechanism().unwrap();
    let ten_years = time::Duration::days(3653);
    let mut forger = Forger::new(&outsider, m.hash, 1, now() + ten_years);
    let future = forger
        .next(
            &m,
            Kind::MapChange { org: "mas".into() },
            None,
            vec![],
            &[],
            b"anything",
        )
        .unwrap();
    let node: toml::Value = toml::from_str(&setup.read("node-mas1/node.toml")).unwrap();
    let recipient: age::x25519::Recipient = node["recipient"].as_str().unwrap().parse().unwrap();
    let path = setup.file("outsider.bundle");
    passerelle_core::bundle::write_events(
        std::fs::File::create(&path).unwrap(),
        m.hash,
        &outsider.secrets.signing.public().node_id().to_string(),
        vec![genesis.to_bytes()],
        &[future],
        &[recipient],
        now(),
    )
    .unwrap();

    let daemon = Daemon::start(setup.path(), "mas1", &[], &[]);
    let out = setup
        .node_run("mas1", &["bundle", "import", &path.to_string_lossy()])
        .expect_ok();
    assert!(
        out.stdout.contains("not an endorsed node"),
        "{}",
        out.stdout
    );
    setup.open_case("mas1", "Amal", "general");
    let status = setup.status("mas1");
    assert_eq!(status["events"], 1, "{status}");
    assert_eq!(status["held_back"], 0, "{status}");
    daemon.stop();
}

/// Issue 10, item 4: outsiders flood the hold with events claiming a configuration version
/// this node does not have (signed by keys nobody endorsed). Only a few per key and a few
/// thousand in all wait; the rest are refused with a reason; the node's own work and an honest
/// member's bundle go through as usual.
#[test]
fn outsiders_cannot_fill_the_hold_and_honest_batches_still_pass() {
    let setup = mechanism(&["mas", "crt"], &[("mas1", "mas"), ("crt1", "crt")], &[]);
    let genesis = passerelle_core::config::chain::SignedFile::from_bytes(
        &std::fs::read(setup.file("v1.signed")).unwrap(),
    )
    .unwrap();
    let m = genesis.mechanism().unwrap();
    // 80 keys of nobody's, 100 events each, all claiming version 2.
    let mut flood = Vec::new();
    for k in 0..80 {
        let stranger = SimNode {
            name: format!("stranger{k}"),
            org: "mas".into(),
            secrets: NodeSecrets::generate(),
        };
        let mut forger = Forger::new(&stranger, m.hash, 2, now());
        for _ in 0..100 {
            flood.push(
                forger
                    .next(
                        &m,
                        Kind::MapChange { org: "mas".into() },
                        None,
                        vec![],
                        &[],
                        b"x",
                    )
                    .unwrap(),
            );
        }
    }
    let node: toml::Value = toml::from_str(&setup.read("node-mas1/node.toml")).unwrap();
    let recipient: age::x25519::Recipient = node["recipient"].as_str().unwrap().parse().unwrap();
    let path = setup.file("flood.bundle");
    passerelle_core::bundle::write_events(
        std::fs::File::create(&path).unwrap(),
        m.hash,
        "anyone",
        vec![genesis.to_bytes()],
        &flood,
        &[recipient],
        now(),
    )
    .unwrap();
    let out = setup
        .node_run("mas1", &["bundle", "import", &path.to_string_lossy()])
        .expect_ok();
    assert!(out.stdout.contains("too many events"), "{}", out.stdout);
    let held = setup.status("mas1")["held_back"].as_u64().unwrap();
    assert!(
        held <= passerelle_core::limits::HELD_STRANGERS_MAX,
        "{held} events held from strangers"
    );
    assert!(held <= 80 * passerelle_core::limits::HELD_PER_STRANGER_MAX);
    assert!(
        held > 0,
        "events of a version still to come are held, within bounds"
    );

    // The node's own work and an honest member's bundle go through.
    setup.open_case("mas1", "Amal", "general");
    let profile = format!("{}/../config/profiles/crt.toml", env!("CARGO_MANIFEST_DIR"));
    setup
        .node_run("crt1", &["map", "import", &profile])
        .expect_ok();
    let mas1_id = setup.status("mas1")["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let honest = setup.file("honest.bundle").to_string_lossy().into_owned();
    setup
        .node_run(
            "crt1",
            &["bundle", "export", "--out", &honest, "--for", &mas1_id],
        )
        .expect_ok();
    let out = setup
        .node_run("mas1", &["bundle", "import", &honest])
        .expect_ok();
    assert!(out.stdout.contains("1 new"), "{}", out.stdout);
    assert_eq!(setup.status("mas1")["events"], 2);
}

/// Issue 10, item 13: with `RUST_LOG=trace`, a command talking to the daemon prints neither
/// the API token nor the body it sends (a person's name); issue 10, item 11: `bundle export`
/// never writes through a link planted at its output's name or its old partial name, and the
/// bundle is readable by its owner alone.
#[test]
fn trace_logs_carry_no_secret_and_exports_follow_no_planted_link() {
    let setup = mechanism(&["mas"], &[("mas1", "mas")], &[]);
    let daemon = Daemon::start(setup.path(), "mas1", &[], &[]);
    setup.write(
        "case-secret.json",
        &serde_json::json!({
            "case_type": "general", "site": "medenine",
            "person": {"first_name": "Zoubeida-Unique-Name", "languages": ["ar"]},
            "needs": ["shelter"],
            "consent": {"given": true, "explained_by": "Aïcha", "recorded_at": "2026-11-27T09:00:00Z"}
        })
        .to_string(),
    );
    let out = passerelle_tests::run_env(
        setup.path(),
        &[
            "--data-dir",
            "node-mas1",
            "--user",
            "tester",
            "case",
            "open",
            "--from",
            "case-secret.json",
        ],
        &[("RUST_LOG", "trace")],
    )
    .expect_ok();
    let token = daemon.token();
    assert!(token.len() >= 32);
    assert!(!out.stderr.contains(&token), "the token reached the log");
    assert!(
        !out.stderr.contains("Zoubeida-Unique-Name"),
        "the request body reached the log"
    );

    // A link planted where the export writes, pointing at a file the attacker wants destroyed.
    let victim = setup.file("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let out_path = setup.file("out.bundle");
    std::os::unix::fs::symlink(&victim, setup.file("out.partial")).unwrap();
    let mas1_id = setup.status("mas1")["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out_text = out_path.to_string_lossy().into_owned();
    setup
        .node_run(
            "mas1",
            &["bundle", "export", "--out", &out_text, "--for", &mas1_id],
        )
        .expect_ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the bundle is readable by others: {mode:o}");
    // A link at the output name itself: refused.
    let linked = setup.file("linked.bundle");
    std::os::unix::fs::symlink(&victim, &linked).unwrap();
    setup
        .node_run(
            "mas1",
            &[
                "bundle",
                "export",
                "--out",
                &linked.to_string_lossy(),
                "--for",
                &mas1_id,
            ],
        )
        .expect_refused("already exists");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    daemon.stop();
}
