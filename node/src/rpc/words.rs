//! The words at the node's edges: the core enums' words (re-exported from
//! [`passerelle_core::words`], the one table), and serde for dates and node ids in requests.

pub use passerelle_core::words::{one, opt, parse};

/// Serde for a date and time field, as RFC 3339 text.
pub mod date {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(value: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&passerelle_core::time_fmt::rfc3339(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        passerelle_core::time_fmt::parse_rfc3339(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{}` is not a date",
                passerelle_core::keys::truncate_for_error(&text)
            ))
        })
    }
}

/// Serde for an optional node id, as its text (`12D3Koo…`).
pub mod node_opt {
    use passerelle_core::keys::NodeId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<NodeId>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
