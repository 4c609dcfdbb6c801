//! The partner map in Open Referral's Human Services Data Specification (HSDS 3.0): the rows of
//! its tables, the compiled (nested) service and organization objects its API serves, and the
//! import of an HSDS package back into a profile (`import`).
//!
//! Ids are UUIDv5, derived from the mechanism's id (the hash of its genesis configuration) and
//! our own ids, so every node of a mechanism exports the same ids, and exports stay stable.
//! Base HSDS fields carry the mechanism's first language (French); the Passerelle profile
//! (`hsds/profile/`) adds what HSDS 3.0 lacks: names in fr/en/ar, the capacity, the case types a
//! service is for, our ids, and a `redacted` flag on the location of a confidential place.

mod import;
mod tables;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use uuid::Uuid;

pub use import::{Imported, Options as ImportOptions, from_compiled, from_dir, parse_csv};
pub use tables::{DATAPACKAGE, Table, csv, table, tables};

use super::{Capacity, Profile, Service, ranges};
use crate::config::{Mechanism, Names};

/// The HSDS version we speak.
pub const HSDS_VERSION: &str = "3.0";
/// Where the profile's files are served by a node, under its HSDS API (`/hsds/profile/…`).
pub const PROFILE_FILES: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../../../hsds/profile/README.md"),
    ),
    (
        "service.json",
        include_str!("../../../../hsds/profile/schema/service.json"),
    ),
    (
        "organization.json",
        include_str!("../../../../hsds/profile/schema/organization.json"),
    ),
    (
        "location.json",
        include_str!("../../../../hsds/profile/schema/location.json"),
    ),
    (
        "taxonomy_term.json",
        include_str!("../../../../hsds/profile/schema/taxonomy_term.json"),
    ),
];
/// The HSDS OpenAPI document (the specification's, unchanged) a node's API implements.
pub const OPENAPI: &str = include_str!("../../../../hsds/spec/schema/openapi.json");

/// A row of a table, or an object: field → value; absent fields are left out, never `null`.
pub type Row = Map<String, Value>;

/// One service, compiled: what `/services/{id}` serves, its list form, and what the API
/// filters on.
#[derive(Debug, Clone)]
pub struct CompiledService {
    /// The whole nested object (`schema/compiled/service.json`).
    pub full: Value,
    /// The list form (`schema/compiled/service_list.json`): one-to-one fields.
    pub list: Value,
    pub id: String,
    pub organization_id: String,
    pub taxonomy_term_ids: Vec<String>,
    pub taxonomy_ids: Vec<String>,
    /// RFC 3339, comparable as text (always UTC, `Z`).
    pub last_modified: String,
    /// Lower-case text a search matches: names, descriptions, eligibility, organisation.
    pub text: String,
}

/// The directory in HSDS: table rows and compiled objects.
#[derive(Debug, Clone, Default)]
pub struct Hsds {
    /// Rows by table name (`service`, `location`, …).
    pub rows: BTreeMap<&'static str, Vec<Row>>,
    pub services: Vec<CompiledService>,
    /// Compiled organizations (`schema/compiled/organization.json`).
    pub organizations: Vec<Value>,
    /// The items `/service_at_locations` lists.
    pub service_at_locations: Vec<Value>,
}

/// Derives the ids of one mechanism.
#[derive(Debug, Clone, Copy)]
pub struct Ids(Uuid);

impl Ids {
    /// The namespace of a mechanism, from its id (hex of its genesis hash).
    pub fn new(mechanism_id: &str) -> Self {
        Ids(Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("urn:passerelle:mechanism:{mechanism_id}").as_bytes(),
        ))
    }

    /// The id of the object named by `parts` (`["service", "crt", "crt-shelter"]`).
    pub fn of(&self, parts: &[&str]) -> String {
        Uuid::new_v5(&self.0, parts.join("/").as_bytes()).to_string()
    }
}

/// An address that looks like e-mail (what HSDS's `email` format asks); others are left out.
fn email(s: Option<&str>) -> Option<String> {
    let s = s?.trim();
    let (local, domain) = s.split_once('@')?;
    let fine = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@');
    fine.then(|| s.to_string())
}

fn names_value(n: &Names) -> Value {
    let mut m = Row::new();
    m.insert("fr".into(), n.fr.clone().into());
    m.insert("en".into(), n.en.clone().into());
    if let Some(ar) = &n.ar {
        m.insert("ar".into(), ar.clone().into());
    }
    Value::Object(m)
}

fn put(row: &mut Row, key: &str, v: Option<impl Into<Value>>) {
    if let Some(v) = v {
        row.insert(key.to_string(), v.into());
    }
}

/// English names of the languages partners most often list (HSDS `language.name`).
fn language_name(code: &str) -> Option<&'static str> {
    Some(match code {
        "ar" => "Arabic",
        "en" => "English",
        "fr" => "French",
        "es" => "Spanish",
        "it" => "Italian",
        "de" => "German",
        "pt" => "Portuguese",
        "ha" => "Hausa",
        "ff" => "Fula",
        "wo" => "Wolof",
        "bm" => "Bambara",
        "ti" => "Tigrinya",
        "am" => "Amharic",
        "so" => "Somali",
        "ur" => "Urdu",
        "fa" => "Persian",
        "ps" => "Pashto",
        "sw" => "Swahili",
        "ln" => "Lingala",
        "tr" => "Turkish",
        "bn" => "Bengali",
        _ => return None,
    })
}

/// HSDS `HH:MM:SS` from minutes since midnight; the end of a day (24:00) is 23:59:59, which
/// the import reads back as 24:00.
fn clock(minutes: u32) -> String {
    if minutes >= 24 * 60 {
        "23:59:59".into()
    } else {
        format!("{:02}:{:02}:00", minutes / 60, minutes % 60)
    }
}

/// The service's status word, and the alert that says why a referral may wait.
fn status(c: Capacity) -> (&'static str, Option<&'static str>) {
    match c {
        Capacity::Available => ("active", None),
        Capacity::Limited => ("active", Some("Capacité limitée.")),
        Capacity::Full => (
            "active",
            Some("Complet : n'accueille personne de nouveau pour le moment."),
        ),
        Capacity::Suspended => ("temporarily closed", Some("Service suspendu.")),
    }
}

/// The directory of `m` as HSDS. `mechanism_id` is the hex id of the mechanism.
pub fn build(profiles: &BTreeMap<String, Profile>, m: &Mechanism, mechanism_id: &str) -> Hsds {
    let mut b = Builder {
        ids: Ids::new(mechanism_id),
        m,
        out: Hsds::default(),
        locations: BTreeMap::new(),
        terms: BTreeMap::new(),
    };
    b.taxonomies();
    for (org, p) in profiles {
        b.organization(org, p);
    }
    let meta = json!({
        "id": b.ids.of(&["meta_table_description"]),
        "name": m.doc.mechanism,
        "language": "fr",
        "character_set": "UTF-8",
    });
    b.push("meta_table_description", meta);
    b.out
}

/// A taxonomy to export: our kind, its name and description, and its terms (id, names).
type TaxonomySet<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a Names)>);

struct Builder<'a> {
    ids: Ids,
    m: &'a Mechanism,
    out: Hsds,
    /// Locations already written, by key, with their row (nested where they are used).
    locations: BTreeMap<String, Value>,
    /// Taxonomy terms by our key (`category/health`, `case_type/x`): (term id, taxonomy id,
    /// the term's row).
    terms: BTreeMap<String, (String, String, Value)>,
}

impl Builder<'_> {
    fn push(&mut self, table: &'static str, v: Value) {
        if let Value::Object(row) = v {
            self.out.rows.entry(table).or_default().push(row);
        }
    }

    /// Base columns only: a table row leaves nested and profile fields out.
    fn push_row(&mut self, table: &'static str, v: &Value) {
        let Some(t) = tables::table(table) else {
            return;
        };
        if let Value::Object(o) = v {
            let row: Row = o
                .iter()
                .filter(|(k, _)| t.columns.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.out.rows.entry(table).or_default().push(row);
        }
    }

    /// The mechanism's taxonomy (service categories) and its case types, each an HSDS taxonomy.
    fn taxonomies(&mut self) {
        let m = self.m;
        let sets: [TaxonomySet<'_>; 2] = [
            (
                "category",
                "Catégories de services",
                "Les catégories de services du mécanisme de référencement, fixées par son organisation chef de file.",
                m.doc
                    .taxonomy
                    .iter()
                    .map(|c| (c.id.as_str(), &c.name))
                    .collect(),
            ),
            (
                "case_type",
                "Types de cas",
                "Les types de cas (catégories de personnes vulnérables) du mécanisme ; un service peut être destiné à certains d'entre eux.",
                m.doc
                    .case_types
                    .iter()
                    .map(|c| (c.id.as_str(), &c.name))
                    .collect(),
            ),
        ];
        for (kind, name, description, items) in sets {
            let tid = self.ids.of(&["taxonomy", kind]);
            self.push(
                "taxonomy",
                json!({
                    "id": tid,
                    "name": format!("{name} — {}", m.doc.mechanism),
                    "description": description,
                    "version": m.doc.version.to_string(),
                }),
            );
            for (id, names) in items {
                let term_id = self.ids.of(&["taxonomy_term", kind, id]);
                let code = if kind == "category" {
                    id.to_string()
                } else {
                    format!("case_type:{id}")
                };
                let term = json!({
                    "id": term_id,
                    "code": code,
                    "name": names.fr,
                    "description": format!("{} / {}", names.fr, names.en),
                    "taxonomy": format!("passerelle:{kind}"),
                    "language": "fr",
                    "taxonomy_id": tid,
                    "passerelle_id": id,
                    "name_translations": names_value(names),
                });
                self.push_row("taxonomy_term", &term);
                self.terms
                    .insert(format!("{kind}/{id}"), (term_id, tid.clone(), term));
            }
        }
    }

    fn organization(&mut self, org: &str, p: &Profile) {
        let o = self.m.org(org);
        let oid = self.ids.of(&["organization", org]);
        let mut row = Row::new();
        row.insert("id".into(), oid.clone().into());
        row.insert(
            "name".into(),
            o.map_or(org.to_string(), |o| o.name.clone()).into(),
        );
        put(
            &mut row,
            "alternate_name",
            o.and_then(|o| o.short_name.clone()),
        );
        row.insert("description".into(), p.description.fr.clone().into());
        put(
            &mut row,
            "email",
            email(p.focal_points.iter().find_map(|f| f.email.as_deref())),
        );
        let flat = Value::Object(row.clone());
        self.push_row("organization", &flat);
        let mut contacts = Vec::new();
        for (i, f) in p.focal_points.iter().enumerate() {
            let n = i.to_string();
            let cid = self.ids.of(&["contact", org, "focal_point", &n]);
            let mut c = Row::new();
            c.insert("id".into(), cid.clone().into());
            c.insert("organization_id".into(), oid.clone().into());
            c.insert("name".into(), f.name.clone().into());
            put(&mut c, "title", f.role.clone());
            put(&mut c, "email", email(f.email.as_deref()));
            self.push_row("contact", &Value::Object(c.clone()));
            let mut phones = Vec::new();
            if let Some(number) = &f.phone {
                let ph = json!({
                    "id": self.ids.of(&["phone", org, "focal_point", &n]),
                    "contact_id": cid,
                    "number": number,
                    "type": "voice",
                });
                self.push_row("phone", &ph);
                phones.push(ph);
            }
            c.insert("phones".into(), Value::Array(phones));
            contacts.push(Value::Object(c));
        }
        let mut services = Vec::new();
        let mut locations = BTreeSet::new();
        for s in &p.services {
            let (list, location) = self.service(org, &oid, &flat, s);
            services.push(list);
            locations.insert(location);
        }
        let mut full = row;
        full.insert("passerelle_id".into(), org.into());
        full.insert(
            "description_translations".into(),
            names_value(&p.description),
        );
        full.insert("contacts".into(), Value::Array(contacts));
        full.insert(
            "locations".into(),
            Value::Array(
                locations
                    .iter()
                    .filter_map(|k| self.locations.get(k).cloned())
                    .collect(),
            ),
        );
        full.insert("services".into(), Value::Array(services));
        self.out.organizations.push(Value::Object(full));
    }

    /// One service and what hangs from it. Returns its list form and its location's key.
    fn service(&mut self, org: &str, oid: &str, org_flat: &Value, s: &Service) -> (Value, String) {
        let sid = self.ids.of(&["service", org, &s.id]);
        let (status, alert) = status(s.capacity);
        let mut row = Row::new();
        row.insert("id".into(), sid.clone().into());
        row.insert("organization_id".into(), oid.into());
        row.insert("name".into(), s.name.fr.clone().into());
        put(
            &mut row,
            "alternate_name",
            (s.name.en != s.name.fr).then(|| s.name.en.clone()),
        );
        put(
            &mut row,
            "description",
            s.description.as_ref().map(|d| d.fr.clone()),
        );
        put(
            &mut row,
            "email",
            email(s.contact.as_ref().and_then(|c| c.email.as_deref())),
        );
        row.insert("status".into(), status.into());
        put(&mut row, "eligibility_description", s.eligibility.clone());
        put(&mut row, "assured_date", Some(s.verified.clone()));
        put(&mut row, "alert", alert);
        let modified = format!("{}T00:00:00Z", s.verified);
        row.insert("last_modified".into(), modified.clone().into());
        self.push_row("service", &Value::Object(row.clone()));

        let mut list = row.clone();
        list.insert("organization".into(), org_flat.clone());

        let mut full = row;
        self.profile_fields(&mut full, s);
        full.insert("organization".into(), org_flat.clone());
        let (sal, location_key) = self.service_at_location(org, oid, &sid, s, &list);
        full.insert("service_at_locations".into(), Value::Array(vec![sal]));
        full.insert(
            "schedules".into(),
            Value::Array(self.schedules(org, &sid, s)),
        );
        full.insert(
            "languages".into(),
            Value::Array(self.languages(org, &sid, s)),
        );
        let (contacts, phones) = self.contact(org, &sid, s);
        full.insert("contacts".into(), Value::Array(contacts));
        full.insert("phones".into(), Value::Array(phones));
        let (attributes, term_ids, taxonomy_ids) = self.attributes(org, &sid, s);
        full.insert("attributes".into(), Value::Array(attributes));

        let mut text = vec![s.name.fr.clone(), s.name.en.clone()];
        text.extend(s.name.ar.clone());
        if let Some(d) = &s.description {
            text.extend([d.fr.clone(), d.en.clone()]);
            text.extend(d.ar.clone());
        }
        text.extend(s.eligibility.clone());
        text.extend(org_flat["name"].as_str().map(str::to_string));
        self.out.services.push(CompiledService {
            full: Value::Object(full),
            list: Value::Object(list.clone()),
            id: sid,
            organization_id: oid.to_string(),
            taxonomy_term_ids: term_ids,
            taxonomy_ids,
            last_modified: modified,
            text: text.join("\n").to_lowercase(),
        });
        list.remove("organization");
        (Value::Object(list), location_key)
    }

    /// The Passerelle profile's fields of a service.
    fn profile_fields(&self, full: &mut Row, s: &Service) {
        full.insert("passerelle_id".into(), s.id.clone().into());
        full.insert("name_translations".into(), names_value(&s.name));
        if let Some(d) = &s.description {
            full.insert("description_translations".into(), names_value(d));
        }
        full.insert(
            "capacity_status".into(),
            json!({ "status": s.capacity.as_str(), "verified": s.verified }),
        );
        full.insert("eligible_case_types".into(), json!(s.case_types));
    }

    /// The service's place: a location row the first time it is seen (with its address when
    /// it has a postal code), and the service-at-location that joins them.
    fn service_at_location(
        &mut self,
        org: &str,
        oid: &str,
        sid: &str,
        s: &Service,
        list: &Row,
    ) -> (Value, String) {
        let site = self.m.site(&s.site);
        let key = if s.confidential {
            format!("{org}/{}/confidential", s.site)
        } else {
            // No address is the empty one: one location per site for such services.
            format!(
                "{org}/{}/{}",
                s.site,
                s.address.as_deref().unwrap_or_default()
            )
        };
        let lid = self.ids.of(&["location", &key]);
        if !self.locations.contains_key(&key) {
            let mut loc = Row::new();
            loc.insert("id".into(), lid.clone().into());
            loc.insert("location_type".into(), "physical".into());
            loc.insert("organization_id".into(), oid.into());
            loc.insert(
                "name".into(),
                site.map_or(s.site.clone(), |x| x.name.fr.clone()).into(),
            );
            loc.insert("external_identifier".into(), s.site.clone().into());
            loc.insert("external_identifier_type".into(), "passerelle_site".into());
            if s.confidential {
                loc.insert(
                    "description".into(),
                    "Adresse confidentielle : contacter le service.".into(),
                );
                loc.insert("redacted".into(), true.into());
            } else {
                put(&mut loc, "description", s.address.clone());
                put(
                    &mut loc,
                    "latitude",
                    s.latitude.or_else(|| site.and_then(|x| x.latitude)),
                );
                put(
                    &mut loc,
                    "longitude",
                    s.longitude.or_else(|| site.and_then(|x| x.longitude)),
                );
            }
            let mut addresses = Vec::new();
            if let (false, Some(address), Some(postal)) =
                (s.confidential, &s.address, &s.postal_code)
            {
                let a = json!({
                    "id": self.ids.of(&["address", &key]),
                    "location_id": lid,
                    "address_1": address,
                    "city": site.map_or(s.site.clone(), |x| x.name.fr.clone()),
                    "state_province": site.map_or(String::new(), |x| x.region.clone()),
                    "postal_code": postal,
                    "country": self.m.doc.country,
                    "address_type": "physical",
                });
                self.push_row("address", &a);
                addresses.push(a);
            }
            self.push_row("location", &Value::Object(loc.clone()));
            loc.insert("addresses".into(), Value::Array(addresses));
            self.locations.insert(key.clone(), Value::Object(loc));
        }
        let location = self.locations.get(&key).cloned().unwrap_or(Value::Null);
        let salid = self.ids.of(&["service_at_location", org, &s.id]);
        let row = json!({ "id": salid, "service_id": sid, "location_id": lid });
        self.push_row("service_at_location", &row);
        let mut flat_location = location.clone();
        if let Value::Object(o) = &mut flat_location {
            o.remove("addresses");
        }
        let mut item = row.clone();
        item["location"] = flat_location;
        let mut service = list.clone();
        service.remove("organization");
        item["service"] = Value::Object(service);
        self.out.service_at_locations.push(item);
        let mut nested = row;
        nested["location"] = location;
        (nested, key)
    }

    /// One weekly schedule per opening range, in the site's time zone.
    fn schedules(&mut self, org: &str, sid: &str, s: &Service) -> Vec<Value> {
        let offset = self
            .m
            .site(&s.site)
            .map_or(0.0, |x| f64::from(x.utc_offset_minutes) / 60.0);
        let mut out = Vec::new();
        for (day, spec) in &s.hours {
            // A validated profile's hours always parse; hours that do not give no rows.
            for (i, (a, b)) in ranges(spec).unwrap_or_default().into_iter().enumerate() {
                let n = i.to_string();
                let row = json!({
                    "id": self.ids.of(&["schedule", org, &s.id, day, &n]),
                    "service_id": sid,
                    "timezone": offset,
                    "freq": "WEEKLY",
                    "byday": day[..2].to_ascii_uppercase(),
                    "opens_at": clock(a),
                    "closes_at": clock(b),
                });
                self.push_row("schedule", &row);
                out.push(row);
            }
        }
        out
    }

    fn languages(&mut self, org: &str, sid: &str, s: &Service) -> Vec<Value> {
        let mut out = Vec::new();
        for l in &s.languages {
            let mut row = Row::new();
            row.insert(
                "id".into(),
                self.ids.of(&["language", org, &s.id, l]).into(),
            );
            row.insert("service_id".into(), sid.into());
            put(&mut row, "name", language_name(l));
            row.insert("code".into(), l.clone().into());
            let row = Value::Object(row);
            self.push_row("language", &row);
            out.push(row);
        }
        out
    }

    /// The service's contact and phone.
    fn contact(&mut self, org: &str, sid: &str, s: &Service) -> (Vec<Value>, Vec<Value>) {
        let (mut contacts, mut phones) = (Vec::new(), Vec::new());
        let Some(c) = &s.contact else {
            return (contacts, phones);
        };
        let mail = email(c.email.as_deref());
        if c.focal_point.is_some() || mail.is_some() {
            let mut row = Row::new();
            row.insert("id".into(), self.ids.of(&["contact", org, &s.id]).into());
            row.insert("service_id".into(), sid.into());
            put(&mut row, "name", c.focal_point.clone());
            put(&mut row, "email", mail);
            let row = Value::Object(row);
            self.push_row("contact", &row);
            contacts.push(row);
        }
        if let Some(number) = &c.phone {
            let row = json!({
                "id": self.ids.of(&["phone", org, &s.id]),
                "service_id": sid,
                "number": number,
                "type": "voice",
            });
            self.push_row("phone", &row);
            phones.push(row);
        }
        (contacts, phones)
    }

    /// The service's category and case types, as attributes that link it to taxonomy terms.
    fn attributes(
        &mut self,
        org: &str,
        sid: &str,
        s: &Service,
    ) -> (Vec<Value>, Vec<String>, Vec<String>) {
        let mut links = vec![("category", s.category.as_str(), "service_category")];
        links.extend(
            s.case_types
                .iter()
                .map(|c| ("case_type", c.as_str(), "eligible_case_type")),
        );
        let (mut out, mut terms, mut taxonomies) = (Vec::new(), Vec::new(), Vec::new());
        for (kind, id, link_type) in links {
            let Some((term_id, taxonomy_id, term)) =
                self.terms.get(&format!("{kind}/{id}")).cloned()
            else {
                continue;
            };
            let row = json!({
                "id": self.ids.of(&["attribute", org, &s.id, kind, id]),
                "link_id": sid,
                "taxonomy_term_id": term_id,
                "link_type": link_type,
                "link_entity": "service",
            });
            self.push_row("attribute", &row);
            let mut nested = row;
            nested["taxonomy_term"] = term;
            out.push(nested);
            terms.push(term_id);
            if !taxonomies.contains(&taxonomy_id) {
                taxonomies.push(taxonomy_id);
            }
        }
        (out, terms, taxonomies)
    }
}

impl Hsds {
    /// The rows of a table (none when it has none).
    pub fn table_rows(&self, table: &str) -> &[Row] {
        self.rows.get(table).map_or(&[], Vec::as_slice)
    }

    /// The taxonomies, as rows (`/taxonomies`).
    pub fn taxonomies(&self) -> &[Row] {
        self.table_rows("taxonomy")
    }

    /// The taxonomy terms, as rows (`/taxonomy_terms`).
    pub fn taxonomy_terms(&self) -> &[Row] {
        self.table_rows("taxonomy_term")
    }
}
