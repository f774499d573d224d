//! Request routing and path normalisation: whatever the request target, a route that is taken
//! names a file below its repository (no `..`, no control bytes), keeps `?` only for a real
//! query, and sends upstream only to the configured base URLs.
#![no_main]
use std::collections::BTreeMap;

use vzpkg_proxy::target::{route, Route};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(uri) = text.parse::<http::Uri>() else { return };
    let bases = vec!["http://a.example.org/debian/".to_string(), "https://b.example.org/d".to_string()];
    let remap = BTreeMap::from([("debian".to_string(), bases.clone())]);
    let Ok(Route::Fetch(target)) = route(&uri, &remap) else { return };
    // The file's path: after `remap:NAME/`, or after `scheme://authority` (whose host is
    // upstream's business, not a path below the repository).
    let without_query = target.key.split_once('?').map_or(target.key.as_str(), |(path, _)| path);
    let path = match target.host {
        None => without_query.strip_prefix("remap:debian/").unwrap_or(without_query),
        Some(_) => without_query.splitn(4, '/').nth(3).unwrap_or(""),
    };
    assert!(!path.split('/').any(|s| s == ".." || s == "."), "{text:?} → {}", target.key);
    assert!(!path.chars().any(|c| c.is_control()), "{text:?} → {}", target.key);
    assert_eq!(target.key.contains('?'), uri.query().is_some(), "{text:?} → {}", target.key);
    if target.host.is_none() {
        assert!(target.key.starts_with("remap:debian/"), "{text:?} → {}", target.key);
        assert_eq!(target.upstreams.len(), bases.len());
        for (url, base) in target.upstreams.iter().zip(&bases) {
            assert!(url.starts_with(base.trim_end_matches('/')), "{text:?} → {url}");
        }
    } else {
        assert_eq!(target.upstreams.len(), 1);
    }
});
