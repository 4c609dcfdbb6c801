//! mDNS on a field LAN: two nodes in network namespaces this test creates (joined by a veth
//! pair), started with `--mdns` and no peer addresses, find each other and sync. Multicast
//! stays inside these namespaces; nothing is sent anywhere else.

use std::process::{Child, Command, Stdio};

use passerelle_tests::{bin, mechanism, wait_for};
use serde_json::Value;

/// Two namespaces linked by a veth pair, deleted when dropped.
struct Lan {
    names: [String; 2],
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "`ip {}` failed: this test needs root and iproute2 (network namespaces)",
        args.join(" ")
    );
}

impl Lan {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let names = [format!("pmd{tag}a"), format!("pmd{tag}b")];
        let subnet = 10 + tag % 200;
        for n in &names {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", n]);
            ip(&["netns", "exec", n, "ip", "link", "set", "lo", "up"]);
        }
        let (va, vb) = (format!("pv{tag}a"), format!("pv{tag}b"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &names[0]]);
        ip(&["link", "set", &vb, "netns", &names[1]]);
        for (i, (n, v)) in names.iter().zip([&va, &vb]).enumerate() {
            let addr = format!("10.251.{subnet}.{}/24", i + 1);
            ip(&["netns", "exec", n, "ip", "addr", "add", &addr, "dev", v]);
            ip(&[
                "netns",
                "exec",
                n,
                "ip",
                "link",
                "set",
                v,
                "up",
                "multicast",
                "on",
            ]);
        }
        Self { names }
    }

    fn command(&self, i: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.names[i]]).arg(bin());
        cmd
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_nodes_on_a_lan_find_each_other_by_mdns() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    let lan = Lan::new();
    let daemons = start_on_lan(&setup, &lan);
    let json = |i: usize, args: &[&str]| -> Option<Value> {
        let out = lan_cli(&setup, &lan, i, args).ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let logs = || {
        ["aicha", "nurse"]
            .iter()
            .map(|n| std::fs::read_to_string(setup.file(&format!("{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(60, "the nodes to find each other by mDNS", || {
            let st = json(0, &["status", "--json"])?;
            let connected = st["network"]["peers"]
                .as_array()?
                .iter()
                .any(|p| p["label"] == "nurse" && p["connected"] == true);
            connected.then_some(())
        })
    }));
    assert!(
        found.is_ok(),
        "the nodes did not find each other by mDNS:\n{}",
        logs()
    );
    let case = setup.open_case_in(|args| {
        let out = lan_cli(&setup, &lan, 0, args).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    assert_eq!(case.len(), 64, "a case id: {case}");
    wait_for(
        30,
        "aicha's case to reach the nurse's node over the LAN",
        || {
            let st = json(1, &["status", "--json"])?;
            (st["events"].as_u64()? >= 1).then_some(())
        },
    );
    drop(daemons);
}

/// Starts both nodes' daemons in their namespaces, with mDNS on.
fn start_on_lan(setup: &passerelle_tests::Setup, lan: &Lan) -> Vec<Killed> {
    let mut daemons = Vec::new();
    for (i, name) in ["aicha", "nurse"].iter().enumerate() {
        let log = std::fs::File::create(setup.file(&format!("{name}.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = lan
            .command(i)
            .current_dir(setup.path())
            .args(["--data-dir", &format!("node-{name}"), "run"])
            .args([
                "--listen",
                "/ip4/0.0.0.0/tcp/4010",
                "--api",
                "127.0.0.1:4011",
                "--mdns",
            ])
            .env("RUST_LOG", "info")
            .env("HOME", setup.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        daemons.push(Killed(child));
    }
    daemons
}

/// Runs a command of node `i` (aicha, nurse) inside its namespace.
fn lan_cli(
    setup: &passerelle_tests::Setup,
    lan: &Lan,
    i: usize,
    args: &[&str],
) -> std::io::Result<std::process::Output> {
    let name = ["aicha", "nurse"][i];
    lan.command(i)
        .current_dir(setup.path())
        .args(["--data-dir", &format!("node-{name}"), "--user", "tester"])
        .args(args)
        .env("HOME", setup.path())
        .output()
}
