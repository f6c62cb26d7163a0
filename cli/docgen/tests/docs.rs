#![cfg(test)]
//! The generated documentation against the clap definitions: docs/src/reference/cli.md is what
//! `make cli-docs` writes today, every subcommand and every flag is in the reference and in its man
//! page, the man pages are roff that man renders, and the binary writes what the library gives.

use clap::{Arg, Command, CommandFactory};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use sticky_canary_cli::args::Cli;
use sticky_canary_docgen::{cli_markdown, man_pages, MARKDOWN_PATH};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn cli_md_is_up_to_date() {
    let path = workspace_root().join(MARKDOWN_PATH);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = cli_markdown();
    if on_disk != generated {
        let line = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
        panic!(
            "docs/src/reference/cli.md is stale: run `make cli-docs`\n\
             (first difference at line {}:\n  file:      {:?}\n  generated: {:?})",
            line + 1,
            on_disk.lines().nth(line).unwrap_or("<end>"),
            generated.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// Every command of `Cli::command()`, recursively, with its path of names: `["sticky-canary"]`,
/// `["sticky-canary", "gate"]`, … Built, as the documentation is (so that each has its
/// `--help`), without clap's `help` subcommand (it only repeats `--help`; clap_mangen leaves it
/// out too).
fn commands() -> Vec<(Vec<String>, Command)> {
    fn walk(cmd: &Command, path: Vec<String>, out: &mut Vec<(Vec<String>, Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            walk(sub, sub_path, out);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, vec![cmd.get_name().to_string()], &mut out);
    out
}

fn shown_args(cmd: &Command) -> Vec<&Arg> {
    cmd.get_arguments().filter(|a| !a.is_hide_set()).collect()
}

/// The part of the reference about the command at `path`: the top command's from the start to its
/// first subcommand section, a subcommand's its `## sticky-canary gate` section.
fn markdown_section<'a>(md: &'a str, path: &[String]) -> &'a str {
    if path.len() == 1 {
        let end = md.find(&format!("\n## {} ", path[0])).unwrap_or(md.len());
        return &md[..end];
    }
    let heading = format!("\n## {}\n", path.join(" "));
    let start = md
        .find(&heading)
        .unwrap_or_else(|| panic!("no section {heading:?} in the reference"));
    let rest = &md[start + heading.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    &rest[..end]
}

/// The names an argument is documented under: `--envoy`, `-h`, or a positional's value name.
fn arg_names(arg: &Arg) -> Vec<String> {
    if arg.is_positional() {
        let names = arg.get_value_names().unwrap_or_default();
        assert!(
            !names.is_empty(),
            "positional {} has no value name",
            arg.get_id()
        );
        return names.iter().map(|n| n.to_string()).collect();
    }
    let mut names: Vec<String> = arg
        .get_long()
        .map(|l| format!("--{l}"))
        .into_iter()
        .collect();
    names.extend(arg.get_short().map(|s| format!("-{s}")));
    assert!(!names.is_empty(), "{} has no name", arg.get_id());
    names
}

/// Text as the roff crate writes it: backslashes and dashes escaped, apostrophes as `\*(Aq`.
fn roff(text: &str) -> String {
    text.replace('\\', r"\\")
        .replace('-', r"\-")
        .replace('\'', r"\*(Aq")
}

#[test]
fn every_subcommand_and_flag_is_documented() {
    let md = cli_markdown();
    let pages = man_pages();
    let page = |path: &[String]| -> String {
        let file = format!("{}.1", path.join("-"));
        let (_, roff) = pages
            .iter()
            .find(|(name, _)| *name == file)
            .unwrap_or_else(|| panic!("no man page {file}"));
        String::from_utf8(roff.clone()).unwrap()
    };
    let all = commands();
    assert_eq!(all.len(), 4, "sticky-canary, gate, cohort, assign");
    assert_eq!(pages.len(), all.len(), "one man page per command");
    let top_page = page(&all[0].0);
    for (path, cmd) in &all {
        let section = markdown_section(&md, path);
        let man = page(path);
        if path.len() > 1 {
            // Listed in the top page's SUBCOMMANDS and SEE ALSO, and in the reference's commands.
            let name = roff(&path.join("-"));
            let listed = format!("\n.TP\n{name}(1)\n");
            assert!(top_page.contains(&listed), "{name}(1) not in SUBCOMMANDS");
            let see_also = &top_page[top_page.find(".SH \"SEE ALSO\"").unwrap()..];
            let referred = format!(r"\fB{name}\fR(1)");
            assert!(see_also.contains(&referred), "{name}(1) not in SEE ALSO");
            let link = format!("[`{}`](#{})", path.join(" "), path.join("-"));
            assert!(md.contains(&link), "{link} missing from the commands list");
        }
        let args = shown_args(cmd);
        assert!(!args.is_empty(), "{path:?} has no arguments");
        for arg in args {
            for name in arg_names(arg) {
                // A list item of the reference names it, in code.
                let item = section.lines().any(|l| {
                    l.starts_with("- `")
                        && (l.contains(&format!("`{name}`"))
                            || l.contains(&format!("`{name} "))
                            || l.contains(&format!("[{name}]"))
                            || l.contains(&format!("<{name}>")))
                });
                assert!(item, "{name} of {path:?} missing from the reference");
                let in_man = if arg.is_positional() {
                    format!(r"\fI{name}\fR")
                } else {
                    format!(r"\fB{}\fR", roff(&name))
                };
                assert!(
                    man.contains(&in_man),
                    "{name} missing from {path:?}'s man page"
                );
            }
            // The help, first words at least, in both (the reference marks code up in it).
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let first: String = help
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                !first.is_empty(),
                "{:?} of {path:?} has no help",
                arg.get_id()
            );
            assert!(
                man.contains(&roff(&first)),
                "help {first:?} missing from the man page"
            );
            if !first.contains(['-', '_', '`', '<', '[', '*']) {
                assert!(
                    section.contains(&first),
                    "help {first:?} missing from the reference"
                );
            }
        }
    }
}

#[test]
fn reference_headings_are_unique_and_blocks_closed() {
    let md = cli_markdown();
    assert!(md.starts_with("# CLI reference\n\n"));
    assert!(md.lines().nth(2).unwrap().contains("`make cli-docs`"));
    assert!(md.ends_with('\n') && !md.ends_with("\n\n"));
    let mut headings = BTreeSet::new();
    let mut fence: Option<&str> = None;
    for line in md.lines() {
        if let Some(open) = fence {
            if line == open {
                fence = None;
            }
            continue;
        }
        if line.starts_with("```") {
            assert_eq!(line.trim_start_matches('`'), "text", "{line:?}");
            fence = Some(&line[..line.len() - "text".len()]);
            continue;
        }
        if line.starts_with('#') {
            assert!(headings.insert(line), "heading {line:?} twice");
        }
        assert!(!line.ends_with(' '), "trailing space: {line:?}");
    }
    assert_eq!(fence, None, "a code block is not closed");
    // Every subcommand's usage is a text block right under its heading.
    for (path, _) in commands().iter().skip(1) {
        let section = markdown_section(&md, path);
        assert!(
            section.starts_with(&format!("\n```text\n{}", path.join(" "))),
            "{path:?}: {section:.80}"
        );
    }
}

#[test]
fn man_pages_are_roff_that_names_them() {
    let known = [
        "ie", "el", "TH", "nh", "ad", "SH", "SS", "TP", "PP", "RS", "RE", "IP", "br", "nf", "fi",
    ];
    let pages = man_pages();
    let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "sticky-canary.1",
            "sticky-canary-gate.1",
            "sticky-canary-cohort.1",
            "sticky-canary-assign.1"
        ]
    );
    for (file, roff_bytes) in &pages {
        let text = String::from_utf8(roff_bytes.clone()).unwrap();
        let name = file.strip_suffix(".1").unwrap();
        // The page starts with .TH naming it (after the preamble that defines the apostrophe).
        let first = text
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap();
        assert!(
            first.starts_with(&format!(".TH {name} 1 ")),
            "{file}: {first}"
        );
        assert!(
            text.contains(&format!(".SH NAME\n{} \\- ", roff(name))),
            "{file} does not name itself"
        );
        for section in ["SYNOPSIS", "DESCRIPTION", "VERSION", "\"SEE ALSO\""] {
            assert!(
                text.contains(&format!("\n.SH {section}\n")),
                "{file}: no {section}"
            );
        }
        for line in text.lines() {
            if let Some(request) = line.strip_prefix('.') {
                let request = request.split(' ').next().unwrap_or_default();
                assert!(
                    known.contains(&request),
                    "{file}: unexpected request {line:?}"
                );
            }
            assert!(
                !line.starts_with('\''),
                "{file}: a line reads as a request: {line:?}"
            );
        }
        assert!(
            !text.contains(".SH EXTRA"),
            "{file}: the after-help has its own sections"
        );
    }
    let gate = String::from_utf8(pages[1].1.clone()).unwrap();
    assert!(
        gate.contains(".SH \"EXIT STATUS\"\n.TP\n\\fB0 PROMOTE\\fR\n"),
        "{gate}"
    );
    assert!(gate.contains(".SH NOTES\n"));
}

/// `man -l` renders every page, if man is installed (it is not installed for this).
#[test]
fn man_renders_every_page() {
    let have_man = std::process::Command::new("sh")
        .args(["-c", "command -v man"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_man {
        eprintln!("man is not installed: not rendering the pages");
        return;
    }
    for (file, roff_bytes) in man_pages() {
        let mut child = std::process::Command::new("man")
            .args(["-l", "-"])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            // man-db's sandbox can be refused inside containers.
            .env("MAN_DISABLE_SECCOMP", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&roff_bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l {file}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let name = file.strip_suffix(".1").unwrap();
        assert!(stdout.contains(&format!("{name}(1)")), "{file}:\n{stdout}");
        for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                stdout.lines().any(|l| l.trim() == section),
                "{file}: no {section}"
            );
        }
    }
}

#[test]
fn the_binary_writes_the_pages_and_prints_the_reference() {
    let bin = env!("CARGO_BIN_EXE_sticky-canary-docgen");
    let dir = std::env::temp_dir().join(format!("sticky-canary-docgen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let man_dir = dir.join("share/man/man1");
    let out = std::process::Command::new(bin)
        .arg("man")
        .arg(&man_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for (name, roff_bytes) in man_pages() {
        assert_eq!(
            std::fs::read(man_dir.join(&name)).unwrap(),
            roff_bytes,
            "{name}"
        );
    }
    let out = std::process::Command::new(bin)
        .arg("markdown")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), cli_markdown());

    // A directory that cannot be made (a file is in the way), bad usage: status 1 and a message.
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    for args in [
        vec!["man".into(), file.join("man1")],
        vec![],
        vec!["html".into()],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("sticky-canary-docgen: "), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
