//! The changes of one sync in sequence order and what became of each. Records reach the
//! database in checkpoints: a checkpoint is taken before a flush and committed once the flush
//! is done, so nothing is recorded before it is durable on disk. The stored sequence is the end
//! of the longest prefix of changes that are all recorded (invariant 2 (docs/ARCHITECTURE.md)).

use std::collections::{HashSet, VecDeque};

use zync_db::{ClientState, DirState, Synced};

use crate::error::ClientError;
use crate::failures::{self, Failures};

/// What the client database must remember after a change was applied.
#[derive(Debug)]
pub enum Record {
    /// R now holds this at the path.
    Set(String, Synced),
    /// R holds nothing from E at the path any more.
    Remove(String),
    /// Nothing to record (an invalid change that was skipped).
    Nothing,
}

/// What became of one change so far.
enum State {
    /// Planned, not finished (a download in flight, a file waiting for its rename).
    Pending,
    /// Applied on disk, maybe not durably yet: waits for a checkpoint.
    Done(Record),
    /// Could not be applied this round; holds the stored sequence below it. True when it may
    /// clear by itself soon.
    Failed(String, bool),
    /// Handed to a commit that is being written.
    Writing {
        /// To be recorded as failing.
        failed: bool,
    },
    /// In the database: as applied, or as failing.
    Recorded {
        /// Recorded as failing.
        failed: bool,
    },
}

struct Entry {
    seq: u64,
    path: String,
    state: State,
}

/// The changes whose effects happened before a flush began; commit them once it ended.
#[derive(Debug, Default)]
#[must_use = "a checkpoint is committed after its flush"]
pub struct Checkpoint {
    indices: Vec<usize>,
    inflight: Vec<(String, String)>,
}

impl Checkpoint {
    /// True when committing it would record nothing.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty() && self.inflight.is_empty()
    }
}

/// A checkpoint's records, taken out of the ledger to be written in one transaction.
#[must_use = "a prepared commit is written, then reported back with Ledger::written"]
pub struct Commit {
    dir: String,
    index_id: String,
    inflight: Vec<(String, String)>,
    /// Each applied change's path and its record.
    applied: Vec<(String, Record)>,
    /// Each failed change's path and error.
    failed: Vec<(String, String)>,
    durable: u64,
    indices: Vec<usize>,
}

impl Commit {
    /// Writes the records and the stored sequence in one transaction (nothing at all when the
    /// checkpoint was empty).
    ///
    /// # Errors
    /// A database failure; nothing is recorded then.
    pub fn write(&self, state: &mut ClientState) -> Result<Committed, ClientError> {
        let mut committed = Committed::default();
        if self.indices.is_empty() && self.inflight.is_empty() {
            return Ok(committed);
        }
        let dir = self.dir.as_str();
        let mut batch = state.batch()?;
        let notes: Vec<(&str, &str)> = self
            .inflight
            .iter()
            .map(|(path, sha)| (path.as_str(), sha.as_str()))
            .collect();
        batch.set_inflight_many(dir, &notes)?;
        // Runs of files go in one statement each; a removal ends a run, so that the records
        // reach the table in the order the changes were applied.
        let mut run: Vec<(&str, &Synced)> = Vec::new();
        let mut recorded: Vec<&str> = Vec::with_capacity(self.applied.len());
        for (path, record) in &self.applied {
            match record {
                Record::Set(at, synced) => run.push((at, synced)),
                Record::Remove(at) => {
                    batch.set_synced_many(dir, &run)?;
                    run.clear();
                    batch.remove_synced_tree(dir, at)?;
                }
                Record::Nothing => {}
            }
            recorded.push(path);
            committed.applied += 1;
        }
        batch.set_synced_many(dir, &run)?;
        // After the notes above: a path recorded now has no note left.
        batch.clear_inflight_paths(dir, &recorded)?;
        // Any applied path may have failed before, in this run or an earlier one: which ones
        // did is in the database alone (memory does not hold every failing path). Before the
        // failures of this commit are set, so a path that failed again keeps its row.
        batch.clear_failing_paths(dir, &recorded)?;
        for (path, error) in &self.failed {
            batch.set_failing(dir, path, error)?;
        }
        batch.set_dir_state(
            dir,
            &DirState {
                index_id: self.index_id.clone(),
                last_seq: self.durable,
            },
        )?;
        batch.commit()?;
        Ok(committed)
    }
}

/// What one commit added to the totals. The failures are the [`Ledger`]'s.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Changes recorded as applied.
    pub applied: usize,
}

impl Committed {
    /// Adds another commit's totals.
    pub fn add(&mut self, other: Committed) {
        self.applied += other.applied;
    }
}

/// The changes of one directory's sync, from the first not yet committed on.
pub struct Ledger {
    dir: String,
    index_id: String,
    entries: VecDeque<Entry>,
    /// The index that `entries[0]` has.
    first: usize,
    /// The sequence stored as durably applied.
    durable: u64,
    /// A change recorded as failing is the first not committed: the stored sequence stays where
    /// it is for the rest of this run.
    stuck: bool,
    /// Finished since the last checkpoint.
    fresh: Vec<usize>,
    /// Files about to be written: noted in the next commit, before any of them is renamed
    /// into place, so that after a crash the next run knows them for zync's own writes.
    inflight: Vec<(String, String)>,
    /// The paths this run recorded as failing and that did not apply since, for its report.
    failures: Failures,
}

impl Ledger {
    /// A ledger for `dir` whose stored sequence is `durable`.
    pub fn new(dir: &str, index_id: &str, durable: u64) -> Self {
        Ledger {
            dir: dir.to_string(),
            index_id: index_id.to_string(),
            entries: VecDeque::new(),
            first: 0,
            durable,
            stuck: false,
            fresh: Vec::new(),
            inflight: Vec::new(),
            failures: Failures::default(),
        }
    }

    /// The sequence stored as durably applied.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// What this ledger says R has durably applied: the state to store for its directory.
    pub fn dir_state(&self) -> DirState {
        DirState {
            index_id: self.index_id.clone(),
            last_seq: self.durable,
        }
    }

    /// Starts over from `seq` (a resync from 0); call only when nothing is pending.
    pub fn restart_at(&mut self, seq: u64) {
        self.durable = seq;
        self.stuck = false;
    }

    /// Adds a change in sequence order; returns its index.
    pub fn push(&mut self, seq: u64, path: &str) -> usize {
        self.entries.push_back(Entry {
            seq,
            path: path.to_string(),
            state: State::Pending,
        });
        self.first + self.entries.len() - 1
    }

    /// Notes that `path` is about to receive content `sha256`.
    pub fn note_inflight(&mut self, path: &str, sha256: &str) {
        self.inflight.push((path.to_string(), sha256.to_string()));
    }

    /// Change `index` was applied (its effect is on disk, maybe not durably).
    pub fn done(&mut self, index: usize, record: Record) {
        self.settle(index, State::Done(record));
    }

    /// Change `index` failed this round. Its message is cut to [`failures::MAX_MESSAGE`]: a
    /// daemon's refusal may be megabytes long, and thousands wait here for their checkpoint.
    pub fn fail(&mut self, index: usize, error: &ClientError) {
        self.settle(
            index,
            State::Failed(failures::cut(error.to_string()), error.is_transient()),
        );
    }

    fn settle(&mut self, index: usize, state: State) {
        let Some(i) = index.checked_sub(self.first) else {
            return;
        };
        if let Some(entry) = self.entries.get_mut(i) {
            if matches!(entry.state, State::Pending) {
                entry.state = state;
                self.fresh.push(index);
            }
        }
    }

    /// Everything finished since the last checkpoint: take it before a flush starts, commit it
    /// after the flush ended.
    pub fn checkpoint(&mut self) -> Checkpoint {
        Checkpoint {
            indices: std::mem::take(&mut self.fresh),
            inflight: std::mem::take(&mut self.inflight),
        }
    }

    /// True when nothing finished since the last checkpoint.
    pub fn is_fresh_empty(&self) -> bool {
        self.fresh.is_empty() && self.inflight.is_empty()
    }

    /// How many changes finished since the last checkpoint: held here, path, record or message,
    /// until one commits them.
    pub fn unrecorded(&self) -> usize {
        self.fresh.len()
    }

    /// The paths recorded as failing in this run that did not apply since.
    #[cfg(test)]
    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    /// Takes the failures out, for the run's report.
    pub fn take_failures(&mut self) -> Failures {
        std::mem::take(&mut self.failures)
    }

    /// True when no change is pending.
    pub fn is_settled(&self) -> bool {
        self.entries
            .iter()
            .all(|e| !matches!(e.state, State::Pending))
    }

    /// Takes a checkpoint's records out, to be written (on any thread) once its flush ended,
    /// with the stored sequence they allow. Call [`Ledger::written`] when the write succeeded.
    pub fn prepare(&mut self, checkpoint: Checkpoint) -> Commit {
        let durable = self.frontier(&checkpoint.indices);
        let mut commit = Commit {
            dir: self.dir.clone(),
            index_id: self.index_id.clone(),
            inflight: checkpoint.inflight,
            applied: Vec::new(),
            failed: Vec::new(),
            durable,
            indices: checkpoint.indices,
        };
        let first = self.first;
        for &index in &commit.indices {
            let Some(entry) = index
                .checked_sub(first)
                .and_then(|i| self.entries.get_mut(i))
            else {
                continue;
            };
            match std::mem::replace(&mut entry.state, State::Pending) {
                State::Done(record) => {
                    self.failures.applied(&entry.path);
                    commit.applied.push((entry.path.clone(), record));
                    entry.state = State::Writing { failed: false };
                }
                State::Failed(error, transient) => {
                    self.failures.fail(&entry.path, &error, transient);
                    commit.failed.push((entry.path.clone(), error));
                    entry.state = State::Writing { failed: true };
                }
                other => entry.state = other,
            }
        }
        commit
    }

    /// `commit` was written: its changes are recorded and the stored sequence moves on.
    pub fn written(&mut self, commit: &Commit) {
        let first = self.first;
        for &index in &commit.indices {
            if let Some(entry) = index
                .checked_sub(first)
                .and_then(|i| self.entries.get_mut(i))
            {
                if let State::Writing { failed } = entry.state {
                    entry.state = State::Recorded { failed };
                }
            }
        }
        self.durable = self.durable.max(commit.durable);
        self.forget_committed();
    }

    /// Prepares, writes and marks a checkpoint at once (on this thread).
    ///
    /// # Errors
    /// A database failure; nothing of the checkpoint is recorded then.
    #[cfg(test)]
    pub fn commit(
        &mut self,
        state: &mut ClientState,
        checkpoint: Checkpoint,
    ) -> Result<Committed, ClientError> {
        let commit = self.prepare(checkpoint);
        let committed = commit.write(state)?;
        self.written(&commit);
        Ok(committed)
    }

    /// The stored sequence once `indices` are committed: the end of the prefix of changes that
    /// are recorded as applied or about to be, stopping at the first that failed or is
    /// unfinished.
    fn frontier(&self, indices: &[usize]) -> u64 {
        if self.stuck {
            return self.durable;
        }
        let about: HashSet<usize> = indices.iter().copied().collect();
        let mut durable = self.durable;
        for (i, entry) in self.entries.iter().enumerate() {
            let recorded = match entry.state {
                State::Recorded { failed } | State::Writing { failed } => !failed,
                State::Done(_) => about.contains(&(self.first + i)),
                State::Pending | State::Failed(..) => false,
            };
            if !recorded {
                break;
            }
            durable = entry.seq;
        }
        durable
    }

    /// Drops the recorded prefix. Once a change recorded as failing heads it, the stored
    /// sequence cannot move in this run: every recorded change before the first unfinished one
    /// goes too (a long sync past an early failure keeps no more than what is in progress).
    fn forget_committed(&mut self) {
        while let Some(entry) = self.entries.front() {
            let gone = match entry.state {
                State::Recorded { failed: true } => {
                    self.stuck = true;
                    true
                }
                State::Recorded { failed: false } => true,
                State::Pending | State::Done(_) | State::Failed(..) | State::Writing { .. } => {
                    false
                }
            };
            if !gone {
                break;
            }
            self.entries.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zync_db::Synced;
    use zync_proto::Kind;

    fn record(path: &str) -> Record {
        Record::Set(
            path.to_string(),
            Synced {
                kind: Kind::File,
                size: 1,
                mtime_ns: 1,
                mode: 0o644,
                sha256: Some("ab".repeat(32)),
                target: None,
            },
        )
    }

    fn ledger() -> Ledger {
        Ledger::new("d", "idx", 0)
    }

    fn stored(state: &ClientState) -> u64 {
        state.dir_state("d").unwrap().map_or(0, |s| s.last_seq)
    }

    #[test]
    fn the_stored_sequence_stops_at_the_first_change_not_yet_recorded() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        let a = l.push(10, "a");
        let b = l.push(11, "b");
        let c = l.push(12, "c");
        // b and c finish first: a is still downloading.
        l.done(b, record("b"));
        l.done(c, record("c"));
        let cp = l.checkpoint();
        let done = l.commit(&mut state, cp).unwrap();
        assert_eq!(done.applied, 2);
        assert_eq!(
            (l.durable(), stored(&state)),
            (0, 0),
            "a is not recorded yet"
        );
        assert!(state.synced("d", "b").unwrap().is_some());
        l.done(a, record("a"));
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert_eq!((l.durable(), stored(&state)), (12, 12));
        assert!(l.is_settled());
    }

    #[test]
    fn one_commit_records_its_changes_in_the_order_they_were_applied() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        // A file written, its directory removed (with it), the directory made again with
        // another file, and many files after: one checkpoint, one commit.
        let x = l.push(1, "a/x");
        let gone = l.push(2, "a");
        let y = l.push(3, "a/y");
        l.note_inflight("a/y", &"cd".repeat(32));
        l.note_inflight("later", &"ef".repeat(32));
        l.done(x, record("a/x"));
        l.done(gone, Record::Remove("a".to_string()));
        l.done(y, record("a/y"));
        let many: Vec<String> = (0..200).map(|i| format!("b/{i:03}")).collect();
        for (i, path) in many.iter().enumerate() {
            let at = l.push(4 + i as u64, path);
            l.done(at, record(path));
        }
        let cp = l.checkpoint();
        let done = l.commit(&mut state, cp).unwrap();
        assert_eq!(done.applied, 203);
        assert_eq!(state.synced("d", "a/x").unwrap(), None, "removed with a");
        assert!(state.synced("d", "a/y").unwrap().is_some());
        assert_eq!(state.synced_count("d").unwrap(), 201);
        // The note of a recorded path is cleared with it; another's stays for its rename.
        assert!(!state.was_inflight("d", "a/y", &"cd".repeat(32)).unwrap());
        assert!(state.was_inflight("d", "later", &"ef".repeat(32)).unwrap());
        assert_eq!(stored(&state), 203);
    }

    #[test]
    fn a_change_finished_after_its_checkpoint_waits_for_the_next_one() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        let a = l.push(1, "a");
        let b = l.push(2, "b");
        l.done(a, record("a"));
        let cp = l.checkpoint();
        // b is renamed while the flush for `cp` runs: not durable when `cp` commits.
        l.done(b, record("b"));
        l.commit(&mut state, cp).unwrap();
        assert_eq!(stored(&state), 1);
        assert!(state.synced("d", "b").unwrap().is_none());
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert_eq!(stored(&state), 2);
    }

    #[test]
    fn a_failure_holds_the_sequence_below_it_but_later_changes_are_still_recorded() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        let a = l.push(5, "a");
        let b = l.push(6, "b");
        let c = l.push(7, "c");
        l.done(a, record("a"));
        l.fail(b, &ClientError::Protocol("boom".into()));
        l.done(c, record("c"));
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        let failures = l.failures();
        assert_eq!((failures.count(), failures.transient()), (1, 0));
        assert_eq!(
            (
                failures.shown()[0].path.as_str(),
                failures.shown()[0].message.as_str()
            ),
            ("b", "unexpected message from the daemon: boom")
        );
        assert_eq!(stored(&state), 5);
        assert!(state.synced("d", "c").unwrap().is_some());
        assert!(l.is_settled());
        let failing: Vec<String> = state
            .failing(Some("d"))
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(failing, vec!["b".to_string()]);
        // Nothing later moves the sequence past the failure in this run.
        let d = l.push(8, "d");
        l.done(d, record("d"));
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert_eq!(stored(&state), 5);
    }

    #[test]
    fn inflight_notes_are_committed_with_the_next_checkpoint_and_cleared_when_recorded() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        let sha = "cd".repeat(32);
        let a = l.push(3, "a");
        l.note_inflight("a", &sha);
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert!(state.was_inflight("d", "a", &sha).unwrap());
        assert_eq!(stored(&state), 0);
        l.done(a, record("a"));
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert!(!state.was_inflight("d", "a", &sha).unwrap());
        assert_eq!(stored(&state), 3);
    }

    #[test]
    fn a_path_that_failed_before_is_cleared_when_it_applies() {
        let mut state = ClientState::open_in_memory().unwrap();
        {
            let mut batch = state.batch().unwrap();
            batch.set_failing("d", "a", "earlier").unwrap();
            batch.commit().unwrap();
        }
        let mut l = ledger();
        let a = l.push(1, "a");
        l.done(a, record("a"));
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert!(state.failing(Some("d")).unwrap().is_empty());
    }

    #[test]
    fn a_path_that_fails_and_then_applies_in_the_same_run_is_no_longer_failing() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        let a = l.push(1, "a");
        l.fail(
            a,
            &ClientError::Protocol("changed during the transfer".into()),
        );
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert_eq!(state.failing(Some("d")).unwrap().len(), 1);
        assert_eq!(l.failures().transient(), 0);
        // A later page brings the path again, and this time it applies.
        let again = l.push(7, "a");
        l.done(again, record("a"));
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert!(state.failing(Some("d")).unwrap().is_empty());
        assert!(l.failures().is_empty());
    }

    #[test]
    fn unreached_changes_block_the_sequence_and_an_empty_checkpoint_writes_nothing() {
        let mut state = ClientState::open_in_memory().unwrap();
        let mut l = ledger();
        let a = l.push(1, "a");
        let _b = l.push(2, "b");
        let c = l.push(3, "c");
        l.done(a, record("a"));
        l.done(c, record("c"));
        // b is never reached (the connection was lost).
        let cp = l.checkpoint();
        l.commit(&mut state, cp).unwrap();
        assert_eq!(stored(&state), 1);
        let empty = l.checkpoint();
        assert!(empty.is_empty());
        assert_eq!(l.commit(&mut state, empty).unwrap(), Committed::default());
    }
}
