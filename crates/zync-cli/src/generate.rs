//! Shell completions and man pages, generated from each binary's clap definition so they can
//! never disagree with `--help`. Each binary answers two hidden flags (README, "Shell
//! completions and man pages"): `--generate-completions SHELL` prints a script to stdout,
//! `--generate-man DIR` writes section-1 pages into DIR.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgMatches, Command, FromArgMatches};
use clap_complete::Shell;

/// The hidden generation flags, flattened into each binary's command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Generate {
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", hide = true, exclusive = true)]
    pub generate_completions: Option<Shell>,
    /// Write man pages (section 1) into DIR, creating it, print their paths and exit.
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    pub generate_man: Option<PathBuf>,
}

impl Generate {
    /// Generates what was asked for `cmd` (the binary's full clap command): a completion
    /// script written to `out`, or man pages written to their directory with their paths
    /// written to `out`. Returns false when neither flag was given.
    ///
    /// # Errors
    /// The man page directory cannot be created or written, or `out` fails.
    pub fn run(&self, cmd: Command, out: &mut dyn Write) -> anyhow::Result<bool> {
        if let Some(shell) = self.generate_completions {
            let mut cmd = cmd;
            let name = cmd.get_name().to_string();
            // Into memory first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut script);
            match out.write_all(&script).and_then(|()| out.flush()) {
                // `| head` closed the pipe: nothing more to say (as ripgrep does).
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(e).context("cannot write the completion script")
                }
                _ => return Ok(true),
            }
        }
        if let Some(dir) = &self.generate_man {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "--generate-man: cannot create the directory {}",
                    dir.display()
                )
            })?;
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            for page in man_pages(cmd, dir)? {
                writeln!(out, "{}", page.display())?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Answers the generation flags in `matches` (parsed from `cmd`), printing to stdout:
    /// `Some(exit code)` when they were given and the program should exit, None otherwise.
    /// An error is printed prefixed with the program's name.
    pub fn answer(matches: &ArgMatches, cmd: Command) -> Option<ExitCode> {
        let generate = Generate::from_arg_matches(matches).ok()?;
        let name = cmd.get_name().to_string();
        match generate.run(cmd, &mut std::io::stdout().lock()) {
            Ok(false) => None,
            Ok(true) => Some(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("{name}: {e:#}");
                Some(ExitCode::FAILURE)
            }
        }
    }
}

/// Writes the page of `cmd` and one per visible subcommand (`zync-apply-list.1`, ...).
fn man_pages(cmd: Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(man_pages(sub.clone(), dir)?);
    }
    let page = clap_mangen::Man::new(cmd);
    written.push(
        page.generate_to(dir).with_context(|| {
            format!("--generate-man: cannot write a page into {}", dir.display())
        })?,
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn command() -> Command {
        Command::new("zync-test")
            .about("a test command")
            .arg(Arg::new("dirs").long("dirs").help("directories to serve"))
            .arg(
                Arg::new("secret")
                    .long("secret-flag")
                    .hide(true)
                    .action(ArgAction::SetTrue),
            )
            .subcommand(Command::new("list").about("lists"))
    }

    #[test]
    fn nothing_is_generated_unless_asked() {
        let mut out = Vec::new();
        assert!(!Generate::default().run(command(), &mut out).expect("run"));
        assert!(out.is_empty());
    }

    #[test]
    fn completions_name_the_visible_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            let asked = Generate {
                generate_completions: Some(shell),
                ..Generate::default()
            };
            assert!(asked.run(command(), &mut out).expect("run"));
            let script = String::from_utf8(out).expect("utf-8");
            assert!(script.contains("dirs"), "{shell}: {script}");
            assert!(script.contains("zync-test"), "{shell}: {script}");
            assert!(script.contains("list"), "{shell}: no subcommand: {script}");
        }
    }

    #[test]
    fn man_pages_are_written_for_the_command_and_its_subcommands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("man1");
        let mut out = Vec::new();
        let asked = Generate {
            generate_man: Some(target.clone()),
            ..Generate::default()
        };
        assert!(asked.run(command(), &mut out).expect("run"));
        let listed = String::from_utf8(out).expect("utf-8");
        let page = std::fs::read_to_string(target.join("zync-test.1")).expect("main page");
        assert!(page.contains(".TH zync-test"), "{page}");
        assert!(page.contains("\\-\\-dirs"), "{page}");
        assert!(!page.contains("secret"), "a hidden flag: {page}");
        assert!(target.join("zync-test-list.1").is_file(), "{listed}");
        assert!(
            !target.join("zync-test-help.1").exists(),
            "a page for `help`"
        );
        assert_eq!(listed.lines().count(), 2, "{listed}");
    }
}
