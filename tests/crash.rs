//! Crash consistency: a child process appends events and prints each acknowledged id; it is
//! killed with SIGKILL at random moments; after every kill the database opens, every
//! acknowledged event is there, and each author's chain is intact.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use passerelle_core::config::Hash32;
use passerelle_core::engine::Engine;
use passerelle_core::keyfiles::NodeSecrets;
use passerelle_core::sim::Sim;
use passerelle_core::store::Store;

use crate::events::{SAMPLE, boy, now};

const CHILD_ENV: &str = "PASSERELLE_CRASH_CHILD_DIR";
const TRIALS: usize = 24;

/// The child's side. It does nothing in a normal run (the environment variable is unset); the
/// crash test starts this test binary again with the variable set, running only this function.
#[test]
fn crash_child_entry_point() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let secrets = std::fs::read_to_string(dir.join("aicha.secrets")).unwrap_or_default();
    let secrets = NodeSecrets::from_text(&secrets).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&dir.join("aicha.redb")).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::open(store, secrets, "mas").unwrap_or_else(|e| panic!("{e}"));
    let mut data = boy();
    data.case_type = "general".into();
    loop {
        let id = engine
            .open_case(data.clone(), "aicha", now())
            .unwrap_or_else(|e| panic!("{e}"));
        // Printed only after the transaction committed durably.
        println!("ACK {}", id.to_hex());
    }
}

fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn acknowledged_events_survive_sigkill() {
    let sim =
        Sim::new(SAMPLE, &["mas"], &[("aicha", "mas")], now()).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    drop(
        sim.engine("aicha", dir.path(), true, now())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let node = sim.node("aicha").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("aicha.secrets"),
        node.secrets.to_text().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut acked: Vec<Hash32> = Vec::new();
    let mut seed = now().unix_timestamp_nanos() as u64;
    for trial in 0..TRIALS {
        let run_for = Duration::from_millis(30 + next_random(&mut seed) % 250);
        acked.extend(run_and_kill_child(&exe, dir.path(), trial, run_for));
        // The database opens, every acknowledged event is there, the chain is intact.
        check_store(&dir.path().join("aicha.redb"), &node.key(), &acked, trial);
    }
    assert!(acked.len() >= TRIALS, "every trial acknowledged something");
}

/// Runs the child for a while (at least until its first acknowledgement), kills it with
/// SIGKILL and returns the events it acknowledged.
fn run_and_kill_child(
    exe: &std::path::Path,
    dir: &std::path::Path,
    trial: usize,
    run_for: Duration,
) -> Vec<Hash32> {
    let mut child = spawn_child(exe, "crash::crash_child_entry_point", CHILD_ENV, dir);
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("ACK ").and_then(Hash32::from_hex) {
                let _ = tx.send(id);
            }
        }
    });
    let started = Instant::now();
    let mut acked = Vec::new();
    while started.elapsed() < run_for || acked.is_empty() {
        if let Ok(id) = rx.recv_timeout(Duration::from_millis(5)) {
            acked.push(id);
        }
        if started.elapsed() > Duration::from_secs(30) {
            panic!("trial {trial}: the child acknowledged nothing in 30 s");
        }
    }
    child.kill().unwrap_or_else(|e| panic!("kill: {e}")); // SIGKILL
    let _ = child.wait();
    let _ = reader.join();
    acked.extend(rx.try_iter());
    acked
}

/// The database opens, every acknowledged event is in it, and the author's chain is whole.
fn check_store(path: &std::path::Path, author: &[u8; 32], acked: &[Hash32], trial: usize) {
    let store = Store::open(path)
        .unwrap_or_else(|e| panic!("trial {trial}: the database does not open: {e}"));
    for id in acked {
        assert!(
            store.event(id).unwrap_or_default().is_some(),
            "trial {trial}: acknowledged event {} lost",
            id.short()
        );
    }
    let (seq, head, _) = store
        .head(author)
        .unwrap_or_default()
        .unwrap_or_else(|| panic!("a head"));
    let log = store.log_range(author, 1, usize::MAX).unwrap_or_default();
    assert_eq!(log.len() as u64, seq, "trial {trial}: no gap in the log");
    let mut prev = None;
    for (i, event) in log.iter().enumerate() {
        assert_eq!(event.header().seq, i as u64 + 1);
        assert_eq!(event.header().prev, prev, "trial {trial}: chain intact");
        assert!(event.verify_signature().is_ok());
        prev = Some(event.id());
    }
    assert_eq!(prev, Some(head));
}

/// Issue 10, item 16: the daemon is killed with SIGKILL again and again while a caseworker's
/// commands open cases through it. A command either answers (and its case is there, once) or
/// says it could not know; no request ever opens two cases — a command whose connection broke
/// after it sent the request sends it again with the same idempotency key, to the restarted
/// daemon or in-process, and the node gives back the first answer.
#[test]
fn a_request_is_carried_out_once_when_the_daemon_dies_mid_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let setup = passerelle_tests::mechanism(&["mas"], &[("mas1", "mas")], &[]);
    let write_case = |i: usize| {
        setup.write(
            &format!("case-{i}.json"),
            &serde_json::json!({
                "case_type": "general", "site": "medenine",
                "person": {"first_name": format!("Person{i}"), "languages": ["ar"]},
                "needs": ["shelter"],
                "consent": {"given": true, "explained_by": "Aïcha",
                            "recorded_at": "2026-11-27T09:00:00Z"}
            })
            .to_string(),
        );
    };
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(Mutex::new(0u32));
    let killer = kill_again_and_again(setup.path().to_path_buf(), stop.clone(), kills.clone());
    let mut acknowledged = Vec::new();
    let mut unsure = 0;
    // Cases are opened one after another until the daemon was killed often enough.
    let mut i = 0;
    // Enough requests for ten kills even on a loaded machine (CI once got nine in 400).
    while *kills.lock().unwrap() < 10 && i < 1000 {
        i += 1;
        write_case(i);
        let out = setup.node_run(
            "mas1",
            &["case", "open", "--from", &format!("case-{i}.json")],
        );
        if out.ok() {
            acknowledged.push((i, out.stdout.trim().to_string()));
        } else {
            assert!(
                out.stderr.contains("may have been carried out")
                    || out.stderr.contains("already carried out")
                    || out.stderr.contains("in use")
                    || out.stderr.contains("engine"),
                "an unexpected failure: {}",
                out.stderr
            );
            unsure += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    let kills = *kills.lock().unwrap();
    assert!(kills >= 10, "only {kills} kills");
    let cases = setup.node_json("mas1", &["case", "list", "--json"]);
    let cases = cases.as_array().unwrap();
    each_acknowledged_case_once(cases, &acknowledged);
    println!(
        "{kills} kills; {} acknowledged, {unsure} unsure, {} cases",
        acknowledged.len(),
        cases.len()
    );
}

/// Starts the daemon and kills it (SIGKILL) after a random while, again and again until told
/// to stop; counts the kills.
fn kill_again_and_again(
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    kills: std::sync::Arc<std::sync::Mutex<u32>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut state = 7u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut daemon = passerelle_tests::Daemon::start(&path, "mas1", &[], &[]);
            let alive = 150 + next_random(&mut state) % 600;
            std::thread::sleep(Duration::from_millis(alive));
            // SIGKILL: no chance to finish the request or to remove api.addr.
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
            *kills.lock().unwrap() += 1;
            std::thread::sleep(Duration::from_millis(next_random(&mut state) % 300));
        }
    })
}

/// No request opened two cases, and every acknowledged case is there once, as sent.
fn each_acknowledged_case_once(cases: &[serde_json::Value], acknowledged: &[(usize, String)]) {
    let mut names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "a request opened two cases: {names:?}");
    for (i, id) in acknowledged {
        let found: Vec<_> = cases.iter().filter(|c| c["id"] == id.as_str()).collect();
        assert_eq!(
            found.len(),
            1,
            "acknowledged case {i} ({id}) is not there once"
        );
        assert_eq!(found[0]["name"], format!("Person{i}"));
    }
}

const MOVE_CHILD_ENV: &str = "PASSERELLE_MOVE_CHILD_DB";
/// Events in the store the move test moves: five chunks and a part.
const MOVE_EVENTS: usize = 5 * passerelle_core::store::MOVE_CHUNK_EVENTS + 1_000;

/// The move test's child: opens the store (which moves it to the current format) and says so.
/// Does nothing in a normal run.
#[test]
fn move_child_entry_point() {
    let Some(path) = std::env::var_os(MOVE_CHILD_ENV) else {
        return;
    };
    println!("OPENING");
    let store = Store::open(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
    println!("OPENED {}", store.format_report().moved);
}

/// Issue 13: a store written in format 1 moves to format 2 when it opens. Killed with SIGKILL
/// again and again while it moves, it never holds an event twice or loses one; a format-1
/// binary is kept out from the first commit on, with an error naming the newer format; and
/// the moved store holds every event, verdict and log as before.
#[test]
fn a_store_killed_while_it_moves_to_format_2_loses_nothing() {
    let sim = Sim::new(
        crate::events::SAMPLE,
        &["mas", "mdm"],
        &[("mas1", "mas"), ("mdm1", "mdm"), ("reader", "mas")],
        now(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("reader.redb");
    let events = sim
        .history_with(&[("mas1", "mdm1")], MOVE_EVENTS / 5, 0, true, now())
        .unwrap_or_else(|e| panic!("{e}"));
    let before = {
        let mut engine = sim
            .engine("reader", dir.path(), true, now())
            .unwrap_or_else(|e| panic!("{e}"));
        for chunk in events.chunks(4_096) {
            let got = engine
                .receive(chunk, now())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.admitted.len(), chunk.len());
        }
        held_now(engine.store(), &events)
    };
    let moved =
        passerelle_core::store::write_back_to_format_1(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(moved as usize, events.len());
    assert_eq!(
        passerelle_core::store::move_state(&path).unwrap_or_else(|e| panic!("{e}")),
        (events.len() as u64, 0)
    );

    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let (mut kills, mut half_way, mut wait) = (0, 0, Duration::from_millis(2));
    loop {
        if run_child_to_open(&exe, &path, wait) {
            break;
        }
        kills += 1;
        let (old, new) =
            passerelle_core::store::move_state(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            old + new,
            events.len() as u64,
            "kill {kills}: every event is in exactly one format ({old} + {new})"
        );
        if old > 0 && new > 0 {
            half_way += 1;
            assert_format_1_binary_is_kept_out(&path);
        }
        wait = wait * 3 / 2;
        assert!(kills < 60, "the move never finished");
    }
    assert!(half_way >= 1, "no kill landed half-way ({kills} kills)");
    assert_format_1_binary_is_kept_out(&path);
    let store = Store::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.format_report().moved, 0, "nothing is left to move");
    assert_eq!(held_now(&store, &events), before);
    eprintln!("{kills} kills, {half_way} half-way");
}

/// What a store holds of `events`: each one's bytes and verdict, each author's log, the counts.
fn held_now(store: &Store, events: &[passerelle_core::event::Event]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let stored = store.event(&e.id()).unwrap_or_else(|x| panic!("{x}"));
        let verdict = store.verdict(&e.id()).unwrap_or_else(|x| panic!("{x}"));
        assert!(stored.is_some() && verdict.is_some(), "event and verdict");
        out.push(format!(
            "{:?} {:?}",
            stored.map(|s| s.encode()),
            verdict.map(|v| v.is_valid())
        ));
    }
    for (author, seq, head) in store.heads().unwrap_or_else(|x| panic!("{x}")) {
        let log = store.log_range(&author, 1, usize::MAX).unwrap_or_default();
        assert_eq!(log.len() as u64, seq);
        out.push(format!("{seq} {}", head.to_hex()));
    }
    out.push(format!(
        "{:?}",
        store.log_counts().unwrap_or_else(|x| panic!("{x}"))
    ));
    out
}

/// Runs the child until it opened the store (true) or `wait` passed after it began opening,
/// then kills it with SIGKILL (false).
fn run_child_to_open(exe: &std::path::Path, db: &std::path::Path, wait: Duration) -> bool {
    let mut child = spawn_child(exe, "crash::move_child_entry_point", MOVE_CHILD_ENV, db);
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The test harness prints its own lines first.
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.ends_with("OPENING") => break,
            Ok(_) => {}
            Err(e) => panic!("the child did not start opening: {e}"),
        }
    }
    let opened = match rx.recv_timeout(wait) {
        Ok(line) => {
            assert!(line.starts_with("OPENED"), "{line}");
            true
        }
        Err(_) => {
            child.kill().unwrap_or_else(|e| panic!("kill: {e}")); // SIGKILL
            false
        }
    };
    let _ = child.wait();
    let _ = reader.join();
    opened
}

/// What a format-1 binary does when it opens the store: its events table has other types, so
/// the open fails, and the error says why.
fn assert_format_1_binary_is_kept_out(db: &std::path::Path) {
    const EVENTS_V1: redb::TableDefinition<[u8; 32], &[u8]> =
        redb::TableDefinition::new("events-1");
    use redb::ReadableDatabase;
    let redb = redb::Database::open(db).unwrap_or_else(|e| panic!("{e}"));
    let tx = redb.begin_read().unwrap_or_else(|e| panic!("{e}"));
    let error = tx
        .open_table(EVENTS_V1)
        .err()
        .unwrap_or_else(|| panic!("a format-1 binary opened the events table"));
    assert!(
        error.to_string().contains("passerelle store format 2"),
        "{error}"
    );
}

/// Starts this test binary again running only `test`, with `env` set to `path`, its stdout
/// piped.
fn spawn_child(
    exe: &std::path::Path,
    test: &str,
    env: &str,
    path: &std::path::Path,
) -> std::process::Child {
    Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"))
}
