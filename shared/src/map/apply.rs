//! Applying a partner-map event's body to an organisation's Automerge document, safely.
//!
//! A `MapChange` body is one Automerge change and a `MapSnapshot` body a compacted save; both
//! come from other members' nodes, so both are hostile input. automerge 0.12 panics on some
//! malformed changes (`Change::from_bytes`, `apply_changes`, `load_incremental`; the inputs
//! are replayed from `shared/fuzz/crashers/automerge/`), so every call into it on received
//! bytes runs under `catch_unwind`, and a body that does not decode, does not apply or panics
//! is judged invalid (`Rule::BadPayload`) — the fold marks the event and goes on. A document a
//! failed application may have left half-changed is thrown away by the caller and reloaded from
//! what was stored before.
//!
//! Before automerge sees a change, its metadata is checked against rules that keep a document
//! bounded and its verdicts the same on every node whatever order concurrent changes arrive in:
//! - the change's actor is the node that signed the event (or, inside a snapshot, a node that
//!   may edit the profile): a node cannot write another node's changes;
//! - its sequence number follows the actor's previous change held (a node cannot fork its own
//!   Automerge history);
//! - its dependencies are all in the document, and its first operation counter is the one
//!   Automerge itself would give it (one past the highest counter among its dependencies), so
//!   the counter grows with the document's causal history;
//! - that counter stays under [`MAP_DOC_OPS_MAX`]: each actor's history is a chain of
//!   changes with rising counters, so each actor holds at most that many operations.
//!
//! Every one of these facts is a property of the change and its causal history, never of what
//! else happened to arrive first, so every node reaches the same verdict.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::{AutoCommit, Change, ChangeHash};

use crate::fold::Rule;
use crate::limits::{MAP_CHANGES_PER_SNAPSHOT_MAX, MAP_DOC_OPS_MAX};

/// Runs `f` on automerge, turning a panic into `None`. While `f` runs, the panic is not
/// printed: a malformed body from a peer is expected input, not a bug of ours, and a peer must
/// not be able to fill the log with backtraces.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    quiet_panics(|| catch_unwind(AssertUnwindSafe(f)).ok())
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once per process) a panic hook that stays silent on a thread inside
/// [`guarded`], and otherwise behaves as the hook it replaced.
fn quiet_panics<T>(f: impl FnOnce() -> T) -> T {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = f();
    QUIET.with(|q| q.set(was));
    out
}

/// Loads a document this node stored itself (a compacted save and the chunks appended after
/// it). Stored bytes were produced by automerge here, but a damaged disk is input too.
pub fn load_stored<'a>(
    base: Option<&[u8]>,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Option<AutoCommit> {
    guarded(|| {
        let mut doc = match base {
            Some(bytes) => AutoCommit::load(bytes).ok()?,
            None => AutoCommit::new(),
        };
        for chunk in chunks {
            doc.load_incremental(chunk).ok()?;
        }
        Some(doc)
    })
    .flatten()
}

/// The highest sequence number of every actor (of a 32-byte id) in a document.
pub fn actor_seqs(doc: &mut AutoCommit) -> BTreeMap<[u8; 32], u64> {
    guarded(|| {
        let mut out = BTreeMap::new();
        for meta in doc.get_changes_meta(&[]) {
            if let Ok(actor) = <[u8; 32]>::try_from(meta.actor.to_bytes()) {
                let seq = out.entry(actor).or_insert(0);
                *seq = meta.seq.max(*seq);
            }
        }
        out
    })
    .unwrap_or_default()
}

/// What an applied body added to the document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The changes newly added, in the order applied.
    pub hashes: Vec<ChangeHash>,
    /// For each actor whose history grew: its highest sequence number now held.
    pub seqs: BTreeMap<[u8; 32], u64>,
}

/// Who may have written the changes of a body.
#[derive(Clone, Copy)]
pub enum Writers<'a> {
    /// A `MapChange`: only the node that signed the event.
    Author(&'a [u8; 32]),
    /// A `MapSnapshot`: any node for which the closure says it may edit the profile.
    Editors(&'a dyn Fn(&[u8; 32]) -> bool),
}

impl std::fmt::Debug for Writers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Writers::Author(_) => f.write_str("Writers::Author"),
            Writers::Editors(_) => f.write_str("Writers::Editors"),
        }
    }
}

/// The highest sequence number of an actor held in the document, as the caller tracks it.
pub type SeqOf<'a> = &'a dyn Fn(&[u8; 32]) -> u64;

/// Applies a map event's body to `doc`. On `Err`, `doc` may have been changed partly (a panic
/// inside automerge): the caller must discard it.
pub fn apply_body(
    doc: &mut AutoCommit,
    body: &[u8],
    snapshot: bool,
    writers: Writers<'_>,
    seq_of: SeqOf<'_>,
) -> Result<Applied, Rule> {
    let changes = if snapshot {
        snapshot_changes(body)?
    } else {
        let change = guarded(|| Change::from_bytes(body.to_vec()).ok())
            .flatten()
            .ok_or(Rule::BadPayload)?;
        vec![change]
    };
    let mut applied = Applied::default();
    for change in changes {
        if guarded(|| doc.get_change_meta_by_hash(&change.hash()).is_some()).unwrap_or(false) {
            continue; // already held: applying it again is no change
        }
        let actor = check_change(doc, &change, writers, seq_of, &applied)?;
        let hash = change.hash();
        let seq = change.seq();
        guarded(|| doc.apply_changes([change]).ok())
            .flatten()
            .ok_or(Rule::BadPayload)?;
        // The change must now be held under its own hash, and the bytes automerge keeps of it
        // must read back as the same change: those bytes are what the store appends and what
        // a restarted node loads. A change automerge accepts but keeps in another form (found
        // by fuzzing: held under another hash, or stored bytes that do not load) would make
        // the stored document unreadable, or different after a restart.
        let kept = guarded(|| {
            doc.get_change_by_hash(&hash)
                .map(|c| c.raw_bytes().to_vec())
        })
        .flatten()
        .ok_or(Rule::BadPayload)?;
        let reread = guarded(|| Change::from_bytes(kept).ok().map(|c| c.hash())).flatten();
        if reread != Some(hash) {
            return Err(Rule::BadPayload);
        }
        applied.hashes.push(hash);
        applied.seqs.insert(actor, seq);
    }
    Ok(applied)
}

/// The changes a snapshot holds, in an order where each comes after its dependencies.
fn snapshot_changes(body: &[u8]) -> Result<Vec<Change>, Rule> {
    let changes = guarded(|| {
        let mut doc = AutoCommit::load(body).ok()?;
        Some(doc.get_changes(&[]))
    })
    .flatten()
    .ok_or(Rule::BadPayload)?;
    if changes.len() > MAP_CHANGES_PER_SNAPSHOT_MAX {
        return Err(Rule::MapTooLarge);
    }
    Ok(changes)
}

/// Checks one change's metadata before automerge applies it; returns its actor.
fn check_change(
    doc: &mut AutoCommit,
    change: &Change,
    writers: Writers<'_>,
    seq_of: SeqOf<'_>,
    applied: &Applied,
) -> Result<[u8; 32], Rule> {
    let actor: [u8; 32] = change
        .actor_id()
        .to_bytes()
        .try_into()
        .map_err(|_| Rule::MapWrongActor)?;
    let allowed = match writers {
        Writers::Author(author) => &actor == author,
        Writers::Editors(may) => may(&actor),
    };
    if !allowed {
        return Err(Rule::MapWrongActor);
    }
    let previous = applied
        .seqs
        .get(&actor)
        .copied()
        .unwrap_or_else(|| seq_of(&actor));
    if change.seq() != previous.saturating_add(1) {
        return Err(Rule::BadPayload);
    }
    let mut highest_dep_op = 0u64;
    for dep in change.deps() {
        let max_op = guarded(|| doc.get_change_meta_by_hash(dep).map(|m| m.max_op))
            .flatten()
            .ok_or(Rule::BadPayload)?;
        highest_dep_op = highest_dep_op.max(max_op);
    }
    if change.start_op().get() != highest_dep_op.saturating_add(1) || change.is_empty() {
        return Err(Rule::BadPayload);
    }
    if change.max_op() > MAP_DOC_OPS_MAX {
        return Err(Rule::MapTooLarge);
    }
    Ok(actor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;

    fn local(actor: [u8; 32]) -> AutoCommit {
        let mut doc = AutoCommit::new();
        doc.set_actor(automerge::ActorId::from(actor.to_vec()));
        doc
    }

    fn change(doc: &mut AutoCommit, key: &str, value: &str) -> Vec<u8> {
        doc.put(automerge::ROOT, key, value)
            .unwrap_or_else(|e| panic!("{e}"));
        doc.commit();
        doc.get_last_local_change()
            .map(|c| c.raw_bytes().to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn an_honest_change_applies_and_its_actor_seq_is_tracked() {
        let a = [1u8; 32];
        let mut theirs = local(a);
        let c1 = change(&mut theirs, "name", "CRT");
        let c2 = change(&mut theirs, "phone", "+216");
        let mut ours = AutoCommit::new();
        let applied = apply_body(&mut ours, &c1, false, Writers::Author(&a), &|_| 0)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(applied.seqs.get(&a), Some(&1));
        let applied = apply_body(&mut ours, &c2, false, Writers::Author(&a), &|_| 1)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(applied.hashes.len(), 1);
        assert!(ours.get(automerge::ROOT, "phone").ok().flatten().is_some());
    }

    #[test]
    fn another_nodes_change_a_forked_history_or_a_gap_is_refused() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut theirs = local(a);
        let c1 = change(&mut theirs, "name", "CRT");
        let c2 = change(&mut theirs, "phone", "+216");
        let mut ours = AutoCommit::new();
        // Signed by b, but the change says a wrote it.
        assert_eq!(
            apply_body(&mut ours, &c1, false, Writers::Author(&b), &|_| 0),
            Err(Rule::MapWrongActor)
        );
        // Seq 2 before seq 1.
        assert_eq!(
            apply_body(&mut ours, &c2, false, Writers::Author(&a), &|_| 0),
            Err(Rule::BadPayload)
        );
        // A second change claiming seq 1 after one is held.
        let mut fork = local(a);
        let other = change(&mut fork, "name", "forked");
        let mut ours = AutoCommit::new();
        assert!(apply_body(&mut ours, &c1, false, Writers::Author(&a), &|_| 0).is_ok());
        assert_eq!(
            apply_body(&mut ours, &other, false, Writers::Author(&a), &|_| 1),
            Err(Rule::BadPayload)
        );
    }

    #[test]
    fn a_snapshot_brings_every_change_it_holds_and_again_is_no_change() {
        let a = [1u8; 32];
        let mut theirs = local(a);
        change(&mut theirs, "name", "CRT");
        change(&mut theirs, "phone", "+216");
        let snapshot = theirs.save();
        let mut ours = AutoCommit::new();
        let may = |k: &[u8; 32]| k == &a;
        let applied = apply_body(&mut ours, &snapshot, true, Writers::Editors(&may), &|_| 0)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(applied.hashes.len(), 2);
        let again = apply_body(&mut ours, &snapshot, true, Writers::Editors(&may), &|_| 2)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(again.hashes.is_empty());
        let nobody = |_: &[u8; 32]| false;
        assert_eq!(
            apply_body(
                &mut AutoCommit::new(),
                &snapshot,
                true,
                Writers::Editors(&nobody),
                &|_| 0
            ),
            Err(Rule::MapWrongActor)
        );
    }

    /// Map changes fuzzing found that automerge accepts but keeps in a form that does not load
    /// back (`shared/fuzz/crashers/map-change/`): refused, or — if accepted — the bytes the
    /// store would append load back to the same document, on an empty document and on one
    /// holding a profile.
    #[test]
    fn accepted_changes_load_back_from_what_the_store_appends() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let base = std::fs::read(root.join("map-base.change")).unwrap_or_else(|e| panic!("{e}"));
        let dir = root.join("crashers/map-change");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        assert!(!files.is_empty());
        for file in files {
            let body = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
            for with_base in [false, true] {
                let mut doc = AutoCommit::new();
                if with_base {
                    let change = Change::from_bytes(base.clone()).unwrap_or_else(|e| panic!("{e}"));
                    doc.apply_changes([change])
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                let stored_base = with_base.then(|| doc.save());
                let seqs = actor_seqs(&mut doc);
                let author = guarded(|| {
                    Change::from_bytes(body.clone())
                        .ok()
                        .and_then(|c| <[u8; 32]>::try_from(c.actor_id().to_bytes()).ok())
                })
                .flatten()
                .unwrap_or_default();
                let seq_of = |a: &[u8; 32]| seqs.get(a).copied().unwrap_or(0);
                let Ok(applied) =
                    apply_body(&mut doc, &body, false, Writers::Author(&author), &seq_of)
                else {
                    continue;
                };
                let mut chunk = Vec::new();
                for hash in &applied.hashes {
                    let kept = doc.get_change_by_hash(hash).map(|c| c.raw_bytes().to_vec());
                    chunk.extend(kept.unwrap_or_else(|| panic!("{}: not kept", file.display())));
                }
                let reloaded = load_stored(stored_base.as_deref(), [chunk.as_slice()])
                    .map(|mut d| d.get_heads());
                assert_eq!(reloaded, Some(doc.get_heads()), "{}", file.display());
            }
        }
    }

    /// Every input that once made automerge panic (`shared/fuzz/crashers/automerge/`), as a
    /// change and as a snapshot, on an empty document and on one holding a profile: judged
    /// invalid, never a panic.
    #[test]
    fn the_known_automerge_crashers_are_judged_invalid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/crashers/automerge");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        assert!(files.len() >= 9, "crashers missing in {}", dir.display());
        let mut caught = 0;
        for file in files {
            let body = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
            // Straight into automerge, as the fold did before: the guard catches the panic.
            let raw = guarded(|| {
                let mut doc = AutoCommit::new();
                if let Ok(change) = Change::from_bytes(body.clone()) {
                    let _ = doc.apply_changes([change]);
                }
                let _ = AutoCommit::new().load_incremental(&body);
            });
            caught += usize::from(raw.is_none());
            for snapshot in [false, true] {
                for filled in [false, true] {
                    let a = [7u8; 32];
                    let mut doc = local(a);
                    if filled {
                        change(&mut doc, "name", "Croissant-Rouge");
                    }
                    let seq = u64::from(filled);
                    let any = |_: &[u8; 32]| true;
                    let writers = if snapshot {
                        Writers::Editors(&any)
                    } else {
                        Writers::Author(&a)
                    };
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        apply_body(&mut doc, &body, snapshot, writers, &|_| seq)
                    }));
                    assert!(outcome.is_ok(), "{} panicked through", file.display());
                }
            }
        }
        assert!(
            caught > 0,
            "no crasher panics automerge any more: the guard is untested"
        );
        println!("{caught} crashers panic automerge when fed to it directly");
    }
}
