//! Building, sealing, signing and appending events: one transaction per batch, nothing written
//! if a rule would be broken.

use time::OffsetDateTime;

use crate::event::{Addressed, EVENT_FORMAT, Event, EventId, Header, Kind};
use crate::fold::Decrypted;
use crate::payload::{self};
use crate::store::StoreError;
use crate::time_fmt;

use super::{Engine, EngineError, META_EXPIRY_OVERRIDE, META_READ_ONLY, Refusal, invalid, now_ms};
use crate::config::Mechanism;

/// An event about to be created: its kind, what it is about, whom it is addressed to, and
/// its payload (encrypted to the current epochs of `orgs`).
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: Kind,
    pub subject: Option<EventId>,
    pub deps: Vec<EventId>,
    pub orgs: Vec<String>,
    pub payload: Decrypted,
}

impl Draft {
    pub fn new(
        kind: Kind,
        subject: Option<EventId>,
        orgs: Vec<String>,
        payload: Decrypted,
    ) -> Self {
        Self {
            kind,
            subject,
            deps: Vec::new(),
            orgs,
            payload,
        }
    }
}

fn encode_payload(p: &Decrypted) -> Result<Vec<u8>, payload::PayloadError> {
    match p {
        Decrypted::CaseOpen(x) => payload::encode(x),
        Decrypted::Determination(x) => payload::encode(x),
        Decrypted::CaseUpdate(x) => payload::encode(x),
        Decrypted::Referral(x) => payload::encode(x),
        Decrypted::ReferralUpdate(x) => payload::encode(x),
    }
}

impl Engine {
    /// Whether this node may create case events now; the reason if not.
    pub fn can_create_case_events(&self, now: OffsetDateTime) -> Result<(), EngineError> {
        if self.store.meta(META_READ_ONLY)?.is_some() {
            return Err(EngineError::ReadOnly);
        }
        let m = self.mechanism()?;
        if m.is_expired(now) {
            let override_until = self
                .store
                .meta(META_EXPIRY_OVERRIDE)?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| time_fmt::parse_rfc3339(&s));
            if override_until.is_none_or(|until| now >= until) {
                return Err(EngineError::ConfigExpired {
                    version: m.doc.version,
                    expired: time_fmt::rfc3339(m.doc.expires_at),
                });
            }
        }
        Ok(())
    }

    /// Builds, signs and appends an event; nothing is written if a rule would be broken.
    pub(super) fn append(
        &mut self,
        draft: Draft,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let ids = self.append_batch(vec![draft], now)?;
        ids.into_iter()
            .next()
            .ok_or_else(|| invalid("nothing was appended"))
    }

    /// Builds, encrypts (on every core), signs and appends several events in one durable
    /// transaction. All are written, or — if any would break a rule — none is.
    pub fn append_batch(
        &mut self,
        drafts: Vec<Draft>,
        now: OffsetDateTime,
    ) -> Result<Vec<EventId>, EngineError> {
        let m = self.store.config().require()?.clone();
        if drafts.iter().any(|d| d.kind.is_case_event()) {
            self.can_create_case_events(now)?;
        }
        let prepared = drafts
            .into_iter()
            .map(|draft| Prepared::new(draft, &m))
            .collect::<Result<Vec<_>, _>>()?;
        let bodies = seal_all(&prepared);
        // Signing chains each event to the previous one: in order, on one core.
        let head = self.store.head(&self.keys.node_key)?;
        let first_seq = head.map(|h| h.0).unwrap_or(0) + 1;
        let mut prev = head.map(|h| h.1);
        let config_version = m.doc.version.max(head.map(|h| h.2).unwrap_or(0));
        let mut events = Vec::with_capacity(prepared.len());
        for (seq, (p, body)) in (first_seq..).zip(prepared.into_iter().zip(bodies)) {
            let event = self.sign(
                p.draft.kind,
                p.draft.subject,
                p.draft.deps,
                p.addressed,
                body?,
                (seq, prev, config_version),
                now,
            )?;
            prev = Some(event.id());
            events.push((event, Some(p.draft.payload)));
        }
        let ids: Vec<EventId> = events.iter().map(|(e, _)| e.id()).collect();
        match self
            .store
            .append_local_batch(events, &mut self.keys, now_ms(now))?
        {
            Ok(()) => {
                self.note_fresh(&ids);
                Ok(ids)
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Signs a header at the given position of this node's log.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sign(
        &mut self,
        kind: Kind,
        subject: Option<EventId>,
        deps: Vec<EventId>,
        orgs: Vec<Addressed>,
        body: Vec<u8>,
        (seq, prev, config_version): (u64, Option<EventId>, u64),
        now: OffsetDateTime,
    ) -> Result<Event, EngineError> {
        let mechanism = self
            .store
            .config()
            .mechanism_id()
            .ok_or(StoreError::NotJoined)?;
        let header = Header {
            format: EVENT_FORMAT,
            mechanism,
            author: self.keys.node_key,
            seq,
            prev,
            config_version,
            hlc: self.clock.tick(now_ms(now)),
            kind,
            subject,
            deps,
            orgs,
            body_hash: Default::default(),
            body_len: 0,
        };
        Ok(Event::sign(header, body, &self.secrets.signing)?)
    }

    /// Signs the next event of this node's log.
    pub(super) fn sign_next(
        &mut self,
        kind: Kind,
        body: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<Event, EngineError> {
        let m = self.store.config().require()?.clone();
        let head = self.store.head(&self.keys.node_key)?;
        let position = (
            head.map(|h| h.0).unwrap_or(0) + 1,
            head.map(|h| h.1),
            m.doc.version.max(head.map(|h| h.2).unwrap_or(0)),
        );
        self.sign(kind, None, vec![], vec![], body, position, now)
    }

    /// Appends an event whose body the caller built (partner-map changes), with the events it
    /// depends on.
    pub fn append_plain(
        &mut self,
        kind: Kind,
        body: Vec<u8>,
        deps: Vec<EventId>,
        now: OffsetDateTime,
    ) -> Result<EventId, EngineError> {
        let m = self.store.config().require()?.clone();
        let head = self.store.head(&self.keys.node_key)?;
        let position = (
            head.map(|h| h.0).unwrap_or(0) + 1,
            head.map(|h| h.1),
            m.doc.version.max(head.map(|h| h.2).unwrap_or(0)),
        );
        // This node's previous event is a dependency already (the chain): not named twice.
        let deps = deps
            .into_iter()
            .filter(|d| Some(*d) != position.1)
            .collect();
        let event = self.sign(kind, None, deps, vec![], body, position, now)?;
        match self.store.append_local_batch(
            vec![(event.clone(), None)],
            &mut self.keys,
            now_ms(now),
        )? {
            Ok(()) => {
                self.note_fresh(&[event.id()]);
                Ok(event.id())
            }
            Err(refusal) => Err(refusal.into()),
        }
    }
}

/// A draft ready to seal: whom it is addressed to (each organisation once, at its current
/// epoch), their recipients, and the encoded payload.
struct Prepared {
    draft: Draft,
    addressed: Vec<Addressed>,
    recipients: Vec<age::x25519::Recipient>,
    plain: zeroize::Zeroizing<Vec<u8>>,
}

impl Prepared {
    fn new(draft: Draft, m: &Mechanism) -> Result<Self, EngineError> {
        let mut addressed = Vec::new();
        let mut recipients = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for org in &draft.orgs {
            if !seen.insert(org.clone()) {
                continue;
            }
            let (epoch, recipient) = m
                .current_epoch(org)
                .ok_or_else(|| Refusal::NoKeyYet(org.clone()))?;
            addressed.push(Addressed {
                org: org.clone(),
                epoch,
            });
            recipients.push(recipient.clone());
        }
        let plain = zeroize::Zeroizing::new(encode_payload(&draft.payload)?);
        Ok(Self {
            draft,
            addressed,
            recipients,
            plain,
        })
    }

    fn seal(&self) -> Result<Vec<u8>, payload::PayloadError> {
        let refs: Vec<&age::x25519::Recipient> = self.recipients.iter().collect();
        payload::seal(&self.plain, &refs)
    }
}

/// Seals every prepared draft; encryption dominates, so a batch of four or more is spread over
/// the cores. The bodies come back in the drafts' order.
fn seal_all(prepared: &[Prepared]) -> Vec<Result<Vec<u8>, payload::PayloadError>> {
    let threads = crate::limits::batch_threads();
    if prepared.len() < 4 || threads < 2 {
        return prepared.iter().map(Prepared::seal).collect();
    }
    let chunk = prepared.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(Prepared::seal).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(payload::PayloadError::Encrypt(
                        "an encryption thread failed".into(),
                    ))]
                })
            })
            .collect()
    })
}
