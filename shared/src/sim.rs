//! A whole mechanism built in memory, for tests, the benchmark and the demo: a ministry root
//! key, organisations with their keys, endorsed nodes, a signed genesis, and engines over real
//! redb stores in directories the caller gives. Everything is made with the same code paths as
//! the command line (templates, stanzas, endorsements, signatures).
//!
//! Only with the `sim` feature. With `forge` as well it can forge (`Forger`): sign arbitrary
//! events as one of its nodes, the way a malicious or buggy node would, so tests can check that
//! the rest of the mechanism refuses or marks them.

use std::collections::BTreeMap;
use std::path::Path;

use time::OffsetDateTime;

use crate::config::chain::SignedFile;
use crate::config::template;
use crate::config::{Hash32, Mechanism};
use crate::engine::{Engine, EngineError};
use crate::event::{Addressed, EVENT_FORMAT, Event, EventId, Header, Hlc, Kind};
use crate::keyfiles::{NodeSecrets, OrgKeys, RootKey, node_endorsement_message};
use crate::keys::{NodeId, SigningKey, context};
use crate::payload;
use crate::store::Store;

/// A simulated node: its name, organisation and secrets.
#[derive(Debug, Clone)]
pub struct SimNode {
    pub name: String,
    pub org: String,
    pub secrets: NodeSecrets,
}

impl SimNode {
    pub fn id(&self) -> NodeId {
        self.secrets.signing.public().node_id()
    }

    pub fn key(&self) -> [u8; 32] {
        self.secrets.signing.public().to_bytes()
    }
}

/// A simulated mechanism.
#[derive(Debug)]
pub struct Sim {
    pub root: RootKey,
    /// Further officials who sign every version with `root` (see [`Sim::with_officials`]).
    pub co_signers: Vec<RootKey>,
    pub orgs: BTreeMap<String, OrgKeys>,
    pub nodes: Vec<SimNode>,
    /// The signed chain, genesis first.
    pub files: Vec<SignedFile>,
}

/// Why a simulated mechanism could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Chain(#[from] crate::config::chain::ChainError),
    #[error(transparent)]
    KeyFile(#[from] crate::keyfiles::KeyFileError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Other(String),
}

fn stanza<T: serde::Serialize>(name: &str, value: &T) -> Result<String, SimError> {
    let body = toml::to_string(value).map_err(|e| SimError::Other(e.to_string()))?;
    Ok(format!("\n[[{name}]]\n{body}"))
}

impl Sim {
    /// Builds a mechanism from the sample document: keys for `orgs`, the `nodes` (name, org)
    /// endorsed, all signed by one root key.
    pub fn new(
        sample: &str,
        orgs: &[&str],
        nodes: &[(&str, &str)],
        now: OffsetDateTime,
    ) -> Result<Self, SimError> {
        Self::with_officials(sample, 1, 1, orgs, nodes, now)
    }

    /// Like [`Sim::new`], with `officials` root keys of which `threshold` must sign (all of
    /// them sign here).
    pub fn with_officials(
        sample: &str,
        officials: usize,
        threshold: u32,
        orgs: &[&str],
        nodes: &[(&str, &str)],
        now: OffsetDateTime,
    ) -> Result<Self, SimError> {
        let root = RootKey(SigningKey::generate());
        let co_signers: Vec<RootKey> = (1..officials.max(1))
            .map(|_| RootKey(SigningKey::generate()))
            .collect();
        let publics: Vec<_> = std::iter::once(root.0.public())
            .chain(co_signers.iter().map(|k| k.0.public()))
            .collect();
        let mut text = template::from_sample(sample, &publics, threshold, now)?;
        let mut org_keys = BTreeMap::new();
        for org in orgs {
            let keys = OrgKeys::generate(org);
            text.push_str(&stanza("org_signing_keys", &keys.signing_key_stanza()?)?);
            for epoch in &keys.epochs {
                text.push_str(&stanza("org_encryption_keys", &keys.epoch_stanza(epoch)?)?);
            }
            org_keys.insert(org.to_string(), keys);
        }
        let mut sim_nodes = Vec::new();
        for (name, org) in nodes {
            let secrets = NodeSecrets::generate();
            let keys = org_keys
                .get(*org)
                .ok_or_else(|| SimError::Other(format!("no keys for {org}")))?;
            text.push_str(&Self::node_stanza(keys, &secrets, name)?);
            sim_nodes.push(SimNode {
                name: name.to_string(),
                org: org.to_string(),
                secrets,
            });
        }
        let mut file = SignedFile::new(text);
        file.sign(&root.0)?;
        for k in &co_signers {
            file.sign(&k.0)?;
        }
        crate::config::chain::check_genesis(&file, now, true)?;
        Ok(Self {
            root,
            co_signers,
            orgs: org_keys,
            nodes: sim_nodes,
            files: vec![file],
        })
    }

    /// The `[[nodes]]` stanza of a node, endorsed by its organisation.
    pub fn node_stanza(
        keys: &OrgKeys,
        secrets: &NodeSecrets,
        label: &str,
    ) -> Result<String, SimError> {
        let id = secrets.signing.public().node_id();
        let recipient = secrets.age.to_public().to_string();
        let endorsement = keys.signing_key()?.sign(
            context::NODE_ENDORSEMENT,
            &node_endorsement_message(&keys.org, &id, &recipient),
        );
        Ok(format!(
            "\n[[nodes]]\nid = \"{id}\"\norg = \"{}\"\nlabel = \"{label}\"\nrecipient = \"{recipient}\"\nendorsement = \"{endorsement}\"\n",
            keys.org
        ))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&SimNode, SimError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| SimError::Other(format!("no node {name}")))
    }

    /// The version in force.
    pub fn mechanism(&self) -> Result<Mechanism, SimError> {
        let file = self
            .files
            .last()
            .ok_or_else(|| SimError::Other("no version".into()))?;
        Ok(file.mechanism()?)
    }

    /// The mechanism id.
    pub fn mechanism_id(&self) -> Hash32 {
        self.files.first().map(SignedFile::hash).unwrap_or_default()
    }

    /// Writes and signs the next version: `edit` changes the text produced by
    /// `mechanism next` (with the given removals) before it is signed.
    pub fn next_version(
        &mut self,
        removals: &[template::RemovalCutoff],
        edit: impl FnOnce(String) -> String,
        now: OffsetDateTime,
    ) -> Result<&SignedFile, SimError> {
        let current = self
            .files
            .last()
            .ok_or_else(|| SimError::Other("no version".into()))?;
        let mechanism = current.mechanism()?;
        let text = template::next_version(&current.document, &mechanism, removals, now)?;
        let mut file = SignedFile::new(edit(text));
        file.sign(&self.root.0)?;
        for k in &self.co_signers {
            file.sign(&k.0)?;
        }
        crate::config::chain::check_next(&mechanism, &file, now, true)?;
        self.files.push(file);
        self.files
            .last()
            .ok_or_else(|| SimError::Other("no version".into()))
    }

    /// Adds a node of `org` to the simulation (its stanza goes into the next version).
    pub fn add_node(&mut self, name: &str, org: &str) -> Result<String, SimError> {
        let secrets = NodeSecrets::generate();
        let keys = self
            .orgs
            .get(org)
            .ok_or_else(|| SimError::Other(format!("no keys for {org}")))?;
        let stanza = Self::node_stanza(keys, &secrets, name)?;
        self.nodes.push(SimNode {
            name: name.to_string(),
            org: org.to_string(),
            secrets,
        });
        Ok(stanza)
    }

    /// Rotates an organisation's encryption key; returns the stanza for the next version.
    pub fn rotate(&mut self, org: &str) -> Result<String, SimError> {
        let keys = self
            .orgs
            .get_mut(org)
            .ok_or_else(|| SimError::Other(format!("no keys for {org}")))?;
        let epoch = keys.rotate_encryption()?.clone();
        stanza("org_encryption_keys", &keys.epoch_stanza(&epoch)?)
    }

    /// An engine for node `name` over a new store in `dir`, joined to the chain; with
    /// `org_keys`, the organisation's epochs are installed by hand (`org import-key`).
    pub fn engine(
        &self,
        name: &str,
        dir: &Path,
        org_keys: bool,
        now: OffsetDateTime,
    ) -> Result<Engine, SimError> {
        self.engine_at(name, &dir.join(format!("{name}.redb")), org_keys, now)
    }

    /// An engine for node `name` over a store at `path` (created if new), joined to the chain.
    pub fn engine_at(
        &self,
        name: &str,
        path: &Path,
        org_keys: bool,
        now: OffsetDateTime,
    ) -> Result<Engine, SimError> {
        let cache = crate::limits::STORE_CACHE_MIB_DEFAULT;
        self.engine_with_cache(name, path, org_keys, cache, now)
    }

    /// [`Sim::engine_at`] with a store page cache of `cache_mib` MiB.
    pub fn engine_with_cache(
        &self,
        name: &str,
        path: &Path,
        org_keys: bool,
        cache_mib: usize,
        now: OffsetDateTime,
    ) -> Result<Engine, SimError> {
        let node = self.node(name)?;
        let mut store = Store::open_with_cache(path, cache_mib)?;
        store.apply_config(&self.files, now)?;
        let mut engine = Engine::open(store, node.secrets.clone(), &node.org)?;
        if org_keys {
            let keys = self
                .orgs
                .get(&node.org)
                .ok_or_else(|| SimError::Other(format!("no keys for {}", node.org)))?;
            let epochs: Vec<_> = keys
                .epochs
                .iter()
                .map(|e| (e.epoch, e.identity.clone()))
                .collect();
            engine.import_epochs(&epochs, now)?;
        }
        Ok(engine)
    }
}

/// Writes one simulated node's log without an engine: each event chained after the previous
/// one and signed with the node's key (generated histories, the benchmark's observers). It
/// signs only the headers it builds itself; signing arbitrary headers is `Forger`'s, which
/// the production build leaves out.
#[derive(Debug)]
pub struct EventWriter {
    pub node: SimNode,
    pub mechanism: Hash32,
    pub seq: u64,
    pub prev: Option<EventId>,
    pub config_version: u64,
    pub hlc: Hlc,
    /// Reuse one sealed body per (kind, organisations) instead of encrypting each event: for
    /// generating large histories fast when nobody will read them (a benchmark's observer).
    pub reuse_bodies: bool,
    bodies: std::collections::HashMap<String, Vec<u8>>,
}

impl EventWriter {
    pub fn new(
        node: &SimNode,
        mechanism: Hash32,
        config_version: u64,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            node: node.clone(),
            mechanism,
            seq: 0,
            prev: None,
            config_version,
            hlc: Hlc {
                ms: u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                counter: 0,
            },
            reuse_bodies: false,
            bodies: std::collections::HashMap::new(),
        }
    }

    /// The next event of this node's log: the body is `plain` encrypted to the current epochs
    /// of `orgs` (or given as is, for kinds that are not encrypted), signed, chained.
    pub fn next(
        &mut self,
        m: &Mechanism,
        kind: Kind,
        subject: Option<EventId>,
        deps: Vec<EventId>,
        orgs: &[&str],
        plain: &[u8],
    ) -> Result<Event, SimError> {
        let mut addressed = Vec::new();
        let mut recipients = Vec::new();
        for org in orgs {
            let (epoch, r) = m
                .current_epoch(org)
                .ok_or_else(|| SimError::Other(format!("{org} has no key")))?;
            addressed.push(Addressed {
                org: org.to_string(),
                epoch,
            });
            recipients.push(r.clone());
        }
        let cache_key = format!("{}:{}", kind.name(), orgs.join(","));
        let body = if !kind.is_encrypted_to_orgs() {
            plain.to_vec()
        } else if let Some(body) = self
            .reuse_bodies
            .then(|| self.bodies.get(&cache_key))
            .flatten()
        {
            body.clone()
        } else {
            let refs: Vec<_> = recipients.iter().collect();
            let body = payload::seal(plain, &refs).map_err(|e| SimError::Other(e.to_string()))?;
            if self.reuse_bodies {
                self.bodies.insert(cache_key, body.clone());
            }
            body
        };
        self.hlc.counter += 1;
        let header = Header {
            format: EVENT_FORMAT,
            mechanism: self.mechanism,
            author: self.node.key(),
            seq: self.seq + 1,
            prev: self.prev,
            config_version: self.config_version,
            hlc: self.hlc,
            kind,
            subject,
            deps,
            orgs: addressed,
            body_hash: Hash32::default(),
            body_len: 0,
        };
        self.sign_as_given(header, body)
    }

    /// Signs a header exactly as given, and advances the chain to it.
    fn sign_as_given(&mut self, header: Header, body: Vec<u8>) -> Result<Event, SimError> {
        let event = Event::sign(header, body, &self.node.secrets.signing)
            .map_err(|e| SimError::Other(e.to_string()))?;
        self.seq = event.header().seq;
        self.prev = Some(event.id());
        Ok(event)
    }
}

/// Signs arbitrary events as one node: what a malicious node (or a buggy one) could send.
/// Everything an [`EventWriter`] does, plus [`Forger::sign`]; only with the `forge` feature
/// (tests, the network simulator), never in the production binary.
#[cfg(any(test, feature = "forge"))]
#[derive(Debug)]
pub struct Forger(EventWriter);

#[cfg(any(test, feature = "forge"))]
impl Forger {
    pub fn new(
        node: &SimNode,
        mechanism: Hash32,
        config_version: u64,
        now: OffsetDateTime,
    ) -> Self {
        Self(EventWriter::new(node, mechanism, config_version, now))
    }

    /// Signs a header exactly as given (no chaining), and advances the chain to it.
    pub fn sign(&mut self, header: Header, body: Vec<u8>) -> Result<Event, SimError> {
        self.0.sign_as_given(header, body)
    }
}

#[cfg(any(test, feature = "forge"))]
impl std::ops::Deref for Forger {
    type Target = EventWriter;

    fn deref(&self) -> &EventWriter {
        &self.0
    }
}

#[cfg(any(test, feature = "forge"))]
impl std::ops::DerefMut for Forger {
    fn deref_mut(&mut self) -> &mut EventWriter {
        &mut self.0
    }
}

/// Payloads for generated histories (and for a benchmark's own cases).
pub fn generated_case(site: &str) -> crate::payload::CaseData {
    use crate::payload::{CaseData, Consent, Person};
    CaseData {
        case_type: "general".into(),
        site: site.into(),
        person: Person {
            first_name: Some("Generated".into()),
            age: Some(30),
            languages: vec!["fr".into(), "ar".into()],
            ..Person::default()
        },
        needs: vec!["health".into()],
        vulnerabilities: vec![],
        consent: Consent {
            given: true,
            explained_by: "generator".into(),
            explained: "generated for a benchmark".into(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
            ..Consent::default()
        },
        notes: String::new(),
    }
}

/// One generated case's life: an opening by `fa`'s node, a referral to `fp`'s organisation,
/// then acknowledge, accept and complete by `fp`'s node.
fn generated_case_life(
    m: &Mechanism,
    fa: &mut EventWriter,
    fp: &mut EventWriter,
    note_bytes: usize,
) -> Result<Vec<Event>, SimError> {
    use crate::event::{Transition, Urgency};
    use crate::payload::{CaseOpenPayload, ReferralPayload, ReferralUpdatePayload};
    let (a_org, p_org) = (fa.node.org.clone(), fp.node.org.clone());
    let both = [a_org.as_str(), p_org.as_str()];
    let enc = |x: &dyn erased::Encode| x.encode();
    let open = fa.next(
        m,
        Kind::CaseOpen,
        None,
        vec![],
        &[a_org.as_str()],
        &enc(&CaseOpenPayload {
            data: generated_case("medenine"),
            by: "generator".into(),
        })?,
    )?;
    let referral = ReferralPayload {
        case_type: "general".into(),
        category: "health".into(),
        shared: [("first_name".to_string(), "Generated".to_string())]
            .into_iter()
            .collect(),
        note: "n".repeat(note_bytes),
        consent: generated_case("medenine").consent,
        emergency_override: None,
        by: "generator".into(),
    };
    let send = fa.next(
        m,
        Kind::ReferralSend {
            to_org: p_org.clone(),
            category: Some("health".into()),
            urgency: Urgency::Urgent,
        },
        Some(open.id()),
        vec![],
        &both,
        &enc(&referral)?,
    )?;
    fp.hlc = fp.hlc.max(fa.hlc);
    let mut out = vec![open, send.clone()];
    for t in [
        Transition::Acknowledge,
        Transition::Accept,
        Transition::Complete,
    ] {
        out.push(fp.next(
            m,
            Kind::ReferralUpdate {
                transition: t,
                reason: None,
            },
            Some(send.id()),
            vec![],
            &both,
            &enc(&ReferralUpdatePayload {
                note: "ok".into(),
                outcome: None,
                by: "generator".into(),
            })?,
        )?);
    }
    fa.hlc = fa.hlc.max(fp.hlc);
    Ok(out)
}

impl Sim {
    /// Generates a valid history on every core: for each case, an opening by the identifying
    /// node, a referral to the provider's organisation, then acknowledge, accept and complete
    /// by the provider node — five events per case, across two authors. Each (identifier,
    /// provider) pair runs on its own thread; `note_bytes` pads the referral's note.
    pub fn history(
        &self,
        pairs: &[(&str, &str)],
        cases_per_pair: usize,
        note_bytes: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, SimError> {
        self.history_with(pairs, cases_per_pair, note_bytes, false, now)
    }

    /// [`Sim::history`], optionally reusing one sealed body per kind (see
    /// [`EventWriter::reuse_bodies`]): only nodes that cannot read the events should receive it.
    pub fn history_with(
        &self,
        pairs: &[(&str, &str)],
        cases_per_pair: usize,
        note_bytes: usize,
        reuse_bodies: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<Event>, SimError> {
        let m = self.mechanism()?;
        let version = m.doc.version;
        let mechanism_id = self.mechanism_id();
        let mut jobs = Vec::new();
        for (identifier, provider) in pairs {
            jobs.push((self.node(identifier)?.clone(), self.node(provider)?.clone()));
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(a, p)| {
                    let m = &m;
                    scope.spawn(move || -> Result<Vec<Event>, SimError> {
                        let mut fa = EventWriter::new(&a, mechanism_id, version, now);
                        let mut fp = EventWriter::new(&p, mechanism_id, version, now);
                        fa.reuse_bodies = reuse_bodies;
                        fp.reuse_bodies = reuse_bodies;
                        let mut out = Vec::with_capacity(cases_per_pair * 5);
                        for _ in 0..cases_per_pair {
                            out.extend(generated_case_life(m, &mut fa, &mut fp, note_bytes)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            joined(handles)
        })
    }
}

/// A valid history generated a chunk at a time, for filling a store to millions of events
/// without holding them all: the same five events per case as [`Sim::history`], each
/// (identifier, provider) pair on its own thread, the writers kept between chunks so the logs
/// chain on. Each case starts `step_ms` after the one before it in its pair, from `start`.
#[derive(Debug)]
pub struct HistoryStream {
    m: Mechanism,
    writers: Vec<(EventWriter, EventWriter)>,
    note_bytes: usize,
    step_ms: u64,
}

impl HistoryStream {
    pub fn new(
        sim: &Sim,
        pairs: &[(&str, &str)],
        note_bytes: usize,
        start: OffsetDateTime,
        step_ms: u64,
    ) -> Result<Self, SimError> {
        let m = sim.mechanism()?;
        let (version, id) = (m.doc.version, sim.mechanism_id());
        let mut writers = Vec::new();
        for (identifier, provider) in pairs {
            let mut fa = EventWriter::new(sim.node(identifier)?, id, version, start);
            let mut fp = EventWriter::new(sim.node(provider)?, id, version, start);
            // Only nodes that cannot read the events, or read them all alike, receive these.
            fa.reuse_bodies = true;
            fp.reuse_bodies = true;
            writers.push((fa, fp));
        }
        Ok(Self {
            m,
            writers,
            note_bytes,
            step_ms,
        })
    }

    /// The next `cases_per_pair` cases of every pair, pair after pair.
    pub fn next_cases(&mut self, cases_per_pair: usize) -> Result<Vec<Event>, SimError> {
        let (m, note_bytes, step_ms) = (&self.m, self.note_bytes, self.step_ms);
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .writers
                .iter_mut()
                .map(|(fa, fp)| {
                    scope.spawn(move || -> Result<Vec<Event>, SimError> {
                        let mut out = Vec::with_capacity(cases_per_pair * 5);
                        for _ in 0..cases_per_pair {
                            out.extend(generated_case_life(m, fa, fp, note_bytes)?);
                            let next = fa.hlc.ms.max(fp.hlc.ms) + step_ms;
                            for w in [&mut *fa, &mut *fp] {
                                w.hlc = Hlc {
                                    ms: next,
                                    counter: 0,
                                };
                            }
                        }
                        Ok(out)
                    })
                })
                .collect();
            joined(handles)
        })
    }
}

/// The events of every generator thread, thread after thread; a thread that failed or
/// panicked fails the whole.
fn joined(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<Vec<Event>, SimError>>>,
) -> Result<Vec<Event>, SimError> {
    let mut all = Vec::new();
    for h in handles {
        let events = h
            .join()
            .unwrap_or_else(|_| Err(SimError::Other("a generator thread failed".into())))?;
        all.extend(events);
    }
    Ok(all)
}

/// Object-safe encoding of payloads, for the generator.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Result<Vec<u8>, super::SimError>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Result<Vec<u8>, super::SimError> {
            crate::payload::encode(self).map_err(|e| super::SimError::Other(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed history chains on between chunks and its cases are `step_ms` apart: a store
    /// filled with it holds events up to the time asked, never ahead of it.
    #[test]
    fn a_streamed_history_keeps_its_times() {
        let now = OffsetDateTime::now_utc();
        let sim = Sim::new(
            include_str!("../../config/mechanism.toml"),
            &["mas", "mdm"],
            &[("mas1", "mas"), ("mdm1", "mdm")],
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let start = now - time::Duration::hours(1);
        let mut stream = HistoryStream::new(&sim, &[("mas1", "mdm1")], 10, start, 1_000)
            .unwrap_or_else(|e| panic!("{e}"));
        let first = stream.next_cases(3).unwrap_or_else(|e| panic!("{e}"));
        let second = stream.next_cases(3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((first.len(), second.len()), (15, 15));
        assert_eq!(second[0].header().seq, first[11].header().seq + 1);
        let ms = |e: &Event| e.header().hlc.ms;
        let start_ms = u64::try_from(start.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        assert_eq!(ms(&first[0]), start_ms);
        assert_eq!(ms(&second[0]), start_ms + 3_000);
        assert_eq!(ms(&second[14]), start_ms + 5_000);
    }
}
