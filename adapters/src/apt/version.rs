//! Debian version ordering, as dpkg compares versions (`[epoch:]upstream[-revision]`, with `~`
//! sorting before everything, even the end of the string): enough to tell an upgrade from a
//! downgrade in the wrapper's before/after diff.

use std::cmp::Ordering;

/// Compares two Debian versions as `dpkg --compare-versions` does. Text that is not a
/// well-formed version still compares, deterministically.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb))
}

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// dpkg's ordering of one character in the non-digit parts: `~` first, then the end, then
/// letters, then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit prefixes, character by character.
        loop {
            let (ca, cb) = (a.first().copied(), b.first().copied());
            let digits = |c: Option<u8>| c.is_none_or(|c| c.is_ascii_digit());
            if digits(ca) && digits(cb) {
                break;
            }
            let (oa, ob) = (order(ca), order(cb));
            if oa != ob {
                return oa.cmp(&ob);
            }
            a = a.get(1..).unwrap_or(&[]);
            b = b.get(1..).unwrap_or(&[]);
        }
        // Digit runs, numerically (leading zeros ignored, any length).
        let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (run(a), run(b));
        let (da, db) = (&a[..na], &b[..nb]);
        let trim = |d: &[u8]| -> Vec<u8> { d.iter().skip_while(|&&c| c == b'0').copied().collect() };
        let (ta, tb) = (trim(da), trim(db));
        let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb));
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_dpkg_does() {
        let less = [
            ("1.0", "1.1"),
            ("1.0", "1.0-1"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.9", "1.10"),
            ("2.1-1", "2.1-1+deb12u1"),
            ("9.9", "1:0.1"),
            ("1.0a", "1.0+"),
            ("1.0", "1.0a"),
            ("1.2.3-4", "1.2.3-10"),
        ];
        for (a, b) in less {
            assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare("1.01", "1.1"), Ordering::Equal);
        assert_eq!(compare("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(compare("x\u{1b}[31m", "y"), Ordering::Less, "junk still compares");
    }
}
