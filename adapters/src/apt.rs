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

/// A keyring an apt source names with `signed-by`.
#[derive(Debug, Clone, PartialEq)]
pub enum SignedBy {
    /// A keyring file (absolute path): binary, or armored if it ends in `.asc`.
    File(String),
    /// An armored public key block given inline (deb822 only).
    Inline(String),
}

/// For every http(s) URI in an apt sources file, its `host[:port]` and the keyrings its
/// `signed-by` names (fingerprints, which only narrow a keyring, are left out). Sources
/// without `signed-by` are not listed; deb822 stanzas with `Enabled: no` neither.
pub fn source_keyrings(text: &str) -> Vec<(String, Vec<SignedBy>)> {
    let files = |value: &str| -> Vec<SignedBy> {
        value.split([',', ' ', '\t']).filter(|v| v.starts_with('/')).map(|v| SignedBy::File(v.to_string())).collect()
    };
    let mut out = Vec::new();
    // One-line: `deb [signed-by=/a.gpg,/b.gpg arch=amd64] URI suite comps`.
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if !(line.starts_with("deb ") || line.starts_with("deb-src ")) {
            continue;
        }
        let after_type = line.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
        let Some((options, rest)) = after_type.strip_prefix('[').and_then(|r| r.split_once(']')) else {
            continue;
        };
        let keyrings: Vec<SignedBy> =
            options.split_whitespace().filter_map(|o| o.strip_prefix("signed-by=")).flat_map(&files).collect();
        let Some(host) = rest.split_whitespace().next().and_then(crate::url_authority) else { continue };
        if !keyrings.is_empty() {
            out.push((host, keyrings));
        }
    }
    // deb822: stanzas of fields; a field's continuation lines start with a space, " ." is a
    // blank line of a multi-line value.
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some(cont) = line.strip_prefix([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(if cont.trim() == "." { "" } else { cont.trim() });
                }
            } else if let Some((name, value)) = line.split_once(':') {
                fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        if field("enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let (Some(uris), Some(signed_by)) = (field("uris"), field("signed-by")) else { continue };
        let keyrings = if signed_by.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            vec![SignedBy::Inline(signed_by.trim().to_string())]
        } else {
            files(&signed_by.replace('\n', " "))
        };
        if keyrings.is_empty() {
            continue;
        }
        for host in uris.split_whitespace().filter_map(crate::url_authority) {
            out.push((host, keyrings.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyrings_come_from_signed_by_in_both_formats() {
        let one_line =
            "deb [arch=amd64 signed-by=/usr/share/keyrings/a.gpg] http://mirror.example.org/debian stable main\n\
                        deb http://other.example.org/debian stable main\n\
                        # deb [signed-by=/x.gpg] http://commented.example.org/ s m\n\
                        deb-src [signed-by=/k/b.asc,ABCDEF0123] https://mirror.example.org:8443/d s m\n";
        assert_eq!(
            source_keyrings(one_line),
            [
                ("mirror.example.org".to_string(), vec![SignedBy::File("/usr/share/keyrings/a.gpg".into())]),
                ("mirror.example.org:8443".to_string(), vec![SignedBy::File("/k/b.asc".into())]),
            ]
        );
        let deb822 = "Types: deb\nURIs: http://mirror.example.org/debian http://mirror2.example.org/debian\n\
                      Suites: stable\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://off.example.org/\nEnabled: no\nSigned-By: /k.gpg\n\n\
                      Types: deb\nURIs: http://inline.example.org/\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZ2g=\n -----END PGP PUBLIC KEY BLOCK-----\n";
        let found = source_keyrings(deb822);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[1].0, "mirror2.example.org");
        assert_eq!(found[2].0, "inline.example.org");
        let SignedBy::Inline(block) = &found[2].1[0] else { panic!("{found:?}") };
        assert_eq!(crate::armor::dearmor_public_keys(block).unwrap(), [0x98, 0x33, 0x04, 0x67, 0x68]);
    }

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
