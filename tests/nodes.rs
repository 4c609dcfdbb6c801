//! Real daemons on loopback (`passerelle run`), driven by the real command line: referrals
//! flow between organisations and bystanders hold only ciphertext; keys reach a new node over
//! the network; stopped, unreachable, removed, foreign and restored nodes behave.

use passerelle_tests::{Daemon, ReferralSend, Setup, mechanism, wait_for};
use serde_json::Value;

fn node_id(setup: &Setup, name: &str) -> String {
    setup
        .node_run(name, &["id"])
        .expect_ok()
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn list(setup: &Setup, name: &str, args: &[&str]) -> Vec<Value> {
    setup
        .node_json(name, args)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn status(setup: &Setup, name: &str) -> Value {
    setup.node_json(name, &["status", "--json"])
}

fn connected_peers(setup: &Setup, name: &str) -> Vec<String> {
    status(setup, name)["network"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"].as_bool() == Some(true))
        .filter_map(|p| p["label"].as_str().map(str::to_string))
        .collect()
}

/// Accepted: still waiting for the receiver, so in the open list, and not in another status.
/// Then the nurse completes it: aïcha sees it completed, and no longer open.
fn the_open_list_holds_it_until_completed(setup: &Setup, referral: &str) {
    let open = list(setup, "nurse", &["referral", "list", "--open", "--json"]);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["status"], "accepted");
    let sent = [
        "referral", "list", "--status", "sent", "--limit", "5", "--json",
    ];
    assert!(list(setup, "nurse", &sent).is_empty());
    assert_eq!(
        setup
            .node_run("nurse", &["referral", "list", "--open", "--status", "sent"])
            .code,
        Some(2),
        "--open and --status together are refused"
    );
    let complete = [
        "referral",
        "complete",
        &referral[..12],
        "--outcome",
        "treated",
    ];
    setup.node_run("nurse", &complete).expect_ok();
    wait_for(30, "aicha to see the referral completed", || {
        let l = list(setup, "aicha", &["referral", "list", "--outbox", "--json"]);
        (l.first().and_then(|r| r["status"].as_str()) == Some("completed")).then_some(())
    });
    assert!(
        list(setup, "aicha", &["referral", "list", "--open", "--json"]).is_empty(),
        "a completed referral is no longer open"
    );
}

fn send_referral(setup: &Setup, node: &str, case: &str) -> String {
    let referral = ReferralSend::new(&case[..12], "mdm", "health")
        .urgency("urgent")
        .share("first_name,age,languages,health")
        .note("needs a doctor today");
    setup
        .send_referral(node, &referral)
        .expect_ok()
        .stdout
        .trim()
        .to_string()
}

#[test]
fn referrals_flow_between_daemons_and_bystanders_hold_only_ciphertext() {
    let setup = mechanism(
        &["mas", "mdm", "iom"],
        &[
            ("aicha", "mas"),
            ("aicha2", "mas"),
            ("nurse", "mdm"),
            ("iom1", "iom"),
        ],
        &["aicha2"],
    );
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let others: Vec<Daemon> = ["aicha2", "nurse", "iom1"]
        .iter()
        .map(|n| Daemon::start(setup.path(), n, &[&hub.addr], &[]))
        .collect();
    wait_for(30, "all peers connected to aicha", || {
        (connected_peers(&setup, "aicha").len() == 3).then_some(())
    });

    let case = setup.open_case("aicha", "Youssef", "general");
    let referral = send_referral(&setup, "aicha", &case);
    let inbox = wait_for(30, "the referral in the nurse's inbox", || {
        let l = list(&setup, "nurse", &["referral", "list", "--inbox", "--json"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(inbox[0]["id"], Value::String(referral.clone()));
    assert_eq!(inbox[0]["readable"], Value::Bool(true));
    assert_eq!(inbox[0]["shared"]["first_name"], "Youssef");
    assert!(
        inbox[0]["shared"].get("phone").is_none(),
        "only the fields shared"
    );

    for step in ["ack", "accept"] {
        setup
            .node_run("nurse", &["referral", step, &referral[..12]])
            .expect_ok();
    }
    the_open_list_holds_it_until_completed(&setup, &referral);

    // The bystander holds every event but reads nothing. It waits for the completion itself:
    // a count of events would also count a key share, and could pass before it arrives.
    let seen = wait_for(30, "the bystander to hold the completion", || {
        let out = setup.node_run("iom1", &["referral", "show", &referral[..12], "--json"]);
        let seen: Value = serde_json::from_str(&out.stdout).ok()?;
        (seen["status"] == "completed").then_some(seen)
    });
    assert_eq!(seen["readable"], Value::Bool(false));
    assert_eq!(
        seen["status"], "completed",
        "the clear facts are known for indicators"
    );
    assert!(list(&setup, "iom1", &["case", "list", "--json"]).is_empty());
    assert!(setup.node_run("iom1", &["case", "show", &case[..12]]).code == Some(1));

    // aicha2 joined mas without its keys: another mas node shared them over the network.
    let cases = wait_for(30, "aicha2 to read mas's case after the key share", || {
        let l = list(&setup, "aicha2", &["case", "list", "--json"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(cases[0]["name"], "Youssef");
    assert_eq!(
        status(&setup, "aicha2")["org_key_epochs"],
        serde_json::json!([1])
    );

    // Every view of decrypted data was audited, with the user.
    let audit = list(&setup, "nurse", &["audit", "--json"]);
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "referral.list" && e["user"] == "tester")
    );
    drop(others);
}

#[test]
fn a_stopped_node_catches_up_after_restart() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let case = setup.open_case("aicha", "Amina", "general");
    send_referral(&setup, "aicha", &case);
    wait_for(30, "the first referral", || {
        (list(&setup, "nurse", &["referral", "list", "--inbox", "--json"]).len() == 1).then_some(())
    });
    nurse.stop();
    for name in ["Bakary", "Chioma", "Dawit"] {
        let case = setup.open_case("aicha", name, "general");
        send_referral(&setup, "aicha", &case);
    }
    // While stopped, the nurse's node works offline on what it has.
    assert_eq!(
        list(&setup, "nurse", &["referral", "list", "--inbox", "--json"]).len(),
        1
    );
    let _nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    wait_for(30, "the nurse to catch up", || {
        (list(&setup, "nurse", &["referral", "list", "--inbox", "--json"]).len() == 4).then_some(())
    });
}

#[test]
fn a_node_reachable_by_nobody_catches_up_by_bundle_and_bad_bundles_lose_nothing() {
    let setup = mechanism(
        &["mas", "mdm"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("field", "mas")],
        &[],
    );
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let _nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let case = setup.open_case("aicha", "Fatou", "general");
    send_referral(&setup, "aicha", &case);
    // The field node runs alone: nobody can reach it.
    let field = Daemon::start(setup.path(), "field", &[], &[]);
    let field_id = node_id(&setup, "field");
    setup
        .node_run(
            "aicha",
            &[
                "bundle",
                "export",
                "--out",
                "to-field.bundle",
                "--for",
                &field_id,
            ],
        )
        .expect_ok();
    let report = setup
        .node_run("field", &["bundle", "import", "to-field.bundle"])
        .expect_ok();
    // The case, the referral, and aicha's key share for the field node.
    assert!(
        report.stdout.contains("3 events, 3 new, 0 already here"),
        "{}",
        report.stdout
    );
    let again = setup
        .node_run("field", &["bundle", "import", "to-field.bundle"])
        .expect_ok();
    assert!(
        again.stdout.contains("3 events, 0 new, 3 already here"),
        "idempotent: {}",
        again.stdout
    );
    assert_eq!(list(&setup, "field", &["case", "list", "--json"]).len(), 1);

    // The field site works offline and sends its news back the same way.
    let field_case = setup.open_case("field", "Grace", "general");
    setup
        .node_run("field", &["bundle", "export", "--out", "from-field.bundle"])
        .expect_ok();
    drop(field);
    let bytes = std::fs::read(setup.file("from-field.bundle")).unwrap_or_default();
    let before = status(&setup, "aicha")["events"].as_u64().unwrap_or(0);

    // A tampered bundle: one byte changed in the ciphertext.
    let mut tampered = bytes.clone();
    let i = tampered.len() - 40;
    tampered[i] ^= 0x01;
    setup.write_bytes("tampered.bundle", &tampered);
    setup
        .node_run("aicha", &["bundle", "import", "tampered.bundle"])
        .expect_refused("damaged");
    // A truncated one.
    setup.write_bytes("truncated.bundle", &bytes[..bytes.len() / 2]);
    setup
        .node_run("aicha", &["bundle", "import", "truncated.bundle"])
        .expect_refused("damaged");
    // Garbage.
    setup.write("garbage.bundle", "not a bundle at all");
    setup
        .node_run("aicha", &["bundle", "import", "garbage.bundle"])
        .expect_refused("not a Passerelle bundle");
    let after = status(&setup, "aicha")["events"].as_u64().unwrap_or(0);
    assert!(after >= before, "nothing already stored was lost");

    setup
        .node_run("aicha", &["bundle", "import", "from-field.bundle"])
        .expect_ok();
    let cases = list(&setup, "aicha", &["case", "list", "--json"]);
    assert!(
        cases
            .iter()
            .any(|c| c["id"] == Value::String(field_case.clone()))
    );
}

/// Issue 15: beside a running daemon, `mechanism next` asks it how far it holds the removed
/// node's log, and proposes that as the cut-off.
fn mechanism_next_asks_the_daemon_for_the_cutoff(setup: &Setup, iom1: &str) {
    let _ = setup.open_case("iom1", "Amal", "general");
    let held = wait_for(30, "iom1's case at the hub", || {
        let st = status(setup, "aicha");
        st["sync"]["vector"]
            .as_array()?
            .iter()
            .find(|e| e["node"] == iom1)
            .and_then(|e| e["seq"].as_u64())
            .filter(|seq| *seq >= 1)
    });
    let proposed = setup
        .run(&[
            "--data-dir",
            "node-aicha",
            "mechanism",
            "next",
            "v1.signed",
            "--remove-node",
            iom1,
            "--out",
            "v2-proposed.toml",
        ])
        .expect_ok();
    assert!(
        proposed.stderr.contains(&format!(
            "Cut-off for {iom1}: sequence {held}, from this node's view"
        )),
        "{}",
        proposed.stderr
    );
}

/// Issue 15: status shows the removal, not just a peer that went missing.
fn status_shows_the_removal(setup: &Setup, iom1: &str) {
    let removed = &status(setup, "nurse")["removed_nodes"];
    assert_eq!(removed[0]["node"], iom1, "{removed}");
    assert_eq!(removed[0]["org"], "iom", "{removed}");
    assert_eq!(removed[0]["last_seq"], 0, "{removed}");
    let told = setup.node_run("nurse", &["status"]).expect_ok().stdout;
    assert!(
        told.lines()
            .any(|l| l.starts_with("Removed") && l.contains(iom1) && l.contains("after #0")),
        "{told}"
    );
}

#[test]
fn a_removed_node_is_disconnected_and_its_new_events_are_refused() {
    let setup = mechanism(
        &["mas", "mdm", "iom"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("iom1", "iom")],
        &[],
    );
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let _nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let iom = Daemon::start(setup.path(), "iom1", &[&hub.addr], &[]);
    wait_for(30, "iom1 connected", || {
        connected_peers(&setup, "aicha")
            .contains(&"iom1".to_string())
            .then_some(())
    });
    let iom1 = node_id(&setup, "iom1");
    mechanism_next_asks_the_daemon_for_the_cutoff(&setup, &iom1);
    // Version 2 removes iom1 (none of its events to accept) and carries iom's next key epoch.
    setup
        .run(&[
            "mechanism",
            "next",
            "v1.signed",
            "--remove-node",
            &iom1,
            "--cutoff",
            &format!("{iom1}=0"),
            "--out",
            "v2.toml",
        ])
        .expect_ok();
    let epoch2 = setup
        .run(&["org", "rotate-key", "org-iom.key"])
        .expect_ok()
        .stdout;
    setup.append("v2.toml", &epoch2);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup
        .node_run("aicha", &["mechanism", "update", "v2.signed"])
        .expect_ok();
    // The new version reaches the nurse by sync, and iom1 is cut off everywhere.
    wait_for(30, "version 2 at the nurse", || {
        (status(&setup, "nurse")["config_version"] == 2).then_some(())
    });
    wait_for(30, "iom1 disconnected", || {
        (!connected_peers(&setup, "aicha").contains(&"iom1".to_string())).then_some(())
    });
    status_shows_the_removal(&setup, &iom1);
    iom.stop();
    // iom1 keeps writing on its own (it may not have heard), and carries it by bundle.
    let _ = setup.open_case("iom1", "Hawa", "general");
    setup
        .node_run("iom1", &["bundle", "export", "--out", "iom1.bundle"])
        .expect_ok();
    let report = setup
        .node_run("aicha", &["bundle", "import", "iom1.bundle"])
        .expect_ok();
    assert!(
        report
            .stdout
            .contains("removed from the mechanism after sequence 0"),
        "{}",
        report.stdout
    );
    // And it cannot connect any more.
    let _iom = Daemon::start(setup.path(), "iom1", &[&hub.addr], &[]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!connected_peers(&setup, "aicha").contains(&"iom1".to_string()));
}

#[test]
fn a_node_outside_the_configuration_cannot_connect() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let _nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    // A node of another mechanism (its own genesis), dialling the hub.
    let other = mechanism(&["mas"], &[("stranger", "mas")], &[]);
    let _stranger = Daemon::start(other.path(), "stranger", &[&hub.addr], &[]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let peers = connected_peers(&setup, "aicha");
    assert_eq!(
        peers,
        vec!["nurse".to_string()],
        "only the member is connected"
    );
    assert_eq!(status(&other, "stranger")["events"], 0);
    let case = setup.open_case("aicha", "Idriss", "general");
    send_referral(&setup, "aicha", &case);
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        status(&other, "stranger")["events"],
        0,
        "nothing reached the stranger"
    );
}

#[test]
fn a_restored_node_does_not_equivocate() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let case = setup.open_case("aicha", "Jamal", "general");
    let referral = send_referral(&setup, "aicha", &case);
    wait_for(30, "the referral at the nurse", || {
        (!list(&setup, "nurse", &["referral", "list", "--inbox", "--json"]).is_empty())
            .then_some(())
    });
    setup
        .node_run("nurse", &["backup", "--out", "nurse.backup"])
        .expect_ok();
    // After the backup, the nurse acknowledges: her sequence 1 reaches aicha.
    setup
        .node_run("nurse", &["referral", "ack", &referral[..12]])
        .expect_ok();
    wait_for(30, "aicha to see the acknowledgement", || {
        let l = list(&setup, "aicha", &["referral", "list", "--outbox", "--json"]);
        (l.first().and_then(|r| r["status"].as_str()) == Some("acknowledged")).then_some(())
    });
    nurse.stop();
    setup
        .node_run("nurse", &["restore", "nurse.backup"])
        .expect_ok();
    // Restored: read-only until it has heard from a peer.
    setup
        .node_run("nurse", &["referral", "accept", &referral[..12]])
        .expect_refused("read-only");
    assert_eq!(status(&setup, "nurse")["read_only"], Value::Bool(true));
    let _nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    wait_for(30, "the restored node to learn its own log", || {
        (status(&setup, "nurse")["read_only"] == Value::Bool(false)).then_some(())
    });
    setup
        .node_run("nurse", &["referral", "accept", &referral[..12]])
        .expect_ok();
    wait_for(30, "aicha to see the acceptance", || {
        let l = list(&setup, "aicha", &["referral", "list", "--outbox", "--json"]);
        (l.first().and_then(|r| r["status"].as_str()) == Some("accepted")).then_some(())
    });
    assert_eq!(
        status(&setup, "aicha")["equivocations"],
        serde_json::json!([])
    );
}

#[test]
fn the_api_refuses_bad_tokens_hosts_and_bodies_and_keeps_serving() {
    let setup = mechanism(&["mas"], &[("aicha", "mas")], &[]);
    let daemon = Daemon::start(setup.path(), "aicha", &[], &[]);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("http://{}/api/v1/rpc", daemon.api);
    let body = serde_json::json!({"user": "t", "request": {"op": "status"}});
    let token = format!("Bearer {}", daemon.token());
    let status_of = |r: Result<ureq::http::Response<ureq::Body>, ureq::Error>| {
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(
        status_of(agent.post(&url).send_json(&body)),
        401,
        "no token"
    );
    assert_eq!(
        status_of(
            agent
                .post(&url)
                .header("Authorization", "Bearer nope")
                .send_json(&body)
        ),
        401
    );
    assert_eq!(
        status_of(
            agent
                .post(&url)
                .header("Authorization", &token)
                .header("Host", "evil.example:80")
                .send_json(&body)
        ),
        421,
        "a foreign Host header (DNS rebinding) is refused"
    );
    assert_eq!(
        status_of(
            agent
                .post(&url)
                .header("Authorization", &token)
                .header("Content-Type", "application/json")
                .send("{not json")
        ),
        400
    );
    let huge = "x".repeat(3 * 1024 * 1024);
    assert_eq!(
        status_of(
            agent
                .post(&url)
                .header("Authorization", &token)
                .send(huge.as_bytes())
        ),
        413
    );
    // A peer that connects and stalls, and one that sends garbage, change nothing.
    let p2p_port: u16 = daemon
        .addr
        .split('/')
        .nth(4)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let _stall = std::net::TcpStream::connect(("127.0.0.1", p2p_port));
    if let Ok(mut garbage) = std::net::TcpStream::connect(("127.0.0.1", p2p_port)) {
        use std::io::Write;
        let _ = garbage.write_all(&[0xff; 4096]);
    }
    assert_eq!(
        status_of(
            agent
                .post(&url)
                .header("Authorization", &token)
                .send_json(&body)
        ),
        200,
        "the daemon keeps serving"
    );
    setup.open_case("aicha", "Kofi", "general");
    assert_eq!(status(&setup, "aicha")["events"], 1);
}

#[test]
fn members_that_cannot_reach_each_other_connect_through_a_members_relay() {
    let setup = mechanism(
        &["mas", "mdm", "unicef"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("office", "unicef")],
        &[],
    );
    // The regional office relays; the two field nodes know only its address (the configuration
    // gives none, mDNS is off), as two sites behind NAT would.
    let office = Daemon::start(setup.path(), "office", &[], &["--relay"]);
    let _aicha = Daemon::start(setup.path(), "aicha", &[&office.addr], &[]);
    let _nurse = Daemon::start(setup.path(), "nurse", &[&office.addr], &[]);
    wait_for(
        60,
        "aicha and the nurse to connect through the relay",
        || {
            let a = connected_peers(&setup, "aicha");
            let n = connected_peers(&setup, "nurse");
            (a.contains(&"nurse".to_string()) && n.contains(&"aicha".to_string())).then_some(())
        },
    );
    let case = setup.open_case("aicha", "Amina", "general");
    send_referral(&setup, "aicha", &case);
    wait_for(30, "the referral at the nurse's node", || {
        (list(&setup, "nurse", &["referral", "list", "--inbox", "--json"]).len() == 1).then_some(())
    });
}

/// Issue 13: the daemon's store cache is bounded by `--cache-mib`: a daemon given the smallest
/// cache serves its API and its cases; a size out of bounds is refused before anything opens.
#[test]
fn a_daemon_runs_within_the_store_cache_it_is_given() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    let case = setup.open_case("aicha", "Samir", "general");
    for refused in ["2", "20000", "lots"] {
        let out = setup.node_run("aicha", &["run", "--cache-mib", refused]);
        assert_eq!(out.code, Some(2), "--cache-mib {refused}: {}", out.stderr);
        assert!(out.stderr.contains("--cache-mib"), "{}", out.stderr);
    }
    let _hub = Daemon::start(setup.path(), "aicha", &[], &["--cache-mib", "4"]);
    let cases = setup.node_json("aicha", &["case", "list", "--json"]);
    assert!(cases.to_string().contains(&case), "{cases}");
}
