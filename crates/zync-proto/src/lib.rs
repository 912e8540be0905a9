//! The wire protocol between `zync-daemon` (machine E) and `zync-client` (machine R).
//!
//! JSON text frames carry requests (`operation` in) and responses (`status` out); binary frames
//! carry file content in bounded chunks, each prefixed with the id of the request it answers.
//! This crate does no I/O: it defines the messages, their limits and their parsing, so both sides
//! agree by construction. `docs/PROTOCOL.md` is the human-readable contract.
#![deny(missing_docs)]

mod auth;
mod chunk;
mod ignored;
mod kind;
mod message;
mod request;

pub use auth::{proof, verify, Nonce, Role, NONCE_LEN, PROOF_LEN};
pub use chunk::{decode_chunk, encode_chunk, ChunkError};
pub use ignored::{
    rule_label, IgnoredCount, IgnoredPath, IgnoredReport, BUILT_IN, MAX_IGNORED_LISTED,
};
pub use kind::Kind;
pub use message::{
    AckReply, Challenge, Change, ChangesReply, DeltaHeader, ErrorCode, ErrorResponse, Event,
    FileHeader, FilesReply, FinalizeReply, LastSequence, OkResponse, Pipelining, RefusedFile,
    Reply, ServerMessage, SessionReply, UpstreamFileReply, Welcome, WindowsReply,
};
pub use request::{
    AckChanges, Auth, DeltaPlan, FinalizeUpstream, GetChanges, GetDelta, GetFile, GetFiles,
    GetWindows, Hello, Op, ParseError, PrepareUpstream, Request, UpstreamAction, UpstreamFile,
    WantedFile, WindowHashes,
};

/// The protocol version this build speaks; the handshake refuses any other.
pub const PROTOCOL_VERSION: u32 = 2;

/// The client id `zync-client --status` says HELLO with when R has no database yet (so no
/// client id of its own).
pub const STATUS_PROBE_ID: &str = "zync-client-status";

/// The client id a dry run says HELLO with when R has no database yet.
pub const DRY_RUN_ID: &str = "zync-client-dry-run";

/// Client ids that stand for no client: a look at the daemon, never a mirror of its
/// directories. `zync-apply wait` does not wait for them.
pub const PROBE_IDS: [&str; 2] = [STATUS_PROBE_ID, DRY_RUN_ID];

/// The largest JSON (text) message either side accepts, in bytes.
pub const MAX_TEXT_MESSAGE: usize = 4 << 20;

/// The largest file-content payload in one binary frame, in bytes.
pub const MAX_CHUNK: usize = 1 << 20;

/// The most files one GET_FILES may ask for. Their contents, together, come in one binary frame:
/// at most [`MAX_CHUNK`] bytes.
pub const MAX_GET_FILES: usize = 256;

/// Bytes before the payload in a binary frame: the request id, big-endian `u64`.
pub const CHUNK_HEADER: usize = 8;

/// The largest binary frame either side accepts: one chunk and its header.
pub const MAX_BINARY_FRAME: usize = MAX_CHUNK + CHUNK_HEADER;

/// The largest signature GET_DELTA may carry, in bytes before base64: its base64 (4/3 of it)
/// and the rest of the request stay well under [`MAX_TEXT_MESSAGE`]. zync's own signatures
/// stay under 400 KiB (`zync_fs::delta`).
pub const MAX_SIGNATURE: usize = 2 << 20;

/// The most window hashes a GET_DELTA's `windows` may carry (16 bytes each, 512 KiB, about
/// 683 KiB as base64): with windows of [`MAX_HASH_WINDOW`], files up to 256 GiB. Together
/// with a signature at [`MAX_SIGNATURE`] the request stays under [`MAX_TEXT_MESSAGE`]; a client
/// with a larger file sends no window hashes.
pub const MAX_WINDOW_HASHES: usize = 32 << 10;

/// The smallest window GET_DELTA's `windows` may cut the client's file into.
pub const MIN_HASH_WINDOW: u32 = 1 << 20;

/// The largest window GET_DELTA's `windows` may cut the client's file into (what the zync
/// client uses): no larger than the windows of the delta stream, so one copy command fits a
/// record.
pub const MAX_HASH_WINDOW: u32 = 8 << 20;

/// How many changes GET_CHANGES returns when the request names no limit.
pub const DEFAULT_CHANGES_LIMIT: u32 = 1000;

/// The most changes one GET_CHANGES reply may hold; larger limits are clamped.
pub const MAX_CHANGES_LIMIT: u32 = 5000;
