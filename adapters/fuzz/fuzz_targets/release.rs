//! Release and InRelease, signed or not, and the framing of detached signatures.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vzpkg_adapters::armor::detached(data);
    if let Ok(release) = vzpkg_adapters::apt::release::parse(data) {
        for f in release.files {
            assert_eq!(f.sha256.len(), 64);
            assert!(!f.path.split('/').any(|s| s == ".."), "an unsafe path got through");
        }
    }
});
