//! Failed logins and joins, counted per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most addresses tracked at once; beyond that the stalest are forgotten.
const MAX_TRACKED: usize = 10_000;

/// Blocks an address for `lockout` once it failed `max_failures` times within `window`.
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration, lockout: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            window,
            lockout,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `address` is blocked.
    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.lock();
        match entries.get(&address).and_then(|entry| entry.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure; returns `Err(retry_after)` when it blocks the address.
    pub fn record_failure(&self, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&address) {
            entries.retain(|_, entry| {
                entry.blocked_until.is_some_and(|until| until > now)
                    || now.duration_since(entry.window_start) < self.window
            });
        }
        let entry = entries.entry(address).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.duration_since(entry.window_start) >= self.window {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= self.max_failures {
            entry.blocked_until = Some(now + self.lockout);
            entry.failures = 0;
            entry.window_start = now;
            return Err(self.lockout);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_only_that_address() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60), Duration::from_secs(30));
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let user: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.record_failure(attacker).is_ok());
        assert!(limiter.record_failure(attacker).is_ok());
        assert!(limiter.check(attacker).is_ok());
        let retry = limiter.record_failure(attacker).unwrap_err();
        assert_eq!(retry, Duration::from_secs(30));
        assert!(limiter.check(attacker).is_err());
        assert!(limiter.check(user).is_ok());
    }

    #[test]
    fn the_block_ends() {
        let limiter = FailureLimiter::new(1, Duration::from_secs(60), Duration::from_millis(20));
        let address: IpAddr = "::1".parse().unwrap();
        assert!(limiter.record_failure(address).is_err());
        assert!(limiter.check(address).is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(limiter.check(address).is_ok());
    }
}
