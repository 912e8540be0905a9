//! zync's file system layer: validated relative paths, scanning with ignore rules, hashing,
//! atomic writes that never follow symlinks, conflict-copy names, and watching with debounce.
//! Linux only. Everything is re-exported at the crate root.
#![deny(missing_docs)]

pub mod atomic;
mod attrs;
pub mod beneath;
pub mod checkpoint;
pub mod conflict;
pub mod delta;
mod dir_name;
mod dirs;
mod error;
pub mod hash;
pub mod ignore;
mod link_owner;
pub mod lock;
pub mod meta;
pub mod path;
pub mod private;
#[cfg(any(test, feature = "testkit"))]
pub mod race;
pub mod scan;
mod space;
#[cfg(test)]
mod testkit;
pub mod token;
pub mod umask;
pub mod watch;

pub use crate::atomic::{
    check_parents, create_dirs_beneath, ensure_dir, fsync_dir, fsync_dir_beneath,
    fsync_file_beneath, open_file_beneath, remove_beneath, remove_dir_beneath, remove_partials,
    remove_temp_files, rename_beneath, replace_with_symlink, replace_with_symlink_if_unchanged,
    set_mode, set_mode_beneath, set_mtime, set_mtime_beneath, sync_filesystems, AtomicFile,
    FsError, Sealed, PARTIAL_MAX_AGE,
};
pub use crate::beneath::{
    lstat_beneath, pin_root, pin_root_as, remove_if_unchanged, rename_if_unchanged, Dir,
    IfUnchanged, OpenedFile, Parents, RootId,
};
pub use crate::checkpoint::{
    keyed_window_hashes, CheckedSha256, Checkpoints, WindowKey, CHECKPOINT_MIN,
};
pub use crate::conflict::{
    conflict_name, free_conflict_name, is_conflict_copy, keep_as_conflict_copy, CONFLICT_MARKER,
};
pub use crate::delta::DeltaError;
pub use crate::hash::{hash_bytes, hash_file, hash_open, is_sha256_hex, Hasher};
pub use crate::ignore::{
    control_reason, IgnoreError, IgnoreRule, IgnoreRules, Ignored, RuleSource, DEFAULT_IGNORES,
    IGNORE_FILE, TEMP_PREFIX,
};
pub use crate::link_owner::others_symlink;
pub use crate::lock::{try_lock, try_lock_in, Holder, LockFile, Locked};
pub use crate::meta::{lstat, Meta, Stat};
pub use crate::path::{DirName, PathError, RelPath};
pub use crate::private::{
    check_own_dir, check_owner, create_own_dir_all, create_private_dir_all, create_private_file,
    describe_user, euid, make_private, user_name, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE,
};
pub use crate::scan::{scan, scan_dir, ScanEntry, ScanResult};
pub use crate::token::{create_token_file, read_token_file, TokenError};
pub use crate::umask::{mask_mode, mask_with, umask};
pub use crate::watch::{
    next_batch, next_batch_timeout, remove_stale_cookies, Batch, WatchEvent, Watcher,
};
