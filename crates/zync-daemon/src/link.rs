//! A connection's two directions: frames out to the client (sent at once, or fed and flushed
//! together so that a file's frames leave as one run) and frames in, read ahead by the
//! [`Inbox`] task, with a backlog of frames read early that are handled next, in order.

use std::collections::VecDeque;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use zync_proto::{OkResponse, Reply, ServerMessage};

use crate::inbox::{Inbox, Incoming};
use crate::refusal::Refusal;
use crate::shared::Ws;

/// The WebSocket of one authenticated client, split into its two directions.
pub(crate) struct Link {
    /// Where frames to the client go.
    ws: SplitSink<Ws, Message>,
    /// Frames from the client, read ahead by a task of their own.
    inbox: Inbox,
    /// Frames read ahead (while batching GET_FILE requests), handled before reading more.
    backlog: VecDeque<Message>,
}

impl Link {
    /// Splits `ws` and starts reading it.
    pub(crate) fn new(ws: Ws) -> Link {
        let (ws, stream) = ws.split();
        Link {
            ws,
            inbox: Inbox::start(stream),
            backlog: VecDeque::new(),
        }
    }

    /// The next frame from the client, waiting for it.
    pub(crate) async fn next(&mut self) -> Incoming {
        self.inbox.next().await
    }

    /// The next frame if one was read already; `None` when none is waiting.
    pub(crate) fn try_next(&mut self) -> Option<Incoming> {
        self.inbox.try_next()
    }

    /// A frame read early, to be handled before anything still unread.
    pub(crate) fn take_backlog(&mut self) -> Option<Message> {
        self.backlog.pop_front()
    }

    /// Keeps a frame read early for the frame loop to handle next.
    pub(crate) fn keep(&mut self, message: Message) {
        self.backlog.push_back(message);
    }

    /// Whether frames read early wait to be handled.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Sends a frame; false when the connection failed.
    pub(crate) async fn send_frame(&mut self, frame: Message) -> bool {
        self.ws.send(frame).await.is_ok()
    }

    /// Hands a frame to the WebSocket's write buffer without waiting for it to be written:
    /// once the frames before it have left that buffer, the frame is copied into it and
    /// dropped. The split sink keeps a fed frame in a slot of its own until it is polled
    /// again, so it is polled once more here; a sender that reads its next chunk only after
    /// this returns then holds two chunks (that buffer and the one being read), not three
    /// (docs/PROFILE.md, memory). False when the connection failed.
    pub(crate) async fn feed_frame(&mut self, frame: Message) -> bool {
        if self.ws.feed(frame).await.is_err() {
            return false;
        }
        std::future::poll_fn(|cx| self.ws.poll_ready_unpin(cx))
            .await
            .is_ok()
    }

    /// Sends a message; false when the connection failed.
    pub(crate) async fn send(&mut self, message: &ServerMessage) -> bool {
        self.send_frame(Message::text(message.to_json())).await
    }

    /// Queues a message without flushing: the frames of one file go out together.
    pub(crate) async fn feed(&mut self, message: &ServerMessage) -> bool {
        self.ws.feed(Message::text(message.to_json())).await.is_ok()
    }

    /// Sends what was fed.
    pub(crate) async fn flush(&mut self) -> bool {
        self.ws.flush().await.is_ok()
    }

    /// Answers request `id` with its reply or its refusal.
    pub(crate) async fn answer(&mut self, id: u64, answer: Result<Reply, Refusal>) -> bool {
        match answer {
            Ok(reply) => {
                self.send(&ServerMessage::Ok(OkResponse { id, reply }))
                    .await
            }
            Err(refusal) => self.send_error(Some(id), refusal).await,
        }
    }

    /// Sends an error response.
    pub(crate) async fn send_error(&mut self, id: Option<u64>, refusal: Refusal) -> bool {
        self.send(&ServerMessage::Error(refusal.into_response(id)))
            .await
    }

    /// Queues an error response without flushing (within a batch of responses).
    pub(crate) async fn feed_error(&mut self, id: Option<u64>, refusal: Refusal) -> bool {
        self.feed(&ServerMessage::Error(refusal.into_response(id)))
            .await
    }

    /// Sends a close frame with `code` and `reason` (cut to what the protocol allows).
    pub(crate) async fn close(&mut self, code: CloseCode, reason: &str) -> bool {
        // Close reasons are limited to 123 bytes by the WebSocket protocol.
        let mut reason = reason.to_string();
        while reason.len() > 120 {
            reason.pop();
        }
        self.send_frame(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Bytes;

    use super::*;

    /// A frame's bytes that say when they are freed.
    struct Watched(Vec<u8>, Arc<AtomicBool>);

    impl AsRef<[u8]> for Watched {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }

    /// Both ends of a WebSocket over loopback: the daemon's, then the client's.
    async fn pair() -> (Ws, Ws) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
                .await
                .expect("client handshake")
                .0
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let server = tokio_tungstenite::accept_async(stream)
            .await
            .expect("server handshake");
        (server, client.await.expect("client task"))
    }

    #[tokio::test]
    async fn a_fed_frame_is_freed_once_it_is_in_the_write_buffer_and_arrives_after_a_flush() {
        let (server, mut client) = pair().await;
        let mut link = Link::new(server);
        let freed = Arc::new(AtomicBool::new(false));
        let chunk = Watched(vec![7; zync_proto::MAX_CHUNK], Arc::clone(&freed));
        assert!(
            link.feed_frame(Message::binary(Bytes::from_owner(chunk)))
                .await
        );
        // The sender reads its next chunk now: this one must not be held beside it.
        assert!(
            freed.load(Ordering::SeqCst),
            "the frame was still held after feed_frame returned"
        );
        // Read while flushed: the socket need not hold the whole frame.
        let (flushed, got) = tokio::join!(link.flush(), client.next());
        assert!(flushed);
        let got = got.expect("a frame").expect("a good frame");
        assert_eq!(got.into_data(), vec![7; zync_proto::MAX_CHUNK]);
    }
}
