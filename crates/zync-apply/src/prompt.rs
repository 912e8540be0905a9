//! Asking the user what to do with each file during an interactive apply. The question is
//! behind the [`Prompter`] trait so tests can script the answers; [`TermPrompter`] asks on
//! the terminal with dialoguer.

use std::collections::VecDeque;
use std::io::IsTerminal;

use anyhow::bail;
use dialoguer::console::Term;
use zync_db::{Action, StagedFile};

/// An answer to "what should happen to this file?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Write R's version to E (or delete E's file).
    Apply,
    /// Leave E's file alone and mark the file skipped.
    Skip,
    /// Show the diff, then ask again.
    ShowDiff,
    /// Apply this file and every remaining file without a conflict, without asking again.
    ApplyAllNonConflicting,
    /// Keep E's file and put R's version beside it as a conflict copy.
    KeepBoth,
    /// Stop; the remaining files stay staged.
    Quit,
}

impl Choice {
    /// The menu label.
    pub fn label(&self) -> &'static str {
        match self {
            Choice::Apply => "apply R's version",
            Choice::Skip => "skip (leave E's file as it is)",
            Choice::ShowDiff => "show the diff",
            Choice::ApplyAllNonConflicting => {
                "apply this and all remaining files without conflicts"
            }
            Choice::KeepBoth => "keep both (R's version becomes a conflict copy beside E's)",
            Choice::Quit => "quit (remaining files stay staged)",
        }
    }
}

/// Asks the user about files.
pub trait Prompter {
    /// Whether questions can be asked at all (stdin is a terminal). When false, apply refuses
    /// to start an interactive run rather than hang or guess.
    fn is_interactive(&self) -> bool;
    /// Asks what to do with `file`; the answer must be one of `options`.
    ///
    /// # Errors
    ///
    /// The terminal failed.
    fn choose(
        &mut self,
        file: &StagedFile,
        conflict: bool,
        options: &[Choice],
    ) -> anyhow::Result<Choice>;
    /// Shows text (a diff) to the user.
    fn show(&mut self, text: &str);
}

/// The question's title line for `file`.
pub fn title(file: &StagedFile, conflict: bool) -> String {
    let action = match file.action {
        Action::Write => "write",
        Action::Delete => "delete",
    };
    let flag = if conflict {
        "  [CONFLICT: changed on E since R's base]"
    } else {
        ""
    };
    format!("{action} {}/{}{flag}", file.dir, file.path)
}

/// Asks on the terminal: a dialoguer `Select` drawn on stderr.
#[derive(Debug, Default)]
pub struct TermPrompter;

impl Prompter for TermPrompter {
    fn is_interactive(&self) -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn choose(
        &mut self,
        file: &StagedFile,
        conflict: bool,
        options: &[Choice],
    ) -> anyhow::Result<Choice> {
        let labels: Vec<&str> = options.iter().map(Choice::label).collect();
        let picked = dialoguer::Select::new()
            .with_prompt(title(file, conflict))
            .items(&labels)
            .default(0)
            .interact_on_opt(&Term::stderr())?;
        // Esc or q: treat as quit, the one answer that changes nothing further.
        Ok(picked
            .and_then(|i| options.get(i).copied())
            .unwrap_or(Choice::Quit))
    }

    fn show(&mut self, text: &str) {
        eprint!("{text}");
        if !text.ends_with('\n') {
            eprintln!();
        }
    }
}

/// Answers from a script, for tests and for driving apply from other code. Records every
/// question and everything shown.
#[derive(Debug, Default)]
pub struct ScriptedPrompter {
    /// Whether to claim a terminal.
    pub interactive: bool,
    /// The answers still to give, in order.
    pub answers: VecDeque<Choice>,
    /// The title of every question asked, in order.
    pub asked: Vec<String>,
    /// Everything shown, in order.
    pub shown: Vec<String>,
}

impl ScriptedPrompter {
    /// A prompter that claims a terminal and gives `answers` in order.
    pub fn new(answers: impl IntoIterator<Item = Choice>) -> Self {
        ScriptedPrompter {
            interactive: true,
            answers: answers.into_iter().collect(),
            ..ScriptedPrompter::default()
        }
    }
}

impl Prompter for ScriptedPrompter {
    fn is_interactive(&self) -> bool {
        self.interactive
    }

    fn choose(
        &mut self,
        file: &StagedFile,
        conflict: bool,
        options: &[Choice],
    ) -> anyhow::Result<Choice> {
        self.asked.push(title(file, conflict));
        let Some(answer) = self.answers.pop_front() else {
            bail!(
                "scripted prompter: no answer left for {}",
                title(file, conflict)
            );
        };
        if !options.contains(&answer) {
            bail!(
                "scripted prompter: {answer:?} is not offered for {} (offered: {options:?})",
                title(file, conflict)
            );
        }
        Ok(answer)
    }

    fn show(&mut self, text: &str) {
        self.shown.push(text.to_string());
    }
}
