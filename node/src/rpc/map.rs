//! The partner map: set a profile, change a service's capacity, publish a snapshot, search,
//! the whole directory, and the gaps.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use passerelle_core::engine::Engine;
use passerelle_core::keys;
use passerelle_core::map::{self, Capacity, Entry, Gap, Profile};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The change a map request made to an organisation's profile (none when nothing changed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapChanged {
    pub org: String,
    pub event: Option<String>,
}

/// The snapshot event a `map snapshot` published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapSnapshot {
    pub org: String,
    pub event: String,
}

/// Every profile, with the configuration document in force (its text; empty before joining).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Directory {
    pub profiles: BTreeMap<String, Profile>,
    pub document: String,
    /// The mechanism's id (hex of its genesis hash): HSDS ids are derived from it.
    #[serde(default)]
    pub mechanism_id: String,
    /// The organisation of the node that answered.
    #[serde(default)]
    pub org: String,
}

/// What a directory search asks for; the category and site must be the mechanism's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    pub category: Option<String>,
    pub site: Option<String>,
    pub language: Option<String>,
    pub open_now: bool,
    #[serde(with = "super::words::opt", default)]
    pub capacity: Option<Capacity>,
    /// Only services of this organisation.
    pub org: Option<String>,
}

pub(super) fn import(
    engine: &mut Engine,
    profile: &Profile,
    now: OffsetDateTime,
) -> Result<MapChanged> {
    let event = engine.map_import(profile, now)?;
    Ok(MapChanged {
        org: profile.org.clone(),
        event: event.map(|e| e.to_hex()),
    })
}

pub(super) fn update(
    engine: &mut Engine,
    org: Option<String>,
    service: &str,
    capacity: Option<Capacity>,
    verify: bool,
    now: OffsetDateTime,
) -> Result<MapChanged> {
    let org = org.unwrap_or_else(|| engine.org().to_string());
    let event = engine.map_update(&org, service, capacity, verify, now)?;
    Ok(MapChanged {
        org,
        event: event.map(|e| e.to_hex()),
    })
}

pub(super) fn snapshot(
    engine: &mut Engine,
    org: Option<String>,
    now: OffsetDateTime,
) -> Result<MapSnapshot> {
    let org = org.unwrap_or_else(|| engine.org().to_string());
    let event = engine.map_snapshot(&org, now)?;
    Ok(MapSnapshot {
        org,
        event: event.to_hex(),
    })
}

pub(super) fn search(engine: &Engine, search: Search, now: OffsetDateTime) -> Result<Vec<Entry>> {
    let m = engine.mechanism()?.clone();
    if let Some(c) = &search.category
        && m.category(c).is_none()
    {
        bail!("unknown service category `{}`", keys::truncate_for_error(c));
    }
    if let Some(x) = &search.site
        && m.site(x).is_none()
    {
        bail!("unknown site `{}`", keys::truncate_for_error(x));
    }
    let query = map::Query {
        category: search.category,
        site: search.site,
        language: search.language,
        open_now: search.open_now,
        capacity: search.capacity,
        org: search.org,
    };
    let directory = engine.directory()?;
    Ok(map::search(&directory, &m, &query, now))
}

pub(super) fn directory(engine: &Engine) -> Result<Directory> {
    let profiles = (*engine.directory()?).clone();
    let document = super::config::current_file(engine)?
        .map(|(_, f)| f.document)
        .unwrap_or_default();
    Ok(Directory {
        profiles,
        document,
        mechanism_id: engine
            .store()
            .config()
            .mechanism_id()
            .map(|h| h.to_hex())
            .unwrap_or_default(),
        org: engine.org().to_string(),
    })
}

pub(super) fn gaps(engine: &Engine) -> Result<Vec<Gap>> {
    let m = engine.mechanism()?.clone();
    let directory = engine.directory()?;
    Ok(map::gaps(&directory, &m))
}
