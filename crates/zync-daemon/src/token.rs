//! The access token: loaded from `ZYNC_TOKEN` or a token file that is created with a random
//! 256-bit token (mode 0600) when missing. It never crosses the wire: the handshake proves it
//! (`handshake.rs`).

use std::path::Path;

/// How the daemon authenticates clients.
#[derive(Clone)]
pub enum Auth {
    /// Clients must prove that they hold this token, and the daemon proves it to them.
    Token {
        /// The secret.
        token: String,
        /// Where it came from, for messages (never the token itself).
        source: String,
    },
    /// `--insecure-no-auth`: every client is accepted.
    Disabled,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token { source, .. } => write!(f, "Token(from {source})"),
            Auth::Disabled => f.write_str("Disabled"),
        }
    }
}

impl Auth {
    /// `ZYNC_TOKEN` when set, else the token file, created when missing.
    ///
    /// # Errors
    /// An unreadable, empty or group/world-readable token file.
    pub fn load_or_create(token_file: &Path) -> anyhow::Result<Auth> {
        if let Some(token) = std::env::var("ZYNC_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            return Ok(Auth::Token {
                token: token.trim().to_string(),
                source: "the ZYNC_TOKEN environment variable".to_string(),
            });
        }
        if !token_file.exists() {
            create_token_file(token_file)?;
            tracing::info!(path = %token_file.display(), "created a new access token file; copy it to the client machine");
        }
        let token = zync_fs::read_token_file(token_file)?;
        Ok(Auth::Token {
            token,
            source: token_file.display().to_string(),
        })
    }
}

fn create_token_file(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(zync_fs::create_token_file(path, &token)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_random_token_file_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zync.token");
        create_token_file(&path).unwrap();
        let token = zync_fs::read_token_file(&path).unwrap();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        let other = dir.path().join("other.token");
        create_token_file(&other).unwrap();
        assert_ne!(zync_fs::read_token_file(&other).unwrap(), token);
    }
}
