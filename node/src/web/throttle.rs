//! How failed logins are held up: counted per account and per client address, each failure
//! past the free ones doubling the wait before the next attempt is even checked; and how many
//! password verifications run, or wait to run, at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed logins to one account before each further failure makes it wait.
pub const LOGIN_FREE_FAILURES_PER_ACCOUNT: u32 = 5;
/// Failed logins from one client address before each further failure makes it wait. Higher
/// than per account: the UI listens on loopback, so every person at this computer shares it.
pub const LOGIN_FREE_FAILURES_PER_ADDRESS: u32 = 50;
/// The wait after the first failure beyond the free ones; it doubles with each further one.
pub const LOGIN_DELAY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait imposed on an account.
pub const LOGIN_DELAY_MAX_PER_ACCOUNT: Duration = Duration::from_secs(15 * 60);
/// Longest wait imposed on a client address (short: it locks out everyone at this computer).
pub const LOGIN_DELAY_MAX_PER_ADDRESS: Duration = Duration::from_secs(60);
/// Failures older than this are forgotten (longer than either longest wait).
pub const LOGIN_FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);
/// Most accounts and addresses whose failures are counted at once.
pub const LOGIN_THROTTLE_ENTRIES_MAX: usize = 10_000;
/// Password verifications (Argon2id, tens of milliseconds of one core each) run at once, on
/// blocking threads: one core stays free for the engine and other pages.
pub const LOGIN_VERIFICATIONS_CONCURRENT_MAX: usize = 1;
/// Logins waiting for a verification slot before more are told to come back later.
pub const LOGIN_WAITING_MAX: usize = 32;

/// What failed logins are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ThrottleKey {
    /// The account name typed (cut to the longest name an account may have).
    Account(String),
    /// The client's address.
    Address(IpAddr),
}

impl ThrottleKey {
    pub(super) fn account(name: &str) -> Self {
        let mut end = name.len().min(passerelle_core::store::USER_NAME_MAX_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        ThrottleKey::Account(name[..end].to_string())
    }

    /// (failures allowed before waits begin, longest wait)
    fn policy(&self) -> (u32, Duration) {
        match self {
            ThrottleKey::Account(_) => {
                (LOGIN_FREE_FAILURES_PER_ACCOUNT, LOGIN_DELAY_MAX_PER_ACCOUNT)
            }
            ThrottleKey::Address(_) => {
                (LOGIN_FREE_FAILURES_PER_ADDRESS, LOGIN_DELAY_MAX_PER_ADDRESS)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// No login on this key is checked before then.
    blocked_until: Option<Instant>,
}

/// Failed logins per account and per client address, bounded: past the free failures each
/// failure doubles the wait before the next attempt is even checked.
#[derive(Debug, Default)]
struct LoginThrottle {
    entries: HashMap<ThrottleKey, Failures>,
}

impl LoginThrottle {
    /// How long a login on these keys must still wait, if it must.
    fn wait(&self, keys: &[ThrottleKey], now: Instant) -> Option<Duration> {
        keys.iter()
            .filter_map(|k| self.entries.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    fn failed(&mut self, keys: &[ThrottleKey], now: Instant) {
        for key in keys {
            if !self.entries.contains_key(key) && self.entries.len() >= LOGIN_THROTTLE_ENTRIES_MAX {
                self.make_room(now);
            }
            let (free, max) = key.policy();
            let entry = self.entries.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                blocked_until: None,
            });
            if now.saturating_duration_since(entry.last) > LOGIN_FAILURES_FORGOTTEN_AFTER {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            if entry.count > free {
                let doublings = (entry.count - free - 1).min(20);
                let delay = LOGIN_DELAY_FIRST.saturating_mul(1u32 << doublings).min(max);
                entry.blocked_until = Some(now + delay);
            }
        }
    }

    /// A right password: the account's failures are forgotten (the address's are not, or one
    /// account of the attacker's own would reset the count of its guesses at others).
    fn succeeded(&mut self, account: &ThrottleKey) {
        self.entries.remove(account);
    }

    /// Forgets what has expired, or else the entry whose last failure is oldest.
    fn make_room(&mut self, now: Instant) {
        self.entries
            .retain(|_, f| now.saturating_duration_since(f.last) <= LOGIN_FAILURES_FORGOTTEN_AFTER);
        if self.entries.len() >= LOGIN_THROTTLE_ENTRIES_MAX
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

/// What every login shares: the throttle, the bound on verifications running at once, and the
/// number of logins waiting for one.
#[derive(Debug)]
pub(super) struct LoginGate {
    throttle: Mutex<LoginThrottle>,
    pub(super) verifiers: Arc<tokio::sync::Semaphore>,
    pub(super) waiting: AtomicUsize,
}

impl Default for LoginGate {
    fn default() -> Self {
        Self {
            throttle: Mutex::default(),
            verifiers: Arc::new(tokio::sync::Semaphore::new(
                LOGIN_VERIFICATIONS_CONCURRENT_MAX,
            )),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl LoginGate {
    pub(super) fn wait(&self, keys: &[ThrottleKey]) -> Option<Duration> {
        self.throttle
            .lock()
            .ok()
            .and_then(|t| t.wait(keys, Instant::now()))
    }

    pub(super) fn failed(&self, keys: &[ThrottleKey]) {
        if let Ok(mut t) = self.throttle.lock() {
            t.failed(keys, Instant::now());
        }
    }

    pub(super) fn succeeded(&self, account: &ThrottleKey) {
        if let Ok(mut t) = self.throttle.lock() {
            t.succeeded(account);
        }
    }
}

/// Counts a login among those waiting for a verification slot while it lives.
pub(super) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// `None` when too many already wait.
    pub(super) fn enter(counter: &'a AtomicUsize) -> Option<Self> {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        let guard = Waiting(counter);
        (before < LOGIN_WAITING_MAX).then_some(guard)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> ThrottleKey {
        ThrottleKey::account(name)
    }

    fn address(last: u8) -> ThrottleKey {
        ThrottleKey::Address(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn failures_past_the_free_ones_make_an_account_wait_longer_each_time() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        let keys = [account("aicha"), address(1)];
        for _ in 0..LOGIN_FREE_FAILURES_PER_ACCOUNT {
            assert_eq!(t.wait(&keys, now), None);
            t.failed(&keys, now);
        }
        assert_eq!(t.wait(&keys, now), None, "the free failures impose no wait");
        let mut expected = LOGIN_DELAY_FIRST;
        for _ in 0..4 {
            t.failed(&keys, now);
            assert_eq!(t.wait(&keys, now), Some(expected));
            expected *= 2;
        }
        // Another account from another address is not held up.
        assert_eq!(t.wait(&[account("nurse"), address(2)], now), None);
        // The wait passes; a right password then forgets the account's failures.
        let later = now + Duration::from_secs(60);
        assert_eq!(t.wait(&keys, later), None);
        t.succeeded(&keys[0]);
        t.failed(&keys, later);
        assert_eq!(t.wait(&[account("aicha")], later), None);
    }

    #[test]
    fn waits_are_capped_and_old_failures_forgotten() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        let keys = [account("aicha")];
        for _ in 0..200 {
            t.failed(&keys, now);
        }
        assert_eq!(t.wait(&keys, now), Some(LOGIN_DELAY_MAX_PER_ACCOUNT));
        let much_later = now + LOGIN_FAILURES_FORGOTTEN_AFTER + Duration::from_secs(1);
        t.failed(&keys, much_later);
        assert_eq!(t.wait(&keys, much_later), None, "counted afresh");
    }

    #[test]
    fn one_address_guessing_across_accounts_is_held_up_too() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..LOGIN_FREE_FAILURES_PER_ADDRESS {
            let keys = [account(&format!("user{i}")), address(1)];
            assert_eq!(t.wait(&keys, now), None);
            t.failed(&keys, now);
        }
        t.failed(&[account("one-more"), address(1)], now);
        assert_eq!(
            t.wait(&[account("fresh"), address(1)], now),
            Some(LOGIN_DELAY_FIRST)
        );
        for _ in 0..50 {
            t.failed(&[account("x"), address(1)], now);
        }
        assert_eq!(
            t.wait(&[address(1)], now),
            Some(LOGIN_DELAY_MAX_PER_ADDRESS),
            "an address waits at most a minute: everyone at this computer shares it"
        );
    }

    #[test]
    fn the_throttle_table_stays_bounded() {
        let mut t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..LOGIN_THROTTLE_ENTRIES_MAX + 100 {
            t.failed(
                &[account(&format!("u{i}"))],
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(t.entries.len(), LOGIN_THROTTLE_ENTRIES_MAX);
        // Names longer than any account are counted under their first bytes.
        assert_eq!(account(&"é".repeat(100)), account(&"é".repeat(40)));
    }

    #[test]
    fn too_many_waiting_logins_are_turned_away() {
        let counter = AtomicUsize::new(0);
        let held: Vec<_> = (0..LOGIN_WAITING_MAX)
            .map(|_| Waiting::enter(&counter))
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert!(Waiting::enter(&counter).is_none());
        drop(held);
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        assert!(Waiting::enter(&counter).is_some());
    }
}
