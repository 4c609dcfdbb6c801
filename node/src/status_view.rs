//! `passerelle status` for a person: configuration and expiry, keys, peers, what is pending.

use serde_json::Value;

use crate::datadir::NodePublic;
use crate::table;

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn readable(v: &Value) -> String {
    passerelle_core::time_fmt::parse_rfc3339(&s(v))
        .map(passerelle_core::time_fmt::readable)
        .unwrap_or_else(|| "never".into())
}

pub fn print(public: &NodePublic, st: &Value) {
    println!("Node {} ({}, {})", public.id, public.label, public.org);
    if !st["config_version"].is_u64() {
        println!("Not joined: run `passerelle join GENESIS.signed`.");
        return;
    }
    println!("Mechanism     {}", s(&st["mechanism"]));
    println!(
        "Configuration version {} of mechanism {}",
        st["config_version"],
        s(&st["mechanism_id"]).chars().take(12).collect::<String>()
    );
    if st["config_expired"].as_bool() == Some(true) {
        println!(
            "EXPIRED       since {}: this node keeps its data and keeps syncing, but creates no new case events until the ministry's next version arrives.",
            readable(&st["config_expires_at"])
        );
        if !st["expiry_override_until"].is_null() {
            println!(
                "Override      an operator allowed case events until {}",
                readable(&st["expiry_override_until"])
            );
        }
    } else {
        println!("Valid until   {}", readable(&st["config_expires_at"]));
    }
    if st["read_only"].as_bool() == Some(true) {
        println!(
            "READ-ONLY     restored from a backup: waiting to learn this node's own latest events from a peer."
        );
    }
    let epochs: Vec<String> = st["org_key_epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    if epochs.is_empty() {
        println!(
            "Org keys      none yet: this node cannot read its organisation's cases until another node of it shares them."
        );
    } else {
        println!("Org keys      epochs {}", epochs.join(", "));
    }
    println!(
        "Log           {} events; {} held back; {} waiting for dependencies; {} not readable yet",
        st["events"], st["held_back"], st["waiting_for_dependencies"], st["unreadable_yet"]
    );
    for e in st["equivocations"].as_array().into_iter().flatten() {
        println!(
            "EQUIVOCATION  node {} signed two different events at sequence {} (evidence kept)",
            s(&e["node"]),
            e["seq"]
        );
    }
    let sync = &st["sync"];
    if let Some(digest) = sync["digest"].as_str() {
        println!(
            "Sync digest   {} ({} authors, {} events in their logs): nodes showing the same digest hold the same logs",
            digest.chars().take(16).collect::<String>(),
            sync["authors"],
            sync["events_in_logs"]
        );
    }
    let network = &st["network"];
    if network["running"].as_bool() != Some(true) {
        println!("Network       the daemon is not running (`passerelle run`).");
        return;
    }
    for addr in network["listen"].as_array().into_iter().flatten() {
        println!("Listening     {}", s(addr));
    }
    if let Some(api) = network["api"].as_str() {
        println!("Web UI / API  http://{api}/");
    }
    let cut = network["rounds_cut_short"].as_u64().unwrap_or(0);
    let limited = network["requests_rate_limited"].as_u64().unwrap_or(0);
    if cut + limited > 0 {
        println!(
            "Bounds        {cut} sync rounds cut short, {limited} peer requests over their rate refused (see the log)"
        );
    }
    let rows: Vec<Vec<String>> = network["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["label"]),
                s(&p["org"]),
                state(p),
                heard(p),
                p["rtt_ms"]
                    .as_f64()
                    .map(|ms| format!("{ms:.0} ms"))
                    .unwrap_or_default(),
                match p["in_sync"].as_bool() {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "unknown".into(),
                },
                s(&p["they_lack"]),
                s(&p["we_lack"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("Peers         none known yet");
    } else {
        println!();
        print!(
            "{}",
            table::render(
                &[
                    "PEER",
                    "ORG",
                    "STATE",
                    "LAST HEARD",
                    "RTT",
                    "SAME DIGEST",
                    "TO SEND",
                    "TO RECEIVE"
                ],
                &rows
            )
        );
    }
}

/// The peer's state, honestly: a connection that carried nothing for a while is `silent`,
/// not `connected`.
fn state(p: &Value) -> String {
    match p["state"].as_str() {
        Some(st) if !st.is_empty() => {
            let n = p["connections"].as_u64().unwrap_or(0);
            if n > 1 {
                format!("{st} ({n} connections)")
            } else {
                st.to_string()
            }
        }
        _ if p["connected"].as_bool() == Some(true) => "connected".into(),
        _ => "not connected".into(),
    }
}

/// When the peer was last heard from: "4 s ago" for recent ones, the date otherwise.
fn heard(p: &Value) -> String {
    match p["heard_secs_ago"].as_u64() {
        Some(secs) if secs < 120 => format!("{secs} s ago"),
        Some(secs) if secs < 7200 => format!("{} min ago", secs / 60),
        _ => readable(&p["last_seen"]),
    }
}
