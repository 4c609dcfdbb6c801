//! The simulated network: messages carried as encoded bytes between nodes, each with its own
//! delay (so they reorder), some dropped, some delivered twice, and partitions that cut the
//! nodes into groups for a while. Everything it decides comes from the seeded generator, so a
//! seed replays the same schedule.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;

/// What a message carries. Requests and responses name the round they belong to and the step
/// within it, as a transport's request ids would: a late or duplicated response is recognised
/// and dropped instead of being fed to a round that has moved on.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A sync request (encoded `sync::Request`) from the initiator of round `round`.
    Request {
        round: u64,
        step: u32,
        bytes: Vec<u8>,
    },
    /// The responder's answer (encoded `sync::Response`) to that request.
    Response {
        round: u64,
        step: u32,
        bytes: Vec<u8>,
    },
    /// A push of fresh events (an encoded `sync::Request::Push`); its answer is not awaited.
    Push { bytes: Vec<u8> },
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Request { bytes, .. }
            | Payload::Response { bytes, .. }
            | Payload::Push { bytes } => bytes.len(),
        }
    }
}

/// A message in flight.
#[derive(Debug, Clone)]
pub struct Message {
    pub from: usize,
    pub to: usize,
    pub payload: Payload,
}

/// How unreliable the network is, drawn per seed.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Chance that a message is lost, in thousandths.
    pub drop_per_mille: u32,
    /// Chance that a message is delivered twice, in thousandths.
    pub duplicate_per_mille: u32,
    /// Chance that a message is held back much longer than usual (reordering past later
    /// messages), in thousandths.
    pub straggle_per_mille: u32,
    /// Shortest and longest ordinary delay, in milliseconds.
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    /// Longest delay of a straggler, in milliseconds.
    pub straggle_max_ms: u64,
}

impl Faults {
    pub fn draw(rng: &mut StdRng) -> Self {
        let delay_min_ms = rng.gen_range(1..20);
        Self {
            drop_per_mille: rng.gen_range(0..150),
            duplicate_per_mille: rng.gen_range(0..80),
            straggle_per_mille: rng.gen_range(0..80),
            delay_min_ms,
            delay_max_ms: delay_min_ms + rng.gen_range(5..300),
            straggle_max_ms: rng.gen_range(500..4000),
        }
    }

    /// A perfect network (the last sweep before the checks).
    pub fn none() -> Self {
        Self {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            straggle_per_mille: 0,
            delay_min_ms: 1,
            delay_max_ms: 1,
            straggle_max_ms: 1,
        }
    }
}

/// A partition: from `start_ms` to `end_ms`, nodes talk only within their group.
#[derive(Debug, Clone)]
pub struct Partition {
    pub start_ms: u64,
    pub end_ms: u64,
    /// The group of each node.
    pub group: Vec<u8>,
}

/// Counters for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub cut_by_partition: u64,
    pub duplicated: u64,
    pub bytes: u64,
}

/// The network: a queue ordered by delivery time (ties by sending order).
#[derive(Debug)]
pub struct Network {
    queue: BTreeMap<(u64, u64), Message>,
    order: u64,
    pub faults: Faults,
    pub partitions: Vec<Partition>,
    pub stats: NetStats,
}

impl Network {
    pub fn new(faults: Faults, partitions: Vec<Partition>) -> Self {
        Self {
            queue: BTreeMap::new(),
            order: 0,
            faults,
            partitions,
            stats: NetStats::default(),
        }
    }

    /// Whether `a` and `b` can reach each other at `now_ms`.
    pub fn connected(&self, a: usize, b: usize, now_ms: u64) -> bool {
        self.partitions
            .iter()
            .filter(|p| p.start_ms <= now_ms && now_ms < p.end_ms)
            .all(|p| p.group.get(a) == p.group.get(b))
    }

    /// Whether any partition is in force at `now_ms`.
    pub fn partitioned(&self, now_ms: u64) -> bool {
        self.partitions
            .iter()
            .any(|p| p.start_ms <= now_ms && now_ms < p.end_ms)
    }

    /// Sends a message at `now_ms`: lost, delayed, maybe duplicated, as the faults say. Returns
    /// whether it left (a message to a node on the other side of a partition never does).
    pub fn send(&mut self, rng: &mut StdRng, now_ms: u64, message: Message) -> bool {
        self.stats.sent += 1;
        self.stats.bytes += message.payload.len() as u64;
        if !self.connected(message.from, message.to, now_ms) {
            self.stats.cut_by_partition += 1;
            return false;
        }
        if rng.gen_range(0..1000) < self.faults.drop_per_mille {
            self.stats.dropped += 1;
            return false;
        }
        let copies = if rng.gen_range(0..1000) < self.faults.duplicate_per_mille {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.delay(rng);
            self.order += 1;
            self.queue
                .insert((now_ms + delay, self.order), message.clone());
        }
        true
    }

    fn delay(&self, rng: &mut StdRng) -> u64 {
        let f = &self.faults;
        if rng.gen_range(0..1000) < f.straggle_per_mille {
            rng.gen_range(f.delay_max_ms..=f.straggle_max_ms.max(f.delay_max_ms))
        } else {
            rng.gen_range(f.delay_min_ms..=f.delay_max_ms)
        }
    }

    /// The next message due at or before `now_ms`. A message whose ends are partitioned apart
    /// when it arrives is lost (the link went down while it travelled).
    pub fn next_due(&mut self, now_ms: u64) -> Option<Message> {
        loop {
            let key = *self.queue.keys().next()?;
            if key.0 > now_ms {
                return None;
            }
            let message = self.queue.remove(&key)?;
            if !self.connected(message.from, message.to, now_ms) {
                self.stats.cut_by_partition += 1;
                continue;
            }
            self.stats.delivered += 1;
            return Some(message);
        }
    }

    /// Messages still travelling.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
