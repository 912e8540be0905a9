//! Arbitrary bytes as a text frame (request or server message) and as a binary frame.
//! DESIGN invariant 7: bad input gets an error, never a panic; a parsed request survives
//! `to_json` and parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zync_proto::{decode_chunk, Request, ServerMessage, CHUNK_HEADER, MAX_CHUNK};

fuzz_target!(|data: &[u8]| {
    // Binary frames: any bytes must decode or be refused, consistently with the limits.
    match decode_chunk(data) {
        Ok((id, payload)) => {
            assert!(data.len() >= CHUNK_HEADER);
            assert!(payload.len() <= MAX_CHUNK);
            assert_eq!(payload, &data[CHUNK_HEADER..]);
            assert_eq!(id.to_be_bytes(), data[..CHUNK_HEADER]);
        }
        Err(_) => assert!(data.len() < CHUNK_HEADER || data.len() - CHUNK_HEADER > MAX_CHUNK),
    }

    // Text frames: WebSocket text frames are valid UTF-8; also try the lossy form so inputs
    // that are almost UTF-8 still exercise the parser.
    let lossy;
    let text = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            lossy = String::from_utf8_lossy(data);
            &lossy
        }
    };

    if let Ok(request) = Request::parse(text) {
        let json = request.to_json();
        assert!(!json.is_empty(), "to_json gave nothing for {request:?}");
        match Request::parse(&json) {
            Ok(again) => assert_eq!(again, request, "round trip changed the request: {json}"),
            Err(e) => panic!("re-parsing {json} (from {request:?}) failed: {e}"),
        }
    }

    if let Ok(message) = ServerMessage::parse(text) {
        let json = message.to_json();
        assert!(!json.is_empty(), "to_json gave nothing for {message:?}");
        match ServerMessage::parse(&json) {
            Ok(again) => assert_eq!(again, message, "round trip changed the message: {json}"),
            Err(e) => panic!("re-parsing {json} (from {message:?}) failed: {e}"),
        }
    }
});
