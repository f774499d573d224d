//! Packages index files: the SHA256 and size of every .deb, by its path from the archive root,
//! and the name apt gives the archive once downloaded.

use super::control::{archive_name, field, stanzas};
use crate::{FileHash, ParseError};

#[derive(Debug, Clone, PartialEq)]
pub struct Deb {
    pub file: FileHash,
    /// `name_version_arch.deb` as apt names it in its archives directory.
    pub archive_name: Option<String>,
}

/// Parses a decompressed Packages file. Stanzas without Filename or SHA256 are skipped (they
/// cannot be verified, so their packages stay unverified).
pub fn parse(bytes: &[u8]) -> Result<Vec<Deb>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::Syntax("Packages is not UTF-8".into()))?;
    let mut debs = Vec::new();
    for stanza in stanzas(text) {
        let (Some(filename), Some(sha256)) = (field(&stanza, "Filename"), field(&stanza, "SHA256")) else {
            continue;
        };
        let size = match field(&stanza, "Size") {
            Some(v) => Some(v.parse().map_err(|_| ParseError::Syntax(format!("bad Size {v:?}")))?),
            None => None,
        };
        let name = match (field(&stanza, "Package"), field(&stanza, "Version"), field(&stanza, "Architecture")) {
            (Some(p), Some(v), Some(a)) => Some(archive_name(p, v, a)),
            _ => None,
        };
        debs.push(Deb { file: FileHash::new(filename, sha256, size)?, archive_name: name });
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
}
