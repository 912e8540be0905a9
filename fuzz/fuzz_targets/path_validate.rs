//! Arbitrary strings as relative paths and dir names. DESIGN invariant 3: whatever
//! `RelPath::parse` accepts names something inside the root, and so does every ancestor.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use zync_fs::path::{MAX_COMPONENT_BYTES, MAX_DIR_NAME_CHARS, MAX_PATH_BYTES};
use zync_fs::{DirName, RelPath};

fn check_rel_path(input: &str, p: &RelPath) {
    let s = p.as_str();
    assert_eq!(s, input, "parse changed the path");
    assert!(!s.is_empty(), "accepted an empty path");
    assert!(!s.starts_with('/'), "accepted an absolute path {s:?}");
    assert!(!s.contains('\0'), "accepted NUL in {s:?}");
    assert!(!s.contains('\\'), "accepted a backslash in {s:?}");
    assert!(s.len() <= MAX_PATH_BYTES, "accepted {} bytes", s.len());
    for c in s.split('/') {
        assert!(
            !c.is_empty() && c != "." && c != "..",
            "accepted component {c:?} in {s:?}"
        );
        assert!(
            c.len() <= MAX_COMPONENT_BYTES,
            "accepted a {}-byte component",
            c.len()
        );
    }
    assert_eq!(
        RelPath::parse(s),
        Ok(p.clone()),
        "re-parse differs for {s:?}"
    );
    assert_eq!(RelPath::from_path(Path::new(s)), Ok(p.clone()));

    // Joined under a root, the path stays under it, component by component.
    let root = Path::new("/zync-fuzz-root/dir");
    let full = p.to_path(root);
    assert!(full.starts_with(root), "{s:?} escapes the root: {full:?}");
    let rest = full.strip_prefix(root).expect("under root");
    assert!(
        rest.components().all(|c| matches!(c, Component::Normal(_))),
        "{s:?} has a non-normal component under the root: {rest:?}"
    );
    assert_eq!(
        rest.components().count(),
        p.depth(),
        "component count of {s:?}"
    );

    // Every ancestor is itself a valid path, a proper prefix, and they nest in order.
    let ancestors = p.ancestors();
    assert_eq!(ancestors.len(), p.depth() - 1);
    for (i, a) in ancestors.iter().enumerate() {
        assert_eq!(
            RelPath::parse(a.as_str()).as_ref(),
            Ok(a),
            "ancestor {a:?} of {s:?}"
        );
        assert!(
            p.starts_with(a),
            "{s:?} does not start with its ancestor {a:?}"
        );
        assert_eq!(a.depth(), i + 1);
        assert!(a.to_path(root).starts_with(root));
    }
    assert_eq!(p.parent(), ancestors.last().cloned());
    assert!(!p.file_name().is_empty() && !p.file_name().contains('/'));
}

fn check_dir_name(input: &str, d: &DirName) {
    let s = d.as_str();
    assert_eq!(s, input);
    let n = s.chars().count();
    assert!(
        (1..=MAX_DIR_NAME_CHARS).contains(&n),
        "accepted dir name of {n} chars"
    );
    assert!(
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
        "accepted dir name {s:?}"
    );
    assert!(s != "." && s != "..");
    // A dir name is a single safe path component too.
    assert!(
        RelPath::parse(s).is_ok(),
        "dir name {s:?} is not a valid path"
    );
}

fuzz_target!(|data: &[u8]| {
    let lossy;
    let text = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => {
            lossy = String::from_utf8_lossy(data);
            &lossy
        }
    };
    if let Ok(p) = RelPath::parse(text) {
        check_rel_path(text, &p);
    }
    if let Ok(d) = DirName::parse(text) {
        check_dir_name(text, &d);
    }
    // Joining a fuzzed component onto a valid path must validate the result too.
    if let Some((head, tail)) = text.split_once('\u{1}') {
        if let Ok(base) = RelPath::parse(head) {
            if let Ok(joined) = base.join(tail) {
                check_rel_path(&format!("{head}/{tail}"), &joined);
                assert!(joined.starts_with(&base));
            }
        }
    }
});
