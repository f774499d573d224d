//! Package-format knowledge shared by the proxy and the wrapper: what a repository path is
//! (an immutable package, an index to revalidate, something else), the hash chains of
//! repository indexes, and which upstream hosts a machine's own package-manager sources name.
//! Pure functions over bytes: no I/O here.

pub mod apt;
pub mod armor;
pub mod compress;
pub mod failed;
pub mod installed;
pub mod rpm;

/// Why an index could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("malformed index: {0}")]
    Syntax(String),
    #[error("cannot decompress index: {0}")]
    Decompress(String),
    #[error("index larger than {} bytes once decompressed", compress::MAX_INDEX_BYTES)]
    TooLarge,
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A signed file with text its signature does not cover, or armor where none belongs.
    #[error("{0}")]
    Framing(&'static str),
}

/// One file an index vouches for: its path (relative to the index's base), SHA256 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub path: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: Option<u64>,
}

impl FileHash {
    pub fn new(path: &str, sha256: &str, size: Option<u64>) -> Result<FileHash, ParseError> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError::Syntax(format!("{sha256:?} is not a SHA256")));
        }
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|s| s == ".." || s == ".") {
            return Err(ParseError::Syntax(format!("unsafe path {path:?}")));
        }
        Ok(FileHash { path: path.to_string(), sha256: sha256.to_ascii_lowercase(), size })
    }
}

/// What a path inside a package repository holds, which decides how the proxy caches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A package archive (.deb, .rpm, …): its name pins its content, so it is never revalidated.
    Package,
    /// A file addressed by its own hash (apt's `by-hash/`): immutable by construction.
    ByHash,
    /// Repository metadata that changes in place (InRelease, Packages, repomd.xml …):
    /// cached, and revalidated with a conditional request after a short TTL.
    Index,
    /// Anything else: passed through, never cached.
    Other,
}

impl FileKind {
    /// Whether a cached copy can be served forever without asking upstream again.
    pub fn is_immutable(self) -> bool {
        matches!(self, FileKind::Package | FileKind::ByHash)
    }

    /// Whether the proxy keeps this kind of file in its store at all.
    pub fn is_cached(self) -> bool {
        self != FileKind::Other
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Package => "package",
            FileKind::ByHash => "by-hash",
            FileKind::Index => "index",
            FileKind::Other => "other",
        }
    }
}

/// Classifies a URL path (without query) from any supported repository format.
pub fn classify(path: &str) -> FileKind {
    apt::classify(path).or_else(|| rpm::classify(path)).unwrap_or(FileKind::Other)
}

/// The last segment of a URL path.
/// The last component of a `/`-separated path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `host` or `host:port` of an http(s) URL, as the proxy's allowlist spells it.
fn url_authority(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_across_formats() {
        assert_eq!(classify("/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"), FileKind::Package);
        assert_eq!(classify("/fedora/Packages/h/hello-2.12-1.x86_64.rpm"), FileKind::Package);
        assert_eq!(classify("/debian/dists/stable/InRelease"), FileKind::Index);
        assert_eq!(classify("/repo/repodata/repomd.xml"), FileKind::Index);
        assert_eq!(classify("/debian/README"), FileKind::Other);
        assert_eq!(classify("/"), FileKind::Other);
    }

    #[test]
    fn authority_keeps_explicit_ports_only() {
        assert_eq!(url_authority("http://Mirror.Example.org/debian").as_deref(), Some("mirror.example.org"));
        assert_eq!(url_authority("https://mirror.example.org:8443/x").as_deref(), Some("mirror.example.org:8443"));
        assert_eq!(url_authority("file:///srv/repo"), None);
        assert_eq!(url_authority("not a url"), None);
    }
}
