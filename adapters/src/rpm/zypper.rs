//! What the wrapper needs to know of an rpm container driven by zypper: its cache layout and its
//! command line for each operation (the rpm side is shared with dnf: see [`super::dnf`]).

use crate::installed::Operation;

/// Downloaded packages, per repository alias, in the repository's own layout
/// (`<alias>/Packages/noarch/…`).
pub const PACKAGES: &str = "var/cache/zypp/packages";
/// Repository metadata as downloaded, per alias: `<alias>/repodata/repomd.xml` …
pub const RAW: &str = "var/cache/zypp/raw";

/// zypper's argv for an operation. zypper has no proxy option: the environment the wrapper
/// gives it carries the proxy, which libzypp takes when the system configures none.
pub fn command(op: &Operation, assume_yes: bool) -> Vec<String> {
    let mut argv = vec!["zypper".to_string()];
    if assume_yes {
        argv.push("--non-interactive".into());
    }
    let (verb, pkgs): (&str, &[String]) = match op {
        Operation::Install(pkgs) => ("install", pkgs),
        Operation::Remove(pkgs) => ("remove", pkgs),
        Operation::Upgrade(pkgs) => ("update", pkgs),
        Operation::Update => ("refresh", &[]),
    };
    argv.push(verb.to_string());
    argv.extend(pkgs.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_zypper_verbs() {
        assert_eq!(
            command(&Operation::Install(vec!["a".into()]), true),
            ["zypper", "--non-interactive", "install", "a"]
        );
        assert_eq!(command(&Operation::Update, false), ["zypper", "refresh"]);
        assert_eq!(command(&Operation::Upgrade(vec![]), false), ["zypper", "update"]);
        assert_eq!(command(&Operation::Remove(vec!["b".into()]), false), ["zypper", "remove", "b"]);
    }
}
