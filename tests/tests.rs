//! Passerelle's integration tests: one test binary, one module per theme.

mod config_chain;
mod config_files;
mod events;
