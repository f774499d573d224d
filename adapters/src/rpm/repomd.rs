//! repomd.xml: the root of an rpm-md repository's hash chain. Gives the SHA256 and size of
//! each metadata file (primary, filelists …) by its path from the repository base.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{FileHash, ParseError};

#[derive(Debug, PartialEq)]
pub struct MetadataFile {
    /// `primary`, `filelists`, `other`, `modules` …
    pub kind: String,
    pub file: FileHash,
}

/// One `<data>` as far as it has been read.
#[derive(Default)]
struct Partial {
    kind: String,
    sha256: Option<String>,
    href: Option<String>,
    size: Option<u64>,
}

/// Entries whose checksum is not SHA256 are skipped: they cannot be verified here.
pub fn parse(bytes: &[u8]) -> Result<Vec<MetadataFile>, ParseError> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut data: Option<Partial> = None;
    let mut in_checksum = false;
    let mut in_size = false;
    loop {
        match reader.read_event_into(&mut buf).map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"data" => {
                data = Some(Partial { kind: attr(&e, b"type")?.unwrap_or_default(), ..Partial::default() });
            }
            Event::Start(e) if data.is_some() && e.name().as_ref() == b"checksum" => {
                in_checksum = attr(&e, b"type")?.as_deref() == Some("sha256");
            }
            Event::Start(e) if data.is_some() && e.name().as_ref() == b"size" => in_size = true,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"location" => {
                if let Some(d) = data.as_mut() {
                    d.href = attr(&e, b"href")?;
                }
            }
            Event::Text(t) => {
                if let Some(d) = data.as_mut() {
                    let text = t.unescape().map_err(xml_error)?.trim().to_string();
                    if in_checksum {
                        d.sha256 = Some(text);
                    } else if in_size {
                        d.size = Some(text.parse().map_err(|_| ParseError::Syntax(format!("bad size {text:?}")))?);
                    }
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"checksum" => in_checksum = false,
                b"size" => in_size = false,
                b"data" => {
                    if let Some(Partial { kind, sha256: Some(sha), href: Some(href), size }) = data.take() {
                        out.push(MetadataFile { kind, file: FileHash::new(&href, &sha, size)? });
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

pub(crate) fn attr(e: &quick_xml::events::BytesStart, name: &[u8]) -> Result<Option<String>, ParseError> {
    for a in e.attributes() {
        let a = a.map_err(|e| ParseError::Syntax(e.to_string()))?;
        if a.key.as_ref() == name {
            return Ok(Some(a.unescape_value().map_err(xml_error)?.into_owned()));
        }
    }
    Ok(None)
}

pub(crate) fn xml_error(e: quick_xml::Error) -> ParseError {
    match e {
        // A read of the decompressed stream failed: the file was not XML's fault.
        quick_xml::Error::Io(io) if crate::compress::is_past_cap(&io) => ParseError::TooLarge,
        quick_xml::Error::Io(io) => ParseError::Decompress(io.to_string()),
        e => ParseError::Syntax(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sha256_data_entries() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>
  <data type="primary">
    <checksum type="sha256">e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855</checksum>
    <open-checksum type="sha256">0000000000000000000000000000000000000000000000000000000000000000</open-checksum>
    <location href="repodata/e3-primary.xml.gz"/>
    <size>807</size><open-size>3000</open-size>
  </data>
  <data type="old"><checksum type="sha">abc</checksum><location href="repodata/old.xml.gz"/></data>
</repomd>"#;
        let files = parse(xml).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].kind, "primary");
        assert_eq!(files[0].file.path, "repodata/e3-primary.xml.gz");
        assert_eq!(files[0].file.size, Some(807));
        assert!(parse(b"<repomd><data type='x'><size>zz</size></data></repomd>").is_err());
    }
}
