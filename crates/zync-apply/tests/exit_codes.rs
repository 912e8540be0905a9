//! Runs the real `zync-apply` binary to pin what `main.rs` adds: exit codes (3 for conflicts
//! left staged), the `zync-apply: ` error prefix, and refusing to prompt without a terminal.

use std::path::Path;
use std::process::{Command, Stdio};

use zync_db::{Action, FileState, Index, SessionStatus, StagedFile};

const ID: &str = "e2e0c0de-0000-4000-8000-000000000001";

/// The root `dir` at `path` as the daemon records it: with the directory it leads to now.
fn served(dir: &str, path: &Path) -> zync_db::StoredRoot {
    let id = zync_fs::RootId::of(path).expect("the root's identity");
    zync_db::StoredRoot {
        dir: dir.into(),
        path: path.display().to_string(),
        identity: Some(zync_db::RootIdentity {
            dev: id.dev,
            ino: id.ino,
            born_ns: id.born_ns,
        }),
    }
}

fn stage(db: &Path, root: &Path) {
    let mut index = Index::open(db).expect("open");
    index.set_roots(&[served("docs", root)]).expect("roots");
    index.create_session(ID, "r").expect("session");
    let dir = zync_db::session_dir(db, ID);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(root.join("c.txt"), b"E edit\n").expect("write");
    for (path, content, base) in [
        ("a.txt", &b"new\n"[..], None),
        (
            "c.txt",
            &b"R edit\n"[..],
            Some(zync_fs::hash_bytes(b"base\n")),
        ),
    ] {
        std::fs::write(dir.join(format!("s-{path}")), content).expect("write");
        index
            .add_staged_file(&StagedFile {
                session_id: ID.into(),
                dir: "docs".into(),
                path: path.into(),
                action: Action::Write,
                mode: 0o644,
                size: content.len() as u64,
                mtime_ns: 0,
                sha256: Some(zync_fs::hash_bytes(content)),
                conflict: base.is_some(),
                base_sha256: base,
                state: FileState::Staged,
                staged_name: Some(format!("s-{path}")),
                backup_name: None,
                e_existed: false,
                base_mode: None,
            })
            .expect("add");
    }
    index
        .set_session_status(ID, SessionStatus::Staged)
        .expect("status");
}

fn run(db: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zync-apply"))
        // A config file of the user running the tests must not change them.
        .arg("--config")
        .arg("/dev/null")
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run zync-apply");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_and_no_prompt_without_a_terminal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = tmp.path().join("sync.db");
    let root = tmp.path().join("e");
    std::fs::create_dir(&root).expect("mkdir");
    stage(&db, &root);

    let (code, out, err) = run(&db, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(ID), "{out}");

    let (code, _, err) = run(&db, &["apply", &ID[..8]]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("zync-apply: ")
            && err.contains("--non-interactive")
            && err.contains("--force"),
        "{err}"
    );
    assert!(!root.join("a.txt").exists(), "changed E before failing");

    let (code, out, err) = run(&db, &["apply", ID, "--non-interactive"]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(root.join("a.txt").exists());
    assert_eq!(
        std::fs::read(root.join("c.txt")).expect("read"),
        b"E edit\n"
    );

    let (code, out, err) = run(&db, &["apply", ID, "--non-interactive", "--force"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        std::fs::read(root.join("c.txt")).expect("read"),
        b"R edit\n"
    );

    let (code, _, err) = run(&db, &["show", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("zync-apply list --all"), "{err}");
}
