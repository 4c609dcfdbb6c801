//! The hybrid logical clock that orders a node's events.

use serde::{Deserialize, Serialize};

/// within one millisecond (and after a clock that went back).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    pub ms: u64,
    pub counter: u32,
}

impl Hlc {
    /// The wall-clock part as an instant.
    pub fn to_datetime(&self) -> time::OffsetDateTime {
        let nanos = i128::from(self.ms) * 1_000_000;
        time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }
}

/// A node's hybrid logical clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn new(last: Hlc) -> Self {
        Self { last }
    }

    /// A timestamp after every one this clock has issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.ms {
            Hlc {
                ms: now_ms,
                counter: 0,
            }
        } else {
            Hlc {
                ms: self.last.ms,
                counter: self.last.counter.saturating_add(1),
            }
        };
        self.last
    }

    /// Takes a received timestamp into account, so what this node writes next comes after it.
    pub fn observe(&mut self, seen: Hlc) {
        if seen > self.last {
            self.last = seen;
        }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }
}
