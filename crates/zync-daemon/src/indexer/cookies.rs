//! Which barrier tickets still wait for their cookies (docs/ARCHITECTURE.md, "Barriers"): one
//! cookie file per watched root and ticket, planted by the indexer; a ticket is reached once
//! each of its roots has seen its cookie come out of the watcher, or has been scanned whole
//! since it was planted.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// The tickets whose cookies did not all come out yet, oldest first.
#[derive(Debug, Default)]
pub(super) struct Pending {
    tickets: VecDeque<Ticket>,
}

/// The cookies of one barrier ticket.
#[derive(Debug)]
pub(super) struct Ticket {
    /// The ticket.
    pub(super) ticket: u64,
    /// The roots it was planted in, to remove it from.
    pub(super) planted: Vec<usize>,
    /// The roots whose cookie has not come out yet.
    awaited: BTreeSet<usize>,
    since: Instant,
}

impl Pending {
    /// Notes the cookies of `ticket`, planted in `planted` (none: reached at once, behind the
    /// tickets before it).
    pub(super) fn push(&mut self, ticket: u64, planted: Vec<usize>) {
        self.tickets.push_back(Ticket {
            ticket,
            awaited: planted.iter().copied().collect(),
            planted,
            since: Instant::now(),
        });
    }

    /// The creation of `ticket`'s cookie in root `root` came out of the watcher: so has every
    /// event of that root from before it, the earlier tickets' cookies among them. A name
    /// nobody planted (another local user can create files named like cookies in a root they
    /// may write to) answers nothing: only a ticket planted in that root counts, and any
    /// creation of its name comes out after the planting.
    pub(super) fn seen(&mut self, root: usize, ticket: u64) {
        let planted = self
            .tickets
            .iter()
            .any(|t| t.ticket == ticket && t.planted.contains(&root));
        if !planted {
            return;
        }
        for t in self.tickets.iter_mut().filter(|t| t.ticket <= ticket) {
            t.awaited.remove(&root);
        }
    }

    /// Root `root` is being scanned whole: the scan sees everything written before it started,
    /// so no ticket taken so far waits for that root's cookie.
    pub(super) fn rescanned(&mut self, root: usize) {
        for t in &mut self.tickets {
            t.awaited.remove(&root);
        }
    }

    /// The roots the oldest ticket still waits for, when it has waited `max` or more (its
    /// cookie's event lost): the caller scans them instead.
    pub(super) fn overdue(&self, max: Duration) -> Vec<usize> {
        match self.tickets.front() {
            Some(t) if t.since.elapsed() >= max => t.awaited.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Takes out the tickets reached, oldest first: those whose roots have all been seen,
    /// with nothing older still waiting.
    pub(super) fn take_reached(&mut self) -> Vec<Ticket> {
        let mut reached = Vec::new();
        while self.tickets.front().is_some_and(|t| t.awaited.is_empty()) {
            reached.extend(self.tickets.pop_front());
        }
        reached
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached(p: &mut Pending) -> Vec<u64> {
        p.take_reached().into_iter().map(|t| t.ticket).collect()
    }

    #[test]
    fn a_ticket_is_reached_once_every_root_saw_its_cookie_and_in_order() {
        let mut p = Pending::default();
        p.push(3, vec![0, 1]);
        p.push(5, vec![0, 1]);
        p.seen(0, 5);
        assert_eq!(reached(&mut p), Vec::<u64>::new(), "root 1 saw nothing yet");
        p.seen(1, 3);
        assert_eq!(reached(&mut p), vec![3]);
        // Root 0's cookie of 5 came out before 3 was reached: 5 needs only root 1's now.
        p.seen(1, 5);
        assert_eq!(reached(&mut p), vec![5]);
    }

    #[test]
    fn a_later_cookie_covers_the_earlier_ones_of_its_root() {
        let mut p = Pending::default();
        p.push(1, vec![0]);
        p.push(2, vec![0]);
        p.seen(0, 2);
        assert_eq!(reached(&mut p), vec![1, 2]);
    }

    #[test]
    fn a_cookie_nobody_planted_answers_nothing() {
        let mut p = Pending::default();
        p.push(7, vec![0, 1]);
        // Another local user creates files named as cookies of later tickets, or of this one
        // in a root it was not planted in.
        p.seen(0, 8);
        p.seen(1, u64::MAX);
        p.seen(2, 7);
        assert_eq!(reached(&mut p), Vec::<u64>::new());
        p.seen(0, 7);
        p.seen(1, 7);
        assert_eq!(reached(&mut p), vec![7]);
    }

    #[test]
    fn a_whole_scan_stands_in_for_a_roots_cookie_and_no_roots_means_reached() {
        let mut p = Pending::default();
        p.push(4, vec![0, 1]);
        p.rescanned(1);
        p.seen(0, 4);
        p.push(6, Vec::new());
        assert_eq!(reached(&mut p), vec![4, 6]);
        // A ticket with no cookies still waits behind an earlier one.
        p.push(8, vec![0]);
        p.push(9, Vec::new());
        assert_eq!(reached(&mut p), Vec::<u64>::new());
        p.rescanned(0);
        assert_eq!(reached(&mut p), vec![8, 9]);
    }

    #[test]
    fn only_the_oldest_ticket_past_the_limit_is_overdue() {
        let mut p = Pending::default();
        assert!(p.overdue(Duration::ZERO).is_empty());
        p.push(1, vec![0, 2]);
        p.seen(0, 1);
        assert!(p.overdue(Duration::from_secs(60)).is_empty());
        assert_eq!(p.overdue(Duration::ZERO), vec![2]);
    }
}
