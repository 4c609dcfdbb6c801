//! What the command line prints for a person carries no terminal escape (issue 10, item 12):
//! notes, names and user names written by other nodes or users reach the terminal with their
//! control characters and escape sequences replaced, while `--json` keeps the exact text. User
//! names with control characters are refused.

use passerelle_tests::{ReferralSend, mechanism};

/// Clears the screen when a terminal prints it raw.
const CLEAR_SCREEN: &str = "\u{1b}[2J";
/// Reverses the rest of the line when a terminal prints it raw.
const RIGHT_TO_LEFT_OVERRIDE: &str = "\u{202e}";

#[track_caller]
fn assert_clean(what: &str, out: &str) {
    assert!(
        !out.contains('\u{1b}') && !out.contains(RIGHT_TO_LEFT_OVERRIDE),
        "{what} printed a raw escape: {out:?}"
    );
    assert!(
        out.contains('\u{fffd}'),
        "{what} shows where something was taken out: {out:?}"
    );
}

#[test]
fn notes_and_names_reach_the_terminal_without_escapes_issue_10() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    // Case data refuses control characters where it is written, but not bidi overrides.
    let case = setup.open_case("aicha", &format!("Lina{RIGHT_TO_LEFT_OVERRIDE}"), "general");
    let note = format!("call back{CLEAR_SCREEN} today{RIGHT_TO_LEFT_OVERRIDE}");
    setup
        .node_run("aicha", &["case", "note", &case, "--note", &note])
        .expect_ok();
    let referral = ReferralSend::new(&case, "mdm", "health")
        .urgency("urgent")
        .share("first_name")
        .note(&note);
    setup.send_referral("aicha", &referral).expect_ok();

    shows_are_clean(&setup, &case);
    // JSON stays exact: the note comes back as it was written.
    let json = setup.node_json("aicha", &["case", "show", &case, "--json"]);
    let texts: Vec<String> = json["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["detail"]["note"].as_str().map(str::to_string))
        .collect();
    assert!(texts.iter().any(|t| t.contains(&note)), "{texts:?}");

    audit_user_is_clean(&setup);
    names_with_escapes_are_refused(&setup);
}

/// `case show`, `case list`, `referral list` and `referral show` print no escape.
fn shows_are_clean(setup: &passerelle_tests::Setup, case: &str) {
    let shown = setup.node_run("aicha", &["case", "show", case]).expect_ok();
    assert_clean("case show", &shown.stdout);
    assert!(shown.stdout.contains("call back"), "{}", shown.stdout);
    let listed = setup.node_run("aicha", &["case", "list"]).expect_ok();
    assert_clean("case list", &listed.stdout);
    let referrals = setup
        .node_run("aicha", &["referral", "list"])
        .expect_ok()
        .stdout;
    assert!(!referrals.contains('\u{1b}'), "{referrals:?}");
    let id = referrals
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let referral = setup
        .node_run("aicha", &["referral", "show", &id])
        .expect_ok();
    assert_clean("referral show", &referral.stdout);
}

/// The audit log's user comes from whoever ran the command: cleaned too.
fn audit_user_is_clean(setup: &passerelle_tests::Setup) {
    setup
        .run(&[
            "--data-dir",
            "node-aicha",
            "--user",
            &format!("mallory{CLEAR_SCREEN}"),
            "case",
            "list",
        ])
        .expect_ok();
    let audit = setup.node_run("aicha", &["audit"]).expect_ok();
    assert_clean("audit", &audit.stdout);
    assert!(audit.stdout.contains("mallory"), "{}", audit.stdout);
}

/// Accounts: a name with a control character or an override is refused.
fn names_with_escapes_are_refused(setup: &passerelle_tests::Setup) {
    setup.write("pw", "a-long-enough-password");
    for name in [
        format!("ai{CLEAR_SCREEN}cha"),
        format!("ai{RIGHT_TO_LEFT_OVERRIDE}cha"),
    ] {
        setup
            .node_run(
                "aicha",
                &[
                    "user",
                    "add",
                    &name,
                    "--role",
                    "caseworker",
                    "--password-file",
                    "pw",
                ],
            )
            .expect_refused("a user name is 1 to 64 letters");
    }
}
