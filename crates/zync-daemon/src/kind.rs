//! The one place where the three crates' kinds of entry meet: the file system's
//! (`zync_fs::EntryKind`, from `lstat`), the index's (`zync_db::Kind`, stored) and the wire's
//! (`zync_proto::Kind`, in GET_CHANGES). Those crates do not depend on each other, so no
//! `From` impl can join them (Rust's orphan rule wants one of the two types local); the daemon,
//! which sees all three, converts here and nowhere else. The matches are exhaustive: a new kind
//! in any crate fails to compile here.

use zync_db::Kind;
use zync_fs::EntryKind;

/// The index's kind for what `lstat` found.
pub(crate) fn from_disk(kind: EntryKind) -> Kind {
    match kind {
        EntryKind::File => Kind::File,
        EntryKind::Dir => Kind::Dir,
        EntryKind::Symlink => Kind::Symlink,
    }
}

/// The wire's kind for an index row.
pub(crate) fn to_wire(kind: Kind) -> zync_proto::Kind {
    match kind {
        Kind::File => zync_proto::Kind::File,
        Kind::Dir => zync_proto::Kind::Dir,
        Kind::Symlink => zync_proto::Kind::Symlink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_spelling_from_disk_to_index_to_wire() {
        for disk in [EntryKind::File, EntryKind::Dir, EntryKind::Symlink] {
            let stored = from_disk(disk);
            assert_eq!(
                stored.as_str(),
                disk.as_str(),
                "{disk:?} stored as {stored:?}"
            );
            let wire = to_wire(stored);
            assert_eq!(
                format!("{wire:?}"),
                format!("{stored:?}"),
                "{stored:?} sent as {wire:?}"
            );
        }
    }
}
