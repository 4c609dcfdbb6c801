//! The README's paths, run as written: "Set up a mechanism from scratch" (keys, document,
//! organisations and nodes, signatures, joining, the change six months later) and "Run a node
//! and refer a person" (a profile, a case, a referral to the other partner and its whole life,
//! the person's export, withdrawal and erasure). Every command line of those sections' `sh`
//! blocks runs through `sh` with the built binary as `passerelle`; the test fills in only what
//! the README leaves to the reader (the keys and node ids it prints, the case and referral ids)
//! and does what the README says in words (IOM's administrator "does the same", a bundle carries
//! the referral to IOM's node, the daemon is not started: commands work on the database).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use passerelle_tests::bin;

const README: &str = include_str!("../README.md");

/// The text of the section under `## heading`, to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = README
        .find(&format!("## {heading}\n"))
        .unwrap_or_else(|| panic!("the README has a section `{heading}`"));
    let rest = &README[start + 3..];
    let end = rest.find("\n## ").map_or(rest.len(), |e| e);
    &rest[..end]
}

/// The command lines of a section's `sh` blocks: continuations joined, comments dropped.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh || line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let line = line.split("   #").next().unwrap_or(line).trim_end();
        let line = line.split("  # ").next().unwrap_or(line).trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        out.push(
            std::mem::take(&mut pending)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    out
}

/// The first `json` block after `marker` in the README.
fn json_block(marker: &str) -> &'static str {
    let at = README.find(marker).unwrap();
    let start = README[at..].find("```json\n").unwrap() + at + 8;
    let end = README[start..].find("```").unwrap() + start;
    &README[start..end]
}

struct Shell<'a> {
    dir: &'a Path,
    env: BTreeMap<String, String>,
    /// Placeholder → value, applied to every line before it runs.
    fill: Vec<(String, String)>,
}

impl Shell<'_> {
    /// Runs one line as `sh -c`, `passerelle` being the built binary; returns its stdout.
    fn run(&mut self, line: &str) -> String {
        let mut line = line.to_string();
        for (placeholder, value) in &self.fill {
            line = line.replace(placeholder.as_str(), value);
        }
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|a| a.split_once('=')) {
            self.env.insert(k.to_string(), v.to_string());
            return String::new();
        }
        let bin_dir = bin().parent().unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(self.dir)
            .env("PATH", path)
            .env("HOME", self.dir)
            .env_remove("PASSERELLE_DATA_DIR")
            .env_remove("PASSERELLE_PASSPHRASE")
            .envs(&self.env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the README's `{line}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The word of `text` that starts with `prefix` (a key, an id).
fn word(text: &str, prefix: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '`')
        .find(|w| w.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}…` in {text}"))
        .trim_end_matches(['.', ',', ')'])
        .to_string()
}

#[test]
fn the_readme_paths_run_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let crt_dir = dir.join("crt-node");
    // IOM's node of the referral: the replacement laptop, iom-2.
    let iom_dir = dir.join("iom-2-node");
    let mut sh = Shell {
        dir,
        env: BTreeMap::new(),
        fill: vec![
            (
                "/var/lib/passerelle-iom".into(),
                iom_dir.display().to_string(),
            ),
            ("/var/lib/passerelle".into(), crt_dir.display().to_string()),
        ],
    };
    set_up_from_scratch(&mut sh, &iom_dir);
    refer_a_person(&mut sh, &crt_dir, &iom_dir);
}

/// "Set up a mechanism from scratch", with IOM's administrator and node doing what crt's do.
fn set_up_from_scratch(sh: &mut Shell<'_>, iom_dir: &Path) {
    let iom1_dir = sh.dir.join("iom-1-node");
    let lines = commands(section("Set up a mechanism from scratch"));
    assert!(lines.len() >= 15, "{lines:?}");
    let iom = |line: &str| {
        line.replace("--org crt", "--org iom")
            .replace("crt.orgkey", "iom.orgkey")
            .replace("crt-keys.toml", "iom-keys.toml")
            .replace("medenine-1", "iom-1")
            .replace("/var/lib/passerelle", &iom1_dir.display().to_string())
    };
    let mut keys = Vec::new();
    for line in &lines {
        if line.contains("org endorse iom-2") {
            // "set up as in step 3": the replacement laptop's node.
            let iom2 = iom_dir.display();
            sh.run(&format!(
                "passerelle --data-dir {iom2} init --org iom --label iom-2"
            ));
            sh.run(&format!(
                "passerelle --data-dir {iom2} id --toml > iom-2.node.toml"
            ));
        }
        if line.contains("mechanism next") {
            // The node removed is IOM's, as the README tells; its id is in its node file.
            let node_file = std::fs::read_to_string(sh.dir.join("iom-1.node.toml")).unwrap();
            let id = word(&node_file, "12D3KooW");
            sh.fill.push(("12D3KooW…".into(), id));
        }
        let out = sh.run(line);
        if line.contains("mechanism keygen") {
            keys.push(word(&out, "ed25519:"));
            if keys.len() == 2 {
                sh.fill.push(("ed25519:AAA…".into(), keys[0].clone()));
                sh.fill.push(("ed25519:BBB…".into(), keys[1].clone()));
            }
        }
        // "IOM's administrator does the same", and IOM's node joins the same way.
        let crt_side = [
            "org keygen",
            " init ",
            " id --toml",
            "org endorse",
            " join ",
            "import-key",
        ];
        if crt_side.iter().any(|c| line.contains(c)) && iom(line) != *line {
            sh.run(&iom(line));
        }
    }
    // "iom-2 joins with the whole chain and imports iom.orgkey".
    let iom2 = iom_dir.display();
    sh.run(&format!(
        "passerelle --data-dir {iom2} join mechanism.signed v2.signed"
    ));
    sh.run(&format!(
        "passerelle --data-dir {iom2} org import-key iom.orgkey"
    ));
    let status = sh.run("passerelle --data-dir /var/lib/passerelle status --json");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["config_version"], 2,
        "the change six months later is in force: {status}"
    );
}

/// "Run a node and refer a person": at crt, then at IOM's node, carried by a bundle.
fn refer_a_person(sh: &mut Shell<'_>, crt_dir: &Path, iom_dir: &Path) {
    std::fs::write(sh.dir.join("case.json"), json_block("`case.json` holds")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/profiles/crt.toml"),
        sh.dir.join("my-profile.toml"),
    )
    .unwrap();
    let text = section("Run a node and refer a person");
    let lines: Vec<String> = commands(text)
        .into_iter()
        .filter(|l| !l.contains(" run "))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("referral send")),
        "{lines:?}"
    );
    let crt_env = crt_dir.display().to_string();
    let iom_env = iom_dir.display().to_string();
    // The bundle the README carries is for IOM's node, and comes back from it.
    let iom_id = word(
        &sh.run(&format!("passerelle --data-dir {iom_env} id")),
        "12D3KooW",
    );
    sh.fill.retain(|(p, _)| p != "12D3KooW…");
    sh.fill.push(("12D3KooW…".into(), iom_id.clone()));
    for line in &lines {
        if line.contains("bundle import from-hq.bundle") {
            let crt_id = word(
                &sh.run(&format!("passerelle --data-dir {crt_env} id")),
                "12D3KooW",
            );
            sh.run(&format!(
                "passerelle --data-dir {iom_env} bundle export --out from-hq.bundle --for {crt_id}"
            ));
        }
        let at_iom = line.contains("--inbox") || line.contains("referral ack");
        if at_iom {
            carry(sh, crt_dir, iom_dir);
            sh.env.insert("PASSERELLE_DATA_DIR".into(), iom_env.clone());
        }
        let out = sh.run(line);
        if at_iom {
            sh.env.insert("PASSERELLE_DATA_DIR".into(), crt_env.clone());
        }
        if line.contains("case open") {
            sh.fill.push(("CASE".into(), out.trim().to_string()));
        }
        if line.contains("referral send") {
            sh.fill.push(("REF".into(), out.trim().to_string()));
        }
        if line.contains("referral complete") {
            carry(sh, iom_dir, crt_dir);
            // The person's referral went its whole way, and crt's node sees it.
            let out = sh.run("passerelle referral list --outbox --json");
            let list: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert!(
                list.as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["status"] == "completed"),
                "{out}"
            );
        }
    }
}

/// A bundle from one node to the other: what the README's USB stick does.
fn carry(sh: &mut Shell<'_>, from: &Path, to: &Path) {
    let file = sh.dir.join("stick.bundle");
    let id = sh.run(&format!("passerelle --data-dir {} id", to.display()));
    let for_node = word(&id, "12D3KooW");
    let from = from.display();
    let to = to.display();
    sh.run(&format!(
        "passerelle --data-dir {from} bundle export --out {} --for {for_node}",
        file.display()
    ));
    sh.run(&format!(
        "passerelle --data-dir {to} bundle import {}",
        file.display()
    ));
    std::fs::remove_file(&file).unwrap();
}
