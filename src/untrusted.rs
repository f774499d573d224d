//! Text that came from a guest (package names and versions, paths, command output) on its way
//! to the operator: bounded, and with every control character escaped, so no terminal escape
//! sequence a container wrote reaches the operator's terminal.

/// Controls, line separators, and the bidirectional overrides that make text display in another
/// order than it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` cut to `max` characters (marked with `…`), control characters as `\x1b`-style escapes.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if is_unsafe(c) {
            out.push_str(&c.escape_unicode().to_string().replacen("\\u{", "\\x{", 1));
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value as one line of text in which no control character appears raw: serde_json
/// escapes C0 controls but not DEL, C1 controls (`\u{9b}` is CSI to some terminals), the
/// Unicode line separators or bidi overrides, which can only occur inside strings and are
/// escaped here.
pub fn json_text(value: &serde_json::Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bounds() {
        assert_eq!(printable("libc6", 10), "libc6");
        assert_eq!(printable("a\x1b]0;pwned\x07b", 100), "a\\x{1b}]0;pwned\\x{7}b");
        assert_eq!(printable("x\u{9b}31m\ny", 100), "x\\x{9b}31m\\x{a}y", "C1 controls and newlines too");
        assert_eq!(printable(&"é".repeat(1000), 3), "ééé…");
        assert_eq!(printable("a\u{202e}b", 10), "a\\x{202e}b", "bidi overrides");
    }

    #[test]
    fn json_text_has_no_raw_controls() {
        let value = serde_json::json!({"name": "a\u{1b}[31m\u{9b}2J\u{7f}\u{2028}b"});
        let text = json_text(&value);
        assert!(!text.chars().any(|c| c.is_control() || c == '\u{2028}'), "{text:?}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value, "still the same JSON");
    }
}
