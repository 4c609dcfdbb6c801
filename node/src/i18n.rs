//! Translations with Project Fluent: French, English and Arabic (right to left), embedded in
//! the binary so nothing needs the internet.

use std::collections::HashMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use unic_langid::LanguageIdentifier;

/// The languages Passerelle speaks.
pub const LANGS: [&str; 3] = ["fr", "en", "ar"];

const SOURCES: [(&str, &str); 3] = [
    ("fr", include_str!("../i18n/fr.ftl")),
    ("en", include_str!("../i18n/en.ftl")),
    ("ar", include_str!("../i18n/ar.ftl")),
];

fn bundles() -> &'static HashMap<&'static str, FluentBundle<FluentResource>> {
    static BUNDLES: OnceLock<HashMap<&'static str, FluentBundle<FluentResource>>> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        SOURCES
            .iter()
            .filter_map(|(lang, source)| {
                let id: LanguageIdentifier = lang.parse().ok()?;
                let resource = FluentResource::try_new(source.to_string()).ok()?;
                let mut bundle = FluentBundle::new_concurrent(vec![id]);
                // No Unicode isolation marks around arguments: they would show in plain text.
                bundle.set_use_isolating(false);
                bundle.add_resource(resource).ok()?;
                Some((*lang, bundle))
            })
            .collect()
    })
}

/// A supported language, or French.
pub fn lang(requested: &str) -> &'static str {
    LANGS
        .iter()
        .find(|l| **l == requested)
        .copied()
        .unwrap_or("fr")
}

/// Whether a language is written right to left.
pub fn rtl(lang: &str) -> bool {
    lang == "ar"
}

/// The message `key` in `lang`, with arguments; the key itself if it is missing.
pub fn t(lang: &str, key: &str, args: &[(&str, &str)]) -> String {
    let Some(bundle) = bundles().get(self::lang(lang)) else {
        return key.to_string();
    };
    let Some(pattern) = bundle.get_message(key).and_then(|m| m.value()) else {
        return key.to_string();
    };
    let mut fargs = FluentArgs::new();
    for (k, v) in args {
        fargs.set(*k, FluentValue::from(v.to_string()));
    }
    let mut errors = Vec::new();
    bundle
        .format_pattern(pattern, Some(&fargs), &mut errors)
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_exists_in_every_language() {
        let keys = |source: &str| -> Vec<String> {
            source
                .lines()
                .filter(|l| !l.starts_with('#') && l.contains(" = "))
                .filter_map(|l| l.split(" = ").next().map(|k| k.trim().to_string()))
                .collect()
        };
        let fr = keys(SOURCES[0].1);
        for (lang, source) in SOURCES {
            assert_eq!(keys(source), fr, "{lang} has the same keys as fr");
            for key in &fr {
                assert_ne!(
                    t(lang, key, &[("date", "x"), ("version", "1"), ("site", "s")]),
                    *key
                );
            }
        }
        assert_eq!(
            t("en", "poster-site", &[("site", "Zarzis")]),
            "Site: Zarzis"
        );
    }
}
