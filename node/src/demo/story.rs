//! Steps 4 to 7 of the demo, through the running nodes' APIs: scenario 3 (the case, the status
//! determination, the urgent health referral and its follow-up), the shelter filling up, the
//! field site's bundles, and the coordination report.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use passerelle_core::bundle;
use passerelle_core::engine::ReferralView;
use passerelle_core::event::{Transition, Urgency};
use passerelle_core::fold::Status;
use passerelle_core::map::{Capacity, Entry};
use passerelle_core::report::Report;
use passerelle_core::sim::Sim;
use time::OffsetDateTime;

use crate::rpc::Request;
use crate::rpc::case::{CaseOpened, EventMade};
use crate::rpc::map::{MapChanged, Search};
use crate::rpc::operations::{Exported, Imported};
use crate::rpc::referral::{Direction, ReferralSent, Send, StepRequest, Stepped};
use crate::samples;

use super::{Demo, FIELD};

/// The urgent health referral for Youssef's case.
fn health_referral(case: &str) -> Request {
    Request::ReferralSend(Send {
        case: case.to_string(),
        to_org: "mdm".into(),
        category: "health".into(),
        urgency: Urgency::Urgent,
        share: ["first_name", "age", "languages", "health"]
            .map(String::from)
            .to_vec(),
        note: "needs a doctor today".into(),
        emergency_override: None,
    })
}

/// Step 4, scenario 3: the case, the status determination, the search and the referral;
/// returns the referral's id.
pub(super) async fn scenario_three(demo: &mut Demo<'_>) -> Result<String> {
    let aicha = demo.daemon("mas-medenine");
    let data = Box::new(samples::youssef(demo.now));
    let case: CaseOpened = aicha.call(Request::CaseOpen { data }).await?;
    let case_id = case.case;
    let early = aicha.call::<ReferralSent>(health_referral(&case_id)).await;
    demo.step(format!(
        "Aïcha opens a case for a 16-year-old boy travelling alone, with his and his guardian's consent: case {}.",
        &case_id[..12]
    ));
    if let Err(e) = early {
        demo.step(format!(
            "A referral before status determination is refused: {e}"
        ));
    }
    determine(demo, &case_id).await?;
    let search = Search {
        category: Some("health".into()),
        site: Some("medenine".into()),
        language: Some("ar".into()),
        ..Search::default()
    };
    let hits: Vec<Entry> = demo
        .daemon("mas-medenine")
        .call(Request::MapSearch(search))
        .await?;
    demo.step(format!(
        "Aïcha searches the map for health care in Médenine in Arabic: {} services; first: {} — {}.",
        hits.len(),
        hits.first().map_or("?", |h| h.org_name.as_str()),
        hits.first().map_or("?", |h| h.service.name.en.as_str())
    ));
    let referral = loop {
        match demo
            .daemon("mas-medenine")
            .call::<ReferralSent>(health_referral(&case_id))
            .await
        {
            Ok(sent) => break sent.referral,
            Err(e) if e.to_string().contains("status determination") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    demo.step(format!(
        "Aïcha sends an urgent referral to Médecins du Monde, sharing only first name, age, language and symptoms: referral {}.",
        &referral[..12]
    ));
    Ok(referral)
}

/// The delegate's node receives the case (it is addressed to the authority) and records the
/// status determination.
async fn determine(demo: &mut Demo<'_>, case_id: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        let request = Request::Determine {
            id: case_id.to_string(),
            case_type: "unaccompanied_child".into(),
            determined: true,
            note: "alone, 16, confirmed".into(),
        };
        match demo.daemon("dpe-medenine").call::<EventMade>(request).await {
            Ok(_) => break,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    demo.step(
        "The child protection delegate's node records the status determination: unaccompanied child.",
    );
    Ok(())
}

/// A step of the referral's life with a note.
fn referral_step(id: &str, transition: Transition, note: &str, outcome: Option<&str>) -> Request {
    Request::ReferralStep(StepRequest {
        id: id.to_string(),
        transition,
        reason: None,
        note: note.to_string(),
        outcome: outcome.map(str::to_string),
    })
}

/// The nurse sees the referral, takes it through its life; Aïcha and UNHCR see the outcome.
pub(super) async fn follow_up(demo: &mut Demo<'_>, referral: &str) -> Result<()> {
    let sent_at = Instant::now();
    let nurse = demo.daemon("mdm-medenine");
    loop {
        let inbox: Vec<ReferralView> = nurse
            .call(Request::ReferralList {
                direction: Direction::Inbox,
                status: None,
                open: false,
                limit: None,
            })
            .await?;
        if !inbox.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = sent_at.elapsed().as_millis();
    for (t, note, outcome) in [
        (Transition::Acknowledge, "seen", None),
        (Transition::Accept, "appointment at 14:00", None),
        (
            Transition::Complete,
            "seen by the doctor",
            Some("treated; follow-up in a week"),
        ),
    ] {
        nurse
            .call::<Stepped>(referral_step(referral, t, note, outcome))
            .await?;
    }
    demo.step(format!(
        "The nurse sees it in her inbox {seen} ms later; she reads only what was shared."
    ));
    demo.step("She acknowledges, accepts, and records the outcome after the visit.");
    let show = || Request::ReferralShow {
        id: referral.to_string(),
    };
    loop {
        let out: ReferralView = demo.daemon("mas-medenine").call(show()).await?;
        if out.status == Status::Completed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    demo.step("Aïcha sees each step. No other partner can read anything about him.");
    let started = Instant::now();
    let unhcr_view = loop {
        match demo
            .daemon("unhcr-tunis")
            .call::<ReferralView>(show())
            .await
        {
            Ok(v) if v.status == Status::Completed => break Some(v),
            _ if started.elapsed() > Duration::from_secs(20) => break None,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    if let Some(v) = unhcr_view {
        demo.step(format!(
            "UNHCR's node holds the referral only as ciphertext (readable: {}), but counts it: {} {} referral, {}.",
            v.readable,
            v.urgency.as_str(),
            v.category.as_deref().unwrap_or("(sensitive)"),
            v.status.as_str()
        ));
    }
    Ok(())
}

/// Steps 5 and 6, scenarios 2 and 4: the Zarzis shelter fills up; the field site catches up
/// by a bundle on a USB stick, and its work comes back the same way.
pub(super) async fn shelter_and_field(demo: &mut Demo<'_>, sim: &Sim) -> Result<()> {
    let full = Request::MapUpdate {
        org: None,
        service: "crt-shelter-zarzis".into(),
        capacity: Some(Capacity::Full),
        verify: true,
    };
    demo.daemon("crt-zarzis").call::<MapChanged>(full).await?;
    demo.step("The Red Crescent at Zarzis marks its shelter full; the change reaches every node.");
    let root = demo.root;
    let field_node = sim.node(FIELD.0)?.clone();
    let to_field = root.join("to-field.bundle");
    let export = Request::BundleExport {
        out: to_field.clone(),
        for_node: Some(field_node.id()),
    };
    demo.daemon("mas-medenine").call::<Exported>(export).await?;
    let (imported, field_case) = field_site(sim, &root.join(FIELD.0), &to_field, demo.now)?;
    demo.step(format!(
        "The field site at Ras Jedir, reachable by nobody, imports a bundle carried by a driver: {} events, {} new.",
        imported.events, imported.admitted
    ));
    let import = Request::BundleImport {
        path: root.join("from-field.bundle"),
    };
    let back: Imported = demo.daemon("mas-medenine").call(import).await?;
    demo.step(format!(
        "Its own work comes back the same way: {} new event(s) at Médenine, including IOM's case {} (which only IOM can read).",
        back.admitted,
        &field_case.to_hex()[..12]
    ));
    Ok(())
}

/// The field site's node, in this process: imports the bundle, opens a case, and writes a
/// bundle of everything for the way back (`from-field.bundle` beside the one it read).
fn field_site(
    sim: &Sim,
    field_dir: &Path,
    to_field: &Path,
    now: OffsetDateTime,
) -> Result<(bundle::ImportReport, passerelle_core::event::EventId)> {
    let m = sim.mechanism()?;
    let field_node = sim.node(FIELD.0)?.clone();
    let mut engine = sim.engine_at(FIELD.0, &field_dir.join("store.redb"), true, now)?;
    let input = std::io::BufReader::new(std::fs::File::open(to_field)?);
    let report = bundle::import(
        &mut engine,
        &field_node.secrets.age,
        input,
        OffsetDateTime::now_utc(),
        &mut |_, _| {},
    )?;
    let data = samples::field_case(now);
    let case = engine.open_case(data, "iom-field", OffsetDateTime::now_utc())?;
    let back = to_field.with_file_name("from-field.bundle");
    let out = std::io::BufWriter::new(std::fs::File::create(&back)?);
    bundle::export(
        &engine,
        None,
        &m.nodes().map(|x| x.recipient.clone()).collect::<Vec<_>>(),
        out,
        OffsetDateTime::now_utc(),
        &mut |_, _| {},
    )?;
    Ok((report, case))
}

/// Step 7: the coordination report.
pub(super) async fn coordination_report(demo: &mut Demo<'_>) -> Result<()> {
    let request = Request::Report {
        from: whole_seconds(demo.now - time::Duration::days(1)),
        to: whole_seconds(OffsetDateTime::now_utc() + time::Duration::hours(1)),
    };
    let report: Report = demo.daemon("mas-medenine").call(request).await?;
    let gap = report
        .gaps
        .iter()
        .any(|x| x.site == "zarzis" && x.category == "mental_health");
    demo.step(format!(
        "The coordination report counts {} referral(s), acceptance {}%; the gap view shows {} mental health care in Zarzis.",
        report.referrals,
        report
            .acceptance_rate_pct
            .map_or("—".into(), |x| format!("{x:.0}")),
        if gap { "no" } else { "some" }
    ));
    Ok(())
}

/// A time to the second, as dates travel in requests.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}
