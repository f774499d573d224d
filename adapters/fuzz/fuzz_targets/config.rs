//! The proxy's config parser: any text either parses into a config that validation accepts or
//! refuses with a message, and any size string parses or is refused; nothing panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(n) = vzpkg_proxy::parse_size(text) {
        // A bare number of bytes reads back as itself.
        assert_eq!(vzpkg_proxy::parse_size(&n.to_string()), Ok(n));
    }
    if let Ok(config) = toml::from_str::<vzpkg_proxy::Config>(text) {
        if config.validate().is_ok() {
            assert!(!config.listen.is_empty());
            assert!(config.connections.max >= 1 && config.connections.max_per_client >= 1);
        }
    }
});
