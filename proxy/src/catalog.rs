//! The catalog: which URL is stored in which blob, with its validators and access statistics,
//! and which SHA256 each URL must have according to the indexes seen so far (the hash chain).
//! Both live in SQLite (WAL) on disk, never loaded whole: lookups go to a bounded in-memory
//! cache of the hot set, then to the database through a small pool of read connections (a
//! point lookup on an index, cheap enough to run inline). Every change is committed by one
//! writer thread in batches, so the hit path never waits for a database write; changes of
//! entries not yet committed are visible at once from a small pending map. An index is learned
//! in batches on that thread: readers see the previous generation until a batch is committed.
//! It also remembers which index refreshes failed (prune waits for them) and the last prune.
//!
//! Rows are compact: a digest is 32 bytes, a URL of the hash chain is its directory (stored
//! once, in `dirs`) and its file name, the index generation that vouched for it is a number
//! (`generations`: source URL and the sha256 of its content), sizes and roles are integers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use quick_cache::sync::Cache;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use vzpkg_adapters::compress::Compression;

use crate::error::{Error, Result};

mod schema;
mod writer;

use writer::{Row, Write, Writer};

/// How many entries and expected hashes the in-memory caches hold at most.
const HOT_ENTRIES: usize = 16 * 1024;
const HOT_EXPECTED: usize = 32 * 1024;
/// Rows learned per batch, and batches queued to the writer at most: what an index being
/// learned holds in memory, whatever its size.
const LEARN_BATCH: usize = 4096;
const LEARN_QUEUE: usize = 2;
/// Idle read connections kept for the next lookups.
const IDLE_READERS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// sha256 of the content, hex.
    pub blob: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    /// Unix seconds when upstream last confirmed this content.
    pub validated_at: u64,
    /// Its hash matched what the repository's indexes say (or it is a trusted index root).
    pub verified: bool,
}

/// What an index says a file must be.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub sha256: String,
    pub size: Option<u64>,
    /// What the file is, so that it can be learned from in turn.
    pub role: Role,
    /// The key of the index that vouched for it.
    pub source: String,
    /// The sha256 of the generation of `source` this was learned from (None: learned before
    /// that was recorded). An index that no longer lists a file overwrites nothing for it, so
    /// this tells rows of the current generation from leftovers of older ones.
    pub source_blob: Option<String>,
}

/// An index refresh that failed and has not succeeded since.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RefreshFailure {
    pub key: String,
    /// Unix seconds.
    pub at: u64,
    pub reason: String,
}

/// The last prune that changed anything.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastPrune {
    /// Unix seconds.
    pub at: u64,
    pub files: u64,
    pub bytes: u64,
}

/// The part a file plays in its repository's hash chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    /// A package archive: the end of the chain.
    Package,
    /// An apt Packages index, compressed as given: it lists packages.
    AptPackages(Compression),
    /// An rpm primary.xml, compressed as given: it lists packages.
    RpmPrimary(Compression),
    /// Any other index file: verified, not learned from.
    Metadata,
}

impl Role {
    /// As stored: 0 package, 1 other metadata, 16 + compression a Packages file, 32 +
    /// compression a primary.xml.
    fn code(self) -> i64 {
        let c = |c: Compression| match c {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Xz => 2,
            Compression::Zstd => 3,
            Compression::Bzip2 => 4,
        };
        match self {
            Role::Package => 0,
            Role::Metadata => 1,
            Role::AptPackages(comp) => 16 + c(comp),
            Role::RpmPrimary(comp) => 32 + c(comp),
        }
    }

    fn from_code(code: i64) -> Role {
        let comp = |c: i64| match c {
            1 => Compression::Gzip,
            2 => Compression::Xz,
            3 => Compression::Zstd,
            4 => Compression::Bzip2,
            _ => Compression::None,
        };
        match code {
            0 => Role::Package,
            16..=20 => Role::AptPackages(comp(code - 16)),
            32..=36 => Role::RpmPrimary(comp(code - 32)),
            _ => Role::Metadata,
        }
    }
}

/// A key of the hash chain as stored: its directory (up to and with the last `/`) and the rest.
fn split_key(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => key.split_at(i + 1),
        None => ("", key),
    }
}

/// A hex sha256 as 32 bytes; None if it is not one.
fn digest(hex_sha: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sha, &mut out).ok()?;
    Some(out)
}

/// The counts status reports, as of the last commit.
#[derive(Default)]
struct Tallies {
    entries: AtomicU64,
    bytes: AtomicU64,
    unverified: AtomicU64,
    known: AtomicU64,
}

/// What lookups and the writer share: the hot caches and the changes not yet committed.
struct Hot {
    /// `None`: known to be absent.
    entries: Cache<String, Option<Entry>>,
    expected: Cache<String, Option<Expected>>,
    /// Entry changes sent to the writer and not yet committed, with their sequence numbers.
    pending: Mutex<HashMap<String, (u64, Option<Entry>)>>,
    pending_len: AtomicUsize,
    /// Bumped, under `gate` taken for writing, whenever a cached value may have gone stale; a
    /// lookup that read the database caches what it read only if no bump happened meanwhile.
    epoch: AtomicU64,
    gate: RwLock<()>,
    tallies: Tallies,
    /// Writes sent to the writer, and writes it has committed (or failed): equal when a flush
    /// has nothing to wait for.
    sent: AtomicU64,
    done: AtomicU64,
}

impl Hot {
    fn pending(&self, key: &str) -> Option<Option<Entry>> {
        if self.pending_len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.pending.lock().unwrap().get(key).map(|(_, e)| e.clone())
    }

    /// Runs `fill` unless the caches changed since `epoch` was read.
    fn fill(&self, epoch: u64, fill: impl FnOnce()) {
        let _gate = self.gate.read().unwrap();
        if self.epoch.load(Ordering::SeqCst) == epoch {
            fill();
        }
    }

    /// Runs `change` on the caches and marks every lookup in progress as stale.
    fn invalidate(&self, change: impl FnOnce()) {
        let _gate = self.gate.write().unwrap();
        change();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Read connections, opened as needed and kept for the next lookup.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.idle.lock().unwrap().pop();
        let conn = match conn {
            Some(conn) => conn,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&self.path, flags)?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn
            }
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        Ok(result?)
    }
}

pub struct Catalog {
    hot: Arc<Hot>,
    readers: Readers,
    /// Serialises changes of entries, so that a read-modify-write sees the newest value.
    change: Mutex<()>,
    next_seq: AtomicU64,
    failures: RwLock<HashMap<String, RefreshFailure>>,
    last_prune: RwLock<Option<LastPrune>>,
    /// Last access per blob as the database had it at open, for the store's accounting.
    accessed: Mutex<HashMap<String, u64>>,
    writer: mpsc::Sender<Write>,
}

/// Lowers the calling thread's priority (nice 10; Linux gives each thread its own): the writer
/// and the parsing of an index being learned yield the CPU to the requests being served.
pub(crate) fn background_priority() {
    // SAFETY: two system calls about the calling thread, no memory shared with them.
    let failed = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10) != 0
    };
    if failed {
        tracing::debug!(error = %std::io::Error::last_os_error(), "background thread keeps its priority");
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Catalog {
    /// Opens the database, migrates it, drops the entries whose blob is gone (per
    /// `blob_exists`) and starts the writer thread. Reads nothing of the hash chain: the time
    /// this takes depends on how many files are stored, not on how many are known.
    pub fn open(path: &Path, blob_exists: impl Fn(&str) -> bool) -> Result<Catalog> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::migrate(&mut conn)?;

        let mut accessed: HashMap<String, u64> = HashMap::new();
        let mut missing = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT blob, MAX(accessed_at) FROM entries GROUP BY blob")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let blob = hex::encode(row.get::<_, Vec<u8>>(0)?);
                if blob_exists(&blob) {
                    accessed.insert(blob, row.get(1)?);
                } else {
                    missing.push(blob);
                }
            }
        }
        if !missing.is_empty() {
            let tx = conn.transaction()?;
            for blob in &missing {
                let gone =
                    tx.execute("DELETE FROM entries WHERE blob = ?1", [digest(blob).expect("hex of 32 bytes")])?;
                tracing::warn!(%blob, entries = gone, "catalog entries without their blob: dropped");
            }
            tx.execute_batch(
                "UPDATE tallies SET entries = (SELECT COUNT(*) FROM entries),
                    bytes = (SELECT COALESCE(SUM(size), 0) FROM entries),
                    unverified = (SELECT COUNT(*) FROM entries WHERE verified = 0)",
            )?;
            tx.commit()?;
        }
        let failures = read_failures(&conn)?.into_iter().map(|f| (f.key.clone(), f)).collect();
        let last_prune = read_last_prune(&conn)?;
        let hot = Arc::new(Hot {
            entries: Cache::new(HOT_ENTRIES),
            expected: Cache::new(HOT_EXPECTED),
            pending: Mutex::default(),
            pending_len: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            gate: RwLock::new(()),
            tallies: Tallies::default(),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
        });
        let writer = Writer::new(conn, hot.clone())?;
        let (sender, queue) = mpsc::channel();
        std::thread::Builder::new().name("vzpkg-catalog".into()).spawn(move || {
            background_priority();
            writer.run(queue)
        })?;
        Ok(Catalog {
            hot,
            readers: Readers { path: path.to_path_buf(), idle: Mutex::default() },
            change: Mutex::new(()),
            next_seq: AtomicU64::new(1),
            failures: RwLock::new(failures),
            last_prune: RwLock::new(last_prune),
            accessed: Mutex::new(accessed),
            writer: sender,
        })
    }

    /// Last access per blob as recorded when the catalog was opened (given out once).
    pub fn take_access_times(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.accessed.lock().unwrap())
    }

    /// Every entry, as of now (everything sent so far committed first). Blocking.
    pub fn entries(&self) -> Result<Vec<(String, Entry)>> {
        self.flush();
        self.readers.with(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT key, {ENTRY_COLUMNS} FROM entries"))?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, entry_at(r, 1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })
    }

    /// An index refresh failed: prune holds off until it succeeds again.
    pub fn refresh_failed(&self, key: &str, reason: &str) {
        let failure = RefreshFailure { key: key.to_string(), at: now_secs(), reason: reason.to_string() };
        self.failures.write().unwrap().insert(key.to_string(), failure.clone());
        self.send(Write::RefreshFailed(failure));
    }

    /// An index was fetched or confirmed: any failure recorded for it is over.
    pub fn refresh_succeeded(&self, key: &str) {
        if self.failures.write().unwrap().remove(key).is_some() {
            self.send(Write::RefreshOk(key.to_string()));
        }
    }

    /// Index refreshes that failed and have not succeeded since, newest first.
    pub fn refresh_failures(&self) -> Vec<RefreshFailure> {
        let mut failures: Vec<_> = self.failures.read().unwrap().values().cloned().collect();
        failures.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.key.cmp(&b.key)));
        failures
    }

    pub fn record_prune(&self, last: LastPrune, report: String) {
        *self.last_prune.write().unwrap() = Some(last.clone());
        self.send(Write::Pruned(last, report));
    }

    pub fn last_prune(&self) -> Option<LastPrune> {
        self.last_prune.read().unwrap().clone()
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        if let Some(pending) = self.hot.pending(key) {
            return pending;
        }
        let epoch = self.hot.epoch.load(Ordering::SeqCst);
        if let Some(cached) = self.hot.entries.get(key) {
            return cached;
        }
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE key = ?1");
        let found =
            self.read("entry", |conn| conn.prepare_cached(&sql)?.query_row([key], |r| entry_at(r, 0)).optional());
        self.hot.fill(epoch, || self.hot.entries.insert(key.to_string(), found.clone()));
        found
    }

    /// Reads one thing inline; a failure is logged and reads as absent.
    fn read<T>(&self, what: &str, read: impl FnOnce(&Connection) -> rusqlite::Result<Option<T>>) -> Option<T> {
        self.readers.with(read).unwrap_or_else(|e| {
            tracing::error!(error = %e, what, "cache index read failed; taken as absent");
            None
        })
    }

    /// Changes an entry: at once for lookups, on disk with the writer's next commit.
    fn change(&self, key: &str, value: Option<Entry>, write: impl FnOnce(u64) -> Write) {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        self.hot.invalidate(|| {
            let mut pending = self.hot.pending.lock().unwrap();
            pending.insert(key.to_string(), (seq, value.clone()));
            self.hot.pending_len.store(pending.len(), Ordering::SeqCst);
            self.hot.entries.insert(key.to_string(), value);
        });
        self.send(write(seq));
    }

    pub fn put(&self, key: &str, entry: Entry) {
        let _change = self.change.lock().unwrap();
        self.change(key, Some(entry.clone()), |seq| Write::Put { seq, key: key.to_string(), entry });
    }

    /// What the indexes say `key` must be, if any index seen so far lists it.
    pub fn expected(&self, key: &str) -> Option<Expected> {
        let epoch = self.hot.epoch.load(Ordering::SeqCst);
        if let Some(cached) = self.hot.expected.get(key) {
            return cached;
        }
        let (dir, name) = split_key(key);
        let found = self.read("expected hash", |conn| {
            conn.prepare_cached(
                "SELECT k.sha256, k.size, k.role, g.source, g.blob
                 FROM dirs d JOIN known k ON k.dir = d.id JOIN generations g ON g.id = k.generation
                 WHERE d.path = ?1 AND k.name = ?2",
            )?
            .query_row([dir, name], |r| {
                Ok(Expected {
                    sha256: hex::encode(r.get::<_, Vec<u8>>(0)?),
                    size: r.get(1)?,
                    role: Role::from_code(r.get(2)?),
                    source: r.get(3)?,
                    source_blob: r.get::<_, Option<Vec<u8>>>(4)?.map(hex::encode),
                })
            })
            .optional()
        });
        self.hot.fill(epoch, || self.hot.expected.insert(key.to_string(), found.clone()));
        found
    }

    /// Starts learning what the generation `source_blob` of the index `source` vouches for.
    pub fn learner(&self, source: &str, source_blob: &str) -> Learner<'_> {
        Learner {
            catalog: self,
            source: source.to_string(),
            source_blob: digest(source_blob),
            rows: Vec::new(),
            in_flight: VecDeque::new(),
            learned: Learned::default(),
        }
    }

    /// Records what an index vouches for, and settles the entries stored before it was known:
    /// a matching one becomes verified, any other is dropped. Returns (verified, dropped).
    /// `source_blob` is the sha256 of the index generation that said so. Blocking; for tests,
    /// which state a chain in a few rows.
    #[cfg(test)]
    pub fn expect(&self, learned: Vec<(String, Expected)>, source_blob: &str) -> (usize, usize) {
        let mut by_source: HashMap<String, Vec<(String, Expected)>> = HashMap::new();
        for (key, e) in learned {
            by_source.entry(e.source.clone()).or_default().push((key, e));
        }
        let (mut verified, mut dropped) = (0, 0);
        for (source, rows) in by_source {
            let mut learner = self.learner(&source, source_blob);
            for (key, e) in rows {
                learner.add(key, &e);
            }
            let learned = learner.finish().unwrap_or_default();
            verified += learned.verified;
            dropped += learned.dropped;
        }
        (verified, dropped)
    }

    /// Marks an entry verified if it still holds `blob`: a Release once the detached signature
    /// checked against exactly that content has checked out.
    pub fn mark_verified(&self, key: &str, blob: &str) {
        let _change = self.change.lock().unwrap();
        if let Some(mut e) = self.get(key).filter(|e| e.blob == blob && !e.verified) {
            e.verified = true;
            self.change(key, Some(e), |seq| Write::Verified { seq, key: key.to_string() });
        }
    }

    /// Counts as of everything sent so far (which is committed first). Blocking, briefly.
    pub fn unverified_count(&self) -> usize {
        self.flush();
        self.hot.tallies.unverified.load(Ordering::SeqCst) as usize
    }

    pub fn expected_count(&self) -> usize {
        self.flush();
        self.hot.tallies.known.load(Ordering::SeqCst) as usize
    }

    pub fn entry_count(&self) -> usize {
        self.flush();
        self.hot.tallies.entries.load(Ordering::SeqCst) as usize
    }

    /// Sum of entry sizes (a blob shared by several URLs counts once per URL).
    pub fn total_bytes(&self) -> u64 {
        self.flush();
        self.hot.tallies.bytes.load(Ordering::SeqCst)
    }

    pub fn validated(&self, key: &str) {
        let _change = self.change.lock().unwrap();
        let at = now_secs();
        if let Some(mut e) = self.get(key) {
            e.validated_at = at;
            self.change(key, Some(e), |seq| Write::Validated { seq, key: key.to_string(), at });
        }
    }

    pub fn hit(&self, key: &str) {
        self.send(Write::Hit(key.to_string(), now_secs()));
    }

    pub fn remove(&self, key: &str) {
        let _change = self.change.lock().unwrap();
        self.change(key, None, |seq| Write::Remove { seq, key: key.to_string() });
    }

    /// Removes `key` if it still holds `blob` (and not a newer copy stored meanwhile).
    pub fn remove_if(&self, key: &str, blob: &str) -> bool {
        let _change = self.change.lock().unwrap();
        if self.get(key).is_some_and(|e| e.blob == blob) {
            self.change(key, None, |seq| Write::Remove { seq, key: key.to_string() });
            return true;
        }
        false
    }

    /// Queues a write for the writer thread; false if it has stopped.
    fn send(&self, write: Write) -> bool {
        self.hot.sent.fetch_add(1, Ordering::SeqCst);
        self.writer.send(write).is_ok()
    }

    /// Waits until everything sent so far is committed. Blocking.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.hot.done.load(Ordering::SeqCst) >= self.hot.sent.load(Ordering::SeqCst) {
            return;
        }
        if self.send(Write::Flush(done)) {
            let _ = wait.recv();
        }
    }

    /// Walks the hash chain down from `roots` (key and blob of each stored root) and tells the
    /// index generations still current from the rest; then reads every row once to say which
    /// of `stored` blobs a current generation lists. Blocking.
    pub fn chain(&self, roots: &[(String, String)], stored: &HashSet<String>) -> Result<Chain> {
        self.flush();
        self.readers.with(|conn| {
            let mut current: HashSet<i64> = HashSet::new();
            let mut queue: Vec<(String, Option<[u8; 32]>)> =
                roots.iter().map(|(key, blob)| (key.clone(), digest(blob))).collect();
            let mut generations =
                conn.prepare("SELECT id FROM generations WHERE source = ?1 AND (blob IS ?2 OR blob IS NULL)")?;
            let mut listed = conn.prepare(
                "SELECT d.path || k.name, k.sha256 FROM known k JOIN dirs d ON d.id = k.dir
                 WHERE k.generation = ?1 AND k.role != 0",
            )?;
            while let Some((source, blob)) = queue.pop() {
                let ids = generations.query_map(params![source, blob], |r| r.get::<_, i64>(0))?;
                for id in ids.collect::<rusqlite::Result<Vec<_>>>()? {
                    if !current.insert(id) {
                        continue;
                    }
                    let rows = listed.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
                    for row in rows {
                        let (key, sha) = row?;
                        queue.push((key, sha.try_into().ok()));
                    }
                }
            }
            let mut referenced: HashSet<String> =
                roots.iter().map(|(_, blob)| blob.clone()).filter(|b| stored.contains(b)).collect();
            let mut stale_rows = 0u64;
            let mut stmt = conn.prepare("SELECT sha256, generation FROM known")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                if !current.contains(&row.get::<_, i64>(1)?) {
                    stale_rows += 1;
                    continue;
                }
                let sha = hex::encode(row.get_ref(0)?.as_blob()?);
                if stored.contains(&sha) {
                    referenced.insert(sha);
                }
            }
            let mut stmt = conn.prepare("SELECT id FROM generations")?;
            let all = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            let stale = all.into_iter().filter(|id| !current.contains(id)).collect();
            Ok(Chain { referenced, stale, stale_rows })
        })
    }

    /// Removes the rows of index generations `Chain::stale` named; returns how many went.
    /// Blocking.
    pub fn forget(&self, generations: Vec<i64>) -> u64 {
        let (done, wait) = mpsc::channel();
        if !self.send(Write::Forget { generations, done }) {
            return 0;
        }
        wait.recv().unwrap_or(0)
    }

    /// The sha256 of every blob stored verified, from the database at `path` as it is on disk
    /// (read-only, beside a running proxy). Blocking.
    pub fn verified_blobs(path: &Path) -> Result<HashSet<String>> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut stmt = conn.prepare("SELECT DISTINCT blob FROM entries WHERE verified = 1")?;
        // Text before the compact schema, 32 bytes since: a proxy may not have upgraded it yet.
        let blobs = stmt.query_map([], |r| {
            Ok(match r.get_ref(0)? {
                rusqlite::types::ValueRef::Blob(b) => hex::encode(b),
                value => value.as_str()?.to_string(),
            })
        })?;
        Ok(blobs.collect::<rusqlite::Result<_>>()?)
    }
}

/// What prune needs to know of the hash chain.
#[derive(Debug, Default)]
pub struct Chain {
    /// Stored blobs that a current index generation lists (or that are current roots).
    pub referenced: HashSet<String>,
    /// Index generations no longer current.
    pub stale: Vec<i64>,
    /// How many rows those generations hold.
    pub stale_rows: u64,
}

const ENTRY_COLUMNS: &str = "blob, size, etag, last_modified, content_type, validated_at, verified";

fn entry_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Entry> {
    Ok(Entry {
        blob: hex::encode(r.get_ref(at)?.as_blob()?),
        size: r.get(at + 1)?,
        etag: r.get(at + 2)?,
        last_modified: r.get(at + 3)?,
        content_type: r.get(at + 4)?,
        validated_at: r.get(at + 5)?,
        verified: r.get(at + 6)?,
    })
}

/// What learning one index generation did.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Learned {
    /// Rows learned.
    pub files: usize,
    /// Entries stored before and now verified by it.
    pub verified: usize,
    /// Entries stored before that disagree with it, dropped.
    pub dropped: usize,
}

/// Learns one index generation in batches: each is committed by the writer, at most
/// `LEARN_QUEUE` wait for it, so memory stays bounded by the batch size. Blocking.
pub struct Learner<'a> {
    catalog: &'a Catalog,
    source: String,
    source_blob: Option<[u8; 32]>,
    rows: Vec<Row>,
    in_flight: VecDeque<mpsc::Receiver<(usize, usize)>>,
    learned: Learned,
}

impl Learner<'_> {
    /// Adds what the index says of `key`; a sha256 that is not one is skipped.
    pub fn add(&mut self, key: String, e: &Expected) {
        let Some(sha256) = digest(&e.sha256) else {
            tracing::warn!(%key, sha256 = %e.sha256, "not a SHA256: not learned");
            return;
        };
        self.rows.push(Row { key, sha256, size: e.size, role: e.role });
        if self.rows.len() >= LEARN_BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.rows.is_empty() {
            return;
        }
        while self.in_flight.len() >= LEARN_QUEUE {
            self.wait_one();
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(LEARN_BATCH));
        self.learned.files += rows.len();
        let (done, wait) = mpsc::channel();
        let write = Write::Learn { source: self.source.clone(), source_blob: self.source_blob, rows, done };
        if self.catalog.send(write) {
            self.in_flight.push_back(wait);
        }
    }

    fn wait_one(&mut self) -> bool {
        let Some(wait) = self.in_flight.pop_front() else { return false };
        match wait.recv() {
            Ok((verified, dropped)) => {
                self.learned.verified += verified;
                self.learned.dropped += dropped;
                true
            }
            Err(_) => false,
        }
    }

    /// Sends the rest and waits until every batch is committed: from then on lookups see all
    /// of it.
    pub fn finish(mut self) -> Result<Learned> {
        self.send();
        while !self.in_flight.is_empty() {
            if !self.wait_one() {
                return Err(Error::Store(std::io::Error::other("the catalog's writer failed; see the log")));
            }
        }
        Ok(self.learned)
    }
}

fn read_failures(conn: &Connection) -> rusqlite::Result<Vec<RefreshFailure>> {
    let mut stmt = conn.prepare("SELECT key, at, reason FROM refresh_failures")?;
    let rows = stmt.query_map([], |r| Ok(RefreshFailure { key: r.get(0)?, at: r.get(1)?, reason: r.get(2)? }))?;
    rows.collect()
}

fn read_last_prune(conn: &Connection) -> rusqlite::Result<Option<LastPrune>> {
    let mut stmt = conn.prepare("SELECT at, files, bytes FROM prunes ORDER BY id DESC LIMIT 1")?;
    let mut rows = stmt.query_map([], |r| Ok(LastPrune { at: r.get(0)?, files: r.get(1)?, bytes: r.get(2)? }))?;
    rows.next().transpose()
}

#[cfg(test)]
mod tests {
    use super::schema::MIGRATIONS;
    use super::*;

    fn sha(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn entry(blob: &str) -> Entry {
        Entry {
            blob: blob.into(),
            size: 5,
            etag: Some("\"e\"".into()),
            last_modified: None,
            content_type: None,
            validated_at: 7,
            verified: false,
        }
    }

    fn expect(sha256: &str, source: &str, source_blob: &str) -> Expected {
        Expected {
            sha256: sha256.into(),
            size: Some(3),
            role: Role::AptPackages(Compression::Xz),
            source: source.into(),
            source_blob: Some(source_blob.into()),
        }
    }

    #[test]
    fn learning_an_index_settles_unverified_entries_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.sqlite");
        let catalog = Catalog::open(&db, |_| true).unwrap();
        catalog.put("http://h/d/good", entry(&sha(0xaa)));
        catalog.put("http://h/d/bad", entry(&sha(0xbb)));
        let gen = sha(0xff);
        let (verified, dropped) = catalog.expect(
            vec![
                ("http://h/d/good".into(), expect(&sha(0xaa), "idx", &gen)),
                ("http://h/d/bad".into(), expect(&sha(0xcc), "idx", &gen)),
                ("http://h/e/later".into(), expect(&sha(0xdd), "idx", &gen)),
            ],
            &gen,
        );
        assert_eq!((verified, dropped), (1, 1));
        assert!(catalog.get("http://h/d/good").unwrap().verified);
        assert_eq!(catalog.get("http://h/d/bad"), None);
        assert_eq!((catalog.entry_count(), catalog.unverified_count(), catalog.total_bytes()), (1, 0, 5));
        drop(catalog);
        let catalog = Catalog::open(&db, |_| true).unwrap();
        assert!(catalog.get("http://h/d/good").unwrap().verified);
        assert_eq!(catalog.get("http://h/d/bad"), None);
        assert_eq!(catalog.expected("http://h/e/later").unwrap(), expect(&sha(0xdd), "idx", &gen));
        assert_eq!(catalog.expected("http://h/e/other"), None);
        assert_eq!(catalog.expected_count(), 3);
        assert_eq!((catalog.entry_count(), catalog.unverified_count()), (1, 0));
    }

    #[test]
    fn entries_survive_a_reopen_unless_their_blob_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.sqlite");
        let catalog = Catalog::open(&db, |_| true).unwrap();
        catalog.put("a", entry(&sha(0xaa)));
        catalog.put("b", entry(&sha(0xbb)));
        catalog.hit("a");
        catalog.hit("a");
        catalog.validated("a");
        assert!(catalog.get("a").unwrap().validated_at > 7, "seen before it is committed");
        catalog.flush();
        drop(catalog);

        let catalog = Catalog::open(&db, |blob| blob == sha(0xaa)).unwrap();
        assert_eq!(catalog.get("a").unwrap().blob, sha(0xaa));
        assert!(catalog.get("a").unwrap().validated_at > 7);
        assert_eq!(catalog.get("b"), None);
        assert_eq!(catalog.entry_count(), 1);
        assert_eq!(catalog.take_access_times().len(), 1);
        let conn = Connection::open(&db).unwrap();
        let hits: u64 = conn.query_row("SELECT hits FROM entries WHERE key = 'a'", [], |r| r.get(0)).unwrap();
        assert_eq!(hits, 2);
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[test]
    fn refresh_failures_and_prunes_persist_until_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.sqlite");
        let catalog = Catalog::open(&db, |_| true).unwrap();
        catalog.refresh_failed("remap:d/dists/s/InRelease", "upstream failed: 503");
        catalog.refresh_failed("remap:e/dists/s/InRelease", "upstream failed: timeout");
        catalog.refresh_succeeded("remap:e/dists/s/InRelease");
        catalog.record_prune(LastPrune { at: 5, files: 2, bytes: 300 }, "{}".into());
        catalog.flush();
        drop(catalog);
        let catalog = Catalog::open(&db, |_| true).unwrap();
        assert_eq!(catalog.last_prune(), Some(LastPrune { at: 5, files: 2, bytes: 300 }));
        let failures = catalog.refresh_failures();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].key, "remap:d/dists/s/InRelease");
        catalog.refresh_succeeded("remap:d/dists/s/InRelease");
        assert!(catalog.refresh_failures().is_empty());
    }

    /// A lookup cached before an index generation is learned never hides the new one, and a
    /// change of an entry is seen at once however the cache and the writer interleave.
    #[test]
    fn cached_lookups_follow_what_is_learned_and_changed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("index.sqlite"), |_| true).unwrap();
        let key = "http://h/d/pool/a_1_all.deb";
        assert_eq!(catalog.expected(key), None, "absent, and now cached as absent");
        let (one, two) = (sha(1), sha(2));
        catalog.expect(vec![(key.into(), expect(&one, "P", &sha(9)))], &sha(9));
        assert_eq!(catalog.expected(key).unwrap().sha256, one);
        catalog.expect(vec![(key.into(), expect(&two, "P", &sha(8)))], &sha(8));
        let got = catalog.expected(key).unwrap();
        assert_eq!((got.sha256, got.source_blob), (two, Some(sha(8))));
        assert_eq!(catalog.expected_count(), 1, "one key, learned twice");

        for n in 0..50u8 {
            catalog.put(key, entry(&sha(n)));
            assert_eq!(catalog.get(key).unwrap().blob, sha(n));
            if n % 3 == 0 {
                catalog.flush();
            }
        }
        assert!(catalog.remove_if(key, &sha(49)));
        assert_eq!(catalog.get(key), None);
        catalog.flush();
        assert_eq!(catalog.get(key), None);
        assert_eq!(catalog.entry_count(), 0);
    }

    /// Today's schema (version 4, hex text, roles as words), with what a proxy wrote into it,
    /// upgraded: every entry and expected hash reads back the same, counts included, and the
    /// wrapper's read of verified blobs gives the same set before and after.
    #[test]
    fn an_old_cache_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.sqlite");
        let conn = Connection::open(&db).unwrap();
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        let root = "http://h/debian/dists/s/InRelease";
        let packages = "http://h/debian/dists/s/main/binary-amd64/Packages.xz";
        let deb = "http://h/debian/pool/main/a/a/a_1_all.deb";
        let rpm = "remap:el/Packages/b-1.noarch.rpm";
        let insert_entry = "INSERT INTO entries (key, blob, size, etag, last_modified, content_type, validated_at,
                accessed_at, hits, verified) VALUES (?1, ?2, ?3, 'e', NULL, 'x/y', 10, ?4, 3, ?5)";
        for (key, blob, size, at, verified) in
            [(root, sha(1), 100, 50, 1), (deb, sha(3), 300, 60, 1), (rpm, sha(4), 400, 70, 0)]
        {
            conn.execute(insert_entry, params![key, blob, size, at, verified]).unwrap();
        }
        let insert_expected = "INSERT INTO expected (key, sha256, size, role, source, archive_name, source_blob)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
        conn.execute(insert_expected, params![packages, sha(2), 20, "apt-packages:xz", root, None::<String>, sha(1)])
            .unwrap();
        conn.execute(insert_expected, params![deb, sha(3), 300, "package", packages, "a_1_all.deb", sha(2)]).unwrap();
        // Learned before generations were recorded.
        conn.execute(
            insert_expected,
            params![rpm, sha(5), None::<u64>, "package", "remap:el/p", None::<String>, None::<String>],
        )
        .unwrap();
        conn.execute(insert_expected, params!["nohash", "zz", None::<u64>, "metadata", root, None::<String>, sha(1)])
            .unwrap();
        drop(conn);
        let before = Catalog::verified_blobs(&db).unwrap();
        assert_eq!(before, HashSet::from([sha(1), sha(3)]));

        let catalog = Catalog::open(&db, |_| true).unwrap();
        assert_eq!(
            catalog.get(deb),
            Some(Entry {
                blob: sha(3),
                size: 300,
                etag: Some("e".into()),
                last_modified: None,
                content_type: Some("x/y".into()),
                validated_at: 10,
                verified: true,
            })
        );
        assert_eq!(
            catalog.expected(packages),
            Some(Expected {
                sha256: sha(2),
                size: Some(20),
                role: Role::AptPackages(Compression::Xz),
                source: root.into(),
                source_blob: Some(sha(1)),
            })
        );
        assert_eq!(catalog.expected(deb).unwrap().role, Role::Package);
        assert_eq!(catalog.expected(rpm).unwrap().source_blob, None);
        assert_eq!(catalog.expected("nohash"), None, "not a SHA256: left behind");
        assert_eq!((catalog.entry_count(), catalog.unverified_count(), catalog.total_bytes()), (3, 1, 800));
        assert_eq!(catalog.expected_count(), 3);
        let times = catalog.take_access_times();
        assert_eq!(times.get(&sha(4)), Some(&70));
        assert_eq!(Catalog::verified_blobs(&db).unwrap(), before);
        // The chain still walks from the root: Packages (current), then the deb it lists.
        let stored = HashSet::from([sha(1), sha(2), sha(3), sha(4)]);
        let chain = catalog.chain(&[(root.to_string(), sha(1))], &stored).unwrap();
        assert_eq!(chain.referenced, HashSet::from([sha(1), sha(2), sha(3)]));
        assert_eq!(chain.stale_rows, 1, "the rpm's row: its source is no current index");
        drop(catalog);
        let conn = Connection::open(&db).unwrap();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[test]
    fn roles_round_trip_as_integers() {
        let comps = [Compression::None, Compression::Gzip, Compression::Xz, Compression::Zstd, Compression::Bzip2];
        let mut roles = vec![Role::Package, Role::Metadata];
        roles.extend(comps.iter().map(|&c| Role::AptPackages(c)));
        roles.extend(comps.iter().map(|&c| Role::RpmPrimary(c)));
        for role in roles {
            assert_eq!(Role::from_code(role.code()), role);
        }
        assert_eq!(split_key("http://h/d/a.deb"), ("http://h/d/", "a.deb"));
        assert_eq!(split_key("flat"), ("", "flat"));
    }
}
