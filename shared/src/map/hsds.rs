//! The Open Referral (HSDS) export of the directory.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Capacity, Profile, Service, ranges};
use crate::config::Mechanism;

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
    let mut rows = Rows::default();
    for (org, p) in profiles {
        rows.organization(org, p, m);
        for s in &p.services {
            rows.service(org, s, m);
        }
    }
    rows.into_tables()
}

/// The rows of every HSDS table, filled one organisation and one service at a time.
#[derive(Default)]
struct Rows {
    organization: Vec<Vec<Value>>,
    service: Vec<Vec<Value>>,
    location: Vec<Vec<Value>>,
    service_at_location: Vec<Vec<Value>>,
    schedule: Vec<Vec<Value>>,
    contact: Vec<Vec<Value>>,
    phone: Vec<Vec<Value>>,
    language: Vec<Vec<Value>>,
    locations_seen: BTreeSet<String>,
}

impl Rows {
    fn organization(&mut self, org: &str, p: &Profile, m: &Mechanism) {
        let o = m.org(org);
        self.organization.push(vec![
            Value::String(org.to_string()),
            Value::String(o.map_or(org.to_string(), |o| o.name.clone())),
            // An organisation without a short name has an empty alternate name.
            Value::String(o.and_then(|o| o.short_name.clone()).unwrap_or_default()),
            Value::String(p.description.fr.clone()),
            p.focal_points
                .first()
                .map_or(Value::Null, |f| opt(&f.email)),
        ]);
    }

    /// A service and the rows that hang from it: its location, schedules, contact, phone and
    /// languages.
    fn service(&mut self, org: &str, s: &Service, m: &Mechanism) {
        let sid = format!("{org}:{}", s.id);
        self.service.push(service_row(&sid, org, s, m));
        let lid = self.location(org, s, m);
        self.service_at_location.push(vec![
            Value::String(format!("{sid}@{lid}")),
            Value::String(sid.clone()),
            Value::String(lid.clone()),
        ]);
        self.schedules(&sid, s);
        if let Some(c) = &s.contact {
            self.contact.push(vec![
                Value::String(format!("{sid}:contact")),
                Value::String(sid.clone()),
                opt(&c.focal_point),
                opt(&c.email),
            ]);
            if let Some(p) = &c.phone {
                self.phone.push(vec![
                    Value::String(format!("{sid}:phone")),
                    Value::String(sid.clone()),
                    Value::String(p.clone()),
                ]);
            }
        }
        for l in &s.languages {
            self.language.push(vec![
                Value::String(format!("{sid}:{l}")),
                Value::String(sid.clone()),
                Value::String(l.clone()),
            ]);
        }
    }

    /// The service's location id, and its row the first time the location is seen.
    fn location(&mut self, org: &str, s: &Service, m: &Mechanism) -> String {
        let lid = format!(
            "{org}:{}:{}",
            s.site,
            // No address counts as an empty one.
            s.address.clone().unwrap_or_default().len()
        );
        if self.locations_seen.insert(lid.clone()) {
            let site = m.site(&s.site);
            self.location.push(vec![
                Value::String(lid.clone()),
                Value::String(org.to_string()),
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
        lid
    }

    /// One weekly schedule row per opening range.
    fn schedules(&mut self, sid: &str, s: &Service) {
        for (day, spec) in &s.hours {
            // A validated profile's hours always parse; hours that do not give no rows.
            for (i, (a, b)) in ranges(spec).unwrap_or_default().into_iter().enumerate() {
                self.schedule.push(vec![
                    Value::String(format!("{sid}:{day}:{i}")),
                    Value::String(sid.to_string()),
                    Value::String("WEEKLY".into()),
                    Value::String(day[..2].to_ascii_uppercase()),
                    Value::String(format!("{:02}:{:02}", a / 60, a % 60)),
                    Value::String(format!("{:02}:{:02}", b / 60, b % 60)),
                ]);
            }
        }
    }

    fn into_tables(self) -> Vec<HsdsTable> {
        vec![
            HsdsTable {
                name: "organizations",
                columns: &["id", "name", "alternate_name", "description", "email"],
                rows: self.organization,
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
                rows: self.service,
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
                rows: self.location,
            },
            HsdsTable {
                name: "service_at_locations",
                columns: &["id", "service_id", "location_id"],
                rows: self.service_at_location,
            },
            HsdsTable {
                name: "schedules",
                columns: &["id", "service_id", "freq", "byday", "opens_at", "closes_at"],
                rows: self.schedule,
            },
            HsdsTable {
                name: "contacts",
                columns: &["id", "service_id", "name", "email"],
                rows: self.contact,
            },
            HsdsTable {
                name: "phones",
                columns: &["id", "service_id", "number"],
                rows: self.phone,
            },
            HsdsTable {
                name: "languages",
                columns: &["id", "service_id", "code"],
                rows: self.language,
            },
        ]
    }
}

/// A service's row of the services table.
fn service_row(sid: &str, org: &str, s: &Service, m: &Mechanism) -> Vec<Value> {
    let category = m.category(&s.category);
    vec![
        Value::String(sid.to_string()),
        Value::String(org.to_string()),
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
    ]
}
