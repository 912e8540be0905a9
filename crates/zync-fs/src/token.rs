//! The access token file shared by the daemon (which creates it) and the client (which reads
//! a copy): a random 256-bit token in hex, mode 0600, refused when others can read it, when
//! it is a symlink, or when another user owns it (they would know the token: invariant 8).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a token file cannot be used; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read token file {path}: {source}; copy it from machine E or set ZYNC_TOKEN")]
    Unreadable {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Group or other permission bits are set.
    #[error(
        "token file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Another user owns the file: they may have made it, and then know the token.
    #[error(
        "token file {path} belongs to another user, {}, not to this program's user: whoever \
         made it knows the token, so it is not used; remove it (the daemon makes a new one \
         when it is missing; copy that one to the client), or keep the token in a directory \
         only you can write (--token-file, or a --db there)",
        crate::private::describe_user(*.uid)
    )]
    NotOwned {
        /// The token file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The file is a symlink, or not a regular file.
    #[error(
        "token file {path} is {what}, which zync does not read a token from; remove it, or \
         point --token-file at the token file itself"
    )]
    NotAFile {
        /// The token file.
        path: PathBuf,
        /// What it is ("a symlink").
        what: &'static str,
    },
    /// The file holds no token.
    #[error("token file {path} is empty; delete it to have the daemon make a new one")]
    Empty {
        /// The token file.
        path: PathBuf,
    },
    /// A new token file cannot be made.
    #[error("cannot create token file {path}: {source}")]
    Create {
        /// The token file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Reads a token file, refusing one that other users can read (the token is a password), one
/// that another user owns (whoever made it knows it), and a symlink. What is checked is what is
/// read: one descriptor, opened without following a symlink.
///
/// # Errors
/// When the file cannot be read, is empty, is a symlink or not a regular file, belongs to
/// another user, or has group/other permission bits.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let unreadable = |source| TokenError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let not_a_file = |what| TokenError::NotAFile {
        path: path.to_path_buf(),
        what,
    };
    // O_NONBLOCK: a FIFO planted there must not hang the open; it is refused below.
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_a_file("a symlink")),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(not_a_file("not a regular file"));
    }
    if meta.uid() != crate::private::euid() {
        return Err(TokenError::NotOwned {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    // A token is 64 characters: a few KiB is plenty, and a huge file is not read whole.
    (&mut file)
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

/// Creates a token file holding `token`, mode 0600; never replaces an existing file.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn create_token_file(path: &Path, token: &str) -> Result<(), TokenError> {
    let create = |source| TokenError::Create {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create)?;
    // Set again on the open file: the umask can narrow the mode given to open below 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(create)?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .map_err(create)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zync.token");
        create_token_file(&path, "abc").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "abc");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            create_token_file(&path, "other").is_err(),
            "an existing token must not be replaced"
        );
        assert_eq!(read_token_file(&path).unwrap(), "abc");
    }

    #[test]
    fn refuses_open_empty_and_missing_files_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_token_file(&path)
            .unwrap_err()
            .to_string()
            .contains("chmod 600"));
        std::fs::write(&path, "  \n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_token_file(&path)
            .unwrap_err()
            .to_string()
            .contains("is empty"));
        let missing = read_token_file(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("ZYNC_TOKEN"), "{missing}");
    }

    /// Another user who could create files where the token is kept (a sticky shared
    /// directory) made it first, with a token they know: it is refused, naming its owner,
    /// and a symlink to such a file is not followed.
    #[test]
    fn another_users_token_file_and_a_symlink_are_refused() {
        if crate::private::euid() != 0 {
            eprintln!("skipped: making a file of another user's needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zync.token");
        std::fs::write(&path, "known-to-them\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        let err = read_token_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("belongs to another user, uid 65534") && err.contains("remove it"),
            "{err}"
        );
        let link = dir.path().join("link.token");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = read_token_file(&link).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
    }
}
