//! The catalog: which URL is stored in which blob, with its validators and access statistics,
//! and which SHA256 each URL must have according to the indexes seen so far (the hash chain).
//! Lookups are served from memory; every change is written behind to SQLite (WAL) by one thread
//! that batches, so the hit path never waits for a database write.

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
    Flush(mpsc::Sender<()>),
}

pub struct Catalog {
    entries: RwLock<HashMap<String, Entry>>,
    expected: RwLock<HashMap<String, Expected>>,
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
        {
            let mut stmt = conn.prepare(
                "SELECT key, blob, size, etag, last_modified, content_type, validated_at, verified FROM entries",
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
                ))
            })?;
            for row in rows {
                let (key, entry) = row?;
                if blob_exists(&entry.blob) {
                    entries.insert(key, entry);
                } else {
                    missing.push(key);
                }
            }
        }
        let mut expected = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT key, sha256, size, role, source, archive_name FROM expected")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Expected {
                        sha256: r.get(1)?,
                        size: r.get(2)?,
                        role: Role::decode(&r.get::<_, String>(3)?),
                        source: r.get(4)?,
                        archive_name: r.get(5)?,
                    },
                ))
            })?;
            for row in rows {
                let (key, e) = row?;
                expected.insert(key, e);
            }
        }
        for key in &missing {
            tracing::warn!(%key, "catalog entry without its blob: dropped");
            conn.execute("DELETE FROM entries WHERE key = ?1", [key])?;
        }

        let (writer, queue) = mpsc::channel();
        std::thread::Builder::new().name("vzpkg-catalog".into()).spawn(move || write_behind(conn, queue))?;
        Ok(Catalog { entries: RwLock::new(entries), expected: RwLock::new(expected), writer })
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
    pub fn expect(&self, learned: Vec<(String, Expected)>) -> (usize, usize) {
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
                    "INSERT INTO expected (key, sha256, size, role, source, archive_name) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (key) DO UPDATE SET sha256 = ?2, size = ?3, role = ?4, source = ?5, archive_name = ?6",
                )?;
                for (key, e) in learned {
                    stmt.execute(params![key, e.sha256, e.size, e.role.encode(), e.source, e.archive_name])?;
                }
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
        };
        let (verified, dropped) = catalog.expect(vec![
            ("good".into(), expect("aa")),
            ("bad".into(), expect("cc")),
            ("later".into(), expect("dd")),
        ]);
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
}
