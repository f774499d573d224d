//! Packages index files: the SHA256 and size of every .deb, by its path from the archive root,
//! and the name apt gives the archive once downloaded.

use super::control::archive_name;
use crate::{FileHash, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub struct Deb {
    pub file: FileHash,
    /// `name_version_arch.deb` as apt names it in its archives directory.
    pub archive_name: Option<String>,
}

/// The fields read from one stanza.
#[derive(Default)]
struct Stanza<'a> {
    package: Option<&'a str>,
    version: Option<&'a str>,
    arch: Option<&'a str>,
    filename: Option<&'a str>,
    sha256: Option<&'a str>,
    size: Option<&'a str>,
}

impl Stanza<'_> {
    fn into_deb(self) -> Result<Option<Deb>, ParseError> {
        let (Some(filename), Some(sha256)) = (self.filename, self.sha256) else { return Ok(None) };
        let size = match self.size {
            Some(v) => Some(v.parse().map_err(|_| ParseError::Syntax(format!("bad Size {v:?}")))?),
            None => None,
        };
        let name = match (self.package, self.version, self.arch) {
            (Some(p), Some(v), Some(a)) => Some(archive_name(p, v, a)),
            _ => None,
        };
        Ok(Some(Deb { file: FileHash::new(filename, sha256, size)?, archive_name: name }))
    }
}

/// Parses a decompressed Packages file. Stanzas without Filename or SHA256 are skipped (they
/// cannot be verified, so their packages stay unverified). One pass, no allocation per field:
/// the wrapper reads a container's whole lists (tens of MB) on every run.
pub fn parse(bytes: &[u8]) -> Result<Vec<Deb>, ParseError> {
    parse_matching(bytes, |_| true)
}

/// The same, keeping only the stanzas whose SHA256 `wanted` accepts (checked before anything
/// is built from them: most stanzas of a big list are of no interest to the caller).
pub fn parse_matching(bytes: &[u8], wanted: impl Fn(&str) -> bool) -> Result<Vec<Deb>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::Syntax("Packages is not UTF-8".into()))?;
    let mut debs = Vec::new();
    let mut stanza = Stanza::default();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(&first) = line.as_bytes().first() else {
            let done = std::mem::take(&mut stanza);
            if done.sha256.is_some_and(&wanted) {
                debs.extend(done.into_deb()?);
            }
            continue;
        };
        // Most lines are continuations or fields we do not read.
        if !matches!(first, b'P' | b'V' | b'A' | b'F' | b'S') {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match field {
            "Package" => stanza.package = Some(value),
            "Version" => stanza.version = Some(value),
            "Architecture" => stanza.arch = Some(value),
            "Filename" => stanza.filename = Some(value),
            "SHA256" => stanza.sha256 = Some(value),
            "Size" => stanza.size = Some(value),
            _ => {}
        }
    }
    if stanza.sha256.is_some_and(&wanted) {
        debs.extend(stanza.into_deb()?);
    }
    Ok(debs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_filename_hash_size_and_archive_name() {
        let text = "Package: a\nVersion: 1:1.0\nArchitecture: all\nFilename: pool/main/a/a_1.0_all.deb\nSize: 10\n\
                    SHA256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nDescription: x\n more\n\n\
                    Package: nohash\nFilename: pool/x.deb\n\n";
        let debs = parse(text.as_bytes()).unwrap();
        assert_eq!(debs.len(), 1);
        assert_eq!(debs[0].file.path, "pool/main/a/a_1.0_all.deb");
        assert_eq!(debs[0].file.size, Some(10));
        assert_eq!(debs[0].archive_name.as_deref(), Some("a_1%3a1.0_all.deb"));
        assert!(parse(
            b"Filename: a\nSize: ten\nSHA256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        )
        .is_err());
    }

    #[test]
    fn keeps_only_wanted_hashes() {
        let a = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let b = "0000000000000000000000000000000000000000000000000000000000000001";
        let text = format!(
            "Package: a\r\nFilename: pool/a.deb\r\nSHA256: {a}\r\n\r\nPackage: b\nFilename: pool/b.deb\nSHA256: {b}\n"
        );
        let kept = parse_matching(text.as_bytes(), |sha| sha == b).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].file.path, "pool/b.deb");
        assert_eq!(parse(text.as_bytes()).unwrap().len(), 2, "CRLF stanzas are read too");
    }
}
