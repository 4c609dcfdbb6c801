//! `passerelle status` for a person: configuration and expiry, keys, peers, what is pending.

use crate::cli::table;
use crate::datadir::NodePublic;
use crate::rpc::{PeerView, StatusAnswer};

/// An RFC 3339 time as a person reads it, or `never`.
fn readable(text: Option<&str>) -> String {
    text.and_then(passerelle_core::time_fmt::parse_rfc3339)
        .map(passerelle_core::time_fmt::readable)
        .unwrap_or_else(|| "never".into())
}

/// A number that may be absent (blank then).
fn count(n: Option<u64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

pub fn print(public: &NodePublic, st: &StatusAnswer) {
    println!("Node {} ({}, {})", public.id, public.label, public.org);
    let Some(version) = st.config_version else {
        println!("Not joined: run `passerelle join GENESIS.signed`.");
        return;
    };
    // What the node does not know yet is left blank.
    println!("Mechanism     {}", st.mechanism.clone().unwrap_or_default());
    println!(
        "Configuration version {version} of mechanism {}",
        st.mechanism_id
            .as_deref()
            .unwrap_or_default()
            .chars()
            .take(12)
            .collect::<String>()
    );
    if st.config_expired == Some(true) {
        println!(
            "EXPIRED       since {}: this node keeps its data and keeps syncing, but creates no new case events until the ministry's next version arrives.",
            readable(st.config_expires_at.as_deref())
        );
        if let Some(until) = &st.expiry_override_until {
            println!(
                "Override      an operator allowed case events until {}",
                readable(Some(until))
            );
        }
    } else {
        println!(
            "Valid until   {}",
            readable(st.config_expires_at.as_deref())
        );
    }
    if st.read_only {
        println!(
            "READ-ONLY     restored from a backup: waiting to learn this node's own latest events from a peer."
        );
    }
    print_keys_and_log(st);
    for r in &st.removed_nodes {
        println!(
            "Removed       node {} of {}: its events after #{} are refused everywhere (held here up to #{}); it is no longer a peer",
            r.node, r.org, r.last_seq, r.held_seq
        );
    }
    print_network(st);
}

fn print_keys_and_log(st: &StatusAnswer) {
    let epochs: Vec<String> = st.org_key_epochs.iter().map(ToString::to_string).collect();
    if epochs.is_empty() {
        println!(
            "Org keys      none yet: this node cannot read its organisation's cases until another node of it shares them."
        );
    } else {
        println!("Org keys      epochs {}", epochs.join(", "));
    }
    println!(
        "Log           {} events; {} held back; {} waiting for dependencies; {} not readable yet",
        st.events, st.held_back, st.waiting_for_dependencies, st.unreadable_yet
    );
    for e in &st.equivocations {
        println!(
            "EQUIVOCATION  node {} signed two different events at sequence {} (evidence kept)",
            e.node, e.seq
        );
    }
    let sync = &st.sync;
    println!(
        "Sync digest   {} ({} authors, {} events in their logs): nodes showing the same digest hold the same logs",
        sync.digest.chars().take(16).collect::<String>(),
        sync.authors,
        sync.events_in_logs
    );
}

fn print_network(st: &StatusAnswer) {
    let network = &st.network;
    if !network.running {
        println!("Network       the daemon is not running (`passerelle run`).");
        return;
    }
    for addr in &network.listen {
        println!("Listening     {addr}");
    }
    if let Some(api) = &network.api {
        println!("Web UI / API  http://{api}/");
    }
    let cut = network.rounds_cut_short;
    let limited = network.requests_rate_limited;
    if cut + limited > 0 {
        println!(
            "Bounds        {cut} sync rounds cut short, {limited} peer requests over their rate refused (see the log)"
        );
    }
    let rows: Vec<Vec<String>> = network
        .peers
        .iter()
        .map(|p| {
            vec![
                p.label.clone(),
                p.org.clone(),
                state(p),
                heard(p),
                // Blank until a ping has been answered.
                p.rtt_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_default(),
                match p.in_sync {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "unknown".into(),
                },
                count(p.they_lack),
                count(p.we_lack),
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
fn state(p: &PeerView) -> String {
    if !p.state.is_empty() {
        let n = p.connections;
        if n > 1 {
            format!("{} ({n} connections)", p.state)
        } else {
            p.state.clone()
        }
    } else if p.connected {
        "connected".into()
    } else {
        "not connected".into()
    }
}

/// When the peer was last heard from: "4 s ago" for recent ones, the date otherwise.
fn heard(p: &PeerView) -> String {
    match p.heard_secs_ago {
        Some(secs) if secs < 120 => format!("{secs} s ago"),
        Some(secs) if secs < 7200 => format!("{} min ago", secs / 60),
        _ => readable(p.last_seen.as_deref()),
    }
}
