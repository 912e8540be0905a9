//! zync's SQLite state: the daemon's index of changes (machine E) and the client's record of
//! what it has synced (machine R), with their schema migrations and connection setup.
//!
//! Paths are plain `String`s here: callers parse them into validated relative paths before
//! they reach this crate and again after they leave it (invariant 3 (docs/ARCHITECTURE.md)). Sizes and inodes
//! are `u64` stored bit for bit in SQLite's signed 64-bit integers.
#![deny(missing_docs)]

mod changes;
mod client;
mod clients;
mod conn;
mod error;
mod index;
mod kind;
mod migrate;
mod sql;
mod staging;
mod writer;

pub use client::{ClientBatch, ClientState, DirState, Failing, Synced};
pub use error::{DbError, Result};

pub use changes::{Entry, EntryMeta, ScanRow};
pub use clients::{Ack, ClientRecord};
pub use index::Index;
pub use kind::Kind;
pub use migrate::{CLIENT_SCHEMA_VERSION, INDEX_SCHEMA_VERSION};
pub use staging::{
    is_conflict, is_plain_name, session_dir, staging_root, Action, FileState, OnE, Session,
    SessionStatus, StagedFile,
};
pub use writer::IndexWriter;
