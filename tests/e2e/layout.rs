//! The test layout itself: with `autotests = false`, cargo compiles only what main.rs names, so
//! a test file added beside the others without a `mod` line would never run. Fail instead.

use std::path::Path;

#[test]
fn every_test_file_is_a_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(root.join("e2e/main.rs")).expect("read tests/e2e/main.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("e2e")).expect("read tests/e2e") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if let Some(module) = name.strip_suffix(".rs") {
            if module != "main" && !main.contains(&format!("\nmod {module};\n")) {
                missing.push(format!(
                    "tests/e2e/{name} (add `mod {module};` to tests/e2e/main.rs)"
                ));
            }
        }
    }
    for entry in std::fs::read_dir(&root).expect("read tests") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .to_string();
        if name.ends_with(".rs") {
            missing.push(format!(
                "tests/{name} (move it to tests/e2e/ and add a `mod` line)"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "test files no test binary compiles:\n  {}",
        missing.join("\n  ")
    );
}
