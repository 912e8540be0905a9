//! How much R may stage on E (invariant 9 (docs/ARCHITECTURE.md): staging is bounded, R is not
//! trusted): the limits, with their flags, and the checks an upload passes before any of its
//! content is read. Every refusal names the limit, its value and the flag or config key that
//! raises it. Uploads being received count against the total until their files are recorded,
//! so two connections cannot both take the last of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zync_cli::units::{format_bytes, format_duration};
use zync_proto::ErrorCode;

use crate::refusal::Refusal;

/// The default for bytes of staged content in one session.
pub const MAX_SESSION_BYTES: u64 = 4 << 30;
/// The default for bytes of staged content in all pending sessions together.
pub const MAX_STAGED_BYTES: u64 = 16 << 30;
/// The default for files in one session.
pub const MAX_SESSION_FILES: u64 = 100_000;
/// The default for pending sessions of one client.
pub const MAX_PENDING_SESSIONS: u64 = 16;
/// The default for how long an upload may wait for its next content frame.
pub const UPLOAD_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The default age after which a staged session nobody touched expires.
pub const STAGING_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What R may stage, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagingLimits {
    /// Bytes of content in one session (`--max-session-bytes`).
    pub session_bytes: u64,
    /// Bytes of content in every pending session together (`--max-staged-bytes`).
    pub staged_bytes: u64,
    /// Files in one session (`--max-session-files`).
    pub session_files: u64,
    /// Pending sessions of one client (`--max-pending-sessions`).
    pub pending_sessions: u64,
    /// How long an upload may wait for its next content frame (`--upload-stall-timeout`).
    pub upload_stall: Duration,
    /// Staged sessions untouched for longer expire at start (`--staging-max-age`).
    pub max_age: Duration,
}

impl Default for StagingLimits {
    fn default() -> StagingLimits {
        StagingLimits {
            session_bytes: MAX_SESSION_BYTES,
            staged_bytes: MAX_STAGED_BYTES,
            session_files: MAX_SESSION_FILES,
            pending_sessions: MAX_PENDING_SESSIONS,
            upload_stall: UPLOAD_STALL_TIMEOUT,
            max_age: STAGING_MAX_AGE,
        }
    }
}

/// How to raise a limit: its flag and its config key.
fn raise(key: &str) -> String {
    format!("zync-daemon --{key}, or {key} in daemon.toml")
}

/// What one session holds so far, for the per-session limits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionLoad {
    /// Files staged.
    pub(crate) files: u64,
    /// Bytes staged.
    pub(crate) bytes: u64,
}

/// An upload about to be received: its path, its size, and the size of the staged file of the
/// same path it would replace (0 for none), `replaces` whether there is one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upload<'a> {
    pub(crate) path: &'a str,
    pub(crate) size: u64,
    pub(crate) replaced: u64,
    pub(crate) replaces: bool,
}

impl Upload<'_> {
    /// What it holds of the total staged once recorded: its content and its record
    /// ([`zync_db::staged_record_bytes`]).
    fn held(&self) -> u64 {
        self.size
            .saturating_add(zync_db::staged_record_bytes(self.path))
    }

    /// What the staged entry it replaces held (nothing when it replaces none).
    fn freed(&self) -> u64 {
        match self.replaces {
            true => self
                .replaced
                .saturating_add(zync_db::staged_record_bytes(self.path)),
            false => 0,
        }
    }
}

impl StagingLimits {
    /// The refusal of a new session for a client that has `pending` sessions waiting already.
    pub(crate) fn check_pending(&self, client: &str, pending: u64) -> Result<(), Refusal> {
        if pending < self.pending_sessions {
            return Ok(());
        }
        Err(self.too_many_pending(client, pending))
    }

    /// Why a new session of `client`, which has `pending` sessions waiting, is refused.
    pub(crate) fn too_many_pending(&self, client: &str, pending: u64) -> Refusal {
        Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "client {client} already has {pending} upstream sessions waiting on E; E allows {} \
                 ({}); apply or drop some on E (zync-apply list, apply, drop) and push again",
                self.pending_sessions,
                raise("max-pending-sessions")
            ),
        )
    }

    /// The refusal of `upload` into a session holding `load`.
    pub(crate) fn check_session(
        &self,
        load: SessionLoad,
        upload: Upload<'_>,
    ) -> Result<(), Refusal> {
        if !upload.replaces && load.files >= self.session_files {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "{}: this push would stage more than {} files in one session; E allows {} ({}); \
                     what was staged before it stays, finalize it and push the rest in another session",
                    upload.path,
                    load.files,
                    self.session_files,
                    raise("max-session-files")
                ),
            ));
        }
        let after = load
            .bytes
            .saturating_sub(upload.replaced)
            .saturating_add(upload.size);
        if after > self.session_bytes {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!(
                    "{}: this push would stage {} in one session; E allows {} ({}); what was staged \
                     before it stays, finalize it and push the rest in another session",
                    upload.path,
                    format_bytes(after),
                    format_bytes(self.session_bytes),
                    raise("max-session-bytes")
                ),
            ));
        }
        Ok(())
    }

    /// The refusal of `upload` when `pending` bytes wait in pending sessions and `receiving`
    /// more are being received.
    fn check_total(&self, pending: u64, receiving: u64, upload: Upload<'_>) -> Result<(), Refusal> {
        let held = pending
            .saturating_add(receiving)
            .saturating_sub(upload.freed());
        if held.saturating_add(upload.held()) <= self.staged_bytes {
            return Ok(());
        }
        Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "{}: E already holds {} staged for review (content, and {} for each path); {} \
                 more would pass the {} E allows in all pending sessions together ({}); apply or \
                 drop sessions on E (zync-apply list, apply, drop) and push again",
                upload.path,
                format_bytes(held),
                format_bytes(zync_db::STAGED_RECORD_BYTES),
                format_bytes(upload.held()),
                format_bytes(self.staged_bytes),
                raise("max-staged-bytes")
            ),
        ))
    }

    /// The refusal (and connection close reason) of an upload whose next frame did not come.
    pub(crate) fn stalled(&self, path: &str, received: u64, size: u64) -> Refusal {
        Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "{path}: no content arrived for {} after {received} of {size} bytes; E dropped the \
                 upload and closes the connection ({})",
                format_duration(self.upload_stall),
                raise("upload-stall-timeout")
            ),
        )
    }
}

/// How long the index's total for pending sessions, once read, stands for it: adding up every
/// pending row for each upload made a push of 50,000 deletions quadratic (minutes), with every
/// other upload waiting behind it.
const PENDING_READ_EVERY: Duration = Duration::from_secs(1);

/// The index's total for pending sessions as last read, plus what was recorded since.
#[derive(Debug, Clone, Copy)]
struct Pending {
    total: u64,
    read_at: std::time::Instant,
}

/// Bytes of uploads being received on every connection (staged content not yet in the index),
/// and the index's total as last read.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// Held across the check and the reservation, so two uploads cannot both take the last room.
    gate: tokio::sync::Mutex<()>,
    receiving: Arc<Mutex<u64>>,
    /// What the index holds for pending sessions, read at most every [`PENDING_READ_EVERY`];
    /// what this daemon records meanwhile is added to it. What `zync-apply` applies or drops
    /// meanwhile is not taken off until the next read, so it errs on the side of refusing.
    pending: Arc<Mutex<Option<Pending>>>,
}

impl Budget {
    /// Reserves what `upload` holds of the total if the index's total for pending sessions
    /// (`pending()`, read off the reactor, at most every [`PENDING_READ_EVERY`]) plus the
    /// uploads being received leave room for it under `limits`.
    pub(crate) async fn reserve<F>(
        &self,
        limits: &StagingLimits,
        upload: Upload<'_>,
        pending: F,
    ) -> Result<Reservation, Refusal>
    where
        F: std::future::Future<Output = Result<u64, Refusal>>,
    {
        let _turn = self.gate.lock().await;
        let known = *self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let total = match known.filter(|p| p.read_at.elapsed() < PENDING_READ_EVERY) {
            Some(known) => known.total,
            None => {
                let total = pending.await?;
                *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
                    total,
                    read_at: std::time::Instant::now(),
                });
                total
            }
        };
        let receiving = self.receiving();
        limits.check_total(total, receiving, upload)?;
        *self.receiving.lock().unwrap_or_else(|e| e.into_inner()) += upload.held();
        Ok(Reservation {
            receiving: Arc::clone(&self.receiving),
            pending: Arc::clone(&self.pending),
            bytes: upload.held(),
        })
    }

    /// Bytes of uploads being received now.
    pub(crate) fn receiving(&self) -> u64 {
        *self.receiving.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes an upload holds of the total while it is received; given back when dropped (the
/// upload was recorded in the index, which counts it from then on, or it failed).
#[derive(Debug)]
pub(crate) struct Reservation {
    receiving: Arc<Mutex<u64>>,
    pending: Arc<Mutex<Option<Pending>>>,
    bytes: u64,
}

impl Reservation {
    /// The upload is recorded in the index: its bytes count among the pending sessions' from
    /// now on (until the index is read again, which counts them itself).
    pub(crate) fn recorded(self) {
        if let Some(known) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            known.total = known.total.saturating_add(self.bytes);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut receiving = self.receiving.lock().unwrap_or_else(|e| e.into_inner());
        *receiving = receiving.saturating_sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(size: u64) -> Upload<'static> {
        Upload {
            path: "big.bin",
            size,
            replaced: 0,
            replaces: false,
        }
    }

    #[test]
    fn each_limit_refuses_with_its_value_and_the_flag_that_raises_it() {
        let limits = StagingLimits {
            session_bytes: 4 << 30,
            staged_bytes: 16 << 30,
            session_files: 3,
            pending_sessions: 2,
            ..StagingLimits::default()
        };
        let load = SessionLoad {
            files: 2,
            bytes: 3 << 30,
        };
        assert!(
            limits.check_session(load, upload(1 << 30)).is_ok(),
            "exactly the limit fits"
        );
        let e = limits
            .check_session(load, upload((1 << 30) + 1))
            .expect_err("over the session bytes");
        assert_eq!(e.code(), ErrorCode::TooLarge);
        assert!(
            e.message()
                .contains("would stage 4.0 GiB in one session; E allows 4 GiB")
                && e.message().contains(
                    "zync-daemon --max-session-bytes, or max-session-bytes in daemon.toml"
                ),
            "{}",
            e.message()
        );
        let replacing = Upload {
            replaced: 1 << 30,
            replaces: true,
            ..upload(2 << 30)
        };
        assert!(
            limits.check_session(load, replacing).is_ok(),
            "a re-sent path counts once"
        );

        let full = SessionLoad { files: 3, bytes: 0 };
        let e = limits
            .check_session(full, upload(1))
            .expect_err("over the files");
        assert!(
            e.message().contains("E allows 3") && e.message().contains("--max-session-files"),
            "{}",
            e.message()
        );
        assert!(
            limits
                .check_session(
                    full,
                    Upload {
                        replaces: true,
                        ..upload(1)
                    }
                )
                .is_ok(),
            "a re-sent path adds no file"
        );

        let record = zync_db::staged_record_bytes("big.bin");
        assert!(limits
            .check_total((15 << 30) - record, 0, upload(1 << 30))
            .is_ok());
        let e = limits
            .check_total(15 << 30, 1, upload(1 << 30))
            .expect_err("uploads being received count");
        assert!(
            e.message().contains("16 GiB") && e.message().contains("--max-staged-bytes"),
            "{}",
            e.message()
        );

        assert!(limits.check_pending("r", 1).is_ok());
        let e = limits.check_pending("r", 2).expect_err("too many pending");
        assert!(
            e.message()
                .contains("already has 2 upstream sessions waiting on E; E allows 2")
                && e.message().contains("--max-pending-sessions"),
            "{}",
            e.message()
        );
    }

    /// Deletions and empty files hold no content, but their records count: a client pushing
    /// many of them with long paths meets `--max-staged-bytes` as one pushing content does.
    #[test]
    fn records_count_against_the_total_staged() {
        let limits = StagingLimits {
            staged_bytes: 10 * 1024,
            ..StagingLimits::default()
        };
        let long = "d/".repeat(1000) + "f";
        let empty = Upload {
            path: &long,
            size: 0,
            replaced: 0,
            replaces: false,
        };
        let each = zync_db::staged_record_bytes(&long);
        assert!(each > 3000, "{each}");
        let fits = 10 * 1024 / each;
        assert!(limits.check_total((fits - 1) * each, 0, empty).is_ok());
        let e = limits
            .check_total(fits * each, 0, empty)
            .expect_err("records alone fill the total");
        assert!(
            e.message().contains("--max-staged-bytes"),
            "{}",
            e.message()
        );
        // The same path sent again replaces its record.
        let again = Upload {
            replaces: true,
            ..empty
        };
        assert!(limits.check_total(fits * each, 0, again).is_ok());
    }

    /// The index's total is read once for a run of uploads, and what is recorded meanwhile
    /// counts: the second upload is refused on what the first recorded, without reading the
    /// index again (which would say nothing is pending).
    #[tokio::test]
    async fn the_pending_total_is_read_once_a_second_and_recorded_uploads_count() {
        let held = upload(60).held();
        let limits = StagingLimits {
            staged_bytes: 2 * held - 1,
            ..StagingLimits::default()
        };
        let budget = Budget::default();
        let reads = std::sync::atomic::AtomicU32::new(0);
        let read = || async {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(0)
        };
        budget
            .reserve(&limits, upload(60), read())
            .await
            .expect("fits")
            .recorded();
        let refused = budget.reserve(&limits, upload(60), read()).await;
        assert!(refused.is_err(), "the first upload's record is not counted");
        assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_reservation_holds_its_bytes_until_it_is_dropped() {
        let record = zync_db::staged_record_bytes("big.bin");
        let limits = StagingLimits {
            staged_bytes: 100 + record,
            ..StagingLimits::default()
        };
        let budget = Budget::default();
        let first = budget
            .reserve(&limits, upload(60), async { Ok(0) })
            .await
            .expect("fits");
        assert_eq!(budget.receiving(), 60 + record);
        let refused = budget.reserve(&limits, upload(60), async { Ok(0) }).await;
        assert!(refused.is_err(), "the first upload's bytes are held");
        drop(first);
        assert_eq!(budget.receiving(), 0);
        let second = budget.reserve(&limits, upload(60), async { Ok(0) }).await;
        assert!(second.is_ok(), "given back when dropped");
    }
}
