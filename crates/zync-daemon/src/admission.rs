//! Room for connections that have not proved themselves yet. Anyone who can reach the port
//! can open connections and leave them silent; such connections must never keep a real
//! client out (invariant 8). The daemon therefore accepts every connection at once, and when
//! too many are still in their handshake, the newcomer pushes out another one.
//!
//! Who may push out whom depends on where a connection comes from ([`Origin`]). The real
//! client reaches the daemon through E's own `ssh` (the tunnel), a process of the daemon's
//! user: its connections are [`Origin::Ours`]. A connection of another local user, from
//! another machine, or whose owner the kernel could not name, is a stranger's, and a stranger's
//! newcomer only ever pushes out another stranger's connection: when only ours wait, it is
//! refused itself. Another user who upgrades connections faster than a tunnel's round trips
//! therefore cannot push the real client out between its upgrade and its AUTH.
//!
//! Within one origin the newcomer pushes out the one that made the least progress: the
//! oldest that has not even finished its WebSocket upgrade, else the oldest of all. A newcomer
//! of ours pushes out a stranger's connection first, and one of ours only when no stranger
//! waits. Every waiting connection has a deadline anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Where a connection comes from, as far as the daemon can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A process of the daemon's own user on this machine: the tunnel's `ssh`, or that
    /// user's own client.
    Ours,
    /// Another user, another machine, or a peer whose owner is unknown.
    Stranger,
}

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
    origin: Origin,
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

    /// A place for a new connection from `origin`, pushing out another one when all places
    /// are taken; `None` when the newcomer is a stranger and only connections of ours wait:
    /// it must be closed at once.
    #[must_use]
    pub(crate) fn admit(&self, origin: Origin) -> Option<Ticket> {
        let mut waiting = lock(&self.inner);
        if waiting.entries.len() >= waiting.capacity {
            let victim = victim(&waiting.entries, origin)?;
            // Dropping the entry drops its sender: that connection's `evicted` resolves.
            waiting.entries.remove(victim);
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        let (tx, rx) = oneshot::channel();
        let upgraded = Arc::new(AtomicBool::new(false));
        waiting.entries.push(Entry {
            id,
            origin,
            upgraded: upgraded.clone(),
            _evict: tx,
        });
        Some(Ticket {
            id,
            upgraded,
            inner: self.inner.clone(),
            evicted: rx,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }
}

impl Ticket {
    /// A flag to raise when the connection finished its WebSocket upgrade: from then on it
    /// is pushed out only after every connection of its origin that did not.
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

/// The place a newcomer from `origin` takes when all are taken (`entries` oldest first):
/// a stranger's connection that made the least progress, else, for a newcomer of ours only,
/// one of ours that made the least progress; `None` when there is none it may push out.
fn victim(entries: &[Entry], origin: Origin) -> Option<usize> {
    let least_progress = |of: Origin| {
        let mut candidates = entries.iter().enumerate().filter(|(_, e)| e.origin == of);
        candidates
            .clone()
            .find(|(_, e)| !e.upgraded.load(Ordering::Relaxed))
            .or_else(|| candidates.next())
            .map(|(i, _)| i)
    };
    least_progress(Origin::Stranger).or_else(|| match origin {
        Origin::Ours => least_progress(Origin::Ours),
        Origin::Stranger => None,
    })
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

    fn ours(admission: &Admission) -> Ticket {
        admission
            .admit(Origin::Ours)
            .expect("a connection of ours is always admitted")
    }

    fn stranger(admission: &Admission) -> Option<Ticket> {
        admission.admit(Origin::Stranger)
    }

    #[tokio::test]
    async fn a_newcomer_pushes_out_the_oldest_silent_connection_first() {
        for origin in [Origin::Ours, Origin::Stranger] {
            let admission = Admission::new(3);
            let admit = || admission.admit(origin).expect("room for one of its own");
            let mut a = admit();
            let mut b = admit();
            let mut c = admit();
            a.progress().upgraded();
            let mut d = admit();
            assert_eq!(admission.len(), 3);
            assert!(
                !is_evicted(&mut a).await,
                "{origin:?}: an upgraded connection went first"
            );
            assert!(
                is_evicted(&mut b).await,
                "{origin:?}: the oldest silent one must go"
            );
            assert!(!is_evicted(&mut c).await);
            assert!(!is_evicted(&mut d).await);
        }
    }

    #[tokio::test]
    async fn upgraded_connections_go_oldest_first_when_nothing_else_is_left() {
        let admission = Admission::new(2);
        let mut a = ours(&admission);
        let mut b = ours(&admission);
        a.progress().upgraded();
        b.progress().upgraded();
        let _c = ours(&admission);
        assert!(is_evicted(&mut a).await);
        assert!(!is_evicted(&mut b).await);
    }

    #[tokio::test]
    async fn a_finished_handshake_frees_its_place() {
        let admission = Admission::new(1);
        let a = ours(&admission);
        drop(a);
        assert_eq!(admission.len(), 0);
        let mut b = ours(&admission);
        assert!(!is_evicted(&mut b).await);
    }

    #[tokio::test]
    async fn strangers_never_push_out_a_connection_of_ours() {
        let admission = Admission::new(4);
        let mut silent = ours(&admission);
        let mut upgraded = ours(&admission);
        upgraded.progress().upgraded();
        // A flood of strangers that upgrade at once: they push out one another, never ours.
        let mut flood = Vec::new();
        for _ in 0..1000 {
            let ticket = stranger(&admission).expect("a stranger pushes out a stranger");
            ticket.progress().upgraded();
            flood.push(ticket);
        }
        assert_eq!(admission.len(), 4);
        assert!(!is_evicted(&mut silent).await, "a stranger pushed out ours");
        assert!(
            !is_evicted(&mut upgraded).await,
            "a stranger pushed out ours"
        );
    }

    #[tokio::test]
    async fn a_stranger_is_refused_when_only_connections_of_ours_wait() {
        let admission = Admission::new(2);
        let mut a = ours(&admission);
        let b = ours(&admission);
        assert!(stranger(&admission).is_none(), "a stranger took a place");
        assert_eq!(admission.len(), 2);
        assert!(!is_evicted(&mut a).await);
        // A place that frees up is anyone's.
        drop(b);
        let mut c = stranger(&admission).expect("a free place admits a stranger");
        assert!(!is_evicted(&mut c).await);
    }

    #[tokio::test]
    async fn a_newcomer_of_ours_pushes_out_strangers_first_least_progress_first() {
        let admission = Admission::new(3);
        let mut upgraded_stranger = stranger(&admission).expect("room");
        upgraded_stranger.progress().upgraded();
        let mut silent_ours = ours(&admission);
        let mut silent_stranger = stranger(&admission).expect("room");

        let mut first = ours(&admission);
        assert!(
            is_evicted(&mut silent_stranger).await,
            "the stranger that made the least progress must go first"
        );
        assert!(!is_evicted(&mut upgraded_stranger).await);
        assert!(
            !is_evicted(&mut silent_ours).await,
            "ours went before a stranger"
        );

        let mut second = ours(&admission);
        assert!(is_evicted(&mut upgraded_stranger).await);
        assert!(!is_evicted(&mut silent_ours).await);

        // Only ours wait: among them, as among strangers.
        first.progress().upgraded();
        let mut third = ours(&admission);
        assert!(
            is_evicted(&mut silent_ours).await,
            "the oldest silent one of ours"
        );
        assert!(!is_evicted(&mut first).await);
        assert!(!is_evicted(&mut second).await);
        assert!(!is_evicted(&mut third).await);
    }
}
