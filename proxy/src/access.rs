//! Who may use the proxy and where it may go: client networks, and the upstream hosts allowed
//! by config or named in this machine's own apt/dnf/zypper sources. No open proxy. Also the
//! keyrings this machine's apt sources name (`signed-by`) for their upstreams, so that
//! signatures are checked out of the box.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use sha2::Digest;
use vzpkg_adapters::apt::SignedBy;

use ipnet::IpNet;

use crate::config::Config;

pub struct Access {
    clients: Vec<IpNet>,
    /// `host` (ports 80 and 443) or `host:port`, lowercase.
    hosts: HashSet<String>,
}

/// Reads the upstream hosts out of one sources file's text.
type SourceParser = fn(&str) -> Vec<String>;

/// Where a machine keeps its package sources, and the parser for each.
const SOURCE_DIRS: &[(&str, &str, SourceParser)] = &[
    ("/etc/apt/sources.list.d", ".list", vzpkg_adapters::apt::source_hosts),
    ("/etc/apt/sources.list.d", ".sources", vzpkg_adapters::apt::source_hosts),
    ("/etc/yum.repos.d", ".repo", vzpkg_adapters::rpm::repo_hosts),
    ("/etc/distro.repos.d", ".repo", vzpkg_adapters::rpm::repo_hosts),
    ("/etc/zypp/repos.d", ".repo", vzpkg_adapters::rpm::repo_hosts),
];

impl Access {
    pub fn new(config: &Config) -> Access {
        let mut hosts: HashSet<String> = config.allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        if config.allow_system_sources {
            hosts.extend(system_source_hosts());
        }
        // Configuring a remap upstream allows its host.
        for base in config.remap.values().flatten() {
            if let Ok(url) = url::Url::parse(base) {
                if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
                    hosts.insert(format!("{}:{port}", host.to_ascii_lowercase()));
                }
            }
        }
        Access { clients: config.allow_clients.clone(), hosts }
    }

    /// Whether an upstream URL may be fetched (a redirect target, say).
    pub fn url_allowed(&self, url: &url::Url) -> bool {
        match (url.scheme(), url.host_str(), url.port_or_known_default()) {
            ("http" | "https", Some(host), Some(port)) => self.host_allowed(&host.to_ascii_lowercase(), port),
            _ => false,
        }
    }

    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.clients.iter().any(|net| net.contains(&ip))
    }

    pub fn host_allowed(&self, host: &str, port: u16) -> bool {
        let with_port = format!("{host}:{port}");
        self.hosts.contains(&with_port) || (matches!(port, 80 | 443) && self.hosts.contains(host))
    }

    pub fn allowed_hosts(&self) -> usize {
        self.hosts.len()
    }
}

fn system_source_hosts() -> Vec<String> {
    let mut hosts = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        hosts.extend(vzpkg_adapters::apt::source_hosts(&text));
    }
    for (dir, ext, parse) in SOURCE_DIRS {
        for text in files_ending(Path::new(dir), ext) {
            hosts.extend(parse(&text));
        }
    }
    hosts
}

/// `host[:port]` → the keyrings this machine's apt sources name for it with `signed-by`.
/// Armored keyrings (`.asc` files, deb822's inline keys) are dearmored into
/// `CACHE/keyrings/SHA256.gpg`, since gpgv reads binary keyrings only. Keyrings that cannot be
/// read are left out with a warning.
pub fn system_keyrings(cache_dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut texts: Vec<String> =
        std::fs::read_to_string(Path::new(APT_ROOT).join("sources.list")).into_iter().collect();
    let dir = Path::new(APT_ROOT).join("sources.list.d");
    texts.extend(files_ending(&dir, ".list"));
    texts.extend(files_ending(&dir, ".sources"));
    let mut found: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for text in texts {
        for (host, keyrings) in vzpkg_adapters::apt::source_keyrings(&text) {
            for keyring in keyrings {
                let Some(path) = usable_keyring(cache_dir, &keyring) else { continue };
                let paths = found.entry(host.clone()).or_default();
                if !paths.contains(&path) {
                    paths.push(path);
                }
            }
        }
    }
    found
}

/// Where this machine's apt configuration is.
const APT_ROOT: &str = "/etc/apt";

fn usable_keyring(cache_dir: &Path, keyring: &SignedBy) -> Option<PathBuf> {
    let armored = match keyring {
        SignedBy::File(path) if !path.ends_with(".asc") => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                tracing::warn!(keyring = %path.display(), "apt source names a keyring that is not there: not used");
                return None;
            }
            return Some(path);
        }
        SignedBy::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(keyring = %path, error = %e, "apt source names a keyring that cannot be read: not used");
                return None;
            }
        },
        SignedBy::Inline(text) => text.clone(),
    };
    let binary = match vzpkg_adapters::armor::dearmor_public_keys(&armored) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "apt source names an armored keyring that cannot be read: not used");
            return None;
        }
    };
    let dir = cache_dir.join("keyrings");
    let path = dir.join(format!("{}.gpg", hex::encode(sha2::Sha256::digest(&binary))));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, &binary)?;
        std::fs::rename(&tmp, &path)
    });
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(keyring = %path.display(), error = %e, "cannot write a dearmored keyring: not used");
            None
        }
    }
}

fn files_ending(dir: &Path, ext: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_without_port_mean_the_default_ports() {
        let config = Config {
            allow_hosts: vec!["Mirror.Example.org".into(), "127.0.0.1:8080".into()],
            allow_system_sources: false,
            ..Config::default()
        };
        let access = Access::new(&config);
        assert!(access.host_allowed("mirror.example.org", 80));
        assert!(access.host_allowed("mirror.example.org", 443));
        assert!(!access.host_allowed("mirror.example.org", 22));
        assert!(access.host_allowed("127.0.0.1", 8080));
        assert!(!access.host_allowed("127.0.0.1", 8081));
        assert!(!access.host_allowed("other.example.org", 80));
    }

    #[test]
    fn remap_upstreams_are_allowed_hosts() {
        let config = Config {
            allow_system_sources: false,
            remap: [("d".to_string(), vec!["https://mirror.example.org:8443/debian".to_string()])].into(),
            ..Config::default()
        };
        let access = Access::new(&config);
        assert!(access.url_allowed(&"https://mirror.example.org:8443/debian/x".parse().unwrap()));
        assert!(!access.url_allowed(&"https://mirror.example.org/debian/x".parse().unwrap()));
        assert!(!access.url_allowed(&"ftp://mirror.example.org:8443/x".parse().unwrap()));
    }

    #[test]
    fn clients_default_to_loopback() {
        let access = Access::new(&Config { allow_system_sources: false, ..Config::default() });
        assert!(access.client_allowed("127.0.0.1".parse().unwrap()));
        assert!(access.client_allowed("::1".parse().unwrap()));
        assert!(access.client_allowed("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!access.client_allowed("192.0.2.1".parse().unwrap()));
    }
}
