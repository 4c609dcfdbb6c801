//! Small helpers that more than one area uses (the command line, the web UI, the demo), so
//! that none of them imports another's command code.

use anyhow::{Result, bail};
use passerelle_core::time_fmt;
use rand::RngCore;
use time::OffsetDateTime;

/// Reads a date given as YYYY-MM-DD (midnight UTC) or RFC 3339.
pub fn parse_date(s: &str) -> Result<OffsetDateTime> {
    if let Some(t) = time_fmt::parse_rfc3339(s) {
        return Ok(t);
    }
    match passerelle_core::map::parse_date(s) {
        Some(d) => Ok(d.midnight().assume_utc()),
        None => bail!(
            "`{}` is not a date (YYYY-MM-DD)",
            passerelle_core::keys::truncate_for_error(s)
        ),
    }
}

/// A generated password: 16 characters from an alphabet without look-alikes.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
