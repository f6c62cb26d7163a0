//! The long help texts read as blocks: the texts of `cli/src/*/args.rs` are prose hard-wrapped at
//! 100 columns, paragraphs separated by a blank line, and two-column lists indented under a lead
//! line:
//!
//! ```text
//! Outcomes, per check and canary:
//!   rollback      a harmful change beyond the limit, with evidence at alpha: the likelihood ratio
//!                 of `beyond the limit` against `at the limit` reaches 1/alpha (…)
//!   inconclusive  a harmful change beyond the limit, without that evidence yet
//! ```
//!
//! Unindented lines are prose (their line breaks are only wrapping); an indented run whose lines
//! are `TERM  TEXT` with every TEXT in the same column (continuations indented to it) is a
//! [`Block::Terms`] list; any other indented run is kept line for line ([`Block::Pre`]).

/// One block of a paragraph.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Block {
    /// Prose, its lines joined with single spaces.
    Prose(String),
    /// A two-column list: terms and their texts (prose, joined).
    Terms(Vec<(String, String)>),
    /// Lines to keep as they are, their common indentation removed.
    Pre(Vec<String>),
}

/// The paragraphs of `text` (separated by blank lines), each a list of blocks.
pub(crate) fn paragraphs(text: &str) -> Vec<Vec<Block>> {
    let mut paragraphs = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines().chain([""]) {
        if line.trim().is_empty() {
            if !lines.is_empty() {
                paragraphs.push(blocks(&lines));
                lines.clear();
            }
        } else {
            lines.push(line.trim_end());
        }
    }
    paragraphs
}

/// The blocks of one paragraph's lines: runs of unindented and of indented lines.
fn blocks(lines: &[&str]) -> Vec<Block> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let indented = indent(lines[start]) > 0;
        let end = lines[start..]
            .iter()
            .position(|l| (indent(l) > 0) != indented)
            .map_or(lines.len(), |n| start + n);
        let run = &lines[start..end];
        out.push(if indented {
            terms(run).map_or_else(|| pre(run), Block::Terms)
        } else {
            Block::Prose(join(run.iter().copied()))
        });
        start = end;
    }
    out
}

/// Leading spaces of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Lines joined into one with single spaces.
fn join<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    lines.map(str::trim).collect::<Vec<_>>().join(" ")
}

/// An indented run kept line for line, dedented.
fn pre(run: &[&str]) -> Block {
    let common = run.iter().map(|l| indent(l)).min().unwrap_or(0);
    Block::Pre(
        run.iter()
            .map(|l| l.get(common..).unwrap_or(l.trim_start()).to_string())
            .collect(),
    )
}

/// An indented run as a two-column list, if it is one: at least two items, each `TERM  TEXT`
/// (TERM without two spaces in a row) at the run's indentation, every TEXT starting in the same
/// column, and any other line a continuation indented exactly to that column.
fn terms(run: &[&str]) -> Option<Vec<(String, String)>> {
    let margin = indent(run.first()?);
    let mut column = None;
    let mut items: Vec<(String, Vec<&str>)> = Vec::new();
    for line in run {
        let at = indent(line);
        if at == margin {
            let content = &line[margin..];
            let gap = content.find("  ")?;
            let text = content[gap..].trim_start();
            let text_column = margin + content.len() - text.len();
            if text.is_empty() || *column.get_or_insert(text_column) != text_column {
                return None;
            }
            items.push((content[..gap].to_string(), vec![text]));
        } else if Some(at) == column {
            items.last_mut()?.1.push(line.trim());
        } else {
            return None;
        }
    }
    (items.len() >= 2).then(|| {
        items
            .into_iter()
            .map(|(term, text)| (term, join(text.into_iter())))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_terms_and_pre() {
        let text = "\
First line
wrapped.

Lead:
  a     one
        more
  b c   two

Example:
  sticky-canary gate --service s
    --envoy http://a:1
";
        assert_eq!(
            paragraphs(text),
            [
                vec![Block::Prose("First line wrapped.".into())],
                vec![
                    Block::Prose("Lead:".into()),
                    Block::Terms(vec![
                        ("a".into(), "one more".into()),
                        ("b c".into(), "two".into())
                    ])
                ],
                vec![
                    Block::Prose("Example:".into()),
                    Block::Pre(vec![
                        "sticky-canary gate --service s".into(),
                        "  --envoy http://a:1".into()
                    ])
                ],
            ]
        );
    }

    #[test]
    fn not_a_term_list() {
        // One item only, a text out of its column, a term without text.
        for run in [
            &["  a   one"][..],
            &["  a   one", "  bb   two"],
            &["  a   one", "   x"],
            &["  a", "  b   two"],
        ] {
            assert_eq!(terms(run), None, "{run:?}");
        }
    }
}
