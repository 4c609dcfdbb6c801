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
    let rows: Vec<Vec<String>> = network["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["label"]),
                s(&p["org"]),
                if p["connected"].as_bool() == Some(true) {
                    "connected".into()
                } else {
                    "not connected".into()
                },
                readable(&p["last_seen"]),
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
                &["PEER", "ORG", "STATE", "LAST SEEN", "TO SEND", "TO RECEIVE"],
                &rows
            )
        );
    }
}
