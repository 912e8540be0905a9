//! zync's SQLite state: the daemon's index of changes (machine E) and the client's record of
//! what it has synced (machine R), with their schema migrations and connection setup.
//!
//! Paths are plain `String`s here: callers parse them into validated relative paths before
//! they reach this crate and again after they leave it (DESIGN invariant 3). Sizes and inodes
//! are `u64` stored bit for bit in SQLite's signed 64-bit integers.
#![deny(missing_docs)]

mod client;
mod conn;
mod error;
mod index;
mod kind;
mod migrate;
mod staging;

pub use client::{ClientBatch, ClientState, DirState, Failing, Synced};
pub use error::{DbError, Result};

pub use index::{Ack, ClientRecord, Entry, EntryMeta, Index, IndexWriter, ScanRow};
pub use kind::Kind;
pub use migrate::{CLIENT_SCHEMA_VERSION, INDEX_SCHEMA_VERSION};
pub use staging::{
    is_conflict, is_plain_name, session_dir, staging_root, Action, FileState, OnE, Session,
    SessionStatus, StagedFile,
};
