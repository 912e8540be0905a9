//! Reserving a file's disk space before its content is written (`fallocate`), on the file
//! systems where a reserved block is a block used and reserving is cheap: ext2/3/4, XFS and
//! tmpfs. Elsewhere (btrfs, where preallocated ranges are not compressed, other copy-on-write
//! file systems, network and FUSE file systems) nothing is reserved and a file allocates as it
//! is written, as it always did.

use std::fs::File;
use std::io;

/// What [`reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// The first `len` bytes of the file are allocated; its size did not change.
    Done,
    /// This file system is left to allocate as the file is written.
    NotHere,
}

/// `statfs` magic numbers of the file systems [`reserve`] works on.
const EXT_MAGIC: i64 = 0xEF53;
const XFS_MAGIC: i64 = 0x5846_5342;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Allocates the first `len` bytes of `file` without changing its size
/// (`fallocate(FALLOC_FL_KEEP_SIZE)`), `already` of which are allocated (written or reserved
/// before). Checks the free space first: a file that cannot fit fails at once, without
/// filling the disk up to the last block on the way.
///
/// # Errors
///
/// [`io::ErrorKind::StorageFull`] when fewer than `len - already` bytes are free (or the
/// kernel says so), `QuotaExceeded`, or `FileTooLarge` for a size the file system cannot hold.
#[cfg(target_os = "linux")]
pub(crate) fn reserve(file: &File, len: u64, already: u64) -> io::Result<Reserve> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the buffer it is given when it returns 0; it is read only then.
    if unsafe { libc::fstatfs(fd, st.as_mut_ptr()) } != 0 {
        return Ok(Reserve::NotHere);
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let (kind, free) = (
        st.f_type as i64,
        (st.f_bavail as u64).saturating_mul(st.f_bsize as u64),
    );
    if !matches!(kind, EXT_MAGIC | XFS_MAGIC | TMPFS_MAGIC) {
        return Ok(Reserve::NotHere);
    }
    let needed = len.saturating_sub(already);
    if needed > free {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{needed} more bytes are needed and {free} are free"),
        ));
    }
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    loop {
        // SAFETY: plain syscall on a descriptor this file owns; no memory is passed.
        if unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, len) } == 0 {
            return Ok(Reserve::Done);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => return Err(e),
            // EOPNOTSUPP and the like: the writes will allocate.
            _ => return Ok(Reserve::NotHere),
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn reserve(_file: &File, _len: u64, _already: u64) -> io::Result<Reserve> {
    Ok(Reserve::NotHere)
}

/// Whether [`reserve`] reserves on the file system holding `file` (it reserves 1 MiB of it).
#[cfg(test)]
pub(crate) fn reserves_here(file: &File) -> bool {
    reserve(file, 1 << 20, 0).is_ok_and(|r| r == Reserve::Done)
}
