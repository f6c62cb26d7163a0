//! The programs the benchmark runs (Envoy pinned to its core, wrk, nginx) and what `/proc` says
//! about them: CPU ticks, RSS, wasm linear memories, the machine.

use super::variants::{bench_dir, order_body};
use serde_json::{json, Value as Json};
use std::ffi::OsString;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sticky_canary_harness::envoy::{envoy_bin, workspace_root, Envoy, Launch};
use sticky_canary_harness::http::free_port;
use sticky_canary_harness::native::Build;
use sticky_canary_harness::{find_tool, on_path, tempdir, wrapped};

/// The programs the benchmark runs: Envoy (`ENVOY_BIN`, else `.venv/bin/envoy`), wrk
/// (`WRK_BIN`) and nginx (`NGINX_BIN`), else from `.venv/bench`, else on PATH.
#[derive(Clone, Debug)]
pub struct Tools {
    pub envoy: PathBuf,
    pub wrk: PathBuf,
    pub nginx: PathBuf,
    /// `LD_LIBRARY_PATH` for a wrk unpacked into .venv/bench (its LuaJIT).
    pub lib_dir: Option<PathBuf>,
    /// Whether `taskset` is available to pin processes.
    pub taskset: bool,
    /// `BENCH_ENVOY_CPU` (default 1): Envoy's core.
    pub envoy_cpu: String,
    /// `BENCH_LOAD_CPU` (default 0): the core of wrk and the upstream.
    pub load_cpu: String,
    /// `BENCH_LOAD_NICE`: niceness of wrk and nginx (unset: inherited).
    pub load_nice: Option<String>,
}

impl Tools {
    pub fn find() -> Result<Tools, String> {
        let envoy = envoy_bin();
        if !envoy.exists() {
            return Err(format!(
                "Envoy not found at {} — run `make envoy` (or set ENVOY_BIN)",
                envoy.display()
            ));
        }
        let hint = "run `make bench-tools` (bash envoy/bench/install-tools.sh)";
        let wrk = find_tool("WRK_BIN", "bench/usr/bin/wrk", "wrk")
            .ok_or_else(|| format!("wrk not found — {hint}, or set WRK_BIN"))?;
        let nginx = find_tool("NGINX_BIN", "bench/usr/sbin/nginx", "nginx")
            .ok_or_else(|| format!("nginx not found — {hint}, or set NGINX_BIN"))?;
        let lib_dir = fs::read_dir(workspace_root().join(".venv/bench/usr/lib"))
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.to_string_lossy().ends_with("-linux-gnu"))
            });
        for (name, p) in [("wrk", &wrk), ("nginx", &nginx)] {
            if !p.is_file() {
                return Err(format!("{name} not found at {} — {hint}", p.display()));
            }
        }
        let taskset = on_path("taskset").is_some();
        Ok(Tools {
            envoy,
            wrk,
            nginx,
            lib_dir,
            taskset,
            envoy_cpu: std::env::var("BENCH_ENVOY_CPU").unwrap_or_else(|_| "1".into()),
            load_cpu: std::env::var("BENCH_LOAD_CPU").unwrap_or_else(|_| "0".into()),
            load_nice: std::env::var("BENCH_LOAD_NICE")
                .ok()
                .filter(|n| n.trim().parse::<i32>().is_ok()),
        })
    }

    /// The command line that pins a program to `cpu` (`taskset -c <cpu>`; empty without
    /// taskset). taskset execs the program, so the child's pid is the program's.
    pub fn pin(&self, cpu: &str) -> Vec<OsString> {
        if self.taskset {
            vec!["taskset".into(), "-c".into(), cpu.into()]
        } else {
            Vec::new()
        }
    }

    /// A command for the load generator or the upstream: pinned to the load core, under `nice -n
    /// <load_nice>` when `BENCH_LOAD_NICE` is set (a negative value needs root): on a shared
    /// machine it keeps other work on the load core from starving wrk, which would leave Envoy
    /// idle part of the time. nice execs, so the child's pid is the program's.
    fn load(&self, program: &Path) -> Command {
        let mut line: Vec<OsString> = match &self.load_nice {
            Some(n) => vec!["nice".into(), "-n".into(), n.into()],
            None => Vec::new(),
        };
        line.extend(self.pin(&self.load_cpu));
        wrapped(&line, program)
    }

    pub fn versions(&self) -> Json {
        let run = |c: &mut Command| -> String {
            c.output()
                .map(|o| {
                    let t = String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr);
                    t.lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default()
        };
        let mut wrk = Command::new(&self.wrk);
        wrk.arg("--version");
        if let Some(l) = &self.lib_dir {
            wrk.env("LD_LIBRARY_PATH", l);
        }
        json!({
            "envoy": run(Command::new(&self.envoy).arg("--version")),
            "wrk": run(&mut wrk),
            "nginx": run(Command::new(&self.nginx).arg("-v")),
        })
    }
}

/// A child process killed (and waited for) on drop.
struct Owned(Option<Child>);

impl Owned {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    fn running(&mut self) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts Envoy on `yaml` for the benchmark: pinned to Envoy's core (`BENCH_ENVOY_CPU`), one
/// worker, readiness polled every 5 ms so that [`Envoy::ready_after`] times the start-up.
pub fn start_envoy(tools: &Tools, yaml: &str) -> Result<Envoy, String> {
    let launch = Launch {
        wrapper: tools.pin(&tools.envoy_cpu),
        concurrency: 1,
        poll: Duration::from_millis(5),
        timeout: Duration::from_secs(60),
        // Each variant's config is written for its build: run as it is.
        build: Build::Wasm,
    };
    Envoy::start_yaml(yaml, &launch).map_err(|f| f.to_string())
}

/// What the benchmark reads from a running Envoy: its process (`/proc/<pid>`) and its admin
/// counters.
pub trait EnvoyProbe {
    /// utime + stime of the whole process, in clock ticks.
    fn cpu_ticks(&self) -> Result<u64, String>;
    fn rss_kb(&self) -> Option<u64>;
    fn wasm_memories(&self) -> Vec<LinearMemory>;
    /// Counters and gauges whose names match the admin `filter` regex.
    fn stats(&self, filter: &str) -> Result<Vec<(String, u64)>, String>;
    /// `http.ingress.downstream_rq_total` and `http.ingress.downstream_rq_2xx`.
    fn request_counters(&self) -> Result<(u64, u64), String>;
    /// The sum of every stat whose name contains `part` (e.g. a filter metric across versions).
    fn sum_of(&self, part: &str) -> u64;
}

impl EnvoyProbe for Envoy {
    fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.pid())
    }

    fn rss_kb(&self) -> Option<u64> {
        rss_kb(self.pid())
    }

    fn wasm_memories(&self) -> Vec<LinearMemory> {
        wasm_memories(self.pid())
    }

    fn stats(&self, filter: &str) -> Result<Vec<(String, u64)>, String> {
        let path = format!("/stats?format=json&filter={filter}");
        let r = self
            .try_admin_get(&path)
            .map_err(|e| format!("admin {path}: {e}"))?;
        let j = r.json();
        Ok(j.get("stats")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((
                            s.get("name")?.as_str()?.to_string(),
                            s.get("value")?.as_u64()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn request_counters(&self) -> Result<(u64, u64), String> {
        let s = self.stats("^http\\.ingress\\.downstream_rq_(total|2xx)$")?;
        let get = |n: &str| s.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        Ok((
            get("http.ingress.downstream_rq_total").ok_or("no downstream_rq_total counter")?,
            get("http.ingress.downstream_rq_2xx").unwrap_or(0),
        ))
    }

    fn sum_of(&self, part: &str) -> u64 {
        self.stats(part)
            .map(|s| s.iter().map(|(_, v)| v).sum())
            .unwrap_or(0)
    }
}

/// utime + stime (clock ticks) of a process, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("stat: {e}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("no utime")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("no stime")?;
    Ok(utime + stime)
}

/// Busy and steal clock ticks of one core, from `/proc/stat` (everything but idle and iowait).
pub fn core_ticks(cpu: &str) -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy = f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?;
    Some((busy, *f.get(7)?))
}

/// CPU time (ticks) of this process's waited-for children: cutime + cstime of `/proc/self/stat`.
/// Around one wrk run it is wrk's own CPU time.
pub fn children_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            Some(f.get(13)? + f.get(14)?)
        })
        .unwrap_or(0)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One wasm linear memory as V8 maps it: a read-write region (the memory's current size) right
/// before the inaccessible rest of its reservation (8 GiB in all for a 32-bit memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearMemory {
    /// The memory's size (its read-write part), KiB.
    pub size_kb: u64,
    /// Resident pages of it, KiB.
    pub rss_kb: u64,
}

/// Every wasm linear memory of a process (one per VM: with `--concurrency 1`, Envoy keeps a base
/// VM, one on the main thread and one on the worker), from `/proc/<pid>/smaps`.
pub fn wasm_memories(pid: u32) -> Vec<LinearMemory> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    struct Vma {
        start: u64,
        end: u64,
        perms: String,
        rss_kb: u64,
    }
    let mut vmas: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                vmas.push(Vma {
                    start,
                    end,
                    perms: parts.next().unwrap_or("").to_string(),
                    rss_kb: 0,
                });
                continue;
            }
        }
        if let (Some(v), Some("Rss:")) = (vmas.last_mut(), Some(first)) {
            v.rss_kb = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    const GIB: u64 = 1 << 30;
    vmas.windows(2)
        .filter(|w| {
            let (rw, guard) = (&w[0], &w[1]);
            rw.perms.starts_with("rw")
                && guard.perms.starts_with("---")
                && rw.end == guard.start
                && guard.end - rw.start >= 4 * GIB
                && (guard.end - rw.start) % GIB == 0
        })
        .map(|w| LinearMemory {
            size_kb: (w[0].end - w[0].start) / 1024,
            rss_kb: w[0].rss_kb,
        })
        .collect()
}

/// The upstream: one nginx worker (`envoy/bench/nginx.conf`), killed on drop.
pub struct Nginx {
    child: Owned,
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nginx {
    pub fn start(tools: &Tools) -> Result<Nginx, String> {
        let dir = tempdir("sticky-canary-bench-nginx-");
        let template = fs::read_to_string(bench_dir().join("nginx.conf"))
            .map_err(|e| format!("envoy/bench/nginx.conf: {e}"))?;
        let body = order_body()?;
        for attempt in 0..5 {
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let conf = template
                .replace("@PORT@", &port.to_string())
                .replace("@DIR@", &dir.path().to_string_lossy())
                .replace("@BODY@", &body);
            let path = dir.path().join("nginx.conf");
            fs::write(&path, conf).map_err(|e| e.to_string())?;
            let mut child = Owned(Some(
                tools
                    .load(&tools.nginx)
                    .arg("-e")
                    .arg(dir.path().join("error.log"))
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("spawn {}: {e}", tools.nginx.display()))?,
            ));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.running() {
                if TcpStream::connect(addr).is_ok() {
                    return Ok(Nginx {
                        child,
                        _dir: dir,
                        addr,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            child.kill();
            if attempt == 4 {
                let log = fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                return Err(format!("nginx did not start; error.log:\n{log}"));
            }
        }
        Err("nginx did not start".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// wrk's own figures for one run (from the script's `done` hook).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WrkRun {
    pub requests: u64,
    pub duration_us: u64,
    pub errors: u64,
    pub status_errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Runs wrk (one thread, pinned to the load core) against `url` with the generated script.
pub fn run_wrk(
    tools: &Tools,
    script: &Path,
    url: &str,
    connections: u32,
    seconds: f64,
) -> Result<WrkRun, String> {
    let mut cmd = tools.load(&tools.wrk);
    if let Some(l) = &tools.lib_dir {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    // wrk takes whole seconds.
    let secs = seconds.round().max(1.0) as u64;
    let child = cmd
        .args(["-t", "1", "-c", &connections.to_string()])
        .arg("-d")
        .arg(format!("{secs}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", tools.wrk.display()))?;
    let out = child.wait_with_output().map_err(|e| format!("wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .ok_or_else(|| {
            format!(
                "wrk printed no result (exit {:?}):\n{stdout}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let j: Json = serde_json::from_str(line).map_err(|e| format!("wrk result {line}: {e}"))?;
    let n = |k: &str| j.get(k).and_then(Json::as_u64).unwrap_or(0);
    Ok(WrkRun {
        requests: n("requests"),
        duration_us: n("duration_us"),
        errors: n("connect_errors") + n("read_errors") + n("write_errors") + n("timeouts"),
        status_errors: n("status_errors"),
        p50_us: n("p50_us"),
        p90_us: n("p90_us"),
        p99_us: n("p99_us"),
        max_us: n("max_us"),
        mean_us: j.get("mean_us").and_then(Json::as_f64).unwrap_or(0.0),
    })
}

/// What else was running: load average and the busiest processes (`ps`), for the noise notes.
pub fn machine_state() -> Json {
    let loadavg = fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let busiest: Vec<String> = Command::new("ps")
        .args(["-eo", "pid,ni,pcpu,psr,comm", "--sort=-pcpu"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .take(6)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default();
    json!({ "loadavg": loadavg, "busiest_processes": busiest })
}

pub(crate) fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}
