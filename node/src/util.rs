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

/// Which passphrase a sealed key file needs: the node's own (`--passphrase-file`) or that of a
/// key file named on the command line (`--key-passphrase-file`).
#[derive(Clone, Copy, Debug)]
pub enum Sealed {
    NodeKey,
    NamedKey,
}

/// Opens a key file's bytes; a sealed one opened without its passphrase names the flag (and
/// the environment variable) that gives it.
pub fn open_key_file(
    bytes: &[u8],
    passphrase: Option<&age::secrecy::SecretString>,
    which: Sealed,
) -> anyhow::Result<impl std::ops::Deref<Target = String>> {
    passerelle_core::keyfiles::open(bytes, passphrase).map_err(|e| match e {
        passerelle_core::keyfiles::KeyFileError::NeedsPassphrase => {
            let (flag, env) = match which {
                Sealed::NodeKey => ("--passphrase-file", "PASSERELLE_PASSPHRASE"),
                Sealed::NamedKey => ("--key-passphrase-file", "PASSERELLE_KEY_PASSPHRASE"),
            };
            anyhow::anyhow!("{e}: give {flag} or set {env}")
        }
        e => e.into(),
    })
}

/// Says, when a key file was written without a passphrase, that its secret is in clear.
pub fn warn_if_unsealed(out: &std::path::Path, passphrase: Option<&age::secrecy::SecretString>) {
    if passphrase.is_none() {
        eprintln!(
            "Warning: {} is not encrypted: anyone who can read it can sign with it. Give --key-passphrase-file (or set PASSERELLE_KEY_PASSPHRASE) to seal it with a passphrase.",
            out.display()
        );
    }
}
