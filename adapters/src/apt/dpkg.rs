//! What the wrapper needs to know of a dpkg/apt container: its lock files, the directory that
//! means an interrupted dpkg, the installed set from dpkg's status file, and the apt-get and
//! dpkg command lines for each operation.

/// Where dpkg's status file lives, relative to the container root.
pub const STATUS: &str = "var/lib/dpkg/status";
/// Non-empty when a dpkg run was interrupted: `dpkg --configure -a` must run first.
pub const UPDATES_DIR: &str = "var/lib/dpkg/updates";
/// Where apt keeps the package lists `apt-get update` fetched (`*_Packages`, uncompressed).
pub const LISTS: &str = "var/lib/apt/lists";
/// Where apt keeps downloaded archives: the read-only view of the shared cache goes here.
pub const ARCHIVES: &str = "var/cache/apt/archives";
/// fcntl locks apt and dpkg take, in the order they take them. A file with no holder is
/// harmless and must not be deleted.
pub const LOCKS: &[&str] =
    &["var/lib/dpkg/lock-frontend", "var/lib/dpkg/lock", "var/lib/apt/lists/lock", "var/cache/apt/archives/lock"];

pub use crate::installed::{Changes, Installed, Operation};

/// The packages dpkg's status file lists as installed. One pass over the lines keeping only
/// the four fields it needs, so the memory it takes is that of its answer, whatever the file
/// holds (the file is the container's, and may be crafted).
pub fn installed(status: &[u8]) -> Vec<Installed> {
    let text = String::from_utf8_lossy(status);
    let mut out = Vec::new();
    let mut fields: [Option<&str>; 4] = [None; 4];
    let mut finish = |fields: &mut [Option<&str>; 4]| {
        if let [Some(name), Some(status), arch, Some(version)] = *fields {
            if status.ends_with(" installed") {
                out.push(Installed { name: name.into(), arch: arch.unwrap_or("").into(), version: version.into() });
            }
        }
        *fields = [None; 4];
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            finish(&mut fields);
            continue;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let slot = match name {
            _ if line.starts_with([' ', '\t']) => continue,
            _ if name.eq_ignore_ascii_case("Package") => 0,
            _ if name.eq_ignore_ascii_case("Status") => 1,
            _ if name.eq_ignore_ascii_case("Architecture") => 2,
            _ if name.eq_ignore_ascii_case("Version") => 3,
            _ => continue,
        };
        fields[slot] = Some(value.trim());
    }
    finish(&mut fields);
    out.sort();
    out
}

/// apt-get's argv for an operation, with per-run options instead of edits to the container.
/// `hosts` are the hosts the container's sources name: each gets the proxy as its per-host
/// setting, which outranks the generic one, so a per-host proxy or `DIRECT` left in the
/// container's configuration cannot send apt elsewhere; proxy auto-detection is off for the run.
pub fn apt_get(op: &Operation, assume_yes: bool, proxy: &str, user_agent: &str, hosts: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = vec!["apt-get".into()];
    let per_host = hosts
        .iter()
        .map(|h| h.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(h.as_str(), |(h, _)| h))
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .map(|h| format!("Acquire::http::Proxy::{h}={proxy}"));
    for option in [
        format!("Acquire::http::Proxy={proxy}"),
        "Acquire::http::Proxy-Auto-Detect=".into(),
        "Acquire::http::ProxyAutoDetect=".into(),
        "Acquire::https::Proxy=DIRECT".into(),
        format!("Acquire::http::User-Agent={user_agent}"),
        format!("Dir::Cache::Archives=/{ARCHIVES}/"),
        // Archives come from the shared view; nothing is kept or cleaned in the container.
        "APT::Keep-Downloaded-Packages=false".into(),
    ] {
        argv.push("-o".into());
        argv.push(option);
    }
    for option in per_host {
        argv.push("-o".into());
        argv.push(option);
    }
    if assume_yes {
        argv.push("-y".into());
    }
    match op {
        Operation::Install(pkgs) => argv.extend(std::iter::once("install".to_string()).chain(pkgs.iter().cloned())),
        Operation::Remove(pkgs) => argv.extend(std::iter::once("remove".to_string()).chain(pkgs.iter().cloned())),
        Operation::Upgrade(pkgs) if pkgs.is_empty() => argv.push("upgrade".into()),
        Operation::Upgrade(pkgs) => {
            argv.extend(["install", "--only-upgrade"].map(String::from).into_iter().chain(pkgs.iter().cloned()))
        }
        Operation::Update => argv.push("update".into()),
    }
    argv
}

/// Repairs an interrupted dpkg run.
pub fn configure_pending() -> Vec<String> {
    ["dpkg", "--configure", "-a"].map(String::from).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_TEXT: &str = "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.21.22\n\n\
        Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
        Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n";

    #[test]
    fn reads_the_installed_set() {
        let set = installed(STATUS_TEXT.as_bytes());
        assert_eq!(set.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["dpkg", "hello"]);
        assert_eq!(set[1], Installed { name: "hello".into(), arch: "amd64".into(), version: "2.10-3".into() });
        let crlf = STATUS_TEXT.replace('\n', "\r\n");
        assert_eq!(installed(crlf.as_bytes()), set, "CRLF too");
        let continued = "Package: a\nStatus: install ok installed\nDescription: x\n Version: 9\nVersion: 1\n";
        assert_eq!(installed(continued.as_bytes())[0].version, "1", "continuation lines are not fields");
    }

    #[test]
    fn diffs_installed_sets() {
        let before = installed(STATUS_TEXT.as_bytes());
        let mut after = before.clone();
        after.retain(|p| p.name != "hello");
        after.push(Installed { name: "new".into(), arch: "all".into(), version: "1".into() });
        after[0].version = "1.21.23".into();
        let changes = Changes::between(&before, &after);
        assert_eq!(changes.installed[0].name, "new");
        assert_eq!(changes.removed[0].name, "hello");
        assert_eq!(changes.changed[0].1.version, "1.21.23");
        assert!(Changes::between(&before, &before).is_empty());
    }

    #[test]
    fn apt_argv_carries_the_per_run_options() {
        let hosts = ["mirror.example.org".to_string(), "repo.example.org:8080".into(), "bad host=x".into()];
        let argv =
            apt_get(&Operation::Install(vec!["hello".into()]), true, "http://127.0.0.1:3142", "vzpkg-run/x", &hosts);
        assert_eq!(argv[0], "apt-get");
        for option in [
            "Acquire::http::Proxy=http://127.0.0.1:3142",
            "Acquire::http::Proxy::mirror.example.org=http://127.0.0.1:3142",
            "Acquire::http::Proxy::repo.example.org=http://127.0.0.1:3142",
            "Acquire::http::Proxy-Auto-Detect=",
        ] {
            assert!(argv.contains(&option.to_string()), "{option} in {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.contains("bad host")), "{argv:?}");
        assert_eq!(&argv[argv.len() - 3..], ["-y", "install", "hello"]);
        let up = apt_get(&Operation::Upgrade(vec![]), false, "p", "u", &[]);
        assert_eq!(up.last().unwrap(), "upgrade");
    }
}
