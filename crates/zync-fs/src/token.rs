//! The access token file shared by the daemon (which creates it) and the client (which reads
//! a copy): a random 256-bit token in hex, mode 0600, refused when others can read it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

/// Reads a token file, refusing one that other users can read: the token is a password.
///
/// # Errors
/// When the file cannot be read, is empty, or has group/other permission bits.
pub fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let unreadable = |source| TokenError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
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
}
