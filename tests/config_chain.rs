//! The configuration chain's attack matrix (modelled on the TUF conformance suite): real files
//! through the real CLI. Valid chains and rotations are accepted; each attack is refused with
//! its own reason, one line, exit 1, and nothing persisted.

use passerelle_tests::{Setup, standard_genesis};
use serde_json::Value;

fn version_of(setup: &Setup, node: &str) -> u64 {
    setup.status(node)["config_version"].as_u64().unwrap_or(0)
}

/// Builds version 2 from v1.signed with an optional edit of its text; returns its TOML name.
fn v2_doc(setup: &Setup, edit: impl Fn(String) -> String) -> &'static str {
    setup.next("v1.signed", "v2.toml");
    let text = edit(setup.read("v2.toml"));
    setup.write("v2.toml", &text);
    "v2.toml"
}

fn join_all(setup: &Setup) {
    for node in ["crt1", "crt2", "iom1"] {
        setup
            .run(&["--data-dir", &format!("node-{node}"), "join", "v1.signed"])
            .expect_ok();
    }
}

fn edit_signed(setup: &Setup, name: &str, f: impl Fn(&mut Value)) {
    let mut value: Value = serde_json::from_str(&setup.read(name)).unwrap_or_default();
    f(&mut value);
    setup.write(name, &value.to_string());
}

#[test]
fn a_valid_chain_is_accepted_and_applied() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup.next("v2.signed", "v3.toml");
    setup.sign("v3.toml", &["a", "b"], "v3.signed").expect_ok();
    let out = setup
        .run(&["mechanism", "verify", "v1.signed", "v2.signed", "v3.signed"])
        .expect_ok();
    assert!(out.stdout.contains("version 3: ok"), "{}", out.stdout);
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2.signed",
            "v3.signed",
        ])
        .expect_ok();
    assert_eq!(version_of(&setup, "crt1"), 3);
    // Applying the same versions again changes nothing and is not an error.
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v3.signed",
        ])
        .expect_ok();
    assert_eq!(version_of(&setup, "crt1"), 3);
    // The mechanism id is the genesis hash, whatever the version.
    let show = setup
        .run(&["mechanism", "show", "v1.signed", "--json"])
        .expect_ok();
    let shown: Value = serde_json::from_str(&show.stdout).unwrap_or_default();
    assert_eq!(
        shown["mechanism_id"],
        setup.status("crt1")["mechanism_id"],
        "mechanism id = genesis document hash"
    );
}

#[test]
fn a_root_key_rotation_signed_by_old_and_new_thresholds_is_accepted() {
    let mut setup = standard_genesis();
    join_all(&setup);
    let c = setup.root_key("c");
    let a = setup.root_public("a");
    // Version 2 replaces root key a with c: roots {b, c}, threshold 2.
    v2_doc(&setup, |t| t.replace(&a, &c));
    // Old roots a+b, new roots b+c: a, b and c all sign.
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2.signed",
        ])
        .expect_refused("valid signature(s) by its own root keys, 2 required");
    setup.sign("v2.signed", &["c"], "v2.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2.signed",
        ])
        .expect_ok();
    assert_eq!(version_of(&setup, "crt1"), 2);
    // Version 3 needs b+c now; a alone with b is no longer enough for the new roots.
    setup.next("v2.signed", "v3.toml");
    setup.sign("v3.toml", &["a", "b"], "v3.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v3.signed",
        ])
        .expect_refused("1 valid signature(s) by the previous version's root keys, 2 required");
    assert_eq!(version_of(&setup, "crt1"), 2);
}

#[test]
fn an_org_signing_key_rotation_endorsed_by_the_previous_key_is_accepted() {
    let setup = standard_genesis();
    join_all(&setup);
    let rotated = setup
        .run(&["org", "rotate-signing-key", "org-iom.key"])
        .expect_ok()
        .stdout;
    assert!(rotated.contains("previous_key"), "{rotated}");
    let endorsed = setup
        .run(&["org", "endorse", "iom1.node.toml", "--key", "org-iom.key"])
        .expect_ok()
        .stdout;
    // The ministry appends the new key stanza and replaces the node's stanza with the new one.
    let node_id = setup.run(&["--data-dir", "node-iom1", "id"]).stdout;
    let node_id = node_id.lines().next().unwrap_or_default().to_string();
    v2_doc(&setup, |t| {
        drop_stanzas(&t, "nodes", &format!("id = \"{node_id}\""))
    });
    setup.append("v2.toml", &rotated);
    setup.append("v2.toml", &endorsed);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup
        .run(&["mechanism", "verify", "v1.signed", "v2.signed"])
        .expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-iom1",
            "mechanism",
            "update",
            "v2.signed",
        ])
        .expect_ok();
    assert_eq!(version_of(&setup, "iom1"), 2);
}

/// Removes every `[[header]]` stanza whose lines include `needle` from a document text.
fn drop_stanzas(text: &str, header: &str, needle: &str) -> String {
    let mut blocks: Vec<String> = vec![String::new()];
    for line in text.lines() {
        if line.starts_with('[') {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    let open = format!("[[{header}]]");
    blocks
        .into_iter()
        .filter(|b| !(b.starts_with(&open) && b.lines().any(|l| l == needle)))
        .collect()
}

/// Every refusal leaves the node on version 1.
fn refused(setup: &Setup, files: &[&str], needle: &str) {
    let mut args = vec!["--data-dir", "node-crt1", "mechanism", "update"];
    args.extend_from_slice(files);
    setup.run(&args).expect_refused(needle);
    assert_eq!(version_of(setup, "crt1"), 1, "nothing persisted");
    let mut verify = vec!["mechanism", "verify", "v1.signed"];
    verify.extend_from_slice(files);
    setup.run(&verify).expect_refused(needle);
}

#[test]
fn a_skipped_version_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup.next("v2.signed", "v3.toml");
    setup.sign("v3.toml", &["a", "b"], "v3.signed").expect_ok();
    refused(&setup, &["v3.signed"], "version 3 skips version 2");
}

#[test]
fn a_rollback_is_refused_also_after_a_restart() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2.signed",
        ])
        .expect_ok();
    // A different version 1 (the same genesis re-issued) and a different version 2.
    let other_v2 = setup
        .read("v2.toml")
        .replace("version = 2", "version = 2\n# re-issued");
    setup.write("v2b.toml", &other_v2);
    setup
        .sign("v2b.toml", &["a", "b"], "v2b.signed")
        .expect_ok();
    // Every command is a new process: the node's highest version came back from its store.
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2b.signed",
        ])
        .expect_refused("a different version 2");
    let mut low = setup.read("v2.toml");
    low = low.replace("version = 2", "version = 1");
    setup.write("v1b.toml", &low);
    // A document claiming version 1 with a previous hash is invalid on its own...
    setup
        .sign("v1b.toml", &["a", "b"], "v1b.signed")
        .expect_refused("version 1 has no previous version");
    // ...and the genesis given again after version 2 is simply already held.
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v1.signed",
        ])
        .expect_ok();
    // A version 2 arriving at a node on version 3 is a rollback.
    setup.next("v2.signed", "v3.toml");
    setup.sign("v3.toml", &["a", "b"], "v3.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v3.signed",
        ])
        .expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2b.signed",
        ])
        .expect_refused("rollback refused");
    assert_eq!(version_of(&setup, "crt1"), 3);
}

#[test]
fn a_wrong_previous_hash_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| {
        let start = t.find("previous = \"").unwrap_or(0) + 12;
        let mut t = t;
        t.replace_range(start..start + 64, &"ab".repeat(32));
        t
    });
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    refused(&setup, &["v2.signed"], "names previous version hash");
}

#[test]
fn below_the_old_threshold_is_refused() {
    let mut setup = standard_genesis();
    join_all(&setup);
    let c = setup.root_key("c");
    let d = setup.root_key("d");
    let (a, b) = (setup.root_public("a"), setup.root_public("b"));
    v2_doc(&setup, |t| t.replace(&a, &c).replace(&b, &d));
    // Only the new keys sign: none of version 1's roots.
    setup.sign("v2.toml", &["c", "d"], "v2.signed").expect_ok();
    refused(
        &setup,
        &["v2.signed"],
        "0 valid signature(s) by the previous version's root keys, 2 required",
    );
}

#[test]
fn below_the_new_threshold_is_refused() {
    let mut setup = standard_genesis();
    join_all(&setup);
    let c = setup.root_key("c");
    let d = setup.root_key("d");
    let (a, b) = (setup.root_public("a"), setup.root_public("b"));
    v2_doc(&setup, |t| t.replace(&a, &c).replace(&b, &d));
    setup
        .sign("v2.toml", &["a", "b", "c"], "v2.signed")
        .expect_ok();
    refused(
        &setup,
        &["v2.signed"],
        "1 valid signature(s) by its own root keys, 2 required",
    );
}

#[test]
fn the_same_keys_signature_counts_once() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t);
    setup.sign("v2.toml", &["a"], "v2.signed").expect_ok();
    edit_signed(&setup, "v2.signed", |v| {
        let first = v["signatures"][0].clone();
        if let Some(list) = v["signatures"].as_array_mut() {
            list.push(first);
        }
    });
    refused(
        &setup,
        &["v2.signed"],
        "1 repeated signature(s) by the same key counted once",
    );
}

#[test]
fn a_signature_by_a_key_outside_the_roots_does_not_count() {
    let mut setup = standard_genesis();
    join_all(&setup);
    setup.root_key("stranger");
    v2_doc(&setup, |t| t);
    setup
        .sign("v2.toml", &["a", "stranger"], "v2.signed")
        .expect_ok();
    refused(
        &setup,
        &["v2.signed"],
        "signature(s) by keys that are not the previous version's root keys not counted",
    );
}

#[test]
fn one_changed_byte_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    edit_signed(&setup, "v2.signed", |v| {
        let doc = v["document"].as_str().unwrap_or_default();
        // Change one byte of a field that keeps the document valid: the retention period.
        let changed = doc.replacen("retention_days = 1825", "retention_days = 1826", 1);
        assert_ne!(changed, doc, "the sample has retention_days = 1825");
        v["document"] = Value::String(changed);
    });
    refused(&setup, &["v2.signed"], "does not verify over this document");
}

#[test]
fn a_signature_moved_from_another_document_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    // Sign a different document and move its signatures onto v2.
    let other = setup
        .read("v2.toml")
        .replace("clock_skew_secs = 300", "clock_skew_secs = 301");
    setup.write("other.toml", &other);
    setup
        .sign("other.toml", &["a", "b"], "other.signed")
        .expect_ok();
    let other_sigs: Value = serde_json::from_str(&setup.read("other.signed")).unwrap_or_default();
    edit_signed(&setup, "v2.signed", |v| {
        v["signatures"] = other_sigs["signatures"].clone();
    });
    refused(&setup, &["v2.signed"], "belongs to another document");
}

#[test]
fn an_expired_newest_version_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| {
        let mut out = String::new();
        for line in t.lines() {
            if line.starts_with("issued_at") {
                out.push_str("issued_at = \"2020-01-01T00:00:00Z\"\n");
            } else if line.starts_with("expires_at") {
                out.push_str("expires_at = \"2021-01-01T00:00:00Z\"\n");
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    refused(
        &setup,
        &["v2.signed"],
        "version 2 expired at 2021-01-01T00:00:00Z",
    );
}

#[test]
fn an_oversized_document_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| format!("{t}\n# {}\n", "x".repeat(1024 * 1024)));
    setup
        .sign("v2.toml", &["a", "b"], "v2.signed")
        .expect_refused("larger than");
    // A signed file built by hand around an oversized document is refused too.
    let doc = setup.read("v2.toml");
    let signed = serde_json::json!({
        "format": "passerelle-signed-mechanism/1",
        "document": doc,
        "signatures": [],
    });
    setup.write("v2.signed", &signed.to_string());
    refused(&setup, &["v2.signed"], "larger than");
}

#[test]
fn malformed_or_unknown_field_toml_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    v2_doc(&setup, |t| t.replacen("[sop]", "[sop\n", 1));
    setup
        .sign("v2.toml", &["a", "b"], "v2.signed")
        .expect_refused("the configuration document is not valid: line");
    v2_doc(&setup, |t| t.replacen("[sop]", "[sop]\nmystery = true", 1));
    setup
        .sign("v2.toml", &["a", "b"], "v2.signed")
        .expect_refused("unknown field `mystery`");
    // Bypass `sign`'s own check: a hand-made signed file with an unknown field.
    let text = setup.read("v2.toml");
    let signed = serde_json::json!({
        "format": "passerelle-signed-mechanism/1",
        "document": text,
        "signatures": [],
    });
    setup.write("v2.signed", &signed.to_string());
    refused(&setup, &["v2.signed"], "unknown field `mystery`");
    // A newer schema version asks for an upgrade, whatever else the document holds.
    v2_doc(&setup, |t| t.replacen("schema = 1", "schema = 2", 1));
    setup
        .sign("v2.toml", &["a", "b"], "v2.signed")
        .expect_refused("upgrade Passerelle");
}

#[test]
fn a_node_endorsed_by_another_organisations_key_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    // A crt node endorsed with iom's key cannot be produced by `org endorse`...
    let (_, _) = setup.node("intruder", "crt");
    setup
        .run(&[
            "org",
            "endorse",
            "intruder.node.toml",
            "--key",
            "org-iom.key",
        ])
        .expect_refused("an organisation endorses only its own nodes");
    // ...so forge it: an iom-endorsed stanza relabelled as a crt node.
    let stanza = setup
        .read("intruder.node.toml")
        .replace("org = \"crt\"", "org = \"iom\"");
    setup.write("intruder-iom.node.toml", &stanza);
    let endorsed = setup
        .run(&[
            "org",
            "endorse",
            "intruder-iom.node.toml",
            "--key",
            "org-iom.key",
        ])
        .expect_ok()
        .stdout
        .replace("org = \"iom\"", "org = \"crt\"");
    v2_doc(&setup, |t| t);
    setup.append("v2.toml", &endorsed);
    setup
        .sign("v2.toml", &["a", "b"], "v2.signed")
        .expect_refused("does not verify with the current signing key of `crt`");
    let text = setup.read("v2.toml");
    setup.write(
        "v2.signed",
        &serde_json::json!({"format": "passerelle-signed-mechanism/1", "document": text, "signatures": []})
            .to_string(),
    );
    refused(
        &setup,
        &["v2.signed"],
        "must be endorsed by its own organisation",
    );
}

#[test]
fn an_org_signing_key_replaced_without_endorsement_is_refused() {
    let setup = standard_genesis();
    join_all(&setup);
    // Someone holding the ministry's keys makes new keys for iom and swaps every iom stanza:
    // the document is valid on its own, only the chain's key-history rule can catch it.
    let forged = setup
        .run(&["org", "keygen", "--org", "iom", "--out", "forged-iom.key"])
        .expect_ok()
        .stdout;
    let endorsed = setup
        .run(&[
            "org",
            "endorse",
            "iom1.node.toml",
            "--key",
            "forged-iom.key",
        ])
        .expect_ok()
        .stdout;
    v2_doc(&setup, |t| {
        let t = drop_stanzas(&t, "org_signing_keys", "org = \"iom\"");
        let t = drop_stanzas(&t, "org_encryption_keys", "org = \"iom\"");
        drop_stanzas(&t, "nodes", "org = \"iom\"")
    });
    setup.append("v2.toml", &forged);
    setup.append("v2.toml", &endorsed);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    refused(
        &setup,
        &["v2.signed"],
        "replaces the signing key of `iom` without the previous key's endorsement",
    );
    // Appending a second key without the previous key's endorsement is refused on its own.
    setup.next("v1.signed", "v2.toml");
    let unendorsed: String = forged
        .split("[[org_encryption_keys]]")
        .next()
        .unwrap_or_default()
        .to_string();
    setup.append("v2.toml", &unendorsed);
    setup
        .sign("v2.toml", &["a", "b"], "v2.signed")
        .expect_refused("must be endorsed by its previous key");
    let text = setup.read("v2.toml");
    setup.write(
        "v2.signed",
        &serde_json::json!({"format": "passerelle-signed-mechanism/1", "document": text, "signatures": []})
            .to_string(),
    );
    refused(
        &setup,
        &["v2.signed"],
        "must be endorsed by its previous key",
    );
}

#[test]
fn removing_a_node_needs_its_organisations_key_rotation_in_the_same_version() {
    let setup = standard_genesis();
    join_all(&setup);
    let crt2 = setup.run(&["--data-dir", "node-crt2", "id"]).stdout;
    let crt2 = crt2.lines().next().unwrap_or_default().to_string();
    // No view of crt2's log here and no terminal: the cut-off must be given.
    setup
        .run(&[
            "mechanism",
            "next",
            "v1.signed",
            "--remove-node",
            &crt2,
            "--out",
            "v2.toml",
        ])
        .expect_refused("give --cutoff");
    setup
        .run(&[
            "mechanism",
            "next",
            "v1.signed",
            "--remove-node",
            &crt2,
            "--cutoff",
            &format!("{crt2}=7"),
            "--out",
            "v2.toml",
        ])
        .expect_ok();
    let doc = setup.read("v2.toml");
    assert!(doc.contains("last_seq = 7"), "{doc}");
    assert!(
        !doc.contains(&format!("id = \"{crt2}\"")),
        "the node left [[nodes]]"
    );
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    refused(
        &setup,
        &["v2.signed"],
        "must rotate its key (org rotate-key)",
    );
    // With crt's next epoch appended, the removal is accepted.
    let epoch2 = setup
        .run(&["org", "rotate-key", "org-crt.key"])
        .expect_ok()
        .stdout;
    assert!(epoch2.contains("epoch = 2"), "{epoch2}");
    setup.append("v2.toml", &epoch2);
    setup.sign("v2.toml", &["a", "b"], "v2.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v2.signed",
        ])
        .expect_ok();
    // The removal is permanent: a version 3 that drops it is refused.
    setup.next("v2.signed", "v3.toml");
    let v3 = drop_stanzas(
        &setup.read("v3.toml"),
        "removals",
        &format!("node = \"{crt2}\""),
    );
    setup.write("v3.toml", &v3);
    setup.sign("v3.toml", &["a", "b"], "v3.signed").expect_ok();
    setup
        .run(&[
            "--data-dir",
            "node-crt1",
            "mechanism",
            "update",
            "v3.signed",
        ])
        .expect_refused("a removal is permanent");
}

#[test]
fn a_node_joins_only_a_chain_that_lists_it() {
    let setup = standard_genesis();
    let (_, _) = setup.node("outsider", "crt");
    setup
        .run(&["--data-dir", "node-outsider", "join", "v1.signed"])
        .expect_refused("is not in version 1 of the configuration");
    assert_eq!(setup.status("outsider")["joined"], Value::Bool(false));
    setup
        .run(&["--data-dir", "node-crt1", "join", "v1.signed"])
        .expect_ok();
    // Another mechanism's genesis is refused once joined.
    let other = standard_genesis();
    std::fs::copy(other.file("v1.signed"), setup.file("foreign.signed")).unwrap_or_default();
    setup
        .run(&["--data-dir", "node-crt1", "join", "foreign.signed"])
        .expect_refused("already belongs to mechanism");
}
