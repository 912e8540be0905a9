//! Finding, reading and parsing a config file, with errors that name the file and the line
//! and column at fault. A missing file at the default place means "no config"; a missing file
//! named by `--config` is an error, since the user asked for that file.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config file could not be used. Every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that does not exist.
    #[error("--config {}: no such file; check the path (only the default config file may be missing)", path.display())]
    Missing {
        /// The path given to `--config`.
        path: PathBuf,
    },
    /// The file exists but cannot be read (permissions, a directory, not UTF-8).
    #[error("cannot read the config file {}: {source}; fix its permissions or content, or pass --config with another file", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// What reading said.
        source: io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}\n{excerpt}\nfix line {line} of the config file (its keys are the flags under \"Settings\" in --help, without `--`, as in docs/{example}), or pass --config with another file", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What is wrong, as the TOML parser says it.
        message: String,
        /// The line at fault with a marker under the error.
        excerpt: String,
        /// The example file in docs/ that shows every key.
        example: String,
    },
    /// A value that parsed but cannot be used, without a position to point at.
    #[error("{}: {message}; fix the config file, or pass --config with another file", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A config file's settings and where they came from.
#[derive(Debug, Clone, Default)]
pub struct Loaded<T> {
    /// The settings in the file; all unset when no file was read.
    pub values: T,
    /// The file that was read, if any.
    pub path: Option<PathBuf>,
    /// The file that was looked for: `--config`, or the default path (None when there is no
    /// config directory, e.g. HOME unset). Error messages name it.
    pub looked_at: Option<PathBuf>,
    /// The file's text, for errors that point into it.
    text: String,
    /// The config file's name in the config directory (`daemon.toml`), for errors that name its
    /// example in docs/.
    file_name: String,
}

/// The default place of config file `file_name`: `zync/` in the user's config directory
/// (`$XDG_CONFIG_HOME` or `~/.config` on Linux). None when that directory is unknown.
pub fn default_path(file_name: &str) -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("zync").join(file_name))
}

/// Reads config file `explicit` (from `--config`), or `file_name` at its [`default_path`].
///
/// # Errors
/// A `--config` file that does not exist; any file that cannot be read, is not valid TOML,
/// has a key that `T` does not know, or a value of the wrong type (with its line and column).
pub fn load<T: DeserializeOwned + Default>(
    explicit: Option<&Path>,
    file_name: &str,
) -> Result<Loaded<T>, ConfigError> {
    match explicit {
        Some(path) => read(Some(path.to_path_buf()), true, file_name),
        None => read(default_path(file_name), false, file_name),
    }
}

/// Reads `looked_at` if it exists; a missing file is an error only when `required`.
fn read<T: DeserializeOwned + Default>(
    looked_at: Option<PathBuf>,
    required: bool,
    file_name: &str,
) -> Result<Loaded<T>, ConfigError> {
    let Some(path) = looked_at.clone() else {
        return Ok(Loaded {
            file_name: file_name.to_string(),
            ..Loaded::default()
        });
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if required {
                return Err(ConfigError::Missing { path });
            }
            return Ok(Loaded {
                looked_at,
                file_name: file_name.to_string(),
                ..Loaded::default()
            });
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let values = parse(&text, &path, file_name)?;
    Ok(Loaded {
        values,
        path: Some(path),
        looked_at,
        text,
        file_name: file_name.to_string(),
    })
}

/// Parses `text` (the content of `path`) as `T`.
fn parse<T: DeserializeOwned>(text: &str, path: &Path, file_name: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let example = file_name.replace(".toml", ".example.toml");
        match e.span() {
            Some(span) => {
                let (line, column, excerpt) = locate(text, span);
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message,
                    excerpt,
                    example,
                }
            }
            None => ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            },
        }
    })
}

/// The 1-based line and column of `span.start` in `text`, and that line with a marker under
/// the span (as far as it goes on that line).
fn locate(text: &str, span: std::ops::Range<usize>) -> (usize, usize, String) {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[..start].matches('\n').count() + 1;
    let before = &text[line_start..start];
    let column = before.chars().count() + 1;
    let shown = text[line_start..line_end].trim_end_matches('\r');
    let end = floor_char_boundary(text, span.end.clamp(start, line_end));
    let width = text[start..end].chars().count().max(1);
    // Keep tabs so the marker lines up under the text.
    let pad: String = before
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let gutter = " ".repeat(line.to_string().len());
    let excerpt = format!(
        "{gutter} |\n{line} | {shown}\n{gutter} | {pad}{}",
        "^".repeat(width)
    );
    (line, column, excerpt)
}

/// The largest char boundary of `text` at or before `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl<T> Loaded<T> {
    /// An error about the text at `span` of this file: its line and column, the line with a
    /// marker under the span, and `message`.
    pub fn error_at(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        let path = self.path.clone().unwrap_or_default();
        let (line, column, excerpt) = locate(&self.text, span);
        ConfigError::Parse {
            path,
            line,
            column,
            message,
            excerpt,
            example: self.file_name.replace(".toml", ".example.toml"),
        }
    }

    /// A path from the file, as the program should use it: `~` and `~/…` are the home
    /// directory, and a relative path is relative to the config file's directory (so the file
    /// means the same whatever directory the program starts in).
    ///
    /// # Errors
    /// `~` when the home directory is unknown.
    pub fn resolve(&self, value: &Path) -> Result<PathBuf, ConfigError> {
        let Some(file) = &self.path else {
            return Ok(value.to_path_buf());
        };
        if let Ok(rest) = value.strip_prefix("~") {
            let home = dirs::home_dir().ok_or_else(|| ConfigError::Invalid {
                path: file.clone(),
                message: format!(
                    "{} starts with `~` but the home directory is unknown; set HOME or write the whole path",
                    value.display()
                ),
            })?;
            return Ok(home.join(rest));
        }
        Ok(match file.parent() {
            Some(dir) => dir.join(value),
            None => value.to_path_buf(),
        })
    }

    /// A `NAME:PATH` entry of `dirs` with its PATH resolved as [`Loaded::resolve`] does. An
    /// entry without a colon is returned as it is, for the usual `--dirs` check to refuse.
    ///
    /// # Errors
    /// As [`Loaded::resolve`], and a resolved path that is not UTF-8.
    pub fn resolve_spec(&self, spec: &str) -> Result<String, ConfigError> {
        match spec.split_once(':') {
            Some((name, path)) if !path.is_empty() => {
                let resolved = self.resolve(Path::new(path))?;
                let resolved = resolved.to_str().ok_or_else(|| ConfigError::Invalid {
                    path: self.path.clone().unwrap_or_default(),
                    message: format!("dirs entry {spec:?}: {} is not UTF-8", resolved.display()),
                })?;
                Ok(format!("{name}:{resolved}"))
            }
            _ => Ok(spec.to_string()),
        }
    }

    /// Where the user can put a setting instead of passing its flag, for messages: the file
    /// that was read, the default file that does not exist yet, or a `--config` file when
    /// there is no default place.
    pub fn describe(&self) -> String {
        match (&self.path, &self.looked_at) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(path)) => format!("{} (there is no such file yet)", path.display()),
            (None, None) => "a file given with --config (there is no default config file: the home directory is unknown)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of a few typed keys, as serde reads any config file.
    #[allow(dead_code)] // Only serde reads some of the fields.
    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct DaemonFile {
        host: Option<String>,
        port: Option<u16>,
        db: Option<PathBuf>,
        dirs: Option<Vec<String>>,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("daemon.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn parse_error(text: &str) -> (ConfigError, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), text);
        let err = load::<DaemonFile>(Some(&path), "daemon.toml").expect_err("must fail");
        let shown = err.to_string();
        (err, shown)
    }

    #[test]
    fn a_good_file_is_read_and_relative_paths_are_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "# E's daemon\nport = 8001\ndirs = [\"code:src\", \"abs:/srv/x\"]\ndb = \"state/sync.db\"\n",
        );
        let loaded = load::<DaemonFile>(Some(&path), "daemon.toml").expect("load");
        assert_eq!(loaded.values.port, Some(8001));
        assert_eq!(loaded.path.as_deref(), Some(path.as_path()));
        let db = loaded
            .resolve(loaded.values.db.as_deref().expect("db"))
            .expect("resolve");
        assert_eq!(db, dir.path().join("state/sync.db"));
        let specs: Vec<String> = loaded
            .values
            .dirs
            .iter()
            .flatten()
            .map(|s| loaded.resolve_spec(s).expect("spec"))
            .collect();
        assert_eq!(
            specs,
            vec![
                format!("code:{}", dir.path().join("src").display()),
                "abs:/srv/x".to_string()
            ]
        );
        assert_eq!(
            loaded.resolve_spec("nocolon").expect("spec"),
            "nocolon",
            "a malformed entry must reach the --dirs check unchanged"
        );
    }

    #[test]
    fn a_tilde_is_the_home_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "");
        let loaded = load::<DaemonFile>(Some(&path), "daemon.toml").expect("load");
        let home = dirs::home_dir().expect("a home directory in tests");
        assert_eq!(
            loaded
                .resolve(Path::new("~/zync/sync.db"))
                .expect("resolve"),
            home.join("zync/sync.db")
        );
        assert_eq!(
            loaded.resolve(Path::new("~")).expect("resolve"),
            home,
            "a bare ~"
        );
        assert_eq!(
            loaded.resolve(Path::new("~x/y")).expect("resolve"),
            dir.path().join("~x/y"),
            "~user is not expanded"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line_and_column() {
        let (err, shown) = parse_error("port = 8001\n\n  dirz = [\"a:/x\"]\n");
        let ConfigError::Parse { line, column, .. } = err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert_eq!((line, column), (3, 3), "{shown}");
        assert!(shown.contains("daemon.toml:3:3"), "{shown}");
        assert!(shown.contains("unknown field `dirz`"), "{shown}");
        assert!(
            shown.contains("`dirs`"),
            "the valid keys are not listed: {shown}"
        );
        assert!(
            shown.contains("3 |   dirz = [\"a:/x\"]\n  |   ^^^^"),
            "no marker under the key: {shown}"
        );
        assert!(shown.contains("docs/daemon.example.toml"), "{shown}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_with_its_line() {
        let (err, shown) = parse_error("host = \"127.0.0.1\"\nport = \"eighty\"\n");
        assert!(
            matches!(
                err,
                ConfigError::Parse {
                    line: 2,
                    column: 8,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(shown.contains("daemon.toml:2:8"), "{shown}");
        assert!(
            shown.contains("u16"),
            "the expected type is not said: {shown}"
        );
    }

    #[test]
    fn bad_toml_is_refused_with_its_line() {
        let (err, shown) = parse_error("port = 8001\ndirs = [\"a:/x\"\nhost = 1\n");
        let ConfigError::Parse { line, .. } = err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert!(line == 2 || line == 3, "line {line}: {shown}");
        assert!(shown.contains("fix line"), "{shown}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_and_a_missing_default_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.toml");
        let err = load::<DaemonFile>(Some(&missing), "daemon.toml").expect_err("must fail");
        assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.toml"), "{err}");

        // At the default place the same file is only looked for.
        let loaded = read::<DaemonFile>(Some(missing.clone()), false, "daemon.toml")
            .expect("a missing default file is no error");
        assert!(loaded.path.is_none(), "{loaded:?}");
        assert_eq!(loaded.looked_at.as_deref(), Some(missing.as_path()));
        assert!(
            loaded.describe().contains("no such file yet"),
            "{}",
            loaded.describe()
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory cannot be read as a file, whoever runs the test (root reads anything).
        let err = load::<DaemonFile>(Some(dir.path()), "daemon.toml").expect_err("must fail");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn the_marker_handles_multibyte_text_and_spans_past_the_line() {
        let text = "# é\nhost = \"é\" x\n";
        let start = text.find(" x").expect("x") + 1;
        let (line, column, excerpt) = locate(text, start..text.len() + 10);
        assert_eq!((line, column), (2, 12));
        assert!(excerpt.ends_with("           ^"), "{excerpt:?}");
    }
}
