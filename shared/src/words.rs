//! The words that name core enums wherever they leave the process (`urgent`, `accept`, `full`,
//! `admin`, `acknowledgement overdue`…): each type's own `as_str` is its one table of words;
//! [`Word`] lists the values and reads a word back, for clap's argument parsing, for serde (the
//! [`one`] and [`opt`] field adapters) and for the web UI's forms. Values carry the enum; the
//! word exists only in the bytes. A person reads neither: the UI and the CLI look the value up
//! in the node's translations.

use crate::event::{EraseReason, Transition, Urgency};
use crate::fold::{Overdue, Status};
use crate::keys;
use crate::map::Capacity;
use crate::store::UserRole;

/// A core enum that has one word per value.
pub trait Word: Sized + Copy + 'static {
    /// What the values are, for error messages ("an urgency").
    const WHAT: &'static str;
    /// Every value, in the order error messages list them.
    const ALL: &'static [Self];
    /// The word for this value.
    fn word(&self) -> &'static str;
    /// The value a word names, if any (aliases included).
    fn from_word(word: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.word() == word)
    }
}

/// Parses a word, with an error that lists the accepted ones (clap's `value_parser`).
pub fn parse<T: Word>(text: &str) -> Result<T, String> {
    T::from_word(text).ok_or_else(|| {
        let words: Vec<_> = T::ALL.iter().map(Word::word).collect();
        format!(
            "`{}` is not {} ({})",
            keys::truncate_for_error(text),
            T::WHAT,
            words.join(", ")
        )
    })
}

impl Word for Urgency {
    const WHAT: &'static str = "an urgency";
    const ALL: &'static [Self] = &[Urgency::Emergency, Urgency::Urgent, Urgency::Routine];
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

impl Word for EraseReason {
    const WHAT: &'static str = "a reason to erase";
    const ALL: &'static [Self] = &[
        EraseReason::PersonAsked,
        EraseReason::Duplicate,
        EraseReason::Error,
    ];
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

impl Word for Transition {
    const WHAT: &'static str = "a referral step";
    const ALL: &'static [Self] = &[
        Transition::Acknowledge,
        Transition::Accept,
        Transition::Decline,
        Transition::Complete,
        Transition::Withdraw,
    ];
    fn word(&self) -> &'static str {
        self.as_str()
    }
    fn from_word(word: &str) -> Option<Self> {
        match word {
            "ack" => Some(Transition::Acknowledge),
            other => Self::ALL.iter().copied().find(|v| v.word() == other),
        }
    }
}

impl Word for Status {
    const WHAT: &'static str = "a status";
    const ALL: &'static [Self] = &[
        Status::Sent,
        Status::Acknowledged,
        Status::Accepted,
        Status::Declined,
        Status::Completed,
        Status::Withdrawn,
        Status::Invalid,
    ];
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

impl Word for Overdue {
    const WHAT: &'static str = "an overdue step";
    const ALL: &'static [Self] = &[Overdue::Acknowledgement, Overdue::Decision];
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

impl Word for Capacity {
    const WHAT: &'static str = "a capacity";
    const ALL: &'static [Self] = &[
        Capacity::Available,
        Capacity::Limited,
        Capacity::Full,
        Capacity::Suspended,
    ];
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

impl Word for UserRole {
    const WHAT: &'static str = "a role";
    const ALL: &'static [Self] = &[UserRole::Caseworker, UserRole::Coordinator, UserRole::Admin];
    fn word(&self) -> &'static str {
        self.as_str()
    }
}

/// Serde for a field that holds a [`Word`]: written and read as its word.
pub mod one {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Word;

    pub fn serialize<T: Word, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.word())
    }

    pub fn deserialize<'de, T: Word, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for an optional [`Word`] field (`null` when absent).
pub mod opt {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Word;

    pub fn serialize<T: Word, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(v.word()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Word, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_value() {
        fn check<T: Word + PartialEq + std::fmt::Debug>() {
            let mut seen = std::collections::BTreeSet::new();
            for v in T::ALL {
                assert_eq!(parse::<T>(v.word()), Ok(*v));
                assert!(seen.insert(v.word()), "two values share `{}`", v.word());
            }
            assert!(parse::<T>("nonsense").is_err());
        }
        check::<Urgency>();
        check::<Transition>();
        check::<EraseReason>();
        check::<Status>();
        check::<Overdue>();
        check::<Capacity>();
        check::<UserRole>();
        assert_eq!(parse::<Transition>("ack"), Ok(Transition::Acknowledge));
    }
}
