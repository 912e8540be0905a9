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
