//! Single flight: every concurrent request for one URL shares one upstream fetch. The leader's
//! download task writes into a temporary file and publishes how far it got; each client reads
//! that file with positioned reads up to the published length, so all of them get the bytes as
//! they arrive, and a client that goes away cancels nothing for the others.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

/// What an upstream response told us before its body.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Head {
    /// What a response's headers say; the length is the header's, which a HEAD answer keeps too.
    pub fn of(headers: &hyper::HeaderMap) -> Head {
        let text =
            |name: hyper::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Head {
            content_length: text(hyper::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
            content_type: text(hyper::header::CONTENT_TYPE),
            etag: text(hyper::header::ETAG),
            last_modified: text(hyper::header::LAST_MODIFIED),
        }
    }
}

#[derive(Clone)]
pub enum Progress {
    /// Waiting for upstream's answer.
    Asking,
    /// Upstream confirmed the cached copy (304): serve it from the store.
    NotModified,
    /// The body is arriving; `written` bytes of it are in `file`.
    Body { head: Arc<Head>, file: Arc<File>, written: u64, done: bool },
    /// The fetch failed; `status` is what clients should be told.
    Failed { status: u16, reason: Arc<str> },
}

pub struct Flight {
    progress: watch::Sender<Progress>,
}

impl Flight {
    pub fn publish(&self, progress: Progress) {
        self.progress.send_replace(progress);
    }

    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }
}

#[derive(Default)]
pub struct Flights {
    inflight: Mutex<HashMap<String, Arc<Flight>>>,
}

/// Held by the leader: removes the flight from the registry when the fetch ends, however it ends.
pub struct Lead {
    flights: Arc<Flights>,
    key: String,
    pub flight: Arc<Flight>,
}

impl Lead {
    /// Publishes the fetch's last word. The flight leaves the registry first, so a request that
    /// arrives after this point looks at the catalog afresh instead of joining a finished fetch.
    pub fn finish(self, last: Progress) {
        self.flights.inflight.lock().unwrap().remove(&self.key);
        self.flight.publish(last);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.flights.inflight.lock().unwrap().remove(&self.key);
        // Whoever still waits must not wait forever on a leader that vanished without a word.
        self.flight.progress.send_if_modified(|p| match p {
            Progress::Asking => {
                *p = Progress::Failed { status: 502, reason: "download abandoned".into() };
                true
            }
            Progress::Body { done: false, .. } => {
                *p = Progress::Failed { status: 502, reason: "download abandoned".into() };
                true
            }
            _ => false,
        });
    }
}

pub enum Joined {
    /// Nobody was fetching this key: the caller must start the fetch and drive the `Lead`.
    Leader(Lead),
    /// A fetch is under way: follow it.
    Follower(Arc<Flight>),
}

impl Flights {
    pub fn join(self: &Arc<Self>, key: &str) -> Joined {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(flight) = inflight.get(key) {
            return Joined::Follower(flight.clone());
        }
        let (progress, _) = watch::channel(Progress::Asking);
        let flight = Arc::new(Flight { progress });
        inflight.insert(key.to_string(), flight.clone());
        Joined::Leader(Lead { flights: self.clone(), key: key.to_string(), flight })
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }
}

/// Waits until the fetch has an answer: a body to stream, "not modified", or a failure.
pub async fn answer(rx: &mut watch::Receiver<Progress>) -> Progress {
    loop {
        let progress = rx.borrow_and_update().clone();
        if !matches!(progress, Progress::Asking) {
            return progress;
        }
        if rx.changed().await.is_err() {
            return Progress::Failed { status: 502, reason: "download abandoned".into() };
        }
    }
}

/// Each follower holds one chunk at a time: small, so that hundreds of clients of one download
/// cost little memory (200 × 64 KiB = 12.5 MiB).
const READ_CHUNK: u64 = 64 * 1024;

/// The body of a flight for one client, read from the shared file as it grows.
pub fn follow(rx: watch::Receiver<Progress>, file: Arc<File>) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures_util::stream::unfold((rx, file, 0u64), |(mut rx, file, pos)| async move {
        loop {
            let progress = rx.borrow_and_update().clone();
            let (available, done) = match progress {
                Progress::Body { written, done, .. } => (written, done),
                Progress::Failed { reason, .. } => {
                    let err = io::Error::other(format!("upstream transfer failed: {reason}"));
                    return Some((Err(err), (rx, file, u64::MAX)));
                }
                Progress::Asking | Progress::NotModified => (0, false),
            };
            if pos == u64::MAX {
                return None;
            }
            if available > pos {
                let len = (available - pos).min(READ_CHUNK) as usize;
                let reader = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0; len];
                    reader.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                return match read {
                    Ok(bytes) => Some((Ok(bytes), (rx, file, pos + len as u64))),
                    Err(e) => Some((Err(e), (rx, file, u64::MAX))),
                };
            }
            if done {
                return None;
            }
            if rx.changed().await.is_err() {
                let err = io::Error::other("download abandoned");
                return Some((Err(err), (rx, file, u64::MAX)));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;

    #[tokio::test]
    async fn followers_get_bytes_as_they_are_published() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(lead) = flights.join("k") else { panic!("first join must lead") };
        let Joined::Follower(flight) = flights.join("k") else { panic!("second join must follow") };
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello ").unwrap();
        let file = Arc::new(file);
        let head = Arc::new(Head::default());
        lead.flight.publish(Progress::Body { head: head.clone(), file: file.clone(), written: 6, done: false });

        let mut body = Box::pin(follow(flight.subscribe(), file.clone()));
        assert_eq!(body.next().await.unwrap().unwrap(), "hello ");
        (&*file).write_all(b"world").unwrap();
        lead.finish(Progress::Body { head, file, written: 11, done: true });
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(body.next().await.unwrap().unwrap(), "world");
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_vanished_leader_fails_its_followers() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(lead) = flights.join("k") else { panic!() };
        let Joined::Follower(flight) = flights.join("k") else { panic!() };
        let mut rx = flight.subscribe();
        drop(lead);
        assert!(matches!(answer(&mut rx).await, Progress::Failed { status: 502, .. }));
    }
}
