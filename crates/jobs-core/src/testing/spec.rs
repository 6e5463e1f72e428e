//! The tables of docs/spec.md that the code also holds, read for the tests that compare them
//! with the code (docs/spec.md, "How this file is kept"). A table follows its marker line,
//! `<!-- table NAME: checked by TEST -->`; a marker without a table, or a table without a
//! marker, fails the test that asks for it.

/// docs/spec.md as it is now (read at run time, so an edit needs no rebuild).
pub fn text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spec.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The body rows of the table marked `name`, each as its cells, trimmed (the header and the
/// separator row left out). Panics when there is no such marker, or no table right after it.
pub fn table(name: &str) -> Vec<Vec<String>> {
    let spec = text();
    let marker = format!("<!-- table {name}:");
    let mut lines = spec.lines().skip_while(|line| !line.starts_with(&marker));
    assert!(
        lines.next().is_some(),
        "docs/spec.md has no marker `{marker} ... -->`"
    );
    let rows: Vec<Vec<String>> = lines
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(cells)
        .collect();
    assert!(
        !rows.is_empty(),
        "no table right after the marker of {name}"
    );
    rows
}

/// The cells of one table row: split on `|`, except an escaped `\|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("a cell").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("a cell").push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The text between each pair of backticks in `cell`, in order.
pub fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Whether `text` is an instance of `pattern`, in which each `<...>` stands for any non-empty
/// text (`Max retries (<maxRetries>) reached.` fits `Max retries (3) reached.`).
pub fn fits(pattern: &str, text: &str) -> bool {
    let mut literals = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        literals.push(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    literals.push(rest);
    if literals.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (literals[0], literals[literals.len() - 1]);
    let Some(mut middle) = text.strip_prefix(first) else {
        return false;
    };
    for literal in &literals[1..literals.len() - 1] {
        // Each placeholder takes at least one character.
        let first_char = middle.chars().next().map_or(0, char::len_utf8);
        match middle[first_char..].find(literal) {
            Some(at) if first_char > 0 => middle = &middle[first_char + at + literal.len()..],
            _ => return false,
        }
    }
    middle.len() > last.len() && middle.ends_with(last)
}

/// `text` with every run of white space made one space: a sentence as the code holds it,
/// whatever the line breaks of the spec's paragraph.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_fit_their_instances_only() {
        let rows = [
            (
                "Max retries (<n>) reached.",
                "Max retries (3) reached.",
                true,
            ),
            (
                "Max retries (<n>) reached.",
                "Max retries () reached.",
                false,
            ),
            (
                "Max retries (<n>) reached.",
                "Max retries (3) reached",
                false,
            ),
            ("Database unavailable", "Database unavailable", true),
            ("Database unavailable", "Database unavailable!", false),
            (
                "Method <m> is not allowed for action <a>; use <b>",
                "Method GET is not allowed for action retry; use POST",
                true,
            ),
            (
                "Method <m> is not allowed for action <a>; use <b>",
                "Method GET is not allowed for retry; use POST",
                false,
            ),
            ("Unknown action: <name>", "Unknown action: x", true),
        ];
        for (pattern, text, expected) in rows {
            assert_eq!(fits(pattern, text), expected, "{pattern} / {text}");
        }
    }

    #[test]
    fn cells_keep_escaped_bars_and_backticks_split_quotes() {
        let row = cells(r#"| `health` | 200 `"qstash"\|"self"` | two `a` and `b` |"#);
        assert_eq!(
            row,
            ["`health`", r#"200 `"qstash"|"self"`"#, "two `a` and `b`"]
        );
        assert_eq!(quoted(&row[2]), ["a", "b"]);
    }
}
