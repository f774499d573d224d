//! Turns a request line into what to fetch: the cache key, the upstream URLs to try in order,
//! and the kind of file. Hostile paths (`..`, encoded dots or slashes, NUL, control bytes, empty
//! segments) are refused here, before anything looks at the store or the network.

use std::collections::BTreeMap;

use hyper::Uri;
use vzpkg_adapters::FileKind;

use crate::error::{Error, Result};

/// What a request asks for.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// `/_vzpkg/NAME`: the proxy's own endpoints (metrics, status).
    Internal(String),
    Fetch(Target),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Identifies the file in the catalog: `http://host[:port]/path` or `remap:NAME/path`, with
    /// percent escapes decoded, so that apt's `%2b` and an index's `+` name the same file.
    pub key: String,
    /// The upstream's name for per-upstream settings: the remap NAME, or `host[:port]`.
    pub origin: String,
    /// Upstream URLs, tried in order until one answers.
    pub upstreams: Vec<String>,
    pub kind: FileKind,
    /// For forward-proxy requests: `host` and port, which the access check needs.
    pub host: Option<(String, u16)>,
}

pub fn route(uri: &Uri, remap: &BTreeMap<String, Vec<String>>) -> Result<Route> {
    let path = uri.path();
    check_path(path)?;
    if let Some(query) = uri.query() {
        check_encoded(query)?;
    }
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);

    if let Some(scheme) = uri.scheme_str() {
        if !matches!(scheme, "http" | "https") {
            return Err(Error::BadRequest(format!("scheme {scheme} is not proxied")));
        }
        let host = uri.host().ok_or_else(|| Error::BadRequest("absolute URL without a host".into()))?;
        let host = host.to_ascii_lowercase();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = if port == default_port { host.clone() } else { format!("{host}:{port}") };
        let url = format!("{scheme}://{authority}{path_and_query}");
        let kind = vzpkg_adapters::classify(path);
        return Ok(Route::Fetch(Target {
            key: format!("{scheme}://{authority}{}", key_part(path, uri.query(), kind)?),
            origin: authority,
            upstreams: vec![url],
            kind,
            host: Some((host, port)),
        }));
    }

    let rest = path.strip_prefix('/').unwrap_or(path);
    let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some(endpoint) = name.strip_prefix("_vzpkg") {
        if endpoint.is_empty() {
            return Ok(Route::Internal(sub.to_string()));
        }
    }
    let bases = remap.get(name).ok_or_else(|| {
        Error::NotFound(format!(
            "no upstream is mapped to /{name}/: add `--remap {name}=URL`, or use vzpkg as an HTTP proxy"
        ))
    })?;
    let sub_and_query = &path_and_query[1 + name.len()..];
    let sub_and_query = sub_and_query.strip_prefix('/').unwrap_or(sub_and_query);
    let kind = vzpkg_adapters::classify(sub);
    Ok(Route::Fetch(Target {
        key: format!("remap:{name}/{}", key_part(sub, uri.query(), kind)?),
        origin: name.to_string(),
        upstreams: bases.iter().map(|base| format!("{}/{sub_and_query}", base.trim_end_matches('/'))).collect(),
        kind,
        host: None,
    }))
}

/// The path and query as the cache key has them: the path's escapes decoded, so that apt's
/// `%2b` and an index's `+` name the same file — except those of `%`, `?` and `#`, which stay
/// escaped so that `a%3fb` and `a?b` never share a key — and the query as sent. Index files
/// take no query: their names are what the chain of trust is checked by.
fn key_part(path: &str, query: Option<&str>, kind: FileKind) -> Result<String> {
    if query.is_some() && matches!(kind, FileKind::Index | FileKind::ByHash) {
        return Err(Error::BadRequest("query strings are refused on repository index files".into()));
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Error::BadRequest("path refused: escapes that do not decode to UTF-8".into()))?;
    // Raw or escaped, C1 controls (U+0080–U+009F) are control bytes too, and would reach logs.
    if decoded.chars().any(char::is_control) {
        return Err(Error::BadRequest("path refused: control characters".into()));
    }
    let mut key = String::with_capacity(decoded.len() + query.map_or(0, |q| q.len() + 1));
    for c in decoded.chars() {
        match c {
            '%' => key.push_str("%25"),
            '?' => key.push_str("%3F"),
            '#' => key.push_str("%23"),
            c => key.push(c),
        }
    }
    if let Some(query) = query {
        key.push('?');
        key.push_str(query);
    }
    Ok(key)
}

/// Refuses any path that could mean something other than a plain file below the repository root.
fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::BadRequest(format!("path refused: {why}")));
    if !path.starts_with('/') {
        return bad("it must start with '/'");
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return bad("control bytes or backslashes");
    }
    check_encoded(path)?;
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "." || *segment == ".." {
            return bad("'.' and '..' segments");
        }
        if segment.is_empty() && i + 1 != segments.len() {
            return bad("empty segments ('//')");
        }
    }
    Ok(())
}

/// Percent escapes that decode to dots, slashes, backslashes, NUL or control bytes are refused,
/// as are malformed escapes: an upstream could decode them into a traversal.
fn check_encoded(s: &str) -> Result<()> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let hex = bytes.get(at + 1..at + 3).and_then(|h| std::str::from_utf8(h).ok());
        let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        match value {
            None => return Err(Error::BadRequest("path refused: malformed percent escape".into())),
            Some(b'.' | b'/' | b'\\') => {
                return Err(Error::BadRequest("path refused: encoded '.', '/' or '\\'".into()))
            }
            Some(v) if v < 0x20 || v == 0x7f => {
                return Err(Error::BadRequest("path refused: encoded NUL or control byte".into()))
            }
            Some(_) => {}
        }
        i = at + 3;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remap() -> BTreeMap<String, Vec<String>> {
        BTreeMap::from([(
            "debian".to_string(),
            vec!["http://a.example.org/debian/".to_string(), "http://b.example.org/d".to_string()],
        )])
    }

    fn fetch(uri: &str) -> Target {
        match route(&uri.parse().unwrap(), &remap()).unwrap() {
            Route::Fetch(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forward_form_keeps_the_url() {
        let t = fetch("http://Mirror.Example.org:8080/debian/pool/a_1_all.deb");
        assert_eq!(t.key, "http://mirror.example.org:8080/debian/pool/a_1_all.deb");
        assert_eq!(t.host, Some(("mirror.example.org".into(), 8080)));
        assert_eq!(t.kind, FileKind::Package);
        assert_eq!(fetch("http://mirror.example.org:80/x").key, "http://mirror.example.org/x");
    }

    #[test]
    fn remap_form_lists_every_base() {
        let t = fetch("/debian/dists/stable/InRelease");
        assert_eq!(t.key, "remap:debian/dists/stable/InRelease");
        assert_eq!(
            t.upstreams,
            ["http://a.example.org/debian/dists/stable/InRelease", "http://b.example.org/d/dists/stable/InRelease"]
        );
        assert_eq!(t.kind, FileKind::Index);
        let err = route(&"/nope/x".parse().unwrap(), &remap()).unwrap_err();
        assert_eq!(err.status(), 404);
    }

    #[test]
    fn internal_endpoints() {
        assert_eq!(route(&"/_vzpkg/metrics".parse().unwrap(), &remap()).unwrap(), Route::Internal("metrics".into()));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for path in [
            "/debian/../etc/passwd",
            "/debian/./x",
            "/debian/%2e%2e/etc/passwd",
            "/debian/%2E%2e/x",
            "/debian/a%2fb",
            "/debian/a%00b",
            "/debian/a%0ab",
            "/debian//etc/passwd",
            "/debian/a%zz",
            "/debian/a%5c..",
            "http://mirror.example.org/../../etc/passwd",
            "http://mirror.example.org//etc/passwd",
            "http://mirror.example.org/x?a=%00",
            "/debian/pool/a%c2%9bb.deb",
            "/debian/pool/a\u{9b}b.deb",
        ] {
            let err = route(&path.parse().unwrap(), &remap()).unwrap_err();
            assert_eq!(err.status(), 400, "{path}");
        }
        // an epoch in a package file name is encoded as %3a and must pass
        assert_eq!(fetch("/debian/pool/a_1%3a2.0_all.deb").kind, FileKind::Package);
    }

    /// An escaped `?` (or `%`, `#`) and the raw character are different files; other escapes
    /// name the same file as their decoded character.
    #[test]
    fn escapes_never_alias_the_query_or_each_other() {
        let escaped = fetch("/debian/pool/X%3fq.deb").key;
        let raw = fetch("/debian/pool/X.deb?q").key;
        assert_ne!(escaped, raw);
        assert_ne!(fetch("/debian/pool/X%3fq.deb").key, fetch("/debian/pool/X?q.deb").key);
        assert_ne!(fetch("/debian/pool/a%2525.deb").key, fetch("/debian/pool/a%25.deb").key);
        assert_ne!(fetch("/debian/pool/a%23b.deb").key, fetch("/debian/pool/a#b.deb").key);
        assert_eq!(fetch("/debian/pool/a%2bb_1%3a2.deb").key, "remap:debian/pool/a+b_1:2.deb");
        assert_eq!(fetch("http://mirror.example.org/p/X%3Fq.deb").key, "http://mirror.example.org/p/X%3Fq.deb");
    }

    /// An index root asked with a query is refused, never cached under a name that escapes the
    /// chain's checks.
    #[test]
    fn index_files_with_a_query_are_refused() {
        for uri in [
            "/debian/dists/stable/InRelease?x=1",
            "/debian/dists/stable/main/binary-amd64/Packages.xz?",
            "http://mirror.example.org/debian/dists/stable/Release?a",
        ] {
            let err = route(&uri.parse().unwrap(), &remap()).unwrap_err();
            assert_eq!(err.status(), 400, "{uri}");
        }
    }
}
