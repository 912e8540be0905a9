//! Messages, daemon to client: responses (`status` "ok" or "error") and pushed events
//! (`status` "event"), one JSON object per text frame.

use std::collections::BTreeMap;

use crate::{Kind, WindowHashes};
use serde::{Deserialize, Serialize};

/// Every text frame the daemon sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ServerMessage {
    /// A successful response to a request.
    Ok(OkResponse),
    /// A failed request, or a connection-level error (then `id` is absent).
    Error(ErrorResponse),
    /// Pushed by the daemon without a request.
    Event(Event),
}

impl ServerMessage {
    /// The message as a JSON text frame.
    pub fn to_json(&self) -> String {
        // Plain structs with string keys: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a text frame from the daemon.
    ///
    /// # Errors
    /// When the frame is not one of the messages above.
    pub fn parse(text: &str) -> Result<ServerMessage, serde_json::Error> {
        if let Some(reply) = direct_reply(text) {
            return Ok(reply);
        }
        serde_json::from_str(text)
    }
}

/// The two replies a sync reads most (a GET_FILE header per file, GET_CHANGES pages of
/// thousands of changes), read straight into their types: the tagged enums above buffer a
/// whole message into an intermediate tree first, which costs more than the rest of the
/// parse (measured on large change pages). Anything else, or anything these do not read, takes the general path.
fn direct_reply(text: &str) -> Option<ServerMessage> {
    /// A GET_FILE header with its envelope.
    #[derive(Deserialize)]
    struct FileFrame {
        status: String,
        id: u64,
        operation: String,
        dir: String,
        path: String,
        size: u64,
        #[serde(default)]
        offset: u64,
        sha256: String,
        mtime_ns: i64,
        mode: u32,
        chunks: u64,
    }
    /// A GET_CHANGES page with its envelope.
    #[derive(Deserialize)]
    struct ChangesFrame {
        status: String,
        id: u64,
        operation: String,
        dir: String,
        changes: Vec<Change>,
        last_sequence: u64,
        more: bool,
    }
    /// A GET_FILES reply with its envelope.
    #[derive(Deserialize)]
    struct FilesFrame {
        status: String,
        id: u64,
        operation: String,
        dir: String,
        sizes: Vec<u64>,
        #[serde(default)]
        refused: Vec<RefusedFile>,
    }
    let ok = |status: &str, operation: &str, name: &str| status == "ok" && operation == name;
    if text.contains("\"GET_FILES\"") {
        let f: FilesFrame = serde_json::from_str(text).ok()?;
        if !ok(&f.status, &f.operation, "GET_FILES") {
            return None;
        }
        let reply = FilesReply {
            dir: f.dir,
            sizes: f.sizes,
            refused: f.refused,
        };
        return Some(ServerMessage::Ok(OkResponse {
            id: f.id,
            reply: Reply::GetFiles(reply),
        }));
    }
    if text.contains("\"GET_FILE\"") {
        let f: FileFrame = serde_json::from_str(text).ok()?;
        if !ok(&f.status, &f.operation, "GET_FILE") {
            return None;
        }
        let header = FileHeader {
            dir: f.dir,
            path: f.path,
            size: f.size,
            offset: f.offset,
            sha256: f.sha256,
            mtime_ns: f.mtime_ns,
            mode: f.mode,
            chunks: f.chunks,
        };
        return Some(ServerMessage::Ok(OkResponse {
            id: f.id,
            reply: Reply::GetFile(header),
        }));
    }
    if text.contains("\"GET_CHANGES\"") {
        let c: ChangesFrame = serde_json::from_str(text).ok()?;
        if !ok(&c.status, &c.operation, "GET_CHANGES") {
            return None;
        }
        let page = ChangesReply {
            dir: c.dir,
            changes: c.changes,
            last_sequence: c.last_sequence,
            more: c.more,
        };
        return Some(ServerMessage::Ok(OkResponse {
            id: c.id,
            reply: Reply::GetChanges(page),
        }));
    }
    None
}

/// A successful response: the request's id and the operation's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkResponse {
    /// The id of the request this answers.
    pub id: u64,
    /// The reply, tagged by the request's `operation`.
    #[serde(flatten)]
    pub reply: Reply,
}

/// The reply to each operation, tagged with the operation's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reply {
    /// HELLO's answer: the daemon's proof and its own nonce.
    Hello(Challenge),
    /// AUTH's answer: what the daemon serves, sent only once the client proved itself.
    Auth(Welcome),
    /// PING's answer.
    Ping {},
    /// GET_LAST_SEQUENCE's answer.
    GetLastSequence(LastSequence),
    /// FLUSH's answer: the sequences once the index took in everything made before the request.
    Flush(LastSequence),
    /// GET_CHANGES's answer.
    GetChanges(ChangesReply),
    /// GET_FILE's answer; `chunks` binary frames follow.
    GetFile(FileHeader),
    /// GET_FILES's answer; one binary frame with the contents follows.
    GetFiles(FilesReply),
    /// GET_DELTA's answer; `chunks` binary frames of the delta follow.
    GetDelta(DeltaHeader),
    /// GET_WINDOWS's answer.
    GetWindows(WindowsReply),
    /// ACK_CHANGES's answer.
    AckChanges(AckReply),
    /// PREPARE_UPSTREAM's answer.
    PrepareUpstream(SessionReply),
    /// UPSTREAM_FILE's answer, sent once the file's content arrived and was verified.
    UpstreamFile(UpstreamFileReply),
    /// FINALIZE_UPSTREAM's answer.
    FinalizeUpstream(FinalizeReply),
}

/// PREPARE_UPSTREAM's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReply {
    /// The new session's id; `zync-apply` shows and applies it by this id.
    pub session_id: String,
}

/// UPSTREAM_FILE's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamFileReply {
    /// The directory name.
    pub dir: String,
    /// The file's path.
    pub path: String,
    /// True when E's file changed since R's base version, content or mode (three-way; see
    /// docs/PROTOCOL.md).
    pub conflict: bool,
}

/// FINALIZE_UPSTREAM's answer: what the staged session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeReply {
    /// The session's id.
    pub session_id: String,
    /// Files staged.
    pub files: u64,
    /// Bytes of content staged.
    pub bytes: u64,
    /// Files flagged as conflicts.
    pub conflicts: u64,
}

/// HELLO's answer: the daemon proves that it holds the token, and challenges the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The daemon's protocol version (equal to the client's, or the handshake fails).
    pub protocol_version: u32,
    /// A fresh random nonce the client must prove against in AUTH, 64 hex characters.
    pub daemon_nonce: String,
    /// [`crate::proof`] with [`crate::Role::Daemon`] over the client's and this nonce;
    /// `null` when the daemon runs without authentication (`--insecure-no-auth`), which a
    /// client holding a token refuses.
    pub daemon_proof: Option<String>,
    /// Empty: the daemon program's version is told in AUTH's answer, to a client that proved
    /// itself (daemons before 2026-12-07 told it here). Kept so that older clients still
    /// parse the challenge.
    pub server_version: String,
}

/// AUTH's answer: the daemon's side of the handshake, once both sides proved themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The daemon's protocol version.
    pub protocol_version: u32,
    /// Made with the daemon's database; a client that stored another one resyncs from 0.
    pub index_id: String,
    /// The directory names the daemon serves.
    pub dirs: Vec<String>,
    /// True while the daemon's startup scan or a rescan is running.
    pub scanning: bool,
    /// The daemon program's version, for logs.
    pub server_version: String,
    /// How many requests the daemon lets a client keep unanswered, because it reads requests
    /// while it answers earlier ones. Absent from older daemons, which read the next request
    /// only after answering the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelining: Option<Pipelining>,
    /// The most files the daemon answers in one GET_FILES (at most
    /// [`crate::MAX_GET_FILES`]). Absent from older daemons, which do not know GET_FILES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_files: Option<u32>,
}

/// The window a daemon that reads ahead grants each connection (HELLO's `pipelining`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipelining {
    /// Requests sent and not yet answered, at most.
    pub requests: u32,
    /// Bytes of those requests' frames (and of upload content not yet answered), at most.
    pub bytes: u64,
}

/// Sequence numbers and scan state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSequence {
    /// The highest sequence number given to any change.
    pub last_sequence: u64,
    /// The highest sequence number of each directory.
    pub dirs: BTreeMap<String, u64>,
    /// True while a scan is running: more changes are about to be recorded.
    pub scanning: bool,
    /// Directories the daemon serves but cannot see now (gone, emptied at once, unmounted),
    /// with the reason: nothing is recorded for them until they are back. Absent from older
    /// daemons and when every directory is available.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unavailable: BTreeMap<String, String>,
    /// What each served directory ignores (every one, when the request asked with
    /// `ignored`): counts by rule, and the paths when asked. Absent when not asked for, and
    /// from older daemons.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ignored: BTreeMap<String, crate::IgnoredReport>,
}

/// One entry of the daemon's index: the current state of a path, or its tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The sequence number of this change.
    pub seq: u64,
    /// The path relative to the directory, `/`-separated.
    pub path: String,
    /// File, dir or symlink.
    pub kind: Kind,
    /// True when the path was deleted on E.
    #[serde(default)]
    pub deleted: bool,
    /// File size in bytes (0 for directories; a tombstone keeps the last known size).
    #[serde(default)]
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: i64,
    /// Permission bits (`st_mode & 0o7777`).
    #[serde(default)]
    pub mode: u32,
    /// Lowercase hex sha256 of a file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// GET_CHANGES's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesReply {
    /// The directory name.
    pub dir: String,
    /// Changes in ascending sequence order.
    pub changes: Vec<Change>,
    /// The directory's highest sequence number when the reply was made.
    pub last_sequence: u64,
    /// True when more changes follow the last one returned (ask again from its `seq`).
    pub more: bool,
}

/// GET_FILE's answer: what the binary chunks that follow will add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHeader {
    /// The directory name.
    pub dir: String,
    /// The file's path.
    pub path: String,
    /// The file's whole size in bytes; the chunks that follow carry `size - offset` of them.
    pub size: u64,
    /// Where the chunks start: the request's `offset` (0 for a whole file).
    #[serde(default)]
    pub offset: u64,
    /// sha256 of the whole file; the client checks it before using the file.
    pub sha256: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Number of binary frames that follow, each at most [`crate::MAX_CHUNK`] bytes of payload.
    pub chunks: u64,
}

/// GET_FILES's answer: how many bytes of the one binary frame that follows are each file's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesReply {
    /// The directory name.
    pub dir: String,
    /// One per file asked for, in the request's order: its size, the bytes of the frame that
    /// are its content (the contents follow one another); 0 for a refused file.
    pub sizes: Vec<u64>,
    /// The files refused (none sent for them), by their place in the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedFile>,
}

/// A file of a GET_FILES that the daemon does not send, and why (the codes GET_FILE would
/// answer with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedFile {
    /// Its place in the request's `files`, from 0.
    pub at: u32,
    /// Why, as GET_FILE's error would say.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
}

/// GET_DELTA's answer: the file the delta rebuilds, and what the binary chunks that follow
/// (the delta stream of `zync_fs::delta`) add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaHeader {
    /// The directory name.
    pub dir: String,
    /// The file's path.
    pub path: String,
    /// The size of the file the delta rebuilds.
    pub size: u64,
    /// sha256 of the file the delta rebuilds; the client MUST check it (the delta's block
    /// matching uses MD4 and can rebuild the wrong bytes).
    pub sha256: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Bytes of delta in the chunks that follow.
    pub delta_size: u64,
    /// Number of binary frames that follow: `ceil(delta_size / MAX_CHUNK)`.
    pub chunks: u64,
}

/// GET_WINDOWS's answer: which version of the file the hashes are of, and the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsReply {
    /// The directory name.
    pub dir: String,
    /// The file's path.
    pub path: String,
    /// sha256 of the file hashed: a GET_DELTA `plan` names it.
    pub sha256: String,
    /// The keyed hashes of its windows; `base_size` is the file's size.
    pub windows: WindowHashes,
}

/// ACK_CHANGES's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckReply {
    /// The directory name.
    pub dir: String,
    /// The sequence number recorded.
    pub sequence: u64,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The id of the failed request, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The error class.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

/// Error classes; see docs/PROTOCOL.md for when each is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, missing or mistyped fields.
    BadRequest,
    /// An operation this daemon does not know.
    UnknownOperation,
    /// A request other than HELLO (then AUTH) before the handshake completed.
    HandshakeRequired,
    /// The client's proof did not verify: it holds another token, or none.
    Unauthorized,
    /// The daemon serves as many clients as it allows; try again later.
    Busy,
    /// The client speaks another protocol version.
    UnsupportedVersion,
    /// A path that is not a valid relative path.
    InvalidPath,
    /// A directory name the daemon does not serve.
    UnknownDir,
    /// No such file in the index.
    NotFound,
    /// The path is a directory, a symlink, or ignored: only regular files have content.
    NotAFile,
    /// The file changed since it was indexed; a newer change is coming, ask again later.
    Stale,
    /// A frame or message over the documented limits.
    TooLarge,
    /// The daemon failed (database or disk error); retrying later may help.
    Internal,
    /// No open upstream session with this id on this connection.
    UnknownSession,
    /// Uploaded content does not match its announced size or sha256.
    ChecksumMismatch,
}

/// Pushed by the daemon to every connected client after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Event {
    /// New changes were recorded; `last_sequence` is the new global highest sequence.
    Changed {
        /// The highest sequence number now recorded.
        last_sequence: u64,
    },
    /// A scan finished; everything on disk is in the index.
    ScanComplete {
        /// The highest sequence number now recorded.
        last_sequence: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general parse alone, as `ServerMessage::parse` was before its direct paths.
    fn general(text: &str) -> Result<ServerMessage, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn the_direct_paths_read_what_the_general_one_reads() {
        let sha = "ab".repeat(32);
        let texts = [
            // A GET_FILE header, fields in another order, an unknown field, no offset.
            format!(r#"{{"chunks":1,"operation":"GET_FILE","status":"ok","id":7,"dir":"d","path":"a b/c","size":3,"sha256":"{sha}","mtime_ns":-5,"mode":420,"extra":[1]}}"#),
            format!(r#"{{"status":"ok","id":8,"operation":"GET_FILE","dir":"d","path":"x","size":9,"offset":4,"sha256":"{sha}","mtime_ns":1,"mode":493,"chunks":1}}"#),
            // A page with a file, a tombstone and a symlink.
            format!(r#"{{"status":"ok","id":9,"operation":"GET_CHANGES","dir":"d","changes":[{{"seq":1,"path":"f","kind":"file","deleted":false,"size":3,"mtime_ns":2,"mode":420,"sha256":"{sha}"}},{{"seq":2,"path":"g","kind":"dir","deleted":true}},{{"seq":3,"path":"l","kind":"symlink","target":"f","future":true}}],"last_sequence":3,"more":true}}"#),
            // Not these replies, though they name them: the general path decides.
            r#"{"status":"error","id":10,"code":"stale","message":"GET_FILE of \"GET_FILE\": changed"}"#.to_string(),
            format!(r#"{{"status":"ok","id":11,"operation":"GET_DELTA","dir":"d","path":"GET_FILE","size":1,"sha256":"{sha}","mtime_ns":1,"mode":420,"delta_size":0,"chunks":0}}"#),
            r#"{"status":"event","event":"CHANGED","last_sequence":4,"note":"GET_CHANGES"}"#.to_string(),
        ];
        for text in &texts {
            let general = general(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(ServerMessage::parse(text).unwrap(), general, "{text}");
        }
        // What neither reads stays an error.
        for bad in [
            r#"{"status":"ok","id":1,"operation":"GET_FILE","dir":"d"}"#,
            r#"{"status":"ok","id":-1,"operation":"GET_CHANGES","dir":"d","changes":[],"last_sequence":0,"more":false}"#,
        ] {
            assert!(
                general(bad).is_err() && ServerMessage::parse(bad).is_err(),
                "{bad}"
            );
        }
        assert!(direct_reply(&texts[0]).is_some() && direct_reply(&texts[2]).is_some());
    }

    fn round_trip(message: ServerMessage) -> String {
        let json = message.to_json();
        assert_eq!(ServerMessage::parse(&json).expect(&json), message, "{json}");
        json
    }

    #[test]
    fn ok_responses_carry_status_id_and_operation() {
        let json = round_trip(ServerMessage::Ok(OkResponse {
            id: 3,
            reply: Reply::GetChanges(ChangesReply {
                dir: "code".into(),
                changes: vec![Change {
                    seq: 12,
                    path: "src/main.rs".into(),
                    kind: Kind::File,
                    deleted: false,
                    size: 10,
                    mtime_ns: 1_700_000_000_000_000_000,
                    mode: 0o644,
                    sha256: Some("ab".repeat(32)),
                    target: None,
                }],
                last_sequence: 12,
                more: false,
            }),
        }));
        assert!(json.contains(r#""status":"ok""#), "{json}");
        assert!(json.contains(r#""operation":"GET_CHANGES""#), "{json}");
        assert!(json.contains(r#""id":3"#), "{json}");
        assert!(json.contains(r#""kind":"file""#), "{json}");

        round_trip(ServerMessage::Ok(OkResponse {
            id: 1,
            reply: Reply::Ping {},
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 2,
            reply: Reply::Hello(Challenge {
                protocol_version: 2,
                daemon_nonce: "ab".repeat(32),
                daemon_proof: Some("cd".repeat(32)),
                server_version: "0.1.0".into(),
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 1,
            reply: Reply::Auth(Welcome {
                protocol_version: 2,
                index_id: "i".into(),
                dirs: vec!["a".into()],
                scanning: true,
                server_version: "0.1.0".into(),
                pipelining: None,
                get_files: None,
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 2,
            reply: Reply::Auth(Welcome {
                protocol_version: 2,
                index_id: "i".into(),
                dirs: vec![],
                scanning: false,
                server_version: "0.1.0".into(),
                pipelining: Some(Pipelining {
                    requests: 8192,
                    bytes: 8 << 20,
                }),
                get_files: Some(256),
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 4,
            reply: Reply::GetLastSequence(LastSequence {
                last_sequence: 9,
                dirs: BTreeMap::from([("a".to_string(), 9)]),
                scanning: false,
                unavailable: BTreeMap::new(),
                ignored: BTreeMap::new(),
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 4,
            reply: Reply::GetLastSequence(LastSequence {
                last_sequence: 9,
                dirs: BTreeMap::from([("a".to_string(), 9)]),
                scanning: false,
                unavailable: BTreeMap::from([("a".to_string(), "gone".to_string())]),
                ignored: BTreeMap::from([(
                    "a".to_string(),
                    crate::IgnoredReport {
                        total: 2,
                        rules: vec![crate::IgnoredCount {
                            pattern: "build/".into(),
                            source: "built-in".into(),
                            count: 2,
                        }],
                        paths: Some(vec![crate::IgnoredPath {
                            path: "build".into(),
                            is_dir: true,
                            pattern: "build/".into(),
                            source: "built-in".into(),
                        }]),
                        more: 1,
                    },
                )]),
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 5,
            reply: Reply::GetFile(FileHeader {
                dir: "a".into(),
                path: "f".into(),
                size: 3,
                offset: 1,
                sha256: "00".repeat(32),
                mtime_ns: -5,
                mode: 0o755,
                chunks: 1,
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 7,
            reply: Reply::GetDelta(DeltaHeader {
                dir: "a".into(),
                path: "f".into(),
                size: 3,
                sha256: "00".repeat(32),
                mtime_ns: 5,
                mode: 0o644,
                delta_size: 40,
                chunks: 1,
            }),
        }));
        round_trip(ServerMessage::Ok(OkResponse {
            id: 6,
            reply: Reply::AckChanges(AckReply {
                dir: "a".into(),
                sequence: 5,
            }),
        }));
    }

    #[test]
    fn errors_and_events_round_trip() {
        let json = round_trip(ServerMessage::Error(ErrorResponse {
            id: Some(4),
            code: ErrorCode::UnknownDir,
            message: "no such dir".into(),
        }));
        assert!(json.contains(r#""status":"error""#), "{json}");
        assert!(json.contains(r#""code":"unknown_dir""#), "{json}");
        let json = round_trip(ServerMessage::Error(ErrorResponse {
            id: None,
            code: ErrorCode::BadRequest,
            message: "x".into(),
        }));
        assert!(!json.contains("\"id\""), "{json}");
        let json = round_trip(ServerMessage::Event(Event::Changed { last_sequence: 40 }));
        assert_eq!(
            json,
            r#"{"status":"event","event":"CHANGED","last_sequence":40}"#
        );
        round_trip(ServerMessage::Event(Event::ScanComplete {
            last_sequence: 41,
        }));
    }

    #[test]
    fn a_change_from_an_older_peer_without_optional_fields_parses() {
        let change: Change =
            serde_json::from_str(r#"{"seq":1,"path":"gone.txt","kind":"file","deleted":true}"#)
                .unwrap();
        assert!(change.deleted);
        assert_eq!(change.sha256, None);
    }
}
