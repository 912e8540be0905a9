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

/// What the user is asked about: a staged file and what applying it would do beyond its
/// content.
#[derive(Debug, Clone)]
pub struct Question<'a> {
    /// The staged file.
    pub file: &'a StagedFile,
    /// E's file's content changed since R's version was based on it.
    pub conflict: bool,
    /// Why the mode conflicts (E and R both changed it since R's base), when it does.
    pub mode_conflict: Option<String>,
    /// E's mode now and the mode applying gives it, when it changes.
    pub mode_change: Option<(u32, u32)>,
    /// Why the file is a control file, when it is one.
    pub control: Option<&'static str>,
    /// Why the review cannot show the content applying puts on E (binary, too large), when
    /// it cannot.
    pub unshown: Option<&'static str>,
}

impl Question<'_> {
    /// Whether applying needs the user's say-so because of a conflict, of content or of
    /// mode (invariant 5 (docs/ARCHITECTURE.md)).
    pub fn conflicts(&self) -> bool {
        self.conflict || self.mode_conflict.is_some()
    }
}

/// Asks the user about files.
pub trait Prompter {
    /// Whether questions can be asked at all (stdin is a terminal). When false, apply refuses
    /// to start an interactive run rather than hang or guess.
    fn is_interactive(&self) -> bool;
    /// Asks what to do with the file of `question`; the answer must be one of `options`.
    ///
    /// # Errors
    ///
    /// The terminal failed.
    fn choose(&mut self, question: &Question<'_>, options: &[Choice]) -> anyhow::Result<Choice>;
    /// Shows text (a diff) to the user.
    fn show(&mut self, text: &str);
}

/// The question's title line: the action, the path (hidden characters made visible), and
/// what else applying does: a conflict, a mode change, a control file.
pub fn title(q: &Question<'_>) -> String {
    let action = match q.file.action {
        Action::Write => "write",
        Action::Delete => "delete",
    };
    let mut title = format!("{action} {}", crate::session::file_name(q.file));
    if q.conflict {
        title.push_str("  [CONFLICT: changed on E since R's base]");
    }
    if let Some(why) = &q.mode_conflict {
        title.push_str(&format!(
            "  [MODE CONFLICT: {}]",
            zync_cli::visible::line(why)
        ));
    }
    if let Some((old, new)) = q.mode_change {
        title.push_str(&format!(
            "  [mode {} -> {}]",
            crate::probe::octal(old),
            crate::probe::octal(new)
        ));
    }
    if let Some(why) = q.control {
        title.push_str(&format!("  [CONTROL FILE: {why}]"));
    }
    if let Some(why) = q.unshown {
        title.push_str(&format!("  [NOT SHOWN: {why}]"));
    }
    title
}

/// Asks on the terminal: a dialoguer `Select` drawn on stderr.
#[derive(Debug, Default)]
pub struct TermPrompter;

impl Prompter for TermPrompter {
    fn is_interactive(&self) -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn choose(&mut self, question: &Question<'_>, options: &[Choice]) -> anyhow::Result<Choice> {
        let labels: Vec<&str> = options.iter().map(Choice::label).collect();
        let picked = dialoguer::Select::new()
            .with_prompt(title(question))
            .items(&labels)
            .default(0)
            .interact_on_opt(&Term::stderr())?;
        // Esc or q: treat as quit, the one answer that changes nothing further.
        Ok(picked
            .and_then(|i| options.get(i).copied())
            .unwrap_or(Choice::Quit))
    }

    fn show(&mut self, text: &str) {
        // Callers pass text already made visible; this is the last line of defence.
        let text = zync_cli::visible::text(text);
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

    fn choose(&mut self, question: &Question<'_>, options: &[Choice]) -> anyhow::Result<Choice> {
        self.asked.push(title(question));
        let Some(answer) = self.answers.pop_front() else {
            bail!("scripted prompter: no answer left for {}", title(question));
        };
        if !options.contains(&answer) {
            bail!(
                "scripted prompter: {answer:?} is not offered for {} (offered: {options:?})",
                title(question)
            );
        }
        Ok(answer)
    }

    fn show(&mut self, text: &str) {
        self.shown.push(text.to_string());
    }
}
