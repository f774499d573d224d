//! vzpkg.toml: the one config file, read from `--config`, else /etc/vzpkg/vzpkg.toml if it
//! exists, else built-in defaults. Unknown keys are errors that name the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/vzpkg/vzpkg.toml";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Blobs and the cache index.
    pub cache_dir: PathBuf,
    /// Audit log and locks.
    pub state_dir: PathBuf,
    pub proxy: vzpkg_proxy::Config,
    /// Container names for the wrapper commands → their root directories.
    pub containers: std::collections::BTreeMap<String, PathBuf>,
    /// `@NAME` → the containers it stands for (any container spec, or names of `[containers]`).
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Where `@all` and `vzpkg containers` look for containers besides `[containers]`.
    pub discovery: DiscoveryConfig,
    pub sandbox: SandboxConfig,
}

/// `[discovery]`: the directories LXC, systemd-nspawn and OpenVZ keep their containers in; an
/// empty string leaves that kind out.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// LXC's lxcpath: one directory per container holding its `config`.
    pub lxc_path: PathBuf,
    /// systemd-nspawn's machine roots (directories; images are left out).
    pub machines_dir: PathBuf,
    /// OpenVZ's private areas, one per CTID.
    pub openvz_private: PathBuf,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            lxc_path: PathBuf::from("/var/lib/lxc"),
            machines_dir: PathBuf::from("/var/lib/machines"),
            openvz_private: PathBuf::from("/vz/private"),
        }
    }
}

/// `[sandbox]`: how the wrapper confines a container's package manager.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// First host uid and gid of the 65536 the guest runs as [default: the `vzpkg` entry of
    /// /etc/subuid and /etc/subgid, else 1879048192].
    pub id_base: Option<u32>,
    /// Run the guest as the host's real root on filesystems that cannot be idmapped.
    pub privileged: bool,
    /// Processes and threads one run may have at once.
    pub pids_max: u64,
    /// Bytes of memory one run may use (its tmpfs downloads included).
    pub memory_max: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let limits = crate::container::cgroup::Limits::default();
        SandboxConfig { id_base: None, privileged: false, pids_max: limits.pids_max, memory_max: limits.memory_max }
    }
}

impl SandboxConfig {
    pub fn limits(&self) -> crate::container::cgroup::Limits {
        crate::container::cgroup::Limits { pids_max: self.pids_max, memory_max: self.memory_max }
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            cache_dir: PathBuf::from("/var/cache/vzpkg"),
            state_dir: PathBuf::from("/var/lib/vzpkg"),
            proxy: vzpkg_proxy::Config::default(),
            containers: Default::default(),
            groups: Default::default(),
            discovery: DiscoveryConfig::default(),
            sandbox: SandboxConfig::default(),
        }
    }
}

impl FileConfig {
    /// `explicit` must exist; without it the default path is used only if present.
    pub fn load(explicit: Option<&Path>) -> Result<FileConfig> {
        let path = match explicit {
            Some(p) => p,
            None if Path::new(DEFAULT_PATH).exists() => Path::new(DEFAULT_PATH),
            None => return Ok(FileConfig::default()),
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<FileConfig> {
        let config: FileConfig = toml::from_str(text)?;
        config.proxy.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_parses() {
        let text = include_str!("../contrib/vzpkg.toml");
        let config = FileConfig::parse(text).unwrap();
        assert_eq!(config.proxy.listen.len(), 2);
        assert_eq!(config.proxy.remap["debian"].len(), 2);
        assert_eq!(config.proxy.index_ttl_secs, 30);
        assert_eq!(config.containers["web1"], Path::new("/var/lib/lxc/web1/rootfs"));
        assert_eq!(config.groups["web"], ["web1", "lxc:web2"]);
        assert_eq!(config.discovery.lxc_path, DiscoveryConfig::default().lxc_path);
        let defaults = SandboxConfig::default();
        assert_eq!((config.sandbox.pids_max, config.sandbox.memory_max), (defaults.pids_max, defaults.memory_max));
        assert!(!config.sandbox.privileged && config.sandbox.id_base.is_none());
        assert!(config.proxy.system_keyrings && config.proxy.max_cache_size.is_none());
        // Every key of the sample is there, with a comment above it; the commented-out examples too.
        for key in [
            "cache_dir",
            "state_dir",
            "listen",
            "allow_clients",
            "allow_hosts",
            "allow_system_sources",
            "system_keyrings",
            "# max_cache_size",
            "index_ttl_secs",
            "strict",
            "# parent",
            "connect_timeout_secs",
            "low_speed_secs",
            "min_rate_bytes",
            "resume_attempts",
            "# ca_file",
            "backoff_secs",
            "backoff_max_secs",
            "# id_base",
            "privileged",
            "pids_max",
            "memory_max",
            "lxc_path",
            "machines_dir",
            "openvz_private",
        ] {
            let line = text.lines().position(|l| l.starts_with(&format!("{key} ="))).unwrap_or_else(|| panic!("{key}"));
            assert!(text.lines().nth(line - 1).unwrap().starts_with('#'), "{key} has no comment");
        }
        let uncommented = text.replace("# max_cache_size", "max_cache_size");
        assert_eq!(FileConfig::parse(&uncommented).unwrap().proxy.max_cache_size, Some(20 << 30));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = FileConfig::parse("[proxy]\nlisten = [\"127.0.0.1:3142\"]\ncache_ttl = 5\n").unwrap_err();
        assert!(format!("{err:#}").contains("cache_ttl"), "{err:#}");
        let err = FileConfig::parse("cache_dri = \"/x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("cache_dri"), "{err:#}");
    }

    #[test]
    fn no_file_means_defaults() {
        let config = FileConfig::parse("").unwrap();
        assert_eq!(config.proxy.listen, ["127.0.0.1:3142".parse().unwrap()]);
        assert_eq!(config.cache_dir, Path::new("/var/cache/vzpkg"));
    }

    #[test]
    fn bad_remap_urls_are_refused() {
        let err = FileConfig::parse("[proxy.remap]\ndebian = [\"ftp://mirror.example.org/debian\"]\n").unwrap_err();
        assert!(format!("{err:#}").contains("remap.debian"), "{err:#}");
    }
}
