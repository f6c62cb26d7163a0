//! The flags of `sticky-canary assign` (clap derive) and the [`Config`] built from them.

use super::{Config, KeysFile};
use clap::Args;
use std::path::PathBuf;

/// The long description of `sticky-canary assign --help`.
pub(crate) const ABOUT: &str = "\
The version, bucket (0000-9999) and reason the filter gives each session key under a plugin
config, computed offline with the filter's own code: the key is sent the way the config's first
session source reads it (cookie or header), without override token or pin header.";

/// What `sticky-canary assign --help` prints after the flags.
pub(crate) const AFTER_HELP: &str = "\
Output: one line per key, KEY<TAB>VERSION<TAB>BUCKET<TAB>REASON, or with --json one JSON object
per line ({\"key\", \"version\", \"bucket\", \"reason\"}). BUCKET is the four digits the filter sends
upstream with bucket_header set, or - when it sends none (a held request).

Exit status: 0; 1 for a usage error, an unreadable file, an invalid config (the message names
the field) or a key the session source cannot carry (reported on stderr, the others printed).";

/// The flags of `sticky-canary assign`.
#[derive(Debug, Args)]
pub struct AssignArgs {
    /// The plugin config: the JSON the plugin takes
    #[arg(long, value_name = "PLUGIN_CONFIG.json")]
    pub config: PathBuf,

    /// Session keys
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,

    /// More keys, one a line (blank lines skipped, CRLF accepted); - reads stdin
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,

    /// Every request also carries the config's hold cookie (session.hold)
    #[arg(long)]
    pub held: bool,

    /// One JSON object per line
    #[arg(long, overrides_with = "json")]
    pub json: bool,
}

impl AssignArgs {
    /// The command's configuration: `--keys-file -` reads stdin.
    pub fn into_config(self) -> Config {
        Config {
            plugin_config: self.config,
            keys: self.keys,
            keys_file: self.keys_file.map(|f| {
                if f.as_os_str() == "-" {
                    KeysFile::Stdin
                } else {
                    KeysFile::Path(f)
                }
            }),
            held: self.held,
            json: self.json,
        }
    }
}
