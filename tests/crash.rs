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
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::crash_child_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ACK ").and_then(Hash32::from_hex) {
                    let _ = tx.send(id);
                }
            }
        });
        // Let it run a random while (at least until its first acknowledgement).
        let run_for = Duration::from_millis(30 + next_random(&mut seed) % 250);
        let started = Instant::now();
        let mut this_trial = 0;
        while started.elapsed() < run_for || this_trial == 0 {
            if let Ok(id) = rx.recv_timeout(Duration::from_millis(5)) {
                acked.push(id);
                this_trial += 1;
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!("trial {trial}: the child acknowledged nothing in 30 s");
            }
        }
        child.kill().unwrap_or_else(|e| panic!("kill: {e}")); // SIGKILL
        let _ = child.wait();
        let _ = reader.join();
        acked.extend(rx.try_iter());

        // The database opens, every acknowledged event is there, the chain is intact.
        let store = Store::open(&dir.path().join("aicha.redb"))
            .unwrap_or_else(|e| panic!("trial {trial}: the database does not open: {e}"));
        for id in &acked {
            assert!(
                store.event(id).unwrap_or_default().is_some(),
                "trial {trial}: acknowledged event {} lost",
                id.short()
            );
        }
        let (seq, head, _) = store
            .head(&node.key())
            .unwrap_or_default()
            .unwrap_or_else(|| panic!("a head"));
        let log = store
            .log_range(&node.key(), 1, usize::MAX)
            .unwrap_or_default();
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
    assert!(acked.len() >= TRIALS, "every trial acknowledged something");
}
