//! Who the guest is on the host: a range of 65536 unprivileged host ids that vzpkg owns. Root of
//! the sandbox's user namespace is the first id of the range, so every capability the guest
//! holds is relative to its own namespace, while the container root, attached through an
//! idmapped mount, keeps every file's on-disk owner exact (root stays 0 on disk).
//!
//! The range comes from the config (`sandbox.id_base`), else from a `vzpkg` entry in /etc/subuid
//! and /etc/subgid, else [`DEFAULT_BASE`].

use anyhow::{bail, Result};

/// Ids a container uses: 0..65536 inside, as on any Debian or RPM system.
pub const COUNT: u32 = 65536;
/// Past the ranges systemd hands to containers (up to 0x6FFFFFFF) and below its own reserved
/// top ranges.
pub const DEFAULT_BASE: u32 = 0x7000_0000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdRange {
    pub uid_base: u32,
    pub gid_base: u32,
}

impl IdRange {
    pub fn resolve(configured: Option<u32>) -> Result<IdRange> {
        if let Some(base) = configured {
            check(base, "sandbox.id_base")?;
            return Ok(IdRange { uid_base: base, gid_base: base });
        }
        let from = |file: &str| std::fs::read_to_string(file).ok().and_then(|t| subid_entry(&t, "vzpkg"));
        match (from("/etc/subuid"), from("/etc/subgid")) {
            (Some(uid_base), Some(gid_base)) => {
                check(uid_base, "/etc/subuid")?;
                check(gid_base, "/etc/subgid")?;
                Ok(IdRange { uid_base, gid_base })
            }
            _ => Ok(IdRange { uid_base: DEFAULT_BASE, gid_base: DEFAULT_BASE }),
        }
    }
}

fn check(base: u32, source: &str) -> Result<()> {
    if base == 0 || base.checked_add(COUNT).is_none() {
        bail!("{source}: the id range for containers must be 65536 ids above 0 (got a start of {base})");
    }
    Ok(())
}

/// The start of `user`'s first range of at least [`COUNT`] ids in a subuid/subgid file.
fn subid_entry(text: &str, user: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (name, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (name == user && count >= COUNT).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_vzpkg_entry_of_subuid() {
        let text = "alice:100000:65536\nvzpkg:200000:1000\nvzpkg:1000000:65536\n";
        assert_eq!(subid_entry(text, "vzpkg"), Some(1_000_000), "a range too short is skipped");
        assert_eq!(subid_entry("bob:1:65536\n", "vzpkg"), None);
    }

    #[test]
    fn a_configured_base_must_fit() {
        assert!(IdRange::resolve(Some(0)).is_err());
        assert!(IdRange::resolve(Some(u32::MAX - 10)).is_err());
        assert_eq!(IdRange::resolve(Some(500_000)).unwrap(), IdRange { uid_base: 500_000, gid_base: 500_000 });
    }
}
