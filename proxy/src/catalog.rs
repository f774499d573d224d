//! The catalog: which URL is stored in which blob, with its validators and access statistics,
//! and which SHA256 each URL must have according to the indexes seen so far (the hash chain).
//! Lookups are served from memory; every change is written behind to SQLite (WAL) by one thread
//! that batches, so the hit path never waits for a database write. It also remembers which
//! index refreshes failed (prune waits for them) and the last prune.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use vzpkg_adapters::compress::Compression;

use crate::error::Result;

/// Applied in order by `PRAGMA user_version`; a shipped migration is never edited, only appended.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE entries (
        key           TEXT PRIMARY KEY,
        blob          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        etag          TEXT,
        last_modified TEXT,
        content_type  TEXT,
        validated_at  INTEGER NOT NULL,
        accessed_at   INTEGER NOT NULL,
        hits          INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX entries_blob ON entries (blob);",
    "ALTER TABLE entries ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE expected (
        key     TEXT PRIMARY KEY,
        sha256  TEXT NOT NULL,
        size    INTEGER,
        role    TEXT NOT NULL,
        source  TEXT NOT NULL
    );",
    "ALTER TABLE expected ADD COLUMN archive_name TEXT;",
    "ALTER TABLE expected ADD COLUMN source_blob TEXT;
    CREATE TABLE refresh_failures (
        key     TEXT PRIMARY KEY,
        at      INTEGER NOT NULL,
        reason  TEXT NOT NULL
    );
    CREATE TABLE prunes (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        files   INTEGER NOT NULL,
        bytes   INTEGER NOT NULL,
        report  TEXT NOT NULL
    );",
];

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
    /// For a .deb: the name apt gives it in its archives directory.
    pub archive_name: Option<String>,
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
    fn encode(self) -> String {
        let c = |c: Compression| format!("{c:?}").to_ascii_lowercase();
        match self {
            Role::Package => "package".into(),
            Role::AptPackages(comp) => format!("apt-packages:{}", c(comp)),
            Role::RpmPrimary(comp) => format!("rpm-primary:{}", c(comp)),
            Role::Metadata => "metadata".into(),
        }
    }

    fn decode(s: &str) -> Role {
        let comp = |c: &str| match c {
            "gzip" => Compression::Gzip,
            "xz" => Compression::Xz,
            "zstd" => Compression::Zstd,
            "bzip2" => Compression::Bzip2,
            _ => Compression::None,
        };
        match s.split_once(':') {
            Some(("apt-packages", c)) => Role::AptPackages(comp(c)),
            Some(("rpm-primary", c)) => Role::RpmPrimary(comp(c)),
            _ if s == "package" => Role::Package,
            _ => Role::Metadata,
        }
    }
}

enum Write {
    Put(String, Entry),
    Expect(Vec<(String, Expected)>),
    Verified(String),
    Validated(String, u64),
    Hit(String, u64),
    Remove(String),
    Unexpect(Vec<String>),
    RefreshFailed(RefreshFailure),
    RefreshOk(String),
    Pruned(LastPrune, String),
    Flush(mpsc::Sender<()>),
}

pub struct Catalog {
    entries: RwLock<HashMap<String, Entry>>,
    expected: RwLock<HashMap<String, Expected>>,
    failures: RwLock<HashMap<String, RefreshFailure>>,
    last_prune: RwLock<Option<LastPrune>>,
    /// Last access per blob as the database had it at open, for the store's accounting.
    accessed: std::sync::Mutex<HashMap<String, u64>>,
    writer: mpsc::Sender<Write>,
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Catalog {
    /// Opens the database, migrates it, loads every entry whose blob still exists (per
    /// `blob_exists`) and starts the writer thread.
    pub fn open(path: &Path, blob_exists: impl Fn(&str) -> bool) -> Result<Catalog> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut conn)?;

        let mut entries = HashMap::new();
        let mut missing = Vec::new();
        let mut accessed: HashMap<String, u64> = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT key, blob, size, etag, last_modified, content_type, validated_at, verified, accessed_at FROM entries",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Entry {
                        blob: r.get(1)?,
                        size: r.get(2)?,
                        etag: r.get(3)?,
                        last_modified: r.get(4)?,
                        content_type: r.get(5)?,
                        validated_at: r.get(6)?,
                        verified: r.get(7)?,
                    },
                    r.get::<_, u64>(8)?,
                ))
            })?;
            for row in rows {
                let (key, entry, at) = row?;
                if blob_exists(&entry.blob) {
                    let last = accessed.entry(entry.blob.clone()).or_default();
                    *last = (*last).max(at);
                    entries.insert(key, entry);
                } else {
                    missing.push(key);
                }
            }
        }
        let mut expected = HashMap::new();
        {
            let mut stmt =
                conn.prepare("SELECT key, sha256, size, role, source, archive_name, source_blob FROM expected")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Expected {
                        sha256: r.get(1)?,
                        size: r.get(2)?,
                        role: Role::decode(&r.get::<_, String>(3)?),
                        source: r.get(4)?,
                        archive_name: r.get(5)?,
                        source_blob: r.get(6)?,
                    },
                ))
            })?;
            for row in rows {
                let (key, e) = row?;
                expected.insert(key, e);
            }
        }
        let failures = read_failures(&conn)?.into_iter().map(|f| (f.key.clone(), f)).collect();
        let last_prune = read_last_prune(&conn)?;
        for key in &missing {
            tracing::warn!(%key, "catalog entry without its blob: dropped");
            conn.execute("DELETE FROM entries WHERE key = ?1", [key])?;
        }

        let (writer, queue) = mpsc::channel();
        std::thread::Builder::new().name("vzpkg-catalog".into()).spawn(move || write_behind(conn, queue))?;
        Ok(Catalog {
            entries: RwLock::new(entries),
            expected: RwLock::new(expected),
            failures: RwLock::new(failures),
            last_prune: RwLock::new(last_prune),
            accessed: std::sync::Mutex::new(accessed),
            writer,
        })
    }

    /// Last access per blob as recorded when the catalog was opened (given out once).
    pub fn take_access_times(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.accessed.lock().unwrap())
    }

    /// Every entry, as of now.
    pub fn entries(&self) -> Vec<(String, Entry)> {
        self.entries.read().unwrap().iter().map(|(k, e)| (k.clone(), e.clone())).collect()
    }

    /// Every expected hash, as of now.
    pub fn expected_all(&self) -> Vec<(String, Expected)> {
        self.expected.read().unwrap().iter().map(|(k, e)| (k.clone(), e.clone())).collect()
    }

    /// Forgets what indexes no longer current said.
    pub fn unexpect(&self, keys: Vec<String>) {
        {
            let mut expected = self.expected.write().unwrap();
            for key in &keys {
                expected.remove(key);
            }
        }
        let _ = self.writer.send(Write::Unexpect(keys));
    }

    /// An index refresh failed: prune holds off until it succeeds again.
    pub fn refresh_failed(&self, key: &str, reason: &str) {
        let failure = RefreshFailure { key: key.to_string(), at: now_secs(), reason: reason.to_string() };
        self.failures.write().unwrap().insert(key.to_string(), failure.clone());
        let _ = self.writer.send(Write::RefreshFailed(failure));
    }

    /// An index was fetched or confirmed: any failure recorded for it is over.
    pub fn refresh_succeeded(&self, key: &str) {
        if self.failures.write().unwrap().remove(key).is_some() {
            let _ = self.writer.send(Write::RefreshOk(key.to_string()));
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
        let _ = self.writer.send(Write::Pruned(last, report));
    }

    pub fn last_prune(&self) -> Option<LastPrune> {
        self.last_prune.read().unwrap().clone()
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        self.entries.read().unwrap().get(key).cloned()
    }

    pub fn put(&self, key: &str, entry: Entry) {
        self.entries.write().unwrap().insert(key.to_string(), entry.clone());
        let _ = self.writer.send(Write::Put(key.to_string(), entry));
    }

    /// What the indexes say `key` must be, if any index seen so far lists it.
    pub fn expected(&self, key: &str) -> Option<Expected> {
        self.expected.read().unwrap().get(key).cloned()
    }

    /// Records what an index vouches for, and settles the entries stored before it was known:
    /// a matching one becomes verified, any other is dropped. Returns (verified, dropped).
    /// `source_blob` is the sha256 of the index generation that said so.
    pub fn expect(&self, mut learned: Vec<(String, Expected)>, source_blob: &str) -> (usize, usize) {
        for (_, e) in &mut learned {
            e.source_blob = Some(source_blob.to_string());
        }
        let (mut verified, mut dropped) = (0, 0);
        {
            let mut entries = self.entries.write().unwrap();
            for (key, e) in &learned {
                let Some(entry) = entries.get_mut(key) else {
                    continue;
                };
                if entry.verified {
                    continue; // an older generation's verified copy: serving checks it anew
                }
                if entry.blob == e.sha256 {
                    entry.verified = true;
                    verified += 1;
                    let _ = self.writer.send(Write::Verified(key.clone()));
                } else {
                    tracing::warn!(%key, stored = %entry.blob, expected = %e.sha256, "unverified copy disagrees with its index: dropped");
                    entries.remove(key);
                    dropped += 1;
                    let _ = self.writer.send(Write::Remove(key.clone()));
                }
            }
        }
        {
            let mut expected = self.expected.write().unwrap();
            for (key, e) in &learned {
                expected.insert(key.clone(), e.clone());
            }
        }
        let _ = self.writer.send(Write::Expect(learned));
        (verified, dropped)
    }

    /// Marks an entry verified if it still holds `blob`: a Release once the detached signature
    /// checked against exactly that content has checked out.
    pub fn mark_verified(&self, key: &str, blob: &str) {
        if let Some(e) = self.entries.write().unwrap().get_mut(key).filter(|e| e.blob == blob) {
            e.verified = true;
            let _ = self.writer.send(Write::Verified(key.to_string()));
        }
    }

    pub fn unverified_count(&self) -> usize {
        self.entries.read().unwrap().values().filter(|e| !e.verified).count()
    }

    pub fn expected_count(&self) -> usize {
        self.expected.read().unwrap().len()
    }

    pub fn validated(&self, key: &str) {
        let now = now_secs();
        if let Some(e) = self.entries.write().unwrap().get_mut(key) {
            e.validated_at = now;
        }
        let _ = self.writer.send(Write::Validated(key.to_string(), now));
    }

    pub fn hit(&self, key: &str) {
        let _ = self.writer.send(Write::Hit(key.to_string(), now_secs()));
    }

    pub fn remove(&self, key: &str) {
        self.entries.write().unwrap().remove(key);
        let _ = self.writer.send(Write::Remove(key.to_string()));
    }

    /// Removes `key` if it still holds `blob` (and not a newer copy stored meanwhile).
    pub fn remove_if(&self, key: &str, blob: &str) -> bool {
        let mut entries = self.entries.write().unwrap();
        if entries.get(key).is_some_and(|e| e.blob == blob) {
            entries.remove(key);
            let _ = self.writer.send(Write::Remove(key.to_string()));
            return true;
        }
        false
    }

    pub fn entry_count(&self) -> usize {
        self.entries.read().unwrap().len()
    }

    /// Sum of entry sizes (a blob shared by several URLs counts once per URL).
    pub fn total_bytes(&self) -> u64 {
        self.entries.read().unwrap().values().map(|e| e.size).sum()
    }

    /// Waits until everything sent so far is committed. Blocking.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.writer.send(Write::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
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

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// The writer thread: takes whatever has queued up and commits it in one transaction.
fn write_behind(mut conn: Connection, queue: mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < 10_000 {
            match queue.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if let Err(e) = apply(&mut conn, &batch) {
            tracing::error!(error = %e, writes = batch.len(), "cache index write failed");
        }
        for w in batch {
            if let Write::Flush(done) = w {
                let _ = done.send(());
            }
        }
    }
}

fn apply(conn: &mut Connection, batch: &[Write]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    // Hits are the bulk of the traffic: one UPDATE per key per batch, however many there were.
    let mut hits: HashMap<&str, (u64, u64)> = HashMap::new();
    for w in batch {
        match w {
            Write::Put(key, e) => {
                tx.prepare_cached(
                    "INSERT INTO entries (key, blob, size, etag, last_modified, content_type, validated_at, accessed_at, verified)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
                     ON CONFLICT (key) DO UPDATE SET blob = ?2, size = ?3, etag = ?4, last_modified = ?5,
                        content_type = ?6, validated_at = ?7, accessed_at = ?7, verified = ?8",
                )?
                .execute(params![key, e.blob, e.size, e.etag, e.last_modified, e.content_type, e.validated_at, e.verified])?;
            }
            Write::Expect(learned) => {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO expected (key, sha256, size, role, source, archive_name, source_blob)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (key) DO UPDATE SET sha256 = ?2, size = ?3, role = ?4, source = ?5,
                        archive_name = ?6, source_blob = ?7",
                )?;
                for (key, e) in learned {
                    stmt.execute(params![
                        key,
                        e.sha256,
                        e.size,
                        e.role.encode(),
                        e.source,
                        e.archive_name,
                        e.source_blob
                    ])?;
                }
            }
            Write::Unexpect(keys) => {
                let mut stmt = tx.prepare_cached("DELETE FROM expected WHERE key = ?1")?;
                for key in keys {
                    stmt.execute([key])?;
                }
            }
            Write::RefreshFailed(f) => {
                tx.prepare_cached(
                    "INSERT INTO refresh_failures (key, at, reason) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET at = ?2, reason = ?3",
                )?
                .execute(params![f.key, f.at, f.reason])?;
            }
            Write::RefreshOk(key) => {
                tx.prepare_cached("DELETE FROM refresh_failures WHERE key = ?1")?.execute([key])?;
            }
            Write::Pruned(last, report) => {
                tx.prepare_cached("INSERT INTO prunes (at, files, bytes, report) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![last.at, last.files, last.bytes, report])?;
            }
            Write::Verified(key) => {
                tx.prepare_cached("UPDATE entries SET verified = 1 WHERE key = ?1")?.execute([key])?;
            }
            Write::Validated(key, at) => {
                tx.prepare_cached("UPDATE entries SET validated_at = ?2 WHERE key = ?1")?.execute(params![key, at])?;
            }
            Write::Hit(key, at) => {
                let (count, last) = hits.entry(key).or_default();
                *count += 1;
                *last = (*last).max(*at);
            }
            Write::Remove(key) => {
                hits.remove(key.as_str());
                tx.prepare_cached("DELETE FROM entries WHERE key = ?1")?.execute([key])?;
            }
            Write::Flush(_) => {}
        }
    }
    for (key, (count, at)) in hits {
        tx.prepare_cached("UPDATE entries SET accessed_at = ?2, hits = hits + ?3 WHERE key = ?1")?
            .execute(params![key, at, count])?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn learning_an_index_settles_unverified_entries_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.sqlite");
        let catalog = Catalog::open(&db, |_| true).unwrap();
        catalog.put("good", entry("aa"));
        catalog.put("bad", entry("bb"));
        let expect = |sha: &str| Expected {
            sha256: sha.into(),
            size: None,
            role: Role::AptPackages(Compression::Xz),
            source: "idx".into(),
            archive_name: Some("a_1_all.deb".into()),
            source_blob: Some("ff".into()),
        };
        let (verified, dropped) = catalog.expect(
            vec![("good".into(), expect("aa")), ("bad".into(), expect("cc")), ("later".into(), expect("dd"))],
            "ff",
        );
        assert_eq!((verified, dropped), (1, 1));
        assert!(catalog.get("good").unwrap().verified);
        assert_eq!(catalog.get("bad"), None);
        catalog.flush();
        drop(catalog);
        let catalog = Catalog::open(&db, |_| true).unwrap();
        assert!(catalog.get("good").unwrap().verified);
        assert_eq!(catalog.get("bad"), None);
        assert_eq!(catalog.expected("later").unwrap(), expect("dd"));
        assert_eq!(catalog.expected_count(), 3);
    }

    #[test]
    fn entries_survive_a_reopen_unless_their_blob_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("index.sqlite");
        let catalog = Catalog::open(&db, |_| true).unwrap();
        catalog.put("a", entry("aa"));
        catalog.put("b", entry("bb"));
        catalog.hit("a");
        catalog.hit("a");
        catalog.validated("a");
        catalog.flush();
        drop(catalog);

        let catalog = Catalog::open(&db, |blob| blob == "aa").unwrap();
        assert_eq!(catalog.get("a").unwrap().blob, "aa");
        assert!(catalog.get("a").unwrap().validated_at > 7);
        assert_eq!(catalog.get("b"), None);
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
}
