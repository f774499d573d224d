//! Packages files, plain or compressed: the first byte picks the compression.
#![no_main]
use vzpkg_adapters::compress::{decompress, Compression};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let compression = [Compression::None, Compression::Gzip, Compression::Xz, Compression::Zstd][pick as usize % 4];
    if let Ok(text) = decompress(compression, rest) {
        if let Ok(files) = vzpkg_adapters::apt::packages::parse(&text) {
            for deb in files {
                let path = &deb.file.path;
                assert!(!path.starts_with('/') && !path.split('/').any(|s| s == ".."));
            }
        }
    }
});
