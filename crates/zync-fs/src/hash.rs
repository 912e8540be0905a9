//! SHA-256 content hashes as 64 lowercase hex characters: the checksum zync compares to decide
//! whether a file changed and to verify a download before it replaces anything (invariant 1).

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How much `hash_file` reads at a time.
const READ_CHUNK: usize = 256 * 1024;
/// The smallest read buffer `hash_file` uses, even for an empty file.
const MIN_CHUNK: usize = 16 * 1024;

/// An incremental SHA-256 hasher producing lowercase hex.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Hasher(Sha256::new())
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest of everything fed so far, as 64 lowercase hex characters.
    pub fn finish(self) -> String {
        to_hex(&self.0.finalize())
    }
}

/// The SHA-256 of `data` as 64 lowercase hex characters.
pub fn hash_bytes(data: &[u8]) -> String {
    let mut h = Hasher::new();
    h.update(data);
    h.finish()
}

/// Hashes a regular file by streaming it in reads of at most 256 KiB, so memory does not grow
/// with the file. Returns the hex digest and the number of bytes read. The file is opened with
/// `O_NOFOLLOW` (a symlink fails with `ELOOP`) and `O_NONBLOCK` (a fifo cannot block the caller).
///
/// # Errors
///
/// I/O errors from opening or reading; `InvalidInput` if `path` is not a regular file.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    hash_file_stat(path).map(|h| (h.sha256, h.len))
}

/// What [`hash_file_stat`] found.
#[derive(Debug)]
pub struct HashedFile {
    /// The hex digest of the bytes read.
    pub sha256: String,
    /// How many bytes were read.
    pub len: u64,
    /// The file's metadata taken from the open file once it was read to the end: a caller
    /// compares it with what it saw before hashing to tell whether the digest describes that
    /// version (same inode, size and mtime) or a file that changed while it was read.
    pub after: std::fs::Metadata,
}

/// As [`hash_file`], and also returns the open file's metadata after reading it (an `fstat`,
/// not a second lookup of the path), so a scan can check that the file settled.
///
/// # Errors
///
/// As [`hash_file`].
pub fn hash_file_stat(path: &Path) -> io::Result<HashedFile> {
    hash_checked(path, None)
}

/// As [`hash_file_stat`], for the file a scan saw at `path`: device and inode `identity`. When
/// the file opened is another one (a parent directory swapped for a symlink since the scan
/// looked, or the name given to another file), nothing of it is read: a daemon never reads a
/// file outside what it serves, nor spends its time on one, because another user moved
/// directories about.
///
/// # Errors
///
/// As [`hash_file`]; [`io::ErrorKind::NotFound`] when the file opened is not `identity`.
pub fn hash_file_identified(path: &Path, identity: (u64, u64)) -> io::Result<HashedFile> {
    hash_checked(path, Some(identity))
}

fn hash_checked(path: &Path, identity: Option<(u64, u64)>) -> io::Result<HashedFile> {
    use std::os::unix::fs::MetadataExt;
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let before = file.metadata()?;
    if !before.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if identity.is_some_and(|(dev, ino)| (before.dev(), before.ino()) != (dev, ino)) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is another file than the one looked at", path.display()),
        ));
    }
    let (sha256, len) = hash_open(&mut file, before.len())?;
    Ok(HashedFile {
        sha256,
        len,
        after: file.metadata()?,
    })
}

/// Hashes an open file from where it stands to its end, as [`hash_file`] does; `len_hint` (the
/// size it had when opened) sizes the buffer. For a file opened relative to a directory
/// handle ([`crate::Dir::open_file_to_read`]), so the bytes hashed are the ones that handle
/// names. Returns the hex digest and the number of bytes read.
///
/// # Errors
///
/// A read error.
pub fn hash_open(file: &mut File, len_hint: u64) -> io::Result<(String, u64)> {
    // Most files are small: a buffer sized to the file (plus one byte, so the read that sees
    // the end fits too) saves zeroing 256 KiB per file, which took more time than the hashing
    // in a startup scan of small files. Never tiny, in case the file grows.
    let cap = usize::try_from(len_hint).map_or(READ_CHUNK, |len| {
        len.saturating_add(1).clamp(MIN_CHUNK, READ_CHUNK)
    });
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; cap];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finish(), total))
}

/// Whether `s` looks like a digest from this module: exactly 64 lowercase hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex encoding.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_vectors() {
        assert_eq!(hash_bytes(b""), EMPTY);
        assert_eq!(hash_bytes(b"abc"), ABC);
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), ABC);
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    /// Bytes this thread has read so far (`rchar` of /proc/thread-self/io).
    fn read_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("thread io");
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("rchar")
    }

    #[test]
    fn a_file_that_is_not_the_one_looked_at_is_not_read() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let seen = tmp.path().join("seen.txt");
        std::fs::write(&seen, b"abc").expect("write");
        let meta = std::fs::metadata(&seen).expect("stat");
        let identity = (meta.dev(), meta.ino());
        let hashed = hash_file_identified(&seen, identity).expect("the file looked at");
        assert_eq!((hashed.sha256.as_str(), hashed.len), (ABC, 3));

        // Its name now leads to another file (as when another user swapped a parent
        // directory for a symlink): a mebibyte the daemon must not read.
        let other = tmp.path().join("other.bin");
        std::fs::write(&other, vec![7u8; 1 << 20]).expect("write");
        std::fs::rename(&other, &seen).expect("rename");
        let before = read_by_this_thread();
        let err = hash_file_identified(&seen, identity).expect_err("another file");
        let read = read_by_this_thread() - before;
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(read < 4096, "{read} bytes of another file were read");
    }

    #[test]
    fn file_hash_matches_bytes_across_chunks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..READ_CHUNK * 2 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let p = tmp.path().join("big");
        std::fs::write(&p, &data).expect("write");
        assert_eq!(
            hash_file(&p).expect("hash"),
            (hash_bytes(&data), data.len() as u64)
        );
        let e = tmp.path().join("empty");
        std::fs::write(&e, b"").expect("write");
        assert_eq!(hash_file(&e).expect("hash"), (EMPTY.to_string(), 0));
    }

    #[test]
    fn file_hash_stat_reports_the_open_file_after_reading_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for len in [
            0,
            1,
            MIN_CHUNK - 1,
            MIN_CHUNK,
            MIN_CHUNK + 1,
            READ_CHUNK + 7,
        ] {
            let p = tmp.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            std::fs::write(&p, &data).expect("write");
            let got = hash_file_stat(&p).expect("hash");
            let md = std::fs::metadata(&p).expect("metadata");
            assert_eq!(
                (got.sha256.as_str(), got.len),
                (hash_bytes(&data).as_str(), len as u64),
                "file of {len} bytes"
            );
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                (got.after.ino(), got.after.len(), got.after.mtime_nsec()),
                (md.ino(), md.len(), md.mtime_nsec()),
                "file of {len} bytes"
            );
        }
    }

    #[test]
    fn file_hash_refuses_symlinks_and_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        let l = tmp.path().join("l");
        std::os::unix::fs::symlink(&f, &l).expect("symlink");
        let err = hash_file(&l).expect_err("symlink must not be followed");
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "got {err}");
        let err = hash_file(tmp.path()).expect_err("a directory is not hashable");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "got {err}");
    }

    #[test]
    fn hex_check() {
        assert!(is_sha256_hex(EMPTY));
        assert!(!is_sha256_hex(&EMPTY.to_uppercase()));
        assert!(!is_sha256_hex(&EMPTY[1..]));
        assert!(!is_sha256_hex(&format!("{}g", &EMPTY[1..])));
        assert!(!is_sha256_hex(""));
    }
}
