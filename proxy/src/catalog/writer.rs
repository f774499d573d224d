//! The catalog's writer thread: the one connection that writes. It commits whatever has
//! queued up in one transaction, keeps the counts status reports, settles entries stored
//! before their index was known, and afterwards tells the hot caches what went stale.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use rusqlite::{params, Connection, OptionalExtension};

use super::{digest, split_key, Entry, Hot, LastPrune, RefreshFailure, Role, LEARN_BATCH};
use crate::error::Result;

/// One row learned from an index.
pub(super) struct Row {
    pub key: String,
    pub sha256: [u8; 32],
    pub size: Option<u64>,
    pub role: Role,
}

/// A change for the writer thread, in the order it is to be applied.
pub(super) enum Write {
    Put {
        seq: u64,
        key: String,
        entry: Entry,
    },
    Verified {
        seq: u64,
        key: String,
    },
    Validated {
        seq: u64,
        key: String,
        at: u64,
    },
    Remove {
        seq: u64,
        key: String,
    },
    Hit(String, u64),
    /// A batch of what one index generation vouches for; answered with (verified, dropped)
    /// once committed.
    Learn {
        source: String,
        source_blob: Option<[u8; 32]>,
        rows: Vec<Row>,
        done: mpsc::Sender<(usize, usize)>,
    },
    /// Rows of index generations no longer current go; answered with how many.
    Forget {
        generations: Vec<i64>,
        done: mpsc::Sender<u64>,
    },
    RefreshFailed(RefreshFailure),
    RefreshOk(String),
    Pruned(LastPrune, String),
    Flush(mpsc::Sender<()>),
}

/// The writer thread's side: the one connection that writes, and the ids it has looked up.
pub(super) struct Writer {
    conn: Connection,
    hot: Arc<Hot>,
    entries: u64,
    bytes: u64,
    unverified: u64,
    known: u64,
    ids: Ids,
}

/// Ids the writer has looked up, so that a batch of rows of one directory costs one lookup.
#[derive(Default)]
struct Ids {
    dirs: HashMap<String, i64>,
    generations: HashMap<(String, Option<[u8; 32]>), i64>,
}

/// An answer to a writer's client, given once its batch is committed.
type Answer = Box<dyn FnOnce() + Send>;

/// What a committed batch means for the caches.
#[derive(Default)]
struct Touched {
    /// Entry changes committed, with their sequence numbers.
    entries: Vec<(String, u64)>,
    /// Entries the writer changed by itself (settled by an index).
    settled: Vec<String>,
    /// Expected hashes changed.
    expected: Vec<String>,
    /// Rows went in bulk: the whole expected cache is stale.
    forgot: bool,
}

impl Writer {
    pub(super) fn new(conn: Connection, hot: Arc<Hot>) -> Result<Writer> {
        // A bigger page cache than the readers': learning an index updates pages all over.
        conn.pragma_update(None, "cache_size", -16_000)?;
        let (entries, bytes, unverified, known) =
            conn.query_row("SELECT entries, bytes, unverified, known FROM tallies", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
        let writer = Writer { conn, hot, entries, bytes, unverified, known, ids: Ids::default() };
        writer.publish();
        Ok(writer)
    }

    fn publish(&self) {
        let t = &self.hot.tallies;
        t.entries.store(self.entries, Ordering::SeqCst);
        t.bytes.store(self.bytes, Ordering::SeqCst);
        t.unverified.store(self.unverified, Ordering::SeqCst);
        t.known.store(self.known, Ordering::SeqCst);
    }

    /// Takes whatever has queued up and commits it in one transaction.
    pub(super) fn run(mut self, queue: mpsc::Receiver<Write>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            // A learned batch is big already: it goes with what queued before it, alone.
            let mut rows = 0;
            while batch.len() < 10_000 && rows < LEARN_BATCH {
                match queue.try_recv() {
                    Ok(w) => {
                        if let Write::Learn { rows: r, .. } = &w {
                            rows += r.len();
                        }
                        batch.push(w)
                    }
                    Err(_) => break,
                }
            }
            let mut touched = Touched::default();
            let mut answers = Vec::new();
            match self.apply(&batch, &mut touched, &mut answers) {
                Ok(()) => self.publish(),
                Err(e) => {
                    // Whoever waits for an answer gets an error when the batch is dropped.
                    tracing::error!(error = %e, writes = batch.len(), "cache index write failed");
                    // Ids looked up in the transaction that failed may not exist.
                    self.ids = Ids::default();
                }
            }
            self.settle_caches(&touched);
            self.hot.done.fetch_add(batch.len() as u64, Ordering::SeqCst);
            for answer in answers {
                answer();
            }
            for w in batch {
                if let Write::Flush(done) = w {
                    let _ = done.send(());
                }
            }
        }
    }

    /// After a commit (or a failed one): committed changes leave the pending map, and cached
    /// values they make stale go; the database has the truth.
    fn settle_caches(&self, touched: &Touched) {
        self.hot.invalidate(|| {
            let mut pending = self.hot.pending.lock().unwrap();
            for (key, seq) in &touched.entries {
                if pending.get(key).is_some_and(|(s, _)| s == seq) {
                    pending.remove(key);
                    self.hot.entries.remove(key);
                }
            }
            self.hot.pending_len.store(pending.len(), Ordering::SeqCst);
            for key in &touched.settled {
                if !pending.contains_key(key) {
                    self.hot.entries.remove(key);
                }
            }
            if touched.forgot {
                self.hot.expected.clear();
            } else {
                for key in &touched.expected {
                    self.hot.expected.remove(key);
                }
            }
        });
    }

    /// Applies a batch in one transaction; `answers` are to be given once it is committed.
    fn apply(&mut self, batch: &[Write], touched: &mut Touched, answers: &mut Vec<Answer>) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        // Hits are the bulk of the traffic: one UPDATE per key per batch, however many there were.
        let mut hits: HashMap<&str, (u64, u64)> = HashMap::new();
        let (mut entries, mut bytes, mut unverified, mut known) =
            (self.entries, self.bytes, self.unverified, self.known);
        let mut answered: Vec<Answer> = Vec::new();
        for w in batch {
            match w {
                Write::Put { seq, key, entry: e } => {
                    if let Some((size, verified)) = old_entry(&tx, key)? {
                        entries -= 1;
                        bytes -= size;
                        unverified -= u64::from(!verified);
                    }
                    tx.prepare_cached(
                        "INSERT INTO entries (key, blob, size, etag, last_modified, content_type, validated_at, accessed_at, verified)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
                         ON CONFLICT (key) DO UPDATE SET blob = ?2, size = ?3, etag = ?4, last_modified = ?5,
                            content_type = ?6, validated_at = ?7, accessed_at = ?7, verified = ?8",
                    )?
                    .execute(params![
                        key,
                        digest(&e.blob).map(Vec::from).unwrap_or_default(),
                        e.size,
                        e.etag,
                        e.last_modified,
                        e.content_type,
                        e.validated_at,
                        e.verified
                    ])?;
                    entries += 1;
                    bytes += e.size;
                    unverified += u64::from(!e.verified);
                    touched.entries.push((key.clone(), *seq));
                }
                Write::Verified { seq, key } => {
                    let n = tx
                        .prepare_cached("UPDATE entries SET verified = 1 WHERE key = ?1 AND verified = 0")?
                        .execute([key])?;
                    unverified -= n as u64;
                    touched.entries.push((key.clone(), *seq));
                }
                Write::Validated { seq, key, at } => {
                    tx.prepare_cached("UPDATE entries SET validated_at = ?2 WHERE key = ?1")?
                        .execute(params![key, at])?;
                    touched.entries.push((key.clone(), *seq));
                }
                Write::Remove { seq, key } => {
                    hits.remove(key.as_str());
                    if let Some((size, verified)) = old_entry(&tx, key)? {
                        tx.prepare_cached("DELETE FROM entries WHERE key = ?1")?.execute([key])?;
                        entries -= 1;
                        bytes -= size;
                        unverified -= u64::from(!verified);
                    }
                    touched.entries.push((key.clone(), *seq));
                }
                Write::Hit(key, at) => {
                    let (count, last) = hits.entry(key).or_default();
                    *count += 1;
                    *last = (*last).max(*at);
                }
                Write::Learn { source, source_blob, rows, done } => {
                    let generation = self.ids.generation(&tx, source, *source_blob)?;
                    let (mut verified, mut dropped) = (0, 0);
                    let mut update = tx.prepare_cached(
                        "UPDATE known SET sha256 = ?3, size = ?4, role = ?5, generation = ?6 WHERE dir = ?1 AND name = ?2",
                    )?;
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO known (dir, name, sha256, size, role, generation) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    let mut unsettled =
                        tx.prepare_cached("SELECT blob, size FROM entries WHERE key = ?1 AND verified = 0")?;
                    for row in rows {
                        let (dir, name) = split_key(&row.key);
                        let dir = self.ids.dir(&tx, dir)?;
                        let size = row.size.map(|s| s as i64);
                        let values = params![dir, name, row.sha256, size, row.role.code(), generation];
                        if update.execute(values)? == 0 {
                            insert.execute(values)?;
                            known += 1;
                        }
                        touched.expected.push(row.key.clone());
                        // An entry stored before its index was known is settled now.
                        let stored = unsettled
                            .query_row([&row.key], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u64>(1)?)))
                            .optional()?;
                        let Some((blob, size)) = stored else { continue };
                        if blob == row.sha256 {
                            tx.prepare_cached("UPDATE entries SET verified = 1 WHERE key = ?1")?.execute([&row.key])?;
                            unverified -= 1;
                            verified += 1;
                        } else {
                            tracing::warn!(key = %row.key, stored = %hex::encode(&blob), expected = %hex::encode(row.sha256),
                                "unverified copy disagrees with its index: dropped");
                            tx.prepare_cached("DELETE FROM entries WHERE key = ?1")?.execute([&row.key])?;
                            hits.remove(row.key.as_str());
                            entries -= 1;
                            bytes -= size;
                            unverified -= 1;
                            dropped += 1;
                        }
                        touched.settled.push(row.key.clone());
                    }
                    let done = done.clone();
                    answered.push(Box::new(move || {
                        let _ = done.send((verified, dropped));
                    }));
                }
                Write::Forget { generations, done } => {
                    let mut gone = 0u64;
                    for chunk in generations.chunks(500) {
                        let marks = vec!["?"; chunk.len()].join(",");
                        let ids = || rusqlite::params_from_iter(chunk);
                        gone += tx.execute(&format!("DELETE FROM known WHERE generation IN ({marks})"), ids())? as u64;
                        tx.execute(&format!("DELETE FROM generations WHERE id IN ({marks})"), ids())?;
                    }
                    // Directories no row names any more go too.
                    tx.execute_batch(
                        "DELETE FROM dirs WHERE NOT EXISTS (SELECT 1 FROM known WHERE known.dir = dirs.id)",
                    )?;
                    known -= gone;
                    touched.forgot = true;
                    self.ids = Ids::default();
                    let done = done.clone();
                    answered.push(Box::new(move || {
                        let _ = done.send(gone);
                    }));
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
                Write::Flush(_) => {}
            }
        }
        for (key, (count, at)) in hits {
            tx.prepare_cached("UPDATE entries SET accessed_at = ?2, hits = hits + ?3 WHERE key = ?1")?
                .execute(params![key, at, count])?;
        }
        tx.prepare_cached("UPDATE tallies SET entries = ?1, bytes = ?2, unverified = ?3, known = ?4")?
            .execute(params![entries, bytes, unverified, known])?;
        tx.commit()?;
        (self.entries, self.bytes, self.unverified, self.known) = (entries, bytes, unverified, known);
        answers.append(&mut answered);
        Ok(())
    }
}

impl Ids {
    /// The id of a directory of the hash chain, added if new.
    fn dir(&mut self, tx: &rusqlite::Transaction, path: &str) -> rusqlite::Result<i64> {
        if let Some(&id) = self.dirs.get(path) {
            return Ok(id);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO dirs (path) VALUES (?1)")?.execute([path])?;
        let id = tx.prepare_cached("SELECT id FROM dirs WHERE path = ?1")?.query_row([path], |r| r.get(0))?;
        // Bounded: a few thousand directories a repository, most of them used once in a row.
        if self.dirs.len() >= 65_536 {
            self.dirs.clear();
        }
        self.dirs.insert(path.to_string(), id);
        Ok(id)
    }

    /// The id of an index generation, added if new.
    fn generation(
        &mut self,
        tx: &rusqlite::Transaction,
        source: &str,
        blob: Option<[u8; 32]>,
    ) -> rusqlite::Result<i64> {
        if let Some(&id) = self.generations.get(&(source.to_string(), blob)) {
            return Ok(id);
        }
        let found = tx
            .prepare_cached("SELECT id FROM generations WHERE source = ?1 AND blob IS ?2")?
            .query_row(params![source, blob], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO generations (source, blob) VALUES (?1, ?2)")?
                    .execute(params![source, blob])?;
                tx.last_insert_rowid()
            }
        };
        if self.generations.len() >= 4096 {
            self.generations.clear();
        }
        self.generations.insert((source.to_string(), blob), id);
        Ok(id)
    }
}

/// The size and verified flag of a stored entry.
fn old_entry(tx: &rusqlite::Transaction, key: &str) -> rusqlite::Result<Option<(u64, bool)>> {
    tx.prepare_cached("SELECT size, verified FROM entries WHERE key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}
