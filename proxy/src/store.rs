//! The content-addressed blob store: `blobs/ab/abcdef…` named by sha256. A blob is written under
//! `tmp/` on the same filesystem, fsynced and renamed into place, so no reader ever sees a
//! half-written blob; whatever a crash leaves in `tmp/` is removed at the next start.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

pub struct Store {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store under `root` and clears leftovers of a crash.
    pub fn open(root: &Path) -> io::Result<Store> {
        let store = Store { blobs: root.join("blobs"), tmp: root.join("tmp") };
        fs::create_dir_all(&store.blobs)?;
        fs::create_dir_all(&store.tmp)?;
        for entry in fs::read_dir(&store.tmp)? {
            let entry = entry?;
            tracing::info!(file = %entry.path().display(), "removing an unfinished download left by an earlier run");
            fs::remove_file(entry.path())?;
        }
        Ok(store)
    }

    /// The store's paths under `root`, without creating or cleaning anything: for readers
    /// beside a running proxy.
    pub fn paths(root: &Path) -> Store {
        Store { blobs: root.join("blobs"), tmp: root.join("tmp") }
    }

    /// A new, empty temporary file for a download; it vanishes if dropped before `commit`.
    pub fn new_tmp(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new().prefix("dl-").tempfile_in(&self.tmp)
    }

    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blobs.join(&sha256_hex[..2]).join(sha256_hex)
    }

    /// Makes a finished download durable and visible under its hash. Blocking: call it from
    /// `spawn_blocking`.
    pub fn commit(&self, tmp: tempfile::NamedTempFile, sha256_hex: &str) -> io::Result<PathBuf> {
        let path = self.blob_path(sha256_hex);
        if path.exists() {
            return Ok(path); // same content already stored
        }
        // Read-only for everyone: no process, however it reached the file, may change a blob
        // in place; sandboxes whose root is unprivileged still read it through their view.
        tmp.as_file().set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
        tmp.as_file().sync_all()?;
        let dir = path.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn leftovers_are_cleared_and_commits_land_under_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut tmp = store.new_tmp().unwrap();
        tmp.write_all(b"half").unwrap();
        let left = tmp.into_temp_path().keep().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!left.exists(), "an unfinished download survived a restart");

        let mut tmp = store.new_tmp().unwrap();
        tmp.write_all(b"whole").unwrap();
        let hash = "ab".repeat(32);
        let path = store.commit(tmp, &hash).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o444);
        assert_eq!(path, dir.path().join("blobs/ab").join(&hash));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
