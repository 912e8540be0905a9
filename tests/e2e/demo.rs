//! The README's first command, `examples/demo.sh`, must keep working: run it in check mode.

use std::process::Command;

#[test]
fn the_readme_demo_syncs_an_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--check")
        .env("ZYNC_DEMO_DIR", tmp.path())
        .env_remove("ZYNC_TOKEN")
        .output()
        .expect("run examples/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("demo check passed"),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tmp.path().join("r/notes.txt").exists(),
        "the edit did not reach R"
    );
}
