//! Packages files, plain or compressed: the first byte picks the compression. The stream reader
//! (what the proxy learns with) must find what the whole-file parser finds.
#![no_main]
use vzpkg_adapters::apt::packages;
use vzpkg_adapters::compress::{self, decompress, Compression};
use vzpkg_adapters::ParseError;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let compression = [Compression::None, Compression::Gzip, Compression::Xz, Compression::Zstd][pick as usize % 4];
    let mut streamed = Vec::new();
    let read = compress::reader(compression, rest).and_then(|input| {
        packages::read(input, |deb| -> Result<(), ParseError> {
            streamed.push(deb);
            Ok(())
        })
    });
    if let Ok(text) = decompress(compression, rest) {
        if let Ok(files) = packages::parse(&text) {
            for deb in &files {
                let path = &deb.file.path;
                assert!(!path.starts_with('/') && !path.split('/').any(|s| s == ".."));
            }
            // Shorter than a stanza may be: the stream reader has no reason to refuse it.
            if text.len() as u64 <= packages::MAX_STANZA_BYTES {
                assert!(read.is_ok(), "{read:?}");
                assert_eq!(streamed, files);
            }
        }
    }
});
