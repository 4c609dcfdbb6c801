//! Validation: a parsed [`Document`] becomes a [`Mechanism`] (with its indexes) or is refused
//! with the field and the problem. One function per part of the document, in the order the
//! document reads; later parts are checked against the indexes the earlier ones built.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{
    ConfigError, Document, Hash32, Mechanism, Names, NodeInfo, Organisation, Role, invalid,
};
use crate::keyfiles::{
    node_endorsement_message, org_encryption_key_message, org_signing_key_message,
};
use crate::keys::{self, NodeId, PublicKey, context};
use crate::limits::{
    ID_LENGTH_MAX_CHARS, KEY_EPOCHS_MAX, NAME_LENGTH_MAX_CHARS, ROOT_KEYS_MAX,
    SOP_DEADLINE_MAX_HOURS,
};

/// Organisation ids → their index in `doc.organisations`.
type OrgIndex = HashMap<String, usize>;
/// Each organisation's signing keys, oldest first.
type SigningKeys = HashMap<String, Vec<PublicKey>>;
/// Each organisation's encryption epochs.
type Epochs = HashMap<String, BTreeMap<u32, age::x25519::Recipient>>;

/// Whether `id` is a valid identifier (organisations, sites, categories, services…): 1 to
/// `ID_LENGTH_MAX_CHARS` characters of a-z, 0-9, `-` and `_`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().count() <= ID_LENGTH_MAX_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

pub(super) fn check_id(field: &str, id: &str) -> Result<(), ConfigError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "`{}` is not a valid id (1 to {ID_LENGTH_MAX_CHARS} characters: a-z, 0-9, - and _)",
                keys::truncate_for_error(id)
            ),
        ))
    }
}

fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.chars().count() > NAME_LENGTH_MAX_CHARS {
        return Err(invalid(
            field,
            format!("longer than {NAME_LENGTH_MAX_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn check_names(field: &str, names: &Names) -> Result<(), ConfigError> {
    check_name(&format!("{field}.fr"), &names.fr)?;
    check_name(&format!("{field}.en"), &names.en)?;
    if let Some(ar) = &names.ar {
        check_name(&format!("{field}.ar"), ar)?;
    }
    Ok(())
}

fn unique<'a>(
    field: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashSet<&'a str>, ConfigError> {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        check_id(&format!("{field}[{i}].id"), id)?;
        if !seen.insert(id) {
            return Err(invalid(
                format!("{field}[{i}].id"),
                format!("duplicate id `{id}`"),
            ));
        }
    }
    Ok(seen)
}

pub(super) fn validate(doc: Document, hash: Hash32) -> Result<Mechanism, ConfigError> {
    check_header(&doc)?;
    check_roots(&doc)?;
    let sites = check_sites(&doc)?;
    let orgs = check_organisations(&doc, &sites)?;
    check_lead(&doc, &orgs)?;
    check_categories(&doc, &orgs)?;
    check_sop(&doc)?;
    let signing_keys = signing_key_chains(&doc, &orgs)?;
    let epochs = encryption_epochs(&doc, &orgs, &signing_keys)?;
    let removals = check_removals(&doc)?;
    let (nodes, nodes_by_key) = check_nodes(&doc, &orgs, &signing_keys, &removals)?;
    Ok(Mechanism {
        doc,
        hash,
        orgs,
        nodes,
        nodes_by_key,
        signing_keys,
        epochs,
        removals_by_key: removals
            .iter()
            .filter_map(|(node, seq)| Some((node.public_key().ok()?.to_bytes(), *seq)))
            .collect(),
        removals,
    })
}

/// The organisation `id` names, or a refusal naming `field`.
fn org_known<'a>(
    doc: &'a Document,
    orgs: &OrgIndex,
    field: String,
    id: &str,
) -> Result<&'a Organisation, ConfigError> {
    orgs.get(id)
        .and_then(|&i| doc.organisations.get(i))
        .ok_or_else(|| {
            invalid(
                field,
                format!("unknown organisation `{}`", keys::truncate_for_error(id)),
            )
        })
}

/// The mechanism's name, country, version, previous hash and validity period.
fn check_header(doc: &Document) -> Result<(), ConfigError> {
    check_name("mechanism", &doc.mechanism)?;
    if doc.country.len() != 2 || !doc.country.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(invalid(
            "country",
            "must be a two-letter ISO 3166-1 code in capitals, like TN",
        ));
    }
    if doc.version == 0 {
        return Err(invalid("version", "must be 1 or more"));
    }
    match (&doc.previous, doc.version) {
        (Some(_), 1) => return Err(invalid("previous", "version 1 has no previous version")),
        (None, v) if v > 1 => {
            return Err(invalid(
                "previous",
                "missing: every version after 1 names the previous version's document hash",
            ));
        }
        (Some(p), _) if Hash32::from_hex(p).is_none() => {
            return Err(invalid(
                "previous",
                "must be 64 hex digits (a document hash)",
            ));
        }
        _ => {}
    }
    if doc.expires_at <= doc.issued_at {
        return Err(invalid("expires_at", "must be after issued_at"));
    }
    Ok(())
}

/// The root keys and their threshold.
fn check_roots(doc: &Document) -> Result<(), ConfigError> {
    // Root keys.
    if doc.roots.keys.is_empty() {
        return Err(invalid("roots.keys", "at least one root key is needed"));
    }
    if doc.roots.keys.len() > ROOT_KEYS_MAX {
        return Err(invalid(
            "roots.keys",
            format!("more than {ROOT_KEYS_MAX} keys"),
        ));
    }
    let mut root_seen = HashSet::new();
    for (i, key) in doc.roots.keys.iter().enumerate() {
        if !root_seen.insert(key.to_bytes()) {
            return Err(invalid(
                format!("roots.keys[{i}]"),
                format!("duplicate key {key}"),
            ));
        }
    }
    if doc.roots.threshold == 0 {
        return Err(invalid("roots.threshold", "must be at least 1"));
    }
    if doc.roots.threshold as usize > doc.roots.keys.len() {
        return Err(invalid(
            "roots.threshold",
            format!(
                "{} is more than the {} root keys listed",
                doc.roots.threshold,
                doc.roots.keys.len()
            ),
        ));
    }
    Ok(())
}

/// The sites; returns their ids.
fn check_sites(doc: &Document) -> Result<HashSet<&str>, ConfigError> {
    let sites = unique("sites", doc.sites.iter().map(|s| s.id.as_str()))?;
    for (i, site) in doc.sites.iter().enumerate() {
        check_names(&format!("sites[{i}].name"), &site.name)?;
        check_name(&format!("sites[{i}].region"), &site.region)?;
        if let Some(lat) = site.latitude
            && !(-90.0..=90.0).contains(&lat)
        {
            return Err(invalid(format!("sites[{i}].latitude"), "out of range"));
        }
        if !(-14 * 60..=14 * 60).contains(&site.utc_offset_minutes) {
            return Err(invalid(
                format!("sites[{i}].utc_offset_minutes"),
                "must be between -840 and 840",
            ));
        }
        if let Some(lon) = site.longitude
            && !(-180.0..=180.0).contains(&lon)
        {
            return Err(invalid(format!("sites[{i}].longitude"), "out of range"));
        }
    }
    Ok(sites)
}

/// The organisations (names, roles, sites); returns the index by id.
fn check_organisations(doc: &Document, sites: &HashSet<&str>) -> Result<OrgIndex, ConfigError> {
    unique(
        "organisations",
        doc.organisations.iter().map(|o| o.id.as_str()),
    )?;
    let mut orgs = HashMap::new();
    for (i, org) in doc.organisations.iter().enumerate() {
        check_name(&format!("organisations[{i}].name"), &org.name)?;
        if let Some(short) = &org.short_name {
            check_name(&format!("organisations[{i}].short_name"), short)?;
        }
        let mut roles = HashSet::new();
        for role in &org.roles {
            if !roles.insert(role) {
                return Err(invalid(
                    format!("organisations[{i}].roles"),
                    format!("role `{}` listed twice", role.as_str()),
                ));
            }
        }
        for (j, site) in org.sites.iter().enumerate() {
            if !sites.contains(site.as_str()) {
                return Err(invalid(
                    format!("organisations[{i}].sites[{j}]"),
                    format!("unknown site `{}`", keys::truncate_for_error(site)),
                ));
            }
        }
        orgs.insert(org.id.clone(), i);
    }
    Ok(orgs)
}

/// The lead organisation holds the coordinate role.
fn check_lead(doc: &Document, orgs: &OrgIndex) -> Result<(), ConfigError> {
    let lead = org_known(doc, orgs, "lead_org".into(), &doc.lead_org)?;
    if !lead.has_role(Role::Coordinate) {
        return Err(invalid(
            "lead_org",
            format!("`{}` does not hold the `coordinate` role", lead.id),
        ));
    }
    Ok(())
}

/// The taxonomy and the case types (with their status authorities).
fn check_categories(doc: &Document, orgs: &OrgIndex) -> Result<(), ConfigError> {
    unique("taxonomy", doc.taxonomy.iter().map(|c| c.id.as_str()))?;
    for (i, cat) in doc.taxonomy.iter().enumerate() {
        check_names(&format!("taxonomy[{i}].name"), &cat.name)?;
    }
    if doc.taxonomy.is_empty() {
        return Err(invalid(
            "taxonomy",
            "at least one service category is needed",
        ));
    }
    unique("case_types", doc.case_types.iter().map(|c| c.id.as_str()))?;
    for (i, ct) in doc.case_types.iter().enumerate() {
        check_names(&format!("case_types[{i}].name"), &ct.name)?;
        if ct.requires_status_determination && ct.status_authorities.is_empty() {
            return Err(invalid(
                format!("case_types[{i}].status_authorities"),
                "a case type that requires status determination needs at least one authority",
            ));
        }
        for (j, auth) in ct.status_authorities.iter().enumerate() {
            let field = format!("case_types[{i}].status_authorities[{j}]");
            let org = org_known(doc, orgs, field.clone(), auth)?;
            if !org.has_role(Role::DetermineStatus) {
                return Err(invalid(
                    field,
                    format!("`{auth}` does not hold the `determine_status` role"),
                ));
            }
        }
    }
    Ok(())
}

/// The SOP: decline reasons, deadlines, clock skew, retention.
fn check_sop(doc: &Document) -> Result<(), ConfigError> {
    unique(
        "sop.decline_reasons",
        doc.sop.decline_reasons.iter().map(|r| r.id.as_str()),
    )?;
    for (i, r) in doc.sop.decline_reasons.iter().enumerate() {
        check_names(&format!("sop.decline_reasons[{i}].name"), &r.name)?;
    }
    if doc.sop.decline_reasons.is_empty() {
        return Err(invalid(
            "sop.decline_reasons",
            "at least one reason is needed",
        ));
    }
    for (name, d) in [
        ("emergency", doc.sop.urgency.emergency),
        ("urgent", doc.sop.urgency.urgent),
        ("routine", doc.sop.urgency.routine),
    ] {
        if d.acknowledge_hours == 0 || d.accept_hours == 0 {
            return Err(invalid(
                format!("sop.urgency.{name}"),
                "deadlines must be at least one hour",
            ));
        }
        if d.accept_hours > SOP_DEADLINE_MAX_HOURS {
            return Err(invalid(
                format!("sop.urgency.{name}.accept_hours"),
                format!("must be at most {SOP_DEADLINE_MAX_HOURS} hours"),
            ));
        }
        if d.accept_hours < d.acknowledge_hours {
            return Err(invalid(
                format!("sop.urgency.{name}.accept_hours"),
                "must not be shorter than acknowledge_hours",
            ));
        }
    }
    if doc.sop.clock_skew_secs == 0 || doc.sop.clock_skew_secs > 86_400 {
        return Err(invalid(
            "sop.clock_skew_secs",
            "must be between 1 and 86400 seconds",
        ));
    }
    if doc
        .sop
        .guardian_consent_under_age
        .is_some_and(|a| a == 0 || a > 30)
    {
        return Err(invalid(
            "sop.guardian_consent_under_age",
            "must be an age between 1 and 30",
        ));
    }
    if doc.sop.open_case_inactive_days == Some(0) {
        return Err(invalid("sop.open_case_inactive_days", "must be at least 1"));
    }
    if doc.sop.retention_days == 0 {
        return Err(invalid("sop.retention_days", "must be at least 1"));
    }
    Ok(())
}

/// Organisation signing keys: per organisation a chain, each key endorsed by the one before.
fn signing_key_chains(doc: &Document, orgs: &OrgIndex) -> Result<SigningKeys, ConfigError> {
    let mut signing_keys: HashMap<String, Vec<PublicKey>> = HashMap::new();
    for (i, stanza) in doc.org_signing_keys.iter().enumerate() {
        let field = format!("org_signing_keys[{i}]");
        org_known(doc, orgs, format!("{field}.org"), &stanza.org)?;
        let chain = signing_keys.entry(stanza.org.clone()).or_default();
        match (chain.last(), &stanza.previous_key, &stanza.endorsement) {
            (None, None, None) => {}
            (None, _, _) => {
                return Err(invalid(
                    field,
                    format!(
                        "the first signing key of `{}` cannot name a previous key",
                        stanza.org
                    ),
                ));
            }
            (Some(last), Some(prev), Some(sig)) if last == prev => {
                prev.verify(
                    context::ORG_SIGNING_KEY,
                    &org_signing_key_message(&stanza.org, &stanza.key),
                    sig,
                )
                .map_err(|_| {
                    invalid(
                        format!("{field}.endorsement"),
                        "the previous key's endorsement does not verify",
                    )
                })?;
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    field,
                    format!(
                        "a new signing key of `{}` must be endorsed by its previous key",
                        stanza.org
                    ),
                ));
            }
        }
        if chain.contains(&stanza.key) {
            return Err(invalid(
                format!("{field}.key"),
                "this key was already used by the organisation",
            ));
        }
        chain.push(stanza.key);
    }
    Ok(signing_keys)
}

/// Encryption epochs: 1, 2, 3… per organisation, each signed by one of its signing keys.
fn encryption_epochs(
    doc: &Document,
    orgs: &OrgIndex,
    signing_keys: &SigningKeys,
) -> Result<Epochs, ConfigError> {
    let mut epochs: HashMap<String, BTreeMap<u32, age::x25519::Recipient>> = HashMap::new();
    for (i, stanza) in doc.org_encryption_keys.iter().enumerate() {
        let field = format!("org_encryption_keys[{i}]");
        org_known(doc, orgs, format!("{field}.org"), &stanza.org)?;
        let recipient = keys::parse_recipient(&stanza.recipient)
            .map_err(|e| invalid(format!("{field}.recipient"), e.to_string()))?;
        let chain = signing_keys.get(&stanza.org).ok_or_else(|| {
            invalid(
                field.clone(),
                format!(
                    "`{}` has no signing key to vouch for this encryption key",
                    stanza.org
                ),
            )
        })?;
        let message = org_encryption_key_message(&stanza.org, stanza.epoch, &stanza.recipient);
        if !chain.iter().any(|k| {
            k.verify(context::ORG_ENCRYPTION_KEY, &message, &stanza.signature)
                .is_ok()
        }) {
            return Err(invalid(
                format!("{field}.signature"),
                format!("not signed by a signing key of `{}`", stanza.org),
            ));
        }
        let org_epochs = epochs.entry(stanza.org.clone()).or_default();
        let expected = org_epochs.len() as u32 + 1;
        if stanza.epoch != expected || stanza.epoch > KEY_EPOCHS_MAX {
            return Err(invalid(
                format!("{field}.epoch"),
                format!(
                    "epoch {} of `{}` where epoch {expected} was expected (epochs count 1, 2, 3…)",
                    stanza.epoch, stanza.org
                ),
            ));
        }
        org_epochs.insert(stanza.epoch, recipient);
    }
    Ok(epochs)
}

/// Removed nodes and the last sequence number accepted from each.
fn check_removals(doc: &Document) -> Result<HashMap<NodeId, u64>, ConfigError> {
    // Removals.
    let mut removals = HashMap::new();
    for (i, removal) in doc.removals.iter().enumerate() {
        check_id(&format!("removals[{i}].org"), &removal.org)?;
        if removals.insert(removal.node, removal.last_seq).is_some() {
            return Err(invalid(
                format!("removals[{i}].node"),
                format!("node {} is removed twice", removal.node),
            ));
        }
    }
    Ok(removals)
}

/// Nodes endorsed by an organisation and the same by key bytes.
type NodeIndexes = (HashMap<NodeId, NodeInfo>, HashMap<[u8; 32], NodeId>);

/// Nodes: endorsed by their organisation's current signing key, never a removed one.
fn check_nodes(
    doc: &Document,
    orgs: &OrgIndex,
    signing_keys: &SigningKeys,
    removals: &HashMap<NodeId, u64>,
) -> Result<NodeIndexes, ConfigError> {
    let mut nodes = HashMap::new();
    let mut nodes_by_key = HashMap::new();
    for (i, node) in doc.nodes.iter().enumerate() {
        let field = format!("nodes[{i}]");
        let org = org_known(doc, orgs, format!("{field}.org"), &node.org)?;
        check_name(&format!("{field}.label"), &node.label)?;
        if !org.runs_nodes {
            return Err(invalid(
                format!("{field}.org"),
                format!("`{}` is marked as running no nodes", org.id),
            ));
        }
        if removals.contains_key(&node.id) {
            return Err(invalid(
                format!("{field}.id"),
                format!("node {} was removed and cannot come back", node.id),
            ));
        }
        let recipient = keys::parse_recipient(&node.recipient)
            .map_err(|e| invalid(format!("{field}.recipient"), e.to_string()))?;
        let key = node
            .id
            .public_key()
            .map_err(|e| invalid(format!("{field}.id"), e.to_string()))?;
        let org_key = signing_keys
            .get(&node.org)
            .and_then(|k| k.last())
            .ok_or_else(|| {
                invalid(
                    format!("{field}.endorsement"),
                    format!("`{}` has no signing key to endorse its nodes", node.org),
                )
            })?;
        org_key
            .verify(
                context::NODE_ENDORSEMENT,
                &node_endorsement_message(&node.org, &node.id, &node.recipient),
                &node.endorsement,
            )
            .map_err(|_| {
                invalid(
                    format!("{field}.endorsement"),
                    format!(
                        "does not verify with the current signing key of `{}`: the node must be endorsed by its own organisation",
                        node.org
                    ),
                )
            })?;
        for (j, addr) in node.addresses.iter().enumerate() {
            if addr.is_empty() || addr.len() > 256 || !addr.starts_with('/') {
                return Err(invalid(
                    format!("{field}.addresses[{j}]"),
                    "must be a libp2p multiaddr such as /ip4/192.0.2.10/tcp/4010",
                ));
            }
        }
        let info = NodeInfo {
            id: node.id,
            key,
            org: node.org.clone(),
            label: node.label.clone(),
            recipient,
        };
        if nodes.insert(node.id, info).is_some() {
            return Err(invalid(
                format!("{field}.id"),
                format!("duplicate node {}", node.id),
            ));
        }
        nodes_by_key.insert(key.to_bytes(), node.id);
    }
    Ok((nodes, nodes_by_key))
}
