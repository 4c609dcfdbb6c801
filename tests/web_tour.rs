//! Issue 15: every page of the web UI, in French, English and Arabic, as the people who use
//! it see it — a caseworker at the referring partner, a nurse at the receiving one, a clerk at
//! a partner the referral does not concern, a coordinator — in real headless Chromium. Each
//! page is saved as a screenshot (target/screenshots/tour-PAGE-LANG.png); a French or Arabic
//! page shows no text of the English catalogue that its own catalogue does not also use; the
//! bystander is told the referral is encrypted for the organisations involved.

use std::collections::BTreeMap;

use passerelle_tests::{Daemon, ReferralSend, Setup, mechanism, wait_for};

use crate::browser::Browser;
use crate::web::{AichaWithACase, add_user, login, screenshots};

const CATALOGUES: [(&str, &str); 3] = [
    ("en", include_str!("../node/i18n/en.ftl")),
    ("fr", include_str!("../node/i18n/fr.ftl")),
    ("ar", include_str!("../node/i18n/ar.ftl")),
];

/// A catalogue's messages (key → text); our catalogues keep one message per line.
fn catalogue(lang: &str) -> BTreeMap<String, String> {
    let (_, text) = CATALOGUES.iter().find(|(l, _)| *l == lang).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

/// The literal pieces of a message, between its placeables (`{ $x }`), trimmed.
fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let (before, after) = match rest.split_once('{') {
            Some((b, a)) => (b, a.split_once('}').map_or("", |(_, a)| a)),
            None => (rest, ""),
        };
        let piece = before.trim_matches(|c: char| !c.is_alphanumeric());
        if !piece.is_empty() {
            out.push(piece.to_string());
        }
        if after.is_empty() {
            return out;
        }
        rest = after;
    }
}

/// Whether `needle` occurs in `hay` as whole words (no letter glued to either end).
fn has_words(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphabetic) && !after.is_some_and(char::is_alphabetic)
    })
}

/// The English catalogue's texts that must not show in a page in `lang`: every piece of four
/// characters or more with a Latin letter, unless `lang`'s own catalogue uses it too (a name,
/// "Passerelle", a word both languages share).
fn english_only(lang: &str) -> Vec<String> {
    let own: String = catalogue(lang).into_values().collect::<Vec<_>>().join("\n");
    let mut found: Vec<String> = catalogue("en")
        .values()
        .flat_map(|v| pieces(v))
        .filter(|p| p.chars().count() >= 4 && p.chars().any(|c| c.is_ascii_alphabetic()))
        .filter(|p| !has_words(&own, p))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Mas refers Lina's case to mdm, which accepts; iom holds the referral as ciphertext only.
struct Tour {
    /// Holds the nodes' directories while the tour runs.
    _setup: Setup,
    _daemons: Vec<Daemon>,
    /// (node name, its web address).
    bases: BTreeMap<&'static str, String>,
    case: String,
    referral: String,
}

fn three_partners() -> Tour {
    let setup = mechanism(
        &["mas", "mdm", "iom"],
        &[("aicha", "mas"), ("nurse", "mdm"), ("clerk", "iom")],
        &[],
    );
    let profiles = format!("{}/../config/profiles", env!("CARGO_MANIFEST_DIR"));
    for (node, org) in [("aicha", "mas"), ("nurse", "mdm"), ("clerk", "iom")] {
        setup
            .node_run(node, &["map", "import", &format!("{profiles}/{org}.toml")])
            .expect_ok();
    }
    add_user(&setup, "aicha", "aicha", "caseworker", "aicha-password-1");
    add_user(&setup, "aicha", "coord", "coordinator", "coord-password-1");
    add_user(&setup, "nurse", "nurse", "caseworker", "nurse-password-1");
    add_user(&setup, "clerk", "clerk", "caseworker", "clerk-password-1");
    let case = setup.open_case("aicha", "Lina", "general");
    let send = ReferralSend::new(&case, "mdm", "health").share("first_name,age,languages");
    let referral = setup
        .send_referral("aicha", &send)
        .expect_ok()
        .stdout
        .trim()
        .to_string();
    let hub = Daemon::start(setup.path(), "aicha", &[], &[]);
    let nurse = Daemon::start(setup.path(), "nurse", &[&hub.addr], &[]);
    let clerk = Daemon::start(setup.path(), "clerk", &[&hub.addr], &[]);
    for node in ["nurse", "clerk"] {
        wait_for(30, &format!("the referral at {node}"), || {
            let run = setup.node_run(node, &["referral", "show", &referral[..12]]);
            (run.code == Some(0)).then_some(())
        });
    }
    for step in ["ack", "accept"] {
        setup
            .node_run("nurse", &["referral", step, &referral[..12]])
            .expect_ok();
    }
    let bases = BTreeMap::from([
        ("aicha", format!("http://{}", hub.api)),
        ("nurse", format!("http://{}", nurse.api)),
        ("clerk", format!("http://{}", clerk.api)),
    ]);
    Tour {
        _setup: setup,
        _daemons: vec![hub, nurse, clerk],
        bases,
        case,
        referral,
    }
}

/// Opens `path` at `base`, checks it is a page of the UI in `lang` without English left in it,
/// and saves its screenshot as `tour-NAME-LANG.png`.
fn visit(b: &Browser, base: &str, path: &str, name: &str, lang: &str, english: &[String]) {
    b.goto(&format!("{base}{path}"));
    b.find("h1");
    let html_lang = b.script("return document.documentElement.lang;");
    assert_eq!(html_lang, serde_json::json!(lang), "{name} in {lang}");
    if lang == "ar" {
        assert!(b.source().contains("dir=\"rtl\""), "{name}: right to left");
    }
    assert_eq!(b.count(".error"), 0, "{name} ({lang}): {}", b.text("main"));
    let text = b
        .script("return document.body.innerText;")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let left: Vec<&String> = english.iter().filter(|e| has_words(&text, e)).collect();
    assert!(
        left.is_empty(),
        "{name} ({lang}) shows English: {left:?}\n{text}"
    );
    b.screenshot(&screenshots().join(format!("tour-{name}-{lang}.png")));
}

/// The poster of a site: its own page, in the language asked for, compact on screen.
fn the_poster_is_compact(b: &Browser, a: &str, lang: &str) {
    b.goto(&format!("{a}/posters/medenine?lang={lang}"));
    b.find("section.site");
    let height = b.script("return document.documentElement.scrollHeight;");
    let height = height.as_u64().unwrap_or(u64::MAX);
    println!("poster of medenine in {lang}: {height} px high on a 1280 px wide screen");
    assert!(height < 3000, "the on-screen poster is {height} px high");
    b.screenshot(&screenshots().join(format!("tour-poster-{lang}.png")));
}

/// The coordinator's indicators: every chart label drawn whole, inside its chart, in either
/// direction.
fn the_coordinators_charts(b: &Browser, a: &str, lang: &str, english: &[String]) {
    login(b, a, "coord", "coord-password-1");
    visit(b, a, "/indicators", "indicators", lang, english);
    let cut = b.script(
        "return [...document.querySelectorAll('svg')].flatMap(svg => {
           const w = svg.viewBox.baseVal.width;
           return [...svg.querySelectorAll('text')].filter(t => {
             const r = t.getBBox(); return r.x < 0 || r.x + r.width > w;
           }).map(t => t.textContent);
         });",
    );
    assert_eq!(cut, serde_json::json!([]), "{lang}: chart labels cut off");
}

#[test]
fn every_page_in_three_languages_without_english_left_in_french_or_arabic() {
    let tour = three_partners();
    let (case, referral) = (tour.case.as_str(), tour.referral.as_str());
    let b = Browser::start();
    for lang in ["fr", "ar", "en"] {
        let english = if lang == "en" {
            Vec::new()
        } else {
            english_only(lang)
        };
        let t = catalogue(lang);
        let a = &tour.bases["aicha"];
        b.goto(&format!("{a}/login"));
        b.clear_cookies();
        b.goto(&format!("{a}/lang/{lang}"));
        visit(&b, a, "/login", "login", lang, &english);

        login(&b, a, "aicha", "aicha-password-1");
        for (path, name) in [
            ("/cases".to_string(), "cases"),
            ("/cases/new".to_string(), "case-new"),
            (format!("/cases/{case}"), "case"),
            (format!("/cases/{case}/refer"), "refer"),
            ("/referrals?box=outbox".to_string(), "outbox"),
            (format!("/referrals/{referral}"), "referral-sender"),
            ("/directory".to_string(), "directory"),
            ("/posters".to_string(), "posters"),
            ("/gaps".to_string(), "gaps"),
            ("/status".to_string(), "status"),
        ] {
            visit(&b, a, &path, name, lang, &english);
        }
        b.goto(&format!("{a}/cases/{case}"));
        let page = b.text("main");
        assert!(
            page.contains(&t["timeline-case-opened"]),
            "{lang}: the timeline: {page}"
        );

        the_poster_is_compact(&b, a, lang);
        the_coordinators_charts(&b, a, lang, &english);

        let n = &tour.bases["nurse"];
        b.goto(&format!("{n}/lang/{lang}"));
        login(&b, n, "nurse", "nurse-password-1");
        visit(&b, n, "/referrals", "inbox", lang, &english);
        visit(
            &b,
            n,
            &format!("/referrals/{referral}"),
            "referral-receiver",
            lang,
            &english,
        );
        let main = b.text("main");
        assert!(
            main.contains("Lina"),
            "the nurse reads what was shared: {main}"
        );

        // The clerk at iom holds the referral, sealed: the page says for whom.
        let c = &tour.bases["clerk"];
        b.goto(&format!("{c}/lang/{lang}"));
        login(&b, c, "clerk", "clerk-password-1");
        visit(
            &b,
            c,
            &format!("/referrals/{referral}"),
            "referral-bystander",
            lang,
            &english,
        );
        assert_eq!(b.text("#sealed"), t["detail-not-addressed"], "{lang}");
        assert!(!b.source().contains("Lina"), "nothing of the person at iom");
        assert_eq!(b.count("#case-elsewhere"), 0, "nothing was sent to iom");
    }
}

/// A catalogue's sentence with its placeables filled, as the page shows it.
fn said(lang: &str, key: &str, args: &[(&str, &str)]) -> String {
    let mut text = catalogue(lang)[key].clone();
    for (name, value) in args {
        text = text.replace(&format!("{{ ${name} }}"), value);
    }
    text
}

/// The page's error, checked against the sentence `lang`'s catalogue gives and for English
/// left in it.
fn refused_as(b: &Browser, lang: &str, expected: &str, english: &[String]) {
    let error = b.text(".error");
    assert_eq!(error, expected, "in {lang}");
    let left: Vec<&String> = english.iter().filter(|e| has_words(&error, e)).collect();
    assert!(left.is_empty(), "{error} ({lang}) shows English: {left:?}");
}

/// Issue 15: what the engine refuses for what was typed (an id that is none, a field too
/// long, a note too long) is said in the page's language — the engine's refusals are typed,
/// not English sentences — and the refused form keeps what was typed.
#[test]
fn the_engines_refusals_are_said_in_the_pages_language() {
    let aicha = AichaWithACase::start();
    let (setup, a, b, case) = (&aicha.setup, &aicha.base, &aicha.browser, &aicha.case);
    for lang in ["fr", "ar"] {
        let english = english_only(lang);
        b.goto(&format!("{a}/lang/{lang}"));

        b.goto(&format!("{a}/cases/zz"));
        refused_as(
            b,
            lang,
            &said(lang, "refusal-not_an_id", &[("id", "zz")]),
            &english,
        );

        // A first name longer than a short field may be: the field named as the form names it.
        b.goto(&format!("{a}/cases/new"));
        let long_name = "A".repeat(201);
        b.fill("#first_name", &long_name);
        b.click("input[name=need_health]");
        b.click("#consent_given");
        b.fill("#explained_by", "Aïcha");
        b.click("#save-case");
        let problem = said(lang, "problem-longer_than", &[("n", "200")]);
        let label = said(lang, "field-first-name", &[]);
        let expected = said(
            lang,
            "refusal-field",
            &[("field", &label), ("problem", &problem)],
        );
        refused_as(b, lang, &expected, &english);
        let kept = b.script("return document.querySelector('#first_name').value;");
        assert_eq!(kept, serde_json::json!(long_name), "the form kept the name");

        // A note longer than the engine takes: refused in the page's language, nothing sent.
        b.goto(&format!("{a}/cases/{case}/refer"));
        b.click("#other-partners input[value=mdm]");
        b.script("document.querySelector('#note').value = 'n'.repeat(8001);");
        b.click("#send-referral");
        refused_as(b, lang, &said(lang, "refusal-note_too_long", &[]), &english);
        b.screenshot(&screenshots().join(format!("ui-refused-note-{lang}.png")));
    }
    assert_eq!(
        setup.node_json("aicha", &["referral", "list", "--json"]),
        serde_json::json!([]),
        "a refused referral sends nothing"
    );
    assert_eq!(
        setup
            .node_json("aicha", &["case", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(1),
        "a refused case saves nothing"
    );
}

#[test]
fn the_english_pieces_are_found_as_whole_words() {
    assert_eq!(
        pieces("Referral sent to { $org } on { $at }."),
        ["Referral sent to", "on"]
    );
    assert!(has_words("Statut : Sent, vu", "Sent"));
    assert!(!has_words("Présente", "sent"));
    let fr = english_only("fr");
    assert!(fr.iter().any(|p| p == "Received"), "{fr:?}");
    assert!(
        !fr.iter().any(|p| p == "Passerelle"),
        "a word both catalogues use is not English only"
    );
}
