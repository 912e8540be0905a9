//! zync's SQLite state: the daemon's index of changes (machine E) and the client's record of
//! what it has synced (machine R), with their schema migrations and connection setup.
//!
//! Paths are plain `String`s here: callers parse them into validated relative paths before
//! they reach this crate and again after they leave it (invariant 3 (docs/ARCHITECTURE.md)). Sizes and inodes
//! are `u64` stored bit for bit in SQLite's signed 64-bit integers.
#![deny(missing_docs)]

mod barrier;
mod changes;
mod client;
mod clients;
mod conflict;
mod conn;
mod error;
mod ignored;
mod index;
mod migrate;
mod retire;
mod sessions;
mod sql;
mod staging;
#[cfg(test)]
mod upgrade_tests;
mod writer;

pub use client::{ClientBatch, ClientState, DirState, Failing, Synced};
pub use error::{DbError, Result};

pub use changes::{Entry, EntryMeta, ScanRow, Served};
pub use clients::{Ack, ClientRecord};
pub use conflict::{is_conflict, merge_mode, mode_after_write, BaseMode, ModeMerge, OnE};
pub use ignored::{IgnoredCount, IgnoredPath};
pub use index::{Index, RootIdentity, StoredRoot};
pub use migrate::{CLIENT_SCHEMA_VERSION, INDEX_SCHEMA_VERSION};
pub use retire::{
    drop_session, expire, leftover_dirs, looks_like_session_id, now_unix, remove_dir,
    settle_session, staged_record_bytes, Expiry, LeftoverError, Undroppable, Unsettleable,
    ABORTED_KEPT, ENDED_KEPT, STAGED_RECORD_BYTES,
};
pub use sessions::BackupRecord;
pub use staging::{
    is_plain_name, session_dir, staging_root, Action, FileState, Session, SessionStatus,
    StagedFile, SESSION_LOCK_FILE,
};
pub use writer::IndexWriter;
