//! How a caller's text is quoted in an error message, a header or a log line: cut to a short
//! prefix, so that no message the service sends or writes grows with its input (a dead letter
//! that quoted a 200,000-character field name was larger than the broker's frame).

use std::borrow::Cow;

/// How much of a caller's text (a field name, a value, a method name) an error message or a
/// log line quotes.
pub const QUOTE_CHARS: usize = 64;

/// `text` when it is at most `max` characters and has no control character; else its first
/// `max` characters, control characters (a newline that would forge a log line) as U+FFFD,
/// and `…` when something was cut. Cuts on a character boundary; borrows when nothing changes.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    let end = text.char_indices().nth(max).map_or(text.len(), |(i, _)| i);
    let head = text.get(..end).unwrap_or(text);
    let whole = end == text.len();
    if whole && !head.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let clean = |c: char| if c.is_control() { '\u{FFFD}' } else { c };
    let mut out: String = head.chars().map(clean).collect();
    if !whole {
        out.push('…');
    }
    Cow::Owned(out)
}

/// `message` with every run it quotes between backticks or double quotes (serde quotes the
/// value or name it refused that way) cut to `max` characters; `max` 0 keeps only `…`, for
/// values that must never be repeated (billing details). A backslash escapes a quote inside
/// double quotes, as serde writes a string. The text outside quotes is kept as it is.
pub fn cut_quoted(message: &str, max: usize) -> String {
    let mut out = String::with_capacity(message.len().min(256));
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let (before, from) = rest.split_at(open);
        out.push_str(before);
        let mark = if from.starts_with('`') { '`' } else { '"' };
        let body = &from[1..];
        let close = closing(body, mark).unwrap_or(body.len());
        let quoted = body.get(..close).unwrap_or(body);
        out.push(mark);
        if max == 0 && !quoted.is_empty() {
            out.push('…');
        } else {
            out.push_str(&cut(quoted, max));
        }
        if close < body.len() {
            out.push(mark);
            rest = body.get(close + 1..).unwrap_or("");
        } else {
            rest = "";
        }
    }
    out.push_str(rest);
    out
}

/// Where the quote `mark` that ends `body` is, skipping `\"` inside double quotes.
fn closing(body: &str, mark: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if mark == '"' && !escaped => escaped = true,
            c if c == mark && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_clean_text_is_borrowed() {
        assert!(matches!(
            cut("users.get", QUOTE_CHARS),
            Cow::Borrowed("users.get")
        ));
        assert!(matches!(cut("", 0), Cow::Borrowed("")));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let name = "é".repeat(200_000);
        let shown = cut(&name, QUOTE_CHARS);
        assert_eq!(shown.chars().count(), QUOTE_CHARS + 1);
        assert!(shown.ends_with('…') && shown.starts_with("éé"));
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("a\nb", 3), "a\u{FFFD}b");
    }

    #[test]
    fn serde_quotes_are_cut() {
        let long = "x".repeat(1000);
        let msg = format!("unknown variant `{long}`, expected `dark` or `light`");
        let cut_msg = cut_quoted(&msg, 5);
        assert_eq!(
            cut_msg,
            "unknown variant `xxxxx…`, expected `dark` or `light`"
        );
        let value = format!("invalid type: string \"a\\\"{long}\", expected a number");
        assert_eq!(
            cut_quoted(&value, 3),
            "invalid type: string \"a\\\"…\", expected a number"
        );
        assert_eq!(
            cut_quoted("invalid type: integer `7707083893`, expected a string", 0),
            "invalid type: integer `…`, expected a string"
        );
        assert_eq!(cut_quoted("no quotes at all", 0), "no quotes at all");
        assert_eq!(cut_quoted("open `abcdef", 2), "open `ab…");
    }

    proptest! {
        /// Any text: at most `max` characters and an ellipsis, a prefix of the input (control
        /// characters aside), and the input itself when it was short and clean.
        #[test]
        fn cut_is_a_bounded_prefix(text in "\\PC{0,300}|.{0,300}|[a`\"\\\\\n]{0,300}", max in 0usize..100) {
            let shown = cut(&text, max);
            let chars: Vec<char> = shown.chars().collect();
            let kept = chars.len().min(max);
            prop_assert!(chars.len() <= max + 1);
            prop_assert!(chars.iter().all(|c| !c.is_control()));
            const REPLACED: char = '\u{FFFD}';
            for (a, b) in chars.iter().take(kept).zip(text.chars()) {
                prop_assert!(*a == b || (*a == REPLACED && b.is_control()), "{:?} for {:?}", a, b);
            }
            if text.chars().count() <= max && !text.chars().any(char::is_control) {
                prop_assert_eq!(shown.as_ref(), text.as_str());
            }
        }

        /// Whatever the message, no quoted run longer than `max` survives, and a message
        /// without quotes is unchanged.
        #[test]
        fn cut_quoted_bounds_every_quote(
            pieces in prop::collection::vec("[a-z ]{0,20}|`[a-z\"]{0,200}`|\"[a-z`]{0,200}\"", 0..6),
            max in 0usize..40,
        ) {
            let message = pieces.concat();
            let shown = cut_quoted(&message, max);
            let outside: usize = pieces.iter().filter(|p| !p.starts_with(['`', '"'])).map(|p| p.chars().count()).sum();
            let quotes = pieces.len() - pieces.iter().filter(|p| !p.starts_with(['`', '"'])).count();
            prop_assert!(shown.chars().count() <= outside + quotes * (max + 3), "{}", shown);
            if !message.contains(['`', '"']) {
                prop_assert_eq!(shown, message);
            }
        }
    }
}
