//! Who may use the proxy and where it may go: client networks, and the upstream hosts allowed
//! by config or named in this machine's own apt/dnf/zypper sources. No open proxy.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

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
