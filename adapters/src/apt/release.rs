//! Release and InRelease: the root of a Debian archive's hash chain. Gives the SHA256 and size
//! of every index file of the suite, and whether the archive serves them by hash.

use crate::{FileHash, ParseError};

#[derive(Debug, Default, PartialEq)]
pub struct Release {
    /// Paths relative to the directory of the Release file (e.g. `main/binary-amd64/Packages.xz`).
    pub files: Vec<FileHash>,
    /// `Acquire-By-Hash: yes`: index files are also served at `DIR/by-hash/SHA256/HASH`.
    pub by_hash: bool,
}

/// Parses a Release file, or an InRelease (the same, clearsigned): only the signed text of an
/// InRelease, which must hold nothing else (see [`crate::armor`]). The signature is not checked
/// here: that is the caller's business, with a keyring.
pub fn parse(bytes: &[u8]) -> Result<Release, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::Syntax("Release is not UTF-8".into()))?;
    let signed = crate::armor::clearsigned(text)?;
    let body = signed.as_deref().unwrap_or(text);
    let mut release = Release::default();
    let mut in_sha256 = false;
    for line in body.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if in_sha256 {
                release.files.push(hash_line(line)?);
            }
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        in_sha256 = field.eq_ignore_ascii_case("SHA256");
        if field.eq_ignore_ascii_case("Acquire-By-Hash") {
            release.by_hash = value.trim().eq_ignore_ascii_case("yes");
        }
    }
    Ok(release)
}

/// ` <sha256> <size> <path>`
fn hash_line(line: &str) -> Result<FileHash, ParseError> {
    let mut parts = line.split_whitespace();
    let (Some(hash), Some(size), Some(path), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::Syntax(format!("bad SHA256 line {line:?}")));
    };
    let size = size.parse().map_err(|_| ParseError::Syntax(format!("bad size in {line:?}")))?;
    FileHash::new(path, hash, Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "Origin: Test\nSuite: stable\nAcquire-By-Hash: yes\nMD5Sum:\n d41d8cd98f00b204e9800998ecf8427e 0 main/binary-amd64/Packages\n\
SHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 0 main/binary-amd64/Packages\n \
0000000000000000000000000000000000000000000000000000000000000001 20 main/binary-amd64/Packages.xz\n";

    #[test]
    fn reads_sha256_entries_only() {
        let release = parse(RELEASE.as_bytes()).unwrap();
        assert!(release.by_hash);
        assert_eq!(release.files.len(), 2);
        assert_eq!(release.files[1].path, "main/binary-amd64/Packages.xz");
        assert_eq!(release.files[1].size, Some(20));
    }

    #[test]
    fn reads_clearsigned_inrelease() {
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{RELEASE}- -dash line\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
        );
        assert_eq!(parse(signed.as_bytes()).unwrap().files.len(), 2);
    }

    #[test]
    fn unsigned_entries_around_a_signed_message_are_refused_not_read() {
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{RELEASE}-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
        );
        let extra =
            "SHA256:\n 00000000000000000000000000000000000000000000000000000000000000ff 9 main/extra/Packages\n";
        assert!(parse(format!("{extra}\n{signed}").as_bytes()).is_err());
        assert!(parse(format!("{signed}{extra}").as_bytes()).is_err());
        assert!(parse(format!("{signed}{signed}").as_bytes()).is_err());
    }

    #[test]
    fn refuses_malformed_lines() {
        assert!(parse(b"SHA256:\n abc 12\n").is_err());
        assert!(parse(b"SHA256:\n e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 x p\n").is_err());
        assert!(parse(b"SHA256:\n nothex 1 p\n").is_err());
        assert!(parse(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nSuite: x\n").is_err());
    }
}
