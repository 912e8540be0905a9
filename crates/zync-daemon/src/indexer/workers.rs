//! The indexer's pool of walking and hashing threads, so that a startup scan of many new
//! files hashes them in parallel.

use anyhow::Context;

/// The threads that walk and hash for the indexer. Built on first use, so a failure to start threads is an error
/// of the scan that needs them.
pub(super) struct Workers {
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

impl Workers {
    pub(super) fn new(threads: usize) -> Workers {
        Workers {
            threads: threads.max(1),
            pool: None,
        }
    }

    /// The pool: rayon's parallel iterators run inside it (`install`, `in_place_scope`; the
    /// scan's walk, the hashing) use these threads and no others.
    pub(super) fn pool(&mut self) -> anyhow::Result<&rayon::ThreadPool> {
        if self.pool.is_none() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .thread_name(|i| format!("zync-hash-{i}"))
                .build()
                .context("cannot start the indexer's hashing threads")?;
            self.pool = Some(pool);
        }
        self.pool
            .as_ref()
            .context("the indexer's hashing threads are missing")
    }
}
