//! primary.xml: the SHA256 and size of every .rpm, by its path from the repository base.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::repomd::{attr, xml_error};
use crate::{FileHash, ParseError};

/// One `<package>` as far as it has been read.
#[derive(Default)]
struct Partial {
    sha256: Option<String>,
    href: Option<String>,
    size: Option<u64>,
    /// `xml:base` points elsewhere: not this repository's file.
    elsewhere: bool,
}

/// Parses a decompressed primary.xml. Packages with a non-SHA256 checksum, or stored elsewhere
/// (`xml:base`), are skipped: they stay unverified.
pub fn parse(bytes: &[u8]) -> Result<Vec<FileHash>, ParseError> {
    let mut out = Vec::new();
    read(bytes, |file| -> Result<(), ParseError> {
        out.push(file);
        Ok(())
    })?;
    Ok(out)
}

/// Reads a decompressed primary.xml from `input` as a stream and hands each package's file
/// to `each`: what is held is one element, whatever the size of the file.
pub fn read<E: From<ParseError>>(
    input: impl std::io::BufRead,
    mut each: impl FnMut(FileHash) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut package: Option<Partial> = None;
    let mut in_checksum = false;
    loop {
        match reader.read_event_into(&mut buf).map_err(xml_error)? {
            Event::Start(e) if e.name().as_ref() == b"package" => package = Some(Partial::default()),
            Event::Start(e) if package.is_some() && e.name().as_ref() == b"checksum" => {
                in_checksum = attr(&e, b"type")?.as_deref() == Some("sha256");
            }
            Event::Start(e) | Event::Empty(e) if package.is_some() => {
                let p = package.as_mut().expect("checked");
                match e.name().as_ref() {
                    b"size" => {
                        if let Some(size) = attr(&e, b"package")? {
                            p.size = Some(size.parse().map_err(|_| ParseError::Syntax(format!("bad size {size:?}")))?);
                        }
                    }
                    b"location" => {
                        p.href = attr(&e, b"href")?;
                        p.elsewhere = attr(&e, b"xml:base")?.is_some();
                    }
                    _ => {}
                }
            }
            Event::Text(t) if in_checksum => {
                if let Some(p) = package.as_mut() {
                    p.sha256 = Some(t.unescape().map_err(xml_error)?.trim().to_string());
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"checksum" => in_checksum = false,
                b"package" => {
                    if let Some(Partial { sha256: Some(sha), href: Some(href), size, elsewhere: false }) =
                        package.take()
                    {
                        each(FileHash::new(&href, &sha, size)?)?;
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_packages() {
        let xml = br#"<?xml version="1.0"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="2">
<package type="rpm"><name>a</name><arch>noarch</arch>
  <checksum type="sha256" pkgid="YES">e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855</checksum>
  <size package="1234" installed="10" archive="20"/>
  <location href="Packages/noarch/a-1-1.noarch.rpm"/>
</package>
<package type="rpm"><name>b</name>
  <checksum type="sha256" pkgid="YES">e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855</checksum>
  <location xml:base="http://elsewhere.example.org/" href="b.rpm"/>
</package>
</metadata>"#;
        let files = parse(xml).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "Packages/noarch/a-1-1.noarch.rpm");
        assert_eq!(files[0].size, Some(1234));
        assert!(parse(b"<metadata><package><size package='x'/></package></metadata>").is_err());
    }
}
