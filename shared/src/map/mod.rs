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

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, OffsetDateTime, Weekday};

use crate::config::{Mechanism, Names, Role};
use crate::fold::Rule;
use crate::keys;
use crate::limits::{
    LIST_ITEMS_MAX, PROFILE_SERVICES_MAX, SHORT_FIELD_MAX_CHARS, TEXT_FIELD_MAX_CHARS,
};

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

/// How much a service can take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capacity {
    Available,
    Limited,
    Full,
    Suspended,
}

impl Capacity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Capacity::Available => "available",
            Capacity::Limited => "limited",
            Capacity::Full => "full",
            Capacity::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Capacity::Available,
            Capacity::Limited,
            Capacity::Full,
            Capacity::Suspended,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whether a person can be referred now.
    pub fn takes_people(&self) -> bool {
        matches!(self, Capacity::Available | Capacity::Limited)
    }
}

/// A focal point of an organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocalPoint {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// How to reach a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focal_point: Option<String>,
}

/// The weekly schedule: for each day, ranges like `08:00-12:00,14:00-17:00`.
pub type Hours = BTreeMap<String, String>;

/// The days of a weekly schedule, Monday first.
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One service of an organisation at a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: String,
    pub category: String,
    pub site: String,
    pub name: Names,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Names>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligibility: Option<String>,
    pub languages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    pub capacity: Capacity,
    /// `YYYY-MM-DD`: when this entry was last checked.
    pub verified: String,
    #[serde(default)]
    pub hours: Hours,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
}

/// An organisation's profile: what `map import` reads and the map document holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub org: String,
    pub description: Names,
    #[serde(default)]
    pub focal_points: Vec<FocalPoint>,
    #[serde(default)]
    pub services: Vec<Service>,
}

fn check_short(field: &str, value: Option<&str>) -> Result<(), MapError> {
    if let Some(v) = value {
        if v.chars().count() > SHORT_FIELD_MAX_CHARS {
            return Err(invalid(
                field,
                format!("longer than {SHORT_FIELD_MAX_CHARS} characters"),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err(invalid(field, "must not contain control characters"));
        }
    }
    Ok(())
}

fn check_text(field: &str, value: Option<&str>) -> Result<(), MapError> {
    if value.is_some_and(|v| v.chars().count() > TEXT_FIELD_MAX_CHARS) {
        return Err(invalid(
            field,
            format!("longer than {TEXT_FIELD_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_names(field: &str, names: &Names, long: bool) -> Result<(), MapError> {
    for (lang, v) in [
        ("fr", Some(&names.fr)),
        ("en", Some(&names.en)),
        ("ar", names.ar.as_ref()),
    ] {
        let Some(v) = v else { continue };
        let f = format!("{field}.{lang}");
        if v.trim().is_empty() {
            return Err(invalid(f, "must not be empty"));
        }
        if long {
            check_text(&f, Some(v))?;
        } else {
            check_short(&f, Some(v))?;
        }
    }
    Ok(())
}

/// Parses `HH:MM` into minutes since midnight (24:00 allowed as the end of a day).
fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// The opening ranges of one day, in minutes.
pub fn ranges(day: &str) -> Option<Vec<(u32, u32)>> {
    day.split(',')
        .map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            let (a, b) = (minutes(a.trim())?, minutes(b.trim())?);
            (a < b).then_some((a, b))
        })
        .collect()
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format).ok()
}

fn check_id(field: &str, id: &str) -> Result<(), MapError> {
    if crate::config::is_valid_id(id) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "`{}` is not a valid id (a-z, 0-9, - and _)",
                keys::truncate_for_error(id)
            ),
        ))
    }
}

impl Profile {
    /// Parses a profile file's text (strict: an unknown field is an error).
    pub fn from_toml(text: &str) -> Result<Self, MapError> {
        toml::from_str(text).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            let place = first
                .strip_prefix("TOML parse error at ")
                .unwrap_or(&first)
                .to_string();
            MapError::Toml(format!("{place}: {}", e.message().trim()))
        })
    }

    /// Checks the profile against the configuration: ids, categories, sites, hours, dates,
    /// languages and bounds. Each error names the field.
    pub fn validate(&self, m: &Mechanism) -> Result<(), MapError> {
        check_id("org", &self.org)?;
        if m.org(&self.org).is_none() {
            return Err(invalid(
                "org",
                format!("unknown organisation `{}`", self.org),
            ));
        }
        check_names("description", &self.description, true)?;
        if self.focal_points.len() > LIST_ITEMS_MAX {
            return Err(invalid(
                "focal_points",
                format!("more than {LIST_ITEMS_MAX}"),
            ));
        }
        for (i, fp) in self.focal_points.iter().enumerate() {
            let f = format!("focal_points[{i}]");
            if fp.name.trim().is_empty() {
                return Err(invalid(format!("{f}.name"), "must not be empty"));
            }
            check_short(&format!("{f}.name"), Some(&fp.name))?;
            check_short(&format!("{f}.role"), fp.role.as_deref())?;
            check_short(&format!("{f}.phone"), fp.phone.as_deref())?;
            check_short(&format!("{f}.email"), fp.email.as_deref())?;
        }
        if self.services.len() > PROFILE_SERVICES_MAX {
            return Err(invalid(
                "services",
                format!("more than {PROFILE_SERVICES_MAX}"),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let f = format!("services[{i}]");
            check_id(&format!("{f}.id"), &s.id)?;
            if !ids.insert(s.id.as_str()) {
                return Err(invalid(
                    format!("{f}.id"),
                    format!("duplicate service id `{}`", s.id),
                ));
            }
            if m.category(&s.category).is_none() {
                return Err(invalid(
                    format!("{f}.category"),
                    format!(
                        "unknown service category `{}`",
                        keys::truncate_for_error(&s.category)
                    ),
                ));
            }
            if m.site(&s.site).is_none() {
                return Err(invalid(
                    format!("{f}.site"),
                    format!("unknown site `{}`", keys::truncate_for_error(&s.site)),
                ));
            }
            check_names(&format!("{f}.name"), &s.name, false)?;
            if let Some(d) = &s.description {
                check_names(&format!("{f}.description"), d, true)?;
            }
            check_text(&format!("{f}.eligibility"), s.eligibility.as_deref())?;
            check_short(&format!("{f}.address"), s.address.as_deref())?;
            if s.languages.is_empty() || s.languages.len() > LIST_ITEMS_MAX {
                return Err(invalid(
                    format!("{f}.languages"),
                    "list 1 or more languages",
                ));
            }
            for (j, l) in s.languages.iter().enumerate() {
                if l.len() != 2 || !l.chars().all(|c| c.is_ascii_lowercase()) {
                    return Err(invalid(
                        format!("{f}.languages[{j}]"),
                        format!(
                            "`{}` is not a two-letter ISO 639-1 code",
                            keys::truncate_for_error(l)
                        ),
                    ));
                }
            }
            if s.latitude.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
                return Err(invalid(format!("{f}.latitude"), "out of range"));
            }
            if s.longitude.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
                return Err(invalid(format!("{f}.longitude"), "out of range"));
            }
            if parse_date(&s.verified).is_none() {
                return Err(invalid(
                    format!("{f}.verified"),
                    "must be a date like 2026-11-27",
                ));
            }
            for (day, spec) in &s.hours {
                if !DAYS.contains(&day.as_str()) {
                    return Err(invalid(
                        format!("{f}.hours.{day}"),
                        "days are mon, tue, wed, thu, fri, sat, sun",
                    ));
                }
                if spec.len() > SHORT_FIELD_MAX_CHARS || ranges(spec).is_none() {
                    return Err(invalid(
                        format!("{f}.hours.{day}"),
                        "must be ranges like 08:00-12:00,14:00-17:00 (opening before closing)",
                    ));
                }
            }
            if let Some(c) = &s.contact {
                check_short(&format!("{f}.contact.phone"), c.phone.as_deref())?;
                check_short(&format!("{f}.contact.email"), c.email.as_deref())?;
                check_short(
                    &format!("{f}.contact.focal_point"),
                    c.focal_point.as_deref(),
                )?;
            }
        }
        Ok(())
    }
}

// ----- The document -----

fn scalar(v: &Value) -> Option<ScalarValue> {
    match v {
        Value::String(s) => Some(ScalarValue::Str(s.as_str().into())),
        Value::Bool(b) => Some(ScalarValue::Boolean(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(ScalarValue::Int)
            .or_else(|| n.as_f64().map(ScalarValue::F64)),
        _ => None,
    }
}

fn same_scalar(
    current: Option<(automerge::Value<'_>, automerge::ObjId)>,
    new: &ScalarValue,
) -> bool {
    match current {
        Some((automerge::Value::Scalar(s), _)) => s.as_ref() == new,
        _ => false,
    }
}

/// Makes the map object `obj` hold exactly `value` (a JSON object), changing only what differs:
/// scalars that changed are set, keys that are gone are deleted, nested maps recurse, lists
/// that changed are rewritten.
fn reconcile_map(
    doc: &mut AutoCommit,
    obj: &automerge::ObjId,
    value: &serde_json::Map<String, Value>,
) -> Result<(), automerge::AutomergeError> {
    let existing: Vec<String> = doc.keys(obj).collect();
    for key in existing {
        if !value.contains_key(&key) {
            doc.delete(obj, key.as_str())?;
        }
    }
    for (key, v) in value {
        match v {
            Value::Object(inner) => {
                let child = match doc.get(obj, key.as_str())? {
                    Some((automerge::Value::Object(ObjType::Map), id)) => id,
                    _ => doc.put_object(obj, key.as_str(), ObjType::Map)?,
                };
                reconcile_map(doc, &child, inner)?;
            }
            Value::Array(items) => {
                let unchanged = match doc.get(obj, key.as_str())? {
                    Some((automerge::Value::Object(ObjType::List), id)) => {
                        list_equals(doc, &id, items)
                    }
                    _ => false,
                };
                if !unchanged {
                    let list = doc.put_object(obj, key.as_str(), ObjType::List)?;
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::Object(inner) => {
                                let child = doc.insert_object(&list, i, ObjType::Map)?;
                                reconcile_map(doc, &child, inner)?;
                            }
                            other => {
                                if let Some(s) = scalar(other) {
                                    doc.insert(&list, i, s)?;
                                }
                            }
                        }
                    }
                }
            }
            Value::Null => {
                doc.delete(obj, key.as_str())?;
            }
            other => {
                if let Some(s) = scalar(other)
                    && !same_scalar(doc.get(obj, key.as_str())?, &s)
                {
                    doc.put(obj, key.as_str(), s)?;
                }
            }
        }
    }
    Ok(())
}

fn list_equals(doc: &AutoCommit, list: &automerge::ObjId, items: &[Value]) -> bool {
    if doc.length(list) != items.len() {
        return false;
    }
    let current = read_value(doc, list, ObjType::List);
    current == Value::Array(items.to_vec())
}

/// Reads an object of the document as JSON.
fn read_value(doc: &AutoCommit, obj: &automerge::ObjId, kind: ObjType) -> Value {
    match kind {
        ObjType::Map | ObjType::Table => {
            let mut out = serde_json::Map::new();
            for key in doc.keys(obj) {
                if let Ok(Some((v, id))) = doc.get(obj, key.as_str()) {
                    out.insert(key.clone(), read_item(doc, v, &id));
                }
            }
            Value::Object(out)
        }
        ObjType::List | ObjType::Text => {
            let mut out = Vec::new();
            for i in 0..doc.length(obj) {
                if let Ok(Some((v, id))) = doc.get(obj, i) {
                    out.push(read_item(doc, v, &id));
                }
            }
            Value::Array(out)
        }
    }
}

fn read_item(doc: &AutoCommit, v: automerge::Value<'_>, id: &automerge::ObjId) -> Value {
    match v {
        automerge::Value::Object(kind) => read_value(doc, id, kind),
        automerge::Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Value::String(s.to_string()),
            ScalarValue::Int(i) => Value::from(*i),
            ScalarValue::Uint(u) => Value::from(*u),
            ScalarValue::F64(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            ScalarValue::Boolean(b) => Value::Bool(*b),
            _ => Value::Null,
        },
    }
}

/// Sets the document to hold `profile`, as one change (or none if nothing differs). Returns the
/// change's bytes.
pub fn import(doc: &mut AutoCommit, profile: &Profile) -> Result<Option<Vec<u8>>, MapError> {
    let value = serde_json::to_value(profile)
        .map_err(|e| MapError::Document(profile.org.clone(), e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(MapError::Document(
            profile.org.clone(),
            "not an object".into(),
        ));
    };
    // Services are kept as a map keyed by id, so concurrent edits of two services merge.
    let mut root = map.clone();
    if let Some(Value::Array(services)) = map.get("services") {
        let keyed: serde_json::Map<String, Value> = services
            .iter()
            .filter_map(|s| Some((s.get("id")?.as_str()?.to_string(), s.clone())))
            .collect();
        root.insert("services".into(), Value::Object(keyed));
    }
    reconcile_map(doc, &automerge::ROOT, &root)
        .map_err(|e| MapError::Document(profile.org.clone(), e.to_string()))?;
    if doc.pending_ops() == 0 {
        return Ok(None);
    }
    doc.commit();
    Ok(doc.get_last_local_change().map(|c| c.raw_bytes().to_vec()))
}

/// Reads a profile back from its document (tolerant: what does not fit is left out).
pub fn read(doc: &AutoCommit) -> Option<Profile> {
    let mut root = read_value(doc, &automerge::ROOT, ObjType::Map);
    if let Some(Value::Object(services)) = root.get("services").cloned() {
        let mut list: Vec<Value> = services.into_values().collect();
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        root["services"] = Value::Array(list);
    }
    serde_json::from_value(root).ok()
}

/// Changes one service's capacity, and optionally marks it verified on `today`; one change.
pub fn update_service(
    doc: &mut AutoCommit,
    service: &str,
    capacity: Option<Capacity>,
    verified: Option<Date>,
) -> Result<Option<Vec<u8>>, MapError> {
    let err = |e: automerge::AutomergeError| MapError::Document(service.to_string(), e.to_string());
    let services = match doc.get(automerge::ROOT, "services").map_err(err)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => {
            return Err(invalid(
                "service",
                format!("no service `{service}` in this profile"),
            ));
        }
    };
    let obj = match doc.get(&services, service).map_err(err)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => {
            return Err(invalid(
                "service",
                format!(
                    "no service `{}` in this profile",
                    keys::truncate_for_error(service)
                ),
            ));
        }
    };
    if let Some(c) = capacity {
        doc.put(&obj, "capacity", c.as_str()).map_err(err)?;
    }
    if let Some(d) = verified {
        doc.put(&obj, "verified", d.to_string()).map_err(err)?;
    }
    if doc.pending_ops() == 0 {
        return Ok(None);
    }
    doc.commit();
    Ok(doc.get_last_local_change().map(|c| c.raw_bytes().to_vec()))
}

// ----- The directory -----

/// A service with its organisation, as search and posters use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub org: String,
    pub org_name: String,
    pub service: Service,
    pub open_now: bool,
    /// Not verified in 90 days.
    pub stale: bool,
}

/// Whether a service is open at `now` (in the site's local time).
pub fn open_at(service: &Service, m: &Mechanism, now: OffsetDateTime) -> bool {
    let offset = m
        .site(&service.site)
        .map_or(0, |s| i32::from(s.utc_offset_minutes));
    let local = now.to_offset(
        time::UtcOffset::from_whole_seconds(offset * 60).unwrap_or(time::UtcOffset::UTC),
    );
    let day = match local.weekday() {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    };
    let minute = u32::from(local.hour()) * 60 + u32::from(local.minute());
    service
        .hours
        .get(day)
        .and_then(|spec| ranges(spec))
        .is_some_and(|rs| rs.iter().any(|(a, b)| minute >= *a && minute < *b))
}

/// Entries older than this are marked on posters and in reports.
pub const STALE_AFTER_DAYS: i64 = 90;

/// Whether an entry was not verified in the last 90 days.
pub fn stale(service: &Service, now: OffsetDateTime) -> bool {
    parse_date(&service.verified).is_none_or(|d| (now.date() - d).whole_days() > STALE_AFTER_DAYS)
}

/// What a search asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub category: Option<String>,
    pub site: Option<String>,
    pub language: Option<String>,
    pub open_now: bool,
    pub capacity: Option<Capacity>,
    /// Only services of this organisation.
    pub org: Option<String>,
}

/// Searches the directory and ranks the results: open now first, then capacity (available,
/// limited, full, suspended), then the most recently verified, then by name.
pub fn search(
    profiles: &BTreeMap<String, Profile>,
    m: &Mechanism,
    query: &Query,
    now: OffsetDateTime,
) -> Vec<Entry> {
    let mut out = Vec::new();
    for (org, profile) in profiles {
        if query.org.as_ref().is_some_and(|o| o != org) {
            continue;
        }
        for s in &profile.services {
            if query.category.as_ref().is_some_and(|c| c != &s.category)
                || query.site.as_ref().is_some_and(|x| x != &s.site)
                || query
                    .language
                    .as_ref()
                    .is_some_and(|l| !s.languages.contains(l))
                || query.capacity.is_some_and(|c| c != s.capacity)
            {
                continue;
            }
            let open_now = open_at(s, m, now);
            if query.open_now && !open_now {
                continue;
            }
            out.push(Entry {
                org: org.clone(),
                org_name: m.org_name(org).to_string(),
                service: s.clone(),
                open_now,
                stale: stale(s, now),
            });
        }
    }
    out.sort_by(|a, b| {
        b.open_now
            .cmp(&a.open_now)
            .then(a.service.capacity.cmp(&b.service.capacity))
            .then(b.service.verified.cmp(&a.service.verified))
            .then(a.service.name.en.cmp(&b.service.name.en))
    });
    out
}

/// A site and category with no provider that can take people now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Gap {
    pub site: String,
    pub category: String,
    /// Services listed there but full or suspended.
    pub unavailable: usize,
}

/// For each site and category of the configuration, whether any service can take people now.
pub fn gaps(profiles: &BTreeMap<String, Profile>, m: &Mechanism) -> Vec<Gap> {
    let mut out = Vec::new();
    for site in &m.doc.sites {
        for cat in &m.doc.taxonomy {
            let here: Vec<&Service> = profiles
                .values()
                .flat_map(|p| &p.services)
                .filter(|s| s.site == site.id && s.category == cat.id)
                .collect();
            if !here.iter().any(|s| s.capacity.takes_people()) {
                out.push(Gap {
                    site: site.id.clone(),
                    category: cat.id.clone(),
                    unavailable: here.len(),
                });
            }
        }
    }
    out
}

// ----- Open Referral (HSDS) export -----

/// One HSDS table: its name, columns, and rows (for JSON and CSV).
#[derive(Debug, Clone)]
pub struct HsdsTable {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<Value>>,
}

impl HsdsTable {
    /// The table as a JSON array of objects.
    pub fn json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    Value::Object(
                        self.columns
                            .iter()
                            .zip(r)
                            .map(|(c, v)| (c.to_string(), v.clone()))
                            .collect(),
                    )
                })
                .collect(),
        )
    }

    /// The table as CSV (RFC 4180 quoting, formulas neutralised: `csv::cell`).
    pub fn csv(&self) -> String {
        let cell = |v: &Value| match v {
            Value::String(s) => crate::csv::cell(s).into_owned(),
            Value::Null => String::new(),
            other => crate::csv::cell(&other.to_string()).into_owned(),
        };
        let mut out = self.columns.join(",");
        out.push_str("\r\n");
        for r in &self.rows {
            out.push_str(&r.iter().map(cell).collect::<Vec<_>>().join(","));
            out.push_str("\r\n");
        }
        out
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

/// The directory as HSDS tables: organization, service, location, service_at_location,
/// schedule, contact, phone, language. Ids are stable: built from the configuration's and the
/// profiles' own ids.
pub fn hsds(profiles: &BTreeMap<String, Profile>, m: &Mechanism) -> Vec<HsdsTable> {
    let mut organization = Vec::new();
    let mut service = Vec::new();
    let mut location = Vec::new();
    let mut service_at_location = Vec::new();
    let mut schedule = Vec::new();
    let mut contact = Vec::new();
    let mut phone = Vec::new();
    let mut language = Vec::new();
    let mut locations_seen = std::collections::BTreeSet::new();
    for (org, p) in profiles {
        let o = m.org(org);
        organization.push(vec![
            Value::String(org.clone()),
            Value::String(o.map_or(org.clone(), |o| o.name.clone())),
            Value::String(o.and_then(|o| o.short_name.clone()).unwrap_or_default()),
            Value::String(p.description.fr.clone()),
            p.focal_points
                .first()
                .map_or(Value::Null, |f| opt(&f.email)),
        ]);
        for s in &p.services {
            let sid = format!("{org}:{}", s.id);
            let category = m.category(&s.category);
            service.push(vec![
                Value::String(sid.clone()),
                Value::String(org.clone()),
                Value::String(s.name.fr.clone()),
                Value::String(s.name.en.clone()),
                Value::String(
                    s.description
                        .as_ref()
                        .map_or(String::new(), |d| d.fr.clone()),
                ),
                Value::String(
                    if s.capacity == Capacity::Suspended {
                        "inactive"
                    } else {
                        "active"
                    }
                    .into(),
                ),
                Value::String(s.category.clone()),
                Value::String(category.map_or(String::new(), |c| c.name.en.clone())),
                opt(&s.eligibility),
                Value::String(s.capacity.as_str().into()),
                Value::String(s.verified.clone()),
            ]);
            let lid = format!(
                "{org}:{}:{}",
                s.site,
                s.address.clone().unwrap_or_default().len()
            );
            if locations_seen.insert(lid.clone()) {
                let site = m.site(&s.site);
                location.push(vec![
                    Value::String(lid.clone()),
                    Value::String(org.clone()),
                    Value::String(site.map_or(s.site.clone(), |x| x.name.fr.clone())),
                    opt(&s.address),
                    s.latitude
                        .or_else(|| site.and_then(|x| x.latitude))
                        .map_or(Value::Null, Value::from),
                    s.longitude
                        .or_else(|| site.and_then(|x| x.longitude))
                        .map_or(Value::Null, Value::from),
                ]);
            }
            service_at_location.push(vec![
                Value::String(format!("{sid}@{lid}")),
                Value::String(sid.clone()),
                Value::String(lid.clone()),
            ]);
            for (day, spec) in &s.hours {
                for (i, (a, b)) in ranges(spec).unwrap_or_default().into_iter().enumerate() {
                    schedule.push(vec![
                        Value::String(format!("{sid}:{day}:{i}")),
                        Value::String(sid.clone()),
                        Value::String("WEEKLY".into()),
                        Value::String(day[..2].to_ascii_uppercase()),
                        Value::String(format!("{:02}:{:02}", a / 60, a % 60)),
                        Value::String(format!("{:02}:{:02}", b / 60, b % 60)),
                    ]);
                }
            }
            if let Some(c) = &s.contact {
                contact.push(vec![
                    Value::String(format!("{sid}:contact")),
                    Value::String(sid.clone()),
                    opt(&c.focal_point),
                    opt(&c.email),
                ]);
                if let Some(p) = &c.phone {
                    phone.push(vec![
                        Value::String(format!("{sid}:phone")),
                        Value::String(sid.clone()),
                        Value::String(p.clone()),
                    ]);
                }
            }
            for l in &s.languages {
                language.push(vec![
                    Value::String(format!("{sid}:{l}")),
                    Value::String(sid.clone()),
                    Value::String(l.clone()),
                ]);
            }
        }
    }
    vec![
        HsdsTable {
            name: "organizations",
            columns: &["id", "name", "alternate_name", "description", "email"],
            rows: organization,
        },
        HsdsTable {
            name: "services",
            columns: &[
                "id",
                "organization_id",
                "name",
                "alternate_name",
                "description",
                "status",
                "category",
                "category_name",
                "eligibility_description",
                "capacity_status",
                "last_modified",
            ],
            rows: service,
        },
        HsdsTable {
            name: "locations",
            columns: &[
                "id",
                "organization_id",
                "name",
                "address",
                "latitude",
                "longitude",
            ],
            rows: location,
        },
        HsdsTable {
            name: "service_at_locations",
            columns: &["id", "service_id", "location_id"],
            rows: service_at_location,
        },
        HsdsTable {
            name: "schedules",
            columns: &["id", "service_id", "freq", "byday", "opens_at", "closes_at"],
            rows: schedule,
        },
        HsdsTable {
            name: "contacts",
            columns: &["id", "service_id", "name", "email"],
            rows: contact,
        },
        HsdsTable {
            name: "phones",
            columns: &["id", "service_id", "number"],
            rows: phone,
        },
        HsdsTable {
            name: "languages",
            columns: &["id", "service_id", "code"],
            rows: language,
        },
    ]
}

#[cfg(test)]
mod tests {
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
