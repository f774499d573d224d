//! Decompression of repository index files by their name's ending (.gz, .xz, .zst, plain),
//! with a cap on the output so a hostile file cannot exhaust memory.

use std::io::Read;

use crate::ParseError;

/// Index files are tens of megabytes at most; anything far larger is refused.
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
}

impl Compression {
    /// From a file name such as `Packages.xz` or `abc-primary.xml.zst`.
    pub fn of(name: &str) -> Compression {
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "gz" => Compression::Gzip,
            "xz" => Compression::Xz,
            "zst" => Compression::Zstd,
            "bz2" => Compression::Bzip2,
            _ => Compression::None,
        }
    }
}

/// The decompressed content, at most `MAX_INDEX_BYTES`.
pub fn decompress(compression: Compression, bytes: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    let limit = MAX_INDEX_BYTES + 1;
    let result = match compression {
        Compression::None => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        Compression::Gzip => flate2::read::MultiGzDecoder::new(bytes).take(limit).read_to_end(&mut out).map(drop),
        Compression::Xz => {
            let mut capped = Capped { out: &mut out, left: limit };
            lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut capped)
                .map_err(|e| std::io::Error::other(e.to_string()))
        }
        Compression::Zstd => match ruzstd::decoding::StreamingDecoder::new(bytes) {
            Ok(decoder) => decoder.take(limit).read_to_end(&mut out).map(drop),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        },
        Compression::Bzip2 => return Err(ParseError::Unsupported("bzip2-compressed index")),
    };
    result.map_err(|e| ParseError::Decompress(e.to_string()))?;
    if out.len() as u64 > MAX_INDEX_BYTES {
        return Err(ParseError::TooLarge);
    }
    Ok(out)
}

/// A writer that refuses to grow past its limit.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    left: u64,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other("decompressed index too large"));
        }
        self.left -= buf.len() as u64;
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_round_trip_and_garbage() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"Package: a\n").unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress(Compression::of("Packages.gz"), &gz).unwrap(), b"Package: a\n");
        assert!(decompress(Compression::Gzip, b"not gzip").is_err());
        assert!(decompress(Compression::Xz, b"not xz").is_err());
        assert!(decompress(Compression::Zstd, b"not zstd").is_err());
    }

    #[test]
    fn xz_round_trip() {
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"Package: b\n"[..], &mut xz).unwrap();
        assert_eq!(decompress(Compression::of("Packages.xz"), &xz).unwrap(), b"Package: b\n");
    }

    #[test]
    fn zstd_frame() {
        // `printf 'Package: z\n' | zstd -19`
        let frame = [
            0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x68, 0x59, 0x00, 0x00, 0x50, 0x61, 0x63, 0x6b, 0x61, 0x67, 0x65, 0x3a, 0x20,
            0x7a, 0x0a, 0xe3, 0xce, 0x32, 0xf4,
        ];
        assert_eq!(decompress(Compression::of("x-primary.xml.zst"), &frame).unwrap(), b"Package: z\n");
    }

    #[test]
    fn names() {
        assert_eq!(Compression::of("Packages"), Compression::None);
        assert_eq!(Compression::of("x-primary.xml.zst"), Compression::Zstd);
        assert_eq!(Compression::of("Packages.bz2"), Compression::Bzip2);
    }
}
