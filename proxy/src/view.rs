//! What the wrapper may show a container of the shared cache: blobs whose content the hash chain
//! has verified. Read from the catalog's database (read-only, beside a running proxy), so the
//! wrapper needs no proxy round trip.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::store::Store;

/// The store's verified blobs: their sha256 and where each lives.
pub struct Verified {
    hashes: HashSet<String>,
    store: Store,
}

impl Verified {
    /// Reads the set from `cache_dir`; an absent cache is an empty set.
    pub fn read(cache_dir: &Path) -> Result<Verified> {
        let store = Store::paths(cache_dir);
        let db = cache_dir.join("index.sqlite");
        if !db.exists() {
            return Ok(Verified { hashes: HashSet::new(), store });
        }
        Ok(Verified { hashes: Catalog::verified_blobs(&db)?, store })
    }

    /// Whether a blob with this sha256 is stored verified.
    pub fn contains(&self, sha256: &str) -> bool {
        self.hashes.contains(sha256)
    }

    /// Where the verified blob with this sha256 is, if the store has one.
    pub fn blob(&self, sha256: &str) -> Option<PathBuf> {
        let path = self.store.blob_path(sha256);
        (self.hashes.contains(sha256) && path.exists()).then_some(path)
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}
