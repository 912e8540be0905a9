//! GET_FILES: the whole content of many small files of one directory, each of the version the
//! client names, in one reply and one binary frame (docs/PROTOCOL.md, GET_FILES). One trip off
//! the reactor looks up, checks and reads them all; a file that is not what the client asked
//! for, or no longer what the index says, is refused alone (`stale`, `not_found`, ...), as
//! GET_FILE would refuse it, and the others are sent.

use std::path::Path;

use tokio_tungstenite::tungstenite::Message;
use zync_db::Index;
use zync_fs::Parents;
use zync_proto::{ErrorCode, FilesReply, GetFiles, RefusedFile, Reply, WantedFile};

use crate::cmd::get_file::read_at_into;
use crate::context::{Context, KeptDirs, Located};
use crate::indexed_file::{self, IndexedFile};
use crate::link::Link;
use crate::refusal::Refusal;

/// Answers a GET_FILES: the reply with each file's size (or why it was refused), then one
/// binary frame with the contents of those sent, one after another. Returns false when the
/// connection failed.
pub(crate) async fn apply(cx: &mut Context, link: &mut Link, id: u64, get: GetFiles) -> bool {
    // At most MAX_GET_FILES files: more fail the request's parse (`bad_request`).
    let GetFiles { dir, files } = get;
    // The directory is checked once: an unknown one refuses the request, not each file.
    if let Err(refusal) = cx.served(&dir) {
        return link.answer(id, Err(refusal)).await;
    }
    let mut kept = KeptDirs::default();
    let wanted: Vec<(Result<Located, Refusal>, String)> = files
        .into_iter()
        .map(|WantedFile { path, sha256 }| {
            let located = cx.locate_in_batch(dir.clone(), &path, None, &mut kept);
            (located, sha256)
        })
        .collect();
    let db = match cx.index().await {
        Ok(db) => db,
        Err(refusal) => return link.answer(id, Err(refusal)).await,
    };
    let read = tokio::task::spawn_blocking(move || {
        let index = db
            .lock()
            .map_err(|_| Refusal::new(ErrorCode::Internal, "index lock poisoned"))?;
        // One read of the index and one walk to each directory for the whole request.
        let _snapshot = index.read_snapshot()?;
        Ok::<_, Refusal>(read_files(&index, id, wanted))
    })
    .await
    .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
    .and_then(|read| read);
    let (sizes, refused, frame) = match read {
        Ok(read) => read,
        Err(refusal) => return link.answer(id, Err(refusal)).await,
    };
    let reply = Reply::GetFiles(FilesReply {
        dir,
        sizes,
        refused,
    });
    link.feed(&zync_proto::ServerMessage::Ok(zync_proto::OkResponse {
        id,
        reply,
    }))
    .await
        && link.feed_frame(Message::binary(frame)).await
        && link.flush().await
}

/// Looks up, checks and reads each wanted file (blocking): the size of each (0 when refused),
/// the refusals, and the frame of request `id` holding the contents sent, at most
/// [`zync_proto::MAX_CHUNK`] bytes (a file that would take it past that is refused
/// `too_large`: ask for it with GET_FILE).
fn read_files(
    index: &Index,
    id: u64,
    wanted: Vec<(Result<Located, Refusal>, String)>,
) -> (Vec<u64>, Vec<RefusedFile>, Vec<u8>) {
    let mut parents = Parents::default();
    let mut sizes = Vec::with_capacity(wanted.len());
    let mut refused = Vec::new();
    let mut frame = Vec::with_capacity(zync_proto::CHUNK_HEADER + 64 * 1024);
    frame.extend_from_slice(&id.to_be_bytes());
    for (at, (located, sha256)) in wanted.into_iter().enumerate() {
        let sent = located.and_then(|(root, dir, rel, _)| {
            read_one(index, &mut parents, &root, &dir, rel, &sha256, &mut frame)
        });
        match sent {
            Ok(size) => sizes.push(size),
            Err(refusal) => {
                sizes.push(0);
                refused.push(RefusedFile {
                    // At most MAX_GET_FILES files.
                    at: u32::try_from(at).unwrap_or(u32::MAX),
                    code: refusal.code(),
                    message: cut(refusal.message()),
                });
            }
        }
    }
    (sizes, refused, frame)
}

/// The most bytes of a refusal's message a GET_FILES reply carries: the client knows which
/// path each refusal is about, and a reply refusing its 256 files with a message naming each
/// path (up to 4 KiB, six bytes per byte once escaped) would not fit in one message.
const MAX_REFUSAL: usize = 256;

/// `message` cut to [`MAX_REFUSAL`] bytes, on a character boundary.
fn cut(message: &str) -> String {
    if message.len() <= MAX_REFUSAL {
        return message.to_string();
    }
    let mut end = MAX_REFUSAL;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Opens `rel` as GET_FILE does ([`indexed_file::open`]), checks that its indexed content is
/// `sha256` and that it fits in what is left of the frame, and appends its content to `frame`.
/// Its size, or why it is refused (`frame` then holds what it held before).
fn read_one(
    index: &Index,
    parents: &mut Parents,
    root: &Path,
    dir: &str,
    rel: zync_fs::RelPath,
    sha256: &str,
    frame: &mut Vec<u8>,
) -> Result<u64, Refusal> {
    let IndexedFile {
        rel,
        file,
        size,
        sha256: indexed,
        ..
    } = indexed_file::open(index, parents, root, dir, rel)?;
    if indexed != sha256 {
        return Err(IndexedFile::stale_refusal(
            &rel,
            "is now another version than the one asked for",
        ));
    }
    let room = zync_proto::MAX_CHUNK - (frame.len() - zync_proto::CHUNK_HEADER);
    let len = match usize::try_from(size) {
        Ok(len) if len <= room => len,
        _ => {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "{rel} ({size} bytes) does not fit in the {room} bytes left of this GET_FILES \
                     reply (at most {} in all); ask for it with GET_FILE",
                    zync_proto::MAX_CHUNK
                ),
            ))
        }
    };
    let before = frame.len();
    read_at_into(&file, frame, len, 0).map_err(|e| {
        frame.truncate(before);
        IndexedFile::stale_refusal(&rel, &format!("cannot be read ({e})"))
    })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indexed_file::tests::index_file;
    use zync_fs::RelPath;

    /// What `index_file` records as every file's sha256.
    fn indexed() -> String {
        "0".repeat(64)
    }

    /// `rel` of dir `d` under `root`, located as `Context::locate_in_batch` would.
    fn at(root: &Path, rel: &str) -> Result<Located, Refusal> {
        Ok((
            root.to_path_buf(),
            "d".to_string(),
            RelPath::parse(rel).expect("path"),
            0,
        ))
    }

    /// The refusals as (place, code).
    fn codes(refused: &[RefusedFile]) -> Vec<(u32, ErrorCode)> {
        refused.iter().map(|r| (r.at, r.code)).collect()
    }

    #[test]
    fn each_file_is_sent_or_refused_alone_and_the_frame_holds_exactly_what_is_sent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut index = Index::open_in_memory().expect("index");
        for (name, content) in [
            ("a.txt", "alpha"),
            ("other.txt", "another version"),
            ("b.txt", "bravo!!"),
            ("changed.txt", "before"),
            ("empty.txt", ""),
        ] {
            std::fs::write(root.join(name), content).expect("write");
            index_file(&mut index, root, name);
        }
        // Changed on disk since it was indexed: stale, as GET_FILE would say.
        std::fs::write(root.join("changed.txt"), "after, longer").expect("write");
        let wanted = vec![
            (at(root, "a.txt"), indexed()),
            // The index has another version than the one asked for.
            (at(root, "other.txt"), "1".repeat(64)),
            (at(root, "b.txt"), indexed()),
            (at(root, "changed.txt"), indexed()),
            (at(root, "missing.txt"), indexed()),
            (
                Err(Refusal::new(ErrorCode::InvalidPath, "a bad path")),
                indexed(),
            ),
            (at(root, "empty.txt"), indexed()),
        ];
        let (sizes, refused, frame) = read_files(&index, 9, wanted);
        assert_eq!(sizes, [5, 0, 7, 0, 0, 0, 0]);
        assert_eq!(
            codes(&refused),
            [
                (1, ErrorCode::Stale),
                (3, ErrorCode::Stale),
                (4, ErrorCode::NotFound),
                (5, ErrorCode::InvalidPath),
            ]
        );
        assert!(
            refused[0].message.contains("other.txt"),
            "{}",
            refused[0].message
        );
        let mut expected = 9u64.to_be_bytes().to_vec();
        expected.extend_from_slice(b"alphabravo!!");
        assert_eq!(frame, expected);
    }

    /// A reply refusing every one of its files keeps within one message whatever the paths:
    /// each refusal's message is cut.
    #[test]
    fn refusals_of_long_paths_are_cut_so_the_reply_stays_one_message() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let index = Index::open_in_memory().expect("index");
        // Control characters: six bytes each once escaped in JSON.
        let long: Vec<String> = (0..19).map(|_| "\u{1}".repeat(200)).collect();
        let rel = format!("{}/missing", long.join("/"));
        assert!(rel.len() > 3000, "{}", rel.len());
        let wanted = (0..zync_proto::MAX_GET_FILES)
            .map(|_| (at(tmp.path(), &rel), indexed()))
            .collect();
        let (sizes, refused, _) = read_files(&index, 1, wanted);
        let reply = zync_proto::ServerMessage::Ok(zync_proto::OkResponse {
            id: 1,
            reply: Reply::GetFiles(FilesReply {
                dir: "d".into(),
                sizes,
                refused,
            }),
        })
        .to_json();
        assert!(
            reply.len() < zync_proto::MAX_TEXT_MESSAGE / 4,
            "a reply of {} bytes",
            reply.len()
        );
        assert!(
            reply.matches("\"not_found\"").count() == zync_proto::MAX_GET_FILES,
            "{}",
            &reply[..400]
        );
    }

    #[test]
    fn a_file_that_would_take_the_frame_past_one_chunk_is_refused_too_large_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut index = Index::open_in_memory().expect("index");
        let big = 700 << 10;
        for (name, len) in [("one", big), ("two", big), ("small", 10), ("fits", big / 3)] {
            std::fs::write(root.join(name), vec![b'x'; len]).expect("write");
            index_file(&mut index, root, name);
        }
        let wanted = ["one", "two", "small", "fits"]
            .iter()
            .map(|name| (at(root, name), indexed()))
            .collect();
        let (sizes, refused, frame) = read_files(&index, 1, wanted);
        assert_eq!(sizes, [big as u64, 0, 10, (big / 3) as u64]);
        assert_eq!(codes(&refused), [(1, ErrorCode::TooLarge)]);
        assert!(
            refused[0].message.contains("GET_FILE"),
            "{}",
            refused[0].message
        );
        assert_eq!(frame.len(), zync_proto::CHUNK_HEADER + big + 10 + big / 3);
        assert!(frame.len() <= zync_proto::MAX_BINARY_FRAME);
    }
}
