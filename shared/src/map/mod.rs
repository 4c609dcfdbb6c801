//! The partner map: one Automerge document per organisation — its profile: description, focal
//! points, and services at the mechanism's sites (fields after Open Referral HSDS where they
//! fit). Changes travel as signed `MapChange` events; only the organisation's own nodes may make
//! them, or a coordinator for an organisation the configuration marks as running no node.
//! Concurrent edits merge (Automerge); plain scalar strings everywhere nobody edits text
//! character by character.
//!
//! This module holds the profile types and their validation, the reconciliation of a profile
//! into a document (so an import becomes the minimal change), reading a document back, the
//! directory search, coverage gaps and the Open Referral (HSDS) export. Storage of the
//! documents is in `store::log`; rendering posters is the node's business.

pub mod apply;
mod directory;
mod document;
pub mod hsds;
mod profile;

pub use directory::{Entry, Gap, Query, STALE_AFTER_DAYS, gaps, open_at, search, stale};
pub use document::{import, read, update_service};
pub use profile::{
    Capacity, Contact, DAYS, FocalPoint, Hours, Profile, Service, parse_date, ranges,
};

use crate::config::{Mechanism, Role};
use crate::fold::Rule;

/// Whether nodes of `author_org` may change the profile of `target_org`.
pub fn may_edit(m: &Mechanism, author_org: &str, target_org: &str) -> Result<(), Rule> {
    let Some(target) = m.org(target_org) else {
        return Err(Rule::MapNotAllowed);
    };
    if author_org == target_org && target.runs_nodes {
        return Ok(());
    }
    let coordinator = m
        .org(author_org)
        .is_some_and(|o| o.has_role(Role::Coordinate));
    if coordinator && !target.runs_nodes {
        return Ok(());
    }
    Err(Rule::MapNotAllowed)
}

/// Why a profile was refused. Each names the field.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    #[error("the profile is not valid TOML: {0}")]
    Toml(String),
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("the map document of `{0}` could not be read: {1}")]
    Document(String, String),
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> MapError {
    MapError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use automerge::AutoCommit;

    use super::*;

    const SAMPLE: &str = include_str!("../../../config/mechanism.toml");

    fn profile(name: &str) -> Profile {
        let path = format!(
            "{}/../config/profiles/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Profile::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn a_profile_survives_the_document_and_an_unchanged_import_is_no_change() {
        let m = Mechanism::from_bytes(SAMPLE.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let p = profile("crt");
        p.validate(&m).unwrap_or_else(|e| panic!("{e}"));
        let mut doc = AutoCommit::new();
        let change = import(&mut doc, &p).unwrap_or_else(|e| panic!("{e}"));
        assert!(change.is_some());
        let back = read(&doc);
        // Services are keyed by id in the document: they come back sorted by id.
        let mut sorted = p.clone();
        sorted.services.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(back.as_ref(), Some(&sorted));
        assert_eq!(import(&mut doc, &p).unwrap_or_else(|e| panic!("{e}")), None);
        let mut changed = sorted.clone();
        changed.services[0].capacity = Capacity::Suspended;
        assert!(import(&mut doc, &changed).unwrap_or_default().is_some());
        assert_eq!(
            read(&doc).map(|x| x.services[0].capacity),
            Some(Capacity::Suspended)
        );
    }
}
