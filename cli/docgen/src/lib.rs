//! The documentation of the `sticky-canary` command generated from its clap definitions
//! ([`sticky_canary_cli::args::Cli`]), so that it cannot drift from `--help`:
//!
//! - [`man_pages`]: `sticky-canary(1)` and one page per subcommand, `sticky-canary-gate(1)`,
//!   `sticky-canary-cohort(1)` and `sticky-canary-assign(1)` (clap_mangen; `make install` puts
//!   them next to the binary);
//! - [`cli_markdown`]: the CLI reference of the book, `docs/src/reference/cli.md`
//!   (`make cli-docs`; a test checks that the file is up to date).
//!
//! The long texts (`long_about`, `after_long_help`) are hard-wrapped prose with indented
//! two-column lists (outcomes, exit statuses): the `blocks` module reads them into paragraphs,
//! term lists and preformatted lines, which each output renders in its own way.

mod blocks;
mod man;
mod markdown;

pub use man::man_pages;
pub use markdown::{anchor, cli_markdown};

use clap::{Arg, Command, CommandFactory};
use sticky_canary_cli::args::Cli;

/// Where the CLI reference lives, from the workspace root.
pub const MARKDOWN_PATH: &str = "docs/src/reference/cli.md";

/// The command as documented: `Cli::command()`, built (so that every subcommand knows its full
/// name, `sticky-canary gate`, and has its `--help`), without clap's `help` subcommand, which only
/// repeats `--help`.
pub fn command() -> Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The subcommands shown in the documentation (not hidden), in their display order.
pub fn subcommands(cmd: &Command) -> Vec<&Command> {
    let mut subs: Vec<&Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    subs.sort_by_key(|s| s.get_display_order());
    subs
}

/// The arguments shown in the documentation (not hidden), in their display order.
pub fn arguments(cmd: &Command) -> Vec<&Arg> {
    let mut args: Vec<&Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    args.sort_by_key(|a| a.get_display_order());
    args
}

/// The usage lines of a (built) command, without clap's `Usage: ` and the indentation of the
/// lines after the first.
fn usage_lines(cmd: &Command) -> Vec<String> {
    let text = cmd.clone().render_usage().to_string();
    let text = text.strip_prefix("Usage:").unwrap_or(&text);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The name of a subcommand's man page and of its section in the reference: `sticky-canary gate`
/// with `sep` = ' ', `sticky-canary-gate` with '-'.
fn full_name(top: &Command, sub: &Command, sep: char) -> String {
    format!("{}{sep}{}", top.get_name(), sub.get_name())
}
