//! `passerelle-node`: the command line, the daemon, the libp2p transport, the local API and
//! web UI, bundles, the demo and the benchmark. The domain logic lives in `passerelle-core`;
//! this crate moves bytes between it and files, sockets, terminals and browsers.

mod bench;
mod bench_map;
mod bench_net;
mod bench_report;
mod cli;
mod client;
mod cmd_case;
mod cmd_fuzz;
mod cmd_map;
mod cmd_mechanism;
mod cmd_node;
mod cmd_org;
mod cmd_report;
mod cmd_user;
mod daemon;
mod datadir;
mod demo;
mod fsutil;
mod i18n;
mod local_daemon;
mod poster;
mod rpc;
mod status_view;
mod table;
mod web;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for a refused input or a failed operation (clap uses 2 for usage errors).
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line, sets up logging and runs the command.
pub fn main_entry() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_sentence(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
