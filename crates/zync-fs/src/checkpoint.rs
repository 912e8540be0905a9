//! The SHA-256 of a big file written by zync, without hashing again the windows it shares with
//! the version it replaces (docs/ARCHITECTURE.md, "Checkpoints").
//!
//! While a file of at least [`CHECKPOINT_MIN`] bytes is written, [`CheckedSha256`] keeps, at
//! the end of each window of [`WINDOW`] bytes, the window's XXH3-128 and the SHA-256 state
//! after it: the content's [`Checkpoints`], which the client stores with the content's sha256.
//! When a later version of the file is written (rebuilt from a delta, say), the checkpoints of
//! the version it replaces come along: as long as each window written has the XXH3-128 of the
//! same window of that version, the window is only XXH3-hashed, and the SHA-256 goes on from
//! the state after the last window that matched. An edit in the middle of a big file then
//! costs the SHA-256 of its second half, and an append only that of the new tail.
//!
//! What the comparison with E's sha256 then rests on: a skipped window holds the bytes of the
//! older version's window (XXH3-128 keyed with the client's secret [`WindowKey`]: one in 2^128
//! for an accidental difference, and without the key, which only the client and the daemon it
//! authenticated hold, there is no known way to make one on purpose), and that window's
//! SHA-256 state was computed from those bytes when the older version was written.
//! Every byte from the first window that differs on is hashed with SHA-256. A delta that
//! rebuilt the wrong bytes (MD4 block sums can collide) is still caught: the digest is then of
//! the bytes written, not of E's.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::digest::generic_array::{typenum::U64, GenericArray};
use xxhash_rust::xxh3::Xxh3;

/// Bytes per window: the windows of GET_DELTA's hashes, so that a window E found unchanged
/// is one copy of the same window of R's version.
pub const WINDOW: u64 = zync_proto::MAX_HASH_WINDOW as u64;

/// Files at least this big are written with checkpoints.
pub const CHECKPOINT_MIN: u64 = 2 * WINDOW;

/// Bytes one checkpoint takes in [`Checkpoints::to_bytes`]: XXH3-128, then eight state words.
const STORED: usize = 16 + 32;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Bytes of a [`WindowKey`]: an XXH3 secret, sent with GET_WINDOWS.
const KEY_LEN: usize = zync_proto::GetWindows::KEY_LEN;

/// The secret the windows' XXH3-128 is keyed with: random, made once per client and kept in
/// its state. With XXH3's published default secret, two windows with the same hash are easy
/// to make on purpose (a change in one 8-byte lane that a change in another cancels), so a
/// file planted at a path on R could pass a skipped window for the one its state was computed
/// from; keyed with a secret that only the client and the daemons it authenticated know
/// (GET_WINDOWS carries it, so E can hash its windows the same way), they cannot be made to
/// by anyone else. A daemon gains nothing by knowing it: it already decides which sha256 the
/// client accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct WindowKey([u8; KEY_LEN]);

impl WindowKey {
    /// A new random key.
    ///
    /// # Errors
    ///
    /// When the system has no random bytes to give.
    pub fn random() -> io::Result<WindowKey> {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key)
            .map_err(|e| io::Error::other(format!("cannot get random bytes: {e}")))?;
        Ok(WindowKey(key))
    }

    /// A key stored with [`WindowKey::as_bytes`]; `None` for bytes of another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<WindowKey> {
        bytes.try_into().ok().map(WindowKey)
    }

    /// The key's bytes, to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WindowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WindowKey(..)")
    }
}

/// One window's XXH3-128, and the SHA-256 state after the file's bytes up to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    xxh3: u128,
    state: [u32; 8],
}

/// The checkpoints of one content, window by window from the start (whole windows only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoints(Vec<Checkpoint>);

impl Checkpoints {
    /// How many whole windows they cover.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when they cover no window.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keyed XXH3-128 of whole window `number` (from 0), if they cover it: what
    /// [`keyed_window_hashes`] gives for the same bytes with the same key.
    pub fn window_hash(&self, number: usize) -> Option<u128> {
        self.0.get(number).map(|c| c.xxh3)
    }

    /// The stored form: per window its XXH3-128 and state, big-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * STORED);
        for c in &self.0 {
            out.extend_from_slice(&c.xxh3.to_be_bytes());
            for word in c.state {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        out
    }

    /// Reads [`Checkpoints::to_bytes`]; `None` when `bytes` is not a whole number of them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Checkpoints> {
        if !bytes.len().is_multiple_of(STORED) {
            return None;
        }
        bytes
            .chunks_exact(STORED)
            .map(|c| {
                let mut state = [0u32; 8];
                for (word, b) in state.iter_mut().zip(c[16..].chunks_exact(4)) {
                    *word = u32::from_be_bytes(b.try_into().ok()?);
                }
                Some(Checkpoint {
                    xxh3: u128::from_be_bytes(c[..16].try_into().ok()?),
                    state,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Checkpoints)
    }
}

/// The XXH3-128 of each window of `window` bytes of what `reader` yields (the last one may be
/// shorter), keyed with `key`: with a window of [`WINDOW`], the hashes that the checkpoints of
/// the same bytes written with the same key hold ([`Checkpoints::window_hash`]). The daemon
/// answers GET_WINDOWS with them. Returns the bytes read and the hashes, 16 bytes each,
/// big-endian.
///
/// # Errors
///
/// A read error.
pub fn keyed_window_hashes(
    mut reader: impl io::Read,
    window: u64,
    key: &WindowKey,
) -> io::Result<(u64, Vec<u8>)> {
    let window = window.max(1);
    let mut xxh3 = Xxh3::with_secret(key.0);
    let mut buf = vec![0u8; (256 << 10).min(window) as usize];
    let (mut size, mut in_window) = (0u64, 0u64);
    let mut hashes = Vec::new();
    loop {
        let want = (window - in_window).min(buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        xxh3.update(&buf[..n]);
        size += n as u64;
        in_window += n as u64;
        if in_window == window {
            hashes.extend_from_slice(&xxh3.digest128().to_be_bytes());
            xxh3.reset();
            in_window = 0;
        }
    }
    if in_window > 0 {
        hashes.extend_from_slice(&xxh3.digest128().to_be_bytes());
    }
    Ok((size, hashes))
}

/// How the windows of what is written are followed.
#[derive(Debug)]
enum Mode {
    /// Every byte is hashed with SHA-256.
    Hash,
    /// So far every window matched the older version's: only XXH3 until the window ends.
    Skip(Vec<Checkpoint>),
    /// A window did not match: SHA-256 must go on from its start, which the caller reads back
    /// ([`CheckedSha256::catch_up`]).
    Behind,
}

/// The windows' part of [`CheckedSha256`].
struct Windows {
    /// The current window, so far.
    xxh3: Xxh3,
    /// The checkpoints of what was written, window by window.
    made: Vec<Checkpoint>,
    mode: Mode,
}

/// A streaming SHA-256, optionally with [`Checkpoints`] (see the module documentation).
pub struct CheckedSha256 {
    state: [u32; 8],
    /// Bytes compressed into `state`: a multiple of 64, and of [`WINDOW`] while skipping.
    hashed: u64,
    /// Bytes after `hashed` not compressed yet (fewer than 64).
    block: [u8; 64],
    filled: usize,
    /// Bytes given to [`CheckedSha256::update`].
    fed: u64,
    /// Boxed: a download waiting in the queue holds its hasher, and most never keep windows.
    windows: Option<Box<Windows>>,
}

impl std::fmt::Debug for CheckedSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedSha256")
            .field("hashed", &self.hashed)
            .field("fed", &self.fed)
            .field("checkpoints", &self.windows.as_ref().map(|w| w.made.len()))
            .finish_non_exhaustive()
    }
}

impl Default for CheckedSha256 {
    fn default() -> Self {
        CheckedSha256::new()
    }
}

impl CheckedSha256 {
    /// A plain SHA-256, without checkpoints.
    pub fn new() -> CheckedSha256 {
        CheckedSha256 {
            state: INITIAL,
            hashed: 0,
            block: [0; 64],
            filled: 0,
            fed: 0,
            windows: None,
        }
    }

    /// Keeps checkpoints of what is written from now on, their window hashes keyed with
    /// `key`, and skips the SHA-256 of the windows that match `prior`'s (those of the version
    /// being replaced, made with the same key). Only before the first byte; later it changes
    /// nothing.
    pub fn keep_checkpoints(&mut self, prior: Option<&Checkpoints>, key: &WindowKey) {
        if self.fed > 0 {
            return;
        }
        let mode = match prior {
            Some(prior) if !prior.is_empty() => Mode::Skip(prior.0.clone()),
            _ => Mode::Hash,
        };
        self.windows = Some(Box::new(Windows {
            xxh3: Xxh3::with_secret(key.0),
            made: Vec::new(),
            mode,
        }));
    }

    /// Feeds the next bytes of the file. While a window is skipped, they are only XXH3-hashed;
    /// when it turns out not to match, [`CheckedSha256::behind`] says from where to read back.
    pub fn update(&mut self, data: &[u8]) {
        self.fed += data.len() as u64;
        match self.windows.as_deref().map(|w| &w.mode) {
            Some(Mode::Skip(_)) => self.skip(data),
            Some(Mode::Behind) => {}
            Some(Mode::Hash) | None => self.hash(data),
        }
    }

    /// The offset from which the bytes written must be read back and given to
    /// [`CheckedSha256::catch_up`] before the digest can be taken (`at_end`: all of the file
    /// has been fed), if any.
    pub fn behind(&self, at_end: bool) -> Option<u64> {
        match &self.windows.as_ref()?.mode {
            Mode::Behind => Some(self.hashed),
            Mode::Skip(_) if at_end && self.fed > self.hashed => Some(self.hashed),
            _ => None,
        }
    }

    /// Reads back from `file` (which holds the bytes fed, from offset 0) what SHA-256 has not
    /// seen yet, and hashes it: from then on every byte is hashed.
    ///
    /// # Errors
    ///
    /// A read error; `UnexpectedEof` when the file is shorter than what was fed.
    pub fn catch_up(&mut self, file: &File) -> io::Result<()> {
        let Some(windows) = &mut self.windows else {
            return Ok(());
        };
        windows.mode = Mode::Hash;
        windows.xxh3.reset();
        let mut buf = vec![0u8; 256 * 1024];
        let mut at = self.hashed;
        while at < self.fed {
            let want = (self.fed - at).min(buf.len() as u64) as usize;
            let n = file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.hash(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }

    /// The digest as 64 lowercase hex characters, and the checkpoints of what was fed (when
    /// they were kept). Call [`CheckedSha256::catch_up`] first when
    /// [`CheckedSha256::behind`]`(true)` says so; otherwise the bytes not caught up are
    /// missing from the digest (which then matches no file).
    pub fn finish(mut self) -> (String, Option<Checkpoints>) {
        let bits = (self.hashed + self.filled as u64) * 8;
        let mut tail = [0u8; 128];
        tail[..self.filled].copy_from_slice(&self.block[..self.filled]);
        tail[self.filled] = 0x80;
        let n = if self.filled < 56 { 64 } else { 128 };
        tail[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &tail[..n]);
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        let checkpoints = self.windows.map(|w| Checkpoints(w.made));
        (crate::hash::to_hex(&digest), checkpoints)
    }

    /// SHA-256 (and the windows' XXH3 and checkpoints, when kept) of the next bytes.
    fn hash(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let at = self.hashed + self.filled as u64;
            let take = match &self.windows {
                Some(_) => (WINDOW - at % WINDOW).min(data.len() as u64) as usize,
                None => data.len(),
            };
            let (piece, rest) = data.split_at(take);
            self.sha256(piece);
            if let Some(windows) = &mut self.windows {
                windows.xxh3.update(piece);
                if (at + take as u64).is_multiple_of(WINDOW) {
                    // A window ends on a block's end: `state` has all of it.
                    windows.made.push(Checkpoint {
                        xxh3: windows.xxh3.digest128(),
                        state: self.state,
                    });
                    windows.xxh3.reset();
                }
            }
            data = rest;
        }
    }

    /// XXH3 of the next bytes of a window being skipped: at its end, SHA-256 jumps over it if
    /// it matches the older version's window, else falls behind.
    fn skip(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(windows) = &mut self.windows else {
                return;
            };
            let Mode::Skip(prior) = &windows.mode else {
                // The rest of the window after a switch to hashing, or nothing once behind.
                if matches!(windows.mode, Mode::Hash) {
                    self.hash(data);
                }
                return;
            };
            // `hashed` is the start of the window being skipped.
            let index = (self.hashed / WINDOW) as usize;
            let in_window = self.fed - data.len() as u64 - self.hashed;
            let take = (WINDOW - in_window).min(data.len() as u64) as usize;
            windows.xxh3.update(&data[..take]);
            data = &data[take..];
            if in_window + (take as u64) < WINDOW {
                continue;
            }
            match prior.get(index) {
                Some(old) if old.xxh3 == windows.xxh3.digest128() => {
                    let old = *old;
                    windows.made.push(old);
                    windows.xxh3.reset();
                    self.state = old.state;
                    self.hashed += WINDOW;
                    if prior.len() <= index + 1 {
                        // Nothing older to match beyond: hashed from here, as it comes.
                        windows.mode = Mode::Hash;
                    }
                }
                _ => windows.mode = Mode::Behind,
            }
        }
    }

    /// Plain SHA-256 of the next bytes.
    fn sha256(&mut self, mut data: &[u8]) {
        if self.filled > 0 {
            let take = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            compress(&mut self.state, &self.block);
            self.hashed += 64;
            self.filled = 0;
        }
        let whole = data.len() / 64 * 64;
        compress(&mut self.state, &data[..whole]);
        self.hashed += whole as u64;
        let rest = &data[whole..];
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }
}

/// SHA-256's compression of whole 64-byte blocks (`data.len()` a multiple of 64), through
/// `sha2` (SHA-NI where the CPU has it), straight from `data`.
fn compress(state: &mut [u32; 8], data: &[u8]) {
    let n = data.len() / 64;
    // SAFETY: `GenericArray<u8, U64>` is `#[repr(transparent)]` over an array of 64 `u8`
    // (size 64, alignment 1), so the first `n * 64` bytes of `data` are `n` such blocks; the
    // slice borrows `data` and does not outlive it. The `block-buffer` crate that `sha2`
    // itself uses casts its input the same way.
    let blocks: &[GenericArray<u8, U64>] =
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), n) };
    sha2::compress256(state, blocks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::testkit::noise as bytes;

    /// The key of these tests' checkpoints.
    fn key() -> WindowKey {
        WindowKey::from_bytes(&bytes(KEY_LEN, 99)).expect("a key's length")
    }

    /// Feeds `data` in pieces of `piece` bytes, writing them to a temp file as AtomicFile does
    /// and catching up as asked; returns the digest, the checkpoints and how many bytes were
    /// read back.
    fn write(data: &[u8], piece: usize, prior: Option<&Checkpoints>) -> (String, Checkpoints, u64) {
        let mut file = tempfile::tempfile().unwrap();
        let mut h = CheckedSha256::new();
        h.keep_checkpoints(prior, &key());
        let mut reread = 0;
        for p in data.chunks(piece.max(1)) {
            h.update(p);
            file.write_all(p).unwrap();
            if let Some(from) = h.behind(false) {
                reread += h.fed - from;
                h.catch_up(&file).unwrap();
            }
        }
        if let Some(from) = h.behind(true) {
            reread += h.fed - from;
            h.catch_up(&file).unwrap();
        }
        let (digest, checkpoints) = h.finish();
        (digest, checkpoints.unwrap(), reread)
    }

    #[test]
    fn keyed_window_hashes_are_those_the_checkpoints_hold() {
        let len = 2 * WINDOW as usize + 12_345;
        let data = bytes(len, 5);
        let (_, written, _) = write(&data, 1 << 20, None);
        // A later version that skipped its first window keeps the same hashes.
        let mut edited = data.clone();
        edited[WINDOW as usize + 9] ^= 1;
        let (_, rewritten, _) = write(&edited, 1 << 20, Some(&written));
        for (content, checkpoints) in [(&data, &written), (&edited, &rewritten)] {
            let (size, hashes) =
                keyed_window_hashes(&content[..], WINDOW, &key()).expect("read from memory");
            assert_eq!(size, len as u64);
            // Three windows, the last one short: the checkpoints keep whole windows only.
            assert_eq!(hashes.len(), 3 * 16);
            assert_eq!(checkpoints.len(), 2);
            for (number, hash) in hashes.chunks_exact(16).take(2).enumerate() {
                let hash = u128::from_be_bytes(hash.try_into().expect("16 bytes"));
                assert_eq!(
                    checkpoints.window_hash(number),
                    Some(hash),
                    "window {number}"
                );
            }
            assert_eq!(checkpoints.window_hash(2), None);
        }
        assert_eq!(written.window_hash(0), rewritten.window_hash(0));
        assert_ne!(written.window_hash(1), rewritten.window_hash(1));
        // Another key, other hashes.
        let other = WindowKey::from_bytes(&bytes(KEY_LEN, 7)).expect("a key's length");
        let (_, theirs) = keyed_window_hashes(&data[..], WINDOW, &other).expect("read");
        assert_ne!(
            u128::from_be_bytes(theirs[..16].try_into().expect("16 bytes")),
            written.window_hash(0).expect("a window")
        );
    }

    #[test]
    fn the_digest_is_sha256_for_every_length_and_way_of_feeding() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 4095, 70_000] {
            let data = bytes(len, len as u64);
            let want = crate::hash_bytes(&data);
            for piece in [1, 7, 64, 1000, len.max(1)] {
                let mut h = CheckedSha256::new();
                data.chunks(piece).for_each(|p| h.update(p));
                assert_eq!(h.finish().0, want, "len {len}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn checkpoints_are_each_whole_windows_hash_and_state_and_survive_storage() {
        let data = bytes(2 * WINDOW as usize + 1000, 1);
        let (digest, cps, reread) = write(&data, 100_000, None);
        assert_eq!(digest, crate::hash_bytes(&data));
        assert_eq!(reread, 0);
        assert_eq!(cps.len(), 2, "whole windows only");
        let w = WINDOW as usize;
        assert_eq!(
            cps.0[1].xxh3,
            xxhash_rust::xxh3::xxh3_128_with_secret(&data[w..2 * w], key().as_bytes())
        );
        // The state after a window is that of SHA-256 over the bytes up to its end.
        let mut resumed = CheckedSha256::new();
        resumed.state = cps.0[0].state;
        resumed.hashed = WINDOW;
        resumed.update(&data[w..]);
        assert_eq!(resumed.finish().0, digest);
        assert_eq!(Checkpoints::from_bytes(&cps.to_bytes()), Some(cps.clone()));
        assert_eq!(Checkpoints::from_bytes(&cps.to_bytes()[1..]), None);
    }

    #[test]
    fn windows_that_match_the_older_versions_are_not_hashed_again_and_the_digest_is_the_same() {
        let w = WINDOW as usize;
        let old = bytes(4 * w + 5000, 2);
        let (_, prior, _) = write(&old, 1 << 20, None);
        // An edit in the third window: the first two are skipped, the third read back.
        let mut new = old.clone();
        new[2 * w + 10..2 * w + 20].copy_from_slice(b"0123456789");
        for piece in [1 << 20, 3 << 20, 777_777, w] {
            let (digest, cps, reread) = write(&new, piece, Some(&prior));
            assert_eq!(digest, crate::hash_bytes(&new), "pieces of {piece}");
            assert!(
                reread >= WINDOW && reread < WINDOW + (piece as u64),
                "{reread}"
            );
            let (_, fresh, _) = write(&new, piece, None);
            assert_eq!(
                cps, fresh,
                "the new content's checkpoints, as if hashed whole"
            );
        }
        // The same content: every whole window skipped, the tail hashed as it comes.
        let (digest, _, reread) = write(&old, 1 << 20, Some(&prior));
        assert_eq!(digest, crate::hash_bytes(&old));
        assert_eq!(reread, 0);
        // Cut one byte into a window that would have matched: that byte is read back.
        let (digest, _, reread) = write(&old[..2 * w + 1], 1 << 20, Some(&prior));
        assert_eq!(digest, crate::hash_bytes(&old[..2 * w + 1]));
        assert_eq!(reread, 1);
        // Appended to: hashed from the end of the older version's last window, as it comes.
        let mut longer = old.clone();
        longer.extend(bytes(3 * w, 3));
        let (digest, _, _) = write(&longer, 1 << 20, Some(&prior));
        assert_eq!(digest, crate::hash_bytes(&longer));
        // Shorter than the windows that matched, or cut inside one.
        for len in [w, 2 * w, 2 * w + 1, 100] {
            let (digest, _, _) = write(&old[..len], 1 << 20, Some(&prior));
            assert_eq!(digest, crate::hash_bytes(&old[..len]), "first {len} bytes");
        }
    }

    #[test]
    fn a_window_that_differs_from_the_older_version_is_never_skipped() {
        let w = WINDOW as usize;
        let old = bytes(3 * w, 4);
        let (_, prior, _) = write(&old, 1 << 20, None);
        // One byte changed in the first window: nothing can be skipped.
        let mut new = old.clone();
        new[w - 1] ^= 1;
        let (digest, _, reread) = write(&new, 1 << 20, Some(&prior));
        assert_eq!(digest, crate::hash_bytes(&new));
        assert_eq!(reread, WINDOW, "read back from the start");
        // Checkpoints that lie (a state not of those bytes): the digest is not the content's,
        // so the file is refused, never taken for E's.
        let mut forged = prior.clone();
        forged.0[2].state[0] ^= 1;
        let (digest, _, _) = write(&old, 1 << 20, Some(&forged));
        assert_ne!(digest, crate::hash_bytes(&old));
    }

    /// XXH3's default secret is published, and with it two windows of the same hash are easy
    /// to make: in its long-input loop a lane whose low 32 bits equal the secret's adds only
    /// itself, so +d in one stripe and -d in another leave the digest as it was. Keyed with the
    /// client's secret, such a window is not taken for the older version's.
    #[test]
    fn a_window_made_to_collide_under_the_default_secret_is_not_skipped() {
        let w = WINDOW as usize;
        // The first 16 bytes of XXH3's default secret, as little-endian words.
        let (k0, k1) = (0xbe4b_a423_396c_feb8_u64, 0x1cad_21f7_2c81_017c_u64);
        let mut old = vec![0u8; 3 * w];
        let (v0, v1) = (
            (k0 & 0xffff_ffff) | (5 << 32),
            (k1 & 0xffff_ffff) | (9 << 32),
        );
        old[0..8].copy_from_slice(&v0.to_le_bytes());
        old[64..72].copy_from_slice(&v1.to_le_bytes());
        let mut new = old.clone();
        let d = 3u64 << 32;
        new[0..8].copy_from_slice(&v0.wrapping_add(d).to_le_bytes());
        new[64..72].copy_from_slice(&v1.wrapping_sub(d).to_le_bytes());
        assert_ne!(old[..w], new[..w]);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_128(&old[..w]),
            xxhash_rust::xxh3::xxh3_128(&new[..w]),
            "the windows collide under the default secret"
        );
        let (_, prior, _) = write(&old, 1 << 20, None);
        let (digest, _, reread) = write(&new, 1 << 20, Some(&prior));
        assert_eq!(
            digest,
            crate::hash_bytes(&new),
            "the digest is of the bytes written"
        );
        assert_eq!(reread, WINDOW, "the first window was hashed, not skipped");
    }
}
