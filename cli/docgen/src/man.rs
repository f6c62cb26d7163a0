//! The man pages: `sticky-canary(1)` and one page per subcommand, named like git's
//! (`sticky-canary-gate(1)`).
//!
//! clap_mangen renders NAME, SYNOPSIS, the options (a section per help heading) and the top page's
//! SUBCOMMANDS. The rest is written here: the title line (clap_mangen's leaves the date empty
//! unquoted, which shifts the source into the date's place), DESCRIPTION and the after-help text
//! read as [`blocks`](crate::blocks) (so that the two-column lists become `.TP` lists instead of
//! lines that roff would fill together), the after-help's `Exit status:` paragraph as EXIT STATUS
//! and the rest as NOTES, VERSION (a subcommand has none of its own) and SEE ALSO.

use crate::blocks::{paragraphs, Block};
use crate::{arguments, command, subcommands};
use clap::Command;
use clap_mangen::roff::{bold, roman, Inline, Roff};
use clap_mangen::Man;
use std::io;

/// The manual section of every page.
const SECTION: &str = "1";

/// The lead of the after-help paragraph that becomes EXIT STATUS.
const EXIT_STATUS: &str = "Exit status:";

/// The man pages, as (file name, roff): `sticky-canary.1`, then `sticky-canary-gate.1`,
/// `sticky-canary-cohort.1` and `sticky-canary-assign.1`.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let top = command();
    let meta = Meta {
        top: top.get_name().to_string(),
        version: top.get_version().unwrap_or_default().to_string(),
    };
    // Each subcommand's page is named after it with a dash, as git's are: clap's build has already
    // set that display name (and the bin name `sticky-canary gate` the synopsis shows); it is set
    // again so that the file name never depends on that.
    let subs: Vec<Command> = subcommands(&top)
        .into_iter()
        .map(|sub| {
            let page = format!("{}-{}", top.get_name(), sub.get_name());
            sub.clone().display_name(page)
        })
        .collect();
    let sub_names: Vec<String> = subs.iter().map(page_name).collect();
    let mut pages = vec![page(&top, &meta, &sub_names)];
    for sub in &subs {
        pages.push(page(sub, &meta, &[page_name(&top)]));
    }
    pages
}

/// What every page says of the command: its name and version.
struct Meta {
    top: String,
    version: String,
}

/// The name of a command's page: its display name (`sticky-canary-gate`), else its name.
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// One page: its file name and its roff.
fn page(cmd: &Command, meta: &Meta, see_also: &[String]) -> (String, Vec<u8>) {
    let man = Man::new(cmd.clone()).section(SECTION);
    let preamble = Roff::new().render();
    let mut out = Page {
        roff: preamble.clone().into_bytes(),
        preamble,
    };
    // Left-aligned, not hyphenated: flags and metric names stay whole.
    out.raw(&format!(
        ".TH {} {SECTION} \"\" \"{top} {version}\" \"{top} Manual\"\n.nh\n.ad l\n",
        page_name(cmd),
        top = meta.top,
        version = meta.version,
    ));
    out.mangen(|w| man.render_name_section(w));
    out.mangen(|w| man.render_synopsis_section(w));

    let mut roff = Roff::new();
    roff.control("SH", ["DESCRIPTION"]);
    let about = cmd.get_long_about().or_else(|| cmd.get_about());
    render_blocks(
        &mut roff,
        &paragraphs(&about.map(|a| a.to_string()).unwrap_or_default()),
    );
    out.roff(&roff);

    if !arguments(cmd).is_empty() {
        out.mangen(|w| man.render_options_section(w));
    }
    if !subcommands(cmd).is_empty() {
        out.mangen(|w| man.render_subcommands_section(w));
    }

    let after = cmd.get_after_long_help().or_else(|| cmd.get_after_help());
    let after = paragraphs(&after.map(|a| a.to_string()).unwrap_or_default());
    let (exit, notes): (Vec<_>, Vec<_>) = after.into_iter().partition(
        |p| matches!(p.first(), Some(Block::Prose(lead)) if lead.starts_with(EXIT_STATUS)),
    );
    let mut roff = Roff::new();
    if !notes.is_empty() {
        roff.control("SH", ["NOTES"]);
        render_blocks(&mut roff, &notes);
    }
    if !exit.is_empty() {
        roff.control("SH", ["EXIT STATUS"]);
        render_blocks(&mut roff, &without_exit_lead(exit));
    }
    roff.control("SH", ["VERSION"]);
    roff.text([roman(format!("v{}", meta.version))]);
    if !see_also.is_empty() {
        roff.control("SH", ["SEE ALSO"]);
        let mut refs: Vec<Inline> = Vec::new();
        for (i, name) in see_also.iter().enumerate() {
            if i > 0 {
                refs.push(roman(", "));
            }
            refs.push(bold(name.as_str()));
            refs.push(roman(format!("({SECTION})")));
        }
        roff.text(refs);
    }
    out.roff(&roff);
    (man.get_filename(), out.roff)
}

/// The `Exit status:` paragraphs without that lead (the section's title says it).
fn without_exit_lead(paragraphs: Vec<Vec<Block>>) -> Vec<Vec<Block>> {
    paragraphs
        .into_iter()
        .map(|p| {
            p.into_iter()
                .filter_map(|b| match b {
                    Block::Prose(text) => match text.strip_prefix(EXIT_STATUS) {
                        Some(rest) if rest.trim().is_empty() => None,
                        Some(rest) => Some(Block::Prose(rest.trim().to_string())),
                        None => Some(Block::Prose(text)),
                    },
                    other => Some(other),
                })
                .collect()
        })
        .collect()
}

/// A page being written: roff parts, each without the preamble that every rendering starts with
/// (the page has it once, first).
struct Page {
    roff: Vec<u8>,
    preamble: String,
}

impl Page {
    fn raw(&mut self, text: &str) {
        self.roff.extend_from_slice(text.as_bytes());
    }

    fn part(&mut self, rendered: &[u8]) {
        let part = rendered
            .strip_prefix(self.preamble.as_bytes())
            .unwrap_or(rendered);
        self.roff.extend_from_slice(part);
    }

    /// A section rendered by clap_mangen.
    fn mangen(&mut self, render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) {
        let mut part = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = render(&mut part);
        self.part(&part);
    }

    /// Sections written here.
    fn roff(&mut self, roff: &Roff) {
        self.part(roff.render().as_bytes());
    }
}

/// Paragraphs of blocks as roff: prose filled, term lists as `.TP` items (the term in bold),
/// preformatted lines unfilled and indented.
fn render_blocks(roff: &mut Roff, paragraphs: &[Vec<Block>]) {
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        let mut after_list = false;
        for block in paragraph {
            match block {
                Block::Prose(text) => {
                    if after_list {
                        roff.control("PP", []);
                    }
                    roff.text([roman(text.as_str())]);
                    after_list = false;
                }
                Block::Terms(items) => {
                    for (term, text) in items {
                        roff.control("TP", []);
                        roff.text([bold(term.as_str())]);
                        roff.text([roman(text.as_str())]);
                    }
                    after_list = true;
                }
                Block::Pre(lines) => {
                    roff.control("RS", ["4"]);
                    roff.control("nf", []);
                    for line in lines {
                        roff.text([roman(line.as_str())]);
                    }
                    roff.control("fi", []);
                    roff.control("RE", []);
                    after_list = true;
                }
            }
        }
    }
}
