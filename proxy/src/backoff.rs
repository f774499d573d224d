//! Exponential backoff per URL: one that keeps failing (upstream down, or serving files that do
//! not verify) is answered 502 at once for a while instead of being hammered by every client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

pub struct Backoff {
    base: Duration,
    max: Duration,
    failing: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, failing: Mutex::new(HashMap::new()) }
    }

    /// Err while `key` is waiting out its backoff.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        let failing = self.failing.lock().unwrap();
        match failing.get(key) {
            Some((failures, until)) if Instant::now() < *until => Err(Error::Upstream(format!(
                "{key} failed {failures} time(s) in a row; next attempt in {} s",
                until.saturating_duration_since(Instant::now()).as_secs() + 1
            ))),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, key: &str) {
        if self.base.is_zero() {
            return;
        }
        let mut failing = self.failing.lock().unwrap();
        let (failures, until) = failing.entry(key.to_string()).or_insert((0, Instant::now()));
        *failures += 1;
        let wait = self.base.saturating_mul(1 << (*failures - 1).min(20)).min(self.max);
        *until = Instant::now() + wait;
    }

    pub fn succeeded(&self, key: &str) {
        self.failing.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_until_a_success() {
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(600));
        assert!(backoff.check("k").is_ok());
        backoff.failed("k");
        let err = backoff.check("k").unwrap_err().to_string();
        assert!(err.contains("failed 1 time(s)"), "{err}");
        assert!(backoff.check("other").is_ok());
        backoff.succeeded("k");
        assert!(backoff.check("k").is_ok());
    }

    #[test]
    fn zero_base_turns_it_off() {
        let backoff = Backoff::new(Duration::ZERO, Duration::from_secs(600));
        backoff.failed("k");
        assert!(backoff.check("k").is_ok());
    }
}
