//! The proxy's settings: what it listens on, which upstreams it may reach, and how it fetches.
//! Every field has a default that works with no config file at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The `[proxy]` table of vzpkg.toml. Unknown keys are refused so a typo is never silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to serve on.
    pub listen: Vec<SocketAddr>,
    /// Where blobs and the index live: set from the file's top-level `cache_dir`.
    #[serde(skip)]
    pub cache_dir: PathBuf,
    /// Upstream hosts (`host` or `host:port`) that forward-proxy requests may reach, besides the
    /// ones this machine's own apt and dnf sources name.
    pub allow_hosts: Vec<String>,
    /// Read this machine's apt/dnf sources to allow their hosts.
    pub allow_system_sources: bool,
    /// Client networks allowed to use the proxy.
    pub allow_clients: Vec<IpNet>,
    /// `GET /NAME/path` goes to these base URLs, trying the next when one fails.
    pub remap: BTreeMap<String, Vec<String>>,
    /// Send every upstream request through this HTTP proxy (another vzpkg, squid, apt-cacher-ng).
    pub parent: Option<String>,
    /// How long an index root (InRelease, Release, repomd.xml) is served without asking upstream
    /// whether it changed. Files the chain pins by hash need no asking.
    pub index_ttl_secs: u64,
    /// Refuse to store packages no index vouches for (they are still passed through).
    pub strict: bool,
    /// Remap NAME or upstream `host[:port]` → OpenPGP keyring (binary, as `gpg --export` writes
    /// it): InRelease, Release.gpg and repomd.xml.asc must verify with it before their hashes
    /// are trusted.
    pub keyrings: BTreeMap<String, PathBuf>,
    pub upstream: UpstreamConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub connect_timeout_secs: u64,
    /// Give up on a transfer that stays below `min_rate_bytes` per second for this long.
    pub low_speed_secs: u64,
    pub min_rate_bytes: u64,
    /// How often an interrupted transfer is resumed before it is given up.
    pub resume_attempts: u32,
    /// Extra CA certificates (PEM) trusted for https upstreams, besides the system's: for
    /// internal mirrors with a private CA.
    pub ca_file: Option<PathBuf>,
    /// After a failure, a URL is not tried again for this long, doubling with each further
    /// failure up to `backoff_max_secs` (0 turns this off).
    pub backoff_secs: u64,
    pub backoff_max_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 3142))],
            cache_dir: PathBuf::from("/var/cache/vzpkg"),
            allow_hosts: Vec::new(),
            allow_system_sources: true,
            allow_clients: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            remap: BTreeMap::new(),
            parent: None,
            index_ttl_secs: 30,
            strict: false,
            keyrings: BTreeMap::new(),
            upstream: UpstreamConfig::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_secs: 15,
            low_speed_secs: 60,
            min_rate_bytes: 512,
            resume_attempts: 3,
            ca_file: None,
            backoff_secs: 1,
            backoff_max_secs: 300,
        }
    }
}

impl Config {
    pub fn index_ttl(&self) -> Duration {
        Duration::from_secs(self.index_ttl_secs)
    }

    /// Checks what serde cannot: names and URLs that must be well formed.
    pub fn validate(&self) -> Result<(), String> {
        if self.listen.is_empty() {
            return Err("listen: at least one address is needed".into());
        }
        for (name, bases) in &self.remap {
            if name.is_empty()
                || name.starts_with('_')
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "remap: name {name:?} must be letters, digits, '-', '_' or '.', not starting with '_'"
                ));
            }
            if bases.is_empty() {
                return Err(format!("remap.{name}: at least one upstream URL is needed"));
            }
            for base in bases {
                check_http_url(base).map_err(|e| format!("remap.{name}: {e}"))?;
            }
        }
        for (name, keyring) in &self.keyrings {
            if !keyring.is_absolute() {
                return Err(format!("keyrings.{name}: {} must be an absolute path", keyring.display()));
            }
        }
        if let Some(parent) = &self.parent {
            check_http_url(parent).map_err(|e| format!("parent: {e}"))?;
        }
        Ok(())
    }
}

fn check_http_url(raw: &str) -> Result<(), String> {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(_) => Err(format!("{raw:?} is not an http:// or https:// URL")),
        Err(e) => Err(format!("{raw:?} is not a URL: {e}")),
    }
}
