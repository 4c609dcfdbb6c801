//! The profile an organisation publishes, and its validation against the configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::Date;

use super::{MapError, invalid};
use crate::config::{Mechanism, Names};
use crate::keys;
use crate::limits::{
    LIST_ITEMS_MAX, PROFILE_SERVICES_MAX, SHORT_FIELD_MAX_CHARS, TEXT_FIELD_MAX_CHARS,
};

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
    /// The postal code of the address (exports give a full postal address only with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// A confidential place (a shelter for people at risk): public outputs (HSDS export and
    /// API, posters) give its site and region only, never its address or coordinates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confidential: bool,
    /// The case types the service is meant for (ids of the configuration's `case_types`);
    /// empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub case_types: Vec<String>,
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
            // An empty message has no first line: the place is then just left empty.
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
        self.validate_focal_points()?;
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
            s.validate(&f, m)?;
        }
        Ok(())
    }

    fn validate_focal_points(&self) -> Result<(), MapError> {
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
        Ok(())
    }
}

impl Service {
    /// Checks one service (its id aside, which the profile checks for duplicates); `f` is the
    /// field it sits at, e.g. `services[2]`.
    fn validate(&self, f: &str, m: &Mechanism) -> Result<(), MapError> {
        if m.category(&self.category).is_none() {
            return Err(invalid(
                format!("{f}.category"),
                format!(
                    "unknown service category `{}`",
                    keys::truncate_for_error(&self.category)
                ),
            ));
        }
        if m.site(&self.site).is_none() {
            return Err(invalid(
                format!("{f}.site"),
                format!("unknown site `{}`", keys::truncate_for_error(&self.site)),
            ));
        }
        check_names(&format!("{f}.name"), &self.name, false)?;
        if let Some(d) = &self.description {
            check_names(&format!("{f}.description"), d, true)?;
        }
        check_text(&format!("{f}.eligibility"), self.eligibility.as_deref())?;
        check_short(&format!("{f}.address"), self.address.as_deref())?;
        check_short(&format!("{f}.postal_code"), self.postal_code.as_deref())?;
        self.validate_case_types(f, m)?;
        self.validate_languages(f)?;
        if self.latitude.is_some_and(|v| !(-90.0..=90.0).contains(&v)) {
            return Err(invalid(format!("{f}.latitude"), "out of range"));
        }
        if self
            .longitude
            .is_some_and(|v| !(-180.0..=180.0).contains(&v))
        {
            return Err(invalid(format!("{f}.longitude"), "out of range"));
        }
        if parse_date(&self.verified).is_none() {
            return Err(invalid(
                format!("{f}.verified"),
                "must be a date like 2026-11-27",
            ));
        }
        self.validate_hours(f)?;
        if let Some(c) = &self.contact {
            check_short(&format!("{f}.contact.phone"), c.phone.as_deref())?;
            check_short(&format!("{f}.contact.email"), c.email.as_deref())?;
            check_short(
                &format!("{f}.contact.focal_point"),
                c.focal_point.as_deref(),
            )?;
        }
        Ok(())
    }

    /// One to [`LIST_ITEMS_MAX`] languages, each a two-letter ISO 639-1 code.
    fn validate_languages(&self, f: &str) -> Result<(), MapError> {
        if self.languages.is_empty() || self.languages.len() > LIST_ITEMS_MAX {
            return Err(invalid(
                format!("{f}.languages"),
                "list 1 or more languages",
            ));
        }
        for (j, l) in self.languages.iter().enumerate() {
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
        Ok(())
    }

    /// Known case types, each named once.
    fn validate_case_types(&self, f: &str, m: &Mechanism) -> Result<(), MapError> {
        if self.case_types.len() > LIST_ITEMS_MAX {
            return Err(invalid(
                format!("{f}.case_types"),
                format!("more than {LIST_ITEMS_MAX}"),
            ));
        }
        for (j, c) in self.case_types.iter().enumerate() {
            if m.case_type(c).is_none() || self.case_types[..j].contains(c) {
                return Err(invalid(
                    format!("{f}.case_types[{j}]"),
                    format!(
                        "`{}` is not a case type of the mechanism, or is named twice",
                        keys::truncate_for_error(c)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Opening hours: known days, each a list of ranges that open before they close.
    fn validate_hours(&self, f: &str) -> Result<(), MapError> {
        for (day, spec) in &self.hours {
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
        Ok(())
    }
}
