//! What the command line prints for a person: `clean`, which every text that came from other
//! nodes or users goes through before it reaches a terminal, and plain-text tables (columns
//! aligned, long cells cut, every cell cleaned).

use std::borrow::Cow;

/// Longest cell printed, in characters.
const CELL_MAX_CHARS: usize = 48;

/// What stands in for a control character or an escape sequence taken out of a text.
const REPLACEMENT: char = '\u{fffd}';

/// Whether a character may not reach a terminal: C0 controls other than newline and tab, DEL,
/// C1 controls, and the bidirectional embeddings, overrides and isolates (which can make a
/// line read differently from what it holds).
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// A text safe to print on a terminal: each escape sequence (ESC or C1 CSI, OSC, DCS…, with
/// its parameters) and each other control character becomes one U+FFFD, so nothing another
/// node or user wrote can move the cursor, clear the screen, retitle the window or reorder a
/// line. Newlines and tabs stay. Borrows when there is nothing to clean (JSON output never
/// comes here: serde escapes control characters itself).
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        out.push(REPLACEMENT);
        // What kind of sequence `c` opens: a control sequence (parameters up to a final byte),
        // a control string (up to BEL or the string terminator), or a two-character escape.
        let opener = match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => Some('['),
                Some(']' | 'P' | 'X' | '^' | '_') => Some(']'),
                Some(n) if ('\u{20}'..='\u{7e}').contains(n) => {
                    chars.next();
                    None
                }
                _ => None,
            }
            .inspect(|_| {
                chars.next();
            }),
            '\u{9b}' => Some('['),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => Some(']'),
            _ => None,
        };
        match opener {
            Some('[') => {
                // Parameter and intermediate bytes, then one final byte.
                while let Some(&n) = chars.peek() {
                    if ('\u{20}'..='\u{3f}').contains(&n) {
                        chars.next();
                    } else {
                        if ('\u{40}'..='\u{7e}').contains(&n) {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            Some(_) => {
                // Up to BEL, ST (ESC \ or U+009C), or the end of the text.
                while let Some(n) = chars.next() {
                    if n == '\u{7}' || n == '\u{9c}' {
                        break;
                    }
                    if n == '\u{1b}' {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            None => {}
        }
    }
    Cow::Owned(out)
}

/// `println!` for a line that holds data from other nodes or users: the whole line goes
/// through `clean` first. (JSON output uses `println!` itself: it must stay exact.)
macro_rules! say {
    () => {
        println!()
    };
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::table::clean(&format!($($arg)*)))
    };
}
pub(crate) use say;

fn cut(s: &str) -> String {
    let s = clean(s).replace(['\n', '\t'], " ");
    if s.chars().count() <= CELL_MAX_CHARS {
        s
    } else {
        let head: String = s.chars().take(CELL_MAX_CHARS - 1).collect();
        format!("{head}…")
    }
}

/// Renders rows under a header, columns padded to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cut(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths.get(i).copied().unwrap_or(0);
                format!("{c:<pad$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_taken_out() {
        for (input, expected) in [
            ("plain text, نص عربي", "plain text, نص عربي"),
            ("a\u{1b}[2Jb", "a\u{fffd}b"),
            ("a\u{1b}[1;31mred\u{1b}[0m", "a\u{fffd}red\u{fffd}"),
            ("t\u{1b}]0;owned\u{7}x", "t\u{fffd}x"),
            ("t\u{1b}]8;;http://x\u{1b}\\link", "t\u{fffd}link"),
            ("a\u{9b}2Jb", "a\u{fffd}b"),
            ("a\u{1b}cb", "a\u{fffd}b"),
            (
                "bell\u{7}del\u{7f}nul\u{0}",
                "bell\u{fffd}del\u{fffd}nul\u{fffd}",
            ),
            ("cr\rover", "cr\u{fffd}over"),
            ("evil\u{202e}txt.exe\u{2066}", "evil\u{fffd}txt.exe\u{fffd}"),
            ("two\nlines\tand a tab", "two\nlines\tand a tab"),
            ("unterminated\u{1b}[", "unterminated\u{fffd}"),
            ("trailing\u{1b}", "trailing\u{fffd}"),
        ] {
            assert_eq!(clean(input), expected, "{input:?}");
        }
        assert!(matches!(clean("nothing to do"), Cow::Borrowed(_)));
    }

    #[test]
    fn table_cells_are_cleaned() {
        let out = render(&["A"], &[vec!["x\u{1b}[2Jy\nz".to_string()]]);
        assert_eq!(out, "A\nx\u{fffd}y z\n");
    }
}
