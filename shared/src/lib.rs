//! `passerelle-core`: Passerelle's domain model and protocol cores.
//!
//! The mechanism configuration and its signed chain (`config`), keys and key files (`keys`,
//! `keyfiles`), and — in later modules — the event log, the fold, storage and sync state
//! machines. This crate knows nothing about clap, HTTP, processes or file paths: callers hand it
//! bytes and the time, and persist what it returns.

pub mod admission;
pub mod bundle;
pub mod config;
pub mod csv;
pub mod engine;
pub mod event;
pub mod fold;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod keyfiles;
pub mod keys;
pub mod limits;
pub mod map;
#[cfg(any(test, feature = "netsim"))]
pub mod netsim;
pub mod payload;
pub mod report;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod store;
pub mod sync;
/// `sync::round`, also at the crate root for the callers that name it so (`node`, `tests`).
pub use sync::round;
pub mod time_fmt;
pub mod words;
