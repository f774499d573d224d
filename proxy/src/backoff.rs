//! Exponential backoff per URL: one that keeps failing (upstream down, or serving files that do
//! not verify) is answered 502 at once for a while instead of being hammered by every client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::UpstreamConfig;
use crate::error::Error;

pub struct Backoff {
    base: Duration,
    max: Duration,
    failing: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoff {
    pub fn new(config: &UpstreamConfig) -> Backoff {
        Self::with(Duration::from_secs(config.backoff_secs), Duration::from_secs(config.backoff_max_secs))
    }

    fn with(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, failing: Mutex::new(HashMap::new()) }
    }

    /// Err while `key` is waiting out its backoff.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        self.check_at(key, Instant::now())
    }

    pub fn failed(&self, key: &str) {
        self.failed_at(key, Instant::now())
    }

    pub fn succeeded(&self, key: &str) {
        self.failing.lock().unwrap().remove(key);
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Error> {
        let failing = self.failing.lock().unwrap();
        match failing.get(key) {
            Some((failures, until)) if now < *until => {
                let left = until.saturating_duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Err(Error::Upstream(format!("{key} failed {failures} time(s) in a row; next attempt in {secs} s")))
            }
            _ => Ok(()),
        }
    }

    /// The wait doubles with each failure in a row, from `base` up to `max`.
    fn failed_at(&self, key: &str, now: Instant) {
        if self.base.is_zero() {
            return;
        }
        let mut failing = self.failing.lock().unwrap();
        let (failures, until) = failing.entry(key.to_string()).or_insert((0, now));
        *failures += 1;
        let wait = self.base.saturating_mul(1 << (*failures - 1).min(20)).min(self.max);
        *until = now + wait;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_until_a_success() {
        let backoff = Backoff::with(Duration::from_secs(60), Duration::from_secs(600));
        assert!(backoff.check("k").is_ok());
        backoff.failed("k");
        let err = backoff.check("k").unwrap_err().to_string();
        assert!(err.contains("failed 1 time(s)"), "{err}");
        assert!(backoff.check("other").is_ok());
        backoff.succeeded("k");
        assert!(backoff.check("k").is_ok());
    }

    /// Each failure in a row waits twice as long as the one before, never longer than the
    /// maximum: 10, 20, 40, then 60 s again and again. A constant wait, or one past the
    /// maximum, fails here.
    #[test]
    fn the_wait_doubles_up_to_its_maximum() {
        let backoff = Backoff::with(Duration::from_secs(10), Duration::from_secs(60));
        let mut now = Instant::now();
        for (failure, wait) in [10, 20, 40, 60, 60, 60].into_iter().enumerate() {
            backoff.failed_at("k", now);
            let err = backoff.check_at("k", now).unwrap_err().to_string();
            let said = format!("failed {} time(s) in a row; next attempt in {} s", failure + 1, wait);
            assert!(err.contains(&said), "after failure {}: {err}", failure + 1);
            let almost = now + Duration::from_secs(wait) - Duration::from_millis(1);
            assert!(backoff.check_at("k", almost).is_err(), "after failure {}: over before {wait} s", failure + 1);
            now += Duration::from_secs(wait);
            assert!(backoff.check_at("k", now).is_ok(), "after failure {}: still waiting at {wait} s", failure + 1);
        }
        backoff.succeeded("k");
        backoff.failed_at("k", now);
        assert!(backoff.check_at("k", now + Duration::from_secs(10)).is_ok(), "a success starts over at the base");
    }

    #[test]
    fn zero_base_turns_it_off() {
        let backoff = Backoff::with(Duration::ZERO, Duration::from_secs(600));
        backoff.failed("k");
        assert!(backoff.check("k").is_ok());
    }
}
