//! An organisation's profile from HSDS: compiled JSON (a service, an organization with its
//! services, or arrays of either) or a tabular package (its CSV tables, joined here into the
//! same compiled objects). Only the services of one organisation are taken; each refused
//! record gives its own error, and any error refuses the whole import.
//!
//! What HSDS does not say and the mechanism needs (the service category, the site) comes from
//! the Passerelle profile's fields and ids where the package carries them (our own exports
//! do), then from the taxonomy terms' codes and the locations' `passerelle_site` identifiers,
//! then from the defaults the caller gives.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Ids, Row};
use crate::config::{Mechanism, Names};
use crate::map::{Capacity, Contact, FocalPoint, Hours, Profile, Service, parse_date};

/// What the caller decides for the import.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The organisation whose profile is set (this node's).
    pub org: String,
    /// The mechanism's id (hex), to recognise our own exported ids.
    pub mechanism_id: String,
    /// The HSDS id of the organisation to take, when the package holds several.
    pub source_org: Option<String>,
    /// The site of services whose location names none of the mechanism's.
    pub site: Option<String>,
    /// The category of services whose taxonomy terms name none of the mechanism's.
    pub category: Option<String>,
    /// The language (ISO 639-1) of services that name none.
    pub language: Option<String>,
    /// `YYYY-MM-DD`: the verification date of services that carry none.
    pub today: String,
}

/// A profile read from HSDS, and what was left out on the way (not errors).
#[derive(Debug, Clone)]
pub struct Imported {
    pub profile: Profile,
    pub notes: Vec<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn names(v: &Value, base: &str, translations: &str) -> Option<Names> {
    if let Some(t) = v.get(translations)
        && let (Some(fr), Some(en)) = (text(t, "fr"), text(t, "en"))
    {
        return Some(Names {
            fr,
            en,
            ar: text(t, "ar"),
        });
    }
    let s = text(v, base)?;
    Some(Names {
        fr: s.clone(),
        en: s,
        ar: None,
    })
}

fn number(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads compiled JSON: one object, an array, or an API page (`contents`); services (with
/// their `organization`), services at a location (with their `service`) and organizations
/// (with their `services`) alike.
pub fn from_compiled(
    documents: &[Value],
    m: &Mechanism,
    opt: &Options,
) -> Result<Imported, Vec<String>> {
    let mut orgs: BTreeMap<String, Value> = BTreeMap::new();
    let mut services: Vec<(String, Value)> = Vec::new();
    let mut errors = Vec::new();
    let mut add_service = |s: &Value, org: Option<&Value>, orgs: &mut BTreeMap<String, Value>| {
        let org = org.or_else(|| s.get("organization"));
        let oid = org
            .and_then(|o| text(o, "id"))
            .or_else(|| text(s, "organization_id"));
        match oid {
            Some(oid) => {
                if let Some(o) = org {
                    orgs.entry(oid.clone()).or_insert_with(|| o.clone());
                }
                services.push((oid, s.clone()));
            }
            None => errors.push(format!("service {}: names no organization", label(s))),
        }
    };
    for doc in documents {
        let list: &[Value] = match doc {
            Value::Array(a) => a,
            page if page.get("contents").is_some() => items(page, "contents"),
            other => std::slice::from_ref(other),
        };
        for v in list {
            if let (Some(s), Some(_)) = (v.get("service"), v.get("location")) {
                // A service at a location: the service, at this location.
                let mut s = s.clone();
                let mut sal = v.clone();
                if let Value::Object(o) = &mut sal {
                    o.remove("service");
                }
                s["service_at_locations"] = Value::Array(vec![sal]);
                for key in ["schedules", "phones", "contacts"] {
                    if s.get(key).is_none() {
                        s[key] = v.get(key).cloned().unwrap_or(Value::Array(Vec::new()));
                    }
                }
                add_service(&s, None, &mut orgs);
            } else if v.get("services").is_some() || v.get("status").is_none() {
                // An organization: its services, if it lists them whole.
                if let Some(oid) = text(v, "id") {
                    orgs.insert(oid, v.clone());
                }
                for s in items(v, "services") {
                    if s.get("service_at_locations").is_some() || s.get("schedules").is_some() {
                        add_service(s, Some(v), &mut orgs);
                    }
                }
            } else {
                add_service(v, None, &mut orgs);
            }
        }
    }
    // A service listed both inside its organization and on its own is read once.
    // One without an id is kept (and refused later, named): it cannot be a repeat.
    let mut seen = std::collections::HashSet::new();
    services.retain(|(_, s)| text(s, "id").is_none_or(|id| seen.insert(id)));
    if !errors.is_empty() {
        return Err(errors);
    }
    assemble(&orgs, &services, m, opt)
}

/// Reads a tabular package: `tables` maps a table's resource name (`service`) to its CSV text.
pub fn from_dir(
    tables: &BTreeMap<String, String>,
    m: &Mechanism,
    opt: &Options,
) -> Result<Imported, Vec<String>> {
    let mut rows: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (name, csv) in tables {
        let parsed = parse_csv(csv).map_err(|e| vec![format!("{name}: {e}")])?;
        rows.insert(
            name.as_str(),
            parsed.into_iter().map(Value::Object).collect(),
        );
    }
    let of = |t: &str| rows.get(t).map_or(&[][..], Vec::as_slice);
    unlinked(of("service"))?;
    let by = |t: &str, key: &str, id: &str| -> Vec<Value> {
        of(t)
            .iter()
            .filter(|r| r.get(key).and_then(Value::as_str) == Some(id))
            .cloned()
            .collect()
    };
    let phones_of = |key: &str, id: &str| by("phone", key, id);
    let with_phones = |mut c: Value| {
        let id = text(&c, "id").unwrap_or_default();
        c["phones"] = Value::Array(phones_of("contact_id", &id));
        c
    };
    let mut orgs = BTreeMap::new();
    for o in of("organization") {
        let id = text(o, "id").unwrap_or_default();
        let mut o = o.clone();
        o["contacts"] = Value::Array(
            by("contact", "organization_id", &id)
                .into_iter()
                .map(with_phones)
                .collect(),
        );
        orgs.insert(id, o);
    }
    let terms: BTreeMap<String, Value> = of("taxonomy_term")
        .iter()
        .map(|t| (text(t, "id").unwrap_or_default(), t.clone()))
        .collect();
    let mut services = Vec::new();
    for s in of("service") {
        let id = text(s, "id").unwrap_or_default();
        let mut s = s.clone();
        let mut sals = Vec::new();
        for mut sal in by("service_at_location", "service_id", &id) {
            let lid = text(&sal, "location_id").unwrap_or_default();
            if let Some(mut loc) = by("location", "id", &lid).into_iter().next() {
                loc["addresses"] = Value::Array(by("address", "location_id", &lid));
                sal["location"] = loc;
            }
            sals.push(sal);
        }
        s["service_at_locations"] = Value::Array(sals);
        s["schedules"] = Value::Array(by("schedule", "service_id", &id));
        s["languages"] = Value::Array(by("language", "service_id", &id));
        s["contacts"] = Value::Array(by("contact", "service_id", &id));
        s["phones"] = Value::Array(phones_of("service_id", &id));
        s["attributes"] = Value::Array(
            by("attribute", "link_id", &id)
                .into_iter()
                .map(|mut a| {
                    let term = text(&a, "taxonomy_term_id").unwrap_or_default();
                    if let Some(t) = terms.get(&term) {
                        a["taxonomy_term"] = t.clone();
                    }
                    a
                })
                .collect(),
        );
        let oid = text(&s, "organization_id").unwrap_or_default();
        services.push((oid, s));
    }
    assemble(&orgs, &services, m, opt)
}

/// Rows join by ids: a service row without its own id or its organization's is refused, named.
/// Elsewhere an absent id reads as "", which matches no row (empty cells are left out of
/// rows), so a row missing a link is simply not joined.
fn unlinked(services: &[Value]) -> Result<(), Vec<String>> {
    let errors: Vec<String> = services
        .iter()
        .enumerate()
        .filter(|(_, s)| text(s, "id").is_none() || text(s, "organization_id").is_none())
        .map(|(i, s)| {
            format!(
                "services.csv row {}: {}: needs an id and an organization_id",
                i + 2,
                label(s)
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Chooses the organisation, reads its services, validates each, and builds the profile.
fn assemble(
    orgs: &BTreeMap<String, Value>,
    services: &[(String, Value)],
    m: &Mechanism,
    opt: &Options,
) -> Result<Imported, Vec<String>> {
    let source = choose_org(orgs, services, opt).map_err(|e| vec![e])?;
    let org = orgs.get(&source).cloned().unwrap_or(Value::Null);
    let mut notes = Vec::new();
    let description = names(&org, "description", "description_translations")
        .or_else(|| names(&org, "name", "name_translations"))
        .ok_or_else(|| vec![format!("organization {source}: has no description or name")])?;
    let mut profile = Profile {
        org: opt.org.clone(),
        description,
        focal_points: focal_points(&org),
        services: Vec::new(),
    };
    let mut errors = Vec::new();
    for (_, s) in services.iter().filter(|(o, _)| *o == source) {
        match service(s, m, opt, &mut notes) {
            Ok(Some(service)) => {
                // Each record is checked on its own, so each refused one says why.
                let alone = Profile {
                    services: vec![service.clone()],
                    ..profile.clone()
                };
                match alone.validate(m) {
                    Ok(()) => profile.services.push(service),
                    Err(e) => errors.push(format!("service {}: {e}", label(s))),
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("service {}: {e}", label(s))),
        }
    }
    if profile.services.is_empty() && errors.is_empty() {
        errors.push(format!("organization {source}: no service to import"));
    }
    if errors.is_empty()
        && let Err(e) = profile.validate(m)
    {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(Imported { profile, notes })
    } else {
        Err(errors)
    }
}

fn label(s: &Value) -> String {
    let id = text(s, "id").unwrap_or_else(|| "(no id)".into());
    match text(s, "name") {
        Some(n) => format!(
            "{} ({})",
            crate::keys::truncate_for_error(&id),
            crate::keys::truncate_for_error(&n)
        ),
        None => crate::keys::truncate_for_error(&id).to_string(),
    }
}

/// The HSDS id of the organisation to take: the one asked for, else ours, else the only one.
fn choose_org(
    orgs: &BTreeMap<String, Value>,
    services: &[(String, Value)],
    opt: &Options,
) -> Result<String, String> {
    let mut all: Vec<String> = orgs.keys().cloned().collect();
    for (o, _) in services {
        if !all.contains(o) {
            all.push(o.clone());
        }
    }
    if let Some(want) = &opt.source_org {
        return if all.contains(want) {
            Ok(want.clone())
        } else {
            Err(format!(
                "the package holds no organization `{}`",
                crate::keys::truncate_for_error(want)
            ))
        };
    }
    let ours = Ids::new(&opt.mechanism_id).of(&["organization", &opt.org]);
    let mine: Vec<&String> = all
        .iter()
        .filter(|id| {
            **id == ours
                || orgs
                    .get(*id)
                    .and_then(|o| text(o, "passerelle_id"))
                    .as_deref()
                    == Some(opt.org.as_str())
        })
        .collect();
    match (mine.as_slice(), all.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        ([], [one]) => Ok(one.clone()),
        ([], []) => Err("the package holds no organization".into()),
        _ => Err(format!(
            "the package holds {} organizations: name the one to import with --hsds-org (one of {})",
            all.len(),
            all.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

fn focal_points(org: &Value) -> Vec<FocalPoint> {
    items(org, "contacts")
        .iter()
        .filter_map(|c| {
            Some(FocalPoint {
                name: text(c, "name")?,
                role: text(c, "title"),
                phone: items(c, "phones").iter().find_map(|p| text(p, "number")),
                email: text(c, "email"),
            })
        })
        .take(crate::limits::LIST_ITEMS_MAX)
        .collect()
}

/// One compiled service as ours; `None` for a defunct one (left out, with a note).
fn service(
    s: &Value,
    m: &Mechanism,
    opt: &Options,
    notes: &mut Vec<String>,
) -> Result<Option<Service>, String> {
    let status = text(s, "status").unwrap_or_else(|| "active".into());
    if status == "defunct" {
        notes.push(format!("service {}: defunct, left out", label(s)));
        return Ok(None);
    }
    let id = text(s, "passerelle_id")
        .filter(|i| crate::config::is_valid_id(i))
        .or_else(|| text(s, "id").map(|i| i.to_ascii_lowercase()))
        .ok_or("has no id")?;
    let name = names(s, "name", "name_translations").ok_or("has no name")?;
    let location = items(s, "service_at_locations")
        .iter()
        .find_map(|sal| sal.get("location"))
        .cloned()
        .unwrap_or(Value::Null);
    let site = site_of(&location, m)
        .or_else(|| opt.site.clone())
        .ok_or("its location is none of the mechanism's sites: give one with --site")?;
    let category = category_of(s, m).or_else(|| opt.category.clone()).ok_or(
        "its taxonomy terms name none of the mechanism's categories: give one with --category",
    )?;
    let (address, postal_code) = address_of(&location);
    let site_coords = m.site(&site).map(|x| (x.latitude, x.longitude));
    let mut coord = |key: &str, range: f64| {
        let v = number(&location, key)?;
        if !(-range..=range).contains(&v) {
            notes.push(format!(
                "service {}: {key} {v} is out of range, left out",
                label(s)
            ));
            return None;
        }
        Some(v)
    };
    let (lat, lon) = (coord("latitude", 90.0), coord("longitude", 180.0));
    // Coordinates that are the site's are the site's (our export falls back to them).
    let (latitude, longitude) = match site_coords {
        Some((a, b)) if (lat, lon) == (a, b) => (None, None),
        _ => (lat, lon),
    };
    let capacity = s
        .get("capacity_status")
        .and_then(|c| text(c, "status"))
        .and_then(|c| Capacity::parse(&c))
        .unwrap_or(match status.as_str() {
            "inactive" | "temporarily closed" => Capacity::Suspended,
            _ => Capacity::Available,
        });
    let verified = s
        .get("capacity_status")
        .and_then(|c| text(c, "verified"))
        .or_else(|| text(s, "assured_date"))
        .or_else(|| text(s, "last_modified").map(|d| d.chars().take(10).collect()))
        .filter(|d| parse_date(d).is_some())
        .unwrap_or_else(|| opt.today.clone());
    Ok(Some(Service {
        id,
        category,
        site,
        name,
        description: names(s, "description", "description_translations"),
        eligibility: text(s, "eligibility_description"),
        languages: {
            let found = languages_of(s);
            if found.is_empty() {
                opt.language.iter().cloned().collect()
            } else {
                found
            }
        },
        address,
        latitude,
        longitude,
        postal_code,
        confidential: location.get("redacted").and_then(Value::as_bool) == Some(true),
        case_types: case_types_of(s, m),
        capacity,
        verified,
        hours: hours_of(s, notes),
        contact: contact_of(s),
    }))
}

fn site_of(location: &Value, m: &Mechanism) -> Option<String> {
    let id = text(location, "external_identifier")?;
    m.site(&id).map(|_| id)
}

fn term_codes(s: &Value) -> Vec<String> {
    items(s, "attributes")
        .iter()
        .filter_map(|a| a.get("taxonomy_term"))
        .flat_map(|t| [text(t, "passerelle_id"), text(t, "code")])
        .flatten()
        .collect()
}

fn category_of(s: &Value, m: &Mechanism) -> Option<String> {
    term_codes(s).into_iter().find(|c| m.category(c).is_some())
}

fn case_types_of(s: &Value, m: &Mechanism) -> Vec<String> {
    let mut out: Vec<String> = items(s, "eligible_case_types")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    if out.is_empty() {
        out = term_codes(s)
            .into_iter()
            .filter_map(|c| c.strip_prefix("case_type:").map(str::to_string))
            .filter(|c| m.case_type(c).is_some())
            .collect();
        out.dedup();
    }
    out
}

fn address_of(location: &Value) -> (Option<String>, Option<String>) {
    if location.get("redacted").and_then(Value::as_bool) == Some(true) {
        return (None, None);
    }
    if let Some(a) = items(location, "addresses").first() {
        let line: Vec<String> = [text(a, "address_1"), text(a, "address_2")]
            .into_iter()
            .flatten()
            .collect();
        return (
            (!line.is_empty()).then(|| line.join(", ")),
            text(a, "postal_code"),
        );
    }
    // Our own export gives an address without a postal code as the location's description.
    let ours = text(location, "external_identifier_type").as_deref() == Some("passerelle_site");
    (ours.then(|| text(location, "description")).flatten(), None)
}

fn languages_of(s: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in items(s, "languages") {
        let Some(code) = text(l, "code") else {
            continue;
        };
        let two: String = code
            .chars()
            .take(2)
            .collect::<String>()
            .to_ascii_lowercase();
        let head_ok = code.len() == 2 || code.as_bytes().get(2) == Some(&b'-');
        if head_ok && two.chars().all(|c| c.is_ascii_lowercase()) && !out.contains(&two) {
            out.push(two);
        }
    }
    out.truncate(crate::limits::LIST_ITEMS_MAX);
    out
}

/// `HH:MM` from an HSDS time (`10:00`, `10:00:00`, `10:00:00+01:00`); the end of a day is
/// 24:00.
fn hhmm(t: &str, closing: bool) -> Option<String> {
    let h = t.get(..5)?;
    if closing && t.starts_with("23:59") {
        return Some("24:00".into());
    }
    (h.as_bytes().get(2) == Some(&b':')).then(|| h.to_string())
}

fn hours_of(s: &Value, notes: &mut Vec<String>) -> Hours {
    let days = [
        ("MO", "mon"),
        ("TU", "tue"),
        ("WE", "wed"),
        ("TH", "thu"),
        ("FR", "fri"),
        ("SA", "sat"),
        ("SU", "sun"),
    ];
    let mut ranges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let schedules = items(s, "schedules").iter().chain(
        items(s, "service_at_locations")
            .iter()
            .flat_map(|sal| items(sal, "schedules")),
    );
    for sch in schedules {
        let weekly = text(sch, "freq").is_none_or(|f| f == "WEEKLY");
        let (Some(byday), Some(open), Some(close)) = (
            text(sch, "byday"),
            text(sch, "opens_at").and_then(|t| hhmm(&t, false)),
            text(sch, "closes_at").and_then(|t| hhmm(&t, true)),
        ) else {
            continue;
        };
        if !weekly {
            notes.push(format!(
                "service {}: a schedule that is not weekly, left out",
                label(s)
            ));
            continue;
        }
        for d in byday.split(',') {
            if let Some((_, ours)) = days.iter().find(|(code, _)| d.trim().ends_with(code)) {
                let r = format!("{open}-{close}");
                let list = ranges.entry((*ours).to_string()).or_default();
                if !list.contains(&r) {
                    list.push(r);
                }
            }
        }
    }
    ranges
        .into_iter()
        .map(|(d, mut r)| {
            r.sort();
            (d, r.join(","))
        })
        .collect()
}

fn contact_of(s: &Value) -> Option<Contact> {
    let contact = items(s, "contacts").first();
    let c = Contact {
        phone: items(s, "phones")
            .iter()
            .chain(contact.map_or(&[][..], |c| items(c, "phones")))
            .find_map(|p| text(p, "number")),
        email: contact
            .and_then(|c| text(c, "email"))
            .or_else(|| text(s, "email")),
        focal_point: contact.and_then(|c| text(c, "name")),
    };
    (c != Contact::default()).then_some(c)
}

/// Parses RFC 4180 CSV with a header row into rows keyed by column; empty cells are left out.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records: Vec<Vec<String>> = Vec::new();
    let (mut record, mut cell) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    let mut line = 1usize;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                cell.push(c);
            }
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                line += 1;
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err(format!("a quoted cell is not closed (line {line})"));
    }
    if !cell.is_empty() || !record.is_empty() {
        record.push(cell);
        records.push(record);
    }
    let mut records = records.into_iter();
    let header = records.next().ok_or("empty: no header row")?;
    let mut out = Vec::new();
    for (i, r) in records.enumerate() {
        if r.len() == 1 && r[0].is_empty() {
            continue;
        }
        if r.len() != header.len() {
            return Err(format!(
                "row {} has {} cells, the header {}",
                i + 2,
                r.len(),
                header.len()
            ));
        }
        let row: Map<String, Value> = header
            .iter()
            .zip(r)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), Value::String(v)))
            .collect();
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_csv;

    #[test]
    fn csv_reads_quotes_commas_and_line_breaks() {
        let rows = parse_csv("a,b,c\r\n1,\"x, \"\"y\"\"\",\r\n2,\"two\nlines\",z\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["b"], "x, \"y\"");
        assert!(!rows[0].contains_key("c"));
        assert_eq!(rows[1]["b"], "two\nlines");
        assert!(parse_csv("a,b\n1\n").is_err());
        assert!(parse_csv("a\n\"open\n").is_err());
    }
}
