//! Reserving a file's disk space before its content is written (`fallocate`), on the file
//! systems where a reserved block is a block used and reserving is cheap: ext2/3/4, XFS and
//! tmpfs. Elsewhere (btrfs, where preallocated ranges are not compressed, other copy-on-write
//! file systems, network and FUSE file systems) nothing is reserved or checked, and a file
//! allocates as it is written, as it always did.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

/// What [`reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum Reserve {
    /// The first `len` bytes of the file are allocated; its size did not change.
    Done,
    /// This file system is left to allocate as the file is written.
    NotHere,
}

/// Space left free beside a reservation: a download that would take the last blocks of a disk
/// leaves no room for the client's own database commit that records it.
const SPARE: u64 = 16 << 20;

/// The bytes free for unprivileged users (what `df` shows as available) on the file system
/// holding `file` (a file, or a directory's handle), when it is one [`reserve`] works on;
/// `None` elsewhere, or when it cannot be examined.
#[cfg(target_os = "linux")]
fn free_where_reserving(file: impl AsFd) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let file = file.as_fd();
    const EXT_MAGIC: i64 = 0xEF53;
    const XFS_MAGIC: i64 = 0x5846_5342;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the buffer it is given when it returns 0; it is read only then.
    if unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let (kind, free) = (
        st.f_type as i64,
        (st.f_bavail as u64).saturating_mul(st.f_frsize as u64),
    );
    matches!(kind, EXT_MAGIC | XFS_MAGIC | TMPFS_MAGIC).then_some(free)
}

/// Fails when `needed` more bytes, `claimed` bytes that writes already under way will take
/// first, and [`SPARE`] beside them, are not free.
fn room(needed: u64, claimed: u64, free: u64) -> io::Result<()> {
    if needed.saturating_add(claimed).saturating_add(SPARE) > free {
        let before = if claimed > 0 {
            format!(", {claimed} more for the downloads under way before it")
        } else {
            String::new()
        };
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{needed} more bytes are needed{before}, with {} MiB to spare, and {free} are free",
                SPARE >> 20
            ),
        ));
    }
    Ok(())
}

/// Checks that the file system holding the directory `dir` has room for `needed` more bytes
/// after `claimed` bytes that writes under way will take first, where [`reserve`] would
/// reserve them; anywhere else, and when `dir` cannot be examined, there is nothing to check
/// and the writes will tell.
///
/// `dir` is an open handle ([`crate::Dir`], reached from the root without following a
/// symlink), never a path opened here: another local user can swap the directory for a FIFO,
/// or a symlink to one, at any instant, and a plain `open` of it waits for a writer forever.
///
/// # Errors
///
/// [`io::ErrorKind::StorageFull`] when there is not room for them.
#[cfg(target_os = "linux")]
pub(crate) fn check_room(dir: impl AsFd, needed: u64, claimed: u64) -> io::Result<()> {
    match free_where_reserving(dir) {
        Some(free) => room(needed, claimed, free),
        None => Ok(()),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn check_room(_dir: impl AsFd, _needed: u64, _claimed: u64) -> io::Result<()> {
    Ok(())
}

/// Allocates the first `len` bytes of `file` without changing its size
/// (`fallocate(FALLOC_FL_KEEP_SIZE)`), `already` of which are allocated (written or reserved
/// before). Checks the free space first: a file that cannot fit fails at once, without
/// filling the disk up to the last block on the way.
///
/// # Errors
///
/// [`io::ErrorKind::StorageFull`] when fewer than `len - already` bytes (and a few MiB to
/// spare) are free, or the kernel finds no room; `QuotaExceeded`; `FileTooLarge` for a size
/// the file system cannot hold.
#[cfg(target_os = "linux")]
pub(crate) fn reserve(file: &File, len: u64, already: u64) -> io::Result<Reserve> {
    use std::os::fd::AsRawFd;
    let Some(free) = free_where_reserving(file) else {
        return Ok(Reserve::NotHere);
    };
    room(len.saturating_sub(already), 0, free)?;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::FileTooLarge))?;
    loop {
        // SAFETY: plain syscall on a descriptor this file owns; no memory is passed.
        if unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) } == 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keeps_some_to_spare() {
        assert!(room(100, 0, 100 + SPARE).is_ok());
        let e = room(101, 0, 100 + SPARE).expect_err("no room left to spare");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(
            e.to_string().starts_with("101 more bytes are needed, with"),
            "{e}"
        );
        assert!(room(u64::MAX, 0, u64::MAX - 1).is_err(), "no overflow");
        assert!(room(1, u64::MAX, u64::MAX - 1).is_err(), "no overflow");
    }

    #[test]
    fn room_counts_what_writes_under_way_will_take() {
        assert!(room(60, 40, 100 + SPARE).is_ok());
        let e = room(61, 40, 100 + SPARE).expect_err("the claimed bytes count");
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(
            e.to_string().starts_with(
                "61 more bytes are needed, 40 more for the downloads under way before it, with"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_directory_is_checked_where_files_are_reserved() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let probe = File::create(tmp.path().join("probe")).expect("create");
        let dir = crate::Dir::open_root(tmp.path()).expect("open");
        if reserves_here(&probe) {
            let e = check_room(&dir, u64::MAX / 2, 0).expect_err("4 EiB fit");
            assert_eq!(e.kind(), io::ErrorKind::StorageFull);
            check_room(&dir, 1 << 20, 0).expect("1 MiB fits");
            check_room(&dir, 1 << 20, u64::MAX / 2).expect_err("1 MiB after 4 EiB fit");
        } else {
            check_room(&dir, u64::MAX / 2, 0).expect("nothing is checked here");
        }
    }
}
