//! End-to-end: the wire protocol spoken directly to a running daemon with tokio-tungstenite,
//! as docs/PROTOCOL.md describes it: each operation, an error response for each kind of bad
//! input on a connection that keeps working, and nothing served from outside a root.

use std::path::PathBuf;

use crate::common::peer::{self, Frame, Peer};
use crate::common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

const MAX_CHUNK: usize = peer::MAX_CHUNK;

/// Connects and completes the handshake.
async fn hello(daemon: &Daemon) -> Peer {
    Peer::authenticated(daemon, "protocol-test").await.0
}

/// Connects on a socket with small kernel buffers and completes the handshake: what the
/// daemon does not read stays in the client's send call. Returns the welcome too.
async fn connect_small_buffers(daemon: &Daemon) -> (Peer, Value) {
    let request = daemon.url().into_client_request().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 << 10).unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let stream = socket
        .connect(format!("127.0.0.1:{}", daemon.port).parse().unwrap())
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("connect");
    let mut peer = Peer::new(ws);
    let welcome = peer
        .handshake_ok(&peer::token_of(daemon), "window-test")
        .await;
    (peer, welcome)
}

/// GET_FILE of `path` in `code` that must fail with `code`; no chunk may follow.
async fn get_file_error(peer: &mut Peer, path: &str, code: &str) -> Value {
    get_file_error_in(peer, "code", path, code).await
}

async fn get_file_error_in(peer: &mut Peer, dir: &str, path: &str, code: &str) -> Value {
    let id = peer.id();
    let request = json!({"id": id, "operation": "GET_FILE", "dir": dir, "path": path});
    let reply = peer
        .expect_error(Message::text(request.to_string()), code, Some(id))
        .await;
    // The connection goes on, and no content was sent for the refused request.
    peer.ping_ok().await;
    reply
}

struct Fixture {
    _tmp: tempfile::TempDir,
    e: PathBuf,
    outside: PathBuf,
    daemon: Daemon,
}

/// E with a few files, a directory, symlinks (inside and pointing outside), an ignored file,
/// and a secret file outside the root.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    let outside = tmp.path().join("outside");
    write(&outside.join("secret.txt"), "SECRET outside the root\n");
    write(&e.join("a.txt"), "hello\n");
    write(&e.join("big.bin"), pseudo_random(2 * MAX_CHUNK + 12_345, 7));
    write(&e.join("empty.txt"), "");
    write(&e.join("sub/c.txt"), "c\n");
    write(&e.join("node_modules/x"), "ignored\n");
    std::os::unix::fs::symlink("a.txt", e.join("link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), e.join("outside-link")).unwrap();
    std::os::unix::fs::symlink(&outside, e.join("outside-dir")).unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    Fixture {
        _tmp: tmp,
        e,
        outside,
        daemon,
    }
}

fn paths_of(changes: &Value) -> Vec<String> {
    changes["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn hello_then_every_operation_works() {
    let f = fixture();
    let (mut peer, hello) = Peer::authenticated(&f.daemon, "t1").await;
    assert_eq!(hello["operation"], "AUTH", "{hello}");
    assert_eq!(hello["protocol_version"], 2, "{hello}");
    assert_eq!(hello["dirs"], json!(["code"]), "{hello}");
    // The version is told once the client proved itself.
    assert_eq!(
        hello["server_version"],
        env!("CARGO_PKG_VERSION"),
        "{hello}"
    );
    assert!(
        hello["index_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{hello}"
    );

    peer.ping_ok().await;

    let last = peer.ok(json!({"operation": "GET_LAST_SEQUENCE"})).await;
    let last_seq = last["last_sequence"].as_u64().expect("last_sequence");
    assert!(last_seq > 0, "{last}");
    assert_eq!(last["dirs"]["code"].as_u64(), Some(last_seq), "{last}");
    assert_eq!(last["scanning"], false, "{last}");

    let changes = peer
        .ok(json!({"operation": "GET_CHANGES", "dir": "code", "since": 0}))
        .await;
    assert_eq!(changes["dir"], "code");
    assert_eq!(changes["more"], false, "{changes}");
    let paths = paths_of(&changes);
    for expected in ["a.txt", "big.bin", "empty.txt", "sub", "sub/c.txt", "link"] {
        assert!(
            paths.contains(&expected.to_string()),
            "{expected} missing from {paths:?}"
        );
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("node_modules")),
        "ignored paths listed: {paths:?}"
    );
    let seqs: Vec<u64> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "not ascending: {seqs:?}"
    );
    let a = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "a.txt")
        .unwrap();
    assert_eq!(a["kind"], "file");
    assert_eq!(a["sha256"], file_sha(&f.e.join("a.txt")));
    let link = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "link")
        .unwrap();
    assert_eq!(link["kind"], "symlink");
    assert_eq!(link["target"], "a.txt");

    // A limit pages the changes.
    let page = peer
        .ok(json!({"operation": "GET_CHANGES", "dir": "code", "since": 0, "limit": 2}))
        .await;
    assert_eq!(paths_of(&page).len(), 2, "{page}");
    assert_eq!(page["more"], true, "{page}");
    let nothing = peer
        .ok(json!({"operation": "GET_CHANGES", "dir": "code", "since": last_seq}))
        .await;
    assert!(paths_of(&nothing).is_empty(), "{nothing}");

    // A multi-chunk file: header, then chunks whose payload hashes to the header's sha256.
    let (header, data) = peer.get_file("code", "big.bin").await;
    assert_eq!(header["size"].as_u64(), Some(data.len() as u64), "{header}");
    assert_eq!(header["chunks"].as_u64(), Some(3), "{header}");
    assert_eq!(
        header["sha256"].as_str(),
        Some(sha256(&data).as_str()),
        "{header}"
    );
    assert_eq!(sha256(&data), file_sha(&f.e.join("big.bin")));
    let (header, data) = peer.get_file("code", "sub/c.txt").await;
    assert_eq!(data, b"c\n");
    assert_eq!(header["path"], "sub/c.txt");
    let (header, data) = peer.get_file("code", "empty.txt").await;
    assert_eq!(header["chunks"].as_u64(), Some(0), "{header}");
    assert!(data.is_empty());
    assert_eq!(header["sha256"].as_str(), Some(sha256(b"").as_str()));

    let ack = peer
        .ok(json!({"operation": "ACK_CHANGES", "dir": "code", "sequence": last_seq}))
        .await;
    assert_eq!(ack["dir"], "code");
    assert_eq!(ack["sequence"].as_u64(), Some(last_seq), "{ack}");

    peer.ping_ok().await;
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_same_connection_keeps_working() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;

    peer.expect_error(Message::text("{not json"), "bad_request", None)
        .await;
    peer.ping_ok().await;
    peer.expect_error(Message::text("[1, 2, 3]"), "bad_request", None)
        .await;
    peer.ping_ok().await;
    peer.expect_error(
        Message::text(r#"{"id": 7, "operation": "DELETE_EVERYTHING"}"#),
        "unknown_operation",
        Some(7),
    )
    .await;
    peer.ping_ok().await;
    peer.expect_error(
        Message::text(r#"{"id": 8, "operation": "GET_CHANGES", "dir": "code", "since": "zero"}"#),
        "bad_request",
        Some(8),
    )
    .await;
    peer.ping_ok().await;
    peer.expect_error(
        Message::text(r#"{"id": 9, "operation": "GET_FILE", "dir": "code"}"#),
        "bad_request",
        Some(9),
    )
    .await;
    peer.ping_ok().await;
    peer.expect_error(
        Message::binary(vec![0u8, 0, 0, 0, 0, 0, 0, 1, 42, 42]),
        "bad_request",
        None,
    )
    .await;
    peer.ping_ok().await;

    for bad in [
        "../outside",
        "/etc/passwd",
        "a\0b",
        "sub\\c.txt",
        "sub/../a.txt",
        "./a.txt",
        "sub/",
        "",
    ] {
        get_file_error(&mut peer, bad, "invalid_path").await;
    }
    get_file_error_in(&mut peer, "photos", "a.txt", "unknown_dir").await;
    get_file_error(&mut peer, "sub", "not_a_file").await;
    get_file_error(&mut peer, "link", "not_a_file").await;
    get_file_error(&mut peer, "node_modules/x", "not_a_file").await;
    get_file_error(&mut peer, "missing.txt", "not_found").await;
    get_file_error(&mut peer, "sub/missing.txt", "not_found").await;
    let unknown = peer
        .call(json!({"operation": "GET_CHANGES", "dir": "photos", "since": 0}))
        .await;
    assert_eq!(unknown["code"], "unknown_dir", "{unknown}");

    // After all that, real work still works on this connection.
    let (_, data) = peer.get_file("code", "a.txt").await;
    assert_eq!(data, b"hello\n");
    peer.ping_ok().await;
}

/// The daemon reads requests while it answers, as HELLO's `pipelining` says: a client may send
/// a window's worth of requests before it reads one answer, even when the answers are far more
/// than the socket buffers hold (a daemon that read only between answers would block on its
/// send while the client blocks on its own), and the answers come complete and in order.
#[tokio::test]
async fn a_client_may_send_a_whole_window_of_requests_before_reading_an_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    let content = pseudo_random(256 << 10, 11);
    write(&e.join("quarter.bin"), &content);
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let (mut peer, hello) = connect_small_buffers(&daemon).await;
    let window = &hello["pipelining"];
    let (requests, bytes) = (window["requests"].as_u64(), window["bytes"].as_u64());
    assert!(
        requests.is_some_and(|r| r >= 64) && bytes.is_some_and(|b| b >= 4 << 20),
        "HELLO advertises no usable window: {hello}"
    );
    // 48 requests of 64 KiB each (unknown fields are ignored): 3 MiB of requests, answered
    // by 12 MiB of content.
    let pad = "p".repeat(64 << 10);
    let mut ids = Vec::new();
    let sending = async {
        for _ in 0..48 {
            let id = peer.id();
            ids.push(id);
            let request = json!({"id": id, "operation": "GET_FILE", "dir": "code",
                                 "path": "quarter.bin", "pad": pad});
            peer.send_json(&request).await;
        }
    };
    tokio::time::timeout(DEADLINE, sending)
        .await
        .expect("the requests did not get through: the daemon stopped reading while it answered");
    let expected = sha256(&content);
    for id in ids {
        let header = peer.recv_text().await;
        assert_eq!(header["id"], json!(id), "answers out of order: {header}");
        assert_eq!(header["sha256"], json!(expected), "{header}");
        let mut data = Vec::new();
        while data.len() < content.len() {
            match peer.recv().await {
                Frame::Binary(frame) => data.extend_from_slice(&frame[8..]),
                other => panic!("expected content of request {id}, got {other:?}"),
            }
        }
        assert_eq!(sha256(&data), expected, "request {id}: wrong content");
    }
    peer.ping_ok().await;
}

/// Expects an error with `code`, then the close with 1008 (docs/PROTOCOL.md, "Handshake").
async fn refused_and_closed(peer: &mut Peer, reply: Value, code: &str) {
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    match peer.recv().await {
        Frame::Closed(close) => assert_eq!(close, Some(1008), "close code"),
        other => panic!("expected the connection to close, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_before_the_handshake_end_the_connection() {
    let f = fixture();
    for op in [
        json!({"operation": "PING"}),
        json!({"operation": "GET_LAST_SEQUENCE"}),
        json!({"operation": "GET_CHANGES", "dir": "code", "since": 0}),
        json!({"operation": "GET_FILE", "dir": "code", "path": "a.txt"}),
        json!({"operation": "ACK_CHANGES", "dir": "code", "sequence": 1}),
        json!({"operation": "AUTH", "client_proof": "00".repeat(32)}),
    ] {
        let mut peer = Peer::connect(&f.daemon).await;
        let reply = peer.call(op.clone()).await;
        refused_and_closed(&mut peer, reply, "handshake_required").await;
    }
    // After HELLO, anything but AUTH.
    let mut peer = Peer::connect(&f.daemon).await;
    let (_, challenge) = peer::hello(&mut peer.ws, "early").await;
    assert_eq!(challenge["status"], "ok", "{challenge}");
    assert!(
        challenge.get("dirs").is_none() && challenge.get("index_id").is_none(),
        "HELLO's reply must say nothing about what is served: {challenge}"
    );
    let reply = peer
        .call(json!({"operation": "GET_FILE", "dir": "code", "path": "a.txt"}))
        .await;
    refused_and_closed(&mut peer, reply, "handshake_required").await;
    // An empty client id, a missing or malformed nonce.
    for hello in [
        json!({"operation": "HELLO", "protocol_version": 2, "client_id": "", "client_nonce": "ab".repeat(32)}),
        json!({"operation": "HELLO", "protocol_version": 2, "client_id": "x"}),
        json!({"operation": "HELLO", "protocol_version": 2, "client_id": "x", "client_nonce": "zz"}),
    ] {
        let mut peer = Peer::connect(&f.daemon).await;
        let reply = peer.call(hello).await;
        refused_and_closed(&mut peer, reply, "bad_request").await;
    }
    // HELLO again on an established connection is refused, and the connection goes on.
    let mut peer = hello(&f.daemon).await;
    let reply = peer
        .call(json!({"operation": "HELLO", "protocol_version": 2, "client_id": "again", "client_nonce": "ab".repeat(32)}))
        .await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    peer.ping_ok().await;
    let (_, data) = peer.get_file("code", "a.txt").await;
    assert_eq!(data, b"hello\n");
}

#[tokio::test]
async fn hello_with_another_protocol_version_is_refused() {
    let f = fixture();
    // A newer client, and a protocol 1 client (no nonce: it sent its token in the upgrade).
    for (version, side) in [(999, "(E)"), (1, "(R)")] {
        let mut peer = Peer::connect(&f.daemon).await;
        let reply = peer
            .call(json!({"operation": "HELLO", "protocol_version": version, "client_id": "other"}))
            .await;
        let message = reply["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains(side), "{reply}");
        refused_and_closed(&mut peer, reply, "unsupported_version").await;
    }
    // The daemon still serves new connections.
    let mut again = hello(&f.daemon).await;
    again.ping_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_client_is_served_while_another_sends_garbage() {
    let f = fixture();
    let mut noisy = hello(&f.daemon).await;
    let mut good = hello(&f.daemon).await;

    let garbage = tokio::spawn(async move {
        for i in 0..300u64 {
            let message = match i % 5 {
                0 => Message::text("{{{{ garbage"),
                1 => Message::binary(vec![0xff; 64]),
                2 => Message::text(format!(r#"{{"id": {i}, "operation": "FORMAT_DISK"}}"#)),
                3 => Message::text(format!(
                    r#"{{"id": {i}, "operation": "GET_FILE", "dir": "code", "path": "../../etc/passwd"}}"#
                )),
                _ => Message::text(format!(
                    r#"{{"id": {i}, "operation": "GET_CHANGES", "dir": 5}}"#
                )),
            };
            noisy.send(message).await;
            let reply = noisy.recv_text().await;
            assert_eq!(
                reply["status"], "error",
                "garbage #{i} was accepted: {reply}"
            );
        }
        noisy.ping_ok().await;
        noisy
    });

    // Meanwhile, the well-behaved raw client and a real zync-client are served.
    for _ in 0..20 {
        good.ping_ok().await;
        let (header, data) = good.get_file("code", "big.bin").await;
        assert_eq!(header["sha256"].as_str(), Some(sha256(&data).as_str()));
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &f.daemon, &[("code", &r)]);
    let url = f.daemon.url();
    tokio::task::spawn_blocking(move || client.once_ok(&url))
        .await
        .unwrap();
    assert_same_tree(&f.e, &r, &["node_modules", "outside-dir"]);

    let mut noisy = garbage.await.expect("the garbage sender failed");
    noisy.ping_ok().await;
    good.ping_ok().await;
}

#[tokio::test]
async fn nothing_outside_the_root_is_served() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;

    // A symlink to a file outside is indexed as a symlink, never served as content.
    peer.get_file("code", "a.txt").await;
    get_file_error(&mut peer, "outside-link", "not_a_file").await;
    // A path through a symlinked directory is not in the index (the scan does not follow links).
    let reply = peer
        .call(json!({"operation": "GET_FILE", "dir": "code", "path": "outside-dir/secret.txt"}))
        .await;
    assert_eq!(
        reply["status"], "error",
        "served through a symlinked dir: {reply}"
    );
    peer.ping_ok().await;

    // A file replaced by a symlink to the secret before the daemon re-indexes it, and a
    // directory replaced by a symlink to the outside directory: whatever the daemon knows by
    // then, it must not send the secret.
    std::fs::remove_file(f.e.join("a.txt")).unwrap();
    std::os::unix::fs::symlink(f.outside.join("secret.txt"), f.e.join("a.txt")).unwrap();
    std::fs::rename(f.e.join("sub"), f.outside.join("sub-moved")).unwrap();
    write(&f.outside.join("c.txt"), "c\n");
    std::os::unix::fs::symlink(&f.outside, f.e.join("sub")).unwrap();
    for path in ["a.txt", "sub/c.txt", "sub/secret.txt"] {
        let id = peer.id();
        peer.send_json(&json!({"id": id, "operation": "GET_FILE", "dir": "code", "path": path}))
            .await;
        let reply = peer.recv_text().await;
        assert_eq!(
            reply["status"], "error",
            "GET_FILE {path} through a symlink to outside the root was served: {reply}"
        );
        peer.ping_ok().await;
    }
    // Once the watcher has caught up, the link is a symlink in the index: not_a_file.
    let start = std::time::Instant::now();
    loop {
        let reply = peer
            .call(json!({"operation": "GET_FILE", "dir": "code", "path": "a.txt"}))
            .await;
        assert_eq!(reply["status"], "error", "{reply}");
        if reply["code"] == "not_a_file" {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "a.txt never became not_a_file: {reply}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// GET_FILES of `files` (path, sha256) in `code`: the reply, then the payload of the one
/// frame that must follow it with the request's id.
async fn get_files(peer: &mut Peer, files: &[(&str, String)]) -> (Value, Vec<u8>) {
    let files: Vec<Value> = files
        .iter()
        .map(|(path, sha256)| json!({"path": path, "sha256": sha256}))
        .collect();
    let reply = peer
        .call(json!({"operation": "GET_FILES", "dir": "code", "files": files}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let id = peer.last_id();
    match peer.recv().await {
        Frame::Binary(frame) => {
            assert_eq!(frame[..8], id.to_be_bytes(), "the frame of another request");
            (reply, frame[8..].to_vec())
        }
        other => panic!("expected the frame of GET_FILES {id}, got {other:?}"),
    }
}

/// GET_FILES against the real daemon: each file is sent or refused alone, with GET_FILE's
/// codes (nothing from outside the root, nothing of a version not asked for); a request for
/// more files than allowed, or of a directory not served, is refused whole; the connection
/// goes on.
#[tokio::test]
async fn get_files_sends_each_file_or_refuses_it_alone_and_nothing_outside_the_root() {
    let f = fixture();
    let (mut peer, welcome) = Peer::authenticated(&f.daemon, "protocol-test").await;
    assert_eq!(welcome["get_files"], 256, "{welcome}");
    let secret = sha256(b"SECRET outside the root\n");
    let (reply, content) = get_files(
        &mut peer,
        &[
            ("a.txt", sha256(b"hello\n")),
            ("sub/c.txt", sha256(b"another version of c\n")),
            ("../outside/secret.txt", secret.clone()),
            ("outside-dir/secret.txt", secret.clone()),
            ("outside-link", secret),
            ("node_modules/x", sha256(b"ignored\n")),
            ("nowhere.txt", sha256(b"")),
            ("empty.txt", sha256(b"")),
            ("sub/c.txt", sha256(b"c\n")),
        ],
    )
    .await;
    assert_eq!(
        reply["sizes"],
        json!([6, 0, 0, 0, 0, 0, 0, 0, 2]),
        "{reply}"
    );
    let refused: Vec<(u64, &str)> = reply["refused"]
        .as_array()
        .expect("refusals")
        .iter()
        .map(|r| (r["at"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refused,
        [
            (1, "stale"),
            (2, "invalid_path"),
            (3, "not_found"),
            (4, "not_a_file"),
            (5, "not_a_file"),
            (6, "not_found"),
        ],
        "{reply}"
    );
    assert_eq!(content, b"hello\nc\n");

    let many: Vec<Value> = (0..257)
        .map(|_| json!({"path": "a.txt", "sha256": sha256(b"hello\n")}))
        .collect();
    let id = peer.id();
    let request = json!({"id": id, "operation": "GET_FILES", "dir": "code", "files": many});
    peer.expect_error(Message::text(request.to_string()), "bad_request", Some(id))
        .await;
    peer.ping_ok().await;
    let id = peer.id();
    let request = json!({"id": id, "operation": "GET_FILES", "dir": "photos", "files": []});
    peer.expect_error(Message::text(request.to_string()), "unknown_dir", Some(id))
        .await;
    peer.ping_ok().await;
    // Nothing asked for: an empty frame still follows.
    let (reply, content) = get_files(&mut peer, &[]).await;
    assert_eq!((reply["sizes"].clone(), content.len()), (json!([]), 0));
    peer.ping_ok().await;
}
