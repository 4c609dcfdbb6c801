//! CSV cells for exports a person opens in a spreadsheet (partner-map tables, reports).
//!
//! Quoting follows RFC 4180. Text from other organisations' nodes could also be read as a
//! formula by a spreadsheet (`=HYPERLINK(…)`, `+cmd|…`, `@SUM(…)`): a cell that begins with
//! `=`, `+`, `-`, `@`, a tab or a carriage return is neutralised with a leading apostrophe
//! (OWASP's advice for CSV injection) — except a plain number or phone number such as
//! `+216 75 000 000` or `-3.5`, which cannot call anything and must stay data.

use std::borrow::Cow;

/// Whether a cell that starts with a sign is only a number or phone number.
fn plain_number(rest: &str) -> bool {
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '.' | ',' | '(' | ')' | '-' | '/'))
}

/// One CSV cell: neutralised if a spreadsheet could read it as a formula, quoted if needed.
pub fn cell(text: &str) -> Cow<'_, str> {
    let risky = match text.chars().next() {
        Some('=' | '@' | '\t' | '\r') => true,
        Some('+' | '-') => !plain_number(&text[1..]),
        _ => false,
    };
    let text: Cow<'_, str> = if risky {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    };
    if text.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", text.replace('"', "\"\"")))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formulas_are_neutralised_numbers_and_phones_stay() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(cell("+cmd|' /C calc'!A0"), "'+cmd|' /C calc'!A0");
        assert_eq!(cell("-2+3+cmd|x"), "'-2+3+cmd|x");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("+216 75 000 000"), "+216 75 000 000");
        assert_eq!(cell("-3.5"), "-3.5");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("Croissant-Rouge"), "Croissant-Rouge");
        assert_eq!(cell(""), "");
    }
}
