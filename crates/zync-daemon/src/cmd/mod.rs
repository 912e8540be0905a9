//! The requests a client may send once its handshake is done, one file per operation, and the
//! one place they are told apart: [`Operation::from_frame`] parses a text frame (through
//! `zync_proto::Request::parse`, which keeps its fast paths) and [`Operation::apply`] runs it.
//! Bad input becomes an error response for that request and the connection goes on
//! (invariant 7 (docs/ARCHITECTURE.md)).

mod ack;
mod changes;
mod delta;
mod flush;
mod get_file;
mod get_files;
mod ping;
mod status;
mod upstream_file;
mod upstream_finalize;
mod upstream_prepare;
mod windows;

use zync_proto::{
    AckChanges, ErrorCode, FinalizeUpstream, GetChanges, GetDelta, GetFile, GetFiles, GetWindows,
    Op, PrepareUpstream, Request, UpstreamFile,
};

use crate::context::Context;
use crate::link::Link;
use crate::refusal::Refusal;

/// A request after the handshake, parsed.
#[derive(Debug)]
pub(crate) enum Operation {
    /// PING.
    Ping,
    /// GET_LAST_SEQUENCE (with how many ignored paths to list, when asked).
    Status(Option<u32>),
    /// FLUSH.
    Flush,
    /// GET_CHANGES.
    Changes(GetChanges),
    /// ACK_CHANGES.
    Ack(AckChanges),
    /// GET_FILE (pipelined ones are answered in batches).
    GetFile(GetFile),
    /// GET_FILES.
    GetFiles(GetFiles),
    /// GET_DELTA.
    Delta(GetDelta),
    /// GET_WINDOWS.
    Windows(GetWindows),
    /// PREPARE_UPSTREAM.
    PrepareUpstream(PrepareUpstream),
    /// UPSTREAM_FILE (a write's content frames follow it).
    UpstreamFile(UpstreamFile),
    /// FINALIZE_UPSTREAM.
    FinalizeUpstream(FinalizeUpstream),
}

/// A frame that is no operation: the request id when one was readable, and why.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// The id the error response answers.
    pub(crate) id: Option<u64>,
    /// What was wrong.
    pub(crate) refusal: Refusal,
}

impl Operation {
    /// Parses a text frame into its request id and operation. Malformed JSON, an unknown
    /// operation, a missing or bad field, and a handshake request on a connection whose
    /// handshake is done are rejected.
    pub(crate) fn from_frame(text: &str) -> Result<(u64, Operation), Rejected> {
        let request = Request::parse(text).map_err(|e| Rejected {
            id: e.id,
            refusal: e.into(),
        })?;
        Operation::from_request(request)
    }

    /// The operation of a parsed request.
    pub(crate) fn from_request(Request { id, op }: Request) -> Result<(u64, Operation), Rejected> {
        let operation = match op {
            Op::Hello(_) | Op::Auth(_) => {
                return Err(Rejected {
                    id: Some(id),
                    refusal: Refusal::new(
                        ErrorCode::BadRequest,
                        "the handshake is done: HELLO and AUTH are only accepted as a connection's first requests",
                    ),
                })
            }
            Op::Ping {} => Operation::Ping,
            Op::GetLastSequence { ignored } => Operation::Status(ignored),
            Op::Flush {} => Operation::Flush,
            Op::GetChanges(get) => Operation::Changes(get),
            Op::AckChanges(ack) => Operation::Ack(ack),
            Op::GetFile(get) => Operation::GetFile(get),
            Op::GetFiles(get) => Operation::GetFiles(get),
            Op::GetDelta(get) => Operation::Delta(get),
            Op::GetWindows(get) => Operation::Windows(get),
            Op::PrepareUpstream(prepare) => Operation::PrepareUpstream(prepare),
            Op::UpstreamFile(file) => Operation::UpstreamFile(file),
            Op::FinalizeUpstream(finalize) => Operation::FinalizeUpstream(finalize),
        };
        Ok((id, operation))
    }

    /// Runs request `id` and answers it: a reply, an error response, or (GET_FILE, GET_FILES,
    /// GET_DELTA)
    /// a header and content frames. Returns false when the connection failed.
    pub(crate) async fn apply(self, id: u64, cx: &mut Context, link: &mut Link) -> bool {
        let answer = match self {
            Operation::Ping => Ok(ping::apply()),
            Operation::Status(ignored) => status::apply(cx, ignored).await,
            Operation::Flush => flush::apply(cx).await,
            Operation::Changes(get) => changes::apply(cx, get).await,
            Operation::Ack(ack) => ack::apply(cx, ack).await,
            Operation::GetFile(get) => return get_file::apply(cx, link, id, get).await,
            Operation::GetFiles(get) => return get_files::apply(cx, link, id, get).await,
            Operation::Delta(get) => return delta::apply(cx, link, id, get).await,
            Operation::Windows(get) => return windows::apply(cx, link, id, get).await,
            Operation::PrepareUpstream(prepare) => upstream_prepare::apply(cx, prepare).await,
            Operation::UpstreamFile(file) => upstream_file::apply(cx, link, id, file).await,
            Operation::FinalizeUpstream(finalize) => upstream_finalize::apply(cx, finalize).await,
        };
        let answered = link.answer(id, answer).await;
        if let Some(reason) = cx.hang_up.take() {
            let _ = link
                .close(
                    tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy,
                    &reason,
                )
                .await;
            return false;
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rejection as the client sees it: the id, the code and the message.
    type Seen = (Option<u64>, ErrorCode, String);

    /// The operation `text` parses into, with its id, or what was wrong with it.
    fn parse(text: &str) -> Result<(u64, Operation), Seen> {
        Operation::from_frame(text)
            .map_err(|r| (r.id, r.refusal.code(), r.refusal.message().to_string()))
    }

    /// Whether an operation is the one a frame should parse into.
    type Expected = fn(&Operation) -> bool;

    #[test]
    fn every_operation_parses_from_its_frame() {
        let cases: [(&str, Expected); 10] = [
            (r#"{"id":1,"operation":"PING"}"#, |o| {
                matches!(o, Operation::Ping)
            }),
            (r#"{"id":2,"operation":"GET_LAST_SEQUENCE"}"#, |o| {
                matches!(o, Operation::Status(None))
            }),
            (r#"{"id":3,"operation":"FLUSH"}"#, |o| {
                matches!(o, Operation::Flush)
            }),
            (
                r#"{"id":4,"operation":"GET_CHANGES","dir":"docs","since":5,"limit":10}"#,
                |o| matches!(o, Operation::Changes(g) if g.dir == "docs" && g.since == 5 && g.limit == Some(10)),
            ),
            (
                r#"{"id":5,"operation":"ACK_CHANGES","dir":"docs","sequence":7}"#,
                |o| matches!(o, Operation::Ack(a) if a.dir == "docs" && a.sequence == 7),
            ),
            (
                r#"{"id":6,"operation":"GET_FILE","dir":"docs","path":"a/b","offset":3}"#,
                |o| matches!(o, Operation::GetFile(g) if g.path == "a/b" && g.offset == Some(3)),
            ),
            (
                r#"{"id":7,"operation":"GET_DELTA","dir":"docs","path":"p","signature":"cnMBNgAAEAA="}"#,
                |o| matches!(o, Operation::Delta(g) if g.path == "p" && !g.signature.is_empty()),
            ),
            (
                r#"{"id":8,"operation":"PREPARE_UPSTREAM","description":"laptop"}"#,
                |o| matches!(o, Operation::PrepareUpstream(p) if p.description.as_deref() == Some("laptop")),
            ),
            (
                r#"{"id":9,"operation":"UPSTREAM_FILE","session_id":"s","dir":"docs","path":"x","action":"delete"}"#,
                |o| matches!(o, Operation::UpstreamFile(f) if f.session_id == "s" && f.path == "x"),
            ),
            (
                r#"{"id":10,"operation":"FINALIZE_UPSTREAM","session_id":"s"}"#,
                |o| matches!(o, Operation::FinalizeUpstream(f) if f.session_id == "s"),
            ),
        ];
        for (expected_id, (text, expected)) in (1..).zip(cases) {
            match parse(text) {
                Ok((id, operation)) => {
                    assert_eq!(id, expected_id, "{text}");
                    assert!(expected(&operation), "{text} parsed as {operation:?}");
                }
                Err(e) => panic!("{text} was rejected: {e:?}"),
            }
        }
    }

    #[test]
    fn bad_frames_are_rejected_with_their_id_and_a_reason() {
        let cases = [
            (
                r#"{"id":7,"operation":"DELETE_EVERYTHING"}"#,
                Some(7),
                ErrorCode::UnknownOperation,
                "DELETE_EVERYTHING",
            ),
            (
                r#"{"id":8,"operation":"GET_CHANGES","dir":"d","since":"x"}"#,
                Some(8),
                ErrorCode::BadRequest,
                "GET_CHANGES",
            ),
            (
                r#"{"id":9,"operation":"GET_FILE","dir":"d"}"#,
                Some(9),
                ErrorCode::BadRequest,
                "path",
            ),
            (
                r#"{"id":10,"operation":"ACK_CHANGES","dir":"d","sequence":-1}"#,
                Some(10),
                ErrorCode::BadRequest,
                "ACK_CHANGES",
            ),
            ("not json", None, ErrorCode::BadRequest, "not valid JSON"),
            (
                r#"{"operation":"PING"}"#,
                None,
                ErrorCode::BadRequest,
                "\"id\"",
            ),
            (
                r#"{"id":11,"operation":"HELLO","protocol_version":1,"client_id":"c"}"#,
                Some(11),
                ErrorCode::BadRequest,
                "handshake is done",
            ),
            (
                r#"{"id":12,"operation":"AUTH","client_proof":"00"}"#,
                Some(12),
                ErrorCode::BadRequest,
                "handshake is done",
            ),
        ];
        for (text, id, code, says) in cases {
            match parse(text) {
                Ok((_, operation)) => panic!("{text} was accepted as {operation:?}"),
                Err((got_id, got_code, message)) => {
                    assert_eq!((got_id, got_code), (id, code), "{text}: {message}");
                    assert!(message.contains(says), "{text}: {message:?} lacks {says:?}");
                }
            }
        }
    }
}
