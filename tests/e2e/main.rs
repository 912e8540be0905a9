//! The end-to-end tests: one test binary (ripgrep's tests/tests.rs layout) with a module per
//! area, all sharing the harness in tests/common. One binary links once, and builds the real
//! binaries (zync-daemon, zync-client, zync-apply) once per run, where a binary per file linked
//! nineteen times and ran nineteen nested builds. Run one area with `cargo test --test e2e
//! sync::`.
//!
//! `autotests = false` in the root Cargo.toml: a file added to tests/ is compiled only when it
//! is a module here (the test `layout::every_test_file_is_a_module` fails otherwise).

#[path = "../common/mod.rs"]
mod common;

mod apply_safety;
mod auth_and_cli;
mod barrier;
mod config;
mod crash;
mod delta;
mod demo;
mod dry_run;
mod flood;
mod harness;
mod ignored;
mod layout;
mod local_faults;
mod loop_mode;
mod modes;
mod network_faults;
mod own_state;
mod pages;
mod progress;
mod protocol;
mod race;
mod regressions;
mod restart_and_conflicts;
mod review;
mod staging_limits;
mod status;
mod swapped_root;
mod sync;
mod trust;
mod tunnel;
mod unix_socket;
mod upstream;
mod watch;
mod wiped_root;
