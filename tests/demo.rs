//! The README's first command: `passerelle demo` runs the whole scenario and stops with
//! `--exit`; the coordination report then runs on what it left behind.

use passerelle_tests::run_in;

#[test]
fn the_demo_runs_scenario_3_and_the_report_runs_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("demo");
    let out = run_in(
        dir.path(),
        &["demo", "--exit", "--dir", nodes.to_str().unwrap()],
    )
    .expect_ok();
    for needle in [
        "signed configuration version 1 (threshold 2)",
        "A referral before status determination is refused",
        "records the status determination",
        "sees it in her inbox",
        "holds the referral only as ciphertext (readable: false)",
        "marks its shelter full",
        "imports a bundle carried by a driver",
        "no mental health care in Zarzis",
        "Run it without --exit to log in",
        "passerelle --data-dir",
    ] {
        assert!(
            out.stdout.contains(needle),
            "the demo says `{needle}`:\n{}",
            out.stdout
        );
    }
    // Each node says which it is; the story's steps are its people's, not a tool's.
    for name in ["mas-medenine", "mdm-medenine", "crt-zarzis"] {
        assert!(
            out.stderr.contains(&format!("Passerelle node {name} (")),
            "{name} says it runs:\n{}",
            out.stderr
        );
    }
    assert!(!out.stdout.contains("by bench"), "{}", out.stdout);
    let node = nodes.join("mas-medenine");
    a_closed_pipe_is_no_crash(&node);
    let report = run_in(
        dir.path(),
        &[
            "--data-dir",
            node.to_str().unwrap(),
            "report",
            "--format",
            "json",
        ],
    )
    .expect_ok();
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["referrals"], 1);
    assert_eq!(report["acceptance_rate_pct"], 100.0);
    assert_eq!(report["by_status"][0][0], "completed");
    let csv = run_in(
        dir.path(),
        &[
            "--data-dir",
            node.to_str().unwrap(),
            "report",
            "--format",
            "csv",
        ],
    )
    .expect_ok();
    assert!(
        csv.stdout.contains("receiving partner,count\nMdM,1"),
        "{}",
        csv.stdout
    );
    // Nothing in the report names the boy.
    assert!(!csv.stdout.contains("Youssef"));
}

/// A reader that closes the pipe before the output comes (`status | true`) is no crash.
fn a_closed_pipe_is_no_crash(node: &std::path::Path) {
    let mut child = std::process::Command::new(passerelle_tests::bin())
        .args(["--data-dir", node.to_str().unwrap(), "status"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let piped = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&piped.stderr);
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(
        piped.status.code(),
        Some(141),
        "the shell's code for SIGPIPE: {said}"
    );
}
