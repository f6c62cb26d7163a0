//! `sticky-canary-docgen man DIR`: writes the man pages of `sticky-canary` into DIR (created if
//! missing; `make install`). `sticky-canary-docgen markdown`: prints the CLI reference
//! (`make cli-docs` writes it to docs/src/reference/cli.md).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: sticky-canary-docgen man DIR | sticky-canary-docgen markdown";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["man", dir] => write_man_pages(Path::new(dir)),
        ["markdown"] => print_markdown(),
        ["-h" | "--help"] => {
            // Nothing to do if stdout is gone.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sticky-canary-docgen: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Writes every man page into `dir`, creating it, and names each file written (on stdout).
fn write_man_pages(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    for (name, roff) in sticky_canary_docgen::man_pages() {
        let path = dir.join(name);
        std::fs::write(&path, roff).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        // The list is only informative: a closed stdout is no error.
        let _ = writeln!(out, "{}", path.display());
    }
    Ok(())
}

/// Prints the CLI reference to stdout.
fn print_markdown() -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(sticky_canary_docgen::cli_markdown().as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}
