//! The catalog: which URL is stored in which blob, with its validators and access statistics.
//! Lookups are served from memory; every change is written behind to SQLite (WAL) by one thread
//! that batches, so the hit path never waits for a database write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::error::Result;

/// Applied in order by `PRAGMA user_version`; a shipped migration is never edited, only appended.
const MIGRATIONS: &[&str] = &["CREATE TABLE entries (
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
    CREATE INDEX entries_blob ON entries (blob);"];

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
}

enum Write {
    Put(String, Entry),
    Validated(String, u64),
    Hit(String, u64),
    Remove(String),
    Flush(mpsc::Sender<()>),
}

pub struct Catalog {
    entries: RwLock<HashMap<String, Entry>>,
    writer: mpsc::Sender<Write>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
                "SELECT key, blob, size, etag, last_modified, content_type, validated_at FROM entries",
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
        for key in &missing {
            tracing::warn!(%key, "catalog entry without its blob: dropped");
            conn.execute("DELETE FROM entries WHERE key = ?1", [key])?;
        }

        let (writer, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("vzpkg-catalog".into())
            .spawn(move || write_behind(conn, queue))?;
        Ok(Catalog {
            entries: RwLock::new(entries),
            writer,
        })
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        self.entries.read().unwrap().get(key).cloned()
    }

    pub fn put(&self, key: &str, entry: Entry) {
        self.entries
            .write()
            .unwrap()
            .insert(key.to_string(), entry.clone());
        let _ = self.writer.send(Write::Put(key.to_string(), entry));
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
                    "INSERT INTO entries (key, blob, size, etag, last_modified, content_type, validated_at, accessed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                     ON CONFLICT (key) DO UPDATE SET blob = ?2, size = ?3, etag = ?4, last_modified = ?5,
                        content_type = ?6, validated_at = ?7, accessed_at = ?7",
                )?
                .execute(params![key, e.blob, e.size, e.etag, e.last_modified, e.content_type, e.validated_at])?;
            }
            Write::Validated(key, at) => {
                tx.prepare_cached("UPDATE entries SET validated_at = ?2 WHERE key = ?1")?
                    .execute(params![key, at])?;
            }
            Write::Hit(key, at) => {
                let (count, last) = hits.entry(key).or_default();
                *count += 1;
                *last = (*last).max(*at);
            }
            Write::Remove(key) => {
                hits.remove(key.as_str());
                tx.prepare_cached("DELETE FROM entries WHERE key = ?1")?
                    .execute([key])?;
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
        }
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
        let hits: u64 = conn
            .query_row("SELECT hits FROM entries WHERE key = 'a'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hits, 2);
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }
}
