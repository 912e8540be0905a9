//! Holds docs/PROTOCOL.md to the code: every JSON example in it must parse with the real
//! parsers, every operation must have a request example, and every error code must be
//! documented.

use std::collections::BTreeSet;

use zync_proto::{ErrorCode, Event, Op, Reply, Request, ServerMessage};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");

/// Every error code. The match in [`wire_name`] has no wildcard, so a new variant fails to
/// compile until it is listed here too.
const ALL_CODES: &[ErrorCode] = &[
    ErrorCode::BadRequest,
    ErrorCode::UnknownOperation,
    ErrorCode::HandshakeRequired,
    ErrorCode::Unauthorized,
    ErrorCode::Busy,
    ErrorCode::UnsupportedVersion,
    ErrorCode::InvalidPath,
    ErrorCode::UnknownDir,
    ErrorCode::NotFound,
    ErrorCode::NotAFile,
    ErrorCode::Stale,
    ErrorCode::TooLarge,
    ErrorCode::Internal,
    ErrorCode::UnknownSession,
    ErrorCode::ChecksumMismatch,
];

fn wire_name(code: ErrorCode) -> String {
    // Exhaustive on purpose (see ALL_CODES).
    match code {
        ErrorCode::BadRequest
        | ErrorCode::UnknownOperation
        | ErrorCode::HandshakeRequired
        | ErrorCode::Unauthorized
        | ErrorCode::Busy
        | ErrorCode::UnsupportedVersion
        | ErrorCode::InvalidPath
        | ErrorCode::UnknownDir
        | ErrorCode::NotFound
        | ErrorCode::NotAFile
        | ErrorCode::Stale
        | ErrorCode::TooLarge
        | ErrorCode::Internal
        | ErrorCode::UnknownSession
        | ErrorCode::ChecksumMismatch => {}
    }
    match serde_json::to_value(code).expect("an error code serialises") {
        serde_json::Value::String(name) => name,
        other => panic!("{code:?} serialises to {other}, not a string"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Request,
    Response,
}

struct Example {
    tag: Tag,
    /// 1-based line of the opening fence, for messages.
    line: usize,
    text: String,
}

fn read_doc() -> String {
    std::fs::read_to_string(DOC_PATH).unwrap_or_else(|e| panic!("cannot read {DOC_PATH}: {e}"))
}

/// Every fenced block tagged `json request` or `json response`. Any other fence that starts
/// with ```json is refused, so a mistyped tag cannot hide an example from this test.
fn examples(doc: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut open: Option<(Tag, usize, String)> = None;
    let mut in_other_fence = false;
    for (index, line) in doc.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if let Some((tag, start, mut text)) = open.take() {
            if trimmed == "```" {
                found.push(Example {
                    tag,
                    line: start,
                    text,
                });
            } else {
                text.push_str(line);
                text.push('\n');
                open = Some((tag, start, text));
            }
            continue;
        }
        if in_other_fence {
            if trimmed.starts_with("```") {
                in_other_fence = false;
            }
            continue;
        }
        if let Some(info) = trimmed.strip_prefix("```") {
            let words: Vec<&str> = info.split_whitespace().collect();
            match words.as_slice() {
                ["json", "request"] => open = Some((Tag::Request, number, String::new())),
                ["json", "response"] => open = Some((Tag::Response, number, String::new())),
                [first, ..] if first.starts_with("json") => panic!(
                    "{DOC_PATH}:{number}: a json block must be tagged `json request` or `json response`, not {info:?}"
                ),
                _ => in_other_fence = true,
            }
        }
    }
    if let Some((_, start, _)) = open {
        panic!("{DOC_PATH}:{start}: unterminated json block");
    }
    assert!(!in_other_fence, "{DOC_PATH}: unterminated code block");
    found
}

fn reply_name(reply: &Reply) -> &'static str {
    match reply {
        Reply::Hello(_) => "HELLO",
        Reply::Auth(_) => "AUTH",
        Reply::Ping {} => "PING",
        Reply::GetLastSequence(_) => "GET_LAST_SEQUENCE",
        Reply::Flush(_) => "FLUSH",
        Reply::GetChanges(_) => "GET_CHANGES",
        Reply::GetFile(_) => "GET_FILE",
        Reply::GetFiles(_) => "GET_FILES",
        Reply::GetDelta(_) => "GET_DELTA",
        Reply::GetWindows(_) => "GET_WINDOWS",
        Reply::AckChanges(_) => "ACK_CHANGES",
        Reply::PrepareUpstream(_) => "PREPARE_UPSTREAM",
        Reply::UpstreamFile(_) => "UPSTREAM_FILE",
        Reply::FinalizeUpstream(_) => "FINALIZE_UPSTREAM",
    }
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Changed { .. } => "CHANGED",
        Event::ScanComplete { .. } => "SCAN_COMPLETE",
    }
}

#[test]
fn every_example_parses_and_every_operation_and_code_is_documented() {
    let doc = read_doc();
    let examples = examples(&doc);
    assert!(
        !examples.is_empty(),
        "{DOC_PATH} has no ```json request / ```json response blocks"
    );

    let mut requested = BTreeSet::new();
    let mut answered = BTreeSet::new();
    let mut events = BTreeSet::new();
    let mut error_examples = 0;
    for example in &examples {
        let where_ = format!("{DOC_PATH}:{}", example.line);
        // One JSON object per block.
        let value: serde_json::Value = serde_json::from_str(&example.text)
            .unwrap_or_else(|e| panic!("{where_}: not one JSON value: {e}\n{}", example.text));
        assert!(
            value.is_object(),
            "{where_}: the example is not a JSON object"
        );
        match example.tag {
            Tag::Request => {
                let request = Request::parse(&example.text).unwrap_or_else(|e| {
                    panic!("{where_}: Request::parse refused it: {e}\n{}", example.text)
                });
                requested.insert(request.op.name());
            }
            Tag::Response => {
                let message = ServerMessage::parse(&example.text).unwrap_or_else(|e| {
                    panic!(
                        "{where_}: ServerMessage::parse refused it: {e}\n{}",
                        example.text
                    )
                });
                match &message {
                    ServerMessage::Ok(ok) => {
                        answered.insert(reply_name(&ok.reply));
                    }
                    ServerMessage::Error(_) => error_examples += 1,
                    ServerMessage::Event(event) => {
                        events.insert(event_name(event));
                    }
                }
            }
        }
    }

    for name in Op::NAMES {
        assert!(
            requested.contains(name),
            "{DOC_PATH} has no ```json request example for {name}"
        );
        assert!(
            answered.contains(name),
            "{DOC_PATH} has no ok ```json response example for {name}"
        );
    }
    for name in ["CHANGED", "SCAN_COMPLETE"] {
        assert!(
            events.contains(name),
            "{DOC_PATH} has no ```json response example of the {name} event"
        );
    }
    assert!(
        error_examples > 0,
        "{DOC_PATH} has no error response example"
    );

    for &code in ALL_CODES {
        let name = wire_name(code);
        assert!(
            doc.contains(&format!("`{name}`")),
            "{DOC_PATH} does not document the error code `{name}` ({code:?})"
        );
    }
}

#[test]
fn the_extractor_catches_a_broken_example() {
    let good = "text\n```json request\n{\"id\": 1, \"operation\": \"PING\"}\n```\n";
    let found = examples(good);
    assert_eq!(found.len(), 1);
    assert!(Request::parse(&found[0].text).is_ok());

    let broken = "```json request\n{\"id\": 1, \"operation\": \"PING\"\n```\n";
    let found = examples(broken);
    assert_eq!(found.len(), 1);
    assert!(Request::parse(&found[0].text).is_err());

    let wrong_fields =
        "```json response\n{\"status\": \"ok\", \"id\": 1, \"operation\": \"GET_FILE\"}\n```\n";
    let found = examples(wrong_fields);
    assert!(ServerMessage::parse(&found[0].text).is_err());
}

#[test]
fn unknown_fields_are_ignored_as_the_versioning_section_says() {
    let request =
        Request::parse(r#"{"id":1,"operation":"GET_FILE","dir":"d","path":"p","future":true}"#)
            .expect("an unknown request field is ignored");
    assert_eq!(request.op.name(), "GET_FILE");
    ServerMessage::parse(r#"{"status":"ok","id":1,"operation":"PING","future":[1,2]}"#)
        .expect("an unknown reply field is ignored");
    ServerMessage::parse(r#"{"status":"event","event":"CHANGED","last_sequence":3,"future":"x"}"#)
        .expect("an unknown event field is ignored");
}
