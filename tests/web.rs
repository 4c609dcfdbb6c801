//! The web UI in real headless Chromium: a caseworker logs in, opens a case and refers it at
//! one node; the receiving partner's UI shows it in its inbox and accepts it; the first node's
//! UI shows the acceptance. Requests with a foreign Host header or without the CSRF token are
//! refused. Screenshots of the main pages are saved in target/screenshots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passerelle_tests::{Daemon, ReferralSend, Setup, mechanism};

use crate::browser::Browser;

pub(crate) fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn add_user(setup: &Setup, node: &str, name: &str, role: &str, password: &str) {
    let file = format!("{name}.password");
    setup.write(&file, password);
    setup
        .node_run(
            node,
            &[
                "user",
                "add",
                name,
                "--role",
                role,
                "--password-file",
                &file,
            ],
        )
        .expect_ok();
}

pub(crate) fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("#user", user);
    b.fill("#password", password);
    b.click("#login-submit");
    let started = Instant::now();
    while b.url().ends_with("/login") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "login failed:\n{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_referral_made_in_the_ui_is_accepted_in_the_partners_ui() {
    let (setup, hub, nurse) = two_partners_with_accounts();
    let (a, n) = (
        format!("http://{}", hub.api),
        format!("http://{}", nurse.api),
    );
    let shots = screenshots();
    let b = Browser::start();

    let case_url = aicha_opens_a_case(&b, &a, &shots);
    let referral_url = aicha_refers_it_to_mdm(&b, &shots);
    the_nurse_accepts_it(&b, &n, &shots);
    aichas_ui_shows_the_acceptance(&b, &a, &shots, &referral_url);
    the_arabic_ui_translates_statuses_and_the_timeline(&b, &a, &shots, &referral_url, &case_url);
    b.goto(&format!("{a}/lang/fr"));
    the_coordinator_sees_the_indicators_not_the_cases(&b, &a, &shots);

    // The audit log names the users who saw the data.
    let audit = setup
        .node_run("aicha", &["audit", "--json"])
        .expect_ok()
        .stdout;
    assert!(audit.contains("\"user\": \"aicha\""), "{audit}");
}

/// Two partners, `mas` (aicha's node, the hub) and `mdm` (the nurse's), each with its
/// services on the map and its web accounts, both running.
fn two_partners_with_accounts() -> (Setup, Daemon, Daemon) {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    let profiles = format!("{}/../config/profiles", env!("CARGO_MANIFEST_DIR"));
    setup
        .node_run("aicha", &["map", "import", &format!("{profiles}/mas.toml")])
        .expect_ok();
    setup
        .node_run("nurse", &["map", "import", &format!("{profiles}/mdm.toml")])
        .expect_ok();
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    add_user(&setup, "aicha", "coord", "coordinator", "coord-password-1");
    add_user(&setup, "nurse", "nurse", "caseworker", "nurse-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    (setup, hub, nurse)
}

/// Whether the form's warning `id` shows now.
fn warned(b: &Browser, id: &str) -> bool {
    b.script(&format!("return !document.getElementById('{id}').hidden;")) == serde_json::json!(true)
}

/// Aïcha logs in and opens a case; its page's address.
fn aicha_opens_a_case(b: &Browser, a: &str, shots: &Path) -> String {
    login(b, a, "aicha", "aicha-password-1");
    b.screenshot(&shots.join("ui-inbox-empty.png"));
    b.goto(&format!("{a}/cases/new"));
    b.click("#case_type option[value=general]");
    b.fill("#first_name", "Youssef");
    b.fill("#age", "16");
    b.click("input[name=lang_ar]");
    b.click("#sex option[value=m]");
    b.fill("#health", "fever and cough for three days");
    b.fill("#phone", "+216 00 000 000");
    b.click("input[name=need_health]");
    // A 16-year-old: the form asks for his consent and his guardian's as they are ticked.
    assert!(warned(b, "consent-warning") && warned(b, "guardian-warning"));
    b.click("#consent_given");
    assert!(!warned(b, "consent-warning") && warned(b, "guardian-warning"));
    b.click("#guardian_given");
    assert!(!warned(b, "guardian-warning"));
    b.fill("#guardian_name", "centre guardian");
    b.fill("#explained", "referral to a health partner");
    b.screenshot(&shots.join("ui-new-case.png"));
    b.click("#save-case");
    b.find("#refer-link");
    assert!(b.url().contains("/cases/"), "{}", b.url());
    assert!(b.source().contains("Youssef"));
    let case_url = b.url();
    b.screenshot(&shots.join("ui-case.png"));
    case_url
}

/// The referral: the map proposes MdM for health care; she shares only some fields. The
/// referral's page's address.
fn aicha_refers_it_to_mdm(b: &Browser, shots: &Path) -> String {
    b.click("#refer-link");
    b.click("#category option[value=health]");
    b.click("#find-partners");
    // The nurse's profile reaches aicha's node by sync: wait for the proposal.
    let started = Instant::now();
    while !b.source().contains("value=\"mdm\"") {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "MdM is not proposed:\n{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(300));
        b.click("#find-partners");
    }
    b.click("input[name=to_org][value=mdm]");
    b.click("#urgency option[value=urgent]");
    for f in ["first_name", "age", "languages", "health"] {
        b.click(&format!("input[name=share_{f}]"));
    }
    b.fill("#note", "needs a doctor today");
    b.screenshot(&shots.join("ui-refer.png"));
    b.click("#send-referral");
    b.find("#referral-status");
    assert_eq!(
        b.text("#referral-status"),
        "envoyée",
        "the status in French"
    );
    b.url()
}

/// The nurse sees it in her inbox, with only what was shared, and accepts it.
fn the_nurse_accepts_it(b: &Browser, n: &str, shots: &Path) {
    login(b, n, "nurse", "nurse-password-1");
    let started = Instant::now();
    loop {
        b.goto(&format!("{n}/referrals?box=inbox"));
        if b.source().contains("data-referral=") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not in the inbox:\n{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    b.screenshot(&shots.join("ui-inbox.png"));
    // The row names the person (the first name was shared) and its deadline, in the site's
    // time zone, with the time left.
    assert_eq!(b.text("#referrals tbody .person"), "Youssef");
    let row = b.text("#referrals tbody tr");
    assert!(row.contains("UTC+1") && row.contains(" h"), "{row}");
    b.click("#referrals tbody a");
    let page = b.source();
    assert!(
        page.contains("Youssef") && page.contains("fever"),
        "the shared fields"
    );
    assert!(
        !page.contains("+216 00 000 000"),
        "the phone was not shared"
    );
    // The case stays at the sender's: no link to it here, but where it is kept.
    assert_eq!(
        b.count("#case-link a"),
        0,
        "no link to a case not held here"
    );
    assert!(
        b.text("#case-elsewhere").contains("MAS"),
        "{}",
        b.text("#case-elsewhere")
    );
    // Sent: acknowledge, accept or decline; nothing else.
    offered(b, &["#step-ack", "#step-accept", "#step-decline"]);
    b.click("#step-ack");
    assert_eq!(
        b.text("#notice"),
        "Réception de l'orientation confirmée",
        "a confirmation of the step"
    );
    offered(b, &["#step-accept", "#step-decline"]);
    b.fill("#accept-note", "appointment at 14:00");
    b.click("#step-accept");
    let started = Instant::now();
    while b.text("#referral-status") != "acceptée" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.text("#notice"), "Orientation acceptée");
    offered(b, &["#step-complete"]);
    // The history: sent, then acknowledged, then accepted, each with its organisation and
    // the nurse's account, in that order.
    let steps = b.text("#history tbody");
    let (ack, acc) = (
        steps.find("Réception de l'orientation confirmée"),
        steps.find("Orientation acceptée"),
    );
    assert!(ack.is_some() && acc.is_some() && ack < acc, "{steps}");
    assert_eq!(b.count("#history tr.step"), 2, "{steps}");
    assert!(
        steps.contains("nurse") && steps.contains("appointment at 14:00"),
        "{steps}"
    );
    b.screenshot(&shots.join("ui-referral-accepted.png"));
}

/// Exactly these step buttons are on the page (of the five there are).
fn offered(b: &Browser, expected: &[&str]) {
    b.find(expected[0]);
    for id in [
        "#step-ack",
        "#step-accept",
        "#step-decline",
        "#step-complete",
        "#step-withdraw",
    ] {
        assert_eq!(
            b.count(id),
            usize::from(expected.contains(&id)),
            "{id} offered: {}",
            b.source()
        );
    }
}

/// Aïcha's UI shows the acceptance; then screenshots of her outbox and other pages.
fn aichas_ui_shows_the_acceptance(b: &Browser, a: &str, shots: &Path, referral_url: &str) {
    let started = Instant::now();
    loop {
        b.goto(referral_url);
        if b.text("#referral-status") == "acceptée" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The sender holds the case: a link to it; the referral is still open, so she may
    // withdraw it, after ticking the confirmation.
    b.find("#case-link a");
    offered(b, &["#step-withdraw"]);
    b.find("#withdraw-confirm");
    b.goto(&format!("{a}/referrals?box=outbox"));
    b.screenshot(&shots.join("ui-outbox.png"));
    for (page, file) in [
        ("/directory?category=health", "ui-directory.png"),
        ("/gaps", "ui-gaps.png"),
        ("/status", "ui-status.png"),
        ("/posters", "ui-posters.png"),
    ] {
        b.goto(&format!("{a}{page}"));
        b.screenshot(&shots.join(file));
    }
}

/// In Arabic the page turns right to left, and (issue 11) statuses and the timeline come from
/// the translations, not from the engine.
fn the_arabic_ui_translates_statuses_and_the_timeline(
    b: &Browser,
    a: &str,
    shots: &Path,
    referral_url: &str,
    case_url: &str,
) {
    b.goto(&format!("{a}/lang/ar"));
    b.goto(&format!("{a}/referrals?box=outbox"));
    assert!(b.source().contains("dir=\"rtl\""));
    b.screenshot(&shots.join("ui-outbox-ar.png"));
    b.goto(referral_url);
    assert_eq!(b.text("#referral-status"), "مقبولة", "the status in Arabic");
    b.goto(case_url);
    // The phone number reads left to right in the right-to-left page: its "+" is drawn to
    // the left of its last digit.
    let plus_first = b.script(
        "const e = [...document.querySelectorAll('dd bdi')].find(e => e.textContent.includes('+216'));
         if (!e) { return 'missing'; }
         const t = e.firstChild, r = document.createRange();
         r.setStart(t, 0); r.setEnd(t, 1); const plus = r.getBoundingClientRect().left;
         r.setStart(t, t.length - 1); r.setEnd(t, t.length); const last = r.getBoundingClientRect().left;
         return plus < last;",
    );
    assert_eq!(
        plus_first,
        serde_json::json!(true),
        "the phone as drawn in Arabic"
    );
    b.screenshot(&shots.join("ui-case-ar.png"));
    let page = b.source();
    for arabic in [
        "فتح الملف",
        "إرسال الإحالة إلى",
        "قبول الإحالة",
        "بواسطة aicha",
    ] {
        assert!(
            page.contains(arabic),
            "the timeline in Arabic: {arabic}\n{page}"
        );
    }
    for english in ["case opened", "referral sent", ">accepted<", "by aicha"] {
        assert!(
            !page.contains(english),
            "no English in the Arabic UI: {english}"
        );
    }
}

/// The coordinator sees the indicators, not the cases.
fn the_coordinator_sees_the_indicators_not_the_cases(b: &Browser, a: &str, shots: &Path) {
    login(b, a, "coord", "coord-password-1");
    b.goto(&format!("{a}/indicators"));
    assert_eq!(b.text("#total"), "1");
    assert!(b.source().contains("<svg"), "charts");
    b.screenshot(&shots.join("ui-indicators.png"));
    b.goto(&format!("{a}/cases"));
    assert!(
        !b.source().contains("Youssef"),
        "no case data for a coordinator"
    );
}

/// Issue 11: a step that a rule of the mechanism refuses is told in the page's language — the
/// rule translated, not the node's English sentence. The withdraw button of a page loaded
/// before the referral was withdrawn elsewhere asks for a step its status no longer allows.
#[test]
fn a_rule_violation_is_shown_in_french_and_in_arabic_issue_11() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let case = setup.open_case("aicha", "Lina", "general");
    let send = || {
        let referral = ReferralSend::new(&case, "mdm", "health");
        let out = setup.send_referral("aicha", &referral).expect_ok().stdout;
        out.trim().to_string()
    };
    let referrals = [send(), send()];
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let a = format!("http://{}", hub.api);
    let b = Browser::start();
    login(&b, &a, "aicha", "aicha-password-1");
    for (lang, referral, refused, rule) in [
        (
            "fr",
            &referrals[0],
            "Refusé par une règle du mécanisme",
            "n'est pas permise dans le statut actuel de l'orientation",
        ),
        (
            "ar",
            &referrals[1],
            "رفضته قاعدة من قواعد الآلية",
            "هذه الخطوة غير مسموح بها في الوضع الحالي للإحالة",
        ),
    ] {
        b.goto(&format!("{a}/lang/{lang}"));
        b.goto(&format!("{a}/referrals/{referral}"));
        b.find("#step-withdraw");
        // Withdrawn meanwhile (by the command line, through the daemon): the button is stale.
        setup
            .node_run("aicha", &["referral", "withdraw", referral])
            .expect_ok();
        b.click("#withdraw-confirm");
        b.click("#step-withdraw");
        b.find(".flash");
        let flash = b.text(".flash");
        assert!(flash.contains(refused), "{lang}: {flash}");
        assert!(
            flash.contains(rule),
            "{lang}: the rule, translated: {flash}"
        );
        assert!(
            !flash.contains("rule of the mechanism") && !flash.contains("not allowed"),
            "{lang}: not the English sentence: {flash}"
        );
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

fn set_cookie(r: &ureq::http::Response<ureq::Body>, prefix: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix))
        .map(str::to_string)
}

fn csrf_in(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// How a login over plain HTTP ended.
#[derive(Debug)]
struct LoginAnswer {
    status: u16,
    /// `passerelle_session_PORT=ID` when it succeeded.
    session: Option<String>,
    /// The Retry-After header of a throttled attempt, in seconds.
    retry_after: Option<u64>,
}

fn try_login(base: &str, user: &str, password: &str) -> LoginAnswer {
    let agent = agent();
    let mut r = agent.get(format!("{base}/login")).call().unwrap();
    let nonce_cookie = set_cookie(&r, "passerelle_login_")
        .and_then(|v| v.split(';').next().map(str::to_string))
        .unwrap();
    let nonce = csrf_in(&r.body_mut().read_to_string().unwrap());
    let r = agent
        .post(format!("{base}/login"))
        .header("Cookie", &nonce_cookie)
        .send_form([
            ("user", user),
            ("password", password),
            ("csrf", nonce.as_str()),
        ])
        .unwrap();
    LoginAnswer {
        status: r.status().as_u16(),
        session: set_cookie(&r, "passerelle_session_")
            .and_then(|v| v.split(';').next().map(str::to_string)),
        retry_after: r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    }
}

/// Logs in over plain HTTP and returns the session cookie and the page's CSRF token.
fn http_session(base: &str, user: &str, password: &str) -> (String, String) {
    let answer = try_login(base, user, password);
    assert_eq!(answer.status, 303, "logged in: {answer:?}");
    let session = answer.session.unwrap();
    let mut page = agent()
        .get(format!("{base}/cases/new"))
        .header("Cookie", &session)
        .call()
        .unwrap();
    let csrf = csrf_in(&page.body_mut().read_to_string().unwrap());
    (session, csrf)
}

/// GET `path` with a session cookie: the status, and where a redirect points.
fn get_with(base: &str, session: &str, path: &str) -> (u16, String) {
    let r = agent()
        .get(format!("{base}{path}"))
        .header("Cookie", session)
        .call()
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (r.status().as_u16(), location)
}

const TO_LOGIN: (u16, &str) = (303, "/login");

#[test]
fn sessions_end_when_their_account_is_removed_or_changed_issue_10() {
    let setup = mechanism(&["mas"], &[("aicha", "mas")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let base = format!("http://{}", hub.api);
    let page = |session: &str, path: &str| {
        let (status, location) = get_with(&base, session, path);
        (
            status,
            if status == 303 {
                location
            } else {
                String::new()
            },
        )
    };
    let to_login = (TO_LOGIN.0, TO_LOGIN.1.to_string());

    // A new password (`user add` again, through the running daemon): the session ends at once,
    // and the old password no longer logs in.
    let (first, _) = http_session(&base, "aicha", "aicha-password-1");
    assert_eq!(page(&first, "/cases").0, 200);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-2");
    assert_eq!(page(&first, "/cases"), to_login, "after a new password");
    assert_eq!(try_login(&base, "aicha", "aicha-password-1").status, 401);

    // A new role: the caseworker's session ends; logged in again, the coordinator sees no case.
    let (second, _) = http_session(&base, "aicha", "aicha-password-2");
    assert_eq!(page(&second, "/cases").0, 200);
    add_user(&setup, "aicha", "aicha", "coordinator", "aicha-password-2");
    assert_eq!(page(&second, "/cases"), to_login, "after a role change");
    let coordinator = try_login(&base, "aicha", "aicha-password-2")
        .session
        .unwrap();
    assert_eq!(page(&coordinator, "/cases").0, 403);
    assert_eq!(page(&coordinator, "/indicators").0, 200);

    // Removal: the session can neither read nor write, and no case is created.
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-3");
    let (third, csrf) = http_session(&base, "aicha", "aicha-password-3");
    assert_eq!(page(&third, "/cases").0, 200);
    setup
        .node_run("aicha", &["user", "remove", "aicha"])
        .expect_ok();
    assert_eq!(page(&third, "/cases"), to_login, "after removal");
    assert_eq!(page(&coordinator, "/indicators"), to_login);
    let r = agent()
        .post(format!("{base}/cases"))
        .header("Cookie", &third)
        .send_form([
            ("csrf", csrf.as_str()),
            ("case_type", "general"),
            ("site", "medenine"),
            ("first_name", "Ghost"),
            ("consent_given", "1"),
            ("explained_by", "x"),
        ])
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/login")
    );
    assert_eq!(
        setup
            .node_json("aicha", &["case", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(0),
        "a removed account opened no case"
    );
}

#[test]
fn logout_clears_the_session_cookie_and_ends_the_session_issue_10() {
    let setup = mechanism(&["mas"], &[("aicha", "mas")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let base = format!("http://{}", hub.api);
    let (session, csrf) = http_session(&base, "aicha", "aicha-password-1");
    let port = hub.api.rsplit(':').next().unwrap();
    let name = format!("passerelle_session_{port}");
    assert!(session.starts_with(&format!("{name}=")), "{session}");

    let r = agent()
        .post(format!("{base}/logout"))
        .header("Cookie", &session)
        .send_form([("csrf", csrf.as_str())])
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cleared = set_cookie(&r, &format!("{name}=")).unwrap_or_default();
    assert!(
        cleared.starts_with(&format!("{name}=;")) && cleared.contains("Max-Age=0"),
        "the session cookie of this port is cleared: {cleared:?}"
    );
    // The server forgot the session too: the old id opens nothing.
    let (status, location) = get_with(&base, &session, "/cases");
    assert_eq!((status, location.as_str()), TO_LOGIN);
}

/// The local API's status request, timed.
fn status_latency(api: &str, token: &str) -> Duration {
    let started = Instant::now();
    let r = agent()
        .post(format!("http://{api}/api/v1/rpc"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(serde_json::json!({"user": "probe", "request": {"op": "status"}}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    started.elapsed()
}

/// Runs `attempts` logins at once while a probe times status requests; returns the logins'
/// answers, how long they took in all, and the slowest status.
fn flood(hub: &Daemon, attempts: &[(String, String)]) -> (Vec<LoginAnswer>, Duration, Duration) {
    let base = format!("http://{}", hub.api);
    let token = hub.token();
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let (answers, slowest) = std::thread::scope(|scope| {
        let probe = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                slowest = slowest.max(status_latency(&hub.api, &token));
                std::thread::sleep(Duration::from_millis(20));
            }
            slowest
        });
        let logins: Vec<_> = attempts
            .iter()
            .map(|(user, password)| scope.spawn(|| try_login(&base, user, password)))
            .collect();
        let answers: Vec<LoginAnswer> = logins.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (answers, probe.join().unwrap())
    });
    (answers, started.elapsed(), slowest)
}

#[test]
fn a_login_flood_is_throttled_and_hashed_off_the_engine_thread_issue_10() {
    // node/src/web/throttle.rs: LOGIN_FREE_FAILURES_PER_ACCOUNT.
    const FREE_FAILURES: usize = 5;
    let setup = mechanism(&["mas"], &[("aicha", "mas")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let base = format!("http://{}", hub.api);
    let token = hub.token();
    let mut idle: Vec<Duration> = (0..5).map(|_| status_latency(&hub.api, &token)).collect();
    idle.sort();

    // Twenty wrong logins at once, each on its own account (under every throttle): every one
    // is hashed. Were the hashing on the engine thread, a status request would wait behind
    // them; off it, the status is answered while they run.
    let spread: Vec<(String, String)> = (0..20)
        .map(|i| (format!("nobody{i}"), "wrong-password-1".to_string()))
        .collect();
    let (answers, spread_took, spread_slowest) = flood(&hub, &spread);
    eprintln!(
        "status {:?} idle (median); {:?} at worst during 20 parallel logins that took {spread_took:?}",
        idle[2], spread_slowest
    );
    assert!(answers.iter().all(|a| a.status == 401), "{answers:?}");
    assert!(
        spread_slowest < spread_took / 2,
        "a status request waited {spread_slowest:?} while the logins took {spread_took:?}"
    );

    // Forty-eight wrong logins at once on one account: past the free failures the throttle
    // answers 429 without hashing, and the status stays quick.
    let burst: Vec<(String, String)> = (0..48)
        .map(|_| ("aicha".to_string(), "wrong-password-1".to_string()))
        .collect();
    let (answers, burst_took, burst_slowest) = flood(&hub, &burst);
    let wrong = answers.iter().filter(|a| a.status == 401).count();
    let throttled = answers.iter().filter(|a| a.status == 429).count();
    eprintln!(
        "48 parallel logins on one account in {burst_took:?}: {wrong} checked, {throttled} throttled; status {burst_slowest:?} at worst"
    );
    assert_eq!(wrong + throttled, 48, "{answers:?}");
    assert!(
        (FREE_FAILURES..=FREE_FAILURES + 4).contains(&wrong),
        "{wrong} passwords checked"
    );
    assert!(
        answers
            .iter()
            .filter(|a| a.status == 429)
            .all(|a| a.retry_after.is_some_and(|s| s >= 1)),
        "{answers:?}"
    );
    assert!(
        burst_slowest < Duration::from_secs(1),
        "status took {burst_slowest:?} during the burst"
    );

    // The right password works once the wait is over (and not before: it is a real lockout).
    let started = Instant::now();
    let session = loop {
        let answer = try_login(&base, "aicha", "aicha-password-1");
        match (answer.status, answer.retry_after) {
            (303, _) => break answer.session.unwrap(),
            (429, Some(wait)) => {
                assert!(
                    wait <= 16,
                    "the wait stays short after a few failures: {wait} s"
                );
                std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(100));
            }
            other => panic!("unexpected answer {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still locked out"
        );
    };
    assert_eq!(get_with(&base, &session, "/cases").0, 200);
}

#[test]
fn forged_requests_are_refused() {
    let setup = mechanism(&["mas"], &[("aicha", "mas")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let base = format!("http://{}", hub.api);
    let (session, csrf) = http_session(&base, "aicha", "aicha-password-1");
    let agent = agent();
    let form = |token: &str| {
        vec![
            ("csrf", token.to_string()),
            ("case_type", "general".to_string()),
            ("site", "medenine".to_string()),
            ("first_name", "Forged".to_string()),
            ("consent_given", "1".to_string()),
            ("explained_by", "x".to_string()),
        ]
    };
    // Without the CSRF token (or with a wrong one): refused, nothing created.
    for token in ["", "0000"] {
        let r = agent
            .post(format!("{base}/cases"))
            .header("Cookie", &session)
            .send_form(form(token))
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "CSRF token `{token}`");
    }
    // A foreign Host header (DNS rebinding): refused before any handler.
    let r = agent
        .post(format!("{base}/cases"))
        .header("Cookie", &session)
        .header("Host", "attacker.example:4011")
        .send_form(form(&csrf))
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
    let r = agent
        .get(format!("{base}/login"))
        .header("Host", "attacker.example")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
    // Without a session: to the login page.
    let r = agent.get(format!("{base}/cases")).call().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    // A wrong password: refused.
    let mut r = agent.get(format!("{base}/login")).call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert!(!body.contains("aicha-password-1"));
    let json = setup.node_json("aicha", &["case", "list", "--json"]);
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(0),
        "nothing was created"
    );
    // The genuine request works.
    let r = agent
        .post(format!("{base}/cases"))
        .header("Cookie", &session)
        .send_form(form(&csrf))
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "a real form goes through");
    assert_eq!(
        setup
            .node_json("aicha", &["case", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn a_case_manager_withdraws_consent_and_erases_a_case_in_the_ui_issue_12() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let case = setup.open_case("aicha", "Lina", "general");
    let referral = ReferralSend::new(&case, "mdm", "health").share("first_name");
    let referral = setup
        .send_referral("aicha", &referral)
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let a = format!("http://{}", hub.api);
    let b = Browser::start();
    login(&b, &a, "aicha", "aicha-password-1");
    b.goto(&format!("{a}/lang/fr"));

    // The referral says what mdm did not receive, in the page's language.
    b.goto(&format!("{a}/referrals/{referral}"));
    let not_shared = b.text("#not-shared");
    assert!(
        not_shared.contains("Non transmis") && not_shared.contains("Téléphone"),
        "{not_shared}"
    );

    // The person withdraws consent for mdm: the open referral is withdrawn, the timeline says so.
    b.goto(&format!("{a}/cases/{case}"));
    b.click("#data-protection summary");
    b.click("input[name=org][value=mdm]");
    b.click("#withdraw-consent");
    b.wait_source("Consentement retiré pour");
    let r = setup.node_json("aicha", &["referral", "show", &referral[..12], "--json"]);
    assert_eq!(r["status"], "withdrawn", "{r}");

    // The server asks for the confirmation itself (not only the browser's `required`).
    let (session, csrf) = http_session(&a, "aicha", "aicha-password-1");
    let refused = agent()
        .post(format!("{a}/cases/{case}/erase"))
        .header("Cookie", &session)
        .send_form([("csrf", csrf.as_str()), ("reason", "person_asked")])
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    setup
        .node_run("aicha", &["case", "show", &case[..12]])
        .expect_ok();

    // Erased with its reason: back to the list, where the case is no more.
    b.goto(&format!("{a}/cases/{case}"));
    b.click("#data-protection summary");
    b.click("#erase-confirm");
    b.click("#erase-case");
    b.wait_url("/cases");
    assert!(!b.source().contains("Lina"), "the erased case is listed");
    setup
        .node_run("aicha", &["case", "show", &case[..12]])
        .expect_refused("erased");
    let audit = setup.node_run("aicha", &["audit"]).expect_ok().stdout;
    for action in ["case.consent_withdrawn", "case.erase"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(action) && l.contains("aicha")),
            "the audit names {action} by aicha: {audit}"
        );
    }
}

fn the_form_kept_what_was_typed(b: &Browser) {
    let kept = b.script(
        "const v = s => document.querySelector(s);
         return [v('#first_name').value, v('#age').value, v('#sex').value,
                 v('input[name=lang_ti]').checked, v('#languages_other').value,
                 v('#health').value, v('input[name=need_health]').checked,
                 v('#consent_given').checked, v('#case_type').value,
                 !v('#guardian-warning').hidden];",
    );
    assert_eq!(
        kept,
        serde_json::json!([
            "Amina",
            "15",
            "f",
            true,
            "tig",
            "asthma, needs an inhaler",
            true,
            true,
            "general",
            true
        ]),
        "what was typed"
    );
}

/// Issue 15: the new-case form offers languages and sex from lists, checks the SOP's consent
/// rules as the caseworker types (a child's case type, an age under the SOP's, the person's own
/// consent), refuses to save a child's case without the guardian's consent unless the caseworker
/// says it will come later, and keeps everything typed when it refuses. The referring node then
/// refuses the child's referral until the guardian's consent is recorded.
#[test]
fn the_new_case_form_checks_consent_as_typed_and_keeps_what_was_typed() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let a = format!("http://{}", hub.api);
    let b = Browser::start();
    login(&b, &a, "aicha", "aicha-password-1");
    b.goto(&format!("{a}/lang/fr"));
    b.goto(&format!("{a}/cases/new"));
    assert!(
        !warned(&b, "consent-warning") && !warned(&b, "guardian-warning"),
        "nothing to warn of before anything is typed"
    );
    // The case type alone makes a child's case.
    b.click("#case_type option[value=unaccompanied_child]");
    assert!(warned(&b, "guardian-warning") && warned(&b, "consent-warning"));
    b.click("#case_type option[value=general]");
    assert!(!warned(&b, "guardian-warning"));
    // So does an age under the SOP's 18, as it is typed.
    b.fill("#first_name", "Amina");
    b.fill("#age", "15");
    assert!(warned(&b, "guardian-warning"));
    b.fill("#age", "19");
    assert!(!warned(&b, "guardian-warning"));
    b.fill("#age", "15");
    b.click("#sex option[value=f]");
    b.click("input[name=lang_ti]");
    b.fill("#languages_other", "tig");
    b.fill("#health", "asthma, needs an inhaler");
    b.click("input[name=need_health]");
    b.click("#consent_given");
    assert!(!warned(&b, "consent-warning"));
    let languages = b.text("#languages");
    assert!(
        languages.contains("Tigrigna") && languages.contains("Arabe"),
        "languages named in French, not as codes: {languages}"
    );
    b.script("document.getElementById('guardian-warning').scrollIntoView({block: 'center'});");
    b.screenshot(&screenshots().join("ui-new-case-warning-fr.png"));

    // Sent without the guardian's consent: refused, and nothing typed is lost.
    b.click("#save-case");
    let error = b.text(".error");
    assert!(error.contains("tuteur"), "{error}");
    assert!(b.url().ends_with("/cases"), "still the form: {}", b.url());
    the_form_kept_what_was_typed(&b);
    assert_eq!(
        setup.node_json("aicha", &["case", "list", "--json"]),
        serde_json::json!([]),
        "a refused form saves nothing"
    );

    // Saved once the caseworker says the guardian's consent comes later.
    b.click("#save_without_guardian");
    b.click("#save-case");
    b.find("#refer-link");
    let page = b.text("main");
    assert!(
        page.contains("Tigrigna, tig") && page.contains("Féminin"),
        "languages and sex named: {page}"
    );
    let case = b.url().rsplit('/').next().unwrap().to_string();

    // The referring node holds the rule: no referral of the child without the guardian,
    // said in the page's language.
    b.goto(&format!("{a}/cases/{case}/refer"));
    b.click("#other-partners input[value=mdm]");
    b.click("#send-referral");
    let refused = b.text(".error");
    assert!(refused.contains("consentement d'un tuteur"), "{refused}");
    let referral = ReferralSend::new(&case, "mdm", "health").share("first_name");
    setup
        .send_referral("aicha", &referral)
        .expect_refused("guardian");
}

/// Aïcha, a caseworker at mas (mdm the other partner), logged in to her node's UI in a real
/// browser, with Samir's general case open.
pub(crate) struct AichaWithACase {
    pub setup: Setup,
    pub _hub: Daemon,
    pub base: String,
    pub browser: Browser,
    pub case: String,
}

impl AichaWithACase {
    pub fn start() -> Self {
        let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
        add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
        let case = setup.open_case("aicha", "Samir", "general");
        let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
        let base = format!("http://{}", hub.api);
        let browser = Browser::start();
        login(&browser, &base, "aicha", "aicha-password-1");
        Self {
            setup,
            _hub: hub,
            base,
            browser,
            case,
        }
    }
}

/// Issue 15: a partner without a profile on the map can still be referred to (listed apart,
/// to be called first); sending without a partner says so, in the page's language, and keeps
/// what was typed.
#[test]
fn a_partner_off_the_map_is_offered_and_a_missing_choice_keeps_the_form() {
    let aicha = AichaWithACase::start();
    let (a, b, case) = (&aicha.base, &aicha.browser, &aicha.case);
    b.goto(&format!("{a}/lang/fr"));
    b.goto(&format!("{a}/cases/{case}/refer"));
    assert!(
        b.text("#referral-form")
            .contains("Aucun partenaire de l'annuaire")
    );
    assert_eq!(b.count("#other-partners[open] input[value=mdm]"), 1);
    b.fill("#note", "à appeler avant");
    b.click("input[name=share_first_name]");
    b.click("#send-referral");
    assert!(b.text(".error").contains("Choisissez le partenaire"));
    let kept = b.script(
        "return [document.querySelector('#note').value,
                 document.querySelector('input[name=share_first_name]').checked];",
    );
    assert_eq!(kept, serde_json::json!(["à appeler avant", true]));
    b.click("#other-partners input[value=mdm]");
    b.click("#send-referral");
    b.find("#referral-status");
    assert_eq!(b.text("#referral-status"), "envoyée");
}

/// Issue 15: notifications while the UI is open, from the node itself (server-sent events):
/// the nurse's open inbox hears of a new referral, Aïcha's open outbox of the nurse's
/// acceptance. Each appears without reloading the page; the time it took is printed.
#[test]
fn an_open_page_is_told_of_a_new_referral_and_of_a_partners_step() {
    let setup = mechanism(&["mas", "mdm"], &[("aicha", "mas"), ("nurse", "mdm")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    add_user(&setup, "nurse", "nurse", "caseworker", "nurse-password-1");
    let case = setup.open_case("aicha", "Lina", "general");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let (a, n) = (
        format!("http://{}", hub.api),
        format!("http://{}", nurse.api),
    );
    let b = Browser::start();
    let shots = screenshots();

    login(&b, &n, "nurse", "nurse-password-1");
    b.goto(&format!("{n}/referrals?box=inbox"));
    assert_eq!(b.count(".notification"), 0);
    let sent = Instant::now();
    let referral = setup
        .send_referral("aicha", &ReferralSend::new(&case, "mdm", "health"))
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    b.find(".notification.new");
    eprintln!(
        "new referral: notified {:?} after it was sent (through sync)",
        sent.elapsed()
    );
    let text = b.text(".notification.new");
    assert!(text.starts_with("Nouvelle orientation reçue"), "{text}");
    assert!(
        !text.contains("Lina"),
        "no personal data in a notification: {text}"
    );
    b.screenshot(&shots.join("ui-notification-fr.png"));
    // It leads to the referral.
    b.click(".notification.new a");
    b.find("#referral-status");
    assert!(b.url().contains(&referral[..12]), "{}", b.url());

    login(&b, &a, "aicha", "aicha-password-1");
    b.goto(&format!("{a}/lang/ar"));
    b.goto(&format!("{a}/referrals?box=outbox"));
    // The page has subscribed once its script ran: wait for the stream to be open.
    b.find("#notifications");
    std::thread::sleep(Duration::from_millis(500));
    let stepped = Instant::now();
    setup
        .node_run("nurse", &["referral", "accept", &referral])
        .expect_ok();
    b.find(".notification.step");
    eprintln!(
        "a partner's step: notified {:?} after it was taken (through sync)",
        stepped.elapsed()
    );
    let text = b.text(".notification.step");
    assert!(text.starts_with("قبول الإحالة"), "in Arabic: {text}");
    b.screenshot(&shots.join("ui-notification-ar.png"));
    // Closing it removes it.
    b.click(".notification.step button.close");
    let started = Instant::now();
    while b.count(".notification.step") > 0 {
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A step that closes the referral is news too, though the stream watches only the open
    // referrals (it looks up again the ones that were open at its last look).
    setup
        .node_run("nurse", &["referral", "complete", &referral])
        .expect_ok();
    b.find(".notification.step");
    let text = b.text(".notification.step");
    assert!(
        text.starts_with("اكتمال الإحالة"),
        "completed, in Arabic: {text}"
    );
}

/// The notification stream is for a live session of a role that sees cases, bounded per
/// session.
#[test]
fn the_notification_stream_needs_a_session_and_is_bounded() {
    let setup = mechanism(&["mas"], &[("aicha", "mas")], &[]);
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    add_user(&setup, "aicha", "coord", "coordinator", "coord-password-1");
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let a = format!("http://{}", hub.api);
    let status = |session: &str| {
        let mut req = agent().get(&format!("{a}/events"));
        if !session.is_empty() {
            req = req.header("Cookie", session);
        }
        let r = req.call().unwrap();
        (r.status().as_u16(), r)
    };
    assert_eq!(status("").0, 401, "no session, no stream");
    let (coord, _) = http_session(&a, "coord", "coord-password-1");
    assert_eq!(status(&coord).0, 403, "a coordinator sees no referrals");
    let (aicha, _) = http_session(&a, "aicha", "aicha-password-1");
    let mut open = Vec::new();
    for _ in 0..4 {
        let (code, r) = status(&aicha);
        assert_eq!(code, 200);
        assert_eq!(
            r.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        open.push(r);
    }
    assert_eq!(status(&aicha).0, 429, "a fifth stream for one session");
    drop(open);
    let started = Instant::now();
    while status(&aicha).0 != 200 {
        // A closed stream is noticed at its next write (a keep-alive comes every 15 s).
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "streams given back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
