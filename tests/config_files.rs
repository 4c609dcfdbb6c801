//! The shipped configuration files, node identities and key files: what `config/` holds is
//! valid, secrets are 0600 and sealed when asked, and bad input changes nothing.

use std::path::Path;

use passerelle_core::config::Mechanism;
use passerelle_tests::{Setup, run_env};

fn config_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"))
}

#[test]
fn every_file_in_config_parses() {
    let mut checked = 0;
    let mut stack = vec![config_dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>());
        for entry in entries.unwrap_or_default() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            match path.extension().and_then(|e| e.to_str()) {
                Some("toml") if path.file_name().is_some_and(|n| n == "mechanism.toml") => {
                    let mechanism = Mechanism::from_bytes(text.as_bytes());
                    let mechanism = match mechanism {
                        Ok(m) => m,
                        Err(e) => panic!("{}: {e}", path.display()),
                    };
                    assert!(mechanism.doc.organisations.len() >= 15, "15+ partners");
                    for cat in [
                        "shelter",
                        "food",
                        "non_food_items",
                        "health",
                        "mental_health",
                        "education",
                        "recreation",
                        "administrative",
                        "legal",
                        "child_protection",
                        "gbv",
                        "family_tracing",
                        "avrr",
                    ] {
                        assert!(mechanism.category(cat).is_some(), "taxonomy has {cat}");
                    }
                    assert!(mechanism.category("gbv").is_some_and(|c| c.sensitive));
                    checked += 1;
                }
                Some("toml") if path.parent().is_some_and(|p| p.ends_with("profiles")) => {
                    let sample = std::fs::read_to_string(config_dir().join("mechanism.toml"))
                        .unwrap_or_default();
                    let m =
                        Mechanism::from_bytes(sample.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                    let profile = passerelle_core::map::Profile::from_toml(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    if let Err(e) = profile.validate(&m) {
                        panic!("{}: {e}", path.display());
                    }
                    let stem = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default();
                    assert_eq!(
                        profile.org,
                        stem,
                        "{}: org matches the file name",
                        path.display()
                    );
                    checked += 1;
                }
                Some("toml") => {
                    if let Err(e) = text.parse::<toml::Table>() {
                        panic!("{}: {e}", path.display());
                    }
                    checked += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        checked >= 20,
        "config/ holds the sample mechanism and a profile per partner"
    );
}

#[test]
fn init_creates_0600_secrets_and_refuses_to_overwrite() {
    let setup = Setup::new();
    setup.org_keygen("crt");
    let (id, stanza) = setup.node("n1", "crt");
    assert!(id.starts_with("12D3KooW"), "{id}");
    assert!(stanza.contains("endorsement = "), "{stanza}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["node-n1/node.key", "org-crt.key", "root-a.key"] {
            let mode = std::fs::metadata(setup.file(file))
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600, "{file} is private");
        }
    }
    let before = setup.read("node-n1/node.key");
    setup
        .run(&[
            "--data-dir",
            "node-n1",
            "init",
            "--org",
            "crt",
            "--label",
            "again",
        ])
        .expect_refused("already holds a node identity");
    assert_eq!(setup.read("node-n1/node.key"), before, "nothing changed");
    setup
        .run(&[
            "--data-dir",
            "node-x",
            "init",
            "--org",
            "Bad Org",
            "--label",
            "x",
        ])
        .expect_refused("is not a valid organisation id");
    assert!(!setup.file("node-x").exists(), "bad input writes nothing");
}

#[test]
fn a_passphrase_seals_the_node_key_and_is_needed_to_use_it() {
    let setup = standard_setup_with_passphrase();
    let dir = setup.path();
    let sealed = setup.read("node-p/node.key");
    assert!(
        sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "{sealed}"
    );
    assert!(!sealed.contains("ed25519"), "no secret in clear");
    // Joining opens the secrets: without the passphrase it is refused.
    let out = run_env(dir, &["--data-dir", "node-p", "join", "v1.signed"], &[]);
    out.expect_refused("protected by a passphrase: give --passphrase-file");
    let out = run_env(
        dir,
        &["--data-dir", "node-p", "join", "v1.signed"],
        &[("PASSERELLE_PASSPHRASE", "wrong horse")],
    );
    out.expect_refused("passphrase does not open");
    setup.write("pass.txt", "correct horse battery\n");
    run_env(
        dir,
        &[
            "--data-dir",
            "node-p",
            "--passphrase-file",
            "pass.txt",
            "join",
            "v1.signed",
        ],
        &[],
    )
    .expect_ok();
}

fn standard_setup_with_passphrase() -> Setup {
    let setup = Setup::new();
    setup.template("v1.toml", &["a", "b"], 2);
    // The organisation key file is sealed too, with its own passphrase.
    let sealed = run_env(
        setup.path(),
        &["org", "keygen", "--org", "crt", "--out", "org-crt.key"],
        &[("PASSERELLE_KEY_PASSPHRASE", "org secret")],
    )
    .expect_ok();
    assert!(
        !sealed.stderr.contains("not encrypted"),
        "{}",
        sealed.stderr
    );
    let stanzas = sealed.stdout;
    assert!(setup.read("org-crt.key").starts_with("-----BEGIN AGE"));
    // Without a passphrase the secret is in clear, and the command says so.
    let open = setup
        .run(&["mechanism", "keygen", "--out", "open-root.key"])
        .expect_ok();
    assert!(
        open.stderr.contains("open-root.key is not encrypted")
            && open.stderr.contains("--key-passphrase-file"),
        "{}",
        open.stderr
    );
    setup.append("v1.toml", &stanzas);
    run_env(
        setup.path(),
        &[
            "--data-dir",
            "node-p",
            "init",
            "--org",
            "crt",
            "--label",
            "p",
        ],
        &[("PASSERELLE_PASSPHRASE", "correct horse battery")],
    )
    .expect_ok();
    let stanza = setup
        .run(&["--data-dir", "node-p", "id", "--toml"])
        .expect_ok()
        .stdout;
    setup.write("p.node.toml", &stanza);
    setup
        .run(&["org", "endorse", "p.node.toml", "--key", "org-crt.key"])
        .expect_refused("protected by a passphrase: give --key-passphrase-file");
    let endorsed = run_env(
        setup.path(),
        &["org", "endorse", "p.node.toml", "--key", "org-crt.key"],
        &[("PASSERELLE_KEY_PASSPHRASE", "org secret")],
    )
    .expect_ok()
    .stdout;
    setup.append("v1.toml", &endorsed);
    setup.sign("v1.toml", &["a", "b"], "v1.signed").expect_ok();
    setup
}

#[test]
fn import_key_installs_only_keys_that_match_the_configuration() {
    let setup = passerelle_tests::standard_genesis();
    setup
        .run(&["--data-dir", "node-crt1", "join", "v1.signed"])
        .expect_ok();
    // iom's keys on a crt node: refused.
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "org",
            "import-key",
            "org-iom.key",
        ])
        .expect_refused("this node belongs to `crt`");
    // A forged crt key file whose epoch 1 is not the configured one: refused, nothing installed.
    setup
        .run(&["org", "keygen", "--org", "crt", "--out", "forged.key"])
        .expect_ok();
    setup
        .run(&["--data-dir", "node-crt1", "org", "import-key", "forged.key"])
        .expect_refused("does not match the key the configuration lists");
    assert_eq!(
        setup.status("crt1")["org_key_epochs"],
        serde_json::json!([])
    );
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "org",
            "import-key",
            "org-crt.key",
        ])
        .expect_ok();
    assert_eq!(
        setup.status("crt1")["org_key_epochs"],
        serde_json::json!([1])
    );
}
