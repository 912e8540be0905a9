//! Deterministic workloads: a seeded PRNG makes the same source-like tree and big files on every
//! run, so zync and rsync (and successive runs) see exactly the same data.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// SplitMix64: tiny, fast and good enough for benchmark data; no dependency needed.
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with pseudo-random bytes (incompressible, like already-compressed data).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "let",
    "fn",
    "match",
    "self",
    "value",
    "index",
    "buffer",
    "return",
    "if",
    "else",
    "for",
    "while",
    "config",
    "path",
    "error",
    "result",
    "count",
    "len",
    "push",
    "insert",
    "Some",
    "None",
    "Ok",
    "Err",
    "impl",
    "struct",
    "pub",
    "use",
    "mod",
    "async",
    "await",
    "=",
    "+=",
    "->",
    "{",
    "}",
    "(",
    ")",
    ";",
    "0",
    "1",
    "42",
    "&mut",
    "Vec::new()",
    "String",
];

/// One source-like file: lines of indented code-ish words; sizes spread log-uniformly from
/// about 100 B to 32 KiB, as in a real source tree.
pub fn source_file(rng: &mut Rng) -> Vec<u8> {
    let target = 100usize << rng.below(9); // 100 B .. 25.6 KiB
    let target = target + rng.below(target as u64) as usize / 4;
    let mut out = Vec::with_capacity(target + 80);
    while out.len() < target {
        let indent = rng.below(4) as usize * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        for i in 0..(3 + rng.below(8)) {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// The relative path of file `i` of a small tree: 100 files per directory, two levels deep.
pub fn source_path(i: usize) -> PathBuf {
    let ext = ["rs", "py", "c", "h", "md", "toml", "js", "txt"][i % 8];
    PathBuf::from(format!(
        "src/m{:03}/p{:02}/f{i:06}.{ext}",
        i / 1000,
        (i / 100) % 10
    ))
}

/// Calls `each(relative path, content)` for the `n` files of the tree fixed by `seed`, without
/// holding the tree in memory (100,000 files would not fit comfortably).
pub fn for_each_source_file(
    n: usize,
    seed: u64,
    mut each: impl FnMut(PathBuf, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let mut rng = Rng::new(seed);
    for i in 0..n {
        each(source_path(i), source_file(&mut rng))?;
    }
    Ok(())
}

/// Writes the tree of `n` files under `root`; returns its total size in bytes.
///
/// # Errors
/// When a file cannot be written.
pub fn small_tree(root: &Path, n: usize, seed: u64) -> Result<u64> {
    let mut total = 0u64;
    for_each_source_file(n, seed, |rel, content| {
        total += content.len() as u64;
        write_at(root, &rel, &content)
    })?;
    Ok(total)
}

/// Writes a tree of `n` files under `root` in which half share their content, as in real trees:
/// a quarter are empty (`__init__.py`, `.gitkeep`), a quarter are copies of one of 50 common
/// files (licenses, configurations, vendored copies), and the rest are source files of their
/// own. Returns its total size in bytes.
///
/// # Errors
/// When a file cannot be written.
pub fn shared_tree(root: &Path, n: usize, seed: u64) -> Result<u64> {
    let mut rng = Rng::new(seed);
    let common: Vec<Vec<u8>> = (0..50).map(|_| source_file(&mut rng)).collect();
    let mut total = 0u64;
    for i in 0..n {
        let content = match i % 4 {
            0 => Vec::new(),
            1 => common[rng.below(common.len() as u64) as usize].clone(),
            _ => source_file(&mut rng),
        };
        total += content.len() as u64;
        write_at(root, &source_path(i), &content)?;
    }
    Ok(total)
}

/// Writes `content` at `rel` under `root`, making its parent directories.
fn write_at(root: &Path, rel: &Path, content: &[u8]) -> Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a file of `size` pseudo-random bytes.
///
/// # Errors
/// When the file cannot be written.
pub fn big_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// Overwrites `len` bytes in the middle of the file at `path` with new pseudo-random bytes.
///
/// # Errors
/// When the file cannot be read or written.
pub fn edit_middle(path: &Path, len: usize, seed: u64) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    let size = file.metadata()?.len();
    let mut buf = vec![0u8; len];
    Rng::new(seed).fill(&mut buf);
    file.seek(SeekFrom::Start(size / 2 - len as u64 / 2))?;
    file.write_all(&buf)?;
    // A save seconds later, as in real life: rsync's quick check compares whole-second mtimes
    // and would skip an edit made in the same second as the previous sync.
    let before = fs::metadata(path)?.modified()?;
    file.set_modified(before + std::time::Duration::from_secs(2))?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(n: usize, seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
        let mut all = Vec::new();
        for_each_source_file(n, seed, |p, c| {
            all.push((p, c));
            Ok(())
        })
        .unwrap();
        all
    }

    #[test]
    fn the_same_seed_gives_the_same_tree_and_another_seed_does_not() {
        let a = fingerprint(300, 7);
        assert_eq!(a, fingerprint(300, 7), "same seed, different tree");
        assert_ne!(a, fingerprint(300, 8), "different seeds, same tree");
        let paths: std::collections::HashSet<_> = a.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(paths.len(), 300, "paths must be unique");
    }

    #[test]
    fn small_files_have_varied_sizes_between_100_bytes_and_32_kib() {
        let sizes: Vec<usize> = fingerprint(500, 1).iter().map(|(_, c)| c.len()).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*min >= 100 && *max <= 33 * 1024, "sizes {min}..{max}");
        assert!(*max > 10 * *min, "sizes not varied: {min}..{max}");
    }

    #[test]
    fn half_of_a_shared_tree_shares_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let total = shared_tree(dir.path(), 400, 5).unwrap();
        let contents: Vec<Vec<u8>> = (0..400)
            .map(|i| fs::read(dir.path().join(source_path(i))).unwrap())
            .collect();
        assert_eq!(total, contents.iter().map(|c| c.len() as u64).sum::<u64>());
        let empty = contents.iter().filter(|c| c.is_empty()).count();
        assert_eq!(empty, 100, "a quarter empty");
        let distinct: std::collections::HashSet<&Vec<u8>> = contents.iter().collect();
        // 200 of their own, the empty one, and at most 50 common ones.
        assert!(
            (201..=251).contains(&distinct.len()),
            "{} distinct contents in 400 files",
            distinct.len()
        );
        let again = tempfile::tempdir().unwrap();
        shared_tree(again.path(), 400, 5).unwrap();
        for i in [1, 2, 399] {
            let path = source_path(i);
            assert_eq!(fs::read(again.path().join(&path)).unwrap(), contents[i]);
        }
    }

    #[test]
    fn big_files_are_reproducible_and_the_edit_changes_only_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        big_file(&a, 300_000, 3).unwrap();
        big_file(&b, 300_000, 3).unwrap();
        let before = fs::read(&a).unwrap();
        assert_eq!(before, fs::read(&b).unwrap());
        edit_middle(&a, 1000, 9).unwrap();
        let after = fs::read(&a).unwrap();
        assert_eq!(after.len(), before.len());
        let changed: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(changed.len() > 900, "only {} bytes changed", changed.len());
        assert!(
            changed[0] >= 149_500 && *changed.last().unwrap() < 150_500,
            "edit not in the middle"
        );
    }
}
