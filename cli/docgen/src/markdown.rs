//! The CLI reference as Markdown (CommonMark, as mdBook reads it): `# CLI reference`, the top
//! command, then a `## sticky-canary gate` section (etc.) per subcommand with its usage, its long
//! about, its arguments by help heading (`### gate: Source`, …: every heading of the page is
//! unique) and its after-help text (`### gate: Notes`).
//!
//! Every argument is a list item: its names and value (`--envoy <URL>`), its default, then its
//! long help and its possible values. Usage lines are ```` ```text ```` blocks. clap's texts are
//! plain text, not Markdown: each word that looks like code (a flag, a metric name, a regex, a
//! URL pattern, a placeholder such as `<TAB>`) becomes a code span, and the characters Markdown
//! would read otherwise are escaped; the backquoted spans the texts already have stay code. Prose
//! paragraphs are joined into one line each, so that no wrapped line can start a list or a
//! heading; the two-column lists of the after-help texts become lists, other indented lines
//! ```` ```text ```` blocks.

use crate::blocks::{paragraphs, Block};
use crate::{arguments, command, full_name, subcommands, usage_lines};
use clap::{Arg, Command};

/// The note under the title.
const GENERATED: &str = "This page is generated from the clap definitions of the `sticky-canary` \
                         command by `make cli-docs`: do not edit it by hand.";

/// The CLI reference: the contents of `docs/src/reference/cli.md`.
pub fn cli_markdown() -> String {
    let top = command();
    let mut md = format!("# CLI reference\n\n{GENERATED}\n\n");
    md.push_str(&fenced(&usage_lines(&top).join("\n")));
    md.push_str(&text(about(&top)));
    let subs = subcommands(&top);
    if !subs.is_empty() {
        md.push_str("## Commands\n\n");
        for sub in &subs {
            let name = full_name(&top, sub, ' ');
            let short = sub.get_about().or_else(|| sub.get_long_about());
            md.push_str(&format!(
                "- [{}](#{}): {}\n",
                code(&name),
                anchor(&name),
                inline(&short.map(|a| a.to_string()).unwrap_or_default())
            ));
        }
        md.push('\n');
    }
    md.push_str(&args(&top, "##", ""));
    for sub in &subs {
        md.push_str(&format!("## {}\n\n", full_name(&top, sub, ' ')));
        md.push_str(&fenced(&usage_lines(sub).join("\n")));
        let long = sub.get_long_about().or_else(|| sub.get_about());
        md.push_str(&text(long.map(|a| a.to_string()).unwrap_or_default()));
        let prefix = format!("{}: ", sub.get_name());
        md.push_str(&args(sub, "###", &prefix));
        let after = sub.get_after_long_help().or_else(|| sub.get_after_help());
        if let Some(after) = after {
            md.push_str(&format!("### {prefix}Notes\n\n"));
            md.push_str(&text(after.to_string()));
        }
    }
    // One newline at the end of the file.
    while md.ends_with("\n\n") {
        md.pop();
    }
    md
}

/// A command's about (short first, as the top command has no long one).
fn about(cmd: &Command) -> String {
    cmd.get_about()
        .or_else(|| cmd.get_long_about())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// The arguments of a command, a section per help heading: positionals without one under
/// `Arguments`, then flags without one under `Options` (as clap's help), then the others in the
/// order of their first argument.
fn args(cmd: &Command, level: &str, prefix: &str) -> String {
    let args = arguments(cmd);
    let heading = |a: &Arg| match a.get_help_heading() {
        Some(h) => h.to_string(),
        None if a.is_positional() => "Arguments".to_string(),
        None => "Options".to_string(),
    };
    let mut headings: Vec<String> = Vec::new();
    for default in ["Arguments", "Options"] {
        if args
            .iter()
            .any(|a| a.get_help_heading().is_none() && heading(a) == default)
        {
            headings.push(default.to_string());
        }
    }
    for a in &args {
        let h = heading(a);
        if !headings.contains(&h) {
            headings.push(h);
        }
    }
    let mut md = String::new();
    for h in headings {
        md.push_str(&format!("{level} {prefix}{h}\n\n"));
        for a in args.iter().filter(|a| heading(a) == h) {
            md.push_str(&arg(a));
        }
    }
    md
}

/// One argument: a list item with its names and value, its default, its help (the long one if
/// any) and its possible values.
fn arg(a: &Arg) -> String {
    let mut head = names(a)
        .iter()
        .map(|n| code(n))
        .collect::<Vec<_>>()
        .join(", ");
    let takes_values = a.get_num_args().is_some_and(|n| n.takes_values());
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if takes_values && !a.is_hide_default_value_set() && !defaults.is_empty() {
        head.push_str(&format!(" (default: {})", code(&defaults.join(","))));
    }
    let mut body = String::new();
    let help = a.get_long_help().or_else(|| a.get_help());
    body.push_str(&text(help.map(|h| h.to_string()).unwrap_or_default()));
    let possible: Vec<_> = if a.is_hide_possible_values_set() {
        Vec::new()
    } else {
        a.get_possible_values()
            .into_iter()
            .filter(|p| !p.is_hide_set())
            .collect()
    };
    if !possible.is_empty() {
        body.push_str("Possible values:\n\n");
        for p in possible {
            body.push_str(&format!("- {}", code(p.get_name())));
            if let Some(help) = p.get_help() {
                body.push_str(&format!(": {}", inline(&help.to_string())));
            }
            body.push('\n');
        }
        body.push('\n');
    }
    format!("- {head}\n\n{}", indent(&body))
}

/// How clap's help shows an argument: `-h`, `--help`; `--envoy <URL>`; `[KEY]...`.
fn names(a: &Arg) -> Vec<String> {
    if a.is_positional() {
        let value = a
            .get_value_names()
            .map(|v| v.join(" "))
            .unwrap_or_else(|| a.get_id().to_string());
        let (open, close) = if a.is_required_set() {
            ("<", ">")
        } else {
            ("[", "]")
        };
        let many = a.get_num_args().is_some_and(|n| n.max_values() > 1);
        return vec![format!(
            "{open}{value}{close}{}",
            if many { "..." } else { "" }
        )];
    }
    let mut names: Vec<String> = Vec::new();
    names.extend(a.get_short().map(|s| format!("-{s}")));
    names.extend(
        a.get_visible_short_aliases()
            .unwrap_or_default()
            .into_iter()
            .map(|s| format!("-{s}")),
    );
    names.extend(a.get_long().map(|l| format!("--{l}")));
    names.extend(
        a.get_visible_aliases()
            .unwrap_or_default()
            .into_iter()
            .map(|l| format!("--{l}")),
    );
    if let (Some(range), Some(values)) = (a.get_num_args(), a.get_value_names()) {
        if range.takes_values() {
            let mut value = values
                .iter()
                .map(|v| format!("<{v}>"))
                .collect::<Vec<_>>()
                .join(" ");
            if range.max_values() > values.len() {
                value.push_str("...");
            }
            let value = match (range.min_values() > 0, a.is_require_equals_set()) {
                (true, false) => format!(" {value}"),
                (true, true) => format!("={value}"),
                (false, false) => format!(" [{value}]"),
                (false, true) => format!("[={value}]"),
            };
            if let Some(last) = names.last_mut() {
                last.push_str(&value);
            }
        }
    }
    names
}

/// Every line indented by two spaces (blank lines left empty): the body of a list item.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

/// clap's text as Markdown blocks, each followed by a blank line.
fn text(text: impl AsRef<str>) -> String {
    let mut md = String::new();
    for block in paragraphs(text.as_ref()).iter().flatten() {
        match block {
            Block::Prose(prose) => md.push_str(&format!("{}\n\n", inline(prose))),
            Block::Terms(items) => {
                for (term, text) in items {
                    md.push_str(&format!("- **{}**: {}\n", inline(term), inline(text)));
                }
                md.push('\n');
            }
            Block::Pre(lines) => md.push_str(&fenced(&lines.join("\n"))),
        }
    }
    md
}

/// A ```` ```text ```` block (its fence longer than any run of backquotes inside).
fn fenced(content: &str) -> String {
    let fence = "`".repeat(longest_run(content, '`').max(2) + 1);
    format!("{fence}text\n{content}\n{fence}\n\n")
}

/// A code span (its delimiters longer than any run of backquotes inside).
fn code(content: &str) -> String {
    let ticks = "`".repeat(longest_run(content, '`') + 1);
    if content.starts_with('`') || content.ends_with('`') {
        format!("{ticks} {content} {ticks}")
    } else {
        format!("{ticks}{content}{ticks}")
    }
}

/// The longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    text.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// The id mdBook gives a heading: letters, digits, `-` and `_` lowercased, spaces as `-`.
pub fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// One line of clap's text as inline Markdown: its backquoted spans kept, code-like words as code
/// spans, the rest escaped; a start that would open a block (`#`, `+`, `-`, `=`, `1.`) escaped.
fn inline(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    let mut md = String::new();
    if parts.len().is_multiple_of(2) {
        // An unpaired backquote: all of it is text.
        md = words(text);
    } else {
        for (i, part) in parts.iter().enumerate() {
            if i % 2 == 1 {
                md.push_str(&code(part));
            } else {
                md.push_str(&words(part));
            }
        }
    }
    escape_start(md)
}

/// Plain text, word by word; a flag followed by its value (`--ratio a=b/c:1`) is one code span,
/// and so is a braced group with spaces (`{"key", "version"}`).
fn words(text: &str) -> String {
    let parts: Vec<Word> = tokens(text).into_iter().map(Word::new).collect();
    let mut md: Vec<String> = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let w = &parts[i];
        match parts.get(i + 1) {
            Some(next)
                if w.is_flag() && w.trail.is_empty() && next.code && next.lead.is_empty() =>
            {
                let span = format!("{} {}", w.core, next.core);
                md.push(format!(
                    "{}{}{}",
                    escape(w.lead),
                    code(&span),
                    escape(next.trail)
                ));
                i += 2;
            }
            _ => {
                md.push(w.markdown());
                i += 1;
            }
        }
    }
    md.join(" ")
}

/// The words of `text`, split at spaces outside braces (all of `text` at spaces if a brace is
/// left open).
fn tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ' ' if depth == 0 => {
                tokens.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    tokens.push(&text[start..]);
    if depth > 0 {
        return text.split(' ').collect();
    }
    tokens
}

/// A word of prose: its core and the punctuation around it.
struct Word<'a> {
    lead: &'a str,
    core: &'a str,
    trail: &'a str,
    /// Whether the core is shown as code.
    code: bool,
}

impl<'a> Word<'a> {
    fn new(w: &'a str) -> Self {
        let (mut start, mut end) = (0, w.len());
        loop {
            let core = &w[start..end];
            if core.starts_with('(') && core.ends_with(')') && core.len() > 1 {
                let inner = &core[1..core.len() - 1];
                if balanced(inner) {
                    (start, end) = (start + 1, end - 1);
                    continue;
                }
            }
            if let Some(last) = core.chars().last() {
                let opens = core.matches('(').count();
                let closes = core.matches(')').count();
                if ".,;:!?".contains(last) || last == ')' && closes > opens {
                    end -= last.len_utf8();
                    continue;
                }
            }
            if core.starts_with('(') && core.matches('(').count() > core.matches(')').count() {
                start += 1;
                continue;
            }
            break;
        }
        let core = &w[start..end];
        Word {
            lead: &w[..start],
            core,
            trail: &w[end..],
            code: looks_like_code(core),
        }
    }

    fn is_flag(&self) -> bool {
        self.code && self.core.starts_with("--")
    }

    fn markdown(&self) -> String {
        if self.code {
            format!(
                "{}{}{}",
                escape(self.lead),
                code(self.core),
                escape(self.trail)
            )
        } else {
            escape(&format!("{}{}{}", self.lead, self.core, self.trail))
        }
    }
}

/// A flag (`--window`, `-h`), or a word with characters prose does not have (`bucket_header`,
/// `KEY<TAB>VERSION`, `[0-9]{4}`, `http[s]://host`, `session.hold`), its brackets paired; not a
/// placeholder in capitals (`MAX_POINTS`, `DATA_LOSS`: plain, as `DURATION` is).
fn looks_like_code(core: &str) -> bool {
    let long = core
        .strip_prefix("--")
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_alphabetic()));
    let short = core.len() == 2
        && core.starts_with('-')
        && core[1..].starts_with(|c: char| c.is_ascii_alphabetic());
    let capitals = core
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    let special = core.contains("://")
        || core.contains(['_', '<', '>', '{', '}', '[', ']', '\\', '='])
        || dotted(core);
    (long || short || special && !capitals)
        && core.chars().any(|c| c.is_ascii_alphanumeric())
        && balanced(core)
}

/// An identifier with dots: `session.hold`, `trafficRouting.managedRoutes` (parts of two or more
/// letters, digits, `_` or `-`, each starting with a letter: not `e.g` nor `0.01`).
fn dotted(core: &str) -> bool {
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            p.len() >= 2
                && p.starts_with(|c: char| c.is_ascii_alphabetic())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// Brackets of every kind paired and nested in order, double quotes paired.
fn balanced(text: &str) -> bool {
    let mut stack = Vec::new();
    for c in text.chars() {
        match c {
            '(' | '[' | '{' | '<' => stack.push(c),
            ')' | ']' | '}' | '>' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    '}' => '{',
                    _ => '<',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && text.matches('"').count().is_multiple_of(2)
}

/// Text with the characters Markdown reads escaped (`_` only where it could start or end
/// emphasis: not inside a word such as `MAX_POINTS`).
fn escape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut md = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let inside_word = |at: Option<usize>| {
            at.and_then(|at| chars.get(at))
                .is_some_and(|c| c.is_alphanumeric())
        };
        let intraword = c == '_' && inside_word(i.checked_sub(1)) && inside_word(Some(i + 1));
        if "\\`*_[]<>|~&".contains(c) && !intraword {
            md.push('\\');
        }
        md.push(c);
    }
    md
}

/// A block's text whose start would open a heading, a list, a quote or a setext underline, with
/// that start escaped.
fn escape_start(md: String) -> String {
    if md.starts_with(['#', '+', '-', '=', '>']) {
        return format!("\\{md}");
    }
    let digits = md.chars().take_while(char::is_ascii_digit).count();
    let rest = &md[digits..];
    if digits > 0
        && (rest.starts_with(". ") || rest.starts_with(") ") || rest == "." || rest == ")")
    {
        return format!("{}\\{rest}", &md[..digits]);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_words_and_escapes() {
        for (text, md) in [
            (
                "With --prometheus: only the last DURATION",
                "With `--prometheus`: only the last DURATION",
            ),
            ("(--fixed: one-sided)", "(`--fixed`: one-sided)"),
            (
                "names (canary_business_<name>_total). Without",
                "names (`canary_business_<name>_total`). Without",
            ),
            ("KEY<TAB>VALUE, or", "`KEY<TAB>VALUE`, or"),
            ("is [0-9]{4}.", "is `[0-9]{4}`."),
            (
                "queries increase(...[DURATION]).",
                "queries `increase(...[DURATION])`.",
            ),
            (
                "per line ({\"key\", \"bucket\"}).",
                "per line (`{\"key\", \"bucket\"}`).",
            ),
            ("a {b c", "a {b c"),
            ("[default: 4194304, 4 MiB]", "\\[default: 4194304, 4 MiB\\]"),
            ("a * b | c", "a \\* b \\| c"),
            (
                "From `x_y` (the `grpc` block)",
                "From `x_y` (the `grpc` block)",
            ),
            ("an odd ` quote", "an odd \\` quote"),
            ("- starts a list", "\\- starts a list"),
            ("1. starts a list", "1\\. starts a list"),
            ("# heading", "\\# heading"),
            ("--ratio a=b/c:1 and", "`--ratio a=b/c:1` and"),
            ("(--ratio a=b/c:1)", "(`--ratio a=b/c:1`)"),
            ("UNKNOWN, DATA_LOSS (the", "UNKNOWN, DATA_LOSS (the"),
            ("a *b* _ c", "a \\*b\\* \\_ c"),
            ("Print help (-h: a summary)", "Print help (`-h`: a summary)"),
            (
                "also in trafficRouting.managedRoutes)",
                "also in `trafficRouting.managedRoutes`)",
            ),
            ("e.g. 0.01% or 1.5", "e.g. 0.01% or 1.5"),
            (
                "(https://USER:PASSWORD@host)",
                "(`https://USER:PASSWORD@host`)",
            ),
        ] {
            assert_eq!(inline(text), md, "{text:?}");
        }
    }

    #[test]
    fn code_spans_and_fences_outgrow_backquotes() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(fenced("x"), "```text\nx\n```\n\n");
        assert_eq!(fenced("````"), "`````text\n````\n`````\n\n");
    }

    #[test]
    fn anchors_are_mdbooks() {
        assert_eq!(anchor("sticky-canary gate"), "sticky-canary-gate");
        assert_eq!(anchor("gate: Source"), "gate-source");
    }
}
