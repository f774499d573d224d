//! The audit log: one record per wrapper command — also for failed and refused ones — in its
//! own SQLite file under the state directory (host side, outside every container), so that
//! "what was installed into this container, when, by whom and from where" can be answered
//! months later.
//!
//! Each record is stored as the exact JSON text that was hashed: its sha256 covers its number,
//! the hash of the record before it and that text, and a one-row `head` table names the last
//! record. [`Log::verify`] recomputes the chain and names the first record that was edited,
//! deleted or moved. (Whoever can rewrite the whole file can also recompute every hash: keep
//! the head hash `vzpkg audit verify` prints somewhere else to anchor it.)
//!
//! Everything that came from a guest (package names, versions, architectures) is bounded
//! before it is stored and stored as data; it is printed with control characters escaped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::{Changes, Installed};

/// Applied in order by `PRAGMA user_version`; a shipped migration is never edited, only appended.
const MIGRATIONS: &[&str] = &["CREATE TABLE records (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        started_ms  INTEGER NOT NULL,
        container   TEXT NOT NULL,
        body        TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        hash        TEXT NOT NULL
    );
    CREATE INDEX records_container ON records (container, started_ms);
    CREATE TABLE head (
        one    INTEGER PRIMARY KEY CHECK (one = 1),
        id     INTEGER NOT NULL,
        hash   TEXT NOT NULL,
        count  INTEGER NOT NULL
    );"];

/// The file under the state directory.
pub const FILE: &str = "audit.sqlite";

/// The `prev_hash` of the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest package name, version and architecture kept (characters).
pub const MAX_NAME: usize = 256;
pub const MAX_VERSION: usize = 256;
pub const MAX_ARCH: usize = 64;
/// Longest error text kept.
pub const MAX_ERROR: usize = 4096;
/// Most package changes kept in one record (a dist-upgrade changes a few thousand).
pub const MAX_CHANGES: usize = 20_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Unix milliseconds.
    pub started_ms: u64,
    pub ended_ms: u64,
    pub container: ContainerInfo,
    pub user: User,
    /// vzpkg's own command line.
    pub argv: Vec<String>,
    /// install, remove, upgrade, update, list or exec.
    pub command: String,
    pub backend: Option<String>,
    /// What ran inside the sandbox, in order.
    pub guest_commands: Vec<Vec<String>>,
    /// The package manager's (or command's) exit status; None when it never ran.
    pub exit_status: Option<i32>,
    /// ok, failed (non-zero exit), refused (a lock was held), or error (vzpkg stopped it).
    pub outcome: String,
    pub error: Option<String>,
    pub oom: bool,
    pub timed_out: bool,
    /// What was done about the container's package-manager locks and interrupted runs.
    pub lock_actions: Vec<String>,
    pub changes: Vec<Change>,
    /// Bytes this run got, by source.
    pub bytes: Bytes,
    /// Upstream hosts the proxy refused during the run.
    pub refused_hosts: Vec<String>,
    /// The tag the proxy saw in the run's User-Agent.
    pub run_tag: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerInfo {
    /// As the operator named it (`dir:/…`, a config name).
    pub spec: String,
    /// stopped-root, …
    pub kind: Option<String>,
    /// The root directory, canonical where it could be resolved.
    pub root: Option<String>,
    /// Device and inode of the root, `dev:ino` in hex.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub uid: u32,
    pub name: Option<String>,
    /// SUDO_USER, when run through sudo.
    pub sudo_user: Option<String>,
    /// The login uid (audit's loginuid), when set.
    pub login_uid: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Change {
    /// install, remove, upgrade or downgrade.
    pub action: String,
    pub name: String,
    pub arch: String,
    pub old_version: Option<String>,
    pub new_version: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Bytes {
    /// Whether the proxy was asked and answered: without it only `view` is known.
    pub proxy_counted: bool,
    /// Read from the run's view of the shared cache (no HTTP at all): the archives of the
    /// packages it installed or upgraded that the view held.
    pub view: u64,
    /// Served by the proxy from its store.
    pub cache: u64,
    /// Served by the proxy as it came from upstream.
    pub upstream: u64,
    /// Error pages and the proxy's own endpoints.
    pub other: u64,
}

/// `text` cut to `max` characters, marked with `…`; stored as it is otherwise (as data).
pub fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl Change {
    fn of(action: &str, old: Option<&Installed>, new: Option<&Installed>) -> Change {
        let p = new.or(old).expect("a change has a package");
        Change {
            action: action.to_string(),
            name: bounded(&p.name, MAX_NAME),
            arch: bounded(&p.arch, MAX_ARCH),
            old_version: old.map(|o| bounded(&o.version, MAX_VERSION)),
            new_version: new.map(|n| bounded(&n.version, MAX_VERSION)),
        }
    }

    /// The diff of the installed sets, as records keep it.
    pub fn list(changes: &Changes) -> Vec<Change> {
        let mut out = Vec::new();
        for p in &changes.installed {
            out.push(Change::of("install", None, Some(p)));
        }
        for (old, new) in &changes.changed {
            let action = match vzpkg_adapters::apt::version::compare(&new.version, &old.version) {
                std::cmp::Ordering::Less => "downgrade",
                _ => "upgrade",
            };
            out.push(Change::of(action, Some(old), Some(new)));
        }
        for p in &changes.removed {
            out.push(Change::of("remove", Some(p), None));
        }
        out.truncate(MAX_CHANGES);
        out
    }
}

impl User {
    /// Who runs this process.
    pub fn current() -> User {
        let uid = nix::unistd::getuid();
        let name = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name);
        let login_uid = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&id| id != u32::MAX);
        let sudo_user = std::env::var("SUDO_USER").ok().map(|s| bounded(&s, 64));
        User { uid: uid.as_raw(), name, sudo_user, login_uid }
    }
}

/// A record as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub record: Record,
    /// The previous record's hash, and this one's.
    pub prev_hash: String,
    pub hash: String,
}

pub struct Log {
    conn: Connection,
    path: PathBuf,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub records: u64,
    /// The last record's number and hash: keep them elsewhere to anchor the chain.
    pub head: Option<(i64, String)>,
    /// The first broken record and why.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub record: i64,
    pub reason: String,
}

fn hash_of(id: i64, prev: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("vzpkg audit v1\n{id}\n{prev}\n").as_bytes());
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// The `container` column: what `vzpkg audit CT` matches on.
fn container_key(c: &ContainerInfo) -> String {
    c.root.clone().unwrap_or_else(|| c.spec.clone())
}

impl Log {
    /// Opens (creating and migrating) the log under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Log> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
        let path = state_dir.join(FILE);
        let new = !path.exists();
        let mut conn = Connection::open(&path).with_context(|| format!("opening the audit log {}", path.display()))?;
        if new {
            // It names users, containers and what they run: root's alone.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        // Before anything that locks: other vzpkg processes may be writing.
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        // WAL is kept in the file: set once. SQLite answers a journal mode change that races
        // another connection with SQLITE_BUSY at once, without its busy handler: retried here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let mode = conn.pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0));
            let result = match mode {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => Ok(()),
                Ok(_) => conn.pragma_update(None, "journal_mode", "WAL"),
                Err(e) => Err(e),
            };
            match result {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        }
        // Read under the write lock: several vzpkg processes may open a new log at once.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(Log { conn, path })
    }

    /// Opens an existing log for reading; None when there is none yet.
    pub fn open_existing(state_dir: &Path) -> Result<Option<Log>> {
        if !state_dir.join(FILE).exists() {
            return Ok(None);
        }
        Self::open(state_dir).map(Some)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; returns its number and hash.
    pub fn append(&mut self, record: &Record) -> Result<(i64, String)> {
        let body = serde_json::to_string(record)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head: Option<(i64, String, i64)> = tx
            .query_row("SELECT id, hash, count FROM head WHERE one = 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let (prev_id, prev_hash, count) = head.unwrap_or((0, GENESIS.to_string(), 0));
        // AUTOINCREMENT never reuses a number, so a deleted last record leaves a gap too.
        let id = prev_id.max(tx.query_row("SELECT COALESCE(MAX(id), 0) FROM records", [], |r| r.get::<_, i64>(0))?) + 1;
        let hash = hash_of(id, &prev_hash, &body);
        tx.execute(
            "INSERT INTO records (id, started_ms, container, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, record.started_ms as i64, container_key(&record.container), body, prev_hash, hash],
        )?;
        tx.execute(
            "INSERT INTO head (one, id, hash, count) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (one) DO UPDATE SET id = ?1, hash = ?2, count = ?3",
            params![id, hash, count + 1],
        )?;
        tx.commit()?;
        Ok((id, hash))
    }

    /// Records in order, optionally only those of one container root and from a time on.
    pub fn records(&self, container: Option<&str>, since_ms: Option<u64>) -> Result<Vec<Stored>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, body, prev_hash, hash FROM records
             WHERE (?1 IS NULL OR container = ?1) AND started_ms >= ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![container, since_ms.unwrap_or(0) as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body, prev_hash, hash) = row?;
            let record = serde_json::from_str(&body).with_context(|| format!("audit record {id} is not readable"))?;
            out.push(Stored { id, record, prev_hash, hash });
        }
        Ok(out)
    }

    /// Recomputes the chain; names the first record that was edited, deleted or moved.
    pub fn verify(&self) -> Result<Verification> {
        let mut stmt =
            self.conn.prepare("SELECT id, started_ms, container, body, prev_hash, hash FROM records ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let (mut expected_prev, mut expected_id, mut count) = (GENESIS.to_string(), 1i64, 0u64);
        let mut last: Option<(i64, String)> = None;
        let broken = |record: i64, reason: String| Some(Broken { record, reason });
        let mut found = None;
        while let Some(row) = rows.next()? {
            let (id, started_ms, container, body, prev, hash): (i64, i64, String, String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?);
            count += 1;
            if hash_of(id, &prev, &body) != hash {
                found = broken(
                    id,
                    format!("record {id} does not match its hash: it was edited, or moved from another place"),
                );
                break;
            }
            if id != expected_id {
                let what = if expected_id + 1 == id {
                    format!("record {expected_id} is missing (deleted)")
                } else {
                    format!("records {expected_id} to {} are missing (deleted)", id - 1)
                };
                found = broken(expected_id, what);
                break;
            }
            if prev != expected_prev {
                found = broken(
                    id,
                    format!("record {id} does not follow the record before it: records were reordered or replaced"),
                );
                break;
            }
            let record: Record = match serde_json::from_str(&body) {
                Ok(r) => r,
                Err(e) => {
                    found = broken(id, format!("record {id} is not readable: {e}"));
                    break;
                }
            };
            if record.started_ms as i64 != started_ms || container_key(&record.container) != container {
                found =
                    broken(id, format!("record {id}: its indexed columns were edited (they differ from its content)"));
                break;
            }
            expected_prev = hash.clone();
            expected_id = id + 1;
            last = Some((id, hash));
        }
        drop(rows);
        if found.is_none() {
            let head: Option<(i64, String, i64)> = self
                .conn
                .query_row("SELECT id, hash, count FROM head WHERE one = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let (last_id, last_hash) = last.clone().unwrap_or((0, GENESIS.to_string()));
            match head {
                None if count == 0 => {}
                None => found = broken(last_id, "the log's head record is missing".into()),
                Some((id, _, _)) if id > last_id => {
                    let what = if id == last_id + 1 {
                        format!("record {id}, the last one, is missing (deleted)")
                    } else {
                        format!("records {} to {id}, the last ones, are missing (deleted)", last_id + 1)
                    };
                    found = broken(last_id + 1, what);
                }
                Some((id, hash, n)) if id != last_id || hash != last_hash || n as u64 != count => {
                    found =
                        broken(last_id, "the log's head does not match its last record: the head was edited".into());
                }
                Some(_) => {}
            }
        }
        Ok(Verification { records: count, head: last, broken: found })
    }
}

/// A record being filled in as a wrapper command goes, written when it ends however it ends.
pub struct Pending {
    record: Record,
    refused: bool,
    /// The view's files and sizes, for the bytes read from it.
    view_files: std::collections::HashMap<String, u64>,
    /// Where the finished record is also written as JSON (`--record-to`).
    copy_to: Option<std::path::PathBuf>,
}

impl Pending {
    /// Also write the finished record to `path` as JSON.
    pub fn copy_to(&mut self, path: Option<std::path::PathBuf>) {
        self.copy_to = path;
    }

    pub fn start(spec: &str, command: &str) -> Pending {
        let record = Record {
            started_ms: now_ms(),
            container: ContainerInfo { spec: bounded(spec, 4096), ..Default::default() },
            user: User::current(),
            argv: std::env::args().map(|a| bounded(&a, 4096)).take(10_000).collect(),
            command: command.to_string(),
            ..Default::default()
        };
        Pending { record, refused: false, view_files: Default::default(), copy_to: None }
    }

    pub fn container(&mut self, c: &crate::container::Container) {
        let root = std::fs::canonicalize(&c.root_path).unwrap_or_else(|_| c.root_path.clone());
        self.record.container.kind = Some(format!("{:?}", c.kind));
        self.record.container.root = Some(root.display().to_string());
        self.record.container.id = Some(format!("{:x}:{:x}", c.identity.0, c.identity.1));
    }

    pub fn backend(&mut self, name: &str) {
        self.record.backend = Some(name.to_string());
    }

    pub fn lock_action(&mut self, what: String) {
        self.record.lock_actions.push(what);
    }

    pub fn commands(&mut self, commands: &[Vec<String>]) {
        self.record.guest_commands = commands.to_vec();
    }

    pub fn run_tag(&mut self, user_agent: &str) {
        self.record.run_tag = user_agent.split_whitespace().find_map(|w| w.strip_prefix("run/")).map(str::to_string);
    }

    /// Passes `result` through, noting a refusal (a lock held too long) when it failed.
    pub fn refusal<T>(&mut self, result: Result<T>) -> Result<T> {
        self.refused |= result.is_err();
        result
    }

    pub fn outcome(&mut self, outcome: &crate::container::sandbox::Outcome) {
        self.record.oom = outcome.oom;
        self.record.timed_out = outcome.timed_out;
    }

    /// Notes what the views held, before they go.
    pub fn views(&mut self, views: &[crate::backend::View]) {
        for view in views {
            let listing = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(view.dir.fd()));
            let Ok(entries) = std::fs::read_dir(listing) else { continue };
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    self.view_files.insert(entry.file_name().to_string_lossy().into_owned(), meta.len());
                }
            }
        }
    }

    pub fn changes(&mut self, changes: &Changes) {
        self.record.changes = Change::list(changes);
        // apt's name for an archive: name_version_arch.deb, the epoch's colon escaped.
        let archive = |p: &Installed| format!("{}_{}_{}.deb", p.name, p.version.replace(':', "%3a"), p.arch);
        let got = changes.installed.iter().chain(changes.changed.iter().map(|(_, new)| new));
        self.record.bytes.view = got.filter_map(|p| self.view_files.get(&archive(p))).sum();
    }

    /// Completes the record with how the command ended and what the proxy counted for the run,
    /// says which refused hosts to allow, and appends it to the log. A record that cannot be
    /// written fails the command.
    pub fn finish(mut self, state_dir: &Path, cache_dir: &Path, result: Result<i32>) -> Result<i32> {
        let r = &mut self.record;
        r.ended_ms = now_ms();
        match &result {
            Ok(code) => {
                r.exit_status = Some(*code);
                r.outcome = if *code == 0 { "ok" } else { "failed" }.into();
            }
            Err(e) => {
                r.outcome = if self.refused { "refused" } else { "error" }.into();
                r.error = Some(bounded(&format!("{e:#}"), MAX_ERROR));
            }
        }
        if let Some(tag) = r.run_tag.clone() {
            match crate::admin::run_stats(cache_dir, &tag) {
                Ok(Some(stats)) => {
                    let n = |k: &str| stats[k].as_u64().unwrap_or(0);
                    r.bytes.proxy_counted = true;
                    (r.bytes.cache, r.bytes.upstream, r.bytes.other) =
                        (n("bytes_from_cache"), n("bytes_from_upstream"), n("bytes_other"));
                    r.refused_hosts = stats["refused_hosts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|h| h.as_str())
                        .map(|h| bounded(h, 300))
                        .collect();
                }
                Ok(None) => {}
                Err(e) => eprintln!("vzpkg: could not ask the proxy what this run downloaded: {e:#}"),
            }
        }
        for host in &r.refused_hosts {
            let host = crate::untrusted::printable(host, 300);
            eprintln!(
                "vzpkg: the proxy refused upstream host {host} during this run: it is not allowed. To allow it, \
                 start the proxy with `--allow-host {host}`, or add it under [proxy] in the config:\n    allow_hosts = [\"{host}\"]"
            );
        }
        if let Some(path) = &self.copy_to {
            let json = serde_json::to_vec(&self.record).expect("a record is plain data");
            if let Err(e) = std::fs::write(path, json) {
                eprintln!("vzpkg: could not write this run's record to {}: {e}", path.display());
            }
        }
        let written = Log::open(state_dir).and_then(|mut log| log.append(&self.record));
        match (result, written) {
            (result, Ok(_)) => result,
            (Ok(_), Err(e)) => Err(e.context("the command ran, but its audit record could not be written")),
            (Err(e), Err(log)) => {
                eprintln!("vzpkg: the audit record of this command could not be written: {log:#}");
                Err(e)
            }
        }
    }
}

pub fn now_ms() -> u64 {
    crate::commands::now_millis() as u64
}

/// The root path of a container as the operator names it, without opening it: for matching
/// records of a container that may no longer exist.
pub fn root_of(spec: &str, named: &std::collections::BTreeMap<String, PathBuf>) -> Option<String> {
    let path = match spec.strip_prefix("dir:") {
        Some(dir) => PathBuf::from(dir),
        None => named.get(spec)?.clone(),
    };
    Some(std::fs::canonicalize(&path).unwrap_or(path).display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> Record {
        Record {
            started_ms: 1_700_000_000_000 + n,
            container: ContainerInfo { spec: "dir:/ct".into(), root: Some("/ct".into()), ..Default::default() },
            command: "install".into(),
            outcome: "ok".into(),
            ..Default::default()
        }
    }

    fn log_with(n: u64) -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        for i in 0..n {
            log.append(&record(i)).unwrap();
        }
        (dir, log)
    }

    fn broken_at(log: &Log) -> Option<i64> {
        log.verify().unwrap().broken.map(|b| b.record)
    }

    #[test]
    fn an_untouched_log_verifies_and_tampering_is_named() {
        let (_dir, log) = log_with(5);
        let v = log.verify().unwrap();
        assert!(v.broken.is_none() && v.records == 5 && v.head.as_ref().unwrap().0 == 5, "{v:?}");

        let sql = |s: &str| log.conn.execute_batch(s).unwrap();
        sql("UPDATE records SET body = replace(body, '\"ok\"', '\"failed\"') WHERE id = 3");
        assert_eq!(broken_at(&log), Some(3));
    }

    #[test]
    fn deleting_or_swapping_records_is_named() {
        let (_dir, log) = log_with(5);
        log.conn.execute_batch("DELETE FROM records WHERE id = 2").unwrap();
        let v = log.verify().unwrap();
        assert_eq!(v.broken.as_ref().unwrap().record, 2, "{v:?}");
        assert!(v.broken.unwrap().reason.contains("missing"));

        let (_dir, log) = log_with(5);
        log.conn.execute_batch("DELETE FROM records WHERE id = 5").unwrap();
        assert_eq!(broken_at(&log), Some(5), "the last record");

        let (_dir, log) = log_with(5);
        log.conn
            .execute_batch(
                "UPDATE records SET id = -1 WHERE id = 2; UPDATE records SET id = 2 WHERE id = 4;
                 UPDATE records SET id = 4 WHERE id = -1;",
            )
            .unwrap();
        assert_eq!(broken_at(&log), Some(2));

        let (_dir, log) = log_with(3);
        log.conn.execute_batch("UPDATE records SET container = '/other' WHERE id = 1").unwrap();
        assert_eq!(broken_at(&log), Some(1));
    }

    #[test]
    fn records_filter_by_container_and_time_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        log.append(&record(1)).unwrap();
        let mut other = record(2);
        other.container.root = Some("/other".into());
        log.append(&other).unwrap();
        log.append(&record(3)).unwrap();
        drop(log);
        let log = Log::open(dir.path()).unwrap();
        let ids = |c, s| log.records(c, s).unwrap().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(Some("/ct"), None), [1, 3]);
        assert_eq!(ids(None, Some(1_700_000_000_002)), [2, 3]);
        assert!(log.verify().unwrap().broken.is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(log.path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn guest_text_is_bounded() {
        let long = format!("\u{1b}]0;owned\u{7}{}", "x".repeat(1 << 20));
        let p = Installed { name: long.clone(), arch: long.clone(), version: long };
        let changes = Changes { installed: vec![p], ..Default::default() };
        let c = &Change::list(&changes)[0];
        assert_eq!(c.name.chars().count(), MAX_NAME + 1);
        assert_eq!(c.arch.chars().count(), MAX_ARCH + 1);
        assert!(c.name.ends_with('…'));
    }

    #[test]
    fn upgrades_and_downgrades_are_told_apart() {
        let p = |v: &str| Installed { name: "a".into(), arch: "all".into(), version: v.into() };
        let changes = Changes {
            changed: vec![(p("1.0"), p("1.1")), (p("2.0"), p("1:0.1")), (p("1.0"), p("1.0~rc1"))],
            ..Default::default()
        };
        let actions: Vec<_> = Change::list(&changes).into_iter().map(|c| c.action).collect();
        assert_eq!(actions, ["upgrade", "upgrade", "downgrade"]);
    }
}
