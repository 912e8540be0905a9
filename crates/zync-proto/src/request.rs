//! Requests, client to daemon: one JSON object per text frame, tagged by `operation`, with an
//! `id` the response echoes so requests can be pipelined.

use serde::{Deserialize, Serialize};

use crate::message::ErrorCode;

/// One request: its id and the operation with its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the response and in binary chunks.
    pub id: u64,
    /// The operation and its fields, flattened beside `id`.
    #[serde(flatten)]
    pub op: Op,
}

/// Every operation the daemon serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Op {
    /// The handshake's first step: must be the first request on a connection.
    Hello(Hello),
    /// The handshake's second step: the client's proof; must follow HELLO's reply.
    Auth(Auth),
    /// Liveness check.
    Ping {},
    /// The daemon's current sequence numbers and whether its scan is running.
    GetLastSequence {
        /// Also report what each directory ignores: counts by rule, and its first `ignored`
        /// paths (at most [`crate::MAX_IGNORED_LISTED`]; 0: counts only). Absent: nothing
        /// about ignored paths (older daemons never report it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ignored: Option<u32>,
    },
    /// The daemon's sequence numbers once its index holds every change made on E before the
    /// request (a barrier: `zync-client --wait`).
    Flush {},
    /// Changes of one directory since a sequence number.
    GetChanges(GetChanges),
    /// A file's content, streamed as binary chunks after the reply.
    GetFile(GetFile),
    /// The whole content of many small files, in one binary frame after the reply.
    GetFiles(GetFiles),
    /// A file's content as a delta against the client's version, streamed like GET_FILE's.
    GetDelta(GetDelta),
    /// The hashes of a file's windows, keyed with the client's key: which windows of its own
    /// version the client then needs to sign for a GET_DELTA with a `plan`.
    GetWindows(GetWindows),
    /// The client has durably applied a directory's changes up to a sequence number.
    AckChanges(AckChanges),
    /// Opens an upstream session (R's changes, staged on E for review).
    PrepareUpstream(PrepareUpstream),
    /// One file of the open upstream session; `chunks` binary frames of content follow a write.
    UpstreamFile(UpstreamFile),
    /// Closes the upstream session: its files are staged for `zync-apply`.
    FinalizeUpstream(FinalizeUpstream),
}

impl Op {
    /// The operation names this build knows, as they appear on the wire.
    pub const NAMES: &'static [&'static str] = &[
        "HELLO",
        "AUTH",
        "PING",
        "GET_LAST_SEQUENCE",
        "FLUSH",
        "GET_CHANGES",
        "GET_FILE",
        "GET_FILES",
        "GET_DELTA",
        "GET_WINDOWS",
        "ACK_CHANGES",
        "PREPARE_UPSTREAM",
        "UPSTREAM_FILE",
        "FINALIZE_UPSTREAM",
    ];

    /// The wire name of this operation.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello(_) => "HELLO",
            Op::Auth(_) => "AUTH",
            Op::Ping {} => "PING",
            Op::GetLastSequence { .. } => "GET_LAST_SEQUENCE",
            Op::Flush {} => "FLUSH",
            Op::GetChanges(_) => "GET_CHANGES",
            Op::GetFile(_) => "GET_FILE",
            Op::GetFiles(_) => "GET_FILES",
            Op::GetDelta(_) => "GET_DELTA",
            Op::GetWindows(_) => "GET_WINDOWS",
            Op::AckChanges(_) => "ACK_CHANGES",
            Op::PrepareUpstream(_) => "PREPARE_UPSTREAM",
            Op::UpstreamFile(_) => "UPSTREAM_FILE",
            Op::FinalizeUpstream(_) => "FINALIZE_UPSTREAM",
        }
    }
}

/// HELLO: protocol version, the client's stable id, and the nonce the daemon must prove
/// against before the client sends anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal the daemon's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// A stable id for this client's database (ACKs are recorded under it).
    pub client_id: String,
    /// Free-form version of the client program, for logs. Sent here only by older clients:
    /// this one sends it in [`Auth`], once the daemon proved that it holds the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// A fresh random nonce, 64 hex characters ([`crate::Nonce`]). Optional only so that an
    /// older client's HELLO still parses and gets `unsupported_version`, not `bad_request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_nonce: Option<String>,
    /// The directory names this client mirrors. Sent here only by older clients: this one
    /// sends them in [`Auth`], so that whatever answers on the daemon's port learns nothing
    /// of them before it proved itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirs: Option<Vec<String>>,
}

/// AUTH: the client's proof that it holds the token, over both nonces of this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// [`crate::proof`] with [`crate::Role::Client`], 64 hex characters; `null` only for a
    /// daemon that runs without authentication.
    #[serde(default)]
    pub client_proof: Option<String>,
    /// Free-form version of the client program, for the daemon's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// The directory names this client mirrors, so `zync-apply wait` knows what to wait for.
    /// Absent from older clients (which may have sent them in [`Hello`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirs: Option<Vec<String>>,
}

/// GET_CHANGES: changes of `dir` with a sequence number above `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChanges {
    /// The directory name (the NAME of the daemon's `--dirs NAME:PATH`).
    pub dir: String,
    /// Only changes with a greater sequence number are returned; 0 returns the whole tree.
    pub since: u64,
    /// At most this many changes (default [`crate::DEFAULT_CHANGES_LIMIT`], clamped to
    /// [`crate::MAX_CHANGES_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// GET_FILE: the current content of a regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetFile {
    /// The directory name.
    pub dir: String,
    /// The file's path relative to the directory, `/`-separated.
    pub path: String,
    /// Resume a partial download: send the content from this byte on (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// GET_FILES: the whole content of up to [`crate::MAX_GET_FILES`] regular files of one
/// directory, each of the version the client names, answered together in one binary frame of
/// at most [`crate::MAX_CHUNK`] bytes (docs/PROTOCOL.md, GET_FILES).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetFiles {
    /// The directory name.
    pub dir: String,
    /// The files wanted, in the order their contents come back. More than
    /// [`crate::MAX_GET_FILES`] fail the parse as soon as the one too many is read, so a
    /// request of hundreds of thousands of tiny entries is not built in memory first.
    #[serde(deserialize_with = "at_most_max_get_files")]
    pub files: Vec<WantedFile>,
}

/// Reads GET_FILES's `files`, refusing more than [`crate::MAX_GET_FILES`] of them without
/// reading the rest.
fn at_most_max_get_files<'de, D>(deserializer: D) -> Result<Vec<WantedFile>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<WantedFile>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an array of at most {} files", crate::MAX_GET_FILES)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut files = Vec::new();
            while let Some(file) = seq.next_element()? {
                if files.len() == crate::MAX_GET_FILES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {} files; ask for the rest in another GET_FILES",
                        crate::MAX_GET_FILES
                    )));
                }
                files.push(file);
            }
            Ok(files)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// One file of a GET_FILES: its path and the content the client wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedFile {
    /// The file's path relative to the directory, `/`-separated.
    pub path: String,
    /// Lowercase hex sha256 of the version wanted (from its change): when the index has
    /// another, the file is refused `stale` and not read.
    pub sha256: String,
}

/// GET_DELTA: the current content of a regular file as a delta against `signature`, the
/// `zync_fs::delta` signature of the client's own version. The signature travels as base64 in
/// the JSON; parsing decodes it, refusing one over [`crate::MAX_SIGNATURE`] bytes or that is
/// not base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetDelta {
    /// The directory name.
    pub dir: String,
    /// The file's path relative to the directory, `/`-separated.
    pub path: String,
    /// The signature's bytes (base64, standard alphabet with padding, on the wire).
    #[serde(with = "base64_signature")]
    pub signature: Vec<u8>,
    /// Hashes of the client's version cut in windows, so the daemon can send each window that
    /// did not change as one copy, without diffing it. Absent from older clients (and ignored
    /// by older daemons): every window is diffed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowHashes>,
    /// Instead of `windows`: which windows of E's file the client already has (from a
    /// GET_WINDOWS answer), and which of its own windows `signature` covers. Absent from
    /// older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<DeltaPlan>,
}

/// GET_DELTA's `plan`: the second step of a delta whose first step was GET_WINDOWS. The client
/// compared E's window hashes with those it kept of its own version, so it signs only the
/// windows that differ: a small edit in a big file costs a signature of a window or two, not of
/// the whole file, and the client need not read the rest of its version.
///
/// The daemon sends each window of E's file listed in `same` as one copy of the client's window
/// at the same offset, and diffs the others against `signature`: the signature of the client's
/// windows listed in `covers`, read one after another as if they were one file. `zync_fs::delta`
/// checks the lists against the signature and both sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaPlan {
    /// The sha256 GET_WINDOWS reported: the daemon refuses the plan (`stale`) when its
    /// file is no longer that version, since `same` was decided against it.
    pub sha256: String,
    /// Bytes per window, as asked for with GET_WINDOWS.
    pub window: u32,
    /// The size of the client's version.
    pub base_size: u64,
    /// Windows (by number from 0) of E's file that the client has at the same offset, with the
    /// same length and hash; increasing.
    pub same: Vec<u32>,
    /// Windows of the client's version that `signature` covers, in the order signed;
    /// increasing.
    pub covers: Vec<u32>,
}

/// GET_WINDOWS: the XXH3-128 of each window of `window` bytes of a file (the last one shorter),
/// keyed with `key`, the client's secret for its checkpoints (`zync_fs::checkpoint`). The
/// client keeps those hashes for every big file it wrote, so it can tell which of its windows
/// differ from E's without reading its own version. The key never reaches anyone but the
/// daemon the client authenticated (invariant 8), which sends the file's bytes anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetWindows {
    /// The directory name.
    pub dir: String,
    /// The file's path relative to the directory, `/`-separated.
    pub path: String,
    /// Bytes per window, [`crate::MIN_HASH_WINDOW`] ..= [`crate::MAX_HASH_WINDOW`].
    pub window: u32,
    /// The XXH3 secret, [`GetWindows::KEY_LEN`] bytes (base64 on the wire).
    #[serde(with = "base64_key")]
    pub key: Vec<u8>,
}

impl GetWindows {
    /// Bytes of the key.
    pub const KEY_LEN: usize = 192;
}

/// GET_DELTA's `windows`: the client's version of the file cut into windows of `window` bytes
/// from its start (the last one shorter), each hashed with XXH3-128. A window of E's file at
/// the same offset with the same length and hash is taken as unchanged; a false match only
/// rebuilds a file whose sha256 the client then refuses (it downloads the file whole).
/// Parsing checks the encoding and the count limit; `zync_fs::delta` checks the rest against
/// the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowHashes {
    /// Bytes per window, [`crate::MIN_HASH_WINDOW`] ..= [`crate::MAX_HASH_WINDOW`].
    pub window: u32,
    /// The size of the client's version: the windows cover exactly this many bytes.
    pub base_size: u64,
    /// The windows' XXH3-128 hashes in order, 16 bytes each (big-endian); base64 on the
    /// wire, at most [`crate::MAX_WINDOW_HASHES`] of them.
    #[serde(with = "base64_hashes")]
    pub hashes: Vec<u8>,
}

impl WindowHashes {
    /// Bytes of one window's hash.
    pub const HASH_LEN: usize = 16;

    /// How many windows the hashes cover.
    pub fn count(&self) -> usize {
        self.hashes.len() / Self::HASH_LEN
    }
}

/// GET_DELTA's `signature`: bytes as standard base64, bounded by [`crate::MAX_SIGNATURE`].
mod base64_signature {
    use base64::Engine;
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::MAX_SIGNATURE;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        // Checked before decoding, so an oversized one costs no allocation.
        let max_text = MAX_SIGNATURE.div_ceil(3) * 4;
        if text.len() > max_text {
            return Err(de::Error::custom(format!(
                "signature is {} base64 characters, over the limit of {max_text} ({MAX_SIGNATURE} bytes); \
                 zync's own signatures are far smaller: was it made with zync_fs::delta::signature?",
                text.len()
            )));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| de::Error::custom(format!("signature is not valid base64: {e}")))
    }
}

/// GET_DELTA's window `hashes`: 16-byte hashes as standard base64, at most
/// [`crate::MAX_WINDOW_HASHES`] of them.
mod base64_hashes {
    use base64::Engine;
    use serde::{de, Deserialize, Deserializer, Serializer};

    use super::WindowHashes;
    use crate::MAX_WINDOW_HASHES;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        let max_bytes = MAX_WINDOW_HASHES * WindowHashes::HASH_LEN;
        // Checked before decoding, so an oversized one costs no allocation.
        let max_text = max_bytes.div_ceil(3) * 4;
        if text.len() > max_text {
            return Err(de::Error::custom(format!(
                "windows.hashes is {} base64 characters, over the limit of {max_text} \
                 ({MAX_WINDOW_HASHES} hashes of {} bytes)",
                text.len(),
                WindowHashes::HASH_LEN
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| de::Error::custom(format!("windows.hashes is not valid base64: {e}")))?;
        if bytes.len() % WindowHashes::HASH_LEN != 0 || bytes.len() > max_bytes {
            return Err(de::Error::custom(format!(
                "windows.hashes is {} bytes, not a whole number of {}-byte hashes (at most {MAX_WINDOW_HASHES})",
                bytes.len(),
                WindowHashes::HASH_LEN
            )));
        }
        Ok(bytes)
    }
}

/// GET_WINDOWS's `key`: exactly [`GetWindows::KEY_LEN`] bytes as standard base64.
mod base64_key {
    use base64::Engine;
    use serde::{de, Deserialize, Deserializer, Serializer};

    use super::GetWindows;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        let want = GetWindows::KEY_LEN.div_ceil(3) * 4;
        if text.len() != want {
            return Err(de::Error::custom(format!(
                "key is {} base64 characters; it must be {want} ({} bytes)",
                text.len(),
                GetWindows::KEY_LEN
            )));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| de::Error::custom(format!("key is not valid base64: {e}")))
    }
}

/// ACK_CHANGES: the client applied `dir`'s changes up to `sequence` durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckChanges {
    /// The directory name.
    pub dir: String,
    /// The last sequence number applied.
    pub sequence: u64,
}

/// PREPARE_UPSTREAM: opens a session on this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareUpstream {
    /// Free-form text shown by `zync-apply` (for example the client's host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What an upstream file does on E.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamAction {
    /// Create or replace the file with R's content.
    Write,
    /// Delete the file.
    Delete,
}

/// UPSTREAM_FILE: one changed file of R's. A write is followed by `ceil(size / MAX_CHUNK)`
/// binary frames carrying this request's id; the daemon answers once it has them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamFile {
    /// The session from PREPARE_UPSTREAM.
    pub session_id: String,
    /// The directory name.
    pub dir: String,
    /// The file's path relative to the directory.
    pub path: String,
    /// Write or delete.
    pub action: UpstreamAction,
    /// Permission bits of R's file (writes).
    #[serde(default)]
    pub mode: u32,
    /// Bytes of content that follow (writes).
    #[serde(default)]
    pub size: u64,
    /// R's modification time, nanoseconds since the epoch (writes).
    #[serde(default)]
    pub mtime_ns: i64,
    /// sha256 of R's content (writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// sha256 of the version R last synced from E; absent for a file new on R.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    /// Permission bits of the version R last synced (its synced record's mode), sent with
    /// `base_sha256`: a mode is part of a file's version. Absent from older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_mode: Option<u32>,
}

/// FINALIZE_UPSTREAM: the session is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeUpstream {
    /// The session from PREPARE_UPSTREAM.
    pub session_id: String,
}

/// Why a text frame is not a valid request; becomes an error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The request id, when the frame had a readable one.
    pub id: Option<u64>,
    /// The error class.
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

impl Request {
    /// Parses a text frame, telling apart malformed JSON, a missing id, an unknown operation and
    /// wrong fields, so the daemon can answer each with a precise error.
    ///
    /// # Errors
    /// A [`ParseError`] naming what was wrong.
    pub fn parse(text: &str) -> Result<Request, ParseError> {
        if let Some(request) = direct_get_file(text) {
            return Ok(request);
        }
        if let Some(request) = direct_get_files(text) {
            return Ok(request);
        }
        let bad = |id, message: String| ParseError {
            id,
            code: ErrorCode::BadRequest,
            message,
        };
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| bad(None, format!("request is not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad(None, "request must be a JSON object".to_string()))?;
        let id = match object.get("id") {
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                bad(
                    None,
                    "field \"id\" must be a non-negative integer".to_string(),
                )
            })?),
            None => None,
        };
        let operation = match object.get("operation") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(bad(id, "field \"operation\" must be a string".to_string())),
            None => return Err(bad(id, "request has no \"operation\" field".to_string())),
        };
        if !Op::NAMES.contains(&operation.as_str()) {
            return Err(ParseError {
                id,
                code: ErrorCode::UnknownOperation,
                message: format!(
                    "unknown operation {operation:?}; this daemon knows {}",
                    Op::NAMES.join(", ")
                ),
            });
        }
        if id.is_none() {
            return Err(bad(None, "request has no \"id\" field".to_string()));
        }
        serde_json::from_value(value)
            .map_err(|e| bad(id, format!("invalid {operation} request: {e}")))
    }

    /// The request as a JSON text frame.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// GET_FILE, the request a sync sends once per file, read straight into its type; the general
/// path (a JSON tree, then the tagged enum) costs several times more. `None` for
/// anything else, and for anything this does not read: the general path then decides, with
/// its error messages.
fn direct_get_file(text: &str) -> Option<Request> {
    #[derive(Deserialize)]
    struct Frame {
        id: u64,
        operation: String,
        dir: String,
        path: String,
        #[serde(default)]
        offset: Option<u64>,
    }
    if !text.contains("\"GET_FILE\"") {
        return None;
    }
    let frame: Frame = serde_json::from_str(text).ok()?;
    (frame.operation == "GET_FILE").then_some(Request {
        id: frame.id,
        op: Op::GetFile(GetFile {
            dir: frame.dir,
            path: frame.path,
            offset: frame.offset,
        }),
    })
}

/// GET_FILES read straight into its type, as [`direct_get_file`] does: a request of hundreds
/// of files through a JSON tree first costs several times more.
fn direct_get_files(text: &str) -> Option<Request> {
    #[derive(Deserialize)]
    struct Frame {
        id: u64,
        operation: String,
        dir: String,
        #[serde(deserialize_with = "at_most_max_get_files")]
        files: Vec<WantedFile>,
    }
    if !text.contains("\"GET_FILES\"") {
        return None;
    }
    let frame: Frame = serde_json::from_str(text).ok()?;
    (frame.operation == "GET_FILES").then_some(Request {
        id: frame.id,
        op: Op::GetFiles(GetFiles {
            dir: frame.dir,
            files: frame.files,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_files_reads_and_writes_as_the_general_path_does() {
        let general = |text: &str| -> Request {
            serde_json::from_value(serde_json::from_str(text).unwrap()).unwrap()
        };
        for text in [
            r#"{"id":4,"operation":"GET_FILES","dir":"code","files":[{"path":"a","sha256":"ab"}]}"#,
            r#"{"files":[],"dir":"d","operation":"GET_FILES","id":5,"extra":1}"#,
            r#"{"id":7,"operation":"ACK_CHANGES","dir":"GET_FILES","sequence":3}"#,
        ] {
            assert_eq!(Request::parse(text).unwrap(), general(text), "{text}");
        }
        let many: Vec<String> = (0..=crate::MAX_GET_FILES)
            .map(|i| format!(r#"{{"path":"f{i}","sha256":"00"}}"#))
            .collect();
        let text = format!(
            r#"{{"id":9,"operation":"GET_FILES","dir":"d","files":[{}]}}"#,
            many.join(",")
        );
        let err = Request::parse(&text).unwrap_err();
        assert_eq!((err.id, err.code), (Some(9), ErrorCode::BadRequest));
        assert!(
            err.message.contains("more than 256 files"),
            "{}",
            err.message
        );
        let err =
            Request::parse(r#"{"id":8,"operation":"GET_FILES","dir":"d","files":[{"path":"a"}]}"#)
                .unwrap_err();
        assert_eq!((err.id, err.code), (Some(8), ErrorCode::BadRequest));
        assert!(err.message.contains("sha256"), "{}", err.message);
        let request = Request {
            id: 3,
            op: Op::GetFiles(GetFiles {
                dir: "d".into(),
                files: vec![WantedFile {
                    path: "p".into(),
                    sha256: "00".into(),
                }],
            }),
        };
        assert_eq!(Request::parse(&request.to_json()).unwrap(), request);
    }

    #[test]
    fn get_file_reads_and_writes_as_the_general_path_does() {
        let general = |text: &str| -> Request {
            serde_json::from_value(serde_json::from_str(text).unwrap()).unwrap()
        };
        for text in [
            r#"{"id":4,"operation":"GET_FILE","dir":"code","path":"a/b.rs"}"#,
            r#"{"path":"x","offset":12,"dir":"d","operation":"GET_FILE","id":5,"extra":{"k":1}}"#,
            r#"{"id":6,"operation":"GET_FILE","dir":"d","path":"x","offset":null}"#,
            // Another operation that names GET_FILE: the general path reads it.
            r#"{"id":7,"operation":"ACK_CHANGES","dir":"GET_FILE","sequence":3}"#,
        ] {
            assert_eq!(Request::parse(text).unwrap(), general(text), "{text}");
        }
        // What the direct path does not read gets the general path's error.
        let err = Request::parse(r#"{"id":8,"operation":"GET_FILE","dir":"d"}"#).unwrap_err();
        assert_eq!((err.id, err.code), (Some(8), ErrorCode::BadRequest));
        assert!(err.message.contains("path"), "{}", err.message);
        let err =
            Request::parse(r#"{"id":-1,"operation":"GET_FILE","dir":"d","path":"x"}"#).unwrap_err();
        assert_eq!(err.id, None);
        for offset in [None, Some(9)] {
            let request = Request {
                id: 3,
                op: Op::GetFile(GetFile {
                    dir: "d".into(),
                    path: "p".into(),
                    offset,
                }),
            };
            let written = request.to_json();
            let value: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert_eq!(value, serde_json::to_value(&request).unwrap(), "{written}");
            assert_eq!(Request::parse(&written).unwrap(), request);
        }
    }

    #[test]
    fn parses_each_operation() {
        let r =
            Request::parse(r#"{"id":1,"operation":"GET_CHANGES","dir":"code","since":5}"#).unwrap();
        assert_eq!(
            r,
            Request {
                id: 1,
                op: Op::GetChanges(GetChanges {
                    dir: "code".into(),
                    since: 5,
                    limit: None
                })
            }
        );
        let r = Request::parse(r#"{"id":2,"operation":"PING"}"#).unwrap();
        assert_eq!(r.op, Op::Ping {});
        let r = Request::parse(r#"{"operation":"GET_LAST_SEQUENCE","id":3}"#).unwrap();
        assert_eq!(r.op, Op::GetLastSequence { ignored: None });
        let r = Request::parse(r#"{"operation":"GET_LAST_SEQUENCE","id":4,"ignored":10}"#).unwrap();
        assert_eq!(r.op, Op::GetLastSequence { ignored: Some(10) });
    }

    #[test]
    fn round_trips_through_json() {
        let ops = vec![
            Op::Hello(Hello {
                protocol_version: 2,
                client_id: "c".into(),
                client_version: Some("0.1".into()),
                client_nonce: Some("ab".repeat(32)),
                dirs: Some(vec!["docs".into()]),
            }),
            Op::Flush {},
            Op::Auth(Auth {
                client_proof: Some("cd".repeat(32)),
                client_version: None,
                dirs: None,
            }),
            Op::Auth(Auth {
                client_proof: None,
                client_version: Some("0.1".into()),
                dirs: Some(vec!["docs".into(), "code".into()]),
            }),
            Op::Ping {},
            Op::GetLastSequence { ignored: None },
            Op::GetLastSequence { ignored: Some(0) },
            Op::GetChanges(GetChanges {
                dir: "d".into(),
                since: 9,
                limit: Some(10),
            }),
            Op::GetFile(GetFile {
                dir: "d".into(),
                path: "a/b".into(),
                offset: Some(7),
            }),
            Op::AckChanges(AckChanges {
                dir: "d".into(),
                sequence: 4,
            }),
            Op::GetDelta(GetDelta {
                dir: "d".into(),
                path: "a/b".into(),
                signature: vec![0, 1, 2, 250, 255],
                windows: None,
                plan: None,
            }),
            Op::GetDelta(GetDelta {
                dir: "d".into(),
                path: "e".into(),
                signature: Vec::new(),
                windows: Some(WindowHashes {
                    window: 8 << 20,
                    base_size: 20 << 20,
                    hashes: (0..48).collect(),
                }),
                plan: None,
            }),
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let name = op.name();
            let request = Request { id: i as u64, op };
            let json = request.to_json();
            assert!(
                json.contains(&format!("\"operation\":\"{name}\"")),
                "{json}"
            );
            assert_eq!(Request::parse(&json), Ok(request));
        }
    }

    #[test]
    fn get_windows_carries_a_key_of_exactly_its_length_and_get_delta_a_plan() {
        let key = "A".repeat(256);
        let r = Request::parse(&format!(
            r#"{{"id":3,"operation":"GET_WINDOWS","dir":"d","path":"p","window":8388608,"key":"{key}"}}"#
        ))
        .expect("parses");
        let Op::GetWindows(get) = &r.op else {
            panic!("parsed as {:?}", r.op)
        };
        assert_eq!((get.window, get.key.len()), (8 << 20, GetWindows::KEY_LEN));
        assert_eq!(Request::parse(&r.to_json()), Ok(r.clone()));
        for (key, says) in [
            (
                "A".repeat(252),
                "key is 252 base64 characters; it must be 256 (192 bytes)",
            ),
            (format!("{}!", "A".repeat(255)), "key is not valid base64"),
        ] {
            let e = Request::parse(&format!(
                r#"{{"id":4,"operation":"GET_WINDOWS","dir":"d","path":"p","window":1,"key":"{key}"}}"#
            ))
            .unwrap_err();
            assert_eq!((e.id, e.code), (Some(4), ErrorCode::BadRequest));
            assert!(e.message.contains(says), "{}", e.message);
        }

        let r = Request::parse(
            r#"{"id":5,"operation":"GET_DELTA","dir":"d","path":"p","signature":"","plan":{"sha256":"ab","window":8388608,"base_size":9,"same":[0,2],"covers":[1]}}"#,
        )
        .expect("parses");
        let Op::GetDelta(get) = &r.op else {
            panic!("parsed as {:?}", r.op)
        };
        let plan = get.plan.as_ref().expect("a plan");
        assert_eq!((&plan.same[..], &plan.covers[..]), (&[0, 2][..], &[1][..]));
        assert_eq!(Request::parse(&r.to_json()), Ok(r.clone()));
        let e = Request::parse(
            r#"{"id":6,"operation":"GET_DELTA","dir":"d","path":"p","signature":"","plan":{"sha256":"ab","window":1,"base_size":9,"same":[-1],"covers":[]}}"#,
        )
        .unwrap_err();
        assert_eq!((e.id, e.code), (Some(6), ErrorCode::BadRequest));
    }

    #[test]
    fn get_delta_carries_its_signature_as_base64() {
        let r = Request::parse(
            r#"{"id":4,"operation":"GET_DELTA","dir":"d","path":"p","signature":"cnMBNgAAEAA="}"#,
        )
        .unwrap();
        assert!(r.to_json().contains(r#""signature":"cnMBNgAAEAA=""#));
        let Op::GetDelta(get) = r.op else {
            panic!("parsed as {:?}", r.op)
        };
        assert_eq!(get.signature, b"rs\x016\0\0\x10\0");

        let e = Request::parse(
            r#"{"id":5,"operation":"GET_DELTA","dir":"d","path":"p","signature":"not base64!"}"#,
        )
        .unwrap_err();
        assert_eq!((e.id, e.code), (Some(5), ErrorCode::BadRequest));
        assert!(e.message.contains("not valid base64"), "{}", e.message);

        let at_limit = "A".repeat(crate::MAX_SIGNATURE.div_ceil(3) * 4);
        let request = format!(
            r#"{{"id":6,"operation":"GET_DELTA","dir":"d","path":"p","signature":"{at_limit}"}}"#
        );
        assert!(
            request.len() < crate::MAX_TEXT_MESSAGE,
            "the limit leaves room for the rest"
        );
        Request::parse(&request).expect("a signature at the limit parses");
        let over = format!(
            r#"{{"id":6,"operation":"GET_DELTA","dir":"d","path":"p","signature":"{at_limit}AAAA"}}"#
        );
        let e = Request::parse(&over).unwrap_err();
        assert_eq!((e.id, e.code), (Some(6), ErrorCode::BadRequest));
        assert!(e.message.contains("over the limit"), "{}", e.message);
    }

    #[test]
    fn get_delta_s_window_hashes_are_optional_base64_in_whole_hashes() {
        let r = Request::parse(
            r#"{"id":4,"operation":"GET_DELTA","dir":"d","path":"p","signature":"","windows":{"window":1048576,"base_size":5,"hashes":"AAECAwQFBgcICQoLDA0ODw=="}}"#,
        )
        .expect("parses");
        let Op::GetDelta(get) = r.op else {
            panic!("parsed as {:?}", r.op)
        };
        let windows = get.windows.expect("windows");
        assert_eq!((windows.window, windows.base_size), (1 << 20, 5));
        // A daemon from before `windows` read such a request as one with a field it does not
        // know: ignored, like this one.
        let r = Request::parse(
            r#"{"id":4,"operation":"GET_DELTA","dir":"d","path":"p","signature":"","windows_v2":{"window":"x"}}"#,
        )
        .expect("an unknown field is ignored");
        assert!(matches!(r.op, Op::GetDelta(GetDelta { windows: None, .. })));
        assert_eq!(windows.hashes, (0..16).collect::<Vec<u8>>());
        assert_eq!(windows.count(), 1);

        let refused = |windows: &str, says: &str| {
            let e = Request::parse(&format!(
                r#"{{"id":5,"operation":"GET_DELTA","dir":"d","path":"p","signature":"","windows":{windows}}}"#
            ))
            .expect_err(windows);
            assert_eq!(
                (e.id, e.code),
                (Some(5), ErrorCode::BadRequest),
                "{windows}"
            );
            assert!(e.message.contains(says), "{windows}: {}", e.message);
        };
        refused(
            r#"{"window":1,"base_size":5,"hashes":"!!"}"#,
            "not valid base64",
        );
        refused(
            r#"{"window":1,"base_size":5,"hashes":"AAEC"}"#,
            "whole number of 16-byte",
        );
        refused(r#"{"window":1,"base_size":5}"#, "hashes");
        refused(r#"{"window":-1,"base_size":5,"hashes":""}"#, "-1");
        refused(r#""hashes""#, "invalid type");
        let max = (crate::MAX_WINDOW_HASHES * WindowHashes::HASH_LEN).div_ceil(3) * 4;
        let at_limit = "A".repeat(crate::MAX_WINDOW_HASHES * WindowHashes::HASH_LEN / 3 * 4);
        assert!(at_limit.len() <= max);
        let parsed = Request::parse(&format!(
            r#"{{"id":6,"operation":"GET_DELTA","dir":"d","path":"p","signature":"","windows":{{"window":1,"base_size":1,"hashes":"{at_limit}AAAA"}}}}"#
        ));
        // 32,769 hashes of 16 bytes, less 2 bytes: not whole, or over the limit.
        assert!(parsed.is_err());
        refused(
            &format!(
                r#"{{"window":1,"base_size":1,"hashes":"{}"}}"#,
                "A".repeat(max + 4)
            ),
            "over the limit",
        );
        // With the largest signature, the largest window list still fits a text message.
        let request = Request {
            id: u64::MAX,
            op: Op::GetDelta(GetDelta {
                dir: "d".repeat(255),
                path: "p".repeat(4096),
                signature: vec![0; crate::MAX_SIGNATURE],
                windows: Some(WindowHashes {
                    window: crate::MAX_HASH_WINDOW,
                    base_size: u64::MAX,
                    hashes: vec![0; crate::MAX_WINDOW_HASHES * WindowHashes::HASH_LEN],
                }),
                plan: None,
            }),
        };
        let json = request.to_json();
        assert!(json.len() < crate::MAX_TEXT_MESSAGE, "{} bytes", json.len());
        assert_eq!(Request::parse(&json), Ok(request));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let e = Request::parse("{not json").unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::BadRequest));
        assert!(e.message.contains("not valid JSON"), "{}", e.message);

        let e = Request::parse("[1,2]").unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);

        let e = Request::parse(r#"{"id":7,"operation":"DELETE_EVERYTHING"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(7), ErrorCode::UnknownOperation));
        assert!(e.message.contains("DELETE_EVERYTHING"), "{}", e.message);

        let e = Request::parse(r#"{"id":8,"operation":"GET_CHANGES","dir":"d","since":"x"}"#)
            .unwrap_err();
        assert_eq!((e.id, e.code), (Some(8), ErrorCode::BadRequest));
        assert!(e.message.contains("GET_CHANGES"), "{}", e.message);

        let e = Request::parse(r#"{"id":-1,"operation":"PING"}"#).unwrap_err();
        assert!(e.message.contains("\"id\""), "{}", e.message);

        let e = Request::parse(r#"{"operation":"PING"}"#).unwrap_err();
        assert!(e.message.contains("no \"id\""), "{}", e.message);

        let e = Request::parse(r#"{"id":1,"operation":5}"#).unwrap_err();
        assert!(e.message.contains("must be a string"), "{}", e.message);
    }
}
