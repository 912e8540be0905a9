//! Settings: flags that a config file may hold too. A flag is a setting when it is declared
//! under the [`SETTINGS`] help heading; its key in the file is its long name (`token-file`,
//! `log-level`), so the file and `--help` read alike. That heading is the only declaration:
//! adding a setting is adding a flag, and the file, `--help`, completions and man pages follow.
//!
//! A file's settings are merged by parsing the command line again with `--KEY=VALUE` put in
//! front for each setting the command line does not give (directly, through a flag it
//! conflicts with, or through its environment variable). So a file value goes through the same
//! value parser, range checks, conflicts and requirements as the flag, and a flag beats the
//! file, which beats the built-in default.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::builder::{Resettable, ValueHint};
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::Spanned;

use crate::file::{ConfigError, Loaded};

/// The help heading of the flags that are also config-file keys:
/// `#[arg(long, help_heading = zync_cli::SETTINGS)]`.
pub const SETTINGS: &str = "Settings (flags, or keys of the config file)";

/// A config file as read: each key and its value, with where they are in the text.
pub type Entries = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// The settings of `command`: its long flags under the [`SETTINGS`] heading.
pub fn settings(command: &Command) -> impl Iterator<Item = &Arg> {
    command
        .get_arguments()
        .filter(|a| a.get_help_heading() == Some(SETTINGS) && a.get_long().is_some())
}

/// `P` parsed from `argv` with the settings of `file` filled in where the command line does
/// not give them.
///
/// Paths are resolved as [`Loaded::resolve`] says (relative to the file's directory, `~` the
/// home directory) for settings whose value hint is a path, for the PATH of a `NAME:PATH`
/// value, and for the PATH of a `unix:PATH` value.
///
/// # Errors
/// `argv` itself does not parse (the caller parsed it before, so this is unexpected); a key
/// that is no setting, or a value of the wrong shape or type (each with its line and column);
/// file settings that do not go together with each other or with the command line.
pub fn merge<P: clap::Parser>(argv: &[OsString], file: &Loaded<Entries>) -> anyhow::Result<P> {
    let mut command = P::command();
    command.build();
    let matches = command.clone().try_get_matches_from(argv)?;
    let mut injected: Vec<OsString> = Vec::new();
    let mut entries: Vec<_> = file.values.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let Some(arg) = settings(&command).find(|a| a.get_long() == Some(key.get_ref())) else {
            return Err(file
                .error_at(key.span(), unknown_key(&command, key.get_ref()))
                .into());
        };
        if given_or_excluded(&command, &matches, arg) {
            continue;
        }
        let tokens = tokens(arg, key.get_ref(), value, file)?;
        check(arg, &tokens).map_err(|why| file.error_at(value.span(), why))?;
        injected.extend(tokens.into_iter().map(OsString::from));
    }
    let mut all: Vec<OsString> = argv.iter().take(1).cloned().collect();
    all.extend(injected);
    all.extend(argv.iter().skip(1).cloned());
    let merged = command.try_get_matches_from(all).map_err(|e| {
        anyhow::anyhow!(
            "the settings of {} do not go together (with each other or with the command line): {}",
            file.describe(),
            first_line(&e)
        )
    })?;
    Ok(P::from_arg_matches(&merged)?)
}

/// Setting `key` of another program's config file as text (`zync-apply` reads the daemon's
/// `db` this way): None when the file does not set it.
///
/// # Errors
/// The value is not text (told at its line).
pub fn text(file: &Loaded<Entries>, key: &str) -> Result<Option<String>, ConfigError> {
    let Some((_, value)) = file.values.iter().find(|(k, _)| k.get_ref() == key) else {
        return Ok(None);
    };
    match value.get_ref() {
        toml::Value::String(s) => Ok(Some(s.clone())),
        other => Err(file.error_at(
            value.span(),
            format!("`{key}` is text, not {}", describe(other)),
        )),
    }
}

/// Setting `key` of another program's config file as a list of text, like [`text`].
///
/// # Errors
/// The value is not a list of text (told at its line).
pub fn list(file: &Loaded<Entries>, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let Some((_, value)) = file.values.iter().find(|(k, _)| k.get_ref() == key) else {
        return Ok(None);
    };
    let items = match value.get_ref() {
        toml::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>(),
        _ => None,
    };
    items.map(Some).ok_or_else(|| {
        file.error_at(
            value.span(),
            format!("`{key}` is a list of text, like {key} = [\"...\"]"),
        )
    })
}

/// Whether the command line gives `arg`, or a flag that conflicts with it (then that flag
/// overrides the file's setting, as any flag overrides the file).
fn given_or_excluded(command: &Command, matches: &ArgMatches, arg: &Arg) -> bool {
    if crate::given(matches, arg.get_id().as_str()) {
        return true;
    }
    command.get_arguments().any(|other| {
        crate::given(matches, other.get_id().as_str())
            && (command
                .get_arg_conflicts_with(arg)
                .iter()
                .any(|c| c.get_id() == other.get_id())
                || command
                    .get_arg_conflicts_with(other)
                    .iter()
                    .any(|c| c.get_id() == arg.get_id()))
    })
}

/// The command-line words that say what `value` says for setting `arg`.
fn tokens(
    arg: &Arg,
    key: &str,
    value: &Spanned<toml::Value>,
    file: &Loaded<Entries>,
) -> Result<Vec<String>, ConfigError> {
    let at = |why: String| file.error_at(value.span(), why);
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value.get_ref() {
            toml::Value::Boolean(true) => Ok(vec![format!("--{key}")]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(at(format!(
                "`{key}` is true or false, not {}",
                describe(other)
            ))),
        };
    }
    let many = matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    let values: Vec<&toml::Value> = match (value.get_ref(), many) {
        (toml::Value::Array(items), true) => items.iter().collect(),
        (one, true) => {
            return Err(at(format!(
                "`{key}` is a list, like {key} = [\"...\"], not {}",
                describe(one)
            )))
        }
        (toml::Value::Array(_), false) => {
            return Err(at(format!("`{key}` takes one value, not a list")))
        }
        (one, false) => vec![one],
    };
    values
        .into_iter()
        .map(|v| {
            let text = match v {
                toml::Value::String(s) => resolve(arg, s, file)?,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(at(format!(
                        "`{key}` takes text or a number, not {}",
                        describe(other)
                    )))
                }
            };
            Ok(format!("--{key}={text}"))
        })
        .collect()
}

/// `value` with its path resolved the way the file means it (see [`merge`]).
fn resolve(arg: &Arg, value: &str, file: &Loaded<Entries>) -> Result<String, ConfigError> {
    let spec = arg
        .get_value_names()
        .and_then(|names| names.first())
        .is_some_and(|name| name.as_str().starts_with("NAME:"));
    if spec {
        return file.resolve_spec(value);
    }
    if let Some(path) = value.strip_prefix("unix:").filter(|p| !p.is_empty()) {
        return Ok(format!("unix:{}", file.resolve(Path::new(path))?.display()));
    }
    match arg.get_value_hint() {
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath => {
            let resolved = file.resolve(Path::new(value))?;
            resolved
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| ConfigError::Invalid {
                    path: file.path.clone().unwrap_or_default(),
                    message: format!("{} is not UTF-8", resolved.display()),
                })
        }
        _ => Ok(value.to_string()),
    }
}

/// Runs `tokens` through `arg`'s value parser alone, so a bad value is told at its line.
fn check(arg: &Arg, tokens: &[String]) -> Result<(), String> {
    let alone = arg
        .clone()
        .required(false)
        .requires(Resettable::Reset)
        .conflicts_with(Resettable::Reset)
        .group(Resettable::Reset)
        .default_value(None)
        .env(None);
    Command::new("config")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(alone)
        .try_get_matches_from(tokens)
        .map(|_| ())
        .map_err(|e| first_line(&e))
}

/// A clap error's message without its `error: ` prefix and its "try --help" tail.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The message for `key`, which is no setting of `command`.
fn unknown_key(command: &Command, key: &str) -> String {
    let known: Vec<String> = settings(command)
        .filter_map(|a| a.get_long().map(|l| format!("`{l}`")))
        .collect();
    let flag_only = command
        .get_arguments()
        .any(|a| a.get_long() == Some(key) && a.get_help_heading() != Some(SETTINGS));
    let why = if flag_only {
        format!("`{key}` is a flag only, not a setting: pass --{key} on the command line")
    } else {
        format!("unknown key `{key}`")
    };
    format!("{why}; the keys are {}", known.join(", "))
}

/// What kind of TOML value `v` is, for messages.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the text {s:?}"),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::{CommandFactory, Parser};

    use super::*;

    /// A command with one setting of each shape.
    #[derive(Debug, Parser)]
    #[command(name = "t")]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 8000, help_heading = SETTINGS,
              value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        #[arg(long, default_value = "sync.db", value_hint = ValueHint::FilePath, help_heading = SETTINGS)]
        db: PathBuf,
        #[arg(long, num_args = 1.., value_name = "NAME:PATH", help_heading = SETTINGS)]
        dirs: Vec<String>,
        #[arg(long = "ignore", help_heading = SETTINGS)]
        ignore: Vec<String>,
        #[arg(long, help_heading = SETTINGS)]
        quiet_mode: bool,
        #[arg(long, requires = "tunnel", conflicts_with = "remote_port", help_heading = SETTINGS)]
        socket: Option<String>,
        #[arg(long, requires = "tunnel", help_heading = SETTINGS)]
        remote_port: Option<u16>,
        #[arg(long, help_heading = SETTINGS)]
        tunnel: Option<String>,
        #[arg(long, default_value = "ws://x", help_heading = SETTINGS)]
        server: String,
    }

    fn merged(argv: &[&str], text: &str) -> anyhow::Result<(Args, tempfile::TempDir)> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text)?;
        let file = crate::load::<Entries>(Some(&path), "t.toml")?;
        let mut all = vec![OsString::from("t")];
        all.extend(argv.iter().map(OsString::from));
        Ok((merge::<Args>(&all, &file)?, dir))
    }

    fn refused(argv: &[&str], text: &str) -> String {
        format!("{:#}", merged(argv, text).expect_err("must be refused"))
    }

    #[test]
    fn the_file_beats_the_default_and_a_flag_beats_the_file() {
        let text =
            "port = 8001\ndirs = [\"a:src\"]\nignore = [\"*.o\", \"tmp/\"]\nquiet-mode = true\n";
        let (args, dir) = merged(&[], text).expect("merge");
        assert_eq!(args.port, 8001);
        assert_eq!(
            args.dirs,
            [format!("a:{}", dir.path().join("src").display())]
        );
        assert_eq!(args.ignore, ["*.o", "tmp/"]);
        assert!(args.quiet_mode);
        assert_eq!(args.db, PathBuf::from("sync.db"), "a default was replaced");

        let (args, _dir) =
            merged(&["--port", "9", "--dirs", "b:/x", "--ignore", "z"], text).expect("merge");
        assert_eq!(args.port, 9, "the file replaced a flag");
        assert_eq!(
            args.dirs,
            ["b:/x"],
            "the file's list was added to the flag's"
        );
        assert_eq!(args.ignore, ["z"]);
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let (args, dir) =
            merged(&[], "db = \"state/s.db\"\nserver = \"unix:r.sock\"\n").expect("merge");
        assert_eq!(args.db, dir.path().join("state/s.db"));
        assert_eq!(
            args.server,
            format!("unix:{}", dir.path().join("r.sock").display())
        );
        let (args, _dir) = merged(&[], "server = \"ws://h:1\"\n").expect("merge");
        assert_eq!(args.server, "ws://h:1", "a URL is no path");
    }

    #[test]
    fn a_flag_beats_the_file_setting_it_conflicts_with() {
        let text = "tunnel = \"r\"\nsocket = \"s.sock\"\n";
        let (args, _dir) = merged(&["--tunnel", "r", "--remote-port", "9"], text).expect("merge");
        assert_eq!((args.socket, args.remote_port), (None, Some(9)));
        let (args, _dir) =
            merged(&["--tunnel", "r", "--socket", "x"], "remote-port = 9\n").expect("merge");
        assert_eq!(
            (args.socket.as_deref(), args.remote_port),
            (Some("x"), None)
        );
        let err = refused(&[], "tunnel = \"r\"\nsocket = \"s\"\nremote-port = 9\n");
        assert!(err.contains("do not go together"), "{err}");
        assert!(err.contains("t.toml"), "{err}");
    }

    #[test]
    fn bad_keys_and_values_are_told_at_their_line() {
        let cases = [
            (
                "port = 8001\n\n  dirz = [\"a:/x\"]\n",
                "t.toml:3:3",
                "unknown key `dirz`",
            ),
            (
                "once = true\n",
                "t.toml:1:1",
                "a flag only, not a setting: pass --once",
            ),
            (
                "port = \"eighty\"\n",
                "t.toml:1:8",
                "invalid value 'eighty' for '--port",
            ),
            ("port = 0\n", "t.toml:1:8", "0 is not in 1..=65535"),
            ("port = 1.5\n", "t.toml:1:8", "not the number 1.5"),
            (
                "dirs = \"a:/x\"\n",
                "t.toml:1:8",
                "is a list, like dirs = [\"...\"]",
            ),
            ("port = [1]\n", "t.toml:1:8", "takes one value, not a list"),
            ("quiet-mode = \"yes\"\n", "t.toml:1:14", "is true or false"),
        ];
        for (text, at, what) in cases {
            let err = refused(&[], text);
            assert!(err.contains(at), "{text:?}: no {at:?} in {err}");
            assert!(err.contains(what), "{text:?}: no {what:?} in {err}");
        }
        assert!(
            refused(&[], "dirz = 1\n").contains("`dirs`"),
            "the keys are not listed"
        );
    }

    #[test]
    fn the_settings_are_the_flags_under_the_heading() {
        let command = Args::command();
        let keys: Vec<_> = settings(&command).filter_map(Arg::get_long).collect();
        assert!(
            keys.contains(&"port") && keys.contains(&"quiet-mode"),
            "{keys:?}"
        );
        assert!(
            !keys.contains(&"once") && !keys.contains(&"config"),
            "{keys:?}"
        );
    }
}
