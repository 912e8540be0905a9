//! Binary frames: file content, prefixed with the id of the request it belongs to (GET_FILE
//! downstream, UPSTREAM_FILE upstream), so a connection can carry pipelined requests without
//! ambiguity.

use crate::{CHUNK_HEADER, MAX_CHUNK};

/// A binary frame that cannot be a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Fewer bytes than the header.
    TooShort(usize),
    /// More payload than [`MAX_CHUNK`].
    TooLarge(usize),
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::TooShort(n) => write!(
                f,
                "binary frame of {n} bytes is shorter than its {CHUNK_HEADER}-byte request id header"
            ),
            ChunkError::TooLarge(n) => {
                write!(f, "binary frame payload of {n} bytes exceeds the {MAX_CHUNK}-byte limit")
            }
        }
    }
}

impl std::error::Error for ChunkError {}

/// Builds one binary frame: the request id (big-endian) followed by `data`.
///
/// # Panics
/// When `data` is longer than [`MAX_CHUNK`]: callers cut content into chunks first.
pub fn encode_chunk(id: u64, data: &[u8]) -> Vec<u8> {
    assert!(
        data.len() <= MAX_CHUNK,
        "chunk of {} bytes over the limit",
        data.len()
    );
    let mut frame = Vec::with_capacity(CHUNK_HEADER + data.len());
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// Splits a binary frame into its request id and payload.
///
/// # Errors
/// When the frame is shorter than the header or its payload is over [`MAX_CHUNK`].
pub fn decode_chunk(frame: &[u8]) -> Result<(u64, &[u8]), ChunkError> {
    if frame.len() < CHUNK_HEADER {
        return Err(ChunkError::TooShort(frame.len()));
    }
    let (head, data) = frame.split_at(CHUNK_HEADER);
    if data.len() > MAX_CHUNK {
        return Err(ChunkError::TooLarge(data.len()));
    }
    let mut id = [0u8; CHUNK_HEADER];
    id.copy_from_slice(head);
    Ok((u64::from_be_bytes(id), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frame = encode_chunk(0x0102_0304_0506_0708, b"hello");
        assert_eq!(&frame[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            decode_chunk(&frame),
            Ok((0x0102_0304_0506_0708, &b"hello"[..]))
        );
    }

    #[test]
    fn empty_payload_is_allowed() {
        assert_eq!(decode_chunk(&encode_chunk(7, b"")), Ok((7, &b""[..])));
    }

    #[test]
    fn short_and_oversized_frames_are_refused() {
        assert_eq!(decode_chunk(&[1, 2, 3]), Err(ChunkError::TooShort(3)));
        let big = vec![0u8; CHUNK_HEADER + MAX_CHUNK + 1];
        assert_eq!(decode_chunk(&big), Err(ChunkError::TooLarge(MAX_CHUNK + 1)));
    }
}
