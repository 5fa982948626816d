//! Error text shown to a client or printed for an operator.

use std::borrow::Cow;

/// The most characters of an error message a client or the CLI is shown.
pub const MAX_ERROR_CHARS: usize = 1000;

/// `text` when it has at most `max` characters; otherwise its first and its last `max / 2`
/// characters with "…(N characters left out)…" between them. An error that quotes a value of
/// thousands of characters keeps both what failed (its start) and why (its end).
pub fn cut_middle(text: &str, max: usize) -> Cow<'_, str> {
    let n = text.chars().count();
    if n <= max {
        return Cow::Borrowed(text);
    }
    let keep = max / 2;
    let head: String = text.chars().take(keep).collect();
    let tail: String = text.chars().skip(n - keep).collect();
    Cow::Owned(format!("{head}…({} characters left out)…{tail}", n - 2 * keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_in_the_middle_and_keeps_its_start_and_its_reason() {
        let long =
            format!("invalid serial number: \"{}\" contains 'z'; expected hex digits", "z".repeat(10_000));
        let text = cut_middle(&long, MAX_ERROR_CHARS);
        assert_eq!(text.chars().count(), 1000 + "…(9059 characters left out)…".chars().count());
        assert!(text.starts_with("invalid serial number: \"zzz"), "{text}");
        assert!(text.ends_with("zzz\" contains 'z'; expected hex digits"), "{text}");
        assert!(text.contains("…(9059 characters left out)…"), "{text}");
        // Characters, not bytes: a multi-byte character is never split.
        let wide = "é".repeat(30);
        assert_eq!(
            cut_middle(&wide, 10),
            format!("{}…(20 characters left out)…{}", "é".repeat(5), "é".repeat(5))
        );
        assert!(matches!(cut_middle("short", 10), Cow::Borrowed("short")));
    }
}
