//! The content-addressed blob store: `blobs/ab/abcdef…` named by sha256. A blob is written under
//! `tmp/` on the same filesystem, fsynced and renamed into place, so no reader ever sees a
//! half-written blob; whatever a crash leaves in `tmp/` is removed at the next start.
//!
//! The store also keeps the accounting of what it holds: every blob it commits, serves and
//! removes goes to its [`Eviction`] manager (size and last use per blob), and blobs being served
//! right now are *pinned*, so that pruning leaves them alone. Removing a blob never disturbs a
//! reader that has it open: the file lives on until the reader closes it.
//!
//! Serving reads a blob in one blocking call: small blobs whole into memory, where the hottest
//! stay (a bounded cache of `Bytes` shared by every client), larger ones mapped (one mapping for
//! all the clients of a blob at once), so that a hit costs no blocking-pool hop per chunk and no
//! copy in user space.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::catalog::now_secs;
use crate::evict::{Candidate, Eviction, Lru, Usage};

pub struct Store {
    blobs: PathBuf,
    tmp: PathBuf,
    eviction: Box<dyn Eviction>,
    /// Blobs being served right now, with how many readers each.
    pins: Arc<Mutex<HashMap<String, usize>>>,
    /// Small blobs served recently, by hash.
    hot: Option<quick_cache::sync::Cache<String, Bytes, ByLength>>,
    /// Large blobs mapped for clients being served now.
    mapped: Mutex<HashMap<String, Weak<memmap2::Mmap>>>,
    opened: Instant,
    /// Milliseconds after `opened` (plus one) when a write last found the filesystem full; 0: never.
    full_since: AtomicU64,
}

/// Free space a download leaves on the filesystem, for the catalog and the blobs' metadata.
const ROOM_RESERVE: u64 = 1 << 20;

/// How long a full filesystem is taken as still full before downloads try storing again.
pub const FULL_FOR: Duration = Duration::from_secs(10);

/// Blobs up to this size are read whole and may stay in memory; larger ones are mapped.
pub const SMALL_BLOB_MAX: u64 = 256 << 10;

/// The hot cache's default budget in bytes.
pub const HOT_CACHE_DEFAULT: u64 = 32 << 20;

/// A mapping shared by the bodies of every client of one blob.
struct SharedMap(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Weighs a cached blob by its length, so that the hot cache's budget is in bytes.
#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<String, Bytes> for ByLength {
    fn weight(&self, _key: &String, value: &Bytes) -> u64 {
        value.len().max(1) as u64
    }
}

fn hot_cache(budget: u64) -> Option<quick_cache::sync::Cache<String, Bytes, ByLength>> {
    // The estimate only sizes the table: a typical small package is some tens of KB.
    let items = (budget / (32 << 10)).max(16) as usize;
    (budget > 0).then(|| quick_cache::sync::Cache::with_weighter(items, budget, ByLength))
}

/// Keeps a blob pinned until dropped.
pub struct Pin {
    pins: Arc<Mutex<HashMap<String, usize>>>,
    blob: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap();
        if let Some(n) = pins.get_mut(&self.blob) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.blob);
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store under `root` and clears leftovers of a crash.
    /// Blocking: lists every blob for the accounting (last use from the file's times until
    /// [`Store::seed_access`] says better).
    pub fn open(root: &Path) -> io::Result<Store> {
        Self::open_with_hot_cache(root, 0)
    }

    /// [`Store::open`] with a hot cache of up to `hot_bytes` of small blobs (0: none).
    pub fn open_with_hot_cache(root: &Path, hot_bytes: u64) -> io::Result<Store> {
        let mut store = Self::paths(root);
        store.hot = hot_cache(hot_bytes);
        fs::create_dir_all(&store.blobs)?;
        fs::create_dir_all(&store.tmp)?;
        for entry in fs::read_dir(&store.tmp)? {
            let entry = entry?;
            tracing::info!(file = %entry.path().display(), "removing an unfinished download left by an earlier run");
            fs::remove_file(entry.path())?;
        }
        for shard in fs::read_dir(&store.blobs)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in fs::read_dir(shard.path())? {
                let blob = blob?;
                let name = blob.file_name().to_string_lossy().into_owned();
                let meta = blob.metadata()?;
                if meta.is_file() && is_blob_name(&name) {
                    store.eviction.admit(&name, meta.len(), meta.mtime().max(0) as u64);
                }
            }
        }
        Ok(store)
    }

    /// The store's paths under `root`, without creating, cleaning or listing anything: for
    /// readers beside a running proxy. Its accounting starts empty.
    pub fn paths(root: &Path) -> Store {
        Store {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            eviction: Box::new(Lru::default()),
            pins: Arc::default(),
            hot: None,
            mapped: Mutex::default(),
            opened: Instant::now(),
            full_since: AtomicU64::new(0),
        }
    }

    /// A blob's content if it is in the hot cache; never blocks.
    pub fn hot(&self, sha256_hex: &str) -> Option<Bytes> {
        self.hot.as_ref()?.get(sha256_hex)
    }

    /// A blob's content for serving, `None` when it is gone. Blocking: one call reads a small
    /// blob whole (and keeps it hot) or maps a larger one.
    pub fn load(&self, sha256_hex: &str) -> io::Result<Option<Bytes>> {
        // Clients of one large blob at once share its mapping, so that it is resident (and
        // counted in the proxy's RSS) once, not once per client.
        if let Some(map) = self.mapped.lock().unwrap().get(sha256_hex).and_then(Weak::upgrade) {
            return Ok(Some(Bytes::from_owner(SharedMap(map))));
        }
        let file = match File::open(self.blob_path(sha256_hex)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len <= SMALL_BLOB_MAX {
            let mut content = Vec::with_capacity(len as usize);
            io::Read::read_to_end(&mut io::Read::take(&file, len), &mut content)?;
            let content = Bytes::from(content);
            if let Some(hot) = &self.hot {
                hot.insert(sha256_hex.to_string(), content.clone());
            }
            return Ok(Some(content));
        }
        // SAFETY: a mapping goes wrong only if the file shrinks or changes under it. A blob never
        // does: it is read-only (0444) from the moment it is committed, nothing opens it for
        // writing, and removal unlinks it, which leaves the mapping intact. The pages are
        // populated here, on a blocking thread, so that sending them faults nothing in.
        let map = Arc::new(unsafe { memmap2::MmapOptions::new().populate().map(&file)? });
        let mut mapped = self.mapped.lock().unwrap();
        mapped.retain(|_, m| m.strong_count() > 0);
        mapped.insert(sha256_hex.to_string(), Arc::downgrade(&map));
        Ok(Some(Bytes::from_owner(SharedMap(map))))
    }

    /// Last uses recorded elsewhere (the catalog's access times), where later than the files'.
    pub fn seed_access(&self, used: impl IntoIterator<Item = (String, u64)>) {
        for (blob, at) in used {
            self.eviction.access(&blob, at);
        }
    }

    /// Records that a stored blob was served.
    pub fn touch(&self, sha256_hex: &str) {
        self.eviction.access(sha256_hex, now_secs());
    }

    /// Marks a blob as being served until the returned pin is dropped.
    pub fn pin(&self, sha256_hex: &str) -> Pin {
        *self.pins.lock().unwrap().entry(sha256_hex.to_string()).or_default() += 1;
        Pin { pins: self.pins.clone(), blob: sha256_hex.to_string() }
    }

    pub fn is_pinned(&self, sha256_hex: &str) -> bool {
        self.pins.lock().unwrap().contains_key(sha256_hex)
    }

    pub fn usage(&self) -> Usage {
        self.eviction.usage()
    }

    /// Every blob, the first to go first.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.eviction.candidates()
    }

    pub fn contains(&self, sha256_hex: &str) -> bool {
        self.blob_path(sha256_hex).exists()
    }

    /// Removes a blob; returns the bytes freed (0 when it was already gone). A reader that has
    /// it open keeps reading the whole file. Blocking.
    pub fn remove(&self, sha256_hex: &str) -> io::Result<u64> {
        if let Some(hot) = &self.hot {
            hot.remove(sha256_hex);
        }
        let path = self.blob_path(sha256_hex);
        let size = match fs::symlink_metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.eviction.remove(sha256_hex);
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.eviction.remove(sha256_hex);
                return Ok(0);
            }
            Err(e) => return Err(e),
        }
        self.eviction.remove(sha256_hex);
        Ok(size)
    }

    /// A new, empty temporary file for a download; it vanishes if dropped before `commit`.
    pub fn new_tmp(&self) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new().prefix("dl-").tempfile_in(&self.tmp)
    }

    /// [`Store::new_tmp`] for a download of `size` bytes (when known): fails with ENOSPC at
    /// once if the filesystem has no room for it, instead of halfway through. Blocking.
    pub fn new_tmp_for(&self, size: Option<u64>) -> io::Result<tempfile::NamedTempFile> {
        let needed = size.unwrap_or(0).saturating_add(ROOM_RESERVE);
        let available = fs2::available_space(&self.tmp)?;
        if available < needed {
            let why = format!("{} bytes free in {}, {needed} needed", available, self.tmp.display());
            return Err(io::Error::new(io::ErrorKind::StorageFull, why));
        }
        self.new_tmp()
    }

    /// Notes that the filesystem is full; true if it was not known to be already.
    pub fn mark_full(&self) -> bool {
        let now = self.opened.elapsed().as_millis() as u64 + 1;
        let before = self.full_since.swap(now, Ordering::Relaxed);
        before == 0 || now.saturating_sub(before) > FULL_FOR.as_millis() as u64
    }

    /// Whether a write found the filesystem full in the last [`FULL_FOR`]: new downloads are
    /// then passed through without trying.
    pub fn is_full(&self) -> bool {
        let since = self.full_since.load(Ordering::Relaxed);
        since != 0 && (self.opened.elapsed().as_millis() as u64 + 1).saturating_sub(since) < FULL_FOR.as_millis() as u64
    }

    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blobs.join(&sha256_hex[..2]).join(sha256_hex)
    }

    /// Makes a finished download durable and visible under its hash. Blocking: call it from
    /// `spawn_blocking`.
    pub fn commit(&self, tmp: tempfile::NamedTempFile, sha256_hex: &str) -> io::Result<PathBuf> {
        let path = self.blob_path(sha256_hex);
        let size = tmp.as_file().metadata()?.len();
        if path.exists() {
            self.eviction.admit(sha256_hex, size, now_secs());
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
        self.eviction.admit(sha256_hex, size, now_secs());
        Ok(path)
    }
}

/// 64 lowercase hex digits.
fn is_blob_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Small blobs come from memory once loaded; clients of one large blob share one mapping;
    /// a blob that is gone is `None`, and its hot copy goes with it.
    #[test]
    fn blobs_load_from_memory_or_one_shared_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with_hot_cache(dir.path(), 1 << 20).unwrap();
        let small = vec![7u8; 1000];
        let large = vec![9u8; (SMALL_BLOB_MAX + 1) as usize];
        for (name, content) in [("a".repeat(64), &small), ("b".repeat(64), &large)] {
            let mut tmp = store.new_tmp().unwrap();
            tmp.write_all(content).unwrap();
            store.commit(tmp, &name).unwrap();
        }
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(store.hot(&a), None, "nothing is hot before it is served");
        assert_eq!(store.load(&a).unwrap().unwrap(), small);
        assert_eq!(store.hot(&a).unwrap(), small);
        assert_eq!(store.hot(&b), None, "large blobs are never held in memory");
        let first = store.load(&b).unwrap().unwrap();
        let second = store.load(&b).unwrap().unwrap();
        assert_eq!(first, large);
        assert_eq!(first.as_ptr(), second.as_ptr(), "one mapping for both clients");
        store.remove(&a).unwrap();
        assert_eq!(store.hot(&a), None);
        assert_eq!(store.load(&a).unwrap(), None);
    }

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

    #[test]
    fn remove_accounts_per_blob_and_a_reopen_counts_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        for (hash, body) in [(&a, &b"12345"[..]), (&b, &b"123"[..])] {
            let mut tmp = store.new_tmp().unwrap();
            tmp.write_all(body).unwrap();
            store.commit(tmp, hash).unwrap();
        }
        assert_eq!(store.usage(), Usage { blobs: 2, bytes: 8 });
        assert_eq!(Store::open(dir.path()).unwrap().usage(), Usage { blobs: 2, bytes: 8 });

        // A reader that has the blob open keeps the whole of it.
        let mut reader = File::open(store.blob_path(&a)).unwrap();
        let pin = store.pin(&a);
        assert!(store.is_pinned(&a));
        assert_eq!(store.remove(&a).unwrap(), 5);
        assert_eq!(store.remove(&a).unwrap(), 0, "already gone");
        let mut rest = Vec::new();
        io::Read::read_to_end(&mut reader, &mut rest).unwrap();
        assert_eq!(rest, b"12345");
        drop(pin);
        assert!(!store.is_pinned(&a));
        assert_eq!(store.usage(), Usage { blobs: 1, bytes: 3 });
        assert_eq!(store.candidates().into_iter().map(|c| c.blob).collect::<Vec<_>>(), [b]);
    }
}
