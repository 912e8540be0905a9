//! A connection's incoming frames, read by a task of their own while the connection answers:
//! a client may keep many requests unanswered without both sides blocking on full socket
//! buffers (the daemon writing a file the client does not read because its own requests do not
//! get through). What is read but not yet handled is bounded by bytes, so a client that sends
//! more than the advertised window only stalls itself.

use std::sync::Arc;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::{self, Message};

/// Bytes of frames read ahead and not yet handled (requests, upload content).
const BUDGET: usize = 16 << 20;
/// What a frame counts for at least, so that tiny frames cannot pile up without bound.
const MIN_COST: usize = 64;

/// Requests a client may keep unanswered on one connection (advertised in HELLO).
pub const MAX_PIPELINED_REQUESTS: u32 = 8192;
/// Bytes of requests and upload content a client may keep unanswered (advertised in HELLO):
/// half of what is read ahead, so that the rest never has to wait.
pub const MAX_PIPELINED_BYTES: u64 = (BUDGET / 2) as u64;

/// One read from the WebSocket: a frame, a transport error, or `None` at the end.
pub type Incoming = Option<Result<Message, tungstenite::Error>>;

/// Frames read ahead for one connection.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<(Incoming, OwnedSemaphorePermit)>,
    reader: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Inbox {
    /// Starts reading `stream` on a task of its own.
    pub fn start(stream: SplitStream<crate::shared::Ws>) -> Inbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(BUDGET));
        let reader = tokio::spawn(read(stream, tx, budget));
        Inbox {
            rx,
            reader,
            ended: false,
        }
    }

    /// The next frame, waiting for it.
    pub async fn next(&mut self) -> Incoming {
        if self.ended {
            return None;
        }
        let (incoming, _permit) = self.rx.recv().await?;
        self.ended = !matches!(incoming, Some(Ok(_)));
        incoming
    }

    /// The next frame if one was read already; `None` when none is waiting.
    pub fn try_next(&mut self) -> Option<Incoming> {
        if self.ended {
            return Some(None);
        }
        let (incoming, _permit) = self.rx.try_recv().ok()?;
        self.ended = !matches!(incoming, Some(Ok(_)));
        Some(incoming)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read(
    mut stream: SplitStream<crate::shared::Ws>,
    tx: mpsc::UnboundedSender<(Incoming, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
) {
    loop {
        let incoming = stream.next().await;
        let cost = match &incoming {
            Some(Ok(message)) => message.len().clamp(MIN_COST, BUDGET),
            _ => MIN_COST,
        };
        let end = !matches!(incoming, Some(Ok(_)));
        // Waits while the connection is that far behind: backpressure reaches the client.
        let Ok(permit) = Arc::clone(&budget)
            .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
            .await
        else {
            return;
        };
        if tx.send((incoming, permit)).is_err() || end {
            return;
        }
    }
}
