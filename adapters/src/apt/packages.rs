//! Packages index files: the SHA256 and size of every .deb, by its path from the archive root,
//! and the name apt gives the archive once downloaded.

use std::io::BufRead;

use super::control::archive_name;
use crate::{FileHash, ParseError};

/// A stanza longer than this is refused: Debian's longest are a few tens of kilobytes.
pub const MAX_STANZA_BYTES: u64 = 4 << 20;

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
        if stanza.read(line) {
            let done = std::mem::take(&mut stanza);
            if done.sha256.is_some_and(&wanted) {
                debs.extend(done.into_deb()?);
            }
        }
    }
    if stanza.sha256.is_some_and(&wanted) {
        debs.extend(stanza.into_deb()?);
    }
    Ok(debs)
}

/// Reads a decompressed Packages file from `input` one stanza at a time and hands each .deb
/// to `each`: what is held is one stanza, whatever the size of the file. Stops at the first
/// error, of the file or of `each`.
pub fn read<R: BufRead, E: From<ParseError>>(
    mut input: R,
    mut each: impl FnMut(Deb) -> Result<(), E>,
) -> Result<(), E> {
    let mut text = String::new();
    loop {
        let start = text.len();
        let read = <&mut R as std::io::Read>::take(&mut input, MAX_STANZA_BYTES + 1 - start as u64)
            .read_line(&mut text)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidData => ParseError::Syntax("Packages is not UTF-8".into()),
                _ => crate::compress::read_error(e),
            })?;
        if text.len() as u64 > MAX_STANZA_BYTES {
            return Err(ParseError::Syntax(format!("a stanza longer than {MAX_STANZA_BYTES} bytes")).into());
        }
        let line = text[start..].trim_end_matches('\n').trim_end_matches('\r');
        if read != 0 && !line.is_empty() {
            continue;
        }
        let mut stanza = Stanza::default();
        for line in text.split('\n') {
            stanza.read(line);
        }
        if let Some(deb) = stanza.into_deb()? {
            each(deb)?;
        }
        text.clear();
        if read == 0 {
            return Ok(());
        }
    }
}

impl<'a> Stanza<'a> {
    /// Takes in one line; true at the blank line that ends a stanza.
    fn read(&mut self, line: &'a str) -> bool {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some(&first) = line.as_bytes().first() else {
            return true;
        };
        // Most lines are continuations or fields we do not read.
        if !matches!(first, b'P' | b'V' | b'A' | b'F' | b'S') {
            return false;
        }
        let Some((field, value)) = line.split_once(':') else { return false };
        let value = value.trim();
        match field {
            "Package" => self.package = Some(value),
            "Version" => self.version = Some(value),
            "Architecture" => self.arch = Some(value),
            "Filename" => self.filename = Some(value),
            "SHA256" => self.sha256 = Some(value),
            "Size" => self.size = Some(value),
            _ => {}
        }
        false
    }
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

    /// The stream reader finds what the whole-file parser finds, stanza by stanza, through a
    /// reader that hands out a few bytes at a time.
    #[test]
    fn reads_a_stream_like_the_whole_file() {
        let hash = |n: u32| format!("{n:064x}");
        let mut text = String::new();
        for n in 0..50 {
            let epoch = if n % 7 == 0 { "1:" } else { "" };
            text.push_str(&format!(
                "Package: p{n}\nVersion: {epoch}{n}.0\nArchitecture: amd64\nDescription: x\n long\n  text\n\
                 Filename: pool/main/p/p{n}/p{n}_{n}.0_amd64.deb\nSize: {n}\nSHA256: {}\n\n",
                hash(n)
            ));
        }
        text.push_str("Package: nohash\nFilename: pool/x.deb\n\n\n\nPackage: last\nFilename: pool/l.deb\nSHA256: ");
        text.push_str(&hash(99));
        let whole = parse(text.as_bytes()).unwrap();
        let mut streamed = Vec::new();
        let slow = std::io::BufReader::with_capacity(7, text.as_bytes());
        read(slow, |deb| -> Result<(), ParseError> {
            streamed.push(deb);
            Ok(())
        })
        .unwrap();
        assert_eq!(streamed.len(), 51);
        assert_eq!(streamed, whole);
        assert_eq!(streamed[7].archive_name.as_deref(), Some("p7_1%3a7.0_amd64.deb"));

        let bad = read(&b"Filename: a\nSize: ten\nSHA256: 00\n"[..], |_| -> Result<(), ParseError> { Ok(()) });
        assert!(bad.is_err());
        let huge = format!("Package: a\nDescription: {}\n", "x".repeat(MAX_STANZA_BYTES as usize));
        let err = read(huge.as_bytes(), |_| -> Result<(), ParseError> { Ok(()) }).unwrap_err();
        assert!(matches!(err, ParseError::Syntax(why) if why.contains("longer")));
    }
}
