//! apt sources (both formats), rpm .repo files, and path classification.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for host in vzpkg_adapters::apt::source_hosts(text).into_iter().chain(vzpkg_adapters::rpm::repo_hosts(text)) {
        assert!(!host.is_empty() && !host.contains('/'), "{host:?}");
    }
    let _ = vzpkg_adapters::classify(text);
});
