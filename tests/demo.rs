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
        "password",
    ] {
        assert!(
            out.stdout.contains(needle),
            "the demo says `{needle}`:\n{}",
            out.stdout
        );
    }
    let node = nodes.join("mas-medenine");
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
