//! Conditional GET (RFC 9110 §8.8.3, §13.1.2): the entity tags the service issues and the
//! `If-None-Match` header clients send back, so a client polling `list` gets 304 with no body
//! while nothing it would be shown changed.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// An entity tag the service issued: a strong validator, the first 128 bits of a SHA-256 of
/// everything the reply depends on, as 32 hex digits in quotes (`"…"`, the `ETag` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    /// The tag of a reply made of `parts` (e.g. who asked, the canonical query, the body).
    /// Each part is length-prefixed, so moving bytes from one part to the next changes it.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let digest = hash.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("\"{hex}\""))
    }

    /// The header value, quotes included.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The opaque tag without its quotes, as `If-None-Match` compares it.
    fn opaque(&self) -> &[u8] {
        &self.0.as_bytes()[1..self.0.len() - 1]
    }
}

/// `If-None-Match` as received. A value that is not `*` or a list of entity tags is ignored,
/// as if absent: the request is answered in full, never refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IfNoneMatch {
    /// No header, or one that does not parse.
    #[default]
    Absent,
    /// `*`: any current representation matches.
    Any,
    /// The opaque tags listed (without quotes; weak or strong alike).
    Tags(Vec<Vec<u8>>),
}

impl IfNoneMatch {
    /// From the request's headers; several `If-None-Match` lines are one list (RFC 9110 §5.3).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let lines: Vec<&[u8]> = headers
            .get_all(http::header::IF_NONE_MATCH)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if lines.is_empty() {
            return Self::Absent;
        }
        Self::parse(&lines.join(&b", "[..]))
    }

    /// `"*" / #entity-tag`, where `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`; empty list
    /// elements are allowed; anything else is `Absent`.
    pub fn parse(value: &[u8]) -> Self {
        // Header values hold no CR or LF: ASCII whitespace is OWS (space, tab) here.
        let trimmed = value.trim_ascii();
        if trimmed == b"*" {
            return Self::Any;
        }
        let etagc = |b: &u8| matches!(b, 0x21 | 0x23..=0x7e | 0x80..=0xff);
        let mut tags = Vec::new();
        let mut rest = trimmed;
        loop {
            rest = rest.trim_ascii_start();
            match rest {
                [] => break,
                [b',', tail @ ..] => {
                    rest = tail;
                    continue;
                }
                _ => {}
            }
            if let Some(tail) = rest.strip_prefix(b"W/") {
                rest = tail;
            }
            let Some(tail) = rest.strip_prefix(b"\"") else {
                return Self::Absent;
            };
            let Some(end) = tail.iter().position(|&b| b == b'"') else {
                return Self::Absent;
            };
            if !tail[..end].iter().all(etagc) {
                return Self::Absent;
            }
            tags.push(tail[..end].to_vec());
            rest = &tail[end + 1..];
            rest = rest.trim_ascii_start();
            match rest {
                [] => break,
                [b',', tail @ ..] => rest = tail,
                _ => return Self::Absent,
            }
        }
        Self::Tags(tags)
    }

    /// Whether the client holds `current` already: weak comparison (RFC 9110 §8.8.3.2), which
    /// is what `If-None-Match` uses; `*` matches any.
    pub fn matches(&self, current: &ETag) -> bool {
        match self {
            Self::Absent => false,
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t == current.opaque()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_quoted_hex_and_depends_on_every_part_and_its_boundaries() {
        let tag = ETag::of(&[b"alice", b"{}"]);
        assert_eq!(tag.as_str().len(), 34);
        assert!(tag.as_str().starts_with('"') && tag.as_str().ends_with('"'));
        assert_eq!(tag, ETag::of(&[b"alice", b"{}"]));
        assert_ne!(tag, ETag::of(&[b"bob", b"{}"]));
        assert_ne!(tag, ETag::of(&[b"alice", b"{ }"]));
        assert_ne!(ETag::of(&[b"ab", b"c"]), ETag::of(&[b"a", b"bc"]));
    }

    /// `If-None-Match` values and whether each matches the current tag `"abc"`.
    #[test]
    fn if_none_match_table() {
        let current = ETag("\"abc\"".into());
        let rows: &[(&[u8], bool, &str)] = &[
            (b"\"abc\"", true, "the tag itself"),
            (b"W/\"abc\"", true, "weak comparison"),
            (b"\"x\", \"abc\"", true, "in a list"),
            (b" \"x\" ,W/\"abc\"\t", true, "optional whitespace"),
            (b", ,\"abc\",", true, "empty list elements"),
            (b"*", true, "any"),
            (b"  *  ", true, "any, with whitespace"),
            (b"\"abd\"", false, "another tag"),
            (b"\"ab,c\"", false, "a comma inside a tag is part of it"),
            (b"", false, "empty"),
            (b"abc", false, "unquoted: malformed"),
            (b"\"abc", false, "unterminated: malformed"),
            (b"\"abc\" \"x\"", false, "no comma: malformed"),
            (b"w/\"abc\"", false, "W/ is case-sensitive: malformed"),
            (b"*, \"abc\"", false, "* in a list: malformed"),
            (b"\"a bc\"", false, "a space in a tag: malformed"),
            (b"\"abc\"garbage", false, "trailing garbage: malformed"),
        ];
        for (value, matches, why) in rows {
            let parsed = IfNoneMatch::parse(value);
            assert_eq!(
                parsed.matches(&current),
                *matches,
                "{why}: {:?} parsed as {parsed:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert_eq!(IfNoneMatch::parse(b"abc"), IfNoneMatch::Absent);
        assert!(!IfNoneMatch::Absent.matches(&current));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut headers = HeaderMap::new();
        assert_eq!(IfNoneMatch::from_headers(&headers), IfNoneMatch::Absent);
        headers.append("if-none-match", "\"x\"".parse().unwrap());
        headers.append("if-none-match", "W/\"abc\"".parse().unwrap());
        assert!(IfNoneMatch::from_headers(&headers).matches(&ETag("\"abc\"".into())));
        headers.append("if-none-match", "*".parse().unwrap());
        assert_eq!(IfNoneMatch::from_headers(&headers), IfNoneMatch::Absent);
    }
}
