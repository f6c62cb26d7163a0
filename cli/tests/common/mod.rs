//! What the CLI's integration tests share: running the built binary, and decoding a query.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sticky_canary::metrics::names;

/// `%XX` decoded (the fakes' view of a query).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// What one run of `sticky-canary` gave.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs the built `sticky-canary` with `args` (proxy variables removed, then `env` set),
/// killed after 30 s.
pub fn sticky_canary(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sticky-canary"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_lowercase());
    }
    cmd.envs(env.iter().copied());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("sticky-canary {args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: start.elapsed(),
    }
}

/// `sticky-canary gate ARGS` (ARGS split at spaces).
pub fn gate(line: &str) -> Ran {
    let mut argv = vec!["gate"];
    argv.extend(line.split_whitespace());
    sticky_canary(&argv, &[])
}

/// Stable and canary both at `(stable, canary)` for every selector of an approval-ratio gate.
pub fn approval_answers(approved_canary: f64) -> Vec<(String, String)> {
    let v = |s: f64, c: f64| -> String {
        format!(
            r#"{{"metric":{{"version":"stable"}},"value":[1,"{s}"]}},
               {{"metric":{{"version":"canary"}},"value":[1,"{c}"]}}"#
        )
    };
    let sel = |name: &str, extra: &str| format!("{name}{{service=\"checkout\"{extra}}}");
    vec![
        (sel(names::RESPONSES, ",code_class=\"5xx\""), v(3.0, 4.0)),
        (sel(names::RESPONSES, ""), v(3000.0, 3000.0)),
        (
            sel(&names::business_total("payments"), ""),
            v(2000.0, 2000.0),
        ),
        (
            sel(&names::business_total("auth_approved"), ""),
            v(1940.0, approved_canary),
        ),
    ]
}

/// A file of the test's own, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, content: impl AsRef<[u8]>) -> TempFile {
        let dir = std::env::temp_dir().join(format!("sc-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        // The directory goes with the test's last file.
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
