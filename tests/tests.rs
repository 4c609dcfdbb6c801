//! Passerelle's integration tests: one test binary, one module per theme.

#![allow(clippy::unwrap_used)] // Tests may unwrap: a panic is a test failure with its message.

mod attacks;
mod browser;
mod cli_output;
mod config_chain;
mod config_files;
mod crash;
mod demo;
mod events;
mod fold_order;
mod fuzz;
mod hsds;
mod map;
mod mdns;
mod minimisation;
mod net_attacks;
mod netsim;
mod nodes;
mod partition;
mod readme;
mod sync_rounds;
mod web;
mod web_tour;
