//! ACK_CHANGES: the client has durably applied a directory's changes up to a sequence number.
//! The daemon keeps the highest per client and directory, for `zync-apply status` only.

use zync_proto::{AckChanges, AckReply, Reply};

use crate::context::Context;
use crate::refusal::Refusal;

/// Records the acknowledgement (`Index::record_ack`) and echoes it.
pub(crate) async fn apply(cx: &mut Context, ack: AckChanges) -> Result<Reply, Refusal> {
    cx.served(&ack.dir)?;
    let client = cx.client_id.clone();
    let dir = ack.dir.clone();
    let sequence = ack.sequence;
    cx.query(move |index| index.record_ack(&client, &dir, sequence))
        .await?;
    Ok(Reply::AckChanges(AckReply {
        dir: ack.dir,
        sequence,
    }))
}

#[cfg(test)]
mod tests {
    use zync_proto::ErrorCode;

    use super::*;
    use crate::context::testing;

    fn ack(dir: &str, sequence: u64) -> AckChanges {
        AckChanges {
            dir: dir.to_string(),
            sequence,
        }
    }

    #[tokio::test]
    async fn an_ack_is_recorded_for_the_client_and_echoed() {
        let (mut cx, tmp) = testing::context("client-1");
        match apply(&mut cx, ack("docs", 12)).await {
            Ok(Reply::AckChanges(reply)) => {
                assert_eq!((reply.dir.as_str(), reply.sequence), ("docs", 12))
            }
            Ok(other) => panic!("an ack answered with {other:?}"),
            Err(refusal) => panic!("an ack was refused: {}", refusal.message()),
        }
        // A late, lower ack does not move it back.
        assert!(apply(&mut cx, ack("docs", 3)).await.is_ok());
        let index = zync_db::Index::open(&tmp.path().join("sync.db")).expect("index");
        let acks: Vec<(String, String, u64)> = index
            .acks()
            .expect("acks")
            .into_iter()
            .map(|a| (a.client_id, a.dir, a.seq))
            .collect();
        assert_eq!(acks, [("client-1".into(), "docs".into(), 12)]);
    }

    #[tokio::test]
    async fn an_ack_for_a_dir_not_served_is_refused_and_not_recorded() {
        let (mut cx, tmp) = testing::context("client-1");
        let refusal = apply(&mut cx, ack("secrets", 5))
            .await
            .expect_err("an unknown dir must be refused");
        assert_eq!(
            refusal.code(),
            ErrorCode::UnknownDir,
            "{}",
            refusal.message()
        );
        assert!(refusal.message().contains("docs"), "{}", refusal.message());
        let index = zync_db::Index::open(&tmp.path().join("sync.db")).expect("index");
        assert_eq!(index.acks().expect("acks"), []);
    }
}
