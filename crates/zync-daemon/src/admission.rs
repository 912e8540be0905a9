//! Room for connections that have not proved themselves yet. Anyone who can reach the port
//! can open connections and leave them silent; such connections must never keep a real
//! client out (invariant 8). The daemon therefore accepts every connection at once, and when
//! too many are still in their handshake, the newcomer pushes out the one that made the least
//! progress: the oldest that has not even finished its WebSocket upgrade, else the oldest of
//! all. A real client upgrades within one round trip of connecting, so a crowd of idle
//! connections is pushed out before it; and every waiting connection has a deadline anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The connections in their handshake.
#[derive(Clone)]
pub(crate) struct Admission {
    inner: Arc<Mutex<Waiting>>,
}

struct Waiting {
    capacity: usize,
    next_id: u64,
    /// Oldest first.
    entries: Vec<Entry>,
}

struct Entry {
    id: u64,
    upgraded: Arc<AtomicBool>,
    /// Dropped to push the connection out.
    _evict: oneshot::Sender<()>,
}

/// One connection's place among those in their handshake; dropping it leaves.
pub(crate) struct Ticket {
    id: u64,
    upgraded: Arc<AtomicBool>,
    inner: Arc<Mutex<Waiting>>,
    evicted: oneshot::Receiver<()>,
}

impl Admission {
    /// Room for `capacity` connections in their handshake at once.
    pub(crate) fn new(capacity: usize) -> Admission {
        Admission {
            inner: Arc::new(Mutex::new(Waiting {
                capacity: capacity.max(1),
                next_id: 0,
                entries: Vec::new(),
            })),
        }
    }

    /// A place for a new connection, pushing out another one when all places are taken.
    pub(crate) fn admit(&self) -> Ticket {
        let mut waiting = lock(&self.inner);
        if waiting.entries.len() >= waiting.capacity {
            let victim = waiting
                .entries
                .iter()
                .position(|e| !e.upgraded.load(Ordering::Relaxed))
                .unwrap_or(0);
            // Dropping the entry drops its sender: that connection's `evicted` resolves.
            waiting.entries.remove(victim);
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        let (tx, rx) = oneshot::channel();
        let upgraded = Arc::new(AtomicBool::new(false));
        waiting.entries.push(Entry {
            id,
            upgraded: upgraded.clone(),
            _evict: tx,
        });
        Ticket {
            id,
            upgraded,
            inner: self.inner.clone(),
            evicted: rx,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }
}

impl Ticket {
    /// A flag to raise when the connection finished its WebSocket upgrade: from then on it
    /// is pushed out only after every connection that did not.
    pub(crate) fn progress(&self) -> Progress {
        Progress(self.upgraded.clone())
    }

    /// Completes when a newer connection pushed this one out.
    pub(crate) async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.inner).entries.retain(|e| e.id != self.id);
    }
}

/// Raised once a connection finished its WebSocket upgrade.
pub(crate) struct Progress(Arc<AtomicBool>);

impl Progress {
    /// The WebSocket upgrade is done.
    pub(crate) fn upgraded(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The list stays consistent whatever a panicking holder did: every change is one `Vec` call.
fn lock(inner: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn is_evicted(ticket: &mut Ticket) -> bool {
        tokio::time::timeout(Duration::from_millis(20), ticket.evicted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_newcomer_pushes_out_the_oldest_silent_connection_first() {
        let admission = Admission::new(3);
        let mut a = admission.admit();
        let mut b = admission.admit();
        let mut c = admission.admit();
        a.progress().upgraded();
        let mut d = admission.admit();
        assert_eq!(admission.len(), 3);
        assert!(
            !is_evicted(&mut a).await,
            "an upgraded connection went first"
        );
        assert!(is_evicted(&mut b).await, "the oldest silent one must go");
        assert!(!is_evicted(&mut c).await);
        assert!(!is_evicted(&mut d).await);
    }

    #[tokio::test]
    async fn upgraded_connections_go_oldest_first_when_nothing_else_is_left() {
        let admission = Admission::new(2);
        let mut a = admission.admit();
        let mut b = admission.admit();
        a.progress().upgraded();
        b.progress().upgraded();
        let _c = admission.admit();
        assert!(is_evicted(&mut a).await);
        assert!(!is_evicted(&mut b).await);
    }

    #[tokio::test]
    async fn a_finished_handshake_frees_its_place() {
        let admission = Admission::new(1);
        let a = admission.admit();
        drop(a);
        assert_eq!(admission.len(), 0);
        let mut b = admission.admit();
        assert!(!is_evicted(&mut b).await);
    }
}
