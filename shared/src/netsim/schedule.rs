//! The run's schedule: the workload with partitions, the heal until the honest nodes agree,
//! the last sweeps on a perfect network, and the ticks that drive them.

use rand::Rng;

use super::{
    CONVERGE_MAX_MS, Faults, RETRY_HELD_EVERY_MS, ROUND_TIMEOUT_MS, TICK_MS, World, attack, check,
    workload,
};

impl World {
    /// The whole run: workload with partitions, then the heal until the honest nodes agree,
    /// then a last sweep on a perfect network.
    pub(super) fn simulate(&mut self) {
        let workload_ms = self.options.workload_ms.unwrap_or(0);
        let mut partitioned = false;
        while self.now_ms < workload_ms {
            self.tick(true);
            let now_partitioned = self.net.partitioned(self.now_ms);
            if now_partitioned != partitioned {
                partitioned = now_partitioned;
                self.log(format!(
                    "partition {}",
                    if partitioned { "starts" } else { "heals" }
                ));
            }
        }
        self.final_ops();
        let heal_at = self.now_ms;
        let mut next_check = self.now_ms;
        while self.now_ms < heal_at + CONVERGE_MAX_MS {
            self.tick(false);
            if self.now_ms >= next_check {
                next_check = self.now_ms + 250;
                if check::honest_logs_agree(self) {
                    self.stats.converged_after_ms = Some(self.now_ms - heal_at);
                    break;
                }
            }
        }
        if self.stats.converged_after_ms.is_none() {
            self.violate(
                "convergence",
                format!("the honest nodes did not agree {CONVERGE_MAX_MS} ms after the heal"),
            );
        }
        self.log("sweep on a perfect network".into());
        self.net.faults = Faults::none();
        // Rounds left open by the faulty network time out first, as a transport's would.
        self.now_ms += ROUND_TIMEOUT_MS;
        for i in 0..self.nodes.len() {
            self.expire_rounds(i);
        }
        // First with the attackers (what only they hold comes now, if they give it), then
        // whatever was held and can now be admitted, then twice between honest nodes.
        self.sweep(false);
        for i in 0..self.nodes.len() {
            let now = self.now_of(i);
            if let Err(e) = self.nodes[i].engine.retry_held(now) {
                self.note_error(i, "retry_held", &e);
            }
        }
        for _ in 0..2 {
            self.sweep(true);
        }
    }

    /// Every honest node opens a round with every other honest node (with `honest`) or with
    /// every attacker, one at a time, each run to its end on the perfect network. Rounds
    /// between honest nodes must complete; attackers may answer badly, or not at all.
    fn sweep(&mut self, honest_peers: bool) {
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].honest())
            .collect();
        for &a in &honest {
            for b in 0..self.nodes.len() {
                if a == b || self.nodes[b].honest() != honest_peers {
                    continue;
                }
                let (done, failed) = (self.stats.rounds_done, self.stats.rounds_failed);
                self.start_round(a, b);
                self.drain();
                let complete =
                    self.stats.rounds_done == done + 1 && self.stats.rounds_failed == failed;
                if honest_peers && !complete {
                    let (x, y) = (self.nodes[a].name.clone(), self.nodes[b].name.clone());
                    self.violate(
                        "rounds_complete",
                        format!("a round {x} -> {y} on a perfect network did not complete"),
                    );
                }
            }
        }
    }

    /// Delivers messages until none is in flight.
    fn drain(&mut self) {
        let mut guard = 0u32;
        while self.net.in_flight() > 0 && guard < 100_000 {
            guard += 1;
            self.now_ms += 1;
            while let Some(message) = self.net.next_due(self.now_ms) {
                self.deliver(message);
            }
        }
        for i in 0..self.nodes.len() {
            self.push_fresh(i);
        }
    }

    /// One tick: deliveries, the workload and attacks (while `active`), rounds, timeouts.
    fn tick(&mut self, active: bool) {
        self.now_ms += TICK_MS;
        while let Some(message) = self.net.next_due(self.now_ms) {
            self.deliver(message);
        }
        for i in 0..self.nodes.len() {
            if active {
                if self.nodes[i].honest() {
                    // About one operation per node every 200 ms.
                    if self.rng.gen_range(0..20) == 0 {
                        workload::step(self, i);
                    }
                } else if self.rng.gen_range(0..25) == 0 {
                    attack::step(self, i);
                }
            } else if !self.nodes[i].honest() && self.rng.gen_range(0..50) == 0 {
                attack::after_workload(self, i);
            }
            self.push_fresh(i);
            // Periodic rounds: about every 400 ms with a random peer.
            if self.rng.gen_range(0..40) == 0 {
                let peer = self.random_peer(i);
                self.start_round(i, peer);
            }
            if self.nodes[i].engine.take_received() {
                // Store and forward: what came from one peer may be new to the others.
                for _ in 0..2 {
                    let peer = self.random_peer(i);
                    self.start_round(i, peer);
                }
            }
            self.expire_rounds(i);
            let held = || {
                self.nodes[i]
                    .engine
                    .store()
                    .log_counts()
                    .is_ok_and(|c| c.held > 0)
            };
            if self.now_ms % RETRY_HELD_EVERY_MS < TICK_MS && held() {
                let now = self.now_of(i);
                if let Err(e) = self.nodes[i].engine.retry_held(now) {
                    self.note_error(i, "retry_held", &e);
                }
            }
        }
    }

    /// After the workload: each honest node shares its organisation's keys and changes its
    /// map profile — which also proves its clock was not pushed ahead (an event stamped
    /// beyond the skew bound would be held back, not written).
    fn final_ops(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].honest() {
                continue;
            }
            workload::share_keys(self, i);
            if let Err(detail) = workload::final_map_change(self, i) {
                let name = self.nodes[i].name.clone();
                self.violate("clock_not_pushed", format!("{name}: {detail}"));
            }
            self.push_fresh(i);
        }
    }

    pub(super) fn finish(&mut self) {
        if self.net.in_flight() > 0 {
            let n = self.net.in_flight();
            self.violate("quiescence", format!("{n} messages still in flight"));
        }
        check::all(self);
    }
}
