//! Decompression of repository index files by their name's ending (.gz, .xz, .zst, plain),
//! as a stream, with a cap on the output so a hostile file cannot exhaust memory or disk time.

use std::io::{BufRead, BufReader, Read};

use crate::ParseError;

/// Index files are tens of megabytes at most; anything far larger is refused.
pub const MAX_INDEX_BYTES: u64 = 1 << 30;

/// The most memory an xz decoder may take: `xz -9` needs 65 MiB, the usual `-6` 9 MiB. A
/// header asking for more is refused, not obeyed.
pub const MAX_XZ_MEMORY: u64 = 80 << 20;

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

/// The decompressed content of `input` as a stream of at most `MAX_INDEX_BYTES`: what is
/// held in memory is the decoder's window and a read buffer, never the file. A read past the
/// cap fails with an error that [`read_error`] turns into `TooLarge`.
pub fn reader<'a>(compression: Compression, input: impl BufRead + 'a) -> Result<Box<dyn BufRead + 'a>, ParseError> {
    reader_at_most(compression, input, MAX_INDEX_BYTES)
}

/// What a failed read of a [`reader`] means.
pub fn read_error(e: std::io::Error) -> ParseError {
    if is_past_cap(&e) {
        return ParseError::TooLarge;
    }
    ParseError::Decompress(e.to_string())
}

pub(crate) fn is_past_cap(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<PastCap>())
}

fn reader_at_most<'a>(
    compression: Compression,
    input: impl BufRead + 'a,
    cap: u64,
) -> Result<Box<dyn BufRead + 'a>, ParseError> {
    let decoded: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        // The .xz format only (the legacy .lzma one states any window size it likes), every
        // stream of a multi-stream file as xz(1) reads it, within a memory limit.
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(MAX_XZ_MEMORY, liblzma::stream::CONCATENATED)
                .map_err(|e| ParseError::Decompress(e.to_string()))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| ParseError::Decompress(e.to_string()))?)
        }
        Compression::Bzip2 => return Err(ParseError::Unsupported("bzip2-compressed index")),
    };
    Ok(Box::new(BufReader::with_capacity(64 << 10, Capped { inner: decoded, left: cap })))
}

/// Decoding stops one byte past the cap, so a small file that would expand to gigabytes costs
/// no more than `cap`.
fn decompress_at_most(compression: Compression, bytes: &[u8], cap: u64) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    reader_at_most(compression, bytes, cap)?.read_to_end(&mut out).map_err(read_error)?;
    Ok(out)
}

/// The marker of a read past the cap.
#[derive(Debug)]
struct PastCap;

impl std::fmt::Display for PastCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed index too large")
    }
}

impl std::error::Error for PastCap {}

/// A reader that fails once its input goes on past `left` bytes.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // At the cap: the file is whole only if nothing follows.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(PastCap)),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
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
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(b"Package: b\n").unwrap();
        let xz = xz.finish().unwrap();
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
        // `head -c 1048576 /dev/zero | xz -9 --check=crc32`
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

    /// A legacy .lzma header declaring a 4 GiB window (what the fuzzer found the auto-detecting
    /// decoder would allocate) and an .xz stream needing more than the limit are refused.
    #[test]
    fn xz_headers_cannot_ask_for_gigabytes() {
        let mut lzma = vec![0x5d, 0xff, 0xff, 0xff, 0xff];
        lzma.extend_from_slice(&[0xff; 8]);
        lzma.extend_from_slice(&[0; 16]);
        assert!(matches!(decompress(Compression::Xz, &lzma), Err(ParseError::Decompress(_))));
        let mut options = liblzma::stream::LzmaOptions::new_preset(0).unwrap();
        options.dict_size(1 << 27);
        let mut filters = liblzma::stream::Filters::new();
        filters.lzma2(&options);
        let stream = liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32).unwrap();
        let mut xz = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
        xz.write_all(b"Package: big-window\n").unwrap();
        let xz = xz.finish().unwrap();
        let err = decompress(Compression::Xz, &xz).unwrap_err();
        assert!(matches!(&err, ParseError::Decompress(why) if why.contains("memory")), "{err:?}");
    }

    #[test]
    fn names() {
        assert_eq!(Compression::of("Packages"), Compression::None);
        assert_eq!(Compression::of("x-primary.xml.zst"), Compression::Zstd);
        assert_eq!(Compression::of("Packages.bz2"), Compression::Bzip2);
    }
}
