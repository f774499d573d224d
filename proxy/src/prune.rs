//! Pruning the cache: first blobs that no current index references and that were not used for
//! a grace period, then blobs unused for longer than a maximum age, then the least recently
//! used until the store is under a size cap; and the expected-hash rows of index generations
//! that are no longer current. The same code runs inside the proxy (asked over its admin
//! socket, while it serves) and on a cache no proxy holds.
//!
//! Safe while serving: blobs being served right now are pinned and left alone; downloads in
//! flight live in `tmp/`, which prune never touches, and their clients read the file they
//! write; a blob removed between a lookup and its opening is simply fetched again; a reader
//! that has a blob open keeps the whole file. New blobs stored while prune runs are not in its
//! plan. Prune refuses to run right after an index refresh failed: what is "current" is then
//! not known, and the cache may be the only copy left of what upstream no longer serves.
//!
//! [`Cap`] keeps the store under `max_cache_size` by itself, least recently used first, after
//! each download that takes it over.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{now_secs, Catalog, LastPrune};
use crate::error::{Error, Result};
use crate::evict::Usage;
use crate::store::Store;
use crate::verify::Root;

/// How long after a failed index refresh prune refuses to run (unless the refresh succeeds
/// again first).
pub const REFRESH_HOLD: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Remove least recently used blobs until the store holds at most this many bytes.
    pub max_size: Option<u64>,
    /// Remove any blob unused for longer than this.
    pub max_age: Option<Duration>,
    /// Blobs no current index references go once unused for this long.
    pub grace: Duration,
    /// Say what would go; change nothing.
    pub dry_run: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_size: None, max_age: None, grace: Duration::from_secs(24 * 3600), dry_run: false }
    }
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub before: Usage,
    pub after: Usage,
    /// Everything removed (or, on a dry run, that would be).
    pub removed: Count,
    /// … of which no current index referenced and unused for the grace period,
    pub unreferenced: Count,
    /// … unused for longer than the maximum age,
    pub max_age: Count,
    /// … and least recently used, to get under the size cap.
    pub size: Count,
    /// Blobs that would have gone but were being served: left in place.
    pub kept_in_use: u64,
    /// Catalog entries (URLs) dropped with their blobs, or whose blob was already gone.
    pub entries_removed: u64,
    /// Expected-hash rows of index generations no longer current.
    pub expected_removed: u64,
    pub elapsed_ms: u64,
}

#[derive(Clone, Copy)]
enum Reason {
    Unreferenced,
    MaxAge,
    Size,
}

/// Prunes; blocking. `progress(done, total)` is called as blobs go.
pub(crate) fn prune(
    store: &Store,
    catalog: &Catalog,
    options: &Options,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report> {
    let started = Instant::now();
    let now = now_secs();
    if let Some(failure) =
        catalog.refresh_failures().into_iter().find(|f| now.saturating_sub(f.at) < REFRESH_HOLD.as_secs())
    {
        return Err(Error::Conflict(format!(
            "not pruning: the refresh of {} failed {} s ago ({}); prune runs once it succeeds again, or {} h after the failure",
            failure.key,
            now.saturating_sub(failure.at),
            failure.reason,
            REFRESH_HOLD.as_secs() / 3600
        )));
    }
    let entries = catalog.entries()?;
    let mut report = Report { dry_run: options.dry_run, before: store.usage(), ..Report::default() };
    let mut plan: Vec<(String, u64, Reason)> = Vec::new();
    let mut planned: HashSet<String> = HashSet::new();
    let candidates = store.candidates();
    // What the current index generations reference, walked from the roots the catalog holds
    // (InRelease, Release, repomd.xml and their signatures) on disk: memory goes with the
    // store's size, not the catalog's.
    let roots: Vec<(String, String)> =
        entries.iter().filter(|(key, _)| Root::of(key).is_some()).map(|(k, e)| (k.clone(), e.blob.clone())).collect();
    let stored: HashSet<String> = candidates.iter().map(|c| c.blob.clone()).collect();
    let chain = catalog.chain(&roots, &stored)?;
    let idle = |used_at: u64| Duration::from_secs(now.saturating_sub(used_at));
    for c in &candidates {
        let reason = if !chain.referenced.contains(&c.blob) && idle(c.used_at) >= options.grace {
            Reason::Unreferenced
        } else if options.max_age.is_some_and(|max| idle(c.used_at) >= max) {
            Reason::MaxAge
        } else {
            continue;
        };
        if store.is_pinned(&c.blob) {
            report.kept_in_use += 1;
            continue;
        }
        planned.insert(c.blob.clone());
        plan.push((c.blob.clone(), c.size, reason));
    }
    if let Some(max_size) = options.max_size {
        // Blobs stored since `before` was taken may be among the candidates: saturating.
        let mut left = report.before.bytes.saturating_sub(plan.iter().map(|(_, size, _)| size).sum::<u64>());
        for c in &candidates {
            if left <= max_size {
                break;
            }
            if planned.contains(&c.blob) {
                continue;
            }
            if store.is_pinned(&c.blob) {
                report.kept_in_use += 1;
                continue;
            }
            left = left.saturating_sub(c.size);
            plan.push((c.blob.clone(), c.size, Reason::Size));
        }
    }

    let mut keys_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (key, entry) in &entries {
        keys_of.entry(entry.blob.as_str()).or_default().push(key.as_str());
    }
    let total = plan.len() as u64;
    progress(0, total);
    for (i, (blob, size, reason)) in plan.iter().enumerate() {
        let freed = if options.dry_run {
            *size
        } else {
            // Checked again: a client may have started on it since the plan was made.
            if store.is_pinned(blob) {
                report.kept_in_use += 1;
                progress(i as u64 + 1, total);
                continue;
            }
            // The URLs go first, so that nobody is sent looking for the file once it is gone.
            for key in keys_of.get(blob.as_str()).into_iter().flatten() {
                report.entries_removed += catalog.remove_if(key, blob) as u64;
            }
            store.remove(blob).map_err(Error::Store)?
        };
        report.removed.add(freed);
        match reason {
            Reason::Unreferenced => report.unreferenced.add(freed),
            Reason::MaxAge => report.max_age.add(freed),
            Reason::Size => report.size.add(freed),
        }
        progress(i as u64 + 1, total);
    }

    report.expected_removed = chain.stale_rows;
    if !options.dry_run {
        // Entries whose blob went behind the store's back.
        for (key, entry) in &entries {
            if !planned.contains(&entry.blob) && !store.contains(&entry.blob) {
                report.entries_removed += catalog.remove_if(key, &entry.blob) as u64;
            }
        }
        report.expected_removed = catalog.forget(chain.stale);
        let last = LastPrune { at: now, files: report.removed.files, bytes: report.removed.bytes };
        report.after = store.usage();
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        catalog.record_prune(last, serde_json::to_string(&report).unwrap_or_default());
        catalog.flush();
    } else {
        report.after = Usage {
            blobs: report.before.blobs.saturating_sub(report.removed.files),
            bytes: report.before.bytes.saturating_sub(report.removed.bytes),
        };
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Keeps the store under a size by itself: after a download takes it over, the least recently
/// used blobs go (down to 90% of the cap, so that this does not run for every download), never
/// one being served and never the one just stored.
pub(crate) struct Cap {
    limit: u64,
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    running: AtomicBool,
}

impl Cap {
    pub fn new(limit: u64, store: Arc<Store>, catalog: Arc<Catalog>) -> Arc<Cap> {
        Arc::new(Cap { limit, store, catalog, running: AtomicBool::new(false) })
    }

    /// Starts a pass in the background if the store is over the cap and none runs.
    pub fn check(self: &Arc<Self>, just_stored: &str) {
        if self.store.usage().bytes <= self.limit || self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, keep) = (self.clone(), just_stored.to_string());
        tokio::task::spawn_blocking(move || {
            match me.shrink(&keep) {
                Ok(freed) => tracing::info!(
                    files = freed.files,
                    bytes = freed.bytes,
                    limit = me.limit,
                    "cache over max_cache_size: least recently used blobs removed"
                ),
                Err(e) => tracing::error!(error = %e, "keeping the cache under max_cache_size failed"),
            }
            me.running.store(false, Ordering::SeqCst);
        });
    }

    /// One pass; blocking.
    pub fn shrink(&self, keep: &str) -> Result<Count> {
        let target = self.limit / 10 * 9;
        let mut left = self.store.usage().bytes;
        let mut freed = Count::default();
        let mut keys_of: HashMap<String, Vec<String>> = HashMap::new();
        for (key, entry) in self.catalog.entries()? {
            keys_of.entry(entry.blob).or_default().push(key);
        }
        for c in self.store.candidates() {
            if left <= target {
                break;
            }
            if c.blob == keep || self.store.is_pinned(&c.blob) {
                continue;
            }
            for key in keys_of.get(&c.blob).into_iter().flatten() {
                self.catalog.remove_if(key, &c.blob);
            }
            let bytes = self.store.remove(&c.blob).map_err(Error::Store)?;
            left = left.saturating_sub(c.size);
            freed.add(bytes);
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Entry, Expected, Role};
    use std::io::Write;
    use vzpkg_adapters::compress::Compression;

    fn sha(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn put(store: &Store, catalog: &Catalog, key: &str, n: u8, size: usize) -> String {
        let blob = sha(n);
        let mut tmp = store.new_tmp().unwrap();
        tmp.write_all(&vec![n; size]).unwrap();
        store.commit(tmp, &blob).unwrap();
        let entry = Entry {
            blob: blob.clone(),
            size: size as u64,
            etag: None,
            last_modified: None,
            content_type: None,
            validated_at: 0,
            verified: true,
        };
        catalog.put(key, entry);
        blob
    }

    fn row(sha256: &str, source: &str) -> Expected {
        // Rows vouched for by an InRelease are Packages files; the chain goes on through them.
        let role = if source.ends_with("/InRelease") { Role::AptPackages(Compression::None) } else { Role::Package };
        Expected { sha256: sha256.into(), size: None, role, source: source.into(), source_blob: None }
    }

    /// InRelease (generation 1) → Packages → a.deb; then generation 2 lists b.deb instead.
    #[test]
    fn prune_removes_what_no_current_index_references_then_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let catalog = Catalog::open(&dir.path().join("index.sqlite"), |_| true).unwrap();
        let root = "remap:d/dists/s/InRelease";
        let packages = "remap:d/dists/s/main/binary-amd64/Packages";
        let (a, b, junk) = ("remap:d/pool/a_1_all.deb", "remap:d/pool/b_1_all.deb", "remap:d/pool/junk_1_all.deb");
        let gen1 = put(&store, &catalog, root, 1, 10);
        let pk1 = sha(2);
        catalog.expect(vec![(packages.into(), row(&pk1, root))], &gen1);
        put(&store, &catalog, packages, 2, 20);
        let blob_a = put(&store, &catalog, a, 3, 300);
        catalog.expect(vec![(a.into(), row(&blob_a, packages))], &pk1);
        // Generation 2 of the root and its Packages: b instead of a.
        let gen2 = put(&store, &catalog, root, 4, 11);
        let pk2 = sha(5);
        catalog.expect(vec![(packages.into(), row(&pk2, root))], &gen2);
        put(&store, &catalog, packages, 5, 21);
        let blob_b = put(&store, &catalog, b, 6, 400);
        catalog.expect(vec![(b.into(), row(&blob_b, packages))], &pk2);
        let blob_junk = put(&store, &catalog, junk, 7, 5000);
        assert_eq!(store.usage().blobs, 7);

        let all = Options { grace: Duration::ZERO, ..Options::default() };
        let dry = prune(&store, &catalog, &Options { dry_run: true, ..all.clone() }, &mut |_, _| {}).unwrap();
        assert_eq!(store.usage().blobs, 7, "a dry run removes nothing");
        // Old root and Packages generations, a (listed only by the old Packages) and junk.
        assert_eq!(dry.unreferenced, Count { files: 4, bytes: 10 + 20 + 300 + 5000 });
        assert_eq!(dry.expected_removed, 1, "a's row came from a generation no longer current");
        assert_eq!(dry.after.blobs, 3);

        // A blob being served stays.
        let pin = store.pin(&blob_junk);
        let mut calls = Vec::new();
        let report = prune(&store, &catalog, &all, &mut |done, total| calls.push((done, total))).unwrap();
        drop(pin);
        assert_eq!(report.unreferenced, Count { files: 3, bytes: 330 });
        assert_eq!(report.kept_in_use, 1);
        assert_eq!(calls.last(), Some(&(3, 3)));
        assert!(store.contains(&blob_b) && store.contains(&gen2) && store.contains(&pk2) && !store.contains(&blob_a));
        assert_eq!(catalog.get(a), None, "the URL went with its blob");
        assert_eq!(catalog.expected(a), None);
        assert!(catalog.expected(b).is_some());
        assert_eq!(catalog.last_prune().unwrap().files, 3);

        // The size cap goes by last use, current or not.
        let report =
            prune(&store, &catalog, &Options { max_size: Some(0), ..Options::default() }, &mut |_, _| {}).unwrap();
        assert_eq!(report.size.files, 4);
        assert_eq!(store.usage(), Usage::default());
        assert_eq!(catalog.entry_count(), 0);
    }

    #[test]
    fn prune_refuses_right_after_a_failed_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let catalog = Catalog::open(&dir.path().join("index.sqlite"), |_| true).unwrap();
        put(&store, &catalog, "remap:d/pool/x_1_all.deb", 9, 10);
        catalog.refresh_failed("remap:d/dists/s/InRelease", "upstream failed: 503");
        let options = Options { max_size: Some(0), ..Options::default() };
        let err = prune(&store, &catalog, &options, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("remap:d/dists/s/InRelease") && err.status() == 409, "{err}");
        assert_eq!(store.usage().blobs, 1);
        catalog.refresh_succeeded("remap:d/dists/s/InRelease");
        assert_eq!(prune(&store, &catalog, &options, &mut |_, _| {}).unwrap().removed.files, 1);
    }

    #[test]
    fn the_cap_removes_least_recently_used_but_not_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let catalog = Arc::new(Catalog::open(&dir.path().join("index.sqlite"), |_| true).unwrap());
        for n in 1..=4 {
            put(&store, &catalog, &format!("http://h/{n}.deb"), n, 100);
        }
        let t = now_secs() + 10;
        store.seed_access([(sha(1), t + 1), (sha(2), t + 4), (sha(3), t + 2), (sha(4), t + 3)]);
        let cap = Cap::new(250, store.clone(), catalog.clone());
        let freed = cap.shrink(&sha(1)).unwrap();
        // Down to 90% of 250: two of the three others go, oldest first (3, then 4); 1 is kept.
        assert_eq!(freed, Count { files: 2, bytes: 200 });
        assert!(store.contains(&sha(1)) && store.contains(&sha(2)));
        assert_eq!(catalog.get("http://h/3.deb"), None);
    }
}
