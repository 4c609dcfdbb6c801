//! Sync batches travel compacted: an event leaves out the header fields the event before it in
//! the same batch lets the receiver rebuild — the mechanism id, the author key, and `prev` when
//! it is that event's id — about 96 bytes of a ~230-byte header in a run of one author's
//! events. Only the transport changes: the receiver rebuilds the exact signed bytes, so ids and
//! signatures are untouched and a wrong rebuild fails the signature check like any tampering.

use super::wire::{Wire, encode_wire};
use super::{EventError, EventId};
use crate::limits::{EVENT_HEADER_SIZE_MAX_BYTES, EVENT_WIRE_SIZE_MAX_BYTES};

/// The mechanism id is the previous event's.
const MECHANISM: u8 = 1;
/// The author key is the previous event's.
const AUTHOR: u8 = 2;
/// `prev` is the previous event's id.
const PREV: u8 = 4;
/// Where fields sit in an encoded header: format (1 byte), mechanism (32), author (32),
/// sequence (varint), `prev` (tag byte, then 32 bytes when present).
const MECHANISM_AT: usize = 1;
const AUTHOR_AT: usize = 33;
const SEQ_AT: usize = 65;

/// The length of the varint at the start of `bytes`.
fn varint_len(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .take(10)
        .position(|b| b & 0x80 == 0)
        .map(|i| i + 1)
}

/// The index of `prev`'s tag byte: just after the sequence number's varint.
fn prev_tag_at(header: &[u8]) -> Option<usize> {
    Some(SEQ_AT + varint_len(header.get(SEQ_AT..)?)?)
}

/// Compacts a batch of events (wire bytes, in the order they will be sent) for one sync message.
/// Bytes that do not parse as an event pass unchanged (the receiver refuses them).
pub fn compact_batch(events: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut before: Option<(Vec<u8>, EventId)> = None;
    let mut out = Vec::with_capacity(events.len());
    for bytes in events {
        let parsed = postcard::from_bytes::<Wire>(&bytes).ok().and_then(|w| {
            let tag = prev_tag_at(&w.header)?;
            let id = w.id()?;
            Some((w, tag, id))
        });
        let Some((mut wire, tag, id)) = parsed else {
            before = None;
            out.push([&[0u8][..], &bytes].concat());
            continue;
        };
        let full = std::mem::take(&mut wire.header);
        let mut flags = 0u8;
        if let Some((h, prev_id)) = &before {
            if full.get(MECHANISM_AT..AUTHOR_AT) == h.get(MECHANISM_AT..AUTHOR_AT) {
                flags |= MECHANISM;
            }
            if full.get(AUTHOR_AT..SEQ_AT) == h.get(AUTHOR_AT..SEQ_AT) {
                flags |= AUTHOR;
            }
            if full.get(tag) == Some(&1) && full.get(tag + 1..tag + 33) == Some(&prev_id.0[..]) {
                flags |= PREV;
            }
        }
        // Every range below lies inside the header: `prev_tag_at` found the tag byte after the
        // fixed fields, and the `PREV` flag is set only when the 32 bytes after it exist. The
        // empty defaults are never taken.
        let mut header = Vec::with_capacity(full.len());
        header.extend_from_slice(full.get(..MECHANISM_AT).unwrap_or_default());
        if flags & MECHANISM == 0 {
            header.extend_from_slice(full.get(MECHANISM_AT..AUTHOR_AT).unwrap_or_default());
        }
        if flags & AUTHOR == 0 {
            header.extend_from_slice(full.get(AUTHOR_AT..SEQ_AT).unwrap_or_default());
        }
        header.extend_from_slice(full.get(SEQ_AT..=tag).unwrap_or_default());
        let rest = if flags & PREV == 0 { tag + 1 } else { tag + 33 };
        header.extend_from_slice(full.get(rest..).unwrap_or_default());
        wire.header = header;
        let mut item = vec![flags];
        item.extend(encode_wire(&wire));
        out.push(item);
        before = Some((full, id));
    }
    out
}

/// Rebuilds the wire bytes of a compacted batch. An item that cannot be rebuilt gives an error in
/// its place (and so does any later item that leans on it).
pub fn expand_batch(items: &[Vec<u8>]) -> Vec<Result<Vec<u8>, EventError>> {
    let bad = |what: &str| EventError::Malformed(format!("compacted event: {what}"));
    let mut before: Option<(Vec<u8>, EventId)> = None;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if item.len() > EVENT_WIRE_SIZE_MAX_BYTES + 1 {
            before = None;
            out.push(Err(EventError::TooLarge));
            continue;
        }
        let rebuilt = (|| {
            let (&flags, rest) = item.split_first().ok_or_else(|| bad("empty"))?;
            let (mut wire, trailing): (Wire, _) =
                postcard::take_from_bytes(rest).map_err(|e| bad(&e.to_string()))?;
            if !trailing.is_empty() {
                return Err(bad("trailing bytes"));
            }
            if flags & !(MECHANISM | AUTHOR | PREV) != 0 {
                return Err(bad("unknown flags"));
            }
            let c = std::mem::take(&mut wire.header);
            if flags == 0 {
                wire.header = c;
            } else {
                let (h, prev_id) = before.as_ref().ok_or_else(|| bad("no event before it"))?;
                let mut full = Vec::with_capacity(c.len() + 96);
                let mut at = MECHANISM_AT;
                full.extend_from_slice(c.get(..at).ok_or_else(|| bad("too short"))?);
                for (flag, field) in [
                    (MECHANISM, MECHANISM_AT..AUTHOR_AT),
                    (AUTHOR, AUTHOR_AT..SEQ_AT),
                ] {
                    if flags & flag != 0 {
                        full.extend_from_slice(h.get(field).ok_or_else(|| bad("too short"))?);
                    } else {
                        let end = at + 32;
                        full.extend_from_slice(c.get(at..end).ok_or_else(|| bad("too short"))?);
                        at = end;
                    }
                }
                // The sequence number and prev's tag, as they came.
                let seq_len = c
                    .get(at..)
                    .and_then(varint_len)
                    .ok_or_else(|| bad("sequence number"))?;
                let tag_end = at + seq_len + 1;
                let seq_tag = c.get(at..tag_end).ok_or_else(|| bad("too short"))?;
                full.extend_from_slice(seq_tag);
                if flags & PREV != 0 {
                    if seq_tag.last() != Some(&1) {
                        return Err(bad("prev left out but absent"));
                    }
                    full.extend_from_slice(&prev_id.0);
                }
                // `c.get(at..tag_end)` succeeded above, so `tag_end..` is in range (maybe empty).
                full.extend_from_slice(c.get(tag_end..).unwrap_or_default());
                if full.len() > EVENT_HEADER_SIZE_MAX_BYTES {
                    return Err(EventError::HeaderTooLarge);
                }
                wire.header = full;
            }
            let id = wire.id().ok_or_else(|| bad("signature"))?;
            let bytes = postcard::to_stdvec(&wire).map_err(|e| bad(&e.to_string()))?;
            Ok((wire.header, id, bytes))
        })();
        match rebuilt {
            Ok((header, id, bytes)) => {
                before = Some((header, id));
                out.push(Ok(bytes));
            }
            Err(e) => {
                before = None;
                out.push(Err(e));
            }
        }
    }
    out
}
