//! What E has at a staged file's path right now (to re-check conflicts at show and apply time,
//! since E may have changed after staging), reading files without following symlinks, and the
//! unified diffs shown to the user.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zync_proto::Kind;

use anyhow::Context;
use zync_db::{Action, BaseMode, ModeMerge, OnE, StagedFile};
use zync_fs::{Dir, FsError, RelPath, Stat};

/// Files larger than this are not diffed.
const MAX_DIFF_BYTES: u64 = 4 * 1024 * 1024;
/// How much of a file is looked at to tell text from binary.
const SNIFF_BYTES: usize = 8 * 1024;

/// What is at a path on E.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// Nothing (or a missing parent directory).
    Missing,
    /// A regular file with this content hash, size and mode.
    File {
        /// Hex sha256.
        sha256: String,
        /// Bytes.
        size: u64,
        /// Permission bits (`st_mode & 0o7777`).
        mode: u32,
    },
    /// Something zync-apply will not replace: a directory, a symlink, a special file, or a
    /// path whose parent is not a real directory.
    Other(String),
}

impl Current {
    /// The form [`zync_db::is_conflict`] takes.
    pub fn on_e(&self) -> OnE<'_> {
        match self {
            Current::Missing => OnE::Missing,
            Current::File { sha256, .. } => OnE::File(sha256),
            Current::Other(_) => OnE::Other,
        }
    }

    /// Whether E has a regular file there.
    pub fn is_file(&self) -> bool {
        matches!(self, Current::File { .. })
    }
}

/// A permission mode as people write it: `0755`.
pub fn octal(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// The mode of E's regular file, if E has one there.
fn e_mode(current: &Current) -> Option<u32> {
    match current {
        Current::File { mode, .. } => Some(*mode),
        _ => None,
    }
}

/// What applying `file` does about the mode of E's file as it is now (`current`), decided
/// three-way against R's base mode (invariant 5 (docs/ARCHITECTURE.md)): E's own mode stays
/// when R did not change it, R's comes when only R did, and both changing it is a conflict.
pub fn mode_merge(file: &StagedFile, current: &Current) -> ModeMerge {
    zync_db::merge_mode(
        file.action,
        BaseMode::of(file.base_sha256.as_deref(), file.base_mode),
        file.mode,
        zync_fs::mask_mode(file.mode),
        e_mode(current),
    )
}

/// The mode applying the write `file` gives E's file: E's own when [`mode_merge`] keeps it,
/// else R's masked by E's umask (also when a conflict is applied with the user's say-so).
pub fn mode_on_e(file: &StagedFile, current: &Current) -> u32 {
    zync_db::mode_after_write(
        mode_merge(file, current),
        zync_fs::mask_mode(file.mode),
        e_mode(current),
    )
}

/// What applying `file` would do to the mode on E: `(E's mode now, the mode it would get)`,
/// when E has a regular file whose mode would change ([`mode_on_e`]). `None` for deletions,
/// new files and unchanged modes.
pub fn mode_change(file: &StagedFile, current: &Current) -> Option<(u32, u32)> {
    match (file.action, current) {
        (Action::Write, Current::File { mode, .. }) => {
            let new = mode_on_e(file, current);
            (mode & 0o7777 != new).then_some((mode & 0o7777, new))
        }
        _ => None,
    }
}

/// Why `file`'s mode conflicts with E's file as it is now (`current`), for a person; `None`
/// when it does not ([`mode_merge`]).
pub fn mode_conflict(file: &StagedFile, current: &Current) -> Option<String> {
    let e = e_mode(current)?;
    if mode_merge(file, current) != ModeMerge::Conflict {
        return None;
    }
    let on_e = match file.base_mode.filter(|_| file.base_sha256.is_some()) {
        Some(base) => format!(
            "E changed the mode since R's base ({} -> {})",
            octal(base),
            octal(e)
        ),
        None => format!("E's file has mode {}", octal(e)),
    };
    Some(match file.action {
        Action::Write => format!("{on_e}, and R's is {}", octal(file.mode)),
        Action::Delete => format!("{on_e}, and R deletes the file"),
    })
}

/// Looks at `root/rel` without following a symlink, in the path or at its end.
///
/// # Errors
///
/// An I/O error other than "not found".
pub fn probe(root: &Path, rel: &RelPath) -> anyhow::Result<Current> {
    let dir = match Dir::parent_of(root, rel) {
        Ok(dir) => dir,
        Err(FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Current::Missing)
        }
        Err(e @ (FsError::SymlinkInPath { .. } | FsError::NotADirectory { .. })) => {
            return Ok(Current::Other(e.to_string()))
        }
        Err(e) => return Err(e).context("cannot inspect E's directories"),
    };
    probe_in(&dir, rel.file_name())
}

/// Looks at the entry `name` of `dir` through that handle (never by path, never following a
/// symlink): the entry is looked at and opened relative to the handle, and a regular file is
/// hashed from that descriptor, so what is described is what stands in that directory even
/// when another user swaps one of its parents for a symlink meanwhile. A file is described
/// only if the same file, unchanged, still stands at the name once it was read: an editor's
/// save during the read (in place, or a new file renamed over it) makes it look again. A
/// check made right before a rename through the same handle
/// ([`zync_fs::AtomicFile::commit_if`]) therefore judges the file the rename would replace.
/// Only what the look saw as a regular file is opened, and without blocking: a fifo swapped
/// in between cannot hold the check up.
///
/// # Errors
///
/// An I/O error other than "not found".
pub fn probe_in(dir: &Dir, name: &str) -> anyhow::Result<Current> {
    probe_seen(dir, name).map(|(current, _)| current)
}

/// As [`probe_in`], and also the entry as [`zync_fs::lstat`] describes it (for a file: the
/// one that was read), for a rename that must replace only that entry
/// ([`Dir::replace_if`]).
///
/// # Errors
///
/// As [`probe_in`].
pub fn probe_seen(dir: &Dir, name: &str) -> anyhow::Result<(Current, Stat)> {
    let path = dir.path_of(name);
    let look = || {
        dir.lstat(name)
            .with_context(|| format!("cannot inspect {}", path.display()))
    };
    // A file that keeps changing while it is read is looked at a few times, then reported.
    for _ in 0..3 {
        let seen = match look()? {
            Stat::Entry(m) if m.kind == Kind::File => m,
            Stat::Missing => return Ok((Current::Missing, Stat::Missing)),
            Stat::Entry(m) => {
                let what = match &m.target {
                    Some(target) => {
                        format!("a symlink (to {})", zync_cli::visible::line(target))
                    }
                    None => format!("a {}", m.kind.as_str()),
                };
                return Ok((Current::Other(what), Stat::Entry(m)));
            }
            Stat::Unsupported(what) => {
                return Ok((Current::Other(format!("a {what}")), Stat::Unsupported(what)))
            }
        };
        let opened = dir
            .open_file_to_read(name)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Replaced by something else since the look: look again.
        let Some(mut opened) = opened else { continue };
        let inode = opened
            .file
            .metadata()
            .with_context(|| format!("cannot inspect {}", path.display()))?
            .ino();
        let (sha256, size) = zync_fs::hash_open(&mut opened.file, opened.size)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let read_whole =
            inode == seen.inode && size == seen.size && opened.mtime_ns == seen.mtime_ns;
        let mode = seen.mode;
        let seen = Stat::Entry(seen);
        if read_whole && look()? == seen {
            return Ok((Current::File { sha256, size, mode }, seen));
        }
    }
    let changing = "a file that kept changing while it was read".to_string();
    Ok((Current::Other(changing), Stat::Missing))
}

/// Opens a regular file for reading, refusing a symlink (`O_NOFOLLOW`) and never blocking on
/// a fifo.
///
/// # Errors
///
/// As `open`; `InvalidInput` when it is not a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Reads a whole regular file of at most `max` bytes; `None` when it is larger.
fn read_limited(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = open_regular(path)?;
    let mut data = Vec::new();
    file.take(max + 1).read_to_end(&mut data)?;
    Ok((data.len() as u64 <= max).then_some(data))
}

/// Why content cannot be shown in a diff. Bytes that are not UTF-8 do not count: they are
/// shown as `\xFF` ([`zync_cli::visible::bytes`]), so one such byte cannot hide a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unshown {
    /// A NUL byte in the first 8 KiB.
    Binary,
    /// More than 4 MiB.
    Large,
    /// So many characters that cannot be shown as themselves (bytes that are not UTF-8,
    /// controls) that its diff, each marked with a note, would run to many times its size.
    Garbled,
}

impl Unshown {
    /// What the content is, for a person.
    pub fn why(self) -> &'static str {
        match self {
            Unshown::Binary => "binary content, with a NUL byte in its first 8 KiB",
            Unshown::Large => "over 4 MiB, too large to diff",
            Unshown::Garbled => {
                "more than 10,000 characters that cannot be shown as text (bytes that are not \
                 UTF-8, control characters)"
            }
        }
    }

    /// What a diff says instead of the content.
    fn label(self) -> &'static str {
        match self {
            Unshown::Binary => "binary file",
            Unshown::Large => "large file (over 4 MiB)",
            Unshown::Garbled => "file of characters that cannot be shown as text",
        }
    }
}

/// The most characters of one content a diff shows escaped, each with its note
/// ([`zync_cli::visible::bytes`]): 4 MiB of bytes that are not UTF-8 would otherwise make a
/// diff of 100 MB, held in memory whole.
const MAX_ESCAPES: usize = 10_000;

/// Whether `data` (`size` bytes; all of them, unless more than [`MAX_DIFF_BYTES`]) can be
/// shown in a diff.
fn unshown_content(size: u64, data: &[u8]) -> Option<Unshown> {
    if size > MAX_DIFF_BYTES {
        Some(Unshown::Large)
    } else if data[..data.len().min(SNIFF_BYTES)].contains(&0) {
        Some(Unshown::Binary)
    } else if escapes_over(data, MAX_ESCAPES) {
        Some(Unshown::Garbled)
    } else {
        None
    }
}

/// Whether showing `data` line by line would escape more than `max` characters.
fn escapes_over(data: &[u8], max: usize) -> bool {
    let mut escapes = 0;
    for line in data.split(|b| *b == b'\n') {
        escapes += zync_cli::visible::bytes(line).escapes.len();
        if escapes > max {
            return true;
        }
    }
    false
}

/// Whether applying `file` would put content on E that its diff does not show: R's version
/// is binary or too large to diff, and not what E has already. `None` for a deletion, and
/// when the staged copy cannot be read (applying it fails then, before E is touched).
/// Such a file is applied only with an explicit yes, as a control file is (invariant 9).
pub fn unshown(file: &StagedFile, current: &Current, session_dir: &Path) -> Option<Unshown> {
    if file.action == Action::Delete {
        return None;
    }
    if let Current::File { sha256, .. } = current {
        if file.sha256.as_deref() == Some(sha256.as_str()) {
            return None;
        }
    }
    let path = session_file(session_dir, file.staged_name.as_deref(), "staged").ok()?;
    let file = open_regular(&path).ok()?;
    let size = file.metadata().ok()?.len();
    if size > MAX_DIFF_BYTES {
        return Some(Unshown::Large);
    }
    let mut data = Vec::new();
    file.take(MAX_DIFF_BYTES).read_to_end(&mut data).ok()?;
    unshown_content(size, &data)
}

/// A file inside the session directory named by the database, checked to be one plain name,
/// in a session directory and staging area that are this user's own directories (no
/// symlinks): what is staged and backed up there is applied to E, or restored there by undo,
/// so a directory another user made, or swapped in, is refused before anything in it is read
/// (invariant 8). Both being this user's, mode 0700, nobody else can change what they hold.
///
/// # Errors
///
/// The name is missing, or not a single path component; the session's directory or the
/// staging area is another user's, a symlink or not a directory.
pub fn session_file(session_dir: &Path, name: Option<&str>, what: &str) -> anyhow::Result<PathBuf> {
    let Some(name) = name else {
        anyhow::bail!("the database names no {what} file");
    };
    if !zync_db::is_plain_name(name) {
        anyhow::bail!("the database names {what} file {name:?}, which is not a plain file name");
    }
    if let Some(area) = session_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        zync_fs::check_own_dir(area)?;
    }
    zync_fs::check_own_dir(session_dir)?;
    Ok(session_dir.join(name))
}

/// One side of a diff.
enum Side {
    Empty,
    Content(Vec<u8>),
    TooLarge(u64),
    Unreadable(String),
}

impl Side {
    fn read(path: &Path) -> Side {
        match read_limited(path, MAX_DIFF_BYTES) {
            Ok(Some(data)) => Side::Content(data),
            Ok(None) => Side::TooLarge(std::fs::symlink_metadata(path).map_or(0, |m| m.len())),
            Err(e) => Side::Unreadable(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// E's file at `root/rel` as `probe` saw it (`sha256`): read through the directory handles,
    /// never through a symlink in the path, so another user who swaps a parent for a symlink
    /// between the look and the read cannot put a decoy in the diff. Content that no longer
    /// hashes to what the look saw is not shown: the diff would not be of the file apply
    /// would replace.
    fn read_on_e(root: &Path, rel: &RelPath, sha256: &str) -> Side {
        let path = rel.to_path(root);
        let changed = || {
            Side::Unreadable(format!(
                "{} changed while it was read; run this again to see it as it is now",
                path.display()
            ))
        };
        let opened = match Dir::parent_of(root, rel) {
            Ok(dir) => dir.open_file_to_read(rel.file_name()),
            Err(e) => return Side::Unreadable(format!("cannot read {}: {e}", path.display())),
        };
        let mut opened = match opened {
            Ok(Some(opened)) => opened,
            Ok(None) => return changed(),
            Err(e) => return Side::Unreadable(format!("cannot read {}: {e}", path.display())),
        };
        if opened.size > MAX_DIFF_BYTES {
            return Side::TooLarge(opened.size);
        }
        let mut data = Vec::new();
        if let Err(e) = (&mut opened.file)
            .take(MAX_DIFF_BYTES + 1)
            .read_to_end(&mut data)
        {
            return Side::Unreadable(format!("cannot read {}: {e}", path.display()));
        }
        if data.len() as u64 > MAX_DIFF_BYTES {
            return Side::TooLarge(data.len() as u64);
        }
        if zync_fs::hash_bytes(&data) != sha256 {
            return changed();
        }
        Side::Content(data)
    }

    fn size(&self) -> u64 {
        match self {
            Side::Empty | Side::Unreadable(_) => 0,
            Side::Content(d) => d.len() as u64,
            Side::TooLarge(n) => *n,
        }
    }

    /// Why this side cannot be shown, if it cannot.
    fn unshown(&self) -> Option<Unshown> {
        match self {
            Side::Empty | Side::Unreadable(_) => None,
            Side::Content(d) => unshown_content(d.len() as u64, d),
            Side::TooLarge(_) => Some(Unshown::Large),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Side::Content(d) => d,
            _ => &[],
        }
    }
}

/// The diff of E's current file against R's staged version, as shown to the user: a unified
/// diff ([`crate::diff`]), or a one-line description when R's version is binary or too large
/// to diff ([`unshown`]: such a file waits for an explicit yes).
///
/// R chose the content and the path: every line R's text is in is shown with its hidden
/// characters made visible (`^M`, `^[`, `\xFF`), and no text of R's begins a line of its
/// own, so what is printed is what would land on E.
pub fn diff(root: &Path, rel: &RelPath, file: &StagedFile, session_dir: &Path) -> String {
    let name = crate::session::file_name(file);
    let said = |what: &str| format!("{name}: {}\n", zync_cli::visible::line(what));
    let current = match probe(root, rel) {
        Ok(c) => c,
        Err(e) => return said(&format!("{e:#}")),
    };
    let (old, old_label) = match &current {
        Current::Missing => (Side::Empty, "/dev/null".to_string()),
        Current::File { sha256, .. } => {
            (Side::read_on_e(root, rel, sha256), format!("a/{name} (E)"))
        }
        Current::Other(what) => return said(&format!("E has {what} there; not diffed")),
    };
    let mode = match (file.action, &current) {
        (Action::Write, Current::Missing) => {
            format!("new file mode {}\n", octal(zync_fs::mask_mode(file.mode)))
        }
        (Action::Delete, Current::File { mode, .. }) => {
            format!("deleted file mode {}\n", octal(*mode))
        }
        _ => match mode_change(file, &current) {
            Some((old, new)) => format!("old mode {}\nnew mode {}\n", octal(old), octal(new)),
            None => String::new(),
        },
    };
    let (new, new_label) = match file.action {
        Action::Delete => (Side::Empty, "/dev/null".to_string()),
        Action::Write => match session_file(session_dir, file.staged_name.as_deref(), "staged") {
            Ok(p) => (Side::read(&p), format!("b/{name} (R)")),
            Err(e) => (Side::Unreadable(format!("{e:#}")), String::new()),
        },
    };
    // Content too large to read is compared by hash.
    let same = match (&current, &file.sha256) {
        (Current::File { sha256, .. }, Some(new)) => file.action == Action::Write && sha256 == new,
        _ => false,
    };
    let body = render(&name, &old, &old_label, &new, &new_label, same);
    if mode.is_empty() {
        return body;
    }
    match body.strip_suffix(": no differences\n") {
        // A mode-only change is a change: say what it is, never "no differences".
        Some(_) => format!("{name}: content unchanged\n{mode}"),
        None => format!("{mode}{body}"),
    }
}

/// The diff of two sides; `name` and the labels are shown as they are (made visible by the
/// caller).
fn render(
    name: &str,
    old: &Side,
    old_label: &str,
    new: &Side,
    new_label: &str,
    same: bool,
) -> String {
    for side in [old, new] {
        if let Side::Unreadable(msg) = side {
            return format!("{name}: {}\n", zync_cli::visible::line(msg));
        }
    }
    let (o, n) = (old.bytes(), new.bytes());
    let unchanged = same || matches!((old, new), (Side::Content(o), Side::Content(n)) if o == n);
    if unchanged {
        return format!("{name}: no differences\n");
    }
    match (old.unshown(), new.unshown()) {
        (_, Some(why)) => format!(
            "{name}: {}, {} bytes -> {} bytes, not shown ({}): applied only when you say yes \
             (interactively, or with --force)\n",
            why.label(),
            old.size(),
            new.size(),
            why.why()
        ),
        (Some(why), None) if matches!(new, Side::Empty) => {
            format!("{name}: {}, {} bytes, deleted\n", why.label(), old.size())
        }
        // E's version cannot be shown, R's can: R's is shown whole, every line added.
        (Some(why), None) => format!(
            "{name}: E's version is a {}, {} bytes, not shown; R's version in full:\n{}",
            why.label(),
            old.size(),
            crate::diff::unified(&[], n, old_label, new_label)
        ),
        (None, None) => crate::diff::unified(o, n, old_label, new_label),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    #[test]
    fn probe_tells_missing_file_and_other() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        assert_eq!(probe(r, &rel("a/b")).expect("probe"), Current::Missing);
        std::fs::write(r.join("f"), b"hi").expect("write");
        assert_eq!(
            probe(r, &rel("f")).expect("probe"),
            Current::File {
                sha256: zync_fs::hash_bytes(b"hi"),
                size: 2,
                mode: std::fs::metadata(r.join("f"))
                    .expect("stat")
                    .permissions()
                    .mode()
                    & 0o7777,
            }
        );
        std::fs::create_dir(r.join("d")).expect("mkdir");
        assert!(matches!(
            probe(r, &rel("d")).expect("probe"),
            Current::Other(_)
        ));
        symlink(r.join("f"), r.join("l")).expect("symlink");
        assert!(matches!(
            probe(r, &rel("l")).expect("probe"),
            Current::Other(_)
        ));
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("x"), b"outside").expect("write");
        symlink(outside.path(), r.join("out")).expect("symlink");
        assert!(
            matches!(probe(r, &rel("out/x")).expect("probe"), Current::Other(_)),
            "a symlinked parent must not be followed"
        );
    }

    #[test]
    fn only_a_nul_the_size_or_a_flood_of_escapes_keeps_content_from_being_shown() {
        assert_eq!(unshown_content(11, b"plain text\n"), None);
        assert_eq!(unshown_content(3, b"a\0b"), Some(Unshown::Binary));
        assert_eq!(unshown_content(3, &[0xff, 0xfe, b'a']), None);
        assert_eq!(unshown_content(9, "ünïcödé".as_bytes()), None);
        // A few bytes that are not UTF-8 are shown; a file of them is not.
        let some = [b"text \xe9t\xe9\n".repeat(100)].concat();
        assert_eq!(unshown_content(some.len() as u64, &some), None);
        let garbled = vec![0x80u8; 20_000];
        assert_eq!(
            unshown_content(garbled.len() as u64, &garbled),
            Some(Unshown::Garbled)
        );
        assert_eq!(
            unshown_content(MAX_DIFF_BYTES + 1, b"text"),
            Some(Unshown::Large)
        );
    }

    #[test]
    fn session_file_names_are_plain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path().join("s");
        assert_eq!(
            session_file(&d, Some("staged-1"), "staged").expect("ok"),
            d.join("staged-1")
        );
        for bad in ["../x", "a/b", "/etc/passwd", ""] {
            assert!(session_file(&d, Some(bad), "staged").is_err(), "{bad}");
        }
        assert!(session_file(&d, None, "staged").is_err());
    }

    /// Another user who made the staging area, or a session's directory in it, first (the
    /// database in a shared directory such as /tmp) could put there what apply writes to E
    /// and undo restores: nothing in it is read. A symlink there is not followed either.
    #[test]
    fn session_files_in_another_users_directory_or_through_a_symlink_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let area = tmp.path().join("sync.db.staging");
        let session = area.join("s1");
        std::fs::create_dir_all(&session).expect("mkdir");
        session_file(&session, Some("backup-1"), "backup").expect("this user's own");
        if zync_fs::euid() != 0 {
            eprintln!("skipped the other user's part: making a directory of theirs needs root");
            return;
        }
        for theirs in [&area, &session] {
            std::os::unix::fs::chown(theirs, Some(65534), Some(65534)).expect("chown");
            let err = session_file(&session, Some("backup-1"), "backup")
                .expect_err("another user's directory");
            let msg = format!("{err:#}");
            assert!(
                msg.contains("belongs to another user, uid 65534")
                    && msg.to_lowercase().contains("remove it"),
                "{msg}"
            );
            std::os::unix::fs::chown(theirs, Some(0), Some(0)).expect("chown back");
        }
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, area.join("s2")).expect("symlink");
        let err = session_file(&area.join("s2"), Some("backup-1"), "backup").expect_err("link");
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
    }

    /// Another user on E swaps E's directory `d` with a symlink to a directory of theirs
    /// holding a decoy `f.txt` (`renameat2(RENAME_EXCHANGE)` in a loop) while the conflict's
    /// diff is made: the diff is of E's own file or says it changed, never of the decoy.
    #[test]
    fn a_parent_swapped_for_a_symlink_never_puts_a_decoy_in_the_diff() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let f = crate::testkit::Fixture::new();
        f.e_write("d/f.txt", b"E's line\n");
        let id = "00000000-0000-4000-8000-000000000001";
        f.stage(
            id,
            &[crate::testkit::write(
                "d/f.txt",
                b"R's line\n",
                Some(b"older\n"),
            )],
        );
        let file = f.file(id, "d/f.txt");
        let theirs = f.root.with_file_name("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::fs::write(theirs.join("f.txt"), b"decoy line\n").expect("write");
        let link = f.root.with_file_name("link");
        symlink(&theirs, &link).expect("symlink");
        let d = f.root.join("d");
        let stop = AtomicBool::new(false);
        let swaps = AtomicU64::new(0);
        let (mut diffs, mut own, mut decoy) = (0u32, 0u32, None);
        std::thread::scope(|scope| {
            scope.spawn(|| crate::testkit::exchange_until(&d, &link, &stop, &swaps));
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_secs(2) || own < 50 {
                let shown = diff(&f.root, &rel("d/f.txt"), &file, &f.session_dir(id));
                diffs += 1;
                if shown.contains("decoy") {
                    // Asserted once the swapper has stopped: a panic here would wait for it.
                    decoy = Some(shown);
                    break;
                }
                own += u32::from(shown.contains("-E's line"));
                if started.elapsed() > std::time::Duration::from_secs(20) {
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        assert_eq!(decoy, None, "diff {diffs} shows the decoy");
        assert!(
            swaps.load(Ordering::Relaxed) > 100,
            "the swapper barely ran"
        );
        assert!(own > 20, "only {own} of {diffs} diffs showed E's file");
    }
}
