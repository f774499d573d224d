//! The read-only view of the shared cache that a container's package manager gets: the verified
//! .deb blobs, under the names apt gives downloaded archives. Read from the catalog's database
//! (read-only, beside a running proxy), so the wrapper needs no proxy round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;
use crate::store::Store;

/// `name_version_arch.deb` → the blob that holds it.
pub type DebView = BTreeMap<String, PathBuf>;

/// Every verified .deb for one of `arches` (say the container's own and `all`) whose blob is
/// in the store. An absent cache is an empty view.
pub fn deb_view(cache_dir: &Path, arches: &[&str]) -> Result<DebView> {
    let db = cache_dir.join("index.sqlite");
    if !db.exists() {
        return Ok(DebView::new());
    }
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Only what the chain vouches for, and only the copy it vouches for.
    let mut stmt = conn.prepare(
        "SELECT x.archive_name, n.blob FROM entries n JOIN expected x ON x.key = n.key
         WHERE n.verified = 1 AND x.sha256 = n.blob AND x.archive_name IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let blobs = Store::paths(cache_dir);
    let mut view = DebView::new();
    for row in rows {
        let (name, blob) = row?;
        let wanted = arches.iter().any(|a| name.ends_with(&format!("_{a}.deb")));
        let path = blobs.blob_path(&blob);
        if wanted && !name.contains('/') && path.exists() {
            view.entry(name).or_insert(path);
        }
    }
    Ok(view)
}
