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
    /// Check the roots of an upstream this machine's own apt sources name with the keyring
    /// they give it (`signed-by`), unless `keyrings` names one for it.
    pub system_keyrings: bool,
    /// Keep the store under this many bytes (an integer, or a string such as "20G"): after a
    /// download takes it over, the least recently used blobs go. None: no cap.
    #[serde(deserialize_with = "size_opt")]
    pub max_cache_size: Option<u64>,
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
    /// Small files served recently stay in memory up to this many bytes (an integer, or a
    /// string such as "64M"; 0 turns it off).
    #[serde(deserialize_with = "size")]
    pub hot_cache_size: u64,
    pub upstream: UpstreamConfig,
    pub connections: ConnectionConfig,
}

/// How long clients may take and how many connections they may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// A client has this long to send a request's headers, counted from when the connection
    /// opens or its previous response ended; so it also closes a kept-alive connection left idle.
    pub header_timeout_secs: u64,
    /// A connection on which no byte moves either way for this long (checked once per period,
    /// so closed within twice this), while no request on it waits for upstream, is closed: a client that stopped reading its response, or vanished
    /// without a word. Longer than `upstream.low_speed_secs`, so that a stalled upstream is
    /// resumed before its clients are given up on.
    pub idle_timeout_secs: u64,
    /// Connections open at once; new ones are answered 503 and closed while at the cap.
    pub max: usize,
    /// Connections one client address may hold at once, so that no client can take them all.
    pub max_per_client: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig { header_timeout_secs: 15, idle_timeout_secs: 120, max: 4096, max_per_client: 256 }
    }
}

impl ConnectionConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
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
            system_keyrings: true,
            max_cache_size: None,
            allow_clients: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            remap: BTreeMap::new(),
            parent: None,
            index_ttl_secs: 30,
            strict: false,
            keyrings: BTreeMap::new(),
            hot_cache_size: crate::store::HOT_CACHE_DEFAULT,
            upstream: UpstreamConfig::default(),
            connections: ConnectionConfig::default(),
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
        let c = &self.connections;
        if c.header_timeout_secs == 0 || c.idle_timeout_secs == 0 {
            return Err("connections: header_timeout_secs and idle_timeout_secs must be at least 1".into());
        }
        if c.max == 0 || c.max_per_client == 0 {
            return Err("connections: max and max_per_client must be at least 1".into());
        }
        Ok(())
    }
}

/// A size in bytes: `1048576`, `512K`, `20M`, `20G`, `1T` (powers of 1024; `KiB`, `MB`, … and
/// a trailing `B` are taken too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size such as 500M or 20G"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    size_opt(d)?.ok_or_else(|| serde::de::Error::custom("a size such as 500M or 20G"))
}

fn size_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

fn check_http_url(raw: &str) -> Result<(), String> {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(_) => Err(format!("{raw:?} is not an http:// or https:// URL")),
        Err(e) => Err(format!("{raw:?} is not a URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("3 MiB"), Ok(3 << 20));
        assert_eq!(parse_size("1tb"), Ok(1 << 40));
        assert!(parse_size("G").is_err() && parse_size("5X").is_err() && parse_size("99999999999T").is_err());
        let config: Config = toml::from_str("max_cache_size = \"2G\"").unwrap();
        assert_eq!(config.max_cache_size, Some(2 << 30));
        let config: Config = toml::from_str("max_cache_size = 1000").unwrap();
        assert_eq!(config.max_cache_size, Some(1000));
        assert!(toml::from_str::<Config>("max_cache_size = \"lots\"").is_err());
        let config: Config = toml::from_str("hot_cache_size = \"1M\"").unwrap();
        assert_eq!(config.hot_cache_size, 1 << 20);
    }

    #[test]
    fn connection_limits_have_defaults_and_refuse_zero() {
        let config: Config = toml::from_str("[connections]\nmax_per_client = 3").unwrap();
        assert_eq!((config.connections.max, config.connections.max_per_client), (4096, 3));
        assert!(config.validate().is_ok());
        let config: Config = toml::from_str("[connections]\nheader_timeout_secs = 0").unwrap();
        assert!(config.validate().unwrap_err().contains("header_timeout_secs"));
        assert!(toml::from_str::<Config>("[connections]\nmaxx = 3").is_err(), "a typo is refused");
    }
}
