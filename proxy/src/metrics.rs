//! Counters for `/_vzpkg/metrics` (Prometheus text format) and `/_vzpkg/status` (JSON), and
//! per wrapper run (the `run/TAG` of its User-Agent): bytes by source and the upstream hosts
//! refused, which the wrapper asks for over the admin socket when its run ends.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct Metrics {
    pub requests: Counter,
    pub hits: Counter,
    pub misses: Counter,
    pub joined: Counter,
    pub revalidated: Counter,
    pub passed_through: Counter,
    pub refused: Counter,
    pub upstream_requests: Counter,
    pub upstream_failures: Counter,
    pub verify_failures: Counter,
    pub backoff_refusals: Counter,
    pub bytes_from_cache: Counter,
    pub bytes_from_upstream: Counter,
    /// Downloads passed through uncached because the cache's filesystem was full.
    pub store_full: Counter,
    /// Connections refused at `connections.max` or `connections.max_per_client`.
    pub connections_refused: Counter,
    /// Connections closed because a request's headers did not arrive in time.
    pub header_timeouts: Counter,
    /// Connections closed because no byte moved on them for `connections.idle_timeout_secs`.
    pub idle_timeouts: Counter,
    /// Requests waiting for upstream's answer to a fetch under way.
    pub waiting: Gauge,
    pub connections_open: Gauge,
    pub runs: Runs,
    registry: Registry,
}

/// What one wrapper run got from the proxy.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunStats {
    pub requests: u64,
    /// Body bytes served from the store (hits and revalidated copies).
    pub bytes_from_cache: u64,
    /// Body bytes that came from upstream for this run (downloads it started or joined, and
    /// files passed through).
    pub bytes_from_upstream: u64,
    /// Body bytes of error pages and the proxy's own endpoints.
    pub bytes_other: u64,
    /// Upstream hosts (`host` or `host:port`) refused because they are not allowed.
    pub refused_hosts: BTreeSet<String>,
}

/// Where a response's bytes came from, for a run's accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Cache,
    Upstream,
    Other,
}

/// Per-run statistics, the most recent [`Runs::MAX`] runs.
#[derive(Default)]
pub struct Runs {
    inner: Mutex<(HashMap<String, RunStats>, VecDeque<String>)>,
}

impl Runs {
    pub const MAX: usize = 4096;

    fn with(&self, tag: &str, f: impl FnOnce(&mut RunStats)) {
        let mut guard = self.inner.lock().unwrap();
        let (runs, order) = &mut *guard;
        if !runs.contains_key(tag) {
            if order.len() >= Self::MAX {
                if let Some(oldest) = order.pop_front() {
                    runs.remove(&oldest);
                }
            }
            order.push_back(tag.to_string());
        }
        f(runs.entry(tag.to_string()).or_default());
    }

    pub fn request(&self, tag: &str) {
        self.with(tag, |r| r.requests += 1);
    }

    pub fn bytes(&self, tag: &str, source: Source, n: u64) {
        self.with(tag, |r| match source {
            Source::Cache => r.bytes_from_cache += n,
            Source::Upstream => r.bytes_from_upstream += n,
            Source::Other => r.bytes_other += n,
        });
    }

    pub fn refused(&self, tag: &str, host: &str) {
        self.with(tag, |r| {
            if r.refused_hosts.len() < 100 {
                r.refused_hosts.insert(host.to_string());
            }
        });
    }

    pub fn get(&self, tag: &str) -> Option<RunStats> {
        self.inner.lock().unwrap().0.get(tag).cloned()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics::default();
        let mut registry = Registry::with_prefix("vzpkg");
        for (name, help, counter) in [
            ("requests", "Client requests received", &m.requests),
            ("cache_hits", "Requests answered from the store", &m.hits),
            ("cache_misses", "Requests that started an upstream download", &m.misses),
            ("joined_downloads", "Requests that joined a download already under way", &m.joined),
            ("revalidations", "Index files confirmed unchanged by upstream", &m.revalidated),
            ("passed_through", "Requests for uncached files passed to upstream", &m.passed_through),
            ("refused", "Requests refused (bad path, host or client not allowed)", &m.refused),
            ("upstream_requests", "Requests sent upstream", &m.upstream_requests),
            ("upstream_failures", "Upstream requests or transfers that failed", &m.upstream_failures),
            ("bytes_from_cache", "Body bytes sent to clients from the store", &m.bytes_from_cache),
            ("bytes_from_upstream", "Body bytes received from upstream", &m.bytes_from_upstream),
            ("store_full", "Downloads passed through uncached because the cache filesystem was full", &m.store_full),
            ("connections_refused", "Connections refused at the overall or per-client cap", &m.connections_refused),
            (
                "header_timeouts",
                "Connections closed because request headers did not arrive in time",
                &m.header_timeouts,
            ),
            ("idle_timeouts", "Connections closed because no byte moved on them", &m.idle_timeouts),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register("waiting_on_upstream", "Requests waiting for upstream to answer", m.waiting.clone());
        registry.register("connections_open", "Client connections open", m.connections_open.clone());
        m.registry = registry;
        m
    }

    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests.get(),
            "cache_hits": self.hits.get(),
            "cache_misses": self.misses.get(),
            "joined_downloads": self.joined.get(),
            "revalidations": self.revalidated.get(),
            "passed_through": self.passed_through.get(),
            "refused": self.refused.get(),
            "upstream_requests": self.upstream_requests.get(),
            "upstream_failures": self.upstream_failures.get(),
            "verify_failures": self.verify_failures.get(),
            "backoff_refusals": self.backoff_refusals.get(),
            "bytes_from_cache": self.bytes_from_cache.get(),
            "bytes_from_upstream": self.bytes_from_upstream.get(),
            "store_full": self.store_full.get(),
            "connections_refused": self.connections_refused.get(),
            "header_timeouts": self.header_timeouts.get(),
            "idle_timeouts": self.idle_timeouts.get(),
            "waiting_on_upstream": self.waiting.get(),
            "connections_open": self.connections_open.get(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_show_in_both_formats() {
        let m = super::Metrics::new();
        m.hits.inc_by(3);
        assert!(m.prometheus_text().contains("vzpkg_cache_hits_total 3"), "{}", m.prometheus_text());
        assert_eq!(m.as_json()["cache_hits"], 3);
    }

    #[test]
    fn runs_are_counted_by_source_and_bounded() {
        let m = super::Metrics::new();
        m.runs.request("1-2");
        m.runs.bytes("1-2", super::Source::Cache, 10);
        m.runs.bytes("1-2", super::Source::Upstream, 5);
        m.runs.refused("1-2", "mirror.example.org");
        let run = m.runs.get("1-2").unwrap();
        assert_eq!((run.requests, run.bytes_from_cache, run.bytes_from_upstream), (1, 10, 5));
        assert!(run.refused_hosts.contains("mirror.example.org"));
        for i in 0..super::Runs::MAX {
            m.runs.request(&format!("other-{i}"));
        }
        assert_eq!(m.runs.get("1-2"), None, "the oldest run was forgotten");
    }
}
