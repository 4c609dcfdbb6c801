//! The partner map: one profile per organisation, changed only by that organisation's nodes, or
//! by a coordinator for an organisation the configuration marks as running no node.

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
