//! End-to-end: GET_DELTA spoken to a running daemon over a raw WebSocket, as
//! docs/PROTOCOL.md describes it. R's side is played by zync_fs::delta: the signature of an
//! older version goes out, the delta comes back in chunks, and applying it must rebuild E's
//! file exactly (its sha256 is the header's) with few bytes on the wire. Bad input gets an
//! error naming the problem, and the connection keeps serving.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::peer::{Peer, MAX_CHUNK};
use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};

const MIB: usize = 1 << 20;

/// Connects and completes the handshake.
async fn hello(daemon: &Daemon) -> Peer {
    Peer::authenticated(daemon, "delta-test").await.0
}

/// GET_DELTA: the reply and, when it is ok, the delta gathered from its chunks.
async fn get_delta(peer: &mut Peer, dir: &str, path: &str, signature: &[u8]) -> (Value, Vec<u8>) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
    get_delta_raw(
        peer,
        json!({"operation": "GET_DELTA", "dir": dir, "path": path, "signature": encoded}),
    )
    .await
}

async fn get_delta_raw(peer: &mut Peer, request: Value) -> (Value, Vec<u8>) {
    let reply = peer.call(request).await;
    let id = peer.last_id();
    if reply["status"] != "ok" {
        return (reply, Vec::new());
    }
    assert_eq!(reply["operation"], "GET_DELTA", "{reply}");
    let chunks = reply["chunks"].as_u64().expect("chunks");
    let delta_size = reply["delta_size"].as_u64().expect("delta_size");
    assert_eq!(chunks, delta_size.div_ceil(MAX_CHUNK as u64), "{reply}");
    let delta = peer.chunks(id, chunks).await;
    assert_eq!(
        delta.len() as u64,
        delta_size,
        "the chunks add up to another size"
    );
    (reply, delta)
}

/// Applies `delta` to `base` the way R would, returning the rebuilt bytes.
fn apply(base: &Path, delta: &[u8], header: &Value) -> Vec<u8> {
    let size = header["size"].as_u64().expect("size");
    let mut rebuilt = Vec::new();
    zync_fs::delta::apply(base, delta, size, |bytes| {
        rebuilt.extend_from_slice(bytes);
        Ok(())
    })
    .expect("the delta applies to the base it was made for");
    rebuilt
}

struct Fixture {
    _tmp: tempfile::TempDir,
    e: PathBuf,
    /// R's older version of e/big.bin, outside the served directory.
    base: PathBuf,
    daemon: Daemon,
}

/// E serves a 32 MiB file; R's base is the same file with 64 KiB in the middle different.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = tmp.path().join("e");
    let new = pseudo_random(32 * MIB, 21);
    let mut old = new.clone();
    let at = 16 * MIB + 4321;
    old[at..at + 64 * 1024].copy_from_slice(&pseudo_random(64 * 1024, 22));
    write(&e.join("data/big.bin"), &new);
    write(&e.join("small.txt"), "hello\n");
    write(&e.join("node_modules/x"), "ignored\n");
    let base = tmp.path().join("r-big.bin");
    write(&base, &old);
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    Fixture {
        _tmp: tmp,
        e,
        base,
        daemon,
    }
}

#[tokio::test]
async fn a_64_kib_edit_in_a_32_mib_file_crosses_as_a_small_delta() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;
    let signature = zync_fs::delta::signature(&f.base).expect("signature of R's version");

    let before = peer.wire();
    let (header, delta) = get_delta(&mut peer, "code", "data/big.bin", &signature).await;
    let wire = peer.wire() - before;
    assert_eq!(header["status"], "ok", "GET_DELTA failed: {header}");
    let e_sha = file_sha(&f.e.join("data/big.bin"));
    assert_eq!(header["sha256"], json!(e_sha), "{header}");
    assert_eq!(header["size"], json!(32 * MIB), "{header}");
    assert_eq!(header["path"], "data/big.bin", "{header}");
    let rebuilt = apply(&f.base, &delta, &header);
    assert_eq!(
        sha256(&rebuilt),
        e_sha,
        "the delta rebuilt other bytes than E's file"
    );
    eprintln!(
        "64 KiB edit in 32 MiB: signature {} bytes, delta {} bytes, {wire} bytes on the wire",
        signature.len(),
        delta.len()
    );
    assert!(
        delta.len() < 64 * 1024 + 16 * 1024,
        "delta of {} bytes",
        delta.len()
    );
    assert!(
        wire < 300 * 1024,
        "{wire} bytes on the wire for a 64 KiB edit"
    );

    // R already has E's version: the delta is a handful of copy commands.
    let signature = zync_fs::delta::signature(&f.e.join("data/big.bin")).expect("signature");
    let (header, delta) = get_delta(&mut peer, "code", "data/big.bin", &signature).await;
    assert_eq!(header["status"], "ok", "{header}");
    assert!(
        delta.len() < 1024,
        "delta between equal files is {} bytes",
        delta.len()
    );
    assert_eq!(
        sha256(&apply(&f.e.join("data/big.bin"), &delta, &header)),
        e_sha
    );

    // A base R does not have yet (empty) still works: the delta carries the content.
    let empty = f.base.with_file_name("empty");
    write(&empty, "");
    let signature = zync_fs::delta::signature(&empty).expect("signature");
    let (header, delta) = get_delta(&mut peer, "code", "small.txt", &signature).await;
    assert_eq!(header["status"], "ok", "{header}");
    assert_eq!(apply(&empty, &delta, &header), b"hello\n");
    peer.ping_ok().await;
}

/// GET_DELTA with R's window hashes beside the signature (`zync_fs::delta::signature_and_windows`).
async fn get_delta_windows(peer: &mut Peer, path: &str, base: &Path) -> (Value, Vec<u8>) {
    let (signature, windows) =
        zync_fs::delta::signature_and_windows(base).expect("signature of R's version");
    let windows = windows.expect("window hashes");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    get_delta_raw(
        peer,
        json!({"operation": "GET_DELTA", "dir": "code", "path": path,
               "signature": b64(&signature),
               "windows": {"window": windows.window, "base_size": windows.base_size,
                           "hashes": b64(&windows.hashes)}}),
    )
    .await
}

/// The records of a delta stream that are exactly one copy command of `len` bytes: the
/// windows the daemon found unchanged and did not diff. Their offsets, in order.
fn single_copies(delta: &[u8], len: u64) -> Vec<u64> {
    let mut copies = Vec::new();
    let mut at = 8;
    while let Some(size) = delta.get(at..at + 4) {
        let size = u32::from_be_bytes(size.try_into().expect("4 bytes")) as usize;
        at += 4;
        let Some(record) = delta.get(at..at + size).filter(|_| size > 0) else {
            break;
        };
        at += size;
        // magic, one copy command (0x45 ..= 0x54: offset and length of 1, 2, 4 or 8 bytes), end.
        let Some(&op) = record.get(4) else { continue };
        if !(0x45..=0x54).contains(&op) {
            continue;
        }
        let (wo, wl) = (1usize << ((op - 0x45) / 4), 1usize << ((op - 0x45) % 4));
        if record.len() != 4 + 1 + wo + wl + 1 || record[record.len() - 1] != 0 {
            continue;
        }
        let number = |bytes: &[u8]| bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        let (offset, copied) = (
            number(&record[5..5 + wo]),
            number(&record[5 + wo..5 + wo + wl]),
        );
        if copied == len {
            copies.push(offset);
        }
    }
    copies
}

#[tokio::test]
async fn with_window_hashes_only_the_edited_window_is_diffed() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;
    let window = u64::from(zync_proto::MAX_HASH_WINDOW);
    let before = peer.wire();
    let (header, delta) = get_delta_windows(&mut peer, "data/big.bin", &f.base).await;
    let wire = peer.wire() - before;
    assert_eq!(header["status"], "ok", "GET_DELTA failed: {header}");
    let e_sha = file_sha(&f.e.join("data/big.bin"));
    assert_eq!(header["sha256"], json!(e_sha), "{header}");
    assert_eq!(
        sha256(&apply(&f.base, &delta, &header)),
        e_sha,
        "the delta rebuilt other bytes than E's file"
    );
    // 32 MiB in four windows of 8 MiB; the edit is in the third: the other three are one copy
    // each, at their own offset.
    assert_eq!(
        single_copies(&delta, window),
        [0, window, 3 * window],
        "the unchanged windows are not single copies"
    );
    assert!(
        delta.len() < 64 * 1024 + 16 * 1024,
        "delta of {} bytes",
        delta.len()
    );
    assert!(
        wire < 300 * 1024,
        "{wire} bytes on the wire for a 64 KiB edit"
    );

    // R has E's version: four copies and nothing else.
    let (header, delta) =
        get_delta_windows(&mut peer, "data/big.bin", &f.e.join("data/big.bin")).await;
    assert_eq!(header["status"], "ok", "{header}");
    assert_eq!(
        single_copies(&delta, window),
        [0, window, 2 * window, 3 * window]
    );
    assert!(
        delta.len() < 100,
        "{} bytes of delta between equal files",
        delta.len()
    );

    // A base that grew past E's file and one that is small: still E's exact bytes.
    let grown = f.base.with_file_name("grown");
    let mut bytes = std::fs::read(f.e.join("data/big.bin")).expect("read");
    bytes.extend_from_slice(&pseudo_random(3 * MIB, 23));
    write(&grown, &bytes);
    let (header, delta) = get_delta_windows(&mut peer, "data/big.bin", &grown).await;
    assert_eq!(sha256(&apply(&grown, &delta, &header)), e_sha);
    assert_eq!(
        single_copies(&delta, window),
        [0, window, 2 * window, 3 * window]
    );
    let (header, delta) = get_delta_windows(&mut peer, "small.txt", &f.base).await;
    assert_eq!(apply(&f.base, &delta, &header), b"hello\n");
    peer.ping_ok().await;
}

/// Sends a request that must fail with `code` and a message containing `says`; the connection
/// must go on.
async fn refused(peer: &mut Peer, request: Value, code: &str, says: &str) {
    let shown = request.to_string();
    let shown = &shown[..shown.len().min(200)];
    let (reply, _) = get_delta_raw(peer, request).await;
    assert_eq!(reply["status"], "error", "{shown} was not refused: {reply}");
    assert_eq!(reply["code"], code, "{shown}: wrong error code: {reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(says),
        "{shown}: the message does not say {says:?}: {reply}"
    );
    peer.ping_ok().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_connection_keeps_serving() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let good = zync_fs::delta::signature(&f.base).expect("signature");
    let get = |dir: &str, path: &str, signature: String| json!({"operation": "GET_DELTA", "dir": dir, "path": path, "signature": signature});

    refused(
        &mut peer,
        get("code", "data/big.bin", b64(b"garbage, not a signature")),
        "bad_request",
        "signature",
    )
    .await;
    refused(
        &mut peer,
        get("code", "data/big.bin", b64(b"")),
        "bad_request",
        "signature header",
    )
    .await;
    let mut tiny_blocks = good.clone();
    tiny_blocks[4..8].copy_from_slice(&1u32.to_be_bytes());
    refused(
        &mut peer,
        get("code", "data/big.bin", b64(&tiny_blocks)),
        "bad_request",
        "block size 1",
    )
    .await;
    refused(
        &mut peer,
        get("code", "data/big.bin", b64(&good[..good.len() - 5])),
        "bad_request",
        "whole number",
    )
    .await;
    refused(
        &mut peer,
        get("code", "data/big.bin", "*** not base64 ***".into()),
        "bad_request",
        "base64",
    )
    .await;
    refused(
        &mut peer,
        json!({"operation": "GET_DELTA", "dir": "code", "path": "data/big.bin"}),
        "bad_request",
        "signature",
    )
    .await;
    // Over the signature limit, still under the 4 MiB message limit.
    refused(
        &mut peer,
        get("code", "data/big.bin", "A".repeat(3 * MIB)),
        "bad_request",
        "over the limit",
    )
    .await;

    refused(
        &mut peer,
        get("photos", "data/big.bin", b64(&good)),
        "unknown_dir",
        "photos",
    )
    .await;
    refused(
        &mut peer,
        get("code", "../outside", b64(&good)),
        "invalid_path",
        "..",
    )
    .await;
    refused(
        &mut peer,
        get("code", "missing.bin", b64(&good)),
        "not_found",
        "missing.bin",
    )
    .await;
    refused(
        &mut peer,
        get("code", "data", b64(&good)),
        "not_a_file",
        "dir",
    )
    .await;
    refused(
        &mut peer,
        get("code", "node_modules/x", b64(&good)),
        "not_a_file",
        "ignored",
    )
    .await;

    // Window hashes that are not what they say.
    let (signature, windows) = zync_fs::delta::signature_and_windows(&f.base).expect("signature");
    let windows = windows.expect("window hashes");
    let hashes = b64(&windows.hashes);
    let with = |windows: Value| json!({"operation": "GET_DELTA", "dir": "code", "path": "data/big.bin", "signature": b64(&signature), "windows": windows});
    let size = windows.base_size;
    for (windows, says) in [
        (json!("windows"), "invalid type"),
        (json!({"window": 8 << 20, "base_size": size}), "hashes"),
        (
            json!({"window": 8 << 20, "base_size": size, "hashes": "*** not base64 ***"}),
            "not valid base64",
        ),
        (
            json!({"window": 8 << 20, "base_size": size, "hashes": b64(&[1; 17])}),
            "whole number of 16-byte hashes",
        ),
        (
            json!({"window": 8 << 20, "base_size": -1, "hashes": hashes}),
            "-1",
        ),
        (
            json!({"window": 1u64 << 40, "base_size": size, "hashes": hashes}),
            "expected u32",
        ),
        (
            json!({"window": 4096, "base_size": size, "hashes": hashes}),
            "window of 4096 bytes is outside",
        ),
        (
            json!({"window": 8 << 20, "base_size": size, "hashes": b64(&windows.hashes[16..])}),
            "3 hashes for a file of",
        ),
        (
            json!({"window": 4 << 20, "base_size": size, "hashes": hashes}),
            "4 hashes for a file of",
        ),
        (
            json!({"window": 8 << 20, "base_size": size - 8 * MIB as u64, "hashes": b64(&windows.hashes[16..])}),
            "the signature's",
        ),
        (
            json!({"window": 8 << 20, "base_size": size, "hashes": "A".repeat(700_000)}),
            "over the limit",
        ),
    ] {
        refused(&mut peer, with(windows), "bad_request", says).await;
    }

    // After all that, the same connection still delivers a delta.
    let (header, delta) = get_delta(&mut peer, "code", "data/big.bin", &good).await;
    assert_eq!(header["status"], "ok", "{header}");
    assert_eq!(
        sha256(&apply(&f.base, &delta, &header)),
        file_sha(&f.e.join("data/big.bin"))
    );
}

/// The two steps of a delta as the client takes them for a big file it kept checkpoints of:
/// GET_WINDOWS gives E's window hashes keyed with R's key, R compares them with its own (here
/// computed, as R's checkpoints hold them), and GET_DELTA with a plan carries the signature of
/// only the window that differs. The delta rebuilds E's file exactly. A plan made against
/// another version of E's file is refused as stale, and bad steps get errors that say why.
#[tokio::test]
async fn get_windows_then_a_planned_delta_sign_only_the_window_that_differs() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let key = zync_fs::WindowKey::random().expect("a key");
    const W: u64 = 8 << 20;
    let reply = peer
        .call(
            json!({"operation": "GET_WINDOWS", "dir": "code", "path": "data/big.bin",
            "window": W, "key": b64(key.as_bytes())}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["operation"], "GET_WINDOWS", "{reply}");
    let new = std::fs::read(f.e.join("data/big.bin")).expect("read E's file");
    assert_eq!(reply["sha256"], sha256(&new), "{reply}");
    assert_eq!(reply["windows"]["base_size"], json!(new.len()), "{reply}");
    let theirs = base64::engine::general_purpose::STANDARD
        .decode(reply["windows"]["hashes"].as_str().expect("hashes"))
        .expect("base64");
    let base_file = std::fs::File::open(&f.base).expect("open R's version");
    let (base_size, ours) =
        zync_fs::keyed_window_hashes(&base_file, W, &key).expect("hash R's version");
    assert_eq!(theirs.len(), ours.len(), "four windows each");
    let same: Vec<u32> = (0..theirs.len() / 16)
        .filter(|&i| theirs[i * 16..i * 16 + 16] == ours[i * 16..i * 16 + 16])
        .map(|i| i as u32)
        .collect();
    assert_eq!(same, [0, 1, 3], "the edit is in the third window");
    let signature =
        zync_fs::delta::signature_of_windows(&base_file, &f.base, base_size, W as u32, &[2])
            .expect("signature of one window");
    let whole = zync_fs::delta::signature(&f.base).expect("whole signature");
    assert!(
        signature.len() * 3 < whole.len(),
        "{} signature bytes for one window, {} for four",
        signature.len(),
        whole.len()
    );
    let plan = json!({"sha256": reply["sha256"], "window": W, "base_size": base_size,
        "same": same, "covers": [2]});
    let request = |plan: &Value| {
        json!({"operation": "GET_DELTA", "dir": "code",
        "path": "data/big.bin", "signature": b64(&signature), "plan": plan})
    };
    let (header, delta) = get_delta_raw(&mut peer, request(&plan)).await;
    assert_eq!(header["status"], "ok", "{header}");
    assert!(
        delta.len() < 200 * 1024,
        "{} bytes of delta for a 64 KiB edit",
        delta.len()
    );
    assert!(
        apply(&f.base, &delta, &header) == new,
        "rebuilt other bytes"
    );

    let mut other = plan.clone();
    other["sha256"] = json!("0".repeat(64));
    refused(
        &mut peer,
        request(&other),
        "stale",
        "is no longer the version GET_WINDOWS hashed",
    )
    .await;
    let mut both = request(&plan);
    both["windows"] = json!({"window": W, "base_size": base_size, "hashes": b64(&ours)});
    refused(&mut peer, both, "bad_request", "not both").await;
    let mut beyond = plan.clone();
    beyond["same"] = json!([0, 1, 3, 9]);
    refused(
        &mut peer,
        request(&beyond),
        "bad_request",
        "plan.same names window 9, but the file has 4 windows",
    )
    .await;
    let windows = |window: u64, key: String| {
        json!({"operation": "GET_WINDOWS", "dir": "code",
        "path": "data/big.bin", "window": window, "key": key})
    };
    refused(
        &mut peer,
        windows(W, b64(&[7; 10])),
        "bad_request",
        "key is 16 base64 characters; it must be 256",
    )
    .await;
    refused(
        &mut peer,
        windows(4096, b64(key.as_bytes())),
        "bad_request",
        "window of 4096 bytes is outside",
    )
    .await;
    let mut missing = windows(W, b64(key.as_bytes()));
    missing["path"] = json!("data/nothing.bin");
    refused(&mut peer, missing, "not_found", "").await;
}

#[tokio::test]
async fn get_delta_needs_the_handshake() {
    let f = fixture();
    let mut peer = Peer::connect(&f.daemon).await;
    let reply = peer
        .call(
            json!({"operation": "GET_DELTA", "dir": "code", "path": "small.txt", "signature": ""}),
        )
        .await;
    assert_eq!(reply["code"], "handshake_required", "{reply}");
}

#[tokio::test]
async fn a_file_that_changed_since_it_was_indexed_is_stale() {
    let f = fixture();
    let mut peer = hello(&f.daemon).await;
    let signature = zync_fs::delta::signature(&f.base).expect("signature");
    let path = f.e.join("data/big.bin");
    // Grow the file right before each request: the daemon sees it differ from its index row
    // (or change while it reads it) unless its watcher already re-indexed it, in which case
    // the reply must be consistent with the new row. Within the deadline, one must be stale.
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open E's file");
            file.write_all(&pseudo_random(4096, attempts))
                .expect("append");
        }
        let (reply, delta) = get_delta(&mut peer, "code", "data/big.bin", &signature).await;
        if reply["status"] == "error" {
            assert_eq!(reply["code"], "stale", "{reply}");
            let message = reply["message"].as_str().unwrap_or_default();
            assert!(message.contains("data/big.bin"), "{reply}");
            break;
        }
        // Served: then it is exactly the content the index had, whose sha256 the header has.
        let rebuilt = apply(&f.base, &delta, &reply);
        assert_eq!(
            sha256(&rebuilt),
            reply["sha256"].as_str().unwrap_or_default()
        );
        assert!(
            start.elapsed() < DEADLINE,
            "no stale reply in {attempts} attempts while the file kept changing"
        );
    }
    peer.ping_ok().await;
}

/// E's `big.bin` of `size` pseudo-random bytes (`seed`), served by a daemon and synced once to
/// R by a client: the temp directory holding it all (removed when dropped), E's directory, R's,
/// the daemon, the client and the file's bytes.
type Synced = (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    Daemon,
    ClientSpec,
    Vec<u8>,
);

fn synced_big_file(size: usize, seed: u64) -> Synced {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = tmp.path().join("e");
    let data = pseudo_random(size, seed);
    write(&e.join("big.bin"), &data);
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    (tmp, e, r, daemon, client, data)
}

/// The client uses GET_DELTA by itself: a 64 KiB edit in the middle of a 24 MiB file
/// that R already has crosses the wire as a signature and a small delta, well under 1 MiB
/// both ways, and R ends with E's exact bytes, leaving no temp file behind.
#[test]
fn a_small_edit_in_a_big_file_reaches_r_as_a_delta() {
    const SIZE: usize = 24 * MIB;
    let (_tmp, e, r, daemon, client, mut data) = synced_big_file(SIZE, 77);
    assert_eq!(file_sha(&r.join("big.bin")), sha256(&data));

    let middle = SIZE / 2 + 1234;
    data[middle..middle + 64 * 1024].copy_from_slice(&pseudo_random(64 * 1024, 78));
    write(&e.join("big.bin"), &data);
    let want = sha256(&data);
    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    let logs = once_until(&client, &proxy.url(), "R has E's edited file", || {
        file_sha(&r.join("big.bin")) == want
    });
    let wire = proxy.bytes_to_client() + proxy.bytes_to_daemon();
    assert!(
        wire < MIB as u64,
        "{wire} bytes crossed the wire for a 64 KiB edit in {SIZE} bytes:\n{logs}"
    );
    // R kept the checkpoints of the version it has: it asked E for its window hashes, and
    // signed only the window of three that differs.
    let asked: Vec<Value> = proxy
        .requests()
        .into_iter()
        .filter(|r| r["operation"] != "GET_CHANGES" && r["operation"] != "ACK_CHANGES")
        .filter(|r| {
            r["operation"]
                .as_str()
                .is_some_and(|op| op.starts_with("GET_"))
        })
        .collect();
    let [windows, delta] = &asked[..] else {
        panic!("expected GET_WINDOWS then GET_DELTA, got {asked:?}:\n{logs}")
    };
    assert_eq!(windows["operation"], "GET_WINDOWS", "{windows}");
    assert_eq!(windows["window"], json!(8 << 20), "{windows}");
    assert_eq!(delta["operation"], "GET_DELTA", "{delta}");
    assert_eq!(delta["windows"], Value::Null, "{delta}");
    let plan = &delta["plan"];
    assert_eq!(
        (
            &plan["same"],
            &plan["covers"],
            &plan["base_size"],
            &plan["sha256"]
        ),
        (&json!([0, 2]), &json!([1]), &json!(SIZE), &json!(want)),
        "{plan}"
    );
    let signature = base64::engine::general_purpose::STANDARD
        .decode(delta["signature"].as_str().unwrap_or_default())
        .expect("base64");
    let block = zync_fs::delta::block_size_for(SIZE as u64);
    let entry = 4 + zync_fs::delta::strong_sum_for(SIZE as u64, block) as usize;
    assert_eq!(
        signature.len(),
        12 + (8 * MIB / block as usize) * entry,
        "the signature covers one window"
    );
    assert_eq!(temp_files(&r), Vec::<String>::new(), "temp files left on R");
    assert!(
        conflict_copies(&r).is_empty(),
        "no edit on R, no conflict copy"
    );
}

/// A delta corrupted on the way (one byte flipped in the middle of its first frame) rebuilds
/// the wrong bytes: the client's sha256 check catches it and it downloads the file whole,
/// ending with E's exact bytes in the same run, no temp file and no conflict copy; its
/// progress counts the file once, not once for the delta and again for the download.
#[test]
fn a_corrupt_delta_is_caught_and_the_file_downloaded_whole() {
    // Big enough for progress lines (zync_cli::progress::LARGE_BYTES).
    const SIZE: usize = 40 * MIB;
    let (_tmp, e, r, daemon, client, mut data) = synced_big_file(SIZE, 91);

    let middle = SIZE / 2 + 4321;
    data[middle..middle + 64 * 1024].copy_from_slice(&pseudo_random(64 * 1024, 92));
    write(&e.join("big.bin"), &data);
    // The edit as written, not a state the daemon saw while it was being written: a delta of
    // that one would be refused as stale after its frames (the corrupted one among them) went.
    daemon.wait_indexed_as("big.bin", &sha256(&data));
    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    // A file this big would first ask for E's window hashes (binary frames too): as an older
    // daemon, the proxy refuses that, so the frame corrupted is the delta's.
    proxy.hide_get_windows();
    proxy.corrupt_next_binary_frame();
    let mut cmd = client.command(&proxy.url());
    cmd.arg("--once").env("ZYNC_PROGRESS_SECS", "0.001");
    let out = output_within_deadline(cmd);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(proxy.corrupted(), 1, "nothing was corrupted:\n{log}");
    // `synced 1/1 files, 40.0 MiB, ...`: never more than the file.
    let counted: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("/1 files, ").nth(1))
        .filter_map(|rest| rest.split(" MiB").next()?.parse().ok())
        .collect();
    assert!(!counted.is_empty(), "no progress lines:\n{log}");
    assert!(
        counted.iter().all(|&mib| mib <= (SIZE / MIB) as f64),
        "progress counted more than the {} MiB file: {counted:?}\n{log}",
        SIZE / MIB
    );
    assert_eq!(
        file_sha(&r.join("big.bin")),
        sha256(&data),
        "R does not hold E's bytes after a corrupt delta:\n{log}"
    );
    let asked: Vec<String> = proxy
        .requests()
        .iter()
        .filter_map(|r| r["operation"].as_str().map(str::to_string))
        .filter(|op| op.starts_with("GET_"))
        .collect();
    assert!(
        asked.iter().any(|op| op == "GET_DELTA") && asked.iter().any(|op| op == "GET_FILE"),
        "expected a delta, then the whole file: {asked:?}\n{log}"
    );
    assert!(
        proxy.bytes_to_client() > SIZE as u64,
        "the whole file should have crossed the wire after the bad delta ({} bytes):\n{log}",
        proxy.bytes_to_client()
    );
    assert_eq!(temp_files(&r), Vec::<String>::new(), "temp files left on R");
    assert!(
        conflict_copies(&r).is_empty(),
        "no edit on R, no conflict copy"
    );
}

/// The checkpoints the client stored for the content with `sha` (`zync_fs::checkpoint`): per
/// whole 8 MiB window, its XXH3-128 (16 bytes) and the SHA-256 state after it (32 bytes).
fn stored_checkpoints(client: &ClientSpec, sha: &str) -> Option<Vec<u8>> {
    let db = rusqlite::Connection::open(&client.db).expect("open the client database");
    db.query_row(
        "SELECT data FROM checkpoints WHERE sha256 = ?1",
        [sha],
        |row| row.get(0),
    )
    .ok()
}

/// An edit in the last window of a 24 MiB file: its first two windows are the same as the
/// version R wrote, so the client skips their SHA-256 and goes on from the state it stored
/// when it wrote them. States that lie (the database tampered with) cannot let other bytes
/// pass for E's: the digest is then not E's sha256, and the file is downloaded whole. Honest
/// ones rebuild the file from the delta alone, and the new content's checkpoints are stored.
#[test]
fn checkpoints_spare_hashing_what_r_wrote_and_lying_ones_let_nothing_wrong_in() {
    const SIZE: usize = 24 * MIB;
    let (_tmp, e, r, daemon, client, mut data) = synced_big_file(SIZE, 61);
    let first = sha256(&data);
    assert_eq!(file_sha(&r.join("big.bin")), first);
    let stored = stored_checkpoints(&client, &first).expect("checkpoints of the first version");
    assert_eq!(stored.len(), 3 * 48, "three whole windows");

    // Tampered: every stored state changed, the window hashes kept.
    let mut forged = stored.clone();
    for checkpoint in forged.chunks_exact_mut(48) {
        checkpoint[20] ^= 0x55;
    }
    rusqlite::Connection::open(&client.db)
        .expect("open")
        .execute(
            "UPDATE checkpoints SET data = ?1 WHERE sha256 = ?2",
            (&forged, &first),
        )
        .expect("tamper");
    let edit = |data: &mut Vec<u8>, seed| {
        let at = SIZE - MIB;
        data[at..at + 64 * 1024].copy_from_slice(&pseudo_random(64 * 1024, seed));
        write(&e.join("big.bin"), &data[..]);
        sha256(&data[..])
    };
    let asked = |proxy: &crate::common::proxy::Proxy| -> Vec<String> {
        proxy
            .requests()
            .iter()
            .filter_map(|r| r["operation"].as_str().map(str::to_string))
            .filter(|op| op.starts_with("GET_") && op != "GET_CHANGES")
            .collect()
    };
    let second = edit(&mut data, 62);
    daemon.wait_indexed_as("big.bin", &second);
    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    let logs = once_until(&client, &proxy.url(), "R has the second version", || {
        file_sha(&r.join("big.bin")) == second
    });
    assert_eq!(
        asked(&proxy),
        ["GET_WINDOWS", "GET_DELTA", "GET_FILE"],
        "states that lie fail the check, and the file comes whole:\n{logs}"
    );
    assert_eq!(
        stored_checkpoints(&client, &first),
        None,
        "checkpoints a rebuild failed with are forgotten"
    );

    // Written whole, the second version's checkpoints are its own: the next edit needs the
    // delta only.
    let third = edit(&mut data, 63);
    daemon.wait_indexed_as("big.bin", &third);
    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    let logs = once_until(&client, &proxy.url(), "R has the third version", || {
        file_sha(&r.join("big.bin")) == third
    });
    assert_eq!(asked(&proxy), ["GET_WINDOWS", "GET_DELTA"], "{logs}");
    assert_eq!(
        stored_checkpoints(&client, &third).map(|c| c.len()),
        Some(3 * 48),
        "the rebuilt content's checkpoints are stored"
    );
    assert_eq!(temp_files(&r), Vec::<String>::new(), "temp files left on R");
    assert!(
        conflict_copies(&r).is_empty(),
        "no edit on R, no conflict copy"
    );
}

/// R's file is changed behind the client's back in a window E left alone, its size and mtime
/// put back (so it still reads as the version R synced): the plan has R copy that window from
/// its own file, the rebuilt file is not E's, and the sha256 check refuses it. The file is then
/// downloaded whole: R ends with E's bytes, never with the bytes planted in it.
#[test]
fn a_window_changed_on_r_behind_the_client_s_back_never_passes_for_e_s() {
    const SIZE: usize = 24 * MIB;
    let (_tmp, e, r, daemon, client, mut data) = synced_big_file(SIZE, 71);
    let on_r = r.join("big.bin");
    let mtime = std::fs::metadata(&on_r)
        .and_then(|m| m.modified())
        .expect("mtime");
    let planted = std::fs::OpenOptions::new()
        .write(true)
        .open(&on_r)
        .expect("open R's file");
    planted
        .write_all_at(b"planted", MIB as u64)
        .expect("plant bytes in the first window");
    planted.set_modified(mtime).expect("put the mtime back");
    drop(planted);

    let at = SIZE - MIB;
    data[at..at + 64 * 1024].copy_from_slice(&pseudo_random(64 * 1024, 72));
    write(&e.join("big.bin"), &data);
    let want = sha256(&data);
    daemon.wait_indexed_as("big.bin", &want);
    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    let logs = once_until(&client, &proxy.url(), "R has E's edited file", || {
        file_sha(&on_r) == want
    });
    let asked: Vec<String> = proxy
        .requests()
        .iter()
        .filter_map(|r| r["operation"].as_str().map(str::to_string))
        .filter(|op| op.starts_with("GET_") && op != "GET_CHANGES")
        .collect();
    assert_eq!(
        asked,
        ["GET_WINDOWS", "GET_DELTA", "GET_FILE"],
        "the planted window fails the check, and the file comes whole:\n{logs}"
    );
    assert_eq!(temp_files(&r), Vec::<String>::new(), "temp files left on R");
}

/// A daemon older than GET_WINDOWS answers it `unknown_operation`: the client then signs its
/// whole version, as before, and the edit still arrives as a delta. A loop client asks no more
/// GET_WINDOWS on that connection: the next big file it fetches is signed whole at once.
#[test]
fn a_daemon_without_get_windows_gets_the_whole_signature() {
    const SIZE: usize = 24 * MIB;
    let (tmp, e, r, daemon, client, mut data) = synced_big_file(SIZE, 81);
    // A second big file R wrote, so it has its checkpoints too.
    let mut other = pseudo_random(SIZE, 83);
    write(&e.join("other.bin"), &other);
    once_until(&client, &daemon.url(), "R has the second file", || {
        r.join("other.bin").exists() && file_sha(&r.join("other.bin")) == sha256(&other)
    });
    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    proxy.hide_get_windows();
    let running = client.spawn(&proxy.url(), &tmp.path().join("loop.log"));
    let at = SIZE / 2;
    for (name, content, seed) in [("big.bin", &mut data, 82), ("other.bin", &mut other, 84)] {
        let edit = pseudo_random(64 * 1024, seed);
        content[at..at + 64 * 1024].copy_from_slice(&edit);
        // Edited in place with one write, so the client never sees the file cut short or half
        // written, which would cost requests of its own.
        std::fs::OpenOptions::new()
            .write(true)
            .open(e.join(name))
            .and_then(|f| f.write_all_at(&edit, at as u64))
            .expect("edit in place");
        let want = sha256(&content[..]);
        wait_until(&format!("R to have E's edited {name}"), || {
            file_sha(&r.join(name)) == want
        });
    }
    let logs = running.log_text();
    let asked: Vec<Value> = proxy
        .requests()
        .into_iter()
        .filter(|r| {
            r["operation"].as_str().is_some_and(|op| {
                op.starts_with("GET_WINDOW") || op == "GET_DELTA" || op == "GET_FILE"
            })
        })
        .collect();
    let ops: Vec<&str> = asked
        .iter()
        .filter_map(|r| r["operation"].as_str())
        .collect();
    assert_eq!(
        ops.iter().filter(|op| op.starts_with("GET_WINDOW")).count(),
        1,
        "one GET_WINDOWS, renamed, and no other: {ops:?}\n{logs}"
    );
    assert_eq!(ops[0], "GET_WINDOWZ", "{ops:?}\n{logs}");
    let deltas: Vec<&Value> = asked
        .iter()
        .filter(|r| r["operation"] == "GET_DELTA")
        .collect();
    assert_eq!(deltas.len(), 2, "a delta for each file: {ops:?}\n{logs}");
    for delta in deltas {
        assert_eq!(delta["plan"], Value::Null, "{delta}");
        assert_eq!(delta["windows"]["base_size"], json!(SIZE), "{delta}");
    }
    assert!(
        proxy.bytes_to_client() < 2 * MIB as u64,
        "{} bytes down for two 64 KiB edits:\n{logs}",
        proxy.bytes_to_client()
    );
}
