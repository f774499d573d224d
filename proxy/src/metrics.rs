//! Counters for `/_vzpkg/metrics` (Prometheus text format) and `/_vzpkg/status` (JSON).

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
    /// Requests waiting for upstream's answer to a fetch under way.
    pub waiting: Gauge,
    registry: Registry,
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
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register("waiting_on_upstream", "Requests waiting for upstream to answer", m.waiting.clone());
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
            "waiting_on_upstream": self.waiting.get(),
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
}
