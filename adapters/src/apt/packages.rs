//! Packages index files: the SHA256 and size of every .deb, by its path from the archive root.

use crate::{FileHash, ParseError};

/// Parses a decompressed Packages file. Stanzas without Filename or SHA256 are skipped (they
/// cannot be verified, so their packages stay unverified).
pub fn parse(bytes: &[u8]) -> Result<Vec<FileHash>, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::Syntax("Packages is not UTF-8".into()))?;
    let mut files = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut filename, mut sha256, mut size) = (None, None, None);
        for line in stanza.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match field {
                "Filename" => filename = Some(value),
                "SHA256" => sha256 = Some(value),
                "Size" => {
                    let parsed = value.parse().map_err(|_| ParseError::Syntax(format!("bad Size {value:?}")))?;
                    size = Some(parsed);
                }
                _ => {}
            }
        }
        if let (Some(filename), Some(sha256)) = (filename, sha256) {
            files.push(FileHash::new(filename, sha256, size)?);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_filename_hash_and_size() {
        let text = "Package: a\nVersion: 1\nFilename: pool/main/a/a_1_all.deb\nSize: 10\n\
                    SHA256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nDescription: x\n more\n\n\
                    Package: nohash\nFilename: pool/x.deb\n\n";
        let files = parse(text.as_bytes()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "pool/main/a/a_1_all.deb");
        assert_eq!(files[0].size, Some(10));
        assert!(parse(
            b"Filename: a\nSize: ten\nSHA256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        )
        .is_err());
    }
}
