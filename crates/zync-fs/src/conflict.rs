//! Names for conflict copies (invariant 4): when a change from E meets a local edit on R, R's
//! version is kept next to the file as `name.zync-conflict-STAMP.ext`.

use crate::error::FsError;
use crate::path::{RelPath, MAX_COMPONENT_BYTES, MAX_PATH_BYTES};
use crate::{Dir, Stat};
use std::path::Path;

/// What marks a conflict copy's name.
pub const CONFLICT_MARKER: &str = ".zync-conflict-";

/// The longest stamp kept, in bytes.
const MAX_STAMP_BYTES: usize = 64;

/// Keeps the stamp to characters that are safe in any file name.
fn clean_stamp(stamp: &str) -> String {
    let mut s: String = stamp
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_STAMP_BYTES)
        .collect();
    if s.is_empty() {
        s.push('0');
    }
    s
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The conflict copy name for `rel`: the marker and `stamp` go before the last extension.
/// `dir/foo.txt` gives `dir/foo.zync-conflict-STAMP.txt`, `Makefile` gives
/// `Makefile.zync-conflict-STAMP`, `.bashrc` gives `.bashrc.zync-conflict-STAMP` and `a.tar.gz`
/// gives `a.tar.zync-conflict-STAMP.gz`. Characters of `stamp` outside `[A-Za-z0-9._-]` become
/// `_`. Over-long names are shortened (the stem is cut first) so the result is always valid.
pub fn conflict_name(rel: &RelPath, stamp: &str) -> RelPath {
    let marker = format!("{CONFLICT_MARKER}{}", clean_stamp(stamp));
    let name = rel.file_name();
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => name.split_at(i),
        _ => (name, ""),
    };
    let parent = rel.parent();
    let parent_len = parent.as_ref().map_or(0, |p| p.as_str().len() + 1);
    let budget = MAX_COMPONENT_BYTES.min(MAX_PATH_BYTES.saturating_sub(parent_len));
    // Keep the extension only if at least one byte of stem still fits with it.
    let (stem, ext) =
        if stem.len() + marker.len() + ext.len() <= budget || marker.len() + ext.len() < budget {
            (stem, ext)
        } else {
            (name, "")
        };
    let stem = truncate(stem, budget.saturating_sub(marker.len() + ext.len()));
    let component = truncate(&format!("{stem}{marker}{ext}"), budget).to_string();
    let joined = match &parent {
        Some(p) => p.join(&component),
        None => RelPath::parse(&component),
    };
    // Only a path within a few bytes of the 4096-byte limit gets here: keep the copy at the top
    // of the root rather than lose it.
    joined.unwrap_or_else(|_| {
        RelPath::parse(&format!("zync-conflict-{}", clean_stamp(stamp)))
            .unwrap_or_else(|_| unreachable!("a short clean name is always a valid path"))
    })
}

/// Like [`conflict_name`], but appends `-1`, `-2`... to the stamp until nothing exists at
/// `root/<name>` (a dangling symlink counts as existing).
pub fn free_conflict_name(root: &Path, rel: &RelPath, stamp: &str) -> RelPath {
    const MAX_TRIES: u32 = 10_000;
    let mut candidate = conflict_name(rel, stamp);
    for n in 1..=MAX_TRIES {
        match std::fs::symlink_metadata(candidate.to_path(root)) {
            Ok(_) => {}
            Err(e) if crate::meta::is_missing(&e) => return candidate,
            // Cannot tell (e.g. permission denied): the caller's write will report the problem.
            Err(_) => return candidate,
        }
        candidate = conflict_name(rel, &format!("{stamp}-{n}"));
    }
    candidate
}

/// Renames `root/rel` to a conflict copy beside it and returns the copy's name: the name of
/// [`conflict_name`] for `stamp`, else with `-1`, `-2`... appended to the stamp. Nothing is
/// ever replaced: the rename itself refuses a name that is taken (`RENAME_NOREPLACE`), and
/// both ends are reached through directory handles, never through a symlink. A look by path
/// first (as [`free_conflict_name`] does) could see a name free through a directory another
/// user swapped for a symlink, and the rename then replace an earlier conflict copy in the
/// real one, losing the edit it kept (invariant 4).
///
/// # Errors
///
/// As [`crate::Dir::open_dir`] for either parent; [`FsError::Io`] when the rename fails, or
/// when every name is taken.
pub fn keep_as_conflict_copy(root: &Path, rel: &RelPath, stamp: &str) -> Result<RelPath, FsError> {
    const MAX_TRIES: u32 = 10_000;
    let from_dir = Dir::parent_of(root, rel)?;
    let mut candidate = conflict_name(rel, stamp);
    for n in 1..=MAX_TRIES {
        // Only a path near the length limit has its copy elsewhere (at the top of the root).
        let elsewhere = match candidate.parent() == rel.parent() {
            true => None,
            false => Some(Dir::parent_of(root, &candidate)?),
        };
        let to_dir = elsewhere.as_ref().unwrap_or(&from_dir);
        let renamed =
            match from_dir.rename_noreplace(rel.file_name(), to_dir, candidate.file_name()) {
                // A file system that cannot refuse to replace: look through the handle the rename
                // goes through, then rename.
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    match to_dir.lstat(candidate.file_name()) {
                        Ok(Stat::Missing) => {
                            from_dir.rename(rel.file_name(), to_dir, candidate.file_name())
                        }
                        Ok(_) => Err(std::io::ErrorKind::AlreadyExists.into()),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
        match renamed {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FsError::io("keep a conflict copy of", rel.to_path(root), e)),
        }
        candidate = conflict_name(rel, &format!("{stamp}-{n}"));
    }
    Err(FsError::io(
        "keep a conflict copy of",
        rel.to_path(root),
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{MAX_TRIES} conflict copies with this stamp exist beside it"),
        ),
    ))
}

/// Whether `file_name` is the name of a conflict copy.
pub fn is_conflict_copy(file_name: &str) -> bool {
    match file_name.find(CONFLICT_MARKER) {
        Some(i) => i + CONFLICT_MARKER.len() < file_name.len(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: &str = "20261125T131200";

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    /// Another user swaps the directory of a file for a symlink to a directory of theirs, as
    /// fast as they can, while R's versions of the file are kept as conflict copies with one
    /// stamp (one sync, or two in the same second): each copy kept still holds what it kept,
    /// none was replaced by a later one, and nothing went to their directory.
    #[test]
    fn a_conflict_copy_never_replaces_another_while_its_directory_is_swapped() {
        use std::os::fd::AsRawFd;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let d = root.join("d");
        std::fs::create_dir_all(&d).expect("mkdir");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
        // The real directory, under whichever name it has at the moment.
        let real = std::fs::File::open(&d).expect("open");
        let real_path = std::path::PathBuf::from(format!("/proc/self/fd/{}", real.as_raw_fd()));
        let file = rel("d/f.txt");
        let (kept, swaps) = crate::race::exchanging(&d, &link, || {
            let mut kept = Vec::new();
            for i in 0..1_000 {
                let edit = format!("R's edit {i}");
                std::fs::write(real_path.join("f.txt"), &edit).expect("write");
                if let Ok(copy) = keep_as_conflict_copy(&root, &file, STAMP) {
                    kept.push((copy, edit));
                }
            }
            kept
        });
        assert!(
            swaps > 0 && kept.len() > 10,
            "{swaps} swaps, {} copies",
            kept.len()
        );
        for (copy, edit) in &kept {
            let held = std::fs::read_to_string(real_path.join(copy.file_name())).ok();
            assert_eq!(
                held.as_deref(),
                Some(edit.as_str()),
                "{copy} lost what it kept"
            );
        }
        let strays = std::fs::read_dir(&theirs).expect("read_dir").count();
        assert_eq!(strays, 0, "something was written in their directory");
    }

    #[test]
    fn names() {
        for (input, want) in [
            ("dir/foo.txt", "dir/foo.zync-conflict-20261125T131200.txt"),
            ("Makefile", "Makefile.zync-conflict-20261125T131200"),
            (".bashrc", ".bashrc.zync-conflict-20261125T131200"),
            ("a.tar.gz", "a.tar.zync-conflict-20261125T131200.gz"),
            (
                "a/b/.config.json",
                "a/b/.config.zync-conflict-20261125T131200.json",
            ),
            ("trailing.", "trailing..zync-conflict-20261125T131200"),
            ("x.d/noext", "x.d/noext.zync-conflict-20261125T131200"),
        ] {
            assert_eq!(
                conflict_name(&rel(input), STAMP).as_str(),
                want,
                "for {input:?}"
            );
        }
        assert_eq!(
            conflict_name(&rel("f.txt"), "a/b c").as_str(),
            "f.zync-conflict-a_b_c.txt"
        );
        assert_eq!(conflict_name(&rel("f"), "").as_str(), "f.zync-conflict-0");
    }

    #[test]
    fn long_names_are_shortened() {
        let name = format!("{}.txt", "é".repeat(120)); // 244 bytes
        let out = conflict_name(&rel(&format!("d/{name}")), STAMP);
        assert!(
            out.file_name().len() <= 255,
            "{} bytes",
            out.file_name().len()
        );
        assert!(
            out.file_name()
                .ends_with(".zync-conflict-20261125T131200.txt"),
            "{out}"
        );
        assert!(out.as_str().starts_with("d/éé"), "{out}");

        let long_ext = format!("a.{}", "x".repeat(250));
        let out = conflict_name(&rel(&long_ext), STAMP);
        assert!(
            out.file_name().len() <= 255 && is_conflict_copy(out.file_name()),
            "{out}"
        );

        // A 3999-byte parent leaves 96 bytes for the name.
        let deep = format!(
            "{}/{}.txt",
            vec!["p".repeat(249); 16].join("/"),
            "n".repeat(86)
        );
        let out = conflict_name(&rel(&deep), STAMP);
        assert_eq!(out.as_str().len(), 4096);
        assert!(
            out.file_name()
                .ends_with(".zync-conflict-20261125T131200.txt"),
            "{out}"
        );
    }

    #[test]
    fn free_name_skips_existing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        let f = rel("foo.txt");
        assert_eq!(free_conflict_name(r, &f, STAMP), conflict_name(&f, STAMP));
        std::fs::write(conflict_name(&f, STAMP).to_path(r), b"x").expect("write");
        std::os::unix::fs::symlink(
            "dangling",
            r.join("foo.zync-conflict-20261125T131200-1.txt"),
        )
        .expect("symlink");
        assert_eq!(
            free_conflict_name(r, &f, STAMP).as_str(),
            "foo.zync-conflict-20261125T131200-2.txt"
        );
    }

    #[test]
    fn recognises_copies() {
        assert!(is_conflict_copy("foo.zync-conflict-20261125T131200.txt"));
        assert!(is_conflict_copy(".bashrc.zync-conflict-1"));
        assert!(!is_conflict_copy("foo.txt"));
        assert!(!is_conflict_copy("foo.zync-conflict-"));
        assert!(!is_conflict_copy(".zync-tmp-abc"));
        let made = conflict_name(&rel("x/y.rs"), STAMP);
        assert!(is_conflict_copy(made.file_name()));
    }
}
