//! Bundles: the sneakernet. A bundle carries the configuration chain and events (all of them, or
//! what a named peer lacks) in one file, age-encrypted to the target nodes' own recipients.
//!
//! Layout: the magic line `PASSERELLE-BUNDLE-1\n`, then an age stream whose plaintext is a
//! length-prefixed header (mechanism id, sender, time, configuration files, event count) and
//! that many length-prefixed events. age's STREAM construction authenticates every 64 KiB chunk
//! and marks the last one, so a tampered or truncated bundle fails to read — and since each
//! event is signed and admitted on its own, what was imported before the failure is sound.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Hash32;
use crate::engine::{Engine, EngineError};
use crate::event::Event;
use crate::limits::{BUNDLE_EVENTS_MAX, BUNDLE_HEADER_MAX_BYTES, EVENT_WIRE_SIZE_MAX_BYTES};
use crate::store::StoreError;
use crate::sync::VersionVector;

/// The first bytes of every bundle file.
pub const MAGIC: &[u8] = b"PASSERELLE-BUNDLE-1\n";
/// Events admitted per transaction during an import.
pub const IMPORT_BATCH_EVENTS: usize = 1_000;

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("this is not a Passerelle bundle")]
    NotABundle,
    #[error("this bundle is not addressed to this node (it cannot be decrypted here)")]
    NotForThisNode,
    #[error("the bundle is damaged or was cut short after {imported} events: {reason}")]
    Damaged { imported: u64, reason: String },
    #[error("the bundle belongs to another mechanism ({0})")]
    OtherMechanism(String),
    #[error("the bundle is larger than this node accepts: {0}")]
    TooLarge(&'static str),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A bundle's header: the first frame of the plaintext.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub mechanism: Hash32,
    pub from_node: String,
    pub created_at: String,
    /// The configuration chain (signed files), genesis first.
    pub config_files: Vec<Vec<u8>>,
    /// How many event frames follow.
    pub events: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    pub events: u64,
    pub config_versions: usize,
    pub recipients: usize,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub from_node: String,
    pub events: u64,
    pub admitted: u64,
    pub duplicates: u64,
    pub held: u64,
    /// Each refused event's reason, with how many times it occurred.
    pub refused: Vec<(String, u64)>,
    pub config_versions: usize,
}

/// Writes one length-prefixed frame (4-byte little-endian length, then the bytes).
pub fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("a bundle frame larger than 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Most bytes reserved for a frame before its bytes arrive: a frame's length is checked
/// against its bound, but a damaged or hostile bundle could still claim the largest frame and
/// end at once, so the buffer grows with what is actually read.
const FRAME_RESERVE_MAX_BYTES: usize = 64 * 1024;

fn read_frame(input: &mut impl Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes is larger than {max}"
        )));
    }
    let mut bytes = Vec::with_capacity(len.min(FRAME_RESERVE_MAX_BYTES));
    input.by_ref().take(len as u64).read_to_end(&mut bytes)?;
    if bytes.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(bytes)
}

/// Opens a bundle file: checks the magic line and decrypts the age stream with `identity`.
/// Returns the plaintext reader (authenticated chunk by chunk as it is read).
pub fn decrypt<R: Read>(
    mut input: R,
    identity: &age::x25519::Identity,
) -> Result<age::stream::StreamReader<R>, BundleError> {
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| BundleError::NotABundle)?;
    if magic[..] != *MAGIC {
        return Err(BundleError::NotABundle);
    }
    let decryptor = age::Decryptor::new(input).map_err(|_| BundleError::NotABundle)?;
    decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|_| BundleError::NotForThisNode)
}

/// Reads the plaintext's first frame, the header, within its bounds.
pub fn read_header(plain: &mut impl Read) -> Result<Header, BundleError> {
    let bytes = read_frame(plain, BUNDLE_HEADER_MAX_BYTES).map_err(|e| BundleError::Damaged {
        imported: 0,
        reason: e.to_string(),
    })?;
    let header: Header = postcard::from_bytes(&bytes).map_err(|_| BundleError::Damaged {
        imported: 0,
        reason: "its header does not decode".into(),
    })?;
    if header.events > BUNDLE_EVENTS_MAX {
        return Err(BundleError::TooLarge("too many events"));
    }
    Ok(header)
}

/// Reads the next event frame (wire bytes, not decoded yet).
pub fn read_event(plain: &mut impl Read) -> std::io::Result<Vec<u8>> {
    read_frame(plain, EVENT_WIRE_SIZE_MAX_BYTES)
}

/// Checks that the plaintext ends here, authenticated: anything after the last event, or a
/// missing end, is damage.
pub fn read_end(plain: &mut impl Read, imported: u64) -> Result<(), BundleError> {
    let mut rest = [0u8; 1];
    match plain.read(&mut rest) {
        Ok(0) => Ok(()),
        Ok(_) => Err(BundleError::Damaged {
            imported,
            reason: "bytes after the last event".into(),
        }),
        Err(e) => Err(BundleError::Damaged {
            imported,
            reason: e.to_string(),
        }),
    }
}

/// The events a peer lacks given its last known vector (`None`: everything), in log order.
fn events_to_send(
    engine: &Engine,
    theirs: Option<&VersionVector>,
) -> Result<Vec<([u8; 32], u64, u64)>, EngineError> {
    let ours = engine.version_vector()?;
    Ok(ours
        .entries
        .iter()
        .filter_map(|(author, (seq, _))| {
            let from = theirs.map_or(1, |v| v.seq(author) + 1);
            (from <= *seq).then_some((*author, from, *seq))
        })
        .collect())
}

/// Writes a bundle to `out`, encrypted to `recipients`: the configuration chain and every
/// event `theirs` (the target's last known vector) lacks, or everything. `progress` is told
/// (done, total) as events are written.
pub fn export(
    engine: &Engine,
    theirs: Option<&VersionVector>,
    recipients: &[age::x25519::Recipient],
    out: impl Write,
    now: OffsetDateTime,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport, BundleError> {
    let mechanism = engine
        .store()
        .config()
        .mechanism_id()
        .ok_or(EngineError::Store(StoreError::NotJoined))?;
    let ranges = events_to_send(engine, theirs)?;
    let total: u64 = ranges.iter().map(|(_, from, to)| to - from + 1).sum();
    if total > BUNDLE_EVENTS_MAX {
        return Err(BundleError::TooLarge("too many events"));
    }
    let config_files = engine
        .store()
        .config_files_after(0)
        .map_err(EngineError::from)?;
    let header = Header {
        mechanism,
        from_node: engine.node_id().to_string(),
        created_at: crate::time_fmt::rfc3339(now),
        config_files,
        events: total,
    };
    let mut out = out;
    out.write_all(MAGIC)?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as _))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut writer = encryptor.wrap_output(out)?;
    let header_bytes =
        postcard::to_stdvec(&header).map_err(|e| std::io::Error::other(e.to_string()))?;
    if header_bytes.len() > BUNDLE_HEADER_MAX_BYTES {
        return Err(BundleError::TooLarge(
            "the configuration chain is too large",
        ));
    }
    write_frame(&mut writer, &header_bytes)?;
    let mut done = 0u64;
    for (author, from, to) in ranges {
        let mut next = from;
        while next <= to {
            let chunk = engine
                .store()
                .log_range(&author, next, 1_000)
                .map_err(EngineError::from)?;
            if chunk.is_empty() {
                break;
            }
            for event in chunk {
                if event.header().seq > to {
                    break;
                }
                write_frame(&mut writer, &event.encode())?;
                next = event.header().seq + 1;
                done += 1;
            }
            progress(done, total);
        }
    }
    if done != total {
        return Err(BundleError::Damaged {
            imported: done,
            reason: "the log changed while the bundle was written".into(),
        });
    }
    writer.finish()?;
    Ok(ExportReport {
        events: total,
        config_versions: header.config_files.len(),
        recipients: recipients.len(),
    })
}

/// Writes a bundle of exactly `events` (with the given header facts), encrypted to
/// `recipients`: what any peer — or an attacker — can put in a file. The tests and the fuzzer
/// use it; a node exports with [`export`].
pub fn write_events(
    out: impl Write,
    mechanism: Hash32,
    from_node: &str,
    config_files: Vec<Vec<u8>>,
    events: &[Event],
    recipients: &[age::x25519::Recipient],
    now: OffsetDateTime,
) -> Result<(), BundleError> {
    let header = Header {
        mechanism,
        from_node: from_node.to_string(),
        created_at: crate::time_fmt::rfc3339(now),
        config_files,
        events: events.len() as u64,
    };
    let mut out = out;
    out.write_all(MAGIC)?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as _))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut writer = encryptor.wrap_output(out)?;
    let header_bytes =
        postcard::to_stdvec(&header).map_err(|e| std::io::Error::other(e.to_string()))?;
    write_frame(&mut writer, &header_bytes)?;
    for event in events {
        write_frame(&mut writer, &event.encode())?;
    }
    writer.finish()?;
    Ok(())
}

/// Reads a bundle and admits everything in it through the one admission path, in batches.
/// Idempotent: events already held count as duplicates.
pub fn import(
    engine: &mut Engine,
    identity: &age::x25519::Identity,
    input: impl Read,
    now: OffsetDateTime,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ImportReport, BundleError> {
    let mut reader = decrypt(input, identity)?;
    let damaged = |imported: u64, e: std::io::Error| BundleError::Damaged {
        imported,
        reason: e.to_string(),
    };
    let header = read_header(&mut reader)?;
    if Some(header.mechanism) != engine.store().config().mechanism_id() {
        return Err(BundleError::OtherMechanism(header.mechanism.short()));
    }
    let mut report = ImportReport {
        from_node: header.from_node.clone(),
        events: header.events,
        ..ImportReport::default()
    };
    // The configuration travels first.
    let files = header
        .config_files
        .iter()
        .map(|f| crate::config::chain::SignedFile::from_bytes(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Store(StoreError::Chain(e)))?;
    if !files.is_empty() {
        report.config_versions = engine.apply_config(&files, now)?.accepted.len();
    }
    let mut refused: std::collections::BTreeMap<String, u64> = Default::default();
    let mut batch = Vec::with_capacity(IMPORT_BATCH_EVENTS);
    let mut read = 0u64;
    let flush = |engine: &mut Engine,
                 batch: &mut Vec<Event>,
                 report: &mut ImportReport,
                 refused: &mut std::collections::BTreeMap<String, u64>|
     -> Result<(), BundleError> {
        if batch.is_empty() {
            return Ok(());
        }
        let r = engine.receive(batch, now)?;
        report.admitted += r.admitted.len() as u64;
        report.duplicates += r.duplicates as u64;
        report.held += r.held.len() as u64;
        for (_, reason) in r.refused {
            *refused.entry(reason.to_string()).or_default() += 1;
        }
        batch.clear();
        Ok(())
    };
    let mut failure = None;
    while read < header.events {
        let bytes = match read_event(&mut reader) {
            Ok(b) => b,
            Err(e) => {
                failure = Some(damaged(read, e));
                break;
            }
        };
        read += 1;
        match Event::decode(&bytes) {
            Ok(event) => batch.push(event),
            Err(e) => *refused.entry(e.to_string()).or_default() += 1,
        }
        if batch.len() >= IMPORT_BATCH_EVENTS {
            flush(engine, &mut batch, &mut report, &mut refused)?;
            progress(read, header.events);
        }
    }
    // What was read and authenticated before a failure is admitted: each event is signed.
    flush(engine, &mut batch, &mut report, &mut refused)?;
    progress(read, header.events);
    if let Some(failure) = failure {
        return Err(failure);
    }
    read_end(&mut reader, read)?;
    report.refused = refused.into_iter().collect();
    Ok(report)
}
