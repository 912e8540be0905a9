//! PING: a liveness check; the reply carries nothing.

use zync_proto::Reply;

/// Answers PING.
pub(crate) fn apply() -> Reply {
    Reply::Ping {}
}
