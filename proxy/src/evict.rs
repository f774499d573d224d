//! Which blobs go first when the store must shrink. The store reports every blob it commits,
//! serves and removes to an [`Eviction`] manager, which keeps the per-blob accounting (size,
//! last use) and orders the blobs for removal; prune and the size cap ask it for that order.
//! A small trait in the spirit of pingora's eviction manager, so that a policy other than LRU
//! (weighting by size or hits, say) can replace it without touching the store or prune.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// How much the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub blobs: u64,
    pub bytes: u64,
}

/// One blob as the eviction manager sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub blob: String,
    pub size: u64,
    /// Unix seconds of its last use (stored or served).
    pub used_at: u64,
}

pub trait Eviction: Send + Sync {
    /// A blob was stored (or found at start-up) with this size, last used at `at`.
    fn admit(&self, blob: &str, size: u64, at: u64);
    /// A stored blob was served at `at`.
    fn access(&self, blob: &str, at: u64);
    /// A blob left the store; returns the size it was accounted with.
    fn remove(&self, blob: &str) -> Option<u64>;
    fn usage(&self) -> Usage;
    /// Every blob, the first to go first.
    fn candidates(&self) -> Vec<Candidate>;
}

/// Least recently used first.
#[derive(Default)]
pub struct Lru {
    inner: Mutex<LruState>,
}

#[derive(Default)]
struct LruState {
    /// blob → (size, last use)
    blobs: HashMap<String, (u64, u64)>,
    /// (last use, blob), oldest first.
    order: BTreeSet<(u64, String)>,
    bytes: u64,
}

impl Eviction for Lru {
    fn admit(&self, blob: &str, size: u64, at: u64) {
        let mut s = self.inner.lock().unwrap();
        if let Some((old_size, old_at)) = s.blobs.insert(blob.to_string(), (size, at)) {
            s.order.remove(&(old_at, blob.to_string()));
            s.bytes -= old_size;
        }
        s.order.insert((at, blob.to_string()));
        s.bytes += size;
    }

    fn access(&self, blob: &str, at: u64) {
        let mut s = self.inner.lock().unwrap();
        let Some(entry) = s.blobs.get_mut(blob) else { return };
        let old_at = entry.1;
        if at <= old_at {
            return;
        }
        entry.1 = at;
        s.order.remove(&(old_at, blob.to_string()));
        s.order.insert((at, blob.to_string()));
    }

    fn remove(&self, blob: &str) -> Option<u64> {
        let mut s = self.inner.lock().unwrap();
        let (size, at) = s.blobs.remove(blob)?;
        s.order.remove(&(at, blob.to_string()));
        s.bytes -= size;
        Some(size)
    }

    fn usage(&self) -> Usage {
        let s = self.inner.lock().unwrap();
        Usage { blobs: s.blobs.len() as u64, bytes: s.bytes }
    }

    fn candidates(&self) -> Vec<Candidate> {
        let s = self.inner.lock().unwrap();
        s.order.iter().map(|(at, blob)| Candidate { blob: blob.clone(), size: s.blobs[blob].0, used_at: *at }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_sizes_add_up() {
        let lru = Lru::default();
        lru.admit("a", 10, 1);
        lru.admit("b", 20, 2);
        lru.admit("c", 30, 3);
        lru.access("a", 4);
        lru.access("b", 1); // older than what is known: no change
        let order: Vec<_> = lru.candidates().into_iter().map(|c| c.blob).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(lru.usage(), Usage { blobs: 3, bytes: 60 });
        assert_eq!(lru.remove("c"), Some(30));
        assert_eq!(lru.remove("c"), None);
        lru.admit("a", 15, 5); // stored again: re-accounted, not counted twice
        assert_eq!(lru.usage(), Usage { blobs: 2, bytes: 35 });
    }
}
