//! Posters of the partner map: a print-ready page per site (A4 or A3, `@page` CSS), listing by
//! service category each partner with its services, hours, languages and contacts, in French,
//! English or Arabic (right to left), with the mechanism's name, the configuration version and
//! the printing date; entries not verified in 90 days are marked.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use askama::Template;
use passerelle_core::config::Mechanism;
use passerelle_core::map::{self, Profile};
use time::OffsetDateTime;

use crate::i18n::{self, t};

pub struct Labels {
    pub hours: String,
    pub languages: String,
    pub contact: String,
}

pub struct PosterService {
    pub id: String,
    pub org_id: String,
    pub org: String,
    pub name: String,
    pub capacity: String,
    pub capacity_class: &'static str,
    pub stale: Option<String>,
    /// (day, opening ranges) for each day of the week.
    pub hours: Vec<(String, String)>,
    pub languages: String,
    pub contact: Vec<String>,
}

pub struct PosterCategory {
    pub id: String,
    pub name: String,
    pub services: Vec<PosterService>,
}

pub struct PosterSite {
    pub id: String,
    pub label: String,
    pub categories: Vec<PosterCategory>,
}

#[derive(Template)]
#[template(path = "poster.html")]
pub struct Poster {
    pub lang: &'static str,
    pub dir: &'static str,
    pub page_size: &'static str,
    pub font_pt: u32,
    pub columns: u32,
    pub title: String,
    pub mechanism: String,
    pub printed: String,
    pub empty: String,
    pub legend: String,
    pub labels: Labels,
    pub sites: Vec<PosterSite>,
}

/// The paper sizes a poster comes in.
pub fn page_size(size: &str) -> Result<(&'static str, u32, u32)> {
    match size {
        "a4" | "A4" => Ok(("A4", 9, 2)),
        "a3" | "A3" => Ok(("A3", 11, 3)),
        other => bail!("`{other}` is not a poster size (a4 or a3)"),
    }
}

/// Renders the posters of one site (or, with `None`, of every site, a page each).
pub fn render(
    m: &Mechanism,
    profiles: &BTreeMap<String, Profile>,
    site: Option<&str>,
    lang: &str,
    size: &str,
    now: OffsetDateTime,
) -> Result<String> {
    let lang = i18n::lang(lang);
    let (page_size, font_pt, columns) = page_size(size)?;
    let sites: Vec<String> = match site {
        Some(site) => {
            if m.site(site).is_none() {
                bail!(
                    "unknown site `{}` (sites: {})",
                    passerelle_core::keys::truncate_for_error(site),
                    m.doc
                        .sites
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            vec![site.to_string()]
        }
        None => m.doc.sites.iter().map(|s| s.id.clone()).collect(),
    };
    let sites = sites
        .iter()
        .map(|site| {
            let name = m
                .site(site)
                .map_or(site.clone(), |s| s.name.get(lang).to_string());
            PosterSite {
                id: site.clone(),
                label: t(lang, "poster-site", &[("site", &name)]),
                categories: site_categories(m, profiles, site, lang, now),
            }
        })
        .collect();
    let date = now.date().to_string();
    let version = m.doc.version.to_string();
    let poster = Poster {
        lang,
        dir: if i18n::rtl(lang) { "rtl" } else { "ltr" },
        page_size,
        font_pt,
        columns,
        title: t(lang, "poster-title", &[]),
        mechanism: m.doc.mechanism.clone(),
        printed: t(
            lang,
            "poster-printed",
            &[("date", &date), ("version", &version)],
        ),
        empty: t(lang, "poster-empty", &[]),
        legend: t(lang, "poster-legend", &[]),
        labels: Labels {
            hours: t(lang, "poster-hours", &[]),
            languages: t(lang, "poster-languages", &[]),
            contact: t(lang, "poster-contact", &[]),
        },
        sites,
    };
    Ok(poster.render()?)
}

fn site_categories(
    m: &Mechanism,
    profiles: &BTreeMap<String, Profile>,
    site: &str,
    lang: &'static str,
    now: OffsetDateTime,
) -> Vec<PosterCategory> {
    let mut categories = Vec::new();
    for cat in &m.doc.taxonomy {
        let query = map::Query {
            category: Some(cat.id.clone()),
            site: Some(site.to_string()),
            ..map::Query::default()
        };
        let mut entries = map::search(profiles, m, &query, now);
        entries.sort_by(|a, b| {
            a.org_name
                .cmp(&b.org_name)
                .then(a.service.id.cmp(&b.service.id))
        });
        if entries.is_empty() {
            continue;
        }
        let services = entries
            .into_iter()
            .map(|e| {
                let s = &e.service;
                let hours = map::DAYS
                    .iter()
                    .map(|d| {
                        let spec = s
                            .hours
                            .get(*d)
                            .cloned()
                            .unwrap_or_else(|| t(lang, "poster-closed", &[]));
                        (t(lang, &format!("day-{d}"), &[]), spec.replace(',', ", "))
                    })
                    .collect();
                let contact = s
                    .contact
                    .as_ref()
                    .map(|c| {
                        [c.focal_point.clone(), c.phone.clone(), c.email.clone()]
                            .into_iter()
                            .flatten()
                            .collect()
                    })
                    .unwrap_or_default();
                PosterService {
                    id: s.id.clone(),
                    org_id: e.org.clone(),
                    org: e.org_name.clone(),
                    name: s.name.get(lang).to_string(),
                    capacity: t(lang, &format!("capacity-{}", s.capacity.as_str()), &[]),
                    capacity_class: s.capacity.as_str(),
                    stale: e
                        .stale
                        .then(|| t(lang, "poster-stale", &[("date", &s.verified)])),
                    hours,
                    languages: s.languages.join(", "),
                    contact,
                }
            })
            .collect();
        categories.push(PosterCategory {
            id: cat.id.clone(),
            name: cat.name.get(lang).to_string(),
            services,
        });
    }
    categories
}
