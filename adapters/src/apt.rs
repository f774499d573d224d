//! apt/dpkg repositories: which paths are packages, by-hash files or indexes, and which hosts
//! an apt configuration (one-line `sources.list` or deb822 `.sources`) names.

pub mod control;
pub mod dpkg;
pub mod packages;
pub mod release;
pub mod version;

use crate::FileKind;

/// Classifies a path of a Debian-style archive, or `None` when it is not one of apt's files.
pub fn classify(path: &str) -> Option<FileKind> {
    let name = crate::file_name(path);
    if [".deb", ".udeb", ".ddeb"].iter().any(|ext| name.ends_with(ext)) {
        return Some(FileKind::Package);
    }
    if path.split('/').any(|segment| segment == "by-hash") {
        return Some(FileKind::ByHash);
    }
    let index_names = ["InRelease", "Release", "Release.gpg"];
    let index_prefixes = ["Packages", "Sources", "Contents-", "Translation-", "Components-", "Commands-"];
    if index_names.contains(&name) || index_prefixes.iter().any(|p| name.starts_with(p)) {
        return Some(FileKind::Index);
    }
    None
}

/// The `host[:port]` of every http(s) URI in an apt sources file, in either format.
pub fn source_hosts(text: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let uris: Vec<&str> = if let Some(rest) = line.strip_prefix("URIs:") {
            // deb822: `URIs: http://a/ http://b/`
            rest.split_whitespace().collect()
        } else if line.starts_with("deb ") || line.starts_with("deb-src ") {
            // one-line: `deb [opts] URI suite comps`; options may hold spaces inside brackets
            let after_type = line.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
            let after_opts = match after_type.strip_prefix('[') {
                Some(r) => r.split_once(']').map(|(_, r)| r).unwrap_or(""),
                None => after_type,
            };
            after_opts.split_whitespace().take(1).collect()
        } else {
            Vec::new()
        };
        hosts.extend(uris.into_iter().filter_map(crate::url_authority));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_debian_paths() {
        assert_eq!(classify("/d/pool/main/a/apt/apt_2.6.1_amd64.deb"), Some(FileKind::Package));
        assert_eq!(classify("/d/pool/main/d/di/di_1_all.udeb"), Some(FileKind::Package));
        assert_eq!(classify("/d/dists/bookworm/main/binary-amd64/by-hash/SHA256/0a1b"), Some(FileKind::ByHash));
        for index in
            ["InRelease", "Release", "Release.gpg", "Packages", "Packages.xz", "Sources.gz", "Translation-en.bz2"]
        {
            assert_eq!(classify(&format!("/d/dists/bookworm/main/{index}")), Some(FileKind::Index), "{index}");
        }
        assert_eq!(classify("dists/stable/main/binary-all/by-hash/SHA256/0a1b"), Some(FileKind::ByHash));
        assert_eq!(classify("/d/README.mirrors.txt"), None);
    }

    #[test]
    fn reads_hosts_from_both_source_formats() {
        let one_line = "# comment\ndeb http://mirror.example.org/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] https://repo.example.org:8443/x stable main # tail\n\
                        deb-src http://src.example.org/debian bookworm main\n\
                        deb file:/srv/local ./\n";
        assert_eq!(source_hosts(one_line), ["mirror.example.org", "repo.example.org:8443", "src.example.org"]);
        let deb822 =
            "Types: deb\nURIs: http://mirror.example.org/debian http://other.example.org/d\nSuites: bookworm\n";
        assert_eq!(source_hosts(deb822), ["mirror.example.org", "other.example.org"]);
    }
}
