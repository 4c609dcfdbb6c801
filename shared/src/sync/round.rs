//! One sync round between this node's engine and a peer, as a state machine: the initiator
//! feeds it each response and sends the request it returns; the responder answers each request
//! with [`Engine::respond`]. Neither side does I/O here — libp2p or a test moves the messages.

use time::OffsetDateTime;

use crate::config::chain::SignedFile;
use crate::engine::{Engine, EngineError};
use crate::event::Event;
use crate::limits::{
    SYNC_BATCH_EVENTS_MAX, SYNC_BATCH_MAX_BYTES, SYNC_ROUND_BATCHES_MAX, SYNC_ROUND_MAX_BYTES,
};
use crate::store::{META_READ_ONLY, StoreError};
use crate::sync::{
    self, EventSource, Range, Request, Response, SYNC_VERSION, SyncError, VersionVector,
};

/// How many times one round may restart after a configuration update.
const RESTARTS_MAX: u32 = 3;

/// What a round did, for `status` and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub fetched: usize,
    pub admitted: usize,
    pub pushed: usize,
    pub config_versions: usize,
    pub refused: Vec<String>,
    /// Why the round ended before everything was exchanged, if it did: a round's work is
    /// bounded, whatever the peer answers.
    pub cut_short: Option<RoundCut>,
}

/// Why a round was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoundCut {
    /// The peer said there was more, but its batch moved no range forward (a responder that
    /// answers `more` forever): asking again would get the same.
    #[error("the peer answered `more` with a batch that moved nothing forward")]
    NoProgress,
    /// The round moved its most batches ([`SYNC_ROUND_BATCHES_MAX`]): the next round goes on.
    #[error("the round moved its most batches ({SYNC_ROUND_BATCHES_MAX})")]
    Batches,
    /// The round fetched its most bytes ([`SYNC_ROUND_MAX_BYTES`]): the next round goes on.
    #[error("the round fetched its most bytes ({SYNC_ROUND_MAX_BYTES})")]
    Bytes,
}

impl RoundCut {
    /// Whether another round should follow at once (the peer is honest and simply had much
    /// to send), rather than at the usual interval.
    pub fn resume_soon(self) -> bool {
        !matches!(self, RoundCut::NoProgress)
    }
}

/// The next thing the initiator does.
#[derive(Debug)]
pub enum Step {
    Send(Request),
    /// Send the request, and meanwhile admit these events (fetched in the previous batch):
    /// the next batch travels while this one is stored.
    SendAndAdmit(Request, Vec<Event>),
    Done(RoundReport),
}

#[derive(Debug)]
enum State {
    AwaitHello,
    AwaitConfigAck,
    Fetching(Vec<Range>),
    Pushing,
    Done,
}

/// The initiator's side of a round.
#[derive(Debug)]
pub struct Round {
    state: State,
    restarts: u32,
    /// Ranges of our log still to push, and where each stands.
    push: Vec<Range>,
    their_vector: Option<VersionVector>,
    /// What the peer is known to hold: its vector, advanced by each pushed batch it admitted
    /// whole. A batch it admitted only in part advances nothing (its answer gives a count, not
    /// which events), so this never claims more than the peer holds.
    peer_holds: Option<VersionVector>,
    /// The last event of each author in the push batch awaiting its answer.
    in_flight: Vec<([u8; 32], u64, crate::event::EventId)>,
    /// How many events that batch carried.
    in_flight_len: usize,
    /// Whether this round already asked for fork evidence (once per round).
    evidence_asked: bool,
    report: RoundReport,
    /// Batches moved (fetched or pushed) and bytes fetched so far: the round's work, bounded.
    batches: usize,
    fetched_bytes: usize,
}

impl EventSource for Engine {
    type Error = StoreError;

    fn range(
        &self,
        author: &[u8; 32],
        from: u64,
        to: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let max = match to {
            Some(to) => max.min(usize::try_from(to.saturating_sub(from) + 1).unwrap_or(max)),
            None => max,
        };
        self.store().log_range_raw(author, from, max)
    }
}

/// Decodes a received (compacted) batch: the events, and why any could not be decoded.
fn decode_events(items: &[Vec<u8>]) -> (Vec<Event>, Vec<String>) {
    let mut events = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for wire in crate::event::expand_batch(items) {
        match wire.and_then(|bytes| Event::decode(&bytes)) {
            Ok(e) => events.push(e),
            Err(e) => refused.push(e.to_string()),
        }
    }
    (events, refused)
}

fn signed_files(files: &[Vec<u8>]) -> Result<Vec<SignedFile>, EngineError> {
    files
        .iter()
        .map(|f| SignedFile::from_bytes(f).map_err(|e| EngineError::Store(StoreError::Chain(e))))
        .collect()
}

impl Engine {
    /// This node's version vector.
    pub fn version_vector(&self) -> Result<VersionVector, EngineError> {
        Ok(VersionVector::from_heads(self.store().heads()?))
    }

    /// The `Hello` that opens a round.
    pub fn hello(&self) -> Result<Request, EngineError> {
        let mechanism = self
            .store()
            .config()
            .mechanism_id()
            .ok_or(StoreError::NotJoined)?;
        Ok(Request::Hello {
            version: SYNC_VERSION,
            mechanism,
            config_version: self.store().config().highest(),
            digest: self.version_vector()?.digest(),
        })
    }

    /// Answers one request from a peer (the responder's side of a round).
    pub fn respond(&mut self, request: Request, now: OffsetDateTime) -> Response {
        match self.respond_inner(request, now) {
            Ok(r) => r,
            Err(e) => Response::Refused {
                reason: e.to_string(),
            },
        }
    }

    fn respond_inner(
        &mut self,
        request: Request,
        now: OffsetDateTime,
    ) -> Result<Response, EngineError> {
        sync::check_request(&request).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let ours = self.store().config().highest();
        match request {
            Request::Hello {
                mechanism,
                config_version,
                digest,
                ..
            } => {
                if Some(mechanism) != self.store().config().mechanism_id() {
                    return Err(EngineError::Invalid(SyncError::OtherMechanism.to_string()));
                }
                if config_version < ours {
                    return Ok(Response::Config {
                        files: self.store().config_files_after(config_version)?,
                    });
                }
                let vector = self.version_vector()?;
                if vector.digest() == digest {
                    return Ok(Response::InSync);
                }
                Ok(Response::Vector {
                    config_version: ours,
                    vector,
                })
            }
            Request::Want { ranges } => Ok(sync::answer_want(&ranges, self)?),
            Request::Push { events } => {
                let (events, _) = decode_events(&events);
                let report = self.receive(&events, now)?;
                Ok(Response::Received {
                    admitted: report.admitted.len() as u32,
                })
            }
            Request::PushConfig { files } => {
                let files = signed_files(&files)?;
                self.apply_config(&files, now)?;
                Ok(Response::Received { admitted: 0 })
            }
        }
    }

    /// Whether this node is a restored one that has not yet learned its own latest events.
    pub fn is_read_only(&self) -> Result<bool, StoreError> {
        Ok(self.store().meta(META_READ_ONLY)?.is_some())
    }
}

impl Round {
    /// A round that is already over (a placeholder where a round could not start).
    pub fn idle() -> Self {
        Self {
            state: State::Done,
            restarts: 0,
            push: Vec::new(),
            their_vector: None,
            peer_holds: None,
            in_flight: Vec::new(),
            in_flight_len: 0,
            evidence_asked: false,
            report: RoundReport::default(),
            batches: 0,
            fetched_bytes: 0,
        }
    }

    /// Starts a round: the `Hello` to send.
    pub fn start(engine: &Engine) -> Result<(Self, Request), EngineError> {
        Ok((
            Self {
                state: State::AwaitHello,
                ..Self::idle()
            },
            engine.hello()?,
        ))
    }

    /// The peer's vector, once it was received in this round.
    pub fn their_vector(&self) -> Option<&VersionVector> {
        self.their_vector.as_ref()
    }

    /// What the peer is known to hold after this round: the vector it sent, advanced by the
    /// pushed batches it admitted whole — what bundles of "what it lacks" start from. `None`
    /// when the round ended before the peer sent its vector.
    pub fn peer_holds(&self) -> Option<&VersionVector> {
        self.peer_holds.as_ref()
    }

    /// Feeds the peer's response; returns the next request, or the end of the round.
    pub fn on_response(
        &mut self,
        engine: &mut Engine,
        response: Response,
        now: OffsetDateTime,
    ) -> Result<Step, EngineError> {
        sync::check_response(&response).map_err(|e| EngineError::Invalid(e.to_string()))?;
        if let Response::Refused { reason } = &response {
            self.state = State::Done;
            return Err(EngineError::Invalid(format!("the peer refused: {reason}")));
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitHello => self.on_hello_answer(engine, response, now),
            State::AwaitConfigAck => match response {
                Response::Received { .. } => self.restart(engine, false),
                other => self.unexpected(&other),
            },
            State::Fetching(want) => match response {
                Response::Events { events, more } => {
                    self.on_events(engine, &want, &events, more, now)
                }
                other => self.unexpected(&other),
            },
            State::Pushing => match response {
                Response::Received { admitted } => {
                    self.pushed_batch_answered(admitted);
                    self.next_push(engine)
                }
                other => self.unexpected(&other),
            },
            State::Done => Ok(Step::Done(std::mem::take(&mut self.report))),
        }
    }

    /// The peer answered our `Hello`: we are in sync, or it sends newer configuration, or its
    /// vector.
    fn on_hello_answer(
        &mut self,
        engine: &mut Engine,
        response: Response,
        now: OffsetDateTime,
    ) -> Result<Step, EngineError> {
        match response {
            Response::InSync => {
                // Equal digests: the peer holds exactly what we hold.
                self.peer_holds = Some(engine.version_vector()?);
                self.clear_read_only(engine, None)?;
                Ok(Step::Done(std::mem::take(&mut self.report)))
            }
            Response::Config { files } => {
                let files = signed_files(&files)?;
                let outcome = engine.apply_config(&files, now)?;
                self.report.config_versions += outcome.accepted.len();
                self.restart(engine, outcome.accepted.is_empty())
            }
            Response::Vector {
                config_version,
                vector,
            } => self.on_vector(engine, config_version, vector),
            other => self.unexpected(&other),
        }
    }

    /// The peer's vector: push it our newer configuration first if it lags, else plan what to
    /// fetch and what to push.
    fn on_vector(
        &mut self,
        engine: &mut Engine,
        config_version: u64,
        vector: VersionVector,
    ) -> Result<Step, EngineError> {
        let ours = engine.store().config().highest();
        if config_version < ours {
            self.state = State::AwaitConfigAck;
            return Ok(Step::Send(Request::PushConfig {
                files: engine.store().config_files_after(config_version)?,
            }));
        }
        let local = engine.version_vector()?;
        let plan = sync::plan(&local, &vector, |author, seq| {
            engine
                .store()
                .log_range(author, seq, 1)
                .ok()
                .and_then(|v| v.first().map(Event::id))
                .filter(|_| seq >= 1)
        });
        self.peer_holds = Some(vector.clone());
        self.their_vector = Some(vector);
        self.push = plan.push;
        if plan.want.is_empty() {
            self.clear_read_only(engine, None)?;
            self.next_push(engine)
        } else {
            self.state = State::Fetching(plan.want.clone());
            Ok(Step::Send(Request::Want { ranges: plan.want }))
        }
    }

    /// A fetched batch for the ranges in `want`: ask for the next batch while this one is
    /// admitted, or admit it and go on to fork evidence and pushing — unless the round's work
    /// is at its bound.
    fn on_events(
        &mut self,
        engine: &mut Engine,
        want: &[Range],
        events: &[Vec<u8>],
        more: bool,
        now: OffsetDateTime,
    ) -> Result<Step, EngineError> {
        let (decoded, refused) = decode_events(events);
        self.report.fetched += events.len();
        self.report.refused.extend(refused);
        self.batches += 1;
        self.fetched_bytes += events.iter().map(Vec::len).sum::<usize>();
        let rest = sync::remaining(want, &decoded);
        let wants_more = more && !decoded.is_empty() && !rest.is_empty();
        let cut = if wants_more {
            self.cut(want, &rest)
        } else {
            None
        };
        if wants_more && cut.is_none() {
            // Ask for the next batch before storing this one.
            self.state = State::Fetching(rest.clone());
            return Ok(Step::SendAndAdmit(Request::Want { ranges: rest }, decoded));
        }
        let report = engine.receive(&decoded, now)?;
        self.report.admitted += report.admitted.len();
        self.report
            .refused
            .extend(report.refused.iter().map(|(_, r)| r.to_string()));
        if let Some(cut) = cut {
            // Nothing is pushed after a cut: the next round compares vectors anew.
            self.report.cut_short = Some(cut);
            return Ok(Step::Done(std::mem::take(&mut self.report)));
        }
        self.fetched_all(engine)
    }

    /// Whatever the peer answers, a round's work is bounded: a batch that moves nothing
    /// forward (`rest` is still all of `want`), or a round past its most batches or bytes,
    /// ends it.
    fn cut(&self, want: &[Range], rest: &[Range]) -> Option<RoundCut> {
        if rest == want {
            Some(RoundCut::NoProgress)
        } else if self.batches >= SYNC_ROUND_BATCHES_MAX {
            Some(RoundCut::Batches)
        } else if self.fetched_bytes >= SYNC_ROUND_MAX_BYTES {
            Some(RoundCut::Bytes)
        } else {
            None
        }
    }

    /// Everything wanted was fetched and admitted: ask once for fork evidence, then push.
    fn fetched_all(&mut self, engine: &mut Engine) -> Result<Step, EngineError> {
        let theirs = self.their_vector.clone();
        self.clear_read_only(engine, theirs.as_ref())?;
        if !self.evidence_asked {
            self.evidence_asked = true;
            let evidence = self.fork_evidence(engine)?;
            if !evidence.is_empty() {
                self.state = State::Fetching(evidence.clone());
                return Ok(Step::Send(Request::Want { ranges: evidence }));
            }
        }
        self.next_push(engine)
    }

    /// After fetching: the authors the peer holds more of, whose next events still did not
    /// join our log. Where the peer holds another branch of the author's log (a fork), its
    /// events past our head follow an event we do not have and are refused as a broken chain,
    /// so the two events at one sequence would never meet on this side: ask for the peer's
    /// event at our head's sequence, which is the evidence (or, if the log only lags behind —
    /// events held back — a duplicate).
    fn fork_evidence(&self, engine: &Engine) -> Result<Vec<Range>, EngineError> {
        let Some(theirs) = &self.their_vector else {
            return Ok(Vec::new());
        };
        let ours = engine.version_vector()?;
        Ok(theirs
            .entries
            .iter()
            .filter_map(|(author, (their_seq, _))| {
                let our_seq = ours.seq(author);
                (our_seq >= 1 && *their_seq > our_seq).then_some(Range {
                    author: *author,
                    from: our_seq,
                    to: Some(our_seq),
                })
            })
            .collect())
    }

    fn restart(&mut self, engine: &Engine, nothing_new: bool) -> Result<Step, EngineError> {
        self.restarts += 1;
        if self.restarts > RESTARTS_MAX || nothing_new && self.restarts > 1 {
            return Ok(Step::Done(std::mem::take(&mut self.report)));
        }
        self.state = State::AwaitHello;
        Ok(Step::Send(engine.hello()?))
    }

    fn unexpected(&mut self, response: &Response) -> Result<Step, EngineError> {
        Err(EngineError::Invalid(format!(
            "the peer answered out of turn ({})",
            match response {
                Response::InSync => "in sync",
                Response::Vector { .. } => "vector",
                Response::Config { .. } => "config",
                Response::Events { .. } => "events",
                Response::Received { .. } => "received",
                Response::Refused { .. } => "refused",
            }
        )))
    }

    /// The peer answered a pushed batch: where it admitted every event, it now holds each
    /// author's log up to the batch's last event of that author (a batch continues the peer's
    /// log: it starts where the peer's vector ends).
    fn pushed_batch_answered(&mut self, admitted: u32) {
        let tops = std::mem::take(&mut self.in_flight);
        let whole = usize::try_from(admitted).is_ok_and(|n| n == self.in_flight_len);
        if let (true, Some(holds)) = (whole, self.peer_holds.as_mut()) {
            for (author, seq, id) in tops {
                let entry = holds.entries.entry(author).or_insert((0, id));
                if entry.0 < seq {
                    *entry = (seq, id);
                }
            }
        }
    }

    /// The next batch of our events the peer lacks, or the end of the round.
    fn next_push(&mut self, engine: &Engine) -> Result<Step, EngineError> {
        if self.batches >= SYNC_ROUND_BATCHES_MAX && !self.push.is_empty() {
            self.report.cut_short = Some(RoundCut::Batches);
            return Ok(Step::Done(std::mem::take(&mut self.report)));
        }
        self.in_flight.clear();
        let mut events = Vec::new();
        let mut bytes = 0usize;
        while let Some(range) = self.push.first_mut() {
            let room = SYNC_BATCH_EVENTS_MAX.saturating_sub(events.len());
            if room == 0 {
                break;
            }
            let chunk = engine
                .store()
                .log_range(&range.author, range.from, room.min(256))?;
            if chunk.is_empty() {
                self.push.remove(0);
                continue;
            }
            let mut full = false;
            for event in chunk {
                let wire = event.encode();
                if bytes + wire.len() > SYNC_BATCH_MAX_BYTES && !events.is_empty() {
                    full = true;
                    break;
                }
                bytes += wire.len();
                let header = event.header();
                range.from = header.seq + 1;
                match self.in_flight.iter_mut().find(|t| t.0 == header.author) {
                    Some(top) if top.1 < header.seq => {
                        *top = (header.author, header.seq, event.id())
                    }
                    Some(_) => {}
                    None => self.in_flight.push((header.author, header.seq, event.id())),
                }
                events.push(wire);
            }
            if full {
                break;
            }
        }
        if events.is_empty() {
            return Ok(Step::Done(std::mem::take(&mut self.report)));
        }
        self.report.pushed += events.len();
        self.in_flight_len = events.len();
        self.batches += 1;
        self.state = State::Pushing;
        Ok(Step::Send(Request::Push {
            events: crate::event::compact_batch(events),
        }))
    }

    /// A restored node learns its own latest sequence from a peer: once it holds at least what
    /// the peer holds of its own log, it may write again.
    fn clear_read_only(
        &self,
        engine: &mut Engine,
        theirs: Option<&VersionVector>,
    ) -> Result<(), EngineError> {
        if !engine.is_read_only()? {
            return Ok(());
        }
        let me = engine.node_key();
        let ours = engine.version_vector()?.seq(&me);
        let known = theirs.map_or(ours, |v| v.seq(&me));
        if ours >= known {
            engine.store_mut().set_meta(META_READ_ONLY, None)?;
        }
        Ok(())
    }
}

/// Runs whole rounds between two engines in memory (tests, the demo's field site, the
/// benchmark's baseline): `a` initiates, `b` responds; returns the bytes sent each way.
pub fn run_round(
    a: &mut Engine,
    b: &mut Engine,
    now: OffsetDateTime,
) -> Result<(RoundReport, usize, usize), EngineError> {
    let (mut round, mut request) = Round::start(a)?;
    let (mut sent, mut received) = (0, 0);
    loop {
        let bytes = sync::encode(&request).map_err(|e| EngineError::Invalid(e.to_string()))?;
        sent += bytes.len();
        let decoded: Request =
            sync::decode(&bytes).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let response = b.respond(decoded, now);
        let bytes = sync::encode(&response).map_err(|e| EngineError::Invalid(e.to_string()))?;
        received += bytes.len();
        let response: Response =
            sync::decode(&bytes).map_err(|e| EngineError::Invalid(e.to_string()))?;
        match round.on_response(a, response, now)? {
            Step::Send(next) => request = next,
            Step::SendAndAdmit(next, events) => {
                a.receive(&events, now)?;
                request = next;
            }
            Step::Done(report) => return Ok((report, sent, received)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sim::Sim;

    const SAMPLE: &str = include_str!("../../../config/mechanism.toml");

    /// Two engines, `b` holding a history of `cases` cases (five events each, two authors).
    fn pair(cases: usize) -> (tempfile::TempDir, Engine, Engine) {
        let now = OffsetDateTime::now_utc();
        let sim = Sim::new(
            SAMPLE,
            &["mas", "mdm", "unicef"],
            &[
                ("mas1", "mas"),
                ("mdm1", "mdm"),
                ("a", "unicef"),
                ("b", "unicef"),
            ],
            now,
        )
        .expect("the sample mechanism builds");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = sim.engine("a", dir.path(), false, now).expect("an engine");
        let mut b = sim.engine("b", dir.path(), false, now).expect("an engine");
        let history = sim
            .history(&[("mas1", "mdm1")], cases, 0, now)
            .expect("a history");
        b.receive(&history, now).expect("the events are received");
        (dir, a, b)
    }

    /// Drives a round from `a`, answering with `answer` (a peer's misbehaviour); returns the
    /// report and how many requests the peer got.
    fn drive(a: &mut Engine, mut answer: impl FnMut(Request) -> Response) -> (RoundReport, usize) {
        let now = OffsetDateTime::now_utc();
        let (mut round, mut request) = Round::start(a).expect("a round starts");
        for asked in 1..100_000 {
            match round
                .on_response(a, answer(request), now)
                .expect("the round goes on")
            {
                Step::Send(next) => request = next,
                Step::SendAndAdmit(next, events) => {
                    a.receive(&events, now).expect("the events are received");
                    request = next;
                }
                Step::Done(report) => return (report, asked),
            }
        }
        panic!("the round never ended");
    }

    #[test]
    fn a_responder_answering_more_forever_with_nothing_new_ends_the_round_at_once() {
        let (_dir, mut a, mut b) = pair(5);
        let now = OffsetDateTime::now_utc();
        // The peer claims a long log of its own and answers every Want with the same batch
        // of other events, saying there is more.
        let batch = match b.respond(
            Request::Want {
                ranges: b
                    .version_vector()
                    .expect("b answers")
                    .entries
                    .keys()
                    .map(|author| Range {
                        author: *author,
                        from: 1,
                        to: None,
                    })
                    .collect(),
            },
            now,
        ) {
            Response::Events { events, .. } => events,
            other => panic!("{other:?}"),
        };
        let liar = [7u8; 32];
        let (report, asked) = drive(&mut a, |request| match request {
            Request::Hello { config_version, .. } => Response::Vector {
                config_version,
                vector: VersionVector::from_heads([(
                    liar,
                    1_000_000,
                    crate::config::Hash32([1; 32]),
                )]),
            },
            Request::Want { .. } => Response::Events {
                events: batch.clone(),
                more: true,
            },
            _ => Response::Received { admitted: 0 },
        });
        assert_eq!(report.cut_short, Some(RoundCut::NoProgress), "{report:?}");
        assert!(asked <= 3, "the peer was asked {asked} times");
    }

    #[test]
    fn a_round_moves_at_most_its_bound_of_batches_and_the_next_goes_on() {
        let (_dir, mut a, mut b) = pair(150);
        let now = OffsetDateTime::now_utc();
        let target = b.version_vector().expect("the vector reads");
        // An honest peer with a slow hand: one event per batch, `more` while any is left.
        let mut answer = |request: Request| match request {
            Request::Want { ranges } => {
                let range = ranges[0].clone();
                let one = match b.respond(
                    Request::Want {
                        ranges: vec![Range {
                            to: Some(range.from),
                            ..range.clone()
                        }],
                    },
                    now,
                ) {
                    Response::Events { events, .. } => events,
                    other => panic!("{other:?}"),
                };
                Response::Events {
                    events: one,
                    more: true,
                }
            }
            other => b.respond(other, now),
        };
        let (report, asked) = drive(&mut a, &mut answer);
        assert_eq!(report.cut_short, Some(RoundCut::Batches), "{report:?}");
        assert!(asked <= SYNC_ROUND_BATCHES_MAX + 2, "asked {asked} times");
        assert!(report.cut_short.is_some_and(RoundCut::resume_soon));
        // The next round takes up where this one stopped, until the logs are level.
        let mut rounds = 1;
        while a.version_vector().expect("the vector reads") != target {
            drive(&mut a, &mut answer);
            rounds += 1;
            assert!(rounds < 10, "no progress across rounds");
        }
    }

    /// A peer that admits only part of a pushed batch (it refused or lost one event) must not
    /// be remembered as holding the whole batch: bundles of "what it lacks" start from that
    /// memory (issue 11, item 7).
    #[test]
    fn a_push_the_peer_admits_in_part_leaves_a_truthful_peer_vector() {
        let (_dir, mut b, mut a) = pair(20);
        let now = OffsetDateTime::now_utc();
        // `a` holds the history, `b` nothing: a round from `a` pushes it all. `b` drops the
        // last event of every pushed batch before admitting the rest.
        let (mut round, mut request) = Round::start(&a).expect("a round starts");
        let mut dropped = 0;
        let report = loop {
            let response = match request {
                Request::Push { events } => {
                    let mut events: Vec<Vec<u8>> = crate::event::expand_batch(&events)
                        .into_iter()
                        .map(Result::unwrap)
                        .collect();
                    events.pop();
                    dropped += 1;
                    b.respond(
                        Request::Push {
                            events: crate::event::compact_batch(events),
                        },
                        now,
                    )
                }
                other => b.respond(other, now),
            };
            match round
                .on_response(&mut a, response, now)
                .expect("the round goes on")
            {
                Step::Send(next) => request = next,
                Step::SendAndAdmit(..) => panic!("`b` has nothing to send"),
                Step::Done(report) => break report,
            }
        };
        assert!(report.pushed > 0 && dropped > 0, "{report:?}");
        let holds = round
            .peer_holds()
            .expect("the peer's vector is known")
            .clone();
        let real = b.version_vector().expect("the vector reads");
        let ours = a.version_vector().expect("the vector reads");
        assert_ne!(real, ours, "`b` should lack what it dropped");
        for (author, (seq, _)) in &ours.entries {
            assert!(
                holds.seq(author) <= real.seq(author),
                "remembered {} of an author's log, `b` holds {}",
                holds.seq(author),
                real.seq(author)
            );
            assert!(*seq >= holds.seq(author));
        }
        // A bundle made for what `b` is remembered to hold brings it level.
        let identity = b.node_identity().expect("b has its identity");
        let mut file = Vec::new();
        crate::bundle::export(
            &a,
            Some(&holds),
            &[identity.to_public()],
            &mut file,
            now,
            &mut |_, _| {},
        )
        .expect("a bundle is written for b");
        crate::bundle::import(&mut b, &identity, file.as_slice(), now, &mut |_, _| {})
            .expect("the bundle imports");
        assert_eq!(b.version_vector().expect("the vector reads"), ours);
    }

    /// The same round with a peer that admits every push remembers it as holding everything.
    #[test]
    fn a_push_admitted_whole_is_remembered_whole() {
        let (_dir, mut b, mut a) = pair(20);
        let now = OffsetDateTime::now_utc();
        let (mut round, mut request) = Round::start(&a).expect("a round starts");
        loop {
            match round
                .on_response(&mut a, b.respond(request, now), now)
                .expect("b answers")
            {
                Step::Send(next) => request = next,
                Step::SendAndAdmit(..) => panic!("`b` has nothing to send"),
                Step::Done(_) => break,
            }
        }
        assert_eq!(
            b.version_vector().expect("the vector reads"),
            a.version_vector().expect("the vector reads")
        );
        assert_eq!(
            round.peer_holds(),
            Some(&a.version_vector().expect("the peer's vector is known"))
        );
    }
}
