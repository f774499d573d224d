//! Text that came from a guest (package names and versions, paths, command output) on its way
//! to the operator: bounded, and with every control character escaped, so no terminal escape
//! sequence a container wrote reaches the operator's terminal.

/// `text` cut to `max` characters (marked with `…`), control characters as `\x1b`-style escapes.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        // Controls, line separators, and the bidirectional overrides that make text display
        // in another order than it is.
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || bidi {
            out.push_str(&c.escape_unicode().to_string().replacen("\\u{", "\\x{", 1));
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
}
