//! What the wrapper needs to know of an rpm container driven by dnf (dnf4, dnf5) or yum: rpm's
//! database directories and lock, the query that lists the installed set and the parse of its
//! output, dnf's cache layout, and its command line for each operation.

use crate::installed::{Installed, Operation};

/// Where rpm keeps its database, relative to the root: the classic place and the newer one.
pub const RPMDB_DIRS: &[&str] = &["var/lib/rpm", "usr/lib/sysimage/rpm"];
/// rpm's transaction lock (fcntl), in each database directory. A file with no holder is
/// harmless and must not be deleted.
pub const LOCKS: &[&str] = &["var/lib/rpm/.rpm.lock", "usr/lib/sysimage/rpm/.rpm.lock"];
/// dnf's cache directory: one `<repoid>-<16 hex>` directory per repository, with `repodata/`
/// and `packages/`.
pub const CACHE: &str = "var/cache/dnf";

/// One package a line: name, architecture, `[epoch:]version-release`.
const QUERY_FORMAT: &str = "%{NAME}\\t%{ARCH}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n";
/// Packages kept from a query's output: a full distribution is tens of thousands.
const MAX_INSTALLED: usize = 200_000;

/// The command, run inside the container, that prints its installed set.
pub fn query() -> Vec<String> {
    ["rpm", "-qa", "--qf", QUERY_FORMAT].map(String::from).to_vec()
}

/// The installed set from [`query`]'s output. The output is the guest's: lines that are not
/// three tab-separated fields are skipped, as are rpm's `gpg-pubkey` pseudo-packages.
pub fn parse_query(output: &[u8]) -> Vec<Installed> {
    let mut out: Vec<Installed> = String::from_utf8_lossy(output)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (name, arch, version) = (fields.next()?, fields.next()?, fields.next()?);
            let valid = fields.next().is_none() && !name.is_empty() && !version.is_empty();
            (valid && name != "gpg-pubkey").then(|| Installed {
                name: name.to_string(),
                arch: arch.to_string(),
                version: version.to_string(),
            })
        })
        .take(MAX_INSTALLED)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `name` is one of dnf's per-repository cache directories: `<repoid>-<16 hex>`.
pub fn is_repo_cache_dir(name: &str) -> bool {
    name.rsplit_once('-').is_some_and(|(id, hash)| {
        !id.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Whether `name` is a Berkeley DB environment file (`__db.001` …) of an EL7-era rpm database.
pub fn is_bdb_environment_file(name: &str) -> bool {
    name.strip_prefix("__db.").is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The argv for an operation: `program` is `dnf`, `dnf5` or `yum`. The proxy is set for the
/// main configuration and for every repository (`*.proxy`), which outranks a `proxy=` a
/// `.repo` file sets. Packages are not kept: the container's cache does not grow, and what dnf
/// removes of the view it removes from the run's private upper layer only.
pub fn command(program: &str, op: &Operation, assume_yes: bool, proxy: &str, user_agent: &str) -> Vec<String> {
    let mut argv = vec![program.to_string()];
    for option in [
        format!("proxy={proxy}"),
        format!("*.proxy={proxy}"),
        "*.proxy_username=".to_string(),
        "*.proxy_password=".to_string(),
        "keepcache=0".to_string(),
        format!("user_agent={user_agent}"),
    ] {
        if program == "yum" && option.starts_with("user_agent") {
            continue;
        }
        argv.push(format!("--setopt={option}"));
    }
    if assume_yes {
        argv.push("-y".into());
    }
    let (verb, pkgs) = match op {
        Operation::Install(pkgs) => ("install", pkgs),
        Operation::Remove(pkgs) => ("remove", pkgs),
        Operation::Upgrade(pkgs) => ("upgrade", pkgs),
        Operation::Update if program == "yum" => ("makecache", &Vec::new()),
        Operation::Update => ("makecache", &vec!["--refresh".to_string()]),
    };
    argv.push(verb.to_string());
    argv.extend(pkgs.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_output_is_parsed_and_junk_skipped() {
        let out = b"bash\tx86_64\t5.2.26-3.fc40\nkernel\tx86_64\t1:6.8.5-301.fc40\n\
            gpg-pubkey\t(none)\ta15b79cc-63d04c2c\njunk line\n\ttoomany\tx\ty\tz\n\tx86_64\t1\nbash\tx86_64\t5.2.26-3.fc40\n";
        let got = parse_query(out);
        let names: Vec<_> = got.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(names, [("bash", "5.2.26-3.fc40"), ("kernel", "1:6.8.5-301.fc40")]);
        assert_eq!(query()[..2], ["rpm", "-qa"]);
    }

    #[test]
    fn cache_directory_and_environment_file_names() {
        assert!(is_repo_cache_dir("fedora-105ce4df9d79d6c2"));
        assert!(is_repo_cache_dir("my-repo-105ce4df9d79d6c2"));
        for bad in ["fedora", "-105ce4df9d79d6c2", "x-105CE4DF9D79D6C2", "x-105ce4df9d79d6c", "expired_repos.json"] {
            assert!(!is_repo_cache_dir(bad), "{bad}");
        }
        assert!(is_bdb_environment_file("__db.001"));
        for bad in ["__db.1", "__db.0012", "Packages", "rpmdb.sqlite-wal", "__db.00a"] {
            assert!(!is_bdb_environment_file(bad), "{bad}");
        }
    }

    #[test]
    fn every_repository_gets_the_proxy() {
        let argv = command("dnf", &Operation::Install(vec!["hello".into()]), true, "http://127.0.0.1:3142", "ua");
        assert!(argv.contains(&"--setopt=*.proxy=http://127.0.0.1:3142".to_string()), "{argv:?}");
        assert!(argv.contains(&"--setopt=proxy=http://127.0.0.1:3142".to_string()), "{argv:?}");
        assert_eq!(argv[argv.len() - 3..], ["-y", "install", "hello"]);
        let update = command("yum", &Operation::Update, false, "p", "ua");
        assert_eq!(update.last().unwrap(), "makecache");
        assert!(!update.iter().any(|a| a.contains("user_agent")));
        let upgrade = command("dnf", &Operation::Upgrade(vec![]), false, "p", "ua");
        assert_eq!(upgrade.last().unwrap(), "upgrade");
    }
}
