//! The OpenPGP framing of a repository's signed roots, checked as apt checks it: an InRelease is
//! one clearsigned message and nothing else; a detached signature (Release.gpg, repomd.xml.asc)
//! is armored signature blocks and nothing else. gpgv verifies the signed part of a file and
//! says nothing about text around it, so a reader that took in that text would trust lines no
//! signature covers. Files with such text are refused, never trimmed.

use crate::ParseError;

const BEGIN_MESSAGE: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &str = "-----END PGP SIGNATURE-----";

/// An armor line: the only lines that start with five dashes (text lines that do are
/// dash-escaped inside a clearsigned message).
fn is_armor(line: &str) -> bool {
    line.starts_with("-----")
}

/// The signed text of a clearsigned message, dash-escaping undone, or `None` for a text that
/// carries no armor at all (an unsigned Release). Refused: anything before the message's first
/// line, anything but blank lines after its signature (a second message included), and armor
/// lines where none belong.
///
/// Lines are compared without trailing whitespace, which a clearsigned signature does not cover
/// either.
pub fn clearsigned(text: &str) -> Result<Option<String>, ParseError> {
    let mut lines = text.lines().map(str::trim_end);
    if lines.next() != Some(BEGIN_MESSAGE) {
        return match text.lines().map(str::trim_end).find(|l| is_armor(l)) {
            None => Ok(None),
            Some(BEGIN_MESSAGE) => Err(ParseError::Framing("text before the signed message")),
            Some(_) => Err(ParseError::Framing("OpenPGP armor in a file that is not clearsigned")),
        };
    }
    // Armor headers ("Hash: SHA512") end at the first empty line.
    loop {
        match lines.next() {
            None => return Err(ParseError::Framing("clearsigned message without a body")),
            Some("") => break,
            Some(line) if is_armor(line) || !line.contains(": ") => {
                return Err(ParseError::Framing("malformed armor header in a clearsigned message"))
            }
            Some(_) => {}
        }
    }
    let mut body = Vec::new();
    loop {
        match lines.next() {
            None => return Err(ParseError::Framing("clearsigned message without a signature")),
            Some(BEGIN_SIGNATURE) => break,
            Some(line) if is_armor(line) => {
                return Err(ParseError::Framing("an armor line that is not dash-escaped inside the signed text"))
            }
            Some(line) => body.push(line.strip_prefix("- ").unwrap_or(line)),
        }
    }
    signature_block(&mut lines)?;
    match lines.find(|l| !l.is_empty()) {
        None => Ok(Some(body.join("\n"))),
        Some(BEGIN_MESSAGE) => Err(ParseError::Framing("more than one signed message")),
        Some(_) => Err(ParseError::Framing("text after the signature")),
    }
}

/// Checks that a detached signature is one or more armored signature blocks with nothing but
/// blank lines around them (apt refuses binary signatures and any other text as well).
pub fn detached(bytes: &[u8]) -> Result<(), ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::Framing("signature is not ASCII-armored"))?;
    let mut lines = text.lines().map(str::trim_end);
    let mut blocks = 0;
    while let Some(line) = lines.find(|l| !l.is_empty()) {
        if line != BEGIN_SIGNATURE {
            return Err(ParseError::Framing("text outside the signature blocks"));
        }
        signature_block(&mut lines)?;
        blocks += 1;
    }
    match blocks {
        0 => Err(ParseError::Framing("no ASCII-armored signature")),
        _ => Ok(()),
    }
}

/// The rest of a signature block, after its BEGIN line, up to and including its END line.
fn signature_block<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Result<(), ParseError> {
    for line in lines {
        if line == END_SIGNATURE {
            return Ok(());
        }
        if is_armor(line) {
            return Err(ParseError::Framing("an armor line inside a signature block"));
        }
    }
    Err(ParseError::Framing("signature block without its END line"))
}

/// The binary packets of an ASCII-armored public key block (`apt`'s `.asc` keyrings and
/// deb822's inline `Signed-By`), as gpgv's `--keyring` needs them.
pub fn dearmor_public_keys(text: &str) -> Result<Vec<u8>, ParseError> {
    let mut lines = text.lines().map(str::trim);
    if !lines.any(|l| l == "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        return Err(ParseError::Framing("no public key block"));
    }
    // Armor headers (`Comment: …`) end at the first blank line, if there are any.
    let mut body = String::new();
    let mut in_headers = true;
    for line in lines {
        if line == "-----END PGP PUBLIC KEY BLOCK-----" {
            return base64(&body).ok_or(ParseError::Framing("bad base64 in a public key block"));
        }
        if in_headers && line.contains(": ") {
            continue;
        }
        in_headers = false;
        if line.is_empty() || line.starts_with('=') {
            continue; // the blank line after the headers; the checksum line
        }
        body.push_str(line);
    }
    Err(ParseError::Framing("public key block without its END line"))
}

fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (value(c)? as u32) << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_blocks_are_dearmored() {
        let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\nmDMEZ2h\nkAA=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(dearmor_public_keys(armored).unwrap(), [0x98, 0x33, 0x04, 0x67, 0x68, 0x64, 0x00]);
        assert!(dearmor_public_keys("mDMEZ2h").is_err());
        assert!(dearmor_public_keys(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nm*ME\n-----END PGP PUBLIC KEY BLOCK-----"
        )
        .is_err());
    }

    const SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQ\n=abcd\n-----END PGP SIGNATURE-----\n";

    fn message(body: &str) -> String {
        format!("{BEGIN_MESSAGE}\nHash: SHA512\n\n{body}\n{SIGNATURE}")
    }

    #[test]
    fn the_signed_text_is_the_body_unescaped() {
        let text = message("Suite: stable\n- -----not armor\n- -dash");
        assert_eq!(clearsigned(&text).unwrap().unwrap(), "Suite: stable\n-----not armor\n-dash");
        let crlf = text.replace('\n', "\r\n") + "\r\n\r\n";
        assert_eq!(clearsigned(&crlf).unwrap().unwrap(), "Suite: stable\n-----not armor\n-dash");
        assert_eq!(clearsigned("Suite: stable\nSHA256:\n").unwrap(), None, "unsigned text has no armor");
    }

    #[test]
    fn text_outside_the_message_is_refused() {
        let good = message("Suite: stable");
        let cases = [
            (format!("SHA256:\n 00 1 extra\n\n{good}"), "text before the signed message"),
            (format!("\n{good}"), "text before the signed message"),
            (format!("{good}SHA256:\n 00 1 extra\n"), "text after the signature"),
            (format!("{good}{good}"), "more than one signed message"),
            (format!("{good}{SIGNATURE}"), "text after the signature"),
            (message("Suite: x\n-----BEGIN PGP SIGNED MESSAGE-----"), "not dash-escaped"),
            (format!("Suite: x\n{SIGNATURE}"), "not clearsigned"),
            (format!("{BEGIN_MESSAGE}\nHash: SHA512\n\nSuite: x\n"), "without a signature"),
            (format!("{BEGIN_MESSAGE}\nHash: SHA512\n"), "without a body"),
            (format!("{BEGIN_MESSAGE}\nnot a header\n\nSuite: x\n{SIGNATURE}"), "armor header"),
            (good.replace(END_SIGNATURE, ""), "without its END line"),
        ];
        for (text, why) in cases {
            let err = clearsigned(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err} (wanted {why:?})");
        }
    }

    #[test]
    fn detached_signatures_are_signature_blocks_only() {
        assert!(detached(SIGNATURE.as_bytes()).is_ok());
        assert!(detached(format!("\n{SIGNATURE}\n{SIGNATURE}\n").as_bytes()).is_ok());
        for bad in [
            format!("Suite: x\n{SIGNATURE}"),
            format!("{SIGNATURE}trailing\n"),
            message("Suite: x"),
            SIGNATURE.replace(END_SIGNATURE, ""),
            String::new(),
        ] {
            assert!(detached(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(detached(&[0x89, 0x01, 0xb3, 0xff]).is_err(), "binary signatures are refused");
    }
}
