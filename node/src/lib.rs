//! `passerelle-node`: the command line, the daemon, the libp2p transport, the local API and
//! web UI, bundles, the demo and the benchmark. The domain logic lives in `passerelle-core`;
//! this crate moves bytes between it and files, sockets, terminals and browsers.

mod bench;
mod cli;
mod client;
mod daemon;
mod datadir;
mod demo;
mod fsutil;
mod i18n;
mod json_input;
mod local_daemon;
mod poster;
mod rpc;
mod samples;
mod subject_access;
mod util;
mod web;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for a refused input or a failed operation (clap uses 2 for usage errors).
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line, sets up logging and runs the command.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    quiet_on_closed_pipe();
    restrict_new_files();
    init_tracing();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_sentence(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `passerelle status | head -1`: once the reader has closed the pipe, the next `println!`
/// panics ("failed printing to stdout: Broken pipe"). That is the reader's choice, not a crash:
/// the process ends quietly with the shell's code for SIGPIPE (128 + 13), as `cat` would
/// (safe Rust cannot restore SIGPIPE's default action, which the runtime ignores).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// Everything this process creates is readable by its user only: the store (redb creates it
/// with the process's mask), its backups and bundles, exports, the API token, logs. Files with
/// case ciphertext must not be world-readable, and a mask covers the files no call site names.
fn restrict_new_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

/// The error and its causes on one line, without repeating a cause a message already carries.
pub(crate) fn one_sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// The most verbose level of the libraries that see secrets or bodies: at their debug or trace
/// levels the HTTP client and server print headers (the API token, session cookies) and
/// bodies (personal data), and the transport's lowest layers print frames. Whatever `RUST_LOG`
/// says, they log no more than this.
const CAPPED_TARGETS: &[(&str, &str)] = &[
    ("ureq", "warn"),
    ("ureq_proto", "warn"),
    ("hyper", "warn"),
    ("hyper_util", "warn"),
    ("h2", "warn"),
    ("axum", "info"),
    ("tower", "warn"),
    ("tower_http", "warn"),
    ("rustls", "warn"),
    ("yamux", "debug"),
    ("libp2p_yamux", "debug"),
    ("libp2p_noise", "debug"),
    ("multistream_select", "debug"),
    ("libp2p_request_response", "debug"),
];

/// `RUST_LOG`'s directives (default `warn`) with the capped libraries' own directives taken out
/// and their caps added.
pub fn log_filter(rust_log: Option<&str>) -> String {
    let mut directives: Vec<String> = rust_log
        .unwrap_or("warn")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            // `split` yields at least one piece: the default is never used.
            let target = d.split(['=', '[']).next().unwrap_or_default();
            !CAPPED_TARGETS
                .iter()
                .any(|(capped, _)| target == *capped || target.starts_with(&format!("{capped}::")))
        })
        .map(str::to_string)
        .collect();
    if directives.is_empty() {
        directives.push("warn".into());
    }
    // The capped libraries log at the level asked for everything else, never above their cap:
    // a cap is a ceiling, not a level of its own (at the default `warn`, yamux stays at warn).
    let asked = directives
        .iter()
        .rev()
        .find(|d| !d.contains('='))
        .map_or(level_rank("warn"), |d| level_rank(d));
    directives.extend(CAPPED_TARGETS.iter().map(|(t, cap)| {
        let level = LEVELS[asked.min(level_rank(cap))];
        format!("{t}={level}")
    }));
    directives.join(",")
}

/// Tracing's levels, least verbose first.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Where a level stands in [`LEVELS`] (an unknown word counts as `warn`).
fn level_rank(level: &str) -> usize {
    LEVELS
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level.trim()))
        .unwrap_or(2)
}

fn init_tracing() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(rust_log.as_deref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(None)));
    // Fails only when a subscriber is already set (a test harness): that one stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file (`run 2> node.log`) gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn no_level_asked_for_opens_the_http_libraries_below_their_cap() {
        let f = log_filter(Some(
            "trace,ureq=trace,hyper::proto=trace,passerelle_node=debug",
        ));
        assert!(
            !f.contains("ureq=trace") && !f.contains("hyper::proto"),
            "{f}"
        );
        assert!(f.starts_with("trace,passerelle_node=debug,"), "{f}");
        assert!(f.contains("ureq=warn") && f.contains("hyper=warn"), "{f}");
        assert!(log_filter(None).starts_with("warn,"));
    }

    #[test]
    fn a_cap_never_raises_a_library_above_the_level_asked_for() {
        let quiet = log_filter(None);
        assert!(
            quiet.contains("yamux=warn") && quiet.contains("multistream_select=warn"),
            "{quiet}"
        );
        let info = log_filter(Some("info"));
        assert!(
            info.contains("yamux=info") && info.contains("axum=info"),
            "{info}"
        );
        let trace = log_filter(Some("trace"));
        assert!(
            trace.contains("yamux=debug") && trace.contains("hyper=warn"),
            "{trace}"
        );
    }
}
