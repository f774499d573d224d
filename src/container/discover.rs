//! Which containers there are, and what a wrapper command's target stands for: `ct1,ct2`,
//! `@GROUP` from the config's `[groups]`, and `@all` — the config's `[containers]` plus what
//! LXC's, systemd-nspawn's and OpenVZ's own directories hold, each once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::FileConfig;

/// Most containers one target may name: a bound on what a config typo or a huge directory
/// could start.
const MAX_TARGETS: usize = 10_000;

/// Whether `target` names several containers (a list or a group), not one.
pub fn is_many(target: &str) -> bool {
    target.contains(',') || target.starts_with('@')
}

/// The container specs `target` stands for, in the order given, each once.
pub fn expand(target: &str, file: &FileConfig) -> Result<Vec<String>> {
    let mut specs = Vec::new();
    for piece in target.split(',').map(str::trim) {
        match piece.strip_prefix('@') {
            Some("all") => specs.extend(all(file)),
            Some(group) => match file.groups.get(group) {
                Some(members) => {
                    for member in members {
                        if member.starts_with('@') || member.contains(',') {
                            bail!("[groups] {group}: {member:?}: a group lists containers, not other groups or lists");
                        }
                        specs.push(member.clone());
                    }
                }
                None => {
                    let known: Vec<String> = file.groups.keys().map(|g| format!("@{g}")).collect();
                    bail!(
                        "no group @{group} in the config's [groups] (known: {}; @all is every container vzpkg finds)",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    )
                }
            },
            None if piece.is_empty() => bail!("{target:?}: an empty container name in the list"),
            None => specs.push(piece.to_string()),
        }
    }
    if let Some(option) = specs.iter().find(|s| s.starts_with('-')) {
        bail!("{option:?} is not a container: a container never starts with '-'");
    }
    let mut seen = BTreeSet::new();
    specs.retain(|s| seen.insert(s.clone()));
    if specs.is_empty() {
        bail!("{target:?} stands for no container");
    }
    if specs.len() > MAX_TARGETS {
        bail!("{target:?} stands for {} containers; at most {MAX_TARGETS} at once", specs.len());
    }
    Ok(specs)
}

/// Every container vzpkg can find: the config's names first, then `lxc:NAME`, `nspawn:NAME`
/// and `openvz:CTID` for those no config name already stands for (same spec or same root).
pub fn all(file: &FileConfig) -> Vec<String> {
    let mut specs: Vec<String> = file.containers.keys().cloned().collect();
    let named: BTreeSet<String> = file.containers.values().map(|t| t.to_string_lossy().into_owned()).collect();
    let places = &file.discovery;
    let mut found = Vec::new();
    for name in entries(&places.lxc_path, |dir| dir.join("config").is_file()) {
        let root = crate::container::running::lxc_config(&places.lxc_path, &name).map(|c| c.rootfs).ok();
        found.push((format!("lxc:{name}"), root));
    }
    for name in entries(&places.machines_dir, |dir| dir.is_dir()) {
        found.push((format!("nspawn:{name}"), Some(places.machines_dir.join(&name))));
    }
    for ctid in entries(&places.openvz_private, |dir| dir.is_dir()) {
        found.push((format!("openvz:{ctid}"), Some(places.openvz_private.join(&ctid))));
    }
    for (spec, root) in found {
        let root = root.map(|r| r.to_string_lossy().into_owned());
        if !named.contains(&spec) && !root.is_some_and(|r| named.contains(&r)) {
            specs.push(spec);
        }
    }
    specs
}

/// The names in `dir` (an administrator's directory, still checked) that `keep` accepts, sorted.
fn entries(dir: &Path, keep: impl Fn(&PathBuf) -> bool) -> Vec<String> {
    if dir.as_os_str().is_empty() {
        return Vec::new();
    }
    let Ok(listing) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = listing
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| crate::container::running::check_name("", name).is_ok())
        .filter(|name| keep(&dir.join(name)))
        .collect();
    names.sort();
    names.truncate(MAX_TARGETS);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> FileConfig {
        FileConfig::parse(text).unwrap()
    }

    #[test]
    fn lists_groups_and_all_expand_in_order_each_once() {
        let tmp = tempfile::tempdir().unwrap();
        let lxc = tmp.path().join("lxc");
        for (name, root) in [("web2", "/srv/web2"), ("db", "/srv/db")] {
            std::fs::create_dir_all(lxc.join(name)).unwrap();
            std::fs::write(lxc.join(name).join("config"), format!("lxc.rootfs.path = dir:{root}\n")).unwrap();
        }
        std::fs::create_dir_all(lxc.join("no-config")).unwrap();
        std::fs::create_dir_all(lxc.join("-h")).unwrap();
        let file = config(&format!(
            "[containers]\nweb1 = \"/srv/web1\"\ndatabase = \"/srv/db\"\n[groups]\nweb = [\"web1\", \"lxc:web2\"]\n\
             [discovery]\nlxc_path = {:?}\nmachines_dir = \"\"\nopenvz_private = \"\"\n",
            lxc.display().to_string()
        ));
        assert!(!is_many("web1") && is_many("web1,web2") && is_many("@web"));
        assert_eq!(expand("web1, dir:/x ,web1", &file).unwrap(), ["web1", "dir:/x"]);
        assert_eq!(expand("@web,web1", &file).unwrap(), ["web1", "lxc:web2"]);
        // lxc:db's root is the config's `database`: it is listed once, by the config's name.
        assert_eq!(expand("@all", &file).unwrap(), ["database", "web1", "lxc:web2"]);
        let err = expand("@nope", &file).unwrap_err().to_string();
        assert!(err.contains("@nope") && err.contains("@web"), "{err}");
        assert!(expand("web1,,web2", &file).is_err());
        assert!(expand("web1,--privileged", &file).is_err(), "never passed on as an option");
        let nested = config("[groups]\na = [\"@b\"]\nb = [\"x\"]\n");
        assert!(expand("@a", &nested).unwrap_err().to_string().contains("not other groups"));
    }
}
