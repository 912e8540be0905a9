//! Delta transfer: R sends E the [`signature`] of its old version of a file, E answers
//! with the [`diff`] of its new version against it, and R rebuilds the new version with
//! [`apply`]. A small edit in a big file then costs a signature and the edited bytes on the wire,
//! instead of the whole file.
//!
//! The signature and the matching are `fast_rsync`'s (the librsync algorithm with MD4 strong
//! sums). MD4 is not collision resistant and the strong sums are cut short, so a delta can
//! rebuild the wrong bytes: the caller MUST check the sha256 of the result before using it
//! (invariant 1), and fall back to a whole download when it differs.
//!
//! Memory stays bounded whatever the file size: the signature is computed through one buffer of
//! a few hundred KiB, the new file is diffed in windows of a few MiB (a few at a time, in
//! parallel), and [`apply`] streams its output record by record, reading the base file with
//! positioned reads (see [`apply`] for why not a memory map).
//!
//! The diff computes a rolling checksum and, wherever it matches, an MD4 at every block of the
//! new file: for a small edit in a big file nearly all of its cost is spent on content R
//! already has. So R also sends the hashes of its version's windows
//! ([`signature_and_windows`], from the same read), and [`diff_file`] turns each window of the
//! new file with the same length and hash at the same offset into one copy command, diffing
//! only the others.
//!
//! # The delta stream
//!
//! ```text
//! stream = "ZYD1"  window:u32be  record*  0:u32be
//! record = len:u32be (1 ..= max_record(window))  a fast_rsync delta of len bytes
//! ```
//!
//! Each record is a complete `fast_rsync` delta (its own magic and end command) rebuilding the
//! next at most `window` bytes of the new file; its copy commands address the whole base file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use fast_rsync::{IndexedSignature, Signature, SignatureOptions};

use xxhash_rust::xxh3::Xxh3Default;
use zync_proto::{DeltaPlan, WindowHashes, MAX_HASH_WINDOW, MAX_WINDOW_HASHES, MIN_HASH_WINDOW};

use crate::atomic::FsError;

/// The smallest block size [`signature`] uses: small files get few, cheap blocks.
pub const MIN_BLOCK: u32 = 4 << 10;

/// [`signature`] makes blocks big enough that a file has at most this many, so the signature
/// stays under 400 KiB (12 bytes a block) up to 128 MiB of blocks of 16 MiB, i.e. 512 GiB.
pub const MAX_BLOCKS: u64 = 32 << 10;

/// The most bytes of each block's MD4 sum a signature keeps ([`strong_sum_for`] picks fewer
/// for most files).
pub const STRONG_SUM: u32 = 8;

/// The least bytes of each block's MD4 sum a signature keeps (rsync's `SHORT_SUM_LENGTH`).
pub const MIN_STRONG_SUM: u32 = 2;

/// rsync's `BLOCKSUM_BIAS`: the strong sums are sized so that a false block match in a whole
/// file has odds of about one in 2^10.
const BLOCKSUM_BIAS: u32 = 10;

/// How much of a file is hashed or diffed at a time (whole blocks); the memory bound.
pub const WINDOW: usize = 8 << 20;

/// The smallest block size accepted in a signature from a peer: smaller blocks would let a
/// delta record grow to many times its window.
pub const MIN_SIGNATURE_BLOCK: u32 = 256;

/// The largest block size accepted in a signature (and the largest [`signature`] makes).
pub const MAX_SIGNATURE_BLOCK: u32 = 16 << 20;

/// The largest window [`apply`] accepts: a record never rebuilds more than this.
pub const MAX_WINDOW: u32 = 64 << 20;

/// The first bytes of a delta stream.
pub const STREAM_MAGIC: [u8; 4] = *b"ZYD1";

/// Why a delta could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Reading a file (the new file for a diff, the base for apply) failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The signature is not one this module can diff against (from the network: a client bug or
    /// corruption). Retrying with the same signature cannot help.
    #[error("bad signature: {0}; compute it again with zync_fs::delta::signature")]
    BadSignature(String),
    /// The window hashes sent with the signature (GET_DELTA's `windows`) do not fit it or the
    /// limits. Retrying with the same hashes cannot help.
    #[error(
        "bad window hashes: {0}; compute them again with zync_fs::delta::signature_and_windows"
    )]
    BadWindows(String),
    /// The delta stream is malformed, or does not fit the base or the expected length.
    /// Retrying cannot help: download the whole file instead.
    #[error("bad delta: {0}; download the whole file instead")]
    BadDelta(String),
    /// The caller's sink or output refused the bytes.
    #[error("cannot pass on the delta's bytes: {0}")]
    Output(#[source] io::Error),
}

impl DeltaError {
    /// True when retrying the same operation cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            DeltaError::Fs(e) => e.is_permanent(),
            DeltaError::BadSignature(_) | DeltaError::BadWindows(_) | DeltaError::BadDelta(_) => {
                true
            }
            DeltaError::Output(_) => false,
        }
    }
}

/// The block size [`signature`] uses for a file of `len` bytes: about the square root of the
/// size, as rsync chooses it (so the signature grows with the square root of the file, not
/// with the file), as a power of two of at least [`MIN_BLOCK`], large enough for at most
/// [`MAX_BLOCKS`] blocks, and at most [`MAX_SIGNATURE_BLOCK`].
pub fn block_size_for(len: u64) -> u32 {
    let root = len.isqrt().next_power_of_two();
    let few_enough = len.div_ceil(MAX_BLOCKS).next_power_of_two();
    root.max(few_enough)
        .clamp(u64::from(MIN_BLOCK), u64::from(MAX_SIGNATURE_BLOCK)) as u32
}

/// The strong sum length [`signature`] uses for a file of `len` bytes in blocks of `block`:
/// rsync's `sum_sizes_sqroot` rule, which adds bytes as the file has more positions where a
/// block could falsely match (`BLOCKSUM_BIAS + 2 log2(len) - log2(block)` bits, less the 32 of
/// the rolling sum), between [`MIN_STRONG_SUM`] and [`STRONG_SUM`]. A false match is caught
/// by the sha256 check of the rebuilt file and costs a whole download, never a wrong file.
pub fn strong_sum_for(len: u64, block: u32) -> u32 {
    let bits = (BLOCKSUM_BIAS + 2 * len.max(1).ilog2()).saturating_sub(block.max(1).ilog2());
    (bits + 1)
        .saturating_sub(32)
        .div_ceil(8)
        .clamp(MIN_STRONG_SUM, STRONG_SUM)
}

/// A window of whole blocks, at least [`WINDOW`] and at least four blocks (so a shifted block
/// can still match inside it).
fn window_for(block: u32) -> usize {
    whole_blocks(WINDOW, block)
}

/// At least `target` bytes and at least four blocks, in whole blocks.
fn whole_blocks(target: usize, block: u32) -> usize {
    let block = block as usize;
    target.div_ceil(block).max(4) * block
}

/// How much new content [`diff_file`] diffs at a time where windows changed (whole blocks; see
/// [`whole_blocks`]): smaller than [`WINDOW`], so the few windows held while they are diffed in
/// parallel take little memory; the records' stitching makes the cut cost nothing on the wire.
const CHANGED_PIECE: usize = 512 << 10;

/// How much of a window [`diff_file`] reads at a time to hash it.
const HASH_READ: usize = 256 << 10;

/// The window hashes of GET_DELTA must fit the delta stream's records: one copy command
/// rebuilds a whole window, and a record may rebuild at most the stream's window.
const _: () = assert!(MAX_HASH_WINDOW as usize <= WINDOW && WINDOW <= MAX_WINDOW as usize);

/// The longest record [`apply`] accepts for a window: a record of our [`diff`] is at most its
/// window plus a few bytes of commands (blocks of at least [`MIN_SIGNATURE_BLOCK`] make a copy
/// command much shorter than what it copies); this leaves room and still bounds memory.
pub fn max_record(window: u32) -> usize {
    2 * window as usize + 4096
}

fn options(block: u32, strong: u32) -> SignatureOptions {
    SignatureOptions {
        block_size: block,
        crypto_hash_size: strong,
    }
}

/// The serialized header of an MD4 signature (magic, block size, strong sum length), taken from
/// the library itself rather than restated here.
fn signature_header(block: u32, strong: u32) -> Vec<u8> {
    Signature::calculate(
        &[],
        SignatureOptions {
            block_size: block,
            crypto_hash_size: strong,
        },
    )
    .into_serialized()
}

/// Opens a regular file for reading without following a symlink (`O_NOFOLLOW`) or blocking on
/// a fifo (`O_NONBLOCK`).
fn open_regular(path: &Path, what: &'static str) -> Result<(File, u64), FsError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FsError::io(what, path, e))?;
    let meta = file.metadata().map_err(|e| FsError::io(what, path, e))?;
    if !meta.is_file() {
        return Err(FsError::io(
            what,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    Ok((file, meta.len()))
}

/// Opens R's version of a file as the base of a delta, and its size: a regular file, never
/// through a symlink, never blocking on a fifo.
///
/// # Errors
/// When it cannot be opened or is not a regular file.
pub fn open_base(path: &Path) -> Result<(File, u64), FsError> {
    open_regular(path, "open as a delta's base")
}

/// Reads until `buf` is full or the reader is exhausted; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The `fast_rsync` signature of the file at `path` (R's base version), with a block size and
/// strong sum length chosen from its size ([`block_size_for`], [`strong_sum_for`]): about
/// 115 KiB for 256 MiB, at most about 400 KiB for files up to 512 GiB. Memory: one read buffer
/// of [`SIGNATURE_READ`] (or one block, when blocks are larger), and the signature.
///
/// # Errors
/// When the file cannot be opened (a symlink is refused, not followed), is not a regular file,
/// or a read fails.
pub fn signature(path: &Path) -> Result<Vec<u8>, FsError> {
    let (file, len) = open_regular(path, "open for a signature")?;
    signature_of(file, len).map_err(|e| FsError::io("read for a signature", path, e))
}

/// The signature of what `reader` yields, with the block size for `len` bytes (a hint: the
/// signature covers whatever the reader yields). Computed in pieces of whole blocks, one at a
/// time; the serialized signature is a header and one entry per block, so the pieces' entries
/// concatenate to exactly the whole file's signature.
///
/// # Errors
/// When a read fails.
pub fn signature_of(reader: impl Read, len: u64) -> io::Result<Vec<u8>> {
    signature_parts(reader, len, None)
}

/// [`signature`], and the hashes of the file's windows for GET_DELTA's `windows`, from the same
/// one read of the file: the daemon sends each window of its version that has the same length
/// and hash at the same offset as one copy, without diffing it ([`diff_file`]). The hashes are
/// `None` for a file too big to list them (over [`MAX_WINDOW_HASHES`] windows of
/// [`MAX_HASH_WINDOW`]).
///
/// # Errors
/// As [`signature`].
pub fn signature_and_windows(path: &Path) -> Result<(Vec<u8>, Option<WindowHashes>), FsError> {
    let (file, len) = open_regular(path, "open for a signature")?;
    signature_and_windows_of(file, len).map_err(|e| FsError::io("read for a signature", path, e))
}

/// [`signature_of`] and the window hashes of [`signature_and_windows`], of what `reader`
/// yields; `len` is a hint as for [`signature_of`], the hashes cover what was read.
///
/// # Errors
/// When a read fails.
pub fn signature_and_windows_of(
    reader: impl Read,
    len: u64,
) -> io::Result<(Vec<u8>, Option<WindowHashes>)> {
    let mut hasher = WindowHasher::new(MAX_HASH_WINDOW);
    let signature = signature_parts(reader, len, Some(&mut hasher))?;
    Ok((signature, hasher.finish()))
}

/// How much of the base [`signature_parts`] reads at a time (whole blocks, at least one): small
/// enough that the piece is still in the CPU's cache when the window hasher reads it after the
/// strong sums, and that the client's memory does not grow with the file.
const SIGNATURE_READ: usize = 256 << 10;

/// [`signature_of`], feeding what it reads to `hasher` too.
///
/// One buffer of [`SIGNATURE_READ`] (whole blocks) is read, summed and hashed at a time, on
/// this thread: the sums of consecutive pieces of whole blocks concatenate to the whole file's
/// signature. Hashing pieces in parallel saved wall time, not CPU, and held a few 8 MiB
/// windows (most of the client's peak memory).
fn signature_parts(
    reader: impl Read,
    len: u64,
    hasher: Option<&mut WindowHasher>,
) -> io::Result<Vec<u8>> {
    let block = block_size_for(len);
    signature_blocks(reader, len, block, strong_sum_for(len, block), hasher)
}

/// [`signature_parts`] with the block size and strong sum length given; `len` is a hint of how
/// many bytes `reader` yields.
fn signature_blocks(
    mut reader: impl Read,
    len: u64,
    block: u32,
    strong: u32,
    mut hasher: Option<&mut WindowHasher>,
) -> io::Result<Vec<u8>> {
    let header = signature_header(block, strong).len();
    let blocks = len.div_ceil(u64::from(block));
    let entry = 4 + strong as usize;
    let mut out = Vec::with_capacity(header + entry * blocks.min(MAX_BLOCKS * 2) as usize);
    // Every piece but the last is whole blocks, so its entries line up with the file's.
    let whole = blocks.max(1) * u64::from(block);
    let size = signature_piece(block).min(whole as usize);
    let mut buf = vec![0u8; size];
    let mut first = true;
    loop {
        let filled = read_full(&mut reader, &mut buf)?;
        let piece = &buf[..filled];
        let sig = Signature::calculate(piece, options(block, strong));
        if let Some(hasher) = hasher.as_deref_mut() {
            hasher.update(piece);
        }
        let bytes = sig.serialized();
        out.extend_from_slice(if first { bytes } else { &bytes[header..] });
        first = false;
        if filled < size {
            return Ok(out);
        }
    }
}

/// The piece [`signature_parts`] reads at a time for blocks of `block` bytes: [`SIGNATURE_READ`]
/// in whole blocks, at least one block.
fn signature_piece(block: u32) -> usize {
    let block = block.max(1) as usize;
    SIGNATURE_READ.div_ceil(block) * block
}

/// The signature of some windows of R's version of a file (GET_DELTA's `plan`): of the
/// windows `covers` (by number, increasing) of `window` bytes of `base`, read one after another
/// as if they were one file, with the block size and strong sum length of the whole file's
/// [`signature`] (`base_size` bytes). Only those windows are read.
///
/// # Errors
/// [`DeltaError::BadWindows`] when the windows are not whole blocks or `covers` does not fit
/// `base_size`; [`DeltaError::Fs`] when a read fails or the file is shorter than `base_size`.
pub fn signature_of_windows(
    base: &File,
    path: &Path,
    base_size: u64,
    window: u32,
    covers: &[u32],
) -> Result<Vec<u8>, DeltaError> {
    let block = block_size_for(base_size);
    let virtual_base = VirtualBase::new(window, base_size, covers, block)?;
    let reader = Ranges {
        source: base,
        ranges: virtual_base
            .starts
            .iter()
            .zip(&virtual_base.lens)
            .map(|(&start, &len)| (start, start + len))
            .collect(),
        next: 0,
        current: None,
    };
    let mut counted = Counted { reader, read: 0 };
    let strong = strong_sum_for(base_size, block);
    let signature = signature_blocks(&mut counted, virtual_base.len, block, strong, None)
        .map_err(|e| FsError::io("read for a signature", path, e))?;
    if counted.read != virtual_base.len {
        return Err(DeltaError::Fs(FsError::io(
            "read for a signature",
            path,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than the version its windows were kept for",
            ),
        )));
    }
    Ok(signature)
}

/// The windows of R's version that a partial signature covers, as one virtual file: window
/// `covers[k]` is bytes `k * window ..` of it. Copy commands of a diff against that signature
/// address the virtual file; [`VirtualBase::translate`] turns them into offsets of R's file.
#[derive(Debug)]
struct VirtualBase {
    window: u64,
    /// Where each covered window starts in R's file, and its length.
    starts: Vec<u64>,
    lens: Vec<u64>,
    /// The virtual file's length.
    len: u64,
}

impl VirtualBase {
    /// Checks `covers` against a file of `base_size` bytes cut in windows of `window`, and the
    /// windows against blocks of `block` bytes: only the file's last window may be short, so
    /// the virtual file's blocks are the real windows' blocks.
    fn new(
        window: u32,
        base_size: u64,
        covers: &[u32],
        block: u32,
    ) -> Result<VirtualBase, DeltaError> {
        let bad = |why: String| Err(DeltaError::BadWindows(why));
        if !(MIN_HASH_WINDOW..=MAX_HASH_WINDOW).contains(&window) {
            return bad(format!(
                "window of {window} bytes is outside {MIN_HASH_WINDOW} ..= {MAX_HASH_WINDOW}"
            ));
        }
        if !window.is_multiple_of(block) {
            return bad(format!(
                "windows of {window} bytes are not whole blocks of {block} bytes"
            ));
        }
        let count = base_size.div_ceil(u64::from(window));
        check_increasing(covers, count, "covers")?;
        let window = u64::from(window);
        let starts: Vec<u64> = covers.iter().map(|&c| u64::from(c) * window).collect();
        let lens: Vec<u64> = starts
            .iter()
            .map(|&start| (base_size - start).min(window))
            .collect();
        Ok(VirtualBase {
            window,
            len: lens.iter().sum(),
            starts,
            lens,
        })
    }

    /// `record`, with its copy commands moved from the virtual file to R's file (a copy that
    /// spans two covered windows becomes two copies, unless they are next to each other).
    fn translate(&self, record: &[u8]) -> Result<Vec<u8>, DeltaError> {
        let mut out = Vec::with_capacity(record.len() + 32);
        out.extend_from_slice(&DELTA_MAGIC);
        let mut commands = Commands::new(record).map_err(DeltaError::BadDelta)?;
        // A copy not written yet, so that the next one can extend it.
        let mut held: Option<(u64, u64)> = None;
        loop {
            let (_, command) = commands.next().map_err(DeltaError::BadDelta)?;
            match command {
                Command::Copy { offset, len } => {
                    let (mut at, mut left) = (offset, len);
                    while left > 0 {
                        let number = usize::try_from(at / self.window).unwrap_or(usize::MAX);
                        let within = at % self.window;
                        let (Some(&start), Some(&len)) =
                            (self.starts.get(number), self.lens.get(number))
                        else {
                            return Err(DeltaError::BadDelta(format!(
                                "a copy at {at} is beyond the {} bytes signed",
                                self.len
                            )));
                        };
                        if within >= len {
                            return Err(DeltaError::BadDelta(format!(
                                "a copy at {at} is beyond the {} bytes signed",
                                self.len
                            )));
                        }
                        let take = left.min(len - within);
                        held = match held {
                            Some((o, l)) if o + l == start + within => Some((o, l + take)),
                            other => {
                                if let Some((o, l)) = other {
                                    copy_command(o, l, &mut out);
                                }
                                Some((start + within, take))
                            }
                        };
                        at += take;
                        left -= take;
                    }
                }
                other => {
                    if let Some((o, l)) = held.take() {
                        copy_command(o, l, &mut out);
                    }
                    match other {
                        Command::Literal(bytes) => {
                            literal_header(bytes.len() as u64, &mut out);
                            out.extend_from_slice(bytes);
                        }
                        Command::End => {
                            out.push(OP_END);
                            return Ok(out);
                        }
                        Command::Copy { .. } => {}
                    }
                }
            }
        }
    }
}

/// Checks that `numbers` (window numbers of a plan's `what` list) increase and are below
/// `count`, and that there are at most [`MAX_WINDOW_HASHES`] of them.
fn check_increasing(numbers: &[u32], count: u64, what: &str) -> Result<(), DeltaError> {
    if numbers.len() > MAX_WINDOW_HASHES {
        return Err(DeltaError::BadWindows(format!(
            "plan.{what} lists {} windows, over the limit of {MAX_WINDOW_HASHES}",
            numbers.len()
        )));
    }
    if let Some(pair) = numbers.windows(2).find(|pair| pair[0] >= pair[1]) {
        return Err(DeltaError::BadWindows(format!(
            "plan.{what} must increase, but {} is followed by {}",
            pair[0], pair[1]
        )));
    }
    if let Some(&last) = numbers.last().filter(|&&n| u64::from(n) >= count) {
        return Err(DeltaError::BadWindows(format!(
            "plan.{what} names window {last}, but the file has {count} windows"
        )));
    }
    Ok(())
}

/// Byte ranges of a [`ReadAt`], read one after another.
struct Ranges<'a, S: ?Sized> {
    source: &'a S,
    ranges: Vec<(u64, u64)>,
    next: usize,
    current: Option<Range<'a, S>>,
}

impl<S: ReadAt + ?Sized> Read for Ranges<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(range) = &mut self.current {
                let n = range.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
            }
            let Some(&(at, end)) = self.ranges.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.current = Some(Range {
                source: self.source,
                at,
                end,
            });
        }
    }
}

/// A reader that counts what it yields.
struct Counted<R> {
    reader: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A signature from a peer, checked before use.
struct CheckedSignature {
    signature: Signature,
    block: u32,
    /// How many blocks it has entries for.
    blocks: u64,
}

fn check_signature(bytes: &[u8]) -> Result<CheckedSignature, DeltaError> {
    let bad = |why: String| Err(DeltaError::BadSignature(why));
    let reference = signature_header(MIN_BLOCK, STRONG_SUM);
    let header = reference.len();
    if bytes.len() < header {
        return bad(format!(
            "it is {} bytes, shorter than the {header}-byte signature header",
            bytes.len()
        ));
    }
    if bytes[..4] != reference[..4] {
        return bad(format!(
            "it does not start with the MD4 signature magic {:02x?} (found {:02x?})",
            &reference[..4],
            &bytes[..4]
        ));
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (block, strong) = (word(4), word(8));
    if !(MIN_SIGNATURE_BLOCK..=MAX_SIGNATURE_BLOCK).contains(&block) {
        return bad(format!(
            "its block size {block} is outside {MIN_SIGNATURE_BLOCK} ..= {MAX_SIGNATURE_BLOCK}"
        ));
    }
    if !(1..=16).contains(&strong) {
        return bad(format!(
            "its strong sum length {strong} is outside 1 ..= 16 (MD4 has 16 bytes)"
        ));
    }
    let entry = 4 + strong as usize;
    let body = bytes.len() - header;
    if !body.is_multiple_of(entry) {
        return bad(format!(
            "its {body} bytes of block entries are not a whole number of {entry}-byte entries (truncated?)"
        ));
    }
    let signature = Signature::deserialize(bytes.to_vec())
        .map_err(|e| DeltaError::BadSignature(e.to_string()))?;
    Ok(CheckedSignature {
        signature,
        block,
        blocks: (body / entry) as u64,
    })
}

/// The delta of the file at `path` (E's new version) against `signature` (R's base), streamed to
/// `sink` in pieces as each window is diffed. Returns the number of delta bytes produced.
/// See [`diff_reader`].
///
/// # Errors
/// As [`diff_reader`]; also when the file cannot be opened or is not a regular file.
pub fn diff(
    path: &Path,
    signature: &[u8],
    sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, DeltaError> {
    let (file, _) = open_regular(path, "open for a delta")?;
    diff_reader(file, path, signature, sink).map(|(delta, _)| delta)
}

/// The delta of what `new` yields against `signature`, streamed to `sink` one record (one
/// window of the new content) at a time; `path` only names the file in errors. Returns the
/// number of delta bytes produced and the number of bytes read from `new`.
///
/// Memory: one window of the new content and its record per core (at most four windows, under
/// 32 MiB together), and the indexed signature. Each window is diffed against the whole
/// signature, so content that moved anywhere in the file still matches; the unmatched tail of a
/// window (less than a block, which could match together with the start of the next window) is
/// rebuilt by the next window's record instead.
///
/// # Errors
/// [`DeltaError::BadSignature`] for a malformed or unsupported signature (checked before
/// anything is sent to `sink`), [`DeltaError::Fs`] when reading fails,
/// [`DeltaError::Output`] when `sink` fails.
pub fn diff_reader(
    new: impl Read,
    path: &Path,
    signature: &[u8],
    sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u64, u64), DeltaError> {
    diff_windows(new, path, signature, None, lanes(), sink)
}

/// [`diff_reader`], with windows of `blocks` blocks when given (tests use small windows), diffed
/// `lanes` at a time.
///
/// Up to `lanes` windows (see [`lanes`]) are held at a time: read on this thread, diffed on
/// rayon's workers. Each is diffed on its own, starting up to `block - 1` bytes before the new
/// bytes it covers (the end of the previous window, where a block straddling the boundary can
/// start). The records are then stitched in order: a record's unmatched tail, up to
/// `block - 1` bytes, is cut ([`trim_tail`]), and the next record rebuilds from there, the rest
/// of its lead dropped ([`drop_head`]). Every record rebuilds less than `span` bytes, the
/// window the stream's header announces.
///
/// Called on one of rayon's own workers (where waiting for other tasks could starve them), it
/// diffs the windows itself, one at a time; the daemon calls it on a blocking thread of its
/// runtime.
fn diff_windows(
    mut new: impl Read,
    path: &Path,
    signature: &[u8],
    blocks: Option<usize>,
    lanes: usize,
    sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u64, u64), DeltaError> {
    let checked = check_signature(signature)?;
    let block = checked.block as usize;
    let index = checked.signature.index();
    let span = blocks.map_or_else(|| window_for(checked.block), |n| n.max(2) * block);
    let mut out = Out::new(sink);
    out.emit(&stream_head(span))?;
    let read = diff_run(&mut new, path, &index, block, span, lanes, &mut out)?;
    out.emit(&0u32.to_be_bytes())?;
    Ok((out.written, read))
}

/// Passes the delta stream's bytes on to the caller's sink, counting them.
struct Out<F> {
    sink: F,
    written: u64,
    /// For a diff against a partial signature: where its copies really are.
    base: Option<VirtualBase>,
}

impl<F: FnMut(&[u8]) -> io::Result<()>> Out<F> {
    fn new(sink: F) -> Out<F> {
        Out {
            sink,
            written: 0,
            base: None,
        }
    }

    /// One record from a diff against the signature: its copies translated first when the
    /// signature was of some windows only.
    fn diffed(&mut self, record: &[u8]) -> Result<(), DeltaError> {
        match &self.base {
            Some(base) => {
                // Only a signature that does not describe the windows its plan covers can
                // match beyond them: the peer's error, not this diff's.
                let translated = base.translate(record).map_err(|e| {
                    DeltaError::BadSignature(format!(
                        "it does not fit the windows its plan covers ({e})"
                    ))
                })?;
                self.record(&translated)
            }
            None => self.record(record),
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        self.written += bytes.len() as u64;
        (self.sink)(bytes).map_err(DeltaError::Output)
    }

    /// One record: its length, then its bytes.
    fn record(&mut self, record: &[u8]) -> Result<(), DeltaError> {
        self.emit(&(record.len() as u32).to_be_bytes())?;
        self.emit(record)
    }
}

/// The start of a delta stream whose records rebuild at most `span` bytes each.
fn stream_head(span: usize) -> [u8; 8] {
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&STREAM_MAGIC);
    head[4..].copy_from_slice(&(span as u32).to_be_bytes());
    head
}

/// Diffs everything `new` yields, in windows of `span` bytes (see [`diff_windows`]), and emits
/// the records that rebuild it, starting with no carried bytes and ending with none; returns
/// how many bytes were read. A run of new content is rebuilt whole by its records, so runs can
/// be diffed one after another, with other records between them.
fn diff_run<F: FnMut(&[u8]) -> io::Result<()>>(
    new: &mut impl Read,
    path: &Path,
    index: &IndexedSignature<'_>,
    block: usize,
    span: usize,
    lanes: usize,
    out: &mut Out<F>,
) -> Result<u64, DeltaError> {
    let overlap = block - 1;
    // New bytes per window: with its lead, a window stays under `span`.
    let step = span - block;
    // A diffed window, back from its worker: the record, its bytes (for reuse), how many of
    // them lead (the end of the window before) and whether another window follows.
    struct Diffed {
        record: Result<Vec<u8>, DeltaError>,
        bytes: Vec<u8>,
        lead: usize,
        more: bool,
    }
    let lanes = within_budget(lanes, span);
    // On one of rayon's own workers, waiting for other tasks could leave them no thread to run
    // on: the windows are diffed here instead, one at a time.
    let inline = rayon::current_thread_index().is_some();
    let diff_one = |bytes: Vec<u8>, lead: usize, more: bool| {
        // The signature was checked: the only failure left would be writing to a Vec. A panic
        // is caught, so that a thread waiting for this record gets an error, not a hang.
        let record = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut record = Vec::new();
            fast_rsync::diff(index, &bytes, &mut record).map(|()| record)
        }))
        .map_err(|_| DeltaError::BadDelta("the diff of a window panicked".into()))
        .and_then(|r| r.map_err(|e| DeltaError::BadSignature(e.to_string())));
        Diffed {
            record,
            bytes,
            lead,
            more,
        }
    };
    let mut read = 0u64;
    rayon::in_place_scope(|scope| -> Result<(), DeltaError> {
        let (done, finished) = std::sync::mpsc::channel::<(u64, Diffed)>();
        // Windows read and not yet emitted, by number: at most `lanes` are held at once.
        let mut held = std::collections::BTreeMap::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        // The end of the last window read, which the next one leads with.
        let mut tail: Vec<u8> = Vec::with_capacity(overlap);
        let (mut next_read, mut next_emit) = (0u64, 0u64);
        // Bytes cut from the end of the last record, which the next record rebuilds.
        let mut carried = 0usize;
        let mut full = true;
        loop {
            // Read windows while lanes are free (on this thread, while workers diff).
            while full && next_read - next_emit < lanes as u64 {
                // A reused buffer keeps its length: only bytes it never had are zeroed.
                let mut bytes = spare.pop().unwrap_or_default();
                let lead = tail.len();
                bytes.resize(lead + step, 0);
                bytes[..lead].copy_from_slice(&tail);
                let n = read_full(new, &mut bytes[lead..])
                    .map_err(|e| FsError::io("read for a delta", path, e))?;
                read += n as u64;
                bytes.truncate(lead + n);
                // Only a full window may be followed by more content.
                full = n == step;
                tail.clear();
                tail.extend_from_slice(&bytes[bytes.len() - bytes.len().min(overlap)..]);
                let (number, more) = (next_read, full);
                if inline {
                    held.insert(number, diff_one(bytes, lead, more));
                } else {
                    let (done, diff_one) = (done.clone(), &diff_one);
                    scope.spawn(move |_| {
                        // A send fails only when an error ended the diff early and nothing
                        // waits for this record any more.
                        let _ = done.send((number, diff_one(bytes, lead, more)));
                    });
                }
                next_read += 1;
            }
            if next_emit == next_read {
                return Ok(());
            }
            if !held.contains_key(&next_emit) {
                // Every task sends its record (a panic is caught), so this cannot fail while
                // this thread holds `done`.
                let (number, diffed) = finished.recv().map_err(|_| {
                    DeltaError::BadDelta("a diff worker stopped without a result".into())
                })?;
                held.insert(number, diffed);
            }
            // Stitch and emit, in order, every window whose turn has come.
            while let Some(diffed) = held.remove(&next_emit) {
                let mut record = diffed.record?;
                // The lead's first bytes were rebuilt by the record before; the rest were cut
                // from it (`carried` never exceeds the lead: both are that record's last bytes).
                let skip = diffed.lead - carried;
                drop_head(&mut record, skip)?;
                carried = if diffed.more {
                    trim_tail(&mut record, overlap)?
                } else {
                    0
                };
                // A last window of no new bytes rebuilds only what the one before it cut.
                if diffed.bytes.len() - skip > carried {
                    out.diffed(&record)?;
                }
                spare.push(diffed.bytes);
                next_emit += 1;
            }
        }
    })?;
    Ok(read)
}

/// Cuts what it is fed into windows of `window` bytes from the start and hashes each with
/// XXH3-128: GET_DELTA's `windows`.
struct WindowHasher {
    window: u64,
    state: Xxh3Default,
    /// Bytes of the current window fed so far.
    in_window: u64,
    size: u64,
    hashes: Vec<u8>,
}

impl WindowHasher {
    fn new(window: u32) -> WindowHasher {
        WindowHasher {
            window: u64::from(window.max(1)),
            state: Xxh3Default::new(),
            in_window: 0,
            size: 0,
            hashes: Vec::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (self.window - self.in_window).min(bytes.len() as u64) as usize;
            self.state.update(&bytes[..take]);
            self.in_window += take as u64;
            self.size += take as u64;
            bytes = &bytes[take..];
            if self.in_window == self.window {
                self.push();
            }
        }
    }

    fn push(&mut self) {
        self.hashes
            .extend_from_slice(&self.state.digest128().to_be_bytes());
        self.state.reset();
        self.in_window = 0;
    }

    /// The hashes, `None` when there are more than a request may carry.
    fn finish(mut self) -> Option<WindowHashes> {
        if self.in_window > 0 {
            self.push();
        }
        (self.hashes.len() <= MAX_WINDOW_HASHES * WindowHashes::HASH_LEN).then_some(WindowHashes {
            window: self.window as u32,
            base_size: self.size,
            hashes: self.hashes,
        })
    }
}

/// Checks a peer's window hashes against its signature: the window size within limits, and the
/// hashes, the signature's blocks and `base_size` describing the same file.
fn check_windows(windows: &WindowHashes, signature: &CheckedSignature) -> Result<(), DeltaError> {
    let bad = |why: String| Err(DeltaError::BadWindows(why));
    let window = windows.window;
    if !(MIN_HASH_WINDOW..=MAX_HASH_WINDOW).contains(&window) {
        return bad(format!(
            "window of {window} bytes is outside {MIN_HASH_WINDOW} ..= {MAX_HASH_WINDOW}"
        ));
    }
    let len = WindowHashes::HASH_LEN;
    if !windows.hashes.len().is_multiple_of(len) {
        return bad(format!(
            "{} bytes of hashes are not a whole number of {len}-byte hashes",
            windows.hashes.len()
        ));
    }
    let count = windows.count();
    if count > MAX_WINDOW_HASHES {
        return bad(format!(
            "{count} hashes are over the limit of {MAX_WINDOW_HASHES}"
        ));
    }
    let size = windows.base_size;
    let expected = size.div_ceil(u64::from(window));
    if count as u64 != expected {
        return bad(format!(
            "{count} hashes for a file of {size} bytes, which has {expected} windows of {window} bytes"
        ));
    }
    let block = u64::from(signature.block);
    if size.div_ceil(block) != signature.blocks {
        return bad(format!(
            "they are for a file of {size} bytes, but the signature's {} blocks of {block} bytes are not",
            signature.blocks
        ));
    }
    Ok(())
}

/// The length and hash of window `number` of the peer's file, if it has one.
fn base_window(windows: &WindowHashes, number: u64) -> Option<(u64, u128)> {
    let window = u64::from(windows.window);
    let start = number.checked_mul(window)?;
    let len = windows.base_size.checked_sub(start)?.min(window);
    let at = usize::try_from(number)
        .ok()?
        .checked_mul(WindowHashes::HASH_LEN)?;
    let hash = windows.hashes.get(at..at + WindowHashes::HASH_LEN)?;
    let hash = u128::from_be_bytes(hash.try_into().ok()?);
    (len > 0).then_some((len, hash))
}

/// Content read by position: E's file, or bytes in the tests.
trait ReadAt: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// The bytes of a [`ReadAt`] from `at` up to `end`, as a reader.
struct Range<'a, S: ?Sized> {
    source: &'a S,
    at: u64,
    end: u64,
}

impl<S: ReadAt + ?Sized> Read for Range<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end - self.at).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.source.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The delta of the opened file `new` (E's version; `path` names it in errors) against
/// `signature`, as [`diff_reader`]; with `windows`, R's window hashes from
/// [`signature_and_windows`], each window of `new` with the length and hash of R's window at
/// the same offset becomes a record of one copy command, without a diff; only the windows
/// between them are diffed, against the whole signature. A false match (a hash collision, or
/// hashes of another file than the signature's) rebuilds wrong bytes, which the caller's sha256
/// check catches, as any false match of the signature's block sums.
///
/// Memory with `windows`: a buffer of [`HASH_READ`] to hash, and a few pieces of
/// [`CHANGED_PIECE`] while changed windows are diffed; the delta stream is the same format.
///
/// # Errors
/// As [`diff_reader`]; also [`DeltaError::BadWindows`] for window hashes that do not fit the
/// signature or the limits (checked before anything is sent to `sink`), and
/// [`DeltaError::Fs`] when `new` shrinks while it is read.
pub fn diff_file(
    new: &File,
    path: &Path,
    signature: &[u8],
    windows: Option<&WindowHashes>,
    sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u64, u64), DeltaError> {
    match windows {
        None => diff_reader(new, path, signature, sink),
        Some(windows) => diff_windowed(new, path, signature, windows, None, lanes(), sink),
    }
}

/// [`diff_file`] with `windows`, changed windows diffed in pieces of `blocks` blocks when given
/// (tests use small ones), `lanes` at a time.
///
/// Each window of `new` is read and hashed in turn. A run of changed windows is diffed once the
/// next unchanged window (or the end) is found, read again by position: only the changed
/// windows are read twice, from the page cache.
fn diff_windowed<S: ReadAt + ?Sized, F: FnMut(&[u8]) -> io::Result<()>>(
    new: &S,
    path: &Path,
    signature: &[u8],
    windows: &WindowHashes,
    blocks: Option<usize>,
    lanes: usize,
    sink: F,
) -> Result<(u64, u64), DeltaError> {
    let checked = check_signature(signature)?;
    check_windows(windows, &checked)?;
    let index = checked.signature.index();
    let mut run = WindowRun::start(
        new,
        path,
        &index,
        checked.block,
        blocks,
        lanes,
        Out::new(sink),
    )?;
    let window = u64::from(windows.window);
    let mut buf = vec![0u8; HASH_READ.min(windows.window as usize)];
    let read_error = |e| DeltaError::Fs(FsError::io("read for a delta", path, e));
    let mut at = 0u64;
    for number in 0.. {
        let (len, hash) = hash_window(new, at, window, &mut buf).map_err(read_error)?;
        if len == 0 {
            break;
        }
        if base_window(windows, number) == Some((len, hash)) {
            run.copy(at, len)?;
        } else {
            run.differs(at);
        }
        at += len;
        if len < window {
            break;
        }
    }
    let written = run.finish(at)?;
    Ok((written, at))
}

/// The windows of E's file in order, each copied whole from R's or diffed with the changed
/// windows next to it, into a delta stream: what [`diff_file`] with window hashes and
/// [`diff_planned`] share.
struct WindowRun<'a, S: ?Sized, F> {
    new: &'a S,
    path: &'a Path,
    index: &'a IndexedSignature<'a>,
    block: usize,
    /// How much of a changed run is diffed at a time.
    piece: usize,
    lanes: usize,
    out: Out<F>,
    /// The start of the run of changed windows not yet diffed.
    changed: Option<u64>,
}

impl<'a, S: ReadAt + ?Sized, F: FnMut(&[u8]) -> io::Result<()>> WindowRun<'a, S, F> {
    /// Starts the stream: changed windows diffed in pieces of [`CHANGED_PIECE`], or of `blocks`
    /// blocks when given (tests use small ones), `lanes` at a time. The stream's window is as
    /// without window hashes: a record rebuilds at most that much, and a copy of a whole hashed
    /// window fits it (MAX_HASH_WINDOW <= WINDOW).
    fn start(
        new: &'a S,
        path: &'a Path,
        index: &'a IndexedSignature<'a>,
        block: u32,
        blocks: Option<usize>,
        lanes: usize,
        mut out: Out<F>,
    ) -> Result<Self, DeltaError> {
        let piece = blocks.map_or_else(
            || whole_blocks(CHANGED_PIECE, block),
            |n| n.max(2) * block as usize,
        );
        out.emit(&stream_head(window_for(block).max(piece)))?;
        Ok(WindowRun {
            new,
            path,
            index,
            block: block as usize,
            piece,
            lanes,
            out,
            changed: None,
        })
    }

    /// The window of `len` bytes at `at` is R's: one record of one copy, after the changed
    /// run before it.
    fn copy(&mut self, at: u64, len: u64) -> Result<(), DeltaError> {
        self.diff_changed(at)?;
        let mut record = DELTA_MAGIC.to_vec();
        copy_command(at, len, &mut record);
        record.push(OP_END);
        self.out.record(&record)
    }

    /// The window at `at` is to be diffed, with the changed ones next to it.
    fn differs(&mut self, at: u64) {
        self.changed.get_or_insert(at);
    }

    /// Diffs the run of changed windows up to `end`, if any (read by position: the file
    /// shrinking meanwhile is an error).
    fn diff_changed(&mut self, end: u64) -> Result<(), DeltaError> {
        let Some(start) = self.changed.take() else {
            return Ok(());
        };
        let mut range = Range {
            source: self.new,
            at: start,
            end,
        };
        let (index, block, piece, lanes) = (self.index, self.block, self.piece, self.lanes);
        let read = diff_run(
            &mut range,
            self.path,
            index,
            block,
            piece,
            lanes,
            &mut self.out,
        )?;
        if read != end - start {
            return Err(DeltaError::Fs(FsError::io(
                "read for a delta",
                self.path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while its delta was computed",
                ),
            )));
        }
        Ok(())
    }

    /// Diffs the last changed run, up to `end`, and ends the stream; returns its length.
    fn finish(mut self, end: u64) -> Result<u64, DeltaError> {
        self.diff_changed(end)?;
        self.out.emit(&0u32.to_be_bytes())?;
        Ok(self.out.written)
    }
}

/// The delta of `new` (E's version, `new_size` bytes; `path` names it in errors) that follows
/// `plan`, the second step of a delta after GET_WINDOWS: each window of `new` listed in
/// `plan.same` becomes a record of one copy of R's window at the same offset, without being
/// read; the runs of other windows are read and diffed against `signature`, the signature of
/// R's windows `plan.covers` ([`signature_of_windows`]), and their copy commands moved to
/// where those windows are in R's file. Content that moved from a window R has unchanged into
/// one that changed is sent as literal bytes: only the windows R signed can match.
///
/// Returns the number of delta bytes produced and the number of bytes of `new` they rebuild
/// (`new_size` when nothing went wrong). A wrong `same` (R's windows are not E's) rebuilds
/// wrong bytes, which the caller's sha256 check catches.
///
/// # Errors
/// [`DeltaError::BadSignature`] and [`DeltaError::BadWindows`] for a signature or plan that do
/// not fit each other, the sizes or the limits (checked before anything is sent to `sink`);
/// otherwise as [`diff_file`].
pub fn diff_planned(
    new: &File,
    path: &Path,
    new_size: u64,
    signature: &[u8],
    plan: &DeltaPlan,
    sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u64, u64), DeltaError> {
    diff_planned_in(new, path, new_size, signature, plan, None, lanes(), sink)
}

/// [`diff_planned`], changed windows diffed in pieces of `blocks` blocks when given (tests use
/// small ones), `lanes` at a time.
#[allow(clippy::too_many_arguments)]
fn diff_planned_in<S: ReadAt + ?Sized, F: FnMut(&[u8]) -> io::Result<()>>(
    new: &S,
    path: &Path,
    new_size: u64,
    signature: &[u8],
    plan: &DeltaPlan,
    blocks: Option<usize>,
    lanes: usize,
    sink: F,
) -> Result<(u64, u64), DeltaError> {
    let checked = check_signature(signature)?;
    let base = VirtualBase::new(plan.window, plan.base_size, &plan.covers, checked.block)?;
    if base.len.div_ceil(u64::from(checked.block)) != checked.blocks {
        return Err(DeltaError::BadWindows(format!(
            "the signature has {} blocks of {} bytes, but the {} windows it covers hold {} bytes",
            checked.blocks,
            checked.block,
            plan.covers.len(),
            base.len
        )));
    }
    let window = u64::from(plan.window);
    let len_in =
        |size: u64, number: u32| size.saturating_sub(u64::from(number) * window).min(window);
    let windows = new_size.div_ceil(window);
    check_increasing(&plan.same, windows, "same")?;
    if let Some(&number) = plan
        .same
        .iter()
        .find(|&&n| len_in(plan.base_size, n) != len_in(new_size, n))
    {
        return Err(DeltaError::BadWindows(format!(
            "plan.same names window {number}, which is {} bytes in R's version of {} bytes and {} in E's of {new_size}",
            len_in(plan.base_size, number),
            plan.base_size,
            len_in(new_size, number)
        )));
    }
    let index = checked.signature.index();
    let mut out = Out::new(sink);
    out.base = Some(base);
    let mut run = WindowRun::start(new, path, &index, checked.block, blocks, lanes, out)?;
    let mut same = plan.same.iter().copied().peekable();
    for number in 0..windows {
        let at = number * window;
        if same.next_if(|&n| u64::from(n) == number).is_some() {
            run.copy(at, (new_size - at).min(window))?;
        } else {
            run.differs(at);
        }
    }
    let written = run.finish(new_size)?;
    Ok((written, new_size))
}

/// The length and XXH3-128 of the up to `window` bytes of `new` from `at`, read `buf` at a time.
fn hash_window<S: ReadAt + ?Sized>(
    new: &S,
    at: u64,
    window: u64,
    buf: &mut [u8],
) -> io::Result<(u64, u128)> {
    let mut state = Xxh3Default::new();
    let mut range = Range {
        source: new,
        at,
        end: at.saturating_add(window),
    };
    let mut len = 0u64;
    loop {
        let n = read_full(&mut range, buf)?;
        state.update(&buf[..n]);
        len += n as u64;
        if n < buf.len() {
            return Ok((len, state.digest128()));
        }
    }
}

/// Removes up to `max` bytes from the end of a record that ends with a literal, so they can be
/// diffed again at the start of the next window; returns how many were removed.
fn trim_tail(record: &mut Vec<u8>, max: usize) -> Result<usize, DeltaError> {
    let mut commands = Commands::new(record).map_err(DeltaError::BadDelta)?;
    let mut last = None;
    loop {
        let (at, command) = commands.next().map_err(DeltaError::BadDelta)?;
        match command {
            Command::End => break,
            other => last = Some((at, other)),
        }
    }
    let Some((at, Command::Literal(bytes))) = last else {
        return Ok(0);
    };
    let cut = bytes.len().min(max);
    if cut == 0 {
        return Ok(0);
    }
    let kept = bytes.len() - cut;
    let mut tail = Vec::with_capacity(kept + 10);
    if kept > 0 {
        literal_header(kept as u64, &mut tail);
        tail.extend_from_slice(&bytes[..kept]);
    }
    tail.push(OP_END);
    record.truncate(at);
    record.extend_from_slice(&tail);
    Ok(cut)
}

/// Removes the first `skip` bytes of what a record rebuilds (the part of its window the records
/// before it rebuilt), shortening or dropping its first commands.
fn drop_head(record: &mut Vec<u8>, skip: usize) -> Result<(), DeltaError> {
    if skip == 0 {
        return Ok(());
    }
    let mut left = skip as u64;
    let mut kept = DELTA_MAGIC.to_vec();
    let mut commands = Commands::new(record).map_err(DeltaError::BadDelta)?;
    loop {
        let (_, command) = commands.next().map_err(DeltaError::BadDelta)?;
        match command {
            Command::End if left == 0 => break,
            Command::End => {
                return Err(DeltaError::BadDelta(format!(
                    "a record rebuilds less than the {skip} bytes it overlaps"
                )))
            }
            Command::Literal(bytes) if (bytes.len() as u64) <= left => left -= bytes.len() as u64,
            Command::Copy { len, .. } if len <= left => left -= len,
            Command::Literal(bytes) => {
                let rest = &bytes[left as usize..];
                literal_header(rest.len() as u64, &mut kept);
                kept.extend_from_slice(rest);
                kept.extend_from_slice(&record[commands.at..]);
                break;
            }
            Command::Copy { offset, len } => {
                copy_command(offset + left, len - left, &mut kept);
                kept.extend_from_slice(&record[commands.at..]);
                break;
            }
        }
    }
    if kept.len() == DELTA_MAGIC.len() {
        kept.push(OP_END);
    }
    *record = kept;
    Ok(())
}

/// How many windows [`diff`] holds at once: one for each of rayon's workers to diff and one
/// being read meanwhile, at most four (then [`within_budget`]).
fn lanes() -> usize {
    (rayon::current_num_threads() + 1).clamp(2, 4)
}

/// `lanes` windows of `window` bytes, fewer when they would take over 32 MiB together, but at
/// least one (the blocks of files over 256 GiB make windows of up to 64 MiB).
fn within_budget(lanes: usize, window: usize) -> usize {
    const PARALLEL_BYTES: usize = 32 << 20;
    lanes.clamp(1, (PARALLEL_BYTES / window.max(1)).max(1))
}

// The librsync delta format, as fast_rsync writes and reads it.
const DELTA_MAGIC: [u8; 4] = 0x7273_0236u32.to_be_bytes();
const OP_END: u8 = 0x00;
const OP_LITERAL_1: u8 = 0x01;
const OP_LITERAL_64: u8 = 0x40;
const OP_LITERAL_N1: u8 = 0x41;
const OP_LITERAL_N8: u8 = 0x44;
const OP_COPY_N1_N1: u8 = 0x45;
const OP_COPY_N8_N8: u8 = 0x54;

/// The command introducing a literal of `len` bytes.
fn literal_header(len: u64, out: &mut Vec<u8>) {
    if len <= 64 {
        out.push(OP_LITERAL_1 + (len - 1) as u8);
    } else if len <= u64::from(u8::MAX) {
        out.extend_from_slice(&[OP_LITERAL_N1, len as u8]);
    } else if len <= u64::from(u16::MAX) {
        out.push(OP_LITERAL_N1 + 1);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else if len <= u64::from(u32::MAX) {
        out.push(OP_LITERAL_N1 + 2);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(OP_LITERAL_N8);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// A command copying `len` bytes from `offset` of the base, with the shortest numbers.
fn copy_command(offset: u64, len: u64, out: &mut Vec<u8>) {
    // 0, 1, 2 or 3 for numbers of 1, 2, 4 or 8 bytes.
    let width = |n: u64| match n {
        0..=0xff => 0u8,
        0x100..=0xffff => 1,
        0x1_0000..=0xffff_ffff => 2,
        _ => 3,
    };
    let (wo, wl) = (width(offset), width(len));
    out.push(OP_COPY_N1_N1 + wo * 4 + wl);
    out.extend_from_slice(&offset.to_be_bytes()[8 - (1 << wo)..]);
    out.extend_from_slice(&len.to_be_bytes()[8 - (1 << wl)..]);
}

/// One command of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command<'a> {
    Literal(&'a [u8]),
    Copy { offset: u64, len: u64 },
    End,
}

/// Reads the commands of one `fast_rsync` delta, each with its byte position.
struct Commands<'a> {
    delta: &'a [u8],
    at: usize,
}

impl<'a> Commands<'a> {
    fn new(delta: &'a [u8]) -> Result<Commands<'a>, String> {
        if delta.get(..4) != Some(&DELTA_MAGIC[..]) {
            return Err(format!(
                "a record does not start with the delta magic {DELTA_MAGIC:02x?}"
            ));
        }
        Ok(Commands { delta, at: 4 })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.delta.len())
            .ok_or_else(|| {
                format!(
                    "a record ends inside its {what} ({n} bytes wanted at byte {}, {} left)",
                    self.at,
                    self.delta.len() - self.at
                )
            })?;
        let bytes = &self.delta[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn number(&mut self, width: usize, what: &str) -> Result<u64, String> {
        let bytes = self.take(width, what)?;
        Ok(bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    }

    /// The next command and where it starts. After `End`, the record must be over.
    fn next(&mut self) -> Result<(usize, Command<'a>), String> {
        let at = self.at;
        let op = self.take(1, "command")?[0];
        let command = match op {
            OP_END => {
                if self.at != self.delta.len() {
                    return Err(format!(
                        "{} bytes follow the end command of a record",
                        self.delta.len() - self.at
                    ));
                }
                Command::End
            }
            OP_LITERAL_1..=OP_LITERAL_64 => {
                Command::Literal(self.take(usize::from(op - OP_LITERAL_1) + 1, "literal")?)
            }
            OP_LITERAL_N1..=OP_LITERAL_N8 => {
                let len = self.number(1 << (op - OP_LITERAL_N1), "literal length")?;
                let len = usize::try_from(len)
                    .map_err(|_| format!("a literal of {len} bytes is too long"))?;
                Command::Literal(self.take(len, "literal")?)
            }
            OP_COPY_N1_N1..=OP_COPY_N8_N8 => {
                let mode = op - OP_COPY_N1_N1;
                let offset = self.number(1 << (mode / 4), "copy offset")?;
                let len = self.number(1 << (mode % 4), "copy length")?;
                Command::Copy { offset, len }
            }
            other => return Err(format!("unknown command byte 0x{other:02x} at byte {at}")),
        };
        Ok((at, command))
    }
}

/// Rebuilds the new file from the base file at `base_path` and a delta stream from [`diff`],
/// passing the output to `out` in order, in pieces of at most 1 MiB. `new_len` is the length
/// the result must have (the size announced with the delta): more or fewer bytes is an error,
/// so a hostile delta cannot fill the disk. See [`apply_file`].
///
/// # Errors
/// As [`apply_file`]; also when the base cannot be opened or is not a regular file.
pub fn apply(
    base_path: &Path,
    delta: impl Read,
    new_len: u64,
    out: impl FnMut(&[u8]) -> io::Result<()> + Send,
) -> Result<(), DeltaError> {
    let (base, _) = open_regular(base_path, "open as a delta's base")?;
    apply_file(&base, base_path, delta, new_len, out)
}

/// Rebuilds the new content from `base` (named `base_path` in errors) and a delta stream.
///
/// The base is read with positioned reads (`pread`), a copy command at a time, rather than
/// memory-mapped for `fast_rsync::apply_limited`: the base is a file in R's working tree, and if
/// anything truncated it while it was mapped, reading the mapping would kill the process with
/// SIGBUS (and a mapping that changes under a `&[u8]` is undefined behaviour); a read instead
/// fails or returns other bytes, which the caller's sha256 check rejects. Reading the whole
/// base into memory would make memory grow with the file. The commands are the librsync delta
/// format; the unit tests check this interpreter against `fast_rsync::apply_limited`.
///
/// Memory: one record (at most [`max_record`] of a window of at most [`MAX_WINDOW`]) and two
/// 1 MiB read buffers: a copy's next piece is read while `out` takes the one before, both on
/// rayon's workers (`rayon::join`; with one worker, one after the other). The output is NOT
/// verified here: check its sha256 before using it.
///
/// # Errors
/// [`DeltaError::BadDelta`] for a malformed stream, a record rebuilding more than its window, a
/// copy outside the base, or a result longer or shorter than `new_len`; [`DeltaError::Fs`]
/// when reading the delta or the base fails; [`DeltaError::Output`] when `out` fails.
pub fn apply_file(
    base: &File,
    base_path: &Path,
    mut delta: impl Read,
    new_len: u64,
    mut out: impl FnMut(&[u8]) -> io::Result<()> + Send,
) -> Result<(), DeltaError> {
    let bad = |why: String| DeltaError::BadDelta(why);
    let read_delta = |e: io::Error| FsError::io("read a delta for", base_path, e);
    let base_len = base
        .metadata()
        .map_err(|e| FsError::io("read the size of", base_path, e))?
        .len();
    let mut head = [0u8; 8];
    if read_full(&mut delta, &mut head).map_err(read_delta)? < head.len()
        || head[..4] != STREAM_MAGIC
    {
        return Err(bad(format!(
            "it does not start with {:?} and a window size",
            String::from_utf8_lossy(&STREAM_MAGIC)
        )));
    }
    let window = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if !(1..=MAX_WINDOW).contains(&window) {
        return Err(bad(format!(
            "its window of {window} bytes is outside 1 ..= {MAX_WINDOW}"
        )));
    }
    let limit = max_record(window);
    let mut record = Vec::new();
    let mut bufs = [Vec::new(), Vec::new()];
    let mut written = 0u64;
    loop {
        let mut len = [0u8; 4];
        if read_full(&mut delta, &mut len).map_err(read_delta)? < len.len() {
            return Err(bad("it ends without its end marker (truncated?)".into()));
        }
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > limit {
            return Err(bad(format!(
                "a record of {len} bytes is over the {limit}-byte limit for its window"
            )));
        }
        record.resize(len, 0);
        if read_full(&mut delta, &mut record).map_err(read_delta)? < len {
            return Err(bad("it ends inside a record (truncated?)".into()));
        }
        let mut room = u64::from(window);
        let mut commands = Commands::new(&record).map_err(bad)?;
        loop {
            let (_, command) = commands.next().map_err(bad)?;
            let size = match command {
                Command::End => break,
                Command::Literal(bytes) => bytes.len() as u64,
                Command::Copy { len, .. } => len,
            };
            if size > room {
                return Err(bad(format!(
                    "a record rebuilds more than its window of {window} bytes"
                )));
            }
            if size > new_len - written {
                return Err(bad(format!(
                    "it rebuilds more than the expected {new_len} bytes"
                )));
            }
            room -= size;
            written += size;
            match command {
                Command::End => {}
                Command::Literal(bytes) => out(bytes).map_err(DeltaError::Output)?,
                Command::Copy { offset, len } => {
                    copy_from_base(base, base_path, base_len, offset, len, &mut bufs, &mut out)?
                }
            }
        }
    }
    let mut rest = [0u8; 1];
    if read_full(&mut delta, &mut rest).map_err(read_delta)? > 0 {
        return Err(bad("bytes follow its end marker".into()));
    }
    if written != new_len {
        return Err(bad(format!(
            "it rebuilds {written} bytes, {new_len} were expected"
        )));
    }
    Ok(())
}

/// Passes `len` bytes of the base from `offset` to `out`, a MiB at a time.
fn copy_from_base(
    base: &File,
    base_path: &Path,
    base_len: u64,
    offset: u64,
    len: u64,
    bufs: &mut [Vec<u8>; 2],
    out: &mut (impl FnMut(&[u8]) -> io::Result<()> + Send),
) -> Result<(), DeltaError> {
    if len == 0 {
        return Err(DeltaError::BadDelta("a copy command of zero bytes".into()));
    }
    if offset.checked_add(len).is_none_or(|end| end > base_len) {
        return Err(DeltaError::BadDelta(format!(
            "a copy of {len} bytes at offset {offset} reaches beyond the base's {base_len} bytes (is it the base the signature was made from?)"
        )));
    }
    const PIECE: u64 = 1 << 20;
    let end = offset + len;
    let read = |buf: &mut Vec<u8>, at: u64| {
        buf.resize((end - at).min(PIECE) as usize, 0);
        base.read_exact_at(buf, at)
            .map_err(|e| FsError::io("read the delta's base", base_path, e))
    };
    let [current, next] = bufs;
    read(current, offset)?;
    let mut at = offset + current.len() as u64;
    // Each piece is passed on while the next one is read.
    while at < end {
        let (got, passed) = rayon::join(|| read(next, at), || out(current));
        passed.map_err(DeltaError::Output)?;
        got?;
        at += next.len() as u64;
        std::mem::swap(current, next);
    }
    out(current).map_err(DeltaError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::testkit::noise;

    fn collect_diff(new: &[u8], signature: &[u8], blocks: Option<usize>) -> Vec<u8> {
        collect_diff_lanes(new, signature, blocks, lanes())
    }

    fn collect_diff_lanes(
        new: &[u8],
        signature: &[u8],
        blocks: Option<usize>,
        lanes: usize,
    ) -> Vec<u8> {
        let mut delta = Vec::new();
        let (produced, read) = diff_windows(new, Path::new("new"), signature, blocks, lanes, |b| {
            delta.extend_from_slice(b);
            Ok(())
        })
        .expect("diff");
        assert_eq!(produced, delta.len() as u64, "reported delta size");
        assert_eq!(read, new.len() as u64, "bytes read of the new content");
        delta
    }

    fn apply_bytes(base: &[u8], delta: &[u8], new_len: u64) -> Result<Vec<u8>, DeltaError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("base");
        std::fs::write(&path, base).expect("write base");
        let mut rebuilt = Vec::new();
        apply(&path, delta, new_len, |b| {
            rebuilt.extend_from_slice(b);
            Ok(())
        })?;
        Ok(rebuilt)
    }

    /// Signature of `base` (through the file API), delta of `new`, applied back: returns the
    /// signature and delta sizes after checking the result is exactly `new`.
    fn round_trip(base: &[u8], new: &[u8]) -> (usize, usize) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (b, n) = (tmp.path().join("base"), tmp.path().join("new"));
        std::fs::write(&b, base).expect("write base");
        std::fs::write(&n, new).expect("write new");
        let sig = signature(&b).expect("signature");
        let mut delta = Vec::new();
        let produced = diff(&n, &sig, |bytes| {
            delta.extend_from_slice(bytes);
            Ok(())
        })
        .expect("diff");
        assert_eq!(produced, delta.len() as u64);
        let mut rebuilt = Vec::with_capacity(new.len());
        apply(&b, &delta[..], new.len() as u64, |bytes| {
            rebuilt.extend_from_slice(bytes);
            Ok(())
        })
        .expect("apply");
        assert!(
            rebuilt == new,
            "the rebuilt content differs from the new file ({} bytes rebuilt, {} expected)",
            rebuilt.len(),
            new.len()
        );
        (sig.len(), delta.len())
    }

    const MIB: usize = 1 << 20;

    /// The options [`signature_of`] uses for `len` bytes.
    fn opts_for(len: u64) -> SignatureOptions {
        let block = block_size_for(len);
        options(block, strong_sum_for(len, block))
    }

    #[test]
    fn block_sizes_keep_the_signature_small() {
        assert_eq!(block_size_for(0), MIN_BLOCK);
        assert_eq!(block_size_for(1), MIN_BLOCK);
        assert_eq!(block_size_for(16 << 20), 4096);
        assert_eq!(block_size_for(64 << 20), 8192);
        assert_eq!(block_size_for(128 << 20), 16384);
        assert_eq!(block_size_for(256 << 20), 16384);
        assert_eq!(block_size_for(4 << 30), 128 << 10);
        assert_eq!(block_size_for(u64::MAX), MAX_SIGNATURE_BLOCK);
        for len in [
            1u64,
            4096,
            10 << 20,
            256 << 20,
            3 << 30,
            100 << 30,
            512 << 30,
        ] {
            let block = u64::from(block_size_for(len));
            assert!(block.is_power_of_two(), "{block} for {len}");
            let entries = len.div_ceil(block);
            assert!(
                entries <= MAX_BLOCKS,
                "{entries} blocks of {block} bytes for a file of {len} bytes"
            );
        }
    }

    #[test]
    fn strong_sums_grow_with_the_file_as_rsyncs_do() {
        // rsync's sum_sizes_sqroot for the same block sizes.
        assert_eq!(strong_sum_for(0, MIN_BLOCK), MIN_STRONG_SUM);
        assert_eq!(strong_sum_for(1 << 20, 4096), 2);
        assert_eq!(strong_sum_for(256 << 20, 16384), 3);
        assert_eq!(strong_sum_for(4 << 30, 128 << 10), 4);
        assert_eq!(strong_sum_for(1 << 40, 1 << 20), 5);
        assert_eq!(strong_sum_for(u64::MAX, MAX_SIGNATURE_BLOCK), STRONG_SUM);
    }

    #[test]
    fn the_signature_of_256_mib_is_about_the_size_of_rsyncs() {
        // rsync sends 16384 blocks of 4 + 3 bytes for 256 MiB (114,688 bytes).
        let len: u64 = 256 << 20;
        let block = block_size_for(len);
        let entry = 4 + u64::from(strong_sum_for(len, block));
        let body = len.div_ceil(u64::from(block)) * entry;
        assert_eq!(
            body,
            16384 * 7,
            "{block}-byte blocks of {entry}-byte entries"
        );
        let sig = signature_of(std::io::repeat(7).take(len), len).expect("signature");
        assert_eq!(sig.len() as u64, body + 12, "the header is 12 bytes");
    }

    #[test]
    fn a_windowed_signature_equals_the_whole_buffer_s() {
        // Three windows and a ragged last block.
        let data = noise(2 * WINDOW + 3 * 4096 + 123, 1);
        let windowed = signature_of(&data[..], data.len() as u64).expect("signature");
        let whole = Signature::calculate(&data, opts_for(data.len() as u64));
        assert!(windowed == whole.serialized(), "the signatures differ");
        // The file API gives the same bytes, and a file that grew since its size was taken
        // still gets block-aligned windows.
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, &data).expect("write");
        assert!(signature(&path).expect("signature") == windowed);
        let grown = signature_of(&data[..], 5000).expect("signature");
        let whole = Signature::calculate(&data, opts_for(5000));
        assert!(
            grown == whole.serialized(),
            "a grown file's signature differs"
        );
    }

    /// A reader of `data` that remembers the largest buffer it was asked to fill.
    struct Widest<'a> {
        data: &'a [u8],
        widest: usize,
    }

    impl Read for Widest<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.widest = self.widest.max(buf.len());
            self.data.read(buf)
        }
    }

    #[test]
    fn the_signature_and_window_hashes_are_read_through_one_small_buffer() {
        // Memory on R must not grow with the file, nor hold whole 8 MiB windows: the peak of
        // a delta sync of a big file was these buffers.
        let data = noise(2 * WINDOW + 3 * 4096 + 123, 5);
        let mut reader = Widest {
            data: &data,
            widest: 0,
        };
        let (sig, hashes) =
            signature_and_windows_of(&mut reader, data.len() as u64).expect("signature");
        const AT_MOST: usize = 1 << 20;
        assert!(
            reader.widest <= AT_MOST,
            "read {} bytes at once, expected at most {AT_MOST}",
            reader.widest,
        );
        let whole = Signature::calculate(&data, opts_for(data.len() as u64));
        assert!(sig == whole.serialized(), "the signature differs");
        assert_eq!(hashes.expect("hashes").count(), 3);
        // Blocks larger than the buffer: one block at a time, still the same signature.
        assert_eq!(signature_piece(16 << 20), 16 << 20);
        assert_eq!(signature_piece(4096), SIGNATURE_READ);
        assert_eq!(signature_piece(3000), SIGNATURE_READ.div_ceil(3000) * 3000);
    }

    #[test]
    fn identical_files_give_a_tiny_delta() {
        let data = noise(32 * MIB, 2);
        let (sig, delta) = round_trip(&data, &data);
        assert!(
            delta < 1024,
            "delta of identical 32 MiB files is {delta} bytes"
        );
        assert!(sig < 110 << 10, "signature of 32 MiB is {sig} bytes");
    }

    #[test]
    fn a_64_kib_edit_in_the_middle_of_32_mib_costs_little() {
        let base = noise(32 * MIB, 3);
        let mut new = base.clone();
        let at = 16 * MIB + 1234;
        new[at..at + 65536].copy_from_slice(&noise(65536, 4));
        let (sig, delta) = round_trip(&base, &new);
        eprintln!("64 KiB edit in 32 MiB: signature {sig} bytes, delta {delta} bytes");
        // The edit, at most two partly edited blocks, and a few commands.
        assert!(
            delta <= 65536 + 2 * 4096 + 512,
            "delta of a 64 KiB edit is {delta} bytes"
        );
        assert!(sig + delta < MIB, "{sig} + {delta} bytes on the wire");
    }

    /// Issue 5's target: a 64 KiB edit in the middle of a 256 MiB file costs under 1 MiB on the
    /// wire, signature (sent as base64) and delta together.
    #[test]
    fn a_64_kib_edit_in_the_middle_of_256_mib_costs_under_1_mib() {
        let base = noise(256 * MIB, 11);
        let mut new = base.clone();
        let at = 128 * MIB + 777;
        new[at..at + 65536].copy_from_slice(&noise(65536, 12));
        let (sig, delta) = round_trip(&base, &new);
        let wire = sig.div_ceil(3) * 4 + delta;
        eprintln!("64 KiB edit in 256 MiB: signature {sig} bytes ({} as base64), delta {delta} bytes, {wire} on the wire", sig.div_ceil(3) * 4);
        assert!(wire < MIB, "{wire} bytes on the wire");
    }

    #[test]
    fn inserted_and_deleted_bytes_still_give_a_small_delta() {
        let base = noise(32 * MIB, 5);
        // 1000 bytes inserted near the start shift everything after them: every window
        // boundary of the new file falls in the middle of a base block.
        let mut new = base[..4321].to_vec();
        new.extend_from_slice(&noise(1000, 6));
        new.extend_from_slice(&base[4321..20 * MIB]);
        // 777 bytes deleted further on.
        new.extend_from_slice(&base[20 * MIB + 777..]);
        let (_, delta) = round_trip(&base, &new);
        eprintln!("1000 bytes inserted, 777 deleted in 32 MiB: delta {delta} bytes");
        // The inserted bytes and the two blocks they and the deletion touch; the tail carried
        // over at each of the three window boundaries adds nothing.
        let block = block_size_for(base.len() as u64) as usize;
        assert!(delta <= 1000 + 2 * block + 512, "delta is {delta} bytes");
    }

    #[test]
    fn the_tail_of_a_window_is_carried_into_the_next() {
        // Small blocks and windows of four blocks: many window boundaries, all misaligned.
        let block = 256u32;
        let base = noise(64 << 10, 7);
        let mut new = vec![9u8; 100];
        new.extend_from_slice(&base);
        let sig = Signature::calculate(&base, options(block, STRONG_SUM)).into_serialized();
        let delta = collect_diff(&new, &sig, Some(4));
        assert_eq!(
            apply_bytes(&base, &delta, new.len() as u64).expect("apply"),
            new
        );
        // Without the carry each of the 64 boundaries would send up to a block as literal.
        assert!(delta.len() < 4096, "delta is {} bytes", delta.len());
    }

    #[test]
    fn the_delta_is_the_same_however_many_windows_are_diffed_at_once() {
        // Small windows, so one diff has many batches; edits on and near their boundaries,
        // an insertion that misaligns every later boundary, and a deletion.
        let block = 256usize;
        let base = noise(40 * 4 * block + 77, 13);
        let new = edit(
            &base,
            &[
                (3 * block - 5, 10, noise(10, 14)),
                (12 * block, 0, noise(100, 15)),
                (40 * block + 3, 300, vec![]),
                (100 * block - 1, 2, noise(2 * block, 16)),
            ],
        );
        let sig = Signature::calculate(&base, options(block as u32, STRONG_SUM)).into_serialized();
        let one = collect_diff_lanes(&new, &sig, Some(4), 1);
        assert_eq!(
            apply_bytes(&base, &one, new.len() as u64).expect("apply"),
            new
        );
        for lanes in 2..=5 {
            let many = collect_diff_lanes(&new, &sig, Some(4), lanes);
            assert!(
                many == one,
                "{lanes} windows at a time give a different delta ({} bytes, {} with one)",
                many.len(),
                one.len()
            );
        }
        // Content ending exactly at a window's end, matched or not: the last window read
        // has no new bytes, and rebuilds only the tail cut from the one before.
        for (len, unmatched) in [(3 * 3 * block, 100), (5 * 3 * block, 0)] {
            let mut ends = base[..len - unmatched].to_vec();
            ends.extend_from_slice(&noise(unmatched, 17));
            for lanes in 1..=3 {
                let delta = collect_diff_lanes(&ends, &sig, Some(4), lanes);
                assert_eq!(
                    apply_bytes(&base, &delta, ends.len() as u64).expect("apply"),
                    ends
                );
            }
        }
        // The edits, at most two blocks each, and commands: the windows' leads cost nothing.
        assert!(
            one.len() < 10 + 100 + 2 * block + 8 * block + 1024,
            "delta is {} bytes",
            one.len()
        );
    }

    #[test]
    fn a_diff_on_one_of_rayon_s_workers_does_not_wait_for_itself() {
        // A pool of one worker: a diff that queued its windows there and waited would hang.
        let base = noise(64 << 10, 19);
        let mut new = base.clone();
        new[30_000..30_100].copy_from_slice(&noise(100, 20));
        let sig = Signature::calculate(&base, options(256, STRONG_SUM)).into_serialized();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let (tx, rx) = std::sync::mpsc::channel();
        let (base2, new2, sig2) = (base.clone(), new.clone(), sig.clone());
        std::thread::spawn(move || {
            let delta = pool.install(|| collect_diff_lanes(&new2, &sig2, Some(4), 3));
            let _ = tx.send(apply_bytes(&base2, &delta, new2.len() as u64).ok());
        });
        let rebuilt = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the diff finished");
        assert!(
            rebuilt.as_deref() == Some(&new[..]),
            "rebuilt the wrong bytes"
        );
    }

    #[test]
    fn copy_commands_use_the_shortest_numbers_and_read_back() {
        for (offset, len, size) in [
            (0u64, 1u64, 3usize),
            (0xff, 0x100, 4),
            (0xffff, 0x1_0000, 7),
            (0xffff_ffff, 0x1_0000_0000, 13),
            (u64::MAX - 1, 0xff, 10),
        ] {
            let mut record = DELTA_MAGIC.to_vec();
            copy_command(offset, len, &mut record);
            assert_eq!(record.len() - 4, size, "copy of {len} at {offset}");
            record.push(OP_END);
            let mut commands = Commands::new(&record).expect("magic");
            assert_eq!(
                commands.next().expect("copy").1,
                Command::Copy { offset, len }
            );
            assert_eq!(commands.next().expect("end").1, Command::End);
        }
    }

    #[test]
    fn dropping_more_than_a_record_rebuilds_is_an_error() {
        let mut record = DELTA_MAGIC.to_vec();
        literal_header(3, &mut record);
        record.extend_from_slice(b"abc");
        copy_command(0, 10, &mut record);
        record.push(OP_END);
        let mut dropped = record.clone();
        drop_head(&mut dropped, 13).expect("all of it");
        assert_eq!(dropped, [&DELTA_MAGIC[..], &[OP_END]].concat());
        let err = drop_head(&mut record, 14).expect_err("more than it rebuilds");
        assert!(
            err.to_string().contains("rebuilds less than the 14 bytes"),
            "{err}"
        );
    }

    #[test]
    fn empty_files() {
        let some = noise(10_000, 8);
        let (sig, delta) = round_trip(b"", &some);
        assert!(sig < 64, "signature of an empty file is {sig} bytes");
        assert!(delta < some.len() + 64, "delta {delta}");
        let (_, delta) = round_trip(&some, b"");
        assert!(delta < 64, "delta to an empty file is {delta} bytes");
        round_trip(b"", b"");
    }

    /// R's window hashes of `base` in windows of `window` bytes.
    fn hashes_of(base: &[u8], window: u32) -> WindowHashes {
        let mut hasher = WindowHasher::new(window);
        hasher.update(base);
        hasher.finish().expect("few windows")
    }

    /// The delta of `new` against `signature` and `windows`, changed windows diffed in pieces
    /// of 16 blocks.
    fn collect_windowed(new: &[u8], signature: &[u8], windows: &WindowHashes) -> Vec<u8> {
        let mut delta = Vec::new();
        let (produced, read) = diff_windowed(
            new,
            Path::new("new"),
            signature,
            windows,
            Some(16),
            lanes(),
            |b| {
                delta.extend_from_slice(b);
                Ok(())
            },
        )
        .expect("diff");
        assert_eq!(produced, delta.len() as u64, "reported delta size");
        assert_eq!(read, new.len() as u64, "bytes read of the new content");
        delta
    }

    /// What a record does, in short.
    #[derive(Debug, PartialEq)]
    enum Does {
        Copy { offset: u64, len: u64 },
        Literal(usize),
    }

    /// The commands of each record of a delta stream.
    fn records(delta: &[u8]) -> Vec<Vec<Does>> {
        let mut at = 8;
        let mut all = Vec::new();
        loop {
            let len = u32::from_be_bytes(delta[at..at + 4].try_into().expect("4 bytes")) as usize;
            at += 4;
            if len == 0 {
                return all;
            }
            let mut commands = Commands::new(&delta[at..at + len]).expect("record");
            let mut does = Vec::new();
            loop {
                match commands.next().expect("command").1 {
                    Command::End => break,
                    Command::Copy { offset, len } => does.push(Does::Copy { offset, len }),
                    Command::Literal(bytes) => does.push(Does::Literal(bytes.len())),
                }
            }
            all.push(does);
            at += len;
        }
    }

    /// The records that are exactly one copy of a whole window of 1 MiB of a base of `base`
    /// bytes (the last window may be shorter): (offset, len).
    fn window_copies(delta: &[u8], base: usize) -> Vec<(u64, u64)> {
        let (m, base) = (MIB as u64, base as u64);
        records(delta)
            .into_iter()
            .filter_map(|r| match r[..] {
                [Does::Copy { offset, len }]
                    if offset % m == 0 && (len == m || offset + len == base) =>
                {
                    Some((offset, len))
                }
                _ => None,
            })
            .collect()
    }

    const W: u32 = MIN_HASH_WINDOW;

    /// For a delta of 5 MiB + 12,345 bytes (six windows of 1 MiB) with 64 KiB rewritten in the
    /// third: every other window is one copy, and the third was diffed (copies around the
    /// edit's literal, not one literal).
    fn only_the_third_window_was_diffed(delta: &[u8], base_len: usize) {
        let m = MIB as u64;
        assert_eq!(
            window_copies(delta, base_len),
            [(0, m), (m, m), (3 * m, m), (4 * m, m), (5 * m, 12_345)],
            "every window but the edited one is one copy"
        );
        let literal: usize = records(delta)
            .iter()
            .flatten()
            .map(|d| match d {
                Does::Literal(n) => *n,
                Does::Copy { .. } => 0,
            })
            .sum();
        assert!(
            (65536..65536 + 2 * 4096).contains(&literal),
            "{literal} literal bytes for a 64 KiB edit"
        );
    }

    #[test]
    fn unchanged_windows_become_single_copies_and_changed_ones_are_diffed() {
        // Six windows of 1 MiB, the last partial; 64 KiB rewritten inside the third.
        let base = noise(5 * MIB + 12_345, 31);
        let mut new = base.clone();
        let at = 2 * MIB + 300_000;
        new[at..at + 65536].copy_from_slice(&noise(65536, 32));
        let sig = signature_of(&base[..], base.len() as u64).expect("signature");
        let delta = collect_windowed(&new, &sig, &hashes_of(&base, W));
        assert!(
            apply_bytes(&base, &delta, new.len() as u64).expect("apply") == new,
            "rebuilt other bytes"
        );
        only_the_third_window_was_diffed(&delta, base.len());
        // The same delta size as without window hashes, give or take a few commands.
        let plain = collect_diff(&new, &sig, None);
        assert!(
            delta.len() < plain.len() + 1024,
            "{} bytes with window hashes, {} without",
            delta.len(),
            plain.len()
        );
    }

    #[test]
    fn a_file_that_grew_or_shrank_keeps_the_windows_it_shares() {
        let base = noise(3 * MIB + MIB / 2, 33);
        let sig = signature_of(&base[..], base.len() as u64).expect("signature");
        let hashes = hashes_of(&base, W);
        assert_eq!(hashes.count(), 4);
        let m = MIB as u64;
        // Grown: R's last, partial window is no longer a whole window of E's.
        let mut grown = base.clone();
        grown.extend_from_slice(&noise(MIB + 200_000, 34));
        let delta = collect_windowed(&grown, &sig, &hashes);
        assert!(apply_bytes(&base, &delta, grown.len() as u64).expect("apply") == grown);
        assert_eq!(
            window_copies(&delta, base.len()),
            [(0, m), (m, m), (2 * m, m)]
        );
        // Shrunk into its third window.
        let shrunk = base[..2 * MIB + 300_000].to_vec();
        let delta = collect_windowed(&shrunk, &sig, &hashes);
        assert!(apply_bytes(&base, &delta, shrunk.len() as u64).expect("apply") == shrunk);
        assert_eq!(window_copies(&delta, base.len()), [(0, m), (m, m)]);
        // Shrunk to whole windows, and emptied.
        let whole = base[..2 * MIB].to_vec();
        let delta = collect_windowed(&whole, &sig, &hashes);
        assert!(apply_bytes(&base, &delta, whole.len() as u64).expect("apply") == whole);
        assert_eq!(
            records(&delta),
            [
                [Does::Copy { offset: 0, len: m }],
                [Does::Copy { offset: m, len: m }]
            ]
        );
        let delta = collect_windowed(&[], &sig, &hashes);
        assert_eq!(records(&delta), Vec::<Vec<Does>>::new());
        // Unchanged, ragged last window included: nothing but copies.
        let delta = collect_windowed(&base, &sig, &hashes);
        assert_eq!(
            window_copies(&delta, base.len()),
            [(0, m), (m, m), (2 * m, m), (3 * m, m / 2)]
        );
        assert_eq!(records(&delta).len(), 4);
        // From an empty base.
        let (sig, hashes) = signature_and_windows_of(&[][..], 0).expect("signature");
        let hashes = hashes.expect("hashes");
        assert_eq!((hashes.count(), hashes.base_size), (0, 0));
        let delta = collect_windowed(&base, &sig, &hashes);
        assert!(apply_bytes(&[], &delta, base.len() as u64).expect("apply") == base);
    }

    #[test]
    fn hashes_of_another_file_match_nothing_and_the_result_is_still_right() {
        let base = noise(3 * MIB, 35);
        let other = noise(3 * MIB, 36);
        let mut new = base.clone();
        new[MIB + 10..MIB + 20].fill(0);
        let sig = signature_of(&base[..], base.len() as u64).expect("signature");
        let delta = collect_windowed(&new, &sig, &hashes_of(&other, W));
        assert_eq!(window_copies(&delta, base.len()), Vec::new());
        assert!(apply_bytes(&base, &delta, new.len() as u64).expect("apply") == new);
    }

    #[test]
    fn hashes_that_claim_a_match_rebuild_other_bytes_which_the_sha256_check_catches() {
        // Hashes of E's own version sent with the signature of R's: every window "matches", so
        // the copies rebuild R's bytes. Only the sha256 check of the result can tell (as for a
        // false match of the signature's block sums); the client then downloads the file whole.
        let base = noise(2 * MIB, 37);
        let mut new = base.clone();
        new[100..200].fill(1);
        let sig = signature_of(&base[..], base.len() as u64).expect("signature");
        let delta = collect_windowed(&new, &sig, &hashes_of(&new, W));
        let rebuilt = apply_bytes(&base, &delta, new.len() as u64).expect("apply");
        assert_eq!(rebuilt.len(), new.len());
        assert!(
            crate::hash_bytes(&rebuilt) != crate::hash_bytes(&new),
            "the rebuilt file passes the sha256 check"
        );
    }

    #[test]
    fn signature_and_windows_reads_once_and_hashes_whole_windows() {
        let data = noise(2 * WINDOW + 3 * 4096 + 123, 38);
        let (sig, hashes) = signature_and_windows_of(&data[..], data.len() as u64).expect("read");
        assert!(sig == signature_of(&data[..], data.len() as u64).expect("signature"));
        let hashes = hashes.expect("hashes");
        let want: Vec<u8> = data
            .chunks(MAX_HASH_WINDOW as usize)
            .flat_map(|w| xxhash_rust::xxh3::xxh3_128(w).to_be_bytes())
            .collect();
        assert_eq!(
            (hashes.window, hashes.base_size),
            (MAX_HASH_WINDOW, data.len() as u64)
        );
        assert!(
            hashes.hashes == want,
            "other hashes than XXH3-128 of each window"
        );
        // A file that grew since its size was taken is read in small pieces: the same hashes.
        let (_, grown) = signature_and_windows_of(&data[..], 5000).expect("read");
        assert_eq!(grown, Some(hashes.clone()));
        // Through the file API.
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        std::fs::write(&path, &data).expect("write");
        assert_eq!(
            signature_and_windows(&path).expect("signature"),
            (sig, Some(hashes))
        );
        // Too many windows to send: none.
        let mut many = WindowHasher::new(1);
        many.update(&vec![0; MAX_WINDOW_HASHES + 1]);
        assert_eq!(many.finish(), None);
    }

    fn bad_windows(signature: &[u8], windows: &WindowHashes) -> String {
        let mut called = false;
        let result = diff_windowed(
            &b"new content"[..],
            Path::new("n"),
            signature,
            windows,
            None,
            2,
            |_| {
                called = true;
                Ok(())
            },
        );
        assert!(!called, "bytes were sent for bad window hashes");
        match result {
            Err(e @ DeltaError::BadWindows(_)) => {
                assert!(e.is_permanent());
                e.to_string()
            }
            other => panic!("expected BadWindows, got {other:?}"),
        }
    }

    #[test]
    fn bad_window_hashes_are_errors_that_say_why() {
        let base = noise(3 * MIB + 5, 39);
        let sig = signature_of(&base[..], base.len() as u64).expect("signature");
        let good = hashes_of(&base, W);
        let with = |f: &dyn Fn(&mut WindowHashes)| {
            let mut w = good.clone();
            f(&mut w);
            bad_windows(&sig, &w)
        };
        assert!(with(&|w| w.window = 0).contains("window of 0 bytes is outside"));
        assert!(with(&|w| w.window = MIN_HASH_WINDOW - 1).contains("outside"));
        assert!(with(&|w| w.window = MAX_HASH_WINDOW + 1).contains("outside"));
        assert!(with(&|w| {
            w.hashes.pop();
        })
        .contains("whole number of 16-byte"));
        assert!(with(&|w| w.hashes.truncate(16)).contains("1 hashes for a file of"));
        assert!(with(&|w| w.hashes.extend([0; 16])).contains("5 hashes for a file of"));
        // Hashes that fit another size than the signature's file.
        let other = with(&|w| w.base_size = 3 * MIB as u64 + 1_000_000);
        assert!(other.contains("the signature's"), "{other}");
        let too_many = with(&|w| {
            w.hashes = vec![0; (MAX_WINDOW_HASHES + 1) * 16];
            w.base_size = (MAX_WINDOW_HASHES as u64 + 1) * u64::from(W);
        });
        assert!(too_many.contains("over the limit"), "{too_many}");
        // A bad signature is reported first.
        assert!(matches!(
            diff_windowed(
                &b""[..],
                Path::new("n"),
                b"junk",
                &good,
                None,
                2,
                |_| Ok(())
            ),
            Err(DeltaError::BadSignature(_))
        ));
    }

    fn bad_signature(bytes: &[u8]) -> String {
        let mut called = false;
        let result = diff_reader(&b"new content"[..], Path::new("n"), bytes, |_| {
            called = true;
            Ok(())
        });
        assert!(!called, "bytes were sent for a bad signature");
        match result {
            Err(e @ DeltaError::BadSignature(_)) => {
                assert!(e.is_permanent());
                e.to_string()
            }
            other => panic!("expected BadSignature, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_signatures_are_errors_that_say_why() {
        let good =
            Signature::calculate(&noise(10_000, 9), options(4096, STRONG_SUM)).into_serialized();
        assert!(bad_signature(b"").contains("shorter than"));
        assert!(bad_signature(b"garbage!garbage!").contains("magic"));
        let mut block0 = good.clone();
        block0[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert!(bad_signature(&block0).contains("block size 0"));
        let mut block1 = good.clone();
        block1[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert!(bad_signature(&block1).contains("block size 1 "));
        let mut strong = good.clone();
        strong[8..12].copy_from_slice(&17u32.to_be_bytes());
        assert!(bad_signature(&strong).contains("strong sum length 17"));
        let mut blake2 = good.clone();
        blake2[3] = 0x37;
        assert!(bad_signature(&blake2).contains("magic"));
        let truncated = &good[..good.len() - 3];
        assert!(bad_signature(truncated).contains("whole number"));
    }

    fn delta_error(base: &[u8], delta: &[u8], new_len: u64) -> String {
        match apply_bytes(base, delta, new_len) {
            Err(e @ DeltaError::BadDelta(_)) => e.to_string(),
            other => panic!("expected BadDelta, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_deltas_are_errors() {
        let base = noise(50_000, 10);
        let mut new = base.clone();
        new[20_000..20_100].fill(0);
        let sig = Signature::calculate(&base, options(256, STRONG_SUM)).into_serialized();
        let delta = collect_diff(&new, &sig, Some(16));
        let len = new.len() as u64;
        assert_eq!(apply_bytes(&base, &delta, len).expect("apply"), new);

        // Cut anywhere, it is an error, never a panic or a short success.
        for cut in 0..delta.len() {
            delta_error(&base, &delta[..cut], len);
        }
        let mut trailing = delta.clone();
        trailing.push(0);
        assert!(delta_error(&base, &trailing, len).contains("follow its end marker"));
        assert!(delta_error(&base, b"ZYD2\0\0\0\x10\0\0\0\0", len).contains("ZYD1"));
        assert!(delta_error(&base, b"ZYD1\xff\xff\xff\xff\0\0\0\0", len).contains("window"));
        assert!(delta_error(&base, &delta, len - 1).contains("more than the expected"));
        assert!(delta_error(&base, &delta, len + 1).contains("were expected"));
        // A shorter base than the one the signature was made from: copies reach beyond it.
        assert!(delta_error(&base[..10_000], &delta, len).contains("beyond the base"));

        let record = |commands: &[u8]| {
            let mut d = STREAM_MAGIC.to_vec();
            d.extend_from_slice(&16u32.to_be_bytes());
            d.extend_from_slice(&(4 + commands.len() as u32).to_be_bytes());
            d.extend_from_slice(&DELTA_MAGIC);
            d.extend_from_slice(commands);
            d.extend_from_slice(&0u32.to_be_bytes());
            d
        };
        // A literal of 17 bytes in a record whose window is 16.
        let mut literal = vec![OP_LITERAL_1 + 16];
        literal.extend_from_slice(&[1; 17]);
        literal.push(OP_END);
        assert!(delta_error(&base, &record(&literal), 17).contains("window of 16"));
        assert!(delta_error(&base, &record(&[0x55, 0]), 0).contains("unknown command"));
        assert!(delta_error(&base, &record(&[OP_COPY_N1_N1, 0, 0, 0]), 0).contains("zero bytes"));
        assert!(delta_error(
            &base,
            &record(&[
                OP_COPY_N8_N8,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                1,
                0
            ]),
            1
        )
        .contains("beyond the base"));
        let mut huge = STREAM_MAGIC.to_vec();
        huge.extend_from_slice(&16u32.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(delta_error(&base, &huge, 1).contains("over the"));
    }

    /// The result of `fast_rsync::apply_limited` on one record, and of ours.
    fn both_appliers(base: &[u8], record: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let mut theirs = Vec::new();
        let theirs = fast_rsync::apply_limited(base, record, &mut theirs, 1 << 20)
            .ok()
            .map(|()| theirs);
        let mut stream = STREAM_MAGIC.to_vec();
        stream.extend_from_slice(&(1u32 << 20).to_be_bytes());
        stream.extend_from_slice(&(record.len() as u32).to_be_bytes());
        stream.extend_from_slice(record);
        stream.extend_from_slice(&0u32.to_be_bytes());
        let len = theirs.as_ref().map_or(0, |t| t.len() as u64);
        let ours = apply_bytes(base, &stream, len).ok();
        (theirs, ours)
    }

    fn edit(base: &[u8], edits: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
        // Each edit replaces `cut` bytes at a position with new bytes (inserts, deletes, both).
        let mut new = base.to_vec();
        for (at, cut, insert) in edits {
            let at = at % (new.len() + 1);
            let cut = (*cut).min(new.len() - at);
            new.splice(at..at + cut, insert.iter().copied());
        }
        new
    }

    /// Up to `count` edits of up to `len` bytes cut and inserted each (see [`edit`]).
    fn edits(len: usize, count: usize) -> impl Strategy<Value = Vec<(usize, usize, Vec<u8>)>> {
        proptest::collection::vec(
            (
                any::<usize>(),
                0..len,
                proptest::collection::vec(any::<u8>(), 0..len),
            ),
            0..count,
        )
    }

    /// The single fast_rsync record rebuilding `new` from `base` (256-byte blocks).
    fn one_record(base: &[u8], new: &[u8]) -> Vec<u8> {
        let sig = Signature::calculate(base, options(256, STRONG_SUM)).into_serialized();
        let sig = Signature::deserialize(sig).expect("own signature");
        let mut record = Vec::new();
        fast_rsync::diff(&sig.index(), new, &mut record).expect("diff");
        record
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_edit_round_trips(
            base in proptest::collection::vec(any::<u8>(), 0..6000),
            edits in edits(700, 5),
            windows in proptest::option::of(2usize..6),
        ) {
            let new = edit(&base, &edits);
            let sig = Signature::calculate(&base, options(256, STRONG_SUM)).into_serialized();
            let delta = collect_diff(&new, &sig, windows);
            let rebuilt = apply_bytes(&base, &delta, new.len() as u64).expect("apply");
            prop_assert!(rebuilt == new, "rebuilt {} bytes, expected {}", rebuilt.len(), new.len());
        }

        #[test]
        fn dropping_the_head_of_a_record_rebuilds_the_rest(
            base in proptest::collection::vec(any::<u8>(), 1..3000),
            edits in edits(300, 4),
            skip in any::<usize>(),
        ) {
            let new = edit(&base, &edits);
            let mut record = one_record(&base, &new);
            let skip = skip % (new.len() + 1);
            drop_head(&mut record, skip).expect("drop");
            let (theirs, ours) = both_appliers(&base, &record);
            prop_assert_eq!(theirs.as_deref(), Some(&new[skip..]));
            prop_assert_eq!(ours.as_deref(), Some(&new[skip..]));
        }

        #[test]
        fn our_applier_agrees_with_fast_rsync_even_on_mangled_records(
            base in proptest::collection::vec(any::<u8>(), 1..3000),
            edits in edits(300, 4),
            mangle in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let new = edit(&base, &edits);
            let mut record = one_record(&base, &new);
            for (at, byte) in &mangle {
                let at = at % record.len();
                record[at] = *byte;
            }
            if let Some(cut) = cut {
                record.truncate(cut % (record.len() + 1));
            }
            let (theirs, ours) = both_appliers(&base, &record);
            prop_assert_eq!(theirs, ours);
        }
    }

    /// R's plan for `new` against `base` in windows of `window` bytes, as the client makes it
    /// from E's window hashes: the windows with the same bytes at the same offset are `same`,
    /// R's others are signed.
    fn plan_for(base: &[u8], new: &[u8], window: u32) -> DeltaPlan {
        let w = window as usize;
        let same: Vec<u32> = base
            .chunks(w)
            .zip(new.chunks(w))
            .enumerate()
            .filter(|(_, (b, n))| b == n)
            .map(|(i, _)| i as u32)
            .collect();
        let covers = (0..base.len().div_ceil(w) as u32)
            .filter(|i| !same.contains(i))
            .collect();
        DeltaPlan {
            sha256: String::new(),
            window,
            base_size: base.len() as u64,
            same,
            covers,
        }
    }

    /// The partial signature of `plan.covers` of `base`, through the file API.
    fn signature_for(base: &[u8], plan: &DeltaPlan) -> Result<Vec<u8>, DeltaError> {
        let file = tempfile::tempfile().expect("temp file");
        file.write_all_at(base, 0).expect("write base");
        signature_of_windows(
            &file,
            Path::new("base"),
            plan.base_size,
            plan.window,
            &plan.covers,
        )
    }

    /// Bytes read by position, counted.
    struct Counting<'a> {
        bytes: &'a [u8],
        read: std::sync::atomic::AtomicU64,
    }

    impl ReadAt for Counting<'_> {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = self.bytes.read_at(buf, offset)?;
            self.read
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
    }

    /// The delta of `new` following `plan`, changed windows diffed in pieces of 16 blocks;
    /// also how many bytes of `new` were read.
    fn collect_planned(
        new: &[u8],
        signature: &[u8],
        plan: &DeltaPlan,
    ) -> Result<(Vec<u8>, u64), DeltaError> {
        let counting = Counting {
            bytes: new,
            read: 0.into(),
        };
        let mut delta = Vec::new();
        let (produced, rebuilt) = diff_planned_in(
            &counting,
            Path::new("new"),
            new.len() as u64,
            signature,
            plan,
            Some(16),
            lanes(),
            |b| {
                delta.extend_from_slice(b);
                Ok(())
            },
        )?;
        assert_eq!(produced, delta.len() as u64, "reported delta size");
        assert_eq!(rebuilt, new.len() as u64, "bytes the delta rebuilds");
        Ok((delta, counting.read.into_inner()))
    }

    #[test]
    fn a_plan_signs_and_reads_only_the_windows_that_differ() {
        // Six windows of 1 MiB, the last partial; 64 KiB rewritten inside the third.
        let base = noise(5 * MIB + 12_345, 41);
        let mut new = base.clone();
        let at = 2 * MIB + 300_000;
        new[at..at + 65536].copy_from_slice(&noise(65536, 42));
        let plan = plan_for(&base, &new, W);
        assert_eq!(
            (&plan.same[..], &plan.covers[..]),
            (&[0, 1, 3, 4, 5][..], &[2][..])
        );
        let sig = signature_for(&base, &plan).expect("signature");
        let whole = signature_of(&base[..], base.len() as u64).expect("signature");
        assert!(
            sig.len() * 4 < whole.len(),
            "{} bytes for one window, {} for all six",
            sig.len(),
            whole.len()
        );
        let (delta, read) = collect_planned(&new, &sig, &plan).expect("diff");
        assert_eq!(read, MIB as u64, "only the changed window is read");
        assert!(
            apply_bytes(&base, &delta, new.len() as u64).expect("apply") == new,
            "rebuilt other bytes"
        );
        only_the_third_window_was_diffed(&delta, base.len());
    }

    #[test]
    fn copies_against_signed_windows_land_where_those_windows_are() {
        let w = u64::from(W);
        let base = VirtualBase::new(W, 5 * w, &[1, 3, 4], MIN_BLOCK).expect("plan");
        let mut record = DELTA_MAGIC.to_vec();
        // Across the first two signed windows, then across the last two, with a literal.
        copy_command(w - 4096, 8192, &mut record);
        literal_header(3, &mut record);
        record.extend_from_slice(b"abc");
        copy_command(2 * w - 100, 200, &mut record);
        record.push(OP_END);
        let translated = base.translate(&record).expect("translate");
        let mut commands = Commands::new(&translated).expect("record");
        let mut does = Vec::new();
        loop {
            match commands.next().expect("command").1 {
                Command::End => break,
                Command::Copy { offset, len } => does.push(Does::Copy { offset, len }),
                Command::Literal(bytes) => does.push(Does::Literal(bytes.len())),
            }
        }
        assert_eq!(
            does,
            [
                // Windows 1 and 3 are apart: two copies.
                Does::Copy {
                    offset: 2 * w - 4096,
                    len: 4096
                },
                Does::Copy {
                    offset: 3 * w,
                    len: 4096
                },
                Does::Literal(3),
                // Windows 3 and 4 are next to each other: one copy.
                Does::Copy {
                    offset: 4 * w - 100,
                    len: 200
                },
            ]
        );
        let mut beyond = DELTA_MAGIC.to_vec();
        copy_command(3 * w - 10, 20, &mut beyond);
        beyond.push(OP_END);
        let e = base
            .translate(&beyond)
            .expect_err("beyond the signed windows");
        assert!(e.to_string().contains("beyond"), "{e}");
    }

    #[test]
    fn a_plan_that_claims_a_window_it_lacks_rebuilds_other_bytes() {
        let base = noise(3 * MIB, 43);
        let mut new = base.clone();
        new[MIB + 5] ^= 0xff;
        let mut plan = plan_for(&base, &new, W);
        plan.same = vec![0, 1, 2];
        plan.covers = vec![];
        let sig = signature_for(&base, &plan).expect("signature");
        let (delta, read) = collect_planned(&new, &sig, &plan).expect("diff");
        assert_eq!(read, 0);
        let rebuilt = apply_bytes(&base, &delta, new.len() as u64).expect("apply");
        assert!(
            rebuilt == base,
            "R gets its own bytes, which E's sha256 then refuses"
        );
    }

    #[test]
    fn bad_plans_are_errors_that_say_why() {
        let base = noise(3 * MIB + 10, 44);
        let new = noise(2 * MIB, 45);
        let good = DeltaPlan {
            sha256: String::new(),
            window: W,
            base_size: base.len() as u64,
            same: vec![0],
            covers: vec![1, 3],
        };
        let sig = signature_for(&base, &good).expect("signature");
        assert!(collect_planned(&new, &sig, &good).is_ok());
        let error = |change: &dyn Fn(&mut DeltaPlan), sig: &[u8]| {
            let mut plan = good.clone();
            change(&mut plan);
            collect_planned(&new, sig, &plan)
                .expect_err("a bad plan")
                .to_string()
        };
        for (change, expected) in [
            (
                &(|p: &mut DeltaPlan| p.covers = vec![3, 1]) as &dyn Fn(&mut DeltaPlan),
                "plan.covers must increase, but 3 is followed by 1",
            ),
            (
                &|p: &mut DeltaPlan| p.covers = vec![1, 4],
                "plan.covers names window 4, but the file has 4 windows",
            ),
            (
                &|p: &mut DeltaPlan| p.same = vec![0, 2],
                "plan.same names window 2, but the file has 2 windows",
            ),
            (
                &|p: &mut DeltaPlan| p.same = vec![1, 1],
                "plan.same must increase",
            ),
            (
                &|p: &mut DeltaPlan| p.covers = vec![1],
                "the signature has 257 blocks of 4096 bytes, but the 1 windows it covers hold 1048576 bytes",
            ),
            (
                &|p: &mut DeltaPlan| p.window = 4096,
                "window of 4096 bytes is outside",
            ),
            (
                &|p: &mut DeltaPlan| p.covers = (0..40_000).collect(),
                "plan.covers lists 40000 windows, over the limit",
            ),
        ] {
            let e = error(change, &sig);
            assert!(e.contains(expected), "{e}");
        }
        // A window whose length differs between the two versions is not the same.
        let shorter = noise(MIB + 5, 46);
        let mut plan = good.clone();
        plan.same = vec![1];
        let e = collect_planned(&shorter, &sig, &plan)
            .expect_err("lengths differ")
            .to_string();
        assert!(
            e.contains("plan.same names window 1, which is 1048576 bytes in R's version"),
            "{e}"
        );
        // Windows of blocks that do not divide them.
        let e = VirtualBase::new(W, 1 << 30, &[0], W * 2)
            .expect_err("blocks bigger than windows")
            .to_string();
        assert!(e.contains("not whole blocks"), "{e}");
    }

    proptest! {
        // Files of a few MiB: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn any_edit_round_trips_with_window_hashes(
            len in (MIB * 3 / 2)..(3 * MIB),
            seed in any::<u64>(),
            edits in edits(5000, 4),
        ) {
            // Windows of 1 MiB, pieces of 16 blocks of 4 KiB: edits anywhere, including across
            // window and piece boundaries and changing the length.
            let base = noise(len, seed);
            let new = edit(&base, &edits);
            let sig = signature_of(&base[..], base.len() as u64).expect("signature");
            let windows = hashes_of(&base, W);
            let delta = collect_windowed(&new, &sig, &windows);
            let rebuilt = apply_bytes(&base, &delta, new.len() as u64).expect("apply");
            prop_assert!(rebuilt == new, "rebuilt {} bytes, expected {}", rebuilt.len(), new.len());
            // Every window the edits left alone (same bytes at the same offset) is one copy.
            let same: Vec<(u64, u64)> = base
                .chunks(W as usize)
                .zip(new.chunks(W as usize))
                .enumerate()
                .filter(|(_, (b, n))| b == n)
                .map(|(i, (b, _))| ((i * W as usize) as u64, b.len() as u64))
                .collect();
            let copies = window_copies(&delta, base.len());
            prop_assert!(
                same.iter().all(|c| copies.contains(c)),
                "unchanged windows {same:?}, single copies {copies:?}"
            );
        }

        #[test]
        fn any_edit_round_trips_with_a_plan(
            len in (MIB * 3 / 2)..(3 * MIB),
            seed in any::<u64>(),
            edits in edits(5000, 4),
        ) {
            let base = noise(len, seed);
            let new = edit(&base, &edits);
            let plan = plan_for(&base, &new, W);
            let sig = signature_for(&base, &plan).expect("signature");
            let (delta, read) = collect_planned(&new, &sig, &plan).expect("diff");
            let rebuilt = apply_bytes(&base, &delta, new.len() as u64).expect("apply");
            prop_assert!(rebuilt == new, "rebuilt {} bytes, expected {}", rebuilt.len(), new.len());
            let same_bytes: u64 = plan.same.iter().map(|&i| (new.len() as u64 - u64::from(i) * u64::from(W)).min(u64::from(W))).sum();
            prop_assert_eq!(read, new.len() as u64 - same_bytes, "read only the windows not the same");
        }
    }
}
