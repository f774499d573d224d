//! The catalog's schema: the migrations, applied in order by `PRAGMA user_version` (cargo's
//! scheme), and the one-time compaction after the upgrade to the compact catalog.

use rusqlite::Connection;

use crate::error::Result;

/// Applied in order by `PRAGMA user_version`; a shipped migration is never edited, only appended.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // The catalog on disk: digests as 32-byte blobs, the hash chain's URLs split into a shared
    // directory and a file name, the vouching index generation and the role as integers, and
    // the counts status reports kept up to date instead of counted. Rows whose digest is not a
    // SHA256 could never match a stored blob: they are left behind. The archive name of a
    // .deb, which nothing read, is not kept.
    "CREATE TABLE entries_v5 (
        key           TEXT PRIMARY KEY,
        blob          BLOB NOT NULL,
        size          INTEGER NOT NULL,
        etag          TEXT,
        last_modified TEXT,
        content_type  TEXT,
        validated_at  INTEGER NOT NULL,
        accessed_at   INTEGER NOT NULL,
        hits          INTEGER NOT NULL DEFAULT 0,
        verified      INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO entries_v5
        SELECT key, unhex(blob), size, etag, last_modified, content_type, validated_at, accessed_at, hits, verified
        FROM entries WHERE length(blob) = 64 AND unhex(blob) IS NOT NULL;
    DROP TABLE entries;
    ALTER TABLE entries_v5 RENAME TO entries;
    CREATE INDEX entries_blob ON entries (blob);

    CREATE TABLE dirs (
        id      INTEGER PRIMARY KEY,
        path    TEXT NOT NULL UNIQUE
    );
    CREATE TABLE generations (
        id      INTEGER PRIMARY KEY,
        source  TEXT NOT NULL,
        blob    BLOB,
        UNIQUE (source, blob)
    );
    CREATE TABLE known (
        dir         INTEGER NOT NULL,
        name        TEXT NOT NULL,
        sha256      BLOB NOT NULL,
        size        INTEGER,
        role        INTEGER NOT NULL,
        generation  INTEGER NOT NULL,
        PRIMARY KEY (dir, name)
    ) WITHOUT ROWID;
    -- The index files a generation lists, for prune's walk down the chain.
    CREATE INDEX known_indexes ON known (generation) WHERE role != 0;

    INSERT OR IGNORE INTO dirs (path) SELECT DISTINCT rtrim(key, replace(key, '/', '')) FROM expected;
    INSERT OR IGNORE INTO generations (source, blob)
        SELECT DISTINCT source, unhex(source_blob) FROM expected;
    INSERT OR REPLACE INTO known (dir, name, sha256, size, role, generation)
        SELECT d.id, substr(e.key, length(d.path) + 1), unhex(e.sha256), e.size,
            CASE e.role
                WHEN 'package' THEN 0
                WHEN 'apt-packages:none' THEN 16 WHEN 'apt-packages:gzip' THEN 17
                WHEN 'apt-packages:xz' THEN 18 WHEN 'apt-packages:zstd' THEN 19
                WHEN 'apt-packages:bzip2' THEN 20
                WHEN 'rpm-primary:none' THEN 32 WHEN 'rpm-primary:gzip' THEN 33
                WHEN 'rpm-primary:xz' THEN 34 WHEN 'rpm-primary:zstd' THEN 35
                WHEN 'rpm-primary:bzip2' THEN 36
                ELSE 1 END,
            g.id
        FROM expected e
        JOIN dirs d ON d.path = rtrim(e.key, replace(e.key, '/', ''))
        JOIN generations g ON g.source = e.source AND g.blob IS unhex(e.source_blob)
        WHERE length(e.sha256) = 64 AND unhex(e.sha256) IS NOT NULL;
    DROP TABLE expected;

    CREATE TABLE tallies (
        entries     INTEGER NOT NULL,
        bytes       INTEGER NOT NULL,
        unverified  INTEGER NOT NULL,
        known       INTEGER NOT NULL
    );
    INSERT INTO tallies SELECT
        (SELECT COUNT(*) FROM entries), (SELECT COALESCE(SUM(size), 0) FROM entries),
        (SELECT COUNT(*) FROM entries WHERE verified = 0), (SELECT COUNT(*) FROM known);",
];

/// The first version with the compact catalog: an upgrade to it leaves the old tables' pages
/// free, given back once by a VACUUM.
const COMPACT_VERSION: usize = 5;

pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    if (1..COMPACT_VERSION).contains(&version) {
        tracing::info!("cache index upgraded to the compact catalog; giving the old tables' space back");
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}
