//! `sticky-canary`: the sticky-canary command line. `sticky-canary gate --help` (and `cohort`,
//! `assign`) says what each subcommand does; the logic lives in the `sticky_canary_cli` library.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(sticky_canary_cli::main_with(std::env::args_os()))
}
