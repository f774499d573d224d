//! The proxy's one error type. Each variant knows whose fault it is, so the mapping to an HTTP
//! status (4xx for the client, 502 for upstream, 500 for us) happens in exactly one place.

use hyper::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out in the cache's present state (prune after a failed
    /// index refresh).
    #[error("{0}")]
    Conflict(String),
    #[error("method {0} is not supported: vzpkg serves GET and HEAD")]
    Method(String),
    /// Upstream answered with an error status that clients should see as it is (404, 410 …).
    #[error("upstream answered {status}: {reason}")]
    UpstreamStatus { status: u16, reason: String },
    /// Upstream could not be reached or broke off.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// What upstream sent does not match the repository's own metadata or signature.
    #[error("verification failed: {0}")]
    Verify(String),
    // Not `#[from]`: the message already carries the cause, and a source would print it twice.
    /// Reading or writing the blob store failed.
    #[error("cache store: {0}")]
    Store(std::io::Error),
    /// The store's filesystem has no room: what is stored is still served, the rest passes
    /// through uncached.
    #[error("cache store full: {0}")]
    StoreFull(std::io::Error),
    /// Another process holds the cache directory.
    #[error("{0}")]
    Busy(String),
    /// A task of ours panicked or was cancelled: a bug, not a fault of either side.
    #[error("internal: {0}")]
    Internal(String),
    #[error("cache index: {0}")]
    Index(rusqlite::Error),
    #[error("cache index: {0}")]
    IndexIo(std::io::Error),
}

/// Only the catalog's own file work (its writer thread) converts implicitly; everything else
/// says which room an I/O error comes from (`Store`, `StoreFull`, `Busy`).
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::IndexIo(e)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl Error {
    /// A store write's error: `StoreFull` when the filesystem has no room left.
    pub fn store_write(e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::StorageFull {
            Error::StoreFull(e)
        } else {
            Error::Store(e)
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Index(e)
    }
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::Busy(_) => StatusCode::CONFLICT,
            Error::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::UpstreamStatus { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            Error::Upstream(_) | Error::Verify(_) => StatusCode::BAD_GATEWAY,
            Error::Config(_)
            | Error::Store(_)
            | Error::StoreFull(_)
            | Error::Index(_)
            | Error::IndexIo(_)
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
