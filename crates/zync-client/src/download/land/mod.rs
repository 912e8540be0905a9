//! Where a download lands on R: a plan's immediate steps carried out ([`act`]), files received
//! into temp files and sealed ([`file`]), flushed in batches before their renames and records
//! ([`batch`]: invariants 1 and 2 (docs/ARCHITECTURE.md)), all writes in a root through one
//! [`place::Place`].

pub mod act;
pub mod batch;
pub mod file;
pub mod place;
