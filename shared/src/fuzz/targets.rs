//! The fuzz targets: one per decoder and per fold input, each feeding bytes to the entry point
//! that a peer, a bundle or a file reaches, and checking what must hold of what it returns.
//!
//! Inputs that carry several things (a chain of signed files, several map changes) are
//! length-prefixed frames ([`frames`]), the way bundles frame events.

use std::sync::OnceLock;

use time::OffsetDateTime;

use super::{Target, Trace};
use crate::config::chain::{self, SignedFile};
use crate::config::{self, Mechanism};
use crate::event::{self, Event, Hlc, Urgency};
use crate::limits::{
    DOCUMENT_SIZE_MAX_BYTES, EVENT_BODY_SIZE_MAX_BYTES, EVENT_WIRE_SIZE_MAX_BYTES,
    PAYLOAD_SIZE_MAX_BYTES, PROFILE_FILE_SIZE_MAX_BYTES,
};
use crate::payload::{self, PAD_BYTES};
use crate::sync::{self, Request, Response};
use crate::{bundle, fold, map};

/// The sample mechanism the profile target validates against (the one the shipped profiles
/// are written for).
pub const SAMPLE_MECHANISM: &str = include_str!("../../../config/mechanism.toml");

/// The age identity the bundle and sealed-payload targets decrypt with. Public on purpose:
/// the committed seeds are encrypted to it, and it protects nothing.
pub const FUZZ_IDENTITY: &str =
    "AGE-SECRET-KEY-1JNTAJA3GTH6A0PF0NF9TL4CJYPYQ2XXQ387FXP5SYKZXT94CG8NQ0Z64L8";

/// The first map change the map targets' base document holds (the sample Red Crescent
/// profile, imported into an empty document), so seeds made on top of it apply with their
/// Automerge dependencies present.
pub const MAP_BASE_CHANGE: &[u8] = include_bytes!("../../fuzz/map-base.change");

/// The time the targets run at: just after the seeds were made (their configuration has not
/// expired).
pub fn now() -> OffsetDateTime {
    super::seeds::generated_at() + time::Duration::days(1)
}

/// Largest input of the event targets, in bytes: a little over the wire bound.
const EVENT_INPUT_MAX_BYTES: usize = EVENT_WIRE_SIZE_MAX_BYTES + 64;
/// Largest input of the sync targets, in bytes. Sync messages may reach 8 MiB, but a mutated
/// input grows by kilobytes at most per step: this keeps executions fast and still holds a
/// full batch of small events.
const SYNC_INPUT_MAX_BYTES: usize = 1024 * 1024;
/// Largest input of the bundle targets, in bytes.
const BUNDLE_INPUT_MAX_BYTES: usize = 1024 * 1024;
/// Largest input of the map targets, in bytes: a little over the event body bound.
const MAP_INPUT_MAX_BYTES: usize = EVENT_BODY_SIZE_MAX_BYTES + 64;
/// Largest input of the signed-file target (a chain of frames), in bytes.
const CHAIN_INPUT_MAX_BYTES: usize = 4 * DOCUMENT_SIZE_MAX_BYTES;

/// Everything the targets share, built once.
struct Fixture {
    sample: Mechanism,
    identity: age::x25519::Identity,
    /// The base map document, saved (what the store holds) and loaded (cloned for each
    /// input, which costs less than loading it).
    map_base: Vec<u8>,
    map_base_doc: automerge::AutoCommit,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // These are constants of this crate: a failure is a build error in all but name.
        let sample = Mechanism::from_bytes(SAMPLE_MECHANISM.as_bytes())
            .expect("the shipped sample mechanism validates");
        let identity =
            crate::keys::parse_identity(FUZZ_IDENTITY).expect("the fuzz identity parses");
        let mut doc = automerge::AutoCommit::new();
        if let Ok(change) = automerge::Change::from_bytes(MAP_BASE_CHANGE.to_vec()) {
            let _ = doc.apply_changes([change]);
        }
        Fixture {
            sample,
            identity,
            map_base: doc.save(),
            map_base_doc: doc,
        }
    })
}

/// Splits an input into length-prefixed frames (4-byte little-endian length, then the
/// bytes); a frame cut short ends the list.
pub fn frames(mut input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = input.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            break;
        }
        let (frame, rest) = rest.split_at(len);
        out.push(frame);
        input = rest;
    }
    out
}

/// Joins frames the way [`frames`] reads them.
pub fn join_frames<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

// ----- Events and sync -----

/// Decodes an event as it arrives from a peer or a bundle, and as the store reads it back.
fn event(input: &[u8], t: &mut Trace) {
    // What the store reads back skips the checks admission made; it must not panic either.
    if let Ok(stored) = Event::decode_stored(input) {
        t.mark("stored");
        let _ = stored.header().causal_deps().count();
    }
    let Some(e) = t.step("decoded", Event::decode(input)) else {
        return;
    };
    check_event(&e, t);
    // Admission's first costly check (left out of the batch targets, where it would be most
    // of the time spent).
    let _ = t.step("signed", e.verify_signature());
}

/// What must hold of every decoded event: it re-encodes to an event with the same id, pruning
/// keeps the id, and the checks admission runs next do not panic.
fn check_event(e: &Event, t: &mut Trace) {
    t.mark(e.header().kind.name());
    t.count("orgs", e.header().orgs.len());
    let again = Event::decode(&e.encode());
    assert!(
        again.as_ref().is_ok_and(|a| a == e && a.id() == e.id()),
        "a decoded event re-encodes to itself: {again:?}"
    );
    let pruned = Event::decode(&e.pruned().encode());
    assert!(
        pruned.as_ref().is_ok_and(|p| p.id() == e.id()),
        "pruning keeps the id"
    );
    if let Some(body) = e.body() {
        t.count("stanzas", payload::count_x25519_stanzas(body).unwrap_or(0));
    }
    let _ = e.header().author_key();
    let _ = format!("{e:?}");
}

/// Rebuilds a compacted batch (as `Events` and `Push` carry it) and decodes every event, the
/// way a round does; what rebuilds must compact and rebuild to the same bytes again.
fn compacted_items(items: &[Vec<u8>], t: &mut Trace) {
    t.count("items", items.len());
    let rebuilt = event::expand_batch(items);
    let mut events = Vec::new();
    let mut outcomes = Vec::new();
    for r in rebuilt {
        // Each event's own properties are the `event` target's; here, how far it got and
        // what it is.
        let mut item = Trace::default();
        if let Some(bytes) = item.step("rebuilt", r)
            && let Some(e) = item.step("event", Event::decode(&bytes))
        {
            item.mark(e.header().kind.name());
            events.push(e);
        }
        outcomes.push(item.outcome());
    }
    t.items("items", outcomes);
    t.count("events", events.len());
    // The sender's side: the events that decoded, compacted and rebuilt, are themselves.
    let wire: Vec<Vec<u8>> = events.iter().map(Event::encode).collect();
    let round_trip: Result<Vec<Vec<u8>>, _> =
        event::expand_batch(&event::compact_batch(wire.clone()))
            .into_iter()
            .collect();
    assert_eq!(
        round_trip.as_ref().ok(),
        Some(&wire),
        "compacting then rebuilding a batch gives it back"
    );
}

fn compacted_batch(input: &[u8], t: &mut Trace) {
    // The items as they travel inside a sync message: a postcard list of byte strings.
    let Some((items, _)) = t.step("items", postcard::take_from_bytes::<Vec<Vec<u8>>>(input)) else {
        return;
    };
    compacted_items(&items, t);
}

/// Signed configuration files as sync and bundles carry them: parsed, then checked as a
/// chain (what `Engine::apply_config` runs on them).
fn signed_files(files: &[Vec<u8>], t: &mut Trace) {
    t.count("files", files.len());
    let mut parsed = Vec::new();
    for f in files {
        match t.step("file", SignedFile::from_bytes(f)) {
            Some(file) => parsed.push(file),
            None => return,
        }
    }
    if let Some(versions) = t.step("chain", chain::check_chain(&parsed, now())) {
        t.count("versions", versions.len());
    }
}

fn sync_request(input: &[u8], t: &mut Trace) {
    let Some(request) = t.step("decoded", sync::decode::<Request>(input)) else {
        return;
    };
    let again = sync::encode(&request).and_then(|b| sync::decode::<Request>(&b));
    assert_eq!(again.as_ref().ok(), Some(&request), "a request re-encodes");
    if t.step("bounds", sync::check_request(&request)).is_none() {
        return;
    }
    match &request {
        Request::Hello { .. } => t.mark("hello"),
        Request::Want { ranges } => t.count("want", ranges.len()),
        Request::Push { events } => compacted_items(events, t),
        Request::PushConfig { files } => signed_files(files, t),
    }
}

fn sync_response(input: &[u8], t: &mut Trace) {
    let Some(response) = t.step("decoded", sync::decode::<Response>(input)) else {
        return;
    };
    let again = sync::encode(&response).and_then(|b| sync::decode::<Response>(&b));
    assert_eq!(
        again.as_ref().ok(),
        Some(&response),
        "a response re-encodes"
    );
    if t.step("bounds", sync::check_response(&response)).is_none() {
        return;
    }
    match &response {
        Response::InSync => t.mark("in sync"),
        Response::Vector { vector, .. } => {
            t.count("vector", vector.entries.len());
            let _ = vector.digest();
        }
        Response::Config { files } => signed_files(files, t),
        Response::Events { events, .. } => compacted_items(events, t),
        Response::Received { .. } => t.mark("received"),
        Response::Refused { .. } => t.mark("refused"),
    }
}

// ----- Bundles -----

/// Reads a bundle's plaintext the way `bundle::import` does, without an engine: the header,
/// the configuration chain, every event frame, and the end of the stream.
fn bundle_plaintext(plain: &mut impl std::io::Read, t: &mut Trace) {
    let Some(header) = t.step("header", bundle::read_header(plain)) else {
        return;
    };
    signed_files(&header.config_files, t);
    let mut read = 0u64;
    let mut outcomes = Vec::new();
    while read < header.events {
        let Some(bytes) = t.step("frame", bundle::read_event(plain)) else {
            t.items("events", outcomes);
            return;
        };
        read += 1;
        let mut item = Trace::default();
        if let Some(e) = item.step("event", Event::decode(&bytes)) {
            item.mark(e.header().kind.name());
        }
        outcomes.push(item.outcome());
    }
    t.items("events", outcomes);
    t.count("events", read as usize);
    let _ = t.step("end", bundle::read_end(plain, read));
}

fn bundle_file(input: &[u8], t: &mut Trace) {
    let Some(mut plain) = t.step("decrypted", bundle::decrypt(input, &fixture().identity)) else {
        return;
    };
    bundle_plaintext(&mut plain, t);
}

fn bundle_frames(input: &[u8], t: &mut Trace) {
    let mut reader = input;
    bundle_plaintext(&mut reader, t);
}

// ----- Configuration -----

fn config_document(input: &[u8], t: &mut Trace) {
    let Some(doc) = t.step("parsed", config::parse_document(input)) else {
        return;
    };
    let hash = config::Hash32::of(input);
    let Some(m) = t.step("valid", Mechanism::from_document(doc, hash)) else {
        return;
    };
    t.count("nodes", m.nodes().count());
    // Views add the SOP deadlines to referral times: each must give a date.
    for urgency in [Urgency::Emergency, Urgency::Urgent, Urgency::Routine] {
        let record = referral_sent_at(now(), urgency);
        for later in [0, 1_000 * 3_600 * 24 * 366 * 20] {
            let at = now() + time::Duration::milliseconds(later);
            if fold::overdue(&record, &m, at).is_some() {
                t.mark(urgency.as_str());
            }
        }
    }
    // `mechanism next` starts from a valid version; what it writes must parse again.
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Some(next) = t.step("next", config::template::next_version(text, &m, &[], now())) {
        let _ = t.step("next valid", Mechanism::from_bytes(next.as_bytes()));
    }
}

/// A referral just sent, at `at`, for the views' deadline arithmetic.
fn referral_sent_at(at: OffsetDateTime, urgency: Urgency) -> fold::ReferralRecord {
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let hlc = Hlc { ms, counter: 0 };
    fold::ReferralRecord {
        id: config::Hash32::default(),
        case: config::Hash32::default(),
        sender_org: "mas".into(),
        receiver_org: "mdm".into(),
        category: Some("health".into()),
        urgency,
        config_version: 1,
        sent_at: hlc,
        status: fold::Status::Sent,
        acknowledged_at: None,
        accepted_at: None,
        declined_at: None,
        completed_at: None,
        withdrawn_at: None,
        decline_reason: None,
        step_count: 0,
        last: (hlc, config::Hash32::default()),
    }
}

fn signed_file(input: &[u8], t: &mut Trace) {
    let files: Vec<Vec<u8>> = frames(input).into_iter().map(<[u8]>::to_vec).collect();
    if files.is_empty() {
        // A single file, as `join` and `update` read it from disk.
        if let Some(file) = t.step("file", SignedFile::from_bytes(input)) {
            let _ = t.step("genesis", chain::check_genesis(&file, now(), true));
        }
        return;
    }
    signed_files(&files, t);
}

// ----- Partner map -----

fn profile(input: &[u8], t: &mut Trace) {
    let Some(text) = t.step("utf-8", std::str::from_utf8(input)) else {
        return;
    };
    let Some(p) = t.step("parsed", map::Profile::from_toml(text)) else {
        return;
    };
    if t.step("valid", p.validate(&fixture().sample)).is_none() {
        return;
    }
    t.count("services", p.services.len());
    // A valid profile survives its document: imported, read back (services sorted by id),
    // and imported again as no change at all.
    let mut doc = automerge::AutoCommit::new();
    let change = map::import(&mut doc, &p);
    assert!(change.is_ok(), "a valid profile imports: {change:?}");
    let mut sorted = p.clone();
    sorted.services.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        map::read(&doc).as_ref(),
        Some(&sorted),
        "a profile reads back"
    );
    assert!(
        matches!(map::import(&mut doc, &p), Ok(None)),
        "importing the same profile again changes nothing"
    );
}

/// Applies a map event's body to an organisation's document the way the store does
/// (`store::maps`): through `map::apply::apply_body` (panic-safe, checked), with the actors'
/// sequence numbers read off the document. Then what follows an applied body: the changes
/// appended as chunks must load back to the same document (what a restart loads), and the
/// directory reads the profile. Nothing here may panic: `apply_body` guards automerge, and
/// what runs after it trusts the document it left.
fn apply_map_body(with_base: bool, body: &[u8], snapshot: bool, t: &mut Trace) {
    use crate::map::apply::{self, Writers};
    let f = fixture();
    let base = with_base.then_some(f.map_base.as_slice());
    let mut doc = if with_base {
        f.map_base_doc.clone()
    } else {
        automerge::AutoCommit::new()
    };
    let heads_before = doc.get_heads();
    let seqs = apply::actor_seqs(&mut doc);
    let seq_of = |actor: &[u8; 32]| seqs.get(actor).copied().unwrap_or(0);
    // A member signs whatever body it likes as itself: the author is taken to be the change's
    // own actor, else every mutated change would stop at the actor check.
    let author = apply::guarded(|| {
        automerge::Change::from_bytes(body.to_vec())
            .ok()
            .and_then(|c| <[u8; 32]>::try_from(c.actor_id().to_bytes()).ok())
    })
    .flatten()
    .unwrap_or_default();
    let anyone = |_: &[u8; 32]| true;
    let writers = if snapshot {
        Writers::Editors(&anyone)
    } else {
        Writers::Author(&author)
    };
    let applied = match apply::apply_body(&mut doc, body, snapshot, writers, &seq_of) {
        Ok(applied) => applied,
        Err(rule) => {
            t.error(&format!("{rule:?}"));
            return;
        }
    };
    t.count("applied", applied.hashes.len());
    if applied.hashes.is_empty() {
        return;
    }
    // The store appends the raw changes as a chunk; a restart loads the base and the chunks.
    let mut chunk = Vec::new();
    for hash in &applied.hashes {
        let change =
            apply::guarded(|| doc.get_change_by_hash(hash).map(|c| c.raw_bytes().to_vec()));
        match change.flatten() {
            Some(bytes) => chunk.extend_from_slice(&bytes),
            // `store::maps` fails the whole transaction (`StoreError::Corrupt`) here.
            None => panic!("the store cannot read back a change apply_body accepted"),
        }
    }
    let reloaded = apply::load_stored(base, [chunk.as_slice()]).map(|mut d| d.get_heads());
    assert_eq!(
        reloaded,
        Some(doc.get_heads()),
        "the appended changes load back to the same document"
    );
    assert_ne!(heads_before, doc.get_heads());
    // A compacted save that does not load back is kept out of the store (`compact_map`): an
    // outcome, not a crash, but one worth its own corpus entry.
    let compacts = apply::guarded(|| {
        let saved = doc.save();
        automerge::AutoCommit::load(&saved)
            .ok()
            .map(|mut d| d.get_heads())
    })
    .flatten();
    if compacts != Some(doc.get_heads()) {
        t.mark("the compacted save does not load back");
    }
    if let Some(p) = crate::map::read(&doc) {
        t.count("services", p.services.len());
    }
}

fn map_body(input: &[u8], snapshot: bool, t: &mut Trace) {
    // The organisation's first map event (no document yet), and one on top of a profile.
    t.mark("empty");
    apply_map_body(false, input, snapshot, t);
    t.mark("base");
    apply_map_body(true, input, snapshot, t);
}

fn map_change(input: &[u8], t: &mut Trace) {
    map_body(input, false, t);
}

fn map_snapshot(input: &[u8], t: &mut Trace) {
    map_body(input, true, t);
}

/// Automerge chunks start with these bytes.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

/// Repairs the chunk headers of an Automerge input: each chunk's length is cut to the bytes
/// that follow and its checksum (the first 4 bytes of SHA-256 over type, length and data)
/// recomputed, so mutated chunks reach the column decoders instead of failing the checksum.
fn fix_automerge_chunks(input: &mut Vec<u8>) {
    use sha2::Digest;
    let mut at = 0;
    while input.get(at..at + 4) == Some(&AUTOMERGE_MAGIC[..]) && input.len() > at + 9 {
        let kind = input[at + 8];
        let mut len: u64 = 0;
        let mut width = 0;
        for (i, b) in input[at + 9..].iter().take(10).enumerate() {
            len |= u64::from(b & 0x7f) << (7 * i as u32).min(63);
            width = i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let data_at = at + 9 + width;
        let available = input.len().saturating_sub(data_at) as u64;
        if len > available {
            len = available;
            let mut encoded = Vec::new();
            let mut v = len;
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    encoded.push(b);
                    break;
                }
                encoded.push(b | 0x80);
            }
            input.splice(at + 9..data_at, encoded.iter().copied());
        }
        let mut header = vec![kind];
        let mut v = len;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                header.push(b);
                break;
            }
            header.push(b | 0x80);
        }
        let data_at = at + 8 + header.len();
        let data_end = data_at + len as usize;
        let mut hasher = sha2::Sha256::new();
        hasher.update(&header);
        hasher.update(&input[data_at..data_end.min(input.len())]);
        let hash = hasher.finalize();
        input[at + 4..at + 8].copy_from_slice(&hash[..4]);
        at = data_end;
    }
}

// ----- Case payloads -----

/// Decodes a case payload as each kind of event carries it, and re-encodes what decodes.
fn payload_plain(input: &[u8], t: &mut Trace) {
    fn kind<T>(input: &[u8], name: &str, t: &mut Trace) -> Option<T>
    where
        T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let value: T = t.step(name, payload::decode(input))?;
        let again = payload::encode(&value).and_then(|b| payload::decode::<T>(&b));
        assert_eq!(
            again.as_ref().ok(),
            Some(&value),
            "a {name} payload re-encodes"
        );
        Some(value)
    }
    if let Some(open) = kind::<payload::CaseOpenPayload>(input, "case open", t) {
        let _ = t.step("case valid", open.data.validate());
        let _ = open.data.person.search_text();
    }
    let _ = kind::<payload::DeterminationPayload>(input, "determination", t);
    let _ = kind::<payload::CaseUpdatePayload>(input, "case update", t);
    let _ = kind::<payload::ReferralPayload>(input, "referral", t);
    let _ = kind::<payload::ReferralUpdatePayload>(input, "referral update", t);
    if let Some(shared) = kind::<Vec<(u32, String)>>(input, "key share", t) {
        for (_, text) in &shared {
            let _ = t.step("identity", crate::keys::parse_identity(text));
        }
    }
}

/// An event body as admission counts its stanzas and the fold opens it.
fn payload_sealed(input: &[u8], t: &mut Trace) {
    t.count("stanzas", payload::count_x25519_stanzas(input).unwrap_or(0));
    if let Some(plain) = t.step("opened", payload::open(input, &fixture().identity)) {
        assert!(plain.len() <= PAYLOAD_SIZE_MAX_BYTES + PAD_BYTES);
        payload_plain(&plain, t);
    }
}

// ----- The harness's own check -----

/// Panics on inputs that start with `canary`: shows the harness catches, keeps and reports a
/// crash (its tests and `passerelle fuzz canary`).
fn canary(input: &[u8], t: &mut Trace) {
    t.mark("ran");
    assert!(!input.starts_with(b"canary"), "the canary sang");
}

/// Tokens of TOML, for the configuration and profile targets.
const TOML_TOKENS: &[&[u8]] = &[
    b"=",
    b"\"",
    b"'",
    b"\"\"\"",
    b"'''",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b",",
    b".",
    b"\n",
    b"#",
    b"\\u0000",
    b"\\U0010FFFF",
    b"true",
    b"-0",
    b"1e400",
    b"nan",
    b"inf",
    b"9223372036854775807",
    b"4294967295",
    b"99999999",
    b"-9223372036854775808",
    b"0x7fffffffffffffff",
    b"1979-05-27T07:32:00Z",
    b"9999-12-31T23:59:59Z",
    b"0000-01-01T00:00:00Z",
    b"1979-05-27",
    b"schema",
    b"version",
    b"[[nodes]]",
    b"[[organisations]]",
    b"[[services]]",
    b"[[focal_points]]",
    b"[[removals]]",
    b"[[org_encryption_keys]]",
    b"[[org_signing_keys]]",
    b"[sop]",
    b"[roots]",
    b"threshold",
    b"epoch",
    b"last_seq",
    b"hours",
    b"latitude",
    b"verified",
];

/// Tokens of JSON, for signed files.
const JSON_TOKENS: &[&[u8]] = &[
    b"\"",
    b":",
    b",",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"true",
    b"\\u0000",
    b"\\ud800",
    b"1e400",
    b"-0",
    b"18446744073709551616",
    b"\"signatures\"",
    b"\"document\"",
    b"\"format\"",
    b"\"key\"",
    b"\"signature\"",
    b"ed25519:",
];

/// Tokens of age headers, for the encrypted inputs.
const AGE_TOKENS: &[&[u8]] = &[
    b"age-encryption.org/v1\n",
    b"-> X25519 ",
    b"-> scrypt ",
    b"-> grease ",
    b"\n--- ",
    b"\n",
    b" ",
    b"PASSERELLE-BUNDLE-1\n",
];

/// Every target, in the order `all` runs them.
pub static TARGETS: &[Target] = &[
    Target {
        name: "event",
        about: "an event's wire bytes (Event::decode, decode_stored)",
        max_len: EVENT_INPUT_MAX_BYTES,
        run: event,
        fixup: None,
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "sync-request",
        about: "a sync request (Hello, Want, Push, PushConfig) and what it carries",
        max_len: SYNC_INPUT_MAX_BYTES,
        run: sync_request,
        fixup: None,
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "sync-response",
        about: "a sync response (Vector, Config, Events, …) and what it carries",
        max_len: SYNC_INPUT_MAX_BYTES,
        run: sync_response,
        fixup: None,
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "compacted-batch",
        about: "a compacted event batch (event::expand_batch) and its events",
        max_len: SYNC_INPUT_MAX_BYTES,
        run: compacted_batch,
        fixup: None,
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "bundle",
        about: "a bundle file: magic line, age stream, header, configuration, event frames",
        max_len: BUNDLE_INPUT_MAX_BYTES,
        run: bundle_file,
        fixup: None,
        dictionary: AGE_TOKENS,
        in_all: true,
    },
    Target {
        name: "bundle-frames",
        about: "a bundle's plaintext: header frame, configuration, event frames",
        max_len: BUNDLE_INPUT_MAX_BYTES,
        run: bundle_frames,
        fixup: None,
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "config-document",
        about: "a configuration document (TOML): parse, validate, next version",
        max_len: DOCUMENT_SIZE_MAX_BYTES + 64,
        run: config_document,
        fixup: None,
        dictionary: TOML_TOKENS,
        in_all: true,
    },
    Target {
        name: "signed-file",
        about: "a signed configuration file (JSON), or frames of them checked as a chain",
        max_len: CHAIN_INPUT_MAX_BYTES,
        run: signed_file,
        fixup: None,
        dictionary: JSON_TOKENS,
        in_all: true,
    },
    Target {
        name: "profile",
        about: "a partner-map profile (TOML): parse, validate, into its document and back",
        max_len: PROFILE_FILE_SIZE_MAX_BYTES + 64,
        run: profile,
        fixup: None,
        dictionary: TOML_TOKENS,
        in_all: true,
    },
    Target {
        name: "payload",
        about: "a decrypted case payload, as each kind of case event carries it",
        max_len: PAYLOAD_SIZE_MAX_BYTES + PAD_BYTES + 64,
        run: payload_plain,
        fixup: None,
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "sealed-payload",
        about: "an encrypted event body: stanza count, age decryption, payload",
        max_len: EVENT_BODY_SIZE_MAX_BYTES + 64,
        run: payload_sealed,
        fixup: None,
        dictionary: AGE_TOKENS,
        in_all: true,
    },
    Target {
        name: "map-change",
        about: "a MapChange body applied to an organisation's document, as the fold does",
        max_len: MAP_INPUT_MAX_BYTES,
        run: map_change,
        fixup: Some(fix_automerge_chunks),
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "map-snapshot",
        about: "a MapSnapshot body loaded into an organisation's document, as the fold does",
        max_len: MAP_INPUT_MAX_BYTES,
        run: map_snapshot,
        fixup: Some(fix_automerge_chunks),
        dictionary: &[],
        in_all: true,
    },
    Target {
        name: "canary",
        about: "the harness's own check: panics on inputs that start with `canary`",
        max_len: 64,
        run: canary,
        fixup: None,
        dictionary: &[b"canary"],
        in_all: false,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
