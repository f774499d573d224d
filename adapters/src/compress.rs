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
    decompress_at_most(compression, bytes, MAX_INDEX_BYTES)
}

/// The decompressed content, refused as `TooLarge` past `cap` bytes. Decoding stops one byte
/// past the cap, so a small file that would expand to gigabytes costs no more than `cap`.
fn decompress_at_most(compression: Compression, bytes: &[u8], cap: u64) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    let limit = cap + 1;
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
    // Past the cap first: the xz writer refuses the write that would cross it, which the
    // decoder reports as an error of its own.
    if out.len() as u64 > cap || (compression == Compression::Xz && result.is_err() && out.len() as u64 == limit) {
        return Err(ParseError::TooLarge);
    }
    result.map_err(|e| ParseError::Decompress(e.to_string()))?;
    Ok(out)
}

/// A writer that refuses to grow past its limit: it takes what fits, then fails.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    left: u64,
}

impl std::io::Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("decompressed index too large"));
        }
        let n = buf.len().min(self.left as usize);
        self.left -= n as u64;
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
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

    /// A megabyte of zeros, which every format squeezes into a few hundred bytes: past a cap of
    /// 64 KiB it is refused as too large, at the cap it is whole. Without the cap (or with the
    /// check after decoding gone) the first assertion fails.
    #[test]
    fn output_past_the_cap_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        // `head -c 1048576 /dev/zero | xz -9 --check=crc32` (lzma-rs's own encoder does not compress)
        let xz = include_bytes!("../testdata/zeros-1mib.xz").to_vec();
        let zst = zstd_rle(0, 1 << 20);
        for (compression, bytes) in [(Compression::Gzip, &gz), (Compression::Xz, &xz), (Compression::Zstd, &zst)] {
            assert!(bytes.len() < 64 << 10, "{compression:?} bomb is {} bytes", bytes.len());
            let len = |cap| decompress_at_most(compression, bytes, cap).map(|out| out.len());
            assert_eq!(len(64 << 10), Err(ParseError::TooLarge), "{compression:?}");
            assert_eq!(len(1 << 20), Ok(1 << 20), "{compression:?}");
            assert_eq!(len((1 << 20) - 1), Err(ParseError::TooLarge), "{compression:?}");
        }
        let plain = decompress_at_most(Compression::None, &zeros, 1000).map(|out| out.len());
        assert_eq!(plain, Err(ParseError::TooLarge));
    }

    /// A zstd frame of `len` copies of `byte`, as RLE blocks of at most 128 KiB (RFC 8878).
    fn zstd_rle(byte: u8, len: usize) -> Vec<u8> {
        // Magic; frame header: no checksum, no content size; window descriptor 2^(10+7) = 128 KiB.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38];
        let mut left = len;
        while left > 0 {
            let n = left.min(128 << 10);
            left -= n;
            let header = (n as u32) << 3 | 1 << 1 | u32::from(left == 0);
            frame.extend_from_slice(&header.to_le_bytes()[..3]);
            frame.push(byte);
        }
        frame
    }

    #[test]
    fn names() {
        assert_eq!(Compression::of("Packages"), Compression::None);
        assert_eq!(Compression::of("x-primary.xml.zst"), Compression::Zstd);
        assert_eq!(Compression::of("Packages.bz2"), Compression::Bzip2);
    }
}
