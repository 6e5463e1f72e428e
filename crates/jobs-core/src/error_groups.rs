//! Error groups (docs/spec.md §14): a failure's message with its variable parts replaced is its
//! *template*; the first 12 hex digits of the template's SHA-256 are its *group*. "Simulated
//! failure on attempt 1" and "... attempt 2" are one group, so a user can retry every task that
//! failed for the same reason at once.

use sha2::{Digest, Sha256};

/// A failure's cause: its template and the group id derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The message with integers as `<n>`, UUIDs and long hex ids as `<id>`, quoted strings as
    /// `<s>`, and URL query strings dropped.
    pub template: String,
    /// The first 12 hex digits of the SHA-256 of `template`.
    pub group: String,
}

impl Cause {
    /// The cause of a failure with this message.
    pub fn of(message: &str) -> Self {
        let template = template(message);
        let digest = Sha256::digest(template.as_bytes());
        let group = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self { template, group }
    }
}

/// Whether `value` is a group id as [`Cause::of`] makes them (12 lower-case hex digits).
pub fn is_group_id(value: &str) -> bool {
    value.len() == 12
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn template(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_word = i == 0 || !is_word(chars[i - 1]);
        let closing = matches!(c, '"' | '\'' | '`')
            .then(|| chars[i + 1..].iter().position(|&q| q == c))
            .flatten();
        if let Some(end) = closing {
            out.push_str("<s>");
            i += end + 2;
            continue;
        }
        if c == '?' && inside_url(&out) {
            // A URL's query string: dropped up to the next space.
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
            continue;
        }
        if starts_word && c.is_ascii_hexdigit() {
            let end = (i..chars.len())
                .find(|&j| !is_id_char(chars[j]))
                .unwrap_or(chars.len());
            let word: String = chars[i..end].iter().collect();
            if is_uuid(&word) || is_long_hex(&word) {
                out.push_str("<id>");
                i = end;
                continue;
            }
        }
        if starts_word && c.is_ascii_digit() {
            let end = (i..chars.len())
                .find(|&j| !chars[j].is_ascii_digit())
                .unwrap_or(chars.len());
            if end == chars.len() || !is_word(chars[end]) {
                out.push_str("<n>");
                i = end;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_hexdigit() || c == '-'
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(word: &str) -> bool {
    let parts: Vec<&str> = word.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// 12 or more hex digits with at least one digit and one letter (a MongoDB ObjectId, a hash),
/// so plain numbers stay numbers and words stay words.
fn is_long_hex(word: &str) -> bool {
    word.len() >= 12
        && word.chars().all(|c| c.is_ascii_hexdigit())
        && word.chars().any(|c| c.is_ascii_digit())
        && word.chars().any(|c| c.is_ascii_alphabetic())
}

/// Whether the text written so far ends inside a URL (`scheme://...` with no space since).
fn inside_url(written: &str) -> bool {
    let word = written.rsplit(char::is_whitespace).next().unwrap_or("");
    word.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_table() {
        let rows = [
            (
                "Simulated failure on attempt 1",
                "Simulated failure on attempt <n>",
            ),
            (
                "Simulated failure on attempt 12",
                "Simulated failure on attempt <n>",
            ),
            ("webhook answered HTTP 503", "webhook answered HTTP <n>"),
            (
                "task 0195f3c2-7d4e-7a1b-9c3d-123456789abc not found",
                "task <id> not found",
            ),
            ("user 64b7f0c2e4a1b2c3d4e5f6a7 is gone", "user <id> is gone"),
            ("bad value 'abc' in \"field\"", "bad value <s> in <s>"),
            (
                "GET https://api.example.com/v1/items?page=2&key=secret failed after 30 s",
                "GET https://api.example.com/v1/items failed after <n> s",
            ),
            ("x86_64 and utf8 stay", "x86_64 and utf8 stay"),
            ("deadbeef is a word here", "deadbeef is a word here"),
            ("", ""),
        ];
        for (message, template) in rows {
            assert_eq!(Cause::of(message).template, template, "{message}");
        }
    }

    #[test]
    fn attempts_share_a_group_and_causes_do_not() {
        let one = Cause::of("Simulated failure on attempt 1");
        let two = Cause::of("Simulated failure on attempt 2");
        let other = Cause::of("webhook answered HTTP 500");
        assert_eq!(one.group, two.group);
        assert_ne!(one.group, other.group);
        assert!(is_group_id(&one.group), "{}", one.group);
        assert!(!is_group_id("XYZ") && !is_group_id("0123456789abcd"));
    }
}
