//! repomd.xml.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(files) = vzpkg_adapters::rpm::repomd::parse(data) {
        for m in files {
            assert_eq!(m.file.sha256.len(), 64);
        }
    }
});
