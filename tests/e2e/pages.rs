//! The client against a scripted daemon, for orderings a real daemon produces only by chance:
//! the client asks for the next page of changes while the current one downloads, so a path
//! can come again in a later page (E changed it once more) while its earlier version is still
//! on its way. The later change must be planned against the earlier one applied and recorded:
//! R ends with E's latest version and no conflict copy of zync's own write (invariant 4).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use zync_proto::{Nonce, Role};

use crate::common::*;

/// One scripted change: sequence, path and content (a file), or `None` for a directory.
struct Scripted {
    seq: u64,
    path: &'static str,
    content: Option<&'static [u8]>,
}

fn file(seq: u64, path: &'static str, content: &'static [u8]) -> Scripted {
    Scripted {
        seq,
        path,
        content: Some(content),
    }
}

fn dir(seq: u64, path: &'static str) -> Scripted {
    Scripted {
        seq,
        path,
        content: None,
    }
}

fn change(c: &Scripted) -> Value {
    let mtime_ns = 1_700_000_000_000_000_000i64 + c.seq as i64;
    match c.content {
        Some(content) => json!({
            "seq": c.seq, "path": c.path, "kind": "file", "deleted": false,
            "size": content.len(), "mtime_ns": mtime_ns, "mode": 420, "sha256": sha256(content),
        }),
        None => json!({
            "seq": c.seq, "path": c.path, "kind": "dir", "deleted": false,
            "size": 0, "mtime_ns": mtime_ns, "mode": 493,
        }),
    }
}

/// Serves one connection: HELLO, the pages in order (the first for `since` 0, each next one
/// for the last sequence of the one before), and each path's versions in the order the pages
/// name them, one GET_FILE after another. Returns the operations in the order received, and
/// before the first GET_FILE what the client had made in `r` by then (`R HAD a, b`).
/// The token the scripted daemon and its client share.
const TOKEN: &str = "scripted-token";

async fn scripted_daemon(
    listener: TcpListener,
    pages: Vec<Vec<Scripted>>,
    r: std::path::PathBuf,
) -> Vec<String> {
    let (stream, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    let mut versions: HashMap<&str, Vec<&[u8]>> = HashMap::new();
    for page in &pages {
        for c in page {
            if let Some(content) = c.content {
                versions.entry(c.path).or_default().push(content);
            }
        }
    }
    let mut seen = Vec::new();
    let mut nonces = None;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let request: Value = serde_json::from_str(&text).unwrap();
        let id = request["id"].as_u64().unwrap();
        let op = request["operation"].as_str().unwrap().to_string();
        let reply = match op.as_str() {
            // The daemon's side of the handshake, with the token the client was given.
            "HELLO" => {
                let client_id = request["client_id"].as_str().unwrap().to_string();
                let client = Nonce::from_hex(request["client_nonce"].as_str().unwrap()).unwrap();
                let daemon = Nonce::generate().unwrap();
                let proof = zync_proto::proof(TOKEN, Role::Daemon, &client, &daemon, &client_id);
                nonces = Some((client, daemon, client_id));
                json!({
                    "status": "ok", "id": id, "operation": "HELLO", "protocol_version": 2,
                    "daemon_nonce": daemon.to_hex(), "daemon_proof": proof,
                    "server_version": "scripted",
                })
            }
            "AUTH" => {
                let (client, daemon, client_id) = nonces.take().unwrap();
                let proof = request["client_proof"].as_str().unwrap();
                assert!(zync_proto::verify(
                    TOKEN,
                    Role::Client,
                    &client,
                    &daemon,
                    &client_id,
                    proof
                ));
                json!({
                    "status": "ok", "id": id, "operation": "AUTH", "protocol_version": 2,
                    "index_id": "scripted", "dirs": ["code"], "scanning": false,
                    "server_version": "scripted", "pipelining": {"requests": 64, "bytes": 1 << 20},
                })
            }
            "GET_CHANGES" => {
                let since = request["since"].as_u64().unwrap();
                seen.push(format!("GET_CHANGES {since}"));
                let at = pages
                    .iter()
                    .position(|p| p.first().is_some_and(|c| c.seq > since))
                    .unwrap_or(pages.len());
                let changes: Vec<Value> = pages
                    .get(at)
                    .map_or(Vec::new(), |p| p.iter().map(change).collect());
                json!({
                    "status": "ok", "id": id, "operation": "GET_CHANGES", "dir": "code",
                    "changes": changes, "last_sequence": pages.last().and_then(|p| p.last()).map_or(0, |c| c.seq),
                    "more": at + 1 < pages.len(),
                })
            }
            "GET_FILE" => {
                let path = request["path"].as_str().unwrap().to_string();
                if !seen.iter().any(|s| s.starts_with("GET_FILE ")) {
                    let mut had: Vec<String> = std::fs::read_dir(&r)
                        .unwrap()
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect();
                    had.sort();
                    seen.push(format!("R HAD {}", had.join(", ")));
                }
                seen.push(format!("GET_FILE {path}"));
                let queue = versions.get_mut(path.as_str()).unwrap();
                let content = if queue.len() > 1 {
                    queue.remove(0)
                } else {
                    queue[0]
                };
                let header = json!({
                    "status": "ok", "id": id, "operation": "GET_FILE", "dir": "code",
                    "path": path, "size": content.len(), "offset": 0,
                    "sha256": sha256(content), "mtime_ns": 0, "mode": 420,
                    "chunks": if content.is_empty() { 0 } else { 1 },
                });
                if ws.send(Message::text(header.to_string())).await.is_err() {
                    break;
                }
                let mut frame = id.to_be_bytes().to_vec();
                frame.extend_from_slice(content);
                if ws.send(Message::binary(frame)).await.is_err() {
                    break;
                }
                continue;
            }
            // Upstream: each file answered as soon as its request is read, before its content
            // (binary frames, skipped above) has all arrived, as a daemon that is quick to stage
            // a small file answers right after its last chunk.
            "PREPARE_UPSTREAM" => json!({
                "status": "ok", "id": id, "operation": "PREPARE_UPSTREAM",
                "session_id": "00000000-0000-4000-8000-000000000001",
            }),
            "UPSTREAM_FILE" => {
                seen.push(format!(
                    "UPSTREAM_FILE {}",
                    request["path"].as_str().unwrap()
                ));
                json!({
                    "status": "ok", "id": id, "operation": "UPSTREAM_FILE", "dir": "code",
                    "path": request["path"], "conflict": false,
                })
            }
            "FINALIZE_UPSTREAM" => json!({
                "status": "ok", "id": id, "operation": "FINALIZE_UPSTREAM",
                "session_id": request["session_id"], "files": 1, "bytes": 0, "conflicts": 0,
            }),
            "ACK_CHANGES" => json!({
                "status": "ok", "id": id, "operation": "ACK_CHANGES", "dir": "code",
                "sequence": request["sequence"],
            }),
            other => panic!("the scripted daemon got an unexpected {other}"),
        };
        // The client may close as soon as it is done, before an ACK's reply reaches it.
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            break;
        }
    }
    seen
}

/// Runs `zync-client --once` against a scripted daemon serving `pages` into `r`.
async fn once_against(
    pages: Vec<Vec<Scripted>>,
    state: &std::path::Path,
    r: &std::path::Path,
) -> (Output, Vec<String>) {
    run_against(pages, state, r, &["--once"]).await
}

/// Runs `zync-client` with `args` against a scripted daemon serving `pages`, `r` as `code`.
async fn run_against(
    pages: Vec<Vec<Scripted>>,
    state: &std::path::Path,
    r: &std::path::Path,
    args: &[&str],
) -> (Output, Vec<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let daemon = tokio::spawn(scripted_daemon(listener, pages, r.to_path_buf()));
    std::fs::create_dir_all(r).unwrap();
    let token = state.join("token");
    write(&token, TOKEN);
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = command("zync-client");
    cmd.arg("--server")
        .arg(format!("ws://{addr}"))
        .arg("--db")
        .arg(state.join("client.db"))
        .arg("--token-file")
        .arg(&token)
        .arg("--dirs")
        .arg(format!("code:{}", r.display()))
        .args(args)
        .args(["--log-level", "debug"]);
    let out = tokio::task::spawn_blocking(move || output_within_deadline(cmd))
        .await
        .unwrap();
    // A client that never connected leaves the daemon waiting: its error says why.
    let seen = match tokio::time::timeout(std::time::Duration::from_secs(5), daemon).await {
        Ok(seen) => seen.unwrap(),
        Err(_) => panic!("the client never finished a session:\n{}", stderr(&out)),
    };
    (out, seen)
}

/// The same in a directory the first page made: a path planned again after the first page
/// settled finds the client's own file there, not an empty new directory.
#[tokio::test]
async fn a_path_in_a_directory_made_by_an_earlier_page_is_replaced_without_a_conflict_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, r) = (tmp.path().join("state"), tmp.path().join("r"));
    std::fs::create_dir_all(&state).unwrap();
    let pages = vec![
        vec![
            dir(1, "new"),
            file(2, "new/p.txt", b"first version\n"),
            file(3, "new/q.txt", b"another file\n"),
        ],
        vec![file(4, "new/p.txt", b"second version\n")],
    ];
    let (out, _) = once_against(pages, &state, &r).await;
    assert!(
        out.status.success(),
        "zync-client --once failed:\n{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(r.join("new/p.txt")).unwrap(),
        b"second version\n"
    );
    assert_eq!(
        std::fs::read(r.join("new/q.txt")).unwrap(),
        b"another file\n"
    );
    let copies = conflict_copies(&r.join("new"));
    assert!(
        copies.is_empty(),
        "zync's own write was kept as a conflict copy: {copies:?}\n{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_path_in_a_later_page_waits_for_its_earlier_version_and_makes_no_conflict_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, r) = (tmp.path().join("state"), tmp.path().join("r"));
    std::fs::create_dir_all(&state).unwrap();
    let pages = vec![
        vec![
            file(1, "p.txt", b"first version\n"),
            file(2, "q.txt", b"another file\n"),
        ],
        // E changed p.txt again after the first page was made.
        vec![file(3, "p.txt", b"second version\n")],
    ];
    let (out, seen) = once_against(pages, &state, &r).await;
    assert!(
        out.status.success(),
        "zync-client --once failed:\n{}",
        stderr(&out)
    );
    // The second page was asked for before the first page's files: it came while p.txt's
    // first version was still on its way.
    let second = seen.iter().position(|s| s == "GET_CHANGES 2");
    let first_file = seen.iter().position(|s| s == "GET_FILE p.txt");
    assert!(
        matches!((second, first_file), (Some(a), Some(b)) if a < b),
        "the next page was not asked for ahead of the downloads: {seen:?}"
    );
    assert_eq!(std::fs::read(r.join("p.txt")).unwrap(), b"second version\n");
    assert_eq!(std::fs::read(r.join("q.txt")).unwrap(), b"another file\n");
    let copies = conflict_copies(&r);
    assert!(
        copies.is_empty(),
        "zync's own write was kept as a conflict copy: {copies:?}\n{}",
        stderr(&out)
    );
    assert_eq!(
        seen.iter().filter(|s| *s == "GET_FILE p.txt").count(),
        2,
        "each version of p.txt is downloaded once: {seen:?}"
    );
}

#[tokio::test]
async fn a_file_that_became_a_directory_is_replaced_not_kept_as_a_conflict_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, r) = (tmp.path().join("state"), tmp.path().join("r"));
    std::fs::create_dir_all(&state).unwrap();
    // On E: `a` was a file, then `rm a; mkdir a; touch a/x`, then a chmod of `a` gave the
    // directory a sequence after its file's: `a/x` comes in a page before `a` does, while the
    // file `a` of the first page is still on its way.
    let pages = vec![
        vec![file(1, "a", b"a file at first\n")],
        vec![file(5, "a/x", b"inside the directory\n")],
        vec![dir(6, "a")],
    ];
    let (out, seen) = once_against(pages, &state, &r).await;
    assert!(
        out.status.success(),
        "zync-client --once failed:\n{}",
        stderr(&out)
    );
    let second = seen.iter().position(|s| s == "GET_CHANGES 1");
    let first_file = seen.iter().position(|s| s == "GET_FILE a");
    assert!(
        matches!((second, first_file), (Some(a), Some(b)) if a < b),
        "the next page was not asked for ahead of the downloads: {seen:?}"
    );
    assert!(r.join("a").is_dir(), "a is not E's directory");
    assert_eq!(
        std::fs::read(r.join("a/x")).unwrap(),
        b"inside the directory\n"
    );
    let copies: Vec<String> = tree(&r, &[])
        .into_keys()
        .filter(|p| p.contains(".zync-conflict-"))
        .collect();
    assert!(
        copies.is_empty(),
        "zync's own write was kept as a conflict copy: {copies:?}\n{}",
        stderr(&out)
    );
}

/// The reply to an upload can arrive while the client still checks, between chunks, whether
/// the daemon refused the file: it is the answer, and must be kept, not skipped (a push then
/// waited for it until the stall timeout, seen in about one run in five of a 300-file push).
#[tokio::test]
async fn an_upload_answered_before_its_last_chunk_is_read_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, r) = (tmp.path().join("state"), tmp.path().join("r"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&r).unwrap();
    // Several chunks, so that the answer surely comes while the client is still sending.
    write(&r.join("big.bin"), vec![7u8; 6 * zync_proto::MAX_CHUNK]);
    let (out, seen) = run_against(
        Vec::new(),
        &state,
        &r,
        &["--update-upstream", "--stall-timeout", "5"],
    )
    .await;
    assert!(
        out.status.success(),
        "the push did not complete:\n{}",
        stderr(&out)
    );
    assert_eq!(seen, ["UPSTREAM_FILE big.bin"]);
}

/// A page of thousands of downloads is planned in parts: once 2,048 downloads wait to be
/// requested, the client downloads until there is room before it plans the rest of the page,
/// so its memory does not grow with the page (docs/ARCHITECTURE.md, "Memory"). Seen from outside: a directory named late in the page is
/// not made before the first files are asked for. And a page planned in parts still lands
/// whole.
#[tokio::test]
async fn a_big_page_is_planned_in_parts_and_lands_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, r) = (tmp.path().join("state"), tmp.path().join("r"));
    std::fs::create_dir_all(&state).unwrap();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut page = vec![dir(1, "a")];
    let mut seq = 1;
    for i in 0..2200 {
        seq += 1;
        page.push(file(
            seq,
            leak(format!("a/f{i:04}")),
            leak(format!("a {i}\n")).as_bytes(),
        ));
    }
    seq += 1;
    page.push(dir(seq, "z"));
    for i in 0..10 {
        seq += 1;
        page.push(file(
            seq,
            leak(format!("z/f{i}")),
            leak(format!("z {i}\n")).as_bytes(),
        ));
    }
    let (out, seen) = once_against(vec![page], &state, &r).await;
    assert!(
        out.status.success(),
        "zync-client --once failed:\n{}",
        stderr(&out)
    );
    let had = seen.iter().find(|s| s.starts_with("R HAD")).unwrap();
    assert_eq!(
        had, "R HAD a",
        "the directory planned after 2,200 downloads was made before the first of them was \
         asked for: the whole page was planned at once"
    );
    for i in [0, 1234, 2199] {
        let got = std::fs::read_to_string(r.join(format!("a/f{i:04}"))).unwrap();
        assert_eq!(got, format!("a {i}\n"));
    }
    for i in 0..10 {
        let got = std::fs::read_to_string(r.join(format!("z/f{i}"))).unwrap();
        assert_eq!(got, format!("z {i}\n"));
    }
    assert_eq!(std::fs::read_dir(r.join("a")).unwrap().count(), 2200);
    assert_eq!(
        seen.iter().filter(|s| s.starts_with("GET_FILE ")).count(),
        2210,
        "each file is downloaded once"
    );
}
