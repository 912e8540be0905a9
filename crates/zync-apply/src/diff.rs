//! The unified diff that `show --diff` and apply's questions print. Lines are compared as the
//! bytes they are, and only then shown with their hidden characters made visible
//! (`zync_cli::visible::bytes`): shown first, a real ESC and the two characters `^[` would be
//! the same line, and R could change one for the other unseen. Each line that holds such a
//! character is followed by a note naming where, so two different lines never read the same
//! (invariant 9, docs/ARCHITECTURE.md), while ordinary text (a `^[` in a regex) stays as it is.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use similar::{Algorithm, DiffOp, DiffTag};
use zync_cli::visible::{self, Shown};

/// Lines of context around each change.
const CONTEXT: usize = 3;
/// How long the search for the smallest diff may take; after it a larger, still exact, diff
/// is shown (two 4 MiB files with nothing in common would otherwise take minutes).
const DIFF_TIME: Duration = Duration::from_secs(2);
/// How many different removed lines that read the same one added line is compared with.
const TWINS: usize = 8;

/// A unified diff of `old` and `new` under the headers `--- old_label` and `+++ new_label`;
/// empty when they are equal. The labels are shown as [`visible::line`] shows them.
pub fn unified(old: &[u8], new: &[u8], old_label: &str, new_label: &str) -> String {
    let (old, new) = (lines(old), lines(new));
    let deadline = Instant::now() + DIFF_TIME;
    let ops = similar::capture_diff_slices_deadline(Algorithm::Myers, &old, &new, Some(deadline));
    let hunks = similar::group_diff_ops(ops, CONTEXT);
    if hunks.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "--- {}\n+++ {}\n",
        visible::line(old_label),
        visible::line(new_label)
    );
    for hunk in &hunks {
        hunk_text(&mut out, hunk, &old, &new);
    }
    out
}

/// The lines of `data`, each with its `\n` (the last one may have none). A carriage return is
/// part of its line, never a line break.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|b| *b == b'\n').collect()
}

/// `start,len` of a hunk's range as unified diffs write it (an empty range names the line
/// before it).
fn range(r: &std::ops::Range<usize>) -> String {
    match r.len() {
        0 => format!("{},0", r.start),
        1 => format!("{}", r.start + 1),
        n => format!("{},{n}", r.start + 1),
    }
}

/// A removed line, kept to compare added lines that read the same with.
struct Removed<'a> {
    raw: &'a [u8],
    escapes: Vec<(usize, String)>,
}

/// `line` without its `\n`: a line and the last line of a file without one read the same and
/// differ only in that, which the diff says itself (`\ No newline at end of file`).
fn body(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn hunk_text(out: &mut String, hunk: &[DiffOp], old: &[&[u8]], new: &[&[u8]]) {
    let (Some(first), Some(last)) = (hunk.first(), hunk.last()) else {
        return;
    };
    let (o, n) = (
        first.old_range().start..last.old_range().end,
        first.new_range().start..last.new_range().end,
    );
    let _ = writeln!(out, "@@ -{} +{} @@", range(&o), range(&n));
    // The lines removed so far in this hunk by how they read, to say so when an added line
    // reads the same as one of them but is not the same.
    let mut removed: HashMap<String, Vec<Removed<'_>>> = HashMap::new();
    for op in hunk {
        let (tag, o, n) = op.as_tag_tuple();
        match tag {
            DiffTag::Equal => {
                for line in &old[o] {
                    push_line(out, ' ', line);
                }
            }
            DiffTag::Delete | DiffTag::Replace | DiffTag::Insert => {
                for line in &old[o] {
                    let Shown { text, escapes } = push_line(out, '-', line);
                    let twins = removed.entry(text).or_default();
                    if twins.len() < TWINS && !twins.iter().any(|t| t.raw == body(line)) {
                        twins.push(Removed {
                            raw: body(line),
                            escapes,
                        });
                    }
                }
                for line in &new[n] {
                    let shown = push_line(out, '+', line);
                    let twin = removed
                        .get(&shown.text)
                        .and_then(|twins| twins.iter().find(|t| t.raw != body(line)));
                    if let Some(twin) = twin {
                        let columns = differing_columns(&twin.escapes, &shown.escapes);
                        let _ = writeln!(
                            out,
                            "\\ the line above looks the same as a removed line, but they differ \
                             in control or invisible characters, at column {columns}"
                        );
                    }
                }
            }
        }
    }
}

/// Writes one line of the diff with its notes; returns how it was shown.
fn push_line(out: &mut String, mark: char, raw: &[u8]) -> Shown {
    let (body, newline) = match raw.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (raw, false),
    };
    let shown = visible::bytes(body);
    let _ = writeln!(out, "{mark}{}", shown.text);
    if !newline {
        out.push_str("\\ No newline at end of file\n");
    }
    if !shown.escapes.is_empty() {
        let places: Vec<String> = shown
            .escapes
            .iter()
            .map(|(column, form)| format!("{form} at column {column}"))
            .collect();
        let _ = writeln!(
            out,
            "\\ not literal text in the line above: {}",
            places.join(", ")
        );
    }
    shown
}

/// The columns where one line has an escape the other does not: where two lines that read
/// the same differ. `a, b and c`. Both lists are in column order, so one pass over each: a
/// long line of escapes compared with another must not take their product.
fn differing_columns(a: &[(usize, String)], b: &[(usize, String)]) -> String {
    let (mut i, mut j) = (0, 0);
    let mut columns: Vec<usize> = Vec::new();
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => (i, j) = (i + 1, j + 1),
            (Some(x), Some(y)) if x.0 <= y.0 => {
                columns.push(x.0);
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                columns.push(y.0);
                j += 1;
            }
            (Some(x), None) => {
                columns.push(x.0);
                i += 1;
            }
            (None, None) => break,
        }
    }
    columns.dedup();
    let columns: Vec<String> = columns.iter().map(usize::to_string).collect();
    columns.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ESC for the two characters `^[`: the lines read the same, and the diff says
    /// where they differ.
    #[test]
    fn lines_that_read_the_same_are_told_apart_with_the_column() {
        let old = b"NAME = re.compile(r'^[a-z]+$')\n";
        let new = b"NAME = re.compile(r'\x1ba-z]+$')\n";
        let shown = unified(old, new, "a/v.py", "b/v.py");
        assert!(shown.contains("at column 21"), "{shown}");
        assert!(
            shown.contains("looks the same as a removed line"),
            "{shown}"
        );
    }

    /// A last line that lost its newline is told by the diff's own note, not by a twin note
    /// naming no column.
    #[test]
    fn a_missing_final_newline_is_no_twin() {
        let shown = unified(b"x\n", b"x", "a/f", "b/f");
        assert!(shown.contains("\\ No newline at end of file"), "{shown}");
        assert!(!shown.contains("looks the same"), "{shown}");
    }

    /// The columns where one of two lines has an escape the other lacks, each once.
    #[test]
    fn differing_columns_names_each_column_where_one_line_has_an_escape_the_other_lacks() {
        let a: Vec<(usize, String)> = (0..1_000).map(|c| (c * 4 + 1, "\\xE9".into())).collect();
        let mut b = a.clone();
        b.remove(500);
        assert_eq!(differing_columns(&a, &b), "2001");
        assert_eq!(differing_columns(&a, &a), "");
        assert_eq!(
            differing_columns(&[(3, "^[".into())], &[(3, "^M".into()), (9, "^[".into())]),
            "3, 9"
        );
        assert_eq!(differing_columns(&[], &[(7, "^[".into())]), "7");
    }
}
